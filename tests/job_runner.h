// Helpers for tests that run the ztinfer binary (plain, under mpirun, or as TCP ranks started like torchrun does,
// on CPU ranks): the command line, running it and capturing its log, writing a ds.json, and reading the output
// records by custom_id.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace zt::test {

#ifdef ZT_MPIEXEC
constexpr bool kJobHaveMpi = true;
inline const char * job_mpiexec() { return ZT_MPIEXEC; }
#else
constexpr bool kJobHaveMpi = false;
inline const char * job_mpiexec() { return ""; }
#endif

struct JobRunResult {
    int status = -1;      // exit status (-1: killed by a signal)
    std::string log;      // stdout + stderr
    double seconds = 0;
};

inline void allow_mpirun_as_root_for_jobs() {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
}

// `ztinfer --config cfg` as np ranks under mpirun (np == 0: plain, without mpirun).
inline std::string job_command(int np, const std::string & cfg, const std::string & extra = "") {
    const std::string zt = std::string(ZT_BINARY) + " --config " + cfg + " " + extra;
    if (np == 0) return zt;
    return std::string(job_mpiexec()) + " --oversubscribe --bind-to none -np " + std::to_string(np) + " " + zt;
}

inline JobRunResult run_job_command(const std::string & cmd) {
    allow_mpirun_as_root_for_jobs();
    const auto t0 = std::chrono::steady_clock::now();
    JobRunResult r;
    FILE * p = ::popen((cmd + " 2>&1").c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.log.append(buf, n);
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

// Writes <dir>/<name>.json: CPU ranks, weights streamed from pinned host memory (threshold small so tiny models
// stream), output <dir>/<name>.jsonl unless `ztinfer` sets it; `ztinfer` keys override the defaults.
inline std::string write_job_config(const std::string & dir, const std::string & name, const std::string & model,
                                    const std::string & input, const nlohmann::json & ztinfer = nlohmann::json::object(),
                                    const std::string & offload = "cpu") {
    nlohmann::json ds;
    ds["zero_optimization"] = {{"stage", 3}, {"stage3_param_persistence_threshold", 1000},
                               {"offload_param", {{"device", offload}}}};
    nlohmann::json z = {{"model", model}, {"input", input}, {"output", dir + "/" + name + ".jsonl"},
                        {"device", "cpu"}, {"batch_size", 2}, {"threads", 1}, {"resume", false},
                        {"max_new_tokens", 8}, {"collective_timeout_s", 30}};
    for (auto & [k, v] : ztinfer.items()) z[k] = v;
    ds["ztinfer"] = z;
    const std::string path = dir + "/" + name + ".json";
    std::ofstream(path) << ds.dump(2);
    return path;
}

// custom_id -> the record for results, "line N" -> the record for error records (a duplicate custom_id's error
// names the custom_id of the earlier line); a key written twice fails the test.
inline std::map<std::string, nlohmann::json> read_job_records(const std::string & path) {
    std::map<std::string, nlohmann::json> recs;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const nlohmann::json j = nlohmann::json::parse(line);
        const std::string id = j.contains("error") ? "line " + std::to_string(j["line"].get<int64_t>())
                                                   : j["custom_id"].get<std::string>();
        EXPECT_EQ(recs.count(id), 0u) << "custom_id " << id << " written twice in " << path;
        recs[id] = j;
    }
    return recs;
}

// --- TCP ranks, no mpirun ---

struct TcpRank {
    pid_t pid = -1;
    std::string log_path;
    int status = -2;   // exit code; -1: a signal; -2: still running
    double seconds = 0;
    std::string log() const {
        std::ifstream f(log_path);
        return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
};

// `RANK=r WORLD_SIZE=world MASTER_ADDR=127.0.0.1 MASTER_PORT=port ztinfer --config cfg &`, its log in
// <dir>/<tag>.log.
inline TcpRank start_tcp_rank(const std::string & dir, const std::string & tag, int r, int world, int port, const std::string & cfg) {
    TcpRank k;
    k.log_path = dir + "/" + tag + ".log";
    const std::string cmd = fmt::format("RANK={} WORLD_SIZE={} LOCAL_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} "
                                        "ZT_CONNECT_TIMEOUT_S=30 exec {} --config {} >{} 2>&1", r, world, r, port,
                                        ZT_BINARY, cfg, k.log_path);
    k.pid = fork();
    if (k.pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    return k;
}

inline void wait_ranks(std::vector<TcpRank> & ks, double limit) {
    const auto t0 = std::chrono::steady_clock::now();
    auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    for (bool running = true; running && secs() < limit;) {
        running = false;
        for (TcpRank & k : ks) {
            int st = 0;
            if (k.status != -2) continue;
            if (waitpid(k.pid, &st, WNOHANG) == k.pid) { k.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1; k.seconds = secs(); }
            else running = true;
        }
        if (running) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (TcpRank & k : ks)
        if (k.status == -2) { kill(k.pid, SIGKILL); waitpid(k.pid, nullptr, 0); }
}

inline std::vector<TcpRank> run_tcp_job(const std::string & dir, const std::string & cfg, int world, double limit) {
    const int port = free_tcp_port();   // test_support.h
    std::vector<TcpRank> ks;
    for (int r = 0; r < world; ++r) ks.push_back(start_tcp_rank(dir, "rank" + std::to_string(r), r, world, port, cfg));
    wait_ranks(ks, limit);
    return ks;
}

}  // namespace zt::test

#define REQUIRE_JOB_MPI() \
    if (!zt::test::kJobHaveMpi) GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev and openmpi-bin): multi-rank tests skipped"
