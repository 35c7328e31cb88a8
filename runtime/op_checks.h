// Argument checks every backend runs before an op (the same checks and messages on CPU and CUDA): tensors that
// must be F32, weights that must be F32/F16/BF16, rows x cols views, and a sequence's place in the KV cache.
#pragma once
#include <cstdint>

#include "runtime/backend.h"

namespace zt {

void check_f32(const Tensor & t, const char * op, const char * name);
void check_weight(const Tensor & t, const char * op, const char * name);
// Rows of a tensor whose last dim is `cols` (its numel must be a multiple of cols).
int64_t rows_of(const Tensor & t, int64_t cols, const char * op, const char * name);
// A sequence of a step fits S cache slots of M positions and the step's T token rows.
void check_seq(const AttentionSeq & q, int64_t S, int64_t M, int64_t T, const char * op);

}  // namespace zt
