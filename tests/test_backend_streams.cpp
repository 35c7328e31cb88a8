// CPU backend streams: in-order copy/comm streams on their own threads, events across streams, task errors,
// the simulated link (link_gbps), race-hunting delays (race_delay_us), pinned_host memory, clean destruction.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "tests/test_support.h"

namespace zt {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// A thread-safe log of labels, to check the order host tasks ran in.
struct SeqLog {
    std::mutex mu;
    std::vector<std::string> items;
    void add(const std::string & s) { std::lock_guard<std::mutex> lock(mu); items.push_back(s); }
    std::vector<std::string> get() { std::lock_guard<std::mutex> lock(mu); return items; }
};

CpuBackendOptions racy(int64_t delay_us, uint64_t seed = 1) {
    CpuBackendOptions o;
    o.n_threads = 2;
    o.race_delay_us = delay_us;
    o.race_seed = seed;
    return o;
}

TEST(BackendStreams, CopiesRunInOrderAndAreDoneAfterComputeWaits) {
    auto be = make_cpu_backend(racy(200));
    Stream * copy = be->stream(StreamRole::copy);
    Stream * compute = be->stream(StreamRole::compute);
    constexpr size_t n = 4096;
    Buffer a = be->alloc(n, MemKind::pinned_host), b = be->alloc(n, MemKind::device), c = be->alloc(n, MemKind::device);
    Buffer last = be->alloc(n, MemKind::device);
    std::vector<std::vector<uint8_t>> srcs(8, std::vector<uint8_t>(n));
    for (size_t i = 0; i < srcs.size(); ++i) std::memset(srcs[i].data(), int(i + 1), n);
    std::memset(a.data(), 0x5a, n);
    // a -> b -> c: only correct when the second copy runs after the first
    be->copy_async(b.data(), a.data(), n, copy);
    be->copy_async(c.data(), b.data(), n, copy);
    // eight copies into one buffer: the last one wins
    for (auto & src : srcs) be->copy_async(last.data(), src.data(), n, copy);
    Event e = be->record(copy);
    be->wait(compute, e);   // compute is synchronous: returns once e is done, no synchronize needed
    EXPECT_EQ(0, std::memcmp(c.data(), a.data(), n));
    EXPECT_EQ(0, std::memcmp(last.data(), srcs.back().data(), n));
    be->synchronize(nullptr);
}

TEST(BackendStreams, ComputeStreamRunsAtOnce) {
    auto be = make_cpu_backend(2);
    Stream * compute = be->stream(StreamRole::compute);
    bool ran = false;
    be->host_task(compute, [&] { ran = true; });
    EXPECT_TRUE(ran);
    ran = false;
    be->host_task(nullptr, [&] { ran = true; });
    EXPECT_TRUE(ran);
    int x = 7, y = 0;
    be->copy_async(&y, &x, sizeof x, nullptr);
    EXPECT_EQ(y, 7);
    be->wait(compute, be->record(compute));   // already complete
    be->wait(compute, Event{});                // a default event counts as complete
    be->synchronize(compute);
}

TEST(BackendStreams, WaitOrdersCommTaskBeforeLaterCopy) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
        auto be = make_cpu_backend(racy(300, seed));
        Stream * copy = be->stream(StreamRole::copy);
        Stream * comm = be->stream(StreamRole::comm);
        SeqLog log;
        int32_t produced = 0, fetched = 0;
        be->host_task(comm, [&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));   // the comm step is slow
            produced = 42;
            log.add("comm");
        });
        Event e = be->record(comm);
        be->host_task(copy, [&] { log.add("copy-before-wait"); });
        be->wait(copy, e);
        be->copy_async(&fetched, &produced, sizeof produced, copy);
        be->host_task(copy, [&] { log.add("copy-after-wait"); });
        be->synchronize(copy);
        EXPECT_EQ(fetched, 42);
        const auto items = log.get();
        ASSERT_EQ(items.size(), 3u);
        EXPECT_EQ(items[2], "copy-after-wait");   // copy-before-wait may run before or after comm
        be->synchronize(nullptr);
    }
}

TEST(BackendStreams, HostTaskErrorSurfacesAtSynchronizeOnce) {
    auto be = make_cpu_backend(2);
    Stream * copy = be->stream(StreamRole::copy);
    std::atomic<int> ran{0};
    be->host_task(copy, [] { throw std::runtime_error("disk on fire"); });
    be->host_task(copy, [] { throw std::runtime_error("second failure"); });   // not the first: dropped
    be->host_task(copy, [&] { ++ran; });                                        // still runs
    try {
        be->synchronize(copy);
        ADD_FAILURE() << "synchronize should rethrow the task's exception";
    } catch (const Error & e) {
        EXPECT_HAS(std::string(e.what()), "disk on fire");
        EXPECT_HAS(std::string(e.what()), "copy stream");
    }
    EXPECT_EQ(ran.load(), 1);
    EXPECT_NO_THROW(be->synchronize(copy));   // surfaced once
    // the stream keeps working
    int x = 3, y = 0;
    be->copy_async(&y, &x, sizeof x, copy);
    be->synchronize(copy);
    EXPECT_EQ(y, 3);
    // a zt::Error passes through unchanged; synchronize(nullptr) surfaces it too
    be->host_task(copy, [] { ZT_FAIL("custom {}", 1); });
    try {
        be->synchronize(nullptr);
        ADD_FAILURE() << "synchronize(nullptr) should rethrow";
    } catch (const Error & e) {
        EXPECT_EQ(e.message(), "custom 1");
    }
    EXPECT_NO_THROW(be->synchronize(nullptr));
}

TEST(BackendStreams, HostTaskErrorSurfacesAtWait) {
    auto be = make_cpu_backend(2);
    Stream * comm = be->stream(StreamRole::comm);
    Stream * copy = be->stream(StreamRole::copy);
    Stream * compute = be->stream(StreamRole::compute);
    // compute waiting on a failed comm event rethrows; comm's synchronize then has nothing left to say
    be->host_task(comm, [] { throw std::runtime_error("allgather failed"); });
    Event e = be->record(comm);
    EXPECT_THROW(be->wait(compute, e), Error);
    EXPECT_NO_THROW(be->synchronize(comm));
    // a copy stream that waits on a failed comm event inherits the error, surfaced once
    be->host_task(comm, [] { throw std::runtime_error("allgather failed again"); });
    be->wait(copy, be->record(comm));
    try {
        be->synchronize(copy);
        ADD_FAILURE() << "the copy stream should inherit the comm error";
    } catch (const Error & err) {
        EXPECT_HAS(std::string(err.what()), "allgather failed again");
        EXPECT_HAS(std::string(err.what()), "comm stream");
    }
    EXPECT_NO_THROW(be->synchronize(nullptr));
    // an event recorded before the failure carries no error
    Event before = be->record(comm);
    be->host_task(comm, [] { throw std::runtime_error("late"); });
    EXPECT_NO_THROW(be->wait(compute, before));
    EXPECT_THROW(be->synchronize(comm), Error);
    // host_task errors on compute are kept too
    be->host_task(compute, [] { throw std::runtime_error("compute-side"); });
    EXPECT_THROW(be->synchronize(compute), Error);
    EXPECT_NO_THROW(be->synchronize(nullptr));
}

TEST(BackendStreams, ForeignStreamIsRejected) {
    auto be = make_cpu_backend(1);
    auto other = make_cpu_backend(1);
    int x = 0, y = 0;
    EXPECT_THROW(be->copy_async(&y, &x, sizeof x, other->stream(StreamRole::copy)), Error);
    EXPECT_THROW(be->host_task(be->stream(StreamRole::copy), nullptr), Error);
}

TEST(BackendStreams, LinkThrottleLeavesHostFree) {
    CpuBackendOptions o;
    o.n_threads = 1;
    o.link_gbps = 1.0;
    auto be = make_cpu_backend(o);
    Stream * copy = be->stream(StreamRole::copy);
    constexpr size_t n = 8u << 20;   // 8 MiB at 1 GB/s: 8.4 ms
    Buffer src = be->alloc(n, MemKind::pinned_host), dst = be->alloc(n, MemKind::device);
    std::memset(src.data(), 0x11, n);
    be->host_task(copy, [] {});   // start the copy thread before timing
    be->synchronize(copy);
    std::atomic<bool> done{false};
    const auto t0 = Clock::now();
    be->copy_async(dst.data(), src.data(), n, copy);
    be->host_task(copy, [&] { done = true; });
    const double submit_ms = ms_since(t0);
    EXPECT_FALSE(done.load());   // the host returned before the link finished
    EXPECT_LT(submit_ms, 8.0);
    be->synchronize(copy);
    EXPECT_TRUE(done.load());
    EXPECT_GE(ms_since(t0), 8.0);
    EXPECT_EQ(static_cast<uint8_t *>(dst.data())[n - 1], 0x11);
}

// A 3-stage ring pipeline, ordered only by events: fetch chunk i into staging[i % 2] (host task on comm), upload
// it to device[i % 3] (copy), consume it (compute: keep a copy, add it to an accumulator). The host runs two
// chunks ahead of compute, so the comm and copy threads really race for the staging buffers (compute is
// synchronous, so its own order against later uploads comes from the host's submission order). The output must
// equal the plain sequential computation bit for bit.
std::vector<float> run_ring_pipeline(Backend & be, int n_chunks, int64_t chunk) {
    constexpr int kStaging = 2, kDevice = 3, kLag = 2;
    Stream * comm = be.stream(StreamRole::comm);
    Stream * copy = be.stream(StreamRole::copy);
    Stream * compute = be.stream(StreamRole::compute);
    const size_t bytes = size_t(chunk) * sizeof(float);
    std::vector<Buffer> staging, device;
    for (int k = 0; k < kStaging; ++k) staging.push_back(be.alloc(bytes, MemKind::pinned_host));
    for (int k = 0; k < kDevice; ++k) device.push_back(be.alloc(bytes, MemKind::device));
    Buffer acc = be.alloc(bytes, MemKind::device);
    std::vector<float> seen(size_t(n_chunks) * size_t(chunk));
    std::vector<Event> uploaded(static_cast<size_t>(n_chunks)), consumed(static_cast<size_t>(n_chunks));
    for (int i = 0; i < n_chunks + kLag; ++i) {
        if (i < n_chunks) {
            float * st = static_cast<float *>(staging[size_t(i % kStaging)].data());
            // comm: refill the staging buffer once chunk i-2's upload from it is done
            if (i >= kStaging) be.wait(comm, uploaded[size_t(i - kStaging)]);
            be.host_task(comm, [st, i, chunk] {
                for (int64_t j = 0; j < chunk; ++j) st[j] = float(i * 1000 + j) * 0.5f;
            });
            Event filled = be.record(comm);
            // copy: upload once filled, into a device buffer compute is done with
            be.wait(copy, filled);
            if (i >= kDevice) be.wait(copy, consumed[size_t(i - kDevice)]);
            be.copy_async(device[size_t(i % kDevice)].data(), st, bytes, copy);
            uploaded[size_t(i)] = be.record(copy);
        }
        const int c = i - kLag;   // compute consumes chunk c
        if (c >= 0) {
            be.wait(compute, uploaded[size_t(c)]);
            const Buffer & d = device[size_t(c % kDevice)];
            std::memcpy(&seen[size_t(c) * size_t(chunk)], d.data(), bytes);
            Tensor a = acc.view(DType::F32, {chunk});
            be.add(a, a, d.view(DType::F32, {chunk}), compute);
            consumed[size_t(c)] = be.record(compute);
        }
    }
    be.synchronize(nullptr);
    std::vector<float> out(seen);
    const float * ap = static_cast<const float *>(acc.data());
    out.insert(out.end(), ap, ap + chunk);
    return out;
}

TEST(BackendStreams, RaceDelaysDoNotChangeRingPipeline) {
    constexpr int kChunks = 8;
    constexpr int64_t kChunk = 257;
    // reference: the same arithmetic, sequential
    std::vector<float> ref(size_t(kChunks) * kChunk), acc(size_t(kChunk), 0.0f);
    for (int i = 0; i < kChunks; ++i)
        for (int64_t j = 0; j < kChunk; ++j) ref[size_t(i * kChunk + j)] = float(i * 1000 + j) * 0.5f;
    for (int i = 0; i < kChunks; ++i)
        for (int64_t j = 0; j < kChunk; ++j) acc[size_t(j)] = acc[size_t(j)] + ref[size_t(i * kChunk + j)];
    ref.insert(ref.end(), acc.begin(), acc.end());
    {
        auto be = make_cpu_backend(2);   // no delays
        EXPECT_EQ(run_ring_pipeline(*be, kChunks, kChunk), ref);
    }
    const auto t0 = Clock::now();
    for (uint64_t seed = 1; seed <= 12; ++seed) {
        auto be = make_cpu_backend(racy(500, seed));
        ASSERT_EQ(run_ring_pipeline(*be, kChunks, kChunk), ref) << "seed " << seed;
    }
    EXPECT_LT(ms_since(t0), 2500.0);
}

TEST(BackendStreams, PinnedHostIsPageAlignedAndZeroed) {
    auto be = make_cpu_backend(1);
    for (size_t n : {size_t(1), size_t(4095), size_t(4097), size_t(1) << 20}) {
        for (int round = 0; round < 2; ++round) {   // the second round may reuse the first one's dirty pages
            Buffer b = be->alloc(n, MemKind::pinned_host);
            ASSERT_TRUE(b);
            EXPECT_EQ(b.kind(), MemKind::pinned_host);
            EXPECT_EQ(b.bytes(), n);
            EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 4096, 0u);
            const auto * p = static_cast<const uint8_t *>(b.data());
            size_t nonzero = 0;
            for (size_t i = 0; i < n; ++i) nonzero += p[i] != 0;
            EXPECT_EQ(nonzero, 0u) << n << " bytes";
            std::memset(b.data(), 0xff, n);
        }
    }
}

TEST(BackendStreams, FreeingABufferWaitsForQueuedWork) {
    auto be = make_cpu_backend(racy(50));
    Stream * copy = be->stream(StreamRole::copy);
    Stream * comm = be->stream(StreamRole::comm);
    std::vector<uint8_t> src(1 << 16, 0xab);
    std::atomic<bool> copied{false};
    Buffer dst = be->alloc(src.size(), MemKind::device);
    be->host_task(copy, [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); });
    be->copy_async(dst.data(), src.data(), src.size(), copy);
    be->host_task(copy, [&] { copied = true; });
    be->host_task(comm, [] { throw std::runtime_error("unwinding"); });
    dst.reset();   // e.g. unwinding after an error: waits for the queued copy instead of letting it write freed memory
    EXPECT_TRUE(copied.load());
    // a task that frees a Buffer on the stream's own thread does not wait on itself
    auto owned = std::make_shared<Buffer>(be->alloc(64, MemKind::pinned_host));
    be->host_task(copy, [owned]() mutable { owned->reset(); });
    owned.reset();
    auto held = std::make_shared<Buffer>(be->alloc(64, MemKind::device));   // freed when the task is destroyed
    be->host_task(copy, [held] { std::this_thread::sleep_for(std::chrono::milliseconds(2)); });
    be->host_task(copy, [] {});
    held.reset();
    EXPECT_THROW(be->synchronize(nullptr), Error);   // the comm error, still there
    // a Buffer may outlive its backend
    Buffer late = be->alloc(64, MemKind::pinned_host);
    be.reset();
    late.reset();
}

TEST(BackendStreams, DestroyWithQueuedWorkDrains) {
    std::atomic<int> ran{0};
    std::vector<int32_t> src(1024, 9), dst(1024, 0);
    {
        auto be = make_cpu_backend(racy(100));
        Stream * copy = be->stream(StreamRole::copy);
        Stream * comm = be->stream(StreamRole::comm);
        for (int i = 0; i < 20; ++i) {
            be->host_task(comm, [&] { ++ran; });
            be->wait(copy, be->record(comm));
            be->host_task(copy, [&] { ++ran; });
            be->wait(comm, be->record(copy));
        }
        be->host_task(copy, [] { throw std::runtime_error("nobody synchronizes on this"); });
        be->copy_async(dst.data(), src.data(), src.size() * sizeof(int32_t), copy);
    }   // no synchronize: the destructor runs everything queued, logs the dropped error, and returns
    EXPECT_EQ(ran.load(), 40);
    EXPECT_EQ(dst, src);
}

}  // namespace
}  // namespace zt
