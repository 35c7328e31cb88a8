// The gemm table of `ztinfer bench` (see benchmark.h): the layer's prefill GEMMs through ztinfer's matmul op
// against a plain vendor GEMM of the same shape.
//
// ztinfer's matmul op (f32 activations x W weights -> f32, with its conversions) on the layer's three GEMM shapes at
// T = --prompt tokens, against the plain GEMM of the same shape: on CUDA a bare cublasLtMatmul in bf16 (bf16 in,
// bf16 out, fp32 accumulation, the heuristic's first algorithm: what torch.matmul runs); on CPU OpenBLAS sgemm on
// fp32 copies with every thread (ztinfer's CPU matmul is cpu_matmul.h, batch-invariant by design; ZT_CPU_MATMUL
// picks its path, e.g. reference for the per-row sgemv).
#include <algorithm>
#include <string>
#include <vector>

#include <cblas.h>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#ifdef ZT_HAVE_CUDA
#include <cublasLt.h>

#include "runtime/backend/backend_cuda.h"
#endif

namespace zt::bench_detail {

namespace {

#ifdef ZT_HAVE_CUDA
// Seconds per plain bf16 GEMM D (N x T, column-major) = A^T B, A = w (K x N), B = x (K x T), on `stream`.
double plain_cublaslt_seconds(Backend & be, int64_t T, int64_t N, int64_t K, int iters) {
    Buffer a = be.alloc(size_t(N * K) * 2, MemKind::device, "bench gemm"), x = be.alloc(size_t(T * K) * 2, MemKind::device, "bench gemm"),
           d = be.alloc(size_t(T * N) * 2, MemKind::device, "bench gemm"), ws = be.alloc(size_t(32) << 20, MemKind::device, "bench gemm");
    cudaStream_t stream = cuda_stream_of(be, nullptr);
    cublasLtHandle_t lt = nullptr;
    auto ok = [](cublasStatus_t st, const char * what) {
        ZT_CHECK(st == CUBLAS_STATUS_SUCCESS, "bench gemm: {} failed with cuBLAS status {}", what, int(st));
    };
    ok(cublasLtCreate(&lt), "cublasLtCreate");
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ok(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "set transa");
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "set transb");
    ok(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, uint64_t(K), uint64_t(N), K), "layout A");
    ok(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, uint64_t(K), uint64_t(T), K), "layout B");
    ok(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, uint64_t(N), uint64_t(T), N), "layout D");
    ok(cublasLtMatmulPreferenceCreate(&pref), "preference");
    const size_t ws_bytes = ws.bytes();
    ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes),
       "workspace");
    cublasLtMatmulHeuristicResult_t h{};
    int found = 0;
    ok(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, &h, &found), "heuristic");
    ZT_CHECK(found > 0, "bench gemm: cuBLASLt has no algorithm for {}x{}x{} bf16", N, T, K);
    const float alpha = 1, beta = 0;
    auto run = [&] {
        ok(cublasLtMatmul(lt, op, &alpha, a.data(), la, x.data(), lb, &beta, d.data(), ld, d.data(), ld, &h.algo,
                          ws.data(), ws_bytes, stream), "cublasLtMatmul");
    };
    run();
    be.synchronize(nullptr);
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) run();
    be.synchronize(nullptr);
    const double secs = seconds_since(t0) / iters;
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
    return secs;
}
#endif

// Seconds per OpenBLAS sgemm out (T,N) = x (T,K) . w (N,K)^T on fp32 host copies, with n_threads threads.
double plain_sgemm_seconds(int64_t T, int64_t N, int64_t K, int n_threads, int iters) {
    std::vector<float> x(size_t(T * K), 0.5f), w(size_t(N * K), 0.25f), out(size_t(T * N));
    openblas_set_num_threads(n_threads);
    auto run = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(N), int(K), 1.0f, x.data(), int(K), w.data(),
                    int(K), 0.0f, out.data(), int(N));
    };
    run();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) run();
    const double secs = seconds_since(t0) / iters;
    openblas_set_num_threads(1);   // the CPU backend's setting (see backend_cpu.cpp)
    return secs;
}

}  // namespace

void table_gemm(Bench & b) {
    const Shape & sh = b.shape;
    const RandomModel & rm = b.random_model();
    const LayerWeights L = rm.weights(1).layers[0];
    const int64_t T = b.opt.prompt, iters = std::max(1, b.opt.steps);
#ifdef ZT_HAVE_CUDA
    const bool cuda = is_cuda_backend(b.be);
#else
    const bool cuda = false;
#endif
    std::string cpu_path = "?";   // ZT_CPU_MATMUL's error, if any, is each row's "skipped"
    try { cpu_path = cpu_matmul_path_name(cpu_matmul_default_path()); } catch (const Error &) {}
    b.say("#\n# gemm: prefill GEMMs of {} at T = {} tokens: ztinfer's matmul op (f32 activations, bf16 weights, its "
          "conversions included) vs {}; mean of {} after 1 warm-up; ratio = ztinfer TFLOP/s / plain TFLOP/s\n", sh.name,
          T, cuda ? "a plain cublasLtMatmul in bf16 (bf16 in/out, fp32 accumulation)"
                  : fmt::format("OpenBLAS sgemm on fp32 copies with every thread (the CPU matmul is batch-invariant; path {})",
                              cpu_path),
          iters);
    b.say("# {:>6}  {:>8}  {:>8}  {:>8}  {:>12}  {:>12}  {:>12}  {:>12}  {:>7}\n", "gemm", "T", "N", "K", "ztinfer(us)",
          "plain(us)", "ztTFLOP/s", "plainTFLOP/s", "ratio");
    json rows = json::array();
    struct G { const char * name; const Tensor * w; };
    for (const G & g : {G{"q", &L.q}, G{"gate", &L.gate}, G{"down", &L.down}}) {
        const int64_t N = g.w->dim(0), K = g.w->dim(1);
        RowResult r;
        double plain = 0;
        try {
            Stream * cs = b.be.stream(StreamRole::compute);
            Buffer wb = b.be.alloc(g.w->bytes(), MemKind::device, "bench gemm");
            Buffer xb = b.be.alloc(size_t(T * K) * 4, MemKind::device, "bench gemm");
            Buffer ob = b.be.alloc(size_t(T * N) * 4, MemKind::device, "bench gemm");
            b.be.copy_async(wb.data(), g.w->data, g.w->bytes(), cs);
            std::vector<float> xh(size_t(T * K));
            for (size_t i = 0; i < xh.size(); ++i) xh[i] = float(int(i % 17) - 8) / 8.0f;
            b.be.copy_async(xb.data(), xh.data(), xh.size() * 4, cs);
            const Tensor wt = wb.view(g.w->dtype, g.w->shape), xt = xb.view(DType::F32, {T, K}),
                         ot = ob.view(DType::F32, {T, N});
            b.be.matmul(ot, xt, wt, Tensor(), cs);   // warm-up
            b.be.synchronize(cs);
            const auto t0 = Clock::now();
            for (int64_t i = 0; i < iters; ++i) b.be.matmul(ot, xt, wt, Tensor(), cs);
            b.be.synchronize(cs);
            r.seconds = seconds_since(t0) / double(iters);
            std::vector<float> oh(size_t(T * N));
            b.be.copy_async(oh.data(), ob.data(), oh.size() * 4, cs);
            b.be.synchronize(cs);
            r.wrong = count_non_finite(oh);
#ifdef ZT_HAVE_CUDA
            if (cuda) plain = plain_cublaslt_seconds(b.be, T, N, K, int(iters));
#endif
            if (!cuda) plain = plain_sgemm_seconds(T, N, K, b.n_threads, int(iters));
        } catch (const Error & e) {
            r.skipped = e.message();
        }
        r = across_ranks(b.comm, r);
        b.row_done(r);
        if (!r.skipped.empty()) {
            b.say("  {:>6}  skipped: {}\n", g.name, r.skipped);
            rows.push_back({{"gemm", g.name}, {"skipped", r.skipped}});
            continue;
        }
        const double flop = 2.0 * double(T) * double(N) * double(K);
        const double zt_tf = flop / r.seconds / 1e12, plain_tf = flop / plain / 1e12;
        b.say("  {:>6}  {:>8}  {:>8}  {:>8}  {:>12.1f}  {:>12.1f}  {:>12.3f}  {:>12.3f}  {:>7.3f}\n", g.name, T, N, K,
              r.seconds * 1e6, plain * 1e6, zt_tf, plain_tf, zt_tf / plain_tf);
        rows.push_back({{"gemm", g.name}, {"T", T}, {"N", N}, {"K", K}, {"ztinfer_us", r.seconds * 1e6},
                        {"plain_us", plain * 1e6}, {"ztinfer_tflops", zt_tf}, {"plain_tflops", plain_tf},
                        {"ratio", zt_tf / plain_tf}, {"wrong", r.wrong}});
    }
    b.figures["gemm"] = {{"shape", sh.name}, {"T", T}, {"reference", cuda ? "cublasLt bf16" : "openblas sgemm"},
                         {"rows", rows}};
}

}  // namespace zt::bench_detail
