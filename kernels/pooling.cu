// pooling: one vector per sequence b < B, out (B,C) f32, from x (T,C) f32 over that sequence's rows
// seqs[b].row0 .. row0 + n_tokens - 1 (seqs (B) on the device):
//   pool_mean: the sum of the rows in row order in fp32, times 1/n_tokens (bit for bit the CPU backend's
//              acc += x[r][c] from acc = 0, then acc * (1.0f / float(n_tokens)));
//   pool_last: the last row.
// A sequence with n_tokens <= 0 (the CPU backend rejects it) gets a row of zeros.
// Launch: 2-D grid, blockIdx.y = sequences b, striding by gridDim.y (<= 65535) so any B works; blockIdx.x = a chunk
// of columns. pool_mean: one column per thread, 64 threads per block, the rows walked in order with 8 loads in
// flight. pool_last: `threads` column units per block, a unit = 4 floats (16-byte copies) when C % 4 == 0 and the
// pointers allow, else 1 float.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kMeanThreads = 64;
constexpr int kMeanBatch = 8;   // rows loaded before they are added (in order)

__global__ void pool_mean_kernel(float * __restrict__ out, const float * __restrict__ x,
                                 const AttnSeq * __restrict__ seqs, int64_t B, int64_t C) {
    const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
        const int64_t n = seqs[b].n_tokens;
        if (n <= 0) {
            out[b * C + c] = 0.0f;
            continue;
        }
        const float * col = x + int64_t(seqs[b].row0) * C + c;   // element (row0 + r, c) at col[r * C]
        float acc = 0.0f;
        int64_t r = 0;
        for (; r + kMeanBatch <= n; r += kMeanBatch) {
            float v[kMeanBatch];
#pragma unroll
            for (int k = 0; k < kMeanBatch; ++k) v[k] = col[(r + k) * C];
#pragma unroll
            for (int k = 0; k < kMeanBatch; ++k) acc = __fadd_rn(acc, v[k]);
        }
        for (; r < n; ++r) acc = __fadd_rn(acc, col[r * C]);
        out[b * C + c] = __fmul_rn(acc, __fdiv_rn(1.0f, float(n)));
    }
}

template <bool VEC>
__global__ void pool_last_kernel(float * __restrict__ out, const float * __restrict__ x,
                                 const AttnSeq * __restrict__ seqs, int64_t B, int64_t C) {
    const int64_t units = VEC ? C / 4 : C;
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units) return;
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
        const int32_t n = seqs[b].n_tokens;
        const int64_t last = int64_t(seqs[b].row0) + n - 1;
        if constexpr (VEC) {
            const float4 v = n > 0 ? reinterpret_cast<const float4 *>(x)[last * units + u] : make_float4(0, 0, 0, 0);
            reinterpret_cast<float4 *>(out)[b * units + u] = v;
        } else {
            out[b * C + u] = n > 0 ? x[last * C + u] : 0.0f;
        }
    }
}

bool bad_args(float * out, const float * x, const AttnSeq * seqs, int64_t B, int64_t C) {
    return B < 0 || C < 0 || (B > 0 && C > 0 && (!out || !x || !seqs));
}

}  // namespace

cudaError_t pool_mean(float * out, const float * x, const AttnSeq * seqs, int64_t B, int64_t C,
                      cudaStream_t stream) {
    if (bad_args(out, x, seqs, B, C)) return cudaErrorInvalidValue;
    if (B == 0 || C == 0) return cudaSuccess;
    const int threads = threads_for(C, kMeanThreads);
    const int64_t bx = (C + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(B < kMaxGridY ? B : kMaxGridY));
    pool_mean_kernel<<<grid, threads, 0, stream>>>(out, x, seqs, B, C);
    return cudaGetLastError();
}

cudaError_t pool_last(float * out, const float * x, const AttnSeq * seqs, int64_t B, int64_t C,
                      cudaStream_t stream) {
    if (bad_args(out, x, seqs, B, C)) return cudaErrorInvalidValue;
    if (B == 0 || C == 0) return cudaSuccess;
    const bool vec = C % 4 == 0 && is_aligned(out, 16) && is_aligned(x, 16);
    const int64_t units = vec ? C / 4 : C;
    const int threads = threads_for(units, 256);
    const int64_t bx = (units + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(B < kMaxGridY ? B : kMaxGridY));
    if (vec) pool_last_kernel<true><<<grid, threads, 0, stream>>>(out, x, seqs, B, C);
    else pool_last_kernel<false><<<grid, threads, 0, stream>>>(out, x, seqs, B, C);
    return cudaGetLastError();
}

}  // namespace zt::kernels
