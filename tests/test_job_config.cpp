// ds.json parsing: paths resolve against the config's folder, unknown keys are named warnings, bad values
// are errors naming the key.
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "runtime/job_config.h"

using namespace zt;
using json = nlohmann::json;

TEST(JobConfig, ResolvesPathsAndWarnsOnUnknownKeys) {
    json j = {{"zero_optimization", {{"stage", 3}}},
              {"mystery", 1},
              {"ztinfer", {{"model", "m"}, {"input", "in.jsonl"}, {"output", "/abs/out.jsonl"}, {"colour", "red"},
                           {"batch_size", 3}, {"top_p", 0.5}}}};
    const JobConfig c = JobConfig::from_json(j, "/cfg/dir/ds.json");
    EXPECT_EQ(c.model, "/cfg/dir/m");
    EXPECT_EQ(c.input, "/cfg/dir/in.jsonl");
    EXPECT_EQ(c.output, "/abs/out.jsonl");
    EXPECT_EQ(c.batch_size, 3);
    EXPECT_DOUBLE_EQ(c.sampling.top_p, 0.5);
    ASSERT_EQ(c.warnings.size(), 2u);
    EXPECT_NE(c.warnings[0].find("mystery"), std::string::npos);
    EXPECT_NE(c.warnings[1].find("ztinfer.colour"), std::string::npos);
}

TEST(JobConfig, RejectsBadValuesNamingTheKey) {
    auto expect_fail = [](json z, const std::string & needle) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        try {
            JobConfig::from_json(j, "/x/ds.json");
            ADD_FAILURE() << "accepted " << z.dump();
        } catch (const Error & e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("/x/ds.json"), std::string::npos) << e.what();
        }
    };
    expect_fail({{"task", "train"}}, "ztinfer.task");
    expect_fail({{"device", "tpu"}}, "ztinfer.device");
    expect_fail({{"batch_size", 0}}, "ztinfer.batch_size");
    expect_fail({{"top_p", 0}}, "ztinfer.top_p");
    expect_fail({{"temperature", -1}}, "ztinfer.temperature");
    expect_fail({{"max_new_tokens", 0}}, "ztinfer.max_new_tokens");
    expect_fail({{"batch_size", "eight"}}, "ztinfer.batch_size");
    expect_fail({{"model", nullptr}}, "ztinfer.model");
    EXPECT_THROW(JobConfig::from_json(json{{"zero_optimization", {}}}, "/x/ds.json"), Error);
}
