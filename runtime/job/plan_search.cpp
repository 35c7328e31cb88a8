// The planner's search (planner.h plan_job): every combination of the free keys' candidates is costed by the
// memory model and, if it fits the budget, by the speed model; the fastest wins (within 1 %, the one that uses
// less memory). Rules a user would want:
//   - a model that fits is never streamed: when tier "none" fits for some batch, only such settings are kept;
//   - streamed or not, resident_layers is the most whole layers that still fit beside the KV cache, the
//     activations and the ring ("resident layers fill whatever memory is left");
//   - nothing fits: the refusal names the smallest budget that would (the leanest settings' memory) and the
//     largest term there.
// Traces (simulate_steps) depend only on batch_size, micro_batches and the workload, so each is made once; the
// search replays 64 .. 512 requests per rank (4 x the slots), the chosen and the configured settings are then
// costed on 1024.
#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"
#include "runtime/job/planner.h"

namespace zt {

namespace {

// Requests per rank the search replays: a few times the slots, so that admission and the tail are in the trace.
int64_t search_sample(const PlanSettings & s) { return std::min<int64_t>(512, std::max<int64_t>(64, 4 * s.batch_size * s.micro_batches)); }
constexpr int64_t kFinalRequestsPerRank = 1024;

bool is_free(const std::set<std::string> & free_keys, const char * key) { return free_keys.count(key) > 0; }

// Which budget the estimate exceeds, by how much, and its largest term there; empty when it fits.
std::string over_budget(const MemoryEstimate & e, const PlanBudget & b) {
    const size_t rpn = size_t(std::max(1, b.ranks_per_node));
    auto largest = [&](std::initializer_list<const char *> tiers) {
        const MemoryItem * best = nullptr;
        for (const MemoryItem & i : e.items)
            for (const char * t : tiers)
                if (i.tier == t && (!best || i.bytes > best->bytes)) best = &i;
        return best ? fmt::format("{} {} = {}", best->name, format_bytes(best->bytes), best->formula) : std::string();
    };
    if (b.device == "cpu") {
        const size_t need = (e.device + e.pinned + e.host) * rpn;
        if (b.host_memory > 0 && need > b.host_memory)
            return fmt::format("host memory: {} rank(s) x {} = {} > {} (largest: {})", rpn,
                               format_bytes(e.device + e.pinned + e.host), format_bytes(need),
                               format_bytes(b.host_memory), largest({"device", "pinned", "host"}));
        if (b.device_memory > 0 && e.device > b.device_memory)
            return fmt::format("device memory cap: {} > {} (largest: {})", format_bytes(e.device),
                               format_bytes(b.device_memory), largest({"device"}));
    } else {
        if (b.device_memory > 0 && e.device > b.device_memory)
            return fmt::format("GPU memory: {} > {} per rank (largest: {})", format_bytes(e.device),
                               format_bytes(b.device_memory), largest({"device"}));
        const size_t need = (e.pinned + e.host) * rpn;
        if (b.host_memory > 0 && need > b.host_memory)
            return fmt::format("host memory: {} rank(s) x {} = {} > {} (largest: {})", rpn,
                               format_bytes(e.pinned + e.host), format_bytes(need), format_bytes(b.host_memory),
                               largest({"pinned", "host"}));
    }
    if (b.nvme_bytes > 0 && e.nvme * rpn > b.nvme_bytes)
        return fmt::format("NVMe space: {} rank(s) x {} > {}", rpn, format_bytes(e.nvme), format_bytes(b.nvme_bytes));
    return {};
}

size_t total_memory(const MemoryEstimate & e) { return e.device + e.pinned + e.host; }

class Search {
public:
    Search(const PlanModel & m, const Workload & w, const PlanBudget & b, const MachineProfile & p)
        : m_(m), w_(w), b_(b), p_(p) {}

    const StepTrace & trace(const PlanSettings & s, int64_t per_rank) {
        const auto key = std::make_tuple(s.batch_size, s.micro_batches, per_rank);
        auto it = traces_.find(key);
        if (it == traces_.end()) it = traces_.emplace(key, simulate_steps(w_, s, b_.world, per_rank)).first;
        return it->second;
    }
    PlanOutcome memory_only(const PlanSettings & s, int64_t per_rank) {
        PlanOutcome o;
        o.settings = s;
        const PartitionPlan plan = make_plan_partition(m_, s, b_.world);
        o.memory = estimate_memory(m_, plan, s, trace(s, per_rank), b_);
        o.why_not = over_budget(o.memory, b_);
        o.fits = o.why_not.empty();
        return o;
    }
    PlanOutcome full(const PlanSettings & s, int64_t per_rank) {
        PlanOutcome o = memory_only(s, per_rank);
        const PartitionPlan plan = make_plan_partition(m_, s, b_.world);
        o.speed = estimate_speed(m_, plan, s, trace(s, per_rank), b_, p_);
        return o;
    }
    // The most resident layers (0 .. L) that fit with these settings, or -1 when even 0 does not.
    int64_t max_resident(PlanSettings s, int64_t per_rank) {
        const int64_t L = m_.config.num_hidden_layers;
        s.resident_layers = 0;
        if (!memory_only(s, per_rank).fits) return -1;
        int64_t lo = 0, hi = L;   // fits(lo) holds
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            s.resident_layers = mid;
            if (memory_only(s, per_rank).fits) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }

private:
    const PlanModel & m_;
    const Workload & w_;
    const PlanBudget & b_;
    const MachineProfile & p_;
    std::map<std::tuple<int64_t, int64_t, int64_t>, StepTrace> traces_;
};

// lo, 2 lo, 4 lo, ... <= hi, and hi itself (more slots than a rank has requests would stay empty)
std::vector<int64_t> powers_up_to(int64_t lo, int64_t hi) {
    std::vector<int64_t> v;
    for (int64_t x = lo; x <= hi; x *= 2) v.push_back(x);
    if (v.empty() || v.back() != hi) v.push_back(std::max(lo, hi));
    return v;
}

}  // namespace

PlanResult plan_job(const PlanModel & m, const Workload & given, const PlanSettings & configured,
                    const std::set<std::string> & free_keys, const PlanBudget & b, const MachineProfile & p) {
    // an input without one valid request (the job only writes error records): plan for one 1-token request
    const Workload w = given.requests.empty() ? workload_uniform(given.task, 1, 1, 1) : given;
    for (const std::string & k : free_keys)
        ZT_CHECK(std::find(kPlanAutoKeys.begin(), kPlanAutoKeys.end(), k) != kPlanAutoKeys.end(),
                 "planner: {} is not a key it chooses", k);

    ZT_CHECK(b.world >= 1 && b.ranks_per_node >= 1 && b.ranks_per_node <= b.world, "planner: {} ranks with {} per "
             "node: give --ranks >= 1 and --ranks-per-node in [1, ranks]", b.world, b.ranks_per_node);
    PlanResult r;
    r.model = m.name;
    r.budget = b;
    r.workload = given.requests.empty() ? given.source + " (no valid request: planned for one 1-token request)"
                                        : w.source;
    r.profile = p.source;
    Search search(m, w, b, p);
    r.configured = search.full(configured, kFinalRequestsPerRank);

    // candidates of each key: the configured value when the key is not free
    const int64_t per_rank = int64_t((w.requests.size() + size_t(b.world) - 1) / size_t(b.world));
    const int64_t L = m.config.num_hidden_layers;
    const std::vector<int64_t> batches = is_free(free_keys, "batch_size") ? powers_up_to(1, std::min<int64_t>(per_rank, 256))
                                                                           : std::vector<int64_t>{configured.batch_size};
    std::vector<std::string> kv = is_free(free_keys, "kv_offload") ? std::vector<std::string>{"none", "cpu"}
                                                                   : std::vector<std::string>{configured.kv_offload};
    std::vector<int64_t> depths = is_free(free_keys, "prefetch_depth") ? std::vector<int64_t>{1, 2, 3}
                                                                       : std::vector<int64_t>{configured.prefetch_depth};
    std::vector<std::string> tiers;
    if (is_free(free_keys, "tier")) {
        tiers = {"none", "cpu"};
        if (b.nvme_available) tiers.push_back("nvme");
    } else {
        tiers = {configured.tier};
    }
    const bool resident_free = is_free(free_keys, "resident_layers");

    std::vector<PlanOutcome> found;
    for (int64_t batch : batches) {
        const std::vector<int64_t> micros = is_free(free_keys, "micro_batches")
                                                ? powers_up_to(1, std::max<int64_t>(1, std::min<int64_t>(8, per_rank / batch)))
                                                : std::vector<int64_t>{configured.micro_batches};
        for (int64_t micro : micros)
            for (const std::string & kvo : kv)
                for (const std::string & tier : tiers) {
                    PlanSettings s = configured;
                    s.batch_size = batch;
                    s.micro_batches = micro;
                    s.kv_offload = kvo;
                    s.tier = tier;
                    if (tier == "none") s.resident_layers = 0;
                    for (int64_t d : (tier == "none" ? std::vector<int64_t>{s.prefetch_depth} : depths)) {
                        s.prefetch_depth = d;
                        if (tier != "none" && resident_free) {
                            // streaming with every layer resident is "none" under another name: stop one short
                            const int64_t res = search.max_resident(s, search_sample(s));
                            if (res < 0) continue;
                            s.resident_layers = std::min(res, std::max<int64_t>(L - 1, 0));
                        }
                        PlanOutcome o = search.memory_only(s, search_sample(s));
                        if (!o.fits) continue;
                        found.push_back(search.full(s, search_sample(s)));
                    }
                }
    }
    const bool none_fits = std::any_of(found.begin(), found.end(), [](const PlanOutcome & o) {
        return o.settings.tier == "none";
    });
    if (none_fits)   // a model that fits is never streamed
        found.erase(std::remove_if(found.begin(), found.end(), [](const PlanOutcome & o) {
            return o.settings.tier != "none";
        }), found.end());

    if (found.empty()) {
        // the leanest settings: what the smallest budget must hold
        PlanSettings lean = configured;
        lean.batch_size = is_free(free_keys, "batch_size") ? 1 : configured.batch_size;
        lean.micro_batches = is_free(free_keys, "micro_batches") ? 1 : configured.micro_batches;
        lean.kv_offload = is_free(free_keys, "kv_offload") ? "cpu" : configured.kv_offload;
        lean.prefetch_depth = is_free(free_keys, "prefetch_depth") ? 1 : configured.prefetch_depth;
        lean.tier = is_free(free_keys, "tier") ? (b.nvme_available ? "nvme" : "cpu") : configured.tier;
        lean.resident_layers = resident_free ? 0 : configured.resident_layers;
        const PlanOutcome o = search.memory_only(lean, kFinalRequestsPerRank);
        const size_t rpn = size_t(b.ranks_per_node);
        std::string need = b.device == "cpu"
            ? fmt::format("host memory >= {} per node ({} rank(s) x {})", format_bytes(total_memory(o.memory) * rpn),
                          rpn, format_bytes(total_memory(o.memory)))
            : fmt::format("GPU memory >= {} per rank and host memory >= {} per node", format_bytes(o.memory.device),
                          format_bytes((o.memory.pinned + o.memory.host) * rpn));
        if (o.memory.nvme) need += fmt::format(" and NVMe space >= {} per node", format_bytes(o.memory.nvme * rpn));
        r.refusal = fmt::format("nothing fits the budget: the leanest settings ({}) need {}{}; over: {}. Give a larger "
                                "budget (--gpu-memory / --host-memory / --nvme-space, or ztinfer.max_gpu_memory / "
                                "host_memory), more ranks, a quantized model (ztinfer quantize), or shorter requests",
                                plan_settings_json(lean).dump(), need,
                                b.nvme_available || !is_free(free_keys, "tier") ? "" : " (an nvme_path would move the "
                                "weights off host memory)", o.why_not.empty() ? "nothing (a search bug)" : o.why_not);
        return r;
    }
    const PlanOutcome * best = &found.front();
    for (const PlanOutcome & o : found) {
        const double a = o.speed.tokens_per_s, c = best->speed.tokens_per_s;
        if (a > c * 1.01 || (a >= c * 0.99 && total_memory(o.memory) < total_memory(best->memory))) best = &o;
    }
    r.best = search.full(best->settings, kFinalRequestsPerRank);
    const PlanOutcome & bo = *r.best;
    const PlanSettings & bs = bo.settings;
    r.reasons.push_back(fmt::format("{} settings fit the budget; the fastest is predicted at {:.1f} tokens/s, bound by "
                                    "{}", found.size(), bo.speed.tokens_per_s, bo.speed.bound));
    if (bs.tier == "none")
        r.reasons.push_back("the whole model fits beside the KV cache and activations: nothing is streamed");
    else
        r.reasons.push_back(fmt::format("the weights do not fit whole beside the KV cache and activations: {} "
                                        "layer(s) resident, the rest streamed from {}", bs.resident_layers,
                                        bs.tier == "cpu" ? "pinned host memory" : "NVMe"));
    if (bs.kv_offload == "cpu") r.reasons.push_back("the KV cache lives in pinned host memory (offloaded)");
    r.reasons.push_back(fmt::format("{} sequence(s) per micro-batch x {} micro-batch(es) per rank", bs.batch_size,
                                    bs.micro_batches));
    return r;
}

}  // namespace zt
