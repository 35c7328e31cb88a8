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
// This file: the entry point (options, backend and communicator, which tables run, the header lines) and the helpers
// every table uses; the tables are benchmark_link.cpp (1-3), benchmark_layer.cpp (4), benchmark_gemm.cpp,
// benchmark_decode.cpp (5), benchmark_embed_memory.cpp; shapes and random weights benchmark_model.cpp; --profile
// runs benchmark_profile.cpp instead of the tables.
#include "runtime/bench/benchmark.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/base/memory_usage.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/job/job.h"
#include "runtime/job/job_config.h"
#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#include "runtime/backend/backend_cuda.h"
#endif

namespace zt {

namespace bench_detail {

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
size_t mem_available() { return system_memory_available(); }

// --- one row of a table, over the ranks ----------------------------------------------------------------------

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

}  // namespace bench_detail

using namespace bench_detail;

namespace {

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
        if (opt.profile_path.empty()) run_tables(b, only, device_description(*backend, n_threads), n_threads);
        else run_profile(b);
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
