// cpu_dequant_x86: the AVX2 (8 lanes) and AVX-512 (16 lanes) dequantizers of GGUF blocks (cpu_dequant.h). The
// kernels are written once in cpu_dequant_kernels.inc over a vector type V and included once per ISA inside that
// ISA's target region (cpu_simd.h), so the build flags stay generic. Bytes are widened to 32-bit lanes
// (vpmovzxbd / vpmovsxbd), nibbles and bits taken with shifts and masks, converted exactly (vcvtdq2ps), then scaled
// by the block's factors as dequantize_row scales them (see cpu_dequant_kernels.inc on why GCC's fusing of
// d*q + m into an fma cannot change a bit).
#include "runtime/backend/cpu_dequant.h"

#include "runtime/backend/cpu_simd.h"

#include <cstring>

#if ZT_X86
#include <cpuid.h>

namespace zt {

ZT_TARGET_REGION_AVX2_BEGIN
namespace dequant_avx2 {
struct V {
    static constexpr int L = 8;
    using R = __m256;
    using I = __m256i;
    static I u8(const uint8_t * p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))); }
    static I i8(const uint8_t * p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))); }
    static I and_(I a, int m) { return _mm256_and_si256(a, _mm256_set1_epi32(m)); }
    static I srl(I a, int s) { return _mm256_srli_epi32(a, s); }
    static I sll(I a, int s) { return _mm256_slli_epi32(a, s); }
    static I or_(I a, I b) { return _mm256_or_si256(a, b); }
    static I subi(I a, int v) { return _mm256_sub_epi32(a, _mm256_set1_epi32(v)); }
    static R cvt(I a) { return _mm256_cvtepi32_ps(a); }
    static R set1(float a) { return _mm256_set1_ps(a); }
    static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
    static R add(R a, R b) { return _mm256_add_ps(a, b); }
    static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
    static void store(float * p, R a) { _mm256_storeu_ps(p, a); }
    static float half(const uint8_t * p) { return _cvtsh_ss(uint16_t(p[0] | (p[1] << 8))); }
    static void k_factors(uint64_t sc, uint64_t mn, float d, float dmin, float * out) {   // out[16]
        _mm256_store_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(sc)))),
                                           _mm256_set1_ps(d)));
        _mm256_store_ps(out + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(mn)))),
                                               _mm256_set1_ps(dmin)));
    }
};
#define ZT_DEQUANT_LUT 0   // vpermps has 8 entries: a 16-entry lookup (two and a blend) costs more than cvt + mul
#include "runtime/backend/cpu_dequant_kernels.inc"
#undef ZT_DEQUANT_LUT
}  // namespace dequant_avx2
ZT_TARGET_REGION_END

ZT_TARGET_REGION_AVX512_BEGIN
namespace dequant_avx512 {
struct V {
    static constexpr int L = 16;
    using R = __m512;
    using I = __m512i;
    static I u8(const uint8_t * p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
    static I i8(const uint8_t * p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
    static I and_(I a, int m) { return _mm512_and_si512(a, _mm512_set1_epi32(m)); }
    static I srl(I a, int s) { return _mm512_srli_epi32(a, unsigned(s)); }
    static I sll(I a, int s) { return _mm512_slli_epi32(a, unsigned(s)); }
    static I or_(I a, I b) { return _mm512_or_si512(a, b); }
    static I subi(I a, int v) { return _mm512_sub_epi32(a, _mm512_set1_epi32(v)); }
    static R cvt(I a) { return _mm512_cvtepi32_ps(a); }
    static R set1(float a) { return _mm512_set1_ps(a); }
    static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
    static R add(R a, R b) { return _mm512_add_ps(a, b); }
    static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
    static void store(float * p, R a) { _mm512_storeu_ps(p, a); }
    static float half(const uint8_t * p) { return _cvtsh_ss(uint16_t(p[0] | (p[1] << 8))); }
    static I iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
    static R lut16(R table, I idx) { return _mm512_permutexvar_ps(idx, table); }
    static R lut32(R lo, R hi, I idx) { return _mm512_permutex2var_ps(lo, idx, hi); }
    static void k_factors(uint64_t sc, uint64_t mn, float d, float dmin, float * out) {   // out[16]
        const __m512 f = _mm512_insertf32x8(_mm512_set1_ps(d), _mm256_set1_ps(dmin), 1);
        _mm512_store_ps(out, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_set_epi64x(int64_t(mn),
                                                                                                int64_t(sc)))), f));
    }
};
#define ZT_DEQUANT_LUT 1   // vpermps / vpermt2ps: 16 / 32 entries, indexed by the low 4 / 5 bits of each lane
#include "runtime/backend/cpu_dequant_kernels.inc"
#undef ZT_DEQUANT_LUT
}  // namespace dequant_avx512
ZT_TARGET_REGION_END

namespace {
// F16C from CPUID leaf 1 (ECX bit 29), as cpu_matmul_x86.cpp checks it.
bool has_f16c() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
}  // namespace

DequantFn cpu_dequant_avx2(QuantType t) {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    return ok ? dequant_avx2::dequant_of(t) : nullptr;
}

DequantFn cpu_dequant_avx512(QuantType t) {
    static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                           __builtin_cpu_supports("fma") && has_f16c();
    return ok ? dequant_avx512::dequant_of(t) : nullptr;
}

}  // namespace zt

#else  // not x86: only the reference and portable paths

namespace zt {
DequantFn cpu_dequant_avx2(QuantType) { return nullptr; }
DequantFn cpu_dequant_avx512(QuantType) { return nullptr; }
}  // namespace zt

#endif
