// gguf_writer: GGUF v3 writer (see gguf_writer.h). Little-endian, as the format is (the engine's hosts are).
#include "runtime/model/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"

namespace zt {
namespace {

constexpr uint64_t kAlignment = 32;
// GGUF metadata value types
constexpr uint32_t kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9;

uint64_t align_up(uint64_t x) { return (x + kAlignment - 1) / kAlignment * kAlignment; }

template <class T>
void put(std::vector<uint8_t> & out, T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
}
void put_string(std::vector<uint8_t> & out, const std::string & s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

uint64_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t> & shape) {
    ZT_CHECK(!shape.empty(), "internal: a GGUF tensor needs at least one dimension");
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    const int64_t k = shape.back();
    int64_t row_bytes = 0;
    switch (t) {
        case GgmlType::F32: row_bytes = 4 * k; break;
        case GgmlType::F16: row_bytes = 2 * k; break;
        case GgmlType::Q8_0: row_bytes = quant_row_bytes(QuantType::Q8_0, k); break;
        case GgmlType::Q4_0: row_bytes = quant_row_bytes(QuantType::Q4_0, k); break;
        case GgmlType::Q4_1: row_bytes = quant_row_bytes(QuantType::Q4_1, k); break;
        case GgmlType::Q4_K: row_bytes = quant_row_bytes(QuantType::Q4_K, k); break;
        case GgmlType::Q5_K: row_bytes = quant_row_bytes(QuantType::Q5_K, k); break;
        case GgmlType::Q6_K: row_bytes = quant_row_bytes(QuantType::Q6_K, k); break;
    }
    return uint64_t(rows) * uint64_t(row_bytes);
}

GgufWriter::GgufWriter(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
    f_ = std::fopen(tmp_path_.c_str(), "wb");
    ZT_CHECK(f_ != nullptr, "cannot create {}: {} (check that the --out folder exists and is writable)", tmp_path_,
             std::strerror(errno));
}

GgufWriter::~GgufWriter() {
    if (f_) std::fclose(f_);
    if (!finished_) {
        std::error_code ec;
        std::filesystem::remove(tmp_path_, ec);
    }
}

void GgufWriter::begin_kv(const std::string & key, uint32_t value_type) {
    ZT_CHECK(!header_written_, "internal: GGUF metadata {} added after the header was written", key);
    for (const auto & k : keys_) ZT_CHECK(k != key, "internal: GGUF metadata key {} added twice", key);
    keys_.push_back(key);
    ++kv_count_;
    put_string(kv_, key);
    put<uint32_t>(kv_, value_type);
}

void GgufWriter::add_string(const std::string & key, const std::string & v) { begin_kv(key, kString); put_string(kv_, v); }
void GgufWriter::add_u32(const std::string & key, uint32_t v) { begin_kv(key, kU32); put<uint32_t>(kv_, v); }
void GgufWriter::add_i32(const std::string & key, int32_t v) { begin_kv(key, kI32); put<int32_t>(kv_, v); }
void GgufWriter::add_f32(const std::string & key, float v) { begin_kv(key, kF32); put<float>(kv_, v); }
void GgufWriter::add_bool(const std::string & key, bool v) { begin_kv(key, kBool); put<uint8_t>(kv_, v ? 1 : 0); }

void GgufWriter::add_strings(const std::string & key, const std::vector<std::string> & v) {
    begin_kv(key, kArray);
    put<uint32_t>(kv_, kString);
    put<uint64_t>(kv_, v.size());
    for (const auto & s : v) put_string(kv_, s);
}
void GgufWriter::add_i32s(const std::string & key, const std::vector<int32_t> & v) {
    begin_kv(key, kArray);
    put<uint32_t>(kv_, kI32);
    put<uint64_t>(kv_, v.size());
    for (int32_t x : v) put<int32_t>(kv_, x);
}
void GgufWriter::add_f32s(const std::string & key, const std::vector<float> & v) {
    begin_kv(key, kArray);
    put<uint32_t>(kv_, kF32);
    put<uint64_t>(kv_, v.size());
    for (float x : v) put<float>(kv_, x);
}

void GgufWriter::add_tensor(const std::string & name, const std::vector<int64_t> & shape, GgmlType type) {
    ZT_CHECK(!header_written_, "internal: GGUF tensor {} added after the header was written", name);
    for (const auto & t : tensors_) ZT_CHECK(t.name != name, "internal: GGUF tensor {} added twice", name);
    for (int64_t d : shape) ZT_CHECK(d > 0, "internal: GGUF tensor {} has a dimension of {}", name, d);
    const uint64_t bytes = ggml_tensor_bytes(type, shape);
    tensors_.push_back({name, shape, type, data_size_, bytes});
    data_size_ = align_up(data_size_ + bytes);
}

void GgufWriter::write(const void * p, size_t n) {
    if (n == 0) return;
    ZT_CHECK(std::fwrite(p, 1, n, f_) == n, "cannot write {}: {} (is the disk full?)", tmp_path_, std::strerror(errno));
}

void GgufWriter::write_header() {
    ZT_CHECK(!header_written_ && f_, "internal: GGUF header of {} written twice", path_);
    std::vector<uint8_t> h;
    h.insert(h.end(), {'G', 'G', 'U', 'F'});
    put<uint32_t>(h, 3);
    put<uint64_t>(h, tensors_.size());
    put<uint64_t>(h, kv_count_);
    h.insert(h.end(), kv_.begin(), kv_.end());
    for (const auto & t : tensors_) {
        put_string(h, t.name);
        put<uint32_t>(h, uint32_t(t.shape.size()));
        for (size_t i = t.shape.size(); i-- > 0;) put<uint64_t>(h, uint64_t(t.shape[i]));   // ne: innermost first
        put<uint32_t>(h, uint32_t(t.type));
        put<uint64_t>(h, t.offset);
    }
    h.resize(size_t(align_up(h.size())), 0);
    write(h.data(), h.size());
    header_written_ = true;
    kv_.clear();
    kv_.shrink_to_fit();
}

void GgufWriter::write_tensor_data(const void * data, uint64_t bytes) {
    ZT_CHECK(header_written_ && !finished_, "internal: GGUF tensor data before the header of {}", path_);
    ZT_CHECK(current_ < tensors_.size(), "internal: more tensor data than the {} tensors declared for {}",
             tensors_.size(), path_);
    const TensorDecl & t = tensors_[current_];
    ZT_CHECK(current_written_ + bytes <= t.bytes, "internal: tensor {} given {} bytes, declared {}", t.name,
             current_written_ + bytes, t.bytes);
    write(data, size_t(bytes));
    current_written_ += bytes;
    if (current_written_ == t.bytes) {
        static const uint8_t zeros[kAlignment] = {};
        write(zeros, size_t(align_up(t.bytes) - t.bytes));
        ++current_;
        current_written_ = 0;
    }
}

void GgufWriter::finish() {
    ZT_CHECK(header_written_, "internal: {} finished before its header was written", path_);
    ZT_CHECK(current_ == tensors_.size(), "internal: {} finished after {} of its {} tensors", path_, current_,
             tensors_.size());
    const bool flushed = std::fflush(f_) == 0;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    ZT_CHECK(flushed && closed, "cannot write {}: {} (is the disk full?)", tmp_path_, std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(tmp_path_, path_, ec);
    ZT_CHECK(!ec, "cannot rename {} to {}: {}", tmp_path_, path_, ec.message());
    finished_ = true;
}

}  // namespace zt
