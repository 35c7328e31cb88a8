// gguf_writer: writes a GGUF v3 file (the layout gguf_file.h reads) in a streaming way: metadata and the tensor
// index are declared first, the header is written from the declared sizes, then each tensor's data follows in
// declaration order, so only one tensor need be in memory at a time. Tensors start at multiples of 32 bytes
// (general.alignment's default; the key is not written). The file is written to <path>.tmp and renamed to
// <path> by finish(): a run that dies or throws never leaves a partial file under the final name (an unfinished
// writer removes its .tmp when destroyed).
//
// Usage:  GgufWriter w(path);  w.add_string("general.architecture", "llama"); ... w.add_tensor(name, shape, type);
//         ... w.write_header();  w.write_tensor_data(bytes, n) per tensor in order ...;  w.finish();
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace zt {

// ggml's tensor type numbers of the types ztinfer writes (gguf_file.cpp's table has the names).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };
// Bytes of a tensor of this type and row-major shape (the last dim a whole number of blocks, else an error).
uint64_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t> & shape);

class GgufWriter {
public:
    explicit GgufWriter(std::string path);   // opens <path>.tmp; an error naming it when it cannot be created
    ~GgufWriter();                           // without finish(): closes and removes <path>.tmp
    GgufWriter(const GgufWriter &) = delete;
    GgufWriter & operator=(const GgufWriter &) = delete;

    // Metadata, in the order added (a key added twice is an error). Arrays hold one element type each.
    void add_string(const std::string & key, const std::string & v);
    void add_u32(const std::string & key, uint32_t v);
    void add_i32(const std::string & key, int32_t v);
    void add_f32(const std::string & key, float v);
    void add_bool(const std::string & key, bool v);
    void add_strings(const std::string & key, const std::vector<std::string> & v);
    void add_i32s(const std::string & key, const std::vector<int32_t> & v);
    void add_f32s(const std::string & key, const std::vector<float> & v);

    // Declares a tensor: row-major shape (outermost first; written as GGUF's ne, reversed) and type.
    void add_tensor(const std::string & name, const std::vector<int64_t> & shape, GgmlType type);
    // Writes magic, version, metadata and the tensor index, padded to the alignment. After every add_*.
    void write_header();
    // Appends bytes of the current tensor's data (in declaration order; several calls may make up one tensor);
    // after the tensor's last byte the padding to the next tensor is written.
    void write_tensor_data(const void * data, uint64_t bytes);
    // Checks that every declared tensor was written in full, flushes, closes and renames <path>.tmp to <path>.
    void finish();

    const std::string & path() const { return path_; }
    uint64_t data_bytes() const { return data_size_; }   // the data section's size (known after the adds)

private:
    struct TensorDecl {
        std::string name;
        std::vector<int64_t> shape;
        GgmlType type;
        uint64_t offset, bytes;   // offset from the data section's start
    };
    std::string path_, tmp_path_;
    std::FILE * f_ = nullptr;
    std::vector<uint8_t> kv_;             // the encoded key/value pairs
    std::vector<std::string> keys_;
    uint64_t kv_count_ = 0;
    std::vector<TensorDecl> tensors_;
    uint64_t data_size_ = 0;
    bool header_written_ = false, finished_ = false;
    size_t current_ = 0;                  // tensor being written
    uint64_t current_written_ = 0;        // its bytes so far

    void begin_kv(const std::string & key, uint32_t value_type);
    void write(const void * p, size_t n);
    void pad_to(uint64_t position_now);
};

}  // namespace zt
