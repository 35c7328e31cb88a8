// Wing runtime/model/: what is read from disk and how it is checked: config.json (model_config), safetensors
// files (safetensors), the whole checkpoint of a model folder (checkpoint), tokenizer.json and its BPE/Unicode
// pieces (tokenizer*, unicode_text), dtypes and host tensors (dtype, tensor), RoPE tables (rope) and the random
// test models (synthetic_model). Nothing here runs ops or moves weights to a device.
//
// Checkpoint: a Hugging Face model directory's safetensors (model.safetensors, or the shards named by
// model.safetensors.index.json) or a GGUF file (gguf_checkpoint.h: the same HF tensor names), and binding its
// tensors to the weights a ModelConfig needs, with checks.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/model/gguf_checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/tensor.h"

namespace zt {

class Checkpoint {
public:
    // Opens <model_dir>/model.safetensors or <model_dir>/model.safetensors.index.json and its shards, or, when
    // model_dir is a file, that GGUF file. Throws zt::Error naming the file when none is there or a file is broken.
    explicit Checkpoint(const std::string & model_dir);

    // Tensor by full name; nullopt-like empty Tensor (data == nullptr) when absent.
    bool has(const std::string & name) const;
    Tensor tensor(const std::string & name) const;         // throws zt::Error naming the tensor when absent
    std::vector<std::string> names() const;                // every tensor in every shard
    // A cheap identity of these files (32 hex digits): a hash of config.json's bytes and, per safetensors file,
    // its name, size, modification time and header (tensor names, dtypes, shapes, offsets, metadata); for a GGUF
    // file its name, size, modification time and header bytes. Reads no tensor data. The same for the same files;
    // changes when a file is replaced, rewritten or touched.
    std::string identity() const;
    const std::string & dir() const { return dir_; }   // the model folder, or the GGUF file
    const GgufCheckpoint * gguf() const { return gguf_.get(); }   // the GGUF file, or nullptr for safetensors

private:
    std::string dir_;
    std::unique_ptr<GgufCheckpoint> gguf_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::vector<std::pair<std::string, const SafetensorsFile *>> index_;   // name -> file, sorted by name
};

// Weights of one decoder layer (HF names after "model.layers.{i}."). Absent optional tensors have data == nullptr.
struct LayerWeights {
    Tensor input_norm;                 // (C)            input_layernorm.weight
    Tensor q, k, v, o;                 // (H*D, C), (KV*D, C), (KV*D, C), (C, H*D)   self_attn.{q,k,v,o}_proj.weight
    Tensor q_bias, k_bias, v_bias;     // (H*D), (KV*D), (KV*D)  when attention_bias
    Tensor o_bias;                     // (C)            when attention_out_bias (llama/qwen3 attention_bias)
    Tensor q_norm, k_norm;             // (D)            when qk_norm (qwen3)
    Tensor post_norm;                  // (C)            post_attention_layernorm.weight
    Tensor gate, up, down;             // (I, C), (I, C), (C, I)   mlp.{gate,up,down}_proj.weight
};

struct ModelWeights {
    Tensor embed;        // (V, C)  model.embed_tokens.weight
    Tensor final_norm;   // (C)     model.norm.weight
    Tensor lm_head;      // (V, C)  lm_head.weight, or embed when tied; data == nullptr for base-model saves
    std::vector<LayerWeights> layers;
};

// Finds every tensor `cfg` needs in `ckpt` (with or without the "model." prefix, as base-model saves such as
// gte-Qwen2's Qwen2Model have none), checks each shape and dtype, and returns views into the checkpoint. Norms and
// biases are F32/F16/BF16; matrices and the embedding / lm_head may also be quantized (Q8_0 .. Q6_K). A safetensors
// checkpoint has one dtype for the whole model; a GGUF file mixes them (F32 norms, Q4_1 matrices, a Q8_0
// embedding). Throws zt::Error naming the tensor and what is wrong.
ModelWeights bind_weights(const Checkpoint & ckpt, const ModelConfig & cfg);

}  // namespace zt
