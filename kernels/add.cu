// add:      out (n) = a (n) + b (n), f32 elementwise; out may alias a or b (every element is read, then written,
//           by one thread).
// add_bias: out (R,N) += bias (N) W widened to fp32 (the bias of a matmul, added after the GEMM).
// Launch: add: 1-D grid-stride, 256 threads per block, one unit per thread per step: 4 elements (16-byte loads and
// stores) when the pointers are 16-byte aligned, then the n % 4 tail elements by the grid's first threads; else
// 1 element. add_bias: 2-D grid, blockIdx.x = a chunk of `threads` column units (4 columns when N % 4 == 0 and
// the pointers allow, else 1; each thread loads its bias unit once), blockIdx.y = rows, striding by gridDim.y
// (<= 65535) so any R works.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

constexpr int kThreads = 256;

template <bool VEC>
__global__ void add_kernel(float * out, const float * a, const float * b, int64_t n) {
    const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    if constexpr (VEC) {
        const int64_t n4 = n / 4;
        for (int64_t j = i0; j < n4; j += stride) {
            const float4 x = reinterpret_cast<const float4 *>(a)[j];
            const float4 y = reinterpret_cast<const float4 *>(b)[j];
            reinterpret_cast<float4 *>(out)[j] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
        }
        const int64_t i = n4 * 4 + i0;   // the tail: at most 3 elements
        if (i < n) out[i] = a[i] + b[i];
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = a[i] + b[i];
    }
}

template <WType W, bool VEC>
__global__ void add_bias_kernel(float * __restrict__ out, const void * __restrict__ bias, int64_t R, int64_t N) {
    const int64_t units = VEC ? N / 4 : N;
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units) return;
    if constexpr (VEC) {
        const float4 bv = load_weight4<W>(bias, u);
        float4 * o4 = reinterpret_cast<float4 *>(out);
        for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
            float4 o = o4[r * units + u];
            o.x += bv.x;
            o.y += bv.y;
            o.z += bv.z;
            o.w += bv.w;
            o4[r * units + u] = o;
        }
    } else {
        const float bv = load_weight<W>(bias, u);
        for (int64_t r = blockIdx.y; r < R; r += gridDim.y) out[r * N + u] += bv;
    }
}

template <WType W>
cudaError_t launch_add_bias(float * out, const void * bias, int64_t R, int64_t N, cudaStream_t stream) {
    const bool vec = N % 4 == 0 && is_aligned(out, 16) && weight_vec_aligned(bias, W);
    const int64_t units = vec ? N / 4 : N;
    const int threads = threads_for(units, kThreads);
    const int64_t bx = (units + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(R < kMaxGridY ? R : kMaxGridY));
    if (vec) add_bias_kernel<W, true><<<grid, threads, 0, stream>>>(out, bias, R, N);
    else add_bias_kernel<W, false><<<grid, threads, 0, stream>>>(out, bias, R, N);
    return cudaGetLastError();
}

}  // namespace

cudaError_t add(float * out, const float * a, const float * b, int64_t n, cudaStream_t stream) {
    if (n < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!out || !a || !b) return cudaErrorInvalidValue;
    const bool vec = is_aligned(out, 16) && is_aligned(a, 16) && is_aligned(b, 16);
    const int64_t units = vec ? (n + 3) / 4 : n;
    int64_t blocks = (units + kThreads - 1) / kThreads;
    if (blocks > kMaxGridX) blocks = kMaxGridX;
    if (vec) add_kernel<true><<<unsigned(blocks), kThreads, 0, stream>>>(out, a, b, n);
    else add_kernel<false><<<unsigned(blocks), kThreads, 0, stream>>>(out, a, b, n);
    return cudaGetLastError();
}

cudaError_t add_bias(float * out, const void * bias, WType wt, int64_t R, int64_t N, cudaStream_t stream) {
    if (R < 0 || N < 0 || !wtype_valid(wt)) return cudaErrorInvalidValue;
    if (R == 0 || N == 0) return cudaSuccess;
    if (!out || !bias) return cudaErrorInvalidValue;
    switch (wt) {
        case WType::f32: return launch_add_bias<WType::f32>(out, bias, R, N, stream);
        case WType::f16: return launch_add_bias<WType::f16>(out, bias, R, N, stream);
        case WType::bf16: return launch_add_bias<WType::bf16>(out, bias, R, N, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace zt::kernels
