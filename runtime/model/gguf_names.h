// gguf_names: how GGUF files (llama.cpp's convert_hf_to_gguf conventions) name what a Hugging Face checkpoint names,
// shared by the GGUF loader (GGUF -> HF) and `ztinfer quantize` (HF -> GGUF) so the two can never disagree:
//   tensor names      token_embd.weight <-> model.embed_tokens.weight, blk.N.attn_q.weight <-> model.layers.N.
//                     self_attn.q_proj.weight, ... (the table in gguf_names.cpp);
//   config keys       {arch}.block_count <-> num_hidden_layers, ... (kGgufConfigKeys below);
//   Q/K row order     for general.architecture "llama" (Llama, Mistral) the converter permutes the rows of q_proj and
//                     k_proj (and their biases) within each head from HF's rotate_half order to interleaved pairs:
//                     HF row h*D + half*D/2 + i  is GGUF row  h*D + 2*i + half   (D = head_dim, i < D/2, half 0|1).
//                     qwen2 and qwen3 files keep HF's order.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace zt {

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"; nullopt for a name the table does not know
// (e.g. rope_freqs.weight, which GGUF writers add and the loader may ignore).
std::optional<std::string> hf_name_from_gguf(const std::string & gguf_name);
// The inverse: "model.layers.3.mlp.down_proj.weight" -> "blk.3.ffn_down.weight" (with or without "model.");
// nullopt for a name GGUF has no slot for.
std::optional<std::string> gguf_name_from_hf(const std::string & hf_name);

// Whether a file of this general.architecture stores q/k rows in the interleaved order ("llama": yes).
bool gguf_arch_permutes_qk(const std::string & gguf_arch);
// Row r (0 .. heads*D-1) of an HF q_proj / k_proj weight (or bias) is this row of the GGUF tensor, for the
// architectures above. A bijection on each head's D rows; D must be even.
int64_t gguf_qk_row_of_hf_row(int64_t hf_row, int64_t head_dim);

// The GGUF metadata key (after "{arch}.") and the config.json key it carries, for the integer/float keys both
// directions map one to one.
struct GgufConfigKey {
    const char * gguf;   // "attention.head_count_kv"
    const char * hf;     // "num_key_value_heads"
};
extern const GgufConfigKey kGgufConfigKeys[];
extern const int kGgufConfigKeyCount;

}  // namespace zt
