// The CUDA backend: the ops of backend.h on one GPU, with the CPU backend (backend_cpu.cpp) as the spec (the same
// argument checks and messages, the same results up to summation order); kernels/kernels.h does the math. This file:
// the device, streams, events, host tasks and memory, and the entry points (make_cuda_backend, backend_cuda.h);
// the ops and the cuBLASLt GEMM are in backend_cuda_ops.cpp, those on quantized weights in backend_cuda_quant.cpp,
// the class and shared state in backend_cuda_impl.h.
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
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cuda.h"
#include "runtime/backend/backend_cuda_impl.h"
#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"

namespace zt::cuda_impl {

// One queued host_task: lives from host_task() until reaped on a normal thread after it ran.
struct HostTaskCall {
    std::function<void()> fn;
    std::shared_ptr<Core> core;
    int stream = 0;
    uint64_t seq = 0;                 // 1-based number of this host task on its stream
    HostTaskCall * next = nullptr;    // in Core::retired once it ran
};

namespace {

constexpr uint64_t kAllTasks = std::numeric_limits<uint64_t>::max();

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

}  // namespace

// ---- Core: host-task bookkeeping and frees ------------------------------------------------------------------
Core::~Core() {
    DeviceGuard g(device);
    for (cudaStream_t s : streams)
        if (s) log_cuda_failure(cudaStreamDestroy(s), "cudaStreamDestroy");
    if (zero_stream) log_cuda_failure(cudaStreamDestroy(zero_stream), "cudaStreamDestroy");
}

void Core::store_error(int stream, uint64_t seq, std::exception_ptr ex) {
    std::lock_guard<std::mutex> lock(mu);
    StreamTasks & t = tasks[size_t(stream)];
    if (!t.error) { t.error = std::move(ex); t.error_seq = seq; }
}

void Core::retire(HostTaskCall * call) {
    std::lock_guard<std::mutex> lock(mu);
    call->next = retired;
    retired = call;
}

void Core::run_or_defer(std::function<void()> fn) {
    if (t_in_host_task) {
        std::lock_guard<std::mutex> lock(mu);
        deferred.push_back(std::move(fn));
        return;
    }
    fn();
}

void Core::reap() {
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

std::exception_ptr Core::take_error(int i, uint64_t limit) {
    std::lock_guard<std::mutex> lock(mu);
    StreamTasks & t = tasks[size_t(i)];
    if (!t.error || t.error_seq > limit) return nullptr;
    return std::exchange(t.error, nullptr);
}

void Core::drain_streams() noexcept {
    for (cudaStream_t s : streams)
        if (s) log_cuda_failure(cudaStreamSynchronize(s), "cudaStreamSynchronize before a free");
}

void Core::free_memory(void * p, MemKind kind, const std::string & purpose, size_t bytes) noexcept {
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

void Core::release_event(cudaEvent_t ev) noexcept {
    try {
        run_or_defer([this, ev] {
            DeviceGuard g(device);
            log_cuda_failure(cudaEventDestroy(ev), "cudaEventDestroy");
        });
    } catch (const std::exception & e) {
        spdlog::error("cuda backend: releasing an event failed: {}", e.what());
    }
}

// ---- the backend: device, memory, streams, events -------------------------------------------------------------
CudaBackend::CudaBackend(const CudaBackendOptions & o)
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

CudaBackend::~CudaBackend() {
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

Buffer CudaBackend::alloc(size_t bytes, MemKind kind, const char * purpose) {
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

// dst and src must stay valid (and src unchanged) until the copy is done on s (record + wait / synchronize);
// a pageable host source is staged before the call returns.
void CudaBackend::copy_async(void * dst, const void * src, size_t bytes, Stream * s) {
    const int i = enter(s, "copy_async");
    if (bytes == 0) return;
    ZT_CHECK(dst != nullptr && src != nullptr, "copy_async: null {} pointer for a copy of {} bytes",
             dst ? "src" : "dst", bytes);
    ZT_BE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, core_->streams[size_t(i)]),
               "copy_async of {} on the {} stream", format_bytes(bytes), role_name(i));
}

Event CudaBackend::record(Stream * s) {
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

void CudaBackend::wait(Stream * s, Event e) {
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

void CudaBackend::synchronize(Stream * s) {
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

void CudaBackend::host_task(Stream * s, std::function<void()> fn) {
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

// Common prologue of the entry points: device current on this thread, not inside a host task.
void CudaBackend::enter() {
    ZT_CHECK(!t_in_host_task, "a host task called into the cuda backend; host tasks must not call into the "
             "backend (queue the work on a stream instead)");
    make_current(core_->device);
}

// ... and the index of the backend's stream s (nullptr: compute).
int CudaBackend::enter(Stream * s, const char * what) {
    enter();
    return index_of(s, what);
}

}  // namespace zt::cuda_impl

namespace zt {

using cuda_impl::CudaBackend;
using cuda_impl::visible_devices_env;

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
