// Launchers of the CUDA kernels, one .cu file per op (kernels/<op>.cu). Each enqueues its kernel(s) on `stream`
// and returns the launch's cudaError_t (cudaSuccess, or the error of the launch / of an argument check).
// Every op computes what the same-named op of the CPU backend computes (runtime/backend/backend.h is the spec; the CPU
// code in runtime/backend/backend_cpu.cpp is the readable reference); results agree up to summation order.
// Pointers are device pointers unless a comment says otherwise. Shapes are outermost first: (T,C) = T rows of C
// contiguous elements. Sizes may be anything >= 1 (odd sizes such as 111 are tested); 0 rows is a no-op.
// Activations are fp32; weights (W) are fp32, fp16 or bf16 (WType) and widened to fp32 on load, or GGUF's
// block-quantized types (QType; quant_*.cu), decoded bit for bit as runtime/model/quant_block.cpp's dequantize_row.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace zt::kernels {

enum class WType : int { f32 = 0, f16 = 1, bf16 = 2 };

// GGUF's quantized weight blocks (layouts in runtime/model/quant_block.h; same order as zt::QuantType). A row of
// a quantized matrix (N,K) is K / block_weights whole blocks (K a multiple of 32, of 256 for the K-quants),
// rows are contiguous (row bytes = K / block_weights * block_bytes), and blocks need no alignment.
enum class QType : int { q8_0 = 0, q4_0 = 1, q4_1 = 2, q4_k = 3, q5_k = 4, q6_k = 5 };

// Same layout as zt::AttentionSeq: sequence b's new tokens are rows row0 .. row0 + n_tokens - 1 of q/k/v, at
// positions past_len .. past_len + n_tokens - 1 of KV-cache slot `slot`.
struct AttnSeq {
    int32_t slot;
    int32_t past_len;
    int32_t n_tokens;
    int32_t row0;
};

// embedding.cu: out (T,C) = table[tokens[t]] widened; tokens (T) i32 in [0, V) (checked on the host before).
cudaError_t embedding(float * out, const int32_t * tokens, const void * table, WType wt, int64_t T, int64_t C,
                      cudaStream_t stream);

// rmsnorm.cu: out (R,C) = w (C) * (x * 1/sqrt(mean(x^2) + eps)), per row; the sum of squares in fp32.
// out may equal x.
cudaError_t rmsnorm(float * out, const float * x, const void * w, WType wt, int64_t R, int64_t C, float eps,
                    cudaStream_t stream);

// rope.cu: in place on x (T,H,D), HF rotate_half: for i < D/2, a = positions[t] * f[i] (fp32), c = cos a * scaling,
// s = sin a * scaling:  x[i] <- x[i]*c - x[i+D/2]*s,  x[i+D/2] <- x[i+D/2]*c + x[i]*s.
// positions (T) i32; row t's frequencies f = inv_freq + t * freq_stride (f32; freq_stride 0: one (D/2) set for
// every row, D/2: a (T,D/2) table, dynamic scaling). llama3 / linear / yarn / dynamic scaling is folded into the
// frequencies by rope.h; scaling is yarn's attention factor (1 otherwise). D is even. cos/sin as the CPU:
// float(cos(double(a))) * scaling, float(sin(double(a))) * scaling.
cudaError_t rope(float * x, const int32_t * positions, const float * inv_freq, int64_t freq_stride, float scaling,
                 int64_t T, int64_t H, int64_t D, cudaStream_t stream);

// kv_store.cu: k_cache[dest_row[t]] = k[t], v_cache[dest_row[t]] = v[t] for t < T, where k, v (T,KV*D) and
// the caches are (S*M, KV*D) f32; dest_row (T) i32 = slot * M + past_len + i of token t (built by the backend).
cudaError_t kv_store(float * k_cache, float * v_cache, const float * k, const float * v, const int32_t * dest_row,
                     int64_t T, int64_t KVD, cudaStream_t stream);

// attention_prefill.cu: grouped-query attention of every sequence's new queries over its cache slot, tiled
// (FlashAttention-style: K/V streamed through shared memory in tiles, online softmax in fp32, so memory does
// not grow with the square of the length). out (T,H,D), q (T,H,D); caches (S,M,KV,D) after kv_store;
// seqs (n_seqs) on the device; causal: query at position p sees positions 0..p, else all past_len + n_tokens;
// window > 0 narrows that to p - window + 1 .. p (causal) or to |p - j| <= window (non-causal), as
// zt::attention_key_range. Scale 1/sqrt(D). Any D <= 256.
cudaError_t attention_prefill(float * out, const float * q, const float * k_cache, const float * v_cache,
                              const AttnSeq * seqs, int n_seqs, int64_t T, int64_t H, int64_t KV, int64_t D,
                              int64_t M, bool causal, int32_t window, cudaStream_t stream);

// attention_decode.cu: the same op when every sequence has exactly one new token (its row is row0), one block per
// (sequence, KV head, group of query heads) sharing each K/V row read, positions interleaved over lane groups and
// combined in a fixed order (no scratch). The token at position p = past_len sees keys 0..p, or with window > 0
// keys p - window + 1 .. p (causal) / p - window .. p (non-causal: there are no later keys). Rows no sequence
// covers are left alone. Any D <= 256. (Open: a few very long sequences use few SMs; a split over the cache length
// would need scratch or sm_90 clusters.)
cudaError_t attention_decode(float * out, const float * q, const float * k_cache, const float * v_cache,
                             const AttnSeq * seqs, int n_seqs, int64_t H, int64_t KV, int64_t D, int64_t M,
                             bool causal, int32_t window, cudaStream_t stream);

// swiglu.cu: out (n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)) (precise expf); out may be gate (exactly;
// partly overlapping ranges are not supported, here and in add).
cudaError_t swiglu(float * out, const float * gate, const float * up, int64_t n, cudaStream_t stream);

// add.cu: out (n) = a + b; out may alias a or b.
cudaError_t add(float * out, const float * a, const float * b, int64_t n, cudaStream_t stream);

// add.cu: out (R,N) += bias (N) widened (the bias of a matmul, after the GEMM).
cudaError_t add_bias(float * out, const void * bias, WType wt, int64_t R, int64_t N, cudaStream_t stream);

// gather_rows.cu: out (R,C) = x[rows[r]]; rows (R) i32; x (T,C).
cudaError_t gather_rows(float * out, const float * x, const int32_t * rows, int64_t R, int64_t C,
                        cudaStream_t stream);

// convert.cu: GEMM operands. widen: out (n) f32 = in (n) W. narrow: out (n) W (f16 or bf16, round to nearest
// even, NaN stays NaN) = in (n) f32.
cudaError_t widen(float * out, const void * in, WType wt, int64_t n, cudaStream_t stream);
cudaError_t narrow(void * out, WType wt, const float * in, int64_t n, cudaStream_t stream);

// quant_dequant.cu: out (R,K) OT = the weights of rows of the quantized matrix w (any number of rows, K columns),
// each weight exactly dequantize_row's fp32 value (f16 / bf16: that value rounded to nearest even, as narrow);
// out row r = w row (rows ? rows[r] : row0 + r); rows (R) i32 on the device, checked by the caller. Used for the
// GEMM of large T (a tile of W rows to the GEMM operand type) and, with rows = tokens, by embedding_quant.
cudaError_t dequantize_rows(void * out, WType ot, const void * w, QType qt, const int32_t * rows, int64_t row0,
                            int64_t R, int64_t K, cudaStream_t stream);
// quant_dequant.cu: out (T,C) f32 = table (V,C) quantized, row tokens[t], dequantized (tokens checked before).
cudaError_t embedding_quant(float * out, const int32_t * tokens, const void * table, QType qt, int64_t T, int64_t C,
                            cudaStream_t stream);

// quant_gemv.cu: out (T,N) f32 = x (T,K) f32 · w (N,K)^T, w quantized, for small T (any T works; the backend uses
// it up to kQuantGemvMaxT rows and dequantize_rows + cuBLASLt above). One warp per row n of w: lane l takes the
// groups of 8 weights l, l+32, ... (decoded exactly, as dequantize_rows), fp32 fmaf into one sum per row t in
// weight order, then a butterfly over the 32 lanes. The order depends on K only (not on T, N or the other rows),
// so results are bit-identical run to run and whatever else shares the call.
constexpr int64_t kQuantGemvMaxT = 8;
cudaError_t quant_gemv(float * out, const float * x, const void * w, QType qt, int64_t T, int64_t N, int64_t K,
                       cudaStream_t stream);

// pooling.cu: out (B,C) from x (T,C) over each sequence's rows (seqs (B) on the device):
// mean = sum of the rows in row order (fp32) * (1/n_tokens); last = the last row.
cudaError_t pool_mean(float * out, const float * x, const AttnSeq * seqs, int64_t B, int64_t C,
                      cudaStream_t stream);
cudaError_t pool_last(float * out, const float * x, const AttnSeq * seqs, int64_t B, int64_t C,
                      cudaStream_t stream);

// sampling.cu: ids (R) i32, one token per row of logits (R,V) f32, by the algorithm of zt::sample_token
// (runtime/job/sampler.h) with the row's parameters (on the device): temperature <= 0: argmax, lowest id on ties;
// else softmax at the temperature in double over the top_k candidates (0 = all), then the smallest prefix in
// order (logit descending, id ascending) whose mass >= top_p of theirs, and the first candidate of that order
// whose running sum exceeds u * mass (plain temperature sampling without top-k/top-p walks ids ascending).
// One block per row; sums are in a fixed order, so a row's result depends only on its logits and parameters.
struct SampleParams {
    double temperature;
    int64_t top_k;
    double top_p;
    double u;
};
cudaError_t sample(int32_t * ids, const float * logits, const SampleParams * params, int64_t R, int64_t V,
                   cudaStream_t stream);

}  // namespace zt::kernels
