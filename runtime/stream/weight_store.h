// WeightStore: where this rank's share of the weights lives between steps (the tier, from
// zero_optimization.offload_param.device), and how a slice gets from there to the backend:
//   "none": every unit whole in backend memory (the reference; nothing is fetched);
//   "cpu":  this rank's slices in pinned host memory (Backend::alloc pinned_host); fetch = copy_async;
//   "nvme": this rank's slices in a file in nvme_path. nvme_reuse (default): the file is named for the model,
//           rank and world (<nvme_path>/ztinfer-<hash of the model path>-rank<r>-of<w>.slices) and kept after
//           the job; a rerun reuses it when its header, size and slice tags match (slice_file_reuse.h) and reads
//           no slice from the checkpoint; otherwise it writes a new one (nameless while written, then renamed
//           into place) and logs why. nvme_reuse false: a nameless file (NvmeFile: O_TMPFILE; private to this
//           job, gone when it ends or is killed; labelled <nvme_path>/ztinfer-rank<r>.weights). Either way it is
//           read back every step with io_uring + O_DIRECT (aio.block_size chunks, aio.queue_depth in flight) into
//           a ring of buffer_count pinned staging buffers, then copy_async'ed; short reads / EIO are retried a
//           bounded number of times, then a clear error. The file starts with a header page (checkpoint identity,
//           layout identity, rank, world, a per-file nonce; slice_header.h), checked once written or reused, and
//           every slice ends with a tag checked on every read: bytes that are not this file's slice are an error,
//           never computed with.
// Resident units and persistent tensors live in backend memory on every rank. At start-up each rank reads only
// its own byte ranges of the checkpoint (plus resident units and persistent tensors); none of its slices when it
// reuses its NVMe file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/stream/layer_partition.h"

namespace zt {

enum class OffloadTier { none, cpu, nvme };
const char * offload_tier_name(OffloadTier t);

struct WeightStoreOptions {
    OffloadTier tier = OffloadTier::none;
    std::string nvme_path;          // offload_param.nvme_path (folder), for "nvme"
    std::string checkpoint;         // checkpoint_identity() of the model, written in the NVMe file's header
    bool nvme_reuse = true;         // ztinfer.nvme_reuse: a named NVMe file, reused by the next job when it matches
    std::string model;              // the model path (names the reusable NVMe file; required with nvme_reuse)
    size_t aio_block_size = 1 << 20;  // aio.block_size: bytes per read request
    int aio_queue_depth = 8;        // aio.queue_depth: reads in flight
    int buffer_count = 4;           // offload_param.buffer_count: staging buffers in the ring
    int max_retries = 3;            // a failed or short read is retried this many times, then an error
};

struct WeightMemory {               // host bytes this rank holds for weights (on the CPU backend, all of it)
    size_t slices = 0;              // own slices ("cpu" tier)
    size_t staging = 0;             // NVMe staging ring
    size_t resident = 0;            // resident units + persistent tensors
    size_t total() const { return slices + staging + resident; }
};

class WeightStore {
public:
    // Copies this rank's bytes out of the plan's sources (the checkpoint); afterwards the checkpoint may be closed.
    WeightStore(const PartitionPlan & plan, int rank, Backend & backend, const WeightStoreOptions & options);
    ~WeightStore();                 // waits for queued NVMe fetches, then closes (frees) the NVMe file
    WeightStore(const WeightStore &) = delete;
    WeightStore & operator=(const WeightStore &) = delete;

    // The whole flat buffer of a resident unit (backend memory); nullptr for a streamed one.
    const void * resident_flat(int unit) const;
    // The unit's persistent block (backend memory); nullptr when it has none.
    const void * persistent(int unit) const;
    // Queues on stream s: this rank's slice of streamed `unit` -> dst (slice_bytes of backend memory).
    // "nvme": every fetch must go to the same stream (the staging ring is reused in that stream's order); a read
    // that fails is rethrown by the next synchronize of s.
    void fetch_slice(int unit, void * dst, Stream * s);

    WeightMemory memory() const;
    OffloadTier tier() const;
    const std::string & nvme_file() const;   // the NVMe file's name or label (NvmeFile::path()); empty unless "nvme"
    bool nvme_file_reused() const;           // the NVMe file was reused from an earlier job (no slice was written)
    uint64_t nvme_file_bytes() const;        // the NVMe file's size (NvmeFile::size(), padded); 0 unless "nvme"

    struct Impl;
private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace zt
