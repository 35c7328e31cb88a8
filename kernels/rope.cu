// rope: rotary embedding in place on x (T,H,D), HF rotate_half; positions (T) i32, inv_freq f32 (row t's
// frequencies at inv_freq + t * freq_stride: freq_stride 0 = one (D/2) set for all rows, D/2 = a (T,D/2) table),
// D even. For i < D/2: a = float(positions[t]) * f[i] (fp32), c = cos a * scaling, s = sin a * scaling, cos and
// sin rounded to fp32 from the double functions exactly as the CPU backend does (float(std::cos(double(a)))), then
//   x[i] <- x[i]*c - x[i+D/2]*s,   x[i+D/2] <- x[i+D/2]*c + x[i]*s,
// with every product and sum rounded on its own (no FMA contraction), as the CPU code computes them.
// Launch: one block per token t (striding by gridDim.x); threadIdx.x walks i (c and s computed once per (t, i)
// per thread, coalesced along i), threadIdx.y walks the heads h: blockDim = (min(256, D/2 rounded up to 32),
// min(H, 256 / blockDim.x)).
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

__global__ void rope_kernel(float * __restrict__ x, const int32_t * __restrict__ positions,
                            const float * __restrict__ inv_freq, int64_t freq_stride, float scaling, int64_t T,
                            int64_t H, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
        const float p = float(positions[t]);
        const float * f = inv_freq + t * freq_stride;
        float * xt = x + t * H * D;
        for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
            const float a = __fmul_rn(p, f[i]);
            double sd, cd;
            sincos(double(a), &sd, &cd);
            const float c = __fmul_rn(float(cd), scaling), s = __fmul_rn(float(sd), scaling);
            for (int64_t h = threadIdx.y; h < H; h += blockDim.y) {
                float * v = xt + h * D;
                const float x0 = v[i], x1 = v[i + half];
                v[i] = __fadd_rn(__fmul_rn(x0, c), __fmul_rn(-x1, s));
                v[i + half] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
            }
        }
    }
}

}  // namespace

cudaError_t rope(float * x, const int32_t * positions, const float * inv_freq, int64_t freq_stride, float scaling,
                 int64_t T, int64_t H, int64_t D, cudaStream_t stream) {
    if (T < 0 || H < 0 || D < 0 || D % 2 != 0 || (freq_stride != 0 && freq_stride != D / 2)) return cudaErrorInvalidValue;
    if (T == 0 || H == 0 || D == 0) return cudaSuccess;
    if (!x || !positions || !inv_freq) return cudaErrorInvalidValue;
    const int bx = threads_for(D / 2, 256);
    const int64_t by_max = 256 / bx;   // >= 1
    const dim3 block(unsigned(bx), unsigned(H < by_max ? H : by_max));
    const unsigned blocks = unsigned(T < kMaxGridX ? T : kMaxGridX);
    rope_kernel<<<blocks, block, 0, stream>>>(x, positions, inv_freq, freq_stride, scaling, T, H, D);
    return cudaGetLastError();
}

}  // namespace zt::kernels
