// Crash-safe JSONL output (see result_writer.h).
#include "runtime/job/result_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"

namespace zt {

namespace {
constexpr auto kSyncEvery = std::chrono::seconds(5);

void write_all(int fd, const std::string & s, const std::string & path) {
    size_t off = 0;
    while (off < s.size()) {
        const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR) continue;
        ZT_CHECK(n > 0, "writing {} failed: {} (is the disk full?)", path, n < 0 ? std::strerror(errno) : "no progress");
        off += size_t(n);
    }
}
// Offset just past the last '\n' of the file's first `size` bytes (0 when there is none), read from the end.
size_t end_of_last_line(const std::string & path, size_t size) {
    std::ifstream f(path, std::ios::binary);
    std::string buf(65536, '\0');
    size_t end = size;
    while (end > 0) {
        const size_t n = std::min(end, buf.size());
        f.seekg(std::streamoff(end - n));
        f.read(&buf[0], std::streamsize(n));
        ZT_CHECK(f.good(), "cannot read {} to find its last whole line", path);
        const size_t at = buf.rfind('\n', n - 1);
        if (at != std::string::npos) return end - n + at + 1;
        end -= n;
    }
    return 0;
}

}  // namespace

ResultWriter::ResultWriter(const std::string & path, bool resume) : path_(path) {
    namespace fs = std::filesystem;
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        fs::create_directories(parent, ec);
        ZT_CHECK(!ec, "cannot create the output folder {}: {}", parent.string(), ec.message());
    }
    bool torn = false;
    if (resume && fs::exists(path)) finished_ = read_finished(path, &torn);
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0644);
    ZT_CHECK(fd_ >= 0, "cannot open output {}: {}", path, std::strerror(errno));
    if (torn) {
        // A crash cut the last record short (or before its newline): cut the file back to its last whole line,
        // as read_finished did not count it (that request runs again).
        const size_t size = size_t(fs::file_size(path)), keep = whole_lines_size(path);
        ZT_CHECK(::ftruncate(fd_, off_t(keep)) == 0, "cannot cut the torn last line off {}: {}", path,
                 std::strerror(errno));
        spdlog::warn("{}: the last line was cut short (a crash while writing it): removed its {} bytes; that "
                     "request runs again", path, size - keep);
    }
    last_sync_ = std::chrono::steady_clock::now();
}

size_t ResultWriter::whole_lines_size(const std::string & path) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) return 0;
    return end_of_last_line(path, size_t(size));
}

FinishedRequests ResultWriter::read_finished(const std::string & path, bool * torn_last_line) {
    FinishedRequests finished;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    const size_t keep = ec ? 0 : whole_lines_size(path);   // the records; bytes after them are not one
    std::ifstream in(path, std::ios::binary);
    std::string line;
    for (size_t at = 0; at < keep && std::getline(in, line); at += line.size() + 1) {
        try {
            const auto j = parse_json_input(line);
            if (j.contains("error") && j.contains("line") && j["line"].is_number_integer())
                finished.lines.insert(j["line"].get<int64_t>());
            else if (j.contains("custom_id") && j["custom_id"].is_string())
                finished.custom_ids.insert(j["custom_id"].get<std::string>());
        } catch (const std::exception &) {   // nlohmann::json::exception, JsonTooDeep
            // not a record (garbage written by something else): that request, if any, simply runs again
        }
    }
    if (torn_last_line) *torn_last_line = !ec && size_t(size) > keep;
    return finished;
}

ResultWriter::~ResultWriter() {
    if (fd_ >= 0) {
        if (::fsync(fd_) != 0)
            std::fprintf(stderr, "ztinfer: syncing %s to disk failed: %s; rerun the job to make sure every record is "
                         "on disk\n", path_.c_str(), std::strerror(errno));
        ::close(fd_);
    }
}

void ResultWriter::write(const nlohmann::json & record) {
    write_line(record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void ResultWriter::write_line(const std::string & line) {
    write_all(fd_, line + "\n", path_);
    if (std::chrono::steady_clock::now() - last_sync_ > kSyncEvery) sync();
}

void ResultWriter::sync() {
    ZT_CHECK(::fsync(fd_) == 0, "syncing {} to disk failed: {} (disk full or failing?); the records written so far "
             "may not be durable: fix the disk and rerun (finished requests are skipped)", path_, std::strerror(errno));
    last_sync_ = std::chrono::steady_clock::now();
}

}  // namespace zt
