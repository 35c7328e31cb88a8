// Tracer (see trace.h): spans kept in memory, serialised once at the end of the job.
#include "runtime/base/trace.h"

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"

namespace zt {

namespace {
int track_tid(const char * track) {
    const std::string t(track);
    if (t == "compute") return 1;
    if (t == "copy") return 2;
    if (t == "comm") return 3;
    return 4;
}
}  // namespace

Tracer::Tracer(int rank, bool enabled) : rank_(rank), enabled_(enabled), origin_(std::chrono::steady_clock::now()) {}

double Tracer::now_us() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - origin_).count();
}

void Tracer::add(std::string name, const char * cat, const char * track, double t0_us, double t1_us, std::string args) {
    std::lock_guard<std::mutex> lock(mu_);
    totals_[cat] += std::max(0.0, t1_us - t0_us);
    if (!enabled_) return;
    spans_.push_back({std::move(name), cat, track, t0_us, t1_us, std::move(args)});
}

std::string Tracer::events_json() const {
    std::lock_guard<std::mutex> lock(mu_);
    using json = nlohmann::json;
    std::string out;
    auto append = [&](const json & e) { if (!out.empty()) out += ",\n"; out += e.dump(); };
    append({{"name", "process_name"}, {"ph", "M"}, {"pid", rank_}, {"args", {{"name", fmt::format("rank {}", rank_)}}}});
    for (const char * t : {"compute", "copy", "comm"})
        append({{"name", "thread_name"}, {"ph", "M"}, {"pid", rank_}, {"tid", track_tid(t)},
                {"args", {{"name", std::string(t) + " stream"}}}});
    for (const Span & s : spans_) {
        json e = {{"name", s.name}, {"cat", s.cat}, {"ph", "X"}, {"pid", rank_}, {"tid", track_tid(s.track)},
                  {"ts", s.t0}, {"dur", std::max(0.0, s.t1 - s.t0)}};
        if (!s.args.empty()) e["args"] = json::parse(s.args, nullptr, false);
        append(e);
    }
    return out;
}

void Tracer::clear() {
    std::lock_guard<std::mutex> lock(mu_);
    spans_.clear();
    totals_.clear();
}

double Tracer::total_us(const char * cat) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = totals_.find(cat);
    return it == totals_.end() ? 0.0 : it->second;
}

void Tracer::write_file(const std::string & path, const std::vector<std::string> & per_rank_events) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        ZT_CHECK(f.good(), "cannot write the trace {}: check that its folder exists and is writable", path);
        f << "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
        bool first = true;
        for (const auto & body : per_rank_events) {
            if (body.empty()) continue;
            if (!first) f << ",\n";
            f << body;
            first = false;
        }
        f << "\n]}\n";
        ZT_CHECK(f.good(), "writing the trace {} failed (disk full?)", path);
    }
    ZT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename {} to {}", tmp, path);
}

}  // namespace zt
