// RoPE inverse frequencies of a model, computed exactly as Hugging Face transformers does (float32 throughout):
// default: inv_freq[i] = 1 / theta ** (float(2i) / D); linear: inv_freq / factor; llama3: wavelength-dependent
// blend of inv_freq and inv_freq / factor (transformers' _compute_llama3_parameters); yarn: a ramp between
// inv_freq and inv_freq / factor over the dims, plus an attention factor on cos and sin (_compute_yarn_parameters);
// dynamic (NTK): theta grows with the sequence length past max_position_embeddings (_compute_dynamic_ntk_parameters).
//
// Dynamic, per sequence: transformers recomputes inv_freq in each forward call from seq_len = max(position_ids) + 1
// when that exceeds the longest length seen so far (and returns to the original frequencies when a call is
// shorter than max_position_embeddings); keys already in the cache keep the rotation they were given. For one
// sequence run alone, in order (prefill, prompt chunks, then one token per step), that is: the call that brings
// positions past_len .. past_len + n - 1 rotates its queries and keys with rope_inv_freq(cfg, past_len + n).
// ztinfer does exactly this per sequence, whatever else shares the batch (HF, batching sequences, would use the
// batch's longest; its module state also carries over between unrelated calls, which ztinfer does not copy).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model/model_config.h"

namespace zt {

// (D/2) float32 inverse frequencies for cfg.head_dim, cfg.rope_theta and cfg.rope_scaling. Dynamic: those of a
// sequence no longer than max_position_embeddings (the unscaled ones, as transformers' original_inv_freq).
std::vector<float> rope_inv_freq(const ModelConfig & cfg);

// The frequencies of a step whose sequence reaches seq_len positions (past + new): differs from
// rope_inv_freq(cfg) only for dynamic scaling with seq_len > max_position_embeddings.
std::vector<float> rope_inv_freq(const ModelConfig & cfg, int64_t seq_len);

// True when the frequencies depend on the sequence length (dynamic scaling): rope_inv_freq(cfg, seq_len) per step.
bool rope_is_dynamic(const ModelConfig & cfg);

// The factor transformers multiplies cos and sin with (its attention_scaling): yarn's attention_factor, else 1.
float rope_attention_scaling(const ModelConfig & cfg);

}  // namespace zt
