// cpu_rowwise: the fast paths of the CPU backend's row-wise ops (embedding, rmsnorm, rope, swiglu, add, mean pooling,
// and the max / argmax scans of sampling), one kernel table per CpuMatmulPath other than reference (whose plain loops
// stay in backend_cpu_ops.cpp and sample_token.cpp, the readable spec). The backend splits rows (or element ranges)
// over its threads and calls one kernel per row; a kernel never sees the row count, so a row's bits do not depend on
// the batch, the chunking or the threads.
//
// Per-element order each kernel keeps (identical bits on portable, avx2 and avx512 unless said otherwise):
//   widen      dst[c] = src[c] widened to fp32 (exact).                                  = reference bits
//   rmsnorm    ss: 16 lane sums, lane l takes x[c]*x[c] (a multiply, then an add, no fma) for c = l mod 16 in increasing
//              c (the tail a zero-padded chunk); then one tree: l + (l+8), then l + (l+4), l + (l+2), l0 + l1 (AVX2:
//              lanes 0-7 and 8-15 in two registers, added first). inv = 1 / sqrt(ss / C + eps);
//              out[c] = w[c] * (x[c] * inv) as the reference. Same bits on every fast path; not the reference's
//              (which sums in order).
//   rope       v[i] = x0*c - x1*s, v[i+half] = x1*c + x0*s per element (multiplies, then one add/sub; no fma), with
//              the caller's cos/sin table.                                                    = reference bits
//   swiglu     out = (g / (1 + exp(-g))) * u. avx2 / avx512: exp = simd::exp8 / exp16 (cpu_simd.h; the same bits on
//              both, within 2 ulp of std::exp); portable: std::exp, the reference's bits (simd::exp_lane's
//              std::fma is a library call on CPUs without FMA, the ones that path is for).
//   add        out = a + b.                                                                   = reference bits
//   accumulate acc[c] += x[c] (mean pooling: the rows in order into acc starting at 0, then scale). = reference bits
//   max        the largest non-NaN element, or x[0] when x[0] is NaN (= the reference's running
//              `if (x[i] > m) m = x[i]` / std::max(m, x[i]) from m = x[0]), -0 and +0 equal.
//   argmax     the lowest index i with x[i] == max(x), or 0 when x[0] is NaN (= the reference's `x[i] > x[best]`).
#pragma once
#include <cstdint>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/model/dtype.h"

namespace zt {

struct CpuRowKernels {
    // dst (n) fp32 = src (n) of dtype t (F32/F16/BF16)
    void (*widen)(float * dst, const void * src, DType t, int64_t n);
    // out (C) = rmsnorm of x (C) with weight w (C) of dtype wt (F32/F16/BF16); out may be x
    void (*rmsnorm)(float * out, const float * x, const void * w, DType wt, float eps, int64_t C);
    // v (H,D) rotated in place; cs (D) = cos[0, D/2) then sin[0, D/2) (already times the attention scaling)
    void (*rope)(float * v, const float * cs, int64_t H, int64_t D);
    // out (n) = silu(g) * u; out may be g or u
    void (*swiglu)(float * out, const float * g, const float * u, int64_t n);
    // out (n) = a + b; out may be a or b
    void (*add)(float * out, const float * a, const float * b, int64_t n);
    // acc (n) += x (n)
    void (*accumulate)(float * acc, const float * x, int64_t n);
    // max of x (n >= 1), see the top of the file
    float (*max)(const float * x, int64_t n);
    // argmax of x (n >= 1), lowest index on ties
    int64_t (*argmax)(const float * x, int64_t n);
};

// The kernels of a fast path (portable, avx2, avx512; one this CPU supports: cpu_matmul_path_supported). Asking for
// the reference path is an error: its loops are the callers' own.
const CpuRowKernels & cpu_row_kernels(CpuMatmulPath path);

// cpu_rowwise_x86.cpp: the AVX2 / AVX-512 tables, nullptr where the CPU (or the build's architecture) lacks them.
const CpuRowKernels * cpu_row_kernels_avx2();
const CpuRowKernels * cpu_row_kernels_avx512();

}  // namespace zt
