// JobStats and the metrics file: every rank counts what it did (JobStats); at the end of a job rank 0 gathers
// every rank's stats and writes one metrics JSON beside the output (<output>.metrics.json): requests, prompt and
// generated tokens, wall time, tokens/s, bytes fetched per rank, the weights' bytes per step and bits per weight,
// link efficiency, the time of each stage and the memory each rank allocated (peaks of the backend's
// MemoryAccount, device memory by purpose, the NVMe file, peak RSS: what the planner's memory model predicts).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zt {

struct JobConfig;

struct JobStats {
    int64_t requests = 0;          // lines in the input
    int64_t skipped = 0;           // already in the output (resume)
    int64_t completed = 0;         // results written this run
    int64_t failed = 0;            // error records written this run
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;  // generate: tokens sampled; embed: 0
    int64_t embedded_tokens = 0;   // embed: input tokens embedded (= prompt_tokens of finished embeddings)
    double load_seconds = 0;
    double generate_seconds = 0;   // wall time of the generation (or embedding) loop
    double wall_seconds = 0;       // whole job on this rank, start to end
    bool interrupted = false;      // stopped by SIGTERM/SIGINT; unfinished requests rerun on resume
    int64_t steps = 0;             // forward steps this rank took (all ranks take the same number)
    size_t weight_host_bytes = 0;  // host memory this rank holds for weights (slices, staging, resident, ring)
    size_t rss_growth_bytes = 0;   // resident set growth while loading the weights
    // stage times of this rank, summed over the job (measured in stream order by host tasks)
    double fetch_seconds = 0;      // copy stream: fetching this rank's weight slices (NVMe/pinned -> device)
    double all_gather_seconds = 0; // comm stream: all-gathers of the streamed units
    double compute_seconds = 0;    // compute stream: the layers (incl. waiting for nothing else)
    double kv_seconds = 0;         // copy stream: KV-cache loads and write-backs (kv_cache.offload "cpu")
    double write_seconds = 0;      // rank 0: appending and syncing records
    uint64_t bytes_fetched = 0;    // weight bytes this rank fetched (its slices of every streamed unit, every step)
    uint64_t kv_bytes_moved = 0;   // KV-cache bytes loaded + written back
    // the weights (the same on every rank): what one step streams and how densely it is stored
    uint64_t streamed_bytes_per_step = 0;  // PartitionPlan::streamed_bytes(): every streamed unit's flat buffer
    double weight_bits_per_weight = 0;     // PartitionPlan::bits_per_weight(): 16 for BF16, 4.5 for Q4_K
    // memory this rank allocated over the whole job (the backend's MemoryStats; the CPU backend's "device" memory
    // is host memory too)
    size_t device_peak = 0;        // MemoryStats::device_peak: the most device memory in use at once
    size_t pinned_peak = 0;        // MemoryStats::pinned_peak: weight slices ("cpu"), NVMe staging, offloaded KV...
    size_t host_peak = 0;          // MemoryStats::host_peak: pageable memory from Backend::alloc
    uint64_t nvme_file_bytes = 0;  // this rank's NVMe slice file (padded size); 0 unless offload "nvme"
    bool nvme_file_reused = false; // this rank reused its NVMe slice file from an earlier run (ztinfer.nvme_reuse)
    size_t peak_rss = 0;           // the process's peak resident set (VmHWM) at the end of the job
    // device memory in use by purpose ("KV cache", "weight ring", "activations", "logits", "resident weights",
    // ...; MemoryStats::device_by_purpose) right after the task's loop, before anything is freed
    std::map<std::string, size_t> device_by_purpose;
};

// "<output>.metrics.json" (for "x.npy": "x.npy.metrics.json").
std::string metrics_path_for(const std::string & output);

// One rank's stats as JSON and back (to gather them on rank 0 as strings).
nlohmann::json stats_to_json(const JobStats & s);
JobStats stats_from_json(const nlohmann::json & j);

// The job's metrics from every rank's stats (index = rank):
// {"task", "model", "output", "ranks", "interrupted",
//  "requests": {"total", "completed", "failed", "skipped"},
//  "tokens": {"prompt", "generated", "embedded"},
//  "wall_seconds" (max over ranks), "load_seconds" (max), "loop_seconds" (max of generate_seconds),
//  "tokens_per_second" (generated + embedded tokens of all ranks / loop_seconds),
//  "requests_per_second",
//  "steps",
//  "bytes_fetched_per_rank": [..], "bytes_fetched_per_token" (sum over ranks / generated+embedded tokens),
//  "weights": {"streamed_bytes_per_step" (the plan's streamed bytes: what the world gathers each step),
//              "fetched_bytes_per_step" (bytes fetched by all ranks / steps: the same, measured),
//              "bits_per_weight" (of the streamed tensors)},
//  "link": {"fetch_seconds" (max over ranks), "fetched_gbps" (bytes of the busiest rank / its fetch seconds),
//           "efficiency" (fraction of the loop the link was busy fetching: fetch_seconds / loop_seconds, max rank)},
//  "stage_seconds": {"load", "fetch", "all_gather", "compute", "kv", "write"} (max over ranks),
//  "memory": {"device_peak", "pinned_peak", "host_peak", "nvme_file_bytes", "peak_rss" (bytes, each the max over
//             ranks), "device_by_purpose" (rank 0's map: purpose -> bytes, after the loop)},
//  "per_rank": [stats_to_json(rank 0), ...]}
nlohmann::json job_metrics_json(const JobConfig & cfg, const std::vector<JobStats> & per_rank);

// Writes `metrics` to `path` atomically (temp file in the same folder, fsync, rename).
void write_metrics_file(const std::string & path, const nlohmann::json & metrics);

}  // namespace zt
