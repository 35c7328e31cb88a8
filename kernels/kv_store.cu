// kv_store: k_cache[dest_row[t]] = k[t] and v_cache[dest_row[t]] = v[t] for t < T; k, v (T,KVD) f32, the caches
// (S*M, KVD) f32 (the (S,M,KV,D) cache of one layer seen as rows of KVD = KV*D), dest_row (T) i32 =
// slot * M + past_len + i of token t (built by the backend). A negative dest_row[t] writes nothing.
// Launch: 2-D grid, blockIdx.x = a chunk of `threads` column units of a row (a unit is 4 floats, one 16-byte
// load/store, when KVD % 4 == 0 and the pointers allow; else 1 float), blockIdx.y = token rows t, striding by
// gridDim.y (<= 65535) so any T works.
#include "kernels/kernels.h"
#include "kernels/weight_load.cuh"

namespace zt::kernels {

namespace {

template <bool VEC>
__global__ void kv_store_kernel(float * __restrict__ k_cache, float * __restrict__ v_cache,
                                const float * __restrict__ k, const float * __restrict__ v,
                                const int32_t * __restrict__ dest_row, int64_t T, int64_t KVD) {
    const int64_t units = VEC ? KVD / 4 : KVD;
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units) return;
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        const int64_t dst = dest_row[t];
        if (dst < 0) continue;
        const int64_t d = dst * units + u, s = t * units + u;   // in units
        if constexpr (VEC) {
            reinterpret_cast<float4 *>(k_cache)[d] = reinterpret_cast<const float4 *>(k)[s];
            reinterpret_cast<float4 *>(v_cache)[d] = reinterpret_cast<const float4 *>(v)[s];
        } else {
            k_cache[d] = k[s];
            v_cache[d] = v[s];
        }
    }
}

}  // namespace

cudaError_t kv_store(float * k_cache, float * v_cache, const float * k, const float * v, const int32_t * dest_row,
                     int64_t T, int64_t KVD, cudaStream_t stream) {
    if (T < 0 || KVD < 0) return cudaErrorInvalidValue;
    if (T == 0 || KVD == 0) return cudaSuccess;
    if (!k_cache || !v_cache || !k || !v || !dest_row) return cudaErrorInvalidValue;
    const bool vec = KVD % 4 == 0 && is_aligned(k_cache, 16) && is_aligned(v_cache, 16) && is_aligned(k, 16) &&
                     is_aligned(v, 16);
    const int64_t units = vec ? KVD / 4 : KVD;
    const int threads = threads_for(units, 256);
    const int64_t bx = (units + threads - 1) / threads;
    if (bx > kMaxGridX) return cudaErrorInvalidValue;
    const dim3 grid(unsigned(bx), unsigned(T < kMaxGridY ? T : kMaxGridY));
    if (vec) kv_store_kernel<true><<<grid, threads, 0, stream>>>(k_cache, v_cache, k, v, dest_row, T, KVD);
    else kv_store_kernel<false><<<grid, threads, 0, stream>>>(k_cache, v_cache, k, v, dest_row, T, KVD);
    return cudaGetLastError();
}

}  // namespace zt::kernels
