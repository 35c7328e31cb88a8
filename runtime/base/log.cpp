// spdlog set-up: stderr sink, rank in every line, level from argument or ZT_LOG_LEVEL.
#include "runtime/base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace zt {

void log_init(int rank, const std::string & level) {
    spdlog::drop("ztinfer");
    auto logger = spdlog::stderr_color_mt("ztinfer");
    logger->set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}] [%^%l%$] %v", rank));
    std::string lvl = level;
    if (lvl.empty()) if (const char * env = std::getenv("ZT_LOG_LEVEL")) lvl = env;
    logger->set_level(lvl.empty() ? spdlog::level::info : spdlog::level::from_str(lvl));
    spdlog::set_default_logger(logger);
}

}  // namespace zt
