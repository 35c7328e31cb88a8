// `ztinfer bench` (runtime/bench/benchmark.cpp) through the binary, on the CPU backend at tiny sizes: every table runs,
// verifies what it moved (#wrong == 0), and writes the JSON figures docs are made from; the streamed decode
// step's link efficiency is in (0, 1.5]; the nvme table is skipped with a line without --nvme-path; bad options
// and an unusable --device cuda fail clearly; under mpirun -np 2 the all-gather table prints busbw.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "job_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt::test;

namespace {

// A tiny llama-like shape (2 layers of hidden 128; the MLP matrices, 128 x 1024, are above the default persistence
// threshold of 100000 elements, so they are streamed) and few iterations: every table runs in about a second.
// Each test adds --device, --shape and the byte sizes (CLI11 refuses an option given twice).
const char * kTiny = "--threads 1 --hidden 128 --intermediate 1024 --heads 2 --kv-heads 1 --vocab 256 --layers 2 "
                     "--batch 1,4 --context 16 --prompt 8 --iters 3 --warmup 1 --steps 2";
const char * kSmallSizes = " --min-bytes 64KiB --max-bytes 1MiB";

std::string bench(const std::string & args) { return std::string(ZT_BINARY) + " bench " + kTiny + " " + args; }

void expect_rows_ok(const json & table, const char * name) {
    ASSERT_TRUE(table.contains("rows")) << name;
    ASSERT_FALSE(table["rows"].empty()) << name;
    for (const auto & row : table["rows"]) {
        EXPECT_FALSE(row.contains("skipped")) << name << ": " << row.dump();
        EXPECT_EQ(row.value("wrong", -1), 0) << name << ": " << row.dump();
    }
}

}  // namespace

TEST(Benchmark, EveryTableOnCpuAtTinySizes) {
    const std::string dir = make_temp_dir("bench");
    const std::string json_path = dir + "/bench.json";
    const JobRunResult r = run_job_command(bench(std::string("--device cpu") + kSmallSizes + " --nvme-path " + dir +
                                      " --nvme-bytes 2MiB --aio-block-size 256KiB --json " + json_path));
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_HAS(r.log, "backend cpu");
    EXPECT_HAS(r.log, "host memory");   // on CPU the "device" is host memory: the header says so
    EXPECT_HAS(r.log, "#wrong");
    EXPECT_HAS(r.log, "busbw");
    EXPECT_HAS(r.log, "#wrong in all: 0 OK");

    const json j = json::parse(read_file(json_path));
    EXPECT_EQ(j["backend"], "cpu");
    EXPECT_EQ(j["ranks"], 1);
    EXPECT_EQ(j["communicator"], "local");
    EXPECT_EQ(j["wrong"], 0);

    expect_rows_ok(j["h2d"], "h2d");
    EXPECT_EQ(j["h2d"]["rows"].size(), 5u);   // 64 KiB .. 1 MiB
    for (const auto & row : j["h2d"]["rows"]) {
        EXPECT_GT(row["gbps"].get<double>(), 0);
        EXPECT_GT(row["time_us"].get<double>(), 0);
    }

    expect_rows_ok(j["nvme"], "nvme");
    EXPECT_EQ(j["nvme"]["file_bytes"], 2u << 20);
    EXPECT_EQ(j["nvme"]["block_size"], 256u << 10);
    for (const auto & row : j["nvme"]["rows"]) EXPECT_GT(row["gbps"].get<double>(), 0);
    EXPECT_FALSE(fs::exists(dir + "/ztinfer-bench-rank0.nvme")) << "the NVMe test file is removed afterwards";

    expect_rows_ok(j["allgather"], "allgather");
    for (const auto & row : j["allgather"]["rows"]) {
        EXPECT_EQ(row["busbw_gbps"].get<double>(), 0.0);   // one rank moves nothing over the link
        EXPECT_EQ(row["slice_bytes"], row["bytes"]);
        for (const char * k : {"time_us", "algbw_gbps"}) EXPECT_TRUE(row.contains(k)) << k;
    }

    expect_rows_ok(j["layer"], "layer");
    EXPECT_EQ(j["layer"]["hidden"], 128);
    ASSERT_EQ(j["layer"]["rows"].size(), 4u);   // decode and prefill x batch 1, 4
    for (const auto & row : j["layer"]["rows"]) {
        for (const char * k : {"phase", "batch", "tokens", "time_us", "tokens_per_s", "weight_gbps", "tflops"})
            EXPECT_TRUE(row.contains(k)) << k << " in " << row.dump();
        EXPECT_GT(row["time_us"].get<double>(), 0);
        EXPECT_EQ(row["tokens"].get<int>(), row["batch"].get<int>() * (row["phase"] == "decode" ? 1 : 8));
    }

    expect_rows_ok(j["gemm"], "gemm");
    EXPECT_EQ(j["gemm"]["reference"], "openblas sgemm");
    ASSERT_EQ(j["gemm"]["rows"].size(), 3u);   // q, gate, down
    for (const auto & row : j["gemm"]["rows"]) {
        for (const char * k : {"T", "N", "K", "ztinfer_us", "plain_us", "ztinfer_tflops", "plain_tflops", "ratio"})
            EXPECT_TRUE(row.contains(k)) << k << " in " << row.dump();
        EXPECT_GT(row["ratio"].get<double>(), 0) << row.dump();
        EXPECT_EQ(row["T"].get<int>(), 8);
    }

    const json & d = j["decode"];
    expect_rows_ok(d, "decode");
    EXPECT_EQ(d["layers"], 2);
    EXPECT_EQ(d["offload"], "cpu");
    EXPECT_EQ(d["prefetch_depth"], 2);
    ASSERT_EQ(d["rows"].size(), 2u);
    for (const auto & row : d["rows"]) {
        for (const char * k : {"batch", "step_ms", "fetched_bytes_per_rank", "h2d_gbps", "link_efficiency",
                               "tokens_per_s"})
            EXPECT_TRUE(row.contains(k)) << k << " in " << row.dump();
        const double eff = row["link_efficiency"].get<double>();
        EXPECT_GT(eff, 0.0) << row.dump();
        EXPECT_LE(eff, 1.5) << row.dump();
        EXPECT_GE(row["fetched_bytes_per_rank"].get<size_t>(), 2u * 4096);   // two streamed layers, 4 KiB-aligned
        EXPECT_NEAR(row["tokens_per_s"].get<double>(), row["batch"].get<double>() / (row["step_ms"].get<double>() * 1e-3),
                    1e-6 * row["tokens_per_s"].get<double>());
    }
    fs::remove_all(dir);
}

TEST(Benchmark, NvmeSkippedWithALineWithoutPath) {
    const std::string dir = make_temp_dir("bench");
    const JobRunResult r = run_job_command(bench(std::string("--device cpu") + kSmallSizes + " --only nvme --json " + dir +
                                      "/b.json"));
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_HAS(r.log, "nvme: skipped");
    const json j = json::parse(read_file(dir + "/b.json"));
    EXPECT_TRUE(j["nvme"].contains("skipped"));
    EXPECT_FALSE(j.contains("h2d"));   // --only runs just that table
    fs::remove_all(dir);
}

TEST(Benchmark, BadOptionsAreClearErrors) {
    JobRunResult r = run_job_command(bench("--device cpu --only h2d,warp"));
    EXPECT_NE(r.status, 0);
    EXPECT_HAS(r.log, "--only warp");
    r = run_job_command(bench("--device cpu --shape gpt-5"));
    EXPECT_NE(r.status, 0);
    EXPECT_HAS(r.log, "llama2-70b");
    r = run_job_command(bench("--device cpu --max-bytes lots"));
    EXPECT_NE(r.status, 0);
    EXPECT_HAS(r.log, "--max-bytes");
}

TEST(Benchmark, UnusableCudaExitsWithTwoAndSaysWhy) {
    if (zt::cuda_backend_compiled() && zt::cuda_unavailable_reason().empty())
        GTEST_SKIP() << "a usable CUDA device is here: --device cuda would run";
    const JobRunResult r = run_job_command(bench("--device cuda --only h2d"));
    EXPECT_EQ(r.status, 2) << r.log;
    EXPECT_HAS(r.log, zt::cuda_unavailable_reason());
}

TEST(Benchmark, AllGatherUnderMpirunPrintsBusBandwidth) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    const std::string dir = make_temp_dir("bench");
    const std::string cmd = std::string("timeout -k 5 120 ") + ZT_MPIEXEC + " --oversubscribe --bind-to none -np 2 " +
                            bench("--device cpu --only allgather,decode --min-bytes 4KiB --max-bytes 256KiB "
                                  "--json " + dir + "/b.json");
    const JobRunResult r = run_job_command(cmd);
    ASSERT_EQ(r.status, 0) << r.log;
    EXPECT_HAS(r.log, "busbw");
    EXPECT_HAS(r.log, "2 rank(s)");
    EXPECT_HAS(r.log, "#wrong in all: 0 OK");
    const json j = json::parse(read_file(dir + "/b.json"));
    EXPECT_EQ(j["ranks"], 2);
    EXPECT_EQ(j["communicator"], "mpi");
    expect_rows_ok(j["allgather"], "allgather");
    for (const auto & row : j["allgather"]["rows"]) {
        EXPECT_EQ(row["bytes"].get<size_t>(), 2 * row["slice_bytes"].get<size_t>());
        EXPECT_NEAR(row["busbw_gbps"].get<double>(), row["algbw_gbps"].get<double>() / 2, 1e-9);
        EXPECT_GT(row["busbw_gbps"].get<double>(), 0);
    }
    expect_rows_ok(j["decode"], "decode");   // every rank steps through the streamed layers together
    for (const auto & row : j["decode"]["rows"]) {
        const double eff = row["link_efficiency"].get<double>();
        EXPECT_GT(eff, 0.0);
        EXPECT_LE(eff, 1.5);
    }
    fs::remove_all(dir);
#endif
}
