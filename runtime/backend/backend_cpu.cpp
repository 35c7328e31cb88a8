// The CPU backend: the readable reference of every op in backend.h. fp32 arithmetic over F32/F16/BF16 weights,
// GEMM in cpu_matmul.h, multi-threaded with a small pool (parallel_for.h). Memory of every kind is host memory
// (pinned_host: 4096-aligned, mlock'ed where RLIMIT_MEMLOCK allows).
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
//
// Ops ignore their stream argument and always run on the calling thread (the compute stream's order).
//
// Batch invariance (a hard requirement, see backend.h). Measured with OpenBLAS 0.3.21 (DYNAMIC_ARCH, Cooperlake
// kernels): cblas_sgemm gives a row different bits depending on M (the number of rows in the call, e.g. M = 5
// vs 1, even single-threaded: edge kernels and the small-matrix path sum K differently), and sgemm with M = 1
// differs from sgemv. So matmul never calls sgemm: it runs cpu_matmul (cpu_matmul.h), whose readable reference
// is one sgemv per (token row, W panel) and whose fast paths (AVX-512, AVX2, portable; picked at run time,
// ZT_CPU_MATMUL forces one) are register-blocked micro-kernels where every output element is one dot product
// over K in a fixed order, whatever T, tile or thread. OpenBLAS is set to one thread (its own threading would
// split panels by size); the pool spreads work items over threads instead, which never changes the bits.
// Other ops reduce each output element in a fixed order (rmsnorm: over C in order; attention: keys in order).
#include <cblas.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
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
#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/memory_account.h"
#include "runtime/backend/op_checks.h"
#include "runtime/backend/sample_token.h"
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

namespace {

// ---- checks: runtime/backend/op_checks.h ----------------------------------------------------------------------------

// Element i of a weight tensor, widened to fp32.
inline float weight_at(const Tensor & w, int64_t i) {
    switch (w.dtype) {
        case DType::F32: return w.ptr<const float>()[i];
        case DType::BF16: return bf16_to_f32(w.ptr<const uint16_t>()[i]);
        case DType::F16: return f16_to_f32(w.ptr<const uint16_t>()[i]);
        default: return 0.0f;   // excluded by check_weight
    }
}
// Elements [i, i+n) of a weight tensor widened to fp32 into dst.
inline void weight_row(float * dst, const Tensor & w, int64_t i, int64_t n) {
    convert_to_f32(dst, static_cast<const char *>(w.data) + size_t(i) * dtype_size(w.dtype), w.dtype, size_t(n));
}

// 64-byte aligned per-thread scratch of n floats (contents kept until the next call with a larger n).
struct Scratch {
    float * p = nullptr;
    size_t cap = 0;
    ~Scratch() { std::free(p); }
    float * get(size_t n) {
        if (n > cap) {
            std::free(p);
            cap = (n + 15) & ~size_t(15);
            p = static_cast<float *>(std::aligned_alloc(64, cap * sizeof(float)));
            ZT_CHECK(p != nullptr, "out of host memory allocating {} bytes of scratch", cap * sizeof(float));
        }
        return p;
    }
};

// ---- streams and events -------------------------------------------------------------------------------------
const char * role_name(StreamRole r) {
    switch (r) {
        case StreamRole::compute: return "compute";
        case StreamRole::copy: return "copy";
        case StreamRole::comm: return "comm";
    }
    return "?";
}

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

class CpuStream;
thread_local const CpuStream * t_running_stream = nullptr;   // set on a copy/comm thread while it runs a task

// One stream. compute has no executor (its work runs on the caller); copy and comm run tasks in order on one
// thread of their own. error_ is written by whoever runs the stream's tasks and read by synchronize.
class CpuStream : public Stream {
public:
    CpuStream(StreamRole r, const CpuBackendOptions & o)
        : Stream(r),
          link_gbps_(r == StreamRole::copy ? o.link_gbps : 0),
          race_delay_us_(r == StreamRole::compute ? 0 : o.race_delay_us),
          rng_(o.race_seed + 0x9E3779B97F4A7C15ull * uint64_t(int(r) + 1)) {}
    ~CpuStream() override { drain(); }

    bool asynchronous() const { return role() != StreamRole::compute; }
    double link_gbps() const { return link_gbps_; }

    // Runs fn now (compute) or queues it (copy, comm); an exception it throws is kept in error_.
    void submit(std::function<void()> fn) {
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

    // An event completed when the stream reaches this point (at once on compute).
    std::shared_ptr<EventState> record() {
        auto ev = std::make_shared<EventState>();
        submit([this, ev] { ev->complete(unsurfaced_error()); });
        return ev;
    }

    // Later work on this stream waits for ev; an unsurfaced error it carries becomes this stream's error too
    // (on compute: rethrown at once, since the caller is the one waiting).
    void wait(std::shared_ptr<EventState> ev) {
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

    // Host waits for everything queued so far.
    void finish() {
        ZT_CHECK(t_running_stream != this, "synchronize of the {} stream from one of its own host tasks would "
                 "deadlock: host tasks must not call into the backend", role_name(role()));
        std::unique_lock<std::mutex> lock(mu_);
        const uint64_t target = submitted_;
        idle_cv_.wait(lock, [&] { return completed_ >= target; });
    }
    // finish() for a Buffer being freed (cudaFree-like), so no queued task writes into freed memory; skipped on
    // a stream thread (a task dropping a Buffer), where waiting could deadlock.
    void finish_before_free() {
        if (t_running_stream == nullptr) finish();
    }
    // Rethrows (once) the stream's first unsurfaced error.
    void surface() {
        std::shared_ptr<ErrorBox> err;
        { std::lock_guard<std::mutex> lock(mu_); err = std::move(error_); }
        if (err)
            if (auto ex = err->take()) rethrow_task_error(ex, err->role);
    }

    // Runs everything still queued and stops the thread (destructor); an error nobody surfaced is logged.
    void drain() {
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

private:
    void run_task(const std::function<void()> & fn) {
        try { fn(); } catch (...) { adopt_error(std::make_shared<ErrorBox>(std::current_exception(), role())); }
    }
    // Keeps err unless an earlier error is still unsurfaced (the first one wins).
    void adopt_error(std::shared_ptr<ErrorBox> err) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_ || !error_->pending()) error_ = std::move(err);
    }
    std::shared_ptr<ErrorBox> unsurfaced_error() {
        std::lock_guard<std::mutex> lock(mu_);
        return error_ && error_->pending() ? error_ : nullptr;
    }

    const double link_gbps_;
    const int64_t race_delay_us_;
    std::mt19937_64 rng_;
    std::mutex mu_;
    std::condition_variable idle_cv_;                      // signalled after every task
    uint64_t submitted_ = 0, completed_ = 0;               // tasks queued / finished (copy, comm)
    std::shared_ptr<ErrorBox> error_;                      // first unsurfaced error (or the last, surfaced one)
    std::unique_ptr<boost::asio::thread_pool> exec_;       // copy, comm: one thread, made on first use
};

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

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(const CpuBackendOptions & o)
        : pool_(o.n_threads > 0 ? o.n_threads : int(std::max(1u, std::thread::hardware_concurrency()))),
          compute_(StreamRole::compute, o), copy_(std::make_shared<CpuStream>(StreamRole::copy, o)),
          comm_(std::make_shared<CpuStream>(StreamRole::comm, o)) {
        ZT_CHECK(o.link_gbps >= 0 && o.race_delay_us >= 0, "cpu backend: link_gbps ({}) and race_delay_us ({}) "
                 "must be >= 0 (0 turns them off)", o.link_gbps, o.race_delay_us);
        openblas_set_num_threads(1);   // see the top of this file: one sgemv never splits across threads
    }
    ~CpuBackend() override {   // queued copy/comm work may wait on each other's events: drain both before freeing
        copy_->drain();
        comm_->drain();
    }

    std::string name() const override { return "cpu"; }

    // ---- memory, streams, events ------------------------------------------------------------------------
    Buffer alloc(size_t bytes, MemKind kind, const char * purpose) override {
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
    MemoryStats memory_stats() const override { return account_->stats(); }
    void reset_memory_peak() override { account_->reset_peak(); }
    Stream * stream(StreamRole role) override { return &cpu_stream(role); }

    // dst and src must stay valid (and src unchanged) until the copy is done on s (record + wait / synchronize).
    void copy_async(void * dst, const void * src, size_t bytes, Stream * s) override {
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
    Event record(Stream * s) override { return Event{of(s, "record").record()}; }
    void wait(Stream * s, Event e) override {
        of(s, "wait").wait(std::static_pointer_cast<EventState>(e.impl));
    }
    void synchronize(Stream * s) override {
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
    void host_task(Stream * s, std::function<void()> fn) override {
        ZT_CHECK(fn != nullptr, "host_task: empty function");
        of(s, "host_task").submit(std::move(fn));
    }

    // ---- ops ----------------------------------------------------------------------------------------------
    void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream *) override {
        check_f32(out, "embedding", "out");
        check_weight(table, "embedding", "table");
        ZT_CHECK(tokens.dtype == DType::I32, "embedding: tokens must be I32");
        ZT_CHECK(table.dims() == 2, "embedding: table must be (V,C), got {}", table.shape_str());
        const int64_t V = table.dim(0), C = table.dim(1), T = tokens.numel();
        ZT_CHECK(out.numel() == T * C, "embedding: out {} != (T={}, C={})", out.shape_str(), T, C);
        const int32_t * tok = tokens.ptr<const int32_t>();
        for (int64_t t = 0; t < T; ++t)
            ZT_CHECK(tok[t] >= 0 && tok[t] < V, "token id {} at position {} is outside the vocabulary [0, {})", tok[t], t, V);
        float * o = out.ptr<float>();
        pool_.parallel_for(T, 16, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) weight_row(o + t * C, table, int64_t(tok[t]) * C, C);
        });
    }

    void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream *) override {
        const RmsnormDims dims = check_rmsnorm(out, x, w);
        const int64_t R = dims.R, C = dims.C;
        const float * xp = x.ptr<const float>();
        float * op = out.ptr<float>();
        pool_.parallel_for(R, 64, [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) {
                const float * xr = xp + r * C;
                float * orow = op + r * C;
                float ss = 0.0f;                                  // sum of squares, in order
                for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
                const float inv = 1.0f / std::sqrt(ss / float(C) + eps);   // rsqrt(mean(x^2) + eps)
                for (int64_t c = 0; c < C; ++c) orow[c] = weight_at(w, c) * (xr[c] * inv);
            }
        });
    }

    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream *) override {
        const MatmulDims dims = check_matmul(out, x, w, bias);
        cpu_matmul(cpu_matmul_default_path(), pool_, out.ptr<float>(), x.ptr<const float>(), w, bias, dims.T, dims.N,
                   dims.K);   // cpu_matmul.h: the sgemv reference and the batch-invariant SIMD paths
    }

    void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream *) override {
        const RopeDims dims = check_rope(x, positions, inv_freq);
        const int64_t T = dims.T, H = dims.H, D = dims.D, half = D / 2;
        const int32_t * pos = positions.ptr<const int32_t>();
        const float * freqs = inv_freq.ptr<const float>();
        float * xp = x.ptr<float>();
        pool_.parallel_for(T, 8, [&](int64_t b, int64_t e) {
            thread_local Scratch cs_buf;
            float * cs = cs_buf.get(size_t(2 * half));
            for (int64_t t = b; t < e; ++t) {
                const float * f = freqs + t * dims.freq_stride;
                for (int64_t i = 0; i < half; ++i) {
                    const float a = float(pos[t]) * f[i];                    // fp32, as HF's inv_freq @ position_ids
                    cs[i] = float(std::cos(double(a))) * scaling;            // HF: emb.cos() * attention_scaling
                    cs[half + i] = float(std::sin(double(a))) * scaling;
                }
                for (int64_t h = 0; h < H; ++h) {
                    float * v = xp + (t * H + h) * D;
                    for (int64_t i = 0; i < half; ++i) {
                        const float x0 = v[i], x1 = v[i + half], c = cs[i], s = cs[half + i];
                        v[i] = x0 * c + (-x1) * s;
                        v[i + half] = x1 * c + x0 * s;
                    }
                }
            }
        });
    }

    void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                  const std::vector<AttentionSeq> & seqs, Stream *) override {
        const KvStoreDims dims = check_kv_store(k_cache, v_cache, k, v, seqs);
        const int64_t M = dims.M, row = dims.row;
        for (const AttentionSeq & q : seqs) {
            for (int32_t i = 0; i < q.n_tokens; ++i) {
                const int64_t dst = (int64_t(q.slot) * M + q.past_len + i) * row, src = int64_t(q.row0 + i) * row;
                std::memcpy(k_cache.ptr<float>() + dst, k.ptr<const float>() + src, size_t(row) * sizeof(float));
                std::memcpy(v_cache.ptr<float>() + dst, v.ptr<const float>() + src, size_t(row) * sizeof(float));
            }
        }
    }

    void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                   const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream *) override {
        const AttentionDims dims = check_attention(out, q, k_cache, v_cache, seqs, window);
        const int64_t T = dims.T, H = dims.H, D = dims.D, M = dims.M, KV = dims.KV;
        // Work items: (token row, head). seq_of[t] finds each row's sequence.
        std::vector<int32_t> seq_of(size_t(T), -1);
        for (size_t i = 0; i < seqs.size(); ++i) {
            for (int32_t r = 0; r < seqs[i].n_tokens; ++r) seq_of[size_t(seqs[i].row0 + r)] = int32_t(i);
        }
        const float scale = float(1.0 / std::sqrt(double(D)));   // head_dim ** -0.5
        const int64_t group = H / KV;
        const float * qp = q.ptr<const float>();
        const float * kp = k_cache.ptr<const float>();
        const float * vp = v_cache.ptr<const float>();
        float * op = out.ptr<float>();
        pool_.parallel_for(T * H, 4, [&](int64_t b, int64_t e) {
            thread_local Scratch score_buf;
            for (int64_t item = b; item < e; ++item) {
                const int64_t t = item / H, h = item % H, kvh = h / group;
                float * o = op + (t * H + h) * D;
                if (seq_of[size_t(t)] < 0) { std::memset(o, 0, size_t(D) * sizeof(float)); continue; }
                const AttentionSeq & sq = seqs[size_t(seq_of[size_t(t)])];
                const int64_t pos = sq.past_len + (t - sq.row0);
                int64_t lo = 0, hi = 0;   // the keys this query sees
                attention_key_range(pos, int64_t(sq.past_len) + sq.n_tokens, causal, window, &lo, &hi);
                const int64_t n_keys = hi - lo;
                const float * qh = qp + (t * H + h) * D;
                const float * kbase = kp + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;   // key lo + j at + j*KV*D
                const float * vbase = vp + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;
                float * sc = score_buf.get(size_t(n_keys));
                float mx = -INFINITY;
                for (int64_t j = 0; j < n_keys; ++j) {
                    const float * kj = kbase + j * KV * D;
                    float dot = 0.0f;
                    for (int64_t d = 0; d < D; ++d) dot += qh[d] * kj[d];
                    sc[j] = dot * scale;
                    mx = std::max(mx, sc[j]);
                }
                float sum = 0.0f;
                for (int64_t j = 0; j < n_keys; ++j) { sc[j] = std::exp(sc[j] - mx); sum += sc[j]; }
                for (int64_t j = 0; j < n_keys; ++j) sc[j] = sc[j] / sum;
                for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
                for (int64_t j = 0; j < n_keys; ++j) {
                    const float * vj = vbase + j * KV * D;
                    const float p = sc[j];
                    for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
                }
            }
        });
    }

    void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream *) override {
        check_f32(out, "swiglu", "out"); check_f32(gate, "swiglu", "gate"); check_f32(up, "swiglu", "up");
        ZT_CHECK(out.numel() == gate.numel() && up.numel() == gate.numel(), "swiglu: shapes differ: {} {} {}",
                 out.shape_str(), gate.shape_str(), up.shape_str());
        const float * g = gate.ptr<const float>();
        const float * u = up.ptr<const float>();
        float * o = out.ptr<float>();
        pool_.parallel_for(out.numel(), 4096, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) o[i] = (g[i] / (1.0f + std::exp(-g[i]))) * u[i];
        });
    }

    void add(Tensor out, const Tensor & a, const Tensor & b, Stream *) override {
        check_f32(out, "add", "out"); check_f32(a, "add", "a"); check_f32(b, "add", "b");
        ZT_CHECK(out.numel() == a.numel() && b.numel() == a.numel(), "add: shapes differ: {} {} {}",
                 out.shape_str(), a.shape_str(), b.shape_str());
        const float * ap = a.ptr<const float>();
        const float * bp = b.ptr<const float>();
        float * o = out.ptr<float>();
        pool_.parallel_for(out.numel(), 16384, [&](int64_t s, int64_t e) {
            for (int64_t i = s; i < e; ++i) o[i] = ap[i] + bp[i];
        });
    }

    void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream *) override {
        check_f32(out, "gather_rows", "out"); check_f32(x, "gather_rows", "x");
        ZT_CHECK(rows.dtype == DType::I32, "gather_rows: rows must be I32");
        ZT_CHECK(x.dims() == 2, "gather_rows: x must be (T,C), got {}", x.shape_str());
        const int64_t T = x.dim(0), C = x.dim(1), R = rows.numel();
        ZT_CHECK(out.numel() == R * C, "gather_rows: out {} != (R={}, C={})", out.shape_str(), R, C);
        const int32_t * r = rows.ptr<const int32_t>();
        for (int64_t i = 0; i < R; ++i) {
            ZT_CHECK(r[i] >= 0 && r[i] < T, "gather_rows: row {} outside [0, {})", r[i], T);
            std::memcpy(out.ptr<float>() + i * C, x.ptr<const float>() + int64_t(r[i]) * C, size_t(C) * sizeof(float));
        }
    }

    void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream *) override {
        const PoolDims dims = check_pool(out, x, seqs);
        const int64_t C = dims.C, B = dims.B;
        for (int64_t b = 0; b < B; ++b) {
            const AttentionSeq & q = seqs[size_t(b)];
            float * o = out.ptr<float>() + b * C;
            const float * rows = x.ptr<const float>() + int64_t(q.row0) * C;
            if (mode == Pooling::last) {
                std::memcpy(o, rows + int64_t(q.n_tokens - 1) * C, size_t(C) * sizeof(float));
                continue;
            }
            const float inv = 1.0f / float(q.n_tokens);
            for (int64_t c = 0; c < C; ++c) {   // rows in order, fp32, then one multiply
                float acc = 0;
                for (int64_t r = 0; r < q.n_tokens; ++r) acc += rows[r * C + c];
                o[c] = acc * inv;
            }
        }
    }

    void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream *) override {
        const SampleDims dims = check_sample(ids, logits, rows);
        const int64_t R = dims.R, V = dims.V;
        SampleScratch scratch;
        for (int64_t r = 0; r < R; ++r) {
            const SampleRow & p = rows[size_t(r)];
            ids.ptr<int32_t>()[r] = sample_token(logits.ptr<const float>() + r * V, V, p.temperature, p.top_k, p.top_p,
                                                 p.u, scratch);
        }
    }

private:
    CpuStream & cpu_stream(StreamRole role) {
        switch (role) {
            case StreamRole::compute: return compute_;
            case StreamRole::copy: return *copy_;
            case StreamRole::comm: return *comm_;
        }
        return compute_;
    }
    // The backend's own stream behind s (nullptr: compute).
    CpuStream & of(Stream * s, const char * what) {
        if (!s || s == &compute_) return compute_;
        if (s == copy_.get()) return *copy_;
        if (s == comm_.get()) return *comm_;
        ZT_FAIL("{}: the stream does not belong to this cpu backend; pass one from this backend's stream()", what);
    }

    std::shared_ptr<MemoryAccount> account_ = std::make_shared<MemoryAccount>();
    ThreadPool pool_;
    CpuStream compute_;
    std::shared_ptr<CpuStream> copy_, comm_;   // shared: a Buffer's free waits on them while the backend lives
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions & o) { return std::make_unique<CpuBackend>(o); }
std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    CpuBackendOptions o;
    o.n_threads = n_threads;
    return std::make_unique<CpuBackend>(o);
}

}  // namespace zt
