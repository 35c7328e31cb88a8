// Tensor helpers (formatting).
#include "runtime/model/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace zt {

size_t Tensor::bytes() const {
    if (!dtype_is_quantized(dtype)) return size_t(numel()) * dtype_size(dtype);
    if (shape.empty()) return 0;
    const int64_t n = shape.back();
    return size_t(n == 0 ? 0 : numel() / n) * size_t(dtype_row_bytes(dtype, n));
}

std::string Tensor::shape_str() const { return fmt::format("({})", fmt::join(shape, ", ")); }

}  // namespace zt
