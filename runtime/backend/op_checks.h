// Argument checks every backend runs before an op (the same checks and messages on CPU and CUDA): tensors that
// must be F32, weights that must be F32/F16/BF16 (matmul weights and embedding tables may also be of a GGUF block
// type where the backend runs those), rows x cols views, and a sequence's place in the KV cache.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend/backend.h"

namespace zt {

void check_f32(const Tensor & t, const char * op, const char * name);
void check_weight(const Tensor & t, const char * op, const char * name);
// A weight matrix (N,K) or embedding table (V,C): check_weight's F32/F16/BF16, or, with quantized_ok (a backend that
// runs them), a GGUF block type (Q8_0 .. Q6_K) whose rows are whole blocks; either a quantized tensor without
// quantized_ok or a K that is not whole blocks is an error naming the op, the tensor, its type and K.
void check_weight_matrix(const Tensor & t, const char * op, const char * name, bool quantized_ok);
// Rows of a tensor whose last dim is `cols` (its numel must be a multiple of cols).
int64_t rows_of(const Tensor & t, int64_t cols, const char * op, const char * name);
// A sequence of a step fits S cache slots of M positions and the step's T token rows.
void check_seq(const AttentionSeq & q, int64_t S, int64_t M, int64_t T, const char * op);

// Per-op checks of Backend's ops (runtime/backend/backend.h gives the shapes); each returns the sizes the op works with.
struct RmsnormDims { int64_t R, C; };
RmsnormDims check_rmsnorm(const Tensor & out, const Tensor & x, const Tensor & w);
struct MatmulDims { int64_t T, N, K; };
// quantized_ok: w may be of a GGUF block type (check_weight_matrix); the CPU backend passes true.
MatmulDims check_matmul(const Tensor & out, const Tensor & x, const Tensor & w, const Tensor & bias,
                        bool quantized_ok = false);
struct RopeDims { int64_t T, H, D, freq_stride; };   // freq_stride: 0 = inv_freq (D/2) shared, D/2 = (T,D/2)
RopeDims check_rope(const Tensor & x, const Tensor & positions, const Tensor & inv_freq);
struct KvStoreDims { int64_t S, M, row, T; };   // row = KV*D
KvStoreDims check_kv_store(const Tensor & k_cache, const Tensor & v_cache, const Tensor & k, const Tensor & v,
                           const std::vector<AttentionSeq> & seqs);
struct AttentionDims { int64_t T, H, D, S, M, KV; };
AttentionDims check_attention(const Tensor & out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                              const std::vector<AttentionSeq> & seqs, int32_t window);
// The keys [*lo, *hi) of the slot a query at position p of a sequence with n_keys = past_len + n_tokens positions
// sees (Backend::attention).
void attention_key_range(int64_t p, int64_t n_keys, bool causal, int32_t window, int64_t * lo, int64_t * hi);
struct PoolDims { int64_t T, C, B; };
PoolDims check_pool(const Tensor & out, const Tensor & x, const std::vector<AttentionSeq> & seqs);
struct SampleDims { int64_t R, V; };
SampleDims check_sample(const Tensor & ids, const Tensor & logits, const std::vector<SampleRow> & rows);

}  // namespace zt
