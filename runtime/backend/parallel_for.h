// ThreadPool / parallel_for: a small fork-join helper for the CPU backend, built on boost::asio::thread_pool.
// Why not OpenMP: the build does not link it, and a pool we own lets the backend keep OpenBLAS single-threaded
// (no nested oversubscription) while it parallelises GEMM panels and row-wise ops itself.
// Determinism: parallel_for only splits independent work items; no result is ever reduced across items, so
// results never depend on the thread count or on how the range is split.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

namespace zt {

class ThreadPool {
public:
    // n_threads <= 0: one per hardware thread. The calling thread works too, so the pool holds n_threads - 1.
    explicit ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
        if (n_threads_ > 1) pool_ = std::make_unique<boost::asio::thread_pool>(size_t(n_threads_ - 1));
    }
    ~ThreadPool() { if (pool_) pool_->join(); }
    int size() const { return n_threads_; }

    // Calls fn(begin, end) over [0, n) in at most size() contiguous chunks of at least `grain` items each;
    // returns when all are done; rethrows the first exception a chunk threw.
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> & fn) {
        if (n <= 0) return;
        const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
        const int64_t chunks = std::min<int64_t>(n_threads_, max_chunks);
        if (chunks <= 1 || !pool_) { fn(0, n); return; }
        std::mutex mu;
        std::condition_variable cv;
        int64_t pending = chunks - 1;
        std::exception_ptr error;
        auto run = [&](int64_t c) {
            const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
            try { fn(b, e); } catch (...) { std::lock_guard<std::mutex> lock(mu); if (!error) error = std::current_exception(); }
        };
        for (int64_t c = 1; c < chunks; ++c)
            boost::asio::post(*pool_, [&, c] {
                run(c);
                std::lock_guard<std::mutex> lock(mu);
                if (--pending == 0) cv.notify_one();
            });
        run(0);
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return pending == 0; });
        if (error) std::rethrow_exception(error);
    }

private:
    int n_threads_;
    std::unique_ptr<boost::asio::thread_pool> pool_;
};

}  // namespace zt
