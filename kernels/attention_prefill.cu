// attention_prefill.cu: grouped-query attention of every sequence's new queries over its cache slot, tiled
// FlashAttention-style (fp32 on CUDA cores, online softmax, memory O(length)).
//   out (T,H,D) f32, q (T,H,D) f32, k_cache / v_cache (S,M,KV,D) f32 (after kv_store), seqs (n_seqs) on the device.
//   Row t = row0 + i of sequence b is at position p = past_len + i of slot `slot`; it sees cache positions 0..p
//   (causal) or 0..past_len + n_tokens - 1 (non-causal) of kv head h / (H/KV), narrowed by a sliding window > 0 to
//   p - window + 1..p (causal) or to |p - j| <= window (non-causal); scale 1/sqrt(D); softmax in fp32 with expf
//   (precise). Rows of out that no sequence covers are set to 0 (as the CPU backend does).
// Work: block (h, y) = query head h (fastest, so the heads of a GQA group read the same K/V through L2) and
// work item y (grid-stride over y): query tile y of the list of all (sequence, 64-row query tile) pairs, built
// in the kernel by a block-wide prefix over seqs[].n_tokens (each sequence's tiles last-first, the costliest
// first when causal), plus the zeroing of uncovered rows in row chunk y (rows 64y .. 64y+63).
// Per tile: 256 threads = 16 x 16 (ty, tx). Q tile (64 x D) in shared memory; K / V tiles of BK keys are
// copied in with cp.async (zero-filled past the end), the V copy overlapping the score step. Thread (ty, tx)
// owns query rows ty + 16i (i < 4): scores for keys tx + 16j (j < BK/16), then output dims 4tx + 64c .. +3
// (c < NC4 = ceil(D/64)). Row max / sum across the 16 tx lanes by shuffles (the lanes of one half-warp).
// A tile's key loop runs over the keys any of its rows sees (from the first row's window start to the last row's
// end); a row none of whose keys is in a key tile yet keeps max -inf and contributes nothing for that tile.
// Shared memory (floats): Q 64*KS + max(BK*KS, 64*PS) (K tile, then the probabilities P) + BK*64*NC4 (V tile),
// KS = 4*odd(ceil(D/4)) (conflict-free 16-byte reads), PS = BK + 16. D = 128: 98 KB (2 blocks/SM);
// D = 256 (BK = 32): 130 KB (fits the 163 KB of sm_80 too).
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"

namespace zt::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kBQ = 64;   // query rows per tile

__device__ __forceinline__ void cp_async16(float * dst, const float * src, bool valid) {
    const unsigned d = unsigned(__cvta_generic_to_shared(dst));
    const int n = valid ? 16 : 0;   // 0: nothing is read, the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async4(float * dst, const float * src, bool valid) {
    const unsigned d = unsigned(__cvta_generic_to_shared(dst));
    const int n = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__host__ __device__ constexpr int kstride(int D) { return 4 * ((((D + 3) / 4)) | 1); }
__host__ __device__ constexpr int pstride(int BK) { return BK + 16; }
__host__ __device__ constexpr int block_for(int NC4) { return NC4 >= 3 ? 32 : 64; }
// shared memory floats of the kernel for D (NC4 = ceil(D/64), BK = block_for(NC4))
__host__ __device__ constexpr int smem_floats(int D, int NC4, int BK) {
    return kBQ * kstride(D) + (BK * kstride(D) > kBQ * pstride(BK) ? BK * kstride(D) : kBQ * pstride(BK)) +
           BK * 64 * NC4;
}

// rows [row0, row0 + BK) of a cache tile (keys kv0 + r, r < BK; zeros from key kv_len on and past D) into
// dst (row stride `stride` floats); src row j at base + j * row_stride.
template <int BK, bool VEC>
__device__ __forceinline__ void load_tile_async(float * dst, int stride, const float * base, int64_t row_stride,
                                                int kv0, int kv_len, int D) {
    const int n4 = (D + 3) / 4;   // 16-byte chunks per row
    for (int i = int(threadIdx.x); i < BK * n4; i += kThreads) {
        const int r = i / n4, c4 = i - r * n4;
        const int j = kv0 + r;
        const bool valid = j < kv_len;
        const float * src = base + (valid ? int64_t(j) * row_stride + 4 * c4 : 0);
        float * d = dst + r * stride + 4 * c4;
        if constexpr (VEC) {
            cp_async16(d, src, valid);
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const bool ok = valid && 4 * c4 + e < D;
                cp_async4(d + e, ok ? src + e : base, ok);
            }
        }
    }
}

// Inclusive block-wide prefix sum of one value per thread; *total = the sum over the block. Ends synchronized.
__device__ __forceinline__ long long block_scan(long long v, long long * s_warp, long long * total) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const long long n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    if (lane == 31) s_warp[warp] = v;
    __syncthreads();
    long long before = 0, all = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
        if (w < warp) before += s_warp[w];
        all += s_warp[w];
    }
    __syncthreads();   // s_warp may be rewritten by the next call
    *total = all;
    return before + v;
}

// NC4 = ceil(D / 64) in 1..4 (output float4s per thread and row), BK keys per tile, VEC: D % 4 == 0 and q,
// caches, out 16-byte aligned (16-byte global accesses).
template <int NC4, int BK, bool VEC>
__global__ void __launch_bounds__(kThreads, NC4 <= 2 ? 2 : 1)
attention_prefill_kernel(float * __restrict__ out, const float * __restrict__ q, const float * __restrict__ k_cache,
                         const float * __restrict__ v_cache, const AttnSeq * __restrict__ seqs, int n_seqs,
                         int64_t T, int H, int KV, int D, int64_t M, int causal, int window, float scale) {
    constexpr int KJ = BK / 16;        // keys per thread in the score step
    constexpr int VS = 64 * NC4;       // V tile row stride
    constexpr int PS = pstride(BK);    // P row stride
    extern __shared__ float4 smem4[];
    float * const Qs = reinterpret_cast<float *>(smem4);
    const int KS = kstride(D);
    const int DP4 = (D + 3) & ~3;      // D rounded up to 4: the score loop's length
    float * const Ks = Qs + kBQ * KS;  // K tile, then (aliased) P
    float * const Ps = Ks;
    float * const Vs = Ks + (BK * KS > kBQ * PS ? BK * KS : kBQ * PS);

    __shared__ long long s_warp[kThreads / 32];
    __shared__ int s_item[2];          // (sequence, tile of that sequence) of work item y, or -1
    __shared__ unsigned s_cov[2];      // rows of chunk y some sequence covers (bit r: row 64y + r)

    const int tid = int(threadIdx.x);
    const int tx = tid & 15, ty = tid >> 4;
    const int h = int(blockIdx.x);
    const int kvh = h / (H / KV);
    const int64_t n_chunks = (T + kBQ - 1) / kBQ;
    const int64_t row_stride = int64_t(KV) * D;

    // V columns past DP4 (read by threads whose output dims are past D) stay zero: the copies never touch them.
    for (int i = tid; i < BK * VS; i += kThreads) Vs[i] = 0.0f;

    for (long long y = blockIdx.y;; y += gridDim.y) {
        // ---- map y to (sequence, tile) and mark the rows of chunk y that are covered ----
        __syncthreads();   // the previous item is done with the shared state
        if (tid == 0) { s_item[0] = -1; s_item[1] = 0; }
        if (tid < 2) s_cov[tid] = 0u;
        __syncthreads();
        const long long chunk_lo = y * kBQ;
        long long base = 0;
        for (int c0 = 0; c0 < n_seqs; c0 += kThreads) {
            const int i = c0 + tid;
            long long nt = 0;
            if (i < n_seqs) {
                const AttnSeq sq = seqs[i];
                if (sq.n_tokens > 0) {
                    nt = (sq.n_tokens + kBQ - 1) / kBQ;
                    const long long a = sq.row0 > chunk_lo ? sq.row0 : chunk_lo;
                    const long long e0 = (long long)(sq.row0) + sq.n_tokens, e1 = chunk_lo + kBQ;
                    const long long e = e0 < e1 ? e0 : e1;
                    for (int w = 0; w < 2; ++w) {   // bits [a, e) - chunk_lo, in 32-bit words
                        const long long lo = a > chunk_lo + 32 * w ? a : chunk_lo + 32 * w;
                        const long long hi = e < chunk_lo + 32 * w + 32 ? e : chunk_lo + 32 * w + 32;
                        if (lo < hi) {
                            const int s = int(lo - chunk_lo - 32 * w), n = int(hi - lo);
                            const unsigned bits = unsigned(((1ull << n) - 1ull) << s);
                            atomicOr(&s_cov[w], bits);
                        }
                    }
                }
            }
            long long sum = 0;
            const long long incl = block_scan(nt, s_warp, &sum);
            if (nt > 0 && y >= base + incl - nt && y < base + incl) {
                s_item[0] = i;
                s_item[1] = int(y - (base + incl - nt));
            }
            base += sum;
        }
        __syncthreads();
        const long long n_tiles = base;
        if (y >= n_tiles && y >= n_chunks) break;   // block-uniform

        // ---- rows of chunk y that no sequence covers: out = 0 ----
        if (y < n_chunks) {
            const int rows = int(T - chunk_lo < kBQ ? T - chunk_lo : kBQ);
            const unsigned long long need = rows == 64 ? ~0ull : ((1ull << rows) - 1ull);
            const unsigned long long cov = (unsigned long long)(s_cov[1]) << 32 | s_cov[0];
            if ((cov & need) != need) {
                for (int i = tid; i < rows * D; i += kThreads) {
                    const int r = i / D, d = i - r * D;
                    if (!((cov >> r) & 1ull)) out[((chunk_lo + r) * H + h) * D + d] = 0.0f;
                }
            }
        }
        if (y >= n_tiles) continue;

        // ---- the query tile ----
        const AttnSeq sq = seqs[s_item[0]];
        const int n = sq.n_tokens, past = sq.past_len;
        const int q0 = ((n + kBQ - 1) / kBQ - 1 - s_item[1]) * kBQ;   // last tile first
        const int q_end = min(q0 + kBQ, n);
        // keys [lo, hi) of the query at position p (zt::attention_key_range); lo and hi grow with p
        auto key_lo = [&](int p) { return window > 0 ? max(0, causal ? p - window + 1 : p - window) : 0; };
        auto key_hi = [&](int p) { return causal ? p + 1 : (window > 0 ? min(past + n, p + window + 1) : past + n); };
        const int kv_lo = key_lo(past + q0), kv_len = key_hi(past + q_end - 1);   // keys any row of the tile sees
        const float * kbase = k_cache + (int64_t(sq.slot) * M * KV + kvh) * D;
        const float * vbase = v_cache + (int64_t(sq.slot) * M * KV + kvh) * D;

        {   // Q tile -> Qs (rows past n and dims past D are zero)
            const int n4 = DP4 / 4;
            for (int i = tid; i < kBQ * n4; i += kThreads) {
                const int r = i / n4, c4 = i - r * n4, d = 4 * c4;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (q0 + r < n) {
                    const float * src = q + ((int64_t(sq.row0) + q0 + r) * H + h) * D + d;
                    if constexpr (VEC) {
                        v = __ldg(reinterpret_cast<const float4 *>(src));
                    } else {
                        v.x = __ldg(src);
                        if (d + 1 < D) v.y = __ldg(src + 1);
                        if (d + 2 < D) v.z = __ldg(src + 2);
                        if (d + 3 < D) v.w = __ldg(src + 3);
                    }
                }
                *reinterpret_cast<float4 *>(Qs + r * KS + d) = v;
            }
        }

        // keys row i of this thread sees: [k0[i], nk[i]); rows past n see key kv_lo only (their result is dropped)
        int k0[4], nk[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = q0 + ty + 16 * i;
            k0[i] = r < n ? key_lo(past + r) : kv_lo;
            nk[i] = r < n ? key_hi(past + r) : kv_lo + 1;
        }
        float m[4], l[4], o[4][NC4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            m[i] = -INFINITY;
            l[i] = 0.0f;   // this thread's share of the row sum (its keys), summed over tx at the end
#pragma unroll
            for (int c = 0; c < NC4; ++c)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[i][c][e] = 0.0f;
        }

        for (int kv0 = kv_lo; kv0 < kv_len; kv0 += BK) {
            __syncthreads();   // previous PV step done with Ps / Vs (and Qs stores done, first time)
            load_tile_async<BK, VEC>(Ks, KS, kbase, row_stride, kv0, kv_len, D);
            cp_async_commit();
            load_tile_async<BK, VEC>(Vs, VS, vbase, row_stride, kv0, kv_len, D);
            cp_async_commit();
            cp_async_wait<1>();   // this thread's K copies landed
            __syncthreads();      // everyone's

            // ---- scores s[i][j] = q[ty + 16i] . k[tx + 16j] ----
            float s[4][KJ];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < KJ; ++j) s[i][j] = 0.0f;
            const float * qp = Qs + ty * KS;
            const float * kp = Ks + tx * KS;
#pragma unroll 1
            for (int d = 0; d < DP4; d += 4) {
                float4 qv[4], kv[KJ];
#pragma unroll
                for (int i = 0; i < 4; ++i) qv[i] = *reinterpret_cast<const float4 *>(qp + 16 * i * KS + d);
#pragma unroll
                for (int j = 0; j < KJ; ++j) kv[j] = *reinterpret_cast<const float4 *>(kp + 16 * j * KS + d);
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < KJ; ++j) {
                        s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
                        s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
                        s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
                        s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
                    }
            }

            // ---- online softmax: row max over the 16 tx lanes, rescale, probabilities ----
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float mx = -INFINITY;
#pragma unroll
                for (int j = 0; j < KJ; ++j) {
                    const int key = kv0 + tx + 16 * j;
                    s[i][j] = key >= k0[i] && key < nk[i] ? s[i][j] * scale : -INFINITY;
                    mx = fmaxf(mx, s[i][j]);
                }
#pragma unroll
                for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
                // -inf only while the row's window has not begun (a sliding window): then subtract 0 instead, so
                // alpha and the probabilities are 0 (not NaN) and the row stays empty
                const float mn = fmaxf(m[i], mx);
                const float ms = mn == -INFINITY ? 0.0f : mn;
                const float alpha = expf(m[i] - ms);   // 0 on the row's first keys (m = -inf)
                m[i] = mn;
                float ps = 0.0f;
#pragma unroll
                for (int j = 0; j < KJ; ++j) {
                    s[i][j] = expf(s[i][j] - ms);      // 0 for masked keys
                    ps += s[i][j];
                }
                l[i] = l[i] * alpha + ps;
#pragma unroll
                for (int c = 0; c < NC4; ++c)
#pragma unroll
                    for (int e = 0; e < 4; ++e) o[i][c][e] *= alpha;
            }
            __syncthreads();   // everyone is done reading Ks: P overwrites it
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < KJ; ++j) Ps[(ty + 16 * i) * PS + tx + 16 * j] = s[i][j];
            cp_async_wait<0>();   // this thread's V copies landed
            __syncthreads();      // P and V visible to all

            // ---- o[i] += sum_k P[ty + 16i][k] * V[k][4tx + 64c .. +3] ----
            const float * pp = Ps + ty * PS;
            const float * vp = Vs + 4 * tx;
#pragma unroll 2
            for (int k = 0; k < BK; k += 4) {
                float4 p4[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) p4[i] = *reinterpret_cast<const float4 *>(pp + 16 * i * PS + k);
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    float4 vv[NC4];
#pragma unroll
                    for (int c = 0; c < NC4; ++c) vv[c] = *reinterpret_cast<const float4 *>(vp + (k + u) * VS + 64 * c);
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const float p = u == 0 ? p4[i].x : u == 1 ? p4[i].y : u == 2 ? p4[i].z : p4[i].w;
#pragma unroll
                        for (int c = 0; c < NC4; ++c) {
                            o[i][c][0] = fmaf(p, vv[c].x, o[i][c][0]);
                            o[i][c][1] = fmaf(p, vv[c].y, o[i][c][1]);
                            o[i][c][2] = fmaf(p, vv[c].z, o[i][c][2]);
                            o[i][c][3] = fmaf(p, vv[c].w, o[i][c][3]);
                        }
                    }
                }
            }
        }

        // ---- out = o / l ----
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float ls = l[i];
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, off);
            const int r = q0 + ty + 16 * i;
            if (r >= n) continue;
            const float inv = 1.0f / ls;
            float * dst = out + ((int64_t(sq.row0) + r) * H + h) * D;
#pragma unroll
            for (int c = 0; c < NC4; ++c) {
                const int d = 4 * tx + 64 * c;
                if constexpr (VEC) {
                    if (d < D)
                        *reinterpret_cast<float4 *>(dst + d) =
                            make_float4(o[i][c][0] * inv, o[i][c][1] * inv, o[i][c][2] * inv, o[i][c][3] * inv);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        if (d + e < D) dst[d + e] = o[i][c][e] * inv;
                }
            }
        }
    }
}

template <int NC4>
cudaError_t launch_nc(bool vec, dim3 grid, cudaStream_t stream, float * out, const float * q, const float * k,
                      const float * v, const AttnSeq * seqs, int n_seqs, int64_t T, int H, int KV, int D, int64_t M,
                      int causal, int window, float scale) {
    constexpr int BK = block_for(NC4);
    const size_t bytes = size_t(smem_floats(D, NC4, BK)) * sizeof(float);
    auto kernel = vec ? attention_prefill_kernel<NC4, BK, true> : attention_prefill_kernel<NC4, BK, false>;
    if (bytes > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
        if (e != cudaSuccess) return e;
    }
    kernel<<<grid, kThreads, bytes, stream>>>(out, q, k, v, seqs, n_seqs, T, H, KV, D, M, causal, window, scale);
    return cudaGetLastError();
}

bool aligned16(const void * p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

cudaError_t attention_prefill(float * out, const float * q, const float * k_cache, const float * v_cache,
                              const AttnSeq * seqs, int n_seqs, int64_t T, int64_t H, int64_t KV, int64_t D,
                              int64_t M, bool causal, int32_t window, cudaStream_t stream) {
    if (T < 0 || n_seqs < 0 || H < 1 || KV < 1 || H % KV != 0 || H > INT_MAX || D < 1 || D > 256 || M < 1 || window < 0)
        return cudaErrorInvalidValue;
    if (T == 0) return cudaSuccess;
    if (!out || !q || (n_seqs > 0 && (!k_cache || !v_cache || !seqs))) return cudaErrorInvalidValue;

    // work items: every (sequence, query tile) and every 64-row chunk (zeroing uncovered rows); with disjoint
    // row ranges there are at most ceil(T/64) + n_seqs tiles; the kernel loops over y if there are more.
    const int64_t items = (T + kBQ - 1) / kBQ + n_seqs;
    const dim3 grid{unsigned(H), unsigned(items < 65535 ? items : 65535), 1u};
    const bool vec = D % 4 == 0 && aligned16(out) && aligned16(q) && aligned16(k_cache) && aligned16(v_cache);
    const float scale = float(1.0 / std::sqrt(double(D)));
    const int h = int(H), kv = int(KV), d = int(D), c = causal ? 1 : 0, w = int(window);
    switch ((D + 63) / 64) {
        case 1: return launch_nc<1>(vec, grid, stream, out, q, k_cache, v_cache, seqs, n_seqs, T, h, kv, d, M, c, w, scale);
        case 2: return launch_nc<2>(vec, grid, stream, out, q, k_cache, v_cache, seqs, n_seqs, T, h, kv, d, M, c, w, scale);
        case 3: return launch_nc<3>(vec, grid, stream, out, q, k_cache, v_cache, seqs, n_seqs, T, h, kv, d, M, c, w, scale);
        default: return launch_nc<4>(vec, grid, stream, out, q, k_cache, v_cache, seqs, n_seqs, T, h, kv, d, M, c, w, scale);
    }
}

}  // namespace zt::kernels
