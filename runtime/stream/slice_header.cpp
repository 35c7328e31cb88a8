// Slice file header and slice tags (see slice_header.h): fixed little-endian-as-the-host fields at fixed
// offsets (a file is written and read by the same machine), checked field by field with an error naming the file.
#include "runtime/stream/slice_header.h"

#include <algorithm>
#include <cstring>

#include "runtime/base/error.h"
#include "runtime/base/hash.h"

namespace zt {

namespace {

// header page:  magic[16] | u32 version | u32 rank | u32 world | u32 units | u64 data_bytes | u64 nonce |
//               u32 checkpoint length | char checkpoint[128] | u32 layout length | char layout[64] | zeros
constexpr char kHeaderMagic[16] = "ztinfer slices\n";
constexpr size_t kMaxCheckpoint = 128;
constexpr size_t kMaxLayout = 64;
// tag:          u64 magic | u64 nonce | u64 checkpoint hash | u32 unit | u32 rank | u64 offset | u64 bytes | zeros
constexpr uint64_t kTagMagic = 0x31454349'4c53545aull;   // "ZTSLICE1" read as a little-endian u64

template <typename T>
void put(uint8_t * base, size_t & at, T v) {
    std::memcpy(base + at, &v, sizeof v);
    at += sizeof v;
}
template <typename T>
T get(const uint8_t * base, size_t & at) {
    T v;
    std::memcpy(&v, base + at, sizeof v);
    at += sizeof v;
    return v;
}

}  // namespace

size_t slice_extent(size_t slice_bytes) {
    const size_t a = kSliceHeaderBytes;
    ZT_CHECK(slice_bytes <= SIZE_MAX - kSliceTagBytes - a, "slice of {} bytes is too large for the NVMe file",
             slice_bytes);
    return (slice_bytes + kSliceTagBytes + a - 1) / a * a;
}

uint64_t slice_checkpoint_hash(const std::string & checkpoint) {
    return fnv1a64(checkpoint);
}

void encode_slice_header(const SliceFileHeader & h, void * page) {
    ZT_CHECK(h.checkpoint.size() <= kMaxCheckpoint, "checkpoint identity '{}' is longer than {} characters",
             h.checkpoint, kMaxCheckpoint);
    ZT_CHECK(h.layout.size() <= kMaxLayout, "layout identity '{}' is longer than {} characters", h.layout, kMaxLayout);
    uint8_t * p = static_cast<uint8_t *>(page);
    std::memset(p, 0, kSliceHeaderBytes);
    std::memcpy(p, kHeaderMagic, sizeof kHeaderMagic);
    size_t at = sizeof kHeaderMagic;
    put(p, at, kSliceFormatVersion);
    put(p, at, h.rank);
    put(p, at, h.world);
    put(p, at, h.units);
    put(p, at, h.data_bytes);
    put(p, at, h.nonce);
    put(p, at, uint32_t(h.checkpoint.size()));
    std::memcpy(p + at, h.checkpoint.data(), h.checkpoint.size());
    at += kMaxCheckpoint;
    put(p, at, uint32_t(h.layout.size()));
    std::memcpy(p + at, h.layout.data(), h.layout.size());
}

bool decode_slice_header(const void * page, SliceFileHeader & out, uint32_t & version) {
    const uint8_t * p = static_cast<const uint8_t *>(page);
    if (std::memcmp(p, kHeaderMagic, sizeof kHeaderMagic) != 0) return false;
    size_t at = sizeof kHeaderMagic;
    version = get<uint32_t>(p, at);
    out = SliceFileHeader{};
    if (version != kSliceFormatVersion) return true;
    out.rank = get<uint32_t>(p, at);
    out.world = get<uint32_t>(p, at);
    out.units = get<uint32_t>(p, at);
    out.data_bytes = get<uint64_t>(p, at);
    out.nonce = get<uint64_t>(p, at);
    const auto n = std::min<uint32_t>(get<uint32_t>(p, at), kMaxCheckpoint);
    out.checkpoint.assign(reinterpret_cast<const char *>(p + at), n);
    at += kMaxCheckpoint;
    const auto l = std::min<uint32_t>(get<uint32_t>(p, at), kMaxLayout);
    out.layout.assign(reinterpret_cast<const char *>(p + at), l);
    return true;
}

void check_slice_header(const void * page, const SliceFileHeader & want, const std::string & file) {
    SliceFileHeader got;
    uint32_t version = 0;
    ZT_CHECK(decode_slice_header(page, got, version), "{} is not a ztinfer NVMe slice file (its first page has no "
             "slice header: the file is truncated or was written by something else): check that nothing else writes "
             "under nvme_path", file);
    ZT_CHECK(version == kSliceFormatVersion, "{} is an NVMe slice file of format version {}, this ztinfer reads "
             "version {}: it was written by another ztinfer version", file, version, kSliceFormatVersion);
    ZT_CHECK(got.checkpoint == want.checkpoint, "{} holds weight slices of another model (checkpoint {}), not of "
             "this job's model (checkpoint {}): something else wrote into this job's file; check what writes under "
             "nvme_path", file, got.checkpoint.empty() ? "unknown" : got.checkpoint,
             want.checkpoint.empty() ? "unknown" : want.checkpoint);
    ZT_CHECK(got.rank == want.rank && got.world == want.world, "{} holds the slices of rank {} of {}, this is rank {} "
             "of {}: the file belongs to another job", file, got.rank, got.world, want.rank, want.world);
    ZT_CHECK(got.units == want.units && got.data_bytes == want.data_bytes && got.layout == want.layout, "{} holds {} "
             "slices in {} bytes (layout {}), this job's partition has {} slices in {} bytes (layout {}): the file "
             "belongs to another job or partition", file, got.units, got.data_bytes, got.layout, want.units,
             want.data_bytes, want.layout);
    ZT_CHECK(got.nonce == want.nonce, "{} holds another job's copy of these slices (file nonce {:016x}, expected "
             "{:016x}): something else wrote into this job's file; check what writes under nvme_path", file, got.nonce,
             want.nonce);
}

void encode_slice_tag(const SliceTag & t, void * dst) {
    uint8_t * p = static_cast<uint8_t *>(dst);
    std::memset(p, 0, kSliceTagBytes);
    size_t at = 0;
    put(p, at, kTagMagic);
    put(p, at, t.nonce);
    put(p, at, t.checkpoint);
    put(p, at, t.unit);
    put(p, at, t.rank);
    put(p, at, t.offset);
    put(p, at, t.bytes);
}

bool decode_slice_tag(const void * src, SliceTag & got) {
    const uint8_t * p = static_cast<const uint8_t *>(src);
    size_t at = 0;
    const auto magic = get<uint64_t>(p, at);
    got.nonce = get<uint64_t>(p, at);
    got.checkpoint = get<uint64_t>(p, at);
    got.unit = get<uint32_t>(p, at);
    got.rank = get<uint32_t>(p, at);
    got.offset = get<uint64_t>(p, at);
    got.bytes = get<uint64_t>(p, at);
    return magic == kTagMagic;
}

void check_slice_tag(const void * src, const SliceTag & want, const std::string & file, const std::string & unit_name) {
    SliceTag got;
    ZT_CHECK(decode_slice_tag(src, got), "the slice of {} read from {} at offset {} ends without its slice tag: the file was "
             "truncated or overwritten while the job ran; check that nothing else writes under nvme_path", unit_name,
             file, want.offset);
    ZT_CHECK(got.checkpoint == want.checkpoint, "the slice of {} read from {} at offset {} belongs to another model "
             "(checkpoint hash {:016x}, this job's is {:016x}): the file was overwritten while the job ran; check that "
             "nothing else writes under nvme_path", unit_name, file, want.offset, got.checkpoint, want.checkpoint);
    ZT_CHECK(got.nonce == want.nonce, "the slice of {} read from {} at offset {} was written by another job (file "
             "nonce {:016x}, expected {:016x}): the file was overwritten while the job ran; check that nothing else "
             "writes under nvme_path", unit_name, file, want.offset, got.nonce, want.nonce);
    ZT_CHECK(got.unit == want.unit && got.rank == want.rank && got.offset == want.offset && got.bytes == want.bytes,
             "the bytes read from {} at offset {} are the slice of unit #{} of rank {} ({} bytes at offset {}), not "
             "of {} (unit #{}) of rank {} ({} bytes): the file was overwritten while the job ran", file, want.offset,
             got.unit, got.rank, got.bytes, got.offset, unit_name, want.unit, want.rank, want.bytes);
}

}  // namespace zt
