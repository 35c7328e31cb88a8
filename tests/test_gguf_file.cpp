// GgufFile: the GGUF header reader (runtime/model/gguf_file.h) on tests/data/gguf/tiny.gguf, written by the gguf
// PyPI package (examples/make_gguf_fixtures.py): metadata of every type, tensor shapes, types and offsets (the data
// at each offset, dequantized, equals the package's values bit for bit); and hand-made bad headers: each is a clear
// error naming the file and the problem, never a crash (every truncation of the fixture too).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/model/dtype.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/quant_block.h"
#include "tests/test_support.h"

namespace zt {
namespace {

const std::string kTiny = std::string(ZT_TEST_DATA) + "/gguf/tiny.gguf";

std::vector<char> read_all(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string & path, const std::vector<char> & b) {
    std::ofstream(path, std::ios::binary).write(b.data(), std::streamsize(b.size()));
}

// Error text of read_gguf_header(path), or "" when it reads.
std::string error_of(const std::string & path) {
    try {
        read_gguf_header(path);
    } catch (const std::exception & e) {
        return e.what();
    }
    return "";
}

TEST(GgufFile, ReadsTheMetadataAndTensorsTheGgufPackageWrote) {
    const GgufFile g = read_gguf_header(kTiny);
    const nlohmann::json want = nlohmann::json::parse(read_all(std::string(ZT_TEST_DATA) + "/gguf/tiny.json"));
    EXPECT_EQ(g.version, 3u);
    for (const auto & [key, value] : want["metadata"].items()) {
        ASSERT_TRUE(g.metadata.contains(key)) << key;
        EXPECT_EQ(g.metadata[key], value) << key;
    }
    EXPECT_NEAR(g.metadata["llama.attention.layer_norm_rms_epsilon"].get<double>(), 1e-5, 1e-12);
    ASSERT_EQ(g.tensors.size(), want["tensors"].size());
    const std::vector<char> file = read_all(kTiny);
    for (const GgufTensorInfo & t : g.tensors) {
        const nlohmann::json & w = want["tensors"][t.name];
        EXPECT_EQ(t.type_name, w["type"].get<std::string>()) << t.name;
        EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>()) << t.name;
        ASSERT_LE(t.offset + t.bytes, file.size()) << t.name;
        const int64_t n = t.shape[0] * t.shape[1];
        std::vector<float> got(static_cast<size_t>(n));
        const char * data = file.data() + t.offset;
        if (t.type_name == "F32") std::memcpy(got.data(), data, size_t(n) * 4);
        else if (t.type_name == "F16") convert_to_f32(got.data(), data, DType::F16, size_t(n));
        else if (t.type_name == "BF16") convert_to_f32(got.data(), data, DType::BF16, size_t(n));
        else dequantize_row(*quant_type_from_name(t.type_name), data, got.data(), n);
        const std::vector<float> values = w["values"].get<std::vector<float>>();
        EXPECT_EQ(0, std::memcmp(got.data(), values.data(), size_t(n) * 4)) << t.name << " data differs";
    }
}

TEST(GgufFile, EveryTruncationIsAnErrorNotACrash) {
    const std::vector<char> full = read_all(kTiny);
    const std::string dir = test::make_temp_dir("gguf_trunc");
    int errors = 0;
    for (size_t n = 0; n < full.size(); n += (n < 800 ? 1 : 37)) {
        write_all(dir + "/t.gguf", std::vector<char>(full.begin(), full.begin() + std::ptrdiff_t(n)));
        const std::string e = error_of(dir + "/t.gguf");
        EXPECT_FALSE(e.empty()) << "a file cut to " << n << " of " << full.size() << " bytes was read";
        EXPECT_NE(e.find("t.gguf"), std::string::npos) << e;
        errors += !e.empty();
    }
    EXPECT_GT(errors, 800);
}

// A one-tensor GGUF v3 file: tensor "w" with ne = {ne0, 2}, the given ggml type and data offset, data bytes after.
std::vector<char> one_tensor(uint32_t version, uint32_t type, uint64_t ne0, uint64_t offset, size_t data_bytes) {
    std::vector<char> b;
    auto put = [&](const void * p, size_t n) { b.insert(b.end(), static_cast<const char *>(p), static_cast<const char *>(p) + n); };
    auto u32 = [&](uint32_t v) { put(&v, 4); };
    auto u64 = [&](uint64_t v) { put(&v, 8); };
    put("GGUF", 4);
    u32(version);
    u64(1);   // tensors
    u64(0);   // metadata
    u64(1);
    put("w", 1);
    u32(2);
    u64(ne0);
    u64(2);
    u32(type);
    u64(offset);
    b.resize((b.size() + 31) / 32 * 32, 0);
    b.resize(b.size() + data_bytes, 0);
    return b;
}

TEST(GgufFile, BadHeadersAreClearErrors) {
    const std::string dir = test::make_temp_dir("gguf_bad"), p = dir + "/m.gguf";
    write_all(p, one_tensor(3, 2, 64, 0, 2 * 36));   // Q4_0, 2 rows of 2 blocks: reads
    ASSERT_EQ(error_of(p), "");
    EXPECT_EQ(read_gguf_header(p).tensors[0].shape, (std::vector<int64_t>{2, 64}));
    struct Bad { std::vector<char> bytes; const char * says; };
    std::vector<char> magic = one_tensor(3, 2, 64, 0, 72);
    magic[0] = 'X';
    std::vector<char> huge_kv = one_tensor(3, 2, 64, 0, 72);
    const uint64_t big = uint64_t(1) << 60;
    std::memcpy(huge_kv.data() + 16, &big, 8);
    const Bad bad[] = {
        {magic, "not a GGUF file"},
        {one_tensor(1, 2, 64, 0, 72), "GGUF version 1"},
        {one_tensor(3, 17, 256, 0, 4096), "IQ2_XS, a type ztinfer does not read"},
        {one_tensor(3, 99, 64, 0, 72), "type 99, a type ztinfer does not read"},
        {one_tensor(3, 2, 33, 0, 72), "not whole blocks of 32"},
        {one_tensor(3, 2, 64, 8, 72), "not a multiple of the alignment"},
        {one_tensor(3, 2, 64, 0, 71), "runs past the end of the file"},
        {one_tensor(3, 0, 0, 0, 0), "empty or too large"},
        {huge_kv, "cannot fit"},
    };
    for (const Bad & b : bad) {
        write_all(p, b.bytes);
        const std::string e = error_of(p);
        EXPECT_NE(e.find(b.says), std::string::npos) << "expected \"" << b.says << "\", got: " << e;
        EXPECT_NE(e.find("m.gguf"), std::string::npos) << e;
    }
}

}  // namespace
}  // namespace zt
