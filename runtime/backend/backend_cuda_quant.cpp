// The CUDA backend's ops on GGUF-quantized weights (DType Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; quant_block.h has
// the layouts): matmul with a quantized w (N,K) and embedding with a quantized table (V,C). Rows of such a tensor
// are whole blocks; the kernels (kernels/quant_*.cu) decode each weight bit for bit as zt::dequantize_row.
//
// matmul, out (T,N) f32 = x (T,K) f32 · w (N,K)^T [+ bias (N)], by T:
//  - T <= kernels::kQuantGemvMaxT (8): kernels::quant_gemv, the weights decoded in registers and fp32 fmaf into
//    fp32 sums in a fixed order (depends on K only): no scratch, bit-identical run to run and whatever rows share
//    the call. compute_dtype does not apply: x stays fp32 and the weights exact (the CPU's numerics up to the
//    order of the sum).
//  - larger T: W is dequantized a tile of rows at a time (kernels::dequantize_rows, at most kQuantTileBytes of
//    operand per tile, a multiple of 64 rows) into the per-stream GEMM scratch (the backend's memory account,
//    purpose "matmul scratch"), and each tile runs through the cuBLASLt GEMM of backend_cuda_ops.cpp (fp32
//    accumulate) into its columns of out (ldd = N). Operand dtype: compute_dtype "fp32" / "bf16" / "fp16" as
//    asked; "auto" takes BF16 (a quantized weight has no float dtype of its own: BF16 keeps fp32's range for x,
//    which F16 would not, and the dequantized weights rounded to 8 bits of mantissa cost no more than the 4-6 bit
//    quantization already did); x is narrowed once into the scratch before the tiles. Same shape, same tiles, same
//    algorithms: reproducible run to run.
//  - bias (F32/F16/BF16, never quantized): kernels::add_bias afterwards.
// embedding: kernels::embedding_quant, out row t = dequantize_row(table row tokens[t]), exact.
// The argument checks are op_checks.h's, as on the CPU: check_matmul and check_weight_matrix with quantized_ok.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cuda_impl.h"
#include "runtime/backend/op_checks.h"
#include "runtime/base/error.h"
#include "runtime/model/dtype.h"

namespace zt::cuda_impl {
namespace {

constexpr size_t kQuantTileBytes = size_t(64) << 20;   // dequantized W operand per GEMM tile

kernels::QType qtype_of(DType t) {
    switch (t) {
        case DType::Q8_0: return kernels::QType::q8_0;
        case DType::Q4_0: return kernels::QType::q4_0;
        case DType::Q4_1: return kernels::QType::q4_1;
        case DType::Q4_K: return kernels::QType::q4_k;
        case DType::Q5_K: return kernels::QType::q5_k;
        case DType::Q6_K: return kernels::QType::q6_k;
        default: break;
    }
    ZT_FAIL("cuda backend: {} is not a quantized weight dtype (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)", dtype_name(t));
}

}  // namespace

void CudaBackend::matmul_quant(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, int si) {
    const MatmulDims dims = check_matmul(out, x, w, bias, /*quantized_ok=*/true);
    const int64_t T = dims.T, N = dims.N, K = dims.K;
    if (T == 0 || N == 0) return;
    const kernels::QType qt = qtype_of(w.dtype);
    const cudaStream_t cs = handle(si);

    if (T <= kernels::kQuantGemvMaxT) {
        ZT_BE_CUDA(kernels::quant_gemv(out.ptr<float>(), x.ptr<const float>(), w.data, qt, T, N, K, cs),
                   "matmul: quantized GEMV kernel (T={}, N={}, K={}, w {})", T, N, K, dtype_name(w.dtype));
    } else {
        // scratch: [x narrowed (unless fp32)][one tile of W rows dequantized to the operand dtype]
        const DType cdt = use_fixed_dtype_ ? fixed_dtype_ : DType::BF16;
        const size_t esz = dtype_size(cdt);
        const bool narrow_x = cdt != DType::F32;
        const size_t x_bytes = narrow_x ? round_up(size_t(T) * size_t(K) * esz, 256) : 0;
        int64_t tile_rows = std::max<int64_t>(1, int64_t(kQuantTileBytes / (size_t(std::max<int64_t>(K, 1)) * esz)));
        if (tile_rows >= 64) tile_rows = tile_rows / 64 * 64;   // tiles start at 256-byte aligned columns of out
        tile_rows = std::min(tile_rows, N);
        const size_t tile_bytes = round_up(size_t(tile_rows) * size_t(K) * esz, 256);

        OpState & st = ops_[size_t(si)];
        std::lock_guard<std::mutex> lock(st.mu);
        grow(st.gemm_scratch, x_bytes + tile_bytes, "matmul scratch", false);
        char * base = static_cast<char *>(st.gemm_scratch.data());
        const void * B = x.data;
        if (narrow_x) {
            ZT_BE_CUDA(kernels::narrow(base, wtype_of(cdt), x.ptr<const float>(), T * K, cs),
                       "matmul: narrowing x ({}x{}) to {}", T, K, dtype_name(cdt));
            B = base;
        }
        void * tile = base + x_bytes;
        for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
            const int64_t rows = std::min(tile_rows, N - n0);
            ZT_BE_CUDA(kernels::dequantize_rows(tile, wtype_of(cdt), w.data, qt, nullptr, n0, rows, K, cs),
                       "matmul: dequantizing rows {}..{} of w ({}x{} {}) to {}", n0, n0 + rows, N, K,
                       dtype_name(w.dtype), dtype_name(cdt));
            gemm(st, tile, B, out.ptr<float>() + n0, rows, T, K, N, cdt, cs);
        }
    }
    if (bias.data)
        ZT_BE_CUDA(kernels::add_bias(out.ptr<float>(), bias.data, wtype_of(bias.dtype), T, N, cs),
                   "matmul: bias kernel (T={}, N={})", T, N);
}

// The table's rows are whole blocks of C weights; embedding() has checked out, tokens and the shapes.
void CudaBackend::embedding_quant(Tensor out, const Tensor & tokens, const Tensor & table, int si) {
    const int64_t C = table.dim(1), T = tokens.numel();
    ZT_BE_CUDA(kernels::embedding_quant(out.ptr<float>(), tokens.ptr<const int32_t>(), table.data,
                                        qtype_of(table.dtype), T, C, handle(si)),
               "embedding kernel (T={}, C={}, table {})", T, C, dtype_name(table.dtype));
}

}  // namespace zt::cuda_impl
