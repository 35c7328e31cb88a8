// Private to the CUDA backend, shared by its three files: backend_cuda.cpp (device, streams, events, host tasks,
// memory, the entry points of backend.h / backend_cuda.h), backend_cuda_ops.cpp (the ops, the cuBLASLt GEMM) and
// backend_cuda_quant.cpp (matmul and embedding on GGUF-quantized weights). Holds the CudaBackend class, the state
// its Buffers, Events and host tasks share (Core), the per-stream op state and the CUDA / cuBLASLt error macros.
// Other code uses backend_cuda.h.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"

// A CUDA runtime call that must succeed: else zt::Error "<what>: <cudaErrorName> (<description>)" with file:line.
#define ZT_BE_CUDA(expr, ...)                                                                             \
    do {                                                                                                  \
        const cudaError_t zt_be_err_ = (expr);                                                            \
        if (zt_be_err_ != cudaSuccess) {                                                                  \
            cudaGetLastError(); /* a non-sticky error must not resurface at the next launch's check */    \
            ZT_FAIL("{}: {} ({})", fmt::format(__VA_ARGS__), cudaGetErrorName(zt_be_err_),               \
                    cudaGetErrorString(zt_be_err_));                                                      \
        }                                                                                                 \
    } while (0)
// The same for a cuBLASLt call.
#define ZT_BE_CUBLAS(expr, ...)                                                                           \
    do {                                                                                                  \
        const cublasStatus_t zt_be_st_ = (expr);                                                          \
        if (zt_be_st_ != CUBLAS_STATUS_SUCCESS)                                                           \
            ZT_FAIL("{}: cuBLASLt says {} ({})", fmt::format(__VA_ARGS__), cublasLtGetStatusName(zt_be_st_), \
                    cublasLtGetStatusString(zt_be_st_));                                                  \
    } while (0)

namespace zt::cuda_impl {

constexpr int kStreams = 3;                                 // compute, copy, comm (index = int(StreamRole))
constexpr size_t kWorkspaceBytes = size_t(32) << 20;        // cuBLASLt workspace, per stream that runs matmuls

static_assert(int(StreamRole::compute) == 0 && int(StreamRole::copy) == 1 && int(StreamRole::comm) == 2,
              "stream index = int(StreamRole)");

inline size_t round_up(size_t n, size_t granule) { return (n + granule - 1) / granule * granule; }

// ---- state shared by the backend, its Buffers, Events and queued host tasks (backend_cuda.cpp) ---------------
struct HostTaskCall;   // one queued host_task

struct Core {
    explicit Core(int dev, size_t cap) : device(dev), account(cap) {}
    ~Core();   // the backend synchronised its streams; Buffers that outlived it are gone too
    Core(const Core &) = delete;
    Core & operator=(const Core &) = delete;

    const int device;
    std::array<cudaStream_t, kStreams> streams{};   // made by the backend's constructor
    cudaStream_t zero_stream = nullptr;             // zero-fills fresh device allocations
    MemoryAccount account;

    // --- host-task bookkeeping (all under mu) ---
    struct StreamTasks {
        uint64_t submitted = 0;                  // host tasks queued on this stream so far
        std::array<uint64_t, kStreams> seen{};   // for each other stream: its host tasks this stream has waited for
        std::exception_ptr error;                // first unsurfaced exception of this stream's host tasks
        uint64_t error_seq = 0;                  // ... and the number of the task that threw it
    };
    std::mutex mu;
    std::array<StreamTasks, kStreams> tasks;
    HostTaskCall * retired = nullptr;            // ran, waiting to be destroyed off the callback thread
    std::vector<std::function<void()>> deferred; // frees / event releases requested from inside a host task

    // Called on the CUDA callback thread: keeps the first unsurfaced error of the stream.
    void store_error(int stream, uint64_t seq, std::exception_ptr ex);
    void retire(HostTaskCall * call);
    // Runs fn now, or later on a normal thread when called from inside a host task (no CUDA calls there).
    void run_or_defer(std::function<void()> fn);
    // Destroys host tasks that ran and runs deferred frees (on a normal thread, device current).
    void reap();
    // Takes stream i's unsurfaced error when it was thrown by one of its first `limit` host tasks.
    std::exception_ptr take_error(int i, uint64_t limit);
    // Waits for everything queued on the three streams (before memory is freed). Never throws.
    void drain_streams() noexcept;
    // The free function of every Buffer: waits for queued work, frees, returns the bytes to the account.
    void free_memory(void * p, MemKind kind, const std::string & purpose, size_t bytes) noexcept;
    void release_event(cudaEvent_t ev) noexcept;
};

class CudaStream final : public Stream {
public:
    CudaStream(StreamRole role, cudaStream_t h) : Stream(role), handle(h) {}
    const cudaStream_t handle;
};

// ---- cuBLASLt plans (backend_cuda_ops.cpp) -------------------------------------------------------------------
struct GemmKey {
    int64_t m, n, k;
    int64_t ldd;                       // leading dim of D (m, or N for a tile of W's rows)
    int type;                          // cudaDataType_t of A and B
    uint32_t align_a, align_b, align_d;
    bool operator<(const GemmKey & o) const {
        return std::tie(m, n, k, ldd, type, align_a, align_b, align_d) <
               std::tie(o.m, o.n, o.k, o.ldd, o.type, o.align_a, o.align_b, o.align_d);
    }
};

struct GemmPlan;   // the cuBLASLt descriptors and algorithm of one GemmKey

// The kernels' weight type and cuBLASLt's data type of F32 / F16 / BF16 (another dtype: an error naming it), and
// the largest power of two (<= 256) dividing an address: the alignment cuBLASLt may assume (backend_cuda_ops.cpp).
kernels::WType wtype_of(DType t);
cudaDataType_t cuda_type_of(DType t);
uint32_t alignment_of(const void * p);

// ---- per-stream op state (backend_cuda_ops.cpp) ----------------------------------------------------------------
// The AttentionSeq list last uploaded for attention / pool (cached: every layer of a step uses the same one).
struct SeqUpload {
    bool valid = false;
    std::vector<AttentionSeq> key;
    int64_t T = -1;
    Buffer buf;                 // kernels::AttnSeq[n_active] (sequences with n_tokens > 0, in order)
    int n_active = 0;
    bool decode = false;        // every sequence one new token, sequence b = row b, n_active == T
    bool covers_all = false;    // every row 0..T-1 belongs to a sequence
    int64_t shared_row = -1;    // a row claimed by two sequences (-1: none)
};
// One kv_store launch: entries entry0 .. entry0 + n - 1 of the destination rows, source rows src0 .. src0 + n - 1.
struct KvRun {
    int64_t src0, n, entry0;
};
// The destination rows last uploaded for kv_store (cached per (seqs, M)).
struct KvUpload {
    bool valid = false;
    std::vector<AttentionSeq> key;
    int64_t M = -1;
    Buffer buf;                 // int32 destination rows, in sequence order
    std::vector<KvRun> runs;
};
// Work of one stream touches only its own state (so ops may run on several streams at once).
struct OpState {
    std::mutex mu;
    Buffer workspace;           // cuBLASLt, kWorkspaceBytes
    Buffer gemm_scratch;        // narrowed / widened GEMM operands
    Buffer sample_params;       // kernels::SampleParams[R]
    SeqUpload seqs;
    KvUpload kv;
};

// ---- the backend ---------------------------------------------------------------------------------------------
class CudaBackend final : public Backend {
public:
    explicit CudaBackend(const CudaBackendOptions & o);
    ~CudaBackend() override;

    std::string name() const override { return "cuda"; }
    int device() const { return core_->device; }
    cudaStream_t handle_of(Stream * s, const char * what) { return core_->streams[size_t(index_of(s, what))]; }

    // ---- memory, streams, events (backend_cuda.cpp) -------------------------------------------------------
    Buffer alloc(size_t bytes, MemKind kind, const char * purpose) override;
    bool host_can_access(MemKind kind) const override { return kind != MemKind::device; }
    MemoryStats memory_stats() const override { return core_->account.stats(); }
    void reset_memory_peak() override { core_->account.reset_peak(); }
    Stream * stream(StreamRole role) override { return streams_[size_t(int(role))].get(); }

    // dst and src must stay valid (and src unchanged) until the copy is done on s (record + wait / synchronize);
    // a pageable host source is staged before the call returns.
    void copy_async(void * dst, const void * src, size_t bytes, Stream * s) override;
    Event record(Stream * s) override;
    void wait(Stream * s, Event e) override;
    void synchronize(Stream * s) override;
    void host_task(Stream * s, std::function<void()> fn) override;

    // ---- ops (backend_cuda_ops.cpp) -------------------------------------------------------------------------
    void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream * s) override;
    void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream * s) override;
    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream * s) override;
    void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream * s) override;
    void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                  const std::vector<AttentionSeq> & seqs, Stream * s) override;
    void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                   const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream * s) override;
    void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream * s) override;
    void add(Tensor out, const Tensor & a, const Tensor & b, Stream * s) override;
    void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream * s) override;
    void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream * s) override;
    void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream * s) override;

private:
    // backend_cuda.cpp
    void enter();
    int enter(Stream * s, const char * what);
    int index_of(Stream * s, const char * what) const {
        if (!s) return 0;
        for (int i = 0; i < kStreams; ++i)
            if (s == streams_[size_t(i)].get()) return i;
        ZT_FAIL("{}: the stream does not belong to this cuda backend; pass one from this backend's stream()", what);
    }
    cudaStream_t handle(int i) const { return core_->streams[size_t(i)]; }

    // backend_cuda_ops.cpp
    void grow(Buffer & buf, size_t bytes, const char * purpose, bool geometric);
    const SeqUpload & upload_seqs(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t T, cudaStream_t cs);
    const KvUpload & upload_kv_rows(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t M, cudaStream_t cs);
    std::shared_ptr<const GemmPlan> gemm_plan(const GemmKey & key);
    void gemm(OpState & st, const void * A, const void * B, float * D, int64_t m, int64_t n, int64_t k, int64_t ldd,
              DType cdt, cudaStream_t cs);

    // backend_cuda_quant.cpp: matmul / embedding with GGUF-quantized weights (after enter: si is the stream index)
    void matmul_quant(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, int si);
    void embedding_quant(Tensor out, const Tensor & tokens, const Tensor & table, int si);

    std::shared_ptr<Core> core_;
    std::array<std::unique_ptr<CudaStream>, kStreams> streams_;
    bool use_fixed_dtype_ = false;
    DType fixed_dtype_ = DType::F32;              // the operand dtype when compute_dtype is not "auto"
    cublasLtHandle_t lt_ = nullptr;
    std::mutex plans_mu_;
    std::map<GemmKey, std::shared_ptr<const GemmPlan>> plans_;
    std::array<OpState, kStreams> ops_;
};

}  // namespace zt::cuda_impl
