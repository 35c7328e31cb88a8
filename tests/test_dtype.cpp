// DType conversions: bf16/fp16 round trips and rounding against known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/dtype.h"
#include "runtime/model/tensor.h"

using namespace zt;

TEST(DType, Bf16RoundTripAndRounding) {
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
    EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);          // tie -> even (down)
    EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);          // tie -> even (up)
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, F16ExhaustiveRoundTrip) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = f16_to_f32(uint16_t(h));
        if (std::isnan(f)) continue;
        EXPECT_EQ(f32_to_f16(f), h) << "half bits " << h;
    }
    EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                     // rounds to inf
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);        // tie -> even (0)
    EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);        // 0.75 ulp -> 1
}

TEST(DType, Names) {
    EXPECT_EQ(*dtype_from_name("BF16"), DType::BF16);
    EXPECT_FALSE(dtype_from_name("F8_E4M3").has_value());
    EXPECT_EQ(dtype_size(DType::F16), 2u);
}

TEST(DType, Bf16BulkConversionMatchesScalar) {
    // convert_to_f32 has a vectorised path: every bf16 bit pattern, at odd lengths and offsets
    std::vector<uint16_t> all(0x10000);
    for (uint32_t h = 0; h < 0x10000; ++h) all[h] = uint16_t(h);
    for (size_t off : {size_t(0), size_t(1), size_t(3)}) {
        std::vector<float> out(all.size() - off);
        convert_to_f32(out.data(), all.data() + off, DType::BF16, out.size());
        for (size_t i = 0; i < out.size(); ++i) {
            const float ref = bf16_to_f32(all[i + off]);
            ASSERT_EQ(std::memcmp(&out[i], &ref, 4), 0) << "bits " << all[i + off];
        }
    }
}

TEST(DType, QuantizedTypesHaveRowBytesNotElementSizes) {
    EXPECT_EQ(*dtype_from_name("Q4_K"), DType::Q4_K);
    EXPECT_TRUE(dtype_is_quantized(DType::Q6_K));
    EXPECT_FALSE(dtype_is_quantized(DType::BF16));
    EXPECT_EQ(dtype_row_bytes(DType::Q8_0, 64), 68);
    EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 512), 288);
    EXPECT_EQ(dtype_row_bytes(DType::BF16, 7), 14);
    EXPECT_EQ(dtype_block_weights(DType::Q5_K), 256);
    EXPECT_DOUBLE_EQ(dtype_bits_per_weight(DType::Q4_K), 4.5);
    EXPECT_THROW(dtype_row_bytes(DType::Q4_0, 33), Error);      // not a whole number of blocks
    EXPECT_THROW(dtype_size(DType::Q4_0), Error);               // no element size
    const Tensor t(nullptr, DType::Q6_K, {3, 512});
    EXPECT_EQ(t.bytes(), 3u * 420u);
}
