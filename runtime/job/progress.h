// Progress: a bar with rate and ETA on stderr when it is a terminal, else an spdlog line every few seconds.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace zt {

class Progress {
public:
    // rate_unit names what update()'s second count counts ("tok": generated tokens; "weights" for the quantizer).
    Progress(std::string what, int64_t total, std::string rate_unit = "tok");
    // done: finished units (requests); tokens: generated so far, or rate_unit's count (for the rate).
    void update(int64_t done, int64_t tokens);
    void finish();

private:
    std::string what_, rate_unit_;
    int64_t total_;
    int64_t done_ = 0, tokens_ = 0;
    bool tty_;
    std::chrono::steady_clock::time_point start_, last_;
    void draw(bool final);
};

std::string format_duration(double seconds);   // "1h02m", "3m05s", "12s"

}  // namespace zt
