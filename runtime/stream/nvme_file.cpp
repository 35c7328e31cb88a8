// NvmeFile (see nvme_file.h): a file written without a name (O_TMPFILE, or O_EXCL + unlink / + rename when it is
// to be published), start-up writes with pwrite + fsync, publish() (linkat + rename), adopt() of a reused file,
// then O_DIRECT reads through io_uring in block_size chunks (queue_depth in flight), bounded retries with backoff,
// and the pread / buffered fallbacks.
#include "runtime/stream/nvme_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#ifdef ZT_HAVE_URING
#include <liburing.h>
#endif

#include "runtime/base/error.h"

namespace zt {

#ifdef ZT_HAVE_URING
struct NvmeFile::Ring {
    io_uring ring{};
    bool live = false;   // io_uring_queue_init succeeded
    ~Ring() { if (live) io_uring_queue_exit(&ring); }
};
#else
struct NvmeFile::Ring {};
#endif

namespace {

std::mutex g_hook_mu;
std::shared_ptr<const NvmeFile::FaultHook> g_hook;

std::shared_ptr<const NvmeFile::FaultHook> current_hook() {
    std::lock_guard<std::mutex> lock(g_hook_mu);
    return g_hook;
}

std::once_flag g_warn_uring, g_warn_direct;

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// One block_size piece of a read and its attempts so far.
struct Chunk {
    uint64_t offset = 0;
    uint8_t * dst = nullptr;
    size_t bytes = 0;
    int failures = 0;      // failed attempts
    int64_t last = 0;      // result of the last failed attempt: -errno or the bytes a short read got
};

// The result of one attempt after the test fault hook had its say.
int64_t with_fault(const NvmeFile::FaultHook * hook, const Chunk & c, int64_t res) {
    if (hook) {
        const int h = (*hook)(c.offset, c.bytes);
        if (h < 0) return h;
    }
    return res;
}

// The fallback's names: <label>.zt-unlinked-XXXXXX (mkostemp). Nothing ever opens such a file by name: its
// creator unlinks it right after open and keeps only the descriptor. So one that is still there (its creator was
// killed between open and unlink) is garbage, and removing one at any time harms nobody.
constexpr char kFallbackInfix[] = ".zt-unlinked-";
// Temporary names of a file on its way to its final name: <final>.zt-writing-XXXXXX (the fallback without
// O_TMPFILE, written under it) and <final>.zt-linking-XXXXXX (an O_TMPFILE file between linkat and rename). Their
// creator holds a shared flock on the file from a moment after creating the name until it closes the file; so
// one that nobody holds (LOCK_EX | LOCK_NB succeeds) and that is over a minute old was left by a killed job.
constexpr char kWritingInfix[] = ".zt-writing-";
constexpr char kLinkingInfix[] = ".zt-linking-";
constexpr int kLeftoverAgeS = 60;

bool has_infix(const std::string & n, const char * infix) {
    const size_t len = std::strlen(infix);
    const size_t at = n.rfind(infix);
    return at != std::string::npos && at != 0 && n.size() == at + len + 6;
}

void remove_fallback_leftovers(const std::string & dir) {
    DIR * d = ::opendir(dir.c_str());
    if (!d) return;   // the open below reports a missing or unreadable folder
    while (const dirent * e = ::readdir(d)) {
        const std::string n = e->d_name;
        const bool unlinked = has_infix(n, kFallbackInfix);
        if (!unlinked && !has_infix(n, kWritingInfix) && !has_infix(n, kLinkingInfix)) continue;
        struct stat st{};
        if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        if (!unlinked) {
            if (st.st_uid != ::geteuid() || ::time(nullptr) - st.st_mtime < kLeftoverAgeS) continue;
            const int fd = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            if (fd < 0) continue;
            const bool unused = ::flock(fd, LOCK_EX | LOCK_NB) == 0;   // released by close, after the unlink
            const bool removed = unused && ::unlinkat(::dirfd(d), e->d_name, 0) == 0;
            ::close(fd);
            if (removed)
                spdlog::info("removed {}/{}: a half-written NVMe slice file left by a job killed while it wrote it",
                             dir, n);
            continue;
        }
        if (::unlinkat(::dirfd(d), e->d_name, 0) == 0)
            spdlog::info("removed {}/{}: an NVMe weight file left by a job killed while it created the file", dir, n);
    }
    ::closedir(d);
}

void fsync_dir(const std::string & dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);   // best effort: the rename is durable once the folder is
    ::close(fd);
}

std::string random_suffix() {   // 6 characters for a temporary name
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    thread_local std::mt19937_64 rng(std::random_device{}() ^ uint64_t(::getpid()) << 32);
    std::string s(6, 'x');
    for (char & c : s) c = kChars[rng() % (sizeof kChars - 1)];
    return s;
}

std::chrono::milliseconds backoff(int failures) {   // 10 ms, 20 ms, 40 ms, ... (capped at ~1 s)
    return std::chrono::milliseconds(10LL << std::min(failures - 1, 7));
}

}  // namespace

void NvmeFile::set_fault_hook(FaultHook hook) {
    std::lock_guard<std::mutex> lock(g_hook_mu);
    g_hook = hook ? std::make_shared<const FaultHook>(std::move(hook)) : nullptr;
}

NvmeFile::NvmeFile(std::string path, NvmeFileOptions options) : path_(std::move(path)), opt_(std::move(options)) {
    ZT_CHECK(opt_.queue_depth >= 1, "aio.queue_depth must be >= 1, got {}", opt_.queue_depth);
    ZT_CHECK(opt_.max_retries >= 0, "the NVMe read retry count must be >= 0, got {}", opt_.max_retries);
    // one io_uring read is at most 2^31 bytes and a ring at most 4096 entries: clamp rather than fail later
    opt_.block_size = size_t(round_up(std::min<size_t>(std::max<size_t>(opt_.block_size, 1), size_t(1) << 30), kAlign));
    opt_.queue_depth = std::min(opt_.queue_depth, 4096);
    const std::filesystem::path label(path_);
    const std::string dir = label.has_parent_path() ? label.parent_path().string() : ".";
    remove_fallback_leftovers(dir);
    int err = 0;
    if (opt_.use_tmpfile) {
        fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        err = errno;
    }
    if (fd_ < 0 && (!opt_.use_tmpfile || err == EOPNOTSUPP || err == EISDIR || err == EINVAL)) {
        // No O_TMPFILE here: a fresh name (O_CREAT | O_EXCL: never an existing file, never through a link), then
        // unlink it. Its unlink may find it gone (another job's remove_fallback_leftovers): harmless. A publishable
        // file keeps its name (locked: see kWritingInfix) until publish() renames it.
        std::string name = path_ + (opt_.publishable ? kWritingInfix : kFallbackInfix) + "XXXXXX";
        fd_ = ::mkostemp(name.data(), O_CLOEXEC);
        err = errno;
        if (fd_ >= 0 && opt_.publishable) {
            temp_name_ = name;
            ::flock(fd_, LOCK_SH | LOCK_NB);
        } else if (fd_ >= 0) {
            ::unlink(name.c_str());
        }
    }
    ZT_CHECK(fd_ >= 0, "cannot create the NVMe weight file {}: {}: check that offload_param.nvme_path ({}) is a "
             "writable folder on a local disk", path_, std::strerror(err), opt_.nvme_path);
    if (opt_.publishable && temp_name_.empty()) ::flock(fd_, LOCK_SH | LOCK_NB);   // nobody else can see it yet
    path_ = temp_name_.empty() ? fmt::format("{} (unlinked, pid {})", path_, ::getpid())
                               : fmt::format("{} (being written, pid {})", temp_name_, ::getpid());
}

std::unique_ptr<NvmeFile> NvmeFile::adopt(int fd, std::string path, uint64_t bytes, NvmeFileOptions options) {
    return std::unique_ptr<NvmeFile>(new NvmeFile(Adopt{}, fd, std::move(path), bytes, std::move(options)));
}

NvmeFile::NvmeFile(Adopt, int fd, std::string path, uint64_t bytes, NvmeFileOptions options)
    : path_(std::move(path)), opt_(std::move(options)), fd_(fd), file_bytes_(bytes) {
    opt_.queue_depth = std::max(1, std::min(opt_.queue_depth, 4096));
    opt_.max_retries = std::max(0, opt_.max_retries);
    opt_.block_size = size_t(round_up(std::min<size_t>(std::max<size_t>(opt_.block_size, 1), size_t(1) << 30), kAlign));
    std::lock_guard<std::mutex> lock(mu_);
    try {
        ZT_CHECK(fd_ >= 0 && file_bytes_ % kAlign == 0, "NvmeFile::adopt of {}: bad descriptor {} or size {}", path_,
                 fd_, file_bytes_);
        start_reading();
    } catch (...) {
        if (fd_ >= 0) ::close(fd_);
        throw;
    }
}

NvmeFile::~NvmeFile() {
    ring_.reset();
    if (!temp_name_.empty()) ::unlink(temp_name_.c_str());   // never published: the half-way name goes too
    if (fd_ >= 0) ::close(fd_);   // a nameless file is freed; a named one stays for the next job
}

std::string NvmeFile::publish(const std::string & final_path) {
    std::lock_guard<std::mutex> lock(mu_);
    ZT_CHECK(reading_ && opt_.publishable, "NvmeFile::publish of {} before finish_writes or without publishable",
             path_);
    const std::filesystem::path fp(final_path);
    const std::string dir = fp.has_parent_path() ? fp.parent_path().string() : ".";
    std::string from = temp_name_;
    if (from.empty()) {
        // O_TMPFILE: a hard link under a fresh temporary name (linkat never replaces a name), via AT_EMPTY_PATH
        // (needs CAP_DAC_READ_SEARCH) or /proc/self/fd.
        int err = 0;
        for (int attempt = 0; attempt < 8 && from.empty(); ++attempt) {
            const std::string name = final_path + kLinkingInfix + random_suffix();
            int rc = ::linkat(fd_, "", AT_FDCWD, name.c_str(), AT_EMPTY_PATH);
            if (rc != 0 && errno != EEXIST) {
                const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
                rc = ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW);
            }
            if (rc == 0) from = name;
            else err = errno;
            if (rc != 0 && err != EEXIST) break;
        }
        if (from.empty()) return fmt::format("cannot link the new file into {}: {}", dir, std::strerror(err));
    }
    if (::rename(from.c_str(), final_path.c_str()) != 0) {
        const int err = errno;
        ::unlink(from.c_str());
        temp_name_.clear();
        return fmt::format("cannot rename it to {}: {}", final_path, std::strerror(err));
    }
    temp_name_.clear();
    fsync_dir(dir);
    path_ = final_path;
    return {};
}

bool NvmeFile::uses_uring() const { return ring_ != nullptr; }

void NvmeFile::reserve(uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    ZT_CHECK(!reading_, "NvmeFile::reserve of {} after finish_writes", path_);
    if (bytes == 0) return;
    const uint64_t padded = round_up(bytes, kAlign);
    if (::fallocate(fd_, 0, 0, off_t(padded)) != 0) {
        const int err = errno;
        ZT_CHECK(err == EOPNOTSUPP || err == ENOSYS || err == EINTR,   // sparse files are fine where unsupported
                 "cannot reserve {} bytes for the NVMe weight file {}: {}: offload_param.nvme_path ({}) needs {} "
                 "bytes free for this rank's weights: free space there or point nvme_path at a larger disk",
                 padded, path_, std::strerror(err), opt_.nvme_path, padded);
    }
    file_bytes_ = std::max(file_bytes_, padded);
}

void NvmeFile::write(uint64_t offset, const void * src, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    ZT_CHECK(!reading_, "NvmeFile::write to {} after finish_writes", path_);
    ZT_CHECK(offset % kAlign == 0, "NvmeFile::write to {}: offset {} is not a multiple of {}", path_, offset, kAlign);
    const uint8_t * p = static_cast<const uint8_t *>(src);
    size_t done = 0;
    while (done < bytes) {
        const ssize_t n = ::pwrite(fd_, p + done, bytes - done, off_t(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = n < 0 ? errno : EIO;
            ZT_CHECK(err != ENOSPC && err != EDQUOT,
                     "no space left for the NVMe weight file {} (writing {} bytes at offset {}): "
                     "offload_param.nvme_path ({}) needs at least {} bytes free for this rank's weights: free space "
                     "there or point nvme_path at a larger disk", path_, bytes, offset, opt_.nvme_path,
                     std::max(file_bytes_, round_up(offset + bytes, kAlign)));
            ZT_FAIL("writing {} bytes at offset {} of the NVMe weight file {} failed: {}: check the device under "
                    "offload_param.nvme_path ({})", bytes, offset, path_, std::strerror(err), opt_.nvme_path);
        }
        done += size_t(n);
    }
    file_bytes_ = std::max(file_bytes_, offset + bytes);
}

void NvmeFile::finish_writes() {
    std::lock_guard<std::mutex> lock(mu_);
    ZT_CHECK(!reading_, "NvmeFile::finish_writes called twice for {}", path_);
    file_bytes_ = round_up(file_bytes_, kAlign);
    ZT_CHECK(::ftruncate(fd_, off_t(file_bytes_)) == 0, "cannot size the NVMe weight file {} to {} bytes: {}: check "
             "free space under offload_param.nvme_path ({})", path_, file_bytes_, std::strerror(errno), opt_.nvme_path);
    ZT_CHECK(::fsync(fd_) == 0, "fsync of the NVMe weight file {} failed: {}: check the device under "
             "offload_param.nvme_path ({}) and its free space", path_, std::strerror(errno), opt_.nvme_path);
    start_reading();
}

void NvmeFile::start_reading() {
    // The file may have no name to reopen: the same descriptor switches to O_DIRECT (EINVAL where unsupported).
    direct_ = false;
    if (opt_.use_direct) {
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags >= 0 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0) {
            direct_ = true;
        } else if (errno == EINVAL) {
            std::call_once(g_warn_direct, [&] {
                spdlog::warn("the filesystem of {} does not support O_DIRECT: NVMe weight reads go through the page "
                             "cache (buffered), which costs host memory and bandwidth; put offload_param.nvme_path "
                             "on a local NVMe filesystem such as ext4 or xfs", opt_.nvme_path);
            });
        } else {
            ZT_FAIL("cannot switch the NVMe weight file {} to O_DIRECT reads: {}: check the filesystem under "
                    "offload_param.nvme_path ({})", path_, std::strerror(errno), opt_.nvme_path);
        }
    }

    if (opt_.use_uring) {
#ifdef ZT_HAVE_URING
        auto ring = std::make_unique<Ring>();
        const int rc = io_uring_queue_init(unsigned(opt_.queue_depth), &ring->ring, 0);
        if (rc == 0) {
            ring->live = true;
            ring_ = std::move(ring);
        } else {
            std::call_once(g_warn_uring, [&] {
                spdlog::warn("io_uring is unavailable ({}; a container's seccomp profile often blocks it): NVMe "
                             "weight reads fall back to pread, one request at a time", std::strerror(-rc));
            });
        }
#else
        std::call_once(g_warn_uring, [] {
            spdlog::warn("ztinfer was built without liburing: NVMe weight reads use pread, one request at a time; "
                         "install liburing-dev and rebuild for io_uring");
        });
#endif
    }
    reading_ = true;
}

void NvmeFile::read(uint64_t offset, void * dst, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    ZT_CHECK(reading_, "NvmeFile::read of {} before finish_writes", path_);
    if (bytes == 0) return;
    const uint64_t len = round_up(bytes, kAlign);
    ZT_CHECK(offset % kAlign == 0 && offset <= file_bytes_ && len <= file_bytes_ - offset,
             "NvmeFile::read of {} bytes at offset {} is outside {} ({} bytes) or not {}-aligned", bytes, offset,
             path_, file_bytes_, kAlign);
    ZT_CHECK(reinterpret_cast<uintptr_t>(dst) % kAlign == 0, "NvmeFile::read into {}: the buffer must be {}-aligned",
             dst, kAlign);

    std::vector<Chunk> chunks;
    for (uint64_t o = 0; o < len; o += opt_.block_size) {
        Chunk c;
        c.offset = offset + o;
        c.dst = static_cast<uint8_t *>(dst) + o;
        c.bytes = size_t(std::min<uint64_t>(opt_.block_size, len - o));
        chunks.push_back(c);
    }
    const auto hook_holder = current_hook();
    const FaultHook * hook = hook_holder.get();

    auto fail = [&](const Chunk & c) {
        const std::string why = c.last < 0
            ? std::string(std::strerror(int(-c.last)))
            : fmt::format("short read: got {} of {} bytes (the file was truncated or changed while running)",
                          c.last, c.bytes);
        ZT_FAIL("NVMe read of {} bytes at offset {} of {} failed after {} tries: {}: check the device and free "
                "space, and that nothing else writes under nvme_path ({})", c.bytes, c.offset, path_, c.failures, why,
                opt_.nvme_path);
    };
    // Records a failed attempt; true when the chunk may be tried again.
    auto failed = [&](Chunk & c, int64_t res) {
        c.last = res;
        ++c.failures;
        return c.failures <= opt_.max_retries;
    };

#ifdef ZT_HAVE_URING
    if (ring_) {
        io_uring * ring = &ring_->ring;
        std::deque<size_t> pending;
        for (size_t i = 0; i < chunks.size(); ++i) pending.push_back(i);
        size_t in_flight = 0;
        long failed_chunk = -1;   // set: submit nothing more, drain what is in flight (it writes into dst), throw
        while (true) {
            bool queued = false;
            while (failed_chunk < 0 && in_flight < size_t(opt_.queue_depth) && !pending.empty()) {
                io_uring_sqe * sqe = io_uring_get_sqe(ring);
                if (!sqe) break;
                const Chunk & c = chunks[pending.front()];
                io_uring_prep_read(sqe, fd_, c.dst, unsigned(c.bytes), c.offset);
                io_uring_sqe_set_data64(sqe, pending.front());
                pending.pop_front();
                ++in_flight;
                queued = true;
            }
            if (queued) {
                int rc;
                do rc = io_uring_submit(ring); while (rc == -EINTR);
                ZT_CHECK(rc >= 0, "io_uring submit for {} failed: {}", path_, std::strerror(-rc));
            }
            if (in_flight == 0) break;
            io_uring_cqe * cqe = nullptr;
            int rc;
            do rc = io_uring_wait_cqe(ring, &cqe); while (rc == -EINTR);
            ZT_CHECK(rc == 0, "waiting for an io_uring read of {} failed: {}", path_, std::strerror(-rc));
            std::vector<size_t> retry;
            int max_failures = 0;
            do {
                const size_t i = size_t(io_uring_cqe_get_data64(cqe));
                const int64_t res = with_fault(hook, chunks[i], cqe->res);
                io_uring_cqe_seen(ring, cqe);
                --in_flight;
                Chunk & c = chunks[i];
                if (res == int64_t(c.bytes)) continue;
                if (failed(c, res)) {
                    retry.push_back(i);
                    max_failures = std::max(max_failures, c.failures);
                } else if (failed_chunk < 0) {
                    failed_chunk = long(i);
                }
            } while (io_uring_peek_cqe(ring, &cqe) == 0);
            if (!retry.empty() && failed_chunk < 0) {
                std::this_thread::sleep_for(backoff(max_failures));
                for (auto it = retry.rbegin(); it != retry.rend(); ++it) pending.push_front(*it);
            }
        }
        if (failed_chunk >= 0) fail(chunks[size_t(failed_chunk)]);
        return;
    }
#endif

    // pread loop: the fallback without io_uring, same retry rules.
    for (Chunk & c : chunks) {
        while (true) {
            ssize_t n;
            do n = ::pread(fd_, c.dst, c.bytes, off_t(c.offset)); while (n < 0 && errno == EINTR);
            const int64_t res = with_fault(hook, c, n < 0 ? -int64_t(errno) : int64_t(n));
            if (res == int64_t(c.bytes)) break;
            if (!failed(c, res)) fail(c);
            std::this_thread::sleep_for(backoff(c.failures));
        }
    }
}

}  // namespace zt
