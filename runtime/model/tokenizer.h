// Tokenizer for Hugging Face tokenizer.json: byte-level BPE (Qwen2/3, Llama 3: NFC normaliser, regex
// pre-tokenisers, added/special tokens matched inside text) and SentencePiece-style BPE with byte fallback
// (Llama 2 / Mistral: Prepend + Replace normalisers, "▁", <0x..> tokens). Ids equal HF `tokenizers`
// encode(text, add_special_tokens=False). BOS/EOS come from tokenizer_config.json beside tokenizer.json.
// The same tokenizers also load from a GGUF file's tokenizer.ggml.* metadata (from_gguf, tokenizer_gguf.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace zt {

struct GgufFile;

class Tokenizer {
public:
    // `path`: a model directory holding tokenizer.json (and tokenizer_config.json), or tokenizer.json itself.
    // Throws zt::Error naming the file and what is wrong for anything malformed or hostile.
    static Tokenizer load(const std::string & path);
    // Same from JSON text held in memory (tokenizer_config.json content may be empty). Used by the fuzzer.
    static Tokenizer from_json(const std::string & tokenizer_json, const std::string & tokenizer_config_json,
                               const std::string & path_for_errors);
    // The tokenizer a GGUF file carries (tokenizer.ggml.model "gpt2" or "llama", .tokens, .merges or .scores,
    // .token_type, .pre, special ids, add_bos/add_eos/add_space_prefix), rebuilt as the tokenizer.json it came
    // from. An unknown model or pre-tokeniser, or malformed metadata, throws zt::Error naming path_for_errors.
    static Tokenizer from_gguf(const GgufFile & file, const std::string & path_for_errors);
    // Files with more vocab entries, merges or added tokens than this (or ids above it) are rejected as hostile.
    static constexpr int64_t max_vocab_entries = 10'000'000;
    // from_json with a lower entry limit, so tests can exercise the rejection without a 10M-entry file.
    static Tokenizer from_json(const std::string & tokenizer_json, const std::string & tokenizer_config_json,
                               const std::string & path_for_errors, int64_t vocab_entry_limit);

    Tokenizer(Tokenizer &&) noexcept;
    Tokenizer & operator=(Tokenizer &&) noexcept;
    ~Tokenizer();

    // Text -> ids. add_special_tokens = wrap in the post-processor's template (TemplateProcessing: BOS for
    // Llama 2 and Meta's Llama 3 files), as HF encode(text, add_special_tokens=True); a tokenizer.json with no
    // template falls back on tokenizer_config's add_bos_token / add_eos_token. Throws zt::Error when `text`
    // is not valid UTF-8. Thread-safe: one Tokenizer may encode from many threads.
    std::vector<int32_t> encode(const std::string & text, bool add_special_tokens = false) const;
    // Ids -> text (byte-level decoding / metaspace + byte fallback). skip_special drops special added tokens.
    // Invalid UTF-8 from partial byte sequences is kept as bytes (caller may replace; HF would write U+FFFD).
    // Ids outside the vocab are skipped, as HF does.
    std::string decode(const std::vector<int32_t> & ids, bool skip_special = false) const;

    int64_t vocab_size() const;                 // max id + 1 over the model vocab and added tokens
    std::optional<int32_t> bos_id() const;      // from tokenizer_config.json bos_token, when set
    std::optional<int32_t> eos_id() const;      // from tokenizer_config.json eos_token, when set
    bool add_bos() const;                       // whether encode(..., true) prepends BOS
    bool is_special(int32_t id) const;          // an added token with "special": true
    std::optional<int32_t> token_id(const std::string & token) const;   // exact vocab/added-token lookup

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace zt
