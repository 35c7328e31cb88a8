// Wing runtime/base/: what every other wing leans on and nothing model-specific: errors that carry file:line and
// rank (error.h), spdlog set-up per rank (log.h), the Chrome-trace timeline and stage totals (trace.h) and the
// process's own memory figures (memory_usage.h). It includes nothing from the other wings.
//
// Error handling: zt::Error carries "[rank R] file:line: message"; ZT_CHECK / ZT_FAIL raise it.
// User-facing messages say what was wrong and what to do (never a bare assert).
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace zt {

// An error the user can act on. what() = "[rank R] file:line: message"; message() = the bare message;
// location() = "file:line" (for log lines whose pattern already shows the rank).
class Error : public std::runtime_error {
public:
    Error(int rank, const std::string & location, const std::string & message)
        : std::runtime_error(fmt::format("[rank {}] {}: {}", rank, location, message)),
          location_(location), message_(message) {}
    const std::string & message() const { return message_; }
    const std::string & location() const { return location_; }
private:
    std::string location_, message_;
};

// Rank of this process, shown in every error and log line (set once at start-up; 0 by default).
int  error_rank();
void set_error_rank(int rank);

[[noreturn]] void raise_error(const char * file, int line, const std::string & message);

}  // namespace zt

// ZT_CHECK(cond, "fmt {}", args...): throws zt::Error with file:line and rank when cond is false.
#define ZT_CHECK(cond, ...)                                                      \
    do {                                                                         \
        if (!(cond)) ::zt::raise_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
    } while (0)
#define ZT_FAIL(...) ::zt::raise_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
