// The decode table of `ztinfer bench` (see benchmark.h): streamed decode steps (real Schedule + Forward, offload
// "cpu", overlap on, prefetch depth 2) against the H2D limit: link efficiency = (bytes fetched per rank / H2D
// rate) / step time.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/trace.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/weight_store.h"

namespace zt::bench_detail {

namespace {

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

}  // namespace

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

}  // namespace zt::bench_detail
