// The ops of the CUDA backend (see backend_cuda.cpp for its device, streams and memory): each checks its arguments
// as the CPU backend does (op_checks.h) and launches kernels/kernels.h on its stream; matmul goes through cuBLASLt.
//
// Ops. Small per-call metadata (AttnSeq arrays, kv_store destination rows, sampling parameters) is uploaded from
// host vectors with cudaMemcpyAsync on the op's stream into per-stream device scratch (a pageable source is staged
// before the call returns); the sequence list of attention/pool and the destination rows of kv_store are cached
// per stream (same seqs => no upload), since every layer of a step uses the same ones. Attention uses
// attention_decode when every sequence has one new token (sequence b = row b), else attention_prefill.
//
// GEMM. matmul: out (T,N) f32 = x (T,K) f32 · w (N,K)^T through cuBLASLt with CUBLAS_COMPUTE_32F (fp32 accumulate,
// never TF32). Row-major out (T,N) is column-major (N,T), so D = op(A)·B with A = w (transa = T, stored K x N,
// lda = K), B = x (transb = N, K x T, ldb = K), m = N, n = T, k = K, C = D f32 (N x T, ldc = N). Operand dtype =
// options.compute_dtype ("auto": the weight's; "fp32": bf16/f16 weights are widened into scratch; "bf16"/"fp16": x,
// and weights of another dtype, are narrowed into scratch). Bias: kernels::add_bias afterwards. Descriptors,
// layouts and the heuristic's algorithm are cached per (m, n, k, dtype, pointer alignments): a given shape always
// runs the same algorithm, so the same inputs give bit-identical outputs run to run (the heuristic is a function
// of the problem, the fixed 32 MiB workspace and the GPU; cuBLASLt's split-K schemes reduce in a fixed order:
// in place with counters that "guarantee the sequentiality", or in a separate pass). Different T may use different
// algorithms, so unlike the CPU backend a row's bits can depend on how many rows share the call.
// A quantized w (Q8_0 .. Q6_K) and a quantized embedding table: backend_cuda_quant.cpp (its top comment says
// which path each T takes and which operand dtype compute_dtype gives it).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cuda_impl.h"
#include "runtime/backend/op_checks.h"
#include "runtime/base/error.h"

namespace zt::cuda_impl {
namespace {

constexpr size_t kMaxGemmPlans = 4096;                      // plan cache bound (cleared when full; see gemm_plan)

static_assert(sizeof(AttentionSeq) == 4 * sizeof(int32_t) && std::is_trivially_copyable_v<AttentionSeq>,
              "AttentionSeq is compared with memcmp");

// ---- argument checks: runtime/backend/op_checks.h (shared with the CPU backend) --------------------------------

bool same_seqs(const std::vector<AttentionSeq> & a, const std::vector<AttentionSeq> & b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(AttentionSeq)) == 0);
}

}  // namespace

// ---- shared with backend_cuda_quant.cpp (backend_cuda_impl.h) ----------------------------------------------------
kernels::WType wtype_of(DType t) {
    switch (t) {
        case DType::F32: return kernels::WType::f32;
        case DType::F16: return kernels::WType::f16;
        case DType::BF16: return kernels::WType::bf16;
        default: break;
    }
    ZT_FAIL("cuda backend: {} is not a weight dtype (F32, F16 or BF16)", dtype_name(t));
}
cudaDataType_t cuda_type_of(DType t) {
    switch (t) {
        case DType::F32: return CUDA_R_32F;
        case DType::F16: return CUDA_R_16F;
        case DType::BF16: return CUDA_R_16BF;
        default: break;
    }
    ZT_FAIL("cuda backend: {} is not a GEMM operand dtype (F32, F16 or BF16)", dtype_name(t));
}

// Largest power of two (<= 256) dividing the address: the alignment cuBLASLt may assume for the pointer.
uint32_t alignment_of(const void * p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a == 0) return 256;
    return uint32_t(std::min<uintptr_t>(a & (~a + 1), 256));
}

// ---- cuBLASLt plans ------------------------------------------------------------------------------------------
struct GemmPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;   // d is also C (beta = 0, in place)
    cublasLtMatmulAlgo_t algo{};
    GemmPlan() = default;
    GemmPlan(const GemmPlan &) = delete;
    GemmPlan & operator=(const GemmPlan &) = delete;
    ~GemmPlan() {
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
};

namespace {
struct PreferenceDeleter {
    void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};
}  // namespace

// ---- ops -------------------------------------------------------------------------------------------------------
void CudaBackend::embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream * s) {
    const int i = enter(s, "embedding");
    check_f32(out, "embedding", "out");
    if (dtype_is_quantized(table.dtype)) check_weight_matrix(table, "embedding", "table", /*quantized_ok=*/true);
    else check_weight(table, "embedding", "table");
    ZT_CHECK(tokens.dtype == DType::I32, "embedding: tokens must be I32");
    ZT_CHECK(table.dims() == 2, "embedding: table must be (V,C), got {}", table.shape_str());
    const int64_t C = table.dim(1), T = tokens.numel();
    ZT_CHECK(out.numel() == T * C, "embedding: out {} != (T={}, C={})", out.shape_str(), T, C);
    // token ids live on the device: the caller checks them against V (Forward does, on the host)
    if (T == 0 || C == 0) return;
    ZT_CHECK(tokens.data != nullptr, "embedding: tokens has no data");
    if (dtype_is_quantized(table.dtype)) return embedding_quant(out, tokens, table, i);   // backend_cuda_quant.cpp
    ZT_BE_CUDA(kernels::embedding(out.ptr<float>(), tokens.ptr<const int32_t>(), table.data, wtype_of(table.dtype),
                                  T, C, handle(i)), "embedding kernel (T={}, C={})", T, C);
}

void CudaBackend::rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream * s) {
    const int i = enter(s, "rmsnorm");
    const RmsnormDims dims = check_rmsnorm(out, x, w);
    const int64_t R = dims.R, C = dims.C;
    if (R == 0) return;
    ZT_BE_CUDA(kernels::rmsnorm(out.ptr<float>(), x.ptr<const float>(), w.data, wtype_of(w.dtype), R, C, eps,
                                handle(i)), "rmsnorm kernel (R={}, C={})", R, C);
}

void CudaBackend::matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream * s) {
    const int si = enter(s, "matmul");
    if (dtype_is_quantized(w.dtype)) return matmul_quant(out, x, w, bias, si);   // backend_cuda_quant.cpp
    const MatmulDims dims = check_matmul(out, x, w, bias);
    const int64_t T = dims.T, N = dims.N, K = dims.K;
    if (T == 0 || N == 0) return;
    const cudaStream_t cs = handle(si);

    // operand dtype and the conversions it needs (scratch: [x narrowed][w converted][w widened, 16<->16 only])
    const DType cdt = use_fixed_dtype_ ? fixed_dtype_ : w.dtype;
    const size_t esz = dtype_size(cdt);
    const bool narrow_x = cdt != DType::F32;
    const bool convert_w = w.dtype != cdt;
    const bool two_step = convert_w && cdt != DType::F32 && w.dtype != DType::F32;   // bf16 <-> f16 via f32
    const size_t x_bytes = narrow_x ? round_up(size_t(T) * size_t(K) * esz, 256) : 0;
    const size_t w_bytes = convert_w ? round_up(size_t(N) * size_t(K) * esz, 256) : 0;
    const size_t wf_bytes = two_step ? round_up(size_t(N) * size_t(K) * sizeof(float), 256) : 0;

    OpState & st = ops_[size_t(si)];
    std::lock_guard<std::mutex> lock(st.mu);
    const void * A = w.data;
    const void * B = x.data;
    if (x_bytes + w_bytes + wf_bytes > 0) {
        grow(st.gemm_scratch, x_bytes + w_bytes + wf_bytes, "matmul scratch", false);
        char * base = static_cast<char *>(st.gemm_scratch.data());
        if (narrow_x) {
            ZT_BE_CUDA(kernels::narrow(base, wtype_of(cdt), x.ptr<const float>(), T * K, cs),
                       "matmul: narrowing x ({}x{}) to {}", T, K, dtype_name(cdt));
            B = base;
        }
        if (convert_w) {
            void * wc = base + x_bytes;
            if (cdt == DType::F32) {
                ZT_BE_CUDA(kernels::widen(static_cast<float *>(wc), w.data, wtype_of(w.dtype), N * K, cs),
                           "matmul: widening w ({}x{}) from {} to F32", N, K, dtype_name(w.dtype));
            } else if (w.dtype == DType::F32) {
                ZT_BE_CUDA(kernels::narrow(wc, wtype_of(cdt), w.ptr<const float>(), N * K, cs),
                           "matmul: narrowing w ({}x{}) to {}", N, K, dtype_name(cdt));
            } else {
                float * wf = reinterpret_cast<float *>(base + x_bytes + w_bytes);
                ZT_BE_CUDA(kernels::widen(wf, w.data, wtype_of(w.dtype), N * K, cs),
                           "matmul: widening w ({}x{}) from {} to F32", N, K, dtype_name(w.dtype));
                ZT_BE_CUDA(kernels::narrow(wc, wtype_of(cdt), wf, N * K, cs),
                           "matmul: narrowing w ({}x{}) to {}", N, K, dtype_name(cdt));
            }
            A = wc;
        }
    }

    gemm(st, A, B, out.ptr<float>(), N, T, K, N, cdt, cs);
    if (bias.data)
        ZT_BE_CUDA(kernels::add_bias(out.ptr<float>(), bias.data, wtype_of(bias.dtype), T, N, cs),
                   "matmul: bias kernel (T={}, N={})", T, N);
}

// D (m x n column-major, leading dim ldd >= m; f32) = A^T · B: A (k x m, lda = k) and B (k x n, ldb = k) of cdt, on
// cs with st's workspace (made on first use). The caller holds st.mu. matmul: m = N, n = T, k = K, ldd = N.
void CudaBackend::gemm(OpState & st, const void * A, const void * B, float * D, int64_t m, int64_t n, int64_t k,
                       int64_t ldd, DType cdt, cudaStream_t cs) {
    if (!st.workspace) st.workspace = alloc(kWorkspaceBytes, MemKind::device, "cuBLASLt workspace");
    const GemmKey key{m, n, k, ldd, int(cuda_type_of(cdt)), alignment_of(A), alignment_of(B), alignment_of(D)};
    const std::shared_ptr<const GemmPlan> plan = gemm_plan(key);
    const float alpha = 1.0f, beta = 0.0f;
    ZT_BE_CUBLAS(cublasLtMatmul(lt_, plan->desc, &alpha, A, plan->a, B, plan->b, &beta, D, plan->d, D, plan->d,
                                &plan->algo, st.workspace.data(), kWorkspaceBytes, cs),
                 "matmul: cublasLtMatmul (T={}, N={}, K={}, {})", n, m, k, dtype_name(cdt));
}

void CudaBackend::rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream * s) {
    const int i = enter(s, "rope");
    const RopeDims dims = check_rope(x, positions, inv_freq);
    const int64_t T = dims.T, H = dims.H, D = dims.D;
    if (T == 0 || H == 0 || D == 0) return;
    ZT_CHECK(positions.data != nullptr, "rope: positions has no data");
    ZT_BE_CUDA(kernels::rope(x.ptr<float>(), positions.ptr<const int32_t>(), inv_freq.ptr<const float>(),
                             dims.freq_stride, scaling, T, H, D, handle(i)), "rope kernel (T={}, H={}, D={})", T, H, D);
}

void CudaBackend::kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                           const std::vector<AttentionSeq> & seqs, Stream * s) {
    const int si = enter(s, "kv_store");
    const KvStoreDims dims = check_kv_store(k_cache, v_cache, k, v, seqs);
    const int64_t S = dims.S, M = dims.M, row = dims.row;
    ZT_CHECK(S * M <= int64_t(std::numeric_limits<int32_t>::max()), "kv_store: the cache's {} x {} positions "
             "exceed the int32 row index of the CUDA kernel; lower the batch size or the context length", S, M);
    const cudaStream_t cs = handle(si);
    OpState & st = ops_[size_t(si)];
    std::lock_guard<std::mutex> lock(st.mu);
    const KvUpload & u = upload_kv_rows(st, seqs, M, cs);
    const int32_t * dest = static_cast<const int32_t *>(u.buf.data());
    for (const KvRun & r : u.runs)
        ZT_BE_CUDA(kernels::kv_store(k_cache.ptr<float>(), v_cache.ptr<float>(), k.ptr<const float>() + r.src0 * row,
                                     v.ptr<const float>() + r.src0 * row, dest + r.entry0, r.n, row, cs),
                   "kv_store kernel (rows {}..{}, {} floats each)", r.src0, r.src0 + r.n, row);
}

void CudaBackend::attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                            const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream * s) {
    const int si = enter(s, "attention");
    const AttentionDims dims = check_attention(out, q, k_cache, v_cache, seqs, window);
    const int64_t T = dims.T, H = dims.H, D = dims.D, M = dims.M, KV = dims.KV;
    if (T == 0 || H == 0 || D == 0) return;
    ZT_CHECK(D <= 256, "attention: head dim D = {} is over 256, the most the CUDA attention kernels support", D);
    const cudaStream_t cs = handle(si);
    OpState & st = ops_[size_t(si)];
    std::lock_guard<std::mutex> lock(st.mu);
    const SeqUpload & u = upload_seqs(st, seqs, T, cs);
    ZT_CHECK(u.shared_row < 0, "attention: row {} of q belongs to two sequences; each row must belong to one",
             u.shared_row);
    // rows of no sequence are zero (as on the CPU)
    if (!u.covers_all)
        ZT_BE_CUDA(cudaMemsetAsync(out.data, 0, out.bytes(), cs), "attention: zeroing out");
    if (u.n_active == 0) return;
    const auto * dseqs = static_cast<const kernels::AttnSeq *>(u.buf.data());
    if (u.decode)
        ZT_BE_CUDA(kernels::attention_decode(out.ptr<float>(), q.ptr<const float>(), k_cache.ptr<const float>(),
                                             v_cache.ptr<const float>(), dseqs, u.n_active, H, KV, D, M, causal, window,
                                             cs),
                   "attention_decode kernel ({} sequences, H={}, KV={}, D={}, M={})", u.n_active, H, KV, D, M);
    else
        ZT_BE_CUDA(kernels::attention_prefill(out.ptr<float>(), q.ptr<const float>(), k_cache.ptr<const float>(),
                                              v_cache.ptr<const float>(), dseqs, u.n_active, T, H, KV, D, M,
                                              causal, window, cs),
                   "attention_prefill kernel ({} sequences, T={}, H={}, KV={}, D={}, M={})", u.n_active, T, H, KV,
                   D, M);
}

void CudaBackend::swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream * s) {
    const int i = enter(s, "swiglu");
    check_f32(out, "swiglu", "out"); check_f32(gate, "swiglu", "gate"); check_f32(up, "swiglu", "up");
    ZT_CHECK(out.numel() == gate.numel() && up.numel() == gate.numel(), "swiglu: shapes differ: {} {} {}",
             out.shape_str(), gate.shape_str(), up.shape_str());
    const int64_t n = out.numel();
    if (n == 0) return;
    ZT_BE_CUDA(kernels::swiglu(out.ptr<float>(), gate.ptr<const float>(), up.ptr<const float>(), n, handle(i)),
               "swiglu kernel (n={})", n);
}

void CudaBackend::add(Tensor out, const Tensor & a, const Tensor & b, Stream * s) {
    const int i = enter(s, "add");
    check_f32(out, "add", "out"); check_f32(a, "add", "a"); check_f32(b, "add", "b");
    ZT_CHECK(out.numel() == a.numel() && b.numel() == a.numel(), "add: shapes differ: {} {} {}",
             out.shape_str(), a.shape_str(), b.shape_str());
    const int64_t n = out.numel();
    if (n == 0) return;
    ZT_BE_CUDA(kernels::add(out.ptr<float>(), a.ptr<const float>(), b.ptr<const float>(), n, handle(i)),
               "add kernel (n={})", n);
}

void CudaBackend::gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream * s) {
    const int i = enter(s, "gather_rows");
    check_f32(out, "gather_rows", "out"); check_f32(x, "gather_rows", "x");
    ZT_CHECK(rows.dtype == DType::I32, "gather_rows: rows must be I32");
    ZT_CHECK(x.dims() == 2, "gather_rows: x must be (T,C), got {}", x.shape_str());
    const int64_t C = x.dim(1), R = rows.numel();
    ZT_CHECK(out.numel() == R * C, "gather_rows: out {} != (R={}, C={})", out.shape_str(), R, C);
    // row indices live on the device: the caller builds them in [0, T) (Forward does)
    if (R == 0 || C == 0) return;
    ZT_CHECK(rows.data != nullptr, "gather_rows: rows has no data");
    ZT_BE_CUDA(kernels::gather_rows(out.ptr<float>(), x.ptr<const float>(), rows.ptr<const int32_t>(), R, C,
                                    handle(i)), "gather_rows kernel (R={}, C={})", R, C);
}

void CudaBackend::pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode,
                       Stream * s) {
    const int si = enter(s, "pool");
    const PoolDims dims = check_pool(out, x, seqs);
    const int64_t T = dims.T, C = dims.C, B = dims.B;
    if (B == 0 || C == 0) return;
    const cudaStream_t cs = handle(si);
    OpState & st = ops_[size_t(si)];
    std::lock_guard<std::mutex> lock(st.mu);
    const SeqUpload & u = upload_seqs(st, seqs, T, cs);   // every n_tokens > 0: all B sequences uploaded
    const auto * dseqs = static_cast<const kernels::AttnSeq *>(u.buf.data());
    if (mode == Pooling::last)
        ZT_BE_CUDA(kernels::pool_last(out.ptr<float>(), x.ptr<const float>(), dseqs, B, C, cs),
                   "pool_last kernel (B={}, C={})", B, C);
    else
        ZT_BE_CUDA(kernels::pool_mean(out.ptr<float>(), x.ptr<const float>(), dseqs, B, C, cs),
                   "pool_mean kernel (B={}, C={})", B, C);
}

void CudaBackend::sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream * s) {
    const int si = enter(s, "sample");
    const SampleDims dims = check_sample(ids, logits, rows);
    const int64_t R = dims.R, V = dims.V;
    if (R == 0) return;
    ZT_CHECK(V > 0, "sample: logits {} have no vocabulary", logits.shape_str());
    ZT_CHECK(ids.data != nullptr, "sample: ids has no data");
    std::vector<kernels::SampleParams> params(static_cast<size_t>(R));
    for (size_t r = 0; r < rows.size(); ++r)
        params[r] = kernels::SampleParams{rows[r].temperature, rows[r].top_k, rows[r].top_p, rows[r].u};
    const cudaStream_t cs = handle(si);
    OpState & st = ops_[size_t(si)];
    std::lock_guard<std::mutex> lock(st.mu);
    const size_t bytes = params.size() * sizeof(kernels::SampleParams);
    grow(st.sample_params, bytes, "op metadata", true);
    ZT_BE_CUDA(cudaMemcpyAsync(st.sample_params.data(), params.data(), bytes, cudaMemcpyHostToDevice, cs),
               "sample: uploading the parameters of {} rows", R);
    ZT_BE_CUDA(kernels::sample(ids.ptr<int32_t>(), logits.ptr<const float>(),
                               static_cast<const kernels::SampleParams *>(st.sample_params.data()), R, V, cs),
               "sample kernel (R={}, V={})", R, V);
}

// ---- per-stream scratch and metadata -----------------------------------------------------------------------------
// Grows a per-stream device scratch buffer to at least `bytes` (geometrically for metadata, exactly for GEMM
// operands, which can be large). The old buffer's free waits for the queued work that may still read it.
void CudaBackend::grow(Buffer & buf, size_t bytes, const char * purpose, bool geometric) {
    if (buf && buf.bytes() >= bytes) return;
    size_t want = geometric ? std::max(bytes, buf.bytes() + buf.bytes() / 2) : bytes;
    want = round_up(std::max<size_t>(want, 1), geometric ? 4096 : (size_t(2) << 20));
    buf.reset();
    buf = alloc(want, MemKind::device, purpose);
}

// The AttentionSeq list on the device (uploaded unless it is the one uploaded last on this stream).
const SeqUpload & CudaBackend::upload_seqs(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t T,
                                           cudaStream_t cs) {
    SeqUpload & u = st.seqs;
    if (u.valid && u.T == T && same_seqs(u.key, seqs)) return u;
    u.valid = false;
    std::vector<kernels::AttnSeq> active;
    std::vector<char> owned(size_t(T), 0);
    int64_t covered = 0, shared_row = -1;
    for (const AttentionSeq & q : seqs) {   // rows were checked to lie in [0, T)
        if (q.n_tokens == 0) continue;
        active.push_back(kernels::AttnSeq{q.slot, q.past_len, q.n_tokens, q.row0});
        for (int64_t r = q.row0; r < int64_t(q.row0) + q.n_tokens; ++r) {
            if (owned[size_t(r)]) { if (shared_row < 0) shared_row = r; }
            else { owned[size_t(r)] = 1; ++covered; }
        }
    }
    ZT_CHECK(active.size() <= size_t(std::numeric_limits<int>::max()), "too many sequences in one step ({})",
             active.size());
    bool decode = !active.empty() && int64_t(active.size()) == T;
    for (size_t b = 0; decode && b < active.size(); ++b)
        decode = active[b].n_tokens == 1 && active[b].row0 == int32_t(b);
    if (!active.empty()) {
        const size_t bytes = active.size() * sizeof(kernels::AttnSeq);
        grow(u.buf, bytes, "op metadata", true);
        ZT_BE_CUDA(cudaMemcpyAsync(u.buf.data(), active.data(), bytes, cudaMemcpyHostToDevice, cs),
                   "uploading {} sequences' attention metadata", active.size());
    }
    u.key = seqs;
    u.T = T;
    u.n_active = int(active.size());
    u.decode = decode;
    u.covers_all = covered == T;
    u.shared_row = shared_row;
    u.valid = true;
    return u;
}

// The kv_store destination rows on the device, and the launches that use them (cached per (seqs, M)). Rows of
// consecutive sequences go in one launch while their source rows continue each other and no cache slot repeats
// (so one launch never writes a destination twice); anything else keeps the CPU's sequence order.
const KvUpload & CudaBackend::upload_kv_rows(OpState & st, const std::vector<AttentionSeq> & seqs, int64_t M,
                                             cudaStream_t cs) {
    KvUpload & u = st.kv;
    if (u.valid && u.M == M && same_seqs(u.key, seqs)) return u;
    u.valid = false;
    int32_t max_slot = -1;
    for (const AttentionSeq & q : seqs) max_slot = std::max(max_slot, q.slot);
    std::vector<int64_t> slot_run(size_t(max_slot + 1), -1);   // the last run that wrote each slot
    std::vector<int32_t> dest;
    std::vector<KvRun> runs;
    for (const AttentionSeq & q : seqs) {
        if (q.n_tokens == 0) continue;
        const bool extend = !runs.empty() && runs.back().src0 + runs.back().n == q.row0 &&
                            slot_run[size_t(q.slot)] != int64_t(runs.size()) - 1;
        if (!extend) runs.push_back(KvRun{q.row0, 0, int64_t(dest.size())});
        slot_run[size_t(q.slot)] = int64_t(runs.size()) - 1;
        for (int32_t i = 0; i < q.n_tokens; ++i) dest.push_back(int32_t(int64_t(q.slot) * M + q.past_len + i));
        runs.back().n += q.n_tokens;
    }
    if (!dest.empty()) {
        const size_t bytes = dest.size() * sizeof(int32_t);
        grow(u.buf, bytes, "op metadata", true);
        ZT_BE_CUDA(cudaMemcpyAsync(u.buf.data(), dest.data(), bytes, cudaMemcpyHostToDevice, cs),
                   "uploading {} kv_store destination rows", dest.size());
    }
    u.key = seqs;
    u.M = M;
    u.runs = std::move(runs);
    u.valid = true;
    return u;
}

// The cuBLASLt descriptors and algorithm of one GEMM shape (made on first use, then reused: one shape, one
// algorithm). Cleared when it holds kMaxGemmPlans shapes; the heuristic gives the same answer again. Shared
// so that a clear on one thread never frees a plan another thread is passing to cublasLtMatmul (which reads
// the descriptors on the host during the call only).
std::shared_ptr<const GemmPlan> CudaBackend::gemm_plan(const GemmKey & key) {
    std::lock_guard<std::mutex> lock(plans_mu_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    if (plans_.size() >= kMaxGemmPlans) plans_.clear();
    auto p = std::make_shared<GemmPlan>();
    const cudaDataType_t t = cudaDataType_t(key.type);
    const uint64_t m = uint64_t(key.m), n = uint64_t(key.n), k = uint64_t(key.k);
    const auto what = [&] {
        return fmt::format("matmul plan (m=N={}, n=T={}, k=K={}, ldd={}, {} operands, fp32 accumulate)", key.m,
                           key.n, key.k, key.ldd, t == CUDA_R_32F ? "F32" : t == CUDA_R_16BF ? "BF16" : "F16");
    };
    ZT_BE_CUBLAS(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "{}", what());
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    ZT_BE_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "{}", what());
    ZT_BE_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "{}", what());
    // column-major views of the row-major tensors: w (N,K) = K x N, x (T,K) = K x T, out (T,N) = N x T
    ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->a, t, k, m, int64_t(k)), "{}", what());
    ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->b, t, k, n, int64_t(k)), "{}", what());
    ZT_BE_CUBLAS(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, m, n, key.ldd), "{}", what());

    cublasLtMatmulPreference_t raw_pref = nullptr;
    ZT_BE_CUBLAS(cublasLtMatmulPreferenceCreate(&raw_pref), "{}", what());
    const std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PreferenceDeleter> pref(raw_pref);
    const uint64_t ws = kWorkspaceBytes;
    ZT_BE_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                      sizeof(ws)), "{}", what());
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
    for (const auto & [attr, value] : aligns)
        ZT_BE_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &value, sizeof(value)), "{}", what());

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_, p->desc, p->a, p->b, p->d, p->d, pref.get(),
                                                                 1, &result, &found);
    ZT_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS,
             "{}: cuBLASLt has no algorithm for it on GPU {} ({}); try another ztinfer.compute_dtype", what(),
             core_->device, status != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusName(status)
                            : found == 0 ? "the heuristic returned none" : cublasLtGetStatusName(result.state));
    p->algo = result.algo;
    plans_.emplace(key, p);
    return p;
}

}  // namespace zt::cuda_impl
