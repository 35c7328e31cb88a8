// Wing runtime/job/: what the user runs: the ztinfer section of ds.json (job_config), the JSONL lines (request),
// the generate and embed loops (generate_loop, embed_loop, job_run), sampling (sampler), outputs that survive a
// crash (result_writer, embedding_output), the metrics file (job_metrics) and the progress bar (progress).
//
// Job: runs a batch job end to end: reads the input JSONL, validates and tokenizes each line, runs the task
// ("generate": continuous batching over micro_batches x batch_size KV-cache slots per rank, prompts prefilled in
// chunks; "embed": one pooled hidden state per input) and appends one record per request to the output as soon as
// it finishes (or an error record; the rest of the job runs). With N ranks (mpirun), valid request k runs on rank
// k % N, every rank streams the weights and steps through the layers with the others (a rank with nothing left
// steps with an empty batch until the per-step all-reduce says every rank is done), and rank 0 writes every rank's
// records to the one output, then <output>.metrics.json. The loops are in generate_loop.cpp and embed_loop.cpp.
//
// Generate record: {"custom_id", "text", "token_ids", "finish_reason": "stop"|"length",
//                   "usage": {"prompt_tokens", "completion_tokens"}, "logprobs": [..] (when asked)}
// Embed record:    {"custom_id", "embedding": [..], "usage": {"prompt_tokens", "total_tokens"}} (or .npy + index,
//                   see embedding_output.h)
// Error record:    {"custom_id", "line", "error": {"code", "message"}}.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "comm/world.h"
#include "runtime/job/job_config.h"
#include "runtime/job/job_metrics.h"
#include "runtime/model/tokenizer.h"

namespace zt {


// Set by a signal handler to ask the job to stop after the current step (outputs are flushed and synced).
std::atomic<bool> & job_stop_flag();

class Backend;
class Communicator;
struct GgufFile;

// The job's tokenizer: the "ztinfer.tokenizer" folder when given, else the GGUF file's tokenizer.ggml.* (gguf:
// its header) or the model folder's tokenizer.json; none (a warning) when a folder has none.
std::optional<Tokenizer> load_job_tokenizer(const JobConfig & cfg, const GgufFile * gguf);

// The backend a job runs on: CUDA for "device": "cuda" (or "auto" with a usable GPU; GPU = local rank modulo the
// visible devices), else the CPU backend with cfg.threads threads. Throws zt::Error saying why CUDA is unusable.
std::unique_ptr<Backend> make_job_backend(const JobConfig & cfg, const WorldInfo & world, int n_threads);
// The job's communicator: local for one rank; MPI for CPU ranks; on GPUs NCCL when every rank has its own GPU,
// else MPI staging device buffers through host memory (ztinfer.communicator forces one).
std::unique_ptr<Communicator> make_job_communicator(const JobConfig & cfg, const WorldInfo & world, Backend & backend);

// The CPU backend's threads per rank: "ztinfer.threads", capped at this machine's cores (rank 0 warns), 0 = all
// cores. (100,000 threads would exhaust the process limit and leave a job that cannot even be stopped.)
int job_threads(const JobConfig & cfg, int rank);

// Runs the job (cfg.task: "generate" or "embed") as rank world.rank of world.size (MPI when size > 1). Every rank
// returns its own stats; rank 0 writes every record and, at the end, the metrics JSON beside the output.
JobStats run_job(const JobConfig & cfg, const WorldInfo & world = WorldInfo{});

}  // namespace zt
