// CpuSimd: the vector exp of runtime/backend/cpu_simd.h: the one-lane form within 2 ulp of std::exp over the float
// range (and its edges: overflow, underflow, NaN), and the AVX2 / AVX-512 forms bit-identical to it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/cpu_simd.h"

namespace zt {
namespace {

int64_t ulps(float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    if ((ia < 0) != (ib < 0)) return a == b ? 0 : INT32_MAX;
    return std::llabs(int64_t(ia) - int64_t(ib));
}

// Inputs: a dense sweep of [-90, 90] plus the edges.
std::vector<float> exp_inputs() {
    std::vector<float> xs;
    for (int i = -900000; i <= 900000; ++i) xs.push_back(float(i) * 1e-4f);
    for (float e : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.3762f, 88.3763f, 88.72f, 89.0f, -87.3365f, -87.3366f, -100.0f,
                    -1e30f, 1e30f, INFINITY, -INFINITY, NAN})
        xs.push_back(e);
    while (xs.size() % 16) xs.push_back(0.5f);
    return xs;
}

TEST(CpuSimd, ExpLaneIsWithinTwoUlpOfStdExp) {
    int64_t worst = 0;
    for (float x : exp_inputs()) {
        const float got = simd::exp_lane(x), want = std::exp(x);
        if (std::isnan(x)) { EXPECT_TRUE(std::isnan(got)); continue; }
        if (x > simd::kExpHi) { EXPECT_EQ(got, INFINITY) << x; continue; }
        if (x < simd::kExpLo) { EXPECT_EQ(got, 0.0f) << x; continue; }
        worst = std::max(worst, ulps(got, want));
        ASSERT_LE(ulps(got, want), 2) << "x = " << x << ": " << got << " vs std::exp " << want;
    }
    std::printf("  exp_lane vs std::exp: worst %lld ulp\n", static_cast<long long>(worst));
}

TEST(CpuSimd, VectorExpIsBitIdenticalToTheLaneForm) {
    const std::vector<float> xs = exp_inputs();
    std::vector<float> want(xs.size()), got(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) want[i] = simd::exp_lane(xs[i]);
    int checked = 0;
#if ZT_X86
    if (cpu_matmul_path_supported(CpuMatmulPath::avx512)) {
        for (size_t i = 0; i < xs.size(); i += 16) {
            [&]() ZT_TARGET_AVX512 { _mm512_storeu_ps(&got[i], simd::exp16(_mm512_loadu_ps(&xs[i]))); }();
        }
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), 4 * xs.size())) << "exp16";
        ++checked;
    }
    if (cpu_matmul_path_supported(CpuMatmulPath::avx2)) {
        for (size_t i = 0; i < xs.size(); i += 8) {
            [&]() ZT_TARGET_AVX2 { _mm256_storeu_ps(&got[i], simd::exp8(_mm256_loadu_ps(&xs[i]))); }();
        }
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), 4 * xs.size())) << "exp8";
        ++checked;
    }
#endif
    std::printf("  %d vector form(s) checked on this CPU\n", checked);
}

// hsum16x4 (the attention's 4-key reduction) gives each vector exactly hsum16's bits.
TEST(CpuSimd, FourWayHorizontalSumEqualsFourSingleSums) {
#if ZT_X86
    if (!cpu_matmul_path_supported(CpuMatmulPath::avx512)) GTEST_SKIP() << "this CPU has no AVX-512: nothing to check";
    std::mt19937 g(7);
    std::uniform_real_distribution<float> u(-1e3f, 1e3f);
    for (int rep = 0; rep < 2000; ++rep) {
        alignas(64) float v[4][16];
        for (auto & row : v)
            for (float & x : row) x = u(g) * (rep % 3 == 0 ? 1e-6f : 1.0f);
        float got[4], want[4];
        [&]() ZT_TARGET_AVX512 {
            const __m512 a[4] = {_mm512_load_ps(v[0]), _mm512_load_ps(v[1]), _mm512_load_ps(v[2]), _mm512_load_ps(v[3])};
            simd::hsum16x4(a, got);
            for (int k = 0; k < 4; ++k) want[k] = simd::hsum16(a[k]);
        }();
        ASSERT_EQ(0, std::memcmp(got, want, sizeof got)) << "rep " << rep;
    }
#else
    GTEST_SKIP() << "not an x86 build: nothing to check";
#endif
}

}  // namespace
}  // namespace zt
