// ModelConfig: the parts of a Hugging Face config.json that decide the forward pass, for model_type
// llama, mistral, qwen2, qwen3, or the same read from a GGUF file's metadata. Anything that would change results
// and is not implemented is a clear error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/model/dtype.h"

namespace zt {

struct GgufFile;

enum class Arch { llama, mistral, qwen2, qwen3 };
const char * arch_name(Arch a);

// RoPE scaling of config.json's "rope_scaling" / "rope_parameters" (rope.h computes the frequencies from it).
// dynamic: NTK-aware, the frequencies of a sequence follow its length past max_position_embeddings (see rope.h).
struct RopeScaling {
    enum class Type { none, linear, llama3, yarn, dynamic };
    Type type = Type::none;
    double factor = 1.0;                              // linear, llama3, yarn, dynamic
    double low_freq_factor = 1.0;                     // llama3
    double high_freq_factor = 4.0;                    // llama3
    int64_t original_max_position_embeddings = 8192;  // llama3, yarn
    double attention_factor = 1.0;                    // yarn: multiplies cos and sin (given, or from factor/mscale)
    double beta_fast = 32.0, beta_slow = 1.0;         // yarn: the ramp's bounds in rotations
    bool truncate = true;                             // yarn: floor/ceil the ramp's bounds
};

struct ModelConfig {
    Arch arch = Arch::llama;
    std::string model_type;              // as written in config.json
    std::vector<std::string> architectures;
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t num_hidden_layers = 0;
    int64_t num_attention_heads = 0;
    int64_t num_key_value_heads = 0;     // GQA; defaults to num_attention_heads
    int64_t head_dim = 0;                // defaults to hidden_size / num_attention_heads
    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    bool tie_word_embeddings = false;
    bool attention_bias = false;         // q/k/v projections carry a bias (qwen2 always; llama "attention_bias")
    bool attention_out_bias = false;     // o_proj carries a bias too (llama/qwen3 "attention_bias"; never qwen2)
    bool qk_norm = false;                // per-head RMSNorm on q and k before RoPE (qwen3)
    bool is_causal = true;               // `is_causal: false` in config.json -> bidirectional attention
    int64_t sliding_window = 0;          // > 0: the attention window some layer uses (0: every layer attends fully)
    std::vector<int64_t> layer_window;   // (num_hidden_layers): the window of each layer, 0 = full attention. A
                                         // causal query at position p sees keys p - window + 1 .. p; non-causal,
                                         // keys within distance window (HF masking_utils)
    DType torch_dtype = DType::F32;      // dtype named by config.json (informational)
    std::vector<int64_t> eos_token_ids;  // from config.json (int or list); may be empty
    int64_t bos_token_id = -1;

    // Parses and validates config.json content; `path` names the file in errors.
    static ModelConfig from_json(const nlohmann::json & j, const std::string & path);
    // Reads <model_dir>/config.json, or the metadata of model_dir when it is a GGUF file (from_gguf).
    static ModelConfig load(const std::string & model_dir);
    // From a GGUF file's metadata and tensor index (general.architecture llama, mistral, qwen2, qwen3): the
    // config.json those keys stand for ({arch}.block_count -> num_hidden_layers, ..., gguf_names.h), then the
    // checks of from_json. Bias presence, tied embeddings and head_dim also come from the tensors; eos/bos from
    // tokenizer.ggml.*. `path` names the file in errors.
    static ModelConfig from_gguf(const GgufFile & f, const std::string & path);
    // The config.json from_gguf checks (for tests and messages).
    static nlohmann::json gguf_to_config_json(const GgufFile & f, const std::string & path);

    // The attention window of layer l (layer_window[l]; 0 = full attention, also when layer_window is unset).
    int32_t window_of(int64_t l) const;
    // Longest sequence (prompt + generated) a request may have: max_position_embeddings, or with yarn / dynamic
    // RoPE scaling the context it scales to (original_max_position_embeddings resp. max_position_embeddings times
    // factor, as vLLM; never less than max_position_embeddings).
    int64_t max_context() const;
    // Why max_context() is what it is, for per-request error messages.
    std::string max_context_reason() const;
};

}  // namespace zt
