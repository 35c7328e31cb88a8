// Job metrics (see job_metrics.h): JobStats to JSON and back, the job's metrics from every rank's stats, and the
// atomic write of <output>.metrics.json.
#include "runtime/job/job_metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <type_traits>

#include "runtime/base/error.h"
#include "runtime/job/job_config.h"

namespace zt {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Every JobStats field once: the JSON key and the member.
template <typename S, typename F>   // S: JobStats or const JobStats
void for_each_field(S & s, F && f) {
    f("requests", s.requests);
    f("skipped", s.skipped);
    f("completed", s.completed);
    f("failed", s.failed);
    f("prompt_tokens", s.prompt_tokens);
    f("generated_tokens", s.generated_tokens);
    f("embedded_tokens", s.embedded_tokens);
    f("load_seconds", s.load_seconds);
    f("generate_seconds", s.generate_seconds);
    f("wall_seconds", s.wall_seconds);
    f("interrupted", s.interrupted);
    f("steps", s.steps);
    f("weight_host_bytes", s.weight_host_bytes);
    f("rss_growth_bytes", s.rss_growth_bytes);
    f("fetch_seconds", s.fetch_seconds);
    f("all_gather_seconds", s.all_gather_seconds);
    f("compute_seconds", s.compute_seconds);
    f("kv_seconds", s.kv_seconds);
    f("write_seconds", s.write_seconds);
    f("bytes_fetched", s.bytes_fetched);
    f("kv_bytes_moved", s.kv_bytes_moved);
    f("streamed_bytes_per_step", s.streamed_bytes_per_step);
    f("weight_bits_per_weight", s.weight_bits_per_weight);
    f("device_peak", s.device_peak);
    f("pinned_peak", s.pinned_peak);
    f("host_peak", s.host_peak);
    f("nvme_file_bytes", s.nvme_file_bytes);
    f("nvme_file_reused", s.nvme_file_reused);
    f("peak_rss", s.peak_rss);
}   // and "device_by_purpose" (an object), written and read beside them

double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

void write_all(int fd, const std::string & s, const std::string & path) {
    size_t off = 0;
    while (off < s.size()) {
        const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR) continue;
        ZT_CHECK(n > 0, "writing {} failed: {} (is the disk full?)", path, std::strerror(errno));
        off += size_t(n);
    }
}

}  // namespace

std::string metrics_path_for(const std::string & output) { return output + ".metrics.json"; }

json stats_to_json(const JobStats & s) {
    json j = json::object();
    for_each_field(s, [&](const char * key, const auto & v) { j[key] = v; });
    j["device_by_purpose"] = s.device_by_purpose;   // {"KV cache": bytes, ...}
    return j;
}

JobStats stats_from_json(const json & j) {
    ZT_CHECK(j.is_object(), "job stats must be a JSON object, got {}", j.dump(-1, ' ', false, json::error_handler_t::replace));
    JobStats s;
    for_each_field(s, [&](const char * key, auto & v) {
        const auto it = j.find(key);
        if (it == j.end()) return;   // a field this rank did not send keeps its default
        using T = std::decay_t<decltype(v)>;
        const bool ok = std::is_same_v<T, bool> ? it->is_boolean()
                        : std::is_floating_point_v<T> ? it->is_number()
                        : std::is_signed_v<T> ? it->is_number_integer()
                        : it->is_number_unsigned();
        ZT_CHECK(ok, "job stats: \"{}\" is {}, not a {}", key, it->dump(),
                 std::is_same_v<T, bool> ? "boolean" : std::is_floating_point_v<T> ? "number"
                 : std::is_signed_v<T> ? "integer" : "non-negative integer");
        v = it->template get<T>();
    });
    if (const auto it = j.find("device_by_purpose"); it != j.end()) {
        ZT_CHECK(it->is_object(), "job stats: \"device_by_purpose\" is {}, not an object of purpose -> bytes",
                 it->dump());
        for (const auto & [purpose, bytes] : it->items()) {
            ZT_CHECK(bytes.is_number_unsigned(), "job stats: \"device_by_purpose\": \"{}\" is {}, not a "
                     "non-negative integer (bytes)", purpose, bytes.dump());
            s.device_by_purpose[purpose] = bytes.get<size_t>();
        }
    }
    return s;
}

json job_metrics_json(const JobConfig & cfg, const std::vector<JobStats> & per_rank) {
    // Every rank reads the whole input: requests and skipped are the same on each (max); the results, errors and
    // tokens are each rank's own (sum); times are the slowest rank's (max).
    JobStats sum, max;
    bool interrupted = false;
    size_t busiest = 0;   // the rank whose link was busy longest
    double best_efficiency = 0;
    json bytes_per_rank = json::array(), ranks = json::array();
    for (size_t r = 0; r < per_rank.size(); ++r) {
        const JobStats & s = per_rank[r];
        max.requests = std::max(max.requests, s.requests);
        max.skipped = std::max(max.skipped, s.skipped);
        sum.completed += s.completed;
        sum.failed += s.failed;
        sum.prompt_tokens += s.prompt_tokens;
        sum.generated_tokens += s.generated_tokens;
        sum.embedded_tokens += s.embedded_tokens;
        sum.bytes_fetched += s.bytes_fetched;
        interrupted = interrupted || s.interrupted;
        max.wall_seconds = std::max(max.wall_seconds, s.wall_seconds);
        max.load_seconds = std::max(max.load_seconds, s.load_seconds);
        max.generate_seconds = std::max(max.generate_seconds, s.generate_seconds);
        max.steps = std::max(max.steps, s.steps);
        max.streamed_bytes_per_step = std::max(max.streamed_bytes_per_step, s.streamed_bytes_per_step);
        max.weight_bits_per_weight = std::max(max.weight_bits_per_weight, s.weight_bits_per_weight);
        max.fetch_seconds = std::max(max.fetch_seconds, s.fetch_seconds);
        max.all_gather_seconds = std::max(max.all_gather_seconds, s.all_gather_seconds);
        max.compute_seconds = std::max(max.compute_seconds, s.compute_seconds);
        max.kv_seconds = std::max(max.kv_seconds, s.kv_seconds);
        max.write_seconds = std::max(max.write_seconds, s.write_seconds);
        max.device_peak = std::max(max.device_peak, s.device_peak);
        max.pinned_peak = std::max(max.pinned_peak, s.pinned_peak);
        max.host_peak = std::max(max.host_peak, s.host_peak);
        max.nvme_file_bytes = std::max(max.nvme_file_bytes, s.nvme_file_bytes);
        max.peak_rss = std::max(max.peak_rss, s.peak_rss);
        const JobStats & b = per_rank[busiest];
        if (s.fetch_seconds > b.fetch_seconds || (s.fetch_seconds == b.fetch_seconds && s.bytes_fetched > b.bytes_fetched))
            busiest = r;
        best_efficiency = std::max(best_efficiency, ratio(s.fetch_seconds, s.generate_seconds));
        bytes_per_rank.push_back(s.bytes_fetched);
        ranks.push_back(stats_to_json(s));
    }
    const double loop = max.generate_seconds;
    const int64_t tokens = sum.generated_tokens + sum.embedded_tokens;
    const double busiest_bytes = per_rank.empty() ? 0.0 : double(per_rank[busiest].bytes_fetched);
    const double busiest_fetch = per_rank.empty() ? 0.0 : per_rank[busiest].fetch_seconds;

    json m = json::object();
    m["task"] = cfg.task;
    m["model"] = cfg.model;
    m["output"] = cfg.output;
    m["ranks"] = per_rank.size();
    m["interrupted"] = interrupted;
    m["requests"] = {{"total", max.requests}, {"completed", sum.completed}, {"failed", sum.failed},
                     {"skipped", max.skipped}};
    m["tokens"] = {{"prompt", sum.prompt_tokens}, {"generated", sum.generated_tokens},
                   {"embedded", sum.embedded_tokens}};
    m["wall_seconds"] = max.wall_seconds;
    m["load_seconds"] = max.load_seconds;
    m["loop_seconds"] = loop;
    m["tokens_per_second"] = ratio(double(tokens), loop);
    m["requests_per_second"] = ratio(double(sum.completed), loop);
    m["steps"] = max.steps;
    m["bytes_fetched_per_rank"] = bytes_per_rank;
    m["bytes_fetched_per_token"] = ratio(double(sum.bytes_fetched), double(tokens));
    m["weights"] = {{"streamed_bytes_per_step", max.streamed_bytes_per_step},
                    {"fetched_bytes_per_step", ratio(double(sum.bytes_fetched), double(max.steps))},
                    {"bits_per_weight", max.weight_bits_per_weight}};
    m["link"] = {{"fetch_seconds", max.fetch_seconds},
                 {"fetched_gbps", ratio(busiest_bytes / 1e9, busiest_fetch)},
                 {"efficiency", best_efficiency}};
    m["stage_seconds"] = {{"load", max.load_seconds}, {"fetch", max.fetch_seconds},
                          {"all_gather", max.all_gather_seconds}, {"compute", max.compute_seconds},
                          {"kv", max.kv_seconds}, {"write", max.write_seconds}};
    m["memory"] = {{"device_peak", max.device_peak}, {"pinned_peak", max.pinned_peak}, {"host_peak", max.host_peak},
                   {"nvme_file_bytes", max.nvme_file_bytes}, {"peak_rss", max.peak_rss},
                   {"device_by_purpose", per_rank.empty() ? json::object() : json(per_rank[0].device_by_purpose)}};
    m["per_rank"] = ranks;
    return m;
}

void write_metrics_file(const std::string & path, const json & metrics) {
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        fs::create_directories(parent, ec);
        ZT_CHECK(!ec, "cannot create the folder {} for the metrics file: {}", parent.string(), ec.message());
    }
    const std::string text = metrics.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
    std::string tmp = path + ".tmp.XXXXXX";
    const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    ZT_CHECK(fd >= 0, "cannot create a file beside {} for the metrics: {}", path, std::strerror(errno));
    try {
        ::fchmod(fd, 0644);
        write_all(fd, text, tmp);
        ZT_CHECK(::fsync(fd) == 0, "syncing {} failed: {} (is the disk full?)", tmp, std::strerror(errno));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        ZT_FAIL("writing {} failed: {} (is the disk full?)", tmp, std::strerror(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        ZT_FAIL("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
    }
    const int dfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {   // make the rename durable (best effort)
        ::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace zt
