// JobRun: what a running job's loops share (built by run_job in job.cpp): the model and its forward pass, this
// rank's requests, and the per-step exchange that sends every rank's records to rank 0, the only writer.
// The loops (generate_loop.cpp, embed_loop.cpp) are written as "all ranks step together": each step starts with
// keep_stepping(), a collective that says whether any rank has work left and whether SIGTERM arrived anywhere.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/job/job_config.h"
#include "runtime/job/job_metrics.h"
#include "runtime/model/model_config.h"
#include "runtime/job/progress.h"
#include "runtime/job/request.h"

namespace zt {

class Backend;
class Communicator;
class Forward;
class Tokenizer;

struct JobRun {
    JobRun(const JobConfig & c, int r, int n, Backend & be, Communicator & cm, const ModelConfig & m,
           const Tokenizer * t, Forward & f, JobStats & st)
        : cfg(c), rank(r), n_ranks(n), backend(be), comm(cm), mc(m), tok(t), forward(f), stats(st) {}

    const JobConfig & cfg;
    int rank = 0, n_ranks = 1;
    Backend & backend;
    Communicator & comm;
    const ModelConfig & mc;
    const Tokenizer * tok = nullptr;      // nullptr: the model folder has no tokenizer.json
    Forward & forward;
    JobStats & stats;
    std::set<int32_t> eos;                // generate: end-of-sequence ids
    int32_t n_slots = 1;                  // KV-cache slots (micro_batches x batch_size, fewer for a short queue);
                                          // slot s belongs to micro-batch s / batch_size

    std::deque<Request> queue;            // this rank's valid requests, bucketed by prompt length
    int64_t total = 0;                    // valid requests to run on all ranks (the progress bar's total)

    // --- records: every rank queues its own, exchange_records() sends them to rank 0 ------------------------
    std::vector<std::string> pending;     // serialised records of this rank not yet sent to rank 0
    int64_t finished_unsent = 0, tokens_unsent = 0;
    std::function<void(const std::string &)> write_record;   // rank 0: writes one record (set by run_job)
    std::function<void()> sync_output;                       // rank 0: makes the output durable
    std::optional<Progress> progress;     // rank 0
    int64_t finished_all = 0, tokens_all = 0;   // rank 0's view of every rank's progress

    void fail(const RequestError & e);    // an error record for a request of this rank
    void exchange_records();              // collective: every rank's new records -> rank 0 -> output
    // Collective, once per step: false when no rank has work left (have_work false everywhere) or when any rank
    // was asked to stop (SIGTERM/SIGINT: stats.interrupted is set and the unfinished count is logged).
    bool keep_stepping(bool have_work);
};

// The two loops: run until every rank is done or a stop is requested. Records go through run.pending.
void run_generate_loop(JobRun & run);
void run_embed_loop(JobRun & run);

// Records
std::string error_record_text(const RequestError & e);

}  // namespace zt
