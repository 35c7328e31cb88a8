// Token sampling (see sampler.h). Every step is written out so results do not depend on library internals:
// the uniform draw is built from raw mt19937_64 bits, and sorting breaks ties by token id.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace zt {

Sampler::Sampler(const SamplingParams & p) : params_(p), rng_(p.seed) {}

int32_t Sampler::sample(const float * logits, int64_t vocab) {
    if (params_.temperature <= 0.0) {
        int32_t best = 0;
        for (int64_t i = 1; i < vocab; ++i)
            if (logits[i] > logits[best]) best = int32_t(i);
        return best;
    }
    const double inv_t = 1.0 / params_.temperature;
    if ((params_.top_k <= 0 || params_.top_k >= vocab) && params_.top_p >= 1.0) {
        // plain temperature sampling: no candidate order is needed, walk the softmax in id order
        double top = logits[0];
        for (int64_t i = 1; i < vocab; ++i) top = std::max(top, double(logits[i]));
        probs_.resize(size_t(vocab));
        double sum = 0;
        for (int64_t i = 0; i < vocab; ++i) sum += probs_[size_t(i)] = std::exp((double(logits[i]) - top) * inv_t);
        const double u = double(rng_() >> 11) * 0x1.0p-53 * sum;   // uniform in [0, sum)
        double acc = 0;
        for (int64_t i = 0; i < vocab; ++i) {
            acc += probs_[size_t(i)];
            if (u < acc) return int32_t(i);
        }
        return int32_t(vocab - 1);
    }
    // candidates sorted by logit descending, ties by id ascending
    order_.resize(size_t(vocab));
    for (int64_t i = 0; i < vocab; ++i) order_[size_t(i)] = int32_t(i);
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    int64_t keep = vocab;
    if (params_.top_k > 0 && params_.top_k < vocab) {
        keep = params_.top_k;
        std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
    } else {
        std::sort(order_.begin(), order_.end(), by_logit);
    }
    // softmax over the kept candidates at temperature T
    probs_.resize(size_t(keep));
    const double top = double(logits[order_[0]]);
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs_[size_t(i)] = std::exp((double(logits[order_[size_t(i)]]) - top) * inv_t);
    for (int64_t i = 0; i < keep; ++i) probs_[size_t(i)] /= sum;
    // nucleus: smallest prefix with mass >= top_p
    if (params_.top_p < 1.0) {
        double mass = 0;
        int64_t n = 0;
        while (n < keep) { mass += probs_[size_t(n++)]; if (mass >= params_.top_p) break; }
        keep = n;
        for (int64_t i = 0; i < keep; ++i) probs_[size_t(i)] /= mass;
    }
    const double u = double(rng_() >> 11) * 0x1.0p-53;   // uniform in [0, 1)
    double acc = 0;
    for (int64_t i = 0; i < keep; ++i) {
        acc += probs_[size_t(i)];
        if (u < acc) return order_[size_t(i)];
    }
    return order_[size_t(keep - 1)];
}

double Sampler::logprob(const float * logits, int64_t vocab, int32_t id) {
    double top = logits[0];
    for (int64_t i = 1; i < vocab; ++i) top = std::max(top, double(logits[i]));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - top);
    return double(logits[id]) - top - std::log(sum);
}

uint64_t derive_seed(uint64_t job_seed, const std::string & custom_id) {
    uint64_t h = 1469598103934665603ull ^ job_seed;          // FNV-1a over the id, then a splitmix64 finish
    for (unsigned char c : custom_id) { h ^= c; h *= 1099511628211ull; }
    h += 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

}  // namespace zt
