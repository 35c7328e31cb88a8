// The output's lock file (see output_lock.h).
#include "runtime/job/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/base/host_name.h"

namespace zt {

namespace {

// What the holder wrote into the lock file ("pid 123 on host n1"), at most one short line.
std::string holder_of(int fd) {
    char buf[256] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string s(buf, n > 0 ? size_t(n) : 0);
    if (const size_t nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
    return s;
}

}  // namespace

std::string OutputLock::lock_path(const std::string & output) { return output + ".lock"; }

OutputLock::OutputLock(const std::string & output) : path_(lock_path(output)) {
    namespace fs = std::filesystem;
    const fs::path parent = fs::path(output).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        fs::create_directories(parent, ec);
        ZT_CHECK(!ec, "cannot create the output folder {}: {}", parent.string(), ec.message());
    }
    // A holder removes the file before it lets go of the lock, so a file we locked may already be unlinked:
    // then open the new one and try again (a few rounds; more means many jobs race for this output).
    for (int round = 0; round < 20; ++round) {
        const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        ZT_CHECK(fd >= 0, "cannot open the lock file {} of output {}: {}{}", path_, output, std::strerror(errno),
                 errno == ELOOP ? " (it is a symbolic link: remove it)" : "");
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            const std::string holder = holder_of(fd);
            ::close(fd);
            ZT_CHECK(err == EWOULDBLOCK, "cannot lock {} (the lock file of output {}): {}", path_, output,
                     std::strerror(err));
            ZT_FAIL("output {} is being written by another job ({}): two jobs appending to one output would "
                    "interleave their records. Wait for that job to end or stop it, or give this job another "
                    "\"ztinfer.output\" (lock file {})", output, holder.empty() ? "pid and host unknown" : holder,
                    path_);
        }
        struct stat held {}, named {};
        if (::fstat(fd, &held) == 0 && ::lstat(path_.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
            held.st_ino == named.st_ino) {
            const std::string me = fmt::format("pid {} on host {}\n", ::getpid(), host_name());
            if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size()))
                ZT_FAIL("cannot write the lock file {}: {}", path_, std::strerror(errno));
            fd_ = fd;
            return;
        }
        ::close(fd);   // the previous holder removed it meanwhile: lock the file now at that path
    }
    ZT_FAIL("cannot lock {} (the lock file of output {}): other jobs keep taking it; run one job per output",
            path_, output);
}

OutputLock::~OutputLock() {
    if (fd_ < 0) return;
    ::unlink(path_.c_str());   // while still locked: whoever opened this file before sees it gone and retries
    ::close(fd_);
}

}  // namespace zt
