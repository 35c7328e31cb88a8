// Reusable NVMe slice files (see slice_file_reuse.h): the slot's name, the layout identity, the checks a file
// must pass to be reused (each failure is a reason in words), and the scan for files no job holds.
#include "runtime/stream/slice_file_reuse.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "runtime/base/hash.h"
#include "runtime/model/dtype.h"

namespace zt {

namespace {

std::string mib(uint64_t b) { return fmt::format("{:.1f} MiB", double(b) / (1024.0 * 1024.0)); }

// Reads exactly `bytes` at `offset`; false on a short read or an error (errno set, 0 for a short read).
bool pread_all(int fd, void * dst, size_t bytes, uint64_t offset) {
    uint8_t * p = static_cast<uint8_t *>(dst);
    size_t done = 0;
    while (done < bytes) {
        const ssize_t n = ::pread(fd, p + done, bytes - done, off_t(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = 0;
            return false;
        }
        done += size_t(n);
    }
    return true;
}

// A shared flock without waiting long on a holder of an exclusive one (another job's scan holds one for a moment).
bool lock_shared(int fd) {
    for (int i = 0; i < 50; ++i) {
        if (::flock(fd, LOCK_SH | LOCK_NB) == 0) return true;
        if (errno != EWOULDBLOCK && errno != EINTR) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

// Why the file's header is not `want` ("" when it is, nonce aside).
std::string header_mismatch(const SliceFileHeader & got, uint32_t version, const SliceFileHeader & want) {
    if (version != kSliceFormatVersion)
        return fmt::format("written in slice format version {}, this ztinfer writes version {}", version,
                           kSliceFormatVersion);
    if (got.checkpoint != want.checkpoint)
        return fmt::format("checkpoint changed (the model files' sizes/mtimes or tensor index differ: the file holds "
                           "checkpoint {}, the model is now {})", got.checkpoint.empty() ? "unknown" : got.checkpoint,
                           want.checkpoint.empty() ? "unknown" : want.checkpoint);
    if (got.world != want.world || got.rank != want.rank)
        return fmt::format("written for rank {} of world {}, this is rank {} of world {}", got.rank, got.world,
                           want.rank, want.world);
    if (got.layout != want.layout || got.units != want.units || got.data_bytes != want.data_bytes)
        return fmt::format("written for another partition layout ({} slices in {} bytes, layout {}; this job has {} "
                           "in {} bytes, layout {}: resident_layers, partition_embeddings or the persistence "
                           "threshold changed)", got.units, got.data_bytes, got.layout, want.units, want.data_bytes,
                           want.layout);
    return {};
}

}  // namespace

std::string slice_file_prefix(const std::string & model) {
    std::error_code ec;
    std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(model, ec), ec);
    if (ec) p = std::filesystem::path(model).lexically_normal();
    return fmt::format("ztinfer-{:016x}-", hash64(p.string(), 0));
}

std::string slice_file_path(const std::string & nvme_path, const std::string & model, int rank, int world) {
    return (std::filesystem::path(nvme_path) / fmt::format("{}rank{}-of{}.slices", slice_file_prefix(model), rank,
                                                           world)).string();
}

std::string slice_layout_identity(const PartitionPlan & plan, int rank, const std::vector<uint64_t> & extent_offsets) {
    std::string d = fmt::format("format {} header {} tag {} world {} rank {} units {}\n", kSliceFormatVersion,
                                kSliceHeaderBytes, kSliceTagBytes, plan.world, rank, plan.units.size());
    for (size_t i = 0; i < plan.units.size(); ++i) {
        const PartitionUnit & u = plan.units[i];
        d += fmt::format("unit {} {} kind {} layer {} streamed {} flat {} slice {} packed {} persistent {} at {}\n", i,
                         u.name, int(u.kind), u.layer, u.streamed, u.flat_bytes, u.slice_bytes, u.packed_bytes,
                         u.persistent_bytes, i < extent_offsets.size() ? extent_offsets[i] : 0);
        for (const PackedTensor & t : u.tensors) {
            d += fmt::format(" {} {} {} {} {} {}", t.name, dtype_name(t.source.dtype), t.persistent, t.offset,
                             t.bytes, t.block_bytes);
            for (int64_t s : t.source.shape) d += " " + std::to_string(s);
            d += "\n";
        }
    }
    return fmt::format("{:016x}{:016x}", hash64(d, 0), hash64(d, 0x9e3779b97f4a7c15ull));
}

ReusableFile open_reusable_slice_file(const std::string & path, const SliceFileHeader & want, uint64_t file_bytes,
                                      const std::vector<ExpectedSlice> & slices) {
    ReusableFile r;
    // O_NOFOLLOW: a symlink is ELOOP, never its target; O_NONBLOCK: a FIFO planted there does not block the open.
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        r.missing = err == ENOENT;
        r.why = err == ENOENT ? "no file yet"
              : err == ELOOP ? "a symbolic link (never followed)"
              : fmt::format("cannot open it: {}", std::strerror(err));
        return r;
    }
    auto fail = [&](std::string why) {
        ::close(fd);
        r.why = std::move(why);
        r.header = {};
        return r;
    };
    struct stat st{};
    if (::fstat(fd, &st) != 0) return fail(fmt::format("cannot stat it: {}", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return fail("not a regular file");
    // Reads must block (io_uring returns EAGAIN for a non-blocking descriptor instead of waiting for the disk).
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        return fail(fmt::format("cannot set its descriptor blocking: {}", std::strerror(errno)));
    if (st.st_uid != ::geteuid())
        return fail(fmt::format("owned by uid {}, not by this user (uid {})", st.st_uid, ::geteuid()));
    if (st.st_nlink != 1) return fail(fmt::format("it has {} hard links (another name could change it)", st.st_nlink));
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return fail(fmt::format("writable by group or others (mode {:04o})", st.st_mode & 07777));
    const auto truncated = [&] { return fmt::format("truncated: {} of {} bytes", st.st_size, file_bytes); };
    if (uint64_t(st.st_size) < kSliceHeaderBytes) return fail(truncated());
    if (!lock_shared(fd)) return fail("another process holds it locked exclusively");
    // The header first (it says best whose the file is), then the size it implies.
    std::vector<uint8_t> page(kSliceHeaderBytes);
    if (!pread_all(fd, page.data(), page.size(), 0))
        return fail(fmt::format("cannot read its header: {}", errno ? std::strerror(errno) : "short read"));
    uint32_t version = 0;
    if (!decode_slice_header(page.data(), r.header, version))
        return fail("not a ztinfer slice file (its first page has no slice header)");
    if (std::string why = header_mismatch(r.header, version, want); !why.empty()) return fail(std::move(why));
    if (uint64_t(st.st_size) != file_bytes)
        return fail(uint64_t(st.st_size) < file_bytes ? truncated()
                        : fmt::format("{} bytes, this job's slices take {}", st.st_size, file_bytes));
    const uint64_t ckpt = slice_checkpoint_hash(r.header.checkpoint);
    uint8_t tag[kSliceTagBytes];
    for (const ExpectedSlice & e : slices) {
        SliceTag w = e.tag;
        w.nonce = r.header.nonce;
        w.checkpoint = ckpt;
        const uint64_t at = w.offset + slice_extent(size_t(w.bytes)) - kSliceTagBytes;
        if (!pread_all(fd, tag, sizeof tag, at))
            return fail(fmt::format("cannot read the tag of {} at offset {}: {}", e.name, at,
                                    errno ? std::strerror(errno) : "short read"));
        SliceTag got;
        if (!decode_slice_tag(tag, got))
            return fail(fmt::format("the slice of {} (offset {}) has no valid tag: the file is damaged or was "
                                    "overwritten", e.name, w.offset));
        if (got.nonce != w.nonce || got.checkpoint != w.checkpoint || got.unit != w.unit || got.rank != w.rank ||
            got.offset != w.offset || got.bytes != w.bytes)
            return fail(fmt::format("the tag of {} (offset {}) says unit #{} of rank {}, {} bytes at offset {}, nonce "
                                    "{:016x}: not this file's slice (the file is damaged or was overwritten)",
                                    e.name, w.offset, got.unit, got.rank, got.bytes, got.offset, got.nonce));
    }
    r.fd = fd;
    return r;
}

bool remove_unused_slice_file(const std::string & path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st{}, now{};
    const bool removed = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
                         ::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::lstat(path.c_str(), &now) == 0 &&
                         now.st_dev == st.st_dev && now.st_ino == st.st_ino && ::unlink(path.c_str()) == 0;
    ::close(fd);
    return removed;
}

void log_unused_slice_files(const std::string & nvme_path, const std::string & own_prefix, int world) {
    DIR * d = ::opendir(nvme_path.c_str());
    if (!d) return;
    const std::string own_suffix = fmt::format("-of{}.slices", world);
    std::vector<std::string> found;
    uint64_t total = 0;
    while (const dirent * e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n.rfind("ztinfer-", 0) != 0 || n.size() < 7 || n.compare(n.size() - 7, 7, ".slices") != 0) continue;
        if (n.rfind(own_prefix, 0) == 0 && n.size() > own_suffix.size() &&
            n.compare(n.size() - own_suffix.size(), own_suffix.size(), own_suffix) == 0)
            continue;   // this job's ranks' files
        const int fd = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st{};
        if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
            found.push_back(fmt::format("{} ({})", n, mib(uint64_t(st.st_size))));
            total += uint64_t(st.st_size);
        }
        ::close(fd);   // releases the lock
    }
    ::closedir(d);
    if (found.empty()) return;
    std::string list;
    for (const std::string & f : found) list += (list.empty() ? "" : ", ") + f;
    spdlog::info("{} holds {} NVMe slice file(s) of other models or world sizes that no running job uses ({} in "
                 "all): {}. A job reuses such a file only when it runs the same model files with the same world size "
                 "and partition; delete them if none will", nvme_path, found.size(), mib(total), list);
}

}  // namespace zt
