// Weight streaming end to end, through the ztinfer binary under mpirun (CPU ranks, MPI communicator):
//  - for the demo model and every HF fixture model, -np 1..4 x offload none/cpu/nvme x overlap on/off give
//    bit-identical token_ids and logprobs (and the fixtures' greedy tokens equal HF transformers' own);
//  - race-hunting delays in the copy/comm threads change nothing;
//  - ranks that run out of work early keep stepping and nobody hangs; every input line is answered once;
//  - kill -9 of one rank ends every rank with an error within 60 s; a truncated NVMe file is a clear error;
//  - with ztinfer.nvme_reuse false, NVMe slice files have no name while the job runs and nothing is left in
//    nvme_path after kill -9 of the job; a job of another model started on the same nvme_path while one runs
//    changes neither job's results;
//  - with nvme_reuse (the default), a rerun of an nvme job reuses every rank's slice file (metrics.json says so
//    per rank) and writes byte-identical records;
//  - a rank's host memory for weights is about 1/N of the model plus the ring;
//  - --trace writes a Chrome trace with fetch/all-gather/compute spans of every rank.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <array>
#include <map>
#include <set>
#include <regex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/model/synthetic_model.h"
#include "job_runner.h"
#include "nvme_slices.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt::test;

namespace {

// A job running in the background under mpirun, its output going to <dir>/log.txt.
struct BackgroundJob {
    pid_t launcher = -1;
    std::string log_path;

    BackgroundJob(const std::string & cmd, const std::string & dir) : log_path(dir + "/log.txt") {
        allow_mpirun_as_root_for_jobs();
        launcher = fork();
        if (launcher == 0) {
            const std::string sh = cmd + " >" + log_path + " 2>&1";
            execl("/bin/sh", "sh", "-c", sh.c_str(), nullptr);
            _exit(127);
        }
    }
    std::string log() const { return read_file(log_path); }
    // Polls (every 100 ms, up to 60 s) until every rank logged that it is about to generate.
    bool wait_until_generating() const {
        for (int i = 0; i < 600; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (log().find("requests to run on rank") != std::string::npos) return true;
        }
        return false;
    }
    // Waits up to `limit` s for mpirun to exit (killing it after that); returns whether it exited by itself,
    // with its wait status and the seconds it took.
    bool wait_exit(double limit, int & status, double & seconds) {
        const auto t0 = std::chrono::steady_clock::now();
        bool exited = false;
        while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < limit) {
            if (waitpid(launcher, &status, WNOHANG) == launcher) { exited = true; break; }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!exited) { kill(launcher, SIGKILL); waitpid(launcher, &status, 0); }
        return exited;
    }
};

// Requests that run long enough to interrupt: n prompts of max_tokens tokens.
std::string write_long_requests(const std::string & dir, int n, int max_tokens) {
    std::ofstream in(dir + "/in.jsonl");
    for (int i = 0; i < n; ++i)
        in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt", "Once upon a time"}, {"max_tokens", max_tokens}}.dump() << "\n";
    return dir + "/in.jsonl";
}

struct Streaming {
    std::string offload = "none";   // none | cpu | nvme
    bool overlap = true;
    json extra = json::object();    // more "ztinfer" keys
    int64_t threshold = 1000;       // stage3_param_persistence_threshold: small, so the tiny models do stream
};

// Writes <dir>/<name>.json for `model` and the prompts file; returns its path.
std::string write_config(const std::string & dir, const std::string & name, const std::string & model,
                         const std::string & input, const Streaming & s, int64_t max_new_tokens = 8) {
    json ds;
    ds["zero_optimization"] = {{"stage", 3}, {"stage3_param_persistence_threshold", s.threshold},
                               {"offload_param", {{"device", s.offload}, {"nvme_path", dir + "/nvme-" + name},
                                                  {"buffer_count", 3}}}};
    ds["aio"] = {{"block_size", 8192}, {"queue_depth", 4}};
    json z = {{"model", model}, {"input", input}, {"output", dir + "/" + name + ".jsonl"}, {"device", "cpu"},
              {"batch_size", 2}, {"threads", 1}, {"resume", false}, {"max_new_tokens", max_new_tokens},
              {"overlap", s.overlap}, {"prefetch_depth", 2}, {"collective_timeout_s", 30}};
    for (auto & [k, v] : s.extra.items()) z[k] = v;
    ds["ztinfer"] = z;
    const std::string path = dir + "/" + name + ".json";
    std::ofstream(path) << ds.dump(2);
    return path;
}

// custom_id -> the record (results and error records), checking that no custom_id appears twice.
std::map<std::string, json> read_records(const std::string & path) {
    std::map<std::string, json> recs;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const json j = json::parse(line);
        const std::string id = j["custom_id"].is_string() ? j["custom_id"].get<std::string>()
                                                           : "line " + std::to_string(j["line"].get<int64_t>());
        EXPECT_EQ(recs.count(id), 0u) << "custom_id " << id << " written twice in " << path;
        recs[id] = j;
    }
    return recs;
}

// What must be bit-identical between runs: token_ids and logprobs (and errors, by code).
json essence(const std::map<std::string, json> & recs) {
    json e = json::object();
    for (const auto & [id, r] : recs) {
        if (r.contains("error")) e[id] = r["error"]["code"];
        else e[id] = {r["token_ids"], r.value("logprobs", json()), r["finish_reason"]};
    }
    return e;
}

std::string demo_tokenizer_dir() {
    static std::string dir;
    if (dir.empty()) {
        dir = make_temp_dir("tok");
        const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2";
        EXPECT_EQ(std::system(("xz -dc " + src + "/tokenizer.json.xz > " + dir + "/tokenizer.json && cp " + src +
                               "/tokenizer_config.json " + dir + "/").c_str()), 0);
    }
    return dir;
}

// The demo model of examples/demo.sh (llama, 4 layers, hidden 256, GQA 8/4, bf16, Llama 2 tokenizer).
std::string demo_model_dir() {
    static std::string dir;
    if (dir.empty()) {
        dir = make_temp_dir("demo_model");
        zt::SynthOptions o;
        o.arch = "llama"; o.layers = 4; o.hidden = 256; o.heads = 8; o.kv_heads = 4; o.intermediate = 688;
        o.dtype = "bf16"; o.seed = 1; o.tokenizer_dir = demo_tokenizer_dir(); o.out_dir = dir;
        zt::synthesize_model(o);
    }
    return dir;
}

// Runs the reference (plain ztinfer: one rank, offload none, overlap on) and then every rank count x tier x
// overlap under mpirun, expecting the same essence from each.
void expect_matrix_identical(const std::string & tag, const std::string & model, const std::string & input,
                             int64_t max_new_tokens, json * reference_out = nullptr) {
    const std::string dir = make_temp_dir("matrix_" + tag);
    const JobRunResult ref = run_job_command(job_command(0, write_config(dir, "ref", model, input, {}, max_new_tokens)));
    ASSERT_EQ(ref.status, 0) << ref.log;
    const json want = essence(read_records(dir + "/ref.jsonl"));
    ASSERT_FALSE(want.empty());
    if (reference_out) *reference_out = want;
    for (int np = 1; np <= 4; ++np)
        for (const char * tier : {"none", "cpu", "nvme"})
            for (bool overlap : {true, false}) {
                Streaming s;
                s.offload = tier;
                s.overlap = overlap;
                const std::string name = fmt::format("np{}-{}-{}", np, tier, overlap ? "overlap" : "sync");
                const JobRunResult r = run_job_command(job_command(np, write_config(dir, name, model, input, s, max_new_tokens)));
                ASSERT_EQ(r.status, 0) << name << "\n" << r.log;
                EXPECT_EQ(essence(read_records(dir + "/" + name + ".jsonl")), want) << name << " differs from the "
                    "one-rank resident reference";
            }
    fs::remove_all(dir);
}

#define REQUIRE_MPI() \
    if (!kJobHaveMpi) GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev and openmpi-bin): multi-rank tests skipped"

}  // namespace

TEST(Streaming, DemoModelIsBitIdenticalAcrossRanksTiersAndOverlap) {
    REQUIRE_MPI();
    // examples/prompts.jsonl: 7 valid prompts of different lengths and one invalid line (an error record)
    json want;
    expect_matrix_identical("demo", demo_model_dir(), std::string(ZT_SOURCE_DIR) + "/examples/prompts.jsonl", 8, &want);
    EXPECT_EQ(want.size(), 8u) << want.dump();
}

class StreamingHf : public ::testing::TestWithParam<const char *> {};

TEST_P(StreamingHf, FixtureIsBitIdenticalAcrossRanksTiersAndOverlapAndMatchesHf) {
    REQUIRE_MPI();
    const std::string model = std::string(ZT_TEST_DATA) + "/hf/" + GetParam();
    const json ref = json::parse(read_file(model + "/reference.json"));
    // the fixture's prompts (as ids; these models have no tokenizer) with logprobs, plus shorter variants so
    // that requests end at different steps on different ranks
    const std::string dir = make_temp_dir("hf_in");
    std::ofstream in(dir + "/in.jsonl");
    const auto & prompts = ref["prompts"];
    for (size_t i = 0; i < prompts.size(); ++i)
        in << json{{"custom_id", "p" + std::to_string(i)}, {"prompt_token_ids", prompts[i]}, {"max_tokens", 16},
                   {"logprobs", true}}.dump() << "\n";
    for (size_t i = 0; i < prompts.size(); ++i)
        in << json{{"custom_id", "short" + std::to_string(i)}, {"prompt_token_ids", prompts[i]},
                   {"max_tokens", 1 + 3 * int(i)}, {"logprobs", true}}.dump() << "\n";
    in.close();
    json want;
    expect_matrix_identical(GetParam(), model, dir + "/in.jsonl", 16, &want);
    // and the resident one-rank run is HF transformers' greedy continuation
    for (size_t i = 0; i < prompts.size(); ++i)
        EXPECT_EQ(want["p" + std::to_string(i)][0], ref["greedy"][i]) << "prompt " << i << " vs HF";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamingHf,
                         ::testing::Values("llama-fp32", "llama-bf16", "mistral-fp32", "mistral-bf16", "qwen2-fp32",
                                           "qwen2-bf16", "qwen3-fp32", "qwen3-bf16"),
                         [](const auto & info) { std::string n = info.param; std::replace(n.begin(), n.end(), '-', '_'); return n; });

TEST(Streaming, RaceHuntingDelaysChangeNothing) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("race");
    const std::string model = demo_model_dir(), input = std::string(ZT_SOURCE_DIR) + "/examples/prompts.jsonl";
    const JobRunResult ref = run_job_command(job_command(0, write_config(dir, "ref", model, input, {}, 6)));
    ASSERT_EQ(ref.status, 0) << ref.log;
    const json want = essence(read_records(dir + "/ref.jsonl"));
    for (const char * tier : {"cpu", "nvme"})
        for (int np : {2, 3}) {
            Streaming s;
            s.offload = tier;
            s.extra = {{"test_race_delay_us", 400}, {"prefetch_depth", 3}};
            const std::string name = fmt::format("race-np{}-{}", np, tier);
            const JobRunResult r = run_job_command(job_command(np, write_config(dir, name, model, input, s, 6)));
            ASSERT_EQ(r.status, 0) << r.log;
            EXPECT_EQ(essence(read_records(dir + "/" + name + ".jsonl")), want) << name;
        }
    fs::remove_all(dir);
}

TEST(Streaming, RanksThatFinishEarlyKeepSteppingAndNobodyHangs) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("early");
    // request k runs on rank k % 3: rank 0 gets 1 token, rank 1 gets 30, rank 2 gets an invalid line's neighbour
    std::ofstream(dir + "/in.jsonl") << R"({"custom_id": "a", "prompt": "Hello", "max_tokens": 1})" "\n"
                                     << R"({"custom_id": "b", "prompt": "The long one", "max_tokens": 30})" "\n"
                                     << R"({"custom_id": "c", "prompt": "Mid", "max_tokens": 5})" "\n"
                                     << R"({"custom_id": "d", "prompt": "", "max_tokens": 5})" "\n";
    Streaming s;
    s.offload = "cpu";
    const JobRunResult r = run_job_command(job_command(3, write_config(dir, "early", demo_model_dir(), dir + "/in.jsonl", s, 30)));
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_LT(r.seconds, 60);
    const auto recs = read_records(dir + "/early.jsonl");
    ASSERT_EQ(recs.size(), 4u);
    EXPECT_EQ(recs.at("a")["token_ids"].size(), 1u);
    EXPECT_EQ(recs.at("b")["token_ids"].size(), 30u);
    EXPECT_TRUE(recs.at("d").contains("error"));
    // every rank took the same number of steps (lockstep), and no more than the longest request needs
    std::regex steps_re(R"(generated in (\d+) steps)");
    std::set<std::string> steps;
    for (auto it = std::sregex_iterator(r.log.begin(), r.log.end(), steps_re); it != std::sregex_iterator(); ++it)
        steps.insert((*it)[1]);
    ASSERT_EQ(steps.size(), 1u) << r.log;
    EXPECT_EQ(*steps.begin(), "30") << "30 steps: one prefill + 29 decodes of the longest request";
}

TEST(Streaming, KillingOneRankEndsEveryRankWithAnErrorWithin60s) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("kill");
    Streaming s;
    s.offload = "cpu";
    s.extra = {{"collective_timeout_s", 10}};
    const std::string cfg = write_config(dir, "kill", demo_model_dir(), write_long_requests(dir, 12, 400), s, 400);
    const std::string ranks = "pgrep -f '^" + std::string(ZT_BINARY) + " --config " + cfg + "'";
    BackgroundJob job(job_command(3, cfg), dir);
    ASSERT_TRUE(job.wait_until_generating()) << job.log();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string pid = command_output(ranks + " | tail -1");   // one of the ranks (not mpirun)
    ASSERT_FALSE(pid.empty()) << job.log();
    ASSERT_EQ(kill(pid_t(std::stol(pid)), SIGKILL), 0);
    int status = 0;
    double seconds = 0;
    const bool exited = job.wait_exit(70, status, seconds);
    ASSERT_TRUE(exited) << "mpirun still running 70 s after one rank was killed\n" << job.log();
    EXPECT_LT(seconds, 60.0) << job.log();
    EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the job must fail\n" << job.log();
    EXPECT_EQ(command_output(ranks + " || true"), "") << "a rank survived";
    read_records(dir + "/kill.jsonl");   // whatever was written is whole records
    fs::remove_all(dir);
}

TEST(Streaming, TruncatedNvmeFileIsAClearErrorNotAHang) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("nvme_trunc");
    Streaming s;
    s.offload = "nvme";
    s.extra = {{"nvme_reuse", false}};   // the file has no name (truncated through a rank's descriptor below)
    const std::string cfg = write_config(dir, "trunc", demo_model_dir(), write_long_requests(dir, 8, 400), s, 400);
    const std::string ranks = "pgrep -f '^" + std::string(ZT_BINARY) + " --config " + cfg + "'";
    BackgroundJob job(job_command(2, cfg), dir);
    ASSERT_TRUE(job.wait_until_generating()) << job.log();
    // The file has no name: truncate it through the descriptor a rank holds (what a foreign writer could do).
    const std::string pid = command_output(ranks + " | tail -1");
    ASSERT_FALSE(pid.empty()) << job.log();
    const auto files = open_files_in(pid_t(std::stol(pid)), dir + "/nvme-trunc");
    ASSERT_EQ(files.size(), 1u) << job.log();
    std::error_code ec;
    fs::resize_file(files[0], 4096, ec);
    ASSERT_FALSE(ec) << ec.message() << "\n" << job.log();
    int status = 0;
    double seconds = 0;
    const bool exited = job.wait_exit(70, status, seconds);
    const std::string log = job.log();
    ASSERT_TRUE(exited) << log;
    EXPECT_LT(seconds, 60.0) << log;
    EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    EXPECT_HAS(log, "short read");
    EXPECT_HAS(log, "/nvme-trunc/ztinfer-rank");
    read_records(dir + "/trunc.jsonl");
    fs::remove_all(dir);
}

TEST(Streaming, NvmePathHoldsNoSliceFileWhileTheJobRunsNorAfterKill9) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("nvme_kill");
    Streaming s;
    s.offload = "nvme";
    s.extra = {{"nvme_reuse", false}};   // private nameless files
    const std::string nvme = dir + "/nvme-kill";
    const std::string cfg = write_config(dir, "kill", demo_model_dir(), write_long_requests(dir, 8, 400), s, 400);
    const std::string ranks = "pgrep -f '^" + std::string(ZT_BINARY) + " --config " + cfg + "'";
    BackgroundJob job(job_command(2, cfg), dir);
    ASSERT_TRUE(job.wait_until_generating()) << job.log();
    EXPECT_EQ(folder_names(nvme), std::vector<std::string>{}) << "slice files have names another job can open";
    const std::string pids = command_output(ranks);
    std::vector<pid_t> rank_pids;
    for (size_t at = 0; at < pids.size();) {
        const size_t end = pids.find('\n', at);
        rank_pids.push_back(pid_t(std::stol(pids.substr(at, end - at))));
        at = end == std::string::npos ? pids.size() : end + 1;
    }
    ASSERT_EQ(rank_pids.size(), 2u) << pids << job.log();
    for (pid_t p : rank_pids) EXPECT_EQ(open_files_in(p, nvme).size(), 1u) << "rank pid " << p;
    for (pid_t p : rank_pids) kill(p, SIGKILL);
    int status = 0;
    double seconds = 0;
    ASSERT_TRUE(job.wait_exit(70, status, seconds)) << job.log();
    EXPECT_EQ(folder_names(nvme), std::vector<std::string>{}) << "kill -9 left slice files behind";
    fs::remove_all(dir);
}

TEST(Streaming, TwoJobsOfDifferentModelsOnOneNvmePathEachComputeWithTheirOwnWeights) {
    REQUIRE_MPI();
    // model b: the demo model's shapes with other weights, so b's slices fit a's file layout exactly
    const std::string model_b = make_temp_dir("nvme_model_b");
    zt::SynthOptions o;
    o.arch = "llama"; o.layers = 4; o.hidden = 256; o.heads = 8; o.kv_heads = 4; o.intermediate = 688;
    o.dtype = "bf16"; o.seed = 2; o.tokenizer_dir = demo_tokenizer_dir(); o.out_dir = model_b;
    zt::synthesize_model(o);
    const std::string dir = make_temp_dir("nvme_share");
    {
        std::ofstream a(dir + "/in_a.jsonl"), b(dir + "/in_b.jsonl");   // inputs (outputs are <name>.jsonl)
        for (int i = 0; i < 4; ++i)
            a << json{{"custom_id", "a" + std::to_string(i)}, {"prompt", "Once upon a time"}, {"max_tokens", 200},
                      {"logprobs", true}}.dump() << "\n";
        b << json{{"custom_id", "b"}, {"prompt", "Hello"}, {"max_tokens", 4}, {"logprobs", true}}.dump() << "\n";
    }
    // Both nvme jobs on one nvme_path.
    auto nvme_config = [&](const std::string & name, const std::string & model, const std::string & input) {
        Streaming s;
        s.offload = "nvme";
        s.extra = {{"nvme_reuse", false}};   // private nameless files
        const std::string path = write_config(dir, name, model, input, s, 200);
        json ds = json::parse(read_file(path));
        ds["zero_optimization"]["offload_param"]["nvme_path"] = dir + "/shared-nvme";
        std::ofstream(path) << ds.dump(2);
        return path;
    };
    const std::string in_a = dir + "/in_a.jsonl", in_b = dir + "/in_b.jsonl";
    const JobRunResult ref_a = run_job_command(job_command(0, write_config(dir, "ref_a", demo_model_dir(), in_a, {}, 200)));
    ASSERT_EQ(ref_a.status, 0) << ref_a.log;
    const JobRunResult ref_b = run_job_command(job_command(0, write_config(dir, "ref_b", model_b, in_b, {}, 200)));
    ASSERT_EQ(ref_b.status, 0) << ref_b.log;
    BackgroundJob job_a(job_command(2, nvme_config("a", demo_model_dir(), in_a)), dir);
    ASSERT_TRUE(job_a.wait_until_generating()) << job_a.log();
    // b starts, writes its slices and ends while a generates
    const JobRunResult b = run_job_command(job_command(2, nvme_config("b", model_b, in_b)));
    ASSERT_EQ(b.status, 0) << b.log;
    int status = 0;
    ASSERT_EQ(waitpid(job_a.launcher, &status, WNOHANG), 0) << "job a ended before job b wrote its slices: the test "
        "needs longer requests for a\n" << job_a.log();
    double seconds = 0;
    ASSERT_TRUE(job_a.wait_exit(120, status, seconds)) << job_a.log();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << job_a.log();
    EXPECT_EQ(essence(read_records(dir + "/a.jsonl")), essence(read_records(dir + "/ref_a.jsonl")))
        << "job a computed with other weights";
    EXPECT_EQ(essence(read_records(dir + "/b.jsonl")), essence(read_records(dir + "/ref_b.jsonl")));
    EXPECT_EQ(folder_names(dir + "/shared-nvme"), std::vector<std::string>{});
    fs::remove_all(dir);
    fs::remove_all(model_b);
}

TEST(Streaming, RerunReusesEveryRanksNvmeFileAndWritesIdenticalRecords) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("nvme_rerun");
    {
        std::ofstream in(dir + "/in.jsonl");
        for (int i = 0; i < 3; ++i)
            in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt", "Once upon a time"}, {"max_tokens", 12},
                       {"logprobs", true}}.dump() << "\n";
    }
    const std::string nvme = dir + "/shared-nvme";
    auto run = [&](const std::string & name) {
        Streaming s;
        s.offload = "nvme";   // nvme_reuse: the default
        const std::string path = write_config(dir, name, demo_model_dir(), dir + "/in.jsonl", s, 12);
        json ds = json::parse(read_file(path));
        ds["zero_optimization"]["offload_param"]["nvme_path"] = nvme;   // both runs on one nvme_path
        std::ofstream(path) << ds.dump(2);
        const JobRunResult r = run_job_command(job_command(2, path));
        EXPECT_EQ(r.status, 0) << r.log;
        const json m = json::parse(read_file(dir + "/" + name + ".jsonl.metrics.json"));
        std::vector<bool> reused;
        for (const json & rank : m["per_rank"]) reused.push_back(rank.value("nvme_file_reused", false));
        return std::make_pair(r.log, reused);
    };
    const auto [cold_log, cold] = run("cold");
    EXPECT_EQ(cold, (std::vector<bool>{false, false})) << cold_log;
    EXPECT_HAS(cold_log, "no file yet");
    EXPECT_EQ(folder_names(nvme).size(), 2u) << "one file per rank stays for the rerun";
    const auto [warm_log, warm] = run("warm");
    EXPECT_EQ(warm, (std::vector<bool>{true, true})) << warm_log;
    EXPECT_HAS(warm_log, "NVMe slice file: reused " + nvme + "/ztinfer-");
    EXPECT_EQ(warm_log.find("NVMe slice file: writing"), std::string::npos) << warm_log;
    EXPECT_EQ(read_file(dir + "/warm.jsonl"), read_file(dir + "/cold.jsonl")) << "the rerun wrote other records";
    EXPECT_FALSE(read_file(dir + "/cold.jsonl").empty());
    fs::remove_all(dir);
}

TEST(Streaming, RankHoldsAboutOneNthOfTheWeights) {
    REQUIRE_MPI();
    // a model whose layers dominate: 8 layers of hidden 256 / intermediate 4096, embeddings partitioned too
    const std::string model = make_temp_dir("mem_model");
    zt::SynthOptions o;
    o.arch = "llama"; o.layers = 8; o.hidden = 256; o.heads = 8; o.kv_heads = 4; o.intermediate = 4096;
    o.dtype = "bf16"; o.seed = 3; o.tokenizer_dir = demo_tokenizer_dir(); o.out_dir = model;
    zt::synthesize_model(o);
    const std::string dir = make_temp_dir("mem");
    std::ofstream(dir + "/in.jsonl") << R"({"custom_id": "a", "prompt": "Hi", "max_tokens": 2})" "\n";
    std::map<int, std::vector<std::array<double, 3>>> by_np;   // np -> per rank {rss growth, own slices, ring} MiB
    double streamed = 0;
    for (int np : {1, 4}) {
        Streaming s;
        s.offload = "cpu";
        s.extra = {{"partition_embeddings", true}, {"prefetch_depth", 1}};
        const JobRunResult r = run_job_command(job_command(np, write_config(dir, fmt::format("np{}", np), model, dir + "/in.jsonl", s, 2)));
        ASSERT_EQ(r.status, 0) << r.log;
        std::regex re(R"(streamed weights ([\d.]+) MiB per step \([\d.]+ bits/weight\), own slices ([\d.]+) MiB, staging [\d.]+ MiB, resident ([\d.]+) MiB, ring ([\d.]+) MiB .*RSS grew by ([\d.]+) MiB)");
        for (auto it = std::sregex_iterator(r.log.begin(), r.log.end(), re); it != std::sregex_iterator(); ++it) {
            streamed = std::stod((*it)[1]);
            const double own = std::stod((*it)[2]), resident = std::stod((*it)[3]), ring = std::stod((*it)[4]),
                         rss = std::stod((*it)[5]);
            by_np[np].push_back({rss, own, ring});
            // own slices are 1/N of the streamed model (up to 4 KiB padding per unit)
            EXPECT_NEAR(own, streamed / np, 0.05 * streamed / np + 0.1) << r.log;
            // measured: RSS growth while loading is the slices + the ring + resident norms, plus a little
            EXPECT_LE(rss, own + ring + resident + 6.0) << "rank holds more than its share\n" << r.log;
            EXPECT_GE(rss, own * 0.9) << r.log;
        }
        ASSERT_EQ(by_np[np].size(), size_t(np)) << r.log;
    }
    // and with 4 ranks each holds clearly less than one rank alone
    for (const auto & m : by_np[4]) EXPECT_LT(m[0], 0.6 * by_np[1][0][0]);
    fs::remove_all(dir);
    fs::remove_all(model);
}

TEST(Streaming, TraceIsAChromeTraceWithEveryStageOfEveryRank) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("trace");
    Streaming s;
    s.offload = "cpu";
    const std::string cfg = write_config(dir, "trace", demo_model_dir(), std::string(ZT_SOURCE_DIR) + "/examples/prompts.jsonl", s, 3);
    const JobRunResult r = run_job_command(job_command(2, cfg, "--trace " + dir + "/trace.json"));
    ASSERT_EQ(r.status, 0) << r.log;
    const json t = json::parse(read_file(dir + "/trace.json"));
    std::set<std::pair<int, std::string>> seen;
    for (const auto & e : t["traceEvents"]) {
        if (e["ph"] != "X") continue;
        EXPECT_GE(e["dur"].get<double>(), 0);
        seen.insert({e["pid"].get<int>(), e["cat"].get<std::string>()});
    }
    for (int rank : {0, 1})
        for (const char * cat : {"fetch", "all_gather", "compute"}) EXPECT_TRUE(seen.count({rank, cat})) << rank << " " << cat;
    fs::remove_all(dir);
}
