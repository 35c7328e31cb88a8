// The layout of a rank's NVMe slice file, and how it says whose bytes it holds. Page 0 is a header (checkpoint
// identity, layout identity, rank, world, data size, a random per-file nonce); each streamed slice sits in an
// extent of whole pages whose last 64 bytes are a tag (nonce, unit, rank, offset, size, checkpoint hash). The
// weight store checks the header once its writes are done or when it reuses a file (read back through the
// O_DIRECT path), the tags of a file it reuses, and the tag of every slice it reads: bytes from another model or
// another job's file are an error naming the file, never weights computed with.
//
//   file:   | header (4096) | slice of unit a | 0 pad | tag (64) | slice of unit b | 0 pad | tag | ...
//   extent of a slice: slice_extent(slice_bytes) = round_up(slice_bytes + 64, 4096) bytes, 4096-aligned
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace zt {

constexpr size_t kSliceHeaderBytes = 4096;   // page 0
constexpr size_t kSliceTagBytes = 64;        // the last bytes of each slice's extent
constexpr uint32_t kSliceFormatVersion = 2;   // 2: the header names the layout (slice_layout_identity)

// Bytes a slice of `slice_bytes` takes in the file (slice + padding + tag), a multiple of 4096.
size_t slice_extent(size_t slice_bytes);

struct SliceFileHeader {
    std::string checkpoint;    // the checkpoint identity (checkpoint_identity(); at most 128 chars), "" if unknown
    std::string layout;        // the layout identity (slice_layout_identity(); at most 64 chars), "" if unknown
    uint64_t nonce = 0;        // random per file: tells this file's bytes from any other file's
    uint32_t rank = 0;
    uint32_t world = 1;
    uint32_t units = 0;        // streamed units (slices) in the file
    uint64_t data_bytes = 0;   // bytes after the header page (the sum of the slice extents)
};

// Writes `h` into `page` (kSliceHeaderBytes, zero-filled beyond the fields).
void encode_slice_header(const SliceFileHeader & h, void * page);
// Checks that `page` (kSliceHeaderBytes read from the start of `file`) is the header `want`. Throws zt::Error
// naming `file` and what differs (not a slice file / truncated, format version, checkpoint, rank/world, size, nonce).
void check_slice_header(const void * page, const SliceFileHeader & want, const std::string & file);
// Reads the header in `page` into `out` without judging it; false when the page has no slice header (magic).
// `version` gets the format version it was written with (the other fields mean nothing unless it is ours).
bool decode_slice_header(const void * page, SliceFileHeader & out, uint32_t & version);

struct SliceTag {
    uint64_t nonce = 0;        // the file's nonce
    uint64_t checkpoint = 0;   // slice_checkpoint_hash(header.checkpoint)
    uint32_t unit = 0;         // index in the partition plan
    uint32_t rank = 0;
    uint64_t offset = 0;       // the extent's offset in the file
    uint64_t bytes = 0;        // slice_bytes
};
uint64_t slice_checkpoint_hash(const std::string & checkpoint);

// Writes `t` into `dst` (kSliceTagBytes).
void encode_slice_tag(const SliceTag & t, void * dst);
// Checks that `src` (the last kSliceTagBytes of an extent just read from `file`) is the tag `want`. Throws
// zt::Error naming `file`, the unit (`unit_name`) and the offset when the bytes are not this file's slice.
void check_slice_tag(const void * src, const SliceTag & want, const std::string & file, const std::string & unit_name);
// Reads the tag in `src` into `out` without judging it; false when it has no tag magic.
bool decode_slice_tag(const void * src, SliceTag & out);

}  // namespace zt
