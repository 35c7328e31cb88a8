// Balanced request hand-out (issue 16, request_handout.h):
//  - hand_out() gives each request to the rank with the most free slots (ties: the lowest), never more than a
//    rank has free; the run order is prompt bucket, then max_tokens, then input order;
//  - a skewed job (a few long requests among many short ones) gives the same records (token ids, logprobs,
//    finish reasons) on 1 rank, 3 MPI ranks static, 3 MPI ranks balanced and 3 TCP ranks balanced, in fewer steps
//    balanced than static; the planner's replay predicts both step counts exactly;
//  - ranks that read different inputs (copies that differ between nodes) all stop non-zero, with the reason logged.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "job_runner.h"
#include "runtime/job/job_config.h"
#include "runtime/job/planner.h"
#include "runtime/job/request_handout.h"
#include "test_support.h"

using json = nlohmann::json;
using namespace zt::test;

namespace {

TEST(RequestHandout, EachRequestGoesToTheRankWithTheMostFreeSlots) {
    EXPECT_EQ(zt::hand_out(5, {2, 2, 2}), (std::vector<int>{0, 1, 2, 0, 1}));
    EXPECT_EQ(zt::hand_out(4, {0, 3, 1}), (std::vector<int>{1, 1, 1, 2}));   // 3 -> 2 -> then 1 and 1: the lower rank first
    EXPECT_EQ(zt::hand_out(9, {1, 0, 2}), (std::vector<int>{2, 0, 2}));      // no more than the free slots
    EXPECT_TRUE(zt::hand_out(3, {0, 0}).empty());
    EXPECT_TRUE(zt::hand_out(0, {4, 4}).empty());
}

TEST(RequestHandout, RunOrderIsLongestWorkFirstThenPromptBucket) {
    EXPECT_TRUE(zt::runs_before(10, 500, 100, 1, 512));    // work: 1 + 500 steps before 1 + 1
    EXPECT_TRUE(zt::runs_before(1500, 8, 100, 9, 512));    // 3 prompt chunks + 8 before 1 + 9
    EXPECT_TRUE(zt::runs_before(100, 8, 10, 8, 512));      // equal work: bucket 7 before bucket 4
    EXPECT_FALSE(zt::runs_before(10, 8, 12, 8, 512));      // equal: neither (a stable sort keeps input order)
    EXPECT_FALSE(zt::runs_before(12, 8, 10, 8, 512));
    EXPECT_TRUE(zt::runs_before(100, 0, 10, 0, 8));        // embed: prompt chunks are the work
}

TEST(RequestHandout, SlotsPerRankAreCappedByTheShareOfAShortJob) {
    EXPECT_EQ(zt::balanced_slots(8, 100, 4), 8);
    EXPECT_EQ(zt::balanced_slots(8, 10, 4), 3);
    EXPECT_EQ(zt::balanced_slots(8, 0, 4), 1);
    EXPECT_EQ(zt::balanced_slots(2, 1, 1), 1);
}

// 18 requests of 3..9 prompt ids: two of 40 new tokens, the rest 2..6 (ignore_eos, so the lengths are exact),
// the long ones in input positions 0 and 3, which static assignment puts both on rank 0.
std::string write_skewed_input(const std::string & dir) {
    std::ofstream in(dir + "/skewed.jsonl");
    for (int i = 0; i < 18; ++i) {
        json ids = json::array();
        for (int t = 0; t < 3 + i % 7; ++t) ids.push_back(5 + (i * 7 + t * 3) % 90);
        const int new_tokens = (i == 0 || i == 3) ? 40 : 2 + i % 5;
        json r = {{"custom_id", "r" + std::to_string(i)}, {"prompt_token_ids", ids}, {"max_tokens", new_tokens},
                  {"ignore_eos", true}, {"logprobs", true}};
        if (i % 4 == 1) r.update({{"temperature", 0.8}, {"seed", 50 + i}});
        in << r.dump() << "\n";
    }
    return dir + "/skewed.jsonl";
}

std::string fixture_model() { return std::string(ZT_TEST_DATA) + "/hf/llama-fp32"; }

json essence(const std::string & path) {
    json e = json::object();
    for (const auto & [id, r] : read_job_records(path))
        e[id] = r.contains("error") ? r["error"]["code"] : json{r["token_ids"], r["logprobs"], r["finish_reason"]};
    return e;
}

int64_t steps_of(const std::string & output) {
    std::ifstream f(output + ".metrics.json");
    return json::parse(f).at("steps").get<int64_t>();
}

// The planner's replay of the job of `cfg_path` on `world` ranks.
int64_t predicted_steps(const std::string & cfg_path, int world) {
    const zt::JobConfig cfg = zt::JobConfig::load(cfg_path);
    const zt::Workload w = zt::workload_from_input(cfg, nullptr, 0);
    const zt::PlanSettings s = zt::plan_settings_of(cfg);
    return zt::simulate_steps(w, s, world).steps;
}

TEST(RequestBalance, SkewedJobGivesTheSameRecordsInFewerStepsAndThePlannerReplaysThem) {
    const std::string dir = make_temp_dir("balance");
    const std::string in = write_skewed_input(dir);
    const json base = {{"max_new_tokens", 40}, {"batch_size", 2}};
    auto with = [&](const char * assignment) { json z = base; z["request_assignment"] = assignment; return z; };
    const std::string one_cfg = write_job_config(dir, "one", fixture_model(), in, with("balanced"));
    const JobRunResult one = run_job_command(job_command(0, one_cfg));
    ASSERT_EQ(one.status, 0) << one.log;
    const json want = essence(dir + "/one.jsonl");
    ASSERT_EQ(want.size(), 18u);
    EXPECT_EQ(steps_of(dir + "/one.jsonl"), predicted_steps(one_cfg, 1));

    // 3 TCP ranks (no mpirun), balanced
    const std::string tcp_cfg = write_job_config(dir, "tcp", fixture_model(), in, with("balanced"));
    auto ks = run_tcp_job(dir, tcp_cfg, 3, 180);
    for (int r = 0; r < 3; ++r) ASSERT_EQ(ks[size_t(r)].status, 0) << "rank " << r << "\n" << ks[size_t(r)].log();
    EXPECT_EQ(essence(dir + "/tcp.jsonl"), want) << "3 TCP ranks, balanced";
    const int64_t balanced = steps_of(dir + "/tcp.jsonl");
    EXPECT_EQ(balanced, predicted_steps(tcp_cfg, 3));
    EXPECT_NE(ks[0].log().find("handed out as its slots free"), std::string::npos) << ks[0].log();
    if (!kJobHaveMpi) GTEST_SKIP() << "this build has no MPI: the MPI half of the comparison is skipped";

    // 3 MPI ranks: balanced and static
    const std::string bal_cfg = write_job_config(dir, "balanced", fixture_model(), in, with("balanced"));
    const JobRunResult bal = run_job_command(job_command(3, bal_cfg));
    ASSERT_EQ(bal.status, 0) << bal.log;
    EXPECT_EQ(essence(dir + "/balanced.jsonl"), want) << "3 MPI ranks, balanced";
    EXPECT_EQ(steps_of(dir + "/balanced.jsonl"), balanced) << "MPI and TCP ranks step alike";
    const std::string st_cfg = write_job_config(dir, "static", fixture_model(), in, with("static"));
    const JobRunResult st = run_job_command(job_command(3, st_cfg));
    ASSERT_EQ(st.status, 0) << st.log;
    EXPECT_EQ(essence(dir + "/static.jsonl"), want) << "3 MPI ranks, static";
    const int64_t static_steps = steps_of(dir + "/static.jsonl");
    EXPECT_EQ(static_steps, predicted_steps(st_cfg, 3));
    // static: rank 0 holds both 40-token requests (in its 2 slots: 40 steps, plus its short ones after them);
    // balanced: they run side by side on two ranks while the third takes the short ones
    EXPECT_LT(balanced, static_steps) << "balanced " << balanced << " vs static " << static_steps;
    EXPECT_LE(balanced, 41) << "the two long requests (1 prefill + 39 decodes each) bound the job";
}

TEST(RequestBalance, RanksThatReadDifferentInputsAllStopWithTheReason) {
    const std::string dir = make_temp_dir("balance_diff");
    const std::string in = write_skewed_input(dir);
    std::ofstream(dir + "/other.jsonl") << json{{"custom_id", "x"}, {"prompt_token_ids", {5, 6}},
                                                {"max_tokens", 2}}.dump() << "\n";
    const std::string a = write_job_config(dir, "a", fixture_model(), in, {{"output", dir + "/out.jsonl"}});
    const std::string b = write_job_config(dir, "b", fixture_model(), dir + "/other.jsonl",
                                           {{"output", dir + "/out.jsonl"}});
    const int port = free_tcp_port();
    std::vector<TcpRank> ks = {start_tcp_rank(dir, "rank0", 0, 2, port, a), start_tcp_rank(dir, "rank1", 1, 2, port, b)};
    wait_ranks(ks, 60);
    // every rank stops non-zero; the check fails on each rank, but a rank may hear of another's failure first
    // ("stopping all 2 ranks: rank 1 failed (its log says why)")
    std::string logs;
    for (const TcpRank & k : ks) {
        EXPECT_NE(k.status, 0) << k.log();
        EXPECT_NE(k.status, -2) << "still running\n" << k.log();
        logs += k.log();
    }
    EXPECT_NE(logs.find("the ranks read different requests"), std::string::npos) << logs;
}

}  // namespace
