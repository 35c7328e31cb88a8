// The CPU backend's ThreadPool (runtime/backend/parallel_for.h): every index visited exactly once in contiguous
// chunks of at least `grain` (n = 0, n < threads, grain > n included), the split fixed by (n, grain, threads)
// only, exceptions rethrown in the caller, nested calls inline, two callers at once serialised, pools destroyed
// right after use, 100k short calls in a row; with the spin on (default) and off (ZT_POOL_SPIN_US=0).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/backend/parallel_for.h"
#include "runtime/base/error.h"

namespace zt {
namespace {

constexpr int kSpinDefault = -1;   // ThreadPool's spin_us argument: -1 = ZT_POOL_SPIN_US or the default

class ThreadPoolSpin : public ::testing::TestWithParam<int> {};   // the pool's spin_us (0: sleep at once)

// The chunks of one parallel_for, sorted: [begin, end) pairs.
std::vector<std::pair<int64_t, int64_t>> chunks_of(ThreadPool & pool, int64_t n, int64_t grain,
                                                    std::vector<int> * visits) {
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> chunks;
    pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) ++(*visits)[size_t(i)];   // each index is in one chunk only: no race
        std::lock_guard<std::mutex> lock(mu);
        chunks.emplace_back(b, e);
    });
    std::sort(chunks.begin(), chunks.end());
    return chunks;
}

TEST_P(ThreadPoolSpin, VisitsEveryIndexOnceInChunksOfAtLeastGrain) {
    for (int threads : {1, 2, 3, 5, 8}) {
        ThreadPool pool(threads, GetParam());
        ASSERT_EQ(pool.size(), threads);
        for (int64_t n : {0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 100, 1000, 4099}) {
            for (int64_t grain : {0, 1, 2, 3, 7, 64, 5000}) {
                SCOPED_TRACE("threads " + std::to_string(threads) + " n " + std::to_string(n) + " grain " +
                             std::to_string(grain));
                std::vector<int> visits(size_t(n), 0);
                const auto chunks = chunks_of(pool, n, grain, &visits);
                for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[size_t(i)], 1) << "index " << i;
                if (n == 0) { EXPECT_TRUE(chunks.empty()); continue; }
                // contiguous, covering [0, n), the count chunk_count says, each >= grain unless it is the only one
                ASSERT_EQ(int64_t(chunks.size()), pool.chunk_count(n, grain));
                EXPECT_LE(int64_t(chunks.size()), int64_t(threads) * ThreadPool::kChunksPerThread);
                int64_t expect_begin = 0;
                for (size_t c = 0; c < chunks.size(); ++c) {
                    EXPECT_EQ(chunks[c].first, expect_begin);
                    EXPECT_LT(chunks[c].first, chunks[c].second);
                    if (chunks.size() > 1) {
                        EXPECT_GE(chunks[c].second - chunks[c].first, std::max<int64_t>(1, grain));
                    }
                    int64_t b = 0, e = 0;   // the split depends on (n, grain, threads) only
                    ThreadPool::chunk_range(n, int64_t(chunks.size()), int64_t(c), b, e);
                    EXPECT_EQ(chunks[c], std::make_pair(b, e));
                    expect_begin = chunks[c].second;
                }
                EXPECT_EQ(expect_begin, n);
                if (threads == 1 || n < 2 * std::max<int64_t>(1, grain)) { EXPECT_EQ(chunks.size(), 1u); }
            }
        }
    }
}

TEST_P(ThreadPoolSpin, RethrowsTheFirstExceptionInTheCaller) {
    for (int threads : {1, 2, 4}) {
        ThreadPool pool(threads, GetParam());
        for (int64_t bad : {int64_t(0), int64_t(37), int64_t(99)}) {   // the first chunk, a middle one, the last
            std::atomic<int64_t> ran{0};
            try {
                pool.parallel_for(100, 1, [&](int64_t b, int64_t e) {
                    ran.fetch_add(e - b);
                    if (b <= bad && bad < e) throw std::runtime_error("chunk " + std::to_string(b));
                });
                FAIL() << "no exception from parallel_for (threads " << threads << ", bad " << bad << ")";
            } catch (const std::runtime_error & e) {
                EXPECT_EQ(std::string(e.what()).rfind("chunk ", 0), 0u) << e.what();
            }
            EXPECT_GE(ran.load(), 1);
        }
        // every chunk throws: exactly one exception comes out, from one of them; the pool still works after
        try {
            pool.parallel_for(64, 1, [](int64_t b, int64_t) {
                throw std::runtime_error("chunk " + std::to_string(b));
            });
            FAIL() << "no exception from parallel_for";
        } catch (const std::runtime_error & e) {
            EXPECT_EQ(std::string(e.what()).rfind("chunk ", 0), 0u) << e.what();
        }
        std::atomic<int64_t> sum{0};
        pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
        EXPECT_EQ(sum.load(), 999 * 1000 / 2);
    }
}

TEST_P(ThreadPoolSpin, NestedCallsRunInlineOnTheChunksThread) {
    ThreadPool pool(4, GetParam()), other(3, GetParam());
    std::vector<std::atomic<int>> visits(40 * 50);
    std::atomic<int> off_thread{0};
    pool.parallel_for(40, 1, [&](int64_t b, int64_t e) {
        EXPECT_TRUE(ThreadPool::in_chunk());
        const auto me = std::this_thread::get_id();
        for (int64_t i = b; i < e; ++i) {
            ThreadPool & inner = i % 2 ? pool : other;   // the same pool and another one: both inline
            inner.parallel_for(50, 1, [&](int64_t ib, int64_t ie) {
                if (std::this_thread::get_id() != me) ++off_thread;
                for (int64_t j = ib; j < ie; ++j) ++visits[size_t(i * 50 + j)];
            });
        }
    });
    EXPECT_FALSE(ThreadPool::in_chunk());
    EXPECT_EQ(off_thread.load(), 0);
    for (size_t k = 0; k < visits.size(); ++k) ASSERT_EQ(visits[k].load(), 1) << "item " << k;
}

TEST_P(ThreadPoolSpin, TwoCallerThreadsAtOnceAreSerialised) {
    ThreadPool pool(3, GetParam());
    std::atomic<int> in_flight[2] = {{0}, {0}};   // chunks of caller 0's / caller 1's jobs running now
    std::atomic<int> overlap{0};
    auto caller = [&](int id, int64_t n, int64_t * ok) {
        for (int call = 0; call < 2000; ++call) {
            std::atomic<int64_t> sum{0};
            pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
                in_flight[id].fetch_add(1);
                if (in_flight[1 - id].load() > 0) ++overlap;   // a chunk of the other caller's job at the same time
                for (int64_t i = b; i < e; ++i) sum += i;
                in_flight[id].fetch_sub(1);
            });
            *ok += sum.load() == n * (n - 1) / 2 ? 1 : 0;
        }
    };
    int64_t ok_a = 0, ok_b = 0;
    std::thread a(caller, 0, 97, &ok_a), b(caller, 1, 61, &ok_b);
    a.join();
    b.join();
    EXPECT_EQ(ok_a, 2000);
    EXPECT_EQ(ok_b, 2000);
    EXPECT_EQ(overlap.load(), 0);
}

TEST_P(ThreadPoolSpin, DestroyedRightAfterUse) {
    for (int round = 0; round < 200; ++round) {
        const int threads = 1 + round % 8;
        std::atomic<int64_t> sum{0};
        {
            ThreadPool pool(threads, GetParam());
            if (round % 3 != 0)   // some pools are never used
                pool.parallel_for(64, 1, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
        }
        if (round % 3 != 0) { ASSERT_EQ(sum.load(), 63 * 64 / 2) << "round " << round; }
    }
}

// Jobs of different chunk counts back to back (n = 3..10 on 2 threads: 3..8 chunks): a worker late for a job of
// few chunks must not claim past its end once the next, larger job is being written (this once hung the pool).
TEST_P(ThreadPoolSpin, HundredThousandShortCallsInARow) {
    ThreadPool pool(2, GetParam());
    std::vector<int64_t> out(10, 0);
    const auto t0 = std::chrono::steady_clock::now();
    const int calls = 100000;
    for (int call = 0; call < calls; ++call)
        pool.parallel_for(3 + call % 8, 1, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) out[size_t(i)] += 1;
        });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t i = 0; i < 10; ++i) {   // index i is in the calls with n = 3 + call % 8 > i
        int64_t want = 0;
        for (int call = 0; call < calls; ++call) want += 3 + call % 8 > i ? 1 : 0;
        EXPECT_EQ(out[size_t(i)], want) << "index " << i;
    }
    std::printf("[ThreadPool] %d calls of parallel_for(3..10, 1) on 2 threads, spin %d us: %.2f us per call\n", calls,
                pool.spin_us(), s / calls * 1e6);
    // "quickly": a hang or a sleep per call would show; a loaded 2-core VM takes well under this
    EXPECT_LT(s, 30.0);
}

INSTANTIATE_TEST_SUITE_P(ThreadPool, ThreadPoolSpin, ::testing::Values(kSpinDefault, 0),
                         [](const ::testing::TestParamInfo<int> & p) {
                             return p.param == 0 ? std::string("Spin0") : std::string("SpinDefault");
                         });

// Threads of this process (Linux /proc); -1 where unknown.
int process_threads() {
    std::ifstream f("/proc/self/status");
    std::string key;
    while (f >> key) {
        if (key == "Threads:") { int n = -1; f >> n; return n; }
        std::getline(f, key);
    }
    return -1;
}

TEST(ThreadPool, OneThreadStartsNoWorkerAndRunsInline) {
    const int before = process_threads();
    ThreadPool pool(1);
    if (before > 0) { EXPECT_EQ(process_threads(), before); }
    const auto me = std::this_thread::get_id();
    int calls = 0;
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
        ++calls;
        EXPECT_EQ(std::this_thread::get_id(), me);
        EXPECT_EQ(b, 0);
        EXPECT_EQ(e, 1000);
    });
    EXPECT_EQ(calls, 1);
    ThreadPool four(4);
    if (before > 0) { EXPECT_GE(process_threads(), before + 3); }   // the caller is the fourth (a sanitizer may add one)
}

TEST(ThreadPool, MoreChunksThanThreadsWhenItemsAllow) {
    ThreadPool pool(4, 0);
    EXPECT_EQ(pool.chunk_count(0, 1), 0);
    EXPECT_EQ(pool.chunk_count(3, 1), 3);                                   // n < threads
    EXPECT_EQ(pool.chunk_count(1000, 1), 4 * ThreadPool::kChunksPerThread);
    EXPECT_EQ(pool.chunk_count(1000, 300), 3);                              // never below grain
    EXPECT_EQ(pool.chunk_count(10, 64), 1);                                 // grain > n
    EXPECT_EQ(ThreadPool(1).chunk_count(1000, 1), 1);
}

TEST(ThreadPool, SpinFromEnvironment) {
    const char * old = std::getenv("ZT_POOL_SPIN_US");
    const std::string saved = old ? old : "";
    ::setenv("ZT_POOL_SPIN_US", "0", 1);
    EXPECT_EQ(ThreadPool(2).spin_us(), 0);
    {
        ThreadPool pool(3);   // the whole contract with the spin off from the environment
        std::vector<int> visits(1001, 0);
        pool.parallel_for(1001, 7, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) ++visits[size_t(i)]; });
        for (int v : visits) ASSERT_EQ(v, 1);
    }
    ::setenv("ZT_POOL_SPIN_US", "17", 1);
    EXPECT_EQ(ThreadPool(2).spin_us(), 17);
    EXPECT_EQ(ThreadPool(2, 5).spin_us(), 5);   // an explicit spin_us wins
    for (const char * bad : {"-1", "abc", "12us", "1000000"}) {
        ::setenv("ZT_POOL_SPIN_US", bad, 1);
        EXPECT_THROW(ThreadPool(2), Error) << bad;
    }
    ::unsetenv("ZT_POOL_SPIN_US");
    EXPECT_EQ(ThreadPool(2).spin_us(), ThreadPool::kDefaultSpinUs);
    if (old) ::setenv("ZT_POOL_SPIN_US", saved.c_str(), 1);
}

}  // namespace
}  // namespace zt
