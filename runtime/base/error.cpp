// Error formatting with rank and file:line (see error.h).
#include "runtime/base/error.h"

#include <atomic>
#include <cstring>

namespace zt {

static std::atomic<int> g_rank{0};

int error_rank() { return g_rank.load(); }
void set_error_rank(int rank) { g_rank.store(rank); }

void raise_error(const char * file, int line, const std::string & message) {
    // keep the path from the project root: ".../ztinfer/runtime/x.cpp" -> "runtime/x.cpp"
    const char * short_file = file;
    for (const char * dir : {"/runtime/", "/comm/", "/kernels/", "/launcher/", "/tests/"}) {
        if (const char * p = std::strstr(file, dir)) { short_file = p + 1; break; }
    }
    throw Error(error_rank(), fmt::format("{}:{}", short_file, line), message);
}

}  // namespace zt
