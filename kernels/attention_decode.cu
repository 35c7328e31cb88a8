// attention_decode.cu: grouped-query attention when every sequence has exactly one new token (decode).
//   out (n_seqs,H,D) f32, q (n_seqs,H,D) f32, k_cache / v_cache (S,M,KV,D) f32, seqs (n_seqs) on the device.
//   Sequence b's query is row seqs[b].row0 at position p = seqs[b].past_len; it sees cache positions lo..p of
//   slot seqs[b].slot (L = p + 1 - lo keys; lo = 0, or with a sliding window max(0, p - window + 1) when causal,
//   max(0, p - window) when not), kv head h / (H/KV), scale 1/sqrt(D), softmax in fp32 (expf, precise).
// Flash-decoding inside one block: a block owns (sequence, kv head, chunk of up to GC query heads of that kv
// head's group), so each K/V row it reads serves GC heads. Its 256 threads form "streams" of LPK lanes
// (LPK = lanes per key row; each lane holds 4*NV dims of the row); stream s takes keys s, s + n_streams, ...
// (two keys per step, so two rows are in flight per stream) with its own online softmax (m, l, acc). The
// streams' partial results are combined through shared memory in a fixed order, so no global scratch is
// needed and the result is deterministic. The number of "splits" is the number of streams (8 for D = 128).
// The launcher shrinks GC (more blocks, K/V re-read through L2) when there are few (sequence, kv head) pairs.
// A sequence with n_tokens == 0 is skipped (its row is left as it is); with n_tokens > 1 only its first new
// token (row row0, position past_len) is computed.
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"

namespace zt::kernels {
namespace {

constexpr int kThreads = 256;

// Loads the lane's 4 dims d0 .. d0+3 of a row (zeros past D). VEC: D % 4 == 0 and 16-byte aligned rows.
template <bool VEC>
__device__ __forceinline__ void load4(float (&r)[4], const float * __restrict__ row, int d0, int D) {
    if constexpr (VEC) {
        if (d0 < D) {
            const float4 v = __ldg(reinterpret_cast<const float4 *>(row + d0));
            r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
        } else {
            r[0] = r[1] = r[2] = r[3] = 0.0f;
        }
    } else {
#pragma unroll
        for (int c = 0; c < 4; ++c) r[c] = d0 + c < D ? __ldg(row + d0 + c) : 0.0f;
    }
}

// NV: float4 slots per lane (1: D <= 128, 2: D <= 256). GC: query heads per block. VEC: vector loads.
// grid.x = n_seqs * KV * n_chunks (chunk fastest, then kv head, then sequence); block = kThreads.
template <int NV, int GC, bool VEC>
__global__ void __launch_bounds__(kThreads, 2)
attention_decode_kernel(float * __restrict__ out, const float * __restrict__ q, const float * __restrict__ k_cache,
                        const float * __restrict__ v_cache, const AttnSeq * __restrict__ seqs, int H, int KV, int D,
                        int64_t M, int lpk_log2, int n_chunks, float scale, int causal, int window) {
    __shared__ float4 s_acc[kThreads * NV];   // per thread: its NV float4 accumulators of one head
    __shared__ float s_m[kThreads];           // per stream (n_streams <= kThreads)
    __shared__ float s_l[kThreads];
    __shared__ float s_f[kThreads];           // per stream: exp(m_s - max m)
    __shared__ float s_inv_l;
    __shared__ float4 s_q[GC * 64];           // the heads' queries (D <= 256)

    int bid = int(blockIdx.x);
    const int chunk = bid % n_chunks;
    bid /= n_chunks;
    const int kvh = bid % KV;
    const int b = bid / KV;
    const AttnSeq sq = seqs[b];
    if (sq.n_tokens < 1) return;   // block-uniform: nothing to compute for this sequence

    const int G = H / KV;
    const int h0 = kvh * G + chunk * GC;          // first query head of this block
    const int n_heads = min(GC, G - chunk * GC);  // >= 1 (n_chunks = ceil(G / GC))
    // keys lo .. past_len (the window's; all when window == 0)
    const int lo = window > 0 ? max(0, causal ? sq.past_len - window + 1 : sq.past_len - window) : 0;
    const int L = sq.past_len + 1 - lo;
    const int LPK = 1 << lpk_log2;                // lanes per key row, divides 32
    const int lane = int(threadIdx.x) & 31;
    const int sub = lane & (LPK - 1);             // lane within the stream
    const int stream = int(threadIdx.x) >> lpk_log2;
    const int n_streams = kThreads >> lpk_log2;
    const int warp_stream0 = (int(threadIdx.x) & ~31) >> lpk_log2;   // first stream of this warp
    const int64_t row_stride = int64_t(KV) * D;                       // between consecutive positions
    const float * kbase = k_cache + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;   // key lo + j at + j * row_stride
    const float * vbase = v_cache + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;
    const int64_t qrow = int64_t(sq.row0);

    // q of the block's heads, zero past D and for heads past n_heads: s_q[g * 64 + d / 4]
    for (int i = int(threadIdx.x); i < GC * 64; i += kThreads) {
        const int g = i >> 6, d = 4 * (i & 63);
        float r[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (g < n_heads) load4<VEC>(r, q + (qrow * H + h0 + g) * D, d, D);
        s_q[i] = make_float4(r[0], r[1], r[2], r[3]);
    }
    __syncthreads();

    float m[GC], l[GC], acc[GC][NV][4];
#pragma unroll
    for (int g = 0; g < GC; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int v = 0; v < NV; ++v)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[g][v][c] = 0.0f;
    }

    // Warp-uniform loop (the shuffles below need every lane): this warp's streams take keys
    // j0 = jw + (stream - warp_stream0) and j1 = j0 + n_streams, jw advancing by 2 * n_streams.
    for (int jw = warp_stream0; jw < L; jw += 2 * n_streams) {
        const int j0 = jw + (stream - warp_stream0);
        const int j1 = j0 + n_streams;
        const bool has0 = j0 < L, has1 = j1 < L;
        float k0[NV][4], k1[NV][4], v0[NV][4], v1[NV][4];
#pragma unroll
        for (int v = 0; v < NV; ++v) {
            const int d0 = 4 * (sub + LPK * v);
            if (has0) {
                load4<VEC>(k0[v], kbase + int64_t(j0) * row_stride, d0, D);
                load4<VEC>(v0[v], vbase + int64_t(j0) * row_stride, d0, D);
            } else {
#pragma unroll
                for (int c = 0; c < 4; ++c) k0[v][c] = v0[v][c] = 0.0f;
            }
            if (has1) {
                load4<VEC>(k1[v], kbase + int64_t(j1) * row_stride, d0, D);
                load4<VEC>(v1[v], vbase + int64_t(j1) * row_stride, d0, D);
            } else {
#pragma unroll
                for (int c = 0; c < 4; ++c) k1[v][c] = v1[v][c] = 0.0f;
            }
        }
#pragma unroll
        for (int g = 0; g < GC; ++g) {
            // the lane's dims: d = 4 * (sub + LPK * v) + c
            float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
            for (int v = 0; v < NV; ++v) {
                const float4 qv = s_q[g * 64 + sub + LPK * v];
                const float qa[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    d0 = fmaf(qa[c], k0[v][c], d0);
                    d1 = fmaf(qa[c], k1[v][c], d1);
                }
            }
            // butterfly over the stream's LPK lanes: every lane of the stream ends with the same sum
            for (int o = LPK >> 1; o > 0; o >>= 1) {
                d0 += __shfl_xor_sync(0xffffffffu, d0, o);
                d1 += __shfl_xor_sync(0xffffffffu, d1, o);
            }
            if (has0) {
                const float s0 = d0 * scale;
                const float s1 = has1 ? d1 * scale : -INFINITY;
                const float mn = fmaxf(m[g], fmaxf(s0, s1));   // finite: s0 is
                const float alpha = expf(m[g] - mn);            // 0 on the first key (m = -inf)
                const float p0 = expf(s0 - mn);
                const float p1 = expf(s1 - mn);                 // 0 when there is no second key
                l[g] = l[g] * alpha + p0 + p1;
#pragma unroll
                for (int v = 0; v < NV; ++v)
#pragma unroll
                    for (int c = 0; c < 4; ++c)
                        acc[g][v][c] = fmaf(p1, v1[v][c], fmaf(p0, v0[v][c], acc[g][v][c] * alpha));
                m[g] = mn;
            }
        }
    }

    // Combine the streams, one head at a time: out = sum_s f_s acc_s / sum_s f_s l_s, f_s = exp(m_s - max m).
#pragma unroll
    for (int g = 0; g < GC; ++g) {
        if (g >= n_heads) break;   // block-uniform
        __syncthreads();           // the previous head's readers are done with s_acc / s_f
#pragma unroll
        for (int v = 0; v < NV; ++v)
            s_acc[threadIdx.x * NV + v] = make_float4(acc[g][v][0], acc[g][v][1], acc[g][v][2], acc[g][v][3]);
        if (sub == 0) {
            s_m[stream] = m[g];
            s_l[stream] = l[g];
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            float mx = -INFINITY;
            for (int s = lane; s < n_streams; s += 32) mx = fmaxf(mx, s_m[s]);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            // mx is finite: stream 0 saw key lo
            float ls = 0.0f;
            for (int s = lane; s < n_streams; s += 32) {
                const float f = expf(s_m[s] - mx);   // 0 for a stream that saw no key (m = -inf, l = 0)
                s_f[s] = f;
                ls = fmaf(s_l[s], f, ls);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, o);
            if (lane == 0) s_inv_l = 1.0f / ls;
        }
        __syncthreads();
        const float inv_l = s_inv_l;
        const float * accf = reinterpret_cast<const float *>(s_acc);
        float * o = out + (qrow * H + h0 + g) * D;
        for (int d = int(threadIdx.x); d < D; d += kThreads) {
            // dim d lives in lane (d/4) % LPK of each stream, slot v = d / (4*LPK), component d % 4
            const int dsub = (d >> 2) & (LPK - 1);
            const int v = (d >> 2) >> lpk_log2;
            const int c = d & 3;
            float sum = 0.0f;
            for (int s = 0; s < n_streams; ++s) {
                const int t = (s << lpk_log2) + dsub;
                sum = fmaf(accf[(t * NV + v) * 4 + c], s_f[s], sum);
            }
            o[d] = sum * inv_l;
        }
    }
}

template <int NV, int GC>
void launch_gc(bool vec, dim3 grid, cudaStream_t stream, float * out, const float * q, const float * k,
               const float * v, const AttnSeq * seqs, int H, int KV, int D, int64_t M, int lpk_log2, int n_chunks,
               float scale, int causal, int window) {
    if (vec)
        attention_decode_kernel<NV, GC, true><<<grid, kThreads, 0, stream>>>(out, q, k, v, seqs, H, KV, D, M, lpk_log2,
                                                                            n_chunks, scale, causal, window);
    else
        attention_decode_kernel<NV, GC, false><<<grid, kThreads, 0, stream>>>(out, q, k, v, seqs, H, KV, D, M, lpk_log2,
                                                                             n_chunks, scale, causal, window);
}

bool aligned16(const void * p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

cudaError_t attention_decode(float * out, const float * q, const float * k_cache, const float * v_cache,
                             const AttnSeq * seqs, int n_seqs, int64_t H, int64_t KV, int64_t D, int64_t M,
                             bool causal, int32_t window, cudaStream_t stream) {
    if (n_seqs < 0 || H < 1 || KV < 1 || H % KV != 0 || H > INT_MAX || D < 1 || D > 256 || M < 1 || window < 0)
        return cudaErrorInvalidValue;
    if (n_seqs == 0) return cudaSuccess;
    if (!out || !q || !k_cache || !v_cache || !seqs) return cudaErrorInvalidValue;

    const int NV = D > 128 ? 2 : 1;
    const int64_t n4 = (D + 4 * NV - 1) / (4 * NV);   // float4 slots per lane group: 1 .. 32
    int lpk_log2 = 0;
    while ((int64_t(1) << lpk_log2) < n4) ++lpk_log2;  // LPK = next power of two >= n4 (<= 32)

    // Heads per block: the whole group (up to 8 / 4 at a time), fewer when the grid would be small.
    const int64_t G = H / KV;
    const int gc_max = NV == 1 ? 8 : 4;
    int gc = 1;
    while (gc < gc_max && gc < G) gc <<= 1;
    const int64_t pairs = int64_t(n_seqs) * KV;
    while (gc > 1 && pairs * ((G + gc - 1) / gc) < 256) gc >>= 1;
    const int64_t n_chunks = (G + gc - 1) / gc;
    const int64_t blocks = pairs * n_chunks;
    if (blocks > INT_MAX) return cudaErrorInvalidValue;

    const bool vec = D % 4 == 0 && aligned16(q) && aligned16(k_cache) && aligned16(v_cache);
    const float scale = float(1.0 / std::sqrt(double(D)));
    const dim3 grid{unsigned(blocks), 1u, 1u};
    const int h = int(H), kv = int(KV), d = int(D), nc = int(n_chunks), c = causal ? 1 : 0, w = int(window);
    if (NV == 1) {
        switch (gc) {
            case 1: launch_gc<1, 1>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
            case 2: launch_gc<1, 2>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
            case 4: launch_gc<1, 4>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
            default: launch_gc<1, 8>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
        }
    } else {
        switch (gc) {
            case 1: launch_gc<2, 1>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
            case 2: launch_gc<2, 2>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
            default: launch_gc<2, 4>(vec, grid, stream, out, q, k_cache, v_cache, seqs, h, kv, d, M, lpk_log2, nc, scale, c, w); break;
        }
    }
    return cudaGetLastError();
}

}  // namespace zt::kernels
