// Sampler: greedy picks the argmax, seeded sampling repeats exactly, top-k/top-p restrict the support.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "runtime/job/sampler.h"

using namespace zt;

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
    const float logits[] = {0.1f, 2.0f, 2.0f, -1.0f};
    Sampler s({0.0, 0, 1.0, 0});
    EXPECT_EQ(s.sample(logits, 4), 1);
}

TEST(Sampler, SameSeedSameStream) {
    std::vector<float> logits(100);
    for (int i = 0; i < 100; ++i) logits[size_t(i)] = std::sin(float(i));
    Sampler a({1.0, 0, 1.0, 42}), b({1.0, 0, 1.0, 42}), c({1.0, 0, 1.0, 43});
    std::vector<int32_t> xa, xb, xc;
    for (int i = 0; i < 50; ++i) {
        xa.push_back(a.sample(logits.data(), 100));
        xb.push_back(b.sample(logits.data(), 100));
        xc.push_back(c.sample(logits.data(), 100));
    }
    EXPECT_EQ(xa, xb);
    EXPECT_NE(xa, xc);
}

TEST(Sampler, TopKAndTopPRestrictSupport) {
    std::vector<float> logits = {5.0f, 4.0f, 3.0f, 0.0f, -1.0f, -2.0f};
    Sampler k({1.0, 2, 1.0, 1});
    std::set<int32_t> seen;
    for (int i = 0; i < 200; ++i) seen.insert(k.sample(logits.data(), 6));
    EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
    // probs at T=1: ~0.66, 0.24, 0.09, ...: top_p 0.5 keeps only token 0
    Sampler p({1.0, 0, 0.5, 1});
    for (int i = 0; i < 100; ++i) EXPECT_EQ(p.sample(logits.data(), 6), 0);
}

TEST(Sampler, LogprobIsLogSoftmax) {
    const float logits[] = {1.0f, 2.0f, 3.0f};
    const double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    EXPECT_NEAR(Sampler::logprob(logits, 3, 2), 3.0 - z, 1e-12);
}

TEST(Sampler, DerivedSeedsDifferPerId) {
    EXPECT_NE(derive_seed(0, "a"), derive_seed(0, "b"));
    EXPECT_NE(derive_seed(0, "a"), derive_seed(1, "a"));
    EXPECT_EQ(derive_seed(5, "x"), derive_seed(5, "x"));
}

TEST(Sampler, FollowsTheSoftmaxDistribution) {
    // logits (0, ln 3) at T = 1 -> p = (0.25, 0.75); at T = 2 -> p ∝ (1, sqrt 3) = (0.366, 0.634)
    const float logits[] = {0.0f, float(std::log(3.0))};
    for (const auto & [t, p1] : {std::pair{1.0, 0.75}, std::pair{2.0, std::sqrt(3.0) / (1 + std::sqrt(3.0))}}) {
        Sampler s({t, 0, 1.0, 123});
        int ones = 0;
        const int n = 20000;
        for (int i = 0; i < n; ++i) ones += s.sample(logits, 2);
        EXPECT_NEAR(double(ones) / n, p1, 0.015) << "temperature " << t;   // ~5 sigma
    }
}

TEST(Sampler, WideNucleusGrowsPastTheFirstChunk) {
    // 1000 equal logits, top_p 0.5: the nucleus is ids 0..499 (ties broken by id), larger than one sort chunk
    std::vector<float> logits(1000, 0.25f);
    Sampler s({1.0, 0, 0.5, 9});
    std::set<int32_t> seen;
    for (int i = 0; i < 5000; ++i) {
        const int32_t id = s.sample(logits.data(), 1000);
        ASSERT_LT(id, 500);
        seen.insert(id);
    }
    EXPECT_GT(seen.size(), 450u);
    // with top_k 100 as well: ids 0..49
    Sampler k({1.0, 100, 0.5, 9});
    for (int i = 0; i < 1000; ++i) ASSERT_LT(k.sample(logits.data(), 1000), 50);
}

TEST(Sampler, AllMinusInfinityLogitsWithTopPReturnInsteadOfLooping) {
    // every weight is exp(-inf - -inf) = NaN: the nucleus can never reach top_p; it used to loop forever
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> logits = {-inf, -inf, -inf};
    zt::SampleScratch scratch;
    const int32_t id = zt::sample_token(logits.data(), 3, 1.0, 0, 0.9, 0.5, scratch);
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 3);
    EXPECT_EQ(zt::sample_token(logits.data(), 1, 1.0, 0, 0.5, 0.3, scratch), 0);
}

TEST(Sampler, TemperatureSoSmallThatItsInverseOverflowsIsGreedy) {
    // 1 / 1e-320 = inf and (top - top) * inf = NaN: the weights were NaN and the last id came out every time
    std::vector<float> logits(50);
    for (int i = 0; i < 50; ++i) logits[size_t(i)] = std::cos(float(i) * 0.7f);
    Sampler greedy({0.0, 0, 1.0, 1});
    const int32_t want = greedy.sample(logits.data(), 50);
    ASSERT_NE(want, 49);
    for (const SamplingParams & p : {SamplingParams{1e-320, 0, 1.0, 3}, SamplingParams{1e-320, 5, 0.9, 3},
                                     SamplingParams{1e-6, 0, 1.0, 3}}) {
        Sampler s(p);
        for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits.data(), 50), want) << p.temperature;
    }
}
