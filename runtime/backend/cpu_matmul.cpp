// cpu_matmul: path selection, the sgemv reference, the tile driver and the portable micro-kernels of the CPU
// matmul (see cpu_matmul.h for the per-element order every path keeps). The AVX2 / AVX-512 micro-kernels are in
// cpu_matmul_x86.cpp, compiled per function with __attribute__((target)) so the build flags stay generic.
#include "runtime/backend/cpu_matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/cpu_matmul_tiles.h"
#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"

namespace zt {

// ---- path selection ------------------------------------------------------------------------------------------
const char * cpu_matmul_path_name(CpuMatmulPath p) {
    switch (p) {
        case CpuMatmulPath::reference: return "reference";
        case CpuMatmulPath::portable: return "portable";
        case CpuMatmulPath::avx2: return "avx2";
        case CpuMatmulPath::avx512: return "avx512";
    }
    return "?";
}

bool cpu_matmul_path_supported(CpuMatmulPath p) {
    switch (p) {
        case CpuMatmulPath::reference:
        case CpuMatmulPath::portable: return true;
        case CpuMatmulPath::avx2: return cpu_matmul_tiles_avx2(DType::F32) != nullptr;
        case CpuMatmulPath::avx512: return cpu_matmul_tiles_avx512(DType::F32) != nullptr;
    }
    return false;
}

std::vector<CpuMatmulPath> cpu_matmul_supported_paths() {
    std::vector<CpuMatmulPath> v;
    for (CpuMatmulPath p :
         {CpuMatmulPath::reference, CpuMatmulPath::portable, CpuMatmulPath::avx2, CpuMatmulPath::avx512})
        if (cpu_matmul_path_supported(p)) v.push_back(p);
    return v;
}

CpuMatmulPath cpu_matmul_path_named(const std::string & name, const char * source) {
    for (CpuMatmulPath p : {CpuMatmulPath::reference, CpuMatmulPath::portable, CpuMatmulPath::avx2,
                            CpuMatmulPath::avx512}) {
        if (name != cpu_matmul_path_name(p)) continue;
        ZT_CHECK(cpu_matmul_path_supported(p),
                 "{}={}: this CPU cannot run that path; unset it or choose reference, portable{}", source, name,
                 cpu_matmul_path_supported(CpuMatmulPath::avx2) ? ", avx2" : "");
        return p;
    }
    ZT_FAIL("{}=\"{}\" is not a CPU kernel path; use reference, portable, avx2 or avx512 (or unset it for the "
            "fastest this CPU supports)", source, name);
}

CpuMatmulPath cpu_matmul_default_path() {
    static const CpuMatmulPath chosen = [] {
        const char * env = std::getenv("ZT_CPU_MATMUL");
        if (env && *env) return cpu_matmul_path_named(env, "ZT_CPU_MATMUL");
        const std::vector<CpuMatmulPath> all = cpu_matmul_supported_paths();
        return all.back();
    }();
    return chosen;
}

namespace {

// ---- reference: one sgemv per (token row, panel) -------------------------------------------------------------
// Panels of NP rows (NP from N and K only, never T); each panel widened to fp32 once per work item, then one
// cblas_sgemv per token row with the row copied to an aligned vector (sgemv's result depends on alignment).
void matmul_reference(ThreadPool & pool, float * op, const float * xp, const Tensor & w, const float * bias,
                      int64_t T, int64_t N, int64_t K) {
    const int64_t NP = std::min<int64_t>(N, std::max<int64_t>(16, (32768 / std::max<int64_t>(K, 1)) / 16 * 16));
    const int64_t n_panels = (N + NP - 1) / NP;
    const int64_t RB = 64;                                   // token rows per work item
    const int64_t n_row_blocks = (T + RB - 1) / RB;
    const int64_t row_bytes = dtype_row_bytes(w.dtype, K);   // a quantized row: K / block weights blocks
    const char * wp = static_cast<const char *>(w.data);
    pool.parallel_for(n_panels * n_row_blocks, 1, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch panel_buf, xrow_buf, yrow_buf;
        int64_t cached_panel = -1;                            // panel widened in panel_buf by this call
        for (int64_t item = b; item < e; ++item) {
            const int64_t p = item / n_row_blocks, rb = item % n_row_blocks;
            const int64_t n0 = p * NP, np = std::min(NP, N - n0);
            const float * panel;                              // (np,K) fp32
            if (w.dtype == DType::F32) {
                panel = w.ptr<const float>() + n0 * K;
            } else {
                float * pb = panel_buf.get(size_t(NP * K));
                if (cached_panel != p) {   // F16/BF16 widened; a GGUF block type dequantized row by row
                    if (dtype_is_quantized(w.dtype))
                        for (int64_t r = 0; r < np; ++r)
                            dequantize_row(quant_type_of(w.dtype), wp + size_t((n0 + r) * row_bytes), pb + r * K, K);
                    else
                        convert_to_f32(pb, wp + size_t(n0 * row_bytes), w.dtype, size_t(np * K));
                    cached_panel = p;
                }
                panel = pb;
            }
            float * xr = xrow_buf.get(size_t(K));
            float * yr = yrow_buf.get(size_t(NP));
            const int64_t t_end = std::min(T, (rb + 1) * RB);
            for (int64_t t = rb * RB; t < t_end; ++t) {
                std::memcpy(xr, xp + t * K, size_t(K) * sizeof(float));   // same alignment for every row
                cblas_sgemv(CblasRowMajor, CblasNoTrans, int(np), int(K), 1.0f, panel, int(K), xr, 1, 0.0f, yr, 1);
                float * o = op + t * N + n0;
                if (bias) for (int64_t j = 0; j < np; ++j) o[j] = yr[j] + bias[n0 + j];
                else std::memcpy(o, yr, size_t(np) * sizeof(float));
            }
        }
    });
}

// ---- the tile driver -----------------------------------------------------------------------------------------
// Work items: (block of NB W rows) x (block of TB x rows); inside one, tiles of mr x rows by nr W rows: W tiles
// outer (in L1 while the block's x tiles pass) unless K is blocked (then x tiles outer, each K block in L1). Any blocking gives the same
// bits (each element is computed whole by one micro-kernel call); the blocks only decide speed.
void matmul_tiles(const TileTable & tt, ThreadPool & pool, float * out, const float * x, const Tensor & w,
                  const float * bias, int64_t T, int64_t N, int64_t K) {
    const size_t wsize = dtype_size(w.dtype);
    const char * wp = static_cast<const char *>(w.data);
    const int64_t mr = tt.mr, nr = tt.nr;
    const int64_t TB = 16 * mr;
    const int64_t t_blocks = (T + TB - 1) / TB;
    int64_t NB = std::max<int64_t>(nr, int64_t((1024 * 1024) / (size_t(std::max<int64_t>(K, 1)) * wsize)) / nr * nr);
    while (NB > nr && ((N + NB - 1) / NB) * t_blocks < 4 * pool.size()) NB = std::max<int64_t>(nr, NB / 2 / nr * nr);
    const int64_t n_blocks = (N + NB - 1) / NB;
    const int64_t Kp = (K + tt.k_align - 1) / tt.k_align * tt.k_align;   // packed x row stride
    const int64_t KC = tt.k_block > 0 && K > 2 * tt.k_block ? tt.k_block : 0;   // K block (0: whole K per call)
    const int64_t G = 4, part_tile = mr * nr * 16;                             // tiles per K walk, their partials
    pool.parallel_for(n_blocks * t_blocks, 1, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch packed, partial;
        float * part = KC ? partial.get(size_t(G * part_tile)) : nullptr;
        for (int64_t item = b; item < e; ++item) {
            const int64_t nb = item / t_blocks, tb = item % t_blocks;
            const int64_t n_lo = nb * NB, n_hi = std::min(N, n_lo + NB);
            const int64_t t_lo = tb * TB, t_hi = std::min(T, t_lo + TB);
            if (KC == 0) {
                // W tile outer (its nr rows stay in L1 while every x tile of the block passes), x tiles inner
                // (packed once per item when the table packs x). With one block of rows (T <= TB, e.g. decode at
                // batch 32) W is read once, from memory: the tile two ahead is prefetched meanwhile (one x tile:
                // the decode kernel prefetches itself; several blocks of rows: W is in L2 after the first).
                const int64_t n_tiles = (t_hi - t_lo + mr - 1) / mr;
                float * xpk = tt.pack_x ? packed.get(size_t(n_tiles * mr * Kp)) : nullptr;
                if (xpk)
                    for (int64_t i = 0; i < n_tiles; ++i)
                        tt.pack_x(x + (t_lo + i * mr) * K, K, int(std::min(mr, t_hi - t_lo - i * mr)), K,
                                  xpk + i * mr * Kp);
                const size_t tile_bytes = size_t(nr * K) * wsize;
                for (int64_t n0 = n_lo; n0 < n_hi; n0 += nr) {
                    const char * wt = wp + size_t(n0 * K) * wsize;
                    const bool ahead = n_tiles > 1 && t_blocks == 1 && n0 + 2 * nr < n_hi;
                    const size_t share = (tile_bytes / 64 + size_t(n_tiles) - 1) / size_t(n_tiles) * 64;
                    const int64_t nn = std::min(nr, n_hi - n0);
                    for (int64_t i = 0; i < n_tiles; ++i) {
                        if (ahead)   // a share of the W tile two ahead before each x tile, so the requests spread
                            for (size_t off = size_t(i) * share; off < std::min(tile_bytes, size_t(i + 1) * share); off += 64)
                                __builtin_prefetch(wt + 2 * tile_bytes + off, 0, 2);
                        const int64_t t0 = t_lo + i * mr, m = std::min(mr, t_hi - t0);
                        const float * xt = xpk ? xpk + i * mr * Kp : x + t0 * K;
                        tt.fn[m - 1][nn - 1](xt, xpk ? Kp : K, K, wt, out + t0 * N + n0, N, bias ? bias + n0 : nullptr,
                                             0, K, nullptr);
                    }
                }
                continue;
            }
            float * xpk = tt.pack_x ? packed.get(size_t(mr * Kp)) : nullptr;
            for (int64_t t0 = t_lo; t0 < t_hi; t0 += mr) {
                const int64_t m = std::min(mr, t_hi - t0);
                const float * xt = x + t0 * K;
                int64_t ldx = K;
                if (xpk) {   // the m rows of this tile, packed once for all the W rows of the block
                    tt.pack_x(xt, K, int(m), K, xpk);
                    xt = xpk;
                    ldx = Kp;
                }
                // K blocks of KC: G tiles at a time walk K together, so the x tile's block stays in L1
                for (int64_t g0 = n_lo; g0 < n_hi; g0 += G * nr) {
                    const int64_t g1 = std::min(n_hi, g0 + G * nr);
                    for (int64_t k0 = 0; k0 < K; k0 += KC)
                        for (int64_t n0 = g0; n0 < g1; n0 += nr)
                            tt.fn[m - 1][std::min(nr, g1 - n0) - 1](
                                xt, ldx, K, wp + size_t(n0 * K) * wsize, out + t0 * N + n0, N,
                                bias ? bias + n0 : nullptr, k0, std::min(K, k0 + KC), part + (n0 - g0) / nr * part_tile);
                }
            }
        }
    });
}

// ---- portable micro-kernels: 8 partial sums per output element -----------------------------------------------
// Any [k0, k1) of K (TileFn's K blocks, k0 and k1 multiples of 8 or k1 = K): the quantized path's driver walks K in
// blocks; the F32/F16/BF16 driver calls [0, K) (k_block = 0).
template <DType WT>
struct Portable {
    static constexpr int MR = 4, NR = 4, L = 8, k_align = 1, k_block = 0;
    static constexpr PackFn pack_x = nullptr;
    template <int M, int N>
    static void run(const float * x, int64_t ldx, int64_t K, const void * w, float * out, int64_t ldo,
                    const float * bias, int64_t k0, int64_t k1, float * part) {
        float acc[M][N][L];
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j)
                for (int l = 0; l < L; ++l) acc[i][j][l] = k0 == 0 ? 0.0f : part[(i * N + j) * 16 + l];
        float wv[N][L];
        int64_t k = k0;
        for (; k + L <= k1; k += L) {
            for (int j = 0; j < N; ++j)
                for (int l = 0; l < L; ++l) wv[j][l] = widen_at<WT>(w, j * K + k + l);
            for (int i = 0; i < M; ++i)
                for (int j = 0; j < N; ++j)
                    for (int l = 0; l < L; ++l) acc[i][j][l] += x[i * ldx + k + l] * wv[j][l];
        }
        if (k < k1) {   // the K tail (k1 = K): zero-padded lanes
            float xv[L];
            for (int j = 0; j < N; ++j)
                for (int l = 0; l < L; ++l) wv[j][l] = k + l < K ? widen_at<WT>(w, j * K + k + l) : 0.0f;
            for (int i = 0; i < M; ++i) {
                for (int l = 0; l < L; ++l) xv[l] = k + l < K ? x[i * ldx + k + l] : 0.0f;
                for (int j = 0; j < N; ++j)
                    for (int l = 0; l < L; ++l) acc[i][j][l] += xv[l] * wv[j][l];
            }
        }
        if (k1 < K) {   // a K block: the partial sums wait in part for the next one
            for (int i = 0; i < M; ++i)
                for (int j = 0; j < N; ++j)
                    for (int l = 0; l < L; ++l) part[(i * N + j) * 16 + l] = acc[i][j][l];
            return;
        }
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
                const float * a = acc[i][j];   // the same tree as the vector paths' lane reduction
                const float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
                out[i * ldo + j] = bias ? s + bias[j] : s;
            }
    }
};

const TileTable * portable_tiles(DType wt) {
    static const TileTable f32 = make_tile_table<Portable<DType::F32>>();
    static const TileTable bf16 = make_tile_table<Portable<DType::BF16>>();
    static const TileTable f16 = make_tile_table<Portable<DType::F16>>();
    return wt == DType::F32 ? &f32 : wt == DType::BF16 ? &bf16 : &f16;
}

}  // namespace

void cpu_matmul(CpuMatmulPath path, ThreadPool & pool, float * out, const float * x, const Tensor & w,
                const Tensor & bias, int64_t T, int64_t N, int64_t K) {
    if (T == 0 || N == 0) return;
    const bool quant = dtype_is_quantized(w.dtype);
    ZT_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16 || w.dtype == DType::F16 || quant,
             "matmul: weights must be F32, BF16, F16 or a GGUF block type (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), got {}",
             dtype_name(w.dtype));
    std::vector<float> bias_f;   // (N) fp32, widened once
    if (bias.data) {
        bias_f.resize(size_t(N));
        convert_to_f32(bias_f.data(), bias.data, bias.dtype, size_t(N));
    }
    const float * b = bias.data ? bias_f.data() : nullptr;
    if (path == CpuMatmulPath::reference) { matmul_reference(pool, out, x, w, b, T, N, K); return; }
    // quantized W: the path's F32 kernels on dequantized tiles (cpu_matmul_quant.cpp); AVX-512's without the
    // decode prefetch of the rows past a tile (the scratch is in cache)
    const DType kern = quant ? DType::F32 : w.dtype;
    const TileTable * tt = nullptr;
    switch (path) {
        case CpuMatmulPath::reference: break;
        case CpuMatmulPath::portable: tt = portable_tiles(kern); break;
        case CpuMatmulPath::avx2: tt = cpu_matmul_tiles_avx2(kern); break;
        case CpuMatmulPath::avx512: tt = quant ? cpu_matmul_tiles_avx512_cached() : cpu_matmul_tiles_avx512(kern); break;
    }
    ZT_CHECK(tt != nullptr, "matmul: the {} path is not supported by this CPU", cpu_matmul_path_name(path));
    if (quant)
        cpu_matmul_quant_tiles(*tt, cpu_dequant_fn(path, quant_type_of(w.dtype)),
                               path == CpuMatmulPath::avx512 ? cpu_matmul_quant_decode_avx512(w.dtype) : nullptr, pool,
                               out, x, w, b, T, N, K);
    else matmul_tiles(*tt, pool, out, x, w, b, T, N, K);
}

}  // namespace zt
