// The CPU matmul's batch invariance on each of its paths (cpu_matmul.h): row t of a T-row call is bit-identical
// (memcmp) to the same row computed alone (T = 1) and inside other batches (T = 3, 17, 129, at other offsets),
// whatever the thread count. Its agreement with the sgemv reference is test_backend_ops's
// MatmulPaths.FastPathsMatchTheReferenceOnOddSizes (tests/backend_ops/matmul_cases.cpp).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/model/dtype.h"

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
        w.resize(wf.size() * dtype_size(wt));
        b.resize(bf.size() * dtype_size(wt));
        convert_from_f32(w.data(), wt, wf.data(), wf.size());
        convert_from_f32(b.data(), wt, bf.data(), bf.size());
    }
    // rows [t0, t0+n) of x through `path` with `threads` threads: (n,N)
    std::vector<float> run(CpuMatmulPath path, int64_t t0, int64_t n, int threads, bool bias) {
        ThreadPool pool(threads);
        std::vector<float> out(size_t(n * N), -1.0f);
        const Tensor wt_(w.data(), wt, {N, K}), bt(bias ? b.data() : nullptr, wt, {N});
        cpu_matmul(path, pool, out.data(), x.data() + t0 * K, wt_, bt, n, N, K);
        return out;
    }
};

TEST(BatchInvarianceCpuMatmul, EveryRowIsTheSameBitsInEveryBatchOnEveryPath) {
    const int64_t T = 129;
    for (CpuMatmulPath path : cpu_matmul_supported_paths())
        for (DType wt : {DType::F32, DType::BF16, DType::F16})
            for (int64_t K : {7, 33, 577, 1100})
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

}  // namespace
}  // namespace zt
