// JobRun (see job_run.h): error records, the per-step exchange that brings every rank's records to rank 0 (the
// only writer), and the per-step collective that decides whether the ranks keep stepping and hands out requests.
#include "runtime/job/job_run.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/base/error.h"
#include "runtime/base/hash.h"
#include "runtime/job/job.h"
#include "runtime/job/request_handout.h"

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

bool JobRun::keep_stepping(int64_t active, int64_t free_slots) {
    // one all-reduce (max) per step: does any rank still have work, did any rank get SIGTERM, and (balanced) how
    // many slots each rank has free (rank r fills entry 2 + r, the others leave 0)
    const bool have_work = active > 0 || !queue.empty();
    std::vector<int> flags(balanced ? 2 + size_t(n_ranks) : 2, 0);
    flags[0] = have_work ? 1 : 0;
    flags[1] = job_stop_flag().load() ? 1 : 0;
    if (balanced) flags[2 + size_t(rank)] = int(std::clamp<int64_t>(free_slots, 0, INT_MAX));
    comm.all_reduce_max(flags.data(), flags.size(), nullptr);
    if (flags[1]) {
        stats.interrupted = true;
        return false;
    }
    if (flags[0] == 0) return false;   // every rank is done: no step is wasted
    if (balanced) {
        const std::vector<int> to = hand_out(queue.size(), std::vector<int64_t>(flags.begin() + 2, flags.end()));
        for (int r : to) {
            if (r == rank) admitted.push_back(std::move(queue.front()));
            queue.pop_front();
        }
    } else {
        for (int64_t k = 0; k < free_slots && !queue.empty(); ++k) {
            admitted.push_back(std::move(queue.front()));
            queue.pop_front();
        }
    }
    return true;
}

void JobRun::check_same_queue() {
    // FNV-1a over what decides the hand-out and the work: custom_id, line, prompt ids, max_tokens
    uint64_t h = kFnv64Offset;
    auto mix = [&h](const void * p, size_t n) { h = fnv1a64(p, n, h); };
    for (const Request & r : queue) {
        mix(r.custom_id.data(), r.custom_id.size());
        mix(&r.line, sizeof r.line);
        mix(r.prompt_ids.data(), r.prompt_ids.size() * sizeof(int32_t));
        mix(&r.max_tokens, sizeof r.max_tokens);
    }
    // max over ranks of each 30-bit piece and of its negation: equal everywhere iff max == mine == -max(-mine)
    int v[6];
    for (int k = 0; k < 3; ++k) {
        v[k] = int((h >> (30 * k)) & 0x3fffffff);
        v[3 + k] = -v[k];
    }
    int all[6];
    std::copy(v, v + 6, all);
    comm.all_reduce_max(all, 6, nullptr);
    bool same = true;
    for (int k = 0; k < 3; ++k) same = same && all[k] == v[k] && -all[3 + k] == v[k];
    ZT_CHECK(same, "rank {}: the ranks read different requests from {} (its copies differ between nodes, or it "
             "changed while the job started): every rank reads the whole input for the balanced hand-out; give "
             "every node the same file", rank, cfg.input);
}

}  // namespace zt
