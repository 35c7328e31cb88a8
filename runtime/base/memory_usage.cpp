// memory_usage(): parses VmRSS and VmHWM (kB) from /proc/self/status; system_memory_available(): MemAvailable
// from /proc/meminfo.
#include "runtime/base/memory_usage.h"

#include <fstream>
#include <string>

namespace zt {

MemoryUsage memory_usage() {
    MemoryUsage m;
    std::ifstream f("/proc/self/status");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (f >> key) {
        if (key == "VmRSS:" && f >> kb >> unit) m.rss_bytes = kb * 1024;
        else if (key == "VmHWM:" && f >> kb >> unit) m.peak_bytes = kb * 1024;
        else f.ignore(1 << 20, '\n');
    }
    return m;
}

size_t system_memory_available() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    while (f >> key >> kb) {
        if (key == "MemAvailable:") return kb * 1024;
        f.ignore(256, '\n');
    }
    return 0;
}

}  // namespace zt
