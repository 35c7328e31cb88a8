// RoPE inverse frequencies, the same float32 operations in the same order as transformers'
// modeling_rope_utils (default, linear, llama3, yarn, dynamic), and GGUF's per-frequency factors (llama.cpp's
// freq_factors: the default frequency divided by the factor). Python scalars meet float32 tensors there, so
// each scalar is rounded to float32 before the operation, as torch does (a float32 tensor ** python float is the
// exception: torch raises it to the double exponent, so that one is pow(double, double) rounded to float32).
#include "runtime/model/rope.h"

#include <algorithm>
#include <cmath>

#include "runtime/base/error.h"

namespace zt {

namespace {

// 1.0 / (base ** (torch.arange(0, dim, 2, dtype=int64).float() / dim)) with base already float32: torch's pow of
// float32 operands, here correctly rounded from double.
std::vector<float> default_inv_freq(float base, int64_t dim) {
    std::vector<float> inv(size_t(dim / 2));
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float e = float(2 * i) / float(dim);
        const float p = float(std::pow(double(base), double(e)));
        inv[size_t(i)] = 1.0f / p;
    }
    return inv;
}

void apply_llama3(std::vector<float> & inv, const RopeScaling & rs) {
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

// _compute_yarn_parameters: the ramp bounds in python doubles, the rest in float32.
std::vector<float> yarn_inv_freq(const ModelConfig & cfg) {
    const RopeScaling & rs = cfg.rope_scaling;
    const int64_t dim = cfg.head_dim;
    const double base = cfg.rope_theta;
    auto correction_dim = [&](double rotations) {   // find_correction_dim
        return (double(dim) * std::log(double(rs.original_max_position_embeddings) / (rotations * 2 * M_PI))) /
               (2 * std::log(base));
    };
    double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
    if (rs.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;   // linear_ramp_factor: "prevent singularity"
    const float lo32 = float(low), span32 = float(high - low);
    std::vector<float> inv(size_t(dim / 2));
    const float fbase = float(base), factor = float(rs.factor);
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float pos = float(std::pow(double(fbase), double(float(2 * i) / float(dim))));
        const float extrapolation = 1.0f / pos;
        const float interpolation = 1.0f / (factor * pos);
        const float ramp = std::min(std::max((float(i) - lo32) / span32, 0.0f), 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        inv[size_t(i)] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    return inv;
}

// _compute_dynamic_ntk_parameters: base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)) with
// seq_len = max(seq_len, max_pos). At load (seq_len None) python doubles; in a forward call (seq_len a tensor)
// float32, the exponent a python float.
std::vector<float> dynamic_inv_freq(const ModelConfig & cfg, int64_t seq_len) {
    const double factor = cfg.rope_scaling.factor;
    const int64_t max_pos = cfg.max_position_embeddings, dim = cfg.head_dim;
    const double exponent = double(dim) / double(dim - 2);
    float base;
    if (seq_len <= max_pos) {
        base = float(cfg.rope_theta * std::pow((factor * double(max_pos) / double(max_pos)) - (factor - 1), exponent));
    } else {
        float x = float(factor) * float(seq_len);
        x = x / float(max_pos);
        x = x - float(factor - 1);
        const float grown = float(std::pow(double(x), exponent));
        base = float(cfg.rope_theta) * grown;
    }
    return default_inv_freq(base, dim);
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig & cfg) { return rope_inv_freq(cfg, 0); }

std::vector<float> rope_inv_freq(const ModelConfig & cfg, int64_t seq_len) {
    const int64_t dim = cfg.head_dim;
    ZT_CHECK(dim > 0 && dim % 2 == 0, "head_dim must be a positive even number for RoPE, got {}", dim);
    const RopeScaling & rs = cfg.rope_scaling;
    switch (rs.type) {
        case RopeScaling::Type::yarn: return yarn_inv_freq(cfg);
        case RopeScaling::Type::dynamic: return dynamic_inv_freq(cfg, seq_len);
        default: break;
    }
    std::vector<float> inv = default_inv_freq(float(cfg.rope_theta), dim);
    if (rs.type == RopeScaling::Type::linear) {
        for (float & f : inv) f = f / float(rs.factor);
    } else if (rs.type == RopeScaling::Type::llama3) {
        apply_llama3(inv, rs);
    } else if (rs.type == RopeScaling::Type::factors) {
        ZT_CHECK(rs.freq_factors.size() == inv.size(), "RoPE frequency factors: {} given, head_dim {} needs {}",
                 rs.freq_factors.size(), dim, inv.size());
        for (size_t i = 0; i < inv.size(); ++i) inv[i] = inv[i] / rs.freq_factors[i];
    }
    return inv;
}

bool rope_is_dynamic(const ModelConfig & cfg) { return cfg.rope_scaling.type == RopeScaling::Type::dynamic; }

float rope_attention_scaling(const ModelConfig & cfg) {
    return cfg.rope_scaling.type == RopeScaling::Type::yarn ? float(cfg.rope_scaling.attention_factor) : 1.0f;
}

}  // namespace zt
