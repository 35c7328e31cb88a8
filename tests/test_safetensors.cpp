// Safetensors reader/writer: round trip, and every broken-file rule (faults 1-4 in ARCHITECTURE.md): truncated
// shard, absurd header length, non-UTF-8 / non-JSON header, overlapping / gapped / reversed offsets, shape x dtype
// overflow or != byte span, unknown dtype. Broken files are built in a temp dir; each error must name the file
// and, where one is at fault, the tensor.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/model/safetensors.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;

namespace {


// Raw file: u64 length (or `len_override`) | header | data.
std::string raw_file(const std::string & header, const std::string & data, uint64_t len_override = ~0ull) {
    const uint64_t n = len_override == ~0ull ? header.size() : len_override;
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
    return out + header + data;
}


// Parses bytes in memory and returns the error message ("" when it parsed).
std::string parse_error(const std::string & bytes, const std::string & name = "test.safetensors") {
    try {
        parse_safetensors_header(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), name);
    } catch (const Error & e) {
        return e.message();
    }
    return "";
}

// Opens the bytes as a file and returns the error message ("" when it opened).
std::string open_error(const std::string & bytes, std::string * path_out = nullptr) {
    static const std::string dir = make_temp_dir("st");
    static int counter = 0;
    const std::string path = dir + "/f" + std::to_string(counter++) + ".safetensors";
    write_file(path, bytes);
    if (path_out) *path_out = path;
    try {
        SafetensorsFile f(path);
    } catch (const Error & e) {
        return e.message();
    }
    return "";
}


}  // namespace

TEST(Safetensors, RoundTripWriterReader) {
    const std::string dir = make_temp_dir("st");
    const std::string path = dir + "/model.safetensors";
    std::vector<float> a = {1, 2, 3, 4, 5, 6};
    std::vector<uint16_t> b = {f32_to_bf16(0.5f), f32_to_bf16(-2.0f), f32_to_bf16(3.25f)};
    float scalar = 7.0f;
    write_safetensors(path, {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::BF16, {3}, b.data()},
                             {"s", DType::F32, {}, &scalar}, {"empty", DType::F16, {0, 4}, nullptr}},
                      {{"format", "pt"}});
    SafetensorsFile f(path);
    EXPECT_EQ(f.header().metadata.at("format"), "pt");
    EXPECT_EQ((f.header().data_start - 8) % 8, 0u) << "header is padded to a multiple of 8";
    const auto * ea = f.find("a");
    ASSERT_NE(ea, nullptr);
    Tensor ta = f.tensor(*ea);
    EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
    Tensor tb = f.tensor(*f.find("b"));
    EXPECT_EQ(tb.dtype, DType::BF16);
    EXPECT_EQ(bf16_to_f32(tb.ptr<uint16_t>()[2]), 3.25f);
    float s_value = 0;   // "s" follows 6 bytes of BF16: not 4-byte aligned, so read it with memcpy
    std::memcpy(&s_value, f.tensor(*f.find("s")).data, 4);
    EXPECT_EQ(s_value, 7.0f);
    EXPECT_EQ(f.find("empty")->bytes, 0u);
    EXPECT_EQ(f.find("nope"), nullptr);
    EXPECT_EQ(f.header().entries.size(), 4u);
}

TEST(Safetensors, TruncatedShardNamesFileAndSizes) {
    const std::string dir = make_temp_dir("st");
    const std::string path = dir + "/model-00001-of-00002.safetensors";
    std::vector<float> a(64, 1.0f);
    write_safetensors(path, {{"w", DType::F32, {8, 8}, a.data()}});
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_file(path, bytes.substr(0, bytes.size() - 100));
    try {
        SafetensorsFile f(path);
        FAIL() << "truncated file was accepted";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), path);
        EXPECT_HAS(e.message(), "truncated");
        EXPECT_HAS(e.message(), "'w'");
        EXPECT_HAS(e.message(), std::to_string(bytes.size() - 100));
    }
    // Shorter than the length field, and cut inside the header.
    EXPECT_HAS(open_error("abc"), "fewer than the 8-byte");
    EXPECT_HAS(parse_error(""), "fewer than the 8-byte");
    EXPECT_HAS(parse_error(bytes.substr(0, 20)), "truncated");
}

TEST(Safetensors, TrailingBytesRejected) {
    const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    EXPECT_EQ(parse_error(raw_file(h, std::string(4, 'x'))), "");
    EXPECT_HAS(parse_error(raw_file(h, std::string(5, 'x'))), "trailing");
}

TEST(Safetensors, HugeHeaderLengthRejectedBeforeAllocation) {
    // Lengths >= 100 MB or absurd (2^63, 2^64-1) with a tiny file: rejected from the 8 bytes alone.
    for (uint64_t n : {uint64_t(kSafetensorsMaxHeaderBytes) + 1, uint64_t(1) << 63, ~uint64_t(0) - 1}) {
        const std::string msg = parse_error(raw_file("{}", "", n));
        EXPECT_HAS(msg, "exceeds the 100000000-byte limit");
        EXPECT_HAS(msg, "test.safetensors");
    }
    // Under the limit but longer than the file.
    EXPECT_HAS(parse_error(raw_file("{}", "", 1000)), "larger than the");
    EXPECT_HAS(open_error(raw_file("{}", "", uint64_t(1) << 63)), "exceeds");
}

TEST(Safetensors, NonUtf8AndNonJsonHeaderRejected) {
    EXPECT_HAS(parse_error(raw_file("{\"a\xff\xfe\":1}", "")), "not valid UTF-8");
    EXPECT_HAS(parse_error(raw_file("{\"\xc0\xaf\":1}", "")), "not valid UTF-8");   // overlong
    EXPECT_HAS(parse_error(raw_file("{not json", "")), "not valid JSON");
    EXPECT_HAS(parse_error(raw_file("[1,2,3]", "")), "does not start with");
    EXPECT_HAS(parse_error(raw_file("{\"a\": 1}", "")), "'a'");
    EXPECT_HAS(parse_error(raw_file("{\"a\":{\"dtype\":\"F32\"}}", "")), "shape");
    EXPECT_HAS(parse_error(raw_file("{\"__metadata__\": {\"k\": 1}}", "")), "__metadata__");
    // Padding with spaces (as the python writer does) is fine; an empty file with no tensors too.
    EXPECT_EQ(parse_error(raw_file("{}      ", "")), "");
}

TEST(Safetensors, OverlappingGappedReversedOffsetsNameTheTensor) {
    const std::string data(16, '\0');
    std::string msg = parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data));
    EXPECT_HAS(msg, "'b'");
    EXPECT_HAS(msg, "overlaps");
    msg = parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", data));
    EXPECT_HAS(msg, "'b'");
    EXPECT_HAS(msg, "gap of 4 bytes");
    msg = parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')));
    EXPECT_HAS(msg, "'a'");
    EXPECT_HAS(msg, "gap");
    msg = parse_error(raw_file(R"({"z":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data));
    EXPECT_HAS(msg, "'z'");
    EXPECT_HAS(msg, "reversed");
    msg = parse_error(raw_file(R"({"n":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", data));
    EXPECT_HAS(msg, "'n'");
}

TEST(Safetensors, ShapeDtypeOverflowAndSpanMismatch) {
    // 2^62 * 2^62 overflows in numel; 2^62 * 4 bytes overflows in the byte count.
    std::string msg = parse_error(raw_file(R"({"big":{"dtype":"F32","shape":[4611686018427387904,)"
                                           R"(4611686018427387904],"data_offsets":[0,4]}})", std::string(4, '\0')));
    EXPECT_HAS(msg, "'big'");
    EXPECT_HAS(msg, "overflows");
    msg = parse_error(raw_file(R"({"big":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""));
    EXPECT_HAS(msg, "overflows");
    msg = parse_error(raw_file(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')));
    EXPECT_HAS(msg, "'w'");
    EXPECT_HAS(msg, "needs 6 bytes");
    msg = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[-3],"data_offsets":[0,8]}})", std::string(8, '\0')));
    EXPECT_HAS(msg, "'w'");
    msg = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", std::string(8, '\0')));
    EXPECT_HAS(msg, "'w'");
    // Offsets past any 64-bit integer are parsed by JSON as floats: rejected.
    msg = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999999]}})", ""));
    EXPECT_HAS(msg, "'w'");
}

TEST(Safetensors, UnknownDtypeNamesTensor) {
    const std::string msg = parse_error(raw_file(R"({"q":{"dtype":"F8_E4M3X","shape":[4],"data_offsets":[0,4]}})",
                                                 std::string(4, '\0')));
    EXPECT_HAS(msg, "'q'");
    EXPECT_HAS(msg, "unknown dtype \"F8_E4M3X\"");
}

TEST(Safetensors, CommittedBadCorpusRejected) {
    // tests/data/bad_checkpoints/*.safetensors: each is broken in one way and must be rejected cleanly.
    const std::string dir = std::string(ZT_TEST_DATA) + "/bad_checkpoints";
    int n = 0;
    for (const auto & e : std::filesystem::directory_iterator(dir)) {
        if (e.path().extension() != ".safetensors") continue;
        ++n;
        try {
            SafetensorsFile f(e.path().string());
            ADD_FAILURE() << e.path() << " was accepted";
        } catch (const Error & err) {
            EXPECT_HAS(err.message(), e.path().string());
        }
    }
    EXPECT_GE(n, 5) << "bad_checkpoints corpus is missing from " << dir;
}

TEST(Safetensors, DeeplyNestedHeaderRejected) {
    // 200,000 nested arrays in a shape entry: the message quoting that entry recursed once per level and
    // overflowed the stack. The header is refused before it is parsed, as a file (the error names it).
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    std::string path;
    const std::string msg = open_error(
        raw_file(R"({"w":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,4]}})", std::string(4, '\0')),
        &path);
    EXPECT_HAS(msg, path);
    EXPECT_HAS(msg, "safetensors header");
    EXPECT_HAS(msg, "nested 200003 levels deep, more than the 64 allowed");
    EXPECT_LT(msg.size(), 1000u);
    // 64 levels (the limit) still parse: the shape entry is then refused as not an integer, with the entry cut.
    const std::string ok = std::string(kMaxJsonDepth - 3, '[') + std::string(kMaxJsonDepth - 3, ']');
    const std::string msg64 = parse_error(
        raw_file(R"({"w":{"dtype":"F32","shape":[)" + ok + R"(],"data_offsets":[0,4]}})", std::string(4, '\0')));
    EXPECT_HAS(msg64, "shape entry");
}
