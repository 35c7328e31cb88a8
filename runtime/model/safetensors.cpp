// Safetensors: header validation (every rule in safetensors.h, checked before anything is trusted), the
// read-only mmap of a file, and the writer. Header checks run on the bytes alone, so the fuzzer drives them.
#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/model/unicode_text.h"

namespace zt {

namespace {

uint64_t read_u64_le(const uint8_t * p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// A non-negative JSON integer that fits in uint64 (nlohmann stores larger literals as float: rejected).
bool json_to_u64(const nlohmann::json & v, uint64_t & out) {
    if (!v.is_number_integer()) return false;
    if (v.is_number_unsigned()) { out = v.get<uint64_t>(); return true; }
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    out = uint64_t(s);
    return true;
}

SafetensorsEntry parse_entry(const std::string & key, const nlohmann::json & e, const std::string & path) {
    const std::string name = cut_for_message(key);   // for messages: a hostile name may be megabytes long
    ZT_CHECK(e.is_object(), "{}: tensor '{}' in the safetensors header is not a JSON object; the file is "
             "corrupt or not safetensors", path, name);
    SafetensorsEntry out;
    out.name = key;

    auto it = e.find("dtype");
    ZT_CHECK(it != e.end() && it->is_string(), "{}: tensor '{}' has no \"dtype\" string", path, name);
    const std::string dtype = it->get<std::string>();
    const auto t = dtype_from_name(dtype);
    ZT_CHECK(t.has_value() && !dtype_is_quantized(*t), "{}: tensor '{}' has unknown dtype \"{}\" (known: F32, F16, BF16, F64, I64, I32, "
             "I16, I8, U8, BOOL)", path, name, dtype);
    out.dtype = *t;

    it = e.find("shape");
    ZT_CHECK(it != e.end() && it->is_array(), "{}: tensor '{}' has no \"shape\" array", path, name);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto & d : *it) {
        uint64_t dim = 0;
        ZT_CHECK(json_to_u64(d, dim) && dim <= uint64_t(std::numeric_limits<int64_t>::max()),
                 "{}: tensor '{}' has a shape entry {} that is not a non-negative 64-bit integer", path, name,
                 quote_json(d));
        out.shape.push_back(int64_t(dim));
        overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
    }
    uint64_t bytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(out.dtype)), &bytes);
    ZT_CHECK(!overflow, "{}: tensor '{}' shape {} x {} ({} bytes each) overflows 64 bits; the header is corrupt",
             path, name, quote_json(*it), dtype, dtype_size(out.dtype));

    it = e.find("data_offsets");
    ZT_CHECK(it != e.end() && it->is_array() && it->size() == 2,
             "{}: tensor '{}' has no \"data_offsets\": [begin, end] pair", path, name);
    uint64_t begin = 0, end = 0;
    ZT_CHECK(json_to_u64((*it)[0], begin) && json_to_u64((*it)[1], end),
             "{}: tensor '{}' data_offsets {} are not non-negative 64-bit integers", path, name, quote_json(*it));
    ZT_CHECK(begin <= end, "{}: tensor '{}' has reversed data_offsets [{}, {}] (begin > end)", path, name, begin,
             end);
    ZT_CHECK(end - begin == bytes, "{}: tensor '{}' spans {} bytes (data_offsets [{}, {}]) but its shape {} x {} "
             "needs {} bytes", path, name, end - begin, begin, end, quote_json(e.at("shape")),
             dtype, bytes);
    out.file_offset = begin;   // relative for now; made absolute by the caller after the layout checks
    out.bytes = bytes;
    return out;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t * data, size_t size, const std::string & path) {
    ZT_CHECK(size >= 8, "{}: file has {} bytes, fewer than the 8-byte header length of a safetensors file; it is "
             "truncated or not safetensors", path, size);
    const uint64_t n = read_u64_le(data);
    ZT_CHECK(n <= kSafetensorsMaxHeaderBytes, "{}: safetensors header length {} exceeds the {}-byte limit; the "
             "file is corrupt or not safetensors", path, n, kSafetensorsMaxHeaderBytes);
    ZT_CHECK(n <= size - 8, "{}: safetensors header length {} is larger than the {} bytes after the length "
             "field; the file is truncated", path, n, size - 8);
    ZT_CHECK(n >= 2 && data[8] == '{', "{}: safetensors header does not start with '{{'; the file is corrupt or "
             "not safetensors", path);

    const uint8_t * h = data + 8;
    ZT_CHECK(utf8_is_valid(std::string_view(reinterpret_cast<const char *>(h), size_t(n))), "{}: safetensors header is not valid UTF-8", path);

    // nesting-limited (the header is attacker-controlled): no value quoted below can recurse deeply
    const nlohmann::json j =
        parse_json_file(std::string_view(reinterpret_cast<const char *>(h), size_t(n)), path + ": safetensors header");
    ZT_CHECK(j.is_object(), "{}: safetensors header is not a JSON object", path);

    SafetensorsHeader out;
    out.data_start = 8 + n;
    const uint64_t data_bytes = uint64_t(size) - out.data_start;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__") {
            ZT_CHECK(it->is_object(), "{}: \"__metadata__\" is not a JSON object", path);
            for (auto m = it->begin(); m != it->end(); ++m) {
                ZT_CHECK(m->is_string(), "{}: \"__metadata__\" value for '{}' is not a string", path, m.key());
                out.metadata[m.key()] = m->get<std::string>();
            }
            continue;
        }
        out.entries.push_back(parse_entry(it.key(), *it, path));
    }

    // Layout: sorted by begin (zero-size tensors first at equal begins), contiguous from 0, ends at EOF.
    std::sort(out.entries.begin(), out.entries.end(), [](const SafetensorsEntry & a, const SafetensorsEntry & b) {
        if (a.file_offset != b.file_offset) return a.file_offset < b.file_offset;
        if (a.bytes != b.bytes) return a.bytes < b.bytes;
        return a.name < b.name;
    });
    uint64_t pos = 0;
    const SafetensorsEntry * prev = nullptr;
    for (auto & e : out.entries) {
        const uint64_t begin = e.file_offset, end = begin + e.bytes;
        if (begin < pos) {
            ZT_FAIL("{}: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' which ends at {}; the header is "
                    "corrupt", path, cut_for_message(e.name), begin, end,
                    prev ? cut_for_message(prev->name) : "", pos);
        }
        if (begin > pos) {
            ZT_FAIL("{}: gap of {} bytes before tensor '{}' (data_offsets [{}, {}]){}; safetensors data must be "
                    "contiguous from 0", path, begin - pos, cut_for_message(e.name), begin, end,
                    prev ? fmt::format(", after tensor '{}' which ends at {}", cut_for_message(prev->name), pos)
                         : std::string());
        }
        ZT_CHECK(end <= data_bytes, "{}: file is truncated: tensor '{}' ends at data offset {} (file byte {}) but the "
                 "file has {} bytes ({} bytes of data); re-download or re-convert the checkpoint", path,
                 cut_for_message(e.name), end,
                 out.data_start + end, size, data_bytes);
        pos = end;
        prev = &e;
        e.file_offset = out.data_start + begin;
    }
    ZT_CHECK(pos == data_bytes, "{}: the tensors end at data offset {} but the file has {} bytes of data ({} bytes "
             "in all): {} trailing bytes; the file is corrupt", path, pos, data_bytes, size, data_bytes - pos);
    return out;
}

SafetensorsFile::SafetensorsFile(const std::string & path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ZT_CHECK(fd >= 0, "{}: cannot open safetensors file: {}", path, std::strerror(errno));
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        ZT_FAIL("{}: cannot stat safetensors file: {}", path, std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        ZT_FAIL("{}: is not a regular file", path);
    }
    size_ = size_t(st.st_size);
    if (size_ < 8) {
        ::close(fd);
        ZT_FAIL("{}: file has {} bytes, fewer than the 8-byte header length of a safetensors file; it is truncated "
                "or not safetensors", path, size_);
    }
    void * m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    ZT_CHECK(m != MAP_FAILED, "{}: cannot mmap {} bytes: {}", path, size_, std::strerror(err));
    map_ = static_cast<const uint8_t *>(m);
    try {
        header_ = parse_safetensors_header(map_, size_, path);
    } catch (...) {
        ::munmap(const_cast<uint8_t *>(map_), size_);
        map_ = nullptr;
        throw;
    }
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) ::munmap(const_cast<uint8_t *>(map_), size_);
}

const SafetensorsEntry * SafetensorsFile::find(const std::string & name) const {
    for (const auto & e : header_.entries)
        if (e.name == name) return &e;
    return nullptr;
}

Tensor SafetensorsFile::tensor(const SafetensorsEntry & e) const {
    return Tensor(const_cast<uint8_t *>(map_ + e.file_offset), e.dtype, e.shape);
}

void write_safetensors(const std::string & path, const std::vector<SafetensorsWriteEntry> & tensors,
                       const std::map<std::string, std::string> & metadata) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata.empty()) h["__metadata__"] = metadata;
    std::vector<uint64_t> sizes;
    uint64_t offset = 0;
    for (const auto & t : tensors) {
        ZT_CHECK(t.name != "__metadata__", "{}: a tensor cannot be named __metadata__", path);
        ZT_CHECK(!h.contains(t.name), "{}: tensor '{}' is written twice", path, t.name);
        uint64_t numel = 1, bytes = 0;
        for (int64_t d : t.shape) {
            ZT_CHECK(d >= 0 && !__builtin_mul_overflow(numel, uint64_t(d), &numel),
                     "{}: tensor '{}' has a negative or overflowing shape", path, t.name);
        }
        ZT_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &bytes),
                 "{}: tensor '{}' is too large", path, t.name);
        ZT_CHECK(bytes == 0 || t.data != nullptr, "{}: tensor '{}' has no data", path, t.name);
        h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        sizes.push_back(bytes);
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');

    const std::string tmp = path + ".tmp";
    FILE * f = std::fopen(tmp.c_str(), "wb");
    ZT_CHECK(f, "{}: cannot create: {}", tmp, std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
    for (size_t i = 0; ok && i < tensors.size(); ++i)
        ok = sizes[i] == 0 || std::fwrite(tensors[i].data, 1, sizes[i], f) == sizes[i];
    const int err = errno;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) {
        std::remove(tmp.c_str());
        ZT_FAIL("{}: write failed: {}", path, std::strerror(err));
    }
    ZT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "{}: cannot rename {} into place: {}", path, tmp,
             std::strerror(errno));
}

}  // namespace zt
