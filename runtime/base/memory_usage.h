// MemoryUsage: this process's resident set (VmRSS) and its peak (VmHWM) from /proc/self/status, for the
// weight-memory log line and the test that checks a rank holds about 1/N of the model; and the machine's
// available memory (the planner's default host budget).
#pragma once
#include <cstddef>

namespace zt {

struct MemoryUsage {
    size_t rss_bytes = 0;    // VmRSS
    size_t peak_bytes = 0;   // VmHWM
};

MemoryUsage memory_usage();   // zeros where /proc is not there
size_t system_memory_available();   // MemAvailable of /proc/meminfo (bytes); 0 when unknown

}  // namespace zt
