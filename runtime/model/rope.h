// RoPE inverse frequencies of a model, computed exactly as Hugging Face transformers does (float32 throughout):
// default: inv_freq[i] = 1 / theta ** (float(2i) / D); linear: inv_freq / factor; llama3: wavelength-dependent
// blend of inv_freq and inv_freq / factor (transformers' _compute_llama3_parameters).
#pragma once
#include <vector>

#include "runtime/model/model_config.h"

namespace zt {

// (D/2) float32 inverse frequencies for cfg.head_dim, cfg.rope_theta and cfg.rope_scaling.
std::vector<float> rope_inv_freq(const ModelConfig & cfg);

}  // namespace zt
