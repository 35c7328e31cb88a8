// Watchdog: a host-side timer around every collective. NCCL (and MPI over shared memory) only hang when a peer
// dies; the watchdog turns that hang into a clear error and a non-zero exit of this rank, which makes the
// launcher (mpirun, srun) take the other ranks down too. Timers run on a Boost.Asio io_context on its own thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace zt {

class Watchdog {
public:
    // on_expire(what, seconds) runs on the watchdog's thread when an armed guard outlives timeout_s. The default
    // handler logs an error naming the collective, the rank and what to do, flushes the logs and calls _exit(1).
    using Handler = std::function<void(const std::string & what, double seconds)>;
    explicit Watchdog(double timeout_s, Handler on_expire = {});
    ~Watchdog();
    Watchdog(const Watchdog &) = delete;
    Watchdog & operator=(const Watchdog &) = delete;

    // RAII: armed while alive. `what` names the collective ("all_gather of layer 3 (1.5 MiB)"). A guard must not
    // outlive its Watchdog. Arming and disarming cost a few microseconds (one timer each).
    class Guard {
    public:
        Guard(Guard && o) noexcept;
        ~Guard();
    private:
        friend class Watchdog;
        Guard(Watchdog * w, uint64_t id) : w_(w), id_(id) {}
        Watchdog * w_ = nullptr;
        uint64_t id_ = 0;
    };
    Guard arm(std::string what);
    double timeout_s() const { return timeout_s_; }

    struct Impl;
private:
    double timeout_s_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace zt
