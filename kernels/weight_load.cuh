// Shared helpers of the kernels (device and host inline, header only):
//  - widening a weight element of WType to fp32 on load (bf16: bits << 16; f16: __half2float, exact), one
//    element at a time or four at a time (one 16-byte f32 / 8-byte f16|bf16 load);
//  - narrowing fp32 to bf16 / f16 bits, round to nearest even (= dtype.h's f32_to_bf16 / f32_to_f16);
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

// ---- narrowing fp32 to the 16-bit weight types (host and device) ---------------------------------------

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
