// host_name(): this machine's name (gethostname), for messages, locks and telling which ranks share a node.
#pragma once
#include <string>

namespace zt {

std::string host_name();   // "unknown-host" when the system cannot say

}  // namespace zt
