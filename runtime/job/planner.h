// Planner (`ztinfer plan`, and jobs whose ds.json says "auto"): for a model, a workload, the ranks and their
// memory budgets, it predicts what a job allocates (memory model, plan_memory.cpp) and how fast it runs (speed
// model, plan_speed.cpp, on the measured rates of a MachineProfile), and searches the settings a user would
// otherwise pick by hand (plan_search.cpp): offload tier, resident_layers, batch_size x micro_batches,
// prefetch_depth, KV-cache offload. plan_report.cpp prints the result as a table or one JSON object.
//
// The models mirror the code they predict, term by term, and name the code (see plan_memory.cpp's table); a
// benchmark (tests/bench/bench_planner.cpp) checks them against real jobs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/job/machine_profile.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/stream/layer_partition.h"

namespace zt {

struct JobConfig;
class Tokenizer;

// The settings the planner chooses, and the fixed ones they are planned with (all from ds.json).
struct PlanSettings {
    // searched (ds.json may say "auto" for each)
    std::string tier = "none";          // zero_optimization.offload_param.device: "none" | "cpu" | "nvme"
    int64_t resident_layers = 0;        // ztinfer.resident_layers
    int64_t batch_size = 8;             // ztinfer.batch_size (sequences per micro-batch)
    int64_t micro_batches = 1;          // ztinfer.micro_batches
    int64_t prefetch_depth = 2;         // ztinfer.prefetch_depth
    std::string kv_offload = "none";    // ztinfer.kv_cache.offload: "none" | "cpu"
    // fixed
    bool overlap = true;
    int64_t prefill_chunk = 512;
    std::string assignment = "balanced";   // ztinfer.request_assignment: "balanced" | "static"
    bool partition_embeddings = false;
    int64_t persistence_threshold = 100000;
    int64_t buffer_count = 5;           // NVMe staging buffers
    int64_t aio_block_size = 1 << 20;
    int64_t aio_queue_depth = 8;
};
// The keys a job's ds.json may set to "auto", as PlanSettings names them.
extern const std::vector<std::string> kPlanAutoKeys;   // tier, resident_layers, batch_size, micro_batches,
                                                       // prefetch_depth, kv_offload
PlanSettings plan_settings_of(const JobConfig & cfg);
void apply_plan_settings(JobConfig & cfg, const PlanSettings & s);   // writes the searched keys into cfg

// Where the job runs and how much memory it may use.
struct PlanBudget {
    int world = 1;                      // ranks
    int ranks_per_node = 1;             // ranks that share one host's memory and NVMe
    std::string device = "cpu";         // "cpu" | "cuda": the backend
    size_t device_memory = 0;           // per rank: GPU memory (the CPU backend: unused, see host_memory); 0 = no limit
    size_t host_memory = 0;             // per node: pinned + pageable host memory (CPU backend: also its "device"
                                        // memory); 0 = no limit
    size_t nvme_bytes = 0;              // per node: free space at nvme_path; 0 = no limit
    bool nvme_available = false;        // offload_param.nvme_path is set: the search may pick tier "nvme"
    int threads = 0;                    // CPU backend threads per rank (0 = all cores)
    double test_link_gbps = 0;          // ztinfer.test_link_gbps (CPU test option): the simulated link's rate
};

// The model as the planner sees it: the config and every weight's shape and dtype. Tensors' data pointers are
// a sentinel that is never read (plan_partition only looks at shapes, dtypes and presence).
struct PlanModel {
    std::string name;                   // the model path, or the shape ("llama2-70b bf16")
    ModelConfig config;
    ModelWeights weights;
};
// Reads only headers (config.json + safetensors headers, or the GGUF header); throws zt::Error as a job would.
PlanModel plan_model_from_path(const std::string & model_path);
// A bench shape ("llama2-7b", "llama2-13b", "llama2-70b", "qwen2-7b") with every matrix and the embedding of
// `dtype` ("bf16", "f16", "f32", "q8_0", "q4_k", ...; norms F32); layers > 0 overrides the shape's.
PlanModel plan_model_from_shape(const std::string & shape, const std::string & dtype, int64_t layers = 0);

// What the job will run: one entry per valid request, in input order.
struct RequestShape {
    int64_t prompt_tokens = 0;
    int64_t new_tokens = 0;             // generate: max_tokens (the planner assumes no early EOS); embed: 0
};
struct Workload {
    std::string task = "generate";      // "generate" | "embed"
    std::vector<RequestShape> requests;
    std::string source;                 // how it was obtained, for the report
};
// From the job's input file: prompts tokenized with `tok` (token-id prompts counted as they are; without a
// tokenizer, 1 token per 4 bytes of text), max_tokens from each line or the job default. Reads at most
// `max_lines` lines (0 = all); invalid lines are skipped.
Workload workload_from_input(const JobConfig & cfg, const Tokenizer * tok, int64_t max_lines = 0);
// n requests of prompt_tokens and new_tokens each.
Workload workload_uniform(const std::string & task, int64_t n, int64_t prompt_tokens, int64_t new_tokens);

// --- the job's steps, as the generate / embed loop will take them (plan_workload.cpp) -----------------------
struct MicroBatchLoad {
    int64_t sequences = 0;              // sequences with new tokens this step
    int64_t tokens = 0;                 // new tokens (T of the micro-batch)
    int64_t rows = 0;                   // output rows (logits / hidden rows)
    double attention_pairs = 0;         // sum over new tokens of the positions each attends to
    double prefill_pairs = 0;           // the part of attention_pairs that prompt chunks bring (the rest: decode)
    double past_positions = 0;          // sum over sequences of the positions already cached (what an offloaded
                                        // KV cache loads per layer)
};
struct RankSteps {
    std::vector<std::vector<MicroBatchLoad>> steps;   // per step: its micro-batches (empty: the rank idles)
    int64_t n_slots = 0;                // KV-cache slots reserved (reserve_kv_cache)
    int64_t max_len = 0;                // positions per slot
    int64_t max_micro_tokens = 0;       // largest T of one micro-batch over the job
    int64_t max_step_rows = 0;          // largest number of output rows of one step
    int64_t tokens_out = 0;             // generated (generate) or embedded (embed) tokens of this rank
};
struct StepTrace {
    std::vector<RankSteps> ranks;       // index = rank
    int64_t steps = 0;                  // steps of the job (every rank takes them all)
    double scale = 1;                   // the workload was sampled: multiply time and tokens by this
    bool embed = false;                 // task "embed": hidden states, no logits and no sampling
};
// Shares the requests among ranks as the job does (request_handout.h: "balanced", the run-ordered queue handed
// to the ranks' free slots step by step; "static", request k to rank k % world, each rank's queue in run order)
// and replays the loop's slot admission and prompt chunking. At most max_per_rank requests per rank are replayed
// (an even sample; StepTrace::scale says by how much to scale).
StepTrace simulate_steps(const Workload & w, const PlanSettings & s, int world, int64_t max_per_rank = 512);

// --- memory model (plan_memory.cpp) --------------------------------------------------------------------------
struct MemoryItem {
    std::string name;                   // "weight ring", "KV cache", ...
    std::string tier;                   // "device" | "pinned" | "host" | "nvme"
    size_t bytes = 0;
    std::string formula;                // how it was computed, with the numbers
};
struct MemoryEstimate {                 // one rank: the largest of the ranks
    std::vector<MemoryItem> items;
    size_t device = 0, pinned = 0, host = 0, nvme = 0;   // sums by tier
};
// `plan` is the partition for these settings and world (make_plan_partition).
MemoryEstimate estimate_memory(const PlanModel & m, const PartitionPlan & plan, const PlanSettings & s,
                               const StepTrace & trace, const PlanBudget & b);
PartitionPlan make_plan_partition(const PlanModel & m, const PlanSettings & s, int world);

// --- speed model (plan_speed.cpp) ------------------------------------------------------------------------------
struct SpeedEstimate {
    double tokens_per_s = 0;            // generated (generate) / embedded (embed) tokens of all ranks per second
                                        // of the loop: what metrics.json's tokens_per_second measures
    double loop_seconds = 0;            // the whole job's loop
    int64_t steps = 0;
    double step_seconds = 0;            // a full decode step (all slots decoding), as the pipeline runs it
    // busy time of each resource in that step (seconds): the slowest one bounds it
    double fetch_seconds = 0;           // this rank's slices: NVMe / pinned host -> device
    double all_gather_seconds = 0;
    double compute_seconds = 0;
    double kv_seconds = 0;              // offloaded KV cache moves
    std::string bound;                  // "link (H2D)", "NVMe", "all-gather", "compute", "KV offload"
};
SpeedEstimate estimate_speed(const PlanModel & m, const PartitionPlan & plan, const PlanSettings & s,
                             const StepTrace & trace, const PlanBudget & b, const MachineProfile & p);

// --- search and report (plan_search.cpp, plan_report.cpp) --------------------------------------------------
struct PlanOutcome {
    PlanSettings settings;
    MemoryEstimate memory;
    SpeedEstimate speed;
    bool fits = false;
    std::string why_not;                // when it does not fit: which tier is over, by how much, the largest term
};
struct PlanResult {
    std::string model;
    PlanBudget budget;
    std::string workload;               // Workload::source
    std::string profile;                // MachineProfile::source
    PlanOutcome configured;             // as ds.json says ("auto" keys at their defaults)
    std::optional<PlanOutcome> best;    // the best settings found within the budget (nullopt: nothing fits)
    std::string refusal;                // nothing fits: the smallest budget that would, and the dominant term
    std::vector<std::string> reasons;   // why best was chosen, one line each
};
// Searches the keys in `free_keys` (kPlanAutoKeys names) around `configured`; the others stay as configured.
PlanResult plan_job(const PlanModel & m, const Workload & w, const PlanSettings & configured,
                    const std::set<std::string> & free_keys, const PlanBudget & b, const MachineProfile & p);

std::string plan_report_text(const PlanResult & r);
// {"model", "budget": {...}, "workload", "profile",
//  "configured": OUTCOME, "best": OUTCOME | null, "fits": bool, "refusal": "..." | null, "reasons": [...],
//  "predicted": {"tokens_per_s", "loop_seconds", "bound", "memory": {"device", "pinned", "host", "nvme"}}}
//  (predicted = configured's), OUTCOME = {"settings": {...}, "fits", "why_not", "memory": {"device", "pinned",
//  "host", "nvme", "items": [{"name", "tier", "bytes", "formula"}]}, "speed": {SpeedEstimate's fields}}
nlohmann::json plan_report_json(const PlanResult & r);
nlohmann::json plan_settings_json(const PlanSettings & s);

}  // namespace zt
