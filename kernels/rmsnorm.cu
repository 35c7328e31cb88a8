// rmsnorm: out (R,C) = w (C) W * (x (R,C) * inv), inv = 1 / sqrt(sum(x^2) / C + eps), per row, in HF's order (as
// the CPU backend: the product x * inv first, then times the weight). The sum of squares is in fp32 (a tree over
// the row's elements; its shape depends only on C, so a row's result never depends on R or on other rows).
// out may equal x: every element is read and then written by the same thread, after the whole row was summed.
// Launch (chosen by C only): C <= 1024: one warp per row, 8 warps (256 threads) per block, rows striding by all
// warps of the grid; C > 1024: one block per row (a multiple of 32 threads, <= 512), rows striding by gridDim.x,
// warp-shuffle + shared-memory block reduction. A unit of work is 4 columns (16-byte loads) when C % 4 == 0 and
// the pointers allow, else 1 column.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kWarpRowMaxC = 1024;   // C up to this: one warp per row
constexpr int kWarpRowThreads = 256;
constexpr int kBlockRowMaxThreads = 512;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;   // every lane holds the same total
}

// This thread's part of the row's sum of squares: units lane, lane + stride, ...
template <bool VEC>
__device__ __forceinline__ float sum_squares(const float * xr, int64_t C, int64_t first, int64_t stride) {
    float ss = 0.0f;
    if constexpr (VEC) {
        const float4 * x4 = reinterpret_cast<const float4 *>(xr);
        for (int64_t j = first; j < C / 4; j += stride) {
            const float4 v = x4[j];
            ss += v.x * v.x;
            ss += v.y * v.y;
            ss += v.z * v.z;
            ss += v.w * v.w;
        }
    } else {
        for (int64_t c = first; c < C; c += stride) ss += xr[c] * xr[c];
    }
    return ss;
}

// 1 / sqrt(ss / C + eps), IEEE-rounded steps as the CPU's 1.0f / std::sqrt(ss / float(C) + eps).
__device__ __forceinline__ float inv_rms(float ss, int64_t C, float eps) {
    return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(C)), eps)));
}

// out[c] = w[c] * (x[c] * inv) for this thread's units first, first + stride, ...
template <WType W, bool VEC>
__device__ __forceinline__ void scale_row(float * orow, const float * xr, const void * w, int64_t C, float inv,
                                          int64_t first, int64_t stride) {
    if constexpr (VEC) {
        const float4 * x4 = reinterpret_cast<const float4 *>(xr);
        float4 * o4 = reinterpret_cast<float4 *>(orow);
        for (int64_t j = first; j < C / 4; j += stride) {
            const float4 v = x4[j];
            const float4 g = load_weight4<W>(w, j);
            o4[j] = make_float4(__fmul_rn(g.x, __fmul_rn(v.x, inv)), __fmul_rn(g.y, __fmul_rn(v.y, inv)),
                                __fmul_rn(g.z, __fmul_rn(v.z, inv)), __fmul_rn(g.w, __fmul_rn(v.w, inv)));
        }
    } else {
        for (int64_t c = first; c < C; c += stride) orow[c] = __fmul_rn(load_weight<W>(w, c), __fmul_rn(xr[c], inv));
    }
}

// One warp per row (C <= kWarpRowMaxC). blockDim.x is a multiple of 32; the row index is uniform in a warp.
template <WType W, bool VEC>
__global__ void rmsnorm_warp_kernel(float * out, const float * x, const void * __restrict__ w, int64_t R, int64_t C,
                                    float eps) {
    const int lane = int(threadIdx.x) & 31;
    const int64_t warps_per_block = blockDim.x / 32;
    const int64_t n_warps = int64_t(gridDim.x) * warps_per_block;
    for (int64_t r = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / 32; r < R; r += n_warps) {
        const float * xr = x + r * C;
        float * orow = out + r * C;
        const float ss = warp_sum(sum_squares<VEC>(xr, C, lane, 32));   // all lanes have read the whole row
        scale_row<W, VEC>(orow, xr, w, C, inv_rms(ss, C, eps), lane, 32);
    }
}

// One block per row (C > kWarpRowMaxC). blockDim.x is a multiple of 32, <= 1024.
template <WType W, bool VEC>
__global__ void rmsnorm_block_kernel(float * out, const float * x, const void * __restrict__ w, int64_t R, int64_t C,
                                     float eps) {
    __shared__ float s_part[32];   // one partial sum per warp
    __shared__ float s_inv;
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) / 32, n_warps = int(blockDim.x) / 32;
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        const float * xr = x + r * C;
        float * orow = out + r * C;
        const float part = warp_sum(sum_squares<VEC>(xr, C, threadIdx.x, blockDim.x));
        if (lane == 0) s_part[warp] = part;
        __syncthreads();   // every warp's part is in s_part (and the whole row has been read)
        if (warp == 0) {
            const float ss = warp_sum(lane < n_warps ? s_part[lane] : 0.0f);
            if (lane == 0) s_inv = inv_rms(ss, C, eps);
        }
        __syncthreads();   // s_inv is written. The next row's writes of s_part come after this barrier (warp 0 has
                           // read s_part before it), and its write of s_inv after the next row's first barrier
                           // (every thread reads s_inv below before reaching that one), so no third barrier.
        scale_row<W, VEC>(orow, xr, w, C, s_inv, threadIdx.x, blockDim.x);
    }
}

template <WType W>
cudaError_t launch(float * out, const float * x, const void * w, int64_t R, int64_t C, float eps,
                   cudaStream_t stream) {
    const bool vec = C % 4 == 0 && is_aligned(out, 16) && is_aligned(x, 16) && weight_vec_aligned(w, W);
    if (C <= kWarpRowMaxC) {
        const int64_t rows_per_block = kWarpRowThreads / 32;
        int64_t blocks = (R + rows_per_block - 1) / rows_per_block;
        if (blocks > kMaxGridX) blocks = kMaxGridX;
        if (vec) rmsnorm_warp_kernel<W, true><<<unsigned(blocks), kWarpRowThreads, 0, stream>>>(out, x, w, R, C, eps);
        else rmsnorm_warp_kernel<W, false><<<unsigned(blocks), kWarpRowThreads, 0, stream>>>(out, x, w, R, C, eps);
    } else {
        const int threads = threads_for(vec ? C / 4 : C, kBlockRowMaxThreads);
        const unsigned blocks = unsigned(R < kMaxGridX ? R : kMaxGridX);
        if (vec) rmsnorm_block_kernel<W, true><<<blocks, threads, 0, stream>>>(out, x, w, R, C, eps);
        else rmsnorm_block_kernel<W, false><<<blocks, threads, 0, stream>>>(out, x, w, R, C, eps);
    }
    return cudaGetLastError();
}

}  // namespace

cudaError_t rmsnorm(float * out, const float * x, const void * w, WType wt, int64_t R, int64_t C, float eps,
                    cudaStream_t stream) {
    if (R < 0 || C < 0 || !wtype_valid(wt)) return cudaErrorInvalidValue;
    if (R == 0 || C == 0) return cudaSuccess;
    if (!out || !x || !w) return cudaErrorInvalidValue;
    switch (wt) {
        case WType::f32: return launch<WType::f32>(out, x, w, R, C, eps, stream);
        case WType::f16: return launch<WType::f16>(out, x, w, R, C, eps, stream);
        case WType::bf16: return launch<WType::bf16>(out, x, w, R, C, eps, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace zt::kernels
