// The harness of test_backend_ops (tests/backend_ops/, its own executable), private to its files: the options
// (-b/-o/-c), host tensors and random inputs, the OpCase every op family builds (row_cases.cpp, matmul_cases.cpp,
// attention_cases.cpp), and the runner and judge (harness.cpp) that compare a backend with the CPU one. main() is
// in main.cpp, the harness's own self-tests in self_tests.cpp. The program, as a whole:
//
// test_backend_ops: every op of a Backend (-b, default "cuda") against the CPU reference backend on random
// inputs, in the manner of llama.cpp's test-backend-ops. Its own executable and main():
//
//   test_backend_ops [-b cuda|cuda:N|cpu-threads] [-o OP[,OP...]] [-c auto|fp32|bf16|fp16] [gtest flags]
//
//   -b, --backend  cuda (device 0; cuda:N for device N): the CUDA backend against the CPU backend. Without a
//                  usable GPU every op case is skipped with cuda_unavailable_reason().
//                  cpu-threads: the CPU backend with 3 threads against itself with 1 thread. The CPU backend is
//                  batch and thread invariant, so every NMSE must be exactly 0 and every sampled id equal: this
//                  proves the harness in CI, where there is no GPU.
//   -o, --op       only these ops (comma list, case-insensitive): EMBEDDING RMSNORM MATMUL ROPE KV_STORE
//                  ATTENTION SWIGLU ADD GATHER_ROWS POOL SAMPLE.
//   -c, --compute  CudaBackendOptions::compute_dtype (matmul inputs); "bf16"/"fp16" also loosen attention.
//
// Each op case builds its inputs on the host (uniform in [-1, 1] from a seed derived from the case's name, so a
// case sees the same inputs whatever else runs), copies them to each backend's device memory with copy_async
// (through pinned staging; the harness never dereferences backend memory: on CUDA host_can_access(device) is
// false), runs the op on both backends and copies the outputs back. Every output lives between two 256-byte
// guards filled with a byte pattern; an output the op must write entirely starts as a NaN pattern. A case
// fails on: guard bytes changed ("OP wrote N bytes past its output"), NaN/Inf in the output (or elements left
// at the NaN fill), NMSE = sum((a-b)^2)/sum(b^2) (b = CPU) above its bound (1e-7; 5e-4 for matmul/attention
// whose compute is bf16/fp16), sampled ids that differ (temperature sampling: unless the CPU's u lies within
// 1e-9 relative of a boundary of its cumulative distribution), or an exception. One line per case:
//   RMSNORM(R=19,C=111,w=f32): NMSE = 1.2e-15 <= 1e-07 OK
//
// SelfTest.* wrap the CPU backend in a deliberately faulty backend (a write one element past / before the
// output, a NaN, an unwritten element, a 1e-3 perturbation, a wrong id, a throw) and check the harness reports
// each fault; they run under every -b.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/model/dtype.h"
#include "runtime/base/error.h"
#include "runtime/job/sampler.h"

namespace zt::backend_ops {

// ---- options (harness.cpp) ---------------------------------------------------------------------------------------
inline const std::vector<std::string> kOps = {"EMBEDDING", "RMSNORM", "MATMUL", "ROPE", "KV_STORE", "ATTENTION",
                                              "SWIGLU", "ADD", "GATHER_ROWS", "POOL", "SAMPLE"};

struct Options {
    std::string backend = "cuda";
    std::set<std::string> ops;          // empty: all
    std::string compute = "auto";       // CudaBackendOptions::compute_dtype
};
extern Options g_opt;

bool op_selected(const std::string & op);

// ---- host tensors and random inputs (harness.cpp) -----------------------------------------------------------------
struct HostTensor {
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;   // empty for an output: start as the NaN fill (the op must write every element)

    int64_t numel() const { int64_t n = 1; for (int64_t d : shape) n *= d; return n; }
    size_t nbytes() const {   // a GGUF block type: rows x the bytes of a row of shape.back() weights
        if (dtype_is_quantized(dtype)) return size_t(numel() / shape.back() * dtype_row_bytes(dtype, shape.back()));
        return size_t(numel()) * dtype_size(dtype);
    }
};

// A fixed, platform-independent stream of numbers (no std:: distributions, whose output is library-defined).
struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    float uniform(float lo = -1.0f, float hi = 1.0f) { return lo + (hi - lo) * float(g() >> 40) * 0x1.0p-24f; }
    double u01() { return double(g() >> 11) * 0x1.0p-53; }   // [0, 1), like Sampler::next_uniform
    int32_t below(int64_t n) { return int32_t(g() % uint64_t(n)); }
    std::vector<float> uniforms(int64_t n, float scale = 1.0f) {
        std::vector<float> v(static_cast<size_t>(n));
        for (float & x : v) x = scale * uniform();
        return v;
    }
};

uint64_t seed_of(const std::string & s);   // FNV-1a: a case's inputs depend on its name only

HostTensor host_f32(std::vector<int64_t> shape, const std::vector<float> & v);
HostTensor host_weight(std::vector<int64_t> shape, DType dt, const std::vector<float> & v);
HostTensor host_i32(std::vector<int64_t> shape, const std::vector<int32_t> & v);
// (rows, K) random valid blocks of GGUF block type dt (random_blocks.h; K whole blocks).
HostTensor random_quant(int64_t rows, int64_t K, DType dt, Rng & r);
HostTensor random_f32(std::vector<int64_t> shape, Rng & r, float scale = 1.0f);
HostTensor output(DType dt, std::vector<int64_t> shape);
const char * dt_name(DType d);
// A CPU backend whose ops all run one kernel path (CpuBackendOptions::kernel_path), with `threads` threads.
std::unique_ptr<Backend> cpu_backend_on_path(CpuMatmulPath path, int threads);

// ---- op cases --------------------------------------------------------------------------------------------------
using Tensors = std::vector<Tensor>;

struct SampleCheck {   // what SAMPLE needs to judge ids (the host logits and per-row parameters)
    std::vector<float> logits;
    int64_t V = 0;
    std::vector<SampleRow> rows;
};

struct OpCase {
    std::string op;     // "RMSNORM"
    std::string desc;   // "RMSNORM(R=19,C=111,w=f32)"
    double max_nmse = 1e-7;
    std::vector<HostTensor> inputs;
    std::vector<HostTensor> outputs;   // bytes: initial contents (in-place ops), or empty = NaN fill
    std::function<void(Backend &, const Tensors & in, const Tensors & out)> run;
    std::shared_ptr<SampleCheck> sample;   // set for SAMPLE: outputs[0] are ids, compared as ids
};

// How a run is judged: exact (cpu-threads) wants NMSE == 0 and identical ids.
struct Judge {
    bool exact = false;
    std::string compute = "auto";
    bool low_precision_compute() const { return compute == "bf16" || compute == "fp16"; }
    double matmul_bound(DType w) const {
        if (compute == "fp32") return 1e-7;
        if (compute == "auto" && w == DType::F32) return 1e-7;
        return 5e-4;   // x narrowed to the weights' (or the compute) dtype on the GPU
    }
    double attention_bound() const { return low_precision_compute() ? 5e-4 : 1e-7; }
};

// -- sequences of a batch (harness.cpp) --
std::vector<AttentionSeq> make_seqs(const std::vector<std::pair<int32_t, int32_t>> & n_and_past,
                                    const std::vector<int32_t> & slots);
int32_t total_rows(const std::vector<AttentionSeq> & seqs);
// "[7+0,1+333,19+50]" (n_tokens + past_len), "decode:19" when every sequence has one token and there are many
std::string seqs_desc(const std::vector<AttentionSeq> & seqs);
// n distinct slots out of S, shuffled
std::vector<int32_t> shuffled_slots(int32_t n, int32_t S, Rng & r);

inline const DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16};

// The cases of each op: row_cases.cpp, matmul_cases.cpp, attention_cases.cpp; quant_cases.cpp has the MATMUL and
// EMBEDDING cases on weights of a GGUF block type (appended to matmul_cases / embedding_cases).
std::vector<OpCase> embedding_cases(const Judge & j);
std::vector<OpCase> rmsnorm_cases(const Judge & j);
std::vector<OpCase> matmul_cases(const Judge & j);
std::vector<OpCase> rope_cases(const Judge & j);
std::vector<OpCase> kv_store_cases(const Judge & j);
std::vector<OpCase> attention_cases(const Judge & j);
std::vector<OpCase> swiglu_cases(const Judge & j);
std::vector<OpCase> add_cases(const Judge & j);
std::vector<OpCase> gather_rows_cases(const Judge & j);
std::vector<OpCase> pool_cases(const Judge & j);
std::vector<OpCase> sample_cases(const Judge & j);
std::vector<OpCase> quant_matmul_cases(const Judge & j);
std::vector<OpCase> quant_embedding_cases(const Judge & j);
// The cases of one op of kOps (harness.cpp).
std::vector<OpCase> make_cases(const std::string & op, const Judge & j);

// ---- running and judging (harness.cpp) ----------------------------------------------------------------------------
constexpr size_t kGuard = 256;                 // bytes before and after every output (keeps outputs 256-aligned)
constexpr uint32_t kGuardWord = 0x7fa5a5a5u;   // the guards' byte pattern (a signalling NaN as f32)
constexpr uint32_t kFillWord = 0x7fc0beefu;    // an output the op must write starts as this quiet NaN

struct CaseResult {
    bool ok = true;
    std::string line;                    // the table line
    std::vector<std::string> problems;   // why it failed
};

// u within 1e-9 relative of a boundary of the CPU's cumulative distribution: a nudge of u changes the CPU's pick.
bool near_boundary(const SampleCheck & s, int64_t r, int32_t ref_id);
// Runs c on `test` and `ref` and compares.
CaseResult evaluate(Backend & test, const std::string & test_name, Backend & ref, const OpCase & c, bool exact);
// The case's line and its problems.
std::string describe(const CaseResult & r);

// ---- the backends under test (harness.cpp) -----------------------------------------------------------------------
struct Backends {
    std::unique_ptr<Backend> test, ref;
    std::string test_name;     // in messages: "cuda", "cpu(3 threads)"
    std::string skip_reason;   // set when test is null and there is no usable GPU
    std::string start_error;   // set when test is null although cuda_unavailable_reason() says a GPU is usable
    bool exact = false;
};
extern std::unique_ptr<Backends> g_backends;

// The backends of -b, made on first use.
Backends & backends();

}  // namespace zt::backend_ops
