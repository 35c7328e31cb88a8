// Progress bar / periodic progress log (see progress.h).
#include "runtime/job/progress.h"

#include <unistd.h>

#include <cstdio>

#include <spdlog/spdlog.h>

namespace zt {

std::string format_duration(double s) {
    if (!(s >= 0) || s > 1e8) return "?";
    const int64_t t = int64_t(s + 0.5);
    if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
    if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
    return fmt::format("{}s", t);
}

Progress::Progress(std::string what, int64_t total, std::string rate_unit)
    : what_(std::move(what)), rate_unit_(std::move(rate_unit)), total_(total), tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

void Progress::update(int64_t done, int64_t tokens) {
    done_ = done;
    tokens_ = tokens;
    const auto now = std::chrono::steady_clock::now();
    const auto every = tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
    if (now - last_ >= every) {
        last_ = now;
        draw(false);
    }
}

void Progress::finish() { draw(true); }

void Progress::draw(bool final) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? tokens_ / elapsed : 0;
    const double eta = done_ > 0 ? elapsed * double(total_ - done_) / double(done_) : -1;
    const std::string stats = fmt::format("{}/{} {} | {:.1f} {}/s | elapsed {} | ETA {}", done_, total_, what_, rate,
                                          rate_unit_,
                                          format_duration(elapsed), final ? "0s" : format_duration(eta));
    if (tty_) {
        const int width = 30, filled = total_ > 0 ? int(width * done_ / total_) : width;
        std::fprintf(stderr, "\r[%s%s] %s", std::string(size_t(filled), '#').c_str(),
                     std::string(size_t(width - filled), '.').c_str(), stats.c_str());
        if (final) std::fputc('\n', stderr);
        std::fflush(stderr);
    } else {
        spdlog::info("progress: {}", stats);
    }
}

}  // namespace zt
