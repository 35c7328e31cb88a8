// EmbeddingOutput: an embed job's results as JSONL records or as a float32 .npy plus an id index (see
// embedding_output.h), crash-safe and resumable; read_npy_f32 reads such a .npy back.
#include "runtime/job/embedding_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "runtime/base/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .npy reader and writer assume a little-endian host");

namespace zt {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr size_t kFlushLines = 256;                    // index lines buffered before a flush
constexpr auto kFlushEvery = std::chrono::seconds(1);  // ... or this long since the last one
constexpr uint64_t kMaxHeaderBytes = 1 << 20;          // a longer .npy header is not a file we wrote
constexpr char kMagic[] = "\x93NUMPY";                 // 6 bytes

struct NpyHeader {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
    uint64_t data_offset = 0;   // bytes before the data
    uint64_t file_size = 0;
};

std::string shape_text(const std::vector<int64_t> & shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// rows * cols * 4 + offset, or false on overflow.
bool npy_end(int64_t rows, int64_t cols, uint64_t offset, uint64_t & end) {
    uint64_t n = 0;
    if (rows < 0 || cols < 0) return false;
    if (__builtin_mul_overflow(uint64_t(rows), uint64_t(cols), &n)) return false;
    if (__builtin_mul_overflow(n, uint64_t(sizeof(float)), &n)) return false;
    if (__builtin_add_overflow(n, offset, &end)) return false;
    return end <= uint64_t(std::numeric_limits<off_t>::max());
}

// The header dict of a .npy: a Python literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
class DictParser {
public:
    DictParser(const std::string & text, const std::string & path) : s_(text), path_(path) {}

    NpyHeader parse() {
        NpyHeader h;
        bool have_descr = false, have_order = false, have_shape = false;
        ws();
        expect('{');
        for (;;) {
            ws();
            if (peek() == '}') { ++i_; break; }
            const std::string key = str();
            ws();
            expect(':');
            ws();
            if (key == "descr") h.descr = str(), have_descr = true;
            else if (key == "fortran_order") h.fortran_order = boolean(), have_order = true;
            else if (key == "shape") h.shape = tuple(), have_shape = true;
            else fail(fmt::format("unexpected key '{}' in the header", key));
            ws();
            if (peek() == ',') { ++i_; continue; }
            expect('}');
            break;
        }
        ws();
        if (i_ != s_.size()) fail("unexpected text after the header dict");
        if (!have_descr || !have_order || !have_shape) fail("the header lacks 'descr', 'fortran_order' or 'shape'");
        return h;
    }

private:
    const std::string & s_;
    const std::string & path_;
    size_t i_ = 0;

    [[noreturn]] void fail(const std::string & what) {
        ZT_FAIL("{} is not a valid .npy file: {} (header: {})", path_, what,
                json(s_.substr(0, 200)).dump(-1, ' ', false, json::error_handler_t::replace));
    }
    char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
    void ws() { while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_; }
    void expect(char c) {
        if (peek() != c) fail(fmt::format("expected '{}' at offset {} of the header", c, i_));
        ++i_;
    }
    std::string str() {
        const char q = peek();
        if (q != '\'' && q != '"') fail(fmt::format("expected a quoted string at offset {} of the header", i_));
        const size_t end = s_.find(q, i_ + 1);
        if (end == std::string::npos) fail("unterminated string in the header");
        std::string v = s_.substr(i_ + 1, end - i_ - 1);
        i_ = end + 1;
        return v;
    }
    bool boolean() {
        if (s_.compare(i_, 4, "True") == 0) { i_ += 4; return true; }
        if (s_.compare(i_, 5, "False") == 0) { i_ += 5; return false; }
        fail("'fortran_order' is neither True nor False");
    }
    std::vector<int64_t> tuple() {
        std::vector<int64_t> v;
        expect('(');
        for (;;) {
            ws();
            if (peek() == ')') { ++i_; break; }
            if (peek() < '0' || peek() > '9') fail("'shape' holds something other than non-negative integers");
            int64_t n = 0;
            while (peek() >= '0' && peek() <= '9') {
                if (__builtin_mul_overflow(n, int64_t(10), &n) || __builtin_add_overflow(n, int64_t(peek() - '0'), &n))
                    fail("a dimension of 'shape' is too large");
                ++i_;
            }
            if (peek() == 'L') ++i_;   // Python 2 longs
            v.push_back(n);
            ws();
            if (peek() == ',') { ++i_; continue; }
            expect(')');
            break;
        }
        if (v.size() > 32) fail("'shape' has too many dimensions");
        return v;
    }
};

NpyHeader read_npy_header(std::ifstream & in, const std::string & path) {
    ZT_CHECK(in.good(), "cannot open {}: {}", path, std::strerror(errno));
    in.seekg(0, std::ios::end);
    const auto size = in.tellg();
    ZT_CHECK(size >= 0, "cannot read {}: {}", path, std::strerror(errno));
    in.seekg(0);
    NpyHeader h;
    h.file_size = uint64_t(size);
    unsigned char pre[12] = {};
    in.read(reinterpret_cast<char *>(pre), 10);
    ZT_CHECK(in.gcount() == 10 && std::memcmp(pre, kMagic, 6) == 0,
             "{} is not a .npy file (no \\x93NUMPY magic at its start)", path);
    uint64_t header_len = 0, pre_len = 0;
    if (pre[6] == 1 && pre[7] == 0) {
        header_len = uint64_t(pre[8]) | uint64_t(pre[9]) << 8;
        pre_len = 10;
    } else if (pre[6] == 2 && pre[7] == 0) {
        in.read(reinterpret_cast<char *>(pre + 10), 2);
        ZT_CHECK(in.gcount() == 2, "{} is truncated: it ends inside the .npy preamble", path);
        header_len = uint64_t(pre[8]) | uint64_t(pre[9]) << 8 | uint64_t(pre[10]) << 16 | uint64_t(pre[11]) << 24;
        pre_len = 12;
    } else {
        ZT_FAIL("{} is a .npy of format version {}.{}; only versions 1.0 and 2.0 are read", path, int(pre[6]), int(pre[7]));
    }
    ZT_CHECK(header_len <= kMaxHeaderBytes, "{} is not a valid .npy file: its header claims {} bytes", path, header_len);
    ZT_CHECK(pre_len + header_len <= h.file_size, "{} is truncated: it ends inside the .npy header ({} of {} bytes)",
             path, h.file_size, pre_len + header_len);
    std::string text(size_t(header_len), '\0');
    in.read(text.data(), std::streamsize(header_len));
    ZT_CHECK(uint64_t(in.gcount()) == header_len, "cannot read the header of {}", path);
    const NpyHeader d = DictParser(text, path).parse();
    h.descr = d.descr;
    h.fortran_order = d.fortran_order;
    h.shape = d.shape;
    h.data_offset = pre_len + header_len;
    return h;
}

NpyHeader read_npy_header(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    return read_npy_header(in, path);
}

// Magic, version 1.0, header length and the header dict padded with spaces and '\n' to a multiple of 64 bytes.
std::string npy_header(int64_t rows, int64_t cols) {
    std::string dict = fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows, cols);
    const size_t unpadded = 10 + dict.size() + 1;
    dict.append((unpadded + 63) / 64 * 64 - unpadded, ' ');
    dict += '\n';
    std::string h(kMagic, 6);
    h += '\x01';
    h += '\x00';
    h += char(dict.size() & 0xff);
    h += char(dict.size() >> 8);
    return h + dict;
}

void pwrite_all(int fd, const void * data, size_t n, uint64_t offset, const std::string & path) {
    const char * p = static_cast<const char *>(data);
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, p, n, off_t(offset));
        if (w < 0 && errno == EINTR) continue;
        ZT_CHECK(w > 0, "writing {} failed: {} (is the disk full?)", path, std::strerror(errno));
        p += w, n -= size_t(w), offset += uint64_t(w);
    }
}

void sync_fd(int fd, bool data_only, const std::string & path) {
    int rc;
    do rc = data_only ? ::fdatasync(fd) : ::fsync(fd);
    while (rc < 0 && errno == EINTR);
    ZT_CHECK(rc == 0, "syncing {} to disk failed: {} (is the disk full or failing?)", path, std::strerror(errno));
}

// Makes a rename in `dir` durable (best effort: some filesystems refuse fsync on folders).
void sync_dir(const fs::path & dir) {
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

// Shortest text that parses back to the same float32 (JSON has no NaN/Inf: those become null, as nlohmann does).
void append_float(std::string & out, float x) {
    if (!std::isfinite(x)) { out += "null"; return; }
    const size_t at = out.size();
    fmt::format_to(std::back_inserter(out), "{}", x);
    if (out.find_first_of(".en", at) == std::string::npos) out += ".0";   // keep it a JSON float: "1" -> "1.0"
}

}  // namespace

bool EmbeddingOutput::is_npy(const std::string & path) {
    return path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
}

std::string EmbeddingOutput::index_path(const std::string & npy_path) { return npy_path + ".index.jsonl"; }

FinishedRequests EmbeddingOutput::read_finished(const std::string & path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return {};   // (for .npy: an index without its .npy holds nothing; it is replaced)
    const std::string lines = is_npy(path) ? index_path(path) : path;
    if (!fs::exists(lines, ec)) return {};
    return ResultWriter::read_finished(lines);
}

EmbeddingOutput::EmbeddingOutput(const std::string & path, int64_t rows, int64_t dim, bool resume)
    : path_(path), rows_(rows), dim_(dim), npy_(is_npy(path)) {
    ZT_CHECK(dim > 0, "embedding output {}: the embedding size is {}; it must be positive", path, dim);
    last_sync_ = std::chrono::steady_clock::now();
    if (!npy_) {
        lines_ = std::make_unique<ResultWriter>(path, resume);
        return;
    }
    ZT_CHECK(rows >= 0, "embedding output {}: {} rows", path, rows);
    uint64_t end = 0;
    const std::string header = npy_header(rows, dim);
    ZT_CHECK(npy_end(rows, dim, header.size(), end), "embedding output {}: {} rows of {} floats are too large for "
             "one file", path, rows, dim);
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        fs::create_directories(parent, ec);
        ZT_CHECK(!ec, "cannot create the output folder {}: {}", parent.string(), ec.message());
    }
    std::error_code ec;
    if (resume && fs::exists(path, ec)) {
        NpyHeader h;
        try {
            h = read_npy_header(path);
        } catch (const Error & e) {
            ZT_FAIL("cannot resume into {}: {}; delete it or set \"ztinfer.resume\": false to start it afresh", path,
                    e.message());
        }
        const std::vector<int64_t> want = {rows, dim};
        ZT_CHECK(h.descr == "<f4" && !h.fortran_order && h.shape == want,
                 "cannot resume into {}: it holds an array of shape {} dtype '{}'{}, but this job writes shape {} "
                 "float32 ('<f4'; one row per request line, the model's embedding size): it is the output of another "
                 "input or model; delete it (and {}) or set \"ztinfer.resume\": false to replace it", path,
                 shape_text(h.shape), h.descr, h.fortran_order ? " in Fortran order" : "", shape_text(want),
                 index_path(path));
        ZT_CHECK(npy_end(rows, dim, h.data_offset, end) && h.file_size >= end,
                 "cannot resume into {}: it is truncated ({} bytes, a {} float32 array needs {}); delete it or set "
                 "\"ztinfer.resume\": false to start it afresh", path, h.file_size, shape_text(want), end);
        data_offset_ = size_t(h.data_offset);
        lines_ = std::make_unique<ResultWriter>(index_path(path), /*resume=*/true);
        fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        ZT_CHECK(fd_ >= 0, "cannot open output {}: {}", path, std::strerror(errno));
        return;
    }
    // A fresh output. The index is emptied first, so that an old index never describes the new .npy (a crash in
    // between leaves an empty index: nothing is done); the .npy appears whole, by rename.
    lines_ = std::make_unique<ResultWriter>(index_path(path), /*resume=*/false);
    lines_->sync();
    std::string tmp = path + ".tmp.XXXXXX";
    const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    ZT_CHECK(fd >= 0, "cannot create a file beside {}: {}", path, std::strerror(errno));
    try {
        ::fchmod(fd, 0644);
        pwrite_all(fd, header.data(), header.size(), 0, tmp);
        int rc;
        do rc = ::ftruncate(fd, off_t(end));
        while (rc < 0 && errno == EINTR);
        ZT_CHECK(rc == 0, "cannot size {} to {} bytes: {} (is the disk full?)", tmp, end, std::strerror(errno));
        sync_fd(fd, false, tmp);
        ZT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename {} to {}: {}", tmp, path,
                 std::strerror(errno));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    sync_dir(parent);
    fd_ = fd;
    data_offset_ = header.size();
}

EmbeddingOutput::~EmbeddingOutput() {
    try {
        sync();
    } catch (const std::exception & e) {
        spdlog::error("{} (the results not yet in {} are run again on resume)", e.what(), path_);
    }
    if (fd_ >= 0) ::close(fd_);
}

void EmbeddingOutput::write(int64_t row, const std::string & custom_id, const float * v, int64_t prompt_tokens) {
    ZT_CHECK(v != nullptr, "embedding output {}: no vector given for \"{}\"", path_, custom_id);
    const std::string id = json(custom_id).dump(-1, ' ', false, json::error_handler_t::replace);
    if (!npy_) {
        std::string line;
        line.reserve(size_t(dim_) * 12 + id.size() + 96);
        line += "{\"custom_id\":" + id + ",\"embedding\":[";
        for (int64_t i = 0; i < dim_; ++i) {
            if (i) line += ',';
            append_float(line, v[i]);
        }
        line += fmt::format("],\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{}}}}}", prompt_tokens, prompt_tokens);
        lines_->write_line(line);
        return;
    }
    ZT_CHECK(row >= 0 && row < rows_, "embedding output {}: row {} of \"{}\" is outside its {} rows (the input "
             "changed while the job ran?)", path_, row, custom_id, rows_);
    const size_t row_bytes = size_t(dim_) * sizeof(float);
    pwrite_all(fd_, v, row_bytes, uint64_t(data_offset_) + uint64_t(row) * row_bytes, path_);
    pending_.push_back(fmt::format("{{\"custom_id\":{},\"row\":{},\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{}}}}}",
                                   id, row, prompt_tokens, prompt_tokens));
    if (pending_.size() >= kFlushLines || std::chrono::steady_clock::now() - last_sync_ > kFlushEvery) flush_index();
}

void EmbeddingOutput::write_error(const nlohmann::json & record) {
    if (!npy_) {
        lines_->write(record);
        return;
    }
    // kept in order with the result lines (an error has no row, so it could go at once; order is simpler to read)
    pending_.push_back(record.dump(-1, ' ', false, json::error_handler_t::replace));
    if (pending_.size() >= kFlushLines || std::chrono::steady_clock::now() - last_sync_ > kFlushEvery) flush_index();
}

// The rows first (fdatasync), then their index lines, then the index (fsync): an index line on disk always points
// at a row on disk.
void EmbeddingOutput::flush_index() {
    sync_fd(fd_, true, path_);
    size_t done = 0;
    try {
        for (; done < pending_.size(); ++done) lines_->write_line(pending_[done]);
    } catch (...) {
        pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(done));   // never written twice
        throw;
    }
    pending_.clear();
    lines_->sync();
    last_sync_ = std::chrono::steady_clock::now();
}

void EmbeddingOutput::sync() {
    if (npy_) flush_index();
    else lines_->sync();
    last_sync_ = std::chrono::steady_clock::now();
}

NpyMatrix read_npy_f32(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    const NpyHeader h = read_npy_header(in, path);
    ZT_CHECK(h.descr == "<f4", "{} holds dtype '{}'; expected float32 ('<f4')", path, h.descr);
    ZT_CHECK(!h.fortran_order, "{} is in Fortran order; expected a C-order array (numpy.ascontiguousarray)", path);
    ZT_CHECK(h.shape.size() == 2, "{} holds an array of shape {}; expected 2-D (rows, cols)", path, shape_text(h.shape));
    uint64_t end = 0;
    ZT_CHECK(npy_end(h.shape[0], h.shape[1], h.data_offset, end), "{}: shape {} is too large", path,
             shape_text(h.shape));
    ZT_CHECK(h.file_size >= end, "{} is truncated: {} bytes, but shape {} float32 needs {}", path, h.file_size,
             shape_text(h.shape), end);
    NpyMatrix m;
    m.rows = h.shape[0];
    m.cols = h.shape[1];
    m.data.resize(size_t(m.rows) * size_t(m.cols));
    in.seekg(std::streamoff(h.data_offset));
    const auto bytes = std::streamsize(m.data.size() * sizeof(float));
    in.read(reinterpret_cast<char *>(m.data.data()), bytes);
    ZT_CHECK(in.gcount() == bytes, "cannot read the data of {} (read {} of {} bytes)", path, in.gcount(), bytes);
    return m;
}

}  // namespace zt
