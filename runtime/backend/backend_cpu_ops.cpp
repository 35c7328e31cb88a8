// The ops of the CPU backend (see backend_cpu.cpp for its memory, streams and events; the class is in
// backend_cpu_impl.h): the readable reference of every op in backend.h. fp32 arithmetic over F32/F16/BF16 weights
// (matmul weights and embedding tables also of a GGUF block type, dequantized exactly: cpu_dequant.h), GEMM in cpu_matmul.h, multi-threaded with a small pool (parallel_for.h). The plain loops here run on the
// "reference" kernel path (CpuBackendOptions::kernel_path, ZT_CPU_MATMUL); the other paths call the vectorised
// versions beside them, tested equal: cpu_attention.h (attention), cpu_rowwise.h (the row-wise ops, sampling).
//
// Ops ignore their stream argument and always run on the calling thread (the compute stream's order).
//
// Batch invariance (a hard requirement, see backend.h). Measured with OpenBLAS 0.3.21 (DYNAMIC_ARCH, Cooperlake
// kernels): cblas_sgemm gives a row different bits depending on M (the number of rows in the call, e.g. M = 5
// vs 1, even single-threaded: edge kernels and the small-matrix path sum K differently), and sgemm with M = 1
// differs from sgemv. So matmul never calls sgemm: it runs cpu_matmul (cpu_matmul.h), whose readable reference
// is one sgemv per (token row, W panel) and whose fast paths (AVX-512, AVX2, portable; picked at run time,
// ZT_CPU_MATMUL forces one) are register-blocked micro-kernels where every output element is one dot product
// over K in a fixed order, whatever T, tile or thread. OpenBLAS is set to one thread (its own threading would
// split panels by size); the pool spreads work items over threads instead, which never changes the bits.
// Other ops reduce each output element in a fixed order (here: rmsnorm over C in order, attention over keys in
// order; the fast paths write down their own fixed orders).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cpu_impl.h"
#include "runtime/backend/cpu_attention.h"
#include "runtime/backend/cpu_dequant.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/cpu_rowwise.h"
#include "runtime/backend/op_checks.h"
#include "runtime/backend/sample_token.h"
#include "runtime/base/error.h"

namespace zt::cpu_impl {
namespace {

// ---- checks: runtime/backend/op_checks.h ----------------------------------------------------------------------------

// Element i of a weight tensor, widened to fp32.
inline float weight_at(const Tensor & w, int64_t i) {
    switch (w.dtype) {
        case DType::F32: return w.ptr<const float>()[i];
        case DType::BF16: return bf16_to_f32(w.ptr<const uint16_t>()[i]);
        case DType::F16: return f16_to_f32(w.ptr<const uint16_t>()[i]);
        default: return 0.0f;   // excluded by check_weight
    }
}
// Elements [i, i+n) of a weight tensor widened to fp32 into dst.
inline void weight_row(float * dst, const Tensor & w, int64_t i, int64_t n) {
    convert_to_f32(dst, static_cast<const char *>(w.data) + size_t(i) * dtype_size(w.dtype), w.dtype, size_t(n));
}

}  // namespace

void CpuBackend::embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream *) {
    check_f32(out, "embedding", "out");
    check_weight_matrix(table, "embedding", "table", true);   // F32/F16/BF16 or GGUF blocks (whole blocks per row)
    ZT_CHECK(tokens.dtype == DType::I32, "embedding: tokens must be I32");
    ZT_CHECK(table.dims() == 2, "embedding: table must be (V,C), got {}", table.shape_str());
    const int64_t V = table.dim(0), C = table.dim(1), T = tokens.numel();
    ZT_CHECK(out.numel() == T * C, "embedding: out {} != (T={}, C={})", out.shape_str(), T, C);
    const int32_t * tok = tokens.ptr<const int32_t>();
    for (int64_t t = 0; t < T; ++t)
        ZT_CHECK(tok[t] >= 0 && tok[t] < V, "token id {} at position {} is outside the vocabulary [0, {})", tok[t], t, V);
    float * o = out.ptr<float>();
    const char * tab = static_cast<const char *>(table.data);
    const size_t row_bytes = size_t(dtype_row_bytes(table.dtype, C));
    if (dtype_is_quantized(table.dtype)) {   // row = the token's blocks dequantized (cpu_dequant.h: the reference
                                             // path's is dequantize_row, the others vector code with its bits)
        const DequantFn dq = cpu_dequant_fn(path_, quant_type_of(table.dtype));
        pool_.parallel_for(T, 16, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) dq(tab + size_t(tok[t]) * row_bytes, o + t * C, C);
        });
        return;
    }
    if (path_ != CpuMatmulPath::reference) {   // cpu_rowwise.h: the row widened in vector registers (same bits)
        const CpuRowKernels & k = cpu_row_kernels(path_);
        pool_.parallel_for(T, 16, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) k.widen(o + t * C, tab + size_t(tok[t]) * row_bytes, table.dtype, C);
        });
        return;
    }
    pool_.parallel_for(T, 16, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) weight_row(o + t * C, table, int64_t(tok[t]) * C, C);
    });
}

void CpuBackend::rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream *) {
    const RmsnormDims dims = check_rmsnorm(out, x, w);
    const int64_t R = dims.R, C = dims.C;
    const float * xp = x.ptr<const float>();
    float * op = out.ptr<float>();
    if (path_ != CpuMatmulPath::reference) {   // cpu_rowwise.h: the sum of squares in 16 lanes, one fixed tree
        const CpuRowKernels & k = cpu_row_kernels(path_);
        pool_.parallel_for(R, 64, [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) k.rmsnorm(op + r * C, xp + r * C, w.data, w.dtype, eps, C);
        });
        return;
    }
    pool_.parallel_for(R, 64, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
            const float * xr = xp + r * C;
            float * orow = op + r * C;
            float ss = 0.0f;                                  // sum of squares, in order
            for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
            const float inv = 1.0f / std::sqrt(ss / float(C) + eps);   // rsqrt(mean(x^2) + eps)
            for (int64_t c = 0; c < C; ++c) orow[c] = weight_at(w, c) * (xr[c] * inv);
        }
    });
}

void CpuBackend::matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream *) {
    const MatmulDims dims = check_matmul(out, x, w, bias, true);   // w may be of a GGUF block type
    cpu_matmul(path_, pool_, out.ptr<float>(), x.ptr<const float>(), w, bias, dims.T, dims.N,
               dims.K);   // cpu_matmul.h: the sgemv reference and the batch-invariant SIMD paths
}

void CpuBackend::rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream *) {
    const RopeDims dims = check_rope(x, positions, inv_freq);
    const int64_t T = dims.T, H = dims.H, D = dims.D, half = D / 2;
    const int32_t * pos = positions.ptr<const int32_t>();
    const float * freqs = inv_freq.ptr<const float>();
    float * xp = x.ptr<float>();
    const CpuRowKernels * k = path_ == CpuMatmulPath::reference ? nullptr : &cpu_row_kernels(path_);
    if (k && dims.freq_stride == 0 && T > 1) {
        // cpu_rowwise.h: the rotation in vectors (same bits). With one inv_freq table, the cos/sin rows (the same
        // values as below) are computed once per position of the span min..max pos when that is no longer than T
        // (a batch of prefills repeats positions), then every token rotates with its position's row.
        const auto [lo, hi] = std::minmax_element(pos, pos + T);
        const int64_t p0 = *lo, span = int64_t(*hi) - p0 + 1;
        if (span <= T) {
            thread_local AlignedScratch table_buf;   // the calling thread's: (span, D) = cos then sin per position
            float * table = table_buf.get(size_t(span * D));
            pool_.parallel_for(span, 8, [&](int64_t b, int64_t e) {
                for (int64_t p = b; p < e; ++p) {
                    float * cs = table + p * D;
                    for (int64_t i = 0; i < half; ++i) {
                        const float a = float(p0 + p) * freqs[i];
                        cs[i] = float(std::cos(double(a))) * scaling;
                        cs[half + i] = float(std::sin(double(a))) * scaling;
                    }
                }
            });
            pool_.parallel_for(T, 8, [&](int64_t b, int64_t e) {
                for (int64_t t = b; t < e; ++t) k->rope(xp + t * H * D, table + (pos[t] - p0) * D, H, D);
            });
            return;
        }
    }
    pool_.parallel_for(T, 8, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch cs_buf;
        float * cs = cs_buf.get(size_t(2 * half));
        for (int64_t t = b; t < e; ++t) {
            const float * f = freqs + t * dims.freq_stride;
            for (int64_t i = 0; i < half; ++i) {
                const float a = float(pos[t]) * f[i];                    // fp32, as HF's inv_freq @ position_ids
                cs[i] = float(std::cos(double(a))) * scaling;            // HF: emb.cos() * attention_scaling
                cs[half + i] = float(std::sin(double(a))) * scaling;
            }
            if (k) { k->rope(xp + t * H * D, cs, H, D); continue; }   // cpu_rowwise.h: the rotation in vectors (same bits)
            for (int64_t h = 0; h < H; ++h) {
                float * v = xp + (t * H + h) * D;
                for (int64_t i = 0; i < half; ++i) {
                    const float x0 = v[i], x1 = v[i + half], c = cs[i], s = cs[half + i];
                    v[i] = x0 * c + (-x1) * s;
                    v[i + half] = x1 * c + x0 * s;
                }
            }
        }
    });
}

void CpuBackend::kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                          const std::vector<AttentionSeq> & seqs, Stream *) {
    const KvStoreDims dims = check_kv_store(k_cache, v_cache, k, v, seqs);
    const int64_t M = dims.M, row = dims.row;
    for (const AttentionSeq & q : seqs) {
        for (int32_t i = 0; i < q.n_tokens; ++i) {
            const int64_t dst = (int64_t(q.slot) * M + q.past_len + i) * row, src = int64_t(q.row0 + i) * row;
            std::memcpy(k_cache.ptr<float>() + dst, k.ptr<const float>() + src, size_t(row) * sizeof(float));
            std::memcpy(v_cache.ptr<float>() + dst, v.ptr<const float>() + src, size_t(row) * sizeof(float));
        }
    }
}

void CpuBackend::attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                           const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream *) {
    const AttentionDims dims = check_attention(out, q, k_cache, v_cache, seqs, window);
    const int64_t T = dims.T, H = dims.H, D = dims.D, M = dims.M, KV = dims.KV;
    if (path_ != CpuMatmulPath::reference) {   // the vectorised kernels (cpu_attention.h); this loop is their spec
        CpuAttentionArgs a;
        a.q = q.ptr<const float>();
        a.k_cache = k_cache.ptr<const float>();
        a.v_cache = v_cache.ptr<const float>();
        a.out = out.ptr<float>();
        a.T = T; a.H = H; a.D = D; a.M = M; a.KV = KV;
        a.causal = causal;
        a.window = window;
        cpu_attention(path_, pool_, a, seqs);
        return;
    }
    // Work items: (token row, head). seq_of[t] finds each row's sequence.
    std::vector<int32_t> seq_of(size_t(T), -1);
    for (size_t i = 0; i < seqs.size(); ++i) {
        for (int32_t r = 0; r < seqs[i].n_tokens; ++r) seq_of[size_t(seqs[i].row0 + r)] = int32_t(i);
    }
    const float scale = float(1.0 / std::sqrt(double(D)));   // head_dim ** -0.5
    const int64_t group = H / KV;
    const float * qp = q.ptr<const float>();
    const float * kp = k_cache.ptr<const float>();
    const float * vp = v_cache.ptr<const float>();
    float * op = out.ptr<float>();
    pool_.parallel_for(T * H, 4, [&](int64_t b, int64_t e) {
        thread_local AlignedScratch score_buf;
        for (int64_t item = b; item < e; ++item) {
            const int64_t t = item / H, h = item % H, kvh = h / group;
            float * o = op + (t * H + h) * D;
            if (seq_of[size_t(t)] < 0) { std::memset(o, 0, size_t(D) * sizeof(float)); continue; }
            const AttentionSeq & sq = seqs[size_t(seq_of[size_t(t)])];
            const int64_t pos = sq.past_len + (t - sq.row0);
            int64_t lo = 0, hi = 0;   // the keys this query sees
            attention_key_range(pos, int64_t(sq.past_len) + sq.n_tokens, causal, window, &lo, &hi);
            const int64_t n_keys = hi - lo;
            const float * qh = qp + (t * H + h) * D;
            const float * kbase = kp + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;   // key lo + j at + j*KV*D
            const float * vbase = vp + ((int64_t(sq.slot) * M + lo) * KV + kvh) * D;
            float * sc = score_buf.get(size_t(n_keys));
            float mx = -INFINITY;
            for (int64_t j = 0; j < n_keys; ++j) {
                const float * kj = kbase + j * KV * D;
                float dot = 0.0f;
                for (int64_t d = 0; d < D; ++d) dot += qh[d] * kj[d];
                sc[j] = dot * scale;
                mx = std::max(mx, sc[j]);
            }
            float sum = 0.0f;
            for (int64_t j = 0; j < n_keys; ++j) { sc[j] = std::exp(sc[j] - mx); sum += sc[j]; }
            for (int64_t j = 0; j < n_keys; ++j) sc[j] = sc[j] / sum;
            for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
            for (int64_t j = 0; j < n_keys; ++j) {
                const float * vj = vbase + j * KV * D;
                const float p = sc[j];
                for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
            }
        }
    });
}

void CpuBackend::swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream *) {
    check_f32(out, "swiglu", "out"); check_f32(gate, "swiglu", "gate"); check_f32(up, "swiglu", "up");
    ZT_CHECK(out.numel() == gate.numel() && up.numel() == gate.numel(), "swiglu: shapes differ: {} {} {}",
             out.shape_str(), gate.shape_str(), up.shape_str());
    const float * g = gate.ptr<const float>();
    const float * u = up.ptr<const float>();
    float * o = out.ptr<float>();
    if (path_ != CpuMatmulPath::reference) {   // cpu_rowwise.h: exp of cpu_simd.h, elementwise
        const CpuRowKernels & k = cpu_row_kernels(path_);
        pool_.parallel_for(out.numel(), 4096, [&](int64_t b, int64_t e) { k.swiglu(o + b, g + b, u + b, e - b); });
        return;
    }
    pool_.parallel_for(out.numel(), 4096, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) o[i] = (g[i] / (1.0f + std::exp(-g[i]))) * u[i];
    });
}

void CpuBackend::add(Tensor out, const Tensor & a, const Tensor & b, Stream *) {
    check_f32(out, "add", "out"); check_f32(a, "add", "a"); check_f32(b, "add", "b");
    ZT_CHECK(out.numel() == a.numel() && b.numel() == a.numel(), "add: shapes differ: {} {} {}",
             out.shape_str(), a.shape_str(), b.shape_str());
    const float * ap = a.ptr<const float>();
    const float * bp = b.ptr<const float>();
    float * o = out.ptr<float>();
    if (path_ != CpuMatmulPath::reference) {   // cpu_rowwise.h (same bits)
        const CpuRowKernels & k = cpu_row_kernels(path_);
        pool_.parallel_for(out.numel(), 16384, [&](int64_t s, int64_t e) { k.add(o + s, ap + s, bp + s, e - s); });
        return;
    }
    pool_.parallel_for(out.numel(), 16384, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) o[i] = ap[i] + bp[i];
    });
}

void CpuBackend::gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream *) {
    check_f32(out, "gather_rows", "out"); check_f32(x, "gather_rows", "x");
    ZT_CHECK(rows.dtype == DType::I32, "gather_rows: rows must be I32");
    ZT_CHECK(x.dims() == 2, "gather_rows: x must be (T,C), got {}", x.shape_str());
    const int64_t T = x.dim(0), C = x.dim(1), R = rows.numel();
    ZT_CHECK(out.numel() == R * C, "gather_rows: out {} != (R={}, C={})", out.shape_str(), R, C);
    const int32_t * r = rows.ptr<const int32_t>();
    for (int64_t i = 0; i < R; ++i) {
        ZT_CHECK(r[i] >= 0 && r[i] < T, "gather_rows: row {} outside [0, {})", r[i], T);
        std::memcpy(out.ptr<float>() + i * C, x.ptr<const float>() + int64_t(r[i]) * C, size_t(C) * sizeof(float));
    }
}

void CpuBackend::pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream *) {
    const PoolDims dims = check_pool(out, x, seqs);
    const int64_t C = dims.C, B = dims.B;
    if (path_ != CpuMatmulPath::reference && mode == Pooling::mean) {   // cpu_rowwise.h: rows in order into a zeroed
                                                                         // sum, row-major (same bits)
        const CpuRowKernels & k = cpu_row_kernels(path_);
        pool_.parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
            thread_local AlignedScratch sum_buf;
            float * acc = sum_buf.get(size_t(C));
            for (int64_t b = b0; b < b1; ++b) {
                const AttentionSeq & q = seqs[size_t(b)];
                float * o = out.ptr<float>() + b * C;
                const float * rows = x.ptr<const float>() + int64_t(q.row0) * C;
                std::memset(acc, 0, size_t(C) * sizeof(float));
                for (int64_t r = 0; r < q.n_tokens; ++r) k.accumulate(acc, rows + r * C, C);
                const float inv = 1.0f / float(q.n_tokens);
                for (int64_t c = 0; c < C; ++c) o[c] = acc[c] * inv;
            }
        });
        return;
    }
    for (int64_t b = 0; b < B; ++b) {
        const AttentionSeq & q = seqs[size_t(b)];
        float * o = out.ptr<float>() + b * C;
        const float * rows = x.ptr<const float>() + int64_t(q.row0) * C;
        if (mode == Pooling::last) {
            std::memcpy(o, rows + int64_t(q.n_tokens - 1) * C, size_t(C) * sizeof(float));
            continue;
        }
        const float inv = 1.0f / float(q.n_tokens);
        for (int64_t c = 0; c < C; ++c) {   // rows in order, fp32, then one multiply
            float acc = 0;
            for (int64_t r = 0; r < q.n_tokens; ++r) acc += rows[r * C + c];
            o[c] = acc * inv;
        }
    }
}

void CpuBackend::sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream *) {
    const SampleDims dims = check_sample(ids, logits, rows);
    const int64_t R = dims.R, V = dims.V;
    if (path_ != CpuMatmulPath::reference) {   // rows spread over the threads (each row alone: the same id)
        pool_.parallel_for(R, 1, [&](int64_t b, int64_t e) {
            thread_local SampleScratch scratch;   // V-sized vectors, kept: page faults every call otherwise
            for (int64_t r = b; r < e; ++r) {
                const SampleRow & p = rows[size_t(r)];
                ids.ptr<int32_t>()[r] = sample_token(path_, logits.ptr<const float>() + r * V, V, p.temperature,
                                                     p.top_k, p.top_p, p.u, scratch);
            }
        });
        return;
    }
    thread_local SampleScratch scratch;   // kept between calls: V-sized vectors, page faults every call otherwise
    for (int64_t r = 0; r < R; ++r) {
        const SampleRow & p = rows[size_t(r)];
        ids.ptr<int32_t>()[r] = sample_token(logits.ptr<const float>() + r * V, V, p.temperature, p.top_k, p.top_p,
                                             p.u, scratch);
    }
}

}  // namespace zt::cpu_impl
