// Sampler: picks the next token from one row of logits with temperature, top-k and top-p, driven by a
// per-request random stream, so the same prompt and seed give the same tokens whatever else is in the batch.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/backend/sample_token.h"

namespace zt {

// Temperatures below this are greedy (as vLLM's _SAMPLING_EPS): 1/temperature would overflow for the smallest
// ones (1e-320 gives inf, and inf * 0 = NaN weights), and below it sampling is greedy but for exact ties anyway.
// Requests and the job's default are mapped to 0 when read, so every backend's sampler sees 0.
constexpr double kGreedyBelowTemperature = 1e-5;

struct SamplingParams {
    double temperature = 0.0;   // 0 = greedy (argmax, lowest id on ties); < kGreedyBelowTemperature: greedy too
    int64_t top_k = 0;          // 0 = off
    double top_p = 1.0;         // 1 = off; keeps the smallest prefix (by probability) whose mass >= top_p
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplingParams & p);   // a temperature < kGreedyBelowTemperature is taken as 0
    // logits: (V) fp32. Returns the chosen id. Uses one uniform draw per call when temperature > 0.
    int32_t sample(const float * logits, int64_t vocab);
    // The draw sample() would use next (advances the stream; call once per token when temperature > 0, and pass
    // it to Backend::sample): 53 random bits of mt19937_64 scaled to [0, 1). Returns 0 without drawing when greedy.
    double next_uniform();
    const SamplingParams & params() const { return params_; }
    // log-softmax of `id` under the raw logits (temperature-free), in double.
    static double logprob(const float * logits, int64_t vocab, int32_t id);

private:
    SamplingParams params_;
    std::mt19937_64 rng_;            // fully specified by the C++ standard: same stream on every platform
    SampleScratch scratch_;
};

// A request's seed when it gives none: a hash of the job seed and its custom_id (stable across runs).
uint64_t derive_seed(uint64_t job_seed, const std::string & custom_id);

}  // namespace zt
