// cpu_matmul_quant_x86: the AVX-512 decode kernels of the quantized matmul (cpu_matmul_quant.cpp): one x row (T = 1)
// against up to 8 W rows of Q8_0, Q4_0, Q4_1 or Q4_K, the weights dequantized in registers and never stored. Each
// weight is dequantized as cpu_dequant_kernels.inc's AVX-512 path does it (Q8_0: convert, times d; the 4-bit types:
// the 16 values a block or sub-block can take, computed with dequantize_row's operations, then one vpermps per 16
// weights: the exact values),
// and each output element is summed exactly as the AVX-512 F32 micro-kernel sums it (cpu_matmul_x86.cpp, M = 1):
// one 16-lane accumulator, acc = fma(x[k..k+16), w[k..k+16), acc) for k = 0, 16, 32, ... in order, then hsum16's
// tree, then + bias. So a row gets the same bits here as on the dequantized-scratch path (any T) and as the F32
// path on the dequantized W: tested by tests/test_cpu_matmul.cpp. Only the memory traffic differs: W's bytes are
// read once and the dequantized tile never goes through L1.
#include "runtime/backend/cpu_matmul_tiles.h"

#include "runtime/backend/cpu_simd.h"

#if ZT_X86
#include <cstring>

namespace zt {

ZT_TARGET_REGION_AVX512_BEGIN
namespace {

inline float half_at(const uint8_t * p) { return _cvtsh_ss(uint16_t(p[0] | (p[1] << 8))); }

// The 16-lane chunks of one block of W row j, in increasing k: Block::run(b, x, acc) adds the block at b (whose
// weights start at x's k) into acc; run_rows<N>(b, row_bytes, x, acc) does it for the blocks of N rows.
struct Q4_0Block {
    static constexpr int kWeights = 32, kBytes = 18;
    static void run(const uint8_t * b, const float * x, __m512 & acc) {
        const __m512 d = _mm512_set1_ps(half_at(b));
        const __m512 table = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(8))));
        const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2)));
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x), _mm512_permutexvar_ps(u, table), acc);
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), _mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), table), acc);
    }
};
struct Q4_1Block {
    static constexpr int kWeights = 32, kBytes = 20;
    static void run(const uint8_t * b, const float * x, __m512 & acc) {
        const __m512 d = _mm512_set1_ps(half_at(b)), m = _mm512_set1_ps(half_at(b + 2));
        const __m512 table = _mm512_add_ps(
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))), m);
        const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 4)));
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x), _mm512_permutexvar_ps(u, table), acc);
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), _mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), table), acc);
    }
};
// Q4_K: the blocks of N rows at once, sub-block pair by sub-block pair (c), so the N accumulator chains interleave
// at every 64 weights (a block of one row alone would be a chain of 16 dependent fmas).
struct Q4_KBlock {
    static constexpr int kWeights = 256, kBytes = 144;
    template <int N>
    static void run_rows(const uint8_t * b, int64_t row_bytes, const float * x, __m512 (&acc)[N]) {
        alignas(64) float dlml[N][16];   // per row: dl[0..8) = d * sc, ml[0..8) = dmin * mn
        // The 6-bit scales and mins of the 8 sub-blocks (cpu_dequant_kernels.inc's k_scale_bytes) from the block's
        // first 16 bytes v = [d, dmin, s0 .. s11] by byte shuffles and masks (ports 0/1/5, no scalar unpacking):
        // a = [s0-3, s8-11, s4-7, s8-11], b = [0, s0-3, 0, s4-7]; out = (a & lo) | ((a >> 4) & hi) | ((b >> 2) & 0x30)
        // = [sc0-3, sc4-7, mn0-3, mn4-7] with lo = [63 x4, 15 x4, 63 x4, 0 x4], hi = [0 x12, 15 x4].
        const __m128i pick_a = _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m128i pick_b = _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11);
        const __m128i lo = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
        const __m128i hi = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
        const __m512i dd = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        for (int j = 0; j < N; ++j) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b + j * row_bytes));
            const __m128i a = _mm_shuffle_epi8(v, pick_a), bb = _mm_shuffle_epi8(v, pick_b);
            const __m128i scmn = _mm_or_si128(_mm_or_si128(_mm_and_si128(a, lo), _mm_and_si128(_mm_srli_epi16(a, 4), hi)),
                                              _mm_and_si128(_mm_srli_epi16(bb, 2), _mm_set1_epi8(0x30)));
            const __m512 f = _mm512_permutexvar_ps(dd, _mm512_castps128_ps512(_mm_cvtph_ps(v)));   // [d x8, dmin x8]
            _mm512_store_ps(dlml[j], _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(scmn)), f));
        }
        asm volatile("" ::: "memory");   // broadcast each factor from memory (a load), not by vpermd (port 5)
        const __m512 q = _mm512_cvtepi32_ps(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        for (int c = 0; c < 4; ++c) {   // weights 64c .. 64c+64: sub-block 2c (low nibbles), 2c+1 (high)
            const float * xc = x + 64 * c;
            const __m512 x0 = _mm512_loadu_ps(xc), x1 = _mm512_loadu_ps(xc + 16), x2 = _mm512_loadu_ps(xc + 32),
                         x3 = _mm512_loadu_ps(xc + 48);
            for (int j = 0; j < N; ++j) {
                const uint8_t * qs = b + j * row_bytes + 16 + 32 * c;
                const __m512 t0 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(dlml[j][2 * c]), q),
                                                _mm512_set1_ps(dlml[j][8 + 2 * c]));
                const __m512 t1 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(dlml[j][2 * c + 1]), q),
                                                _mm512_set1_ps(dlml[j][8 + 2 * c + 1]));
                const __m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs)));
                const __m512i a2 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs + 16)));
                acc[j] = _mm512_fmadd_ps(x0, _mm512_permutexvar_ps(a, t0), acc[j]);
                acc[j] = _mm512_fmadd_ps(x1, _mm512_permutexvar_ps(a2, t0), acc[j]);
                acc[j] = _mm512_fmadd_ps(x2, _mm512_permutexvar_ps(_mm512_srli_epi32(a, 4), t1), acc[j]);
                acc[j] = _mm512_fmadd_ps(x3, _mm512_permutexvar_ps(_mm512_srli_epi32(a2, 4), t1), acc[j]);
            }
        }
    }
};

// Q8_0: w = float(q) * d (exact); the blocks of N rows interleaved, 16 weights at a time.
struct Q8_0Rows {
    static constexpr int kWeights = 32, kBytes = 34;
    template <int N>
    static void run_rows(const uint8_t * b, int64_t row_bytes, const float * x, __m512 (&acc)[N]) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        __m512 d[N];
        for (int j = 0; j < N; ++j) d[j] = _mm512_set1_ps(half_at(b + j * row_bytes));
        for (int j = 0; j < N; ++j) {
            const __m128i * q = reinterpret_cast<const __m128i *>(b + j * row_bytes + 2);
            acc[j] = _mm512_fmadd_ps(x0, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d[j]),
                                     acc[j]);
        }
        for (int j = 0; j < N; ++j) {
            const __m128i * q = reinterpret_cast<const __m128i *>(b + j * row_bytes + 18);
            acc[j] = _mm512_fmadd_ps(x1, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d[j]),
                                     acc[j]);
        }
    }
};

// Blocks with a run(b, x, acc) of one row: the rows' blocks one after the other.
template <typename Block>
struct RowByRow {
    static constexpr int kWeights = Block::kWeights, kBytes = Block::kBytes;
    template <int N>
    static void run_rows(const uint8_t * b, int64_t row_bytes, const float * x, __m512 (&acc)[N]) {
        for (int j = 0; j < N; ++j) Block::run(b + j * row_bytes, x, acc[j]);
    }
};

// out[j] = dot(x, W row j) (+ bias[j]) for j < N, W rows row_bytes apart from w; blocks of the N rows interleaved
// (N independent accumulator chains). No software prefetch: the N sequential row streams are the hardware
// prefetcher's (measured: prefetching 512 or 1024 bytes ahead changed nothing beyond the noise).
template <typename Block, int N>
void decode(const float * x, int64_t K, const uint8_t * w, int64_t row_bytes, float * out, const float * bias) {
    __m512 acc[N];
    for (int j = 0; j < N; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t k = 0, at = 0; k < K; k += Block::kWeights, at += Block::kBytes) {
        Block::template run_rows<N>(w + at, row_bytes, x + k, acc);
    }
    for (int j = 0; j < N; ++j) {
        const float s = simd::hsum16(acc[j]);
        out[j] = bias ? s + bias[j] : s;
    }
}

template <typename Block>
const QuantDecodeTable * table_of() {
    static const QuantDecodeTable t = {8, {&decode<Block, 1>, &decode<Block, 2>, &decode<Block, 3>, &decode<Block, 4>,
                                           &decode<Block, 5>, &decode<Block, 6>, &decode<Block, 7>, &decode<Block, 8>}};
    return &t;
}

}  // namespace
ZT_TARGET_REGION_END

const QuantDecodeTable * cpu_matmul_quant_decode_avx512(DType wt) {
    if (cpu_matmul_tiles_avx512_cached() == nullptr) return nullptr;   // the CPU lacks AVX-512
    switch (wt) {
        case DType::Q8_0: return table_of<Q8_0Rows>();
        case DType::Q4_0: return table_of<RowByRow<Q4_0Block>>();
        case DType::Q4_1: return table_of<RowByRow<Q4_1Block>>();
        case DType::Q4_K: return table_of<Q4_KBlock>();
        default: return nullptr;
    }
}

}  // namespace zt

#else  // not x86

namespace zt {
const QuantDecodeTable * cpu_matmul_quant_decode_avx512(DType) { return nullptr; }
}  // namespace zt

#endif
