// Element types of tensors and checkpoints, their sizes and names, and fp16/bf16 <-> fp32 conversion.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace zt {

// Q8_0 .. Q6_K: GGUF's block-quantized weight types (quant_block.h has their layouts). A quantized tensor's rows
// (its last dim) are whole blocks; its bytes are rows x dtype_row_bytes(t, last dim). They have no element size.
enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K };

size_t dtype_size(DType t);                                    // bytes per element; a quantized type is an error
const char * dtype_name(DType t);                              // safetensors / GGUF spelling: "F32", "BF16", "Q4_K"
std::optional<DType> dtype_from_name(const std::string & s);   // "F32" -> F32, "Q4_K" -> Q4_K; unknown -> nullopt
bool dtype_is_float(DType t);                                  // F32, F16, BF16, F64
bool dtype_is_quantized(DType t);                              // Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K
int dtype_block_weights(DType t);                              // weights per block (32 or 256); 1 for the others
// Bytes of a row of n elements: n x dtype_size, or n / block weights x block bytes (n not a whole number of blocks
// is an error naming the type).
int64_t dtype_row_bytes(DType t, int64_t n);
double dtype_bits_per_weight(DType t);                         // 16 for BF16, 4.5 for Q4_K

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
