// cpu_dequant: the CPU backend's dequantization of rows of GGUF weight blocks (runtime/model/quant_block.h) into
// fp32, one function per kernel path (CpuMatmulPath) and block type. The quantized matmul (cpu_matmul_quant.cpp)
// dequantizes W tiles with it into per-thread scratch; the embedding op dequantizes the rows it gathers.
//
// Every function gives dequantize_row's bits (the readable reference): the reference and portable paths ARE
// dequantize_row; avx2 (8 lanes) and avx512 (16 lanes) compute each weight with the same float operations in the
// same order (an exact int -> float conversion, then the reference's multiplies, all exact, and its one add or
// subtract). Vectorised types: all six (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K).
#pragma once
#include <cstdint>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/model/quant_block.h"

namespace zt {

// out[0, n) = the weights of the n / block_weights blocks at `blocks` (n a whole number of blocks: the caller checks).
using DequantFn = void (*)(const void * blocks, float * out, int64_t n);

// The dequantizer of blocks of type t on `path` (one this CPU supports: cpu_matmul_path_supported).
DequantFn cpu_dequant_fn(CpuMatmulPath path, QuantType t);

// cpu_dequant_x86.cpp: the AVX2 / AVX-512 dequantizers, nullptr where the CPU (or the build's architecture) lacks them.
DequantFn cpu_dequant_avx2(QuantType t);
DequantFn cpu_dequant_avx512(QuantType t);

}  // namespace zt
