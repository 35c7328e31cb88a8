// The planner for a ds.json (`ztinfer plan --config`, and jobs whose ds.json says "auto"): the model from the
// config (headers only), the workload from its input file (or given counts), the machine profile (a file, or the
// defaults) and the budgets (given, else the config's max_gpu_memory / host_memory, else what this machine has).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/job/planner.h"

namespace zt {

class Communicator;
struct JobConfig;

struct PlanRequest {
    std::string profile;            // machine profile file; "" = ztinfer.profile, else default_profile()
    size_t gpu_memory = 0;          // per rank; 0 = ztinfer.max_gpu_memory, else the card (CPU backend: no cap)
    size_t host_memory = 0;         // per node; 0 = ztinfer.host_memory, else MemAvailable
    size_t nvme_space = 0;          // per node; 0 = the free space at nvme_path
    std::string nvme_path;          // a folder on the NVMe disk ("" = offload_param.nvme_path): tier nvme possible
    int ranks = 1;
    int ranks_per_node = 0;         // 0 = ranks
    int threads = 0;                // 0 = ztinfer.threads
    std::string device;             // "cpu" | "cuda"; "" = ztinfer.device ("auto": cuda when one is usable)
    int64_t requests = 0, prompt_tokens = 0, new_tokens = 0;   // all > 0: a uniform workload, not the input file
    int64_t max_input_lines = 100000;   // lines of the input file read for the workload
    bool search_all = true;         // search every key of kPlanAutoKeys (false: only the config's "auto" keys)
    // Without a config: plan a bench shape ("llama2-70b") of `dtype` weights (all keys searched).
    std::string shape, dtype = "bf16", task = "generate";
    int64_t layers = 0;
};

// cfg may be nullptr when r.shape is given. Throws zt::Error for unreadable inputs (model, profile, input).
PlanResult plan_for_config(const JobConfig * cfg, const PlanRequest & r);

// A job whose ds.json says "auto" for some of kPlanAutoKeys (cfg.auto_keys): rank 0 plans them (the other keys
// as configured; ranks per node from the ranks' host names), logs the choice and why, and every rank applies the
// same settings to cfg. Collective. Nothing fitting is a zt::Error on every rank with the planner's refusal.
void apply_auto_settings(JobConfig & cfg, int rank, int n_ranks, int n_threads, Communicator & comm);

}  // namespace zt
