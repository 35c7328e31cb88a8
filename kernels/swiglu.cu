// swiglu: out (n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)), elementwise over n f32 (the (R,N) tensors seen
// flat), with the precise expf and IEEE-rounded division (no fast math, no contraction), as the CPU backend's
// (g / (1.0f + std::exp(-g))) * u. out may alias gate (or up): every element is read, then written, by one thread.
// Launch: 1-D grid-stride, 256 threads per block, one unit per thread per step: 4 elements (16-byte loads and
// stores) when the three pointers are 16-byte aligned, then the n % 4 tail elements by the grid's first threads;
// else 1 element.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float swiglu1(float g, float u) {
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

template <bool VEC>
__global__ void swiglu_kernel(float * out, const float * gate, const float * up, int64_t n) {
    const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    if constexpr (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t j = i0; j < n4; j += stride) {
            const float4 g = reinterpret_cast<const float4 *>(gate)[j];
            const float4 u = reinterpret_cast<const float4 *>(up)[j];
            reinterpret_cast<float4 *>(out)[j] =
                make_float4(swiglu1(g.x, u.x), swiglu1(g.y, u.y), swiglu1(g.z, u.z), swiglu1(g.w, u.w));
        }
        const int64_t i = n4 * 4 + i0;   // the tail: at most 3 elements
        if (i < n) out[i] = swiglu1(gate[i], up[i]);
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = swiglu1(gate[i], up[i]);
    }
}

}  // namespace

cudaError_t swiglu(float * out, const float * gate, const float * up, int64_t n, cudaStream_t stream) {
    if (n < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!out || !gate || !up) return cudaErrorInvalidValue;
    const bool vec = is_aligned(out, 16) && is_aligned(gate, 16) && is_aligned(up, 16);
    const int64_t units = vec ? (n + 3) / 4 : n;
    int64_t blocks = (units + kThreads - 1) / kThreads;
    if (blocks > kMaxGridX) blocks = kMaxGridX;
    if (vec) swiglu_kernel<true><<<unsigned(blocks), kThreads, 0, stream>>>(out, gate, up, n);
    else swiglu_kernel<false><<<unsigned(blocks), kThreads, 0, stream>>>(out, gate, up, n);
    return cudaGetLastError();
}

}  // namespace zt::kernels
