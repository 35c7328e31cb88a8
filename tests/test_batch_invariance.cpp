// Batch invariance: one sequence's logits, run alone, are bit-identical (memcmp) to its logits inside batches of
// other sizes and compositions (prefills and decodes mixed, before and after it, other cache slots), with
// chunked prefill, and with another thread count. Uses the HF fixtures of tests/data/hf.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/stream/forward.h"
#include "runtime/model/model_config.h"

namespace zt {
namespace {

constexpr int32_t kSlots = 8, kMaxLen = 64, kDecodeSteps = 5;

struct Model {
    ModelConfig cfg;
    Checkpoint ckpt;
    ModelWeights w;
    explicit Model(const std::string & name)
        : cfg(ModelConfig::load(std::string(ZT_TEST_DATA) + "/hf/" + name)),
          ckpt(std::string(ZT_TEST_DATA) + "/hf/" + name), w(bind_weights(ckpt, cfg)) {}
};

struct Scenario {
    int n_threads = 2;
    int32_t slot = 0;                 // A's cache slot
    std::vector<int32_t> chunks;      // A's prefill chunk sizes (empty: the whole prompt at once)
    int companions_before = 0;        // other sequences placed before A in each step
    int companions_after = 0;         // ... and after it
    bool all_positions = false;
    uint32_t seed = 0;                // companions' token ids and step sizes
};

// Runs sequence A (prompt, then kDecodeSteps fixed decode tokens) under a scenario; returns A's logit rows of
// each step (every row of the prefill when all_positions).
std::vector<std::vector<float>> run_a(const Model & m, const std::vector<int32_t> & prompt,
                                      const std::vector<int32_t> & decode, const Scenario & sc) {
    auto backend = make_cpu_backend(sc.n_threads);
    Forward fwd(m.cfg, m.w, *backend);
    fwd.reserve(kSlots, kMaxLen);
    const int64_t V = m.cfg.vocab_size;
    std::mt19937 g(sc.seed);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(V) - 1);

    struct Other { int32_t slot, past; std::vector<int32_t> toks; };
    std::vector<Other> others;
    for (int32_t s = 0, n = 0; n < sc.companions_before + sc.companions_after; ++s)
        if (s != sc.slot) { others.push_back({s, 0, {}}); ++n; }

    std::vector<std::vector<int32_t>> a_steps;   // A's tokens per step
    if (sc.chunks.empty()) a_steps.push_back(prompt);
    for (size_t c = 0, at = 0; c < sc.chunks.size(); at += size_t(sc.chunks[c]), ++c)
        a_steps.emplace_back(prompt.begin() + long(at), prompt.begin() + long(at + size_t(sc.chunks[c])));
    const size_t n_prefill_steps = a_steps.size();
    for (int32_t t : decode) a_steps.push_back({t});

    std::vector<std::vector<float>> rows;
    int32_t a_past = 0;
    std::vector<float> logits;
    for (size_t step = 0; step < a_steps.size(); ++step) {
        // companions: a prefill of 2..9 tokens or a decode of 1, restarting when the slot is full
        for (Other & o : others) {
            const int32_t n = (g() % 3 == 0) ? int32_t(2 + g() % 8) : 1;
            if (o.past + n > kMaxLen) o.past = 0;
            o.toks.resize(size_t(n));
            for (int32_t & t : o.toks) t = tok(g);
        }
        std::vector<SequenceStep> batch;
        std::vector<int32_t> rows_per;
        auto add_other = [&](Other & o) {
            batch.push_back({o.slot, o.past, o.toks.data(), int32_t(o.toks.size())});
            rows_per.push_back(sc.all_positions ? int32_t(o.toks.size()) : 1);
        };
        for (int i = 0; i < sc.companions_before; ++i) add_other(others[size_t(i)]);
        const size_t a_index = batch.size();
        batch.push_back({sc.slot, a_past, a_steps[step].data(), int32_t(a_steps[step].size())});
        rows_per.push_back(sc.all_positions ? int32_t(a_steps[step].size()) : 1);
        for (int i = 0; i < sc.companions_after; ++i) add_other(others[size_t(sc.companions_before + i)]);

        fwd.step(batch, logits, sc.all_positions);
        size_t row0 = 0;
        for (size_t i = 0; i < a_index; ++i) row0 += size_t(rows_per[i]);
        const bool keep = sc.all_positions || step + 1 >= n_prefill_steps;   // not the rows of earlier chunks
        for (int32_t r = 0; keep && r < rows_per[a_index]; ++r)
            rows.emplace_back(logits.begin() + long((row0 + size_t(r)) * size_t(V)),
                              logits.begin() + long((row0 + size_t(r) + 1) * size_t(V)));
        a_past += int32_t(a_steps[step].size());
        for (Other & o : others) o.past += int32_t(o.toks.size());
    }
    return rows;
}

void expect_bit_identical(const std::vector<std::vector<float>> & alone, const std::vector<std::vector<float>> & got,
                          const std::string & what) {
    ASSERT_EQ(alone.size(), got.size()) << what;
    for (size_t i = 0; i < alone.size(); ++i)
        EXPECT_EQ(0, std::memcmp(alone[i].data(), got[i].data(), alone[i].size() * sizeof(float)))
            << what << ": step/row " << i << " differs from the sequence run alone";
}

class BatchInvariance : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchInvariance, SequenceLogitsDoNotDependOnTheBatch) {
    const Model m(GetParam());
    const std::vector<int32_t> prompt = {17, 3, 250, 42, 42, 9, 100, 7, 200, 64, 5, 33, 12};
    const std::vector<int32_t> decode = {4, 8, 15, 16, 23};
    ASSERT_EQ(int(decode.size()), kDecodeSteps);

    Scenario base;
    base.n_threads = 1;
    const auto alone = run_a(m, prompt, decode, base);
    ASSERT_EQ(alone.size(), size_t(1 + kDecodeSteps));

    struct Case { const char * name; Scenario sc; };
    std::vector<Case> cases;
    for (int before : {0, 1, 3})
        for (int after : {0, 1, 2, 4}) {
            if (before + after == 0) continue;
            Scenario s;
            s.companions_before = before;
            s.companions_after = after;
            s.slot = (before * 3 + after) % kSlots;
            s.seed = uint32_t(before * 10 + after);
            cases.push_back({"mixed batch", s});
        }
    { Scenario s; s.n_threads = 3; s.companions_after = 2; s.seed = 99; cases.push_back({"3 threads", s}); }
    { Scenario s; s.chunks = {4, 1, 8}; cases.push_back({"chunked prefill", s}); }
    { Scenario s; s.chunks = {6, 7}; s.companions_before = 2; s.companions_after = 1; s.seed = 7;
      cases.push_back({"chunked prefill in a batch", s}); }
    for (const Case & c : cases) {
        const auto got = run_a(m, prompt, decode, c.sc);
        expect_bit_identical(alone, got, std::string(c.name) + " (before " + std::to_string(c.sc.companions_before) +
                                             ", after " + std::to_string(c.sc.companions_after) + ", slot " +
                                             std::to_string(c.sc.slot) + ", threads " + std::to_string(c.sc.n_threads) + ")");
    }

    // every prompt position, alone vs in a batch
    Scenario all_alone;
    all_alone.all_positions = true;
    Scenario all_batch = all_alone;
    all_batch.companions_before = 2;
    all_batch.companions_after = 2;
    all_batch.slot = 5;
    all_batch.seed = 3;
    expect_bit_identical(run_a(m, prompt, decode, all_alone), run_a(m, prompt, decode, all_batch), "all positions");
}

INSTANTIATE_TEST_SUITE_P(, BatchInvariance, ::testing::Values("llama-bf16", "qwen2-fp32", "qwen3-bf16"),
                         [](const ::testing::TestParamInfo<std::string> & p) {
                             std::string s = p.param;
                             for (char & c : s) if (c == '-') c = '_';
                             return s;
                         });

}  // namespace
}  // namespace zt
