// GGUF's quantized weight blocks on the device (header only): the block sizes of each QType and the decoding of
// one group, eight consecutive weights of a block that share one scale (a block of 32 has 4 groups, one of 256 has
// 32). Each weight is computed with the same float operations, in the same order, as zt::dequantize_row
// (runtime/model/quant_block.cpp, the readable reference); __fmul_rn / __fadd_rn / __fsub_rn keep nvcc from
// fusing them into an FMA, so a decoded weight is bit-identical to the CPU's. Blocks are read byte by byte (a
// block of 34, 18 or 210 bytes is only 2-byte aligned), through __ldg.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

constexpr int kQuantGroup = 8;   // weights per decoded group

// Weights and bytes per block (host and device).
template <QType Q> struct QBlock;
template <> struct QBlock<QType::q8_0> { static constexpr int weights = 32, bytes = 34; };
template <> struct QBlock<QType::q4_0> { static constexpr int weights = 32, bytes = 18; };
template <> struct QBlock<QType::q4_1> { static constexpr int weights = 32, bytes = 20; };
template <> struct QBlock<QType::q4_k> { static constexpr int weights = 256, bytes = 144; };
template <> struct QBlock<QType::q5_k> { static constexpr int weights = 256, bytes = 176; };
template <> struct QBlock<QType::q6_k> { static constexpr int weights = 256, bytes = 210; };

inline bool qtype_valid(QType q) { return int(q) >= 0 && int(q) <= int(QType::q6_k); }
inline int qtype_block_weights(QType q) { return q == QType::q4_k || q == QType::q5_k || q == QType::q6_k ? 256 : 32; }

// ---- device: decoding ---------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t qbyte(const uint8_t * p) { return __ldg(p); }
__device__ __forceinline__ float qhalf(const uint8_t * p) { return f16_bits_to_float(qbyte(p) | (qbyte(p + 1) << 8)); }

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block's 12 scale bytes s.
__device__ __forceinline__ void qk_scale_min(int j, const uint8_t * s, int & sc, int & mn) {
    if (j < 4) {
        sc = int(qbyte(s + j) & 63);
        mn = int(qbyte(s + j + 4) & 63);
    } else {
        sc = int((qbyte(s + j + 4) & 0xF) | ((qbyte(s + j - 4) >> 6) << 4));
        mn = int((qbyte(s + j + 4) >> 4) | ((qbyte(s + j) >> 6) << 4));
    }
}

// y[0..8) = weights 8g .. 8g+7 of the block at b (g < QBlock<Q>::weights / 8).
template <QType Q>
__device__ __forceinline__ void decode_group(const uint8_t * __restrict__ b, int g, float (&y)[kQuantGroup]) {
    if constexpr (Q == QType::q8_0) {                  // f16 d, int8 q[32]: w = q * d
        const float d = qhalf(b);
        const uint8_t * q = b + 2 + 8 * g;
#pragma unroll
        for (int i = 0; i < 8; ++i) y[i] = __fmul_rn(float(int8_t(qbyte(q + i))), d);
    } else if constexpr (Q == QType::q4_0 || Q == QType::q4_1) {
        // weight j < 16: low nibble of qs[j]; j >= 16: high nibble of qs[j - 16]
        const float d = qhalf(b);
        const uint8_t * qs = b + (Q == QType::q4_0 ? 2 : 4) + 8 * (g & 1);
        const int shift = (g >> 1) * 4;
        if constexpr (Q == QType::q4_0) {              // w = d * (q - 8)
#pragma unroll
            for (int i = 0; i < 8; ++i) y[i] = __fmul_rn(d, float(int((qbyte(qs + i) >> shift) & 15) - 8));
        } else {                                       // w = d * q + m
            const float m = qhalf(b + 2);
#pragma unroll
            for (int i = 0; i < 8; ++i) y[i] = __fadd_rn(__fmul_rn(d, float((qbyte(qs + i) >> shift) & 15)), m);
        }
    } else if constexpr (Q == QType::q4_k || Q == QType::q5_k) {
        // sub-block s = g / 4 (32 weights): w = d*sc[s] * q - dmin*mn[s]; sub-block 2c takes the low nibbles of
        // qs[32c ..], 2c+1 the high ones; Q5_K's 5th bit of weight l of sub-block s is bit s of qh[l]
        constexpr bool five = Q == QType::q5_k;
        const int s = g >> 2, l0 = 8 * (g & 3);
        int sc = 0, mn = 0;
        qk_scale_min(s, b + 4, sc, mn);
        const float dl = __fmul_rn(qhalf(b), float(sc)), ml = __fmul_rn(qhalf(b + 2), float(mn));
        const uint8_t * qs = b + (five ? 48 : 16) + 32 * (s >> 1) + l0;
        const int shift = (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = int((qbyte(qs + i) >> shift) & 15);
            if constexpr (five) q |= int((qbyte(b + 16 + l0 + i) >> s) & 1) << 4;
            y[i] = __fsub_rn(__fmul_rn(dl, float(q)), ml);
        }
    } else {
        // Q6_K: weight i = 128h + p (c = p / 32, l = p % 32): low 4 bits in ql[64h + 32(c%2) + l] (low nibble for
        // c < 2, high for c >= 2), high 2 bits at bit 2c of qh[32h + l]; w = (d * scales[i / 16]) * (q - 32)
        static_assert(Q == QType::q6_k, "unknown QType");
        const int i0 = 8 * g, h = i0 >> 7, p0 = i0 & 127, c = p0 >> 5, l0 = p0 & 31;
        const float ds = __fmul_rn(qhalf(b + 208), float(int8_t(qbyte(b + 192 + (i0 >> 4)))));
        const uint8_t * ql = b + 64 * h + 32 * (c & 1) + l0;
        const uint8_t * qh = b + 128 + 32 * h + l0;
        const int lshift = c >= 2 ? 4 : 0, hshift = 2 * c;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = int(((qbyte(ql + i) >> lshift) & 15) | (((qbyte(qh + i) >> hshift) & 3) << 4)) - 32;
            y[i] = __fmul_rn(ds, float(q));
        }
    }
}

// Weights 8gi .. 8gi+7 of a row of blocks at row (gi counts groups from the row's start).
template <QType Q>
__device__ __forceinline__ void decode_row_group(const uint8_t * __restrict__ row, int64_t gi, float (&y)[kQuantGroup]) {
    constexpr int gpb = QBlock<Q>::weights / kQuantGroup;
    decode_group<Q>(row + (gi / gpb) * QBlock<Q>::bytes, int(gi % gpb), y);
}

}  // namespace zt::kernels
