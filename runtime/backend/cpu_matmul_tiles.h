// cpu_matmul_tiles: the micro-kernel tables the CPU matmul's tile driver (cpu_matmul.cpp) calls; internal to
// cpu_matmul.cpp and cpu_matmul_x86.cpp.
//
// A TileFn computes out[i*ldo + j] = dot(x row i, w row j) (+ bias[j]) for i < M, j < N: x (M,K) fp32 with row
// stride ldx (or, when the table has pack_x, the M rows as pack_x packed them), w (N,K) of the table's weight
// dtype with row stride K. fn[M-1][N-1] is the kernel for an M x N tile; every entry
// of a table is one template instantiated for smaller M/N, so an element's arithmetic is the same in each.
#pragma once
#include <cstdint>
#include <utility>

#include "runtime/backend/cpu_dequant.h"
#include "runtime/backend/parallel_for.h"
#include "runtime/model/dtype.h"
#include "runtime/model/tensor.h"

namespace zt {

// K blocking: a call sums only k in [k0, k1), starting from the partial accumulators in part (MR*NR*16 floats,
// 64-byte aligned) unless k0 = 0, and leaving them there unless k1 = K, when it reduces and writes out. The
// accumulators round-trip memory exactly, so the sum is the same sequence of operations as one call over [0, K).
// The F32/F16/BF16 driver blocks K (in k_block) only for tables with k_block > 0, and calls the others with [0, K);
// every F32 table (portable, avx2, avx512) takes any k0, k1 that are multiples of 32 (or k1 = K): the quantized
// driver (cpu_matmul_quant.cpp) walks K in blocks on all of them.
using TileFn = void (*)(const float * x, int64_t ldx, int64_t K, const void * w, float * out, int64_t ldo,
                       const float * bias, int64_t k0, int64_t k1, float * part);
using PackFn = void (*)(const float * src, int64_t ld, int m, int64_t K, float * dst);   // m x rows (stride ld)
                                                                                        // -> one packed tile

struct TileTable {
    int mr = 0, nr = 0;             // the largest tile: mr x rows by nr W rows
    TileFn fn[8][8] = {};           // fn[m-1][n-1], m <= mr <= 8, n <= nr <= 8
    PackFn pack_x = nullptr;        // set: each tile's x rows are packed together before the kernels see them,
    int k_align = 1;                // K rounded up to k_align floats per row (the kernels' ldx is then unused)
    int k_block = 0;                // > 0: the kernels take K in blocks of this many (see TileFn)
};

// Kern: a struct with static constexpr int MR, NR, k_align, k_block, static constexpr PackFn pack_x and
// template <int M, int N> static void run(TileFn's arguments).
template <typename Kern, int M, int... Ns>
void tile_table_fill_row(TileTable & t, std::integer_sequence<int, Ns...>) {
    ((t.fn[M - 1][Ns] = &Kern::template run<M, Ns + 1>), ...);
}
template <typename Kern, int... Ms>
TileTable tile_table_fill(std::integer_sequence<int, Ms...>) {
    static_assert(Kern::MR <= 8 && Kern::NR <= 8, "TileTable holds tiles up to 8 x 8");
    TileTable t;
    t.mr = Kern::MR;
    t.nr = Kern::NR;
    (tile_table_fill_row<Kern, Ms + 1>(t, std::make_integer_sequence<int, Kern::NR>()), ...);
    t.pack_x = Kern::pack_x;
    t.k_align = Kern::k_align;
    t.k_block = Kern::k_block;
    return t;
}
template <typename Kern>
TileTable make_tile_table() { return tile_table_fill<Kern>(std::make_integer_sequence<int, Kern::MR>()); }

// The x86 tables for weights of dtype wt (F32/BF16/F16), or nullptr when this CPU (or build) lacks the ISA.
const TileTable * cpu_matmul_tiles_avx2(DType wt);
const TileTable * cpu_matmul_tiles_avx512(DType wt);
// The AVX-512 F32 table for W already in cache (no prefetch of the rows past a tile; the same arithmetic as
// cpu_matmul_tiles_avx512(F32)), or nullptr: the quantized path's dequantized tiles.
const TileTable * cpu_matmul_tiles_avx512_cached();

// The quantized path's decode kernels (T = 1; cpu_matmul_quant_x86.cpp): fn[n-1](x, K, w, row_bytes, out, bias)
// = the n <= nr outputs of x (K) against the n W rows at w (row_bytes apart), the weights dequantized in registers,
// each element the same bits as the path's F32 kernel on the dequantized rows.
using QuantDecodeFn = void (*)(const float * x, int64_t K, const uint8_t * w, int64_t row_bytes, float * out,
                               const float * bias);
struct QuantDecodeTable {
    int nr = 0;
    QuantDecodeFn fn[8] = {};
};
// The AVX-512 decode kernels for W of block type wt, or nullptr (the CPU lacks AVX-512, or wt has none: Q8_0, Q4_0,
// Q4_1 and Q4_K have them).
const QuantDecodeTable * cpu_matmul_quant_decode_avx512(DType wt);

// cpu_matmul_quant.cpp: out (T,N) = x (T,K) . w (N,K)^T (+ bias) for w of a GGUF block type, on the F32 table tt
// (the path's) with dequantizer dq (cpu_dequant.h). Each W tile is dequantized, K block by K block, into per-thread
// scratch, and tt's kernels run on it: the same bits as tt on the dequantized F32 weights.
// At T = 1 with a decode table (dec != nullptr), dec's kernels run instead (the same bits).
void cpu_matmul_quant_tiles(const TileTable & tt, DequantFn dq, const QuantDecodeTable * dec, ThreadPool & pool,
                            float * out, const float * x, const Tensor & w, const float * bias, int64_t T, int64_t N,
                            int64_t K);

}  // namespace zt
