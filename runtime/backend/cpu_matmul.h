// cpu_matmul: the CPU backend's matmul, out (T,N) = x (T,K) . W (N,K)^T (+ bias (N)), fp32 arithmetic over
// F32/F16/BF16 weights (bias of any of them) or weights of a GGUF block type (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K;
// rows whole blocks along K), batch-invariant on every path: row t of the output has the same bits whatever T is,
// which other rows share the call, how the work is tiled and which thread computes it.
//
// Paths (CpuMatmulPath):
//   reference  the readable spec: W cut into panels (height from N and K only), BF16/F16 panels widened to fp32
//              scratch, one OpenBLAS sgemv per (token row, panel). Slow: W is read once per token row.
//   portable   plain C++ micro-kernels (8 fixed partial sums per dot product), for CPUs without AVX2.
//   avx2       AVX2+FMA+F16C micro-kernels, 8 lanes.
//   avx512     AVX-512F/BW/VL micro-kernels, 16 lanes.
// The fast paths compute an MR x NR block of outputs per micro-kernel call on W as stored (no fp32 copy of W: BF16/F16
// are widened in registers; only x is repacked, per tile, where a kernel wants it). Every output element is one dot
// product over K in a fixed order: its own L-lane accumulator (L = 16 on AVX-512, else 8) takes the products of k in a
// fixed lane assignment, chunk after chunk in increasing k (the K tail a zero-padded load), optionally in K blocks
// whose partial accumulators round-trip memory exactly; then the L lanes are reduced in one fixed tree, then the bias
// is added. Edge tiles run the same template with a smaller MR/NR, i.e. the identical per-element instruction sequence,
// so the result never depends on where the element falls; the blocking (which may depend on T and the thread count)
// only decides speed. K is never split across threads. Different paths give different bits; one path gives the same
// bits for every batch.
//
// Quantized W (every path): the weights are dequantized exactly (dequantize_row's values, cpu_dequant.h), then
// summed as F32 weights: the reference dequantizes its panels row by row; the fast paths dequantize each W tile, one
// K block of 512 at a time, into per-thread fp32 scratch and run their F32 micro-kernels on it
// (cpu_matmul_quant.cpp), so a fast path on quantized W gives the same bits as itself on the dequantized F32 W.
//
// Selection: cpu_matmul_default_path() is the best path this CPU supports, or ZT_CPU_MATMUL=reference|portable|
// avx2|avx512 (read once per process; a path the CPU lacks, or an unknown name, is an error).
// Not used: AVX512-BF16 (vdpbf16ps), which would round x to bf16 (results further from HF's fp32 matmul).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/backend/parallel_for.h"
#include "runtime/model/tensor.h"

namespace zt {

enum class CpuMatmulPath { reference, portable, avx2, avx512 };

const char * cpu_matmul_path_name(CpuMatmulPath p);       // "avx512"
bool cpu_matmul_path_supported(CpuMatmulPath p);          // this CPU can run it
std::vector<CpuMatmulPath> cpu_matmul_supported_paths();  // reference first
CpuMatmulPath cpu_matmul_default_path();                  // ZT_CPU_MATMUL, else the fastest supported
// The path called `name` ("avx2"); an unknown name or one this CPU cannot run is an error saying what to use.
CpuMatmulPath cpu_matmul_path_named(const std::string & name, const char * source = "kernel_path");

// out (T,N) fp32 = x (T,K) fp32 . w (N,K)^T (+ bias (N) when bias.data), rows contiguous. w: F32/F16/BF16 or a GGUF
// block type (K whole blocks); bias: F32/F16/BF16.
// Shapes are the caller's to check (check_matmul). Work is spread over `pool`; the result does not depend on it.
void cpu_matmul(CpuMatmulPath path, ThreadPool & pool, float * out, const float * x, const Tensor & w,
                const Tensor & bias, int64_t T, int64_t N, int64_t K);

}  // namespace zt
