// quant_gemv: out (T,N) f32 = x (T,K) f32 · w (N,K)^T with w GGUF-quantized, the weights decoded in registers
// (never written out), for the small T of decode steps.
// Launch: blocks of kWarps warps, one warp per row n of w (blockIdx.x * kWarps + warp); blockIdx.y = a chunk of TT
// rows of x (TT = 1, 2, 4 or 8, the smallest >= T up to 8), striding by gridDim.y so any T works. Lane l decodes
// the groups of 8 weights l, l+32, l+64, ... of row n (quant_block.cuh: exactly dequantize_row's values) and for
// each row t of its chunk accumulates sum_i w[i] * x[t][i] with fmaf in weight order; the 32 lane sums are then
// added by a xor butterfly (every lane ends with the same total), and lane 0 writes out[t][n]. The order of every
// addition depends on K only, so a row's result does not depend on T, on the other rows or on the run.
// x is read with two float4 loads per group when it is 16-byte aligned (K is a multiple of 32), else by element.
// (Open: byte loads of the blocks; a warp per row leaves lanes idle when K < 256 weights.)
#include "kernels/kernels.h"
#include "kernels/quant_block.cuh"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

template <QType Q, int TT, bool VEC>
__global__ void __launch_bounds__(kThreads) quant_gemv_kernel(float * __restrict__ out, const float * __restrict__ x,
                                                              const uint8_t * __restrict__ w, int64_t T, int64_t N,
                                                              int64_t K) {
    const int lane = int(threadIdx.x & 31u);
    const int64_t n = int64_t(blockIdx.x) * kWarps + int64_t(threadIdx.x >> 5);
    if (n >= N) return;   // the whole warp: n is the same for its 32 lanes
    const int64_t groups = K / kQuantGroup;
    const uint8_t * wr = w + n * (K / QBlock<Q>::weights * QBlock<Q>::bytes);
    for (int64_t t0 = int64_t(blockIdx.y) * TT; t0 < T; t0 += int64_t(gridDim.y) * TT) {
        const int64_t left = T - t0;
        const int nt = left < TT ? int(left) : TT;
        float acc[TT];
#pragma unroll
        for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
        for (int64_t gi = lane; gi < groups; gi += 32) {
            float y[kQuantGroup];
            decode_row_group<Q>(wr, gi, y);
#pragma unroll
            for (int t = 0; t < TT; ++t) {
                if (t >= nt) break;
                const float * xr = x + (t0 + t) * K + gi * kQuantGroup;
                float xv[kQuantGroup];
                if constexpr (VEC) {
                    const float4 a = __ldg(reinterpret_cast<const float4 *>(xr));
                    const float4 b = __ldg(reinterpret_cast<const float4 *>(xr) + 1);
                    xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w, xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
                } else {
#pragma unroll
                    for (int i = 0; i < kQuantGroup; ++i) xv[i] = __ldg(xr + i);
                }
                float s = acc[t];
#pragma unroll
                for (int i = 0; i < kQuantGroup; ++i) s = fmaf(y[i], xv[i], s);
                acc[t] = s;
            }
        }
#pragma unroll
        for (int t = 0; t < TT; ++t)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < TT; ++t)
                if (t < nt) out[(t0 + t) * N + n] = acc[t];
    }
}

template <QType Q, int TT>
cudaError_t launch_tt(float * out, const float * x, const void * w, int64_t T, int64_t N, int64_t K,
                      cudaStream_t stream) {
    const int64_t bx = (N + kWarps - 1) / kWarps, by = (T + TT - 1) / TT;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(by < kMaxGridY ? by : kMaxGridY));
    const auto * wb = static_cast<const uint8_t *>(w);
    if (is_aligned(x, 16)) quant_gemv_kernel<Q, TT, true><<<grid, kThreads, 0, stream>>>(out, x, wb, T, N, K);
    else quant_gemv_kernel<Q, TT, false><<<grid, kThreads, 0, stream>>>(out, x, wb, T, N, K);
    return cudaGetLastError();
}

template <QType Q>
cudaError_t launch_q(float * out, const float * x, const void * w, int64_t T, int64_t N, int64_t K,
                     cudaStream_t stream) {
    if (T <= 1) return launch_tt<Q, 1>(out, x, w, T, N, K, stream);
    if (T <= 2) return launch_tt<Q, 2>(out, x, w, T, N, K, stream);
    if (T <= 4) return launch_tt<Q, 4>(out, x, w, T, N, K, stream);
    return launch_tt<Q, 8>(out, x, w, T, N, K, stream);
}

}  // namespace

cudaError_t quant_gemv(float * out, const float * x, const void * w, QType qt, int64_t T, int64_t N, int64_t K,
                       cudaStream_t stream) {
    if (T < 0 || N < 0 || K < 0 || !qtype_valid(qt)) return cudaErrorInvalidValue;
    if (K % qtype_block_weights(qt) != 0) return cudaErrorInvalidValue;
    if (T == 0 || N == 0) return cudaSuccess;
    if (!out || (K > 0 && (!x || !w))) return cudaErrorInvalidValue;
    switch (qt) {
        case QType::q8_0: return launch_q<QType::q8_0>(out, x, w, T, N, K, stream);
        case QType::q4_0: return launch_q<QType::q4_0>(out, x, w, T, N, K, stream);
        case QType::q4_1: return launch_q<QType::q4_1>(out, x, w, T, N, K, stream);
        case QType::q4_k: return launch_q<QType::q4_k>(out, x, w, T, N, K, stream);
        case QType::q5_k: return launch_q<QType::q5_k>(out, x, w, T, N, K, stream);
        case QType::q6_k: return launch_q<QType::q6_k>(out, x, w, T, N, K, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace zt::kernels
