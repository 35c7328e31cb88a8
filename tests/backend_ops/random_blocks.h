// random_blocks: random, valid GGUF weight blocks (runtime/model/quant_block.h layouts) for the tests of the
// quantized matmul and embedding (test_backend_ops' quant_cases.cpp, zt_tests' test_cpu_matmul.cpp). Every byte is
// random except the f16 scale fields (d, and m / dmin where the type has them), which are finite: either sign,
// magnitudes in [2^-8, 2^-2) (weights of order 0.01 .. 10, so sums stay well inside fp32); with `extremes`, one
// field in eight is instead 0, -0, a subnormal or the largest half (65504), for tests of the dequantizers alone.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/model/dtype.h"
#include "runtime/model/quant_block.h"

namespace zt::test_blocks {

// A random finite half (see the top of the file).
inline uint16_t random_scale(std::mt19937_64 & g, bool extremes) {
    const uint64_t r = g();
    const uint16_t sign = uint16_t((r & 1) << 15);
    if (extremes && ((r >> 1) & 7) == 0) {
        switch ((r >> 4) & 3) {
            case 0: return sign;                                         // +-0
            case 1: return uint16_t(sign | (((r >> 8) & 0x3ff) | 1));    // subnormal
            case 2: return uint16_t(sign | 0x7bff);                      // +-65504
            default: return uint16_t(sign | 0x0400);                    // smallest normal
        }
    }
    const uint16_t exp = uint16_t(7 + (r >> 8) % 6);                     // 2^(exp-15): 2^-8 .. 2^-3 (x [1, 2))
    return uint16_t(sign | (exp << 10) | ((r >> 16) & 0x3ff));
}

// Byte offsets of the f16 scale fields in a block of type t.
inline std::vector<int> scale_fields(QuantType t) {
    switch (t) {
        case QuantType::Q8_0:
        case QuantType::Q4_0: return {0};
        case QuantType::Q4_1:
        case QuantType::Q4_K:
        case QuantType::Q5_K: return {0, 2};
        case QuantType::Q6_K: return {208};
    }
    return {};
}

// rows x K weights of quantized dtype t (K whole blocks): rows x dtype_row_bytes(t, K) bytes.
inline std::vector<uint8_t> random_rows(DType t, int64_t rows, int64_t K, std::mt19937_64 & g, bool extremes = false) {
    const QuantType q = quant_type_of(t);
    const QuantLayout & l = quant_layout(q);
    std::vector<uint8_t> bytes(size_t(rows * quant_row_bytes(q, K)));
    for (uint8_t & b : bytes) b = uint8_t(g() >> 56);
    const std::vector<int> fields = scale_fields(q);
    for (size_t at = 0; at < bytes.size(); at += size_t(l.block_bytes))
        for (int f : fields) {
            const uint16_t h = random_scale(g, extremes);
            bytes[at + size_t(f)] = uint8_t(h & 0xff);
            bytes[at + size_t(f) + 1] = uint8_t(h >> 8);
        }
    return bytes;
}

// The fp32 values of those rows (dequantize_row, the reference).
inline std::vector<float> dequantized(DType t, const std::vector<uint8_t> & bytes, int64_t rows, int64_t K) {
    std::vector<float> out(size_t(rows * K));
    const int64_t rb = dtype_row_bytes(t, K);
    for (int64_t r = 0; r < rows; ++r) dequantize_row(quant_type_of(t), bytes.data() + r * rb, out.data() + r * K, K);
    return out;
}

inline constexpr DType kQuantTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

}  // namespace zt::test_blocks
