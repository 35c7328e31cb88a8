// Element types of tensors and checkpoints, their sizes and names, and fp16/bf16 <-> fp32 conversion.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace zt {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);                                    // bytes per element
const char * dtype_name(DType t);                              // safetensors spelling: "F32", "BF16", ...
std::optional<DType> dtype_from_name(const std::string & s);   // "F32" -> F32; unknown -> nullopt
bool dtype_is_float(DType t);                                  // F32, F16, BF16, F64

// bf16: the top 16 bits of an IEEE fp32. Conversion to bf16 rounds to nearest even (NaN stays NaN).
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

float    f16_to_f32(uint16_t h);   // IEEE half -> float (exact)
uint16_t f32_to_f16(float f);      // float -> IEEE half, round to nearest even

// Element i of an array of WT (F32, BF16 or F16) at w, widened to fp32 (the kernels' scalar loads).
template <DType WT>
inline float widen_at(const void * w, int64_t i) {
    if constexpr (WT == DType::F32) return static_cast<const float *>(w)[i];
    else if constexpr (WT == DType::BF16) return bf16_to_f32(static_cast<const uint16_t *>(w)[i]);
    else return f16_to_f32(static_cast<const uint16_t *>(w)[i]);
}

// Converts n elements of type `src_type` at src to fp32 at dst (F32, F16, BF16 only).
void convert_to_f32(float * dst, const void * src, DType src_type, size_t n);
// Converts n fp32 values at src to `dst_type` at dst (F32, F16, BF16 only).
void convert_from_f32(void * dst, DType dst_type, const float * src, size_t n);

}  // namespace zt
