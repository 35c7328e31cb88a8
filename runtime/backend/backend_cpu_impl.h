// Private to the CPU backend, shared by its two files: backend_cpu.cpp (Buffer, host memory, streams, events, host
// tasks, the entry points make_cpu_backend) and backend_cpu_ops.cpp (the ops, the readable reference of each).
// Holds the CpuBackend class and its CpuStream. Other code uses backend.h.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/memory_account.h"
#include "runtime/backend/parallel_for.h"

namespace zt::cpu_impl {

struct ErrorBox;     // a task's exception, surfaced at most once (backend_cpu.cpp)
struct EventState;   // what an Event's impl points at (backend_cpu.cpp)

// ---- streams (backend_cpu.cpp) -------------------------------------------------------------------------------
// One stream. compute has no executor (its work runs on the caller); copy and comm run tasks in order on one
// thread of their own. error_ is written by whoever runs the stream's tasks and read by synchronize.
class CpuStream : public Stream {
public:
    CpuStream(StreamRole r, const CpuBackendOptions & o);
    ~CpuStream() override;

    bool asynchronous() const { return role() != StreamRole::compute; }
    double link_gbps() const { return link_gbps_; }

    // Runs fn now (compute) or queues it (copy, comm); an exception it throws is kept in error_.
    void submit(std::function<void()> fn);
    // An event completed when the stream reaches this point (at once on compute).
    std::shared_ptr<EventState> record();
    // Later work on this stream waits for ev; an unsurfaced error it carries becomes this stream's error too
    // (on compute: rethrown at once, since the caller is the one waiting).
    void wait(std::shared_ptr<EventState> ev);
    // Host waits for everything queued so far.
    void finish();
    // finish() for a Buffer being freed (cudaFree-like), so no queued task writes into freed memory; skipped on
    // a stream thread (a task dropping a Buffer), where waiting could deadlock.
    void finish_before_free();
    // Rethrows (once) the stream's first unsurfaced error.
    void surface();
    // Runs everything still queued and stops the thread (destructor); an error nobody surfaced is logged.
    void drain();

private:
    void run_task(const std::function<void()> & fn);
    // Keeps err unless an earlier error is still unsurfaced (the first one wins).
    void adopt_error(std::shared_ptr<ErrorBox> err);
    std::shared_ptr<ErrorBox> unsurfaced_error();

    const double link_gbps_;
    const int64_t race_delay_us_;
    std::mt19937_64 rng_;
    std::mutex mu_;
    std::condition_variable idle_cv_;                      // signalled after every task
    uint64_t submitted_ = 0, completed_ = 0;               // tasks queued / finished (copy, comm)
    std::shared_ptr<ErrorBox> error_;                      // first unsurfaced error (or the last, surfaced one)
    std::unique_ptr<boost::asio::thread_pool> exec_;       // copy, comm: one thread, made on first use
};

// ---- the backend ---------------------------------------------------------------------------------------------
class CpuBackend final : public Backend {
public:
    explicit CpuBackend(const CpuBackendOptions & o);
    ~CpuBackend() override;

    std::string name() const override { return "cpu"; }

    // ---- memory, streams, events (backend_cpu.cpp) ----------------------------------------------------------
    Buffer alloc(size_t bytes, MemKind kind, const char * purpose) override;
    MemoryStats memory_stats() const override { return account_->stats(); }
    void reset_memory_peak() override { account_->reset_peak(); }
    Stream * stream(StreamRole role) override { return &cpu_stream(role); }

    // dst and src must stay valid (and src unchanged) until the copy is done on s (record + wait / synchronize).
    void copy_async(void * dst, const void * src, size_t bytes, Stream * s) override;
    Event record(Stream * s) override;
    void wait(Stream * s, Event e) override;
    void synchronize(Stream * s) override;
    void host_task(Stream * s, std::function<void()> fn) override;

    // ---- ops (backend_cpu_ops.cpp) --------------------------------------------------------------------------
    void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream *) override;
    void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream *) override;
    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream *) override;
    void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream *) override;
    void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                  const std::vector<AttentionSeq> & seqs, Stream *) override;
    void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                   const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream *) override;
    void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream *) override;
    void add(Tensor out, const Tensor & a, const Tensor & b, Stream *) override;
    void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream *) override;
    void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream *) override;
    void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream *) override;

private:
    // backend_cpu.cpp
    CpuStream & cpu_stream(StreamRole role);
    // The backend's own stream behind s (nullptr: compute).
    CpuStream & of(Stream * s, const char * what);

    std::shared_ptr<MemoryAccount> account_ = std::make_shared<MemoryAccount>();
    const CpuMatmulPath path_;   // the kernels every op runs (CpuBackendOptions::kernel_path)
    ThreadPool pool_;
    CpuStream compute_;
    std::shared_ptr<CpuStream> copy_, comm_;   // shared: a Buffer's free waits on them while the backend lives
};

}  // namespace zt::cpu_impl
