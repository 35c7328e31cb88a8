// Watchdog (watchdog.h): one Boost.Asio steady_timer per armed guard, run by an io_context on its own thread.
// The id -> timer map (under a mutex) is the truth: a guard that is gone from it never fires, even if its timer
// expired at the same moment the guard was destroyed.
#include "comm/watchdog.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "runtime/base/error.h"

namespace zt {

namespace asio = boost::asio;

struct Watchdog::Impl {
    struct Entry {
        explicit Entry(asio::io_context & io, std::string w) : timer(io), what(std::move(w)) {}
        asio::steady_timer timer;
        std::string what;
    };

    double timeout_s;
    Handler handler;
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{asio::make_work_guard(io)};
    std::mutex mu;
    std::unordered_map<uint64_t, std::shared_ptr<Entry>> armed;
    uint64_t next_id = 1;
    std::thread thread;

    Impl(double t, Handler h) : timeout_s(t), handler(std::move(h)) {
        thread = std::thread([this] { io.run(); });
    }

    uint64_t arm(std::string what) {
        auto e = std::make_shared<Entry>(io, std::move(what));
        std::lock_guard<std::mutex> lock(mu);
        uint64_t id = next_id++;
        armed.emplace(id, e);
        e->timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(timeout_s)));
        e->timer.async_wait([this, id, e](const boost::system::error_code & ec) {
            if (ec) return;   // cancelled: the guard was destroyed in time
            {
                std::lock_guard<std::mutex> lock(mu);
                if (armed.erase(id) == 0) return;   // disarmed just as it expired
            }
            handler(e->what, timeout_s);
        });
        return id;
    }

    void disarm(uint64_t id) {
        std::lock_guard<std::mutex> lock(mu);
        auto it = armed.find(id);
        if (it == armed.end()) return;
        it->second->timer.cancel();   // the pending wait holds the entry until its (aborted) handler has run
        armed.erase(it);
    }

    ~Impl() {
        {
            std::lock_guard<std::mutex> lock(mu);
            for (auto & [id, e] : armed) e->timer.cancel();
            armed.clear();
        }
        work.reset();
        io.stop();
        if (thread.joinable()) {
            if (thread.get_id() == std::this_thread::get_id()) thread.detach();   // destroyed from a handler
            else thread.join();
        }
    }
};

namespace {
void default_expire(const std::string & what, double seconds) {
    spdlog::error("[rank {}] collective '{}' has not completed after {} s: a peer rank probably died or hangs (check "
                  "the other ranks' logs); aborting this rank so the launcher stops the job",
                  error_rank(), what, seconds);
    spdlog::default_logger()->flush();
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(1);
}
}  // namespace

Watchdog::Watchdog(double timeout_s, Handler on_expire) : timeout_s_(timeout_s) {
    ZT_CHECK(timeout_s > 0, "watchdog timeout {} s must be positive: pass a collective timeout > 0", timeout_s);
    impl_ = std::make_unique<Impl>(timeout_s, on_expire ? std::move(on_expire) : Handler(default_expire));
}

Watchdog::~Watchdog() = default;

Watchdog::Guard Watchdog::arm(std::string what) { return Guard(this, impl_->arm(std::move(what))); }

Watchdog::Guard::Guard(Guard && o) noexcept : w_(o.w_), id_(o.id_) { o.w_ = nullptr; }

Watchdog::Guard::~Guard() {
    if (w_) w_->impl_->disarm(id_);
}

}  // namespace zt
