// Tracer: a Chrome-trace ("Trace Event Format") timeline of the weight-streaming pipeline, which Perfetto and
// chrome://tracing open: one complete event ("ph":"X") per fetch, all-gather and compute of each unit, with
// pid = rank and tid = stream (copy, comm, compute). Thread-safe. The spans are kept only when enabled (--trace);
// the total time per category is always summed (the job's metrics report the time of each stage).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace zt {

class Tracer {
public:
    explicit Tracer(int rank = 0, bool enabled = false);
    bool enabled() const { return enabled_; }
    // Microseconds since the tracer was made (steady clock).
    double now_us() const;
    // One span [t0_us, t1_us] named `name` (e.g. "fetch layer 3"), category `cat` ("fetch", "all_gather",
    // "compute"), on track `track` ("copy", "comm", "compute"). args: extra JSON object text, may be empty.
    void add(std::string name, const char * cat, const char * track, double t0_us, double t1_us, std::string args = {});
    // This rank's events as a JSON array body (comma-separated objects, no brackets), incl. track names.
    std::string events_json() const;
    // Writes {"traceEvents": [...]} from the per-rank bodies (gathered to rank 0).
    static void write_file(const std::string & path, const std::vector<std::string> & per_rank_events);
    void clear();   // drops the spans and totals recorded so far (e.g. a warm-up step)
    // Total microseconds per category (for benchmarks, logs and metrics), also when not enabled.
    double total_us(const char * cat) const;

private:
    struct Span { std::string name; const char * cat; const char * track; double t0, t1; std::string args; };
    int rank_;
    bool enabled_;
    std::chrono::steady_clock::time_point origin_;
    mutable std::mutex mu_;
    std::vector<Span> spans_;
    std::map<std::string, double> totals_;   // category -> microseconds
};

}  // namespace zt
