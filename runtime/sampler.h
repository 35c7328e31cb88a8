// Sampler: picks the next token from one row of logits with temperature, top-k and top-p, driven by a
// per-request random stream, so the same prompt and seed give the same tokens whatever else is in the batch.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace zt {

struct SamplingParams {
    double temperature = 0.0;   // 0 = greedy (argmax, lowest id on ties)
    int64_t top_k = 0;          // 0 = off
    double top_p = 1.0;         // 1 = off; keeps the smallest prefix (by probability) whose mass >= top_p
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplingParams & p);
    // logits: (V) fp32. Returns the chosen id. Uses one uniform draw per call when temperature > 0.
    int32_t sample(const float * logits, int64_t vocab);
    // log-softmax of `id` under the raw logits (temperature-free), in double.
    static double logprob(const float * logits, int64_t vocab, int32_t id);

private:
    SamplingParams params_;
    std::mt19937_64 rng_;            // fully specified by the C++ standard: same stream on every platform
    std::vector<int32_t> order_;     // scratch
    std::vector<double> probs_;      // scratch
};

// A request's seed when it gives none: a hash of the job seed and its custom_id (stable across runs).
uint64_t derive_seed(uint64_t job_seed, const std::string & custom_id);

}  // namespace zt
