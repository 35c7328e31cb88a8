// EmbeddingOutput and read_npy_f32: JSONL records (float32 round trip), the .npy + index mode (rows in place,
// zeros elsewhere, index lines only after their rows, resume, wrong-shape resume, torn index line), bad .npy files,
// and numpy reading what we write (and we what numpy writes) when python3 with numpy is installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/job/embedding_output.h"
#include "runtime/base/error.h"
#include "tests/test_support.h"

using namespace zt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> lines_of(const std::string & path) {
    std::istringstream in(test::read_file(path));
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
}

std::vector<json> records_of(const std::string & path) {
    std::vector<json> out;
    for (const auto & l : lines_of(path)) out.push_back(json::parse(l));
    return out;
}

std::vector<float> row_values(int64_t row, int64_t dim) {
    std::vector<float> v(static_cast<size_t>(dim));
    for (int64_t i = 0; i < dim; ++i) v[size_t(i)] = float(row + 1) + 0.125f * float(i) - 0.3f;
    return v;
}

std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const Error & e) {
        return e.what();
    }
    return "(no zt::Error thrown)";
}

bool have_numpy() { return std::system("python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

// The bytes of a v1 .npy with the given header dict (padded like numpy does) and data.
std::string npy_bytes(const std::string & dict, const std::string & data, int major = 1) {
    std::string d = dict;
    const size_t pre = major == 1 ? 10 : 12;
    while ((pre + d.size() + 1) % 64) d += ' ';
    d += '\n';
    std::string s = "\x93NUMPY";
    s += char(major);
    s += '\0';
    s += char(d.size() & 0xff);
    s += char((d.size() >> 8) & 0xff);
    if (major != 1) s += std::string(2, '\0');
    return s + d + data;
}

class EmbeddingOutputTest : public ::testing::Test {
protected:
    std::string dir_;
    void SetUp() override { dir_ = test::make_temp_dir("embout"); }
    void TearDown() override { fs::remove_all(dir_); }
    std::string p(const std::string & name) const { return dir_ + "/" + name; }
};

}  // namespace

TEST(EmbeddingOutput, PathHelpers) {
    EXPECT_TRUE(EmbeddingOutput::is_npy("/a/b/x.npy"));
    EXPECT_FALSE(EmbeddingOutput::is_npy("/a/b/x.jsonl"));
    EXPECT_FALSE(EmbeddingOutput::is_npy("npy"));
    EXPECT_FALSE(EmbeddingOutput::is_npy("x.npy.jsonl"));
    EXPECT_EQ(EmbeddingOutput::index_path("/a/x.npy"), "/a/x.npy.index.jsonl");
}

TEST_F(EmbeddingOutputTest, JsonlRecordsRoundTripFloat32) {
    const std::string out = p("sub/emb.jsonl");   // the folder is created
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> a(64);
    for (auto & x : a) x = u(rng);
    a[0] = 1.0f, a[1] = -0.0f, a[2] = 1e-30f, a[3] = 3.4028235e38f, a[4] = 0.1f, a[5] = 1.4e-45f, a[6] = 16777216.0f;
    const std::vector<float> b = {0.5f, NAN, INFINITY};
    {
        EmbeddingOutput o(out, /*rows=*/3, int64_t(a.size()), /*resume=*/false);
        EXPECT_EQ(o.dim(), 64);
        EXPECT_EQ(o.path(), out);
        o.write(0, "a \"quoted\" id", a.data(), 17);
        o.write_error({{"custom_id", "bad"}, {"line", 2}, {"error", {{"code", "invalid_request"}, {"message", "m"}}}});
    }
    {
        EmbeddingOutput o(out, 3, 3, /*resume=*/true);
        o.write(2, "b", b.data(), 4);
    }
    const auto r = records_of(out);
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0]["custom_id"], "a \"quoted\" id");
    EXPECT_EQ(r[0]["usage"], json({{"prompt_tokens", 17}, {"total_tokens", 17}}));
    ASSERT_EQ(r[0]["embedding"].size(), a.size());
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(r[0]["embedding"][i].is_number_float()) << i;
        const float back = r[0]["embedding"][i].get<float>();
        EXPECT_EQ(std::memcmp(&back, &a[i], sizeof(float)), 0) << i << ": " << a[i] << " came back as " << back;
    }
    EXPECT_EQ(r[1]["line"], 2);
    EXPECT_EQ(r[1]["error"]["code"], "invalid_request");
    EXPECT_EQ(r[2]["custom_id"], "b");
    EXPECT_EQ(r[2]["embedding"][0].get<float>(), 0.5f);
    EXPECT_TRUE(r[2]["embedding"][1].is_null());   // JSON has no NaN / Inf
    EXPECT_TRUE(r[2]["embedding"][2].is_null());
    // compact: 0.1f is written as 0.1, not as its double expansion
    EXPECT_HAS(lines_of(out)[0], ",0.1,");

    const FinishedRequests f = EmbeddingOutput::read_finished(out);
    EXPECT_EQ(f.custom_ids, (std::set<std::string>{"a \"quoted\" id", "b"}));
    EXPECT_EQ(f.lines, (std::set<int64_t>{2}));
}

TEST_F(EmbeddingOutputTest, JsonlResumeFalseReplaces) {
    const std::string out = p("emb.jsonl");
    const std::vector<float> v = {1, 2};
    { EmbeddingOutput o(out, 1, 2, false); o.write(0, "a", v.data(), 1); }
    { EmbeddingOutput o(out, 1, 2, false); o.write(0, "b", v.data(), 1); }
    const auto r = records_of(out);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0]["custom_id"], "b");
}

TEST_F(EmbeddingOutputTest, ReadFinishedOfMissingFilesIsEmpty) {
    for (const std::string name : {"none.jsonl", "none.npy"}) {
        const FinishedRequests f = EmbeddingOutput::read_finished(p(name));
        EXPECT_TRUE(f.custom_ids.empty() && f.lines.empty()) << name;
    }
}

TEST_F(EmbeddingOutputTest, NpyRowsLandInPlaceAndTheRestIsZero) {
    const std::string out = p("emb.npy");
    const int64_t rows = 5, dim = 3;
    {
        EmbeddingOutput o(out, rows, dim, false);
        o.write(3, "d", row_values(3, dim).data(), 7);
        o.write(1, "b", row_values(1, dim).data(), 5);
        o.write_error({{"custom_id", "e"}, {"line", 5}, {"error", {{"code", "invalid_request"}, {"message", "m"}}}});
        EXPECT_THROW(o.write(5, "x", row_values(5, dim).data(), 1), Error);   // outside the rows
        EXPECT_THROW(o.write(-1, "x", row_values(0, dim).data(), 1), Error);
    }
    const std::string bytes = test::read_file(out);
    const size_t header_len = size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8;
    EXPECT_EQ((10 + header_len) % 64, 0u);
    EXPECT_EQ(bytes[10 + header_len - 1], '\n');
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
    EXPECT_HAS(bytes.substr(10, header_len), "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }");
    EXPECT_EQ(bytes.size(), 10 + header_len + size_t(rows * dim) * 4);

    const NpyMatrix m = read_npy_f32(out);
    ASSERT_EQ(m.rows, rows);
    ASSERT_EQ(m.cols, dim);
    for (int64_t r = 0; r < rows; ++r) {
        const std::vector<float> want = (r == 1 || r == 3) ? row_values(r, dim) : std::vector<float>(size_t(dim), 0.0f);
        for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(m.data[size_t(r * dim + c)], want[size_t(c)]) << r << "," << c;
    }
    const auto idx = records_of(EmbeddingOutput::index_path(out));
    ASSERT_EQ(idx.size(), 3u);
    EXPECT_EQ(idx[0], json({{"custom_id", "d"}, {"row", 3}, {"usage", {{"prompt_tokens", 7}, {"total_tokens", 7}}}}));
    EXPECT_EQ(idx[1], json({{"custom_id", "b"}, {"row", 1}, {"usage", {{"prompt_tokens", 5}, {"total_tokens", 5}}}}));
    EXPECT_EQ(idx[2]["line"], 5);
    EXPECT_FALSE(fs::exists(out + ".metrics.json"));
    // no temp file left beside it
    size_t files = 0;
    for (const auto & e : fs::directory_iterator(dir_)) {
        ++files;
        EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
    }
    EXPECT_EQ(files, 2u);
}

TEST_F(EmbeddingOutputTest, NpySyncAndBatchFlushWriteTheIndex) {
    const std::string out = p("emb.npy"), index = EmbeddingOutput::index_path(out);
    const int64_t rows = 300, dim = 4;
    EmbeddingOutput o(out, rows, dim, false);
    o.write(0, "r0", row_values(0, dim).data(), 1);
    o.sync();   // now durable: the row and its index line
    EXPECT_EQ(lines_of(index).size(), 1u);
    EXPECT_EQ(read_npy_f32(out).data[0], row_values(0, dim)[0]);
    for (int64_t r = 1; r < 257; ++r) o.write(r, "r" + std::to_string(r), row_values(r, dim).data(), 1);
    EXPECT_GE(lines_of(index).size(), 257u);   // 256 buffered lines are flushed without a sync()
    // every index line on disk points at its row's bytes
    const NpyMatrix m = read_npy_f32(out);
    for (const auto & rec : records_of(index)) {
        const int64_t r = rec["row"].get<int64_t>();
        EXPECT_EQ(m.data[size_t(r * dim + 3)], row_values(r, dim)[3]) << r;
    }
}

TEST_F(EmbeddingOutputTest, NpyResumeKeepsEarlierRows) {
    const std::string out = p("emb.npy");
    const int64_t rows = 4, dim = 8;
    {
        EmbeddingOutput o(out, rows, dim, false);
        o.write(0, "a", row_values(0, dim).data(), 3);
        o.write(2, "c", row_values(2, dim).data(), 4);
        o.write_error({{"custom_id", "d"}, {"line", 4}, {"error", {{"code", "invalid_request"}, {"message", "m"}}}});
    }
    const FinishedRequests f = EmbeddingOutput::read_finished(out);
    EXPECT_EQ(f.custom_ids, (std::set<std::string>{"a", "c"}));
    EXPECT_EQ(f.lines, (std::set<int64_t>{4}));
    {
        EmbeddingOutput o(out, rows, dim, /*resume=*/true);
        o.write(1, "b", row_values(1, dim).data(), 2);
    }
    const NpyMatrix m = read_npy_f32(out);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < dim; ++c)
            EXPECT_EQ(m.data[size_t(r * dim + c)], r == 3 ? 0.0f : row_values(r, dim)[size_t(c)]) << r << "," << c;
    EXPECT_EQ(lines_of(EmbeddingOutput::index_path(out)).size(), 4u);
    EXPECT_EQ(EmbeddingOutput::read_finished(out).custom_ids, (std::set<std::string>{"a", "b", "c"}));

    // resume = false replaces both files
    { EmbeddingOutput o(out, rows, dim, /*resume=*/false); }
    const NpyMatrix z = read_npy_f32(out);
    for (float x : z.data) EXPECT_EQ(x, 0.0f);
    EXPECT_EQ(test::read_file(EmbeddingOutput::index_path(out)), "");
    EXPECT_TRUE(EmbeddingOutput::read_finished(out).custom_ids.empty());
}

TEST_F(EmbeddingOutputTest, NpyResumeOfAnotherShapeSaysWhatToDo) {
    const std::string out = p("emb.npy");
    { EmbeddingOutput o(out, 5, 3, false); o.write(0, "a", row_values(0, 3).data(), 1); }
    for (const auto & [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{{6, 3}, {5, 4}}) {
        const std::string msg = error_of([&, r = rows, d = dim] { EmbeddingOutput o(out, r, d, true); });
        EXPECT_HAS(msg, out);
        EXPECT_HAS(msg, "(5, 3)");
        EXPECT_HAS(msg, fmt::format("({}, {})", rows, dim));
        EXPECT_HAS(msg, "delete");
        EXPECT_HAS(msg, "\"ztinfer.resume\": false");
        EXPECT_HAS(msg, "embedding_output.cpp:");   // file:line
    }
    // the earlier output is untouched
    EXPECT_EQ(read_npy_f32(out).data[0], row_values(0, 3)[0]);
    EXPECT_EQ(lines_of(EmbeddingOutput::index_path(out)).size(), 1u);

    // another dtype (numpy-style float64 file) and a file that is no .npy at all
    test::write_file(out, npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (5, 3), }", std::string(120, '\0')));
    std::string msg = error_of([&] { EmbeddingOutput o(out, 5, 3, true); });
    EXPECT_HAS(msg, "'<f8'");
    EXPECT_HAS(msg, "\"ztinfer.resume\": false");
    test::write_file(out, "garbage");
    msg = error_of([&] { EmbeddingOutput o(out, 5, 3, true); });
    EXPECT_HAS(msg, out);
    EXPECT_HAS(msg, "\"ztinfer.resume\": false");
    // resume = false replaces it
    { EmbeddingOutput o(out, 5, 3, false); }
    EXPECT_EQ(read_npy_f32(out).rows, 5);
}

TEST_F(EmbeddingOutputTest, NpyTornIndexLineIsRunAgain) {
    const std::string out = p("emb.npy"), index = EmbeddingOutput::index_path(out);
    const int64_t rows = 3, dim = 2;
    { EmbeddingOutput o(out, rows, dim, false); o.write(0, "a", row_values(0, dim).data(), 1); }
    test::write_file(index, test::read_file(index) + R"({"custom_id":"b","ro)");   // crash mid-append
    const FinishedRequests f = EmbeddingOutput::read_finished(out);
    EXPECT_EQ(f.custom_ids, (std::set<std::string>{"a"}));
    {
        EmbeddingOutput o(out, rows, dim, true);
        o.write(1, "b", row_values(1, dim).data(), 1);
    }
    const auto lines = lines_of(index);
    ASSERT_EQ(lines.size(), 2u);   // the torn line was cut off (ResultWriter), then "b" appended
    EXPECT_EQ(json::parse(lines[1])["custom_id"], "b");
    EXPECT_EQ(EmbeddingOutput::read_finished(out).custom_ids, (std::set<std::string>{"a", "b"}));
}

TEST_F(EmbeddingOutputTest, NpyIndexWithoutItsNpyIsStale) {
    const std::string out = p("emb.npy"), index = EmbeddingOutput::index_path(out);
    test::write_file(index, R"({"custom_id":"a","row":0,"usage":{"prompt_tokens":1,"total_tokens":1}})" "\n");
    EXPECT_TRUE(EmbeddingOutput::read_finished(out).custom_ids.empty());   // its rows are gone: run them again
    { EmbeddingOutput o(out, 2, 2, /*resume=*/true); }
    EXPECT_EQ(test::read_file(index), "");
}

TEST_F(EmbeddingOutputTest, NpyWithZeroRows) {
    const std::string out = p("empty.npy");
    { EmbeddingOutput o(out, 0, 16, false); }
    const NpyMatrix m = read_npy_f32(out);
    EXPECT_EQ(m.rows, 0);
    EXPECT_EQ(m.cols, 16);
    EXPECT_TRUE(m.data.empty());
}

TEST_F(EmbeddingOutputTest, ReadNpyRejectsBadFiles) {
    const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    const std::string data(24, '\0');
    struct Case { std::string name, bytes, says; };
    std::string huge_v2 = npy_bytes(good_dict, data, 2);
    huge_v2[8] = huge_v2[9] = huge_v2[10] = huge_v2[11] = '\xff';
    const std::vector<Case> cases = {
        {"magic", "NUMPY" + npy_bytes(good_dict, data).substr(5), "not a .npy file"},
        {"empty", "", "not a .npy file"},
        {"truncated_data", npy_bytes(good_dict, data.substr(0, 23)), "truncated"},
        {"truncated_header", npy_bytes(good_dict, data).substr(0, 40), "truncated"},
        {"f8", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", std::string(48, '\0')), "'<f8'"},
        {"big_endian", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", data), "'>f4'"},
        {"fortran", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data), "Fortran"},
        {"one_dim", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", data), "(6,)"},
        {"three_dim", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", data), "2-D"},
        {"overflow", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", data), "too large"},
        {"dim_too_long", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 1), }", data), "too large"},
        {"negative", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", data), "non-negative"},
        {"no_dict", npy_bytes("[1, 2]", data), "not a valid .npy"},
        {"missing_key", npy_bytes("{'descr': '<f4', 'shape': (2, 3), }", data), "lacks"},
        {"extra_key", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1, }", data), "'x'"},
        {"absurd_header", huge_v2, "header claims"},
        {"version3", [&] { std::string s = npy_bytes(good_dict, data); s[6] = 3; return s; }(), "version 3.0"},
    };
    for (const auto & c : cases) {
        const std::string path = p(c.name + ".npy");
        test::write_file(path, c.bytes);
        const std::string msg = error_of([&] { read_npy_f32(path); });
        EXPECT_HAS(msg, path);
        EXPECT_HAS(msg, c.says);
    }
    EXPECT_HAS(error_of([&] { read_npy_f32(p("missing.npy")); }), p("missing.npy"));
    // a v2 header and a numpy-2-style header (double quotes, no trailing comma) are read
    test::write_file(p("v2.npy"), npy_bytes(good_dict, std::string(24, '\x3f'), 2));
    NpyMatrix m = read_npy_f32(p("v2.npy"));
    EXPECT_EQ(m.rows, 2);
    EXPECT_EQ(m.cols, 3);
    float x;
    std::memcpy(&x, std::string(4, '\x3f').data(), 4);
    for (float y : m.data) EXPECT_EQ(y, x);
    test::write_file(p("dq.npy"), npy_bytes("{\"descr\": \"<f4\", \"shape\": (2,3), \"fortran_order\": False}", data));
    EXPECT_EQ(read_npy_f32(p("dq.npy")).cols, 3);
}

TEST_F(EmbeddingOutputTest, NumpyReadsWhatWeWriteAndWeReadNumpy) {
    if (!have_numpy()) GTEST_SKIP() << "python3 with numpy is not installed";
    const std::string out = p("emb.npy");
    const int64_t rows = 4, dim = 5;
    {
        EmbeddingOutput o(out, rows, dim, false);
        for (int64_t r : {0, 3, 1}) o.write(r, "r" + std::to_string(r), row_values(r, dim).data(), 1);
    }
    // numpy.load: dtype, shape, and the bytes (hex of every float32, row by row)
    const std::string got = test::command_output(
        "python3 -c \"import numpy as np, sys; a = np.load(sys.argv[1]); "
        "print(a.dtype.str, a.shape, a.flags.c_contiguous, a.tobytes().hex())\" " + out);
    std::string want_hex;
    for (int64_t r = 0; r < rows; ++r) {
        const std::vector<float> v = r == 2 ? std::vector<float>(size_t(dim), 0.0f) : row_values(r, dim);
        for (float f : v) {
            unsigned char b[4];
            std::memcpy(b, &f, 4);
            for (unsigned char c : b) want_hex += fmt::format("{:02x}", c);
        }
    }
    EXPECT_EQ(got, fmt::format("<f4 ({}, {}) True {}\n", rows, dim, want_hex));

    // numpy.save (v1 and v2 headers) read back by read_npy_f32
    const std::string saved = p("np.npy"), saved2 = p("np2.npy");
    ASSERT_EQ(std::system(("python3 -c \"import numpy as np, sys; a = (np.arange(21, dtype=np.float32) * 0.375 - 2).reshape(3, 7); "
                           "np.save(sys.argv[1], a); f = open(sys.argv[2], 'wb'); "
                           "np.lib.format.write_array(f, a, version=(2, 0)); f.close()\" " + saved + " " + saved2).c_str()), 0);
    for (const auto & path : {saved, saved2}) {
        const NpyMatrix m = read_npy_f32(path);
        ASSERT_EQ(m.rows, 3) << path;
        ASSERT_EQ(m.cols, 7) << path;
        for (int i = 0; i < 21; ++i) EXPECT_EQ(m.data[size_t(i)], float(i) * 0.375f - 2.0f) << path << " " << i;
    }
    // numpy rejects nothing of ours and we reject its float64 / Fortran-order arrays
    const std::string f8 = p("f8.npy"), fo = p("fo.npy");
    ASSERT_EQ(std::system(("python3 -c \"import numpy as np, sys; np.save(sys.argv[1], np.zeros((2, 2))); "
                           "np.save(sys.argv[2], np.asfortranarray(np.ones((2, 3), dtype=np.float32)))\" " + f8 + " " + fo).c_str()), 0);
    EXPECT_HAS(error_of([&] { read_npy_f32(f8); }), "'<f8'");
    EXPECT_HAS(error_of([&] { read_npy_f32(fo); }), "Fortran");
}
