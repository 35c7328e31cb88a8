// The CPU matmul's batch invariance on each of its paths (cpu_matmul.h): row t of a T-row call is bit-identical
// (memcmp) to the same row computed alone (T = 1) and inside other batches (T = 3, 17, 129, at other offsets),
// whatever the thread count, on float and on quantized (GGUF block) weights. On quantized weights each path gives
// the same bits as itself on the dequantized F32 weights, and each path's dequantizer (cpu_dequant.h) gives
// dequantize_row's bits. Its agreement with the sgemv reference is test_backend_ops's MatmulPaths /
// QuantPaths (tests/backend_ops/matmul_cases.cpp, quant_cases.cpp).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/cpu_dequant.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/model/dtype.h"
#include "tests/backend_ops/random_blocks.h"

namespace zt {
namespace {

struct Problem {
    int64_t T, N, K;
    DType wt;
    std::vector<float> x;              // (T,K)
    std::vector<unsigned char> w, b;   // (N,K), (N) of wt
    Problem(int64_t T_, int64_t N_, int64_t K_, DType wt_, uint32_t seed) : T(T_), N(N_), K(K_), wt(wt_) {
        std::mt19937 g(seed);
        auto u = [&] { return float(g() >> 8) * 0x1.0p-23f - 1.0f; };   // [-1, 1)
        x.resize(size_t(T * K));
        for (float & v : x) v = u();
        std::vector<float> wf(size_t(N * K)), bf(static_cast<size_t>(N));
        for (float & v : wf) v = u();
        for (float & v : bf) v = u();
        const DType bt = dtype_is_quantized(wt) ? DType::BF16 : wt;   // a quantized W's bias: BF16
        b.resize(bf.size() * dtype_size(bt));
        convert_from_f32(b.data(), bt, bf.data(), bf.size());
        if (dtype_is_quantized(wt)) {   // random valid blocks
            std::mt19937_64 g64(seed);
            const std::vector<uint8_t> q = test_blocks::random_rows(wt, N, K, g64);
            w.assign(q.begin(), q.end());
            return;
        }
        w.resize(wf.size() * dtype_size(wt));
        convert_from_f32(w.data(), wt, wf.data(), wf.size());
    }
    // rows [t0, t0+n) of x through `path` with `threads` threads: (n,N)
    std::vector<float> run(CpuMatmulPath path, int64_t t0, int64_t n, int threads, bool bias) {
        ThreadPool pool(threads);
        std::vector<float> out(size_t(n * N), -1.0f);
        const Tensor wt_(w.data(), wt, {N, K}),
            bt(bias ? b.data() : nullptr, dtype_is_quantized(wt) ? DType::BF16 : wt, {N});
        cpu_matmul(path, pool, out.data(), x.data() + t0 * K, wt_, bt, n, N, K);
        return out;
    }
};

TEST(BatchInvarianceCpuMatmul, EveryRowIsTheSameBitsInEveryBatchOnEveryPath) {
    const int64_t T = 129;
    for (CpuMatmulPath path : cpu_matmul_supported_paths())
        for (DType wt : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_K, DType::Q6_K})
            for (int64_t K : dtype_is_quantized(wt) ? std::vector<int64_t>{256, 1280} : std::vector<int64_t>{7, 33, 577, 1100})
                for (int64_t N : {5, 130}) {
                    Problem p(T, N, K, wt, uint32_t(K * 1000 + N));
                    const bool bias = N == 5;
                    const std::string what = fmt::format("{} w={} K={} N={}{}", cpu_matmul_path_name(path),
                                                         dtype_name(wt), K, N, bias ? " bias" : "");
                    const std::vector<float> full = p.run(path, 0, T, 2, bias);
                    // each batch: (first row, rows, threads)
                    const int64_t batches[][3] = {{0, 1, 1}, {5, 1, 2}, {128, 1, 1}, {0, 3, 1}, {62, 3, 3},
                                                  {7, 17, 2}, {100, 17, 1}, {0, 129, 1}, {0, 129, 3}};
                    for (const auto & bt : batches) {
                        const std::vector<float> got = p.run(path, bt[0], bt[1], int(bt[2]), bias);
                        for (int64_t r = 0; r < bt[1]; ++r)
                            EXPECT_EQ(0, std::memcmp(got.data() + r * N, full.data() + (bt[0] + r) * N,
                                                     size_t(N) * sizeof(float)))
                                << what << ": row " << bt[0] + r << " in a batch of " << bt[1] << " rows from row "
                                << bt[0] << " with " << bt[2] << " threads differs from the 129-row call";
                    }
                }
}

// Each path's per-element arithmetic does not depend on the element's place in a tile: a W row's output for a
// token equals the output of the same W row alone (N = 1), at every N position of the tile. (Not a property of
// the sgemv reference, whose panels depend on N; the model never changes N of a weight.)
TEST(BatchInvarianceCpuMatmul, EveryColumnIsTheSameBitsWhateverTheTile) {
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        Problem p(5, 13, 100, DType::BF16, 7);
        const std::vector<float> full = p.run(path, 0, 5, 1, false);
        for (int64_t n = 0; n < p.N; ++n) {
            Problem one(5, 1, 100, DType::BF16, 7);
            one.x = p.x;
            one.w.assign(p.w.begin() + long(n * p.K * 2), p.w.begin() + long((n + 1) * p.K * 2));
            const std::vector<float> col = one.run(path, 0, 5, 1, false);
            for (int64_t t = 0; t < 5; ++t)
                EXPECT_EQ(0, std::memcmp(&col[size_t(t)], &full[size_t(t * p.N + n)], sizeof(float)))
                    << cpu_matmul_path_name(path) << ": W row " << n << ", token " << t;
        }
    }
}

// Each path's dequantizer gives dequantize_row's bits for every block type, scales of every kind included (zero,
// subnormal, the largest half, either sign), at lengths of one block and of many.
TEST(QuantCpuMatmul, EveryPathDequantizesToTheReferenceBits) {
    std::mt19937_64 g(11);
    for (CpuMatmulPath path : cpu_matmul_supported_paths())
        for (DType t : test_blocks::kQuantTypes)
            for (int64_t K : {int64_t(dtype_block_weights(t)), int64_t(2048)}) {
                const std::vector<uint8_t> q = test_blocks::random_rows(t, 3, K, g, true);
                const std::vector<float> want = test_blocks::dequantized(t, q, 3, K);
                std::vector<float> got(want.size(), -1.0f);
                cpu_dequant_fn(path, quant_type_of(t))(q.data(), got.data(), 3 * K);
                int bad = 0;
                for (size_t i = 0; i < want.size(); ++i)
                    if (std::memcmp(&want[i], &got[i], 4) != 0 && bad++ < 3)
                        ADD_FAILURE() << cpu_matmul_path_name(path) << " " << dtype_name(t) << " weight " << i << ": "
                                      << got[i] << " vs dequantize_row's " << want[i];
                EXPECT_EQ(bad, 0) << cpu_matmul_path_name(path) << " " << dtype_name(t) << " K=" << K;
            }
}

// On quantized W, each path gives the same bits as itself on the dequantized F32 W (64-byte aligned, as the
// reference's panels are): the dequantized values are exact and the kernels the same. Odd T and N, K one block to
// several K blocks of 512, with and without a bias.
TEST(QuantCpuMatmul, EveryPathGivesItsOwnBitsOnTheDequantizedWeights) {
    for (CpuMatmulPath path : cpu_matmul_supported_paths())
        for (DType t : test_blocks::kQuantTypes)
            for (int64_t K : {int64_t(dtype_block_weights(t)), int64_t(768), int64_t(1280)})
                for (int64_t N : {1, 7, 130})
                    for (int64_t T : {1, 5, 70}) {
                        const bool bias = N == 7;
                        Problem p(T, N, K, t, uint32_t(T * 7 + N * 131 + K));
                        const std::vector<float> deq = test_blocks::dequantized(t, p.w, N, K);
                        AlignedScratch wf;
                        float * wfp = wf.get(deq.size());
                        std::memcpy(wfp, deq.data(), deq.size() * sizeof(float));
                        ThreadPool pool(2);
                        std::vector<float> got(size_t(T * N), -1.0f), want(size_t(T * N), -2.0f);
                        const Tensor bt(bias ? p.b.data() : nullptr, DType::BF16, {N});
                        cpu_matmul(path, pool, got.data(), p.x.data(), Tensor(p.w.data(), t, {N, K}), bt, T, N, K);
                        cpu_matmul(path, pool, want.data(), p.x.data(), Tensor(wfp, DType::F32, {N, K}), bt, T, N, K);
                        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
                            << cpu_matmul_path_name(path) << " " << dtype_name(t) << " T=" << T << " N=" << N
                            << " K=" << K << (bias ? " bias" : "") << ": differs from the F32 path on the dequantized W";
                    }
}

}  // namespace
}  // namespace zt
