// The CPU backend: the readable reference of backend.h. This file: Buffer, host memory, streams, events, host tasks
// and make_cpu_backend; the ops (fp32 arithmetic over F32/F16/BF16 weights, GEMM in cpu_matmul.h) are in
// backend_cpu_ops.cpp, the class in backend_cpu_impl.h. Memory of every kind is host memory (pinned_host:
// 4096-aligned, mlock'ed where RLIMIT_MEMLOCK allows).
//
// Streams. compute: synchronous, ops / copy_async / host_task run at once on the calling thread; record(compute)
// gives an already-complete event; wait(compute, e) blocks the caller until e. copy, comm: each a single-thread
// Boost.Asio executor (created on first use) that runs its tasks in submission order; record(s) queues a marker
// that completes an EventState (mutex + condvar + done + error); wait(s, e) queues a task that blocks s's thread
// until e. An exception thrown by a task is caught (the first one is kept in an ErrorBox, later tasks still run
// so every event completes) and surfaces once, as zt::Error, at the next synchronize(s) or at a wait on an event
// recorded after it (a wait of another stream on that event hands the error on to that stream). Freeing a Buffer
// first waits for everything queued on copy and comm (like cudaFree), so unwinding after an error never frees
// memory a queued task still uses; the destructor drains both executors (every queued task runs). Options
// (CpuBackendOptions): link_gbps throttles copy_async on the copy stream (each copy lasts bytes / bandwidth in
// all: it sleeps out the rest after its memcpy), race_delay_us sleeps a seeded random 0..race_delay_us µs
// before every copy/comm task.
#include <cblas.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <spdlog/spdlog.h>

#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cpu_impl.h"
#include "runtime/backend/memory_account.h"
#include "runtime/base/error.h"
#include "runtime/backend/parallel_for.h"

namespace zt {

// ---- Buffer -------------------------------------------------------------------------------------------------
const char * mem_kind_name(MemKind k) {
    switch (k) {
        case MemKind::device: return "device";
        case MemKind::pinned_host: return "pinned_host";
        case MemKind::host: return "host";
    }
    return "?";
}

Buffer & Buffer::operator=(Buffer && o) noexcept {
    if (this != &o) {
        reset();
        data_ = o.data_; bytes_ = o.bytes_; kind_ = o.kind_; free_ = std::move(o.free_);
        o.data_ = nullptr; o.bytes_ = 0; o.free_ = nullptr;
    }
    return *this;
}

void Buffer::reset() {
    if (data_ && free_) free_(data_);
    data_ = nullptr; bytes_ = 0; free_ = nullptr;
}

Tensor Buffer::view(DType dtype, std::vector<int64_t> shape, size_t byte_offset) const {
    Tensor t(nullptr, dtype, std::move(shape));
    for (int64_t d : t.shape) ZT_CHECK(d >= 0, "negative dimension in view {}", t.shape_str());
    ZT_CHECK(byte_offset <= bytes_ && t.bytes() <= bytes_ - byte_offset,
             "view {} {} at offset {} does not fit a buffer of {} bytes", dtype_name(dtype), t.shape_str(), byte_offset, bytes_);
    t.data = static_cast<char *>(data_) + byte_offset;
    return t;
}

}  // namespace zt

namespace zt::cpu_impl {
namespace {

// ---- streams and events -------------------------------------------------------------------------------------
const char * role_name(StreamRole r) {
    switch (r) {
        case StreamRole::compute: return "compute";
        case StreamRole::copy: return "copy";
        case StreamRole::comm: return "comm";
    }
    return "?";
}

// Rethrows a task's exception as zt::Error (as is when it already is one).
[[noreturn]] void rethrow_task_error(std::exception_ptr ex, StreamRole role) {
    try {
        std::rethrow_exception(ex);
    } catch (const Error &) {
        throw;
    } catch (const std::exception & e) {
        ZT_FAIL("a task on the {} stream failed: {}", role_name(role), e.what());
    } catch (...) {
        ZT_FAIL("a task on the {} stream threw a non-standard exception; throw std::exception subclasses from "
                "host tasks", role_name(role));
    }
}

thread_local const CpuStream * t_running_stream = nullptr;   // set on a copy/comm thread while it runs a task

}  // namespace

// A task's exception, surfaced at most once: whoever take()s it first (synchronize, or a wait on an event that
// carries it) rethrows it; a box shared by several streams (handed on by wait) is still surfaced once.
struct ErrorBox {
    ErrorBox(std::exception_ptr e, StreamRole r) : ex(std::move(e)), role(r) {}
    std::mutex mu;
    std::exception_ptr ex;   // null once taken
    StreamRole role;         // the stream whose task threw
    bool pending() { std::lock_guard<std::mutex> lock(mu); return ex != nullptr; }
    std::exception_ptr take() { std::lock_guard<std::mutex> lock(mu); return std::exchange(ex, nullptr); }
};

// What an Event's impl points at: completed once by the stream that recorded it.
struct EventState {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::shared_ptr<ErrorBox> error;   // the recording stream's unsurfaced error at that point, if any

    void complete(std::shared_ptr<ErrorBox> e) {
        { std::lock_guard<std::mutex> lock(mu); error = std::move(e); done = true; }
        cv.notify_all();
    }
    // Blocks until done; returns the error it carries while still unsurfaced (else null).
    std::shared_ptr<ErrorBox> wait_done() {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done; });
        return error && error->pending() ? error : nullptr;
    }
};

CpuStream::CpuStream(StreamRole r, const CpuBackendOptions & o)
    : Stream(r),
      link_gbps_(r == StreamRole::copy ? o.link_gbps : 0),
      race_delay_us_(r == StreamRole::compute ? 0 : o.race_delay_us),
      rng_(o.race_seed + 0x9E3779B97F4A7C15ull * uint64_t(int(r) + 1)) {}
CpuStream::~CpuStream() { drain(); }

void CpuStream::submit(std::function<void()> fn) {
    if (!asynchronous()) { run_task(fn); return; }
    std::lock_guard<std::mutex> lock(mu_);
    if (!exec_) exec_ = std::make_unique<boost::asio::thread_pool>(1);
    ++submitted_;
    boost::asio::post(*exec_, [this, fn = std::move(fn)]() mutable {
        t_running_stream = this;
        if (race_delay_us_ > 0) {   // only this stream's thread touches rng_
            std::uniform_int_distribution<int64_t> d(0, race_delay_us_);
            std::this_thread::sleep_for(std::chrono::microseconds(d(rng_)));
        }
        {
            const std::function<void()> task = std::move(fn);   // its captures (a Buffer?) die while marked
            run_task(task);
        }
        t_running_stream = nullptr;
        { std::lock_guard<std::mutex> lock(mu_); ++completed_; }
        idle_cv_.notify_all();
    });
}

std::shared_ptr<EventState> CpuStream::record() {
    auto ev = std::make_shared<EventState>();
    submit([this, ev] { ev->complete(unsurfaced_error()); });
    return ev;
}

void CpuStream::wait(std::shared_ptr<EventState> ev) {
    if (!ev) return;   // a default Event{} is complete
    if (!asynchronous()) {
        if (auto err = ev->wait_done())
            if (auto ex = err->take()) rethrow_task_error(ex, err->role);
        return;
    }
    submit([this, ev] {
        if (auto err = ev->wait_done()) adopt_error(std::move(err));
    });
}

void CpuStream::finish() {
    ZT_CHECK(t_running_stream != this, "synchronize of the {} stream from one of its own host tasks would "
             "deadlock: host tasks must not call into the backend", role_name(role()));
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = submitted_;
    idle_cv_.wait(lock, [&] { return completed_ >= target; });
}

void CpuStream::finish_before_free() {
    if (t_running_stream == nullptr) finish();
}

void CpuStream::surface() {
    std::shared_ptr<ErrorBox> err;
    { std::lock_guard<std::mutex> lock(mu_); err = std::move(error_); }
    if (err)
        if (auto ex = err->take()) rethrow_task_error(ex, err->role);
}

void CpuStream::drain() {
    std::unique_ptr<boost::asio::thread_pool> exec;
    { std::lock_guard<std::mutex> lock(mu_); exec = std::move(exec_); }
    if (exec) exec->join();
    if (auto err = unsurfaced_error()) {
        if (auto ex = err->take()) {
            try { rethrow_task_error(ex, err->role); }
            catch (const std::exception & e) {
                spdlog::warn("{} stream: an error nobody synchronized on is dropped: {}", role_name(role()), e.what());
            }
        }
    }
}

void CpuStream::run_task(const std::function<void()> & fn) {
    try { fn(); } catch (...) { adopt_error(std::make_shared<ErrorBox>(std::current_exception(), role())); }
}

void CpuStream::adopt_error(std::shared_ptr<ErrorBox> err) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_ || !error_->pending()) error_ = std::move(err);
}

std::shared_ptr<ErrorBox> CpuStream::unsurfaced_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_ && error_->pending() ? error_ : nullptr;
}

namespace {

// ---- pinned host memory -------------------------------------------------------------------------------------
constexpr size_t kPageBytes = 4096;
std::once_flag g_mlock_warned;

// Frees host memory once the backend's copy and comm streams have finished their queued work (see
// finish_before_free); a backend already gone has nothing queued.
struct FreeAfterStreams {
    std::weak_ptr<CpuStream> copy, comm;
    size_t locked_bytes = 0;   // pinned_host: munlock these first
    void operator()(void * p) const {
        if (auto c = copy.lock()) c->finish_before_free();
        if (auto c = comm.lock()) c->finish_before_free();
        if (locked_bytes) munlock(p, locked_bytes);
        std::free(p);
    }
};

Buffer alloc_pinned(size_t bytes, FreeAfterStreams free_fn) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + kPageBytes - 1) & ~(kPageBytes - 1);
    ZT_CHECK(rounded >= bytes, "allocation of {} bytes overflows", bytes);
    void * p = std::aligned_alloc(kPageBytes, rounded);
    ZT_CHECK(p != nullptr, "out of host memory: could not allocate {} bytes of pinned_host memory; reduce "
             "buffer_count or the batch size", bytes);
    std::memset(p, 0, rounded);
    const bool locked = mlock(p, rounded) == 0;
    if (!locked) {
        const int err = errno;
        std::call_once(g_mlock_warned, [&] {
            spdlog::debug("mlock of {} bytes of pinned_host memory failed ({}); continuing with unpinned memory "
                          "(raise `ulimit -l` to pin)", rounded, std::strerror(err));
        });
    }
    if (locked) free_fn.locked_bytes = rounded;
    return Buffer(p, bytes, MemKind::pinned_host, free_fn);
}

Buffer alloc_plain(size_t bytes, MemKind kind, const std::string & purpose, FreeAfterStreams free_fn) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) & ~size_t(63);
    ZT_CHECK(rounded >= bytes, "allocation of {} bytes overflows", bytes);
    void * p = std::aligned_alloc(64, rounded);
    ZT_CHECK(p != nullptr, "out of host memory: could not allocate {} bytes ({} memory for the {}); reduce "
             "batch_size or the context length", bytes, mem_kind_name(kind), purpose);
    std::memset(p, 0, rounded);
    return Buffer(p, bytes, kind, free_fn);
}

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions & o)
    : path_(o.kernel_path.empty() ? cpu_matmul_default_path() : cpu_matmul_path_named(o.kernel_path)),
      pool_(o.n_threads > 0 ? o.n_threads : int(std::max(1u, std::thread::hardware_concurrency()))),
      compute_(StreamRole::compute, o), copy_(std::make_shared<CpuStream>(StreamRole::copy, o)),
      comm_(std::make_shared<CpuStream>(StreamRole::comm, o)) {
    ZT_CHECK(o.link_gbps >= 0 && o.race_delay_us >= 0, "cpu backend: link_gbps ({}) and race_delay_us ({}) "
             "must be >= 0 (0 turns them off)", o.link_gbps, o.race_delay_us);
    openblas_set_num_threads(1);   // see the top of backend_cpu_ops.cpp: one sgemv never splits across threads
}
CpuBackend::~CpuBackend() {   // queued copy/comm work may wait on each other's events: drain both before freeing
    copy_->drain();
    comm_->drain();
}

// ---- memory, streams, events ------------------------------------------------------------------------------------
Buffer CpuBackend::alloc(size_t bytes, MemKind kind, const char * purpose) {
    const FreeAfterStreams free_fn{copy_, comm_};
    const std::string what = purpose ? purpose : "buffer";
    account_->add(kind, what, bytes);   // no cap on the CPU backend: accounting only
    Buffer b;
    try {
        b = kind == MemKind::pinned_host ? alloc_pinned(bytes, free_fn) : alloc_plain(bytes, kind, what, free_fn);
    } catch (...) {
        account_->remove(kind, what, bytes);
        throw;
    }
    // the Buffer's free also returns its bytes to the account (which outlives the backend if the Buffer does)
    void * p = b.data();
    const size_t n = b.bytes();
    std::shared_ptr<MemoryAccount> account = account_;
    Buffer counted(p, n, kind, [inner = std::make_shared<Buffer>(std::move(b)), account, kind, what, n](void *) {
        inner->reset();
        account->remove(kind, what, n);
    });
    return counted;
}

void CpuBackend::copy_async(void * dst, const void * src, size_t bytes, Stream * s) {
    CpuStream & st = of(s, "copy_async");
    if (bytes == 0) return;
    ZT_CHECK(dst != nullptr && src != nullptr, "copy_async: null {} pointer for a copy of {} bytes",
             dst ? "src" : "dst", bytes);
    const double gbps = st.link_gbps();
    if (gbps <= 0) {
        st.submit([dst, src, bytes] { std::memmove(dst, src, bytes); });
        return;
    }
    // simulated link: the copy takes bytes / bandwidth in all and moves its bytes at that pace (64 KiB at a
    // time), like a DMA engine, rather than in one burst that would contend with compute for memory
    ZT_CHECK(dst == src || static_cast<char *>(dst) + bytes <= src || static_cast<const char *>(src) + bytes <= dst,
             "copy_async: overlapping ranges on a throttled copy stream");
    st.submit([dst, src, bytes, gbps] {
        const auto start = std::chrono::steady_clock::now();
        constexpr size_t kChunk = size_t(64) << 10;
        for (size_t done = 0; done < bytes; done += kChunk) {
            const size_t n = std::min(kChunk, bytes - done);
            std::memcpy(static_cast<char *>(dst) + done, static_cast<const char *>(src) + done, n);
            std::this_thread::sleep_until(start + std::chrono::nanoseconds(int64_t(double(done + n) / gbps)));
        }
    });
}
Event CpuBackend::record(Stream * s) { return Event{of(s, "record").record()}; }
void CpuBackend::wait(Stream * s, Event e) {
    of(s, "wait").wait(std::static_pointer_cast<EventState>(e.impl));
}
void CpuBackend::synchronize(Stream * s) {
    if (s) {
        CpuStream & st = of(s, "synchronize");
        st.finish();
        st.surface();
        return;
    }
    // all streams: wait for every one, then surface the first error in compute, copy, comm order (the
    // others stay for the next synchronize)
    for (CpuStream * st : {&compute_, copy_.get(), comm_.get()}) st->finish();
    for (CpuStream * st : {&compute_, copy_.get(), comm_.get()}) st->surface();
}
void CpuBackend::host_task(Stream * s, std::function<void()> fn) {
    ZT_CHECK(fn != nullptr, "host_task: empty function");
    of(s, "host_task").submit(std::move(fn));
}

CpuStream & CpuBackend::cpu_stream(StreamRole role) {
    switch (role) {
        case StreamRole::compute: return compute_;
        case StreamRole::copy: return *copy_;
        case StreamRole::comm: return *comm_;
    }
    return compute_;
}
CpuStream & CpuBackend::of(Stream * s, const char * what) {
    if (!s || s == &compute_) return compute_;
    if (s == copy_.get()) return *copy_;
    if (s == comm_.get()) return *comm_;
    ZT_FAIL("{}: the stream does not belong to this cpu backend; pass one from this backend's stream()", what);
}

}  // namespace zt::cpu_impl

namespace zt {

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions & o) {
    return std::make_unique<cpu_impl::CpuBackend>(o);
}
std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    CpuBackendOptions o;
    o.n_threads = n_threads;
    return std::make_unique<cpu_impl::CpuBackend>(o);
}

}  // namespace zt
