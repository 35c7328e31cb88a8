// HF parity: tiny random-weight llama / mistral / qwen2 / qwen3 models saved by transformers (fp32 and bf16,
// tests/data/hf, made by examples/make_hf_fixtures.py) run through ModelConfig + Checkpoint + Forward on the CPU
// backend: logits of every prompt position within 1e-4 of HF's (relative to the largest |logit|), and 16 greedy
// tokens per prompt identical to HF generate (stepping the KV cache one token at a time).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/base/error.h"
#include "runtime/stream/forward.h"
#include "runtime/model/model_config.h"
#include "runtime/model/rope.h"

namespace zt {
namespace {

struct Reference {
    std::vector<std::vector<int32_t>> prompts, greedy;
    std::vector<float> inv_freq;
    std::vector<float> logits;   // (sum(len), V)
    int64_t vocab = 0;
};

Reference load_reference(const std::string & dir) {
    Reference r;
    std::ifstream f(dir + "/reference.json");
    EXPECT_TRUE(f.good()) << "missing " << dir << "/reference.json: run examples/make_hf_fixtures.py";
    const nlohmann::json j = nlohmann::json::parse(f);
    r.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
    r.greedy = j.at("greedy").get<std::vector<std::vector<int32_t>>>();
    r.inv_freq = j.at("inv_freq").get<std::vector<float>>();
    r.vocab = j.at("vocab_size").get<int64_t>();
    std::ifstream b(dir + "/logits.bin", std::ios::binary | std::ios::ate);
    EXPECT_TRUE(b.good());
    r.logits.resize(size_t(b.tellg()) / sizeof(float));
    b.seekg(0);
    b.read(reinterpret_cast<char *>(r.logits.data()), std::streamsize(r.logits.size() * sizeof(float)));
    return r;
}

int32_t argmax(const float * p, int64_t n) { return int32_t(std::max_element(p, p + n) - p); }

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogitsAndGreedyTokens) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/hf/" + GetParam();
    const Reference ref = load_reference(dir);
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    const ModelWeights w = bind_weights(ckpt, cfg);
    ASSERT_EQ(cfg.vocab_size, ref.vocab);

    // RoPE frequencies: bit-identical to transformers' inv_freq (same float32 operations, same order)
    EXPECT_EQ(rope_inv_freq(cfg), ref.inv_freq);

    auto backend = make_cpu_backend(2);
    Forward fwd(cfg, w, *backend);
    const int32_t n = int32_t(ref.prompts.size());
    fwd.reserve(n, 64);
    const int64_t V = cfg.vocab_size;

    // 1. all prompts in one batch, logits of every position
    std::vector<SequenceStep> batch;
    for (int32_t i = 0; i < n; ++i)
        batch.push_back({i, 0, ref.prompts[size_t(i)].data(), int32_t(ref.prompts[size_t(i)].size())});
    std::vector<float> logits;
    fwd.step(batch, logits, /*all_positions=*/true);
    ASSERT_EQ(logits.size(), ref.logits.size());
    double worst = 0;
    size_t row = 0;
    for (int32_t i = 0; i < n; ++i) {
        for (size_t t = 0; t < ref.prompts[size_t(i)].size(); ++t, ++row) {
            const float * got = &logits[row * size_t(V)];
            const float * want = &ref.logits[row * size_t(V)];
            double max_abs = 0, max_err = 0;
            for (int64_t v = 0; v < V; ++v) {
                max_abs = std::max(max_abs, std::fabs(double(want[v])));
                max_err = std::max(max_err, std::fabs(double(got[v]) - want[v]));
            }
            const double rel = max_err / max_abs;
            worst = std::max(worst, rel);
            EXPECT_LT(rel, 1e-4) << GetParam() << " prompt " << i << " position " << t;
        }
    }
    std::printf("[ HfParity ] %-13s max |logit - HF| / max |HF logit| = %.2e\n", GetParam().c_str(), worst);
    RecordProperty("max_rel_logit_error", std::to_string(worst));

    // 2. greedy: the argmax of each prompt's last position, then one token per step through the KV cache
    std::vector<std::vector<int32_t>> gen(static_cast<size_t>(n));
    std::vector<int32_t> next(static_cast<size_t>(n));
    row = 0;
    for (int32_t i = 0; i < n; ++i) {
        row += ref.prompts[size_t(i)].size();
        next[size_t(i)] = argmax(&logits[(row - 1) * size_t(V)], V);
    }
    for (size_t step = 0; step < ref.greedy[0].size(); ++step) {
        batch.clear();
        for (int32_t i = 0; i < n; ++i) {
            gen[size_t(i)].push_back(next[size_t(i)]);
            batch.push_back({i, int32_t(ref.prompts[size_t(i)].size() + step), &gen[size_t(i)].back(), 1});
        }
        if (step + 1 == ref.greedy[0].size()) break;
        fwd.step(batch, logits);
        for (int32_t i = 0; i < n; ++i) next[size_t(i)] = argmax(&logits[size_t(i) * size_t(V)], V);
    }
    for (int32_t i = 0; i < n; ++i) EXPECT_EQ(gen[size_t(i)], ref.greedy[size_t(i)]) << GetParam() << " prompt " << i;
}

INSTANTIATE_TEST_SUITE_P(, HfParity,
                         ::testing::Values("llama-fp32", "llama-bf16", "mistral-fp32", "mistral-bf16", "qwen2-fp32",
                                           "qwen2-bf16", "qwen3-fp32", "qwen3-bf16"),
                         [](const ::testing::TestParamInfo<std::string> & p) {
                             std::string s = p.param;
                             std::replace(s.begin(), s.end(), '-', '_');
                             return s;
                         });

// A base-model save (no lm_head): step() says so clearly; step_hidden() still gives the final hidden states.
TEST(HfParityBaseModel, NoLmHeadIsAClearError) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/hf/qwen3-fp32";
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    ModelWeights w = bind_weights(ckpt, cfg);
    w.lm_head = Tensor();
    auto backend = make_cpu_backend(1);
    Forward fwd(cfg, w, *backend);
    fwd.reserve(1, 16);
    const std::vector<int32_t> toks = {5, 6, 7};
    std::vector<float> out;
    try {
        fwd.step({{0, 0, toks.data(), 3}}, out);
        ADD_FAILURE() << "step() without lm_head did not throw";
    } catch (const Error & e) {
        EXPECT_NE(std::string(e.what()).find("no lm_head"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("embeddings"), std::string::npos) << e.what();
    }
    fwd.step_hidden({{0, 0, toks.data(), 3}}, out);
    EXPECT_EQ(out.size(), size_t(cfg.hidden_size));
    for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace zt
