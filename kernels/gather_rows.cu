// gather_rows: out (R,C) f32 = x (T,C) f32 row rows[r]; rows (R) i32 in [0, T) (checked on the host before).
// Launch: 2-D grid, blockIdx.x = a chunk of `threads` column units of a row (a unit is 4 floats, one 16-byte
// load/store, when C % 4 == 0 and the pointers allow; else 1 float), blockIdx.y = output rows r, striding by
// gridDim.y (<= 65535) so any R works.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

template <bool VEC>
__global__ void gather_rows_kernel(float * __restrict__ out, const float * __restrict__ x,
                                   const int32_t * __restrict__ rows, int64_t R, int64_t C) {
    const int64_t units = VEC ? C / 4 : C;
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units) return;
    for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
        const int64_t d = r * units + u, s = int64_t(rows[r]) * units + u;   // in units
        if constexpr (VEC) reinterpret_cast<float4 *>(out)[d] = reinterpret_cast<const float4 *>(x)[s];
        else out[d] = x[s];
    }
}

}  // namespace

cudaError_t gather_rows(float * out, const float * x, const int32_t * rows, int64_t R, int64_t C,
                        cudaStream_t stream) {
    if (R < 0 || C < 0) return cudaErrorInvalidValue;
    if (R == 0 || C == 0) return cudaSuccess;
    if (!out || !x || !rows) return cudaErrorInvalidValue;
    const bool vec = C % 4 == 0 && is_aligned(out, 16) && is_aligned(x, 16);
    const int64_t units = vec ? C / 4 : C;
    const int threads = threads_for(units, 256);
    const int64_t bx = (units + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(R < kMaxGridY ? R : kMaxGridY));
    if (vec) gather_rows_kernel<true><<<grid, threads, 0, stream>>>(out, x, rows, R, C);
    else gather_rows_kernel<false><<<grid, threads, 0, stream>>>(out, x, rows, R, C);
    return cudaGetLastError();
}

}  // namespace zt::kernels
