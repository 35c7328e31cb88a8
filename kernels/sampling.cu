// sampling.cu: one token per row of logits, by the algorithm of zt::sample_token (runtime/backend/sample_token.cpp).
//   ids (R) i32, logits (R,V) f32, params (R) SampleParams, all on the device. One block of 512 threads per row.
// Every sum is double and taken in a fixed order (per-thread sequential, then fixed shuffle / shared-memory
// trees; no float atomics), so a row's result depends only on its logits and parameters. Integer shared
// atomics are used only for counts and for gather slots whose order is then fixed by a sort.
//
// Candidate order: logit descending, id ascending. It is the descending order of the 64-bit composite
//   comp(i) = key(logit_i) << nb | (2^nb - 1 - i),   nb = bit length of V - 1,
// key = the order-preserving uint32 of the float (-0 mapped to +0 so that it ties with +0 like the CPU's ==).
// Plain temperature sampling (no top-k, no top-p) walks ids ascending: there comp(i) = 2^nb - 1 - i.
// Weights w(i) = exp((logit_i - top) / T) in double, top = the max logit.
//
// temperature <= 0: argmax (the max of key << 32 | ~id: the lowest id on ties). One pass.
// plain: a 16-way "mass descent" over the digits of comp: per pass, the candidates whose comp matches the
//   digits fixed so far are binned by the next 4 bits, each bin's weight sum and count reduced in a fixed
//   order; the walk takes the first bin (from the top) where the mass above plus the bin's reaches u * total
//   (the total is the first pass's sum). In plain mode a pass reads only the id range that matches.
// top-k / top-p: the top-k threshold (the keep-th largest comp) by radix select (8-bit digits, counts in
//   per-warp shared histograms). If keep <= 2048: the candidates are gathered into shared memory, sorted
//   (bitonic), their weights prefix-summed, and nucleus + walk read off the prefix sums exactly like the CPU.
//   Else the top 2048 are gathered the same way (and the sum over all kept candidates taken in the same pass):
//   if the nucleus / the walk ends inside them, the prefix sums answer; otherwise the mass descent does.
// Results equal the CPU's except where u * mass (or top_p * sum) lands within rounding of a boundary.
// Reads of the row (16-byte loads where aligned): greedy 1; top-k <= 2048 (with or without top-p) and top-p
// with a nucleus inside the top 2048: 6 (+ up to 3 more when the k-th logit ties with others); plain: 1 + a
// first full pass with exp + ~4 narrowing passes over ever smaller id ranges. NaN logits: unspecified.
#include <climits>
#include <cstdint>

#include "kernels/kernels.h"

namespace zt::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kCap = 2048;   // candidates sorted in shared memory
constexpr int kPer = kCap / kThreads;
constexpr unsigned kFull = 0xffffffffu;
using u64 = unsigned long long;

struct Smem {
    u64 cand[kCap];                                       // gathered composites, sorted descending
    union {
        int hist[kWarps][256];                            // radix select: per-warp digit counts
        double pre[kCap];                                 // inclusive prefix sums of the sorted weights
    } u;
    double red[kWarps][16];                               // per-warp partials of block reductions
    int ired[kWarps][16];
    double dres[16];                                      // block reduction results
    int ires[16];
    int iv[4];                                            // small broadcasts
    double dv[4];
};

struct Row {
    const float * x;
    int V;
    int nb;         // id bits
    unsigned idm;   // 2^nb - 1
    bool plain;     // order = ids ascending
    double top;     // max logit
    double inv_t;   // 1 / temperature
};

__device__ __forceinline__ unsigned fkey(float f) {
    const unsigned b = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float fkey_inv(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ u64 comp_of(const Row & R, int i, float f) {
    const u64 id_part = u64(R.idm - unsigned(i));
    return R.plain ? id_part : (u64(fkey(f)) << R.nb) | id_part;
}
__device__ __forceinline__ int id_of(const Row & R, u64 c) { return int(R.idm - unsigned(c & R.idm)); }
__device__ __forceinline__ double weight(const Row & R, float f) { return exp((double(f) - R.top) * R.inv_t); }

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);   // identical in every lane
    return v;
}
__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

// Calls f(i, x[i]) for every i in [lo, hi), spread over the block: a scalar head up to 16-byte alignment, a
// float4 body (U float4 loads in flight per thread), a scalar tail. Each thread's indices ascend; which thread
// sees which index depends only on (x, lo, hi), so per-thread partial sums are deterministic.
template <int U, class F>
__device__ __forceinline__ void for_each(const float * __restrict__ x, int lo, int hi, F f) {
    const int t = int(threadIdx.x);
    const int mis = int((reinterpret_cast<uintptr_t>(x + lo) >> 2) & 3u);   // floats past a 16-byte boundary
    const int a = min(hi, lo + ((4 - mis) & 3));                            // first aligned index
    if (lo + t < a) f(lo + t, __ldg(x + lo + t));
    const int nv = (hi - a) >> 2;
    const float4 * v = reinterpret_cast<const float4 *>(x + a);
    int j = t;
    for (; j + (U - 1) * kThreads < nv; j += U * kThreads) {
        float4 q[U];
#pragma unroll
        for (int k = 0; k < U; ++k) q[k] = __ldg(v + j + k * kThreads);
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int i = a + 4 * (j + k * kThreads);
            f(i, q[k].x);
            f(i + 1, q[k].y);
            f(i + 2, q[k].z);
            f(i + 3, q[k].w);
        }
    }
    for (; j < nv; j += kThreads) {
        const float4 q = __ldg(v + j);
        const int i = a + 4 * j;
        f(i, q.x);
        f(i + 1, q.y);
        f(i + 2, q.z);
        f(i + 3, q.w);
    }
    const int b = a + 4 * nv;
    if (b + t < hi) f(b + t, __ldg(x + b + t));
}

// Block-wide reductions: every thread calls, every thread gets the result.
__device__ double block_sum(double v, Smem & s) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    v = warp_sum(v);
    __syncthreads();   // earlier readers of s.red / s.dres are done
    if (lane == 0) s.red[warp][0] = v;
    __syncthreads();
    if (warp == 0) {
        double x = lane < kWarps ? s.red[lane][0] : 0.0;
        x = warp_sum(x);
        if (lane == 0) s.dres[0] = x;
    }
    __syncthreads();
    return s.dres[0];
}
__device__ u64 block_max(u64 v, Smem & s) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 n = __shfl_xor_sync(kFull, v, o);
        v = n > v ? n : v;
    }
    __syncthreads();
    u64 * red = reinterpret_cast<u64 *>(&s.red[0][0]);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        u64 x = lane < kWarps ? red[lane] : 0ull;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const u64 n = __shfl_xor_sync(kFull, x, o);
            x = n > x ? n : x;
        }
        if (lane == 0) reinterpret_cast<u64 *>(s.dres)[0] = x;
    }
    __syncthreads();
    return reinterpret_cast<const u64 *>(s.dres)[0];
}
__device__ int block_min(int v, Smem & s) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kFull, v, o));
    __syncthreads();
    if (lane == 0) s.ired[warp][0] = v;
    __syncthreads();
    if (warp == 0) {
        int x = lane < kWarps ? s.ired[lane][0] : INT_MAX;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) x = min(x, __shfl_xor_sync(kFull, x, o));
        if (lane == 0) s.ires[0] = x;
    }
    __syncthreads();
    return s.ires[0];
}
// 16 weight sums and counts -> s.dres[0..16), s.ires[0..16)
__device__ void block_sum16(double (&acc)[16], int (&cnt)[16], Smem & s) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
#pragma unroll
    for (int k = 0; k < 16; ++k) {
        acc[k] = warp_sum(acc[k]);
        cnt[k] = warp_sum(cnt[k]);
    }
    __syncthreads();
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < 16; ++k) {
            s.red[warp][k] = acc[k];
            s.ired[warp][k] = cnt[k];
        }
    }
    __syncthreads();
    if (threadIdx.x < 16) {
        double a = 0.0;
        int c = 0;
        for (int w = 0; w < kWarps; ++w) {
            a += s.red[w][threadIdx.x];
            c += s.ired[w][threadIdx.x];
        }
        s.dres[threadIdx.x] = a;
        s.ires[threadIdx.x] = c;
    }
    __syncthreads();
}

// The smallest index i < n with pred(i), else n.
template <class Pred>
__device__ int first_index(int n, Pred pred, Smem & s) {
    int best = INT_MAX;
    for (int i = int(threadIdx.x); i < n; i += kThreads)
        if (pred(i)) { best = i; break; }   // a thread's indices ascend
    best = block_min(best, s);
    return best < n ? best : n;
}

// Radix select (non-plain order): tau such that exactly `rank` (1 <= rank <= V) elements have comp >= tau.
// 8-bit digits: the 32 key bits in 4 digits, then the nb id bits (only when the rank splits a run of equal
// logits); stops as soon as the rank takes a whole bin.
__device__ u64 select_top(const Row & R, Smem & s, int rank) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    int lowfixed = 32 + R.nb;   // bits >= lowfixed are fixed to `prefix`
    u64 prefix = 0;
    int rem = rank;             // rank within the elements matching the prefix
    for (;;) {
        const int sh = lowfixed > R.nb ? max(R.nb, lowfixed - 8) : max(0, lowfixed - 8);
        const unsigned mask = (1u << (lowfixed - sh)) - 1u;
        __syncthreads();   // earlier readers of s.u / s.iv are done
        for (int i = int(threadIdx.x); i < kWarps * 256; i += kThreads) (&s.u.hist[0][0])[i] = 0;
        __syncthreads();
        int * const hist = s.u.hist[warp];
        for_each<4>(R.x, 0, R.V, [&](int i, float f) {
            const u64 c = comp_of(R, i, f);
            if ((c >> lowfixed) == prefix) atomicAdd(&hist[unsigned(c >> sh) & mask], 1);
        });
        __syncthreads();
        if (warp == 0) {
            // lane l owns bins 255 - 8l down to 248 - 8l (descending order runs over lanes ascending)
            int cnt[8], tot = 0;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                const int b = 255 - 8 * lane - k;
                int c = 0;
                for (int w = 0; w < kWarps; ++w) c += s.u.hist[w][b];
                cnt[k] = c;
                tot += c;
            }
            int incl = tot;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int n = __shfl_up_sync(kFull, incl, o);
                if (lane >= o) incl += n;
            }
            const int above = incl - tot;
            if (above < rem && rem <= incl) {   // exactly one lane
                int r = rem - above;
                bool done = false;
#pragma unroll
                for (int k = 0; k < 8; ++k) {
                    if (!done && r <= cnt[k]) {
                        s.iv[0] = 255 - 8 * lane - k;
                        s.iv[1] = r;
                        s.iv[2] = cnt[k];
                        done = true;
                    }
                    if (!done) r -= cnt[k];
                }
            }
        }
        __syncthreads();
        const int digit = s.iv[0], bin_count = s.iv[2];
        rem = s.iv[1];
        prefix = (prefix << (lowfixed - sh)) | u64(digit);
        lowfixed = sh;
        // the whole bin is in (always so at sh == 0, where a bin is one composite)
        if (bin_count == rem) return prefix << lowfixed;
    }
}

// Gathers the elements with comp >= thr_gather (at most kCap) into s.cand[0, n), sorts them descending, and
// sets s.u.pre to the inclusive prefix sums of their weights. Returns n. With want_sum, *sum = the weight sum
// over the elements with comp >= thr_sum (taken in the same pass).
__device__ int gather_sort_scan(const Row & R, Smem & s, u64 thr_gather, bool want_sum, u64 thr_sum, double * sum) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    __syncthreads();
    if (threadIdx.x == 0) s.iv[3] = 0;
    __syncthreads();
    double part = 0.0;
    for_each<4>(R.x, 0, R.V, [&](int i, float f) {
        const u64 c = comp_of(R, i, f);
        if (c >= thr_gather) {
            const int pos = atomicAdd(&s.iv[3], 1);
            if (pos < kCap) s.cand[pos] = c;
        }
        if (want_sum && c >= thr_sum) part += weight(R, f);
    });
    if (want_sum) *sum = block_sum(part, s);   // (synchronizes)
    __syncthreads();
    const int n = min(s.iv[3], kCap);
    int npad = 1;
    while (npad < n) npad <<= 1;
    for (int i = n + int(threadIdx.x); i < npad; i += kThreads) s.cand[i] = 0ull;   // below every real comp
    __syncthreads();
    // bitonic sort, descending
    for (int k = 2; k <= npad; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = int(threadIdx.x); i < npad; i += kThreads) {
                const int p = i ^ j;
                if (p > i) {
                    const u64 a = s.cand[i], b = s.cand[p];
                    if ((i & k) == 0 ? a < b : a > b) {
                        s.cand[i] = b;
                        s.cand[p] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
    // inclusive prefix sums of the weights: thread t owns [kPer t, kPer t + kPer)
    double loc[kPer], run = 0.0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
        const int i = kPer * int(threadIdx.x) + k;
        if (i < n) run += weight(R, fkey_inv(unsigned(s.cand[i] >> R.nb)));
        loc[k] = run;
    }
    double x = run;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const double y = __shfl_up_sync(kFull, x, o);
        if (lane >= o) x += y;
    }
    double excl = __shfl_up_sync(kFull, x, 1);
    if (lane == 0) excl = 0.0;
    if (lane == 31) s.red[warp][0] = x;   // s.red is free: block_sum above ended synchronized
    __syncthreads();
    double off = 0.0;
    for (int w = 0; w < warp; ++w) off += s.red[w][0];
    off += excl;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
        const int i = kPer * int(threadIdx.x) + k;
        if (i < n) s.u.pre[i] = off + loc[k];
    }
    __syncthreads();
    return n;
}

struct Found {
    u64 comp;      // the element
    double incl;   // weight of the elements before it in the order, plus its own
    double total;  // first pass: weight of all elements in the range (when the target was a fraction)
};

// The first element, in descending comp order among those with comp >= thr, where the running weight sum
// reaches t (strict: exceeds t); with is_frac, t = frac * (the total weight of those elements). If it is never
// reached (rounding), the last element. 16-way digits of comp, key digits aligned to the key (non-plain).
__device__ Found descent(const Row & R, Smem & s, u64 thr, double t_or_frac, bool is_frac, bool strict) {
    int lowfixed = R.plain ? R.nb : 32 + R.nb;
    u64 prefix = 0;
    double above = 0.0;   // weight of the elements above the current range
    double t = t_or_frac, total = 0.0;
    bool first = true;
    for (;;) {
        const int sh = (!R.plain && lowfixed > R.nb) ? max(R.nb, lowfixed - 4) : max(0, lowfixed - 4);
        const unsigned mask = (1u << (lowfixed - sh)) - 1u;
        // plain: comp = idm - id, so the range is an id interval
        int lo = 0, hi = R.V;
        if (R.plain) {
            const long long cmax = (((long long)(prefix) + 1) << lowfixed) - 1, cmin = (long long)(prefix) << lowfixed;
            lo = int(max(0ll, (long long)(R.idm) - cmax));
            hi = int(min((long long)(R.V), (long long)(R.idm) - cmin + 1));
        }
        double acc[16];
        int cnt[16];
#pragma unroll
        for (int k = 0; k < 16; ++k) {
            acc[k] = 0.0;
            cnt[k] = 0;
        }
        int cur = -1;   // a run of equal digits is summed before it goes to its bin (plain: digits fall)
        double cur_w = 0.0;
        int cur_n = 0;
        for_each<1>(R.x, lo, hi, [&](int i, float f) {
            const u64 c = comp_of(R, i, f);
            if (c < thr || (c >> lowfixed) != prefix) return;
            const int digit = int(unsigned(c >> sh) & mask);
            if (digit != cur) {
#pragma unroll
                for (int k = 0; k < 16; ++k) {
                    acc[k] += k == cur ? cur_w : 0.0;
                    cnt[k] += k == cur ? cur_n : 0;
                }
                cur = digit;
                cur_w = 0.0;
                cur_n = 0;
            }
            cur_w += weight(R, f);
            ++cur_n;
        });
#pragma unroll
        for (int k = 0; k < 16; ++k) {
            acc[k] += k == cur ? cur_w : 0.0;
            cnt[k] += k == cur ? cur_n : 0;
        }
        block_sum16(acc, cnt, s);
        if (threadIdx.x == 0) {
            double tt = t;
            if (first && is_frac) {
                double tot = 0.0;
                for (int k = 15; k >= 0; --k) tot += s.dres[k];
                s.dv[1] = tot;
                tt = t_or_frac * tot;
                s.dv[2] = tt;
            }
            int chosen = -1, last = -1;
            double a = above, a_last = above;
            for (int k = 15; k >= 0; --k) {
                if (s.ires[k] == 0) continue;
                last = k;
                a_last = a;
                const double after = a + s.dres[k];
                if (strict ? after > tt : after >= tt) {
                    chosen = k;
                    break;
                }
                a = after;
            }
            if (chosen < 0) {   // not reached: the last element of the range
                chosen = last;
                a = a_last;
            }
            s.iv[0] = chosen;
            s.dv[0] = a;
        }
        __syncthreads();
        if (first && is_frac) {
            total = s.dv[1];
            t = s.dv[2];
        }
        first = false;
        const int chosen = s.iv[0];
        const int bin_count = s.ires[chosen];
        const double bin_mass = s.dres[chosen];
        above = s.dv[0];
        prefix = (prefix << (lowfixed - sh)) | u64(chosen);
        lowfixed = sh;
        if (bin_count == 1) {   // always so at sh == 0: composites are unique
            u64 e = prefix;
            if (sh > 0) {       // find the one element of the bin
                u64 best = 0;
                for_each<4>(R.x, lo, hi, [&](int i, float f) {
                    const u64 c = comp_of(R, i, f);
                    if (c >= thr && (c >> sh) == prefix && c > best) best = c;
                });
                e = block_max(best, s);
            }
            return Found{e, above + bin_mass, total};
        }
    }
}

// top-k and / or top-p (not plain); keep = the number of top-k candidates (V when top-k is off).
__device__ int sample_ordered(const Row & R, Smem & s, const SampleParams & p, int keep) {
    const u64 thr_k = keep < R.V ? select_top(R, s, keep) : 0ull;   // candidates: comp >= thr_k
    const double * pre = s.u.pre;
    const u64 * cand = s.cand;
    if (keep <= kCap) {
        const int n = gather_sort_scan(R, s, thr_k, false, 0ull, nullptr);   // n == keep
        int nn = n;
        if (p.top_p < 1.0) {
            const double target = p.top_p * pre[n - 1];
            const int i0 = first_index(n, [&](int i) { return pre[i] >= target; }, s);
            nn = i0 < n ? i0 + 1 : n;
        }
        const double u = p.u * pre[nn - 1];
        const int i1 = first_index(nn, [&](int i) { return pre[i] > u; }, s);
        return id_of(R, cand[i1 < nn ? i1 : nn - 1]);
    }
    // more than kCap candidates: the top kCap in shared memory, the sum over all kept candidates
    const u64 thr_c = select_top(R, s, kCap);
    double sum_all = 0.0;
    gather_sort_scan(R, s, thr_c, true, thr_k, &sum_all);   // kCap elements
    u64 thr_n = thr_k;        // nucleus: comp >= thr_n
    double mass = sum_all;    // its weight
    if (p.top_p < 1.0) {
        const double target = p.top_p * sum_all;
        const int i0 = first_index(kCap, [&](int i) { return pre[i] >= target; }, s);
        if (i0 < kCap) {      // the nucleus is the first i0 + 1
            const double u = p.u * pre[i0];
            const int i1 = first_index(i0 + 1, [&](int i) { return pre[i] > u; }, s);
            return id_of(R, cand[i1 <= i0 ? i1 : i0]);
        }
        const Found f = descent(R, s, thr_k, target, false, false);
        thr_n = f.comp;
        mass = f.incl;
    }
    const double u = p.u * mass;
    const u64 tn = thr_n;
    const int ns = first_index(kCap, [&](int i) { return cand[i] < tn; }, s);   // nucleus entries in smem
    const int i1 = first_index(ns, [&](int i) { return pre[i] > u; }, s);
    if (i1 < ns) return id_of(R, cand[i1]);
    if (ns < kCap) return id_of(R, cand[ns - 1]);   // the nucleus ends inside: its last element
    return id_of(R, descent(R, s, thr_n, u, false, true).comp);
}

// grid.x = R rows, block = kThreads.
__global__ void __launch_bounds__(kThreads)
sample_kernel(int32_t * __restrict__ ids, const float * __restrict__ logits, const SampleParams * __restrict__ params,
              int V, int nb) {
    __shared__ Smem s;
    Row R;
    R.x = logits + int64_t(blockIdx.x) * V;
    R.V = V;
    R.nb = nb;
    R.idm = (1u << nb) - 1u;
    R.plain = false;
    R.top = 0.0;
    R.inv_t = 1.0;
    const SampleParams p = params[blockIdx.x];

    // the max logit with the lowest id among equals
    u64 best = 0;
    for_each<4>(R.x, 0, V, [&](int i, float f) {
        const u64 c = (u64(fkey(f)) << 32) | u64(0xffffffffu - unsigned(i));
        best = c > best ? c : best;
    });
    best = block_max(best, s);
    int result;
    if (p.temperature <= 0.0 || V == 1) {
        result = int(0xffffffffu - unsigned(best & 0xffffffffull));
    } else {
        R.top = double(fkey_inv(unsigned(best >> 32)));
        R.inv_t = 1.0 / p.temperature;
        const int keep = p.top_k > 0 && p.top_k < V ? int(p.top_k) : V;
        R.plain = keep == V && p.top_p >= 1.0;
        if (R.plain)
            result = id_of(R, descent(R, s, 0ull, p.u, true, true).comp);
        else
            result = sample_ordered(R, s, p, keep);
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = result;
}

}  // namespace

cudaError_t sample(int32_t * ids, const float * logits, const SampleParams * params, int64_t R, int64_t V,
                   cudaStream_t stream) {
    if (R < 0 || R > INT_MAX || V < 1 || V > INT_MAX) return cudaErrorInvalidValue;
    if (R == 0) return cudaSuccess;
    if (!ids || !logits || !params) return cudaErrorInvalidValue;
    int nb = 1;   // bit length of V - 1 (at least 1)
    while (nb < 31 && (int64_t(1) << nb) < V) ++nb;
    sample_kernel<<<unsigned(R), kThreads, 0, stream>>>(ids, logits, params, int(V), nb);
    return cudaGetLastError();
}

}  // namespace zt::kernels
