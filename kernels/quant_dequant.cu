// quant_dequant: rows of a GGUF-quantized matrix to f32 / f16 / bf16 (dequantize_rows), and the embedding of a
// quantized table (embedding_quant: the rows are the tokens, the output f32).
//   out (R,K) OT, out row r = w row src(r) (src = rows[r], or row0 + r), w rows K / block_weights blocks each.
// Each weight is quant_block.cuh's decode (bit-identical to zt::dequantize_row); f16 / bf16 outputs are that fp32
// value narrowed to nearest even (weight_load.cuh, = dtype.h's f32_to_f16 / f32_to_bf16).
// Launch: 2-D grid, one thread per group of 8 weights of a row: blockIdx.x = a chunk of up to 256 groups of the
// row (a multiple of 32 threads, fewer for short rows), blockIdx.y = rows r, striding by gridDim.y (<= 65535) so
// any R works. A group's 8 outputs are one 32-byte (f32) or 16-byte (f16/bf16) run, stored as float4 / uint4 when
// out is 16-byte aligned (K is a multiple of 8, so every group then is), else element by element.
#include "kernels/kernels.h"
#include "kernels/quant_block.cuh"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kMaxThreads = 256;

template <WType O, bool VEC>
__device__ __forceinline__ void store_group(void * __restrict__ out, int64_t at, const float (&y)[kQuantGroup]) {
    if constexpr (O == WType::f32) {
        float * o = static_cast<float *>(out) + at;
        if constexpr (VEC) {
            reinterpret_cast<float4 *>(o)[0] = make_float4(y[0], y[1], y[2], y[3]);
            reinterpret_cast<float4 *>(o)[1] = make_float4(y[4], y[5], y[6], y[7]);
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) o[i] = y[i];
        }
    } else {
        uint32_t h[8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
            h[i] = O == WType::bf16 ? f32_bits_to_bf16_bits(__float_as_uint(y[i])) : f32_bits_to_f16_bits(__float_as_uint(y[i]));
        uint16_t * o = static_cast<uint16_t *>(out) + at;
        if constexpr (VEC) {   // little endian: element 2i is the low half
            reinterpret_cast<uint4 *>(o)[0] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                                                         h[6] | (h[7] << 16));
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) o[i] = uint16_t(h[i]);
        }
    }
}

template <QType Q, WType O, bool VEC>
__global__ void dequant_rows_kernel(void * __restrict__ out, const uint8_t * __restrict__ w,
                                    const int32_t * __restrict__ rows, int64_t row0, int64_t R, int64_t K) {
    const int64_t groups = K / kQuantGroup;
    const int64_t gi = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (gi >= groups) return;
    const int64_t row_bytes = K / QBlock<Q>::weights * QBlock<Q>::bytes;
    for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
        const int64_t src = rows ? int64_t(rows[r]) : row0 + r;
        float y[kQuantGroup];
        decode_row_group<Q>(w + src * row_bytes, gi, y);
        store_group<O, VEC>(out, r * K + gi * kQuantGroup, y);
    }
}

template <QType Q, WType O>
cudaError_t launch(void * out, const void * w, const int32_t * rows, int64_t row0, int64_t R, int64_t K,
                   cudaStream_t stream) {
    const int64_t groups = K / kQuantGroup;
    const int threads = threads_for(groups, kMaxThreads);
    const int64_t bx = (groups + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(R < kMaxGridY ? R : kMaxGridY));
    const auto * wb = static_cast<const uint8_t *>(w);
    if (is_aligned(out, 16))
        dequant_rows_kernel<Q, O, true><<<grid, threads, 0, stream>>>(out, wb, rows, row0, R, K);
    else
        dequant_rows_kernel<Q, O, false><<<grid, threads, 0, stream>>>(out, wb, rows, row0, R, K);
    return cudaGetLastError();
}

template <QType Q>
cudaError_t launch_q(void * out, WType ot, const void * w, const int32_t * rows, int64_t row0, int64_t R, int64_t K,
                     cudaStream_t stream) {
    switch (ot) {
        case WType::f32: return launch<Q, WType::f32>(out, w, rows, row0, R, K, stream);
        case WType::f16: return launch<Q, WType::f16>(out, w, rows, row0, R, K, stream);
        case WType::bf16: return launch<Q, WType::bf16>(out, w, rows, row0, R, K, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t dequantize_rows(void * out, WType ot, const void * w, QType qt, const int32_t * rows, int64_t row0,
                            int64_t R, int64_t K, cudaStream_t stream) {
    if (R < 0 || K < 0 || row0 < 0 || !wtype_valid(ot) || !qtype_valid(qt)) return cudaErrorInvalidValue;
    if (K % qtype_block_weights(qt) != 0) return cudaErrorInvalidValue;
    if (R == 0 || K == 0) return cudaSuccess;
    if (!out || !w) return cudaErrorInvalidValue;
    switch (qt) {
        case QType::q8_0: return launch_q<QType::q8_0>(out, ot, w, rows, row0, R, K, stream);
        case QType::q4_0: return launch_q<QType::q4_0>(out, ot, w, rows, row0, R, K, stream);
        case QType::q4_1: return launch_q<QType::q4_1>(out, ot, w, rows, row0, R, K, stream);
        case QType::q4_k: return launch_q<QType::q4_k>(out, ot, w, rows, row0, R, K, stream);
        case QType::q5_k: return launch_q<QType::q5_k>(out, ot, w, rows, row0, R, K, stream);
        case QType::q6_k: return launch_q<QType::q6_k>(out, ot, w, rows, row0, R, K, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t embedding_quant(float * out, const int32_t * tokens, const void * table, QType qt, int64_t T, int64_t C,
                            cudaStream_t stream) {
    if (T > 0 && C > 0 && !tokens) return cudaErrorInvalidValue;
    return dequantize_rows(out, WType::f32, table, qt, tokens, 0, T, C, stream);
}

}  // namespace zt::kernels
