// Job: runs a generate job end to end on one rank: reads the input JSONL, validates and tokenizes each line,
// generates with continuous batching over `batch_size` KV-cache slots, and appends one record per request
// to the output as soon as it finishes (or an error record; the rest of the job runs).
//
// Output record: {"custom_id", "text", "token_ids", "finish_reason": "stop"|"length",
//                 "usage": {"prompt_tokens", "completion_tokens"}, "logprobs": [..] (when asked)}
//             or {"custom_id", "line", "error": {"code", "message"}}.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

#include "runtime/job_config.h"

namespace zt {

struct JobStats {
    int64_t requests = 0;          // lines in the input
    int64_t skipped = 0;           // already in the output (resume)
    int64_t completed = 0;         // results written this run
    int64_t failed = 0;            // error records written this run
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    double load_seconds = 0;
    double generate_seconds = 0;   // wall time of the generation loop
    bool interrupted = false;      // stopped by SIGTERM/SIGINT; unfinished requests rerun on resume
};

// Set by a signal handler to ask the job to stop after the current step (outputs are flushed and synced).
std::atomic<bool> & job_stop_flag();

JobStats run_generate_job(const JobConfig & cfg);

}  // namespace zt
