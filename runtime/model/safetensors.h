// Safetensors reader (mmap) that enforces the format's rules, and a writer.
// File layout: u64 little-endian N | N bytes of UTF-8 JSON header | data. Header: {"name": {"dtype": "F32",
// "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}; offsets are relative to the
// data section, contiguous from 0 with no gap or overlap, and the last one ends exactly at the end of the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model/dtype.h"
#include "runtime/model/tensor.h"

namespace zt {

constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsEntry {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t file_offset = 0;   // absolute byte offset of the data in the file
    uint64_t bytes = 0;         // = numel * dtype_size (checked)
};

struct SafetensorsHeader {
    std::vector<SafetensorsEntry> entries;       // sorted by file_offset
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;                     // 8 + header length
};

// Validates the header of a safetensors file held in memory (the whole file: `size` bytes) and returns its
// entries. Throws zt::Error naming `path` (and the tensor, where one is at fault) on any violation. Never reads
// outside [data, data + size) and allocates nothing in proportion to a claimed size before checking it.
SafetensorsHeader parse_safetensors_header(const uint8_t * data, size_t size, const std::string & path);

// A safetensors file mapped read-only into memory.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string & path);   // opens, mmaps, validates; throws zt::Error
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile &) = delete;
    SafetensorsFile & operator=(const SafetensorsFile &) = delete;

    const std::string & path() const { return path_; }
    const SafetensorsHeader & header() const { return header_; }
    const SafetensorsEntry * find(const std::string & name) const;   // nullptr when absent
    Tensor tensor(const SafetensorsEntry & e) const;                  // view into the mapping (read-only memory)

private:
    std::string path_;
    const uint8_t * map_ = nullptr;
    size_t size_ = 0;
    SafetensorsHeader header_;
};

// One tensor to write: name, dtype, shape and `numel * dtype_size` bytes of data.
struct SafetensorsWriteEntry {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const void * data = nullptr;
};
// Writes a safetensors file (tensors in the given order; header padded with spaces to a multiple of 8).
void write_safetensors(const std::string & path, const std::vector<SafetensorsWriteEntry> & tensors,
                       const std::map<std::string, std::string> & metadata = {});

}  // namespace zt
