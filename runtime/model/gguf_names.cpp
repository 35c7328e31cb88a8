// gguf_names: the GGUF <-> Hugging Face name tables (see gguf_names.h).
#include "runtime/model/gguf_names.h"

#include <cstdlib>

#include "runtime/base/error.h"

namespace zt {
namespace {

struct NamePair { const char * gguf; const char * hf; };

// Whole-model tensors (full names) and per-layer tensors (after "blk.N." / "model.layers.N.").
constexpr NamePair kModelNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};
constexpr NamePair kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},     {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},     {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},     {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"}, {"attn_output.bias", "self_attn.o_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// "<prefix><digits>.<rest>" -> (layer, rest); false when `name` does not start that way.
bool split_layer(const std::string & name, const std::string & prefix, long & layer, std::string & rest) {
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
    size_t i = prefix.size(), j = i;
    while (j < name.size() && j - i < 9 && name[j] >= '0' && name[j] <= '9') ++j;
    if (j == i || j >= name.size() || name[j] != '.') return false;
    layer = std::strtol(name.c_str() + i, nullptr, 10);
    rest = name.substr(j + 1);
    return true;
}

}  // namespace

const GgufConfigKey kGgufConfigKeys[] = {
    {"block_count", "num_hidden_layers"},
    {"embedding_length", "hidden_size"},
    {"feed_forward_length", "intermediate_size"},
    {"attention.head_count", "num_attention_heads"},
    {"attention.head_count_kv", "num_key_value_heads"},
    {"attention.key_length", "head_dim"},
    {"context_length", "max_position_embeddings"},
    {"rope.freq_base", "rope_theta"},
    {"attention.layer_norm_rms_epsilon", "rms_norm_eps"},
    {"attention.sliding_window", "sliding_window"},
    {"vocab_size", "vocab_size"},
};
const int kGgufConfigKeyCount = int(sizeof(kGgufConfigKeys) / sizeof(kGgufConfigKeys[0]));

std::optional<std::string> hf_name_from_gguf(const std::string & g) {
    for (const auto & p : kModelNames) if (g == p.gguf) return std::string(p.hf);
    long layer = 0;
    std::string rest;
    if (!split_layer(g, "blk.", layer, rest)) return std::nullopt;
    for (const auto & p : kLayerNames)
        if (rest == p.gguf) return "model.layers." + std::to_string(layer) + "." + p.hf;
    return std::nullopt;
}

std::optional<std::string> gguf_name_from_hf(const std::string & hf) {
    const std::string full = hf.compare(0, 6, "model.") == 0 || hf == "lm_head.weight" ? hf : "model." + hf;
    for (const auto & p : kModelNames) if (full == p.hf) return std::string(p.gguf);
    long layer = 0;
    std::string rest;
    if (!split_layer(full, "model.layers.", layer, rest)) return std::nullopt;
    for (const auto & p : kLayerNames)
        if (rest == p.hf) return "blk." + std::to_string(layer) + "." + p.gguf;
    return std::nullopt;
}

bool gguf_arch_permutes_qk(const std::string & arch) { return arch == "llama"; }

int64_t gguf_qk_row_of_hf_row(int64_t r, int64_t d) {
    ZT_CHECK(d > 0 && d % 2 == 0, "internal: head_dim {} must be even for the GGUF q/k row order", d);
    const int64_t head = r / d, j = r % d, half = j / (d / 2), i = j % (d / 2);
    return head * d + 2 * i + half;
}

}  // namespace zt
