// NvmeFile: one rank's weight file on the NVMe tier. A new file is written without a name: it is made with
// O_TMPFILE in the folder (or, where the filesystem lacks O_TMPFILE, under a fresh random name with O_CREAT |
// O_EXCL, which never opens an existing file nor follows a planted link), so no other process can open, truncate
// or rewrite it by name while it is written, and a job killed while writing leaves nothing usable behind.
// Private (ztinfer.nvme_reuse false): the fallback's name is unlinked at once and the file stays nameless: two
// jobs never share one, and its blocks are freed when the last descriptor closes. Reusable (nvme_reuse true,
// slice_file_reuse.h): once written and fsynced, publish() gives it its final name atomically (linkat to a
// temporary name, then rename over the final one), so the final name only ever shows a complete file; a later
// job opens it read-only (adopt()). Such a file is held with a shared flock(2) while in use. Written once at
// start-up (buffered pwrite, each piece at a 4096-aligned offset, then fsync), then read many times with O_DIRECT
// through io_uring: a read is split into
// block_size chunks with up to queue_depth in flight. A short read or an error (EIO...) is resubmitted up to
// max_retries times with a doubling backoff (10 ms, 20 ms, ...), then a zt::Error naming the file and offset.
// Fallbacks (one warning each per process): no io_uring (built without liburing, or io_uring_queue_init refused,
// e.g. by seccomp in a container) -> a pread loop with the same retry rules; O_DIRECT refused by the filesystem
// (EINVAL) -> buffered reads.
//
//   file:  | piece 0 | pad to 4096 | piece 1 | pad | ... |      (the file size is a multiple of 4096)
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace zt {

struct NvmeFileOptions {
    std::string nvme_path;          // the configured folder, named in errors (offload_param.nvme_path)
    size_t block_size = 1 << 20;    // bytes per read request (rounded up to 4096)
    int queue_depth = 8;            // read requests in flight
    int max_retries = 3;            // resubmissions of a failed or short chunk before the error
    bool use_uring = true;          // false: the pread loop (tests; the fallback when io_uring is unavailable)
    bool use_direct = true;         // false: buffered reads (tests; the fallback when O_DIRECT is refused)
    bool use_tmpfile = true;        // false: a random name unlinked after open (tests; the fallback without O_TMPFILE)
    bool publishable = false;       // the file will get a name (publish()): the fallback keeps its random name
                                    // until then, and the file is held with a shared flock
};

class NvmeFile {
public:
    static constexpr size_t kAlign = 4096;   // offsets, read sizes and read buffers (O_DIRECT)

    // Creates a fresh nameless file in the folder of `path` for writing; `path` (such as
    // <nvme_path>/ztinfer-rank0.weights) only labels it: path() is "<path> (unlinked, pid <pid>)". Leftovers of
    // the fallback's names (a kill between its open and unlink) are removed. Throws zt::Error naming the file and
    // nvme_path on failure.
    NvmeFile(std::string path, NvmeFileOptions options);
    // Adopts `fd`, a descriptor open for reading on the existing complete slice file `path` (checked by the
    // caller, who holds a shared flock on it), of `bytes` bytes: ready to read (no writes; finish_writes is done).
    static std::unique_ptr<NvmeFile> adopt(int fd, std::string path, uint64_t bytes, NvmeFileOptions options);
    ~NvmeFile();                              // closes the file (a nameless one is freed)
    NvmeFile(const NvmeFile &) = delete;
    NvmeFile & operator=(const NvmeFile &) = delete;

    // Start-up: reserves `bytes` of disk space (ENOSPC -> an error naming nvme_path and the bytes needed).
    void reserve(uint64_t bytes);
    // Start-up: writes `bytes` at `offset` (a multiple of 4096). ENOSPC -> an error naming nvme_path and bytes.
    void write(uint64_t offset, const void * src, size_t bytes);
    // Ends the write phase: pads the file to a multiple of 4096, fsyncs, switches the descriptor to O_DIRECT
    // (fcntl) and sets up io_uring. Must be called once before read().
    void finish_writes();
    // After finish_writes, for a file made with options.publishable: gives it the name `final_path` atomically
    // (a hard link to a fresh temporary name in the same folder, then rename() over final_path, which replaces
    // whatever was there, a symlink itself rather than its target; then the folder is fsynced). Returns "" on
    // success, else why it could not (the file then stays nameless and works as before).
    std::string publish(const std::string & final_path);

    // Reads [offset, offset + bytes) into dst. offset is a multiple of 4096; dst is 4096-aligned and has room for
    // bytes rounded up to 4096 (the read covers the padding too). Thread-safe (reads are serialized). Throws
    // zt::Error after max_retries failed resubmissions of a chunk.
    void read(uint64_t offset, void * dst, size_t bytes);

    const std::string & path() const { return path_; }   // its name, or a label for messages when it has none
    uint64_t size() const { return file_bytes_; }
    bool uses_uring() const;                  // io_uring is the read engine (after finish_writes)
    bool uses_direct() const { return direct_; }

    // Test-only fault injection: when set, called once per chunk attempt after the I/O completes with the
    // chunk's file offset and size; a negative return (e.g. -EIO) replaces the attempt's result. nullptr clears.
    using FaultHook = std::function<int(uint64_t offset, size_t bytes)>;
    static void set_fault_hook(FaultHook hook);

    struct Ring;   // io_uring state (liburing), defined in nvme_file.cpp

private:
    struct Adopt {};
    NvmeFile(Adopt, int fd, std::string path, uint64_t bytes, NvmeFileOptions options);
    void start_reading();                     // O_DIRECT + io_uring set-up (mu_ held)

    std::string path_;
    std::string temp_name_;                   // the fallback's name while a publishable file is written
    NvmeFileOptions opt_;
    int fd_ = -1;
    bool reading_ = false;
    bool direct_ = false;
    uint64_t file_bytes_ = 0;                 // padded size once finish_writes ran; written extent before
    std::unique_ptr<Ring> ring_;
    std::mutex mu_;
};

}  // namespace zt
