// Shared helpers of the kernels (device and host inline, header only):
//  - widening a weight element of WType to fp32 on load (bf16: bits << 16; f16: __half2float, exact), one
//    element at a time or four at a time (one 16-byte f32 / 8-byte f16|bf16 load);
//  - the host-side checks the launchers share (WType validity and size, pointer alignment, launch limits).
#pragma once
#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/kernels.h"

namespace zt::kernels {

// ---- device: weight loads ---------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_bits_to_float(uint32_t h16) { return __uint_as_float((h16 & 0xffffu) << 16); }
__device__ __forceinline__ float f16_bits_to_float(uint32_t h16) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(h16 & 0xffffu)));
}

// Element i of the weight array `base` of type W, widened to fp32.
template <WType W>
__device__ __forceinline__ float load_weight(const void * base, int64_t i) {
    if constexpr (W == WType::f32) {
        return static_cast<const float *>(base)[i];
    } else if constexpr (W == WType::bf16) {
        return bf16_bits_to_float(static_cast<const uint16_t *>(base)[i]);
    } else {
        return f16_bits_to_float(static_cast<const uint16_t *>(base)[i]);
    }
}

// Elements 4j .. 4j+3 of the weight array `base` of type W, widened to fp32, in one load. base must be aligned
// to 4 elements (16 bytes for f32, 8 bytes for f16/bf16; see weight_vec_aligned).
template <WType W>
__device__ __forceinline__ float4 load_weight4(const void * base, int64_t j) {
    if constexpr (W == WType::f32) {
        return static_cast<const float4 *>(base)[j];
    } else {
        const uint2 u = static_cast<const uint2 *>(base)[j];   // little endian: element 4j is the low half of u.x
        if constexpr (W == WType::bf16) {
            return make_float4(bf16_bits_to_float(u.x), bf16_bits_to_float(u.x >> 16), bf16_bits_to_float(u.y),
                               bf16_bits_to_float(u.y >> 16));
        } else {
            return make_float4(f16_bits_to_float(u.x), f16_bits_to_float(u.x >> 16), f16_bits_to_float(u.y),
                               f16_bits_to_float(u.y >> 16));
        }
    }
}

// ---- host: launcher checks ----------------------------------------------------------------------------------

// The largest gridDim.y / gridDim.z, and the largest gridDim.x the launchers use.
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxGridX = 2147483647;

inline bool wtype_valid(WType wt) { return wt == WType::f32 || wt == WType::f16 || wt == WType::bf16; }
inline int64_t wtype_bytes(WType wt) { return wt == WType::f32 ? 4 : 2; }

// Whether p is a multiple of `bytes` (a power of two).
inline bool is_aligned(const void * p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }
// Whether a weight array can be read with load_weight4 (4 elements per load).
inline bool weight_vec_aligned(const void * p, WType wt) { return is_aligned(p, uintptr_t(4 * wtype_bytes(wt))); }

// Threads per block for `units` independent work items in a row: a multiple of 32, at least 32, at most cap.
inline int threads_for(int64_t units, int cap) {
    const int64_t t = (units + 31) / 32 * 32;
    return int(t < 32 ? 32 : (t > cap ? cap : t));
}

}  // namespace zt::kernels
