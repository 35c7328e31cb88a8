// Tokenizer::from_gguf (see tokenizer.h): the tokenizer a GGUF file carries in its metadata (llama.cpp's
// tokenizer.ggml.* keys), rebuilt as the Hugging Face tokenizer.json it was converted from and loaded through
// Tokenizer::from_json, so every check and the whole pipeline are shared with HF folders.
//
//   tokenizer.ggml.model "gpt2"  -> byte-level BPE: tokens (byte-level spelling) + merges ("a b"), the
//                                   pre-tokeniser named by tokenizer.ggml.pre (regex Split + ByteLevel), NFC for
//                                   Qwen2, ignore_merges for Llama 3, a ByteLevel decoder.
//   tokenizer.ggml.model "llama" -> SentencePiece-style BPE with byte fallback (Llama 2 / Mistral): "▁" for
//                                   spaces, "▁" prepended to each text piece (add_space_prefix, default true),
//                                   <0xXX> byte tokens; merges from the file, or derived from the token scores
//                                   as HF transformers derives them (higher-scoring merged piece first).
// Token types (tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte;
// unknown and control tokens become special added tokens, user-defined ones non-special added tokens (matched
// whole in text), the rest plain vocab entries. bos/eos/unknown ids and add_bos/add_eos become the
// tokenizer_config.json fields from_json reads. Wrong value types, array lengths that disagree, ids out of range,
// duplicate tokens, unknown models or pre-tokenisers are errors naming the file and the key.
// Where HF transformers' own GGUF reader departs from the original tokenizer.json, this follows the original:
// NFC for qwen2 (transformers skips it), ignore_merges for Llama 3 (likewise), "▁" after every special token in
// SentencePiece text (transformers' Metaspace "first" adds it at the start only; llama.cpp agrees with the original).
#include "runtime/base/error.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/unicode_text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zt {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxDerivedTokenBytes = 1024;

enum : int64_t { kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The split regexes of the original tokenizer.json files (HF `tokenizers` Oniguruma syntax).
constexpr const char * kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char * kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A family of tokenizer.ggml.pre names sharing one HF pre-tokeniser.
struct PreFamily {
    std::vector<std::string> names;
    const char * split;    // a Split(regex, Isolated) before a regex-less ByteLevel; nullptr: ByteLevel's GPT-2 regex
    bool nfc;              // NFC normaliser
    bool ignore_merges;    // a whole pre-token found in the vocab is one token
};

const std::vector<PreFamily> & pre_families() {
    static const std::vector<PreFamily> families = {
        {{"llama-bpe", "llama3", "llama-v3"}, kLlama3Split, false, true},   // Llama 3 / 3.1 / 3.2
        {{"qwen2"}, kQwen2Split, true, false},                              // Qwen1.5, Qwen2, 2.5, 3
        // GPT-2's own regex. SmolLM2's tokenizer.json has just that (llama.cpp's "smollm" first isolates \p{N},
        // which splits " ①" and "\n 1" differently); "default" is how transformers reads an unnamed byte-level vocab.
        {{"gpt-2", "gpt2", "smollm", "default", "phi-2", "mpt", "olmo"}, nullptr, false, false},
    };
    return families;
}

std::string known_pre_names() {
    std::string s;
    for (const auto & f : pre_families())
        for (const auto & n : f.names) s += (s.empty() ? "" : ", ") + n;
    return s;
}

json split_step(const char * regex) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}

json byte_level(bool use_regex) {
    return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}};
}

// Reads the tokenizer keys of one GGUF's metadata, each checked for type and range.
class Metadata {
public:
    Metadata(const json & md, const std::string & path) : md_(md), path_(path) {}

    const json * find(const std::string & key) const {
        if (!md_.is_object()) return nullptr;
        auto it = md_.find(key);
        return it == md_.end() ? nullptr : &*it;
    }

    std::optional<std::string> string(const std::string & key) const {
        const json * v = find(key);
        if (!v) return std::nullopt;
        ZT_CHECK(v->is_string(), "{}: GGUF metadata {} must be a string, found {}", path_, key, v->type_name());
        std::string s = v->get<std::string>();
        ZT_CHECK(utf8_is_valid(s), "{}: GGUF metadata {} is not valid UTF-8", path_, key);
        return s;
    }

    std::optional<bool> boolean(const std::string & key) const {
        const json * v = find(key);
        if (!v) return std::nullopt;
        ZT_CHECK(v->is_boolean(), "{}: GGUF metadata {} must be a bool, found {}", path_, key, v->type_name());
        return v->get<bool>();
    }

    // A token id key: an integer naming one of the n tokens.
    std::optional<int32_t> token_id(const std::string & key, size_t n) const {
        const json * v = find(key);
        if (!v) return std::nullopt;
        ZT_CHECK(v->is_number_integer(), "{}: GGUF metadata {} must be an integer token id, found {}", path_, key,
                 v->type_name());
        const bool in_range = v->is_number_unsigned() ? v->get<uint64_t>() < n
                                                       : v->get<int64_t>() >= 0 && uint64_t(v->get<int64_t>()) < n;
        ZT_CHECK(in_range, "{}: GGUF metadata {} = {} is not a token id: the vocabulary has {} tokens (0 .. {})",
                 path_, key, v->dump(), n, n == 0 ? 0 : n - 1);
        return int32_t(v->get<int64_t>());
    }

    // An array key whose elements all pass `ok`; `what` names the element type in errors.
    template <class Pred>
    const json * array(const std::string & key, size_t expect_len, Pred ok, const char * what) const {
        const json * v = find(key);
        if (!v) return nullptr;
        ZT_CHECK(v->is_array(), "{}: GGUF metadata {} must be an array of {}, found {}", path_, key, what,
                 v->type_name());
        ZT_CHECK(expect_len == SIZE_MAX || v->size() == expect_len,
                 "{}: GGUF metadata {} has {} entries but tokenizer.ggml.tokens has {}; the file is corrupt", path_, key,
                 v->size(), expect_len);
        for (size_t i = 0; i < v->size(); ++i)
            ZT_CHECK(ok((*v)[i]), "{}: GGUF metadata {}[{}] must be {}, found {}", path_, key, i, what,
                     (*v)[i].type_name());
        return v;
    }

private:
    const json & md_;
    const std::string & path_;
};

// HF transformers' generate_merges(vocab, scores): every split of every token into two vocab tokens, ordered by
// the merged token's score (highest first), then the longer left piece, then the longer right piece (code points),
// ties kept in token order and, within a token, by the pieces' ids. This is the merge list HF builds for a
// SentencePiece vocabulary that comes without merges.
std::vector<std::pair<std::string, std::string>> merges_from_scores(
    const std::vector<std::string> & tokens, const std::vector<double> & scores,
    const std::unordered_map<std::string, int32_t> & ids) {
    struct Merge { int32_t left, right; double score; uint32_t left_chars, right_chars; };
    std::vector<Merge> all;
    std::vector<size_t> bounds;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const std::string & t = tokens[i];
        bounds.clear();
        for (size_t p = 0; p < t.size(); p += utf8_seq_len(static_cast<unsigned char>(t[p]))) bounds.push_back(p);
        const size_t first = all.size();
        for (size_t k = 1; k < bounds.size(); ++k) {
            auto l = ids.find(t.substr(0, bounds[k]));
            if (l == ids.end()) continue;
            auto r = ids.find(t.substr(bounds[k]));
            if (r == ids.end()) continue;
            all.push_back(Merge{l->second, r->second, scores[i], uint32_t(k), uint32_t(bounds.size() - k)});
        }
        std::sort(all.begin() + std::ptrdiff_t(first), all.end(), [](const Merge & a, const Merge & b) {
            return a.left != b.left ? a.left < b.left : a.right < b.right;
        });
    }
    std::stable_sort(all.begin(), all.end(), [](const Merge & a, const Merge & b) {
        if (a.score != b.score) return a.score > b.score;
        if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
        return a.right_chars > b.right_chars;
    });
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(all.size());
    for (const Merge & m : all) out.emplace_back(tokens[size_t(m.left)], tokens[size_t(m.right)]);
    return out;
}

std::string use_hf_folder_hint() {
    return "to run this model anyway, point \"tokenizer\" at a folder holding the model's Hugging Face "
           "tokenizer.json (\"tokenizer\": \"DIR\")";
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile & file, const std::string & path_for_errors) {
    const std::string & where = path_for_errors;
    const Metadata md(file.metadata, where);

    // ---- model and pre-tokeniser names ----
    const std::optional<std::string> model = md.string("tokenizer.ggml.model");
    ZT_CHECK(model.has_value(), "{}: the GGUF metadata has no tokenizer.ggml.model, so the file carries no tokenizer; "
             "{}", where, use_hf_folder_hint());
    const bool spm = *model == "llama";
    ZT_CHECK(spm || *model == "gpt2",
             "{}: tokenizer.ggml.model is \"{}\", a tokenizer ztinfer does not read from GGUF (known: gpt2 = byte-level "
             "BPE, llama = SentencePiece-style BPE); {}", where, *model, use_hf_folder_hint());
    if (spm) {   // SentencePiece variants that store or split text differently from Llama 2 / Mistral
        const std::string arch = md.string("general.architecture").value_or("");
        for (const char * other : {"gemma", "gemma2", "gemma3", "gemma3n", "phi3"})
            ZT_CHECK(arch != other, "{}: a SentencePiece vocabulary of a {} model (Gemma respells space tokens, "
                     "Phi-3 prefixes spaces differently); ztinfer reads the Llama 2 / Mistral kind only: {}", where, arch,
                     use_hf_folder_hint());
    }
    const std::optional<std::string> pre_name = md.string("tokenizer.ggml.pre");
    const PreFamily * pre = nullptr;
    if (!spm) {   // a SentencePiece vocabulary has no pre-tokeniser: llama.cpp ignores the key there too
        const std::string name = pre_name.value_or("default");
        for (const auto & f : pre_families())
            if (std::find(f.names.begin(), f.names.end(), name) != f.names.end()) pre = &f;
        ZT_CHECK(pre != nullptr,
                 "{}: tokenizer.ggml.pre is \"{}\", a pre-tokenizer ztinfer does not know (known: {}); {}", where,
                 name, known_pre_names(), use_hf_folder_hint());
    }

    // ---- tokens, types, scores ----
    const json * tokens_json = md.array("tokenizer.ggml.tokens", SIZE_MAX,
                                        [](const json & v) { return v.is_string(); }, "strings");
    ZT_CHECK(tokens_json != nullptr, "{}: the GGUF metadata has tokenizer.ggml.model but no tokenizer.ggml.tokens; the "
             "file is incomplete: {}", where, use_hf_folder_hint());
    const size_t n = tokens_json->size();
    ZT_CHECK(n > 0, "{}: tokenizer.ggml.tokens is empty", where);
    ZT_CHECK(int64_t(n) <= max_vocab_entries, "{}: tokenizer.ggml.tokens has {} entries, more than the {} allowed",
             where, n, max_vocab_entries);
    std::vector<std::string> tokens(n);
    std::unordered_map<std::string, int32_t> ids;
    ids.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        tokens[i] = (*tokens_json)[i].get<std::string>();
        ZT_CHECK(utf8_is_valid(tokens[i]), "{}: tokenizer.ggml.tokens[{}] is not valid UTF-8 (bad byte at offset {})",
                 where, i, utf8_find_invalid(tokens[i]));
        auto [it, fresh] = ids.emplace(tokens[i], int32_t(i));
        ZT_CHECK(fresh, "{}: tokenizer.ggml.tokens lists \"{}\" twice (ids {} and {}); the file is corrupt", where,
                 tokens[i], it->second, i);
    }
    std::vector<int64_t> types(n, kNormal);
    if (const json * t = md.array("tokenizer.ggml.token_type", n,
                                  [](const json & v) { return v.is_number_integer(); }, "integers")) {
        for (size_t i = 0; i < n; ++i) {
            types[i] = (*t)[i].is_number_unsigned() && (*t)[i].get<uint64_t>() > 6 ? -1 : (*t)[i].get<int64_t>();
            ZT_CHECK(types[i] >= kUndefined && types[i] <= kByte,
                     "{}: tokenizer.ggml.token_type[{}] = {} is not a token type (0 .. 6)", where, i, (*t)[i].dump());
        }
    }

    // ---- special token ids and flags ----
    std::optional<int32_t> bos = md.token_id("tokenizer.ggml.bos_token_id", n);
    std::optional<int32_t> eos = md.token_id("tokenizer.ggml.eos_token_id", n);
    std::optional<int32_t> unk = md.token_id("tokenizer.ggml.unknown_token_id", n);
    (void)md.token_id("tokenizer.ggml.padding_token_id", n);   // checked; padding does not change tokenization
    if (spm) {   // llama.cpp's defaults for a SentencePiece vocabulary
        if (!bos && n > 1) bos = 1;
        if (!eos && n > 2) eos = 2;
        if (!unk) unk = 0;
    }
    const bool add_bos = md.boolean("tokenizer.ggml.add_bos_token").value_or(spm);
    const bool add_eos = md.boolean("tokenizer.ggml.add_eos_token").value_or(false);
    const bool add_space_prefix = md.boolean("tokenizer.ggml.add_space_prefix").value_or(true);
    ZT_CHECK(!add_bos || bos, "{}: tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id",
             where);
    ZT_CHECK(!add_eos || eos, "{}: tokenizer.ggml.add_eos_token is true but there is no tokenizer.ggml.eos_token_id",
             where);

    // ---- merges ----
    std::vector<std::pair<std::string, std::string>> merges;
    if (const json * m = md.array("tokenizer.ggml.merges", SIZE_MAX,
                                  [](const json & v) { return v.is_string(); }, "strings")) {
        ZT_CHECK(int64_t(m->size()) <= max_vocab_entries, "{}: tokenizer.ggml.merges has {} entries, more than the {} "
                 "allowed", where, m->size(), max_vocab_entries);
        merges.reserve(m->size());
        for (size_t r = 0; r < m->size(); ++r) {
            const std::string & s = (*m)[r].get_ref<const std::string &>();
            const size_t sp = s.size() > 1 ? s.find(' ', 1) : std::string::npos;   // llama.cpp splits here too
            ZT_CHECK(sp != std::string::npos, "{}: tokenizer.ggml.merges[{}] is not two tokens separated by a space",
                     where, r);
            std::string a = s.substr(0, sp), b = s.substr(sp + 1);
            ZT_CHECK(ids.count(a) && ids.count(b) && ids.count(a + b),
                     "{}: tokenizer.ggml.merges[{}] (\"{}\" \"{}\") names or makes a token missing from "
                     "tokenizer.ggml.tokens; the file is corrupt", where, r, a, b);
            merges.emplace_back(std::move(a), std::move(b));
        }
    } else if (spm) {
        for (size_t i = 0; i < n; ++i)   // the derivation hashes every prefix of every token: O(length^2) each
            ZT_CHECK(tokens[i].size() <= kMaxDerivedTokenBytes,
                     "{}: tokenizer.ggml.tokens[{}] is {} bytes long; deriving merges from scores is limited to tokens "
                     "of {} bytes, and no real SentencePiece vocabulary comes close: {}", where, i, tokens[i].size(),
                     kMaxDerivedTokenBytes, use_hf_folder_hint());
        std::vector<double> scores(n, 0.0);
        if (const json * s = md.array("tokenizer.ggml.scores", n,
                                      [](const json & v) { return v.is_number(); }, "numbers")) {
            for (size_t i = 0; i < n; ++i) {
                scores[i] = (*s)[i].get<double>();
                ZT_CHECK(!std::isnan(scores[i]), "{}: tokenizer.ggml.scores[{}] is NaN", where, i);
            }
        }
        merges = merges_from_scores(tokens, scores, ids);
        ZT_CHECK(int64_t(merges.size()) <= max_vocab_entries, "{}: the token scores imply {} merges, more than the {} "
                 "allowed", where, merges.size(), max_vocab_entries);
    } else {
        ZT_FAIL("{}: a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges, and this GGUF has none; {}", where,
                use_hf_folder_hint());
    }

    // ---- the tokenizer.json HF would hold ----
    json vocab = json::object();
    for (size_t i = 0; i < n; ++i) vocab[tokens[i]] = i;
    json merges_json = json::array();
    for (auto & [a, b] : merges) merges_json.push_back(json::array({std::move(a), std::move(b)}));
    json model_json = {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", std::move(vocab)},
                       {"merges", std::move(merges_json)}};
    json added = json::array();
    for (size_t i = 0; i < n; ++i) {
        if (types[i] != kUnknown && types[i] != kControl && types[i] != kUserDefined) continue;
        if (tokens[i].empty()) continue;   // matches no text
        added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", types[i] != kUserDefined}});
    }
    json doc = {{"version", "1.0"}, {"added_tokens", std::move(added)}, {"post_processor", nullptr}};
    if (spm) {
        const json replace_space = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
        doc["normalizer"] = add_space_prefix
            ? json{{"type", "Sequence"},
                   {"normalizers", json::array({json{{"type", "Prepend"}, {"prepend", "\u2581"}}, replace_space})}}
            : replace_space;
        doc["pre_tokenizer"] = nullptr;
        json decoders = json::array({json{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                     json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}}});
        if (add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        doc["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(decoders)}};
        model_json["byte_fallback"] = true;
        model_json["fuse_unk"] = true;
        if (unk) model_json["unk_token"] = tokens[size_t(*unk)];
    } else {
        doc["normalizer"] = pre->nfc ? json{{"type", "NFC"}} : json(nullptr);
        json steps = json::array();
        if (pre->split) steps.push_back(split_step(pre->split));
        steps.push_back(byte_level(pre->split == nullptr));
        doc["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}};
        doc["decoder"] = byte_level(false);
        model_json["ignore_merges"] = pre->ignore_merges;
    }
    doc["model"] = std::move(model_json);

    json config = {{"add_bos_token", add_bos}, {"add_eos_token", add_eos}};
    if (bos) config["bos_token"] = tokens[size_t(*bos)];
    if (eos) config["eos_token"] = tokens[size_t(*eos)];
    return from_json(doc.dump(), config.dump(), where);
}

}  // namespace zt
