// MachineProfile: the measured rates the planner's speed model is built from (one machine, one backend), written
// by `ztinfer bench --profile FILE.json` (runtime/bench/benchmark_profile.cpp) and read by `ztinfer plan --profile`
// and by jobs whose ds.json says "auto". Without a file the planner uses default_profile(), whose figures are
// deliberately conservative and say so in `source`.
//
// Units: GB/s = 1e9 bytes/s; seconds per weight = time of one matmul / (N x K) at a given T (tokens).
// JSON (save_profile / load_profile; unknown keys are ignored, a missing key takes the default's value):
//   {"version": 1, "source": "...", "device": "cpu", "device_name": "...", "threads": 2, "cores": 2,
//    "h2d_gbps": 11.2, "memcpy_gbps": 9.5, "nvme_gbps": 2.9, "nvme_block_size": 1048576, "nvme_queue_depth": 8,
//    "allgather_busbw_gbps": {"2": 6.1, "4": 5.0},
//    "memory_gbps": 14.0,
//    "matmul": {"bf16": [[1, 1.1e-9], [8, 1.3e-9], ...], "q4_k": [...]},      // [T, seconds per weight]
//    "reuse_factor": {"4194304": [[1, 0.5], [16, 0.8], ...], ...},   // ring bytes -> [T, re-read / cold time]
//    "copy_latency_s": 5e-6, "paced_copy_latency_s": 6e-5,
//    "attention": {"decode_gflops": 3.2, "prefill_gflops": 20.0},
//    "overhead": {"step_s": 2e-4, "unit_s": 2e-5}}
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/model/dtype.h"

namespace zt {

struct MachineProfile {
    int version = 1;
    std::string source;          // "measured by ztinfer bench --profile on HOST, DATE" or "defaults: ..." (named)
    std::string device = "cpu";  // "cpu" | "cuda": the backend the figures are for
    std::string device_name;     // "NVIDIA H100 80GB HBM3", "Intel Xeon ... (2 cores)"
    int threads = 0;             // CPU backend threads the compute figures were measured with (0: n/a)
    int cores = 0;               // hardware threads of the machine

    double h2d_gbps = 0;         // pinned host -> device, large copies on the copy stream
    double memcpy_gbps = 0;      // host memcpy (CPU backend: what a "copy" costs beside the simulated link)
    double nvme_gbps = 0;        // NVMe reads (O_DIRECT, io_uring) at nvme_block_size / nvme_queue_depth; 0: not measured
    size_t nvme_block_size = 1 << 20;
    int nvme_queue_depth = 8;
    std::map<int, double> allgather_busbw_gbps;   // by world size (nccl-tests busbw = algbw (n-1)/n)
    double memory_gbps = 0;      // device memory read bandwidth as the elementwise ops see it

    // seconds per weight of one matmul (T,K) x (N,K)^T, by weight dtype name ("bf16", "f32", "q4_k", ...), at
    // increasing T; matmul_seconds() interpolates linearly in T between points and extrapolates the last slope.
    std::map<std::string, std::vector<std::pair<int64_t, double>>> matmul;
    // A weight read again after `distance` other bytes were read (a ring of that many bytes of weights): its
    // matmul time over the cold one, by T (bf16, measured): what the block schedule's 2nd..Mth micro-batches of a
    // unit see (distance = the unit's bytes). Empty: not measured (factor 1).
    std::map<size_t, std::vector<std::pair<int64_t, double>>> reuse_factor;
    double copy_latency_s = 0;            // fixed cost of one small copy on the copy stream
    double paced_copy_latency_s = 0;      // CPU backend with ztinfer.test_link_gbps: the same for a paced copy
                                          // (the pacing's sleep overshoots by the timer slack)
    double attention_decode_gflops = 0;   // attention, one new token per sequence against a long past
    double attention_prefill_gflops = 0;  // attention over a whole prompt chunk (causal)
    double step_overhead_s = 0;           // fixed cost of a forward step (host plan, collectives, launches)
    double unit_overhead_s = 0;           // fixed cost per unit and micro-batch (op launches, bookkeeping)

    // Time of one matmul out (T,N) = x (T,K) w (N,K)^T with weights of `dtype`: the table of dtype (falling back
    // to bf16's, scaled by bits per weight, when the dtype was not measured).
    // reuse_distance > 0: the weight is read again after that many bytes of other weights (reuse_factor).
    double matmul_seconds(DType dtype, int64_t T, int64_t N, int64_t K, size_t reuse_distance = 0) const;
    // reuse_factor at a distance (interpolated in log distance; the nearest ring beyond the measured ones) and T.
    double reuse_factor_at(size_t distance, int64_t T) const;
    // All-gather busbw for `world` ranks: the measured figure for that world, else the nearest world's.
    double allgather_gbps(int world) const;
};

// The key of `t`'s table in MachineProfile::matmul: dtype_name in lower case ("bf16", "q4_k").
std::string profile_dtype_key(DType t);

// Conservative figures for `device` ("cpu" or "cuda") when nothing was measured; `source` lists them.
MachineProfile default_profile(const std::string & device);

nlohmann::json profile_to_json(const MachineProfile & p);
// Throws zt::Error naming `what` (the file) and the key when a value has the wrong type or is not positive.
MachineProfile profile_from_json(const nlohmann::json & j, const std::string & what);
void save_profile(const std::string & path, const MachineProfile & p);   // atomically (tmp + rename)
MachineProfile load_profile(const std::string & path);                   // zt::Error naming the file when unreadable

}  // namespace zt
