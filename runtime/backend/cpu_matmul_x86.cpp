// cpu_matmul_x86: the AVX2+FMA (8 lanes, 4 x 3 tiles) and AVX-512 (16 lanes; 4 x 6 tiles for F32/F16 weights, 8 x 3 for
// BF16, K in blocks of 512) micro-kernels of the CPU matmul (the F32 ones also run the quantized path's dequantized
// W tiles, cpu_matmul_quant.cpp). Each function carries its own __attribute__((target)), so
// this file builds with generic flags and the tables are handed out only when __builtin_cpu_supports says the CPU has
// the ISA.
//
// Per output element (x row i, W row j): acc = 0 (L lanes); for k = 0, L, 2L, ... : acc = fma(x[k..k+L),
// widen(w[k..k+L)), acc), the last step with a zero-padded (masked) load when L does not divide K (BF16 on
// AVX-512: 32-chunks, even then odd elements, see Avx512Bf16); then hsum(acc) in one fixed tree (upper half +
// lower half, down to one lane); then + bias[j]. BF16 is widened by
// zero-extending to 32 bits and shifting left 16, F16 by vcvtph2ps, both in registers.
#include "runtime/backend/cpu_matmul_tiles.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

#include "runtime/backend/cpu_simd.h"

#include <cstring>



namespace zt {
namespace {

// ---- AVX2: 8 lanes ---------------------------------------------------------------------------------------------
template <DType WT>
ZT_TARGET_AVX2 inline __m256 load8(const void * w, int64_t i) {   // w[i..i+8) widened
    if constexpr (WT == DType::F32) {
        return _mm256_loadu_ps(static_cast<const float *>(w) + i);
    } else {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(w) + i));
        if constexpr (WT == DType::BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        else return _mm256_cvtph_ps(h);
    }
}

using simd::hsum8;   // cpu_simd.h: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))

// Any [k0, k1) of K (TileFn's K blocks, k0 and k1 multiples of 8 or k1 = K): the quantized path's driver walks K in
// blocks; the F32/F16/BF16 driver calls [0, K) (k_block = 0).
template <DType WT>
struct Avx2 {
    static constexpr int MR = 4, NR = 3;
    static constexpr int k_align = 1, k_block = 0;
    static constexpr PackFn pack_x = nullptr;
    template <int M, int N>
    ZT_TARGET_AVX2 static void run(const float * x, int64_t ldx, int64_t K, const void * w, float * out, int64_t ldo,
                                  const float * bias, int64_t k0, int64_t k1, float * part) {
        constexpr size_t ws = WT == DType::F32 ? 4 : 2;
        __m256 acc[M][N];
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) acc[i][j] = k0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(part + (i * N + j) * 16);
        int64_t k = k0;
        for (; k + 8 <= k1; k += 8) {
            __m256 wv[N];
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) wv[j] = load8<WT>(w, j * K + k);
#pragma GCC unroll 8
            for (int i = 0; i < M; ++i) {
                const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 8
                for (int j = 0; j < N; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
        if (k < k1) {   // zero-padded copies of the tail (k1 = K)
            const size_t rem = size_t(K - k);
            alignas(32) unsigned char wt[N][32] = {};
            alignas(32) float xt[8] = {};
            __m256 wv[N];
            for (int j = 0; j < N; ++j) {
                std::memcpy(wt[j], static_cast<const char *>(w) + (size_t(j * K + k)) * ws, rem * ws);
                wv[j] = load8<WT>(wt[j], 0);
            }
            for (int i = 0; i < M; ++i) {
                std::memcpy(xt, x + i * ldx + k, rem * sizeof(float));
                const __m256 xv = _mm256_load_ps(xt);
                for (int j = 0; j < N; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
        if (k1 < K) {   // a K block: the accumulators wait in part for the next one
            for (int i = 0; i < M; ++i)
                for (int j = 0; j < N; ++j) _mm256_store_ps(part + (i * N + j) * 16, acc[i][j]);
            return;
        }
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
                const float s = hsum8(acc[i][j]);
                out[i * ldo + j] = bias ? s + bias[j] : s;
            }
    }
};

// ---- AVX-512: 16 lanes -----------------------------------------------------------------------------------------
template <DType WT>
ZT_TARGET_AVX512 inline __m512 load16(const void * w, int64_t i, __mmask16 m) {   // w[i..i+16) widened, lanes
    if constexpr (WT == DType::F32) {                                             // outside m read as 0
        return _mm512_maskz_loadu_ps(m, static_cast<const float *>(w) + i);
    } else {
        const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + i);
        if constexpr (WT == DType::BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        else return _mm512_cvtph_ps(h);
    }
}
template <DType WT>
ZT_TARGET_AVX512 inline __m512 load16(const void * w, int64_t i) {
    if constexpr (WT == DType::F32) {
        return _mm512_loadu_ps(static_cast<const float *>(w) + i);
    } else {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(static_cast<const uint16_t *>(w) + i));
        if constexpr (WT == DType::BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        else return _mm512_cvtph_ps(h);
    }
}

// cpu_simd.h: hsum16 (one accumulator, the spec) and hsum16x4 (four at once, the same bits).

// out[i*ldo + j] = hsum16(acc[i][j]) (+ bias[j]), four accumulators per hsum16x4.
template <int M, int N>
ZT_TARGET_AVX512 inline void store_sums(const __m512 (&acc)[M][N], float * out, int64_t ldo, const float * bias) {
    constexpr int MN = M * N;
    float sums[(MN + 3) / 4 * 4];
#pragma GCC unroll 8
    for (int g = 0; g < MN; g += 4) {
        __m512 v[4];
#pragma GCC unroll 8
        for (int q = 0; q < 4; ++q) v[q] = g + q < MN ? acc[(g + q) / N][(g + q) % N] : _mm512_setzero_ps();
        simd::hsum16x4(v, sums + g);
    }
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) out[i * ldo + j] = bias ? sums[i * N + j] + bias[j] : sums[i * N + j];
}

// The accumulators of a K-blocked call (TileFn): zero at k0 = 0, else read back from part.
template <int M, int N>
ZT_TARGET_AVX512 inline void acc_start(__m512 (&acc)[M][N], int64_t k0, const float * part) {
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < N; ++j) acc[i][j] = k0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(part + (i * N + j) * 16);
}
// ... then, at k1 = K, reduced into out; before that, left in part.
template <int M, int N>
ZT_TARGET_AVX512 inline void acc_finish(const __m512 (&acc)[M][N], int64_t k1, int64_t K, float * part, float * out,
                                        int64_t ldo, const float * bias) {
    if (k1 == K) { store_sums(acc, out, ldo, bias); return; }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < N; ++j) _mm512_store_ps(part + (i * N + j) * 16, acc[i][j]);
}

// kPrefetch: at M = 1 (decode) ask for the next tile's W rows ahead; off for W already in cache (the quantized
// path's dequantized scratch), where the rows past the tile are not W. The arithmetic is the same either way.
template <DType WT, bool kPrefetch = true>
struct Avx512 {
    static constexpr int MR = 4, NR = 6;
    static constexpr int k_align = 1, k_block = 512;
    static constexpr PackFn pack_x = nullptr;
    template <int M, int N>
    ZT_TARGET_AVX512 static void run(const float * x, int64_t ldx, int64_t K, const void * w, float * out, int64_t ldo,
                                  const float * bias, int64_t k0, int64_t k1, float * part) {
        __m512 acc[M][N];
        acc_start(acc, k0, part);
        int64_t k = k0;
        for (; k + 16 <= k1; k += 16) {
            __m512 wv[N];
            if constexpr (M == 1 && kPrefetch) {   // decode: W is streamed once; ask for the next tile's rows (N*K ahead) early
#pragma GCC unroll 8
                for (int j = 0; j < N; ++j)
                    _mm_prefetch(static_cast<const char *>(w) + size_t((N + j) * K + k) * (WT == DType::F32 ? 4 : 2),
                                 _MM_HINT_T0);
            }
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) wv[j] = load16<WT>(w, j * K + k);
#pragma GCC unroll 8
            for (int i = 0; i < M; ++i) {
                const __m512 xv = _mm512_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 8
                for (int j = 0; j < N; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
        if (k < k1) {   // the K tail (k1 = K)
            const __mmask16 m = __mmask16((1u << (K - k)) - 1u);
            __m512 wv[N];
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) wv[j] = load16<WT>(w, j * K + k, m);
#pragma GCC unroll 8
            for (int i = 0; i < M; ++i) {
                const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
#pragma GCC unroll 8
                for (int j = 0; j < N; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
        acc_finish(acc, k1, K, part, out, ldo, bias);
    }
};

// BF16 weights on AVX-512: 32 weights per load, split into the even ones (shifted left 16: the low bf16 of each
// 32-bit lane) and the odd ones (masked: the high bf16), 2 ALU uops per 32 weights instead of 4, each widened
// vector used by 8 x rows. x is packed to match, per tile: chunk c (32 floats of K) of row i sits at
// dst[(c*m + i)*32], as [x0, x2, ..., x30, x1, x3, ..., x31], zero past K (the W tail is a masked load), so the
// kernel walks one pointer. Per element: lane l sums, chunk by chunk, x[2l]·w[2l] then x[2l+1]·w[2l+1].
ZT_TARGET_AVX512 void pack_even_odd(const float * src, int64_t ld, int m, int64_t K, float * dst) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int64_t c = 0; c < K; c += 32) {
        const int64_t rem = K - c;   // lanes past K read as 0
        const __mmask16 lo = rem >= 16 ? __mmask16(0xffff) : __mmask16((1u << rem) - 1u);
        const __mmask16 hi = rem >= 32  ? __mmask16(0xffff)
                             : rem > 16 ? __mmask16((1u << (rem - 16)) - 1u)
                                        : __mmask16(0);
        for (int i = 0; i < m; ++i) {
            const float * s = src + i * ld + c;
            float * d = dst + (c / 32 * m + i) * 32;
            const __m512 a = _mm512_maskz_loadu_ps(lo, s), b = _mm512_maskz_loadu_ps(hi, s + 16);
            _mm512_store_ps(d, _mm512_permutex2var_ps(a, even, b));
            _mm512_store_ps(d + 16, _mm512_permutex2var_ps(a, odd, b));
        }
    }
}

struct Avx512Bf16 {
    static constexpr int MR = 8, NR = 3, k_align = 32, k_block = 512;   // 24 accumulators + 3 W vectors
    static constexpr PackFn pack_x = pack_even_odd;
    // acc[i][j] += the 32-chunk at k: x row i's even half times w row j's even bf16, then the odd halves. W is
    // loaded twice (a memory barrier between the halves keeps the compiler from holding N more registers).
    template <int M, int N>
    ZT_TARGET_AVX512 static inline void step(__m512 (&acc)[M][N], const uint16_t * wp, int64_t K, __mmask32 m,
                                             const float * xc, int64_t k, __m512i hi) {
        __m512 wv[N];
#pragma GCC unroll 8
        for (int j = 0; j < N; ++j)   // even
            wv[j] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_maskz_loadu_epi16(m, wp + j * K + k), 16));
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
            __m512 xv = _mm512_load_ps(xc + i * 32);
            asm("" : "+v"(xv));   // one load per row, not one per FMA (the load ports are the limit at 8 x 3)
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
        asm volatile("" ::: "memory");
#pragma GCC unroll 8
        for (int j = 0; j < N; ++j)   // odd
            wv[j] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_maskz_loadu_epi16(m, wp + j * K + k), hi));
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
            __m512 xv = _mm512_load_ps(xc + i * 32 + 16);
            asm("" : "+v"(xv));
#pragma GCC unroll 8
            for (int j = 0; j < N; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    template <int M, int N>
    ZT_TARGET_AVX512 static void run(const float * x, int64_t ldx, int64_t K, const void * w, float * out, int64_t ldo,
                                  const float * bias, int64_t k0, int64_t k1, float * part) {
        const uint16_t * wp = static_cast<const uint16_t *>(w);
        const __m512i hi = _mm512_set1_epi32(int32_t(0xffff0000u));
        __m512 acc[M][N];
        acc_start(acc, k0, part);
        int64_t k = k0;
        for (; k + 32 <= k1; k += 32) step(acc, wp, K, ~__mmask32(0), x + k * M, k, hi);
        if (k < k1)   // the K tail (k1 = K): a masked load (lanes past K read as 0; x is zero-padded there)
            step(acc, wp, K, __mmask32((1u << (K - k)) - 1u), x + k * M, k, hi);
        acc_finish(acc, k1, K, part, out, ldo, bias);
    }
};

const TileTable * avx512_tables(DType wt) {
    static const TileTable f32 = make_tile_table<Avx512<DType::F32>>();
    static const TileTable bf16 = make_tile_table<Avx512Bf16>();
    static const TileTable f16 = make_tile_table<Avx512<DType::F16>>();
    return wt == DType::F32 ? &f32 : wt == DType::BF16 ? &bf16 : &f16;
}

template <template <DType> class Kern>
const TileTable * tables_for(DType wt) {
    static const TileTable f32 = make_tile_table<Kern<DType::F32>>();
    static const TileTable bf16 = make_tile_table<Kern<DType::BF16>>();
    static const TileTable f16 = make_tile_table<Kern<DType::F16>>();
    return wt == DType::F32 ? &f32 : wt == DType::BF16 ? &bf16 : &f16;
}

// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know the name "f16c". The AVX
// state the OS must save is already checked by __builtin_cpu_supports("avx2") / ("avx512f").
bool cpu_has_f16c() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

}  // namespace

const TileTable * cpu_matmul_tiles_avx2(DType wt) {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    return ok ? tables_for<Avx2>(wt) : nullptr;
}

const TileTable * cpu_matmul_tiles_avx512(DType wt) {
    return cpu_matmul_tiles_avx512_cached() ? avx512_tables(wt) : nullptr;
}

const TileTable * cpu_matmul_tiles_avx512_cached() {
    static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                           __builtin_cpu_supports("fma") && cpu_has_f16c();
    static const TileTable cached = make_tile_table<Avx512<DType::F32, false>>();
    return ok ? &cached : nullptr;
}

}  // namespace zt

#else  // not x86: only the reference and portable paths

namespace zt {
const TileTable * cpu_matmul_tiles_avx2(DType) { return nullptr; }
const TileTable * cpu_matmul_tiles_avx512(DType) { return nullptr; }
const TileTable * cpu_matmul_tiles_avx512_cached() { return nullptr; }
}  // namespace zt

#endif
