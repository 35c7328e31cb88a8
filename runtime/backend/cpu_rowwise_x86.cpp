// cpu_rowwise_x86: the AVX2 (8 lanes) and AVX-512 (16 lanes) kernels of the row-wise ops, in the per-element order
// of cpu_rowwise.h. Each function carries its own target attribute (cpu_simd.h), so this file builds with generic
// flags; the tables are handed out only when the CPU has the ISA (the matmul's check: cpu_matmul_path_supported).
// Tails are masked loads / stores (AVX-512) or maskload / maskstore (AVX2) of the same vector code.
//
// GCC contracts a*b + c into one fma in C++ (its -ffp-contract=fast default, even under -std=c++17) where the target
// has FMA, which would change the bits cpu_rowwise.h promises (and differ from the portable path, built without
// FMA). A product that feeds an add goes through opaque(), an empty asm the compiler cannot see through.
#include "runtime/backend/cpu_rowwise.h"

#include "runtime/backend/cpu_simd.h"

#if ZT_X86
#include <cmath>
#include <cstring>

namespace zt {
namespace {

using simd::exp16;
using simd::exp8;
using simd::hsum16;
using simd::hsum8;

// ---- AVX-512 -----------------------------------------------------------------------------------------------------
ZT_TARGET_AVX512 inline __m512 opaque(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}
ZT_TARGET_AVX512 inline __m512 mul_(__m512 a, __m512 b) { return opaque(_mm512_mul_ps(a, b)); }   // never fused
ZT_TARGET_AVX512 inline __mmask16 mask16(int64_t n) { return __mmask16(n >= 16 ? 0xffffu : (1u << n) - 1u); }

template <DType WT>
ZT_TARGET_AVX512 inline __m512 wload16(const void * w, int64_t i, __mmask16 m) {   // w[i..i+16) widened, 0 outside m
    if constexpr (WT == DType::F32) {
        return _mm512_maskz_loadu_ps(m, static_cast<const float *>(w) + i);
    } else {
        const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + i);
        if constexpr (WT == DType::BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        else return _mm512_cvtph_ps(h);
    }
}

ZT_TARGET_AVX512 void widen512(float * dst, const void * src, DType t, int64_t n) {
    if (t == DType::F32) { std::memcpy(dst, src, size_t(n) * sizeof(float)); return; }
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        __m512 v;
        switch (t) {
            case DType::F32: v = wload16<DType::F32>(src, i, m); break;
            case DType::F16: v = wload16<DType::F16>(src, i, m); break;
            case DType::BF16: v = wload16<DType::BF16>(src, i, m); break;
            default: convert_to_f32(dst, src, t, size_t(n)); return;   // raises the dtype error
        }
        _mm512_mask_storeu_ps(dst + i, m, v);
    }
}

template <DType WT>
ZT_TARGET_AVX512 void rmsnorm512_t(float * out, const float * x, const void * w, float eps, int64_t C) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; c += 16) {
        const __m512 v = _mm512_maskz_loadu_ps(mask16(C - c), x + c);
        acc = _mm512_add_ps(acc, mul_(v, v));
    }
    const float inv = 1.0f / std::sqrt(hsum16(acc) / float(C) + eps);
    const __m512 vi = _mm512_set1_ps(inv);
    for (int64_t c = 0; c < C; c += 16) {
        const __mmask16 m = mask16(C - c);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + c), vi);
        _mm512_mask_storeu_ps(out + c, m, _mm512_mul_ps(wload16<WT>(w, c, m), v));
    }
}

ZT_TARGET_AVX512 void rmsnorm512(float * out, const float * x, const void * w, DType wt, float eps, int64_t C) {
    switch (wt) {
        case DType::F32: return rmsnorm512_t<DType::F32>(out, x, w, eps, C);
        case DType::F16: return rmsnorm512_t<DType::F16>(out, x, w, eps, C);
        case DType::BF16: return rmsnorm512_t<DType::BF16>(out, x, w, eps, C);
        default: return cpu_row_kernels(CpuMatmulPath::portable).rmsnorm(out, x, w, wt, eps, C);   // raises
    }
}

ZT_TARGET_AVX512 void rope512(float * v, const float * cs, int64_t H, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < H; ++h, v += D)
        for (int64_t i = 0; i < half; i += 16) {
            const __mmask16 m = mask16(half - i);
            const __m512 x0 = _mm512_maskz_loadu_ps(m, v + i), x1 = _mm512_maskz_loadu_ps(m, v + half + i);
            const __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, cs + half + i);
            _mm512_mask_storeu_ps(v + i, m, _mm512_sub_ps(mul_(x0, c), mul_(x1, s)));
            _mm512_mask_storeu_ps(v + half + i, m, _mm512_add_ps(mul_(x1, c), mul_(x0, s)));
        }
}

ZT_TARGET_AVX512 void swiglu512(float * out, const float * g, const float * u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    auto silu_u = [&](__m512 gv, __m512 uv) ZT_TARGET_AVX512 {
        const __m512 e = exp16(_mm512_xor_ps(gv, sign));   // exp(-g)
        return _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv);
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, silu_u(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(out + i, m, silu_u(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

ZT_TARGET_AVX512 void add512(float * out, const float * a, const float * b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    for (; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

ZT_TARGET_AVX512 void accumulate512(float * acc, const float * x, int64_t n) { add512(acc, acc, x, n); }

// max of the non-NaN elements (vmaxps returns its second operand when the first is NaN); x[0] when that is NaN
ZT_TARGET_AVX512 float max512(const float * x, int64_t n) {
    if (std::isnan(x[0])) return x[0];
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
        m2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), m2);
        m3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), m3);
    }
    for (; i < n; i += 16) m0 = _mm512_mask_max_ps(m0, mask16(n - i), _mm512_maskz_loadu_ps(mask16(n - i), x + i), m0);
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));   // max is exact
}

ZT_TARGET_AVX512 int64_t argmax512(const float * x, int64_t n) {
    const float mx = max512(x, n);
    if (std::isnan(mx)) return 0;
    const __m512 mv = _mm512_set1_ps(mx);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __mmask16 eq = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, x + i), mv, _CMP_EQ_OQ);
        if (eq) return i + __builtin_ctz(unsigned(eq));
    }
    return 0;   // not reached: mx is one of the elements
}

// ---- AVX2 --------------------------------------------------------------------------------------------------------
ZT_TARGET_AVX2 inline __m256 opaque(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}
ZT_TARGET_AVX2 inline __m256 mul_(__m256 a, __m256 b) { return opaque(_mm256_mul_ps(a, b)); }   // never fused
ZT_TARGET_AVX2 inline __m256i mask8(int64_t n) {   // lanes < n all ones
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n < 8 ? n : 8)), idx);
}
ZT_TARGET_AVX2 inline __m256 load8(const float * p, int64_t n) {   // p[0..8), 0 past n
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(n));
}
ZT_TARGET_AVX2 inline void store8(float * p, int64_t n, __m256 v) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, mask8(n), v);
}

template <DType WT>
ZT_TARGET_AVX2 inline __m256 wload8(const void * w, int64_t i, int64_t n) {   // w[i..i+8) widened, 0 past n
    if constexpr (WT == DType::F32) {
        return load8(static_cast<const float *>(w) + i, n);
    } else {
        const uint16_t * p = static_cast<const uint16_t *>(w) + i;
        alignas(16) uint16_t tmp[8] = {};
        if (n < 8) { for (int64_t k = 0; k < n; ++k) tmp[k] = p[k]; p = tmp; }
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        if constexpr (WT == DType::BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        else return _mm256_cvtph_ps(h);
    }
}

ZT_TARGET_AVX2 void widen256(float * dst, const void * src, DType t, int64_t n) {
    if (t == DType::F32) { std::memcpy(dst, src, size_t(n) * sizeof(float)); return; }
    for (int64_t i = 0; i < n; i += 8) {
        __m256 v;
        switch (t) {
            case DType::F32: v = wload8<DType::F32>(src, i, n - i); break;
            case DType::F16: v = wload8<DType::F16>(src, i, n - i); break;
            case DType::BF16: v = wload8<DType::BF16>(src, i, n - i); break;
            default: convert_to_f32(dst, src, t, size_t(n)); return;   // raises the dtype error
        }
        store8(dst + i, n - i, v);
    }
}

template <DType WT>
ZT_TARGET_AVX2 void rmsnorm256_t(float * out, const float * x, const void * w, float eps, int64_t C) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();   // lanes 0-7 and 8-15 of the 16
    for (int64_t c = 0; c < C; c += 16) {
        const __m256 v0 = load8(x + c, C - c);
        const __m256 v1 = C - c > 8 ? load8(x + c + 8, C - c - 8) : _mm256_setzero_ps();
        a0 = _mm256_add_ps(a0, mul_(v0, v0));
        a1 = _mm256_add_ps(a1, mul_(v1, v1));
    }
    const float inv = 1.0f / std::sqrt(hsum8(_mm256_add_ps(a0, a1)) / float(C) + eps);
    const __m256 vi = _mm256_set1_ps(inv);
    for (int64_t c = 0; c < C; c += 8)
        store8(out + c, C - c, _mm256_mul_ps(wload8<WT>(w, c, C - c), _mm256_mul_ps(load8(x + c, C - c), vi)));
}

ZT_TARGET_AVX2 void rmsnorm256(float * out, const float * x, const void * w, DType wt, float eps, int64_t C) {
    switch (wt) {
        case DType::F32: return rmsnorm256_t<DType::F32>(out, x, w, eps, C);
        case DType::F16: return rmsnorm256_t<DType::F16>(out, x, w, eps, C);
        case DType::BF16: return rmsnorm256_t<DType::BF16>(out, x, w, eps, C);
        default: return cpu_row_kernels(CpuMatmulPath::portable).rmsnorm(out, x, w, wt, eps, C);   // raises
    }
}

ZT_TARGET_AVX2 void rope256(float * v, const float * cs, int64_t H, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < H; ++h, v += D)
        for (int64_t i = 0; i < half; i += 8) {
            const int64_t r = half - i;
            const __m256 x0 = load8(v + i, r), x1 = load8(v + half + i, r);
            const __m256 c = load8(cs + i, r), s = load8(cs + half + i, r);
            store8(v + i, r, _mm256_sub_ps(mul_(x0, c), mul_(x1, s)));
            store8(v + half + i, r, _mm256_add_ps(mul_(x1, c), mul_(x0, s)));
        }
}

ZT_TARGET_AVX2 void swiglu256(float * out, const float * g, const float * u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n; i += 8) {
        const __m256 gv = load8(g + i, n - i), uv = load8(u + i, n - i);
        const __m256 e = exp8(_mm256_xor_ps(gv, sign));   // exp(-g)
        store8(out + i, n - i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv));
    }
}

ZT_TARGET_AVX2 void add256(float * out, const float * a, const float * b, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) store8(out + i, n - i, _mm256_add_ps(load8(a + i, n - i), load8(b + i, n - i)));
}

ZT_TARGET_AVX2 void accumulate256(float * acc, const float * x, int64_t n) { add256(acc, acc, x, n); }

ZT_TARGET_AVX2 float max256(const float * x, int64_t n) {
    if (std::isnan(x[0])) return x[0];
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    alignas(32) float l[8];
    _mm256_store_ps(l, m0);
    float m = l[0];
    for (int k = 1; k < 8; ++k) m = l[k] > m ? l[k] : m;
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

ZT_TARGET_AVX2 int64_t argmax256(const float * x, int64_t n) {
    const float mx = max256(x, n);
    if (std::isnan(mx)) return 0;
    const __m256 mv = _mm256_set1_ps(mx);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const int eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
        if (eq) return i + __builtin_ctz(unsigned(eq));
    }
    for (; i < n; ++i)
        if (x[i] == mx) return i;
    return 0;   // not reached: mx is one of the elements
}

const CpuRowKernels kAvx512 = {widen512, rmsnorm512, rope512, swiglu512, add512, accumulate512, max512, argmax512};
const CpuRowKernels kAvx2 = {widen256, rmsnorm256, rope256, swiglu256, add256, accumulate256, max256, argmax256};

}  // namespace

const CpuRowKernels * cpu_row_kernels_avx2() {
    return cpu_matmul_path_supported(CpuMatmulPath::avx2) ? &kAvx2 : nullptr;
}
const CpuRowKernels * cpu_row_kernels_avx512() {
    return cpu_matmul_path_supported(CpuMatmulPath::avx512) ? &kAvx512 : nullptr;
}

}  // namespace zt

#else  // not x86: the portable path only
namespace zt {
const CpuRowKernels * cpu_row_kernels_avx2() { return nullptr; }
const CpuRowKernels * cpu_row_kernels_avx512() { return nullptr; }
}  // namespace zt
#endif
