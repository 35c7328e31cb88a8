// quantize_model: `ztinfer quantize`: a Hugging Face model folder (safetensors + config.json + tokenizer.json) ->
// one GGUF v3 file of Q8_0 / Q4_0 / Q4_1 / Q4_K / Q5_K / Q6_K weights that llama.cpp, the gguf package and
// transformers read, with the tensor names, q/k row order and metadata keys of llama.cpp's convert_hf_to_gguf.
//
// Tensor types (llama.cpp's defaults, simplified):
//   1-D tensors (norms, biases), rope_freqs            F32
//   output.weight (and token_embd when tied, as it     Q6_K for the K types, Q8_0 for q8_0 / q4_0 / q4_1
//   is the output projection then)
//   token_embd.weight (untied), every other matrix     the chosen type
//   a matrix whose rows are not whole blocks           Q8_0 when rows are whole 32-blocks, else F16 (logged)
// Model keys: {arch}.* of gguf_names.h's kGgufConfigKeys as convert_hf_to_gguf writes them (key/value_length only
// when config.json names head_dim; vocab_size and rope.dimension_count for llama only; sliding_window when set).
// general.file_type: q8_0 7, q4_0 2, q4_1 3, q4_k 14 (Q4_K_S), q5_k 16 (Q5_K_S), q6_k 18 (llama_ftype numbers).
// Tokenizer: byte-level BPE -> tokenizer.ggml.model "gpt2" with .pre picked from the pre-tokenizer's regex (Llama 3's:
// "llama-bpe", or "smaug-bpe" without tokenizer.json's ignore_merges; Qwen2's: "qwen2"; GPT-2's ByteLevel regex:
// "smollm" when digits are split or no vocab token has two digits, else "gpt-2"; others "default", warned), special
// ids and add_bos/eos/sep flags as gguf-py's SpecialVocab finds them (add_bos_token always written: where SpecialVocab
// finds none, the runtime tokenizer's choice). SentencePiece-style BPE (Metaspace / U+2581 normalizer, byte
// fallback) -> "llama" with .scores: minus the rank of the merge that makes the token (-1000 for tokens no merge
// makes), so llama.cpp's SentencePiece tokenizer merges in BPE order, where convert_hf_to_gguf's tokenizer.json path
// writes -1000 for all. Looks-special added tokens (<|...|>) are control tokens, as in convert_hf_to_gguf.
// Only llama.cpp's kinds of RoPE scaling are written: linear, yarn (rope.scaling.* keys) and llama3 (a rope_freqs
// tensor, as convert_hf_to_gguf); "dynamic" has no GGUF form and is left out with a warning.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "runtime/model/quant_block.h"

namespace zt {

struct QuantizeOptions {
    std::string model_dir;   // HF folder: config.json, model.safetensors(.index.json), tokenizer.json
    std::string type;        // q8_0 | q4_0 | q4_1 | q4_k | q5_k | q6_k
    std::string out;         // the .gguf to write (through <out>.tmp, renamed when complete)
    int threads = 0;         // 0: one per hardware thread
    bool progress = true;    // the progress bar / periodic log line
};

struct QuantizeReport {
    int64_t tensors = 0;
    uint64_t bytes_in = 0, bytes_out = 0;   // checkpoint tensor bytes read, GGUF file size
    std::map<std::string, int64_t> tensors_by_type;   // "Q4_K" -> count
    double seconds = 0;
};

// "q4_k" / "Q4_K" -> Q4_K; anything else is an error listing the valid names.
QuantType parse_quantize_type(const std::string & name);

// Writes o.out from o.model_dir. Errors (zt::Error) name the file, tensor or option: a bad type, a missing or
// broken model folder, a tokenizer it cannot describe, a non-finite weight, an --out that cannot be written.
QuantizeReport quantize_model(const QuantizeOptions & o);

}  // namespace zt
