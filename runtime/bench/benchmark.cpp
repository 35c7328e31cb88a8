// `ztinfer bench` (see benchmark.h): measures, on the backend and communicator a job would use, the pieces the
// weight-streaming pipeline is made of, and prints one nccl-tests-style table per measurement (rank 0):
//   1. h2d        pinned host -> device copies on the copy stream, size sweep (the PCIe link)
//   2. nvme       NvmeFile reads of a test file in aio block_size chunks, queue_depth in flight (the NVMe tier)
//   3. allgather  all-gather on the comm stream, size sweep; algbw = bytes / time, busbw = algbw (n-1)/n
//   4. layer      one decoder layer's compute (decode: 1 new token after --context; prefill: --prompt tokens)
//   5. decode     streamed decode steps (real Schedule + Forward, offload "cpu", overlap on, prefetch depth 2)
//                 against the H2D limit: link efficiency = (bytes fetched per rank / H2D rate) / step time
// Every table verifies what it moved (#wrong: 32-bit words that differ from the pattern written, or non-finite
// logits; 0 expected). Times come from std::chrono around Backend::synchronize, so they hold for every backend.
// Under mpirun every rank runs every table at the same time; rank 0 prints the slowest rank's time and the sum
// of #wrong over ranks. Random model weights: ONE bf16 layer in host memory that every layer points at.
#include "runtime/bench/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include <cblas.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/dtype.h"
#include "runtime/base/error.h"
#include "runtime/stream/forward.h"
#include "runtime/job/job.h"
#include "runtime/job/job_config.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/backend/memory_account.h"
#include "runtime/model/model_config.h"
#include "runtime/stream/nvme_file.h"
#include "runtime/backend/parallel_for.h"
#include "runtime/stream/schedule.h"
#include "runtime/base/trace.h"
#include "runtime/stream/weight_store.h"
#ifdef ZT_HAVE_CUDA
#include <cublasLt.h>

#include "kernels/device_query.h"
#include "runtime/backend/backend_cuda.h"
#endif

namespace zt {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// --- verification pattern: word i of a buffer seeded `seed` ------------------------------------------------

uint32_t pattern_word(uint64_t i, uint64_t seed) {
    uint64_t x = i + seed * 0x9E3779B97F4A7C15ull;   // murmur3's finaliser
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return uint32_t(x);
}

// bytes (a multiple of 4) at p = words first_word, first_word + 1, ... of the pattern
void fill_pattern(void * p, size_t bytes, uint64_t first_word, uint64_t seed) {
    uint32_t * w = static_cast<uint32_t *>(p);
    for (size_t i = 0; i < bytes / 4; ++i) w[i] = pattern_word(first_word + i, seed);
}

int64_t count_wrong(const void * p, size_t bytes, uint64_t first_word, uint64_t seed) {
    const uint32_t * w = static_cast<const uint32_t *>(p);
    int64_t wrong = 0;
    for (size_t i = 0; i < bytes / 4; ++i) wrong += w[i] != pattern_word(first_word + i, seed);
    return wrong;
}

int64_t count_non_finite(const std::vector<float> & v) {
    int64_t n = 0;
    for (float x : v) n += !std::isfinite(x);
    return n;
}

// min, 2 min, 4 min, ... up to max (each a multiple of 4 bytes)
std::vector<size_t> size_sweep(size_t lo, size_t hi) {
    std::vector<size_t> sizes;
    for (size_t s = std::max<size_t>(4, round_up(lo, 4)); s <= hi; s *= 2) sizes.push_back(s);
    return sizes;
}

// The system's MemAvailable (bytes), 0 when unknown.
size_t mem_available() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    while (f >> key >> kb) {
        if (key == "MemAvailable:") return kb * 1024;
        f.ignore(256, '\n');
    }
    return 0;
}

// --- one row of a table, over the ranks ----------------------------------------------------------------------

struct RowResult {
    double seconds = 0;    // this rank's time; on rank 0 after across_ranks: the slowest rank's
    int64_t wrong = 0;     // summed over ranks on rank 0
    std::string skipped;   // why the row was not measured (any rank)
};

// Rank 0 gets the slowest time, the sum of #wrong and the first reason to skip; the other ranks their own row.
RowResult across_ranks(Communicator & comm, const RowResult & mine) {
    if (comm.world_size() == 1) return mine;
    const json j = {{"s", mine.seconds}, {"w", mine.wrong}, {"k", mine.skipped}};
    const std::vector<std::string> all = comm.gather_strings(j.dump());
    if (comm.rank() != 0) return mine;
    RowResult r;
    for (const auto & text : all) {
        const json x = json::parse(text);
        r.seconds = std::max(r.seconds, x["s"].get<double>());
        r.wrong += x["w"].get<int64_t>();
        if (r.skipped.empty()) r.skipped = x["k"].get<std::string>();
    }
    return r;
}

// --- model shapes and random weights -------------------------------------------------------------------------

struct Shape {
    std::string name;
    int64_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, vocab = 0, layers = 0;
};

Shape shape_of(const BenchmarkOptions & opt) {
    Shape s;
    if (opt.shape == "llama2-7b") s = {"llama2-7b", 4096, 11008, 32, 32, 32000, 32};
    else if (opt.shape == "llama2-13b") s = {"llama2-13b", 5120, 13824, 40, 40, 32000, 40};
    else if (opt.shape == "llama2-70b") s = {"llama2-70b", 8192, 28672, 64, 8, 32000, 80};
    else if (opt.shape == "qwen2-7b") s = {"qwen2-7b", 3584, 18944, 28, 4, 152064, 28};   // gte-Qwen2-7B's body
    else ZT_FAIL("--shape {} is not known: use llama2-7b, llama2-13b, llama2-70b or qwen2-7b (and --hidden, --intermediate, "
                 "--heads, --kv-heads, --vocab to change it)", opt.shape);
    const bool custom = opt.hidden > 0 || opt.intermediate > 0 || opt.heads > 0 || opt.kv_heads > 0 || opt.vocab > 0;
    if (opt.hidden > 0) s.hidden = opt.hidden;
    if (opt.intermediate > 0) s.intermediate = opt.intermediate;
    if (opt.heads > 0) s.heads = opt.heads;
    if (opt.kv_heads > 0) s.kv_heads = opt.kv_heads;
    else if (opt.heads > 0 && s.heads % s.kv_heads != 0) s.kv_heads = s.heads;
    if (opt.vocab > 0) s.vocab = opt.vocab;
    if (opt.layers > 0) s.layers = opt.layers;
    if (custom) s.name += " (modified)";
    return s;
}

ModelConfig model_config(const Shape & s, int64_t layers, int64_t max_positions, bool causal = true) {
    json j = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", s.hidden},
                    {"intermediate_size", s.intermediate}, {"num_hidden_layers", layers},
                    {"num_attention_heads", s.heads}, {"num_key_value_heads", s.kv_heads}, {"vocab_size", s.vocab},
                    {"max_position_embeddings", std::max<int64_t>(4096, max_positions)}, {"rms_norm_eps", 1e-5},
                    {"rope_theta", 10000.0}, {"torch_dtype", "bfloat16"}};
    if (!causal) j["is_causal"] = false;
    return ModelConfig::from_json(j, "bench shape " + s.name);
}

// One decoder layer, the embedding and the final norm of random bf16 weights, in host memory. Every layer of the
// ModelWeights it hands out points at the same tensors (timing does not care), so a 70B shape with 80 layers
// needs one layer of host memory here. Uniform values with std 1/sqrt(fan_in) keep activations O(1).
class RandomModel {
public:
    RandomModel(const Shape & s, int n_threads) {
        ThreadPool pool(n_threads);
        pool_ = &pool;
        const int64_t C = s.hidden, I = s.intermediate, D = s.hidden / s.heads, H = s.heads, KV = s.kv_heads;
        const float in_c = 1.0f / std::sqrt(float(C));
        embed_ = make({s.vocab, C}, 1.0f, 1.0f);
        norm_ = make({C}, 0.0f, 1.0f);
        layer_.input_norm = make({C}, 0.0f, 1.0f);
        layer_.post_norm = make({C}, 0.0f, 1.0f);
        layer_.q = make({H * D, C}, in_c, 0.0f);
        layer_.k = make({KV * D, C}, in_c, 0.0f);
        layer_.v = make({KV * D, C}, in_c, 0.0f);
        layer_.o = make({C, H * D}, 1.0f / std::sqrt(float(H * D)), 0.0f);
        layer_.gate = make({I, C}, in_c, 0.0f);
        layer_.up = make({I, C}, in_c, 0.0f);
        layer_.down = make({C, I}, 1.0f / std::sqrt(float(I)), 0.0f);
        pool_ = nullptr;
    }

    ModelWeights weights(int64_t layers) const {
        ModelWeights w;
        w.embed = embed_;
        w.final_norm = norm_;
        w.lm_head = embed_;   // tied: one more copy of the vocabulary is not worth the host memory
        w.layers.assign(size_t(layers), layer_);
        return w;
    }

    // multiply-adds of the layer's matmuls per token
    double layer_params() const {
        double n = 0;
        for (const Tensor * t : {&layer_.q, &layer_.k, &layer_.v, &layer_.o, &layer_.gate, &layer_.up, &layer_.down})
            n += double(t->numel());
        return n;
    }

private:
    // values uniform in (offset - a, offset + a) with a = sqrt(3) std
    Tensor make(std::vector<int64_t> shape, float std_dev, float offset) {
        Tensor t(nullptr, DType::BF16, std::move(shape));
        storage_.emplace_back(new uint16_t[size_t(t.numel())]);
        uint16_t * p = storage_.back().get();
        t.data = p;
        const float a = std::sqrt(3.0f) * std_dev;
        const uint64_t seed = storage_.size();
        pool_->parallel_for(t.numel(), 1 << 16, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) {
                const float u = float(pattern_word(uint64_t(i), seed) >> 8) * (1.0f / 16777216.0f);   // [0, 1)
                p[i] = f32_to_bf16(offset + a * (2.0f * u - 1.0f));
            }
        });
        return t;
    }

    ThreadPool * pool_ = nullptr;   // while the constructor fills the tensors
    std::vector<std::unique_ptr<uint16_t[]>> storage_;
    Tensor embed_, norm_;
    LayerWeights layer_;
};

// Sum of the durations (µs) of the trace's "compute layer ..." spans.
double layer_compute_us(const Tracer & tracer) {
    const json events = json::parse("[" + tracer.events_json() + "]");
    double us = 0;
    for (const auto & e : events)
        if (e.value("ph", "") == "X" && e.value("name", "").rfind("compute layer", 0) == 0) us += e["dur"].get<double>();
    return us;
}

// --- the benchmark's state ---------------------------------------------------------------------------------

struct Bench {
    const BenchmarkOptions & opt;
    Backend & be;
    Communicator & comm;
    std::FILE * out;
    bool print = false;               // rank 0 prints
    int n_threads = 1;
    size_t min_bytes = 0, max_bytes = 0, nvme_bytes = 0, block_size = 0;
    Shape shape;
    json figures = json::object();
    int64_t wrong = 0;                // over every table (rank 0: over every rank)
    std::vector<std::pair<size_t, double>> h2d_gbps;   // table 1's rows: bytes -> GB/s
    std::unique_ptr<RandomModel> model;                // made on first use (tables 4 and 5)

    Bench(const BenchmarkOptions & o, Backend & backend, Communicator & c, std::FILE * f)
        : opt(o), be(backend), comm(c), out(f) {}

    template <typename... Args> void say(fmt::format_string<Args...> f, Args &&... args) {
        if (!print) return;
        fmt::print(out, f, std::forward<Args>(args)...);
        std::fflush(out);   // a row as soon as it is measured (and before the log lines on stderr)
    }
    void row_done(const RowResult & r) { wrong += r.wrong; }
    const RandomModel & random_model() {
        if (!model) model = std::make_unique<RandomModel>(shape, n_threads);
        return *model;
    }
};

// Seconds per copy of `bytes` src -> dst on stream s: `warmup` copies, then kCopyRounds rounds of `iters` copies
// back to back; the fastest round counts (the link's rate, not a moment the host was busy elsewhere: the decode
// table divides by it).
constexpr int kCopyRounds = 3;
double time_copies(Backend & be, void * dst, const void * src, size_t bytes, Stream * s, int warmup, int iters) {
    for (int i = 0; i < warmup; ++i) be.copy_async(dst, src, bytes, s);
    be.synchronize(s);
    double best = 0;
    for (int round = 0; round < kCopyRounds; ++round) {
        const auto t0 = Clock::now();
        for (int i = 0; i < iters; ++i) be.copy_async(dst, src, bytes, s);
        be.synchronize(s);
        const double t = seconds_since(t0) / iters;
        best = round == 0 ? t : std::min(best, t);
    }
    return best;
}

// --- 1. pinned host -> device copies -------------------------------------------------------------------------

void table_h2d(Bench & b) {
    b.say("#\n# h2d: pinned host -> device copies on the copy stream, {} warm-up, then the fastest of {} rounds of {} "
          "iterations; time of one copy\n", b.opt.warmup, kCopyRounds, b.opt.iters);
    b.say("# {:>12}  {:>12}  {:>9}  {:>7}\n", "size(B)", "time(us)", "GB/s", "#wrong");
    Buffer src = b.be.alloc(b.max_bytes, MemKind::pinned_host, "bench h2d source");
    Buffer dst = b.be.alloc(b.max_bytes, MemKind::device, "bench h2d destination");
    Stream * s = b.be.stream(StreamRole::copy);
    json rows = json::array();
    for (size_t bytes : size_sweep(b.min_bytes, b.max_bytes)) {
        const uint64_t seed = bytes;   // a new pattern per size: data left over from another size fails the check
        fill_pattern(src.data(), bytes, 0, seed);
        b.comm.barrier();
        RowResult r;
        r.seconds = time_copies(b.be, dst.data(), src.data(), bytes, s, b.opt.warmup, b.opt.iters);
        std::memset(src.data(), 0, bytes);   // verify: copy the device buffer back over the cleared source
        b.be.copy_async(src.data(), dst.data(), bytes, s);
        b.be.synchronize(s);
        r.wrong = count_wrong(src.data(), bytes, 0, seed);
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double gbps = double(bytes) / r.seconds / 1e9;
        b.h2d_gbps.emplace_back(bytes, gbps);
        b.say("  {:>12}  {:>12.2f}  {:>9.2f}  {:>7}\n", bytes, r.seconds * 1e6, gbps, r.wrong);
        rows.push_back({{"bytes", bytes}, {"time_us", r.seconds * 1e6}, {"gbps", gbps}, {"wrong", r.wrong}});
    }
    b.figures["h2d"] = {{"iters", b.opt.iters}, {"rounds", kCopyRounds}, {"warmup", b.opt.warmup}, {"rows", rows}};
}

// --- 2. NVMe reads ---------------------------------------------------------------------------------------------

void table_nvme(Bench & b) {
    if (b.opt.nvme_path.empty()) {
        b.say("#\n# nvme: skipped (no --nvme-path: give a folder on the NVMe drive to measure its read rate)\n");
        b.figures["nvme"] = {{"skipped", "no --nvme-path"}};
        return;
    }
    namespace fs = std::filesystem;
    ZT_CHECK(fs::is_directory(b.opt.nvme_path), "--nvme-path {} is not a folder: create it on the NVMe drive, or fix "
             "the path", b.opt.nvme_path);
    NvmeFileOptions no;
    no.nvme_path = b.opt.nvme_path;
    no.block_size = b.block_size;
    no.queue_depth = b.opt.aio_queue_depth;
    const size_t file_bytes = round_up(b.nvme_bytes, NvmeFile::kAlign);
    const size_t max_read = std::min(file_bytes, round_up(std::max(b.max_bytes, b.block_size), NvmeFile::kAlign));
    const std::string path = (fs::path(b.opt.nvme_path) / fmt::format("ztinfer-bench-rank{}.nvme", b.comm.rank())).string();
    const uint64_t seed = 0x5eed;
    NvmeFile file(path, no);   // removed again when it goes out of scope
    file.reserve(file_bytes);
    Buffer buf = b.be.alloc(max_read, MemKind::pinned_host, "bench NVMe staging");
    for (size_t off = 0; off < file_bytes; off += max_read) {
        const size_t n = std::min(max_read, file_bytes - off);
        fill_pattern(buf.data(), n, off / 4, seed);
        file.write(off, buf.data(), n);
    }
    file.finish_writes();
    b.say("#\n# nvme: reads of {} ({} B per rank) into pinned memory, block_size {} B, queue_depth {}, {}, {}; each "
          "row reads the whole file once in reads of `size`; time of one read\n", path, file_bytes, no.block_size,
          no.queue_depth, file.uses_uring() ? "io_uring" : "pread loop (no io_uring)",
          file.uses_direct() ? "O_DIRECT" : "buffered (page cache: not the drive's rate)");
    b.say("# {:>12}  {:>12}  {:>9}  {:>7}\n", "size(B)", "time(us)", "GB/s", "#wrong");
    std::vector<size_t> sizes;
    for (size_t s = round_up(b.block_size, NvmeFile::kAlign); s < max_read; s *= 4) sizes.push_back(s);
    sizes.push_back(max_read);
    json rows = json::array();
    for (size_t size : sizes) {
        b.comm.barrier();
        RowResult r;
        size_t reads = 0;
        for (size_t off = 0; off < file_bytes; off += size, ++reads) {
            const size_t n = std::min(size, file_bytes - off);
            std::memset(buf.data(), 0, n);
            const auto t0 = Clock::now();
            file.read(off, buf.data(), n);
            r.seconds += seconds_since(t0);
            r.wrong += count_wrong(buf.data(), n, off / 4, seed);
        }
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double gbps = double(file_bytes) / r.seconds / 1e9;
        b.say("  {:>12}  {:>12.2f}  {:>9.2f}  {:>7}\n", size, r.seconds / double(reads) * 1e6, gbps, r.wrong);
        rows.push_back({{"bytes", size}, {"time_us", r.seconds / double(reads) * 1e6}, {"gbps", gbps}, {"wrong", r.wrong}});
    }
    b.figures["nvme"] = {{"path", b.opt.nvme_path}, {"file_bytes", file_bytes}, {"block_size", no.block_size},
                         {"queue_depth", no.queue_depth}, {"io_uring", file.uses_uring()},
                         {"o_direct", file.uses_direct()}, {"rows", rows}};
}

// --- 3. all-gather ---------------------------------------------------------------------------------------------

void table_allgather(Bench & b) {
    const int n = b.comm.world_size(), rank = b.comm.rank();
    struct Size { size_t total, slice; };
    std::vector<Size> sizes;
    for (size_t bytes : size_sweep(b.min_bytes, b.max_bytes)) {
        const size_t slice = std::max<size_t>(4, bytes / size_t(n) / 4 * 4);
        sizes.push_back({slice * size_t(n), slice});
    }
    if (sizes.empty()) return;
    b.say("#\n# allgather: {} rank(s) over {}, in place on the comm stream, {} iterations after {} warm-up; size = "
          "the gathered bytes, time of one all-gather; busbw = algbw * (n-1)/n\n", n, b.comm.name(), b.opt.iters,
          b.opt.warmup);
    if (n == 1) b.say("# (one rank: the all-gather moves nothing, so algbw is meaningless and busbw is 0)\n");
    b.say("# {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>7}\n", "size(B)", "slice(B)", "time(us)", "algbw", "busbw", "#wrong");
    b.say("# {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>7}\n", "", "", "", "(GB/s)", "(GB/s)", "");
    const size_t max_total = sizes.back().total, max_slice = sizes.back().slice;
    Buffer full = b.be.alloc(max_total, MemKind::device, "bench all-gather buffer");
    Buffer mine = b.be.alloc(max_slice, MemKind::pinned_host, "bench all-gather slice");
    Buffer check = b.be.alloc(max_total, MemKind::pinned_host, "bench all-gather check");
    Stream * s = b.be.stream(StreamRole::comm);
    json rows = json::array();
    for (const Size & sz : sizes) {
        auto seed = [&](int r) { return uint64_t(sz.total) * 1009 + uint64_t(r); };   // per size and rank
        char * at = static_cast<char *>(full.data()) + size_t(rank) * sz.slice;
        fill_pattern(mine.data(), sz.slice, 0, seed(rank));
        b.be.copy_async(at, mine.data(), sz.slice, s);
        for (int i = 0; i < b.opt.warmup; ++i) b.comm.all_gather(at, full.data(), sz.slice, s);
        b.be.synchronize(s);
        b.comm.barrier();
        RowResult r;
        const auto t0 = Clock::now();
        for (int i = 0; i < b.opt.iters; ++i) b.comm.all_gather(at, full.data(), sz.slice, s);
        b.be.synchronize(s);
        r.seconds = seconds_since(t0) / b.opt.iters;
        b.be.copy_async(check.data(), full.data(), sz.total, s);   // verify every rank's slice
        b.be.synchronize(s);
        for (int q = 0; q < n; ++q)
            r.wrong += count_wrong(static_cast<char *>(check.data()) + size_t(q) * sz.slice, sz.slice, 0, seed(q));
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double algbw = double(sz.total) / r.seconds / 1e9, busbw = algbw * double(n - 1) / double(n);
        b.say("  {:>12}  {:>12}  {:>12.2f}  {:>9.2f}  {:>9.2f}  {:>7}\n", sz.total, sz.slice, r.seconds * 1e6, algbw,
              busbw, r.wrong);
        rows.push_back({{"bytes", sz.total}, {"slice_bytes", sz.slice}, {"time_us", r.seconds * 1e6},
                        {"algbw_gbps", algbw}, {"busbw_gbps", busbw}, {"wrong", r.wrong}});
    }
    b.figures["allgather"] = {{"ranks", n}, {"communicator", b.comm.name()}, {"iters", b.opt.iters}, {"rows", rows}};
}

// --- 4. one decoder layer's compute ----------------------------------------------------------------------------

void table_layer(Bench & b) {
    const Shape & sh = b.shape;
    const int64_t max_pos = int64_t(std::max(b.opt.context + 1, b.opt.prompt));
    const ModelConfig cfg = model_config(sh, 1, max_pos);
    const ModelWeights w = b.random_model().weights(1);
    PartitionOptions po;   // one layer, resident (nothing streamed): the schedule only hands out its weights
    po.world = 1;
    po.stream = false;
    const PartitionPlan plan = plan_partition(cfg, w, po);
    WeightStoreOptions so;
    so.tier = OffloadTier::none;
    WeightStore store(plan, 0, b.be, so);
    auto local = make_local_communicator(&b.be);
    Tracer tracer(b.comm.rank(), true);
    // overlap off: the schedule synchronises the compute stream after every unit, so the spans are exact
    Schedule schedule(plan, store, b.be, *local, ScheduleOptions{0, false}, &tracer);
    Forward fwd(cfg, plan, schedule, b.be);
    const double weight_bytes = double(plan.units[1].flat_bytes + plan.units[1].persistent_bytes);
    const double flop_per_token = 2 * b.random_model().layer_params();   // matmuls only (attention excluded)

    b.say("#\n# layer: one decoder layer of {} (hidden {}, intermediate {}, heads {}, kv heads {}), bf16 weights, "
          "compute stream; decode = 1 new token per sequence after {} past, prefill = {} tokens per sequence; median "
          "of {} steps after 1 warm-up; weight GB/s = layer bytes ({}) / time; TFLOP/s counts the matmuls\n",
          sh.name, sh.hidden, sh.intermediate, sh.heads, sh.kv_heads, b.opt.context, b.opt.prompt, b.opt.steps,
          size_t(weight_bytes));
    b.say("# {:>7}  {:>6}  {:>8}  {:>12}  {:>12}  {:>9}  {:>9}  {:>7}\n", "phase", "batch", "tokens", "time(us)",
          "tokens/s", "weightGB/s", "TFLOP/s", "#wrong");
    json rows = json::array();
    for (const char * phase : {"decode", "prefill"}) {
        const bool decode = std::string(phase) == "decode";
        const int32_t n_new = decode ? 1 : b.opt.prompt, past = decode ? b.opt.context : 0;
        for (int batch : b.opt.batches) {
            RowResult r;
            const int64_t tokens = int64_t(batch) * n_new;
            try {
                fwd.reserve(batch, past + n_new);
                std::vector<int32_t> ids(static_cast<size_t>(tokens));
                for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % size_t(sh.vocab));
                std::vector<SequenceStep> steps;
                for (int s = 0; s < batch; ++s) steps.push_back({s, past, ids.data() + size_t(s) * size_t(n_new), n_new});
                std::vector<float> logits;
                fwd.step(steps, logits);   // warm-up
                std::vector<double> us;
                for (int i = 0; i < b.opt.steps; ++i) {
                    tracer.clear();
                    fwd.step(steps, logits);
                    us.push_back(layer_compute_us(tracer));
                    r.wrong += count_non_finite(logits);
                }
                std::sort(us.begin(), us.end());
                r.seconds = us[us.size() / 2] * 1e-6;
            } catch (const Error & e) {   // e.g. out of device memory at a large batch: the row is skipped
                r.skipped = e.message();
            }
            r = across_ranks(b.comm, r);
            b.row_done(r);
            json row = {{"phase", phase}, {"batch", batch}, {"tokens", tokens}};
            if (!r.skipped.empty()) {
                b.say("  {:>7}  {:>6}  {:>8}  skipped: {}\n", phase, batch, tokens, r.skipped);
                row["skipped"] = r.skipped;
            } else {
                const double tps = double(tokens) / r.seconds, wgbps = weight_bytes / r.seconds / 1e9,
                             tflops = flop_per_token * double(tokens) / r.seconds / 1e12;
                b.say("  {:>7}  {:>6}  {:>8}  {:>12.1f}  {:>12.0f}  {:>9.2f}  {:>9.3f}  {:>7}\n", phase, batch, tokens,
                      r.seconds * 1e6, tps, wgbps, tflops, r.wrong);
                row.update({{"time_us", r.seconds * 1e6}, {"tokens_per_s", tps}, {"weight_gbps", wgbps},
                            {"tflops", tflops}, {"wrong", r.wrong}});
            }
            rows.push_back(row);
        }
    }
    b.figures["layer"] = {{"shape", sh.name}, {"hidden", sh.hidden}, {"intermediate", sh.intermediate},
                          {"heads", sh.heads}, {"kv_heads", sh.kv_heads}, {"vocab", sh.vocab},
                          {"layer_bytes", size_t(weight_bytes)}, {"context", b.opt.context}, {"prompt", b.opt.prompt},
                          {"rows", rows}};
}

// --- 4b. prefill GEMMs against a plain vendor GEMM ----------------------------------------------------------------
// ztinfer's matmul op (f32 activations x W weights -> f32, with its conversions) on the layer's three GEMM shapes at
// T = --prompt tokens, against the plain GEMM of the same shape: on CUDA a bare cublasLtMatmul in bf16 (bf16 in,
// bf16 out, fp32 accumulation, the heuristic's first algorithm: what torch.matmul runs); on CPU OpenBLAS sgemm on
// fp32 copies with every thread (ztinfer's CPU matmul is per-row sgemv, batch-invariant by design, so far slower).

#ifdef ZT_HAVE_CUDA
// Seconds per plain bf16 GEMM D (N x T, column-major) = A^T B, A = w (K x N), B = x (K x T), on `stream`.
double plain_cublaslt_seconds(Backend & be, int64_t T, int64_t N, int64_t K, int iters) {
    Buffer a = be.alloc(size_t(N * K) * 2, MemKind::device, "bench gemm"), x = be.alloc(size_t(T * K) * 2, MemKind::device, "bench gemm"),
           d = be.alloc(size_t(T * N) * 2, MemKind::device, "bench gemm"), ws = be.alloc(size_t(32) << 20, MemKind::device, "bench gemm");
    cudaStream_t stream = cuda_stream_of(be, nullptr);
    cublasLtHandle_t lt = nullptr;
    auto ok = [](cublasStatus_t st, const char * what) {
        ZT_CHECK(st == CUBLAS_STATUS_SUCCESS, "bench gemm: {} failed with cuBLAS status {}", what, int(st));
    };
    ok(cublasLtCreate(&lt), "cublasLtCreate");
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ok(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "set transa");
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "set transb");
    ok(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, uint64_t(K), uint64_t(N), K), "layout A");
    ok(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, uint64_t(K), uint64_t(T), K), "layout B");
    ok(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, uint64_t(N), uint64_t(T), N), "layout D");
    ok(cublasLtMatmulPreferenceCreate(&pref), "preference");
    const size_t ws_bytes = ws.bytes();
    ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes),
       "workspace");
    cublasLtMatmulHeuristicResult_t h{};
    int found = 0;
    ok(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, &h, &found), "heuristic");
    ZT_CHECK(found > 0, "bench gemm: cuBLASLt has no algorithm for {}x{}x{} bf16", N, T, K);
    const float alpha = 1, beta = 0;
    auto run = [&] {
        ok(cublasLtMatmul(lt, op, &alpha, a.data(), la, x.data(), lb, &beta, d.data(), ld, d.data(), ld, &h.algo,
                          ws.data(), ws_bytes, stream), "cublasLtMatmul");
    };
    run();
    be.synchronize(nullptr);
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) run();
    be.synchronize(nullptr);
    const double secs = seconds_since(t0) / iters;
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
    return secs;
}
#endif

// Seconds per OpenBLAS sgemm out (T,N) = x (T,K) . w (N,K)^T on fp32 host copies, with n_threads threads.
double plain_sgemm_seconds(int64_t T, int64_t N, int64_t K, int n_threads, int iters) {
    std::vector<float> x(size_t(T * K), 0.5f), w(size_t(N * K), 0.25f), out(size_t(T * N));
    openblas_set_num_threads(n_threads);
    auto run = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(N), int(K), 1.0f, x.data(), int(K), w.data(),
                    int(K), 0.0f, out.data(), int(N));
    };
    run();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) run();
    const double secs = seconds_since(t0) / iters;
    openblas_set_num_threads(1);   // the CPU backend's setting (see backend_cpu.cpp)
    return secs;
}

void table_gemm(Bench & b) {
    const Shape & sh = b.shape;
    const RandomModel & rm = b.random_model();
    const LayerWeights L = rm.weights(1).layers[0];
    const int64_t T = b.opt.prompt, iters = std::max(1, b.opt.steps);
#ifdef ZT_HAVE_CUDA
    const bool cuda = is_cuda_backend(b.be);
#else
    const bool cuda = false;
#endif
    b.say("#\n# gemm: prefill GEMMs of {} at T = {} tokens: ztinfer's matmul op (f32 activations, bf16 weights, its "
          "conversions included) vs {}; mean of {} after 1 warm-up; ratio = ztinfer TFLOP/s / plain TFLOP/s\n", sh.name,
          T, cuda ? "a plain cublasLtMatmul in bf16 (bf16 in/out, fp32 accumulation)"
                  : "OpenBLAS sgemm on fp32 copies with every thread (the CPU matmul is per-row sgemv: batch-invariant)",
          iters);
    b.say("# {:>6}  {:>8}  {:>8}  {:>8}  {:>12}  {:>12}  {:>12}  {:>12}  {:>7}\n", "gemm", "T", "N", "K", "ztinfer(us)",
          "plain(us)", "ztTFLOP/s", "plainTFLOP/s", "ratio");
    json rows = json::array();
    struct G { const char * name; const Tensor * w; };
    for (const G & g : {G{"q", &L.q}, G{"gate", &L.gate}, G{"down", &L.down}}) {
        const int64_t N = g.w->dim(0), K = g.w->dim(1);
        RowResult r;
        double plain = 0;
        try {
            Stream * cs = b.be.stream(StreamRole::compute);
            Buffer wb = b.be.alloc(g.w->bytes(), MemKind::device, "bench gemm");
            Buffer xb = b.be.alloc(size_t(T * K) * 4, MemKind::device, "bench gemm");
            Buffer ob = b.be.alloc(size_t(T * N) * 4, MemKind::device, "bench gemm");
            b.be.copy_async(wb.data(), g.w->data, g.w->bytes(), cs);
            std::vector<float> xh(size_t(T * K));
            for (size_t i = 0; i < xh.size(); ++i) xh[i] = float(int(i % 17) - 8) / 8.0f;
            b.be.copy_async(xb.data(), xh.data(), xh.size() * 4, cs);
            const Tensor wt = wb.view(g.w->dtype, g.w->shape), xt = xb.view(DType::F32, {T, K}),
                         ot = ob.view(DType::F32, {T, N});
            b.be.matmul(ot, xt, wt, Tensor(), cs);   // warm-up
            b.be.synchronize(cs);
            const auto t0 = Clock::now();
            for (int64_t i = 0; i < iters; ++i) b.be.matmul(ot, xt, wt, Tensor(), cs);
            b.be.synchronize(cs);
            r.seconds = seconds_since(t0) / double(iters);
            std::vector<float> oh(size_t(T * N));
            b.be.copy_async(oh.data(), ob.data(), oh.size() * 4, cs);
            b.be.synchronize(cs);
            r.wrong = count_non_finite(oh);
#ifdef ZT_HAVE_CUDA
            if (cuda) plain = plain_cublaslt_seconds(b.be, T, N, K, int(iters));
#endif
            if (!cuda) plain = plain_sgemm_seconds(T, N, K, b.n_threads, int(iters));
        } catch (const Error & e) {
            r.skipped = e.message();
        }
        r = across_ranks(b.comm, r);
        b.row_done(r);
        if (!r.skipped.empty()) {
            b.say("  {:>6}  skipped: {}\n", g.name, r.skipped);
            rows.push_back({{"gemm", g.name}, {"skipped", r.skipped}});
            continue;
        }
        const double flop = 2.0 * double(T) * double(N) * double(K);
        const double zt_tf = flop / r.seconds / 1e12, plain_tf = flop / plain / 1e12;
        b.say("  {:>6}  {:>8}  {:>8}  {:>8}  {:>12.1f}  {:>12.1f}  {:>12.3f}  {:>12.3f}  {:>7.3f}\n", g.name, T, N, K,
              r.seconds * 1e6, plain * 1e6, zt_tf, plain_tf, zt_tf / plain_tf);
        rows.push_back({{"gemm", g.name}, {"T", T}, {"N", N}, {"K", K}, {"ztinfer_us", r.seconds * 1e6},
                        {"plain_us", plain * 1e6}, {"ztinfer_tflops", zt_tf}, {"plain_tflops", plain_tf},
                        {"ratio", zt_tf / plain_tf}, {"wrong", r.wrong}});
    }
    b.figures["gemm"] = {{"shape", sh.name}, {"T", T}, {"reference", cuda ? "cublasLt bf16" : "openblas sgemm"},
                         {"rows", rows}};
}

// --- 5. streamed decode steps ----------------------------------------------------------------------------------

// H2D GB/s for copies of about `bytes`: table 1's row nearest in size, else measured here (`source` says which).
double h2d_gbps_for(Bench & b, size_t bytes, std::string & source) {
    if (!b.h2d_gbps.empty()) {
        auto dist = [&](const std::pair<size_t, double> & p) { return std::fabs(std::log(double(p.first) / double(bytes))); };
        const auto best = std::min_element(b.h2d_gbps.begin(), b.h2d_gbps.end(),
                                           [&](const auto & x, const auto & y) { return dist(x) < dist(y); });
        source = fmt::format("table h2d, {} B row", best->first);
        return best->second;
    }
    source = fmt::format("measured here, {} B copies", bytes);
    Buffer src = b.be.alloc(bytes, MemKind::pinned_host, "bench h2d source");
    Buffer dst = b.be.alloc(bytes, MemKind::device, "bench h2d destination");
    b.comm.barrier();
    RowResult r;
    r.seconds = time_copies(b.be, dst.data(), src.data(), bytes, b.be.stream(StreamRole::copy), b.opt.warmup, b.opt.iters);
    r = across_ranks(b.comm, r);
    double gbps = double(bytes) / r.seconds / 1e9;
    b.comm.broadcast(&gbps, sizeof gbps, 0);
    return gbps;
}

void table_decode(Bench & b) {
    const Shape & sh = b.shape;
    const int n = b.comm.world_size(), rank = b.comm.rank();
    const int32_t past0 = b.opt.context;
    const int32_t max_len = past0 + b.opt.steps + 2;
    const ModelConfig cfg = model_config(sh, sh.layers, max_len);
    const ModelWeights w = b.random_model().weights(sh.layers);
    PartitionOptions po;
    po.world = n;
    po.stream = true;
    const PartitionPlan plan = plan_partition(cfg, w, po);
    size_t fetched = 0;   // bytes this rank copies host -> device per step: its slice of every streamed unit
    for (const auto & u : plan.units) if (u.streamed) fetched += u.slice_bytes;

    // this rank's slices live in pinned host memory (on the CPU backend the ring and resident units too): refuse,
    // on every rank alike, what the machine cannot hold
    size_t host_need = fetched;
    if (b.be.host_can_access(MemKind::device)) host_need += 3 * plan.max_flat_bytes() + plan.resident_bytes();
    const size_t avail = mem_available();
    int too_big = avail > 0 && double(host_need) > 0.9 * double(avail) ? 1 : 0;
    b.comm.all_reduce_max(&too_big, 1, nullptr);
    if (too_big) {
        const std::string why = fmt::format("{} layers of {} need {:.1f} GiB of host memory per rank (weight slices{}) "
                                            "but about {:.1f} GiB is available: use fewer --layers or more ranks",
                                            sh.layers, sh.name, double(host_need) / (1 << 30),
                                            host_need > fetched ? ", ring and resident units" : "",
                                            double(avail) / (1 << 30));
        b.say("#\n# decode: skipped: {}\n", why);
        b.figures["decode"] = {{"skipped", why}};
        return;
    }
    std::string h2d_source;
    const double h2d = h2d_gbps_for(b, plan.max_slice_bytes(), h2d_source);

    WeightStoreOptions so;
    so.tier = OffloadTier::cpu;
    WeightStore store(plan, rank, b.be, so);
    Tracer tracer(rank, true);
    Schedule schedule(plan, store, b.be, b.comm, ScheduleOptions{2, true}, &tracer);
    Forward fwd(cfg, plan, schedule, b.be);
    b.say("#\n# decode: streamed decode steps of {} with {} layers (hidden {}, intermediate {}, heads {}, kv heads {}, "
          "vocab {}), random bf16 weights, offload cpu (pinned host), overlap on, prefetch depth 2, {} rank(s) over "
          "{}; 1 new token per sequence after {} past; mean of {} steps after 1 warm-up\n", sh.name, sh.layers,
          sh.hidden, sh.intermediate, sh.heads, sh.kv_heads, sh.vocab, n, b.comm.name(), past0, b.opt.steps);
    b.say("# fetched = bytes each rank copies host -> device per step; h2d = the H2D rate for a layer slice of {} B "
          "({}); link eff = (fetched / h2d) / step; fetch = copy-stream busy time per step; tokens/s over all ranks\n",
          plan.max_slice_bytes(), h2d_source);
    if (fetched == 0)
        b.say("# (nothing is streamed: every tensor of this shape is below the persistence threshold of {} elements)\n",
              po.persistence_threshold);
    b.say("# {:>6}  {:>12}  {:>14}  {:>9}  {:>9}  {:>12}  {:>11}  {:>7}\n", "batch", "step(ms)", "fetched(B)",
          "h2dGB/s", "link eff", "fetch(ms)", "tokens/s", "#wrong");
    json rows = json::array();
    for (int batch : b.opt.batches) {
        RowResult r;
        int failed = 0;
        try {
            fwd.reserve(batch, max_len);
        } catch (const Error & e) {
            failed = 1;
            r.skipped = e.message();
        }
        b.comm.all_reduce_max(&failed, 1, nullptr);   // every rank steps, or none does
        if (failed) {
            if (r.skipped.empty()) r.skipped = "another rank could not allocate its KV cache";
            r = across_ranks(b.comm, r);
            b.say("  {:>6}  skipped: {}\n", batch, r.skipped);
            rows.push_back({{"batch", batch}, {"skipped", r.skipped}});
            continue;
        }
        std::vector<int32_t> ids(static_cast<size_t>(batch));
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % size_t(sh.vocab));
        auto step = [&](int32_t past) {
            std::vector<SequenceStep> steps;
            for (int s = 0; s < batch; ++s) steps.push_back({s, past, &ids[size_t(s)], 1});
            std::vector<float> logits;
            fwd.step(steps, logits);
            return count_non_finite(logits);
        };
        step(past0);   // warm-up
        b.comm.barrier();
        tracer.clear();
        const auto t0 = Clock::now();
        for (int i = 0; i < b.opt.steps; ++i) r.wrong += step(past0 + 1 + i);
        r.seconds = seconds_since(t0) / b.opt.steps;
        const double fetch_ms = tracer.total_us("fetch") * 1e-3 / b.opt.steps;
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double eff = double(fetched) / (h2d * 1e9) / r.seconds, tps = double(batch) * n / r.seconds;
        b.say("  {:>6}  {:>12.2f}  {:>14}  {:>9.2f}  {:>9.3f}  {:>12.2f}  {:>11.1f}  {:>7}\n", batch, r.seconds * 1e3,
              fetched, h2d, eff, fetch_ms, tps, r.wrong);
        rows.push_back({{"batch", batch}, {"step_ms", r.seconds * 1e3}, {"fetched_bytes_per_rank", fetched},
                        {"h2d_gbps", h2d}, {"link_efficiency", eff}, {"fetch_ms", fetch_ms}, {"tokens_per_s", tps},
                        {"wrong", r.wrong}});
    }
    b.figures["decode"] = {{"shape", sh.name}, {"layers", sh.layers}, {"hidden", sh.hidden},
                           {"intermediate", sh.intermediate}, {"heads", sh.heads}, {"kv_heads", sh.kv_heads},
                           {"vocab", sh.vocab}, {"ranks", n}, {"context", past0}, {"steps", b.opt.steps},
                           {"offload", "cpu"}, {"prefetch_depth", 2}, {"overlap", true},
                           {"slice_bytes", plan.max_slice_bytes()}, {"h2d_source", h2d_source}, {"rows", rows}};
}

// One sequence of each length embedded in a single step (non-causal attention, the last token's final hidden state,
// as gte-Qwen2 pools), weights streamed from pinned host, and the device memory it took at its peak: the KV cache of
// every layer, the activations of `length` tokens and the weight ring. A length over the cap is reported, not fatal.
void table_embed_memory(Bench & b) {
    const Shape & sh = b.shape;
    const int n = b.comm.world_size(), rank = b.comm.rank();
    int32_t longest = 1;
    for (int len : b.opt.lengths) longest = std::max(longest, int32_t(len));
    const ModelConfig cfg = model_config(sh, sh.layers, longest, /*causal=*/false);
    const ModelWeights w = b.random_model().weights(sh.layers);
    PartitionOptions po;
    po.world = n;
    po.stream = true;
    const PartitionPlan plan = plan_partition(cfg, w, po);
    WeightStoreOptions so;
    so.tier = OffloadTier::cpu;
    WeightStore store(plan, rank, b.be, so);
    const MemoryStats base = b.be.memory_stats();
    b.say("#\n# embed-memory: one sequence per row embedded in one non-causal step (last-token hidden state) by {} with "
          "{} layers (hidden {}, intermediate {}, heads {}, kv heads {}, vocab {}), random bf16 weights streamed from "
          "pinned host, {} rank(s); device memory cap {}\n", sh.name, sh.layers, sh.hidden, sh.intermediate, sh.heads,
          sh.kv_heads, sh.vocab, n, base.device_cap ? format_bytes(base.device_cap) : std::string("none"));
    b.say("# peak = the most device memory ztinfer held during the step (weight ring, resident units, KV cache, "
          "activations, GEMM scratch); the seed's figures (HF, whole model on one 24 GB card): 15.0 GB model + 4.47 GB "
          "at 24k tokens, out of memory at 32k\n");
    b.say("# {:>8}  {:>10}  {:>12}  {:>12}  {:>12}  {:>7}\n", "tokens", "time(s)", "peak(GiB)", "KVcache(GiB)",
          "tokens/s", "#wrong");
    json rows = json::array();
    for (int len : b.opt.lengths) {
        RowResult r;
        double peak = 0, kv = 0;
        {
            b.be.reset_memory_peak();
            try {
                Schedule schedule(plan, store, b.be, b.comm, ScheduleOptions{2, true});
                Forward fwd(cfg, plan, schedule, b.be);
                fwd.reserve(1, len);
                kv = double(b.be.memory_stats().device_by_purpose["KV cache"]) / double(1 << 30);
                std::vector<int32_t> ids(static_cast<size_t>(len));
                for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % size_t(sh.vocab));
                std::vector<float> hidden;
                const auto t0 = Clock::now();
                fwd.step_hidden({SequenceStep{0, 0, ids.data(), len}}, hidden);
                r.seconds = seconds_since(t0);
                r.wrong = count_non_finite(hidden);
                peak = double(b.be.memory_stats().device_peak) / double(1 << 30);
            } catch (const Error & e) {
                r.skipped = e.message();
            }
        }
        // (meant for one rank: with several, a rank that fails mid-step leaves the others in an all-gather until
        // the watchdog ends the job)
        r = across_ranks(b.comm, r);
        b.row_done(r);
        if (!r.skipped.empty()) {
            b.say("  {:>8}  failed: {}\n", len, r.skipped);
            rows.push_back({{"tokens", len}, {"failed", r.skipped}});
            continue;
        }
        b.say("  {:>8}  {:>10.2f}  {:>12.2f}  {:>12.2f}  {:>12.0f}  {:>7}\n", len, r.seconds, peak, kv,
              double(len) / r.seconds, r.wrong);
        rows.push_back({{"tokens", len}, {"seconds", r.seconds}, {"peak_gib", peak}, {"kv_cache_gib", kv},
                        {"wrong", r.wrong}});
    }
    b.figures["embed_memory"] = {{"shape", sh.name}, {"layers", sh.layers}, {"ranks", n},
                                 {"cap_bytes", base.device_cap}, {"rows", rows}};
}

// --- driver ----------------------------------------------------------------------------------------------------

std::string device_description(Backend & be, int n_threads) {
#ifdef ZT_HAVE_CUDA
    if (is_cuda_backend(be)) {
        const int d = cuda_device_of(be);
        return fmt::format("backend cuda, device {} ({})", d, cuda_device_name(d));
    }
#endif
    return fmt::format("backend {} ({} threads; the \"device\" is host memory, so copies are memcpy rates)", be.name(),
                       n_threads);
}

void run_tables(Bench & b, const std::set<std::string> & only, const std::string & device, int n_threads) {
    b.say("# ztinfer bench {}: {}, {} rank(s), communicator {}\n", ZT_VERSION, device, b.comm.world_size(),
          b.comm.name());
    b.say("# #wrong = elements that failed verification of the moved data (or non-finite logits); 0 expected; "
          "times are the slowest rank's\n");
    b.figures["version"] = ZT_VERSION;
    b.figures["backend"] = b.be.name();
    b.figures["device"] = device;
    b.figures["threads"] = n_threads;
    b.figures["ranks"] = b.comm.world_size();
    b.figures["communicator"] = b.comm.name();
    if (only.count("h2d")) table_h2d(b);
    if (only.count("nvme")) table_nvme(b);
    if (only.count("allgather")) table_allgather(b);
    if (only.count("layer")) table_layer(b);
    if (only.count("gemm")) table_gemm(b);
    if (only.count("decode")) table_decode(b);
    if (only.count("embed-memory")) table_embed_memory(b);
    b.figures["wrong"] = b.wrong;
    b.say("#\n# #wrong in all: {} {}\n", b.wrong, b.wrong == 0 ? "OK" : "FAILED");
}

}  // namespace

int run_benchmark(const BenchmarkOptions & opt, const WorldInfo & world, std::FILE * out) {
    // --- options ---------------------------------------------------------------------------------------------
    static const std::set<std::string> kTables = {"h2d", "nvme", "allgather", "layer", "gemm", "decode",
                                                   "embed-memory"};
    std::set<std::string> only;
    for (const auto & t : opt.only) {
        ZT_CHECK(kTables.count(t), "--only {}: not a table; choose from h2d, nvme, allgather, layer, gemm, decode, embed-memory", t);
        only.insert(t);
    }
    ZT_CHECK(opt.device == "cpu" || opt.device == "cuda" || opt.device == "auto", "--device {}: use cpu, cuda or auto",
             opt.device);
    ZT_CHECK(opt.iters >= 1 && opt.warmup >= 0 && opt.steps >= 1, "--iters and --steps must be >= 1 and --warmup >= 0");
    ZT_CHECK(!opt.batches.empty(), "--batch needs at least one batch size");
    for (int bsz : opt.batches) ZT_CHECK(bsz >= 1, "--batch {}: batch sizes must be >= 1", bsz);
    ZT_CHECK(opt.context >= 0 && opt.prompt >= 1, "--context must be >= 0 and --prompt >= 1");
    ZT_CHECK(opt.aio_queue_depth >= 1, "--aio-queue-depth must be >= 1");
    const size_t min_bytes = parse_byte_size(opt.min_bytes, "--min-bytes");
    const size_t max_bytes = parse_byte_size(opt.max_bytes, "--max-bytes");
    ZT_CHECK(min_bytes >= 4 && max_bytes >= min_bytes, "--min-bytes {} and --max-bytes {}: need 4 <= min <= max",
             min_bytes, max_bytes);
    const Shape shape = shape_of(opt);
    ZT_CHECK(shape.hidden > 0 && shape.intermediate > 0 && shape.heads > 0 && shape.kv_heads > 0 && shape.vocab > 0 &&
             shape.layers > 0, "the model shape needs positive sizes");

    // --- backend and communicator, as a job would make them --------------------------------------------------
    if (opt.device == "cuda" && !(cuda_backend_compiled() && cuda_unavailable_reason().empty())) {
        if (world.rank == 0) fmt::print(stderr, "ztinfer bench: --device cuda is unusable: {}\n", cuda_unavailable_reason());
        return 2;
    }
    JobConfig jc;
    jc.config_path = "ztinfer bench";
    jc.device = opt.device;
    jc.threads = opt.threads;
    if (!opt.max_gpu_memory.empty()) jc.gpu.max_memory_bytes = parse_byte_size(opt.max_gpu_memory, "--max-gpu-memory");
    for (int len : opt.lengths) ZT_CHECK(len >= 1, "--lengths {}: lengths must be >= 1", len);
    const int n_threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    std::unique_ptr<Backend> backend = make_job_backend(jc, world, n_threads);
    std::unique_ptr<Communicator> comm = make_job_communicator(jc, world, *backend);

    Bench b(opt, *backend, *comm, out);
    b.print = comm->rank() == 0;
    b.n_threads = n_threads;
    b.min_bytes = min_bytes;
    b.max_bytes = max_bytes;
    b.nvme_bytes = parse_byte_size(opt.nvme_bytes, "--nvme-bytes");
    b.block_size = parse_byte_size(opt.aio_block_size, "--aio-block-size");
    ZT_CHECK(b.nvme_bytes > 0 && b.block_size > 0, "--nvme-bytes and --aio-block-size must be > 0");
    b.shape = shape;
    try {
        run_tables(b, only, device_description(*backend, n_threads), n_threads);
        std::fflush(out);
        if (b.print && !opt.json_path.empty()) {
            std::ofstream f(opt.json_path);
            ZT_CHECK(f.good(), "cannot write --json {}: check that its folder exists and is writable", opt.json_path);
            f << b.figures.dump(2) << '\n';
        }
        comm->barrier();
    } catch (const std::exception & e) {
        if (comm->world_size() == 1) throw;
        // the other ranks would wait for this one in the next collective: say why, then end every rank
        if (const auto * ze = dynamic_cast<const Error *>(&e)) spdlog::error("{}: {}", ze->location(), ze->message());
        else spdlog::error("unexpected error: {}", e.what());
        comm->abort(1);
    }
    return b.wrong == 0 ? 0 : 1;
}

}  // namespace zt
