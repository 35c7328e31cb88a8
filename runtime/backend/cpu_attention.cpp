// cpu_attention: the fast attention's driver (work items over the pool, per-thread score scratch) and its three
// vector types: portable (8 plain floats), AVX2 (8 lanes) and AVX-512 (16 lanes). The kernels are written once in
// cpu_attention_kernels.inc and included once per ISA inside that ISA's target region (cpu_simd.h), so the build
// flags stay generic and each copy is compiled for its own instruction set. Orders: cpu_attention.h.
#include "runtime/backend/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/cpu_simd.h"
#include "runtime/backend/op_checks.h"
#include "runtime/base/error.h"

namespace zt {

// ---- portable: 8 plain floats, sums in hsum8's tree ----------------------------------------------------------
namespace attention_portable {
struct V {
    static constexpr int L = 8;
    struct R { float v[8]; };
    static R zero() { return set1(0.0f); }
    static R set1(float a) { R r; for (float & x : r.v) x = a; return r; }
    static R load(const float * p) { R r; std::memcpy(r.v, p, sizeof r.v); return r; }
    static R load_part(const float * p, int n, float fill) {
        R r = set1(fill);
        for (int i = 0; i < n; ++i) r.v[i] = p[i];
        return r;
    }
    static void store(float * p, R a) { std::memcpy(p, a.v, sizeof a.v); }
    static void store_part(float * p, R a, int n) { for (int i = 0; i < n; ++i) p[i] = a.v[i]; }
    static R add(R a, R b) { for (int i = 0; i < L; ++i) a.v[i] += b.v[i]; return a; }
    static R sub(R a, R b) { for (int i = 0; i < L; ++i) a.v[i] -= b.v[i]; return a; }
    static R div(R a, R b) { for (int i = 0; i < L; ++i) a.v[i] /= b.v[i]; return a; }
    static R max(R a, R b) { for (int i = 0; i < L; ++i) a.v[i] = std::max(a.v[i], b.v[i]); return a; }
    static R fma(R a, R b, R c) { for (int i = 0; i < L; ++i) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]); return c; }
    static R exp(R a) { for (float & x : a.v) x = simd::exp_lane(x); return a; }
    static float hsum(R a) {
        return ((a.v[0] + a.v[4]) + (a.v[2] + a.v[6])) + ((a.v[1] + a.v[5]) + (a.v[3] + a.v[7]));
    }
    static float hmax(R a) { float m = a.v[0]; for (float x : a.v) m = std::max(m, x); return m; }
};
#include "runtime/backend/cpu_attention_kernels.inc"
}  // namespace attention_portable

#if ZT_X86
ZT_TARGET_REGION_AVX2_BEGIN
namespace attention_avx2 {
struct V {
    static constexpr int L = 8;
    using R = __m256;
    static __m256i mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
    static R zero() { return _mm256_setzero_ps(); }
    static R set1(float a) { return _mm256_set1_ps(a); }
    static R load(const float * p) { return _mm256_loadu_ps(p); }
    static R load_part(const float * p, int n, float fill) {   // masked lanes are not read (no fault past the end)
        const __m256i m = mask(n);
        return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
    }
    static void store(float * p, R a) { _mm256_storeu_ps(p, a); }
    static void store_part(float * p, R a, int n) { _mm256_maskstore_ps(p, mask(n), a); }
    static R add(R a, R b) { return _mm256_add_ps(a, b); }
    static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
    static R div(R a, R b) { return _mm256_div_ps(a, b); }
    static R max(R a, R b) { return _mm256_max_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R exp(R a) { return simd::exp8(a); }
    static float hsum(R a) { return simd::hsum8(a); }
    static float hmax(R a) {
        __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        b = _mm_max_ps(b, _mm_movehl_ps(b, b));
        b = _mm_max_ss(b, _mm_movehdup_ps(b));
        return _mm_cvtss_f32(b);
    }
};
#include "runtime/backend/cpu_attention_kernels.inc"
}  // namespace attention_avx2
ZT_TARGET_REGION_END

ZT_TARGET_REGION_AVX512_BEGIN
namespace attention_avx512 {
struct V {
    static constexpr int L = 16;
    using R = __m512;
    static __mmask16 mask(int n) { return __mmask16((1u << n) - 1u); }
    static R zero() { return _mm512_setzero_ps(); }
    static R set1(float a) { return _mm512_set1_ps(a); }
    static R load(const float * p) { return _mm512_loadu_ps(p); }
    static R load_part(const float * p, int n, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask(n), p); }
    static void store(float * p, R a) { _mm512_storeu_ps(p, a); }
    static void store_part(float * p, R a, int n) { _mm512_mask_storeu_ps(p, mask(n), a); }
    static R add(R a, R b) { return _mm512_add_ps(a, b); }
    static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
    static R div(R a, R b) { return _mm512_div_ps(a, b); }
    static R max(R a, R b) { return _mm512_max_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R exp(R a) { return simd::exp16(a); }
    static float hsum(R a) { return simd::hsum16(a); }
    static float hmax(R a) { return _mm512_reduce_max_ps(a); }
};
#include "runtime/backend/cpu_attention_kernels.inc"
}  // namespace attention_avx512
ZT_TARGET_REGION_END
#endif

namespace {

using AttendGroupFn = void (*)(const float * const *, float * const *, int, const float *, const float *, int64_t,
                               int64_t, int64_t, float, float *, int64_t);

AttendGroupFn attend_group_for(CpuMatmulPath path) {
    switch (path) {
        case CpuMatmulPath::portable: return &attention_portable::attend_group;
#if ZT_X86
        case CpuMatmulPath::avx2: return &attention_avx2::attend_group;
        case CpuMatmulPath::avx512: return &attention_avx512::attend_group;
#endif
        default: break;
    }
    ZT_FAIL("cpu_attention: no fast attention for kernel path {} (the reference runs in the backend)",
            cpu_matmul_path_name(path));
}

}  // namespace

void cpu_attention(CpuMatmulPath path, ThreadPool & pool, const CpuAttentionArgs & a,
                   const std::vector<AttentionSeq> & seqs) {
    const AttendGroupFn attend = attend_group_for(path);
    const int64_t T = a.T, H = a.H, D = a.D, M = a.M, KV = a.KV, G = H / KV;
    std::vector<int32_t> seq_of(size_t(T), -1);   // each token row's sequence
    for (size_t i = 0; i < seqs.size(); ++i)
        for (int32_t r = 0; r < seqs[i].n_tokens; ++r) seq_of[size_t(seqs[i].row0 + r)] = int32_t(i);
    const float scale = float(1.0 / std::sqrt(double(D)));   // head_dim ** -0.5
    ZT_CHECK(G <= 64, "cpu_attention: {} query heads per kv head; at most 64 are supported", G);
    // Items (t, g): the G heads of row t on kv head g.
    pool.parallel_for(T * KV, 1, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch score_buf;
        const float * qs[64];
        float * outs[64];
        for (int64_t item = b; item < e; ++item) {
            const int64_t t = item / KV, g = item % KV;
            for (int64_t i = 0; i < G; ++i) {
                qs[i] = a.q + (t * H + g * G + i) * D;
                outs[i] = a.out + (t * H + g * G + i) * D;
            }
            int64_t lo = 0, hi = 0;
            if (seq_of[size_t(t)] >= 0) {
                const AttentionSeq & sq = seqs[size_t(seq_of[size_t(t)])];
                attention_key_range(sq.past_len + (t - sq.row0), int64_t(sq.past_len) + sq.n_tokens, a.causal,
                                    a.window, &lo, &hi);
                lo += int64_t(sq.slot) * M;   // rows of the slot's cache
                hi += int64_t(sq.slot) * M;
            }
            const int64_t n = hi - lo;
            if (n <= 0) {   // a row outside every sequence
                for (int64_t i = 0; i < G; ++i) std::memset(outs[i], 0, size_t(D) * sizeof(float));
                continue;
            }
            const int64_t lds = (n + 15) / 16 * 16;
            float * s = score_buf.get(size_t(G * lds));
            const int64_t kstride = KV * D;
            attend(qs, outs, int(G), a.k_cache + (lo * KV + g) * D, a.v_cache + (lo * KV + g) * D, kstride, n, D,
                   scale, s, lds);
        }
    });
}

}  // namespace zt
