// The layer table of `ztinfer bench` (see benchmark.h): one decoder layer's compute, resident, on the compute
// stream, for decode (1 new token after --context) and prefill (--prompt tokens) at each batch size.
#include <algorithm>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/trace.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/weight_store.h"

namespace zt::bench_detail {

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

}  // namespace zt::bench_detail
