// cpu_simd: what the CPU backend's fast paths share: the x86 target attributes and target regions, and vector exp
// for 16 lanes (AVX-512), 8 lanes (AVX2) and one lane (exp_lane), all three the same arithmetic, so the same input
// gives the same bits on every path.
//
// exp(x), after Cephes' expf: n = nearest_even(x * log2(e)); r = x - n*ln2 in two fma steps (ln2 = 0.693359375 -
// 2.12194440e-4); y = P(r) by Horner's rule in fma (degree 5, Cephes' coefficients), y = fma(y, r*r, r) + 1;
// result = y * 2^n (n put into the exponent bits). x > 88.3762626647949 (where n would reach 128) gives +inf,
// x < -87.33654 (below the smallest normal float) gives 0, NaN gives NaN. Within 2 ulp of std::exp on the rest
// (tests/test_cpu_simd.cpp). Written by hand rather than taken from a library (SLEEF) because it must inline into
// the kernels' target regions and give bit-identical results on the scalar, AVX2 and AVX-512 paths.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#define ZT_X86 1
#include <immintrin.h>
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* placeholders (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#else
#define ZT_X86 0
#endif

#define ZT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ZT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

// Target regions: every function defined between ZT_TARGET_REGION_*_BEGIN and ZT_TARGET_REGION_END (templates
// included) is compiled for that ISA, so one template body can be included once per ISA (see cpu_attention.cpp).
#if defined(__clang__)
#define ZT_PRAGMA(x) _Pragma(#x)
#define ZT_TARGET_REGION_AVX2_BEGIN \
    ZT_PRAGMA(clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function))
#define ZT_TARGET_REGION_AVX512_BEGIN                                                                      \
    ZT_PRAGMA(clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                                   apply_to = function))
#define ZT_TARGET_REGION_END ZT_PRAGMA(clang attribute pop)
#else
#define ZT_PRAGMA(x) _Pragma(#x)
#define ZT_TARGET_REGION_AVX2_BEGIN ZT_PRAGMA(GCC push_options) ZT_PRAGMA(GCC target("avx2,fma,f16c"))
#define ZT_TARGET_REGION_AVX512_BEGIN \
    ZT_PRAGMA(GCC push_options) ZT_PRAGMA(GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))
#define ZT_TARGET_REGION_END ZT_PRAGMA(GCC pop_options)
#endif

namespace zt::simd {

// The constants of exp (see the top of the file).
constexpr float kExpHi = 88.3762626647949f, kExpLo = -87.33654f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

// One lane of exp: the readable form of the vector versions below (same operations, same bits).
inline float exp_lane(float x) {
    if (std::isnan(x)) return x;
    if (x > kExpHi) return INFINITY;
    if (!(x >= kExpLo)) return 0.0f;
    const float n = std::nearbyint(x * kLog2e);
    float r = std::fma(n, -kLn2Hi, x);
    r = std::fma(n, -kLn2Lo, r);
    float y = kExpP0;
    y = std::fma(y, r, kExpP1);
    y = std::fma(y, r, kExpP2);
    y = std::fma(y, r, kExpP3);
    y = std::fma(y, r, kExpP4);
    y = std::fma(y, r, kExpP5);
    y = std::fma(y, r * r, r) + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

#if ZT_X86
ZT_TARGET_AVX512 inline __m512 exp16(__m512 x) {
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __mmask16 over = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpHi), _CMP_GT_OQ);
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpLo), _CMP_LT_OQ);
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kExpLo)), _mm512_set1_ps(kExpHi));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Hi), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Lo), r);
    __m512 y = _mm512_set1_ps(kExpP0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP5));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 res = _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
    res = _mm512_mask_mov_ps(res, over, _mm512_set1_ps(INFINITY));
    res = _mm512_mask_mov_ps(res, under, _mm512_setzero_ps());
    return _mm512_mask_mov_ps(res, nan, x);
}

ZT_TARGET_AVX2 inline __m256 exp8(__m256 x) {
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(kExpHi), _CMP_GT_OQ);
    const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(kExpLo), _CMP_LT_OQ);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
    __m256 y = _mm256_set1_ps(kExpP0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP5));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
    res = _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), over);
    res = _mm256_blendv_ps(res, _mm256_setzero_ps(), under);
    return _mm256_blendv_ps(res, x, nan);
}

// Sum of the 16 lanes in one fixed tree: upper half + lower half, down to one lane (the matmul's order).
ZT_TARGET_AVX512 inline float hsum16(__m512 a) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}
// out[k] = hsum16(a[k]) for k < 4, bit for bit, with the shuffles shared: each lane is summed in hsum16's tree
// (halves of 8, then of 4, then lanes 0+2 / 1+3, then 0+1); 12 instructions instead of 4 x 8.
ZT_TARGET_AVX512 inline void hsum16x4(const __m512 * a, float * out) {
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], 0x44), _mm512_shuffle_f32x4(a[0], a[1], 0xEE));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], 0x44), _mm512_shuffle_f32x4(a[2], a[3], 0xEE));
    __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0x4E));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0xB1));
    const __m512 lanes = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u);
    _mm_storeu_ps(out, _mm512_castps512_ps128(lanes));
}
// Sum of the 8 lanes: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
ZT_TARGET_AVX2 inline float hsum8(__m256 a) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}
#endif

}  // namespace zt::simd
