// ThreadPool / parallel_for: the CPU backend's fork-join pool (persistent workers, low dispatch latency).
// Why not OpenMP: the build does not link it, and a pool we own lets the backend keep OpenBLAS single-threaded
// (no nested oversubscription) while it parallelises GEMM panels and row-wise ops itself; it also lets us bound
// the spinning (OMP_WAIT_POLICY=ACTIVE-style spinning would take the cores the copy/comm threads need).
//
// Contract (callers rely on it; keep it): parallel_for(n, grain, fn) calls fn(begin, end) over contiguous ranges
// that cover [0, n) exactly once; the items are independent and no result is ever reduced across items, so
// results never depend on the thread count, the number of chunks or which thread runs which chunk. A call returns
// when every chunk is done and rethrows the first exception a chunk threw (later chunks are then skipped).
// A parallel_for issued from inside a chunk (of any pool) runs inline on that thread; calls from two threads at
// once on one pool are serialised (one job at a time). ThreadPool(1) starts no thread.
//
// How (parallel_for.cpp): n_threads - 1 workers wait for a job published with a generation counter; the caller
// runs chunks too. A job is split into up to kChunksPerThread chunks per thread (never below `grain` items) that
// are claimed dynamically from one atomic word (generation, chunks, next), so uneven items and a late-waking
// worker balance out; the chunk boundaries depend on (n, grain, size()) only. No heap allocation per call: fn is
// passed as (function pointer, context pointer), not copied into std::function tasks.
// Idle workers, and the caller waiting for the last chunk, spin for a BOUNDED time (ZT_POOL_SPIN_US, default
// 50 us, 0 = sleep at once) and then sleep on a condition variable. Why bounded: a decode step issues ~240 jobs
// back to back, so a short spin catches the next one without a futex wake-up (~25 us each on a VM), but the copy
// and comm stream threads and the other ranks share these cores: a worker that spun on would steal their time
// (no OMP_WAIT_POLICY=ACTIVE-style spinning). The spin pauses (_mm_pause) for its first microsecond, then yields
// the core (sched_yield) at every check, so a runnable copy thread on that core runs first. Measured on the 2-core
// VM (SmolLM2-135M batch-1 decode, 2 threads): spin 0/5/20/50/200 us gave 34.6/39.8/43.3/46.5/46.5 tokens/s; with
// a simulated 8 GB/s link the copy thread moved 7.34-7.56 GB/s with the old pool and 7.52-7.58 GB/s with this one.
//
// Scaling to 64 cores (plan): chunking: one claim word costs a CAS per chunk on one shared line, fine to ~64
// threads; beyond, give each NUMA node its own counter and steal between nodes. False sharing: the claim word,
// done counter and job fields each have their own line; callers keep chunk outputs on separate lines (row ranges
// do). NUMA: workers are not pinned and weights are first-touched by the loader, so on multi-socket nodes run one
// rank per socket (numactl --cpunodebind/--membind); a job wakes only as many sleeping workers as it has chunks.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace zt {

class ThreadPool {
public:
    static constexpr int64_t kChunksPerThread = 4;   // chunks per thread when items allow (load balance)
    static constexpr int kDefaultSpinUs = 50;        // idle spin before sleeping, unless ZT_POOL_SPIN_US says
    static constexpr int64_t kMaxChunks = 0xffff;    // chunks of one job (they share the 64-bit claim word)

    // n_threads <= 0: one per hardware thread. The calling thread works too, so the pool starts n_threads - 1
    // workers. spin_us < 0: ZT_POOL_SPIN_US, else kDefaultSpinUs; 0: sleep at once.
    explicit ThreadPool(int n_threads, int spin_us = -1);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool & operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    int spin_us() const { return spin_us_; }

    // Calls fn(begin, end) over [0, n) in contiguous chunks of at least `grain` items each (one chunk when
    // n < 2 * grain); returns when all are done; rethrows the first exception a chunk threw.
    template <class Fn>
    void parallel_for(int64_t n, int64_t grain, Fn && fn) {
        if (n <= 0) return;
        const int64_t chunks = chunk_count(n, grain);
        if (chunks <= 1 || in_chunk()) { fn(int64_t(0), n); return; }
        using F = std::remove_reference_t<Fn>;
        run(n, chunks, [](void * f, int64_t b, int64_t e) { (*static_cast<F *>(f))(b, e); },
            const_cast<void *>(static_cast<const void *>(std::addressof(fn))));
    }

    // Chunks a parallel_for(n, grain) is split into: min(n / grain, size() * kChunksPerThread, kMaxChunks),
    // at least 1.
    int64_t chunk_count(int64_t n, int64_t grain) const {
        if (n <= 0) return 0;
        const int64_t by_grain = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
        const int64_t by_threads = std::min<int64_t>(kMaxChunks, int64_t(n_threads_) * kChunksPerThread);
        return std::min<int64_t>(by_grain, workers_.empty() ? 1 : by_threads);
    }
    // Chunk c of `chunks` over [0, n): sizes differ by at most one item.
    static void chunk_range(int64_t n, int64_t chunks, int64_t c, int64_t & begin, int64_t & end) {
        const int64_t base = n / chunks, rem = n % chunks;
        begin = c * base + std::min(c, rem);
        end = begin + base + (c < rem ? 1 : 0);
    }
    // True on a pool worker thread and on a caller while it runs chunks: parallel_for there runs inline.
    static bool in_chunk();

private:
    using ChunkFn = void (*)(void * ctx, int64_t begin, int64_t end);
    void run(int64_t n, int64_t chunks, ChunkFn fn, void * ctx);
    void worker_main(int index);
    bool claim_and_run(uint32_t gen);           // runs chunks of job `gen` until none is left; true if it ran any
    void run_chunk(int64_t c, int64_t chunks);  // chunk c of the current job (fields read after the claim)
    uint64_t wait_for_job(uint32_t seen);       // bounded spin, then sleep; the state of a newer job (or stop)
    void wait_done(int64_t chunks);             // caller: bounded spin, then sleep until every chunk is done

    // the claim word: generation (32 bits) | chunks of that job (16) | next chunk to claim (16)
    static uint32_t gen_of(uint64_t s) { return uint32_t(s >> 32); }
    static int64_t chunks_of(uint64_t s) { return int64_t((s >> 16) & 0xffffu); }
    static int64_t index_of(uint64_t s) { return int64_t(s & 0xffffu); }

    const int n_threads_;
    const int spin_us_;
    std::vector<std::thread> workers_;
    std::mutex call_mu_;                        // one job at a time (callers on two threads are serialised)
    uint32_t gen_ = 0;                          // generation of the last job (under call_mu_)

    // claim: a CAS claims chunk `next` only while next < chunks within one generation, all in one word, so a
    // worker that is late for a job can never take a chunk of the next one (nor one past the end of its own)
    alignas(64) std::atomic<uint64_t> claim_{0};
    alignas(64) std::atomic<int64_t> done_{0};  // chunks of the current job finished
    // the current job, written by the caller before it publishes the generation; relaxed atomics because a late
    // worker may read them while the next job is being written (its claim then fails and it ignores them)
    alignas(64) std::atomic<ChunkFn> fn_{nullptr};
    std::atomic<void *> ctx_{nullptr};
    std::atomic<int64_t> n_{0};
    std::atomic<bool> failed_{false};
    std::mutex error_mu_;
    std::exception_ptr error_;                  // first exception of the current job (under error_mu_)

    alignas(64) std::atomic<bool> stop_{false};
    std::atomic<int> sleepers_{0};              // workers asleep (or about to be) on work_cv_
    std::atomic<bool> caller_sleeping_{false};  // the caller asleep (or about to be) on done_cv_
    std::mutex sleep_mu_, done_mu_;
    std::condition_variable work_cv_, done_cv_;
};

}  // namespace zt
