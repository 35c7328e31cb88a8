// The CUDA backend: the ops of backend.h on one GPU, with the CPU backend (backend_cpu.cpp) as the spec (the same
// argument checks and messages, the same results up to summation order); kernels/kernels.h does the math.
//
// Device. options.device; every entry point first makes it current on the calling thread (the copy and comm
// streams are driven from other threads, e.g. the MPI communicator's), and refuses to run inside a host task.
//
// Streams, events, host tasks. compute, copy, comm are three non-blocking cudaStreams (they never synchronise with
// the legacy default stream). copy_async = cudaMemcpyAsync(cudaMemcpyDefault); record = a cudaEvent
// (DisableTiming) in a shared_ptr that destroys it; wait = cudaStreamWaitEvent; synchronize = cudaStreamSynchronize
// (nullptr: all three). host_task = cudaLaunchHostFunc of a heap HostTaskCall; the CUDA callback thread runs fn, keeps
// the first exception it throws per stream (with the task's sequence number), and hands the call back to be
// destroyed on a normal thread (its captures, a Buffer say, may need CUDA calls, which host functions must not make).
// An event remembers how many host tasks of each stream precede it (its own stream's, and those its stream had
// waited for), so an error surfaces, once, as zt::Error at the first synchronize of a stream that depends on the
// failed task, or at a wait on an event recorded after it (if the task has already run by then), as on the CPU.
//
// Memory. device: cudaMalloc + zero fill (cudaMemsetAsync on a private stream, then synchronised); pinned_host:
// cudaHostAlloc(Portable) + memset; host: aligned_alloc + memset. Everything is counted in a MemoryAccount
// (options.max_memory_bytes caps device memory, by purpose). Freeing a Buffer first waits for the three streams
// (so unwinding never frees memory queued work still uses), then cudaFree / cudaFreeHost / free; a free that
// happens inside a host task is deferred to the next entry point. Internal scratch is accounted like the rest:
// "cuBLASLt workspace" (32 MiB, per stream on its first matmul), "matmul scratch", "op metadata".
//
// Ops. Small per-call metadata (AttnSeq arrays, kv_store destination rows, sampling parameters) is uploaded from
// host vectors with cudaMemcpyAsync on the op's stream into per-stream device scratch (a pageable source is staged
// before the call returns); the sequence list of attention/pool and the destination rows of kv_store are cached
// per stream (same seqs => no upload), since every layer of a step uses the same ones. Attention uses
// attention_decode when every sequence has one new token (sequence b = row b), else attention_prefill.
//
// GEMM. matmul: out (T,N) f32 = x (T,K) f32 · w (N,K)^T through cuBLASLt with CUBLAS_COMPUTE_32F (fp32 accumulate,
// never TF32). Row-major out (T,N) is column-major (N,T), so D = op(A)·B with A = w (transa = T, stored K x N,
// lda = K), B = x (transb = N, K x T, ldb = K), m = N, n = T, k = K, C = D f32 (N x T, ldc = N). Operand dtype =
// options.compute_dtype ("auto": the weight's; "fp32": bf16/f16 weights are widened into scratch; "bf16"/"fp16": x,
// and weights of another dtype, are narrowed into scratch). Bias: kernels::add_bias afterwards. Descriptors,
// layouts and the heuristic's algorithm are cached per (m, n, k, dtype, pointer alignments): a given shape always
// runs the same algorithm, so the same inputs give bit-identical outputs run to run (the heuristic is a function
// of the problem, the fixed 32 MiB workspace and the GPU; cuBLASLt's split-K schemes reduce in a fixed order:
// in place with counters that "guarantee the sequentiality", or in a separate pass). Different T may use different
// algorithms, so unlike the CPU backend a row's bits can depend on how many rows share the call.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cuda.h"
#include "runtime/base/error.h"
#include "runtime/backend/memory_account.h"
#include "runtime/backend/op_checks.h"

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

namespace zt {
namespace {

constexpr int kStreams = 3;                                 // compute, copy, comm (index = int(StreamRole))
constexpr size_t kWorkspaceBytes = size_t(32) << 20;        // cuBLASLt workspace, per stream that runs matmuls
constexpr size_t kMaxGemmPlans = 4096;                      // plan cache bound (cleared when full; see gemm_plan)
constexpr uint64_t kAllTasks = std::numeric_limits<uint64_t>::max();

static_assert(int(StreamRole::compute) == 0 && int(StreamRole::copy) == 1 && int(StreamRole::comm) == 2,
              "stream index = int(StreamRole)");
static_assert(sizeof(AttentionSeq) == 4 * sizeof(int32_t) && std::is_trivially_copyable_v<AttentionSeq>,
              "AttentionSeq is compared with memcmp");

const char * role_name(int i) {
    switch (i) {
        case 0: return "compute";
        case 1: return "copy";
        case 2: return "comm";
    }
    return "?";
}

std::string visible_devices_env() {
    const char * v = std::getenv("CUDA_VISIBLE_DEVICES");
    return v ? fmt::format("\"{}\"", v) : std::string("unset");
}

// Makes `device` current on the calling thread (a cheap thread-local read when it already is).
void make_current(int device) {
    int cur = -1;
    ZT_BE_CUDA(cudaGetDevice(&cur), "cudaGetDevice");
    if (cur != device) ZT_BE_CUDA(cudaSetDevice(device), "making GPU {} current on this thread", device);
}

// Makes `device` current for a scope and restores the previous one (for frees and event releases, which may run
// on any thread and must not change its current device). Never throws.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) noexcept : device_(device) {
        if (cudaGetDevice(&prev_) != cudaSuccess) { cudaGetLastError(); prev_ = -1; }
        if (prev_ != device_ && cudaSetDevice(device_) != cudaSuccess) cudaGetLastError();
    }
    ~DeviceGuard() {
        if (prev_ >= 0 && prev_ != device_ && cudaSetDevice(prev_) != cudaSuccess) cudaGetLastError();
    }
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard & operator=(const DeviceGuard &) = delete;
private:
    int device_, prev_ = -1;
};

// Logs a failed CUDA call on a path that must not throw (frees, destructors). During process teardown the runtime
// may already be unloaded: that is not worth a line.
void log_cuda_failure(cudaError_t err, const char * what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();
    if (err == cudaErrorCudartUnloading) return;
    spdlog::error("cuda backend: {} failed: {} ({})", what, cudaGetErrorName(err), cudaGetErrorString(err));
}

// Rethrows a host task's exception as zt::Error (as is when it already is one).
[[noreturn]] void rethrow_task_error(const std::exception_ptr & ex, int stream) {
    try {
        std::rethrow_exception(ex);
    } catch (const Error &) {
        throw;
    } catch (const std::exception & e) {
        ZT_FAIL("a task on the {} stream failed: {}", role_name(stream), e.what());
    } catch (...) {
        ZT_FAIL("a task on the {} stream threw a non-standard exception; throw std::exception subclasses from "
                "host tasks", role_name(stream));
    }
}

// ---- state shared by the backend, its Buffers, Events and queued host tasks --------------------------------
thread_local bool t_in_host_task = false;   // true on the CUDA callback thread while it runs a host task's fn

struct Core;

// One queued host_task: lives from host_task() until reaped on a normal thread after it ran.
struct HostTaskCall {
    std::function<void()> fn;
    std::shared_ptr<Core> core;
    int stream = 0;
    uint64_t seq = 0;                 // 1-based number of this host task on its stream
    HostTaskCall * next = nullptr;    // in Core::retired once it ran
};

struct Core {
    explicit Core(int dev, size_t cap) : device(dev), account(cap) {}
    ~Core() {   // the backend synchronised its streams; Buffers that outlived it are gone too
        DeviceGuard g(device);
        for (cudaStream_t s : streams)
            if (s) log_cuda_failure(cudaStreamDestroy(s), "cudaStreamDestroy");
        if (zero_stream) log_cuda_failure(cudaStreamDestroy(zero_stream), "cudaStreamDestroy");
    }
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
    void store_error(int stream, uint64_t seq, std::exception_ptr ex) {
        std::lock_guard<std::mutex> lock(mu);
        StreamTasks & t = tasks[size_t(stream)];
        if (!t.error) { t.error = std::move(ex); t.error_seq = seq; }
    }
    void retire(HostTaskCall * call) {
        std::lock_guard<std::mutex> lock(mu);
        call->next = retired;
        retired = call;
    }
    // Runs fn now, or later on a normal thread when called from inside a host task (no CUDA calls there).
    void run_or_defer(std::function<void()> fn) {
        if (t_in_host_task) {
            std::lock_guard<std::mutex> lock(mu);
            deferred.push_back(std::move(fn));
            return;
        }
        fn();
    }
    // Destroys host tasks that ran and runs deferred frees (on a normal thread, device current).
    void reap() {
        HostTaskCall * list;
        std::vector<std::function<void()>> work;
        {
            std::lock_guard<std::mutex> lock(mu);
            list = std::exchange(retired, nullptr);
            work.swap(deferred);
        }
        while (list) {
            HostTaskCall * next = list->next;
            delete list;
            list = next;
        }
        for (auto & f : work) f();
    }
    // Takes stream i's unsurfaced error when it was thrown by one of its first `limit` host tasks.
    std::exception_ptr take_error(int i, uint64_t limit) {
        std::lock_guard<std::mutex> lock(mu);
        StreamTasks & t = tasks[size_t(i)];
        if (!t.error || t.error_seq > limit) return nullptr;
        return std::exchange(t.error, nullptr);
    }

    // Waits for everything queued on the three streams (before memory is freed). Never throws.
    void drain_streams() noexcept {
        for (cudaStream_t s : streams)
            if (s) log_cuda_failure(cudaStreamSynchronize(s), "cudaStreamSynchronize before a free");
    }
    // The free function of every Buffer: waits for queued work, frees, returns the bytes to the account.
    void free_memory(void * p, MemKind kind, const std::string & purpose, size_t bytes) noexcept {
        try {
            run_or_defer([this, p, kind, purpose, bytes] {
                {
                    DeviceGuard g(device);
                    drain_streams();
                    switch (kind) {
                        case MemKind::device: log_cuda_failure(cudaFree(p), "cudaFree"); break;
                        case MemKind::pinned_host: log_cuda_failure(cudaFreeHost(p), "cudaFreeHost"); break;
                        case MemKind::host: std::free(p); break;
                    }
                }
                account.remove(kind, purpose, bytes);
            });
        } catch (const std::exception & e) {
            spdlog::error("cuda backend: freeing {} of {} failed: {}", format_bytes(bytes), purpose, e.what());
        }
    }
    void release_event(cudaEvent_t ev) noexcept {
        try {
            run_or_defer([this, ev] {
                DeviceGuard g(device);
                log_cuda_failure(cudaEventDestroy(ev), "cudaEventDestroy");
            });
        } catch (const std::exception & e) {
            spdlog::error("cuda backend: releasing an event failed: {}", e.what());
        }
    }
};

// The free function a Buffer carries (keeps the Core, and so the streams it drains, alive).
struct FreeFn {
    std::shared_ptr<Core> core;
    MemKind kind;
    std::string purpose;
    size_t bytes;
    void operator()(void * p) const { core->free_memory(p, kind, purpose, bytes); }
};

// What an Event's impl points at.
struct CudaEvent {
    std::shared_ptr<Core> core;
    cudaEvent_t ev = nullptr;
    int stream = 0;                           // the stream it was recorded on
    std::array<uint64_t, kStreams> seqs{};    // host tasks of each stream that precede it
    CudaEvent() = default;
    CudaEvent(const CudaEvent &) = delete;
    CudaEvent & operator=(const CudaEvent &) = delete;
    ~CudaEvent() { if (ev) core->release_event(ev); }
};

// The CUDA callback: runs the task, keeps its exception, hands the call back for destruction.
void CUDART_CB run_host_task(void * arg) {
    auto * call = static_cast<HostTaskCall *>(arg);
    try {
        t_in_host_task = true;
        try {
            call->fn();
        } catch (...) {
            call->core->store_error(call->stream, call->seq, std::current_exception());
        }
        t_in_host_task = false;
        call->core->retire(call);   // the last touch of call: the owner may delete it from now on
    } catch (...) {                 // (mutex failures only) nothing may escape into the CUDA driver
        t_in_host_task = false;
    }
}

class CudaStream final : public Stream {
public:
    CudaStream(StreamRole role, cudaStream_t h) : Stream(role), handle(h) {}
    const cudaStream_t handle;
};

// ---- argument checks: runtime/backend/op_checks.h (shared with the CPU backend) ----------------------------------------

kernels::WType wtype_of(DType t) {
    switch (t) {
        case DType::F32: return kernels::WType::f32;
        case DType::F16: return kernels::WType::f16;
        case DType::BF16: return kernels::WType::bf16;
        default: break;
    }
    ZT_FAIL("cuda backend: {} is not a weight dtype (F32, F16 or BF16)", dtype_name(t));
}
cudaDataType_t cuda_type_of(DType t) {
    switch (t) {
        case DType::F32: return CUDA_R_32F;
        case DType::F16: return CUDA_R_16F;
        case DType::BF16: return CUDA_R_16BF;
        default: break;
    }
    ZT_FAIL("cuda backend: {} is not a GEMM operand dtype (F32, F16 or BF16)", dtype_name(t));
}

// Largest power of two (<= 256) dividing the address: the alignment cuBLASLt may assume for the pointer.
uint32_t alignment_of(const void * p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a == 0) return 256;
    return uint32_t(std::min<uintptr_t>(a & (~a + 1), 256));
}
size_t round_up(size_t n, size_t granule) { return (n + granule - 1) / granule * granule; }

bool same_seqs(const std::vector<AttentionSeq> & a, const std::vector<AttentionSeq> & b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(AttentionSeq)) == 0);
}

// ---- cuBLASLt plans ------------------------------------------------------------------------------------------
struct GemmKey {
    int64_t m, n, k;
    int type;                          // cudaDataType_t of A and B
    uint32_t align_a, align_b, align_d;
    bool operator<(const GemmKey & o) const {
        return std::tie(m, n, k, type, align_a, align_b, align_d) <
               std::tie(o.m, o.n, o.k, o.type, o.align_a, o.align_b, o.align_d);
    }
};

struct GemmPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;   // d is also C (beta = 0, in place)
    cublasLtMatmulAlgo_t algo{};
    GemmPlan() = default;
    GemmPlan(const GemmPlan &) = delete;
    GemmPlan & operator=(const GemmPlan &) = delete;
    ~GemmPlan() {
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
};

struct PreferenceDeleter {
    void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};

// ---- per-stream op state -------------------------------------------------------------------------------------
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
    explicit CudaBackend(const CudaBackendOptions & o)
        : core_(std::make_shared<Core>(o.device, o.max_memory_bytes)) {
        if (o.compute_dtype == "fp32") fixed_dtype_ = DType::F32;
        else if (o.compute_dtype == "bf16") fixed_dtype_ = DType::BF16;
        else if (o.compute_dtype == "fp16") fixed_dtype_ = DType::F16;
        else ZT_CHECK(o.compute_dtype == "auto", "cuda backend: compute_dtype \"{}\" is not one of \"auto\" (the "
                      "weights' dtype), \"fp32\", \"bf16\", \"fp16\"", o.compute_dtype);
        use_fixed_dtype_ = o.compute_dtype != "auto";
        make_current(core_->device);
        for (int i = 0; i < kStreams; ++i) {
            ZT_BE_CUDA(cudaStreamCreateWithFlags(&core_->streams[size_t(i)], cudaStreamNonBlocking),
                       "creating the {} stream on GPU {}", role_name(i), core_->device);
            streams_[size_t(i)] = std::make_unique<CudaStream>(StreamRole(i), core_->streams[size_t(i)]);
        }
        ZT_BE_CUDA(cudaStreamCreateWithFlags(&core_->zero_stream, cudaStreamNonBlocking),
                   "creating the allocation stream on GPU {}", core_->device);
        ZT_BE_CUBLAS(cublasLtCreate(&lt_), "creating the cuBLASLt handle on GPU {}", core_->device);
    }

    ~CudaBackend() override {
        DeviceGuard g(core_->device);
        core_->drain_streams();
        core_->reap();
        for (int i = 0; i < kStreams; ++i) {   // an error nobody synchronized on is logged, not lost
            if (auto ex = core_->take_error(i, kAllTasks)) {
                try { rethrow_task_error(ex, i); }
                catch (const std::exception & e) {
                    spdlog::warn("{} stream: an error nobody synchronized on is dropped: {}", role_name(i), e.what());
                }
            }
        }
        for (OpState & st : ops_) {   // scratch goes back to the account before the handle goes
            st.workspace.reset(); st.gemm_scratch.reset(); st.sample_params.reset();
            st.seqs.buf.reset(); st.kv.buf.reset();
        }
        plans_.clear();
        if (lt_) cublasLtDestroy(lt_);
        // core_ (streams) goes when the last Buffer / Event of this backend does
    }

    std::string name() const override { return "cuda"; }
    int device() const { return core_->device; }
    cudaStream_t handle_of(Stream * s, const char * what) { return core_->streams[size_t(index_of(s, what))]; }

    // ---- memory, streams, events ------------------------------------------------------------------------
    Buffer alloc(size_t bytes, MemKind kind, const char * purpose) override {
        enter();
        core_->reap();   // memory held by host tasks that have run goes back first
        const std::string what = purpose ? purpose : "buffer";
        const size_t n = std::max<size_t>(bytes, 1);
        const int dev = core_->device;
        core_->account.add(kind, what, bytes);   // device memory over the cap throws here, naming `what`
        void * p = nullptr;
        switch (kind) {
            case MemKind::device: {
                const cudaError_t err = cudaMalloc(&p, n);
                if (err != cudaSuccess) {
                    cudaGetLastError();   // out of memory is not sticky: clear it
                    core_->account.remove(kind, what, bytes);
                    size_t free_b = 0, total_b = 0;
                    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
                    if (err == cudaErrorMemoryAllocation)
                        ZT_FAIL("CUDA out of memory on GPU {} allocating {} for {} (free {} of {} on the card; ztinfer "
                                "holds: {}); lower batch_size or the context length, offload more weights "
                                "(offload_param.device \"cpu\" or \"nvme\", fewer resident layers), or make room on "
                                "the card (other processes)", dev, format_bytes(bytes), what, format_bytes(free_b),
                                format_bytes(total_b), core_->account.describe_device_use());
                    ZT_FAIL("cudaMalloc of {} for {} on GPU {} failed: {} ({})", format_bytes(bytes), what, dev,
                            cudaGetErrorName(err), cudaGetErrorString(err));
                }
                cudaError_t err2 = cudaMemsetAsync(p, 0, n, core_->zero_stream);
                if (err2 == cudaSuccess) err2 = cudaStreamSynchronize(core_->zero_stream);
                if (err2 != cudaSuccess) {
                    cudaGetLastError();
                    cudaFree(p);
                    core_->account.remove(kind, what, bytes);
                    ZT_FAIL("zero-filling {} of device memory for {} on GPU {} failed: {} ({})", format_bytes(bytes),
                            what, dev, cudaGetErrorName(err2), cudaGetErrorString(err2));
                }
                break;
            }
            case MemKind::pinned_host: {
                const cudaError_t err = cudaHostAlloc(&p, n, cudaHostAllocPortable);
                if (err != cudaSuccess) {
                    cudaGetLastError();
                    core_->account.remove(kind, what, bytes);
                    ZT_FAIL("out of pinned host memory: cudaHostAlloc of {} for the {} failed: {} ({}); reduce "
                            "buffer_count or the batch size, or offload to nvme", format_bytes(bytes), what,
                            cudaGetErrorName(err), cudaGetErrorString(err));
                }
                std::memset(p, 0, n);
                break;
            }
            case MemKind::host: {
                const size_t rounded = round_up(n, 64);
                if (rounded >= n) p = std::aligned_alloc(64, rounded);
                if (!p) {
                    core_->account.remove(kind, what, bytes);
                    ZT_FAIL("out of host memory: could not allocate {} bytes ({} memory for the {}); reduce "
                            "batch_size or the context length", bytes, mem_kind_name(kind), what);
                }
                std::memset(p, 0, rounded);
                break;
            }
        }
        return Buffer(p, bytes, kind, FreeFn{core_, kind, what, bytes});
    }
    bool host_can_access(MemKind kind) const override { return kind != MemKind::device; }
    MemoryStats memory_stats() const override { return core_->account.stats(); }
    void reset_memory_peak() override { core_->account.reset_peak(); }
    Stream * stream(StreamRole role) override { return streams_[size_t(int(role))].get(); }

    // dst and src must stay valid (and src unchanged) until the copy is done on s (record + wait / synchronize);
    // a pageable host source is staged before the call returns.
    void copy_async(void * dst, const void * src, size_t bytes, Stream * s) override {
        const int i = enter(s, "copy_async");
        if (bytes == 0) return;
        ZT_CHECK(dst != nullptr && src != nullptr, "copy_async: null {} pointer for a copy of {} bytes",
                 dst ? "src" : "dst", bytes);
        ZT_BE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, core_->streams[size_t(i)]),
                   "copy_async of {} on the {} stream", format_bytes(bytes), role_name(i));
    }

    Event record(Stream * s) override {
        const int i = enter(s, "record");
        auto ev = std::make_shared<CudaEvent>();
        ev->core = core_;
        ev->stream = i;
        ZT_BE_CUDA(cudaEventCreateWithFlags(&ev->ev, cudaEventDisableTiming), "creating an event");
        ZT_BE_CUDA(cudaEventRecord(ev->ev, core_->streams[size_t(i)]), "recording an event on the {} stream",
                   role_name(i));
        {
            std::lock_guard<std::mutex> lock(core_->mu);
            const Core::StreamTasks & t = core_->tasks[size_t(i)];
            ev->seqs = t.seen;
            ev->seqs[size_t(i)] = t.submitted;
        }
        return Event{std::shared_ptr<void>(std::move(ev))};
    }

    void wait(Stream * s, Event e) override {
        const int i = enter(s, "wait");
        if (!e.impl) return;   // a default Event{} is complete
        const auto ev = std::static_pointer_cast<CudaEvent>(e.impl);
        ZT_BE_CUDA(cudaStreamWaitEvent(core_->streams[size_t(i)], ev->ev, 0), "making the {} stream wait for an "
                   "event of the {} stream", role_name(i), role_name(ev->stream));
        if (ev->core != core_) return;   // another CUDA backend's event: ordering only
        {   // later work on s depends on every host task before the event
            std::lock_guard<std::mutex> lock(core_->mu);
            Core::StreamTasks & t = core_->tasks[size_t(i)];
            for (int j = 0; j < kStreams; ++j)
                if (j != i) t.seen[size_t(j)] = std::max(t.seen[size_t(j)], ev->seqs[size_t(j)]);
        }
        // a task before the event that has already failed surfaces now (one that fails later: at synchronize)
        for (int j = 0; j < kStreams; ++j)
            if (auto ex = core_->take_error(j, ev->seqs[size_t(j)])) rethrow_task_error(ex, j);
    }

    void synchronize(Stream * s) override {
        if (s) {
            const int i = enter(s, "synchronize");
            ZT_BE_CUDA(cudaStreamSynchronize(core_->streams[size_t(i)]), "synchronizing the {} stream", role_name(i));
            core_->reap();
            // everything this stream depends on has run: its own host tasks, and those of the others it waited for
            std::array<uint64_t, kStreams> limit;
            {
                std::lock_guard<std::mutex> lock(core_->mu);
                limit = core_->tasks[size_t(i)].seen;
            }
            limit[size_t(i)] = kAllTasks;
            if (auto ex = core_->take_error(i, kAllTasks)) rethrow_task_error(ex, i);
            for (int j = 0; j < kStreams; ++j)
                if (auto ex = core_->take_error(j, limit[size_t(j)])) rethrow_task_error(ex, j);
            return;
        }
        enter();
        for (int i = 0; i < kStreams; ++i)
            ZT_BE_CUDA(cudaStreamSynchronize(core_->streams[size_t(i)]), "synchronizing the {} stream", role_name(i));
        core_->reap();
        // all streams: the first error in compute, copy, comm order (the others stay for the next synchronize)
        for (int i = 0; i < kStreams; ++i)
            if (auto ex = core_->take_error(i, kAllTasks)) rethrow_task_error(ex, i);
    }

    void host_task(Stream * s, std::function<void()> fn) override {
        const int i = enter(s, "host_task");
        ZT_CHECK(fn != nullptr, "host_task: empty function");
        core_->reap();
        auto call = std::make_unique<HostTaskCall>();
        call->fn = std::move(fn);
        call->core = core_;
        call->stream = i;
        {
            std::lock_guard<std::mutex> lock(core_->mu);
            call->seq = ++core_->tasks[size_t(i)].submitted;
        }
        ZT_BE_CUDA(cudaLaunchHostFunc(core_->streams[size_t(i)], run_host_task, call.get()),
                   "queueing a host task on the {} stream", role_name(i));
        static_cast<void>(call.release());   // owned by the callback until it retires, then by reap()
    }

    // ---- ops ----------------------------------------------------------------------------------------------
    void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream * s) override {
        const int i = enter(s, "embedding");
        check_f32(out, "embedding", "out");
        check_weight(table, "embedding", "table");
        ZT_CHECK(tokens.dtype == DType::I32, "embedding: tokens must be I32");
        ZT_CHECK(table.dims() == 2, "embedding: table must be (V,C), got {}", table.shape_str());
        const int64_t C = table.dim(1), T = tokens.numel();
        ZT_CHECK(out.numel() == T * C, "embedding: out {} != (T={}, C={})", out.shape_str(), T, C);
        // token ids live on the device: the caller checks them against V (Forward does, on the host)
        if (T == 0 || C == 0) return;
        ZT_CHECK(tokens.data != nullptr, "embedding: tokens has no data");
        ZT_BE_CUDA(kernels::embedding(out.ptr<float>(), tokens.ptr<const int32_t>(), table.data, wtype_of(table.dtype),
                                      T, C, handle(i)), "embedding kernel (T={}, C={})", T, C);
    }

    void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream * s) override {
        const int i = enter(s, "rmsnorm");
        const RmsnormDims dims = check_rmsnorm(out, x, w);
        const int64_t R = dims.R, C = dims.C;
        if (R == 0) return;
        ZT_BE_CUDA(kernels::rmsnorm(out.ptr<float>(), x.ptr<const float>(), w.data, wtype_of(w.dtype), R, C, eps,
                                    handle(i)), "rmsnorm kernel (R={}, C={})", R, C);
    }

    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream * s) override {
        const int si = enter(s, "matmul");
        const MatmulDims dims = check_matmul(out, x, w, bias);
        const int64_t T = dims.T, N = dims.N, K = dims.K;
        if (T == 0 || N == 0) return;
        const cudaStream_t cs = handle(si);

        // operand dtype and the conversions it needs (scratch: [x narrowed][w converted][w widened, 16<->16 only])
        const DType cdt = use_fixed_dtype_ ? fixed_dtype_ : w.dtype;
        const size_t esz = dtype_size(cdt);
        const bool narrow_x = cdt != DType::F32;
        const bool convert_w = w.dtype != cdt;
        const bool two_step = convert_w && cdt != DType::F32 && w.dtype != DType::F32;   // bf16 <-> f16 via f32
        const size_t x_bytes = narrow_x ? round_up(size_t(T) * size_t(K) * esz, 256) : 0;
        const size_t w_bytes = convert_w ? round_up(size_t(N) * size_t(K) * esz, 256) : 0;
        const size_t wf_bytes = two_step ? round_up(size_t(N) * size_t(K) * sizeof(float), 256) : 0;

        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        if (!st.workspace) st.workspace = alloc(kWorkspaceBytes, MemKind::device, "cuBLASLt workspace");
        const void * A = w.data;
        const void * B = x.data;
        if (x_bytes + w_bytes + wf_bytes > 0) {
            grow(st.gemm_scratch, x_bytes + w_bytes + wf_bytes, "matmul scratch", false);
            char * base = static_cast<char *>(st.gemm_scratch.data());
            if (narrow_x) {
                ZT_BE_CUDA(kernels::narrow(base, wtype_of(cdt), x.ptr<const float>(), T * K, cs),
                           "matmul: narrowing x ({}x{}) to {}", T, K, dtype_name(cdt));
                B = base;
            }
            if (convert_w) {
                void * wc = base + x_bytes;
                if (cdt == DType::F32) {
                    ZT_BE_CUDA(kernels::widen(static_cast<float *>(wc), w.data, wtype_of(w.dtype), N * K, cs),
                               "matmul: widening w ({}x{}) from {} to F32", N, K, dtype_name(w.dtype));
                } else if (w.dtype == DType::F32) {
                    ZT_BE_CUDA(kernels::narrow(wc, wtype_of(cdt), w.ptr<const float>(), N * K, cs),
                               "matmul: narrowing w ({}x{}) to {}", N, K, dtype_name(cdt));
                } else {
                    float * wf = reinterpret_cast<float *>(base + x_bytes + w_bytes);
                    ZT_BE_CUDA(kernels::widen(wf, w.data, wtype_of(w.dtype), N * K, cs),
                               "matmul: widening w ({}x{}) from {} to F32", N, K, dtype_name(w.dtype));
                    ZT_BE_CUDA(kernels::narrow(wc, wtype_of(cdt), wf, N * K, cs),
                               "matmul: narrowing w ({}x{}) to {}", N, K, dtype_name(cdt));
                }
                A = wc;
            }
        }

        const GemmKey key{N, T, K, int(cuda_type_of(cdt)), alignment_of(A), alignment_of(B), alignment_of(out.data)};
        const std::shared_ptr<const GemmPlan> plan = gemm_plan(key);
        const float alpha = 1.0f, beta = 0.0f;
        ZT_BE_CUBLAS(cublasLtMatmul(lt_, plan->desc, &alpha, A, plan->a, B, plan->b, &beta, out.data, plan->d, out.data,
                                    plan->d, &plan->algo, st.workspace.data(), kWorkspaceBytes, cs),
                     "matmul: cublasLtMatmul (T={}, N={}, K={}, {})", T, N, K, dtype_name(cdt));
        if (bias.data)
            ZT_BE_CUDA(kernels::add_bias(out.ptr<float>(), bias.data, wtype_of(bias.dtype), T, N, cs),
                       "matmul: bias kernel (T={}, N={})", T, N);
    }

    void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream * s) override {
        const int i = enter(s, "rope");
        const RopeDims dims = check_rope(x, positions, inv_freq);
        const int64_t T = dims.T, H = dims.H, D = dims.D;
        if (T == 0 || H == 0 || D == 0) return;
        ZT_CHECK(positions.data != nullptr, "rope: positions has no data");
        ZT_BE_CUDA(kernels::rope(x.ptr<float>(), positions.ptr<const int32_t>(), inv_freq.ptr<const float>(),
                                 dims.freq_stride, scaling, T, H, D, handle(i)), "rope kernel (T={}, H={}, D={})", T, H, D);
    }

    void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                  const std::vector<AttentionSeq> & seqs, Stream * s) override {
        const int si = enter(s, "kv_store");
        const KvStoreDims dims = check_kv_store(k_cache, v_cache, k, v, seqs);
        const int64_t S = dims.S, M = dims.M, row = dims.row;
        ZT_CHECK(S * M <= int64_t(std::numeric_limits<int32_t>::max()), "kv_store: the cache's {} x {} positions "
                 "exceed the int32 row index of the CUDA kernel; lower the batch size or the context length", S, M);
        const cudaStream_t cs = handle(si);
        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        const KvUpload & u = upload_kv_rows(st, seqs, M, cs);
        const int32_t * dest = static_cast<const int32_t *>(u.buf.data());
        for (const KvRun & r : u.runs)
            ZT_BE_CUDA(kernels::kv_store(k_cache.ptr<float>(), v_cache.ptr<float>(), k.ptr<const float>() + r.src0 * row,
                                         v.ptr<const float>() + r.src0 * row, dest + r.entry0, r.n, row, cs),
                       "kv_store kernel (rows {}..{}, {} floats each)", r.src0, r.src0 + r.n, row);
    }

    void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                   const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream * s) override {
        const int si = enter(s, "attention");
        const AttentionDims dims = check_attention(out, q, k_cache, v_cache, seqs, window);
        const int64_t T = dims.T, H = dims.H, D = dims.D, M = dims.M, KV = dims.KV;
        if (T == 0 || H == 0 || D == 0) return;
        ZT_CHECK(D <= 256, "attention: head dim D = {} is over 256, the most the CUDA attention kernels support", D);
        const cudaStream_t cs = handle(si);
        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        const SeqUpload & u = upload_seqs(st, seqs, T, cs);
        ZT_CHECK(u.shared_row < 0, "attention: row {} of q belongs to two sequences; each row must belong to one",
                 u.shared_row);
        // rows of no sequence are zero (as on the CPU)
        if (!u.covers_all)
            ZT_BE_CUDA(cudaMemsetAsync(out.data, 0, out.bytes(), cs), "attention: zeroing out");
        if (u.n_active == 0) return;
        const auto * dseqs = static_cast<const kernels::AttnSeq *>(u.buf.data());
        if (u.decode)
            ZT_BE_CUDA(kernels::attention_decode(out.ptr<float>(), q.ptr<const float>(), k_cache.ptr<const float>(),
                                                 v_cache.ptr<const float>(), dseqs, u.n_active, H, KV, D, M, causal,
                                                 window, cs),
                       "attention_decode kernel ({} sequences, H={}, KV={}, D={}, M={})", u.n_active, H, KV, D, M);
        else
            ZT_BE_CUDA(kernels::attention_prefill(out.ptr<float>(), q.ptr<const float>(), k_cache.ptr<const float>(),
                                                  v_cache.ptr<const float>(), dseqs, u.n_active, T, H, KV, D, M,
                                                  causal, window, cs),
                       "attention_prefill kernel ({} sequences, T={}, H={}, KV={}, D={}, M={})", u.n_active, T, H, KV,
                       D, M);
    }

    void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream * s) override {
        const int i = enter(s, "swiglu");
        check_f32(out, "swiglu", "out"); check_f32(gate, "swiglu", "gate"); check_f32(up, "swiglu", "up");
        ZT_CHECK(out.numel() == gate.numel() && up.numel() == gate.numel(), "swiglu: shapes differ: {} {} {}",
                 out.shape_str(), gate.shape_str(), up.shape_str());
        const int64_t n = out.numel();
        if (n == 0) return;
        ZT_BE_CUDA(kernels::swiglu(out.ptr<float>(), gate.ptr<const float>(), up.ptr<const float>(), n, handle(i)),
                   "swiglu kernel (n={})", n);
    }

    void add(Tensor out, const Tensor & a, const Tensor & b, Stream * s) override {
        const int i = enter(s, "add");
        check_f32(out, "add", "out"); check_f32(a, "add", "a"); check_f32(b, "add", "b");
        ZT_CHECK(out.numel() == a.numel() && b.numel() == a.numel(), "add: shapes differ: {} {} {}",
                 out.shape_str(), a.shape_str(), b.shape_str());
        const int64_t n = out.numel();
        if (n == 0) return;
        ZT_BE_CUDA(kernels::add(out.ptr<float>(), a.ptr<const float>(), b.ptr<const float>(), n, handle(i)),
                   "add kernel (n={})", n);
    }

    void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream * s) override {
        const int i = enter(s, "gather_rows");
        check_f32(out, "gather_rows", "out"); check_f32(x, "gather_rows", "x");
        ZT_CHECK(rows.dtype == DType::I32, "gather_rows: rows must be I32");
        ZT_CHECK(x.dims() == 2, "gather_rows: x must be (T,C), got {}", x.shape_str());
        const int64_t C = x.dim(1), R = rows.numel();
        ZT_CHECK(out.numel() == R * C, "gather_rows: out {} != (R={}, C={})", out.shape_str(), R, C);
        // row indices live on the device: the caller builds them in [0, T) (Forward does)
        if (R == 0 || C == 0) return;
        ZT_CHECK(rows.data != nullptr, "gather_rows: rows has no data");
        ZT_BE_CUDA(kernels::gather_rows(out.ptr<float>(), x.ptr<const float>(), rows.ptr<const int32_t>(), R, C,
                                        handle(i)), "gather_rows kernel (R={}, C={})", R, C);
    }

    void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream * s) override {
        const int si = enter(s, "pool");
        const PoolDims dims = check_pool(out, x, seqs);
        const int64_t T = dims.T, C = dims.C, B = dims.B;
        if (B == 0 || C == 0) return;
        const cudaStream_t cs = handle(si);
        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        const SeqUpload & u = upload_seqs(st, seqs, T, cs);   // every n_tokens > 0: all B sequences uploaded
        const auto * dseqs = static_cast<const kernels::AttnSeq *>(u.buf.data());
        if (mode == Pooling::last)
            ZT_BE_CUDA(kernels::pool_last(out.ptr<float>(), x.ptr<const float>(), dseqs, B, C, cs),
                       "pool_last kernel (B={}, C={})", B, C);
        else
            ZT_BE_CUDA(kernels::pool_mean(out.ptr<float>(), x.ptr<const float>(), dseqs, B, C, cs),
                       "pool_mean kernel (B={}, C={})", B, C);
    }

    void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream * s) override {
        const int si = enter(s, "sample");
        const SampleDims dims = check_sample(ids, logits, rows);
        const int64_t R = dims.R, V = dims.V;
        if (R == 0) return;
        ZT_CHECK(V > 0, "sample: logits {} have no vocabulary", logits.shape_str());
        ZT_CHECK(ids.data != nullptr, "sample: ids has no data");
        std::vector<kernels::SampleParams> params(static_cast<size_t>(R));
        for (size_t r = 0; r < rows.size(); ++r)
            params[r] = kernels::SampleParams{rows[r].temperature, rows[r].top_k, rows[r].top_p, rows[r].u};
        const cudaStream_t cs = handle(si);
        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        const size_t bytes = params.size() * sizeof(kernels::SampleParams);
        grow(st.sample_params, bytes, "op metadata", true);
        ZT_BE_CUDA(cudaMemcpyAsync(st.sample_params.data(), params.data(), bytes, cudaMemcpyHostToDevice, cs),
                   "sample: uploading the parameters of {} rows", R);
        ZT_BE_CUDA(kernels::sample(ids.ptr<int32_t>(), logits.ptr<const float>(),
                                   static_cast<const kernels::SampleParams *>(st.sample_params.data()), R, V, cs),
                   "sample kernel (R={}, V={})", R, V);
    }

private:
    // Common prologue of the entry points: device current on this thread, not inside a host task.
    void enter() {
        ZT_CHECK(!t_in_host_task, "a host task called into the cuda backend; host tasks must not call into the "
                 "backend (queue the work on a stream instead)");
        make_current(core_->device);
    }
    // ... and the index of the backend's stream s (nullptr: compute).
    int enter(Stream * s, const char * what) {
        enter();
        return index_of(s, what);
    }
    int index_of(Stream * s, const char * what) const {
        if (!s) return 0;
        for (int i = 0; i < kStreams; ++i)
            if (s == streams_[size_t(i)].get()) return i;
        ZT_FAIL("{}: the stream does not belong to this cuda backend; pass one from this backend's stream()", what);
    }
    cudaStream_t handle(int i) const { return core_->streams[size_t(i)]; }

    // Grows a per-stream device scratch buffer to at least `bytes` (geometrically for metadata, exactly for GEMM
    // operands, which can be large). The old buffer's free waits for the queued work that may still read it.
    void grow(Buffer & buf, size_t bytes, const char * purpose, bool geometric) {
        if (buf && buf.bytes() >= bytes) return;
        size_t want = geometric ? std::max(bytes, buf.bytes() + buf.bytes() / 2) : bytes;
        want = round_up(std::max<size_t>(want, 1), geometric ? 4096 : (size_t(2) << 20));
        buf.reset();
        buf = alloc(want, MemKind::device, purpose);
    }

    // The AttentionSeq list on the device (uploaded unless it is the one uploaded last on this stream).
    const SeqUpload & upload_seqs(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t T, cudaStream_t cs) {
        SeqUpload & u = st.seqs;
        if (u.valid && u.T == T && same_seqs(u.key, seqs)) return u;
        u.valid = false;
        std::vector<kernels::AttnSeq> active;
        std::vector<char> owned(size_t(T), 0);
        int64_t covered = 0, shared_row = -1;
        for (const AttentionSeq & q : seqs) {   // rows were checked to lie in [0, T)
            if (q.n_tokens == 0) continue;
            active.push_back(kernels::AttnSeq{q.slot, q.past_len, q.n_tokens, q.row0});
            for (int64_t r = q.row0; r < int64_t(q.row0) + q.n_tokens; ++r) {
                if (owned[size_t(r)]) { if (shared_row < 0) shared_row = r; }
                else { owned[size_t(r)] = 1; ++covered; }
            }
        }
        ZT_CHECK(active.size() <= size_t(std::numeric_limits<int>::max()), "too many sequences in one step ({})",
                 active.size());
        bool decode = !active.empty() && int64_t(active.size()) == T;
        for (size_t b = 0; decode && b < active.size(); ++b)
            decode = active[b].n_tokens == 1 && active[b].row0 == int32_t(b);
        if (!active.empty()) {
            const size_t bytes = active.size() * sizeof(kernels::AttnSeq);
            grow(u.buf, bytes, "op metadata", true);
            ZT_BE_CUDA(cudaMemcpyAsync(u.buf.data(), active.data(), bytes, cudaMemcpyHostToDevice, cs),
                       "uploading {} sequences' attention metadata", active.size());
        }
        u.key = seqs;
        u.T = T;
        u.n_active = int(active.size());
        u.decode = decode;
        u.covers_all = covered == T;
        u.shared_row = shared_row;
        u.valid = true;
        return u;
    }

    // The kv_store destination rows on the device, and the launches that use them (cached per (seqs, M)). Rows of
    // consecutive sequences go in one launch while their source rows continue each other and no cache slot repeats
    // (so one launch never writes a destination twice); anything else keeps the CPU's sequence order.
    const KvUpload & upload_kv_rows(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t M, cudaStream_t cs) {
        KvUpload & u = st.kv;
        if (u.valid && u.M == M && same_seqs(u.key, seqs)) return u;
        u.valid = false;
        int32_t max_slot = -1;
        for (const AttentionSeq & q : seqs) max_slot = std::max(max_slot, q.slot);
        std::vector<int64_t> slot_run(size_t(max_slot + 1), -1);   // the last run that wrote each slot
        std::vector<int32_t> dest;
        std::vector<KvRun> runs;
        for (const AttentionSeq & q : seqs) {
            if (q.n_tokens == 0) continue;
            const bool extend = !runs.empty() && runs.back().src0 + runs.back().n == q.row0 &&
                                slot_run[size_t(q.slot)] != int64_t(runs.size()) - 1;
            if (!extend) runs.push_back(KvRun{q.row0, 0, int64_t(dest.size())});
            slot_run[size_t(q.slot)] = int64_t(runs.size()) - 1;
            for (int32_t i = 0; i < q.n_tokens; ++i) dest.push_back(int32_t(int64_t(q.slot) * M + q.past_len + i));
            runs.back().n += q.n_tokens;
        }
        if (!dest.empty()) {
            const size_t bytes = dest.size() * sizeof(int32_t);
            grow(u.buf, bytes, "op metadata", true);
            ZT_BE_CUDA(cudaMemcpyAsync(u.buf.data(), dest.data(), bytes, cudaMemcpyHostToDevice, cs),
                       "uploading {} kv_store destination rows", dest.size());
        }
        u.key = seqs;
        u.M = M;
        u.runs = std::move(runs);
        u.valid = true;
        return u;
    }

    // The cuBLASLt descriptors and algorithm of one GEMM shape (made on first use, then reused: one shape, one
    // algorithm). Cleared when it holds kMaxGemmPlans shapes; the heuristic gives the same answer again. Shared
    // so that a clear on one thread never frees a plan another thread is passing to cublasLtMatmul (which reads
    // the descriptors on the host during the call only).
    std::shared_ptr<const GemmPlan> gemm_plan(const GemmKey & key) {
        std::lock_guard<std::mutex> lock(plans_mu_);
        auto it = plans_.find(key);
        if (it != plans_.end()) return it->second;
        if (plans_.size() >= kMaxGemmPlans) plans_.clear();
        auto p = std::make_shared<GemmPlan>();
        const cudaDataType_t t = cudaDataType_t(key.type);
        const uint64_t m = uint64_t(key.m), n = uint64_t(key.n), k = uint64_t(key.k);
        const auto what = [&] {
            return fmt::format("matmul plan (m=N={}, n=T={}, k=K={}, {} operands, fp32 accumulate)", key.m, key.n,
                               key.k, t == CUDA_R_32F ? "F32" : t == CUDA_R_16BF ? "BF16" : "F16");
        };
        ZT_BE_CUBLAS(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "{}", what());
        const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        ZT_BE_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "{}", what());
        ZT_BE_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "{}", what());
        // column-major views of the row-major tensors: w (N,K) = K x N, x (T,K) = K x T, out (T,N) = N x T
        ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->a, t, k, m, int64_t(k)), "{}", what());
        ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->b, t, k, n, int64_t(k)), "{}", what());
        ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, m, n, int64_t(m)), "{}", what());

        cublasLtMatmulPreference_t raw_pref = nullptr;
        ZT_BE_CUBLAS(cublasLtMatmulPreferenceCreate(&raw_pref), "{}", what());
        const std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PreferenceDeleter> pref(raw_pref);
        const uint64_t ws = kWorkspaceBytes;
        ZT_BE_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                          sizeof(ws)), "{}", what());
        const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
        for (const auto & [attr, value] : aligns)
            ZT_BE_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &value, sizeof(value)), "{}", what());

        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_, p->desc, p->a, p->b, p->d, p->d, pref.get(),
                                                                     1, &result, &found);
        ZT_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS,
                 "{}: cuBLASLt has no algorithm for it on GPU {} ({}); try another ztinfer.compute_dtype", what(),
                 core_->device, status != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusName(status)
                                : found == 0 ? "the heuristic returned none" : cublasLtGetStatusName(result.state));
        p->algo = result.algo;
        plans_.emplace(key, p);
        return p;
    }

    std::shared_ptr<Core> core_;
    std::array<std::unique_ptr<CudaStream>, kStreams> streams_;
    bool use_fixed_dtype_ = false;
    DType fixed_dtype_ = DType::F32;              // the operand dtype when compute_dtype is not "auto"
    cublasLtHandle_t lt_ = nullptr;
    std::mutex plans_mu_;
    std::map<GemmKey, std::shared_ptr<const GemmPlan>> plans_;
    std::array<OpState, kStreams> ops_;
};

}  // namespace

// ---- entry points ----------------------------------------------------------------------------------------------
bool cuda_backend_compiled() { return true; }

std::string cuda_unavailable_reason() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return fmt::format("no CUDA device visible: cudaGetDeviceCount says {} ({}); CUDA_VISIBLE_DEVICES={}; check "
                           "the NVIDIA driver (nvidia-smi) or use \"device\": \"cpu\"", cudaGetErrorName(err),
                           cudaGetErrorString(err), visible_devices_env());
    }
    if (n <= 0)
        return fmt::format("0 CUDA devices visible (CUDA_VISIBLE_DEVICES={}); use \"device\": \"cpu\"",
                           visible_devices_env());
    return "";
}

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions & options) {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) ZT_FAIL("{}", why);
    int n = 0;
    ZT_BE_CUDA(cudaGetDeviceCount(&n), "counting CUDA devices");
    ZT_CHECK(options.device >= 0 && options.device < n, "CUDA device {} does not exist: {} visible "
             "(CUDA_VISIBLE_DEVICES={}); pick a device in [0, {})", options.device, n, visible_devices_env(), n);
    CudaBackendOptions o = options;
    if (o.max_memory_fraction > 0) {   // a share of the card, like torch's set_per_process_memory_fraction
        ZT_CHECK(o.max_memory_fraction <= 1, "max_gpu_memory as a share of the card must be in (0, 1], got {}",
                 o.max_memory_fraction);
        cudaDeviceProp prop{};
        ZT_BE_CUDA(cudaGetDeviceProperties(&prop, o.device), "reading the properties of GPU {}", o.device);
        const size_t share = size_t(double(prop.totalGlobalMem) * o.max_memory_fraction);
        o.max_memory_bytes = o.max_memory_bytes ? std::min(o.max_memory_bytes, share) : share;
    }
    return std::make_unique<CudaBackend>(o);
}

bool is_cuda_backend(const Backend & backend) { return dynamic_cast<const CudaBackend *>(&backend) != nullptr; }

cudaStream_t cuda_stream_of(Backend & backend, Stream * s) {
    auto * b = dynamic_cast<CudaBackend *>(&backend);
    ZT_CHECK(b != nullptr, "cuda_stream_of: the {} backend is not a CUDA backend", backend.name());
    return b->handle_of(s, "cuda_stream_of");
}

int cuda_device_of(const Backend & backend) {
    const auto * b = dynamic_cast<const CudaBackend *>(&backend);
    ZT_CHECK(b != nullptr, "cuda_device_of: the {} backend is not a CUDA backend", backend.name());
    return b->device();
}

}  // namespace zt
