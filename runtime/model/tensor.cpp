// Tensor helpers (formatting).
#include "runtime/model/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace zt {

std::string Tensor::shape_str() const { return fmt::format("({})", fmt::join(shape, ", ")); }

}  // namespace zt
