// Reusable NVMe slice files (ztinfer.nvme_reuse, the default): a rank's slice file has a name in nvme_path that
// says whose it is, <nvme_path>/ztinfer-<16 hex of a hash of the model path>-rank<r>-of<w>.slices, so a rerun of
// the job (a requeued, preempted Slurm job) finds the file its previous run wrote and reads its slices from there
// instead of copying them out of the checkpoint again. A file is reused only when all of this holds:
//   - a regular file (opened with O_NOFOLLOW: a symlink is never followed), owned by this user, one link, not
//     writable by group or others, that no one holds an exclusive flock on;
//   - its size is exactly this rank's header page + slice extents;
//   - its header (slice_header.h) has this format version, this checkpoint identity (config.json, every weight
//     file's name, size and mtime, the tensor index), this layout identity (slice_layout_identity: every streamed
//     unit, its tensors, offsets and dtypes, the slice sizes and extents, world, rank, format version), rank,
//     world, unit count and data size;
//   - the 64-byte tag at the end of every slice extent reads back as that slice's (the header's nonce, unit, rank,
//     offset, size, checkpoint hash).
// The slices themselves are not read at start-up (that would cost what reuse saves); every read while the job
// runs still checks its slice's tag, so bytes that are not this file's slice stay an error, never weights.
// Otherwise the weight store writes a new file (NvmeFile, published atomically under the name: a job still
// reading the old one keeps its inode) and logs why the old one was not reused.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/stream/layer_partition.h"
#include "runtime/stream/slice_header.h"

namespace zt {

// "ztinfer-<16 hex>-": the start of every rank's file name of the model at `model` (any world size).
std::string slice_file_prefix(const std::string & model);
// <nvme_path>/<slice_file_prefix(model)>rank<r>-of<w>.slices
std::string slice_file_path(const std::string & nvme_path, const std::string & model, int rank, int world);

// 32 hex characters: a hash of everything that decides the bytes of rank `rank`'s file besides the checkpoint:
// every unit of `plan` (index, name, kind, streamed, flat / slice / packed bytes, every tensor's name, dtype, shape,
// offset, bytes and persistence), `extent_offsets` (each unit's extent offset in the file, 0 for resident units),
// the world size, the rank and the slice format version.
std::string slice_layout_identity(const PartitionPlan & plan, int rank, const std::vector<uint64_t> & extent_offsets);

// The expectation for one slice extent of the file: its tag (the nonce and checkpoint hash are taken from the
// file's header) and the unit's name for messages.
struct ExpectedSlice {
    SliceTag tag;
    std::string name;
};

struct ReusableFile {
    int fd = -1;              // open read-only on the file, holding a shared flock; -1: not reusable
    SliceFileHeader header;   // what the file's header says (its nonce), when reusable
    std::string why;          // why it is not reusable ("no file yet", "truncated: ...", ...); "" when it is
    bool missing = false;     // there was no file under the name at all
};

// Opens `path` and checks the rules above against `want` (all fields but the nonce), `file_bytes` and `slices`.
// Never throws for what it finds in the folder: whatever is wrong is `why`.
ReusableFile open_reusable_slice_file(const std::string & path, const SliceFileHeader & want, uint64_t file_bytes,
                                      const std::vector<ExpectedSlice> & slices);

// Removes the file at `path` when it is a regular file of this user that no process holds (LOCK_EX | LOCK_NB),
// so that writing its replacement does not need room for both; true when it did. A file in use stays (the
// replacement's rename takes its name; its readers keep the old inode).
bool remove_unused_slice_file(const std::string & path);

// Logs (one info line) the ztinfer-*.slices files in `nvme_path` that no process holds now (LOCK_EX | LOCK_NB
// succeeds), with their sizes, except those of this model and world (`own_prefix`, `world`: this job's ranks'):
// the user may delete them. Deletes nothing.
void log_unused_slice_files(const std::string & nvme_path, const std::string & own_prefix, int world);

}  // namespace zt
