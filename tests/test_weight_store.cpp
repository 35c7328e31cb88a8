// WeightStore and NvmeFile: for tiers none / cpu / nvme and world 1..3, every rank's fetch_slice of every streamed
// unit equals copy_slice, resident units and persistent blocks equal copy_flat / copy_persistent, memory() adds
// up, and the NVMe file (nvme_reuse false) is open (nameless: the folder lists nothing) while the store lives and gone after; the
// NvmeFile fallback without O_TMPFILE leaves no name either and removes its own leftovers, never through a link.
// Faults: a truncated NVMe file is a
// "short read" error naming the file within bounded time; EIO on the first 2 attempts is retried to the right
// bytes; EIO always is an "Input/output error" after max_retries; the pread and buffered fallbacks read the same.
// Quantized weights (Q8_0 embedding, Q4_K + Q6_K layers, F32 norms): tiers cpu and nvme fetch each rank's slice
// of whole blocks byte for byte, through O_DIRECT reads of 4096-multiple extents.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/nvme_file.h"
#include "runtime/stream/slice_header.h"
#include "runtime/stream/weight_store.h"
#include "tests/nvme_slices.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
namespace fs = std::filesystem;

namespace {

// A model held in memory (random bytes): 2 layers of ~140 KiB in F32, norms and biases small.
struct MemModel {
    ModelConfig cfg;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> storage;
    ModelWeights w;
};

Tensor random_tensor(MemModel & m, std::vector<int64_t> shape, std::mt19937 & rng, DType t = DType::F32) {
    const size_t bytes = Tensor(nullptr, t, shape).bytes();   // rows x whole random blocks when quantized
    auto buf = std::make_unique<std::vector<uint8_t>>(bytes);
    for (uint8_t & b : *buf) b = uint8_t(rng());
    Tensor out(buf->data(), t, std::move(shape));
    m.storage.push_back(std::move(buf));
    return out;
}

std::unique_ptr<MemModel> make_mem_model(int64_t layers = 3) {
    auto m = std::make_unique<MemModel>();
    std::mt19937 rng(42);
    const int64_t V = 100, C = 64, I = 96, HD = 64, KVD = 32;
    m->cfg.num_hidden_layers = layers;
    m->w.embed = random_tensor(*m, {V, C}, rng);
    m->w.final_norm = random_tensor(*m, {C}, rng);
    m->w.lm_head = m->w.embed;   // tied
    for (int64_t i = 0; i < layers; ++i) {
        LayerWeights l;
        l.input_norm = random_tensor(*m, {C}, rng);
        l.q = random_tensor(*m, {HD, C}, rng);
        l.q_bias = random_tensor(*m, {HD}, rng);
        l.k = random_tensor(*m, {KVD, C}, rng);
        l.k_bias = random_tensor(*m, {KVD}, rng);
        l.v = random_tensor(*m, {KVD, C}, rng);
        l.v_bias = random_tensor(*m, {KVD}, rng);
        l.o = random_tensor(*m, {C, HD}, rng);
        l.post_norm = random_tensor(*m, {C}, rng);
        l.gate = random_tensor(*m, {I, C}, rng);
        l.up = random_tensor(*m, {I, C}, rng);
        l.down = random_tensor(*m, {C, I}, rng);
        m->w.layers.push_back(l);
    }
    return m;
}

// A GGUF-like quantized model: Q8_0 embedding and head, Q4_K q/k/o/gate/up, Q6_K v/down (Q4_K_M style), F32 norms.
std::unique_ptr<MemModel> make_quant_model(int64_t layers = 2) {
    auto m = std::make_unique<MemModel>();
    std::mt19937 rng(7);
    const int64_t V = 64, C = 256, I = 512, HD = 256, KVD = 128;
    m->cfg.num_hidden_layers = layers;
    m->w.embed = random_tensor(*m, {V, C}, rng, DType::Q8_0);
    m->w.final_norm = random_tensor(*m, {C}, rng);
    m->w.lm_head = random_tensor(*m, {V, C}, rng, DType::Q8_0);
    for (int64_t i = 0; i < layers; ++i) {
        LayerWeights l;
        l.input_norm = random_tensor(*m, {C}, rng);
        l.q = random_tensor(*m, {HD, C}, rng, DType::Q4_K);
        l.k = random_tensor(*m, {KVD, C}, rng, DType::Q4_K);
        l.v = random_tensor(*m, {KVD, C}, rng, DType::Q6_K);
        l.o = random_tensor(*m, {C, HD}, rng, DType::Q4_K);
        l.post_norm = random_tensor(*m, {C}, rng);
        l.gate = random_tensor(*m, {I, C}, rng, DType::Q4_K);
        l.up = random_tensor(*m, {I, C}, rng, DType::Q4_K);
        l.down = random_tensor(*m, {C, I}, rng, DType::Q6_K);
        m->w.layers.push_back(l);
    }
    return m;
}

PartitionPlan make_plan(const MemModel & m, int world, bool stream = true) {
    PartitionOptions opt;
    opt.world = world;
    opt.persistence_threshold = 1000;
    opt.resident_layers = 1;
    opt.partition_embeddings = true;
    opt.stream = stream;
    return plan_partition(m.cfg, m.w, opt);
}

// Installs a fault hook for the scope of a test.
struct HookGuard {
    explicit HookGuard(NvmeFile::FaultHook h) { NvmeFile::set_fault_hook(std::move(h)); }
    ~HookGuard() { NvmeFile::set_fault_hook(nullptr); }
};

// Fetches unit `u` on the copy stream and waits; returns the bytes.
std::vector<uint8_t> fetch(WeightStore & store, Backend & be, const PartitionUnit & pu, int u) {
    Buffer dst = be.alloc(pu.slice_bytes, MemKind::device);
    Stream * s = be.stream(StreamRole::copy);
    store.fetch_slice(u, dst.data(), s);
    be.synchronize(s);
    const uint8_t * p = static_cast<const uint8_t *>(dst.data());
    return std::vector<uint8_t>(p, p + pu.slice_bytes);
}

std::vector<uint8_t> expected_slice(const PartitionUnit & u, int r) {
    std::vector<uint8_t> v(u.slice_bytes);
    copy_slice(u, r, v.data());
    return v;
}

// Runs fetch + synchronize of `unit` and returns the error text (empty when it succeeded).
std::string fetch_error(WeightStore & store, Backend & be, const PartitionUnit & pu, int u) {
    try {
        fetch(store, be, pu, u);
    } catch (const std::exception & e) {
        return e.what();
    }
    return "";
}

int first_streamed(const PartitionPlan & p) {
    for (size_t i = 0; i < p.units.size(); ++i)
        if (p.units[i].streamed) return int(i);
    return -1;
}

}  // namespace

TEST(WeightStore, EveryRankFetchesItsOwnSlices) {
    const auto m = make_mem_model();
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("wstore");
    for (OffloadTier tier : {OffloadTier::cpu, OffloadTier::nvme}) {
        for (int world = 1; world <= 3; ++world) {
            const PartitionPlan plan = make_plan(*m, world);
            ASSERT_GT(plan.streamed_bytes(), 0u);
            for (int r = 0; r < world; ++r) {
                SCOPED_TRACE(testing::Message() << offload_tier_name(tier) << " world " << world << " rank " << r);
                WeightStoreOptions o;
                o.tier = tier;
                o.nvme_reuse = false;   // the private nameless file (reuse: test_nvme_reuse.cpp)
                o.nvme_path = tmp + "/nvme";   // created by the store
                o.aio_block_size = 8192;       // several chunks per slice
                o.aio_queue_depth = 2;
                o.buffer_count = 2;
                std::string file;
                {
                    WeightStore store(plan, r, *be, o);
                    EXPECT_EQ(store.tier(), tier);
                    file = store.nvme_file();
                    if (tier == OffloadTier::nvme) {
                        EXPECT_HAS(file, tmp + "/nvme/ztinfer-rank" + std::to_string(r) + ".weights");
                        EXPECT_TRUE(folder_names(tmp + "/nvme").empty()) << "the file has no name";
                        ASSERT_EQ(open_files_in(getpid(), tmp + "/nvme").size(), 1u);
                    } else {
                        EXPECT_TRUE(file.empty());
                    }
                    // Twice around, so the staging ring wraps.
                    for (int pass = 0; pass < 2; ++pass) {
                        for (size_t u = 0; u < plan.units.size(); ++u) {
                            const PartitionUnit & pu = plan.units[u];
                            if (!pu.streamed) {
                                ASSERT_NE(store.resident_flat(int(u)), nullptr) << pu.name;
                                std::vector<uint8_t> want(pu.flat_bytes);
                                copy_flat(pu, want.data());
                                EXPECT_EQ(0, std::memcmp(store.resident_flat(int(u)), want.data(), pu.flat_bytes));
                                continue;
                            }
                            EXPECT_EQ(store.resident_flat(int(u)), nullptr);
                            EXPECT_EQ(fetch(store, *be, pu, int(u)), expected_slice(pu, r)) << pu.name;
                        }
                    }
                    for (size_t u = 0; u < plan.units.size(); ++u) {
                        const PartitionUnit & pu = plan.units[u];
                        if (pu.persistent_bytes == 0) {
                            EXPECT_EQ(store.persistent(int(u)), nullptr);
                            continue;
                        }
                        std::vector<uint8_t> want(pu.persistent_bytes);
                        copy_persistent(pu, want.data());
                        ASSERT_NE(store.persistent(int(u)), nullptr);
                        EXPECT_EQ(0, std::memcmp(store.persistent(int(u)), want.data(), pu.persistent_bytes));
                    }
                    const WeightMemory mem = store.memory();
                    EXPECT_EQ(mem.resident, plan.resident_bytes());
                    if (tier == OffloadTier::cpu) {
                        EXPECT_EQ(mem.slices, plan.streamed_bytes() / size_t(world));
                        EXPECT_EQ(mem.staging, 0u);
                    } else {
                        EXPECT_EQ(mem.slices, 0u);
                        EXPECT_GE(mem.staging, 2 * plan.max_slice_bytes());
                        EXPECT_LE(mem.staging, 2 * (plan.max_slice_bytes() + 8192));
                        size_t file_bytes = kSliceHeaderBytes;   // header + each slice's extent (slice, tag)
                        for (const PartitionUnit & pu : plan.units)
                            if (pu.streamed) file_bytes += slice_extent(pu.slice_bytes);
                        EXPECT_EQ(fs::file_size(open_files_in(getpid(), tmp + "/nvme").at(0)), file_bytes);
                    }
                    EXPECT_EQ(mem.total(), mem.slices + mem.staging + mem.resident);
                }
                if (tier == OffloadTier::nvme) {
                    EXPECT_TRUE(open_files_in(getpid(), tmp + "/nvme").empty()) << "the destructor closes the file";
                    EXPECT_TRUE(folder_names(tmp + "/nvme").empty());
                }
            }
        }
    }
    fs::remove_all(tmp);
}

TEST(WeightStore, QuantizedSlicesArriveByteForByte) {
    const auto m = make_quant_model();
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("wstore_quant");
    for (OffloadTier tier : {OffloadTier::cpu, OffloadTier::nvme}) {
        for (int world : {1, 3}) {
            const PartitionPlan plan = make_plan(*m, world);
            size_t fetched = 0, packed = 0;   // tensor bytes fetched by the ranks; packed bytes of streamed units
            for (const PartitionUnit & pu : plan.units)
                if (pu.streamed)
                    for (const PackedTensor & t : pu.tensors) packed += t.persistent ? 0 : t.bytes;
            for (int r = 0; r < world; ++r) {
                SCOPED_TRACE(testing::Message() << offload_tier_name(tier) << " world " << world << " rank " << r);
                WeightStoreOptions o;
                o.tier = tier;
                o.nvme_reuse = false;   // the private nameless file (reuse: test_nvme_reuse.cpp)
                o.nvme_path = tmp + "/nvme";
                o.aio_block_size = 65536;
                o.buffer_count = 2;
                WeightStore store(plan, r, *be, o);
                for (size_t u = 0; u < plan.units.size(); ++u) {
                    const PartitionUnit & pu = plan.units[u];
                    if (!pu.streamed) continue;
                    EXPECT_EQ(pu.slice_bytes % NvmeFile::kAlign, 0u) << pu.name;
                    const std::vector<uint8_t> got = fetch(store, *be, pu, int(u));
                    EXPECT_EQ(got, expected_slice(pu, r)) << pu.name;
                    // the tensors' own bytes, where this rank's slice holds them
                    const size_t lo = size_t(r) * pu.slice_bytes, hi = lo + pu.slice_bytes;
                    for (const PackedTensor & t : pu.tensors) {
                        if (t.persistent) continue;
                        const size_t a = std::max(lo, t.offset), b = std::min(hi, t.offset + t.bytes);
                        if (a >= b) continue;
                        EXPECT_EQ(0, std::memcmp(got.data() + (a - lo),
                                                 static_cast<const uint8_t *>(t.source.data) + (a - t.offset), b - a))
                            << t.name;
                        fetched += b - a;
                    }
                }
            }
            // Every packed byte reaches exactly one rank.
            EXPECT_EQ(fetched, packed) << offload_tier_name(tier) << " world " << world;
        }
    }
    fs::remove_all(tmp);
}

TEST(WeightStore, TierNoneKeepsEverythingWhole) {
    const auto m = make_mem_model();
    auto be = make_cpu_backend(1);
    WeightStoreOptions o;
    o.tier = OffloadTier::none;
    EXPECT_THROW(WeightStore(make_plan(*m, 2, true), 0, *be, o), Error) << "a streamed plan needs a tier";
    const PartitionPlan plan = make_plan(*m, 2, false);
    WeightStore store(plan, 1, *be, o);
    for (size_t u = 0; u < plan.units.size(); ++u) {
        const PartitionUnit & pu = plan.units[u];
        if (pu.flat_bytes == 0) continue;
        std::vector<uint8_t> want(pu.flat_bytes);
        copy_flat(pu, want.data());
        ASSERT_NE(store.resident_flat(int(u)), nullptr);
        EXPECT_EQ(0, std::memcmp(store.resident_flat(int(u)), want.data(), pu.flat_bytes)) << pu.name;
        std::vector<uint8_t> dst(pu.slice_bytes);
        EXPECT_THROW(store.fetch_slice(int(u), dst.data(), be->stream(StreamRole::copy)), Error);
    }
    EXPECT_EQ(store.memory().resident, plan.resident_bytes());
    EXPECT_EQ(store.memory().slices + store.memory().staging, 0u);
    EXPECT_TRUE(store.nvme_file().empty());
}

TEST(WeightStore, TruncatedNvmeFileIsAShortReadError) {
    const auto m = make_mem_model();
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("wstore");
    const PartitionPlan plan = make_plan(*m, 2);
    WeightStoreOptions o;
    o.tier = OffloadTier::nvme;
    o.nvme_reuse = false;   // the private nameless file (reuse: test_nvme_reuse.cpp)
    o.nvme_path = tmp;
    o.aio_block_size = 8192;
    WeightStore store(plan, 1, *be, o);
    const auto files = open_files_in(getpid(), tmp);
    ASSERT_EQ(files.size(), 1u);
    ASSERT_EQ(truncate(files[0].c_str(), 0), 0);
    const int u = first_streamed(plan);
    const auto t0 = std::chrono::steady_clock::now();
    const std::string err = fetch_error(store, *be, plan.units[size_t(u)], u);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_HAS(err, "short read");
    EXPECT_HAS(err, store.nvme_file());
    EXPECT_HAS(err, "after 4 tries");
    EXPECT_LT(secs, 2.0);
    fs::remove_all(tmp);
}

TEST(WeightStore, TransientEioIsRetried) {
    const auto m = make_mem_model();
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("wstore");
    const PartitionPlan plan = make_plan(*m, 2);
    WeightStoreOptions o;
    o.tier = OffloadTier::nvme;
    o.nvme_reuse = false;   // the private nameless file (reuse: test_nvme_reuse.cpp)
    o.nvme_path = tmp;
    o.aio_block_size = 8192;
    o.aio_queue_depth = 3;
    WeightStore store(plan, 0, *be, o);
    std::mutex mu;
    std::map<uint64_t, int> attempts;   // per chunk offset
    HookGuard hook([&](uint64_t off, size_t) {
        std::lock_guard<std::mutex> lock(mu);
        return ++attempts[off] <= 2 ? -EIO : 0;
    });
    const int u = first_streamed(plan);
    const PartitionUnit & pu = plan.units[size_t(u)];
    EXPECT_EQ(fetch(store, *be, pu, u), expected_slice(pu, 0));
    // the read covers the slice's extent in the file (slice, padding, tag)
    ASSERT_EQ(attempts.size(), (slice_extent(pu.slice_bytes) + 8191) / 8192) << "one entry per chunk";
    for (const auto & [off, n] : attempts) EXPECT_EQ(n, 3) << "chunk at " << off;
    fs::remove_all(tmp);
}

TEST(WeightStore, PersistentEioFailsAfterMaxRetries) {
    const auto m = make_mem_model();
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("wstore");
    const PartitionPlan plan = make_plan(*m, 1);
    WeightStoreOptions o;
    o.tier = OffloadTier::nvme;
    o.nvme_reuse = false;   // the private nameless file (reuse: test_nvme_reuse.cpp)
    o.nvme_path = tmp;
    o.max_retries = 2;
    WeightStore store(plan, 0, *be, o);
    std::atomic<int> calls{0};
    HookGuard hook([&](uint64_t, size_t) { ++calls; return -EIO; });
    const int u = first_streamed(plan);
    const std::string err = fetch_error(store, *be, plan.units[size_t(u)], u);
    EXPECT_HAS(err, "Input/output error");
    EXPECT_HAS(err, "after 3 tries");
    EXPECT_HAS(err, store.nvme_file());
    EXPECT_HAS(err, "nvme_path");
    EXPECT_EQ(calls.load(), 3) << "1 attempt + max_retries resubmissions (one chunk)";
    fs::remove_all(tmp);
}

TEST(NvmeFile, FallbacksReadTheSameBytesAndRetry) {
    const std::string tmp = make_temp_dir("nvme");
    std::vector<uint8_t> data(5 * 4096 + 100);
    std::mt19937 rng(3);
    for (uint8_t & b : data) b = uint8_t(rng());
    for (int mode = 0; mode < 8; ++mode) {
        const bool uring = mode & 1, direct = mode & 2, tmpfile = mode & 4;
        {
            SCOPED_TRACE(testing::Message() << "uring " << uring << " direct " << direct << " tmpfile " << tmpfile);
            NvmeFileOptions o;
            o.nvme_path = tmp;
            o.block_size = 4096;
            o.queue_depth = 4;
            o.use_uring = uring;
            o.use_direct = direct;
            o.use_tmpfile = tmpfile;
            const std::string path = tmp + "/f.weights";
            NvmeFile f(path, o);
            EXPECT_HAS(f.path(), path);
            EXPECT_TRUE(folder_names(tmp).empty()) << "the file has no name";
            const auto open = open_files_in(getpid(), tmp);
            ASSERT_EQ(open.size(), 1u);
            f.reserve(8192 + data.size());
            f.write(8192, data.data(), data.size());
            f.finish_writes();
            EXPECT_EQ(f.size() % 4096, 0u);
            EXPECT_EQ(f.size(), 8192 + 6 * 4096u);
            if (!uring) {
                EXPECT_FALSE(f.uses_uring());
            }
            if (!direct) {
                EXPECT_FALSE(f.uses_direct());
            }
            void * raw = std::aligned_alloc(4096, 6 * 4096);
            ASSERT_NE(raw, nullptr);
            {
                int n = 0;
                HookGuard hook([&](uint64_t, size_t) { return n++ == 0 ? -EIO : 0; });   // first attempt fails
                f.read(8192, raw, data.size());
                EXPECT_EQ(0, std::memcmp(raw, data.data(), data.size()));
                EXPECT_EQ(n, 7) << "6 chunks + 1 retry";
            }
            ASSERT_EQ(truncate(open[0].c_str(), 8192 + 4096), 0);
            try {
                f.read(8192, raw, data.size());
                ADD_FAILURE() << "expected a short read";
            } catch (const Error & e) {
                EXPECT_HAS(e.message(), "short read");
                EXPECT_HAS(e.message(), path);
            }
            std::free(raw);
        }
    }
    EXPECT_TRUE(fs::is_empty(tmp)) << "NvmeFile leaves nothing";
    EXPECT_TRUE(open_files_in(getpid(), tmp).empty()) << "NvmeFile closes its file";
    fs::remove_all(tmp);
}

TEST(NvmeFile, FallbackRemovesItsLeftoversButNeverFollowsALink) {
    const std::string tmp = make_temp_dir("nvme_left");
    const std::string nvme = tmp + "/nvme", victim = tmp + "/victim";
    fs::create_directories(nvme);
    write_file(victim, "not yours");
    // A leftover of a job killed between the fallback's open and unlink, and a link planted with such a name.
    write_file(nvme + "/ztinfer-rank0.weights.zt-unlinked-Ab12Cd", std::string(4096, 'x'));
    fs::create_symlink(victim, nvme + "/ztinfer-rank1.weights.zt-unlinked-Ef34Gh");
    write_file(nvme + "/notes.txt", "a file of the user's");
    NvmeFileOptions o;
    o.nvme_path = nvme;
    o.use_tmpfile = false;
    {
        NvmeFile f(nvme + "/ztinfer-rank0.weights", o);
        const std::string data(4096, 'z');
        f.write(0, data.data(), data.size());
        f.finish_writes();
        auto names = folder_names(nvme);
        std::sort(names.begin(), names.end());
        EXPECT_EQ(names, (std::vector<std::string>{"notes.txt", "ztinfer-rank1.weights.zt-unlinked-Ef34Gh"}));
    }
    EXPECT_EQ(read_file(victim), "not yours");
    EXPECT_EQ(read_file(nvme + "/notes.txt"), "a file of the user's");
    fs::remove_all(tmp);
}

TEST(NvmeFile, UnwritableFolderIsAClearError) {
    NvmeFileOptions o;
    o.nvme_path = "/nonexistent/zt_nvme";
    try {
        NvmeFile f("/nonexistent/zt_nvme/ztinfer-rank0.weights", o);
        ADD_FAILURE() << "expected an error";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "/nonexistent/zt_nvme/ztinfer-rank0.weights");
        EXPECT_HAS(e.message(), "nvme_path");
    }
}
