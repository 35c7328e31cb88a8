// cpu_rowwise: the portable kernels of the row-wise ops (plain C++ in the per-element order of cpu_rowwise.h, for the
// compiler to vectorise) and the table of each path. The AVX2 / AVX-512 kernels are in cpu_rowwise_x86.cpp.
#include "runtime/backend/cpu_rowwise.h"

#include <cmath>
#include <cstring>

#include "runtime/base/error.h"

namespace zt {
namespace {

void widen_portable(float * dst, const void * src, DType t, int64_t n) { convert_to_f32(dst, src, t, size_t(n)); }

template <DType WT>
void rmsnorm_portable_t(float * out, const float * x, const void * w, float eps, int64_t C) {
    float acc[16] = {};
    int64_t c = 0;
    for (; c + 16 <= C; c += 16)
        for (int l = 0; l < 16; ++l) acc[l] += x[c + l] * x[c + l];
    for (int l = 0; c + l < C; ++l) acc[l] += x[c + l] * x[c + l];   // the zero-padded tail adds nothing
    for (int l = 0; l < 8; ++l) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; ++l) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; ++l) acc[l] += acc[l + 2];
    const float ss = acc[0] + acc[1];
    const float inv = 1.0f / std::sqrt(ss / float(C) + eps);
    for (c = 0; c < C; ++c) out[c] = widen_at<WT>(w, c) * (x[c] * inv);
}

void rmsnorm_portable(float * out, const float * x, const void * w, DType wt, float eps, int64_t C) {
    switch (wt) {
        case DType::F32: return rmsnorm_portable_t<DType::F32>(out, x, w, eps, C);
        case DType::F16: return rmsnorm_portable_t<DType::F16>(out, x, w, eps, C);
        case DType::BF16: return rmsnorm_portable_t<DType::BF16>(out, x, w, eps, C);
        default: ZT_FAIL("rmsnorm: weight dtype {} (only F32, F16, BF16)", dtype_name(wt));
    }
}

void rope_portable(float * v, const float * cs, int64_t H, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < H; ++h, v += D)
        for (int64_t i = 0; i < half; ++i) {
            const float x0 = v[i], x1 = v[i + half], c = cs[i], s = cs[half + i];
            v[i] = x0 * c + (-x1) * s;   // the reference's expressions, so a compiler contracts both alike
            v[i + half] = x1 * c + x0 * s;
        }
}

// std::exp, as the reference: simd::exp_lane's std::fma is a library call per step where the CPU lacks FMA (the
// CPUs this path is for), which made it 6x slower than the reference.
void swiglu_portable(float * out, const float * g, const float * u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = (g[i] / (1.0f + std::exp(-g[i]))) * u[i];
}

void add_portable(float * out, const float * a, const float * b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void accumulate_portable(float * acc, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

float max_portable(const float * x, int64_t n) {
    float m = x[0];
    for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

int64_t argmax_portable(const float * x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
        if (x[i] > x[best]) best = i;
    return best;
}

const CpuRowKernels kPortable = {widen_portable, rmsnorm_portable, rope_portable,  swiglu_portable,
                                 add_portable,   accumulate_portable, max_portable, argmax_portable};

}  // namespace

const CpuRowKernels & cpu_row_kernels(CpuMatmulPath path) {
    const CpuRowKernels * k = nullptr;
    switch (path) {
        case CpuMatmulPath::reference:
            ZT_FAIL("cpu_row_kernels: the reference path has no kernel table (its loops are the ops' own)");
        case CpuMatmulPath::portable: k = &kPortable; break;
        case CpuMatmulPath::avx2: k = cpu_row_kernels_avx2(); break;
        case CpuMatmulPath::avx512: k = cpu_row_kernels_avx512(); break;
    }
    ZT_CHECK(k != nullptr, "CPU kernel path {}: this CPU cannot run it; choose reference, portable or unset "
             "ZT_CPU_MATMUL", cpu_matmul_path_name(path));
    return *k;
}

}  // namespace zt
