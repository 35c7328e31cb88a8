// Synthetic model directories (`ztinfer synth`): a random-weight Hugging Face model folder for llama, mistral,
// qwen2 or qwen3 that transformers loads as well (config.json, generation_config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json). The vocabulary size comes from the tokenizer.
#pragma once
#include <cstdint>
#include <string>

namespace zt {

struct SynthOptions {
    std::string arch;                       // llama | mistral | qwen2 | qwen3
    int64_t layers = 2, hidden = 64, heads = 4, kv_heads = 2, intermediate = 128, max_position_embeddings = 2048;
    std::string tokenizer_dir;              // holds tokenizer.json (or tokenizer.json.xz) and tokenizer_config.json
    std::string dtype = "fp32";             // fp32 | bf16 | fp16
    uint64_t seed = 0;
    std::string out_dir;                    // created when missing
};

// Writes the model directory described by `o` (deterministic for a given seed). Throws zt::Error on bad options
// or I/O failures, naming the option or file.
void synthesize_model(const SynthOptions & o);

// Vocabulary size of a tokenizer.json: 1 + the largest id over model.vocab and added_tokens.
int64_t tokenizer_json_vocab_size(const std::string & tokenizer_json_path);

}  // namespace zt
