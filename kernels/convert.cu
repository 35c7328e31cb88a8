// convert: the GEMM operands' element types.
//   widen:  out (n) f32 = in (n) W (f32: a copy; f16/bf16: exact).
//   narrow: out (n) W = in (n) f32; f16 and bf16 round to nearest even with NaN kept NaN, bit for bit as
//           runtime/model/dtype.h's f32_to_bf16 / f32_to_f16 (the same integer algorithms); f32: a copy.
// Launch (both): 1-D grid-stride, 256 threads per block, one unit per thread per step: 4 elements (one 16-byte
// f32 and one 8-byte f16/bf16 access) when both pointers are aligned for that, then the n % 4 tail elements by the
// grid's first threads; else 1 element.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kThreads = 256;

template <WType W>
__device__ __forceinline__ uint32_t narrow1(float f) {
    if constexpr (W == WType::bf16) return f32_bits_to_bf16_bits(__float_as_uint(f));
    else return f32_bits_to_f16_bits(__float_as_uint(f));
}

// W is f16 or bf16 (f32 is a copy, done by widen_kernel<f32>).
template <WType W, bool VEC>
__global__ void narrow_kernel(uint16_t * __restrict__ out, const float * __restrict__ in, int64_t n) {
    const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    if constexpr (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t j = i0; j < n4; j += stride) {
            const float4 v = reinterpret_cast<const float4 *>(in)[j];
            // little endian: element 4j is the low half of .x
            reinterpret_cast<uint2 *>(out)[j] = make_uint2(narrow1<W>(v.x) | (narrow1<W>(v.y) << 16),
                                                           narrow1<W>(v.z) | (narrow1<W>(v.w) << 16));
        }
        const int64_t i = n4 * 4 + i0;   // the tail: at most 3 elements
        if (i < n) out[i] = uint16_t(narrow1<W>(in[i]));
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = uint16_t(narrow1<W>(in[i]));
    }
}

template <WType W, bool VEC>
__global__ void widen_kernel(float * __restrict__ out, const void * __restrict__ in, int64_t n) {
    const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    if constexpr (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t j = i0; j < n4; j += stride) reinterpret_cast<float4 *>(out)[j] = load_weight4<W>(in, j);
        const int64_t i = n4 * 4 + i0;   // the tail: at most 3 elements
        if (i < n) out[i] = load_weight<W>(in, i);
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = load_weight<W>(in, i);
    }
}

unsigned blocks_for(int64_t n, bool vec) {
    const int64_t units = vec ? (n + 3) / 4 : n;
    const int64_t blocks = (units + kThreads - 1) / kThreads;
    return unsigned(blocks < kMaxGridX ? blocks : kMaxGridX);
}

template <WType W>
cudaError_t launch_widen(float * out, const void * in, int64_t n, cudaStream_t stream) {
    const bool vec = is_aligned(out, 16) && weight_vec_aligned(in, W);
    if (vec) widen_kernel<W, true><<<blocks_for(n, true), kThreads, 0, stream>>>(out, in, n);
    else widen_kernel<W, false><<<blocks_for(n, false), kThreads, 0, stream>>>(out, in, n);
    return cudaGetLastError();
}

template <WType W>
cudaError_t launch_narrow(void * out, const float * in, int64_t n, cudaStream_t stream) {
    uint16_t * o = static_cast<uint16_t *>(out);
    const bool vec = is_aligned(out, 8) && is_aligned(in, 16);
    if (vec) narrow_kernel<W, true><<<blocks_for(n, true), kThreads, 0, stream>>>(o, in, n);
    else narrow_kernel<W, false><<<blocks_for(n, false), kThreads, 0, stream>>>(o, in, n);
    return cudaGetLastError();
}

}  // namespace

cudaError_t widen(float * out, const void * in, WType wt, int64_t n, cudaStream_t stream) {
    if (n < 0 || !wtype_valid(wt)) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!out || !in) return cudaErrorInvalidValue;
    switch (wt) {
        case WType::f32: return launch_widen<WType::f32>(out, in, n, stream);
        case WType::f16: return launch_widen<WType::f16>(out, in, n, stream);
        case WType::bf16: return launch_widen<WType::bf16>(out, in, n, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t narrow(void * out, WType wt, const float * in, int64_t n, cudaStream_t stream) {
    if (n < 0 || !wtype_valid(wt)) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!out || !in) return cudaErrorInvalidValue;
    switch (wt) {
        case WType::f32: return launch_widen<WType::f32>(static_cast<float *>(out), in, n, stream);   // a copy
        case WType::f16: return launch_narrow<WType::f16>(out, in, n, stream);
        case WType::bf16: return launch_narrow<WType::bf16>(out, in, n, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace zt::kernels
