// quant_block: the quantized weight blocks of GGUF files (ggml's block structs, byte for byte) and the readable scalar
// dequantization of each, the reference every fast path is tested against. DType::Q8_0 .. Q6_K are these types as
// tensor dtypes.
//
// Layouts (little-endian; "f16" an IEEE half; a row of a weight matrix is a whole number of blocks):
//   Q8_0   32 weights,  34 B: f16 d, int8 q[32]                       w = d * q
//   Q4_0   32 weights,  18 B: f16 d, u8 qs[16]                        w[j] = d * ((qs[j] & 15) - 8), w[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1   32 weights,  20 B: f16 d, f16 m, u8 qs[16]                 w[j] = d * (qs[j] & 15) + m, w[j+16] = d * (qs[j] >> 4) + m
//   Q4_K  256 weights, 144 B: f16 d, f16 dmin, u8 scales[12] (8 x 6-bit scale + 8 x 6-bit min), u8 qs[128]
//                             sub-block s (32 weights): w = d*sc[s] * q - dmin*mn[s], q a nibble
//   Q5_K  256 weights, 176 B: f16 d, f16 dmin, u8 scales[12], u8 qh[32] (5th bits), u8 qs[128]
//   Q6_K  256 weights, 210 B: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8 scales[16], f16 d
//                             w = d * scales[s] * (q - 32), q 6 bits, sub-blocks of 16
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/model/dtype.h"

namespace zt {

enum class QuantType : uint8_t { Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K };   // same order as DType::Q8_0 ..

// The block type of a quantized DType (dtype_is_quantized(t)), and back.
inline QuantType quant_type_of(DType t) { return QuantType(int(t) - int(DType::Q8_0)); }
inline DType dtype_of(QuantType q) { return DType(int(q) + int(DType::Q8_0)); }

struct QuantLayout {
    int block_weights;   // weights per block
    int block_bytes;     // bytes per block
    const char * name;   // "Q4_K"
};

const QuantLayout & quant_layout(QuantType t);
std::optional<QuantType> quant_type_from_name(const std::string & name);   // "Q4_K" -> Q4_K; others -> nullopt
// Bits per weight, e.g. 4.5 for Q4_K.
double quant_bits_per_weight(QuantType t);

// out[0, n) = the weights of the n / block_weights blocks at `blocks` (n a multiple of block_weights; the caller
// checks it: quant_row_bytes throws otherwise).
void dequantize_row(QuantType t, const void * blocks, float * out, int64_t n);
// Bytes of a row of n weights; an n that is not a whole number of blocks is an error naming the type.
int64_t quant_row_bytes(QuantType t, int64_t n);

}  // namespace zt
