// JobRun (see job_run.h): error records, the per-step exchange that brings every rank's records to rank 0 (the
// only writer), and the per-step collective that decides whether the ranks keep stepping.
#include "runtime/job/job_run.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/job/job.h"

namespace zt {

namespace {
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
}  // namespace

std::string error_record_text(const RequestError & e) {
    json r;
    r["custom_id"] = e.custom_id ? json(*e.custom_id) : json(nullptr);
    r["line"] = e.line;
    r["error"] = {{"code", e.code}, {"message", e.message}};
    return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

void JobRun::fail(const RequestError & e) {
    pending.push_back(error_record_text(e));
    ++stats.failed;
}

// Sends this rank's new records to rank 0, which appends them to the output (one writer, any filesystem).
// Payload: "<requests finished> <tokens done>\n" then one record per line.
void JobRun::exchange_records() {
    std::string payload = fmt::format("{} {}\n", finished_unsent, tokens_unsent);
    for (const auto & r : pending) payload += r + "\n";
    pending.clear();
    finished_unsent = tokens_unsent = 0;
    const std::vector<std::string> all = comm.gather_strings(payload);
    if (rank != 0) return;
    const auto t0 = Clock::now();
    for (const auto & p : all) {
        const size_t nl = p.find('\n');
        int64_t f = 0, g = 0;
        if (std::sscanf(p.c_str(), "%" SCNd64 " %" SCNd64, &f, &g) == 2) finished_all += f, tokens_all += g;
        size_t at = nl == std::string::npos ? p.size() : nl + 1;
        while (at < p.size()) {
            const size_t end = p.find('\n', at);
            write_record(p.substr(at, end - at));
            at = end + 1;
        }
    }
    stats.write_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (progress) progress->update(finished_all, tokens_all);
}

bool JobRun::keep_stepping(bool have_work) {
    // one all-reduce per step: does any rank still have work, and did any rank get SIGTERM?
    int flags[2] = {have_work ? 1 : 0, job_stop_flag().load() ? 1 : 0};
    comm.all_reduce_max(flags, 2, nullptr);
    if (flags[1]) {
        stats.interrupted = true;
        return false;
    }
    return flags[0] != 0;   // every rank is done: no step is wasted
}

}  // namespace zt
