// Tensor: a non-owning view (pointer, dtype, row-major shape). Buffers own memory; tensors only point into it.
// Shapes are written outermost first, e.g. (T,C) = T rows of C contiguous elements.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/model/dtype.h"

namespace zt {

struct Tensor {
    void * data = nullptr;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;

    Tensor() = default;
    Tensor(void * d, DType t, std::vector<int64_t> s) : data(d), dtype(t), shape(std::move(s)) {}

    int64_t numel() const { int64_t n = 1; for (int64_t d : shape) n *= d; return n; }
    // numel x element size; for a quantized dtype, rows x the bytes of a row of dim(-1) weights (whole blocks).
    size_t bytes() const;
    int dims() const { return int(shape.size()); }
    int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
    template <typename T> T * ptr() const { return static_cast<T *>(data); }
    std::string shape_str() const;   // "(4, 64)"
};

}  // namespace zt
