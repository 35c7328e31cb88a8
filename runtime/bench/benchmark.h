// Wing runtime/bench/: `ztinfer bench`, the rates the pipeline is built from, one table per file.
//
// Benchmark (`ztinfer bench`): the rates the weight-streaming pipeline is built from, measured on the backend and
// communicator a job would use, printed as nccl-tests-style tables (size, time, GB/s, #wrong) by rank 0:
//   h2d        pinned host -> device copies on the copy stream, over a size sweep
//   nvme       NVMe reads (NvmeFile: O_DIRECT + io_uring, aio block_size chunks, queue_depth in flight)
//   allgather  all-gather algbw / busbw on the comm stream, over a size sweep
//   layer      compute time of one decoder layer of a model shape (decode and prefill, per batch size)
//   gemm       the layer's prefill GEMMs (T = --prompt) through ztinfer's matmul vs a plain vendor GEMM (cuBLASLt
//              bf16 on CUDA, OpenBLAS sgemm on CPU), as a ratio of TFLOP/s
//   decode     a streamed decode step (Schedule + Forward, offload "cpu", overlap on, prefetch depth 2) with random
//              bf16 weights, and how close it comes to the H2D link limit
//   embed-memory  (only when asked) one sequence of each --lengths embedded in one non-causal step (last-token
//              hidden state, gte-Qwen2 style), weights streamed from pinned host: peak device memory per length
//              under --max-gpu-memory
//   --profile FILE  instead of the tables: the MachineProfile the planner runs on (benchmark_profile.cpp), written
//              to FILE; --max-bytes caps its copies and buffers, --hidden sets its matmul size, --iters (at most 5)
//              its copies
// #wrong counts elements that failed verification of the moved data (or non-finite logits): 0 expected.
// Under mpirun every rank runs every table at once; times are the slowest rank's, #wrong is summed over ranks.
#pragma once
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/world.h"

namespace zt {

struct BenchmarkOptions {
    std::string device = "auto";          // cpu | cuda | auto
    int threads = 0;                      // CPU backend threads (0 = all cores)
    std::string shape = "llama2-7b";      // llama2-7b | llama2-13b | llama2-70b | qwen2-7b
    int layers = 0;                       // decoder layers of the decode table (0 = the shape's)
    int64_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, vocab = 0;   // > 0 overrides the shape's
    std::vector<int> batches = {1, 8, 32, 64};
    int context = 512;                    // decode: past length of every sequence
    int prompt = 512;                     // prefill: prompt tokens per sequence
    std::string min_bytes = "1MiB";       // h2d / allgather sweep: min_bytes, 2x, 4x, .. max_bytes
    std::string max_bytes = "1GiB";
    int iters = 20;                       // timed iterations per size (after `warmup`)
    int warmup = 2;
    int steps = 3;                        // timed steps per row of the layer and decode tables (after one warm-up)
    std::string nvme_path;                // folder on the NVMe drive; empty: the nvme table is skipped
    std::string nvme_bytes = "1GiB";      // size of the test file
    std::string aio_block_size = "1MiB";  // bytes per read request
    int aio_queue_depth = 8;              // read requests in flight
    std::vector<std::string> only = {"h2d", "nvme", "allgather", "layer", "gemm", "decode"};
    std::string json_path;                // also write every figure as JSON (rank 0)
    std::vector<int> lengths = {8192, 16384, 24576, 32768};   // embed-memory: tokens of the one sequence
    std::string max_gpu_memory;           // embed-memory (and all tables): the CUDA backend's cap, e.g. "24GiB"
    std::string profile_path;             // --profile FILE: measure the machine profile (runtime/job/
                                          // machine_profile.h) instead of the tables and write it to FILE (rank 0)
};

// Runs the tables opt.only names as rank world.rank of world.size; rank 0 prints them to `out` and writes
// opt.json_path. Returns the exit status: 0; 1 when some data failed verification (#wrong > 0); 2 when
// --device cuda is unusable here (the reason is printed). Throws zt::Error on bad options.
int run_benchmark(const BenchmarkOptions & opt, const WorldInfo & world, std::FILE * out = stdout);

}  // namespace zt
