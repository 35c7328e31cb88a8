// RoPE inverse frequencies, the same float32 operations in the same order as transformers'
// modeling_rope_utils (default, linear, llama3). Python scalars meet float32 tensors there, so each scalar is
// rounded to float32 before the operation, as torch does.
#include "runtime/model/rope.h"

#include <cmath>

#include "runtime/base/error.h"

namespace zt {

std::vector<float> rope_inv_freq(const ModelConfig & cfg) {
    const int64_t dim = cfg.head_dim;
    ZT_CHECK(dim > 0 && dim % 2 == 0, "head_dim must be a positive even number for RoPE, got {}", dim);
    const float base = float(cfg.rope_theta);
    std::vector<float> inv(size_t(dim / 2));
    // 1.0 / (base ** (torch.arange(0, dim, 2, dtype=int64).float() / dim))
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float e = float(2 * i) / float(dim);
        const float p = float(std::pow(double(base), double(e)));   // torch pow(float32): correctly rounded here
        inv[size_t(i)] = 1.0f / p;
    }
    const RopeScaling & rs = cfg.rope_scaling;
    if (rs.type == RopeScaling::Type::linear) {
        for (float & f : inv) f = f / float(rs.factor);
    } else if (rs.type == RopeScaling::Type::llama3) {
        const float factor = float(rs.factor);
        const double old_ctx = double(rs.original_max_position_embeddings);
        const float low_freq_wavelen = float(old_ctx / rs.low_freq_factor);    // python floats, then compared as f32
        const float high_freq_wavelen = float(old_ctx / rs.high_freq_factor);
        const float two_pi = float(2 * M_PI);
        const float hi_minus_lo = float(rs.high_freq_factor - rs.low_freq_factor);
        for (float & f : inv) {
            const float wavelen = two_pi / f;
            float llama = wavelen > low_freq_wavelen ? f / factor : f;
            const float smooth = (float(old_ctx) / wavelen - float(rs.low_freq_factor)) / hi_minus_lo;
            const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
            const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            f = medium ? smoothed : llama;
        }
    }
    return inv;
}

}  // namespace zt
