// The TCP communicator (comm/communicator_tcp.cpp) between forked processes on 127.0.0.1:
//  - N = 1..4 ranks: all_gather (host and on the comm stream, in place or not), all_reduce_max, gather_strings
//    (empty, small, 3 MiB), broadcast from every root, barrier give the exact expected bytes;
//  - a rank killed with SIGKILL (in a collective or between collectives, rank 0 or not) ends every other rank
//    within a few seconds with an error naming the dead rank;
//  - a wrong WORLD_SIZE on one rank is a clear error on every rank; a second rank 0 on the same port is refused
//    ("in use"), a rank of another job (ZT_JOB_ID) is refused, a latecomer to a running job is refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>


#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "test_support.h"

using namespace zt::test;

namespace {

struct Rank {
    pid_t pid = -1;
    std::string log_path;
    int status = -2;       // exit code; -1: killed by a signal; -2: still running when the test gave up
    double seconds = 0;    // from wait_all's start until it exited
    std::string log() const { return read_file(log_path); }
};

// Forks a process that builds a CPU backend and a TCP communicator from `opt`, runs body (its return value is the
// exit code; a zt::Error is logged and exits 3), its stdout and stderr going to <dir>/rank<tag>.log.
Rank start_rank(const std::string & dir, const std::string & tag, zt::TcpOptions opt,
                const std::function<int(zt::Communicator &, zt::Backend &)> & body) {
    Rank r;
    r.log_path = dir + "/rank" + tag + ".log";
    r.pid = fork();
    if (r.pid == 0) {
        FILE * f = std::freopen(r.log_path.c_str(), "w", stdout);
        if (!f || dup2(fileno(stdout), 2) < 0) _exit(99);
        int code = 0;
        try {
            zt::set_error_rank(opt.rank);
            auto be = zt::make_cpu_backend(1);
            auto comm = zt::make_tcp_communicator(*be, opt);
            code = body(*comm, *be);
        } catch (const std::exception & e) {
            std::printf("error: %s\n", e.what());
            code = 3;
        }
        std::fflush(nullptr);
        _exit(code);
    }
    return r;
}

// Waits up to `limit` s for every rank (SIGKILL after that).
void wait_all(std::vector<Rank> & ranks, double limit) {
    const auto t0 = std::chrono::steady_clock::now();
    auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    for (;;) {
        bool running = false;
        for (Rank & r : ranks) {
            if (r.status != -2) continue;
            int st = 0;
            if (waitpid(r.pid, &st, WNOHANG) == r.pid) {
                r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                r.seconds = secs();
            } else {
                running = true;
            }
        }
        if (!running) return;
        if (secs() > limit) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (Rank & r : ranks)
        if (r.status == -2) { kill(r.pid, SIGKILL); waitpid(r.pid, nullptr, 0); r.seconds = secs(); }
}

zt::TcpOptions options(int rank, int world, int port) {
    zt::TcpOptions o;
    o.master_addr = "127.0.0.1";
    o.master_port = port;
    o.rank = rank;
    o.world = world;
    o.collective_timeout_s = 60;
    o.connect_timeout_s = 20;
    return o;
}

#define CHECK_OR(cond, code, ...) \
    do { if (!(cond)) { std::printf(__VA_ARGS__); std::printf("\n"); return code; } } while (0)

// Every collective, checked byte for byte; returns 0 when all are right.
int every_collective(zt::Communicator & c, zt::Backend & be) {
    const int R = c.rank(), N = c.world_size();
    auto byte = [](int r, size_t i) { return char((r * 131 + int(i) * 7 + 1) & 0xff); };
    for (size_t bytes : {size_t(1), size_t(1000), size_t(3) << 20}) {
        std::vector<char> slice(bytes), full(bytes * size_t(N)), inplace(bytes * size_t(N), 0);
        for (size_t i = 0; i < bytes; ++i) slice[i] = inplace[size_t(R) * bytes + i] = byte(R, i);
        c.all_gather(slice.data(), full.data(), bytes, nullptr);
        zt::Stream * s = be.stream(zt::StreamRole::comm);
        c.all_gather(inplace.data() + size_t(R) * bytes, inplace.data(), bytes, s);
        be.synchronize(s);
        for (int r = 0; r < N; ++r)
            for (size_t i = 0; i < bytes; ++i) {
                CHECK_OR(full[size_t(r) * bytes + i] == byte(r, i), 10, "all_gather %zu: rank %d byte %zu", bytes, r, i);
                CHECK_OR(inplace[size_t(r) * bytes + i] == byte(r, i), 11, "in place %zu: rank %d byte %zu", bytes, r, i);
            }
    }
    std::vector<int> flags = {R, -R, R == N - 1 ? 7 : 0};
    c.all_reduce_max(flags.data(), flags.size(), be.stream(zt::StreamRole::compute));
    be.synchronize(nullptr);
    CHECK_OR(flags[0] == N - 1 && flags[1] == 0 && flags[2] == (N > 0 ? 7 : 0), 12, "all_reduce_max %d %d %d",
             flags[0], flags[1], flags[2]);
    for (size_t len : {size_t(0), size_t(5), size_t(3) << 20}) {
        const std::string mine(len == 5 ? size_t(R) * 5 : len, char('a' + R));
        auto all = c.gather_strings(mine);
        if (R != 0) { CHECK_OR(all.empty(), 13, "gather_strings gave rank %d %zu strings", R, all.size()); continue; }
        CHECK_OR(int(all.size()) == N, 14, "gather_strings: %zu strings", all.size());
        for (int r = 0; r < N; ++r)
            CHECK_OR(all[size_t(r)] == std::string(len == 5 ? size_t(r) * 5 : len, char('a' + r)), 15,
                     "gather_strings: rank %d's string", r);
    }
    for (int root = 0; root < N; ++root) {
        std::vector<int> v(100000, R == root ? root + 1000 : -1);
        c.broadcast(v.data(), v.size() * sizeof(int), root);
        for (int x : v) CHECK_OR(x == root + 1000, 16, "broadcast from %d gave %d", root, x);
    }
    c.barrier();
    return 0;
}

class TcpCollectives : public ::testing::TestWithParam<int> {};

TEST_P(TcpCollectives, EveryCollectiveGivesTheExactBytes) {
    const int N = GetParam(), port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_coll");
    std::vector<Rank> ranks;
    for (int r = 0; r < N; ++r) ranks.push_back(start_rank(dir, std::to_string(r), options(r, N, port), every_collective));
    wait_all(ranks, 60);
    for (int r = 0; r < N; ++r) EXPECT_EQ(ranks[size_t(r)].status, 0) << "rank " << r << ":\n" << ranks[size_t(r)].log();
}

INSTANTIATE_TEST_SUITE_P(Ranks, TcpCollectives, ::testing::Values(1, 2, 3, 4));

// Rank `victim` SIGKILLs itself after one barrier; the others then wait in a barrier (in_collective) or sleep
// 30 s first (between collectives). Every other rank must exit non-zero within 5 s, naming the victim.
void expect_kill_noticed(int victim, bool in_collective) {
    const int N = 3, port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_kill");
    std::vector<Rank> ranks;
    for (int r = 0; r < N; ++r)
        ranks.push_back(start_rank(dir, std::to_string(r), options(r, N, port), [&](zt::Communicator & c, zt::Backend &) {
            c.barrier();
            if (c.rank() == victim) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); raise(SIGKILL); }
            if (!in_collective) std::this_thread::sleep_for(std::chrono::seconds(30));
            c.barrier();
            return 0;
        }));
    wait_all(ranks, 10);
    EXPECT_EQ(ranks[size_t(victim)].status, -1);
    for (int r = 0; r < N; ++r) {
        if (r == victim) continue;
        const Rank & k = ranks[size_t(r)];
        EXPECT_EQ(k.status, 1) << "rank " << r << ":\n" << k.log();
        EXPECT_LT(k.seconds, 5.0) << "rank " << r;
        EXPECT_NE(k.log().find(fmt::format("rank {} disconnected (killed?)", victim)), std::string::npos)
            << "rank " << r << ":\n" << k.log();
    }
}

TEST(TcpCommunicator, KilledRankInACollectiveStopsEveryRankNamingIt) { expect_kill_noticed(2, true); }
TEST(TcpCommunicator, KilledRankBetweenCollectivesStopsEveryRankAtOnce) { expect_kill_noticed(1, false); }
TEST(TcpCommunicator, KilledRankZeroStopsEveryRank) { expect_kill_noticed(0, true); }

TEST(TcpCommunicator, AbortOnOneRankStopsEveryRank) {
    const int N = 3, port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_abort");
    std::vector<Rank> ranks;
    for (int r = 0; r < N; ++r)
        ranks.push_back(start_rank(dir, std::to_string(r), options(r, N, port), [](zt::Communicator & c, zt::Backend &) {
            if (c.rank() == 1) c.abort(5);
            c.barrier();
            return 0;
        }));
    wait_all(ranks, 10);
    EXPECT_EQ(ranks[1].status, 5) << ranks[1].log();
    for (int r : {0, 2}) {
        EXPECT_EQ(ranks[size_t(r)].status, 1) << ranks[size_t(r)].log();
        EXPECT_NE(ranks[size_t(r)].log().find("rank 1 failed"), std::string::npos) << ranks[size_t(r)].log();
    }
}

TEST(TcpCommunicator, WrongWorldSizeOnOneRankIsAClearErrorOnEveryRank) {
    const int N = 4, port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_world");
    std::vector<Rank> ranks;
    for (int r = 0; r < N; ++r)
        ranks.push_back(start_rank(dir, std::to_string(r), options(r, r == 2 ? 3 : N, port),
                                   [](zt::Communicator & c, zt::Backend &) { c.barrier(); return 0; }));
    wait_all(ranks, 30);
    for (int r = 0; r < N; ++r) {
        EXPECT_EQ(ranks[size_t(r)].status, 3) << "rank " << r << ":\n" << ranks[size_t(r)].log();
        EXPECT_NE(ranks[size_t(r)].log().find("rank 2 was started with WORLD_SIZE=3 but rank 0 with WORLD_SIZE=4"),
                  std::string::npos) << "rank " << r << ":\n" << ranks[size_t(r)].log();
        EXPECT_LT(ranks[size_t(r)].seconds, 10.0) << "rank " << r;
    }
}

TEST(TcpCommunicator, SecondJobOnTheSamePortIsRefusedAndTheFirstRunsOn) {
    const int port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_port");
    auto hold = [](zt::Communicator & c, zt::Backend &) {
        c.barrier();
        std::this_thread::sleep_for(std::chrono::seconds(3));
        std::vector<int> x(1000, c.rank());
        c.all_reduce_max(x.data(), x.size(), nullptr);
        c.barrier();
        return x[999] == 1 ? 0 : 4;
    };
    std::vector<Rank> job = {start_rank(dir, "a0", options(0, 2, port), hold),
                             start_rank(dir, "a1", options(1, 2, port), hold)};
    std::this_thread::sleep_for(std::chrono::seconds(1));   // job A is connected and waits
    std::vector<Rank> second = {start_rank(dir, "b0", options(0, 2, port), hold),
                                start_rank(dir, "b1", options(1, 2, port), hold)};
    wait_all(second, 10);
    EXPECT_EQ(second[0].status, 3) << second[0].log();
    EXPECT_NE(second[0].log().find(fmt::format("cannot listen on MASTER_PORT={}: the port is in use", port)),
              std::string::npos) << second[0].log();
    EXPECT_EQ(second[1].status, 3) << second[1].log();
    EXPECT_NE(second[1].log().find("already has all 2 ranks connected: another job uses this port"),
              std::string::npos) << second[1].log();
    wait_all(job, 20);
    for (const Rank & r : job) EXPECT_EQ(r.status, 0) << r.log();
}

TEST(TcpCommunicator, RankOfAnotherJobIsRefusedDuringSetUp) {
    const int port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_jobid");
    auto one = [](zt::Communicator & c, zt::Backend &) { c.barrier(); return 0; };
    zt::TcpOptions mine0 = options(0, 2, port), mine1 = options(1, 2, port), other = options(1, 2, port);
    mine0.job_id = mine1.job_id = "job-a";
    other.job_id = "job-b";
    std::vector<Rank> job = {start_rank(dir, "a0", mine0, one)};
    std::vector<Rank> intruder = {start_rank(dir, "b1", other, one)};
    wait_all(intruder, 10);
    EXPECT_EQ(intruder[0].status, 3) << intruder[0].log();
    EXPECT_NE(intruder[0].log().find("belongs to another job"), std::string::npos) << intruder[0].log();
    job.push_back(start_rank(dir, "a1", mine1, one));
    wait_all(job, 20);
    for (const Rank & r : job) EXPECT_EQ(r.status, 0) << r.log();
}

TEST(TcpCommunicator, MissingRankTimesOutNamingIt) {
    const int port = free_tcp_port();
    const std::string dir = make_temp_dir("tcp_missing");
    zt::TcpOptions o0 = options(0, 3, port), o1 = options(1, 3, port);
    o0.connect_timeout_s = o1.connect_timeout_s = 1.5;
    auto one = [](zt::Communicator & c, zt::Backend &) { c.barrier(); return 0; };
    std::vector<Rank> ranks = {start_rank(dir, "0", o0, one), start_rank(dir, "1", o1, one)};
    wait_all(ranks, 15);
    for (const Rank & r : ranks) {
        EXPECT_EQ(r.status, 3) << r.log();
        EXPECT_NE(r.log().find("rank(s) 2 did not connect to rank 0"), std::string::npos) << r.log();
    }
}

}  // namespace
