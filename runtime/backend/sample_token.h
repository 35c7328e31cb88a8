// sample_token: the one-row spec of Backend::sample (the CPU backend runs it per row; kernels/sampling.cu must pick
// the same ids). It lives in the backend wing because it is an op's spec; the job's Sampler (runtime/job/sampler.h)
// drives it with a per-request random stream.
#pragma once
#include <cstdint>
#include <vector>

namespace zt {

enum class CpuMatmulPath;   // cpu_matmul.h

// Scratch space sample_token reuses between calls.
struct SampleScratch {
    std::vector<int32_t> order;
    std::vector<double> probs;
    std::vector<uint64_t> keys, keys_tmp;   // the fast overload's candidates (sample_token.cpp: fill_keys)
};

// The token one row of logits (V) fp32 picks, given the uniform draw u in [0, 1) (unused when temperature <= 0):
// greedy = argmax (lowest id on ties); else the softmax at the temperature (in double, max-subtracted) over the
// top_k candidates, then the smallest prefix (logit descending, ids ascending on ties) whose mass >= top_p of
// theirs, walked in that order until the running sum passes u * mass. Plain temperature sampling (no top-k,
// no top-p) walks ids in ascending order instead. This is the spec of Backend::sample.
int32_t sample_token(const float * logits, int64_t vocab, double temperature, int64_t top_k, double top_p, double u,
                     SampleScratch & scratch);

// The same token, with the scans over all V logits (greedy's argmax, the softmax's max) run by the vector kernels of a
// CPU kernel path (cpu_rowwise.h; reference = the loops above) and the candidates sorted as integer keys in the same
// order. The CPU backend's sample calls this one.
int32_t sample_token(CpuMatmulPath path, const float * logits, int64_t vocab, double temperature, int64_t top_k,
                     double top_p, double u, SampleScratch & scratch);

}  // namespace zt
