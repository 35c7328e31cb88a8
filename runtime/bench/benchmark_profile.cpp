// `ztinfer bench --profile FILE.json` (see benchmark.h): measures the MachineProfile (runtime/job/machine_profile.h)
// the planner's speed model runs on, on the backend and communicator a job would use, prints a short table of the
// figures (rank 0) and writes FILE (rank 0). Every rank takes part in every collective part.
// Runs accumulate in one file: a one-rank run measures everything below (keeping an earlier file's all-gather
// entries); a run of N > 1 ranks into an existing profile of the same device measures only the all-gather of N
// ranks and adds it, leaving the compute figures as the one-rank run measured them on the whole machine (the
// planner scales them to the cores each rank gets). So: `ztinfer bench --profile F`, then `mpirun -np 2 ... F`.
//   h2d_gbps      table h2d over sizes S/4 .. S (S = --max-bytes capped at 256 MiB), the best rate
//   memcpy_gbps   std::memcpy of S bytes host to host (pageable), the fastest of 3 rounds
//   copy latency  4 KiB copies on the copy stream, per copy (CPU: also on a paced, test_link_gbps-style stream)
//   nvme_gbps     table nvme (only with --nvme-path) at --aio-block-size / --aio-queue-depth, the best rate
//   allgather     table allgather at S gathered bytes; busbw stored under the world size (world 1: no entry)
//   memory_gbps   the backend's add op, out = a + b, over three f32 buffers that together fill the "cold pool"
//                 (below): bytes read and written / time, the best of 5
//   matmul        every weight dtype, (N,K) = (H,H) with H = --hidden or 2048 (CPU) / 4096 (CUDA), at T = 1, 2, 4,
//                 .., 512; the median of 6 .. 15 samples (fewer at large T) taken in 3 sweeps over T, each point
//                 after one warm-up. The weights are cold, as a just-streamed layer's are: copies of the weight
//                 fill the cold pool (2 x the last-level cache, 256 MiB .. 1 GiB, at most --max-bytes; GPU: 256
//                 MiB) and each matmul reads the next copy, the least recently used
//   reuse_factor  bf16 weights read round robin from rings of 1 .. 64 MiB (at least one copy): time over the cold
//                 time at T = 1, 4, 16, 64, 256, by ring size: what a unit's 2nd..Mth micro-batch pays, whose
//                 weights were read by the one before with the rest of the unit in between
//   attention     the attention op at H=32, KV=8, D=64: decode = 8 sequences x 1 new token after 1024 past;
//                 prefill = 1 sequence of 512 tokens, causal; FLOPs = 4 H D x sum over new tokens of positions seen
//   overheads     see measure_overheads
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/ranges.h>

#include "runtime/base/host_name.h"
#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/job/machine_profile.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/weight_store.h"
#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#include "runtime/backend/backend_cuda.h"
#endif

namespace zt::bench_detail {

namespace {

constexpr size_t kMiB = size_t(1) << 20;
constexpr size_t kMaxCopyBytes = 256 * kMiB;

const DType kWeightDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0,
                               DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The largest CPU cache of cpu0 (the last level), from sysfs; 0 when unknown.
size_t llc_bytes() {
    size_t best = 0;
    for (int i = 0; i < 16; ++i) {
        std::ifstream f(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", i));
        if (!f) break;
        size_t n = 0;
        char unit = 0;
        f >> n >> unit;
        best = std::max(best, unit == 'M' ? n * kMiB : unit == 'K' ? n * 1024 : n);
    }
    return best;
}

std::string cpu_model_name() {
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("model name", 0) != 0) continue;
        const size_t colon = line.find(':');
        if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
    return "unknown CPU";
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

bool is_cuda(Backend & be) {
#ifdef ZT_HAVE_CUDA
    return is_cuda_backend(be);
#else
    (void)be;
    return false;
#endif
}

// A time over the ranks: rank 0 gets the slowest rank's (the one it writes), the others their own.
double slowest(Bench & b, double seconds) {
    RowResult r;
    r.seconds = seconds;
    return across_ranks(b.comm, r).seconds;
}

// A sub-benchmark for one of the tables, with its own sizes and iterations; its #wrong joins b's.
struct SubBench {
    BenchmarkOptions opt;
    Bench b;
    SubBench(Bench & parent, size_t lo, size_t hi, int iters)
        : opt(parent.opt), b(opt, parent.be, parent.comm, parent.out) {
        opt.iters = iters;
        b.print = parent.print;
        b.n_threads = parent.n_threads;
        b.min_bytes = lo;
        b.max_bytes = hi;
        b.nvme_bytes = parent.nvme_bytes;
        b.block_size = parent.block_size;
        b.shape = parent.shape;
    }
};

double best_of_rows(const json & table, const char * key) {
    double best = 0;
    if (table.contains("rows"))
        for (const auto & row : table["rows"]) if (row.contains(key)) best = std::max(best, row[key].get<double>());
    return best;
}

// --- links ---------------------------------------------------------------------------------------------------------

// Seconds of one small (4 KiB) pinned -> device copy on the copy stream of `be`, the median of 5 rounds of 64 back to back.
double small_copy_seconds(Backend & be) {
    constexpr size_t kBytes = 4096;
    constexpr int kCopies = 64;
    Buffer src = be.alloc(kBytes, MemKind::pinned_host, "bench profile copy latency");
    Buffer dst = be.alloc(kBytes, MemKind::device, "bench profile copy latency");
    Stream * s = be.stream(StreamRole::copy);
    std::vector<double> rounds;
    for (int round = 0; round < 6; ++round) {
        const auto t0 = Clock::now();
        for (int i = 0; i < kCopies; ++i) be.copy_async(dst.data(), src.data(), kBytes, s);
        be.synchronize(s);
        if (round > 0) rounds.push_back(seconds_since(t0) / kCopies);   // round 0 warms up
    }
    return median(rounds);
}

void measure_links(Bench & b, MachineProfile & p, size_t copy_bytes, int iters) {
    p.copy_latency_s = slowest(b, small_copy_seconds(b.be));
    if (b.be.host_can_access(MemKind::device)) {   // CPU: a paced copy (ztinfer.test_link_gbps) on its own backend
        CpuBackendOptions o;
        o.n_threads = 1;
        o.link_gbps = 0.2;   // 4 KiB are paced to 20.5 us: the rest is the sleep's overshoot
        const std::unique_ptr<Backend> paced = make_cpu_backend(o);
        p.paced_copy_latency_s = std::max(0.0, slowest(b, small_copy_seconds(*paced)) - 4096 / (o.link_gbps * 1e9));
    }
    SubBench h2d(b, std::max<size_t>(4, copy_bytes / 4), copy_bytes, iters);
    table_h2d(h2d.b);
    b.wrong += h2d.b.wrong;
    p.h2d_gbps = best_of_rows(h2d.b.figures["h2d"], "gbps");

    std::vector<char> src(copy_bytes, 1), dst(copy_bytes, 0);   // touched: no page faults in the timing
    double best = 0;
    for (int round = 0; round < kCopyRounds; ++round) {
        const auto t0 = Clock::now();
        for (int i = 0; i < iters; ++i) std::memcpy(dst.data(), src.data(), copy_bytes);
        const double t = seconds_since(t0) / iters;
        best = round == 0 ? t : std::min(best, t);
    }
    p.memcpy_gbps = double(copy_bytes) / slowest(b, best) / 1e9;

    if (!b.opt.nvme_path.empty()) {
        SubBench nv(b, b.min_bytes, copy_bytes, iters);
        table_nvme(nv.b);
        b.wrong += nv.b.wrong;
        p.nvme_gbps = best_of_rows(nv.b.figures["nvme"], "gbps");
        p.nvme_block_size = b.block_size;
        p.nvme_queue_depth = b.opt.aio_queue_depth;
    }
    const int n = b.comm.world_size();
    if (n > 1) {
        SubBench ag(b, copy_bytes, copy_bytes, iters);
        table_allgather(ag.b);
        b.wrong += ag.b.wrong;
        p.allgather_busbw_gbps[n] = best_of_rows(ag.b.figures["allgather"], "busbw_gbps");
    }
}

// --- memory and matmul ---------------------------------------------------------------------------------------

// out = a + b over three f32 buffers of pool / 3 bytes each: bytes moved (2 read + 1 written) / time, best of 5
// (on a GPU each of the 5 is the mean of 10 back to back).
void measure_memory(Bench & b, MachineProfile & p, Buffer & pool) {
    const int64_t n = int64_t(pool.bytes() / 3 / 4 / 64 * 64);
    const Tensor a = pool.view(DType::F32, {n}), c = pool.view(DType::F32, {n}, size_t(n) * 4),
                 out = pool.view(DType::F32, {n}, size_t(n) * 8);
    Stream * cs = b.be.stream(StreamRole::compute);
    b.be.add(out, a, c, cs);   // warm-up (first touch)
    b.be.synchronize(cs);
    const int group = b.be.host_can_access(MemKind::device) ? 1 : 10;   // a GPU: not the synchronize's latency
    double best = 0;
    for (int i = 0; i < 5; ++i) {
        const auto t0 = Clock::now();
        for (int g = 0; g < group; ++g) b.be.add(out, a, c, cs);
        b.be.synchronize(cs);
        const double t = seconds_since(t0) / group;
        best = i == 0 ? t : std::min(best, t);
    }
    p.memory_gbps = 3.0 * double(n) * 4 / slowest(b, best) / 1e9;
}

// Samples per (dtype, T): fewer where one matmul takes long.
// Samples per (dtype, T) in each of kPasses sweeps over T: fewer where one matmul takes long. The passes spread a
// burst of another process's load over several T points instead of one point's every sample.
constexpr int kPasses = 3;
int samples_at(int64_t T) { return T <= 16 ? 5 : T <= 64 ? 3 : 2; }

// Seconds per weight of every dtype at every T of `ts` (see the top of the file), into p.matmul.
void measure_matmul(Bench & b, MachineProfile & p, Buffer & pool, int64_t H, const std::vector<int64_t> & ts) {
    Stream * cs = b.be.stream(StreamRole::compute);
    const int64_t t_max = ts.back();
    Buffer xb = b.be.alloc(size_t(t_max * H) * 4, MemKind::device, "bench profile activations");
    Buffer ob = b.be.alloc(size_t(t_max * H) * 4, MemKind::device, "bench profile output");
    std::vector<float> xh(size_t(t_max * H));
    for (size_t i = 0; i < xh.size(); ++i) xh[i] = float(int(i % 17) - 8) / 8.0f;
    b.be.copy_async(xb.data(), xh.data(), xh.size() * 4, cs);
    // on a GPU one matmul is microseconds: time a group back to back, so the host's synchronize is not the figure
    const int group = b.be.host_can_access(MemKind::device) ? 1 : 8;
    for (DType dt : kWeightDTypes) {
        const std::vector<uint8_t> w = bench_weights(dt, H, H);
        const size_t copies = std::max<size_t>(1, pool.bytes() / w.size());
        for (size_t c = 0; c < copies; ++c) b.be.copy_async(static_cast<char *>(pool.data()) + c * w.size(), w.data(),
                                                            w.size(), cs);
        b.be.synchronize(cs);
        size_t next = 0;   // the least recently used copy
        auto weight = [&] { return pool.view(dt, {H, H}, (next++ % copies) * w.size()); };
        std::vector<std::vector<double>> samples(ts.size());   // by T
        std::string failed;
        try {
            for (int pass = 0; pass < kPasses; ++pass) {
                for (size_t i = 0; i < ts.size(); ++i) {
                    const Tensor x = xb.view(DType::F32, {ts[i], H}), out = ob.view(DType::F32, {ts[i], H});
                    b.be.matmul(out, x, weight(), Tensor(), cs);   // warm-up
                    b.be.synchronize(cs);
                    for (int k = 0; k < samples_at(ts[i]); ++k) {
                        const auto t0 = Clock::now();
                        for (int g = 0; g < group; ++g) b.be.matmul(out, x, weight(), Tensor(), cs);
                        b.be.synchronize(cs);
                        samples[i].push_back(seconds_since(t0) / group);
                    }
                }
            }
        } catch (const Error & e) {
            failed = e.message();
        }
        int bad = failed.empty() ? 0 : 1;   // every rank keeps this dtype's table, or none does
        b.comm.all_reduce_max(&bad, 1, nullptr);
        std::vector<std::pair<int64_t, double>> table;
        if (!bad)
            for (size_t i = 0; i < ts.size(); ++i)
                table.emplace_back(ts[i], slowest(b, median(samples[i])) / double(H * H));
        if (table.size() == ts.size()) {
            p.matmul[profile_dtype_key(dt)] = table;
        } else {
            b.say("# matmul {}: not measured ({}): the planner scales another dtype's table by bits per weight\n",
                  profile_dtype_key(dt), failed.empty() ? "failed on another rank" : failed);
        }
    }
}

// Re-read cost by ring size (see the top of the file); uses the pool's first bytes for the rings.
void measure_reuse(Bench & b, MachineProfile & p, Buffer & pool, int64_t H) {
    const auto cold = p.matmul.find("bf16");
    if (cold == p.matmul.end()) return;
    Stream * cs = b.be.stream(StreamRole::compute);
    const std::vector<uint8_t> w = bench_weights(DType::BF16, H, H);
    const std::vector<int64_t> ts = {1, 4, 16, 64, 256};
    Buffer xb = b.be.alloc(size_t(ts.back() * H) * 4, MemKind::device, "bench profile activations");
    Buffer ob = b.be.alloc(size_t(ts.back() * H) * 4, MemKind::device, "bench profile output");
    for (size_t ring = size_t(1) << 20; ring <= (size_t(64) << 20) && ring <= pool.bytes(); ring *= 2) {
        if (ring < w.size()) continue;
        const size_t copies = ring / w.size();
        for (size_t c = 0; c < copies; ++c)
            b.be.copy_async(static_cast<char *>(pool.data()) + c * w.size(), w.data(), w.size(), cs);
        size_t next = 0;
        auto weight = [&] { return pool.view(DType::BF16, {H, H}, (next++ % copies) * w.size()); };
        std::vector<std::pair<int64_t, double>> table;
        for (int64_t T : ts) {
            const Tensor x = xb.view(DType::F32, {T, H}), out = ob.view(DType::F32, {T, H});
            for (size_t c = 0; c < copies; ++c) b.be.matmul(out, x, weight(), Tensor(), cs);   // the ring, once
            b.be.synchronize(cs);
            std::vector<double> samples;
            for (int k = 0; k < samples_at(T); ++k) {
                const auto t0 = Clock::now();
                b.be.matmul(out, x, weight(), Tensor(), cs);
                b.be.synchronize(cs);
                samples.push_back(seconds_since(t0));
            }
            const double cold_s = p.matmul_seconds(DType::BF16, T, H, H);
            table.emplace_back(T, std::clamp(slowest(b, median(samples)) / cold_s, 1e-3, 1.0));
        }
        p.reuse_factor[ring] = table;
    }
}

// --- attention -----------------------------------------------------------------------------------------------

// GFLOP/s of the attention op over `seqs` (queries (T,32,64) against (S,M,8,64) f32 caches of random values).
double attention_gflops(Bench & b, const std::vector<AttentionSeq> & seqs, int32_t slots, int32_t max_len,
                        bool causal, int samples) {
    constexpr int64_t H = 32, KV = 8, D = 64;
    int64_t T = 0;
    double pairs = 0;   // sum over new tokens of the positions each sees
    for (const AttentionSeq & s : seqs) {
        T += s.n_tokens;
        for (int32_t t = 0; t < s.n_tokens; ++t) pairs += causal ? double(s.past_len + t + 1) : double(s.past_len + s.n_tokens);
    }
    const size_t cache_floats = size_t(slots) * size_t(max_len) * KV * D;
    Buffer kb = b.be.alloc(cache_floats * 4, MemKind::device, "bench profile K cache");
    Buffer vb = b.be.alloc(cache_floats * 4, MemKind::device, "bench profile V cache");
    Buffer qb = b.be.alloc(size_t(T * H * D) * 4, MemKind::device, "bench profile queries");
    Buffer ob = b.be.alloc(size_t(T * H * D) * 4, MemKind::device, "bench profile attention output");
    Stream * cs = b.be.stream(StreamRole::compute);
    std::vector<float> host(cache_floats);
    uint64_t r = 0x2545F4914F6CDD1Dull;
    for (float & v : host) { r ^= r << 13; r ^= r >> 7; r ^= r << 17; v = float(int64_t(r >> 41) - (1 << 22)) * 0x1.0p-22f; }
    b.be.copy_async(kb.data(), host.data(), cache_floats * 4, cs);
    b.be.synchronize(cs);
    b.be.copy_async(vb.data(), host.data(), cache_floats * 4, cs);
    b.be.synchronize(cs);
    b.be.copy_async(qb.data(), host.data(), std::min(cache_floats, size_t(T * H * D)) * 4, cs);
    b.be.synchronize(cs);
    const Tensor q = qb.view(DType::F32, {T, H, D}), out = ob.view(DType::F32, {T, H, D});
    const Tensor k = kb.view(DType::F32, {slots, max_len, KV, D}), v = vb.view(DType::F32, {slots, max_len, KV, D});
    b.be.attention(out, q, k, v, seqs, causal, 0, cs);   // warm-up
    b.be.synchronize(cs);
    std::vector<double> ts;
    for (int i = 0; i < samples; ++i) {
        const auto t0 = Clock::now();
        b.be.attention(out, q, k, v, seqs, causal, 0, cs);
        b.be.synchronize(cs);
        ts.push_back(seconds_since(t0));
    }
    return 4.0 * H * D * pairs / slowest(b, median(ts)) / 1e9;
}

void measure_attention(Bench & b, MachineProfile & p) {
    std::vector<AttentionSeq> decode;
    for (int32_t s = 0; s < 8; ++s) decode.push_back({s, 1024, 1, s});
    p.attention_decode_gflops = attention_gflops(b, decode, 8, 1025, true, 7);
    p.attention_prefill_gflops = attention_gflops(b, {{0, 0, 512, 0}}, 1, 512, true, 3);
}

// --- overheads -----------------------------------------------------------------------------------------------

// What they measure: decode steps (batch 1, one micro-batch, 1 new token after 16 past) of two tiny models of
// random bf16 weights (hidden 64, intermediate 128, 4 heads, 2 KV heads, vocab 256) with 4 and 8 layers, offload
// "none" (every unit resident: no copies, no all-gathers), through the real Schedule + Forward. Their compute is
// negligible, so a step is its fixed costs: with u units (embed, layers, head) a step takes step_s + u x unit_s;
// the two models give unit_s = (t8 - t4) / (u8 - u4) (the per-unit launches, schedule events and bookkeeping) and
// step_s = t4 - u4 x unit_s (the host plan, sampling inputs, logits copy; clamped at 0). Median of 15 steps after 3.
void measure_overheads(Bench & b, MachineProfile & p) {
    Shape sh;
    sh.name = "tiny";
    sh.hidden = 64;
    sh.intermediate = 128;
    sh.heads = 4;
    sh.kv_heads = 2;
    sh.vocab = 256;
    sh.layers = 8;
    const RandomModel rm(sh, b.n_threads);
    constexpr int32_t kPast = 16, kSteps = 15;
    double t[2] = {0, 0};
    size_t units[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
        const int64_t layers = i == 0 ? 4 : 8;
        const ModelConfig cfg = model_config(sh, layers, kPast + kSteps + 8);
        const ModelWeights w = rm.weights(layers);
        PartitionOptions po;
        po.world = b.comm.world_size();
        po.stream = false;
        const PartitionPlan plan = plan_partition(cfg, w, po);
        units[i] = plan.units.size();
        WeightStore store(plan, b.comm.rank(), b.be, WeightStoreOptions{});
        Schedule schedule(plan, store, b.be, b.comm, ScheduleOptions{2, true});
        Forward fwd(cfg, plan, schedule, b.be);
        fwd.reserve(1, kPast + kSteps + 8);
        int32_t id = 7;
        std::vector<float> logits;
        auto step = [&](int32_t past) { fwd.step({{0, past, &id, 1}}, logits); };
        for (int32_t s = 0; s < 3; ++s) step(kPast - 3 + s);
        b.comm.barrier();
        std::vector<double> ts;
        for (int32_t s = 0; s < kSteps; ++s) {
            const auto t0 = Clock::now();
            step(kPast + s);
            ts.push_back(seconds_since(t0));
        }
        b.wrong += count_non_finite(logits);
        t[i] = slowest(b, median(ts));
    }
    p.unit_overhead_s = std::max(0.0, (t[1] - t[0]) / double(units[1] - units[0]));
    if (p.unit_overhead_s == 0) p.unit_overhead_s = t[0] / double(units[0]);   // noise: all of it per unit
    p.step_overhead_s = std::max(0.0, t[0] - double(units[0]) * p.unit_overhead_s);
    b.say("# overheads: decode steps of a tiny model (batch 1, offload none): {} units {:.1f} us, {} units {:.1f} us "
          "per step\n", units[0], t[0] * 1e6, units[1], t[1] * 1e6);
}

// --- the file ------------------------------------------------------------------------------------------------

// The existing profile at `path` when it is one of the same device (its other worlds' all-gather entries are kept),
// else nothing (a line says why it is replaced).
void merge_existing(Bench & b, MachineProfile & p, const std::string & path) {
    if (!std::filesystem::exists(path)) return;
    try {
        const MachineProfile old = load_profile(path);
        if (old.device != p.device || old.device_name != p.device_name) {
            b.say("# {} is a profile of {} {}: replaced\n", path, old.device, old.device_name);
            return;
        }
        std::vector<int> kept;
        for (const auto & [world, gbps] : old.allgather_busbw_gbps) {
            if (p.allgather_busbw_gbps.count(world)) continue;
            p.allgather_busbw_gbps[world] = gbps;
            kept.push_back(world);
        }
        if (!kept.empty())
            p.source += fmt::format("; all-gather of world {} kept from the earlier {}", fmt::join(kept, ", "), path);
        if (p.nvme_gbps == 0 && old.nvme_gbps > 0) {   // measured before with --nvme-path: kept
            p.nvme_gbps = old.nvme_gbps;
            p.nvme_block_size = old.nvme_block_size;
            p.nvme_queue_depth = old.nvme_queue_depth;
            p.source += fmt::format("; NVMe kept from the earlier {}", path);
        }
        b.say("# merged with {}: kept its figures of what this run did not measure (other worlds' all-gather, "
              "NVMe)\n", path);
    } catch (const Error & e) {
        b.say("# {} is not a valid profile ({}): replaced\n", path, e.message());
    }
}

void print_profile(Bench & b, const MachineProfile & p, double seconds) {
    b.say("#\n# machine profile ({:.1f} s): {}\n", seconds, p.source);
    b.say("#   device {} ({}), threads {}, cores {}\n", p.device, p.device_name, p.threads, p.cores);
    b.say("#   h2d {:.2f} GB/s, memcpy {:.2f} GB/s, memory {:.2f} GB/s, nvme {}\n", p.h2d_gbps, p.memcpy_gbps,
          p.memory_gbps, p.nvme_gbps > 0 ? fmt::format("{:.2f} GB/s", p.nvme_gbps) : std::string("not measured"));
    b.say("#   copy latency {:.1f} us (paced, as with test_link_gbps: {:.1f} us)\n", p.copy_latency_s * 1e6,
          p.paced_copy_latency_s * 1e6);
    for (const auto & [world, gbps] : p.allgather_busbw_gbps) b.say("#   all-gather busbw, {} ranks: {:.2f} GB/s\n", world, gbps);
    b.say("#   attention decode {:.2f} GFLOP/s, prefill {:.2f} GFLOP/s; overhead step {:.1f} us, unit {:.1f} us\n",
          p.attention_decode_gflops, p.attention_prefill_gflops, p.step_overhead_s * 1e6, p.unit_overhead_s * 1e6);
    b.say("# matmul, ns per weight (GFLOP/s) at T:\n# {:>6}", "dtype");
    const auto & any = p.matmul.begin()->second;
    for (const auto & pt : any) b.say(" {:>13}", pt.first);
    b.say("\n");
    for (const auto & [key, table] : p.matmul) {
        b.say("  {:>6}", key);
        for (const auto & [T, s] : table) b.say(" {:>5.3f} ({:>5.0f})", s * 1e9, 2.0 * double(T) / s / 1e9);
        b.say("\n");
    }
    for (const auto & [ring, table] : p.reuse_factor) {
        b.say("# bf16 re-read after {:>3} MiB, time / cold time at T:", ring >> 20);
        for (const auto & [T, f] : table) b.say(" {}: {:.2f}", T, f);
        b.say("\n");
    }
}

}  // namespace

void run_profile(Bench & b) {
    const auto t0 = Clock::now();
    const bool cuda = is_cuda(b.be);
    MachineProfile p;
    p.device = cuda ? "cuda" : "cpu";
    p.threads = cuda ? 0 : b.n_threads;
    p.cores = int(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
#ifdef ZT_HAVE_CUDA
    if (cuda) p.device_name = cuda_device_name(cuda_device_of(b.be));
#endif
    if (!cuda) p.device_name = fmt::format("{} ({} cores)", cpu_model_name(), p.cores);
    const int n = b.comm.world_size();
    p.source = fmt::format("measured by ztinfer bench --profile on {} at {}, world {}, threads {}", host_name(),
                           utc_now(), n, b.n_threads);

    // sizes: copies and all-gathers of S; the cold pool 2 x LLC in 256 MiB .. 1 GiB (GPU: 256 MiB, > 2 x an L2),
    // both at most --max-bytes, and at most a quarter of this rank's share of the free memory
    const size_t copy_bytes = std::max<size_t>(4 * 64, std::min(b.max_bytes, kMaxCopyBytes)) / 64 * 64;
    size_t pool_bytes = cuda ? 256 * kMiB : std::clamp<size_t>(2 * llc_bytes(), 256 * kMiB, 1024 * kMiB);
    if (const size_t avail = mem_available(); avail > 0) pool_bytes = std::min(pool_bytes, avail / 4 / size_t(n));
    pool_bytes = std::max<size_t>(std::min(pool_bytes, b.max_bytes), kMiB) / kMiB * kMiB;
    const int iters = std::min(b.opt.iters, 5);
    const std::filesystem::path folder = std::filesystem::path(b.opt.profile_path).parent_path();
    ZT_CHECK(folder.empty() || std::filesystem::is_directory(folder), "--profile {}: the folder {} does not exist: "
             "create it first (the file is written after about a minute of measuring)", b.opt.profile_path,
             folder.string());
    const int64_t H = b.opt.hidden > 0 ? b.opt.hidden : cuda ? 4096 : 2048;
    ZT_CHECK(H % 256 == 0, "--hidden {}: with --profile it is the matmul size N = K and must be a multiple of 256 "
             "(whole blocks of every quantized dtype)", H);
    std::vector<int64_t> ts;
    for (int64_t T = 1; T <= 512; T *= 2) ts.push_back(T);
    b.say("# ztinfer bench --profile {}: {} rank(s) over {}, backend {} ({}), copies of {} B, cold pool {} MiB "
          "(LLC {} KiB), matmul N = K = {}\n", b.opt.profile_path, n, b.comm.name(), b.be.name(), p.device_name,
          copy_bytes, pool_bytes / kMiB, llc_bytes() / 1024, H);

    // N > 1 ranks adding to an existing profile of this device: only the all-gather (rank 0 decides for all)
    int add_allgather_only = 0;
    std::optional<MachineProfile> base;
    if (n > 1 && b.comm.rank() == 0 && std::filesystem::exists(b.opt.profile_path)) {
        try {
            base = load_profile(b.opt.profile_path);
            add_allgather_only = base->device == p.device && base->device_name == p.device_name;
        } catch (const Error &) {
        }
    }
    b.comm.broadcast(&add_allgather_only, sizeof add_allgather_only, 0);
    if (add_allgather_only) {
        SubBench ag(b, copy_bytes, copy_bytes, iters);
        table_allgather(ag.b);
        b.wrong += ag.b.wrong;
        if (b.print) {
            base->allgather_busbw_gbps[n] = best_of_rows(ag.b.figures["allgather"], "busbw_gbps");
            base->source += fmt::format("; all-gather of {} ranks measured at {}", n, utc_now());
            profile_from_json(profile_to_json(*base), b.opt.profile_path + " (as measured)");
            save_profile(b.opt.profile_path, *base);
            print_profile(b, *base, seconds_since(t0));
            b.say("# added the all-gather of {} ranks to {} (its other figures are kept)\n", n, b.opt.profile_path);
            b.figures["profile"] = profile_to_json(*base);
        }
        return;
    }
    measure_links(b, p, copy_bytes, iters);
    {
        Buffer pool = b.be.alloc(pool_bytes, MemKind::device, "bench profile cold pool");
        measure_memory(b, p, pool);
        measure_matmul(b, p, pool, H, ts);
        measure_reuse(b, p, pool, H);
    }
    measure_attention(b, p);
    measure_overheads(b, p);
    ZT_CHECK(!p.matmul.empty(), "bench --profile: no weight dtype's matmul ran on backend {} (see the lines above)",
             b.be.name());

    if (b.print) {
        merge_existing(b, p, b.opt.profile_path);
        if (p.nvme_gbps == 0) p.source += "; NVMe not measured (no --nvme-path)";
        // what is written must load: a figure out of range (a broken timer, a 0) fails here, not in the planner
        profile_from_json(profile_to_json(p), b.opt.profile_path + " (as measured)");
        save_profile(b.opt.profile_path, p);
        print_profile(b, p, seconds_since(t0));
        b.say("# wrote {}\n", b.opt.profile_path);
    }
    b.figures["profile"] = profile_to_json(p);
}

}  // namespace zt::bench_detail
