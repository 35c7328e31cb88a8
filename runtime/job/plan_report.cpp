// The planner's report (planner.h): the result of plan_job as a table for people (`ztinfer plan`) or as one JSON
// object (`ztinfer plan --json`, and the job's log when ds.json says "auto").
#include <fmt/format.h>

#include "runtime/backend/memory_account.h"
#include "runtime/job/planner.h"

namespace zt {

namespace {

using json = nlohmann::json;

json outcome_json(const PlanOutcome & o) {
    json items = json::array();
    for (const MemoryItem & i : o.memory.items)
        items.push_back({{"name", i.name}, {"tier", i.tier}, {"bytes", i.bytes}, {"formula", i.formula}});
    const SpeedEstimate & e = o.speed;
    return {{"settings", plan_settings_json(o.settings)},
            {"fits", o.fits},
            {"why_not", o.why_not.empty() ? json(nullptr) : json(o.why_not)},
            {"memory", {{"device", o.memory.device}, {"pinned", o.memory.pinned}, {"host", o.memory.host},
                        {"nvme", o.memory.nvme}, {"items", items}}},
            {"speed", {{"tokens_per_s", e.tokens_per_s}, {"loop_seconds", e.loop_seconds}, {"steps", e.steps},
                       {"step_seconds", e.step_seconds}, {"fetch_seconds", e.fetch_seconds},
                       {"all_gather_seconds", e.all_gather_seconds}, {"compute_seconds", e.compute_seconds},
                       {"kv_seconds", e.kv_seconds}, {"bound", e.bound}}}};
}

std::string limit(size_t bytes) { return bytes ? format_bytes(bytes) : "no limit"; }

void memory_table(std::string & out, const char * title, const PlanOutcome & o) {
    out += fmt::format("  memory per rank, {}: device {}, pinned host {}, NVMe {}{}\n", title,
                       format_bytes(o.memory.device), format_bytes(o.memory.pinned), format_bytes(o.memory.nvme),
                       o.fits ? "" : "  -- does not fit: " + o.why_not);
    for (const MemoryItem & i : o.memory.items)
        out += fmt::format("    {:<7} {:<18} {:>11}   {}\n", i.tier, i.name, format_bytes(i.bytes), i.formula);
}

}  // namespace

json plan_settings_json(const PlanSettings & s) {
    return {{"tier", s.tier}, {"resident_layers", s.resident_layers}, {"batch_size", s.batch_size},
            {"micro_batches", s.micro_batches}, {"prefetch_depth", s.prefetch_depth}, {"kv_offload", s.kv_offload},
            {"overlap", s.overlap}, {"prefill_chunk", s.prefill_chunk}, {"request_assignment", s.assignment}};
}

json plan_report_json(const PlanResult & r) {
    const PlanBudget & b = r.budget;
    const PlanOutcome & c = r.configured;
    return {{"model", r.model},
            {"budget", {{"ranks", b.world}, {"ranks_per_node", b.ranks_per_node}, {"device", b.device},
                        {"device_memory", b.device_memory}, {"host_memory", b.host_memory},
                        {"nvme_bytes", b.nvme_bytes}, {"threads", b.threads}, {"test_link_gbps", b.test_link_gbps}}},
            {"workload", r.workload},
            {"profile", r.profile},
            {"configured", outcome_json(c)},
            {"best", r.best ? outcome_json(*r.best) : json(nullptr)},
            {"fits", c.fits},
            {"refusal", r.refusal.empty() ? json(nullptr) : json(r.refusal)},
            {"reasons", r.reasons},
            {"predicted", {{"tokens_per_s", c.speed.tokens_per_s}, {"loop_seconds", c.speed.loop_seconds},
                           {"bound", c.speed.bound},
                           {"memory", {{"device", c.memory.device}, {"pinned", c.memory.pinned},
                                       {"host", c.memory.host}, {"nvme", c.memory.nvme}}}}}};
}

std::string plan_report_text(const PlanResult & r) {
    const PlanBudget & b = r.budget;
    std::string out = fmt::format("ztinfer plan: {}\n", r.model);
    out += fmt::format("  ranks {} ({} per node), backend {}; budget: device {} per rank, host {} per node, NVMe {}\n",
                       b.world, b.ranks_per_node, b.device, limit(b.device_memory), limit(b.host_memory),
                       b.nvme_available ? limit(b.nvme_bytes) : "none (no nvme_path)");
    out += fmt::format("  workload: {}\n  profile: {}\n\n", r.workload, r.profile);
    const PlanOutcome & c = r.configured;
    const PlanOutcome * best = r.best ? &*r.best : nullptr;
    out += fmt::format("  {:<22}{:>18}{:>18}\n", "", "configured", best ? "best" : "best (none fits)");
    const json cs = plan_settings_json(c.settings);
    const json bs = best ? plan_settings_json(best->settings) : json::object();
    for (const char * k : {"tier", "resident_layers", "batch_size", "micro_batches", "prefetch_depth", "kv_offload"}) {
        auto show = [](const json & j) { return j.is_string() ? j.get<std::string>() : j.dump(); };
        out += fmt::format("  {:<22}{:>18}{:>18}\n", k, show(cs[k]), best ? show(bs[k]) : "-");
    }
    auto row = [&](const char * name, auto f) {
        out += fmt::format("  {:<22}{:>18}{:>18}\n", name, f(c), best ? f(*best) : std::string("-"));
    };
    row("fits", [](const PlanOutcome & o) { return std::string(o.fits ? "yes" : "NO"); });
    row("device memory", [](const PlanOutcome & o) { return format_bytes(o.memory.device); });
    row("pinned host memory", [](const PlanOutcome & o) { return format_bytes(o.memory.pinned); });
    row("NVMe", [](const PlanOutcome & o) { return format_bytes(o.memory.nvme); });
    row("tokens/s", [](const PlanOutcome & o) { return fmt::format("{:.1f}", o.speed.tokens_per_s); });
    row("step (s)", [](const PlanOutcome & o) { return fmt::format("{:.4f}", o.speed.step_seconds); });
    row("  fetch (s)", [](const PlanOutcome & o) { return fmt::format("{:.4f}", o.speed.fetch_seconds); });
    row("  all-gather (s)", [](const PlanOutcome & o) { return fmt::format("{:.4f}", o.speed.all_gather_seconds); });
    row("  compute (s)", [](const PlanOutcome & o) { return fmt::format("{:.4f}", o.speed.compute_seconds); });
    row("bound by", [](const PlanOutcome & o) { return o.speed.bound; });
    row("job time (s)", [](const PlanOutcome & o) { return fmt::format("{:.1f}", o.speed.loop_seconds); });
    out += "\n";
    memory_table(out, "configured", c);
    if (best) memory_table(out, "best", *best);
    if (!r.refusal.empty()) out += "\n  REFUSED: " + r.refusal + "\n";
    for (const std::string & why : r.reasons) out += "  - " + why + "\n";
    return out;
}

}  // namespace zt
