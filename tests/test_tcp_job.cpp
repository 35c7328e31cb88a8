// ztinfer jobs over the TCP communicator, launched like torchrun does (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
// per process, plain background processes, no mpirun):
//  - 2 and 4 ranks give the same records (token_ids, logprobs, finish_reason) as 1 rank and as mpirun, bit for bit;
//    3 ranks on every tier (none, cpu, nvme), and with device buffers staged through pinned memory
//    (ZT_TCP_FORCE_STAGING=1, the path of GPU ranks sharing a GPU), give the records of 1 rank;
//  - SIGTERM of one rank stops every rank cleanly (exit 143); SIGKILL of one rank mid-job ends every other rank non-zero within seconds, naming the dead rank;
//  - a wrong WORLD_SIZE on one rank is a clear error on every rank; "communicator": "tcp" without MASTER_ADDR says
//    to set it; "communicator": "tcp" under mpirun uses TCP (same records).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>


#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "job_runner.h"
#include "runtime/model/synthetic_model.h"
#include "test_support.h"

using json = nlohmann::json;
using namespace zt::test;

namespace {

// A small llama (2 layers, hidden 128) with the Llama 2 tokenizer of tests/data.
std::string tcp_model_dir() {
    static std::string dir;
    if (dir.empty()) {
        const std::string tok = make_temp_dir("tcp_tok");
        const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2";
        EXPECT_EQ(std::system(("xz -dc " + src + "/tokenizer.json.xz > " + tok + "/tokenizer.json && cp " + src +
                               "/tokenizer_config.json " + tok + "/").c_str()), 0);
        dir = make_temp_dir("tcp_model");
        zt::SynthOptions o;
        o.arch = "llama"; o.layers = 4; o.hidden = 128; o.heads = 4; o.kv_heads = 2; o.intermediate = 344;
        o.dtype = "bf16"; o.seed = 3; o.tokenizer_dir = tok; o.out_dir = dir;
        zt::synthesize_model(o);
    }
    return dir;
}

std::string write_requests(const std::string & dir, int n, int max_tokens) {
    std::ofstream in(dir + "/in.jsonl");
    const char * prompts[] = {"Once upon a time", "The capital of", "Hello", "1 2 3 4"};
    for (int i = 0; i < n; ++i)
        in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt", prompts[i % 4]}, {"max_tokens", max_tokens},
                   {"logprobs", true}}.dump()
           << "\n";
    return dir + "/in.jsonl";
}

// What must be bit-identical between runs.
json essence(const std::string & path) {
    json e = json::object();
    for (const auto & [id, r] : read_job_records(path))
        e[id] = r.contains("error") ? r["error"]["code"] : json{r["token_ids"], r.value("logprobs", json()),
                                                                r["finish_reason"]};
    return e;
}

TEST(TcpJob, TwoAndFourRanksGiveTheRecordsOfOneRankAndOfMpiBitForBit) {
    const std::string dir = make_temp_dir("tcp_job");
    const std::string in = write_requests(dir, 6, 12);
    const json ztk = {{"max_new_tokens", 12}};
    const JobRunResult one = run_job_command(job_command(0, write_job_config(dir, "one", tcp_model_dir(), in, ztk)));
    ASSERT_EQ(one.status, 0) << one.log;
    const json want = essence(dir + "/one.jsonl");
    ASSERT_EQ(want.size(), 6u);
    for (int world : {2, 4}) {
        const std::string name = "tcp" + std::to_string(world);
        auto ks = run_tcp_job(dir, write_job_config(dir, name, tcp_model_dir(), in, ztk), world, 120);
        for (int r = 0; r < world; ++r) ASSERT_EQ(ks[size_t(r)].status, 0) << "rank " << r << "\n" << ks[size_t(r)].log();
        EXPECT_NE(ks[0].log().find("communicator: TCP"), std::string::npos) << ks[0].log();
        EXPECT_EQ(essence(dir + "/" + name + ".jsonl"), want) << world << " TCP ranks";
    }
    if (kJobHaveMpi) {
        const JobRunResult mpi = run_job_command(job_command(2, write_job_config(dir, "mpi2", tcp_model_dir(), in, ztk)));
        ASSERT_EQ(mpi.status, 0) << mpi.log;
        EXPECT_EQ(essence(dir + "/mpi2.jsonl"), want) << "2 MPI ranks";
        // "communicator": "tcp" under mpirun: TCP between the ranks mpirun started
        json forced = ztk;
        forced["communicator"] = "tcp";
        const JobRunResult tcp = run_job_command(fmt::format("MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", free_tcp_port()) +
                                                 job_command(2, write_job_config(dir, "forced", tcp_model_dir(), in, forced)));
        ASSERT_EQ(tcp.status, 0) << tcp.log;
        EXPECT_NE(tcp.log.find("communicator: TCP"), std::string::npos) << tcp.log;
        EXPECT_EQ(essence(dir + "/forced.jsonl"), want) << "2 TCP ranks under mpirun";
    }
}

TEST(TcpJob, ThreeRanksOnEveryTierAndStagedGiveTheRecordsOfOneRank) {
    const std::string dir = make_temp_dir("tcp_tiers");
    const std::string in = write_requests(dir, 7, 10);
    const json ztk = {{"max_new_tokens", 10}};
    const JobRunResult one = run_job_command(job_command(0, write_job_config(dir, "one", tcp_model_dir(), in, ztk)));
    ASSERT_EQ(one.status, 0) << one.log;
    const json want = essence(dir + "/one.jsonl");
    ASSERT_EQ(want.size(), 7u);
    for (const std::string tier : {"none", "cpu", "nvme"}) {
        const std::string name = "tcp3-" + tier;
        const std::string cfg = write_job_config(dir, name, tcp_model_dir(), in, ztk, tier);
        if (tier == "nvme") {   // every rank's slice file in one folder
            json ds = json::parse(read_file(cfg));
            ds["zero_optimization"]["offload_param"]["nvme_path"] = dir + "/nvme";
            write_file(cfg, ds.dump(2));
        }
        auto ks = run_tcp_job(dir, cfg, 3, 120);
        for (int r = 0; r < 3; ++r) ASSERT_EQ(ks[size_t(r)].status, 0) << name << " rank " << r << "\n" << ks[size_t(r)].log();
        EXPECT_EQ(essence(dir + "/" + name + ".jsonl"), want) << name;
    }
    // the staged path GPU ranks sharing a GPU take (device buffers through pinned host memory), on CPU ranks
    setenv("ZT_TCP_FORCE_STAGING", "1", 1);
    auto ks = run_tcp_job(dir, write_job_config(dir, "tcp3-staged", tcp_model_dir(), in, ztk, "cpu"), 3, 120);
    unsetenv("ZT_TCP_FORCE_STAGING");
    for (int r = 0; r < 3; ++r) ASSERT_EQ(ks[size_t(r)].status, 0) << "staged rank " << r << "\n" << ks[size_t(r)].log();
    EXPECT_EQ(essence(dir + "/tcp3-staged.jsonl"), want) << "3 TCP ranks, staged";
}

TEST(TcpJob, TcpWithoutMasterAddrSaysToSetIt) {
    const std::string dir = make_temp_dir("tcp_job_addr");
    const std::string cfg = write_job_config(dir, "addr", tcp_model_dir(), write_requests(dir, 2, 4),
                                             {{"communicator", "tcp"}});
    const JobRunResult r = run_job_command("env -u MASTER_ADDR RANK=0 WORLD_SIZE=2 " + job_command(0, cfg));
    EXPECT_NE(r.status, 0) << r.log;
    EXPECT_NE(r.log.find("MASTER_ADDR is not set"), std::string::npos) << r.log;
}

TEST(TcpJob, KilledRankEndsEveryOtherRankWithinSecondsNamingIt) {
    const std::string dir = make_temp_dir("tcp_job_kill");
    const std::string cfg = write_job_config(dir, "kill", tcp_model_dir(), write_requests(dir, 9, 400),
                                             {{"max_new_tokens", 400}, {"collective_timeout_s", 60}});
    const int port = free_tcp_port(), world = 3;
    std::vector<TcpRank> ks;
    for (int r = 0; r < world; ++r) ks.push_back(start_tcp_rank(dir, "rank" + std::to_string(r), r, world, port, cfg));
    bool generating = false;
    for (int i = 0; i < 600 && !generating; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        generating = ks[1].log().find("requests to run on rank") != std::string::npos;
    }
    ASSERT_TRUE(generating) << ks[1].log();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ASSERT_EQ(kill(ks[1].pid, SIGKILL), 0);
    wait_ranks(ks, 30);
    for (int r : {0, 2}) {
        const TcpRank & k = ks[size_t(r)];
        EXPECT_NE(k.status, 0) << "rank " << r << "\n" << k.log();
        EXPECT_NE(k.status, -2) << "rank " << r << " still ran 30 s after rank 1 was killed";
        EXPECT_LT(k.seconds, 5.0) << "rank " << r << "\n" << k.log();
        EXPECT_NE(k.log().find("rank 1 disconnected (killed?)"), std::string::npos) << "rank " << r << "\n" << k.log();
    }
    read_job_records(dir + "/kill.jsonl");   // whatever was written is whole records
}

TEST(TcpJob, SigtermToOneRankStopsEveryRankCleanlyWith143) {
    const std::string dir = make_temp_dir("tcp_job_term");
    const std::string cfg = write_job_config(dir, "term", tcp_model_dir(), write_requests(dir, 6, 400),
                                             {{"max_new_tokens", 400}});
    const int port = free_tcp_port();
    std::vector<TcpRank> ks = {start_tcp_rank(dir, "rank0", 0, 2, port, cfg), start_tcp_rank(dir, "rank1", 1, 2, port, cfg)};
    bool generating = false;
    for (int i = 0; i < 600 && !generating; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        generating = ks[1].log().find("requests to run on rank") != std::string::npos;
    }
    ASSERT_TRUE(generating) << ks[1].log();
    ASSERT_EQ(kill(ks[1].pid, SIGTERM), 0);
    wait_ranks(ks, 30);
    for (const TcpRank & k : ks) {
        EXPECT_EQ(k.status, 143) << k.log();   // both stop at the same step; neither takes the other for dead
        EXPECT_EQ(k.log().find("disconnected"), std::string::npos) << k.log();
    }
}

TEST(TcpJob, WrongWorldSizeOnOneRankIsAClearErrorOnEveryRank) {
    const std::string dir = make_temp_dir("tcp_job_world");
    const std::string cfg = write_job_config(dir, "world", tcp_model_dir(), write_requests(dir, 2, 4));
    const int port = free_tcp_port();
    std::vector<TcpRank> ks = {start_tcp_rank(dir, "rank0", 0, 2, port, cfg), start_tcp_rank(dir, "rank1", 1, 3, port, cfg)};
    wait_ranks(ks, 60);
    for (const TcpRank & k : ks) {
        EXPECT_NE(k.status, 0) << k.log();
        EXPECT_NE(k.log().find("rank 1 was started with WORLD_SIZE=3 but rank 0 with WORLD_SIZE=2"), std::string::npos)
            << k.log();
    }
}

}  // namespace
