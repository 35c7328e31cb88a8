// cpu_matmul_quant: the tile driver of the CPU matmul's fast paths for weights of a GGUF block type (Q8_0 .. Q6_K,
// runtime/model/quant_block.h): out (T,N) = x (T,K) . W (N,K)^T (+ bias), W's rows whole blocks along K.
//
// Work items as the float driver's (cpu_matmul.cpp): (block of NB W rows) x (block of TB x rows), NB from the
// quantized row bytes. Inside one: for each W tile of nr rows, for each K block of kKBlock weights: the tile's rows
// of that block are dequantized (cpu_dequant.h, the path's vector dequantizer: dequantize_row's bits) into a
// per-thread fp32 scratch laid out like an F32 W tile (row stride K, each block at its own columns, so the path's
// F32 micro-kernels read it unchanged), then every x tile of the item runs the path's F32 kernel over that K block,
// its accumulators carried between blocks in memory (exactly: TileFn's K blocking). So each W weight is dequantized
// once per item (once per call at T <= TB), the dequantized block is still in L1 when the kernels read it, and every
// output element is the same sequence of operations as the F32 path on the dequantized weights: the same bits,
// whatever T, the tiling or the thread count (batch-invariant like the float paths). Only the blocking depends on T
// and the threads, and it decides speed only.
#include <algorithm>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/cpu_matmul_tiles.h"
#include "runtime/model/quant_block.h"

namespace zt {
// At T = 1, Q8_0 / Q4_0 / Q4_1 / Q4_K on AVX-512 skip the scratch: cpu_matmul_quant_x86.cpp's decode kernels
// dequantize in registers and sum each element as the F32 kernel does (the same bits).

namespace {
constexpr int64_t kKBlock = 512;   // weights of K per dequantized block: a multiple of every block size (32, 256)
}

void cpu_matmul_quant_tiles(const TileTable & tt, DequantFn dq, const QuantDecodeTable * dec, ThreadPool & pool,
                            float * out, const float * x, const Tensor & w, const float * bias, int64_t T, int64_t N,
                            int64_t K) {
    const QuantLayout & ql = quant_layout(quant_type_of(w.dtype));
    const int64_t row_bytes = quant_row_bytes(quant_type_of(w.dtype), K);   // K whole blocks, or an error
    const char * wp = static_cast<const char *>(w.data);
    if (T == 1 && dec) {   // decode: W rows straight from memory through the register-dequantizing kernels
        const int64_t dr = dec->nr;
        int64_t NB = std::max<int64_t>(dr, (256 * 1024) / std::max<int64_t>(row_bytes, 1) / dr * dr);
        while (NB > dr && (N + NB - 1) / NB < 4 * pool.size()) NB = std::max<int64_t>(dr, NB / 2 / dr * dr);
        pool.parallel_for((N + NB - 1) / NB, 1, [&](int64_t b, int64_t e) {
            for (int64_t n0 = b * NB; n0 < std::min(N, e * NB); n0 += dr) {
                const int64_t nn = std::min({dr, N - n0, e * NB - n0});
                dec->fn[nn - 1](x, K, reinterpret_cast<const uint8_t *>(wp) + n0 * row_bytes, row_bytes, out + n0,
                                bias ? bias + n0 : nullptr);
            }
        });
        return;
    }
    const int64_t mr = tt.mr, nr = tt.nr;
    const int64_t TB = 16 * mr;
    const int64_t t_blocks = (T + TB - 1) / TB;
    int64_t NB = std::max<int64_t>(nr, (1024 * 1024) / std::max<int64_t>(row_bytes, 1) / nr * nr);
    while (NB > nr && ((N + NB - 1) / NB) * t_blocks < 4 * pool.size()) NB = std::max<int64_t>(nr, NB / 2 / nr * nr);
    const int64_t n_blocks = (N + NB - 1) / NB;
    const int64_t n_kb = K > kKBlock ? (K + kKBlock - 1) / kKBlock : 1;   // K blocks
    const int64_t part_tile = mr * nr * 16;                                // one x tile's partial accumulators
    pool.parallel_for(n_blocks * t_blocks, 1, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch w_buf, partial;
        float * wf = w_buf.get(size_t(nr * K));   // (nr,K) fp32: one W tile, one K block at a time
        for (int64_t item = b; item < e; ++item) {
            const int64_t nb = item / t_blocks, tb = item % t_blocks;
            const int64_t n_lo = nb * NB, n_hi = std::min(N, n_lo + NB);
            const int64_t t_lo = tb * TB, t_hi = std::min(T, t_lo + TB);
            const int64_t n_tiles = (t_hi - t_lo + mr - 1) / mr;
            float * part = n_kb > 1 ? partial.get(size_t(n_tiles * part_tile)) : nullptr;
            for (int64_t n0 = n_lo; n0 < n_hi; n0 += nr) {
                const int64_t nn = std::min(nr, n_hi - n0);
                const char * wt = wp + size_t(n0 * row_bytes);
                for (int64_t kb = 0; kb < n_kb; ++kb) {
                    const int64_t k0 = kb * kKBlock, k1 = n_kb > 1 ? std::min(K, k0 + kKBlock) : K;
                    const size_t at = size_t(k0 / ql.block_weights) * size_t(ql.block_bytes);
                    for (int64_t j = 0; j < nn; ++j) dq(wt + size_t(j * row_bytes) + at, wf + j * K + k0, k1 - k0);
                    for (int64_t i = 0; i < n_tiles; ++i) {
                        const int64_t t0 = t_lo + i * mr, m = std::min(mr, t_hi - t0);
                        tt.fn[m - 1][nn - 1](x + t0 * K, K, K, wf, out + t0 * N + n0, N, bias ? bias + n0 : nullptr,
                                             k0, k1, part ? part + i * part_tile : nullptr);
                    }
                }
            }
        }
    });
}

}  // namespace zt
