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

// fp32 bits -> bf16 bits, round to nearest even, NaN -> quiet NaN (= zt::f32_to_bf16).
__host__ __device__ __forceinline__ uint32_t f32_bits_to_bf16_bits(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
    u += 0x7fffu + ((u >> 16) & 1u);
    return u >> 16;
}

// fp32 bits -> IEEE half bits, round to nearest even, overflow -> inf, NaN -> sign | 0x7e00 (= zt::f32_to_f16).
__host__ __device__ __forceinline__ uint32_t f32_bits_to_f16_bits(uint32_t u) {
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;             // NaN
    if (abs >= 0x477ff000u) return sign | 0x7c00u;            // overflow (incl. rounding up) -> inf
    if (abs < 0x38800000u) {                                  // subnormal or zero in half
        if (abs < 0x33000000u) return sign;                   // < 2^-25: rounds to 0
        const uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t s2 = 126 - e;                          // 14 .. 24: value in units of 2^-24 = m >> s2
        uint32_t v = m >> s2;
        const uint32_t rem = m & ((1u << s2) - 1), half = 1u << (s2 - 1);
        if (rem > half || (rem == half && (v & 1u))) ++v;
        return sign | v;
    }
    uint32_t v = (abs >> 13) - ((127 - 15) << 10);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
    return sign | v;
}

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
