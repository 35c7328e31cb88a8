// embedding: out (T,C) f32 = table (V,C) W row tokens[t], widened to fp32; tokens (T) i32 in [0, V) (checked on
// the host before the launch).
// Launch: 2-D grid, blockIdx.x = a chunk of `threads` column units of a row (a unit is 4 columns, one 16-byte
// store, when C % 4 == 0 and the pointers allow; else 1 column), blockIdx.y = rows t, striding by gridDim.y
// (<= 65535) so any T works.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

template <WType W, bool VEC>
__global__ void embedding_kernel(float * __restrict__ out, const int32_t * __restrict__ tokens,
                                 const void * __restrict__ table, int64_t T, int64_t C) {
    const int64_t units = VEC ? C / 4 : C;
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units) return;
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        const int64_t src_row = int64_t(tokens[t]);
        if constexpr (VEC) {
            // row src_row starts at 4-unit src_row * C/4 (C % 4 == 0)
            reinterpret_cast<float4 *>(out + t * C)[u] = load_weight4<W>(table, src_row * units + u);
        } else {
            out[t * C + u] = load_weight<W>(table, src_row * C + u);
        }
    }
}

template <WType W>
cudaError_t launch(float * out, const int32_t * tokens, const void * table, int64_t T, int64_t C,
                   cudaStream_t stream) {
    const bool vec = C % 4 == 0 && is_aligned(out, 16) && weight_vec_aligned(table, W);
    const int64_t units = vec ? C / 4 : C;
    const int threads = threads_for(units, 256);
    const int64_t bx = (units + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(T < kMaxGridY ? T : kMaxGridY));
    if (vec) embedding_kernel<W, true><<<grid, threads, 0, stream>>>(out, tokens, table, T, C);
    else embedding_kernel<W, false><<<grid, threads, 0, stream>>>(out, tokens, table, T, C);
    return cudaGetLastError();
}

}  // namespace

cudaError_t embedding(float * out, const int32_t * tokens, const void * table, WType wt, int64_t T, int64_t C,
                      cudaStream_t stream) {
    if (T < 0 || C < 0 || !wtype_valid(wt)) return cudaErrorInvalidValue;
    if (T == 0 || C == 0) return cudaSuccess;
    if (!out || !tokens || !table) return cudaErrorInvalidValue;
    switch (wt) {
        case WType::f32: return launch<WType::f32>(out, tokens, table, T, C, stream);
        case WType::f16: return launch<WType::f16>(out, tokens, table, T, C, stream);
        case WType::bf16: return launch<WType::bf16>(out, tokens, table, T, C, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace zt::kernels
