// gguf_file: the GGUF header reader (see gguf_file.h). A bounded cursor over the file: every read checks the bytes
// left first, and every count is checked against them before anything is allocated.
#include "runtime/model/gguf_file.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include "runtime/base/error.h"

namespace zt {
namespace {

// ggml's tensor types: (number, name, weights per block, bytes per block); 0 block size = not readable by ztinfer.
struct GgmlType { uint32_t id; const char * name; int block_weights; int block_bytes; };
constexpr GgmlType kGgmlTypes[] = {
    {0, "F32", 1, 4},      {1, "F16", 1, 2},      {2, "Q4_0", 32, 18},  {3, "Q4_1", 32, 20},  {6, "Q5_0", 0, 0},
    {7, "Q5_1", 0, 0},     {8, "Q8_0", 32, 34},   {9, "Q8_1", 0, 0},    {10, "Q2_K", 0, 0},   {11, "Q3_K", 0, 0},
    {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}, {15, "Q8_K", 0, 0}, {16, "IQ2_XXS", 0, 0},
    {17, "IQ2_XS", 0, 0},  {18, "IQ3_XXS", 0, 0}, {19, "IQ1_S", 0, 0},  {20, "IQ4_NL", 0, 0}, {21, "IQ3_S", 0, 0},
    {22, "IQ2_S", 0, 0},   {23, "IQ4_XS", 0, 0},  {24, "I8", 0, 0},     {25, "I16", 0, 0},    {26, "I32", 0, 0},
    {27, "I64", 0, 0},     {28, "F64", 0, 0},     {29, "IQ1_M", 0, 0},  {30, "BF16", 1, 2},   {34, "TQ1_0", 0, 0},
    {35, "TQ2_0", 0, 0},   {39, "MXFP4", 0, 0},
};

const GgmlType * ggml_type_of(uint32_t id) {
    for (const GgmlType & t : kGgmlTypes)
        if (t.id == id) return &t;
    return nullptr;
}

struct FileCloser { void operator()(std::FILE * f) const { if (f) std::fclose(f); } };

// Reads from an open file or from a buffer (parse_gguf_header: the fuzz target).
class Cursor {
public:
    Cursor(const std::string & path, std::FILE * f, uint64_t size) : path_(path), f_(f), size_(size) {}
    Cursor(const std::string & path, const uint8_t * buf, uint64_t size) : path_(path), buf_(buf), size_(size) {}
    uint64_t pos() const { return pos_; }
    uint64_t left() const { return size_ - pos_; }

    void bytes(void * dst, uint64_t n, const char * what) {
        ZT_CHECK(n <= left(), "{}: truncated GGUF file: {} needs {} bytes at offset {}, only {} left; the file is "
                 "incomplete (re-download or re-convert it)", path_, what, n, pos_, left());
        if (buf_) std::memcpy(dst, buf_ + pos_, size_t(n));
        else ZT_CHECK(std::fread(dst, 1, size_t(n), f_) == size_t(n), "{}: read error at offset {}", path_, pos_);
        pos_ += n;
    }
    template <typename T> T num(const char * what) {
        T v;
        bytes(&v, sizeof v, what);   // GGUF is little-endian, like every host ztinfer builds for
        return v;
    }
    std::string str(const char * what) {
        const uint64_t n = num<uint64_t>(what);
        ZT_CHECK(n <= left(), "{}: {} at offset {} claims {} bytes, past the end of the file ({} left)", path_, what,
                 pos_ - 8, n, left());
        std::string s(size_t(n), '\0');
        bytes(s.data(), n, what);
        return s;
    }
    // A count of items of at least min_bytes each must fit in what is left.
    void check_count(uint64_t count, uint64_t min_bytes, const char * what) {
        ZT_CHECK(min_bytes == 0 || count <= left() / min_bytes, "{}: {} = {} at offset {} cannot fit in the {} bytes "
                 "left in the file: a corrupt header", path_, what, count, pos_, left());
    }

private:
    const std::string & path_;
    std::FILE * f_ = nullptr;
    const uint8_t * buf_ = nullptr;
    uint64_t size_, pos_ = 0;
};

enum : uint32_t { kU8, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };

nlohmann::json read_value(Cursor & c, uint32_t type, const std::string & key, int depth) {
    switch (type) {
        case kU8: return c.num<uint8_t>(key.c_str());
        case kI8: return c.num<int8_t>(key.c_str());
        case kU16: return c.num<uint16_t>(key.c_str());
        case kI16: return c.num<int16_t>(key.c_str());
        case kU32: return c.num<uint32_t>(key.c_str());
        case kI32: return c.num<int32_t>(key.c_str());
        case kF32: return c.num<float>(key.c_str());
        case kBool: {
            const uint8_t b = c.num<uint8_t>(key.c_str());
            ZT_CHECK(b <= 1, "GGUF metadata {}: a bool must be 0 or 1, got {}", key, b);
            return b == 1;
        }
        case kString: return c.str(key.c_str());
        case kU64: return c.num<uint64_t>(key.c_str());
        case kI64: return c.num<int64_t>(key.c_str());
        case kF64: return c.num<double>(key.c_str());
        case kArray: {
            ZT_CHECK(depth < 4, "GGUF metadata {}: arrays nested more than 4 deep", key);
            const uint32_t et = c.num<uint32_t>(key.c_str());
            const uint64_t n = c.num<uint64_t>(key.c_str());
            static const uint64_t kMin[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};
            ZT_CHECK(et <= kF64, "GGUF metadata {}: unknown array element type {}", key, et);
            c.check_count(n, kMin[et], ("the length of array " + key).c_str());
            nlohmann::json a = nlohmann::json::array();
            for (uint64_t i = 0; i < n; ++i) a.push_back(read_value(c, et, key, depth + 1));
            return a;
        }
        default: ZT_FAIL("GGUF metadata {}: unknown value type {} (a corrupt file, or a GGUF newer than this reader)",
                         key, type);
    }
}

}  // namespace

std::string ggml_type_name(uint32_t id) {
    const GgmlType * t = ggml_type_of(id);
    return t ? t->name : "type " + std::to_string(id);
}

namespace {

GgufFile parse(Cursor & c, const std::string & path, uint64_t end) {
    GgufFile g;
    g.path = path;
    char magic[4];
    c.bytes(magic, 4, "the magic");
    ZT_CHECK(std::memcmp(magic, "GGUF", 4) == 0, "{}: not a GGUF file (it starts with other bytes than \"GGUF\")", path);
    g.version = c.num<uint32_t>("the version");
    ZT_CHECK(g.version == 2 || g.version == 3, "{}: GGUF version {}; ztinfer reads versions 2 and 3", path, g.version);
    const uint64_t n_tensors = c.num<uint64_t>("the tensor count"), n_kv = c.num<uint64_t>("the metadata count");
    c.check_count(n_kv, 8 + 4 + 1, "the metadata count");
    g.metadata = nlohmann::json::object();
    for (uint64_t i = 0; i < n_kv; ++i) {
        const std::string key = c.str("a metadata key");
        ZT_CHECK(!g.metadata.contains(key), "{}: metadata key {} appears twice", path, key);
        const uint32_t type = c.num<uint32_t>(key.c_str());
        g.metadata[key] = read_value(c, type, key, 0);
    }
    if (g.metadata.contains("general.alignment")) {
        const nlohmann::json & a = g.metadata["general.alignment"];
        ZT_CHECK(a.is_number_unsigned() && a.get<uint64_t>() > 0 && a.get<uint64_t>() <= (1u << 20) &&
                     (a.get<uint64_t>() & (a.get<uint64_t>() - 1)) == 0,
                 "{}: general.alignment = {} is not a power of two up to 1 MiB", path,
                 a.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        g.alignment = a.get<uint64_t>();
    }
    c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, "the tensor count");
    std::set<std::string> names;
    std::vector<uint64_t> rel_offsets;
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t;
        t.name = c.str("a tensor name");
        ZT_CHECK(names.insert(t.name).second, "{}: tensor {} appears twice", path, t.name);
        const uint32_t n_dims = c.num<uint32_t>(t.name.c_str());
        ZT_CHECK(n_dims >= 1 && n_dims <= 4, "{}: tensor {} has {} dimensions (1 to 4 allowed)", path, t.name, n_dims);
        std::vector<int64_t> ne(n_dims);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t v = c.num<uint64_t>(t.name.c_str());
            ZT_CHECK(v >= 1 && v <= (uint64_t(1) << 40) && numel <= (uint64_t(1) << 50) / v,
                     "{}: tensor {} dimension {} = {}: empty or too large", path, t.name, d, v);
            ne[d] = int64_t(v);
            numel *= v;
        }
        t.shape.assign(ne.rbegin(), ne.rend());
        t.ggml_type = c.num<uint32_t>(t.name.c_str());
        t.type_name = ggml_type_name(t.ggml_type);
        const GgmlType * gt = ggml_type_of(t.ggml_type);
        ZT_CHECK(gt && gt->block_weights > 0, "{}: tensor {} is {}, a type ztinfer does not read (it reads F32, F16, "
                 "BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K): convert the model to one of those", path, t.name,
                 t.type_name);
        ZT_CHECK(ne[0] % gt->block_weights == 0, "{}: tensor {} ({}): its rows of {} weights are not whole blocks of {}",
                 path, t.name, t.type_name, ne[0], gt->block_weights);
        t.bytes = numel / uint64_t(gt->block_weights) * uint64_t(gt->block_bytes);
        const uint64_t off = c.num<uint64_t>(t.name.c_str());
        ZT_CHECK(off % g.alignment == 0, "{}: tensor {}'s data offset {} is not a multiple of the alignment {}", path,
                 t.name, off, g.alignment);
        rel_offsets.push_back(off);
        g.tensors.push_back(std::move(t));
    }
    g.data_offset = (c.pos() + g.alignment - 1) / g.alignment * g.alignment;
    const uint64_t size = uint64_t(end);
    ZT_CHECK(g.data_offset <= size, "{}: the data section would start at {}, past the end of the file ({} bytes)", path,
             g.data_offset, size);
    for (size_t i = 0; i < g.tensors.size(); ++i) {
        GgufTensorInfo & t = g.tensors[i];
        ZT_CHECK(rel_offsets[i] <= size - g.data_offset && t.bytes <= size - g.data_offset - rel_offsets[i],
                 "{}: tensor {} ({} bytes at data offset {}) runs past the end of the file ({} bytes): the file is "
                 "truncated", path, t.name, t.bytes, rel_offsets[i], size);
        t.offset = g.data_offset + rel_offsets[i];
    }
    return g;
}

}  // namespace

GgufFile read_gguf_header(const std::string & path) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    ZT_CHECK(f != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
    ZT_CHECK(std::fseek(f.get(), 0, SEEK_END) == 0, "{}: cannot seek", path);
    const long end = std::ftell(f.get());
    ZT_CHECK(end >= 0, "{}: cannot tell its size", path);
    std::rewind(f.get());
    Cursor c(path, f.get(), uint64_t(end));
    return parse(c, path, uint64_t(end));
}

GgufFile parse_gguf_header(const uint8_t * data, size_t size, const std::string & name) {
    Cursor c(name, data, size);
    return parse(c, name, size);
}

}  // namespace zt
