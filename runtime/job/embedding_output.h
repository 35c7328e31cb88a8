// EmbeddingOutput: where an embed job's results go, crash-safe and resumable like ResultWriter.
//  - output not ending in ".npy": JSONL, one record per line, appended and fsync'd in batches (a ResultWriter):
//      {"custom_id", "embedding": [..C floats..], "usage": {"prompt_tokens", "total_tokens"}}
//      or an error record {"custom_id", "line", "error": {"code", "message"}}
//  - output "x.npy": a float32 C-order .npy of shape (rows, C), created full size (rows = the requests of the
//    input, in input order: row r belongs to the r-th request line, so a rerun puts every result in the same
//    place) plus an id index "x.npy.index.jsonl" appended one line per finished row
//      {"custom_id", "row", "usage": {...}} or an error record {"custom_id", "line", "error": {...}}
//    A row is written (pwrite) and the .npy fdatasync'd before its index line is appended, so an index line
//    always points at bytes on disk; rows without an index line are zeros (not done, or an error).
// On resume (rerun of the same job) finished() says what the output already holds, by custom_id (results) and by
// line (error records), exactly as ResultWriter::read_finished; an existing .npy of another shape is an error
// that says to delete it or set "resume": false.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/job/result_writer.h"

namespace zt {

class EmbeddingOutput {
public:
    // rows: number of request lines of the input (non-blank lines); dim: embedding size C. With resume = false
    // existing files are replaced.
    EmbeddingOutput(const std::string & path, int64_t rows, int64_t dim, bool resume);
    ~EmbeddingOutput();   // syncs
    EmbeddingOutput(const EmbeddingOutput &) = delete;
    EmbeddingOutput & operator=(const EmbeddingOutput &) = delete;

    static bool is_npy(const std::string & path);   // ends in ".npy"
    static std::string index_path(const std::string & npy_path);   // "<x.npy>.index.jsonl"
    // What an output already holds (from the index for .npy, else from the JSONL); every rank calls this before
    // rank 0 constructs the writer.
    static FinishedRequests read_finished(const std::string & path);

    // One result: `row` is its place in the .npy (ignored for JSONL), v has dim floats.
    void write(int64_t row, const std::string & custom_id, const float * v, int64_t prompt_tokens);
    // An error record (already a JSON object with custom_id, line, error).
    void write_error(const nlohmann::json & record);
    void sync();   // make everything written so far durable now

    int64_t dim() const { return dim_; }
    const std::string & path() const { return path_; }

private:
    std::string path_;
    int64_t rows_ = 0, dim_ = 0;
    bool npy_ = false;
    int fd_ = -1;                          // the .npy (npy mode)
    size_t data_offset_ = 0;               // header size of the .npy
    std::unique_ptr<ResultWriter> lines_;  // the JSONL output, or the index (npy mode)
    // npy mode: index lines waiting for their rows to be fdatasync'd; flushed (fdatasync, append, fsync) by
    // sync(), at >= 256 lines, or when > 1 s passed since the last flush
    std::vector<std::string> pending_;
    std::chrono::steady_clock::time_point last_sync_;
    void flush_index();
};

// Reads a float32 .npy written by EmbeddingOutput (or numpy.save of a float32 C-order 2-D array): shape and data.
// Throws zt::Error naming the file for anything else. (For tests and tools.)
struct NpyMatrix { int64_t rows = 0, cols = 0; std::vector<float> data; };
NpyMatrix read_npy_f32(const std::string & path);

}  // namespace zt
