// Watchdog: a guard that outlives its timeout calls the handler with its name; one destroyed in time does not;
// arming is cheap enough for every layer of every step.
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/watchdog.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "test_support.h"

namespace {
struct Recorder {
    std::mutex m;
    std::vector<std::pair<std::string, double>> fired;
    zt::Watchdog::Handler handler() {
        return [this](const std::string & what, double s) {
            std::lock_guard<std::mutex> l(m);
            fired.emplace_back(what, s);
        };
    }
    size_t count() {
        std::lock_guard<std::mutex> l(m);
        return fired.size();
    }
};
}  // namespace

TEST(Watchdog, GuardThatOutlivesTheTimeoutFires) {
    Recorder rec;
    zt::Watchdog wd(0.2, rec.handler());
    EXPECT_DOUBLE_EQ(wd.timeout_s(), 0.2);
    auto t0 = std::chrono::steady_clock::now();
    {
        auto g = wd.arm("all_gather of layer 3 (1.5 MiB)");
        while (rec.count() == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(rec.count(), 1u);
    EXPECT_EQ(rec.fired[0].first, "all_gather of layer 3 (1.5 MiB)");
    EXPECT_DOUBLE_EQ(rec.fired[0].second, 0.2);
    EXPECT_GE(waited, 0.19);
    EXPECT_LT(waited, 2.0);
}

TEST(Watchdog, GuardDestroyedInTimeDoesNotFire) {
    Recorder rec;
    zt::Watchdog wd(0.2, rec.handler());
    {
        auto g = wd.arm("quick");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto moved_from = wd.arm("moved");
    { auto g2 = std::move(moved_from); }   // the moved-to guard disarms; the moved-from one is empty
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    EXPECT_EQ(rec.count(), 0u);
}

TEST(Watchdog, OnlyTheSlowGuardFires) {
    Recorder rec;
    zt::Watchdog wd(0.2, rec.handler());
    auto slow = wd.arm("slow one");
    for (int i = 0; i < 20; ++i) { auto g = wd.arm("fast " + std::to_string(i)); }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ASSERT_EQ(rec.count(), 1u);
    EXPECT_EQ(rec.fired[0].first, "slow one");
}

TEST(Watchdog, ManyShortGuardsAreCheap) {
    Recorder rec;
    zt::Watchdog wd(5, rec.handler());
    const int n = 20000;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) { auto g = wd.arm("layer step"); }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("watchdog: %d arm/disarm in %.3f s (%.2f us each)\n", n, s, s / n * 1e6);
    EXPECT_LT(s / n, 100e-6) << "arming a guard must cost well under 100 us";
    EXPECT_EQ(rec.count(), 0u);
}

TEST(Watchdog, ConcurrentGuardsFromManyThreads) {
    Recorder rec;
    zt::Watchdog wd(5, rec.handler());
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&] { for (int i = 0; i < 2000; ++i) { auto g = wd.arm("t"); } });
    for (auto & t : ts) t.join();
    EXPECT_EQ(rec.count(), 0u);
}

TEST(Watchdog, DestroyedPromptlyWithTimersPending) {
    Recorder rec;
    auto t0 = std::chrono::steady_clock::now();
    auto wd = std::make_unique<zt::Watchdog>(30, rec.handler());
    for (int i = 0; i < 100; ++i) { auto g = wd->arm("pending"); }   // cancelled waits still queued
    auto g = std::make_unique<zt::Watchdog::Guard>(wd->arm("armed"));
    g.reset();   // guards must end before their watchdog
    wd.reset();  // stops and joins without waiting for the 30 s timers
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
    EXPECT_EQ(rec.count(), 0u);
}

TEST(Watchdog, BadTimeoutIsAnError) {
    EXPECT_THROW(zt::Watchdog(0), zt::Error);
    EXPECT_THROW(zt::Watchdog(-1), zt::Error);
}

TEST(Watchdog, DefaultHandlerExitsWithAClearMessage) {
    // the default handler logs and _exit(1)s: run it in a death test
    EXPECT_EXIT(
        {
            zt::log_init(0);   // the rank's logger writes to stderr (spdlog's own default is stdout)
            zt::Watchdog wd(0.1);
            auto g = wd.arm("barrier over 4 ranks");
            std::this_thread::sleep_for(std::chrono::seconds(5));
        },
        testing::ExitedWithCode(1), "collective 'barrier over 4 ranks' has not completed after 0.1 s");
}
