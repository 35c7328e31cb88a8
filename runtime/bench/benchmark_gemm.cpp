// The gemm table of `ztinfer bench` (see benchmark.h): the layer's prefill GEMMs through ztinfer's matmul op
// against a plain vendor GEMM of the same shape.
//
// ztinfer's matmul op (f32 activations x W weights -> f32, with its conversions) on the layer's three GEMM shapes at
// T = --prompt tokens, against the plain GEMM of the same shape: on CUDA a bare cublasLtMatmul in bf16 (bf16 in,
// bf16 out, fp32 accumulation, the heuristic's first algorithm: what torch.matmul runs); on CPU OpenBLAS sgemm on
// fp32 copies with every thread (ztinfer's CPU matmul is cpu_matmul.h, batch-invariant by design; ZT_CPU_MATMUL
// picks its path, e.g. reference for the per-row sgemv).
// Then the same op on the same shapes with W of each weight dtype (F32, BF16, F16 and the GGUF block types Q8_0 ..
// Q6_K, random valid blocks), as time, GFLOP/s and GB/s of W's bytes (decode at T = 1 reads W once: its bound is
// W's bytes / memory bandwidth), and speed-ups over BF16 and F32 (the ratio of times, i.e. of tokens/s).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <cblas.h>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/model/quant_block.h"
#ifdef ZT_HAVE_CUDA
#include <cublasLt.h>

#include "runtime/backend/backend_cuda.h"
#endif

namespace zt::bench_detail {

// (N,K) weights of dtype dt as bytes (also the profile's, see benchmark_impl.h): floats in [-1, 1) converted; a
// block type's bytes random but for its f16 scale fields (d, and m / dmin where the type has them), set to 2^-6, so
// every weight is finite.
std::vector<uint8_t> bench_weights(DType dt, int64_t N, int64_t K) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    auto next = [&] { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; };
    if (!dtype_is_quantized(dt)) {
        std::vector<float> f(size_t(N * K));
        for (float & v : f) v = float(int64_t(next() >> 40) - (int64_t(1) << 23)) * 0x1.0p-23f;
        std::vector<uint8_t> out(f.size() * dtype_size(dt));
        convert_from_f32(out.data(), dt, f.data(), f.size());
        return out;
    }
    const QuantLayout & l = quant_layout(quant_type_of(dt));
    std::vector<uint8_t> out(size_t(N * dtype_row_bytes(dt, K)));
    for (uint8_t & v : out) v = uint8_t(next() >> 56);
    const uint16_t scale = f32_to_f16(0x1.0p-6f);
    const std::vector<size_t> fields = dt == DType::Q6_K ? std::vector<size_t>{208} : std::vector<size_t>{0, 2};
    for (size_t at = 0; at < out.size(); at += size_t(l.block_bytes))
        for (size_t f : fields) std::memcpy(&out[at + f], &scale, 2);   // Q8_0 / Q4_0: bytes 2-3 are weights
    return out;
}

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

// Seconds per matmul op out (T,N) = x (T,K) . w^T on b's backend (1 warm-up, then `iters`), w the host bytes
// (w_bytes) of an (N,K) weight of dtype dt; wrong counts non-finite outputs. Throws what the backend throws (a dtype
// it lacks).
RowResult time_matmul(Bench & b, const void * w, size_t w_bytes, DType dt, int64_t T, int64_t N, int64_t K,
                      int64_t iters) {
    RowResult r;
    Stream * cs = b.be.stream(StreamRole::compute);
    Buffer wb = b.be.alloc(w_bytes, MemKind::device, "bench gemm");
    Buffer xb = b.be.alloc(size_t(T * K) * 4, MemKind::device, "bench gemm");
    Buffer ob = b.be.alloc(size_t(T * N) * 4, MemKind::device, "bench gemm");
    b.be.copy_async(wb.data(), w, w_bytes, cs);
    std::vector<float> xh(size_t(T * K));
    for (size_t i = 0; i < xh.size(); ++i) xh[i] = float(int(i % 17) - 8) / 8.0f;
    b.be.copy_async(xb.data(), xh.data(), xh.size() * 4, cs);
    const Tensor wt = wb.view(dt, {N, K}), xt = xb.view(DType::F32, {T, K}), ot = ob.view(DType::F32, {T, N});
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
    return r;
}

// The layer's GEMM shapes with W of every weight dtype (see the top of the file).
void table_gemm_dtypes(Bench & b, const LayerWeights & L, int64_t T, int64_t iters) {
    b.say("#\n# gemm by weight dtype: the same op and shapes at T = {}, W of each dtype (block types: random valid "
          "blocks); GB/s = W's bytes / time; x_bf16, x_f32 = the BF16 / F32 row's time / this row's\n", T);
    b.say("# {:>6}  {:>5}  {:>8}  {:>8}  {:>8}  {:>12}  {:>10}  {:>8}  {:>7}  {:>7}\n", "gemm", "w", "T", "N", "K",
          "ztinfer(us)", "GFLOP/s", "W GB/s", "x_bf16", "x_f32");
    json rows = json::array();
    struct G { const char * name; const Tensor * w; };
    for (const G & g : {G{"q", &L.q}, G{"gate", &L.gate}, G{"down", &L.down}}) {
        const int64_t N = g.w->dim(0), K = g.w->dim(1);
        double f32_s = 0, bf16_s = 0;
        for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K,
                         DType::Q5_K, DType::Q6_K}) {
            RowResult r;
            int64_t bytes = 0;
            try {
                const std::vector<uint8_t> w = bench_weights(dt, N, K);   // throws: K not whole blocks
                bytes = int64_t(w.size());
                r = time_matmul(b, w.data(), w.size(), dt, T, N, K, iters);
            } catch (const Error & e) {
                r.skipped = e.message();
            }
            r = across_ranks(b.comm, r);
            b.row_done(r);
            if (!r.skipped.empty()) {
                b.say("  {:>6}  {:>5}  skipped: {}\n", g.name, dtype_name(dt), r.skipped);
                rows.push_back({{"gemm", g.name}, {"w", dtype_name(dt)}, {"skipped", r.skipped}});
                continue;
            }
            if (dt == DType::F32) f32_s = r.seconds;
            if (dt == DType::BF16) bf16_s = r.seconds;
            const double gflops = 2.0 * double(T) * double(N) * double(K) / r.seconds / 1e9;
            const double gbs = double(bytes) / r.seconds / 1e9;
            const double x_bf16 = bf16_s > 0 ? bf16_s / r.seconds : 0, x_f32 = f32_s > 0 ? f32_s / r.seconds : 0;
            b.say("  {:>6}  {:>5}  {:>8}  {:>8}  {:>8}  {:>12.1f}  {:>10.1f}  {:>8.2f}  {:>7.2f}  {:>7.2f}\n", g.name,
                  dtype_name(dt), T, N, K, r.seconds * 1e6, gflops, gbs, x_bf16, x_f32);
            rows.push_back({{"gemm", g.name}, {"w", dtype_name(dt)}, {"T", T}, {"N", N}, {"K", K},
                            {"ztinfer_us", r.seconds * 1e6}, {"gflops", gflops}, {"w_gbs", gbs}, {"x_bf16", x_bf16},
                            {"x_f32", x_f32}, {"wrong", r.wrong}});
        }
    }
    b.figures["gemm_dtypes"] = {{"T", T}, {"rows", rows}};
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
            r = time_matmul(b, g.w->data, g.w->bytes(), g.w->dtype, T, N, K, iters);
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
    table_gemm_dtypes(b, L, T, iters);
}

}  // namespace zt::bench_detail
