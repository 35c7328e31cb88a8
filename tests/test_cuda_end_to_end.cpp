// The CUDA backend end to end on the HF fixture models (tests/data/hf), against the CPU backend:
//  - fp32 compute (ztinfer.compute_dtype "fp32"): the CUDA greedy tokens equal the CPU's, every prompt, 16 tokens;
//  - bf16 compute: where the greedy continuations first differ, each side's token is among the other side's top 5
//    at that position (vLLM's rule for comparing kernels of different precision);
//  - the ztinfer binary with "device": "cuda": for one world size, offload none / cpu / nvme and overlap on / off
//    give bit-identical token_ids and logprobs (1 rank, and 2 ranks sharing the GPU through MPI staging).
//  - GGUF-quantized weights (CudaQuant): matmul for every block type at T = 1..130 (the GEMV of small T, the
//    dequantize + cuBLASLt GEMM of large T, with tiles of W rows) and the embedding of a quantized table, against
//    quant_block's dequantize_row and a double dot; bit-identical run to run.
// With no usable GPU every test skips with one line saying why (CI has none).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/quant_block.h"
#include "runtime/stream/forward.h"
#include "runtime/model/model_config.h"
#include "job_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt;
using namespace zt::test;

namespace {

#define REQUIRE_CUDA()                                                                    \
    do {                                                                                  \
        const std::string why = cuda_unavailable_reason();                                \
        if (!why.empty()) GTEST_SKIP() << "no GPU, CUDA end-to-end test skipped: " << why; \
    } while (0)

const char * const kFixtures[] = {"llama-fp32", "llama-bf16", "mistral-fp32", "mistral-bf16",
                                  "qwen2-fp32", "qwen2-bf16", "qwen3-fp32",   "qwen3-bf16"};

// Greedy continuation of every prompt (run as one batch), with the logits of each generated position.
struct Greedy {
    std::vector<std::vector<int32_t>> tokens;                // [prompt][step]
    std::vector<std::vector<std::vector<float>>> logits;     // [prompt][step] -> (V)
};

Greedy greedy(Backend & be, const ModelConfig & cfg, const ModelWeights & w,
              const std::vector<std::vector<int32_t>> & prompts, int steps) {
    Forward fwd(cfg, w, be);
    int32_t max_len = 0;
    for (const auto & p : prompts) max_len = std::max<int32_t>(max_len, int32_t(p.size()) + steps);
    fwd.reserve(int32_t(prompts.size()), max_len);
    const int64_t V = cfg.vocab_size;
    Greedy g;
    g.tokens.resize(prompts.size());
    g.logits.resize(prompts.size());
    std::vector<float> logits;
    std::vector<int32_t> last(prompts.size());
    for (int step = 0; step < steps; ++step) {
        std::vector<SequenceStep> batch;
        for (size_t i = 0; i < prompts.size(); ++i) {
            SequenceStep s;
            s.cache_slot = int32_t(i);
            if (step == 0) {
                s.past_len = 0;
                s.tokens = prompts[i].data();
                s.n_tokens = int32_t(prompts[i].size());
            } else {
                s.past_len = int32_t(prompts[i].size()) + step - 1;
                s.tokens = &last[i];
                s.n_tokens = 1;
            }
            batch.push_back(s);
        }
        fwd.step(batch, logits);
        for (size_t i = 0; i < prompts.size(); ++i) {
            const float * row = logits.data() + int64_t(i) * V;
            last[i] = int32_t(std::max_element(row, row + V) - row);
            g.tokens[i].push_back(last[i]);
            g.logits[i].emplace_back(row, row + V);
        }
    }
    return g;
}

std::vector<int32_t> top_k_ids(const std::vector<float> & row, int k) {
    std::vector<int32_t> ids(row.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)] || (row[size_t(a)] == row[size_t(b)] && a < b); });
    ids.resize(size_t(k));
    return ids;
}

std::vector<std::vector<int32_t>> fixture_prompts(const std::string & dir) {
    const json ref = json::parse(read_file(dir + "/reference.json"));
    return ref.at("prompts").get<std::vector<std::vector<int32_t>>>();
}

class CudaFixture : public ::testing::TestWithParam<const char *> {};

// The fixture's greedy continuations on the CPU backend (a) and on the GPU with `compute_dtype` (b).
struct CpuVsGpu {
    std::vector<std::vector<int32_t>> prompts;
    Greedy a, b;
};
CpuVsGpu run_both(const std::string & fixture, const std::string & compute_dtype) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/hf/" + fixture;
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    const ModelWeights w = bind_weights(ckpt, cfg);
    CpuVsGpu r;
    r.prompts = fixture_prompts(dir);
    auto cpu = make_cpu_backend(1);
    CudaBackendOptions o;
    o.compute_dtype = compute_dtype;
    auto gpu = make_cuda_backend(o);
    r.a = greedy(*cpu, cfg, w, r.prompts, 16);
    r.b = greedy(*gpu, cfg, w, r.prompts, 16);
    return r;
}

TEST_P(CudaFixture, Fp32ComputeGreedyTokensEqualTheCpuBackend) {
    REQUIRE_CUDA();
    const CpuVsGpu r = run_both(GetParam(), "fp32");
    const auto & prompts = r.prompts;
    const Greedy & a = r.a;
    const Greedy & b = r.b;
    for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(b.tokens[i], a.tokens[i]) << GetParam() << " prompt " << i;
        // and the logits of the first generated position agree closely (report the NMSE)
        double num = 0, den = 0;
        for (size_t v = 0; v < a.logits[i][0].size(); ++v) {
            const double d = double(b.logits[i][0][v]) - a.logits[i][0][v];
            num += d * d;
            den += double(a.logits[i][0][v]) * a.logits[i][0][v];
        }
        const double nmse = den > 0 ? num / den : num;
        std::printf("  %s prompt %zu: first-position logits NMSE %.3g (fp32 compute)\n", GetParam(), i, nmse);
        EXPECT_LE(nmse, 1e-7) << GetParam() << " prompt " << i;
    }
}

TEST_P(CudaFixture, Bf16ComputeFirstDifferenceIsInEachOthersTop5) {
    REQUIRE_CUDA();
    const CpuVsGpu r = run_both(GetParam(), "bf16");
    const auto & prompts = r.prompts;
    const Greedy & a = r.a;
    const Greedy & b = r.b;
    for (size_t i = 0; i < prompts.size(); ++i) {
        size_t k = 0;
        while (k < a.tokens[i].size() && a.tokens[i][k] == b.tokens[i][k]) ++k;
        std::printf("  %s prompt %zu: bf16 compute agrees with the CPU for %zu of 16 tokens\n", GetParam(), i, k);
        if (k == a.tokens[i].size()) continue;
        const auto cpu_top = top_k_ids(a.logits[i][k], 5), gpu_top = top_k_ids(b.logits[i][k], 5);
        EXPECT_NE(std::find(gpu_top.begin(), gpu_top.end(), a.tokens[i][k]), gpu_top.end())
            << GetParam() << " prompt " << i << " step " << k << ": the CPU's token is not in the GPU's top 5";
        EXPECT_NE(std::find(cpu_top.begin(), cpu_top.end(), b.tokens[i][k]), cpu_top.end())
            << GetParam() << " prompt " << i << " step " << k << ": the GPU's token is not in the CPU's top 5";
    }
}

INSTANTIATE_TEST_SUITE_P(Hf, CudaFixture, ::testing::ValuesIn(kFixtures),
                         [](const auto & info) { std::string n = info.param; std::replace(n.begin(), n.end(), '-', '_'); return n; });

// ---- the binary: tiers and overlap on the GPU ----------------------------------------------------------

int run_status(const std::string & cmd, std::string & log) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    log = command_output(cmd + " 2>&1; echo \"exit=$?\"");
    const size_t p = log.rfind("exit=");
    return p == std::string::npos ? -1 : std::atoi(log.c_str() + p + 5);
}

json essence(const std::string & path) {
    json e = json::object();
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const json r = json::parse(line);
        e[r["custom_id"].get<std::string>()] = {r["token_ids"], r.value("logprobs", json()), r["finish_reason"]};
    }
    return e;
}

// <path>: one request per fixture prompt (token ids), 4, 8, 12 new tokens, with logprobs.
void write_fixture_requests(const std::string & model, const std::string & path) {
    std::ofstream in(path);
    const auto prompts = fixture_prompts(model);
    for (size_t i = 0; i < prompts.size(); ++i)
        in << json{{"custom_id", "p" + std::to_string(i)}, {"prompt_token_ids", prompts[i]},
                   {"max_tokens", 4 + 4 * int(i)}, {"logprobs", true}}.dump() << "\n";
}

TEST(CudaJob, TiersAndOverlapAreBitIdenticalOnTheGpu) {
    REQUIRE_CUDA();
    const std::string model = std::string(ZT_TEST_DATA) + "/hf/qwen2-bf16";
    const std::string dir = make_temp_dir("cuda_job");
    write_fixture_requests(model, dir + "/in.jsonl");
    std::vector<int> worlds = {1};
#ifdef ZT_MPIEXEC
    worlds.push_back(2);   // two ranks on one GPU: the MPI communicator stages device buffers through the host
#endif
    for (int np : worlds) {
        json want;
        for (const char * tier : {"none", "cpu", "nvme"})
            for (bool overlap : {true, false}) {
                const std::string name = fmt::format("np{}-{}-{}", np, tier, overlap ? "overlap" : "sync");
                json ds;
                ds["zero_optimization"] = {{"stage", 3}, {"stage3_param_persistence_threshold", 1000},
                                           {"offload_param", {{"device", tier}, {"nvme_path", dir + "/nvme-" + name}}}};
                ds["ztinfer"] = {{"model", model}, {"input", dir + "/in.jsonl"}, {"output", dir + "/" + name + ".jsonl"},
                                 {"device", "cuda"}, {"batch_size", 2}, {"resume", false}, {"max_new_tokens", 16},
                                 {"overlap", overlap}, {"communicator", "auto"}};
                std::ofstream(dir + "/" + name + ".json") << ds.dump(2);
                std::string cmd = std::string(ZT_BINARY) + " --config " + dir + "/" + name + ".json";
#ifdef ZT_MPIEXEC
                if (np > 1) cmd = std::string(ZT_MPIEXEC) + " --oversubscribe --bind-to none -np " + std::to_string(np) + " " + cmd;
#endif
                std::string log;
                ASSERT_EQ(run_status(cmd, log), 0) << name << "\n" << log;
                const json got = essence(dir + "/" + name + ".jsonl");
                ASSERT_EQ(got.size(), 3u) << name;
                if (want.is_null()) want = got;
                else EXPECT_EQ(got, want) << name << " differs from np" << np << "-none-overlap";
            }
    }
    fs::remove_all(dir);
}

TEST(CudaJob, TwoTcpRanksSharingOneGpuStageAndGiveTheRecordsOfOneRank) {
    REQUIRE_CUDA();
    // two ranks on one GPU over TCP (no mpirun): NCCL refuses a shared GPU, so the TCP communicator stages the
    // device buffers through pinned host memory (found by the GPU's UUID: both ranks see the same one)
    const std::string model = std::string(ZT_TEST_DATA) + "/hf/qwen2-bf16";
    const std::string dir = make_temp_dir("cuda_tcp");
    write_fixture_requests(model, dir + "/in.jsonl");
    auto config = [&](const std::string & name) {
        json ds;
        ds["zero_optimization"] = {{"stage", 3}, {"stage3_param_persistence_threshold", 1000},
                                   {"offload_param", {{"device", "cpu"}}}};
        ds["ztinfer"] = {{"model", model}, {"input", dir + "/in.jsonl"}, {"output", dir + "/" + name + ".jsonl"},
                         {"device", "cuda"}, {"batch_size", 2}, {"resume", false}, {"max_new_tokens", 16}};
        std::ofstream(dir + "/" + name + ".json") << ds.dump(2);
        return dir + "/" + name + ".json";
    };
    std::string log;
    ASSERT_EQ(run_status(std::string(ZT_BINARY) + " --config " + config("one"), log), 0) << log;
    auto ks = run_tcp_job(dir, config("tcp2"), 2, 300);
    for (int r = 0; r < 2; ++r) ASSERT_EQ(ks[size_t(r)].status, 0) << "rank " << r << "\n" << ks[size_t(r)].log();
    EXPECT_NE(ks[0].log().find("communicator: TCP with device buffers staged"), std::string::npos) << ks[0].log();
    EXPECT_EQ(essence(dir + "/tcp2.jsonl"), essence(dir + "/one.jsonl"));
    fs::remove_all(dir);
}

// ---- GGUF-quantized weights -----------------------------------------------------------------------------

// R rows of K weights of type q: random bytes with finite f16 scales (|d| < 0.05).
std::vector<uint8_t> random_quant_rows(QuantType q, int64_t R, int64_t K, std::mt19937 & g) {
    const QuantLayout & l = quant_layout(q);
    const int64_t nb = R * (K / l.block_weights);
    std::vector<uint8_t> b(size_t(nb * l.block_bytes));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (auto & c : b) c = uint8_t(byte(g));
    const std::vector<int> halves = q == QuantType::Q6_K ? std::vector<int>{208}
                                    : (q == QuantType::Q8_0 || q == QuantType::Q4_0) ? std::vector<int>{0}
                                                                                     : std::vector<int>{0, 2};
    for (int64_t i = 0; i < nb; ++i)
        for (int off : halves) {
            const uint16_t h = f32_to_f16(scale(g));
            std::memcpy(&b[size_t(i * l.block_bytes + off)], &h, 2);
        }
    return b;
}

// Device copies of host bytes on be, and back.
Buffer to_device(Backend & be, const void * p, size_t bytes) {
    Buffer b = be.alloc(std::max<size_t>(bytes, 1), MemKind::device, "test");
    be.copy_async(b.data(), p, bytes, be.stream(StreamRole::compute));
    be.synchronize(nullptr);
    return b;
}
std::vector<float> to_host(Backend & be, const Buffer & b, size_t n) {
    std::vector<float> v(n);
    be.copy_async(v.data(), b.data(), n * sizeof(float), be.stream(StreamRole::compute));
    be.synchronize(nullptr);
    return v;
}

// out (T,N) = x · w^T (+ bias) on the GPU with `compute`, twice (must be the same bits), NMSE vs a double dot of
// the dequantized weights.
double quant_matmul_nmse(Backend & gpu, QuantType q, int64_t T, int64_t N, int64_t K, bool bias, std::mt19937 & g) {
    const std::vector<uint8_t> w = random_quant_rows(q, N, K, g);
    std::vector<float> x(size_t(T * K)), bv(static_cast<size_t>(N));
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (auto & f : x) f = u(g);
    for (auto & f : bv) f = u(g);
    const DType dt = dtype_of(q);
    Buffer dw = to_device(gpu, w.data(), w.size()), dx = to_device(gpu, x.data(), x.size() * 4),
           db = to_device(gpu, bv.data(), bv.size() * 4);
    Buffer o1 = gpu.alloc(size_t(T * N) * 4, MemKind::device, "test"), o2 = gpu.alloc(size_t(T * N) * 4, MemKind::device, "test");
    const Tensor tw(dw.data(), dt, {N, K}), tx(dx.data(), DType::F32, {T, K});
    const Tensor tb = bias ? Tensor(db.data(), DType::F32, {N}) : Tensor();
    gpu.matmul(Tensor(o1.data(), DType::F32, {T, N}), tx, tw, tb);
    gpu.matmul(Tensor(o2.data(), DType::F32, {T, N}), tx, tw, tb);
    const std::vector<float> a = to_host(gpu, o1, size_t(T * N)), a2 = to_host(gpu, o2, size_t(T * N));
    EXPECT_EQ(std::memcmp(a.data(), a2.data(), a.size() * 4), 0) << quant_layout(q).name << " T=" << T
                                                                 << ": not reproducible run to run";
    std::vector<float> wf(size_t(N * K));
    const int64_t rb = quant_row_bytes(q, K);
    for (int64_t n = 0; n < N; ++n) dequantize_row(q, w.data() + n * rb, &wf[size_t(n * K)], K);
    double num = 0, den = 0;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
            double ref = bias ? double(bv[size_t(n)]) : 0.0;
            for (int64_t k = 0; k < K; ++k) ref += double(wf[size_t(n * K + k)]) * double(x[size_t(t * K + k)]);
            const double d = double(a[size_t(t * N + n)]) - ref;
            num += std::isfinite(d) ? d * d : INFINITY;
            den += ref * ref;
        }
    return den > 0 ? num / den : num;
}

const QuantType kQuantTypes[] = {QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1,
                                 QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K};

TEST(CudaQuant, MatmulMatchesTheDequantizedDot) {
    REQUIRE_CUDA();
    std::mt19937 g(14);
    for (const char * compute : {"auto", "fp32", "fp16"}) {
        CudaBackendOptions o;
        o.compute_dtype = compute;
        auto gpu = make_cuda_backend(o);
        for (QuantType q : kQuantTypes)
            for (int64_t T : {1, 3, 8, 9, 17, 130}) {
                const int64_t K = 2 * quant_layout(q).block_weights, N = 67;
                const double nmse = quant_matmul_nmse(*gpu, q, T, N, K, T == 3 || T == 17, g);
                // T <= 8: the fp32 GEMV whatever compute says; above: the GEMM on `compute` operands
                const bool gemv = T <= 8, exact = gemv || std::string(compute) == "fp32";
                std::printf("  %s T=%lld compute %s: NMSE %.3g (%s)\n", quant_layout(q).name, (long long)T, compute, nmse,
                            gemv ? "GEMV" : "GEMM");
                EXPECT_LE(nmse, exact ? 1e-9 : 5e-4) << quant_layout(q).name << " T=" << T << " compute " << compute;
            }
    }
}

// W larger than one 64 MiB tile of dequantized rows: two tiles, the second of 64 rows.
TEST(CudaQuant, MatmulOverSeveralTilesOfRows) {
    REQUIRE_CUDA();
    std::mt19937 g(15);
    CudaBackendOptions o;
    o.compute_dtype = "fp32";
    auto gpu = make_cuda_backend(o);
    const int64_t K = 2048, N = (int64_t(64) << 20) / (K * 4) + 64;
    const double nmse = quant_matmul_nmse(*gpu, QuantType::Q4_K, 9, N, K, true, g);
    std::printf("  Q4_K T=9 N=%lld K=%lld (2 tiles, fp32): NMSE %.3g\n", (long long)N, (long long)K, nmse);
    EXPECT_LE(nmse, 1e-9);
}

TEST(CudaQuant, EmbeddingIsDequantizeRow) {
    REQUIRE_CUDA();
    std::mt19937 g(16);
    auto gpu = make_cuda_backend(CudaBackendOptions{});
    for (QuantType q : kQuantTypes) {
        const int64_t V = 11, C = 3 * quant_layout(q).block_weights, T = 17;
        const std::vector<uint8_t> table = random_quant_rows(q, V, C, g);
        std::vector<int32_t> tok(static_cast<size_t>(T));
        for (auto & t : tok) t = int32_t(g() % uint32_t(V));
        Buffer dt = to_device(*gpu, table.data(), table.size()), dtok = to_device(*gpu, tok.data(), tok.size() * 4);
        Buffer out = gpu->alloc(size_t(T * C) * 4, MemKind::device, "test");
        gpu->embedding(Tensor(out.data(), DType::F32, {T, C}), Tensor(dtok.data(), DType::I32, {T}),
                       Tensor(dt.data(), dtype_of(q), {V, C}));
        const std::vector<float> got = to_host(*gpu, out, size_t(T * C));
        std::vector<float> want(static_cast<size_t>(C));
        const int64_t rb = quant_row_bytes(q, C);
        for (int64_t t = 0; t < T; ++t) {
            dequantize_row(q, table.data() + tok[size_t(t)] * rb, want.data(), C);
            EXPECT_EQ(std::memcmp(&got[size_t(t * C)], want.data(), size_t(C) * 4), 0)
                << quant_layout(q).name << " row " << t << " differs from dequantize_row";
        }
    }
}

}  // namespace
