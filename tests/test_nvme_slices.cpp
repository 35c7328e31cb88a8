// NVMe slice files with ztinfer.nvme_reuse false are private to the store that made them (issue 12; reusable
// named files: test_nvme_reuse.cpp):
//  - two stores of different models on one nvme_path at once each compute with their own weights (logits
//    bit-identical to the resident run);
//  - a symlink planted at the name older versions wrote (<nvme_path>/ztinfer-rank<r>.weights) leaves its target
//    untouched;
//  - bytes of another store's file put into a store's file are an error naming the file, never weights;
//  - nvme_path lists no file while a store lives, after it ends, or after its process is killed (kill -9);
//  - the slice header: another model / rank / size / nonce, or no header at all, is an error naming the file;
//  - quantized GGUF models (Q4_0, Q4_1, Q8_0 fixtures of tests/data/gguf_models) streamed as their blocks through
//    the nvme and cpu tiers compute logits bit-identical to the resident run.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/model/synthetic_model.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/slice_header.h"
#include "runtime/stream/weight_store.h"
#include "tests/nvme_slices.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
namespace fs = std::filesystem;

namespace {

// Two random llama models of the same shapes (seeds 1 and 2), synthesized once per process.
struct ModelDirs {
    std::string root, a, b;
    ModelDirs() : root(make_temp_dir("nvme_models")), a(root + "/a"), b(root + "/b") {
        const std::string tok = root + "/tok";
        fs::create_directories(tok);
        const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2/";
        EXPECT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + tok + "/tokenizer.json").c_str()), 0);
        fs::copy_file(src + "tokenizer_config.json", tok + "/tokenizer_config.json");
        for (const auto & [dir, seed] : {std::pair{a, 1}, std::pair{b, 2}}) {
            SynthOptions o;
            o.arch = "llama"; o.layers = 2; o.hidden = 32; o.heads = 4; o.kv_heads = 2; o.intermediate = 64;
            o.max_position_embeddings = 64; o.dtype = "fp32"; o.seed = uint64_t(seed); o.tokenizer_dir = tok;
            o.out_dir = dir;
            synthesize_model(o);
        }
    }
};
const ModelDirs & model_dirs() {
    static const ModelDirs dirs;
    return dirs;
}

// A model opened and planned for one rank with every unit streamed.
struct Loaded {
    ModelConfig cfg;
    Checkpoint ckpt;
    ModelWeights w;
    PartitionPlan plan;
    explicit Loaded(const std::string & dir)
        : cfg(ModelConfig::load(dir)), ckpt(dir), w(bind_weights(ckpt, cfg)), plan(plan_partition(cfg, w, options())) {}
    static PartitionOptions options() {
        PartitionOptions po;
        po.persistence_threshold = 1000;
        po.partition_embeddings = true;
        return po;
    }
};

WeightStoreOptions nvme_options(const std::string & nvme_path, const Loaded & m) {
    WeightStoreOptions o;
    o.tier = OffloadTier::nvme;
    o.nvme_path = nvme_path;
    o.aio_block_size = 8192;
    o.buffer_count = 2;
    o.checkpoint = m.ckpt.identity();
    o.nvme_reuse = false;   // the private, nameless file these tests are about
    return o;
}

// Logits of one 4-token prompt (Llama 2 ids unless given).
std::vector<float> prompt_logits(Forward & f, std::vector<int32_t> prompt = {1, 15043, 3186, 29892}) {
    f.reserve(1, 16);
    std::vector<SequenceStep> batch{{0, 0, prompt.data(), int32_t(prompt.size())}};
    std::vector<float> logits;
    f.step(batch, logits);
    return logits;
}

// Streams `m` from `store` through a one-rank schedule and returns the prompt's logits.
std::vector<float> streamed_logits(const Loaded & m, WeightStore & store, Backend & be,
                                   std::vector<int32_t> prompt = {1, 15043, 3186, 29892}) {
    auto comm = make_local_communicator(&be);
    Schedule schedule(m.plan, store, be, *comm, ScheduleOptions{});
    Forward f(m.cfg, m.plan, schedule, be);
    return prompt_logits(f, std::move(prompt));
}

bool bit_identical(const std::vector<float> & x, const std::vector<float> & y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

int first_streamed(const PartitionPlan & p) {
    for (size_t i = 0; i < p.units.size(); ++i)
        if (p.units[i].streamed && p.units[i].slice_bytes > 0) return int(i);
    return -1;
}

// Fetches unit u and waits; returns the error text ("" when it worked and the bytes are copy_slice's).
std::string fetch_error(WeightStore & store, Backend & be, const PartitionUnit & pu, int u) {
    Buffer dst = be.alloc(pu.slice_bytes, MemKind::device);
    Stream * s = be.stream(StreamRole::copy);
    try {
        store.fetch_slice(u, dst.data(), s);
        be.synchronize(s);
    } catch (const std::exception & e) {
        return e.what();
    }
    std::vector<uint8_t> want(pu.slice_bytes);
    copy_slice(pu, 0, want.data());
    return std::memcmp(dst.data(), want.data(), pu.slice_bytes) == 0 ? "" : "wrong bytes";
}

// The file a store made: the one descriptor of this process in `nvme` that `before` did not list.
std::string new_open_file(const std::string & nvme, const std::vector<std::string> & before) {
    std::string found;
    for (const std::string & f : open_files_in(::getpid(), nvme))
        if (std::find(before.begin(), before.end(), f) == before.end()) {
            EXPECT_TRUE(found.empty()) << "two new files in " << nvme;
            found = f;
        }
    EXPECT_FALSE(found.empty()) << "no file open in " << nvme;
    return found;
}

}  // namespace

TEST(NvmeSlices, TwoModelsOnOneNvmePathEachComputeWithTheirOwnWeights) {
    const Loaded a(model_dirs().a), b(model_dirs().b);
    auto be = make_cpu_backend(1);
    std::vector<float> ref_a, ref_b;
    {
        Forward fa(a.cfg, a.w, *be);
        ref_a = prompt_logits(fa);
        Forward fb(b.cfg, b.w, *be);
        ref_b = prompt_logits(fb);
    }
    ASSERT_FALSE(bit_identical(ref_a, ref_b)) << "the two models must differ";
    ASSERT_NE(a.ckpt.identity(), b.ckpt.identity());
    const std::string nvme = make_temp_dir("nvme_shared");
    // Both stores live at once on one folder (two jobs, same rank, same nvme_path).
    WeightStore store_a(a.plan, 0, *be, nvme_options(nvme, a));
    WeightStore store_b(b.plan, 0, *be, nvme_options(nvme, b));
    EXPECT_TRUE(bit_identical(streamed_logits(a, store_a, *be), ref_a)) << "model a computed with other weights";
    EXPECT_TRUE(bit_identical(streamed_logits(b, store_b, *be), ref_b)) << "model b computed with other weights";
    EXPECT_NE(store_a.nvme_file(), "");
    fs::remove_all(nvme);
}

TEST(NvmeSlices, PlantedSymlinkAtTheOldNameLeavesItsTargetAlone) {
    const Loaded a(model_dirs().a);
    auto be = make_cpu_backend(1);
    const std::string tmp = make_temp_dir("nvme_link");
    const std::string nvme = tmp + "/nvme", victim = tmp + "/victim.txt";
    fs::create_directories(nvme);
    write_file(victim, "precious bytes of someone else");
    fs::create_symlink(victim, nvme + "/ztinfer-rank0.weights");
    {
        WeightStore store(a.plan, 0, *be, nvme_options(nvme, a));
        EXPECT_EQ(read_file(victim), "precious bytes of someone else") << "the store wrote through the link";
        const int u = first_streamed(a.plan);
        ASSERT_GE(u, 0);
        EXPECT_EQ(fetch_error(store, *be, a.plan.units[size_t(u)], u), "");
    }
    EXPECT_EQ(read_file(victim), "precious bytes of someone else");
    EXPECT_TRUE(fs::is_symlink(nvme + "/ztinfer-rank0.weights")) << "the link is not the store's to remove";
    fs::remove_all(tmp);
}

TEST(NvmeSlices, AnotherFilesBytesAreAnErrorNamingTheFileNotWeights) {
    const Loaded a(model_dirs().a), b(model_dirs().b);
    auto be = make_cpu_backend(1);
    const std::string nvme = make_temp_dir("nvme_foreign");
    const std::vector<std::string> none = open_files_in(::getpid(), nvme);
    WeightStore store_a(a.plan, 0, *be, nvme_options(nvme, a));
    const std::string file_a = new_open_file(nvme, none);
    const std::vector<std::string> with_a = open_files_in(::getpid(), nvme);
    WeightStore store_b(b.plan, 0, *be, nvme_options(nvme, b));
    const std::string file_b = new_open_file(nvme, with_a);
    ASSERT_FALSE(file_a.empty() || file_b.empty());
    const int u = first_streamed(a.plan);
    ASSERT_GE(u, 0);
    ASSERT_EQ(fetch_error(store_a, *be, a.plan.units[size_t(u)], u), "");
    // Another process rewrites a's file with b's bytes (what the fixed file name allowed).
    write_file(file_a, read_file(file_b));
    const std::string err = fetch_error(store_a, *be, a.plan.units[size_t(u)], u);
    EXPECT_HAS(err, store_a.nvme_file());
    EXPECT_HAS(err, "another model");
    EXPECT_HAS(err, a.plan.units[size_t(u)].name);
    EXPECT_EQ(fetch_error(store_b, *be, b.plan.units[size_t(u)], u), "") << "b still reads its own slices";
    fs::remove_all(nvme);
}

TEST(NvmeSlices, NvmePathListsNoFileWhileAStoreLivesNorAfterItsProcessIsKilled) {
    const std::string model = model_dirs().a;   // synthesized before the fork
    const std::string nvme = make_temp_dir("nvme_kill");
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {   // a job: builds its store, says so, then waits to be killed
        ::close(ready[0]);
        try {
            auto be = make_cpu_backend(1);
            const Loaded m(model);
            WeightStore store(m.plan, 0, *be, nvme_options(nvme, m));
            if (::write(ready[1], "1", 1) != 1) ::_exit(3);
            while (true) ::pause();
        } catch (...) {
            ::_exit(2);
        }
    }
    ::close(ready[1]);
    char c = 0;
    const bool built = ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
    if (built) {
        EXPECT_EQ(folder_names(nvme), std::vector<std::string>{}) << "the slice file has a name";
        EXPECT_EQ(open_files_in(child, nvme).size(), 1u) << "the store holds its file open";
    }
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(built) << "the child could not build its store";
    EXPECT_EQ(folder_names(nvme), std::vector<std::string>{}) << "the killed job left its slice file behind";
    fs::remove_all(nvme);
}

TEST(NvmeSlices, HeaderOfAnotherModelRankSizeOrNoneIsAnErrorNamingTheFile) {
    SliceFileHeader want;
    want.checkpoint = "0123456789abcdef0123456789abcdef";
    want.nonce = 42;
    want.rank = 1;
    want.world = 2;
    want.units = 6;
    want.data_bytes = 6 * 8192;
    std::vector<uint8_t> page(kSliceHeaderBytes);
    encode_slice_header(want, page.data());
    EXPECT_NO_THROW(check_slice_header(page.data(), want, "/nvme/f"));
    auto error_for = [&](const SliceFileHeader & got) {
        encode_slice_header(got, page.data());
        try {
            check_slice_header(page.data(), want, "/nvme/f");
        } catch (const Error & e) {
            EXPECT_HAS(e.message(), "/nvme/f");
            return e.message();
        }
        return std::string("no error");
    };
    SliceFileHeader h = want;
    h.checkpoint = "fedcba9876543210fedcba9876543210";
    EXPECT_HAS(error_for(h), "another model (checkpoint fedcba9876543210fedcba9876543210)");
    h = want;
    h.rank = 0;
    EXPECT_HAS(error_for(h), "rank 0 of 2, this is rank 1 of 2");
    h = want;
    h.data_bytes += 4096;
    EXPECT_HAS(error_for(h), "6 slices in 53248 bytes");
    h = want;
    h.nonce = 43;
    EXPECT_HAS(error_for(h), "another job's copy");
    std::fill(page.begin(), page.end(), 0);   // a truncated (zero-filled) or foreign file
    try {
        check_slice_header(page.data(), want, "/nvme/f");
        ADD_FAILURE() << "expected an error";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "/nvme/f is not a ztinfer NVMe slice file");
    }
}

TEST(NvmeSlices, SliceTagOfAnotherUnitOrFileIsAnError) {
    SliceTag want;
    want.nonce = 7;
    want.checkpoint = slice_checkpoint_hash("abc");
    want.unit = 3;
    want.offset = 4096;
    want.bytes = 8192;
    EXPECT_EQ(slice_extent(8192), 3 * 4096u) << "slice + tag rounded up to pages";
    EXPECT_EQ(slice_extent(100), 4096u);
    std::vector<uint8_t> tag(kSliceTagBytes);
    encode_slice_tag(want, tag.data());
    EXPECT_NO_THROW(check_slice_tag(tag.data(), want, "/nvme/f", "layer 1"));
    SliceTag other = want;
    other.unit = 4;
    encode_slice_tag(other, tag.data());
    EXPECT_THROW(check_slice_tag(tag.data(), want, "/nvme/f", "layer 1"), Error);
    other = want;
    other.nonce = 8;
    encode_slice_tag(other, tag.data());
    EXPECT_THROW(check_slice_tag(tag.data(), want, "/nvme/f", "layer 1"), Error);
    std::fill(tag.begin(), tag.end(), 0);
    try {
        check_slice_tag(tag.data(), want, "/nvme/f", "layer 1");
        ADD_FAILURE() << "expected an error";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "layer 1");
        EXPECT_HAS(e.message(), "/nvme/f");
        EXPECT_HAS(e.message(), "truncated or overwritten");
    }
}

TEST(NvmeSlices, QuantizedGgufModelsStreamToTheResidentLogits) {
    auto be = make_cpu_backend(1);
    const std::string nvme = make_temp_dir("nvme_quant");
    const std::vector<int32_t> prompt = {47, 249, 197, 110, 29};   // the fixtures' vocabulary has 320 tokens
    for (const char * name : {"llama-q4_0", "llama-q4_1", "llama-q8_0", "qwen3-q4_1", "qwen2-q8_0"}) {
        SCOPED_TRACE(name);
        const Loaded m(std::string(ZT_TEST_DATA) + "/gguf_models/" + name + ".gguf");
        size_t quantized = 0;
        for (const PartitionUnit & u : m.plan.units) {
            ASSERT_TRUE(u.streamed) << u.name;
            for (const PackedTensor & t : u.tensors) quantized += dtype_is_quantized(t.source.dtype) ? 1 : 0;
        }
        ASSERT_GT(quantized, 0u) << "the plan streams quantized blocks";
        EXPECT_LT(m.plan.bits_per_weight(), 9.0);
        std::vector<float> ref;
        {
            Forward f(m.cfg, m.w, *be);
            ref = prompt_logits(f, prompt);
        }
        ASSERT_FALSE(ref.empty());
        for (OffloadTier tier : {OffloadTier::nvme, OffloadTier::cpu}) {
            WeightStoreOptions o = nvme_options(nvme, m);
            o.tier = tier;
            WeightStore store(m.plan, 0, *be, o);
            EXPECT_TRUE(bit_identical(streamed_logits(m, store, *be, prompt), ref))
                << offload_tier_name(tier) << ": streamed quantized weights computed other logits";
        }
    }
    fs::remove_all(nvme);
}
