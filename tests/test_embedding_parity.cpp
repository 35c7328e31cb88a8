// Embedding parity: the fp32 HF-parity fixtures (tests/data/hf/<arch>-fp32) run through Forward::step_hidden on
// the CPU backend, the final-normed hidden state of every prompt token pooled on the host (last token, mean over
// tokens, in double) and compared with HF transformers' last_hidden_state pooled the same way
// (embeddings.json, made by examples/make_hf_embedding_fixtures.py): cosine >= 1 - 1e-5 for causal attention
// (each prompt alone, and all prompts in one batch), for bidirectional attention (`is_causal = false`, what
// gte-Qwen2-style embedding models use), and after L2 normalisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/stream/forward.h"
#include "runtime/model/model_config.h"

namespace zt {
namespace {

constexpr double kCosTol = 1e-5;   // cosine >= 1 - kCosTol (fp32 weights, fp32 HF reference)

using Vec = std::vector<double>;

struct Pooled {
    std::vector<Vec> last, mean;   // one vector per prompt
};

struct EmbeddingReference {
    std::vector<std::vector<int32_t>> prompts;
    Pooled causal, non_causal;
    int64_t hidden_size = 0;
};

Pooled load_pooled(const nlohmann::json & j) {
    Pooled p;
    p.last = j.at("last").get<std::vector<Vec>>();
    p.mean = j.at("mean").get<std::vector<Vec>>();
    return p;
}

EmbeddingReference load_embeddings(const std::string & dir) {
    EmbeddingReference r;
    std::ifstream f(dir + "/embeddings.json");
    EXPECT_TRUE(f.good()) << "missing " << dir << "/embeddings.json: run examples/make_hf_embedding_fixtures.py";
    const nlohmann::json j = nlohmann::json::parse(f);
    r.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
    r.causal = load_pooled(j.at("causal"));
    r.non_causal = load_pooled(j.at("non_causal"));
    r.hidden_size = j.at("hidden_size").get<int64_t>();
    return r;
}

// Pooling of one sequence's hidden rows (n_rows, C), row-major, accumulated in double.
Vec pool_last(const float * rows, int64_t n_rows, int64_t C) {
    return Vec(rows + (n_rows - 1) * C, rows + n_rows * C);
}

Vec pool_mean(const float * rows, int64_t n_rows, int64_t C) {
    Vec m(size_t(C), 0.0);
    for (int64_t t = 0; t < n_rows; ++t)
        for (int64_t c = 0; c < C; ++c) m[size_t(c)] += double(rows[t * C + c]);
    for (double & x : m) x /= double(n_rows);
    return m;
}

double norm2(const Vec & a) {
    double s = 0;
    for (double x : a) s += x * x;
    return std::sqrt(s);
}

// a / |a| (a zero vector stays zero).
Vec l2_normalize(const Vec & a) {
    const double n = norm2(a);
    Vec out(a);
    if (n > 0)
        for (double & x : out) x /= n;
    return out;
}

double cosine(const Vec & a, const Vec & b) {
    double dot = 0;
    for (size_t i = 0; i < a.size(); ++i) dot += a[i] * b[i];
    return dot / (norm2(a) * norm2(b));
}

double max_abs_diff(const Vec & a, const Vec & b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// Runs `batch_of` (lists of prompt indices, each list one step with every prompt in its own cache slot, from
// position 0) and pools every prompt's hidden rows.
Pooled run_pooled(const ModelConfig & cfg, const ModelWeights & w, const EmbeddingReference & ref,
                  const std::vector<std::vector<size_t>> & batches) {
    auto backend = make_cpu_backend(2);
    Forward fwd(cfg, w, *backend);
    int32_t max_len = 1;
    for (const auto & p : ref.prompts) max_len = std::max(max_len, int32_t(p.size()));
    fwd.reserve(int32_t(ref.prompts.size()), max_len);
    const int64_t C = cfg.hidden_size;
    Pooled out;
    out.last.resize(ref.prompts.size());
    out.mean.resize(ref.prompts.size());
    std::vector<float> hidden;
    for (const auto & idx : batches) {
        std::vector<SequenceStep> batch;
        for (size_t i : idx) batch.push_back({int32_t(i), 0, ref.prompts[i].data(), int32_t(ref.prompts[i].size())});
        fwd.step_hidden(batch, hidden, /*all_positions=*/true);
        size_t rows = 0;
        for (size_t i : idx) rows += ref.prompts[i].size();
        EXPECT_EQ(hidden.size(), rows * size_t(C));
        if (hidden.size() != rows * size_t(C)) return out;
        const float * p = hidden.data();
        for (size_t i : idx) {
            const int64_t n = int64_t(ref.prompts[i].size());
            out.last[i] = pool_last(p, n, C);
            out.mean[i] = pool_mean(p, n, C);
            p += n * C;
        }
    }
    return out;
}

std::vector<std::vector<size_t>> each_alone(size_t n) {
    std::vector<std::vector<size_t>> b;
    for (size_t i = 0; i < n; ++i) b.push_back({i});
    return b;
}

std::vector<std::vector<size_t>> all_in_one(size_t n) {
    std::vector<size_t> all;
    for (size_t i = 0; i < n; ++i) all.push_back(i);
    return {all};
}

// Every prompt's pooled vectors against HF's: cosine >= 1 - kCosTol (max |diff| in the message); prints and
// returns the worst 1 - cosine per pooling.
struct Worst {
    double last = 0, mean = 0;
};

Worst expect_matches(const Pooled & got, const Pooled & want, const std::string & what) {
    Worst w;
    for (const char * kind : {"last", "mean"}) {
        const bool is_last = std::string(kind) == "last";
        const auto & g = is_last ? got.last : got.mean;
        const auto & r = is_last ? want.last : want.mean;
        EXPECT_EQ(g.size(), r.size()) << what;
        for (size_t i = 0; i < std::min(g.size(), r.size()); ++i) {
            EXPECT_EQ(g[i].size(), r[i].size()) << what << " " << kind << " prompt " << i;
            if (g[i].size() != r[i].size()) continue;
            const double cos = cosine(g[i], r[i]);
            (is_last ? w.last : w.mean) = std::max(is_last ? w.last : w.mean, 1.0 - cos);
            EXPECT_GE(cos, 1.0 - kCosTol) << what << ": " << kind << " pooling of prompt " << i << ": cosine "
                                          << cos << ", max |diff| " << max_abs_diff(g[i], r[i]) << ", |HF| "
                                          << norm2(r[i]);
        }
    }
    std::printf("[ EmbeddingParity ] %-34s 1 - min cosine: last %.2e, mean %.2e\n", what.c_str(), w.last, w.mean);
    return w;
}

class Fixture : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        dir_ = std::string(ZT_TEST_DATA) + "/hf/" + GetParam() + "-fp32";
        ref_ = load_embeddings(dir_);
        cfg_ = ModelConfig::load(dir_);
        ckpt_ = std::make_unique<Checkpoint>(dir_);
        w_ = bind_weights(*ckpt_, cfg_);
        ASSERT_EQ(cfg_.hidden_size, ref_.hidden_size);
        ASSERT_TRUE(cfg_.is_causal) << "the fp32 fixtures are causal models";
        ASSERT_FALSE(ref_.prompts.empty());
    }
    std::string label(const char * what) const { return GetParam() + " " + what; }

    std::string dir_;
    EmbeddingReference ref_;
    ModelConfig cfg_;
    std::unique_ptr<Checkpoint> ckpt_;
    ModelWeights w_;
};

// (a) causal attention, each prompt in a batch of its own.
TEST_P(Fixture, CausalLastAndMeanPoolingMatchHf) {
    const Pooled got = run_pooled(cfg_, w_, ref_, each_alone(ref_.prompts.size()));
    const Worst w = expect_matches(got, ref_.causal, label("causal, alone"));
    RecordProperty("one_minus_min_cos_last", std::to_string(w.last));
    RecordProperty("one_minus_min_cos_mean", std::to_string(w.mean));
}

// (b) causal attention, every prompt in one batch (one cache slot each): the same vectors as HF, and the same
// bits as each prompt alone (Forward is batch-invariant).
TEST_P(Fixture, OneBatchOfAllPromptsMatchesHf) {
    const size_t n = ref_.prompts.size();
    ASSERT_GE(n, 2u);
    const Pooled batched = run_pooled(cfg_, w_, ref_, all_in_one(n));
    expect_matches(batched, ref_.causal, label("causal, one batch"));
    const Pooled alone = run_pooled(cfg_, w_, ref_, each_alone(n));
    for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(batched.last[i], alone.last[i]) << GetParam() << " prompt " << i << ": batch-invariance (last)";
        EXPECT_EQ(batched.mean[i], alone.mean[i]) << GetParam() << " prompt " << i << ": batch-invariance (mean)";
    }
}

// (c) bidirectional attention (config.json `is_causal: false`), each prompt alone and all in one batch. The
// causal and non-causal references differ by far more than the tolerance, so this cannot pass by accident.
TEST_P(Fixture, NonCausalLastAndMeanPoolingMatchHf) {
    ModelConfig cfg = cfg_;
    cfg.is_causal = false;
    const size_t n = ref_.prompts.size();
    const Pooled alone = run_pooled(cfg, w_, ref_, each_alone(n));
    expect_matches(alone, ref_.non_causal, label("non-causal, alone"));
    const Pooled batched = run_pooled(cfg, w_, ref_, all_in_one(n));
    expect_matches(batched, ref_.non_causal, label("non-causal, one batch"));
    for (size_t i = 0; i < n; ++i) {
        EXPECT_LT(cosine(ref_.causal.last[i], ref_.non_causal.last[i]), 1.0 - 100 * kCosTol) << "prompt " << i;
        EXPECT_LT(cosine(ref_.causal.mean[i], ref_.non_causal.mean[i]), 1.0 - 100 * kCosTol) << "prompt " << i;
        EXPECT_LT(cosine(alone.mean[i], ref_.causal.mean[i]), 1.0 - kCosTol)
            << GetParam() << " prompt " << i << ": is_causal = false gave the causal embedding";
    }
}

// (d) L2-normalised embeddings (what embedding models return): unit norm within 1e-6, still cosine >= 1 - tol,
// i.e. Euclidean distance <= sqrt(2 * tol).
TEST_P(Fixture, L2NormalisedEmbeddingsMatchHf) {
    for (const bool causal : {true, false}) {
        ModelConfig cfg = cfg_;
        cfg.is_causal = causal;
        const Pooled got = run_pooled(cfg, w_, ref_, each_alone(ref_.prompts.size()));
        const Pooled & want = causal ? ref_.causal : ref_.non_causal;
        Pooled got_n, want_n;
        for (size_t i = 0; i < ref_.prompts.size(); ++i) {
            got_n.last.push_back(l2_normalize(got.last[i]));
            got_n.mean.push_back(l2_normalize(got.mean[i]));
            want_n.last.push_back(l2_normalize(want.last[i]));
            want_n.mean.push_back(l2_normalize(want.mean[i]));
            for (const Vec * v : {&got_n.last[i], &got_n.mean[i], &want_n.last[i], &want_n.mean[i]})
                EXPECT_NEAR(norm2(*v), 1.0, 1e-6) << GetParam() << " prompt " << i;
            double dist_last = 0, dist_mean = 0;
            for (size_t c = 0; c < got_n.last[i].size(); ++c) {
                dist_last += std::pow(got_n.last[i][c] - want_n.last[i][c], 2);
                dist_mean += std::pow(got_n.mean[i][c] - want_n.mean[i][c], 2);
            }
            EXPECT_LE(std::sqrt(dist_last), std::sqrt(2 * kCosTol)) << GetParam() << " prompt " << i << " last";
            EXPECT_LE(std::sqrt(dist_mean), std::sqrt(2 * kCosTol)) << GetParam() << " prompt " << i << " mean";
        }
        expect_matches(got_n, want_n, label(causal ? "causal, L2-normalised" : "non-causal, L2-normalised"));
    }
}

INSTANTIATE_TEST_SUITE_P(EmbeddingParity, Fixture, ::testing::Values("llama", "mistral", "qwen2", "qwen3"),
                         [](const ::testing::TestParamInfo<std::string> & p) { return p.param; });

// The host-side helpers on hand-made vectors.
TEST(EmbeddingParityHelpers, PoolingAndNormalisation) {
    const std::vector<float> rows = {1, 2, 3, 4, 5, 6};   // 3 rows of C = 2
    EXPECT_EQ(pool_last(rows.data(), 3, 2), (Vec{5, 6}));
    EXPECT_EQ(pool_mean(rows.data(), 3, 2), (Vec{3, 4}));
    EXPECT_EQ(pool_mean(rows.data(), 1, 2), (Vec{1, 2}));
    const Vec n = l2_normalize({3, 4});
    EXPECT_NEAR(n[0], 0.6, 1e-15);
    EXPECT_NEAR(n[1], 0.8, 1e-15);
    EXPECT_NEAR(norm2(l2_normalize({1e-20, -3e-20, 2e-20})), 1.0, 1e-12);
    EXPECT_NEAR(norm2(l2_normalize({1e20, 7, -3e19})), 1.0, 1e-12);
    EXPECT_EQ(l2_normalize({0, 0}), (Vec{0, 0}));
    EXPECT_NEAR(cosine({1, 0}, {0, 2}), 0.0, 1e-15);
    EXPECT_NEAR(cosine({1, 2}, {2, 4}), 1.0, 1e-15);
    EXPECT_NEAR(cosine({1, 2}, {-1, -2}), -1.0, 1e-15);
    EXPECT_EQ(max_abs_diff({1, 2}, {1.5, 1}), 1.0);
}

}  // namespace
}  // namespace zt
