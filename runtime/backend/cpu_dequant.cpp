// cpu_dequant: the dequantizer of each kernel path (see cpu_dequant.h): dequantize_row itself on the reference and
// portable paths, the vector ones of cpu_dequant_x86.cpp on avx2 / avx512.
#include "runtime/backend/cpu_dequant.h"

#include "runtime/base/error.h"

namespace zt {
namespace {

template <QuantType Q>
void dequant_scalar(const void * blocks, float * out, int64_t n) { dequantize_row(Q, blocks, out, n); }

DequantFn scalar_of(QuantType t) {
    switch (t) {
        case QuantType::Q8_0: return dequant_scalar<QuantType::Q8_0>;
        case QuantType::Q4_0: return dequant_scalar<QuantType::Q4_0>;
        case QuantType::Q4_1: return dequant_scalar<QuantType::Q4_1>;
        case QuantType::Q4_K: return dequant_scalar<QuantType::Q4_K>;
        case QuantType::Q5_K: return dequant_scalar<QuantType::Q5_K>;
        case QuantType::Q6_K: return dequant_scalar<QuantType::Q6_K>;
    }
    return nullptr;
}

}  // namespace

DequantFn cpu_dequant_fn(CpuMatmulPath path, QuantType t) {
    DequantFn f = nullptr;
    switch (path) {
        case CpuMatmulPath::reference:
        case CpuMatmulPath::portable: f = scalar_of(t); break;
        case CpuMatmulPath::avx2: f = cpu_dequant_avx2(t); break;
        case CpuMatmulPath::avx512: f = cpu_dequant_avx512(t); break;
    }
    ZT_CHECK(f != nullptr, "dequantize {}: the {} path is not supported by this CPU", quant_layout(t).name,
             cpu_matmul_path_name(path));
    return f;
}

}  // namespace zt
