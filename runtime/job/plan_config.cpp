// plan_for_config (plan_config.h): gathers what the planner needs for a ds.json (or a bench shape) and runs it.
#include "runtime/job/plan_config.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"
#include "runtime/base/host_name.h"
#include "runtime/base/memory_usage.h"
#include "runtime/job/job.h"
#include "runtime/job/job_config.h"
#include "runtime/model/gguf_checkpoint.h"
#include "runtime/model/gguf_file.h"
#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#endif

namespace zt {

namespace {

std::string resolved_device(const JobConfig * cfg, const PlanRequest & r) {
    std::string d = !r.device.empty() ? r.device : cfg ? cfg->device : "auto";
    if (d == "auto") d = cuda_backend_compiled() && cuda_unavailable_reason().empty() ? "cuda" : "cpu";
    ZT_CHECK(d == "cpu" || d == "cuda", "planner: device \"{}\": use cpu or cuda", d);
    return d;
}

size_t free_space(const std::string & path) {
    std::error_code ec;
    std::filesystem::path p = path;
    while (!p.empty() && !std::filesystem::exists(p, ec)) p = p.parent_path();
    if (p.empty()) return 0;
    const auto info = std::filesystem::space(p, ec);
    return ec ? 0 : size_t(info.available);
}

}  // namespace

PlanResult plan_for_config(const JobConfig * cfg, const PlanRequest & r) {
    ZT_CHECK(cfg || !r.shape.empty(), "planner: give --config ds.json, or --shape to plan a model shape");
    PlanBudget b;
    b.world = std::max(1, r.ranks);
    b.ranks_per_node = r.ranks_per_node > 0 ? std::min(r.ranks_per_node, b.world) : b.world;
    b.device = resolved_device(cfg, r);
    b.threads = r.threads > 0 ? r.threads : cfg ? int(cfg->threads) : 0;
    b.test_link_gbps = cfg ? cfg->streaming.test_link_gbps : 0;
    const std::string nvme_path = !r.nvme_path.empty() ? r.nvme_path : cfg ? cfg->streaming.nvme_path : "";
    b.nvme_available = !nvme_path.empty();
    // budgets: given, else the config's, else this machine's
    b.host_memory = r.host_memory ? r.host_memory : cfg && cfg->host_memory_bytes ? cfg->host_memory_bytes
                                                                                 : system_memory_available();
    b.device_memory = r.gpu_memory ? r.gpu_memory : cfg ? cfg->gpu.max_memory_bytes : 0;
#ifdef ZT_HAVE_CUDA
    if (!b.device_memory && b.device == "cuda" && cuda_device_count() > 0) {
        // the card, less 1 GiB for what ztinfer does not allocate itself (the CUDA context, NCCL's buffers)
        const size_t card = cuda_device_memory(0);
        b.device_memory = card > (size_t(2) << 30) ? card - (size_t(1) << 30) : card / 2;
        if (cfg && cfg->gpu.max_memory_fraction > 0)
            b.device_memory = size_t(double(card) * cfg->gpu.max_memory_fraction);
    }
#endif
    b.nvme_bytes = r.nvme_space ? r.nvme_space : b.nvme_available ? free_space(nvme_path) : 0;

    // profile
    const std::string profile_path = !r.profile.empty() ? r.profile : cfg ? cfg->profile : "";
    MachineProfile p = profile_path.empty() ? default_profile(b.device) : load_profile(profile_path);
    ZT_CHECK(p.device == b.device, "{}: the profile was measured on the {} backend but the job runs on {}: run "
             "`ztinfer bench --profile` with --device {}", profile_path, p.device, b.device, b.device);

    // model, settings, workload
    PlanModel m;
    PlanSettings configured;
    std::set<std::string> free_keys(kPlanAutoKeys.begin(), kPlanAutoKeys.end());
    Workload w;
    const bool uniform = r.requests > 0 && r.prompt_tokens > 0 && (r.new_tokens > 0 || r.task == "embed");
    if (cfg) {
        m = plan_model_from_path(cfg->model);
        configured = plan_settings_of(*cfg);
        if (!r.search_all) free_keys = cfg->auto_keys;
        if (uniform) {
            w = workload_uniform(cfg->task, r.requests, r.prompt_tokens, r.new_tokens);
        } else {
            std::optional<GgufFile> gguf;
            if (is_gguf_model_path(cfg->model)) gguf.emplace(read_gguf_header(cfg->model));
            const std::optional<Tokenizer> tok = load_job_tokenizer(*cfg, gguf ? &*gguf : nullptr);
            w = workload_from_input(*cfg, tok ? &*tok : nullptr, r.max_input_lines);
        }
    } else {
        m = plan_model_from_shape(r.shape, r.dtype, r.layers);
        ZT_CHECK(uniform, "planner: --shape needs the workload: --requests, --prompt-tokens and --new-tokens");
        w = workload_uniform(r.task, r.requests, r.prompt_tokens, r.new_tokens);
    }
    return plan_job(m, w, configured, free_keys, b, p);
}

void apply_auto_settings(JobConfig & cfg, int rank, int n_ranks, int n_threads, Communicator & comm) {
    const std::vector<std::string> hosts = comm.gather_strings(host_name());
    std::string chosen;   // rank 0: "S" + the settings as JSON, or "E" + why nothing can run
    if (rank == 0) {
        try {
            PlanRequest req;
            req.ranks = n_ranks;
            req.ranks_per_node = int(std::count(hosts.begin(), hosts.end(), hosts.front()));
            req.threads = n_threads;
            req.search_all = false;
            const PlanResult p = plan_for_config(&cfg, req);
            if (!p.best) {
                chosen = "E" + p.refusal;
            } else {
                chosen = "S" + plan_settings_json(p.best->settings).dump();
                std::string keys;
                for (const auto & k : cfg.auto_keys) keys += (keys.empty() ? "" : ", ") + k;
                const PlanOutcome & o = *p.best;
                spdlog::info("planner: \"auto\" for {}: chose {}; predicted {:.1f} tokens/s bound by {}, device {} "
                             "pinned {} per rank ({}; profile: {})", keys, plan_settings_json(o.settings).dump(),
                             o.speed.tokens_per_s, o.speed.bound, format_bytes(o.memory.device),
                             format_bytes(o.memory.pinned), p.workload, p.profile);
                for (const std::string & why : p.reasons) spdlog::info("planner: {}", why);
            }
        } catch (const Error & e) {
            chosen = "E" + e.message();
        }
    }
    uint64_t n = chosen.size();
    comm.broadcast(&n, sizeof n, 0);
    chosen.resize(size_t(n));
    comm.broadcast(chosen.data(), size_t(n), 0);
    ZT_CHECK(!chosen.empty() && chosen[0] == 'S', "{}: \"auto\" settings could not be planned: {}", cfg.config_path,
             chosen.empty() ? "no answer from rank 0" : chosen.substr(1));
    const nlohmann::json j = nlohmann::json::parse(chosen.substr(1));
    PlanSettings s = plan_settings_of(cfg);
    s.tier = j["tier"].get<std::string>();
    s.resident_layers = j["resident_layers"].get<int64_t>();
    s.batch_size = j["batch_size"].get<int64_t>();
    s.micro_batches = j["micro_batches"].get<int64_t>();
    s.prefetch_depth = j["prefetch_depth"].get<int64_t>();
    s.kv_offload = j["kv_offload"].get<std::string>();
    apply_plan_settings(cfg, s);
    cfg.auto_keys.clear();
}

}  // namespace zt
