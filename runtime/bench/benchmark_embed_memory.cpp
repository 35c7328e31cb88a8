// The embed-memory table of `ztinfer bench` (see benchmark.h; only when --only names it).
#include <algorithm>
#include <string>
#include <vector>

#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/weight_store.h"

namespace zt::bench_detail {

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

}  // namespace zt::bench_detail
