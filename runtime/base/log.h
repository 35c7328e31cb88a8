// Logging through spdlog: one logger per process whose pattern carries the rank ("[rank 0] [info] ...").
#pragma once
#include <spdlog/spdlog.h>

namespace zt {
// Sets up the default spdlog logger (stderr, rank in the pattern); level: "trace".."off" or ZT_LOG_LEVEL env.
void log_init(int rank, const std::string & level = "");
}  // namespace zt
