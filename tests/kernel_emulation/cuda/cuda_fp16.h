// Kernel emulation shim for <cuda_fp16.h> (see cuda_runtime.h here): __half as its 16 bits, exact conversion to
// float, round-to-nearest-even conversion from float.
#pragma once
#include <cstdint>
#include <cstring>

#include <cuda_runtime.h>

struct __half { unsigned short x; };
typedef __half half;

inline __half __ushort_as_half(unsigned short v) { return __half{v}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline float __half2float(__half h) {
    const uint32_t sign = uint32_t(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (m << 13);                     // inf / NaN
    } else if (e != 0) {
        u = sign | ((e + 112u) << 23) | (m << 13);              // normal
    } else if (m == 0) {
        u = sign;                                               // zero
    } else {                                                    // subnormal: m * 2^-24, exact in float
        float f = float(m) * 5.9604644775390625e-08f;
        std::memcpy(&u, &f, 4);
        u |= sign;
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __half __float2half(float f) {   // round to nearest even, NaN -> quiet NaN
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return __half{static_cast<unsigned short>(sign | 0x7e00u)};
    if (abs >= 0x477ff000u) return __half{static_cast<unsigned short>(sign | 0x7c00u)};
    if (abs < 0x38800000u) {
        if (abs < 0x33000000u) return __half{static_cast<unsigned short>(sign)};
        const uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u, s = 126 - e;
        uint32_t v = m >> s;
        const uint32_t rem = m & ((1u << s) - 1), halfway = 1u << (s - 1);
        if (rem > halfway || (rem == halfway && (v & 1u))) ++v;
        return __half{static_cast<unsigned short>(sign | v)};
    }
    uint32_t v = (abs >> 13) - ((127 - 15) << 10);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
    return __half{static_cast<unsigned short>(sign | v)};
}
inline __half __float2half_rn(float f) { return __float2half(f); }
