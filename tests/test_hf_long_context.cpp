// HF parity past the window and past the original context: tiny random fp32 models saved by transformers
// (tests/data/hf/<name>, made by examples/make_hf_fixtures.py --set long) with a sliding window of 8 (mistral on
// every layer; qwen2 with use_sliding_window + max_window_layers, so layer 0 attends fully and layers 1-2 slide),
// yarn RoPE (qwen2: Qwen2.5's rope_scaling form with original_max_position_embeddings 16; qwen3: rope_parameters
// with attention_factor, beta_fast/beta_slow, truncate false and no original_max_position_embeddings) and dynamic
// NTK RoPE (llama, max_position_embeddings 16). Prompts of 40 and 23 tokens, run through ModelConfig + Checkpoint +
// Forward (CPU backend; Cuda* also on the CUDA backend with fp32 compute, skipped without a GPU):
//  - the RoPE frequencies and attention scaling bit-identical to transformers' (dynamic: at several lengths);
//  - logits of every prompt position, both prompts in one step, within 1e-4 of HF's (relative to max |logit|);
//  - 16 greedy tokens per prompt, both prompts stepping the KV cache together, identical to HF generate;
//  - chunked prefill (5-token chunks, smaller than the window; both prompts in the same steps) against HF fed
//    the same chunks through its cache (for dynamic RoPE these differ from the one-piece prefill, as in HF);
//  - the ztinfer job (plain, and with prefill_chunk 5, 2 micro-batches and the KV cache offloaded): HF's greedy
//    tokens where prompt + max_tokens fits max_context() (yarn / dynamic: the scaled context), else an error
//    record that names the limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/model/rope.h"
#include "runtime/stream/forward.h"
#include "job_runner.h"
#include "test_support.h"

namespace zt {
namespace {

struct LongReference {
    std::vector<std::vector<int32_t>> prompts, greedy;
    std::vector<float> inv_freq;
    double attention_scaling = 1;
    int32_t chunk = 0;
    std::map<int64_t, std::vector<float>> inv_freq_at;   // dynamic: seq_len -> HF's frequencies for that call
    std::vector<float> logits, logits_chunked;           // (sum(len), V) each
};

std::vector<float> read_f32(const std::string & path) {
    std::ifstream b(path, std::ios::binary | std::ios::ate);
    EXPECT_TRUE(b.good()) << "missing " << path << ": run examples/make_hf_fixtures.py --set long";
    std::vector<float> v(size_t(b.tellg()) / sizeof(float));
    b.seekg(0);
    b.read(reinterpret_cast<char *>(v.data()), std::streamsize(v.size() * sizeof(float)));
    return v;
}

LongReference load_long_reference(const std::string & dir) {
    LongReference r;
    std::ifstream f(dir + "/reference.json");
    EXPECT_TRUE(f.good()) << "missing " << dir << "/reference.json: run examples/make_hf_fixtures.py --set long";
    const nlohmann::json j = nlohmann::json::parse(f);
    r.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
    r.greedy = j.at("greedy").get<std::vector<std::vector<int32_t>>>();
    r.inv_freq = j.at("inv_freq").get<std::vector<float>>();
    r.attention_scaling = j.at("attention_scaling").get<double>();
    r.chunk = j.at("chunk").get<int32_t>();
    if (j.contains("inv_freq_at"))
        for (const auto & [k, v] : j.at("inv_freq_at").items()) r.inv_freq_at[std::stoll(k)] = v.get<std::vector<float>>();
    r.logits = read_f32(dir + "/logits.bin");
    r.logits_chunked = read_f32(dir + "/logits_chunked.bin");
    return r;
}

int32_t argmax(const float * p, int64_t n) { return int32_t(std::max_element(p, p + n) - p); }

// Largest |got - want| / max |want| over the rows of (rows, V) logits; every row must be under 1e-4.
double check_rows(const std::vector<float> & got, const std::vector<float> & want, int64_t V, const std::string & what) {
    EXPECT_EQ(got.size(), want.size()) << what;
    double worst = 0;
    for (size_t row = 0; row * size_t(V) < std::min(got.size(), want.size()); ++row) {
        double max_abs = 0, max_err = 0;
        for (int64_t v = 0; v < V; ++v) {
            const float g = got[row * size_t(V) + size_t(v)], w = want[row * size_t(V) + size_t(v)];
            max_abs = std::max(max_abs, std::fabs(double(w)));
            max_err = std::max(max_err, std::fabs(double(g) - double(w)));
        }
        worst = std::max(worst, max_err / max_abs);
        EXPECT_LT(max_err / max_abs, 1e-4) << what << " row " << row;
    }
    return worst;
}

// Every check of the file header on one backend.
void run_long_context(const std::string & name, Backend & backend) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/hf/" + name;
    const LongReference ref = load_long_reference(dir);
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    const ModelWeights w = bind_weights(ckpt, cfg);
    const int64_t V = cfg.vocab_size;

    EXPECT_EQ(rope_inv_freq(cfg), ref.inv_freq) << name;
    EXPECT_EQ(rope_attention_scaling(cfg), float(ref.attention_scaling)) << name;
    for (const auto & [seq_len, freqs] : ref.inv_freq_at) EXPECT_EQ(rope_inv_freq(cfg, seq_len), freqs) << name << " " << seq_len;

    Forward fwd(cfg, w, backend);
    const int32_t n = int32_t(ref.prompts.size());
    fwd.reserve(n, 64);

    // 1. both prompts in one step, logits of every position
    std::vector<SequenceStep> batch;
    for (int32_t i = 0; i < n; ++i)
        batch.push_back({i, 0, ref.prompts[size_t(i)].data(), int32_t(ref.prompts[size_t(i)].size())});
    std::vector<float> logits;
    fwd.step(batch, logits, /*all_positions=*/true);
    const double worst = check_rows(logits, ref.logits, V, name + " prefill");

    // 2. greedy: the argmax of each prompt's last position, then one token per step through the KV cache
    std::vector<std::vector<int32_t>> gen(static_cast<size_t>(n));
    std::vector<int32_t> next(static_cast<size_t>(n));
    size_t row = 0;
    for (int32_t i = 0; i < n; ++i) {
        row += ref.prompts[size_t(i)].size();
        next[size_t(i)] = argmax(&logits[(row - 1) * size_t(V)], V);
    }
    const size_t n_new = ref.greedy[0].size();
    for (size_t step = 0; step < n_new; ++step) {
        batch.clear();
        for (int32_t i = 0; i < n; ++i) {
            gen[size_t(i)].push_back(next[size_t(i)]);
            batch.push_back({i, int32_t(ref.prompts[size_t(i)].size() + step), &gen[size_t(i)].back(), 1});
        }
        if (step + 1 == n_new) break;
        fwd.step(batch, logits);
        for (int32_t i = 0; i < n; ++i) next[size_t(i)] = argmax(&logits[size_t(i) * size_t(V)], V);
    }
    for (int32_t i = 0; i < n; ++i) EXPECT_EQ(gen[size_t(i)], ref.greedy[size_t(i)]) << name << " prompt " << i;

    // 3. chunked prefill over a cleared cache: step k brings chunk k of every prompt that still has one
    fwd.reserve(n, 64);
    std::vector<std::vector<float>> per_prompt(static_cast<size_t>(n));
    for (int32_t past = 0;; past += ref.chunk) {
        batch.clear();
        std::vector<int32_t> who;
        for (int32_t i = 0; i < n; ++i) {
            const int32_t len = int32_t(ref.prompts[size_t(i)].size());
            if (past >= len) continue;
            batch.push_back({i, past, ref.prompts[size_t(i)].data() + past, std::min(ref.chunk, len - past)});
            who.push_back(i);
        }
        if (batch.empty()) break;
        fwd.step(batch, logits, /*all_positions=*/true);
        size_t r0 = 0;
        for (size_t b = 0; b < batch.size(); ++b) {
            const size_t rows = size_t(batch[b].n_tokens) * size_t(V);
            auto & dst = per_prompt[size_t(who[b])];
            dst.insert(dst.end(), logits.begin() + std::ptrdiff_t(r0), logits.begin() + std::ptrdiff_t(r0 + rows));
            r0 += rows;
        }
    }
    std::vector<float> chunked;
    for (const auto & p : per_prompt) chunked.insert(chunked.end(), p.begin(), p.end());
    const double worst_chunked = check_rows(chunked, ref.logits_chunked, V, name + " chunked prefill");
    std::printf("[ HfLongContext ] %-14s %-4s max |logit - HF| / max |HF logit| = %.2e (chunked %.2e)\n",
                name.c_str(), backend.name().c_str(), worst, worst_chunked);
}

const std::vector<std::string> kModels = {"mistral-window", "qwen2-window", "qwen2-yarn", "qwen3-yarn",
                                          "llama-dynamic"};
std::string test_name(const ::testing::TestParamInfo<std::string> & p) {
    std::string s = p.param;
    std::replace(s.begin(), s.end(), '-', '_');
    return s;
}

class HfLongContext : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLongContext, PrefillGreedyAndChunkedPrefillMatchHf) {
    auto backend = make_cpu_backend(2);
    run_long_context(GetParam(), *backend);
}

INSTANTIATE_TEST_SUITE_P(, HfLongContext, ::testing::ValuesIn(kModels), test_name);

class CudaLongContext : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaLongContext, PrefillGreedyAndChunkedPrefillMatchHf) {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << "no GPU, CUDA long-context test skipped: " << why;
    CudaBackendOptions o;
    o.compute_dtype = "fp32";
    auto backend = make_cuda_backend(o);
    run_long_context(GetParam(), *backend);
}

INSTANTIATE_TEST_SUITE_P(, CudaLongContext, ::testing::ValuesIn(kModels), test_name);

// Dynamic RoPE follows each sequence's own length: a prompt's logits are the same alone and next to a longer
// prompt (HF, batching them, would use the batch's longest length for both).
TEST(HfLongContextDynamic, FrequenciesArePerSequence) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/hf/llama-dynamic";
    const LongReference ref = load_long_reference(dir);
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    const ModelWeights w = bind_weights(ckpt, cfg);
    ASSERT_TRUE(rope_is_dynamic(cfg));
    EXPECT_EQ(rope_inv_freq(cfg, 16), rope_inv_freq(cfg)) << "no scaling up to max_position_embeddings";
    EXPECT_NE(rope_inv_freq(cfg, 17), rope_inv_freq(cfg));
    auto backend = make_cpu_backend(1);
    Forward fwd(cfg, w, *backend);
    fwd.reserve(2, 64);
    const auto & shorter = ref.prompts[1];
    std::vector<float> alone, together;
    fwd.step({{0, 0, shorter.data(), int32_t(shorter.size())}}, alone);
    fwd.reserve(2, 64);
    fwd.step({{0, 0, ref.prompts[0].data(), int32_t(ref.prompts[0].size())},
              {1, 0, shorter.data(), int32_t(shorter.size())}}, together);
    ASSERT_EQ(together.size(), 2 * alone.size());
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), together.begin() + std::ptrdiff_t(alone.size())));
}

TEST(HfLongContextJob, GreedyTokensOrAClearContextError) {
    int n_errors = 0;
    for (const std::string & name : kModels) {
        const std::string model = std::string(ZT_TEST_DATA) + "/hf/" + name;
        const LongReference ref = load_long_reference(model);
        const ModelConfig cfg = ModelConfig::load(model);
        const std::string dir = test::make_temp_dir("long_job");
        {
            std::ofstream in(dir + "/in.jsonl");
            for (size_t i = 0; i < ref.prompts.size(); ++i)
                in << nlohmann::json{{"custom_id", "p" + std::to_string(i)}, {"prompt_token_ids", ref.prompts[i]},
                                     {"max_tokens", 16}}.dump() << "\n";
        }
        std::vector<nlohmann::json> variants = {nlohmann::json::object()};
        if (!rope_is_dynamic(cfg))   // dynamic RoPE: chunks change the result, as in HF
            variants.push_back({{"prefill_chunk", 5}, {"micro_batches", 2}, {"kv_cache", {{"offload", "cpu"}}}});
        for (size_t v = 0; v < variants.size(); ++v) {
            const std::string job = "v" + std::to_string(v);
            const auto r = test::run_job_command(
                test::job_command(0, test::write_job_config(dir, job, model, dir + "/in.jsonl", variants[v], "none")));
            ASSERT_EQ(r.status, 0) << name << " " << r.log;
            const auto recs = test::read_job_records(dir + "/" + job + ".jsonl");
            for (size_t i = 0; i < ref.prompts.size(); ++i) {
                const int64_t need = int64_t(ref.prompts[i].size()) + 16;
                if (need <= cfg.max_context()) {
                    ASSERT_TRUE(recs.count("p" + std::to_string(i))) << name << " " << job << " prompt " << i;
                    EXPECT_EQ(recs.at("p" + std::to_string(i))["token_ids"], nlohmann::json(ref.greedy[i]))
                        << name << " " << variants[v].dump() << " prompt " << i;
                } else {
                    const std::string line = "line " + std::to_string(i + 1);
                    ASSERT_TRUE(recs.count(line)) << name << " prompt " << i << " (" << need << " > "
                                                  << cfg.max_context() << ") has no error record";
                    const std::string msg = recs.at(line)["error"]["message"].get<std::string>();
                    EXPECT_NE(msg.find(cfg.max_context_reason()), std::string::npos) << msg;
                    ++n_errors;
                }
            }
        }
    }
    // qwen3-yarn's 40-token prompt: 56 > 16 (original context) x 3 (factor); everything else fits
    EXPECT_EQ(n_errors, 2);
}

}  // namespace
}  // namespace zt
