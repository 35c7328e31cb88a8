// DType tables and fp16 conversion (bf16 is inline in dtype.h).
#include "runtime/model/dtype.h"

#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace zt {

namespace {
struct DTypeInfo { DType type; const char * name; size_t size; bool is_float; };
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "F32", 4, true},  {DType::F16, "F16", 2, true}, {DType::BF16, "BF16", 2, true},
    {DType::F64, "F64", 8, true},  {DType::I64, "I64", 8, false}, {DType::I32, "I32", 4, false},
    {DType::I16, "I16", 2, false}, {DType::I8, "I8", 1, false},  {DType::U8, "U8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
    {DType::Q8_0, "Q8_0", 0, false}, {DType::Q4_0, "Q4_0", 0, false}, {DType::Q4_1, "Q4_1", 0, false},
    {DType::Q4_K, "Q4_K", 0, false}, {DType::Q5_K, "Q5_K", 0, false}, {DType::Q6_K, "Q6_K", 0, false},
};
const DTypeInfo & info(DType t) {
    for (const auto & i : kTypes) if (i.type == t) return i;
    ZT_FAIL("internal: unknown DType {}", int(t));
}
}  // namespace

size_t dtype_size(DType t) {
    ZT_CHECK(!dtype_is_quantized(t), "internal: dtype_size of quantized {} (use dtype_row_bytes)", dtype_name(t));
    return info(t).size;
}
bool dtype_is_quantized(DType t) { return t >= DType::Q8_0 && t <= DType::Q6_K; }
int dtype_block_weights(DType t) { return dtype_is_quantized(t) ? quant_layout(quant_type_of(t)).block_weights : 1; }
int64_t dtype_row_bytes(DType t, int64_t n) {
    if (dtype_is_quantized(t)) return quant_row_bytes(quant_type_of(t), n);
    return n * int64_t(info(t).size);
}
double dtype_bits_per_weight(DType t) {
    return dtype_is_quantized(t) ? quant_bits_per_weight(quant_type_of(t)) : 8.0 * double(info(t).size);
}
const char * dtype_name(DType t) { return info(t).name; }
bool dtype_is_float(DType t) { return info(t).is_float; }
std::optional<DType> dtype_from_name(const std::string & s) {
    for (const auto & i : kTypes) if (s == i.name) return i.type;
    return std::nullopt;
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
            u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;             // NaN
    if (abs >= 0x477ff000u) return sign | 0x7c00u;            // overflow (incl. rounding up) -> inf
    if (abs < 0x38800000u) {                                  // subnormal or zero in half
        if (abs < 0x33000000u) return sign;                   // < 2^-25: rounds to 0
        const uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t s2 = 126 - e;                          // value in units of 2^-24 = m >> s2
        uint32_t v = m >> s2;
        const uint32_t rem = m & ((1u << s2) - 1), half = 1u << (s2 - 1);
        if (rem > half || (rem == half && (v & 1u))) ++v;
        return sign | uint16_t(v);
    }
    uint32_t v = ((abs >> 13) - ((127 - 15) << 10));
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
    return sign | uint16_t(v);
}

void convert_to_f32(float * dst, const void * src, DType t, size_t n) {
    switch (t) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::BF16: {
            auto * s = static_cast<const uint16_t *>(src);
            size_t i = 0;
#if defined(__SSE2__)
            // the hot path of CPU decode (weight panels are widened every step): 8 values per iteration,
            // each bf16 becomes the high half of a zero-low fp32 (exactly bf16_to_f32)
            const __m128i zero = _mm_setzero_si128();
            for (; i + 8 <= n; i += 8) {
                const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i));
                _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i), _mm_unpacklo_epi16(zero, h));
                _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i + 4), _mm_unpackhi_epi16(zero, h));
            }
#endif
            for (; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
            return;
        }
        case DType::F16:  { auto * s = static_cast<const uint16_t *>(src); for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]); return; }
        default: ZT_FAIL("cannot convert {} to F32 (only F32, F16, BF16 weights are supported)", dtype_name(t));
    }
}

void convert_from_f32(void * dst, DType t, const float * src, size_t n) {
    switch (t) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::BF16: { auto * d = static_cast<uint16_t *>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]); return; }
        case DType::F16:  { auto * d = static_cast<uint16_t *>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]); return; }
        default: ZT_FAIL("cannot convert F32 to {} (only F32, F16, BF16 are supported)", dtype_name(t));
    }
}

}  // namespace zt
