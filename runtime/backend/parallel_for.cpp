// ThreadPool (parallel_for.h): the workers, the job hand-off and the bounded spin-then-sleep waits.
//
// Hand-off. The caller (under call_mu_) writes the job fields and done_ = 0, then publishes claim_ =
// (gen, chunks, next = 0) (seq_cst). Workers and the caller claim chunk i by CAS claim_ (gen, chunks, i) ->
// (gen, chunks, i + 1), only while i < chunks: the bound is in the same word as the generation, so a stale
// snapshot of a finished job can never be claimed past its end while the next job's fields are being written.
// After a successful claim the job cannot complete before that chunk is done, so its fields are stable and are
// the ones of `gen` (the caller rewrites them only for the next job). The finisher of a chunk adds 1 to done_; the caller
// returns once done_ == chunks, so no worker still runs the caller's fn (on its stack) after it returns.
//
// Sleeping without lost wake-ups (both are the store-then-load pattern on seq_cst atomics): a worker increments
// sleepers_ then re-reads claim_ under sleep_mu_ before waiting; the caller stores claim_ then reads sleepers_, and
// if any, takes sleep_mu_ and notifies. Likewise caller_sleeping_ / done_ for the caller's wait on done_cv_.
#include "runtime/backend/parallel_for.h"

#include <pthread.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <system_error>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "runtime/base/error.h"

namespace zt {

namespace {

thread_local int t_chunk_depth = 0;   // > 0 on pool workers and on a caller while it runs chunks

struct ChunkDepth {
    ChunkDepth() { ++t_chunk_depth; }
    ~ChunkDepth() { --t_chunk_depth; }
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Spins until done() or spin_us have passed; true if done() held. Pauses for the first microsecond (a job that
// follows at once is caught with no system call), then yields the core at every check so that a runnable copy /
// comm thread or another rank on this core runs instead of us.
template <class Done>
bool spin_until(int spin_us, Done && done) {
    if (spin_us <= 0) return false;
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto yield_after = start + std::chrono::microseconds(1);
    const auto deadline = start + std::chrono::microseconds(spin_us);
    for (;;) {
        for (int i = 0; i < 8; ++i) {
            if (done()) return true;
            cpu_relax();
        }
        const auto now = Clock::now();
        if (now >= deadline) return done();
        if (now >= yield_after) std::this_thread::yield();
    }
}

int spin_us_from_env() {
    const char * env = std::getenv("ZT_POOL_SPIN_US");
    if (!env || !*env) return ThreadPool::kDefaultSpinUs;
    char * end = nullptr;
    const long v = std::strtol(env, &end, 10);
    ZT_CHECK(end != env && *end == '\0' && v >= 0 && v <= 100000,
             "ZT_POOL_SPIN_US='{}' is not a whole number of microseconds in [0, 100000]: set it to how long an idle "
             "CPU worker spins before it sleeps (0 = sleep at once; default {}), or unset it", env,
             ThreadPool::kDefaultSpinUs);
    return int(v);
}

}  // namespace

bool ThreadPool::in_chunk() { return t_chunk_depth > 0; }

ThreadPool::ThreadPool(int n_threads, int spin_us)
    : n_threads_(std::max(1, n_threads > 0 ? n_threads : int(std::max(1u, std::thread::hardware_concurrency())))),
      spin_us_(spin_us >= 0 ? spin_us : spin_us_from_env()) {
    workers_.reserve(size_t(n_threads_ - 1));
    try {
        for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
    } catch (const std::system_error & e) {
        const size_t started = workers_.size();
        stop_.store(true);
        { std::lock_guard<std::mutex> lock(sleep_mu_); }
        work_cv_.notify_all();
        for (auto & t : workers_) t.join();
        ZT_FAIL("CPU thread pool: could not start worker thread {} of {} ({}): lower the thread count (job "
                "\"threads\" / --threads) or raise the process limit (ulimit -u)", started + 1, n_threads_ - 1,
                e.what());
    }
}

ThreadPool::~ThreadPool() {
    stop_.store(true);
    { std::lock_guard<std::mutex> lock(sleep_mu_); }
    work_cv_.notify_all();
    for (auto & t : workers_) t.join();
}

void ThreadPool::run(int64_t n, int64_t chunks, ChunkFn fn, void * ctx) {
    std::lock_guard<std::mutex> call(call_mu_);
    ChunkDepth depth;
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;   // no worker touches it: the last job is done and this one is not published yet
    const uint32_t gen = ++gen_;
    claim_.store(uint64_t(gen) << 32 | uint64_t(chunks) << 16);   // seq_cst: publishes the fields; ordered
                                                                   // before the sleepers_ read
    const int sleeping = sleepers_.load();
    if (sleeping > 0) {
        { std::lock_guard<std::mutex> lock(sleep_mu_); }
        // wake only as many as there are chunks for (the caller takes one); more are woken by nothing
        if (chunks - 1 >= sleeping) work_cv_.notify_all();
        else for (int64_t i = 0; i < chunks - 1; ++i) work_cv_.notify_one();
    }
    claim_and_run(gen);
    wait_done(chunks);
    if (failed_.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lock(error_mu_);
        std::rethrow_exception(error_);
    }
}

bool ThreadPool::claim_and_run(uint32_t gen) {
    bool ran = false;
    uint64_t s = claim_.load(std::memory_order_acquire);
    while (gen_of(s) == gen) {
        if (index_of(s) >= chunks_of(s)) break;   // every chunk of this job is taken
        if (claim_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
            run_chunk(index_of(s), chunks_of(s));
            ran = true;
            s = claim_.load(std::memory_order_acquire);
        }
    }
    return ran;
}

void ThreadPool::run_chunk(int64_t c, int64_t chunks) {
    const int64_t n = n_.load(std::memory_order_relaxed);
    if (!failed_.load(std::memory_order_relaxed)) {   // after a failure the rest is skipped, not run
        int64_t b = 0, e = 0;
        chunk_range(n, chunks, c, b, e);
        try {
            fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), b, e);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mu_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_release);
        }
    }
    if (done_.fetch_add(1) + 1 == chunks && caller_sleeping_.load()) {   // seq_cst pair with wait_done
        { std::lock_guard<std::mutex> lock(done_mu_); }
        done_cv_.notify_one();
    }
}

void ThreadPool::wait_done(int64_t chunks) {
    auto all_done = [&] { return done_.load(std::memory_order_acquire) == chunks; };
    if (all_done() || spin_until(spin_us_, all_done)) return;
    std::unique_lock<std::mutex> lock(done_mu_);
    caller_sleeping_.store(true);
    while (done_.load() != chunks) done_cv_.wait(lock);
    caller_sleeping_.store(false, std::memory_order_relaxed);
}

uint64_t ThreadPool::wait_for_job(uint32_t seen) {
    uint64_t s = 0;
    auto news = [&] {
        s = claim_.load(std::memory_order_acquire);
        return gen_of(s) != seen || stop_.load(std::memory_order_relaxed);
    };
    if (spin_until(spin_us_, news)) return s;
    std::unique_lock<std::mutex> lock(sleep_mu_);
    sleepers_.fetch_add(1);   // seq_cst pair with run(): store claim_, then read sleepers_
    while (gen_of(s = claim_.load()) == seen && !stop_.load()) work_cv_.wait(lock);
    sleepers_.fetch_sub(1);
    return s;
}

void ThreadPool::worker_main(int index) {
    ++t_chunk_depth;   // a parallel_for from inside a chunk on this thread runs inline
    const std::string name = "zt-pool-" + std::to_string(index);
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    uint32_t seen = 0;   // generation of the last job this worker looked at
    for (;;) {
        const uint64_t s = wait_for_job(seen);
        if (stop_.load()) return;
        seen = gen_of(s);
        claim_and_run(seen);
    }
}

}  // namespace zt
