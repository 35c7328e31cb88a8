// host_name() (see host_name.h).
#include "runtime/base/host_name.h"

#include <unistd.h>

namespace zt {

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
    return buf;
}

}  // namespace zt
