// gguf_file: reads and validates a GGUF file's header (llama.cpp's model format, versions 2 and 3): the metadata
// key/values and the tensor index, with every size and offset checked against the file before use (checked
// arithmetic, offsets inside the file and aligned, known tensor types only), so a truncated or hostile file is a
// clear error naming the file and what is wrong, never a crash or a huge allocation. Tensor data is not read here.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count x (string key, u32 type,
// value); tensor_count x (string name, u32 n_dims, u64 ne[n_dims] (ne[0] = the innermost, contiguous dimension),
// u32 ggml type, u64 offset from the data section); padding to general.alignment (default 32); the data section.
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zt {

struct GgufTensorInfo {
    std::string name;
    std::vector<int64_t> shape;   // row-major, outermost first (ne reversed): a (rows, cols) matrix is {rows, cols}
    uint32_t ggml_type = 0;
    std::string type_name;        // "Q4_K", "F32", ...
    uint64_t offset = 0;          // absolute byte offset of the tensor's data in the file
    uint64_t bytes = 0;
};

struct GgufFile {
    std::string path;
    uint32_t version = 0;
    uint64_t alignment = 32;
    uint64_t data_offset = 0;           // where the data section starts
    nlohmann::json metadata;            // key -> value (integers, floats, bool, string, arrays)
    std::vector<GgufTensorInfo> tensors;   // in file order
};

// Reads and checks the header of the GGUF file at path. Errors (ZT_CHECK) name the file and the problem: not a
// GGUF file, an unsupported version, a truncated header, a size past the end of the file, a duplicate key or tensor,
// a tensor type ztinfer cannot read (named, e.g. IQ2_XS), a row that is not a whole number of blocks, data outside
// the file or not aligned.
GgufFile read_gguf_header(const std::string & path);
// The same checks on a whole file held in memory (data, size bytes); name stands for the path in errors.
GgufFile parse_gguf_header(const uint8_t * data, size_t size, const std::string & name);

// ggml's name of a tensor type ("Q4_K"), or "type N" for a number it does not know.
std::string ggml_type_name(uint32_t ggml_type);

}  // namespace zt
