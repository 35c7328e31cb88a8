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

// The portable vectors are passed between inline functions of this file only: the ABI note does not apply.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace zt {

// ---- portable: 8 floats (vector extension), sums in hsum8's tree (for CPUs without AVX2) ----------------------------------------------------------
namespace attention_portable {
struct V {
    static constexpr int L = 8;
    typedef float R __attribute__((vector_size(32)));   // GCC/clang vector extension: SSE pairs on baseline x86-64
    static R zero() { return R{}; }
    static R set1(float a) { return R{} + a; }
    static R load(const float * p) { R r; std::memcpy(&r, p, sizeof r); return r; }
    static R load_part(const float * p, int n, float fill) {
        R r = set1(fill);
        for (int i = 0; i < n; ++i) r[i] = p[i];
        return r;
    }
    static void store(float * p, R a) { std::memcpy(p, &a, sizeof a); }
    static void store_part(float * p, R a, int n) { for (int i = 0; i < n; ++i) p[i] = a[i]; }
    static R add(R a, R b) { return a + b; }
    static R sub(R a, R b) { return a - b; }
    static R div(R a, R b) { return a / b; }
    static R max(R a, R b) { return a > b ? a : b; }
    // a*b + c rounded twice and libm's exp: without FMA hardware, std::fma and cpu_simd.h's exp_lane are calls
    // into software emulation (measured: the portable path 4.6x slower than the reference loop with them).
    static R fma(R a, R b, R c) { return a * b + c; }
    static R exp(R a) { for (int i = 0; i < L; ++i) a[i] = std::exp(a[i]); return a; }
    static float hsum(R a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }
    static float hmax(R a) { float m = a[0]; for (int i = 1; i < L; ++i) m = std::max(m, a[i]); return m; }
    static constexpr int KB = 1;   // keys per hsum_keys
    static void hsum_keys(const R * a, float * out) { out[0] = hsum(a[0]); }
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
    static constexpr int KB = 1;
    static void hsum_keys(const R * a, float * out) { out[0] = hsum(a[0]); }
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
    static constexpr int KB = 4;   // keys per hsum_keys
    static void hsum_keys(const R * a, float * out) { simd::hsum16x4(a, out); }
};
#include "runtime/backend/cpu_attention_kernels.inc"
}  // namespace attention_avx512
ZT_TARGET_REGION_END
#endif

namespace {

// One ISA's kernels (cpu_attention_kernels.inc).
struct AttentionKernels {
    void (*attend_rows)(const float * const *, float * const *, int, const int64_t *, const float *, const float *,
                        int64_t, int64_t, float, float *, int64_t);
    void (*scores_range)(const float * const *, int, const float *, int64_t, int64_t, int64_t, int64_t, float, float *,
                         int64_t);
    void (*softmax_row)(float *, int64_t);
    void (*output_vector)(const float *, const float *, int64_t, int64_t, int64_t, int64_t, float *);
    int lanes;
};

#define ZT_ATTENTION_KERNELS(ns) \
    AttentionKernels{&ns::attend_rows, &ns::scores_range, &ns::softmax_row, &ns::output_vector, ns::kLanes}

AttentionKernels kernels_for(CpuMatmulPath path) {
    switch (path) {
        case CpuMatmulPath::portable: return ZT_ATTENTION_KERNELS(attention_portable);
#if ZT_X86
        case CpuMatmulPath::avx2: return ZT_ATTENTION_KERNELS(attention_avx2);
        case CpuMatmulPath::avx512: return ZT_ATTENTION_KERNELS(attention_avx512);
#endif
        default: break;
    }
    ZT_FAIL("cpu_attention: no fast attention for kernel path {} (the reference runs in the backend)",
            cpu_matmul_path_name(path));
}

// Split an item over threads only past this many multiply-adds per item (keys x heads per kv head x D): 1M,
// e.g. 5462 keys for SmolLM2 (3 x 64), 8192 for Llama-2-7B (1 x 128).
constexpr int64_t kSplitMinWork = int64_t(1) << 20;
// Query rows of one sequence per item (at most; fewer when the heads per kv head are many): they share each key
// and value row read (prefill); 64 queries at most per item.
constexpr int64_t kRowsPerItem = 8;

// A block of consecutive query rows of one sequence that see keys from the same first key: rows [t0, t0 + n_rows),
// row t0 + r sees the slot's keys [lo, hi0 + r) (causal) or [lo, hi0) (not).
struct RowBlock {
    int64_t t0 = 0, n_rows = 0, lo = 0, hi0 = 0;   // lo, hi0: rows of the cache (slot * M + position)
    bool causal = true;
};

}  // namespace

void cpu_attention(CpuMatmulPath path, ThreadPool & pool, const CpuAttentionArgs & a,
                   const std::vector<AttentionSeq> & seqs) {
    const AttentionKernels kern = kernels_for(path);
    const int64_t T = a.T, H = a.H, D = a.D, M = a.M, KV = a.KV, G = H / KV;
    ZT_CHECK(G <= 64, "cpu_attention: {} query heads per kv head; at most 64 are supported", G);
    const float scale = float(1.0 / std::sqrt(double(D)));   // head_dim ** -0.5
    const int64_t kstride = KV * D;
    const int64_t rows_per_item = std::max<int64_t>(1, std::min<int64_t>(kRowsPerItem, 64 / G));
    // Rows outside every sequence are zero; the others go in blocks (a new block where the first key moves).
    std::vector<char> covered(size_t(T), 0);
    std::vector<RowBlock> blocks;
    int64_t most_keys = 0;
    for (const AttentionSeq & sq : seqs) {
        for (int32_t r = 0; r < sq.n_tokens; ++r) {
            const int64_t t = sq.row0 + r;
            covered[size_t(t)] = 1;
            int64_t lo = 0, hi = 0;
            attention_key_range(sq.past_len + r, int64_t(sq.past_len) + sq.n_tokens, a.causal, a.window, &lo, &hi);
            lo += int64_t(sq.slot) * M;
            hi += int64_t(sq.slot) * M;
            most_keys = std::max(most_keys, hi - lo);
            RowBlock * b = blocks.empty() ? nullptr : &blocks.back();
            const bool joins = b && b->t0 + b->n_rows == t && b->lo == lo && b->n_rows < rows_per_item &&
                               hi == b->hi0 + (a.causal ? b->n_rows : 0) && r > 0;
            if (joins) { ++b->n_rows; continue; }
            blocks.push_back({t, 1, lo, hi, a.causal});
        }
    }
    for (int64_t t = 0; t < T; ++t)
        if (!covered[size_t(t)]) std::memset(a.out + t * H * D, 0, size_t(H * D) * sizeof(float));
    // Item (block, g): the block's rows x the G heads on kv head g.
    auto item_queries = [&](const RowBlock & b, int64_t g, const float ** qs, float ** outs, int64_t * nk) {
        int i = 0;
        for (int64_t r = 0; r < b.n_rows; ++r)
            for (int64_t h = g * G; h < (g + 1) * G; ++h, ++i) {
                qs[i] = a.q + ((b.t0 + r) * H + h) * D;
                outs[i] = a.out + ((b.t0 + r) * H + h) * D;
                nk[i] = b.hi0 + (b.causal ? r : 0) - b.lo;
            }
        return i;
    };
    const int64_t n_items = int64_t(blocks.size()) * KV;
    // One item per work unit, unless there are fewer items than threads and each is long: measured on the 2-core
    // VM, splitting a 3-item, 512-key decode (SmolLM2) over 2 threads cost more in hand-offs than it gained.
    if (n_items >= pool.size() || most_keys * G * D < kSplitMinWork) {
        pool.parallel_for(n_items, 1, [&](int64_t ib, int64_t ie) {
            thread_local AlignedScratch score_buf;
            const float * qs[64];
            float * outs[64];
            int64_t nk[64];
            for (int64_t item = ib; item < ie; ++item) {
                const RowBlock & b = blocks[size_t(item / KV)];
                const int64_t g = item % KV;
                const int nq = item_queries(b, g, qs, outs, nk);
                const int64_t n_max = b.hi0 + (b.causal ? b.n_rows - 1 : 0) - b.lo;
                const int64_t lds = (n_max + 15) / 16 * 16;
                const int64_t off = (b.lo * KV + g) * D;
                kern.attend_rows(qs, outs, nq, nk, a.k_cache + off, a.v_cache + off, kstride, D, scale,
                                 score_buf.get(size_t(nq * lds)), lds);
            }
        });
        return;
    }
    // Few items (decode of a small batch: one row each) over many keys: each item split over threads in three
    // phases, the same arithmetic per score and per output element as attend_rows (so the same bits): (1) scores of
    // key chunks, (2) each query's softmax (and its output zeroed), (3) each query's output vectors of L lanes,
    // every element summed over its keys in order.
    struct Item { const float * qs[64]; float * outs[64]; int64_t nk[64]; int nq; int64_t off, n, lds, s_off; };
    std::vector<Item> items(static_cast<size_t>(n_items));
    int64_t s_total = 0;
    for (int64_t i = 0; i < n_items; ++i) {
        Item & it = items[size_t(i)];
        const RowBlock & b = blocks[size_t(i / KV)];
        it.nq = item_queries(b, i % KV, it.qs, it.outs, it.nk);
        it.n = *std::max_element(it.nk, it.nk + it.nq);
        it.off = (b.lo * KV + (i % KV)) * D;
        it.lds = (it.n + 15) / 16 * 16;
        it.s_off = s_total;
        s_total += it.nq * it.lds;
    }
    AlignedScratch scores;
    float * sc = scores.get(size_t(std::max<int64_t>(s_total, 1)));
    constexpr int64_t kKeyChunk = 64;
    std::vector<std::pair<int64_t, int64_t>> chunks;   // (item, first key)
    for (int64_t i = 0; i < n_items; ++i)
        for (int64_t j = 0; j < items[size_t(i)].n; j += kKeyChunk) chunks.push_back({i, j});
    pool.parallel_for(int64_t(chunks.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
            const auto [i, j0] = chunks[size_t(c)];
            const Item & it = items[size_t(i)];
            kern.scores_range(it.qs, it.nq, a.k_cache + it.off, kstride, j0, std::min(it.n, j0 + kKeyChunk), D, scale,
                              sc + it.s_off, it.lds);
        }
    });
    std::vector<std::pair<int64_t, int>> queries;   // (item, query)
    for (int64_t i = 0; i < n_items; ++i)
        for (int q = 0; q < items[size_t(i)].nq; ++q) queries.push_back({i, q});
    pool.parallel_for(int64_t(queries.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t u = b; u < e; ++u) {
            const auto [i, q] = queries[size_t(u)];
            const Item & it = items[size_t(i)];
            kern.softmax_row(sc + it.s_off + q * it.lds, it.nk[q]);
            std::memset(it.outs[q], 0, size_t(D) * sizeof(float));
        }
    });
    const int64_t n_vec = (D + kern.lanes - 1) / kern.lanes;
    pool.parallel_for(int64_t(queries.size()) * n_vec, 1, [&](int64_t b, int64_t e) {
        for (int64_t u = b; u < e; ++u) {
            const auto [i, q] = queries[size_t(u / n_vec)];
            const Item & it = items[size_t(i)];
            kern.output_vector(sc + it.s_off + q * it.lds, a.v_cache + it.off, kstride, it.nk[q],
                               (u % n_vec) * kern.lanes, D, it.outs[q]);
        }
    });
}

}  // namespace zt
