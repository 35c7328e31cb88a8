// Argument checks shared by the backends (see op_checks.h).
#include "runtime/op_checks.h"

#include "runtime/error.h"

namespace zt {

void check_f32(const Tensor & t, const char * op, const char * name) {
    ZT_CHECK(t.data != nullptr, "{}: {} has no data", op, name);
    ZT_CHECK(t.dtype == DType::F32, "{}: {} must be F32, got {}", op, name, dtype_name(t.dtype));
}

void check_weight(const Tensor & t, const char * op, const char * name) {
    ZT_CHECK(t.data != nullptr, "{}: {} has no data", op, name);
    ZT_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
             "{}: {} must be F32, F16 or BF16, got {}", op, name, dtype_name(t.dtype));
}

int64_t rows_of(const Tensor & t, int64_t cols, const char * op, const char * name) {
    ZT_CHECK(t.dims() >= 1 && cols > 0 && t.numel() % cols == 0, "{}: {} {} is not a multiple of rows of {}",
             op, name, t.shape_str(), cols);
    return t.numel() / cols;
}

void check_seq(const AttentionSeq & q, int64_t S, int64_t M, int64_t T, const char * op) {
    ZT_CHECK(q.slot >= 0 && q.slot < S, "{}: cache slot {} outside [0, {})", op, q.slot, S);
    ZT_CHECK(q.past_len >= 0 && q.n_tokens >= 0 && int64_t(q.past_len) + q.n_tokens <= M,
             "{}: positions {}..{} do not fit the cache's {} positions", op, q.past_len,
             int64_t(q.past_len) + q.n_tokens, M);
    ZT_CHECK(q.row0 >= 0 && int64_t(q.row0) + q.n_tokens <= T, "{}: rows {}..{} outside the step's {} tokens", op,
             q.row0, int64_t(q.row0) + q.n_tokens, T);
}

}  // namespace zt
