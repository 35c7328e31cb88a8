// The planner against real jobs (the ztinfer binary on CPU ranks): the memory model's device terms equal what the
// job's MemoryAccount holds by purpose, its totals are within 10 % of the job's peaks and the NVMe file is the
// predicted size; `ztinfer plan` exits 3 with a refusal when nothing fits; a ds.json with "auto" keys runs with
// the planner's choice (logged), and a budget nothing meets stops the job with the planner's message.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "job_runner.h"
#include "runtime/job/job_config.h"
#include "runtime/job/planner.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace test = zt::test;

std::string model_dir() { return std::string(ZT_TEST_DATA) + "/hf/llama-fp32"; }

void write_requests(const std::string & path, int n, int new_tokens) {
    std::ofstream in(path);
    for (int i = 0; i < n; ++i) {
        json ids = json::array();
        for (int t = 0; t < 3 + (i * 5) % 11; ++t) ids.push_back(5 + (i * 7 + t * 3) % 90);
        in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt_token_ids", ids}, {"max_tokens", new_tokens},
                   {"ignore_eos", true}}.dump() << "\n";
    }
}

json plan_json(const std::string & cfg, int ranks, int * status = nullptr) {
    const auto r = test::run_job_command(std::string(ZT_BINARY) + " --log-level off plan --json --ranks " +
                                         std::to_string(ranks) + " --config " + cfg);
    if (status) *status = r.status;
    else EXPECT_EQ(r.status, 0) << r.log;
    const size_t at = r.log.find('{');
    EXPECT_NE(at, std::string::npos) << r.log;
    return json::parse(r.log.substr(at == std::string::npos ? 0 : at));
}

struct Case {
    const char * name;
    const char * tier;
    int ranks;
    json ztinfer;   // overrides
};

TEST(PlannerJobs, MemoryModelMatchesWhatJobsAllocate) {
    const std::string dir = test::make_temp_dir("planner_mem");
    write_requests(dir + "/in.jsonl", 7, 5);
    std::vector<Case> cases = {
        {"cpu_tier", "cpu", 1, json::object()},
        {"nvme_tier", "nvme", 1, {{"prefetch_depth", 1}}},
        {"resident", "none", 1, {{"batch_size", 3}}},
        {"kv_offload_micro", "cpu", 1, {{"micro_batches", 2}, {"kv_cache", {{"offload", "cpu"}}}, {"prefill_chunk", 8}}},
        {"resident_layers", "cpu", 1, {{"resident_layers", 1}, {"prefetch_depth", 3}}},
    };
    if (test::kJobHaveMpi) cases.push_back({"two_ranks", "cpu", 2, {{"batch_size", 2}}});
    for (const Case & c : cases) {
        SCOPED_TRACE(c.name);
        const std::string cfg = test::write_job_config(dir, c.name, model_dir(), dir + "/in.jsonl", c.ztinfer, c.tier);
        if (std::string(c.tier) == "nvme") {
            json ds = json::parse(test::read_file(cfg));
            ds["zero_optimization"]["offload_param"]["nvme_path"] = dir + "/nvme";
            std::ofstream(cfg) << ds.dump(2);
        }
        const json plan = plan_json(cfg, c.ranks);
        const auto r = test::run_job_command(test::job_command(c.ranks > 1 ? c.ranks : 0, cfg));
        ASSERT_EQ(r.status, 0) << r.log;
        const json m = json::parse(test::read_file(dir + "/" + c.name + ".jsonl.metrics.json"));
        const json & mem = m["memory"];
        const json & items = plan["configured"]["memory"]["items"];
        if (c.ranks == 1) {   // one rank: every device term is exactly what the job holds for that purpose
            for (const json & i : items) {
                if (i["tier"] != "device") continue;
                EXPECT_EQ(mem["device_by_purpose"].value(i["name"].get<std::string>(), uint64_t(0)),
                          i["bytes"].get<uint64_t>()) << i.dump() << " vs " << mem["device_by_purpose"].dump();
            }
        }
        auto near = [&](const char * what, double predicted, double measured) {
            EXPECT_NEAR(predicted, measured, 0.10 * measured + 1) << what << ": predicted " << predicted
                                                                  << " measured " << measured;
        };
        const json & pm = plan["predicted"]["memory"];
        near("device", pm["device"].get<double>(), mem["device_peak"].get<double>());
        near("pinned", pm["pinned"].get<double>(), mem["pinned_peak"].get<double>());
        EXPECT_EQ(pm["nvme"].get<uint64_t>(), mem["nvme_file_bytes"].get<uint64_t>());
        EXPECT_GT(plan["predicted"]["tokens_per_s"].get<double>(), 0);
    }
    fs::remove_all(dir);
}

// configs/auto-plan.json: every key the planner chooses is "auto"
TEST(PlannerJobs, TheAutoExampleConfigLeavesEveryPlannerKeyToThePlanner) {
    const zt::JobConfig cfg = zt::JobConfig::load(std::string(ZT_TEST_DATA) + "/../../configs/auto-plan.json");
    EXPECT_EQ(cfg.auto_keys, std::set<std::string>(zt::kPlanAutoKeys.begin(), zt::kPlanAutoKeys.end()));
    EXPECT_EQ(cfg.host_memory_bytes, size_t(64) << 30);
    EXPECT_NE(cfg.profile.find("machine-profile.json"), std::string::npos);
}

TEST(PlannerJobs, PlanRefusesABudgetNothingMeetsWithExitThree) {
    const auto r = test::run_job_command(std::string(ZT_BINARY) + " plan --shape llama2-70b --dtype bf16 --device "
                                         "cuda --gpu-memory 1GiB --host-memory 8GiB --requests 8 --prompt-tokens 128 "
                                         "--new-tokens 16 --json");
    EXPECT_EQ(r.status, 3) << r.log;
    EXPECT_NE(r.log.find("nothing fits the budget"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("GPU memory >= "), std::string::npos) << r.log;
    const auto bad = test::run_job_command(std::string(ZT_BINARY) + " plan --shape llama2-7b --dtype q3_x --requests "
                                           "1 --prompt-tokens 1 --new-tokens 1");
    EXPECT_EQ(bad.status, 1) << bad.log;
    EXPECT_NE(bad.log.find("is not a weight type"), std::string::npos) << bad.log;
}

TEST(PlannerJobs, AutoKeysRunWithThePlannersChoiceOrStopWithItsRefusal) {
    const std::string dir = test::make_temp_dir("planner_auto");
    write_requests(dir + "/in.jsonl", 5, 4);
    const std::string cfg = test::write_job_config(dir, "auto", model_dir(), dir + "/in.jsonl",
                                                   {{"batch_size", "auto"}, {"resident_layers", "auto"},
                                                    {"micro_batches", "auto"}, {"prefetch_depth", "auto"},
                                                    {"kv_cache", {{"offload", "auto"}}}},
                                                   "auto");
    const auto r = test::run_job_command(test::job_command(0, cfg));
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_NE(r.log.find("planner: \"auto\" for"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("nothing is streamed"), std::string::npos) << "a model that fits is never streamed\n" << r.log;
    EXPECT_EQ(test::read_job_records(dir + "/auto.jsonl").size(), 5u);

    // 64 KiB of host memory: nothing fits, every rank stops with the planner's message
    json ds = json::parse(test::read_file(cfg));
    ds["ztinfer"]["host_memory"] = "64KiB";
    ds["ztinfer"]["output"] = dir + "/refused.jsonl";
    std::ofstream(cfg) << ds.dump(2);
    const auto refused = test::run_job_command(test::job_command(0, cfg));
    EXPECT_NE(refused.status, 0) << refused.log;
    EXPECT_NE(refused.log.find("\"auto\" settings could not be planned: nothing fits the budget"), std::string::npos)
        << refused.log;
    fs::remove_all(dir);
}

}  // namespace
