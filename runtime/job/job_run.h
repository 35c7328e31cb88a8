// JobRun: what a running job's loops share (built by run_job in job.cpp): the model and its forward pass, the
// request queue and the hand-out of its requests to the ranks (request_handout.h), and the per-step exchange
// that sends every rank's records to rank 0, the only writer.
// The loops (generate_loop.cpp, embed_loop.cpp) are written as "all ranks step together": each step starts with
// keep_stepping(), a collective that says whether any rank has work left and whether SIGTERM arrived anywhere,
// and hands this rank the requests for its free slots (run.admitted).
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

    bool balanced = true;                 // ztinfer.request_assignment "balanced": queue is the whole job's
    std::deque<Request> queue;            // valid requests not yet handed out, in run order (request_handout.h):
                                          // balanced, the same on every rank; static, this rank's own
    std::deque<Request> admitted;         // handed to this rank by the last keep_stepping(): the loop puts them in
                                          // its free slots (at most as many as it said it had)
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
    // Collective, once per step, with this rank's running requests and free KV-cache slots: false when no rank
    // has work left (nothing running, nothing queued) or when any rank was asked to stop (SIGTERM/SIGINT:
    // stats.interrupted is set). Otherwise true, with this rank's new requests in `admitted` (balanced: every
    // rank's free slots travel in the same all-reduce and every rank hands out the queue's front the same way).
    bool keep_stepping(int64_t active, int64_t free_slots);
    // Collective, balanced only: every rank's queue must be the same (it is read, validated and tokenized on
    // every rank); a difference (an input file that differs between nodes) is an error on every rank.
    void check_same_queue();
};

// The two loops: run until every rank is done or a stop is requested. Records go through run.pending.
void run_generate_loop(JobRun & run);
void run_embed_loop(JobRun & run);

// Records
std::string error_record_text(const RequestError & e);

}  // namespace zt
