// MachineProfile (runtime/job/machine_profile.cpp) and `ztinfer bench --profile` (runtime/bench/benchmark_profile.cpp):
// the JSON round trip, the matmul table's interpolation / extrapolation, the bits-per-weight fallback for an
// unmeasured dtype, the all-gather lookup, hostile files failing with the key named, sane defaults, and one real
// measurement on the CPU in quick mode that writes a file of positive figures (and merges a second world's entry).
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/job/machine_profile.h"
#include "job_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt;
using namespace zt::test;

namespace {

MachineProfile hand_made() {
    MachineProfile p = default_profile("cpu");
    p.source = "hand made";
    p.matmul.clear();
    p.matmul["bf16"] = {{1, 1e-9}, {4, 2e-9}, {16, 8e-9}};
    p.matmul["q4_k"] = {{1, 5e-10}};
    p.allgather_busbw_gbps = {{2, 6.0}, {8, 3.0}};
    return p;
}

// Expects profile_from_json(j) to throw zt::Error whose message has `key` and `hint`.
void expect_rejected(const json & j, const std::string & key, const std::string & hint = "") {
    try {
        profile_from_json(j, "/x/prof.json");
        ADD_FAILURE() << "accepted: " << j.dump();
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "\"" + key + "\"");
        EXPECT_HAS(e.message(), "/x/prof.json");
        EXPECT_HAS(e.message(), "ztinfer bench --profile");
        if (!hint.empty()) {
            EXPECT_HAS(e.message(), hint);
        }
    }
}

}  // namespace

TEST(MachineProfile, InterpolatesBetweenPointsAndExtrapolatesTheLastSlope) {
    const MachineProfile p = hand_made();
    const double w = 100.0 * 200.0;
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 1, 100, 200), 1e-9 * w);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 2, 100, 200), (1e-9 + 1e-9 / 3) * w);   // 1/3 of 1 -> 4
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 4, 100, 200), 2e-9 * w);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 10, 100, 200), 5e-9 * w);               // half of 4 -> 16
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 16, 100, 200), 8e-9 * w);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 28, 100, 200), 14e-9 * w);              // slope 0.5e-9 per T
    // one point: the same value at every T
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::Q4_K, 1, 10, 10), 5e-10 * 100);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::Q4_K, 64, 10, 10), 5e-10 * 100);
    // a falling last segment never extrapolates below the last value
    MachineProfile q = p;
    q.matmul["bf16"] = {{1, 4e-9}, {2, 3e-9}};
    EXPECT_DOUBLE_EQ(q.matmul_seconds(DType::BF16, 1000, 1, 1), 3e-9);
}

TEST(MachineProfile, UnmeasuredDtypeScalesBf16ByBitsPerWeight) {
    const MachineProfile p = hand_made();
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::F32, 4, 10, 10), 2e-9 * 100 * 32.0 / 16.0);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::Q8_0, 4, 10, 10), 2e-9 * 100 * dtype_bits_per_weight(DType::Q8_0) / 16.0);
    // no bf16 either: any table, scaled by the ratio of bits
    MachineProfile q;
    q.matmul["q4_k"] = {{1, 4.5e-10}};
    EXPECT_DOUBLE_EQ(q.matmul_seconds(DType::BF16, 8, 10, 10), 4.5e-10 * 100 * 16.0 / dtype_bits_per_weight(DType::Q4_K));
    // no table at all: an error, not a zero time
    MachineProfile none;
    EXPECT_THROW(none.matmul_seconds(DType::BF16, 1, 1, 1), Error);
}

TEST(MachineProfile, AllgatherTakesTheNearestWorld) {
    const MachineProfile p = hand_made();
    EXPECT_DOUBLE_EQ(p.allgather_gbps(2), 6.0);
    EXPECT_DOUBLE_EQ(p.allgather_gbps(3), 6.0);
    EXPECT_DOUBLE_EQ(p.allgather_gbps(5), 3.0);   // a tie goes to the larger world
    EXPECT_DOUBLE_EQ(p.allgather_gbps(64), 3.0);
    MachineProfile none = default_profile("cuda");
    EXPECT_TRUE(none.allgather_busbw_gbps.empty());
    EXPECT_DOUBLE_EQ(none.allgather_gbps(4), 100.0);
}

// A re-read after d bytes costs reuse_factor(d) of a cold read: interpolated in log d between the rings measured,
// the nearest ring outside them, 1 when nothing was measured.
TEST(MachineProfile, ReuseFactorInterpolatesInLogDistance) {
    MachineProfile p = hand_made();
    const size_t MiB = size_t(1) << 20;
    EXPECT_EQ(p.reuse_factor_at(4 * MiB, 1), 1.0);
    p.reuse_factor[1 * MiB] = {{1, 0.2}, {64, 0.8}};
    p.reuse_factor[4 * MiB] = {{1, 0.6}, {64, 1.0}};
    EXPECT_DOUBLE_EQ(p.reuse_factor_at(MiB / 2, 1), 0.2);
    EXPECT_DOUBLE_EQ(p.reuse_factor_at(2 * MiB, 1), 0.4);    // halfway in log2: 1 -> 2 -> 4 MiB
    EXPECT_DOUBLE_EQ(p.reuse_factor_at(16 * MiB, 64), 1.0);
    EXPECT_DOUBLE_EQ(p.matmul_seconds(DType::BF16, 1, 100, 100, 2 * MiB), 0.4 * p.matmul_seconds(DType::BF16, 1, 100, 100));
    const json j = profile_to_json(p);
    EXPECT_EQ(profile_to_json(profile_from_json(j, "mem")), j);
}

TEST(MachineProfile, JsonRoundTripAndFile) {
    MachineProfile p = hand_made();
    p.device_name = "Test CPU";
    p.threads = 3;
    p.nvme_gbps = 2.5;
    p.attention_decode_gflops = 1.25;
    p.step_overhead_s = 0;
    const json j = profile_to_json(p);
    EXPECT_EQ(profile_to_json(profile_from_json(j, "mem")), j);

    const std::string dir = make_temp_dir("profile");
    const std::string path = dir + "/p.json";
    save_profile(path, p);
    const MachineProfile back = load_profile(path);
    EXPECT_EQ(profile_to_json(back), j);
    EXPECT_EQ(back.matmul.at("bf16").size(), 3u);
    EXPECT_EQ(back.allgather_busbw_gbps.at(8), 3.0);
    size_t files = 0;
    for (const auto & e : fs::directory_iterator(dir)) files += e.is_regular_file();
    EXPECT_EQ(files, 1u);   // no temporary left behind

    // a missing key takes the default's value
    const MachineProfile partial = profile_from_json(json{{"device", "cuda"}, {"h2d_gbps", 20.5}}, "mem");
    EXPECT_EQ(partial.h2d_gbps, 20.5);
    EXPECT_EQ(partial.memory_gbps, default_profile("cuda").memory_gbps);
    EXPECT_FALSE(partial.matmul.empty());
}

TEST(MachineProfile, HostileFilesFailNamingTheKey) {
    expect_rejected(json{{"h2d_gbps", -1.0}}, "h2d_gbps", "> 0");
    expect_rejected(json{{"h2d_gbps", 1e300}}, "h2d_gbps");
    expect_rejected(json{{"memory_gbps", "fast"}}, "memory_gbps", "number");
    expect_rejected(json{{"memory_gbps", 0}}, "memory_gbps");
    expect_rejected(json{{"device", "tpu"}}, "device");
    expect_rejected(json{{"version", 2}}, "version");
    expect_rejected(json{{"threads", 2.5}}, "threads", "whole number");
    expect_rejected(json{{"allgather_busbw_gbps", {{"two", 5.0}}}}, "allgather_busbw_gbps.two");
    expect_rejected(json{{"allgather_busbw_gbps", {{"2", -5.0}}}}, "allgather_busbw_gbps.2");
    expect_rejected(json{{"matmul", json::object()}}, "matmul");
    expect_rejected(json{{"matmul", {{"bf17", {{1, 1e-9}}}}}}, "matmul.bf17", "weight dtype");
    expect_rejected(json{{"matmul", {{"bf16", json::array()}}}}, "matmul.bf16");
    expect_rejected(json{{"matmul", {{"bf16", {{1, -1e-9}}}}}}, "matmul.bf16[0][1] (seconds per weight)");
    expect_rejected(json{{"matmul", {{"bf16", {{1, 1e-9}, {1, 2e-9}}}}}}, "matmul.bf16[1]", "increasing T");
    expect_rejected(json{{"matmul", {{"bf16", {{0, 1e-9}}}}}}, "matmul.bf16[0][0] (T)");
    expect_rejected(json{{"attention", {{"decode_gflops", 1e300}}}}, "attention.decode_gflops");
    expect_rejected(json{{"overhead", {{"unit_s", -1e-6}}}}, "overhead.unit_s");
    expect_rejected(json::array(), "(top level)");
    // NaN cannot be written in JSON text, but a json value made in code can hold it
    expect_rejected(json{{"h2d_gbps", std::nan("")}}, "h2d_gbps");
    expect_rejected(json{{"reuse_factor", {{"big", {{1, 0.5}}}}}}, "reuse_factor.big", "ring size");
    expect_rejected(json{{"reuse_factor", {{"1048576", {{1, 2.0}}}}}}, "reuse_factor.1048576[0][1] (seconds per weight)");
    expect_rejected(json{{"copy_latency_s", -1e-6}}, "copy_latency_s");

    const std::string dir = make_temp_dir("profile-bad");
    write_file(dir + "/bad.json", "{\"h2d_gbps\": ");
    try {
        load_profile(dir + "/bad.json");
        ADD_FAILURE() << "accepted a truncated file";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), dir + "/bad.json");
        EXPECT_HAS(e.message(), "ztinfer bench --profile");
    }
    try {
        load_profile(dir + "/missing.json");
        ADD_FAILURE() << "accepted a missing file";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), dir + "/missing.json");
    }
}

TEST(MachineProfile, DefaultsAreSaneAndNamed) {
    for (const std::string dev : {"cpu", "cuda"}) {
        const MachineProfile p = default_profile(dev);
        EXPECT_EQ(p.device, dev);
        EXPECT_HAS(p.source, "defaults");
        EXPECT_HAS(p.source, "H2D");
        EXPECT_HAS(p.source, "NVMe");
        EXPECT_HAS(p.source, "all-gather");
        EXPECT_GT(p.h2d_gbps, 0);
        EXPECT_GT(p.memory_gbps, 0);
        EXPECT_GT(p.attention_decode_gflops, 0);
        EXPECT_GT(p.attention_prefill_gflops, 0);
        EXPECT_GT(p.unit_overhead_s, 0);
        EXPECT_EQ(profile_to_json(profile_from_json(profile_to_json(p), "mem")), profile_to_json(p));   // valid
        for (const char * d : {"f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"})
            EXPECT_TRUE(p.matmul.count(d)) << dev << " " << d;
        // decode (T = 1) is memory bound: fewer bits, less time; large T is compute bound: time grows with T
        const double t1 = p.matmul_seconds(DType::BF16, 1, 4096, 4096);
        EXPECT_LT(p.matmul_seconds(DType::Q4_K, 1, 4096, 4096), t1);
        EXPECT_GT(p.matmul_seconds(DType::BF16, 4096, 4096, 4096), 10 * t1);
        // bf16 at T = 1 reads 2 bytes per weight at the memory rate
        EXPECT_NEAR(t1 / (4096.0 * 4096.0), 2.0 / (p.memory_gbps * 1e9), 0.5 * 2.0 / (p.memory_gbps * 1e9));
    }
    EXPECT_GT(default_profile("cuda").h2d_gbps, default_profile("cpu").h2d_gbps);
    EXPECT_THROW(default_profile("tpu"), Error);
}

// `ztinfer bench --profile` in quick mode (small copies and cold pool, 256 x 256 matmuls, 1 thread): every figure
// positive, every weight dtype's table over T = 1 .. 512, and a second run keeps the all-gather entry of another
// world that the file already had.
TEST(MachineProfile, BenchProfileWritesPositiveFiguresAndMerges) {
    const std::string dir = make_temp_dir("bench-profile");
    const std::string path = dir + "/prof.json";
    const std::string cmd = std::string(ZT_BINARY) + " bench --device cpu --threads 1 --max-bytes 8MiB --iters 2 "
                            "--hidden 256 --profile " + path;
    const JobRunResult r = run_job_command(cmd);
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_HAS(r.log, "machine profile");
    EXPECT_HAS(r.log, "wrote " + path);
    const MachineProfile p = load_profile(path);
    EXPECT_EQ(p.device, "cpu");
    EXPECT_HAS(p.source, "measured by ztinfer bench --profile");
    EXPECT_EQ(p.threads, 1);
    EXPECT_GT(p.cores, 0);
    EXPECT_FALSE(p.device_name.empty());
    EXPECT_GT(p.h2d_gbps, 0);
    EXPECT_GT(p.memcpy_gbps, 0);
    EXPECT_GT(p.memory_gbps, 0);
    EXPECT_EQ(p.nvme_gbps, 0);                                   // no --nvme-path: 0 = not measured
    EXPECT_TRUE(p.allgather_busbw_gbps.empty());                 // world 1: no entry
    EXPECT_GT(p.attention_decode_gflops, 0);
    EXPECT_GT(p.attention_prefill_gflops, 0);
    EXPECT_GT(p.unit_overhead_s, 0);
    EXPECT_GE(p.step_overhead_s, 0);
    EXPECT_GT(p.copy_latency_s, 0);
    EXPECT_GT(p.paced_copy_latency_s, 0);
    ASSERT_FALSE(p.reuse_factor.empty());   // rings of 1 .. 8 MiB (the pool is 8 MiB here)
    for (const auto & [ring, t] : p.reuse_factor) {
        EXPECT_GE(ring, size_t(1) << 20);
        for (const auto & [T, f] : t) EXPECT_TRUE(f > 0 && f <= 1) << ring << " " << T << " " << f;
    }
    for (const char * d : {"f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"}) {
        ASSERT_TRUE(p.matmul.count(d)) << d;
        const auto & t = p.matmul.at(d);
        ASSERT_EQ(t.size(), 10u) << d;
        EXPECT_EQ(t.front().first, 1);
        EXPECT_EQ(t.back().first, 512);
        for (const auto & pt : t) EXPECT_GT(pt.second, 0) << d;
        // 512 tokens cost more than 1 (each weight is used 512 times)
        EXPECT_GT(t.back().second, t.front().second) << d;
    }

    json j = json::parse(read_file(path));
    j["allgather_busbw_gbps"] = {{"4", 1.5}};
    write_file(path, j.dump());
    const JobRunResult again = run_job_command(cmd);
    ASSERT_EQ(again.status, 0) << again.log;
    EXPECT_HAS(again.log, "merged with " + path);
    EXPECT_EQ(load_profile(path).allgather_busbw_gbps, (std::map<int, double>{{4, 1.5}}));
}

// A --profile file in a folder that does not exist fails before a minute of measuring, naming the folder.
TEST(MachineProfile, BenchProfileInMissingFolderFailsAtOnce) {
    const std::string dir = make_temp_dir("bench-profile-missing") + "/no/such";
    const JobRunResult r = run_job_command(std::string(ZT_BINARY) + " bench --device cpu --threads 1 --profile " + dir + "/p.json");
    EXPECT_NE(r.status, 0) << r.log;
    EXPECT_HAS(r.log, dir);
    EXPECT_HAS(r.log, "does not exist");
    EXPECT_FALSE(fs::exists(dir + "/p.json"));
}
