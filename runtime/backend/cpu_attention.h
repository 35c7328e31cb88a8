// cpu_attention: the CPU backend's fast attention (Backend::attention's contract; the readable reference is
// CpuBackend::attention's plain loop in backend_cpu_ops.cpp, which runs on the "reference" kernel path).
//
// Shapes: q (T,H,D) fp32; k_cache, v_cache (S,M,KV,D) fp32; out (T,H,D). Query row t of sequence `seq` (position
// p = past_len + t - row0) of head h sees the keys [lo, hi) of its slot (attention_key_range) in kv head h / (H/KV).
//
// Work items: (token row t, kv head g), i.e. the H/KV query heads that share one kv head; items are split across
// the pool's threads and never share a reduction, so a row's result does not depend on the batch, the chunking or
// the thread count. Per query (the same order on every call, L = 16 lanes on AVX-512, 8 on AVX2 and portable):
//   s_j   = hsum(sum over d-chunks c, in order, of q[c] * k_j[c] in L lanes (fma; the D tail zero-padded)) * scale
//   m     = max_j s_j (exact)
//   e_j   = exp(s_j - m)                      (cpu_simd.h's exp on AVX2/AVX-512, libm's on portable)
//   sum   = hsum(sum over j-chunks of L keys, in order from lo, of e_j (the tail padded with 0))
//   p_j   = e_j / sum
//   o[d]  = sum over j = lo .. hi-1, in order, of p_j * v_j[d]   (fma, one accumulator per element)
// hsum is the fixed tree of cpu_simd.h (the portable path sums its 8 lanes in the same tree as AVX2, and rounds
// a*b + c twice where the others fma). Items are blocks of up to 8 query rows of one sequence x one kv head (the
// rows share each key/value row read); which rows share a block never changes a row's bits.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/parallel_for.h"

namespace zt {

struct CpuAttentionArgs {
    const float * q = nullptr;         // (T,H,D)
    const float * k_cache = nullptr;   // (S,M,KV,D)
    const float * v_cache = nullptr;   // (S,M,KV,D)
    float * out = nullptr;             // (T,H,D)
    int64_t T = 0, H = 0, D = 0, M = 0, KV = 0;
    bool causal = true;
    int32_t window = 0;                // > 0: sliding window (attention_key_range)
};

// path: portable, avx2 or avx512 (reference is the backend's own loop). Shapes are the caller's to check.
void cpu_attention(CpuMatmulPath path, ThreadPool & pool, const CpuAttentionArgs & a,
                   const std::vector<AttentionSeq> & seqs);

}  // namespace zt
