// Job metrics: JobStats round trip through JSON (every field, exact), the metrics of two ranks (sums, maxes,
// bytes per token, link efficiency, memory), division by zero guarded, the atomic metrics-file write, and the
// memory a real CPU job reports (offload "cpu" and "nvme": peaks, device memory by purpose, NVMe file, peak RSS).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/job/job_config.h"
#include "runtime/job/job_metrics.h"
#include "tests/job_runner.h"
#include "tests/test_support.h"

using namespace zt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

JobStats distinctive_stats() {
    JobStats s;
    s.requests = 101;
    s.skipped = 7;
    s.completed = 90;
    s.failed = 4;
    s.prompt_tokens = 12345;
    s.generated_tokens = 6789;
    s.embedded_tokens = 4321;
    s.load_seconds = 0.1 + 0.2;   // not a short decimal
    s.generate_seconds = 1.0 / 3.0;
    s.wall_seconds = 1e-300;
    s.interrupted = true;
    s.steps = 555;
    s.weight_host_bytes = (size_t(1) << 63) + 5;
    s.rss_growth_bytes = 123456789012ull;
    s.fetch_seconds = 2.5e-7;
    s.all_gather_seconds = 3.25;
    s.compute_seconds = 123456.789;
    s.kv_seconds = std::numeric_limits<double>::denorm_min();
    s.write_seconds = 0.5;
    s.bytes_fetched = std::numeric_limits<uint64_t>::max();
    s.kv_bytes_moved = 42;
    s.streamed_bytes_per_step = (uint64_t(1) << 40) + 3;
    s.weight_bits_per_weight = 4.5;
    s.device_peak = (size_t(1) << 62) + 11;
    s.pinned_peak = 987654321;
    s.host_peak = 13;
    s.nvme_file_bytes = (uint64_t(1) << 45) + 4096;
    s.nvme_file_reused = true;
    s.peak_rss = 5555555555ull;
    s.device_by_purpose = {{"KV cache", (size_t(1) << 61) + 1}, {"weight ring", 4096}, {"activations", 0}};
    return s;
}

// No NaN or infinity anywhere (nlohmann would write them as null).
void expect_all_finite(const json & j, const std::string & where = "") {
    if (j.is_number_float()) {
        EXPECT_TRUE(std::isfinite(j.get<double>())) << where;
    }
    EXPECT_FALSE(j.is_null()) << where;
    if (j.is_object())
        for (auto it = j.begin(); it != j.end(); ++it) expect_all_finite(it.value(), where + "." + it.key());
    if (j.is_array())
        for (size_t i = 0; i < j.size(); ++i) expect_all_finite(j[i], where + "[" + std::to_string(i) + "]");
}

JobConfig config() {
    JobConfig cfg;
    cfg.task = "embed";
    cfg.model = "/models/m";
    cfg.output = "/data/out.npy";
    return cfg;
}

}  // namespace

TEST(JobMetrics, MetricsPath) {
    EXPECT_EQ(metrics_path_for("/a/out.jsonl"), "/a/out.jsonl.metrics.json");
    EXPECT_EQ(metrics_path_for("x.npy"), "x.npy.metrics.json");
}

TEST(JobMetrics, StatsRoundTripIsExact) {
    const JobStats s = distinctive_stats();
    const json j = stats_to_json(s);
    EXPECT_EQ(j.size(), 30u);   // every field of JobStats
    const JobStats t = stats_from_json(json::parse(j.dump()));   // through text, as ranks send them
    EXPECT_EQ(t.requests, s.requests);
    EXPECT_EQ(t.skipped, s.skipped);
    EXPECT_EQ(t.completed, s.completed);
    EXPECT_EQ(t.failed, s.failed);
    EXPECT_EQ(t.prompt_tokens, s.prompt_tokens);
    EXPECT_EQ(t.generated_tokens, s.generated_tokens);
    EXPECT_EQ(t.embedded_tokens, s.embedded_tokens);
    EXPECT_EQ(t.load_seconds, s.load_seconds);
    EXPECT_EQ(t.generate_seconds, s.generate_seconds);
    EXPECT_EQ(t.wall_seconds, s.wall_seconds);
    EXPECT_EQ(t.interrupted, s.interrupted);
    EXPECT_EQ(t.steps, s.steps);
    EXPECT_EQ(t.weight_host_bytes, s.weight_host_bytes);
    EXPECT_EQ(t.rss_growth_bytes, s.rss_growth_bytes);
    EXPECT_EQ(t.fetch_seconds, s.fetch_seconds);
    EXPECT_EQ(t.all_gather_seconds, s.all_gather_seconds);
    EXPECT_EQ(t.compute_seconds, s.compute_seconds);
    EXPECT_EQ(t.kv_seconds, s.kv_seconds);
    EXPECT_EQ(t.write_seconds, s.write_seconds);
    EXPECT_EQ(t.bytes_fetched, s.bytes_fetched);
    EXPECT_EQ(t.kv_bytes_moved, s.kv_bytes_moved);
    EXPECT_EQ(t.streamed_bytes_per_step, s.streamed_bytes_per_step);
    EXPECT_EQ(t.weight_bits_per_weight, s.weight_bits_per_weight);
    EXPECT_EQ(t.device_peak, s.device_peak);
    EXPECT_EQ(t.pinned_peak, s.pinned_peak);
    EXPECT_EQ(t.host_peak, s.host_peak);
    EXPECT_EQ(t.nvme_file_bytes, s.nvme_file_bytes);
    EXPECT_EQ(t.nvme_file_reused, s.nvme_file_reused);
    EXPECT_EQ(t.peak_rss, s.peak_rss);
    EXPECT_EQ(t.device_by_purpose, s.device_by_purpose);
    EXPECT_EQ(j["device_by_purpose"], json({{"KV cache", (size_t(1) << 61) + 1}, {"weight ring", 4096},
                                            {"activations", 0}}));
    EXPECT_EQ(stats_to_json(t), j);
    // defaults round-trip too, and missing fields keep their defaults
    EXPECT_EQ(stats_to_json(stats_from_json(stats_to_json(JobStats{}))), stats_to_json(JobStats{}));
    EXPECT_EQ(stats_from_json(json::object()).requests, 0);
    EXPECT_TRUE(stats_from_json(json::object()).device_by_purpose.empty());
    EXPECT_EQ(stats_to_json(JobStats{})["device_by_purpose"], json::object());
}

TEST(JobMetrics, StatsFromJsonRejectsWrongTypes) {
    try {
        stats_from_json({{"requests", "many"}});
        FAIL() << "no error";
    } catch (const Error & e) {
        EXPECT_HAS(std::string(e.what()), "\"requests\"");
    }
    EXPECT_THROW(stats_from_json({{"bytes_fetched", -1}}), Error);
    EXPECT_THROW(stats_from_json({{"interrupted", 1}}), Error);
    EXPECT_THROW(stats_from_json(json::array()), Error);
    EXPECT_THROW(stats_from_json({{"peak_rss", 1.5}}), Error);
    for (const json & bad : {json{{"device_by_purpose", json::array({1, 2})}},
                             json{{"device_by_purpose", {{"KV cache", -5}}}},
                             json{{"device_by_purpose", {{"KV cache", "big"}}}}}) {
        try {
            stats_from_json(bad);
            FAIL() << "no error for " << bad.dump();
        } catch (const Error & e) {
            EXPECT_HAS(std::string(e.what()), "device_by_purpose");
        }
    }
}

TEST(JobMetrics, TwoRanks) {
    JobStats a, b;
    a.requests = b.requests = 10;      // every rank reads the whole input
    a.skipped = b.skipped = 2;
    a.completed = 5, b.completed = 3;
    a.failed = 1, b.failed = 0;
    a.prompt_tokens = 100, b.prompt_tokens = 60;
    a.generated_tokens = 0, b.generated_tokens = 0;
    a.embedded_tokens = 100, b.embedded_tokens = 60;
    a.load_seconds = 2, b.load_seconds = 3;
    a.generate_seconds = 8, b.generate_seconds = 10;
    a.wall_seconds = 12, b.wall_seconds = 11;
    a.interrupted = false, b.interrupted = true;
    a.steps = b.steps = 7;
    a.fetch_seconds = 4, b.fetch_seconds = 5;
    a.all_gather_seconds = 1, b.all_gather_seconds = 0.5;
    a.compute_seconds = 6, b.compute_seconds = 7;
    a.kv_seconds = 0.25, b.kv_seconds = 0;
    a.write_seconds = 0.75, b.write_seconds = 0;
    a.bytes_fetched = 8'000'000'000, b.bytes_fetched = 8'000'000'000;
    a.streamed_bytes_per_step = b.streamed_bytes_per_step = 16'000'000'000 / 7;   // the plan: the same on every rank
    a.weight_bits_per_weight = b.weight_bits_per_weight = 8.5;
    a.device_peak = 700, b.device_peak = 900;
    a.pinned_peak = 5000, b.pinned_peak = 4000;
    a.host_peak = 0, b.host_peak = 64;
    a.nvme_file_bytes = 8192, b.nvme_file_bytes = 12288;
    a.peak_rss = 1 << 30, b.peak_rss = 1 << 29;
    a.device_by_purpose = {{"KV cache", 300}, {"weight ring", 200}};
    b.device_by_purpose = {{"KV cache", 301}};
    const json m = job_metrics_json(config(), {a, b});
    EXPECT_EQ(m["task"], "embed");
    EXPECT_EQ(m["model"], "/models/m");
    EXPECT_EQ(m["output"], "/data/out.npy");
    EXPECT_EQ(m["ranks"], 2);
    EXPECT_EQ(m["interrupted"], true);
    EXPECT_EQ(m["requests"], json({{"total", 10}, {"completed", 8}, {"failed", 1}, {"skipped", 2}}));
    EXPECT_EQ(m["tokens"], json({{"prompt", 160}, {"generated", 0}, {"embedded", 160}}));
    EXPECT_EQ(m["wall_seconds"], 12.0);
    EXPECT_EQ(m["load_seconds"], 3.0);
    EXPECT_EQ(m["loop_seconds"], 10.0);
    EXPECT_DOUBLE_EQ(m["tokens_per_second"].get<double>(), 16.0);
    EXPECT_DOUBLE_EQ(m["requests_per_second"].get<double>(), 0.8);
    EXPECT_EQ(m["steps"], 7);
    EXPECT_EQ(m["bytes_fetched_per_rank"], json({8'000'000'000ull, 8'000'000'000ull}));
    EXPECT_DOUBLE_EQ(m["bytes_fetched_per_token"].get<double>(), 16e9 / 160);
    EXPECT_EQ(m["weights"]["streamed_bytes_per_step"], 16'000'000'000 / 7);
    EXPECT_DOUBLE_EQ(m["weights"]["fetched_bytes_per_step"].get<double>(), 16e9 / 7);   // both ranks' slices / steps
    EXPECT_EQ(m["weights"]["bits_per_weight"], 8.5);
    EXPECT_EQ(m["link"]["fetch_seconds"], 5.0);
    EXPECT_DOUBLE_EQ(m["link"]["fetched_gbps"].get<double>(), 8.0 / 5.0);   // the busiest rank (longest fetching)
    EXPECT_DOUBLE_EQ(m["link"]["efficiency"].get<double>(), 0.5);           // max(4/8, 5/10)
    EXPECT_EQ(m["stage_seconds"], json({{"load", 3.0}, {"fetch", 5.0}, {"all_gather", 1.0}, {"compute", 7.0},
                                        {"kv", 0.25}, {"write", 0.75}}));
    EXPECT_EQ(m["memory"], json({{"device_peak", 900}, {"pinned_peak", 5000}, {"host_peak", 64},
                                 {"nvme_file_bytes", 12288}, {"peak_rss", 1 << 30},
                                 {"device_by_purpose", {{"KV cache", 300}, {"weight ring", 200}}}}))
        << "the max over ranks; rank 0's map";
    ASSERT_EQ(m["per_rank"].size(), 2u);
    EXPECT_EQ(m["per_rank"][0], stats_to_json(a));
    EXPECT_EQ(m["per_rank"][1], stats_to_json(b));
    expect_all_finite(m);

    // generated tokens count as well (generate task), and the busier link wins for efficiency
    a.generated_tokens = 40, a.embedded_tokens = 0, b.embedded_tokens = 0, b.generated_tokens = 0;
    a.fetch_seconds = 6;
    const json g = job_metrics_json(config(), {a, b});
    EXPECT_DOUBLE_EQ(g["tokens_per_second"].get<double>(), 4.0);
    EXPECT_DOUBLE_EQ(g["bytes_fetched_per_token"].get<double>(), 16e9 / 40);
    EXPECT_DOUBLE_EQ(g["link"]["efficiency"].get<double>(), 0.75);   // rank 0: 6 of its 8 s
    EXPECT_DOUBLE_EQ(g["link"]["fetched_gbps"].get<double>(), 8.0 / 6.0);
}

TEST(JobMetrics, ZeroDivisionsGiveZero) {
    for (const auto & ranks : {std::vector<JobStats>{}, std::vector<JobStats>{JobStats{}, JobStats{}}}) {
        const json m = job_metrics_json(config(), ranks);
        EXPECT_EQ(m["ranks"], ranks.size());
        EXPECT_EQ(m["tokens_per_second"], 0.0);
        EXPECT_EQ(m["requests_per_second"], 0.0);
        EXPECT_EQ(m["bytes_fetched_per_token"], 0.0);
        EXPECT_EQ(m["link"]["fetched_gbps"], 0.0);
        EXPECT_EQ(m["link"]["efficiency"], 0.0);
        EXPECT_EQ(m["weights"]["fetched_bytes_per_step"], 0.0);
        EXPECT_EQ(m["weights"]["bits_per_weight"], 0.0);
        EXPECT_EQ(m["per_rank"].size(), ranks.size());
        EXPECT_EQ(m["memory"]["device_peak"], 0);
        EXPECT_EQ(m["memory"]["device_by_purpose"], json::object());
        expect_all_finite(m);
    }
    // bytes fetched but no tokens and no time (an interrupted job before its first step)
    JobStats s;
    s.bytes_fetched = 1000;
    s.fetch_seconds = 0.5;
    const json m = job_metrics_json(config(), {s});
    EXPECT_EQ(m["bytes_fetched_per_token"], 0.0);
    EXPECT_EQ(m["link"]["efficiency"], 0.0);
    EXPECT_DOUBLE_EQ(m["link"]["fetched_gbps"].get<double>(), 2e-6);
    expect_all_finite(m);
}

TEST(JobMetrics, WritesTheFileAtomically) {
    const std::string dir = test::make_temp_dir("metrics");
    const std::string path = dir + "/deeper/folder/out.jsonl.metrics.json";   // folders are created
    JobStats s = distinctive_stats();
    s.bytes_fetched = 10;
    const json m = job_metrics_json(config(), {s});
    write_metrics_file(path, m);
    std::string text = test::read_file(path);
    EXPECT_EQ(json::parse(text), m);
    EXPECT_EQ(text.rfind("{\n  \"bytes_fetched_per_rank\": [\n    10\n  ],\n", 0), 0u) << text.substr(0, 80);   // 2-space indent
    EXPECT_EQ(text.back(), '\n');
    // replaced whole on a second write, nothing left beside it
    write_metrics_file(path, json{{"a", 1}});
    EXPECT_EQ(json::parse(test::read_file(path)), json({{"a", 1}}));
    std::vector<std::string> names;
    for (const auto & e : fs::directory_iterator(fs::path(path).parent_path())) names.push_back(e.path().filename());
    EXPECT_EQ(names, std::vector<std::string>{"out.jsonl.metrics.json"});
    // a path that cannot be written says which
    fs::create_directories(dir + "/is_a_dir.json");
    try {
        write_metrics_file(dir + "/is_a_dir.json", m);
        FAIL() << "no error";
    } catch (const Error & e) {
        EXPECT_HAS(std::string(e.what()), "is_a_dir.json");
    }
    size_t left = 0;
    for (const auto & e : fs::directory_iterator(dir)) left += e.path().filename().string().find(".tmp") != std::string::npos;
    EXPECT_EQ(left, 0u);
    fs::remove_all(dir);
}

// A real job (the ztinfer binary, one CPU rank) reports what it allocated: offload "cpu" holds its slices in
// pinned memory and has no NVMe file; "nvme" writes a file of at least the streamed bytes (+ a header page) and
// reads it through pinned staging. Device memory by purpose (the weight ring, KV cache, ...) fits under the peak.
TEST(JobMetrics, JobReportsItsMemory) {
    const std::string dir = test::make_temp_dir("metrics_mem");
    const std::string model = std::string(ZT_TEST_DATA) + "/hf/llama-fp32";
    {
        std::ofstream in(dir + "/in.jsonl");
        for (int i = 0; i < 3; ++i)
            in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt_token_ids", {5 + i, 17, 42, 99}},
                       {"max_tokens", 3}}.dump() << "\n";
    }
    for (const std::string tier : {"cpu", "nvme"}) {
        const std::string cfg = test::write_job_config(dir, tier, model, dir + "/in.jsonl", json::object(), tier);
        if (tier == "nvme") {   // nvme_path beside the output
            json ds = json::parse(test::read_file(cfg));
            ds["zero_optimization"]["offload_param"]["nvme_path"] = dir + "/nvme";
            std::ofstream(cfg) << ds.dump(2);
        }
        const auto r = test::run_job_command(test::job_command(0, cfg));
        ASSERT_EQ(r.status, 0) << r.log;
        const json m = json::parse(test::read_file(dir + "/" + tier + ".jsonl.metrics.json"));
        ASSERT_EQ(m["requests"]["completed"], 3) << tier;
        const json & mem = m["memory"];
        const json & rank0 = m["per_rank"][0];
        const uint64_t streamed = m["weights"]["streamed_bytes_per_step"].get<uint64_t>();
        ASSERT_GT(streamed, 0u) << tier << ": the fixture's weights must stream for this test";
        for (const char * key : {"device_peak", "pinned_peak", "host_peak", "nvme_file_bytes", "peak_rss"})
            EXPECT_EQ(mem[key], rank0[key]) << tier << " " << key << ": one rank, its own figure";
        EXPECT_GT(mem["device_peak"].get<uint64_t>(), 0u) << tier;
        EXPECT_GT(mem["peak_rss"].get<uint64_t>(), mem["device_peak"].get<uint64_t>())
            << tier << ": on the CPU backend device memory is in the process too";
        const json & by_purpose = mem["device_by_purpose"];
        EXPECT_EQ(by_purpose, rank0["device_by_purpose"]) << tier;
        for (const char * purpose : {"weight ring", "KV cache", "activations", "logits"})
            EXPECT_GT(by_purpose.value(purpose, uint64_t(0)), 0u) << tier << ": " << purpose << " in " << by_purpose.dump();
        uint64_t in_use = 0;
        for (const auto & [purpose, bytes] : by_purpose.items()) in_use += bytes.get<uint64_t>();
        EXPECT_LE(in_use, mem["device_peak"].get<uint64_t>()) << tier << ": " << by_purpose.dump();
        const uint64_t pinned = mem["pinned_peak"].get<uint64_t>(), file = mem["nvme_file_bytes"].get<uint64_t>();
        if (tier == "cpu") {
            EXPECT_GE(pinned, streamed) << "one rank's slices are every streamed byte, in pinned memory";
            EXPECT_EQ(file, 0u);
        } else {
            EXPECT_GT(pinned, 0u) << "the NVMe staging ring";
            EXPECT_GE(file, streamed + 4096) << "every slice + the header page";
            EXPECT_EQ(file % 4096, 0u);
        }
    }
    fs::remove_all(dir);
}
