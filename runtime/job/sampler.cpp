// Token sampling (see sampler.h): the per-request random stream (the uniform draw is built from raw mt19937_64
// bits, so it is the same on every platform); the pick itself is sample_token (runtime/backend/sample_token.h).
#include "runtime/job/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/base/hash.h"

namespace zt {

Sampler::Sampler(const SamplingParams & p) : params_(p), rng_(p.seed) {
    if (params_.temperature < kGreedyBelowTemperature) params_.temperature = 0;
}

double Sampler::next_uniform() {
    if (params_.temperature <= 0.0) return 0.0;
    return double(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(const float * logits, int64_t vocab) {
    const double u = next_uniform();
    // the CPU kernel path's scans and sorts (cpu_rowwise.h; ZT_CPU_MATMUL=reference: the plain loops): the same id
    return sample_token(cpu_matmul_default_path(), logits, vocab, params_.temperature, params_.top_k, params_.top_p, u,
                        scratch_);
}

double Sampler::logprob(const float * logits, int64_t vocab, int32_t id) {
    double top = logits[0];
    for (int64_t i = 1; i < vocab; ++i) top = std::max(top, double(logits[i]));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - top);
    return double(logits[id]) - top - std::log(sum);
}

uint64_t derive_seed(uint64_t job_seed, const std::string & custom_id) {
    // FNV-1a over the id, then splitmix64's step and finish
    return mix64(fnv1a64(custom_id, kFnv64Offset ^ job_seed) + 0x9e3779b97f4a7c15ull);
}

}  // namespace zt
