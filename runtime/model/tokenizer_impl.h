// Private to the tokenizer, shared by its files: tokenizer.cpp (the pipeline: loading, added / special tokens,
// post-processor, encode / decode), tokenizer_normalizer.cpp, tokenizer_pre_tokenizer.cpp (with its PCRE2 regex)
// and tokenizer_decoder.cpp. Holds Tokenizer::Impl, the steps each stage is loaded into, and the JSON helpers
// the loaders share. Other code uses tokenizer.h.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/model/tokenizer.h"
#include "runtime/model/tokenizer_bpe.h"

namespace zt {
namespace tokenizer_detail {

using json = nlohmann::json;

// ---- added tokens (tokenizer.cpp) -------------------------------------------------------------------

struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest multi-string matcher (what HF builds with aho-corasick MatchKind::LeftmostLongest).
class TokenMatcher {
public:
    void add(const std::string & pattern, int32_t index) {
        if (pattern.empty()) return;
        int32_t node = 0;
        for (unsigned char c : pattern) {
            uint64_t key = (uint64_t(uint32_t(node)) << 8) | c;
            auto it = edges_.find(key);
            if (it == edges_.end()) {
                terminal_.push_back(-1);
                it = edges_.emplace(key, int32_t(terminal_.size() - 1)).first;
            }
            node = it->second;
        }
        if (terminal_[size_t(node)] < 0) terminal_[size_t(node)] = index;
        first_[static_cast<unsigned char>(pattern[0])] = true;
        empty_ = false;
    }
    bool empty() const { return empty_; }
    struct Match { size_t start, end; int32_t index; };
    void find_all(std::string_view s, std::vector<Match> & out) const {
        out.clear();
        if (empty_) return;
        size_t pos = 0;
        while (pos < s.size()) {
            if (!first_[static_cast<unsigned char>(s[pos])]) { ++pos; continue; }
            int32_t node = 0, best = -1;
            size_t best_end = 0;
            for (size_t i = pos; i < s.size(); ++i) {
                auto it = edges_.find((uint64_t(uint32_t(node)) << 8) | static_cast<unsigned char>(s[i]));
                if (it == edges_.end()) break;
                node = it->second;
                if (terminal_[size_t(node)] >= 0) { best = terminal_[size_t(node)]; best_end = i + 1; }
            }
            if (best >= 0) {
                out.push_back(Match{pos, best_end, best});
                pos = best_end;
            } else {
                ++pos;
            }
        }
    }

private:
    std::unordered_map<uint64_t, int32_t> edges_;
    std::vector<int32_t> terminal_{-1};   // node 0 = root
    bool first_[256] = {};
    bool empty_ = true;
};

// A piece of text on its way through the pipeline: either still text, or an added token's id.
struct Segment {
    std::string text;
    int32_t id = -1;
    bool at_start = false;   // starts at offset 0 of the original text (Metaspace prepend_scheme "first")
};

// ---- normaliser (tokenizer_normalizer.cpp) ------------------------------------------------------------

struct NormalizerStep {
    enum Kind { nfc, nfd, nfkc, nfkd, prepend, replace } kind;
    std::string a, b;
};

// Every occurrence of `from` in s replaced by `to` (s itself when from is empty).
std::string replace_all(std::string_view s, const std::string & from, const std::string & to);

// ---- pre-tokeniser (tokenizer_pre_tokenizer.cpp) ------------------------------------------------------

class Regex;   // a compiled PCRE2 pattern

enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

struct PreTokenizerStep {
    enum Kind { split, byte_level, metaspace } kind;
    std::shared_ptr<Regex> regex;   // split (pattern), byte_level with use_regex (GPT-2 pattern)
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
    bool add_prefix_space = false;   // byte_level
    std::string replacement;         // metaspace
    std::string prepend_scheme;      // metaspace: always | first | never
    bool metaspace_split = true;
};

// ---- decoder (tokenizer_decoder.cpp) ------------------------------------------------------------------

struct DecoderStep {
    enum Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace } kind;
    std::string a, b;               // replace: pattern, content; strip: content; metaspace: replacement
    size_t start = 0, stop = 0;     // strip
    bool prepend = true;            // metaspace: drop the replacement characters of the first token
};

// ---- JSON helpers (tokenizer.cpp) ---------------------------------------------------------------------

bool json_bool(const json & obj, const char * key, bool fallback, const std::string & where);
// A string field that must be valid UTF-8.
std::string json_string(const json & obj, const char * key, const std::string & where);
// The "type" of a step object.
std::string json_type(const json & obj, const std::string & where);

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
    // the pieces' types (tokenizer_detail), by their short names
    using json = tokenizer_detail::json;
    using AddedToken = tokenizer_detail::AddedToken;
    using TokenMatcher = tokenizer_detail::TokenMatcher;
    using Segment = tokenizer_detail::Segment;
    using NormalizerStep = tokenizer_detail::NormalizerStep;
    using PreTokenizerStep = tokenizer_detail::PreTokenizerStep;
    using DecoderStep = tokenizer_detail::DecoderStep;

    std::string path;
    BpeModel model;
    std::vector<std::string> id_to_token;   // index = id; "" where no token has that id
    std::vector<uint8_t> id_present;
    std::vector<uint8_t> id_special;
    std::vector<AddedToken> added;
    std::unordered_map<std::string, int32_t> added_by_content;
    TokenMatcher raw_matcher;          // added tokens with normalized = false, matched on the raw text
    TokenMatcher normalized_matcher;   // normalized = true, matched on normalised text
    std::vector<NormalizerStep> normalizer;
    std::vector<PreTokenizerStep> pre_tokenizer;
    std::vector<DecoderStep> decoder;
    bool has_decoder = false;
    std::vector<int32_t> prefix_ids, suffix_ids;   // post-processor template around the sequence
    std::optional<int32_t> bos, eos;
    int64_t vocab_size = 0;
    int64_t entry_limit = Tokenizer::max_vocab_entries;

    // -- loading --
    void load_model(const json & m);
    void load_added_tokens(const json & a);
    void load_normalizer(const json & n, const std::string & where);
    void load_pre_tokenizer(const json & p, const std::string & where);
    void load_decoder(const json & d, const std::string & where);
    void load_post_processor(const json & p, const std::string & where);
    void load_config(const std::string & config_text);
    std::optional<int32_t> config_token(const json & cfg, const char * key) const;
    std::vector<int32_t> template_ids(const json & special_tokens, const json & item, const std::string & where);

    // -- encoding --
    std::string normalize(std::string_view s) const;
    void split_added(const Segment & seg, const TokenMatcher & matcher, std::vector<Segment> & out) const;
    void pre_tokenize(std::vector<Segment> & pieces) const;
    void encode_text(const Segment & seg, std::vector<int32_t> & ids) const;
    std::optional<int32_t> lookup(const std::string & token) const;

    // -- decoding --
    void decode_tokens(std::vector<std::string> & tokens) const;   // the decoder steps, in order
};

}  // namespace zt
