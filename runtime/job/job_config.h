// JobConfig: DeepSpeed's ds.json plus a "ztinfer" object that says what job to run. Relative paths resolve
// against the config file's folder; unknown keys are a warning that names them.
//
//   { "zero_optimization": {...}, "ztinfer": { "model": "demo-model" (or "m.gguf"), "tokenizer": "dir" (optional),
//     "task": "generate",
//     "input": "prompts.jsonl", "output": "out.jsonl", "device": "cpu", "batch_size": 8,
//     "max_new_tokens": 64, "temperature": 0, "top_k": 0, "top_p": 1.0, "seed": 0,
//     "profile": "machine.json" (optional), "host_memory": "200GiB" (optional) } }
//
// "auto": the planner's keys (planner.h's kPlanAutoKeys) may be the string "auto" instead of a value:
//   zero_optimization.offload_param.device -> "tier", ztinfer.resident_layers, ztinfer.batch_size,
//   ztinfer.micro_batches, ztinfer.prefetch_depth, ztinfer.kv_cache.offload -> "kv_offload".
// Such a key keeps its default here and its name is in auto_keys, for the planner to choose (offload "auto" does
// not need nvme_path; the planner picks "nvme" only when nvme_path is set). Any other string is an error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zt {

struct SamplingDefaults {
    int64_t max_new_tokens = 128;
    double temperature = 0.0;   // 0 = greedy
    int64_t top_k = 0;          // 0 = off
    double top_p = 1.0;         // 1 = off
    uint64_t seed = 0;          // job seed; a request without "seed" derives its own from this and custom_id
};

// Weight streaming (issue 3): from DeepSpeed's zero_optimization / aio sections and ztinfer's own keys.
struct StreamingConfig {
    std::string offload_device = "none";   // zero_optimization.offload_param.device: "none" | "cpu" | "nvme"
    std::string nvme_path;                 // zero_optimization.offload_param.nvme_path (absolute)
    int64_t buffer_count = 5;              // zero_optimization.offload_param.buffer_count (NVMe staging ring)
    int64_t persistence_threshold = 100000;   // zero_optimization.stage3_param_persistence_threshold (elements)
    int64_t aio_block_size = 1048576;      // aio.block_size (bytes per NVMe read)
    int64_t aio_queue_depth = 8;           // aio.queue_depth (NVMe reads in flight)
    int64_t resident_layers = 0;           // ztinfer.resident_layers: the first layers stay whole on every rank
    int64_t prefetch_depth = 2;            // ztinfer.prefetch_depth
    bool overlap = true;                   // ztinfer.overlap
    bool partition_embeddings = false;     // ztinfer.partition_embeddings: stream embed_tokens and lm_head too
    bool nvme_reuse = true;                // ztinfer.nvme_reuse: keep each rank's NVMe slice file under a name and
                                           // reuse it when a rerun finds it matching (false: nameless, private)
    std::string trace;                     // ztinfer.trace / --trace: Chrome-trace JSON file (absolute)
    double collective_timeout_s = 300;     // ztinfer.collective_timeout_s: watchdog around every collective
    // test and benchmark options (ztinfer.test_link_gbps, ztinfer.test_race_delay_us)
    double test_link_gbps = 0;             // simulated link: every slice copy also sleeps bytes / X GB/s
    int64_t test_race_delay_us = 0;        // race hunting: random delays before copy/comm stream tasks
};

// GPU options (CUDA backend): ztinfer.max_gpu_memory, ztinfer.compute_dtype, ztinfer.communicator.
struct GpuConfig {
    size_t max_memory_bytes = 0;           // "24GiB", "24GB", or bytes; 0 = no cap beyond the card
    double max_memory_fraction = 0;        // a number in (0, 1]: that share of the card (like torch's
                                           // set_per_process_memory_fraction)
    std::string compute_dtype = "auto";    // matmul inputs: "auto" (the weights' dtype; BF16 for quantized weights), "fp32", "bf16", "fp16"
    std::string communicator = "auto";     // ranks > 1 on GPUs: "auto" (NCCL when each rank has its own GPU,
                                           // else MPI staging through host memory), "nccl", "mpi"; and on any
                                           // ranks "tcp": TCP sockets (MASTER_ADDR/MASTER_PORT) instead of MPI, also
                                           // chosen by "auto" when RANK/WORLD_SIZE launched the ranks and
                                           // MASTER_ADDR is set (with GPUs TCP carries NCCL's id)
};

// Throughput batch jobs (issue 5): the block schedule, prefill chunks, KV-cache placement.
struct BatchConfig {
    int64_t micro_batches = 1;             // ztinfer.micro_batches: each fetched layer runs over micro_batches x
                                           // batch_size sequences per rank before the next layer (FlexGen zig-zag)
    int64_t prefill_chunk = 512;           // ztinfer.prefill_chunk: most prompt tokens one micro-batch takes per step
    std::string kv_offload = "none";       // ztinfer.kv_cache.offload: "none" (device) | "cpu" (pinned host memory,
                                           // layer j+1 prefetched while j computes, j-1 written back)
    std::string assignment = "balanced";   // ztinfer.request_assignment: "balanced" (ranks are handed requests as
                                           // their slots free; they finish together) | "static" (request k to
                                           // rank k % N up front); request_handout.h
};

// task "embed": how hidden states become one vector per input (ztinfer.embedding).
struct EmbeddingConfig {
    std::string pooling = "last";          // "last" (gte-Qwen2, e5-mistral) | "mean" (over the input's tokens)
    bool normalize = true;                 // L2-normalise each embedding
    std::string instruction;               // prepended to every input (a line's own "instruction" wins)
};

// "24GiB" -> 25769803776, "1.5 GB" -> 1500000000, "512MiB", "4096" (bytes). Throws zt::Error naming `what`.
size_t parse_byte_size(const std::string & text, const std::string & what);

struct JobConfig {
    std::string config_path;    // the ds.json this came from (absolute)
    std::string model;          // HF model directory or GGUF file (absolute)
    std::string tokenizer;      // a tokenizer folder (tokenizer.json) that replaces the model's; empty: the model's
    std::string task = "generate";   // "generate" | "embed"
    std::string input;          // JSONL (absolute)
    std::string output;         // JSONL (absolute)
    std::string device = "auto";
    int64_t batch_size = 8;
    int64_t threads = 0;        // CPU backend threads (0 = all cores)
    bool resume = true;         // skip custom_ids already in output (a rerun after a crash or preemption)
    SamplingDefaults sampling;
    StreamingConfig streaming;
    GpuConfig gpu;
    BatchConfig batch;
    EmbeddingConfig embedding;
    // the planner (planner.h)
    std::set<std::string> auto_keys;   // keys ds.json set to "auto" (kPlanAutoKeys names: "tier", "resident_layers",
                                       // "batch_size", "micro_batches", "prefetch_depth", "kv_offload")
    std::string profile;        // ztinfer.profile: a MachineProfile written by `ztinfer bench --profile` (absolute);
                                // empty: default_profile()
    size_t host_memory_bytes = 0;   // ztinfer.host_memory ("200GiB", bytes): the planner's host memory budget per
                                    // node; 0 = MemAvailable
    nlohmann::json deepspeed;   // the whole ds.json, for the parts later issues read
    std::vector<std::string> warnings;   // unknown keys, and DeepSpeed keys accepted but not used, named

    // Reads and validates ds.json; throws zt::Error naming the file and key for anything wrong.
    static JobConfig load(const std::string & path);
    static JobConfig from_json(const nlohmann::json & j, const std::string & path);

    // The paths as the job will use them (run_job calls this after every override, ds.json and --input/--output
    // alike): the input is a regular file (not a folder), and no file the job writes (the output, an .npy
    // output's index, <output>.metrics.json, <output>.lock, the trace) is the input: compared by identity
    // (st_dev, st_ino), so a symbolic or hard link to the input counts, and by canonical path for files that do
    // not exist yet. Throws zt::Error naming both paths.
    void check_paths() const;
};

}  // namespace zt
