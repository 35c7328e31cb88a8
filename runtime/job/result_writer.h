// ResultWriter: appends one JSON record per line to the job's output, so that every finished request survives
// a crash; fsyncs periodically and on close. On resume it reports which requests are already done.
#pragma once
#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace zt {

struct FinishedRequests {
    std::set<std::string> custom_ids;   // results already in the output
    std::set<int64_t> lines;            // input lines that already have an error record
};

class ResultWriter {
public:
    // Opens `path` for appending (creating folders as needed). With resume = false an existing file is replaced.
    ResultWriter(const std::string & path, bool resume);
    ~ResultWriter();
    ResultWriter(const ResultWriter &) = delete;
    ResultWriter & operator=(const ResultWriter &) = delete;

    // What the output already holds (empty unless resuming). Call before writing.
    const FinishedRequests & finished() const { return finished_; }

    void write(const nlohmann::json & record);   // one line, written with a single write(2)
    void write_line(const std::string & line);   // an already serialised record (no newline)
    // What an output file holds (the results by custom_id, error records by line). Every rank reads this at
    // start-up; only rank 0 then opens the writer. One rule decides what a record is, for this reader and for the
    // writer's repair on resume: a line that ends in '\n' (whole_lines_size). Bytes after the last '\n' (a record
    // cut short by a crash, or even a whole one whose newline never reached the disk) are not counted here
    // (*torn_last_line says they are there) and the writer cuts them off: that request runs again.
    static FinishedRequests read_finished(const std::string & path, bool * torn_last_line = nullptr);
    // Bytes of `path` up to and including its last '\n' (0 for a missing file or one without a newline).
    static size_t whole_lines_size(const std::string & path);
    void sync();                                 // fsync now
    const std::string & path() const { return path_; }

private:
    std::string path_;
    int fd_ = -1;
    FinishedRequests finished_;
    std::chrono::steady_clock::time_point last_sync_;
};

}  // namespace zt
