// OutputLock: one job at a time per output. Rank 0 (the only writer) holds an exclusive flock(2) on
// "<output>.lock" for the job's life, with its pid and host written in it, so that a second job on the same
// output (which would interleave its records with the first's) fails at once and names the first. Covers a JSONL
// output, and an .npy output with its index and the metrics file beside it. The lock file is created without
// following symlinks and removed when the lock is released; a holder that died (kill -9, node failure) releases
// the flock with its last file descriptor, so a stale file never blocks a rerun.
#pragma once
#include <string>

namespace zt {

class OutputLock {
public:
    // Takes the lock for `output`, or throws zt::Error naming the job holding it (pid and host when known).
    explicit OutputLock(const std::string & output);
    ~OutputLock();   // removes the lock file, then releases the lock
    OutputLock(const OutputLock &) = delete;
    OutputLock & operator=(const OutputLock &) = delete;

    static std::string lock_path(const std::string & output);   // "<output>.lock"

private:
    std::string path_;
    int fd_ = -1;
};

}  // namespace zt
