// Argument checks shared by the backends (see op_checks.h).
#include "runtime/backend/op_checks.h"

#include <algorithm>

#include "runtime/base/error.h"

namespace zt {

void check_f32(const Tensor & t, const char * op, const char * name) {
    ZT_CHECK(t.data != nullptr, "{}: {} has no data", op, name);
    ZT_CHECK(t.dtype == DType::F32, "{}: {} must be F32, got {}", op, name, dtype_name(t.dtype));
}

void check_weight(const Tensor & t, const char * op, const char * name) {
    ZT_CHECK(t.data != nullptr, "{}: {} has no data", op, name);
    ZT_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
             "{}: {} must be F32, F16 or BF16, got {}", op, name, dtype_name(t.dtype));
}

void check_weight_matrix(const Tensor & t, const char * op, const char * name, bool quantized_ok) {
    if (!dtype_is_quantized(t.dtype)) { check_weight(t, op, name); return; }
    ZT_CHECK(t.data != nullptr, "{}: {} has no data", op, name);
    ZT_CHECK(quantized_ok, "{}: {} is {}, a GGUF block type, which this backend does not run; it runs F32, F16 or BF16 "
             "weights (dequantize the tensor when loading it, or use the CPU backend)", op, name, dtype_name(t.dtype));
    ZT_CHECK(t.dims() == 2, "{}: {} must be 2-D, got {}", op, name, t.shape_str());
    const int64_t bw = dtype_block_weights(t.dtype);
    ZT_CHECK(t.dim(1) > 0 && t.dim(1) % bw == 0, "{}: {} {} is {}: its rows (K = {}) must be whole {} blocks of {} "
             "weights; quantize it along its last dim in whole blocks (or keep it F32/F16/BF16)", op, name,
             t.shape_str(), dtype_name(t.dtype), t.dim(1), dtype_name(t.dtype), bw);
}

int64_t rows_of(const Tensor & t, int64_t cols, const char * op, const char * name) {
    ZT_CHECK(t.dims() >= 1 && cols > 0 && t.numel() % cols == 0, "{}: {} {} is not a multiple of rows of {}",
             op, name, t.shape_str(), cols);
    return t.numel() / cols;
}

void check_seq(const AttentionSeq & q, int64_t S, int64_t M, int64_t T, const char * op) {
    ZT_CHECK(q.slot >= 0 && q.slot < S, "{}: cache slot {} outside [0, {})", op, q.slot, S);
    ZT_CHECK(q.past_len >= 0 && q.n_tokens >= 0 && int64_t(q.past_len) + q.n_tokens <= M,
             "{}: positions {}..{} do not fit the cache's {} positions", op, q.past_len,
             int64_t(q.past_len) + q.n_tokens, M);
    ZT_CHECK(q.row0 >= 0 && int64_t(q.row0) + q.n_tokens <= T, "{}: rows {}..{} outside the step's {} tokens", op,
             q.row0, int64_t(q.row0) + q.n_tokens, T);
}

RmsnormDims check_rmsnorm(const Tensor & out, const Tensor & x, const Tensor & w) {
    check_f32(out, "rmsnorm", "out");
    check_f32(x, "rmsnorm", "x");
    check_weight(w, "rmsnorm", "w");
    const int64_t C = w.numel();
    const int64_t R = rows_of(x, C, "rmsnorm", "x");
    ZT_CHECK(out.numel() == x.numel(), "rmsnorm: out {} != x {}", out.shape_str(), x.shape_str());
    return {R, C};
}

MatmulDims check_matmul(const Tensor & out, const Tensor & x, const Tensor & w, const Tensor & bias,
                        bool quantized_ok) {
    check_f32(out, "matmul", "out");
    check_f32(x, "matmul", "x");
    check_weight_matrix(w, "matmul", "w", quantized_ok);
    ZT_CHECK(w.dims() == 2, "matmul: w must be (N,K), got {}", w.shape_str());
    const int64_t N = w.dim(0), K = w.dim(1);
    const int64_t T = rows_of(x, K, "matmul", "x");
    ZT_CHECK(out.numel() == T * N, "matmul: out {} != (T={}, N={})", out.shape_str(), T, N);
    if (bias.data) {
        check_weight(bias, "matmul", "bias");
        ZT_CHECK(bias.numel() == N, "matmul: bias {} != (N={})", bias.shape_str(), N);
    }
    return {T, N, K};
}

RopeDims check_rope(const Tensor & x, const Tensor & positions, const Tensor & inv_freq) {
    check_f32(x, "rope", "x");
    check_f32(inv_freq, "rope", "inv_freq");
    ZT_CHECK(positions.dtype == DType::I32, "rope: positions must be I32");
    ZT_CHECK(x.dims() == 3, "rope: x must be (T,H,D), got {}", x.shape_str());
    const int64_t T = x.dim(0), H = x.dim(1), D = x.dim(2), half = D / 2;
    ZT_CHECK(D % 2 == 0 && (inv_freq.numel() == half || inv_freq.numel() == T * half), "rope: inv_freq {} must be "
             "(D/2 = {}) or (T = {}, D/2)", inv_freq.shape_str(), half, T);
    ZT_CHECK(positions.numel() == T, "rope: positions {} must be (T = {})", positions.shape_str(), T);
    return {T, H, D, inv_freq.numel() == half ? 0 : half};
}

KvStoreDims check_kv_store(const Tensor & k_cache, const Tensor & v_cache, const Tensor & k, const Tensor & v,
                           const std::vector<AttentionSeq> & seqs) {
    check_f32(k_cache, "kv_store", "k_cache"); check_f32(v_cache, "kv_store", "v_cache");
    check_f32(k, "kv_store", "k"); check_f32(v, "kv_store", "v");
    ZT_CHECK(k_cache.dims() == 4 && v_cache.shape == k_cache.shape, "kv_store: caches must be (S,M,KV,D), got {} {}",
             k_cache.shape_str(), v_cache.shape_str());
    const int64_t S = k_cache.dim(0), M = k_cache.dim(1), row = k_cache.dim(2) * k_cache.dim(3);
    const int64_t T = rows_of(k, row, "kv_store", "k");
    ZT_CHECK(v.numel() == k.numel(), "kv_store: v {} != k {}", v.shape_str(), k.shape_str());
    for (const AttentionSeq & q : seqs) check_seq(q, S, M, T, "kv_store");
    return {S, M, row, T};
}

AttentionDims check_attention(const Tensor & out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                              const std::vector<AttentionSeq> & seqs, int32_t window) {
    ZT_CHECK(window >= 0, "attention: window = {} must be >= 0 (0: no sliding window)", window);
    check_f32(out, "attention", "out"); check_f32(q, "attention", "q");
    check_f32(k_cache, "attention", "k_cache"); check_f32(v_cache, "attention", "v_cache");
    ZT_CHECK(q.dims() == 3 && k_cache.dims() == 4 && v_cache.shape == k_cache.shape,
             "attention: q must be (T,H,D) and caches (S,M,KV,D), got {} {} {}", q.shape_str(),
             k_cache.shape_str(), v_cache.shape_str());
    const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2);
    const int64_t S = k_cache.dim(0), M = k_cache.dim(1), KV = k_cache.dim(2);
    ZT_CHECK(k_cache.dim(3) == D && KV > 0 && H % KV == 0, "attention: q {} and cache {} disagree on heads",
             q.shape_str(), k_cache.shape_str());
    ZT_CHECK(out.numel() == q.numel(), "attention: out {} != q {}", out.shape_str(), q.shape_str());
    for (const AttentionSeq & sq : seqs) check_seq(sq, S, M, T, "attention");
    return {T, H, D, S, M, KV};
}

void attention_key_range(int64_t p, int64_t n_keys, bool causal, int32_t window, int64_t * lo, int64_t * hi) {
    *lo = 0;
    *hi = causal ? p + 1 : n_keys;
    if (window > 0) {   // HF: causal kv > p - window; bidirectional |p - kv| <= window
        *lo = std::max<int64_t>(0, causal ? p - window + 1 : p - window);
        if (!causal) *hi = std::min<int64_t>(n_keys, p + window + 1);
    }
}

PoolDims check_pool(const Tensor & out, const Tensor & x, const std::vector<AttentionSeq> & seqs) {
    check_f32(out, "pool", "out"); check_f32(x, "pool", "x");
    ZT_CHECK(x.dims() == 2, "pool: x must be (T,C), got {}", x.shape_str());
    const int64_t T = x.dim(0), C = x.dim(1), B = int64_t(seqs.size());
    ZT_CHECK(out.numel() == B * C, "pool: out {} != (B={}, C={})", out.shape_str(), B, C);
    for (int64_t b = 0; b < B; ++b) {
        const AttentionSeq & q = seqs[size_t(b)];
        ZT_CHECK(q.n_tokens > 0 && q.row0 >= 0 && int64_t(q.row0) + q.n_tokens <= T, "pool: sequence {} has rows "
                 "{}..{} outside the step's {} tokens", b, q.row0, int64_t(q.row0) + q.n_tokens, T);
    }
    return {T, C, B};
}

SampleDims check_sample(const Tensor & ids, const Tensor & logits, const std::vector<SampleRow> & rows) {
    check_f32(logits, "sample", "logits");
    ZT_CHECK(ids.dtype == DType::I32, "sample: ids must be I32");
    ZT_CHECK(logits.dims() == 2, "sample: logits must be (R,V), got {}", logits.shape_str());
    const int64_t R = logits.dim(0), V = logits.dim(1);
    ZT_CHECK(ids.numel() == R && int64_t(rows.size()) == R, "sample: {} logits rows, {} ids, {} parameter rows",
             R, ids.numel(), rows.size());
    return {R, V};
}

}  // namespace zt
