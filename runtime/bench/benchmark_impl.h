// Private to `ztinfer bench` (benchmark.h), shared by its files: benchmark.cpp (the entry point: options, the
// backend and communicator, which tables run, the header lines; and the helpers every table uses: verification
// pattern, size sweep, rows over the ranks, timed copies), benchmark_model.cpp (model shapes, random weights) and
// one file per table: benchmark_link.cpp (h2d, nvme, allgather), benchmark_layer.cpp, benchmark_gemm.cpp,
// benchmark_decode.cpp, benchmark_embed_memory.cpp.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/bench/benchmark.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"

namespace zt {

class ThreadPool;
class Tracer;

namespace bench_detail {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
inline size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// --- verification pattern: word i of a buffer seeded `seed` (benchmark.cpp) -----------------------------------

uint32_t pattern_word(uint64_t i, uint64_t seed);
// bytes (a multiple of 4) at p = words first_word, first_word + 1, ... of the pattern
void fill_pattern(void * p, size_t bytes, uint64_t first_word, uint64_t seed);
// words of p (bytes / 4 of them) that differ from words first_word, first_word + 1, ... of the pattern
int64_t count_wrong(const void * p, size_t bytes, uint64_t first_word, uint64_t seed);
int64_t count_non_finite(const std::vector<float> & v);
// min, 2 min, 4 min, ... up to max (each a multiple of 4 bytes)
std::vector<size_t> size_sweep(size_t lo, size_t hi);
// The system's MemAvailable (bytes), 0 when unknown.
size_t mem_available();

// --- one row of a table, over the ranks (benchmark.cpp) --------------------------------------------------------

struct RowResult {
    double seconds = 0;    // this rank's time; on rank 0 after across_ranks: the slowest rank's
    int64_t wrong = 0;     // summed over ranks on rank 0
    std::string skipped;   // why the row was not measured (any rank)
};

// Rank 0 gets the slowest time, the sum of #wrong and the first reason to skip; the other ranks their own row.
RowResult across_ranks(Communicator & comm, const RowResult & mine);

// Seconds per copy of `bytes` src -> dst on stream s: `warmup` copies, then kCopyRounds rounds of `iters` copies
// back to back; the fastest round counts (the link's rate, not a moment the host was busy elsewhere: the decode
// table divides by it).
constexpr int kCopyRounds = 3;
double time_copies(Backend & be, void * dst, const void * src, size_t bytes, Stream * s, int warmup, int iters);

// (N,K) weights of dtype dt as bytes: floats in [-1, 1) converted; a block type's random bytes with valid f16
// scales, so every weight is finite (benchmark_gemm.cpp). Throws zt::Error when K is not whole blocks of dt.
std::vector<uint8_t> bench_weights(DType dt, int64_t N, int64_t K);

// --- model shapes and random weights (benchmark_model.cpp) -------------------------------------------------------

struct Shape {
    std::string name;
    int64_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, vocab = 0, layers = 0;
};
Shape shape_of(const BenchmarkOptions & opt);
ModelConfig model_config(const Shape & s, int64_t layers, int64_t max_positions, bool causal = true);

// One decoder layer, the embedding and the final norm of random bf16 weights, in host memory. Every layer of the
// ModelWeights it hands out points at the same tensors (timing does not care), so a 70B shape with 80 layers
// needs one layer of host memory here. Uniform values with std 1/sqrt(fan_in) keep activations O(1).
class RandomModel {
public:
    RandomModel(const Shape & s, int n_threads);
    ModelWeights weights(int64_t layers) const;
    // multiply-adds of the layer's matmuls per token
    double layer_params() const;

private:
    // values uniform in (offset - a, offset + a) with a = sqrt(3) std
    Tensor make(std::vector<int64_t> shape, float std_dev, float offset);

    ThreadPool * pool_ = nullptr;   // while the constructor fills the tensors
    std::vector<std::unique_ptr<uint16_t[]>> storage_;
    Tensor embed_, norm_;
    LayerWeights layer_;
};

// Sum of the durations (µs) of the trace's "compute layer ..." spans.
double layer_compute_us(const Tracer & tracer);

// --- the benchmark's state ---------------------------------------------------------------------------------

struct Bench {
    const BenchmarkOptions & opt;
    Backend & be;
    Communicator & comm;
    std::FILE * out;
    bool print = false;               // rank 0 prints
    int n_threads = 1;
    size_t min_bytes = 0, max_bytes = 0, nvme_bytes = 0, block_size = 0;
    Shape shape;
    json figures = json::object();
    int64_t wrong = 0;                // over every table (rank 0: over every rank)
    std::vector<std::pair<size_t, double>> h2d_gbps;   // table 1's rows: bytes -> GB/s
    std::unique_ptr<RandomModel> model;                // made on first use (tables 4 and 5)

    Bench(const BenchmarkOptions & o, Backend & backend, Communicator & c, std::FILE * f)
        : opt(o), be(backend), comm(c), out(f) {}

    template <typename... Args> void say(fmt::format_string<Args...> f, Args &&... args) {
        if (!print) return;
        fmt::print(out, f, std::forward<Args>(args)...);
        std::fflush(out);   // a row as soon as it is measured (and before the log lines on stderr)
    }
    void row_done(const RowResult & r) { wrong += r.wrong; }
    const RandomModel & random_model() {
        if (!model) model = std::make_unique<RandomModel>(shape, n_threads);
        return *model;
    }
};

// --- the tables, in the order they run -------------------------------------------------------------------------
void table_h2d(Bench & b);            // benchmark_link.cpp
void table_nvme(Bench & b);           // benchmark_link.cpp
void table_allgather(Bench & b);      // benchmark_link.cpp
void table_layer(Bench & b);          // benchmark_layer.cpp
void table_gemm(Bench & b);           // benchmark_gemm.cpp
void table_decode(Bench & b);         // benchmark_decode.cpp
void table_embed_memory(Bench & b);   // benchmark_embed_memory.cpp
// `--profile FILE`: the machine profile instead of the tables (benchmark_profile.cpp), written by rank 0
void run_profile(Bench & b);

}  // namespace bench_detail
}  // namespace zt
