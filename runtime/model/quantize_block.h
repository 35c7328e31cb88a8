// quantize_block: fp32 rows -> GGUF weight blocks (the inverse of quant_block.h's dequantize_row), for
// `ztinfer quantize`. The layouts are quant_block.h's, byte for byte.
//   Q8_0, Q4_0, Q4_1   the reference round-to-nearest scheme of ggml's quantize_row_*_ref, the same float operations
//                      in the same order as the gguf PyPI package's quants.quantize: the bytes equal the package's
//                      (tests/data/quantize).
//   Q4_K, Q5_K, Q6_K   per sub-block a small least-squares search for the scale (and Q4_K/Q5_K's min), then the
//                      sub-block scales quantized to 6 bits (8 bits for Q6_K) against fp16 super-scales, and every
//                      weight rounded again against the scales as they will be read back. Not byte-equal to
//                      llama.cpp's (its search weighs weights differently); dequantize(quantize(x)) on Gaussian rows
//                      is ~0.5% (Q8_0), ~1.5% (Q6_K), ~3% (Q5_K), ~6-7% (Q4_K, Q4_0, Q4_1) of RMS(x) (test_quantize).
#pragma once
#include <cstdint>

#include "runtime/model/quant_block.h"

namespace zt {

// Writes the n / block_weights blocks of x[0, n) to out (quant_row_bytes(t, n) bytes). n must be a whole number of
// blocks (an error naming the type otherwise). x must be finite.
void quantize_row(QuantType t, const float * x, void * out, int64_t n);

}  // namespace zt
