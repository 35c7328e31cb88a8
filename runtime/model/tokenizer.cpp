// Tokenizer (see tokenizer.h): loads a Hugging Face tokenizer.json (+ tokenizer_config.json), validates it
// against hostile input, and runs HF's pipeline: added-token extraction -> normaliser -> pre-tokeniser
// (PCRE2 regex Split, ByteLevel, Metaspace) -> BPE model -> post-processor template; decoding runs HF's
// decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace).
#include "runtime/model/tokenizer.h"

#include "runtime/base/error.h"
#include "runtime/model/tokenizer_bpe.h"
#include "runtime/model/unicode_text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unordered_map>
#include <unordered_set>

namespace zt {

namespace {

using json = nlohmann::json;

constexpr int64_t max_token_id = 10'000'000;
constexpr size_t max_regex_bytes = 64 * 1024;
constexpr int max_json_depth = 64;

// ---- regex (PCRE2) ------------------------------------------------------------------------------

// Oniguruma (HF `tokenizers`) -> PCRE2: \s/\S become Unicode White_Space classes (PCRE2's UCP \s lacks
// U+0085), \h/\H (hex digit in Oniguruma, horizontal space in PCRE2) become explicit classes.
std::string regex_translate(const std::string & onig) {
    const std::string ws = unicode_whitespace_class();
    std::string out;
    bool in_class = false;
    for (size_t i = 0; i < onig.size(); ++i) {
        char c = onig[i];
        if (c == '\\' && i + 1 < onig.size()) {
            char e = onig[++i];
            if (e == 's') out += in_class ? ws : "[" + ws + "]";
            else if (e == 'S' && !in_class) out += "[^" + ws + "]";
            else if (e == 'h') out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
            else if (e == 'H' && !in_class) out += "[^0-9a-fA-F]";
            else { out += '\\'; out += e; }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            out += c;
            if (i + 1 < onig.size() && onig[i + 1] == '^') out += onig[++i];
            if (i + 1 < onig.size() && onig[i + 1] == ']') out += onig[++i];   // literal ] first
            continue;
        }
        if (in_class && c == '[' && i + 1 < onig.size() && onig[i + 1] == ':') {   // [:alpha:]
            size_t end = onig.find(":]", i + 2);
            if (end != std::string::npos) {
                out.append(onig, i, end + 2 - i);
                i = end + 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = false;
        out += c;
    }
    return out;
}

class Regex {
public:
    Regex(const std::string & pattern, bool literal, const std::string & where) {
        ZT_CHECK(pattern.size() <= max_regex_bytes, "{}: a regex of {} bytes is too long (limit {})", where,
                 pattern.size(), max_regex_bytes);
        ZT_CHECK(utf8_is_valid(pattern), "{}: a regex pattern is not valid UTF-8", where);
        std::string translated = literal ? pattern : regex_translate(pattern);
        int err = 0;
        PCRE2_SIZE err_off = 0;
        uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
        code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options, &err,
                              &err_off, nullptr);
        if (!code_) {
            PCRE2_UCHAR buf[256];
            pcre2_get_error_message(err, buf, sizeof buf);
            ZT_FAIL("{}: cannot compile the pre-tokeniser regex \"{}\" at offset {}: {}", where, pattern,
                    size_t(err_off), reinterpret_cast<const char *>(buf));
        }
        jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
    }
    Regex(const Regex &) = delete;
    Regex & operator=(const Regex &) = delete;
    ~Regex() { pcre2_code_free(code_); }

    // Non-overlapping matches [start, end) over valid UTF-8 `s`, left to right.
    void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>> & out) const {
        out.clear();
        pcre2_match_data * md = pcre2_match_data_create_from_pattern(code_, nullptr);
        ZT_CHECK(md != nullptr, "out of memory while matching the pre-tokeniser regex");
        size_t pos = 0;
        while (pos <= s.size()) {
            int rc = jit_ ? pcre2_jit_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md,
                                            nullptr)
                          : -1000;
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == -1000)
                rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                pcre2_match_data_free(md);
                PCRE2_UCHAR buf[256];
                pcre2_get_error_message(rc, buf, sizeof buf);
                ZT_FAIL("the pre-tokeniser regex failed on a text of {} bytes: {}", s.size(),
                        reinterpret_cast<const char *>(buf));
            }
            const PCRE2_SIZE * ov = pcre2_get_ovector_pointer(md);
            size_t start = ov[0], end = ov[1];
            if (end < start || end > s.size()) break;   // \K tricks: stop rather than misbehave
            out.emplace_back(start, end);
            if (end == start) {   // empty match: step one character
                if (end >= s.size()) break;
                end += utf8_seq_len(static_cast<unsigned char>(s[end]));
            }
            pos = end;
        }
        pcre2_match_data_free(md);
    }

private:
    pcre2_code * code_ = nullptr;
    bool jit_ = false;
};

// ---- added tokens -------------------------------------------------------------------------------

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

// ---- normaliser -----------------------------------------------------------------------------------

struct NormalizerStep {
    enum Kind { nfc, nfd, nfkc, nfkd, prepend, replace } kind;
    std::string a, b;
};

std::string replace_all(std::string_view s, const std::string & from, const std::string & to) {
    if (from.empty()) return std::string(s);
    std::string out;
    size_t pos = 0;
    for (;;) {
        size_t hit = s.find(from, pos);
        if (hit == std::string_view::npos) break;
        out.append(s.data() + pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    out.append(s.data() + pos, s.size() - pos);
    return out;
}

// ---- pre-tokeniser --------------------------------------------------------------------------------

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

// HF NormalizedString::split: cut [0, n) by the regex matches, then apply the delimiter behaviour.
void split_by(const Regex & re, SplitBehavior behavior, bool invert, const Segment & in,
              std::vector<Segment> & out) {
    std::vector<std::pair<size_t, size_t>> hits;
    re.find_all(in.text, hits);
    struct Part { size_t start, end; bool is_match; };
    std::vector<Part> parts;
    size_t prev = 0;
    for (auto [s, e] : hits) {
        if (prev != s) parts.push_back({prev, s, false});
        parts.push_back({s, e, true});
        prev = e;
    }
    if (prev != in.text.size()) parts.push_back({prev, in.text.size(), false});
    if (invert)
        for (auto & p : parts) p.is_match = !p.is_match;

    std::vector<Part> kept;
    switch (behavior) {
        case SplitBehavior::isolated:
            kept = parts;
            break;
        case SplitBehavior::removed:
            for (auto & p : parts)
                if (!p.is_match) kept.push_back(p);
            break;
        case SplitBehavior::merged_with_previous: {
            bool previous_match = false;
            for (auto & p : parts) {
                if (p.is_match && !previous_match && !kept.empty()) kept.back().end = p.end;
                else kept.push_back(p);
                previous_match = p.is_match;
            }
            break;
        }
        case SplitBehavior::merged_with_next: {
            bool previous_match = false;
            for (size_t k = parts.size(); k-- > 0;) {
                auto & p = parts[k];
                if (p.is_match && !previous_match && !kept.empty()) kept.back().start = p.start;
                else kept.push_back(p);
                previous_match = p.is_match;
            }
            std::reverse(kept.begin(), kept.end());
            break;
        }
        case SplitBehavior::contiguous: {
            bool previous_match = false;
            for (auto & p : parts) {
                if (p.is_match && previous_match && !kept.empty()) kept.back().end = p.end;
                else kept.push_back(p);
                previous_match = p.is_match;
            }
            break;
        }
    }
    for (auto & p : kept) {
        if (p.end <= p.start) continue;
        out.push_back(Segment{in.text.substr(p.start, p.end - p.start), -1, in.at_start && p.start == 0});
    }
}

// ---- decoder --------------------------------------------------------------------------------------

struct DecoderStep {
    enum Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace } kind;
    std::string a, b;               // replace: pattern, content; strip: content; metaspace: replacement
    size_t start = 0, stop = 0;     // strip
    bool prepend = true;            // metaspace: drop the replacement characters of the first token
};

// ---- JSON helpers ---------------------------------------------------------------------------------

// Rejects nesting deeper than max_json_depth before nlohmann parses (a deep file would exhaust the stack).
bool json_depth_ok(const std::string & text) {
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_json_depth) return false;
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    return true;
}

bool json_bool(const json & obj, const char * key, bool fallback, const std::string & where) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) ZT_FAIL("{}: field \"{}\" must be true or false", where, key);
    return it->get<bool>();
}

std::string json_string(const json & obj, const char * key, const std::string & where) {
    auto it = obj.find(key);
    ZT_CHECK(it != obj.end() && it->is_string(), "{}: field \"{}\" must be a string", where, key);
    std::string s = it->get<std::string>();
    ZT_CHECK(utf8_is_valid(s), "{}: field \"{}\" is not valid UTF-8", where, key);
    return s;
}

std::string json_type(const json & obj, const std::string & where) {
    ZT_CHECK(obj.is_object(), "{}: expected an object, got {}", where, obj.type_name());
    return json_string(obj, "type", where);
}

// A Split / Replace "pattern": {"Regex": "..."} or {"String": "..."}.
std::shared_ptr<Regex> json_pattern(const json & step, const std::string & where) {
    auto it = step.find("pattern");
    ZT_CHECK(it != step.end() && it->is_object(), "{}: \"pattern\" must be {{\"Regex\": ...}} or {{\"String\": ...}}",
             where);
    if (it->contains("Regex")) return std::make_shared<Regex>(json_string(*it, "Regex", where), false, where);
    if (it->contains("String")) return std::make_shared<Regex>(json_string(*it, "String", where), true, where);
    ZT_FAIL("{}: \"pattern\" must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
}

std::string read_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    ZT_CHECK(f.good(), "cannot open {}: check that the path exists and is readable", path);
    std::ostringstream ss;
    ss << f.rdbuf();
    ZT_CHECK(!f.bad(), "cannot read {}", path);
    return ss.str();
}

bool is_directory(const std::string & path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool file_exists(const std::string & path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

const char * gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace

// =====================================================================================================

struct Tokenizer::Impl {
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
};

void Tokenizer::Impl::load_model(const json & m) {
    const std::string where = path + ": model";
    ZT_CHECK(m.is_object(), "{} must be an object", where);
    std::string type = m.contains("type") ? json_string(m, "type", where) : (m.contains("merges") ? "BPE" : "");
    ZT_CHECK(type == "BPE",
             "{}: model type \"{}\" is not supported (ztinfer reads BPE tokenizers: byte-level BPE as in Qwen2/3 "
             "and Llama 3, SentencePiece-style BPE as in Llama 2)",
             where, type);
    ZT_CHECK(!m.contains("dropout") || m["dropout"].is_null() || (m["dropout"].is_number() && m["dropout"] == 0),
             "{}: BPE dropout is set; inference needs deterministic tokenization: set \"dropout\" to null", where);
    auto vit = m.find("vocab");
    ZT_CHECK(vit != m.end() && vit->is_object(), "{}: \"vocab\" must be an object of token -> id", where);
    ZT_CHECK(int64_t(vit->size()) <= entry_limit, "{}: the vocab has {} entries, more than the {} allowed",
             where, vit->size(), entry_limit);
    std::unordered_map<std::string, int32_t> vocab;
    vocab.reserve(vit->size());
    std::unordered_map<int32_t, const std::string *> seen;
    int64_t max_id = -1;
    for (auto it = vit->begin(); it != vit->end(); ++it) {
        const std::string & token = it.key();
        ZT_CHECK(utf8_is_valid(token), "{}: a vocab token is not valid UTF-8 (bytes at offset {})", where,
                 utf8_find_invalid(token));
        ZT_CHECK(it->is_number_integer(), "{}: the id of token \"{}\" is not an integer", where, token);
        int64_t id = it->get<int64_t>();
        ZT_CHECK(id >= 0 && id <= max_token_id, "{}: token \"{}\" has id {}, outside [0, {}]", where, token, id,
                 max_token_id);
        max_id = std::max(max_id, id);
        vocab.emplace(token, int32_t(id));
    }
    ZT_CHECK(vocab.size() == vit->size(), "{}: the vocab lists a token twice", where);
    for (auto & [token, id] : vocab) {
        auto [pos, fresh] = seen.emplace(id, &token);
        ZT_CHECK(fresh, "{}: id {} is given to two tokens (\"{}\" and \"{}\"); ids must be unique", where, id,
                 *pos->second, token);
    }
    std::vector<std::pair<std::string, std::string>> merges;
    if (auto mit = m.find("merges"); mit != m.end() && !mit->is_null()) {
        ZT_CHECK(mit->is_array(), "{}: \"merges\" must be an array", where);
        ZT_CHECK(int64_t(mit->size()) <= entry_limit, "{}: {} merges is more than the {} allowed", where,
                 mit->size(), entry_limit);
        merges.reserve(mit->size());
        for (size_t r = 0; r < mit->size(); ++r) {
            const json & e = (*mit)[r];
            if (e.is_string()) {
                const std::string & s = e.get_ref<const std::string &>();
                size_t sp = s.find(' ');
                ZT_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                         "{}: merge #{} \"{}\" must be two tokens separated by one space", where, r, s);
                merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
            } else {
                ZT_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(),
                         "{}: merge #{} must be \"a b\" or [\"a\", \"b\"]", where, r);
                merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
            }
        }
    }
    BpeOptions opt;
    opt.fuse_unk = json_bool(m, "fuse_unk", false, where);
    opt.byte_fallback = json_bool(m, "byte_fallback", false, where);
    opt.ignore_merges = json_bool(m, "ignore_merges", false, where);
    if (m.contains("continuing_subword_prefix") && !m["continuing_subword_prefix"].is_null())
        opt.continuing_subword_prefix = json_string(m, "continuing_subword_prefix", where);
    if (m.contains("end_of_word_suffix") && !m["end_of_word_suffix"].is_null())
        opt.end_of_word_suffix = json_string(m, "end_of_word_suffix", where);
    if (m.contains("unk_token") && !m["unk_token"].is_null()) {
        std::string unk = json_string(m, "unk_token", where);
        auto it = vocab.find(unk);
        ZT_CHECK(it != vocab.end(), "{}: unk_token \"{}\" is not in the vocab", where, unk);
        opt.unk_id = it->second;
    }
    vocab_size = max_id + 1;
    id_to_token.assign(size_t(vocab_size), std::string());
    id_present.assign(size_t(vocab_size), 0);
    for (auto & [token, id] : vocab) {
        id_to_token[size_t(id)] = token;
        id_present[size_t(id)] = 1;
    }
    model.build(std::move(vocab), merges, opt, path);
}

void Tokenizer::Impl::load_added_tokens(const json & a) {
    const std::string where = path + ": added_tokens";
    if (a.is_null()) return;
    ZT_CHECK(a.is_array(), "{} must be an array", where);
    ZT_CHECK(int64_t(a.size()) <= entry_limit, "{}: {} entries is more than the {} allowed", where, a.size(),
             entry_limit);
    for (size_t k = 0; k < a.size(); ++k) {
        const json & t = a[k];
        const std::string w = fmt::format("{}[{}]", where, k);
        ZT_CHECK(t.is_object(), "{} must be an object", w);
        AddedToken tok;
        tok.content = json_string(t, "content", w);
        ZT_CHECK(!tok.content.empty(), "{}: the content is empty", w);
        ZT_CHECK(t.contains("id") && t["id"].is_number_integer(), "{}: \"id\" must be an integer", w);
        int64_t id = t["id"].get<int64_t>();
        ZT_CHECK(id >= 0 && id <= max_token_id, "{}: id {} of \"{}\" is outside [0, {}]", w, id, tok.content,
                 max_token_id);
        tok.id = int32_t(id);
        tok.special = json_bool(t, "special", false, w);
        tok.single_word = json_bool(t, "single_word", false, w);
        tok.lstrip = json_bool(t, "lstrip", false, w);
        tok.rstrip = json_bool(t, "rstrip", false, w);
        tok.normalized = json_bool(t, "normalized", !tok.special, w);
        if (auto it = model.vocab().find(tok.content); it != model.vocab().end())
            ZT_CHECK(it->second == tok.id, "{}: \"{}\" has id {} but the model vocab gives it id {}", w,
                     tok.content, tok.id, it->second);
        if (auto it = added_by_content.find(tok.content); it != added_by_content.end()) {
            ZT_CHECK(it->second == tok.id, "{}: \"{}\" is listed twice with ids {} and {}", w, tok.content,
                     it->second, tok.id);
            continue;
        }
        if (tok.id >= vocab_size) {
            vocab_size = int64_t(tok.id) + 1;
            id_to_token.resize(size_t(vocab_size));
            id_present.resize(size_t(vocab_size), 0);
        }
        if (id_present[size_t(tok.id)])
            ZT_CHECK(id_to_token[size_t(tok.id)] == tok.content,
                     "{}: id {} is given to \"{}\" and to \"{}\"; ids must be unique", w, tok.id,
                     id_to_token[size_t(tok.id)], tok.content);
        id_to_token[size_t(tok.id)] = tok.content;
        id_present[size_t(tok.id)] = 1;
        added_by_content.emplace(tok.content, tok.id);
        added.push_back(tok);
    }
    id_special.assign(size_t(vocab_size), 0);
    for (const auto & t : added)
        if (t.special) id_special[size_t(t.id)] = 1;
}

void Tokenizer::Impl::load_normalizer(const json & n, const std::string & where) {
    if (n.is_null()) return;
    const std::string type = json_type(n, where);
    if (type == "Sequence") {
        auto it = n.find("normalizers");
        ZT_CHECK(it != n.end() && it->is_array(), "{}: Sequence needs a \"normalizers\" array", where);
        for (size_t k = 0; k < it->size(); ++k) load_normalizer((*it)[k], fmt::format("{}.normalizers[{}]", where, k));
    } else if (type == "NFC") {
        normalizer.push_back({NormalizerStep::nfc, {}, {}});
    } else if (type == "NFD") {
        normalizer.push_back({NormalizerStep::nfd, {}, {}});
    } else if (type == "NFKC") {
        normalizer.push_back({NormalizerStep::nfkc, {}, {}});
    } else if (type == "NFKD") {
        normalizer.push_back({NormalizerStep::nfkd, {}, {}});
    } else if (type == "Prepend") {
        normalizer.push_back({NormalizerStep::prepend, json_string(n, "prepend", where), {}});
    } else if (type == "Replace") {
        auto it = n.find("pattern");
        ZT_CHECK(it != n.end() && it->is_object() && it->contains("String"),
                 "{}: only Replace normalisers with a {{\"String\": ...}} pattern are supported", where);
        normalizer.push_back({NormalizerStep::replace, json_string(*it, "String", where), json_string(n, "content", where)});
    } else {
        ZT_FAIL("{}: normaliser type \"{}\" is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, "
                "Sequence)",
                where, type);
    }
}

void Tokenizer::Impl::load_pre_tokenizer(const json & p, const std::string & where) {
    if (p.is_null()) return;
    const std::string type = json_type(p, where);
    if (type == "Sequence") {
        auto it = p.find("pretokenizers");
        ZT_CHECK(it != p.end() && it->is_array(), "{}: Sequence needs a \"pretokenizers\" array", where);
        for (size_t k = 0; k < it->size(); ++k)
            load_pre_tokenizer((*it)[k], fmt::format("{}.pretokenizers[{}]", where, k));
    } else if (type == "Split") {
        PreTokenizerStep s{PreTokenizerStep::split, {}, {}, false, false, {}, {}, true};
        s.regex = json_pattern(p, where);
        const std::string b = json_string(p, "behavior", where);
        if (b == "Isolated") s.behavior = SplitBehavior::isolated;
        else if (b == "Removed") s.behavior = SplitBehavior::removed;
        else if (b == "MergedWithPrevious") s.behavior = SplitBehavior::merged_with_previous;
        else if (b == "MergedWithNext") s.behavior = SplitBehavior::merged_with_next;
        else if (b == "Contiguous") s.behavior = SplitBehavior::contiguous;
        else ZT_FAIL("{}: Split behavior \"{}\" is unknown", where, b);
        s.invert = json_bool(p, "invert", false, where);
        pre_tokenizer.push_back(std::move(s));
    } else if (type == "ByteLevel") {
        PreTokenizerStep s{PreTokenizerStep::byte_level, {}, {}, false, false, {}, {}, true};
        s.add_prefix_space = json_bool(p, "add_prefix_space", true, where);
        if (json_bool(p, "use_regex", true, where)) s.regex = std::make_shared<Regex>(gpt2_pattern, false, where);
        pre_tokenizer.push_back(std::move(s));
    } else if (type == "Metaspace") {
        PreTokenizerStep s{PreTokenizerStep::metaspace, {}, {}, false, false, {}, {}, true};
        s.replacement = json_string(p, "replacement", where);
        ZT_CHECK(utf8_count_chars(s.replacement) == 1, "{}: Metaspace replacement must be one character", where);
        s.regex = std::make_shared<Regex>(s.replacement, true, where);
        if (p.contains("prepend_scheme") && !p["prepend_scheme"].is_null()) {
            s.prepend_scheme = json_string(p, "prepend_scheme", where);
            ZT_CHECK(s.prepend_scheme == "always" || s.prepend_scheme == "first" || s.prepend_scheme == "never",
                     "{}: Metaspace prepend_scheme \"{}\" is unknown (always, first, never)", where, s.prepend_scheme);
        } else {
            s.prepend_scheme = json_bool(p, "add_prefix_space", true, where) ? "always" : "never";
        }
        s.metaspace_split = json_bool(p, "split", true, where);
        pre_tokenizer.push_back(std::move(s));
    } else {
        ZT_FAIL("{}: pre-tokeniser type \"{}\" is not supported (supported: Split, ByteLevel, Metaspace, Sequence)",
                where, type);
    }
}

void Tokenizer::Impl::load_decoder(const json & d, const std::string & where) {
    if (d.is_null()) return;
    has_decoder = true;
    const std::string type = json_type(d, where);
    if (type == "Sequence") {
        auto it = d.find("decoders");
        ZT_CHECK(it != d.end() && it->is_array(), "{}: Sequence needs a \"decoders\" array", where);
        for (size_t k = 0; k < it->size(); ++k) load_decoder((*it)[k], fmt::format("{}.decoders[{}]", where, k));
    } else if (type == "ByteLevel") {
        decoder.push_back({DecoderStep::byte_level, {}, {}, 0, 0, true});
    } else if (type == "Replace") {
        auto it = d.find("pattern");
        ZT_CHECK(it != d.end() && it->is_object() && it->contains("String"),
                 "{}: only Replace decoders with a {{\"String\": ...}} pattern are supported", where);
        decoder.push_back({DecoderStep::replace, json_string(*it, "String", where), json_string(d, "content", where), 0, 0, true});
    } else if (type == "ByteFallback") {
        decoder.push_back({DecoderStep::byte_fallback, {}, {}, 0, 0, true});
    } else if (type == "Fuse") {
        decoder.push_back({DecoderStep::fuse, {}, {}, 0, 0, true});
    } else if (type == "Strip") {
        DecoderStep s{DecoderStep::strip, json_string(d, "content", where), {}, 0, 0, true};
        ZT_CHECK(utf8_count_chars(s.a) == 1, "{}: Strip content must be one character", where);
        for (const char * key : {"start", "stop"}) {
            ZT_CHECK(d.contains(key) && d[key].is_number_unsigned() && d[key].get<uint64_t>() <= 1'000'000,
                     "{}: Strip \"{}\" must be a small non-negative integer", where, key);
        }
        s.start = d["start"].get<size_t>();
        s.stop = d["stop"].get<size_t>();
        decoder.push_back(std::move(s));
    } else if (type == "Metaspace") {
        DecoderStep s{DecoderStep::metaspace, json_string(d, "replacement", where), {}, 0, 0, true};
        if (d.contains("prepend_scheme") && !d["prepend_scheme"].is_null())
            s.prepend = json_string(d, "prepend_scheme", where) != "never";
        else
            s.prepend = json_bool(d, "add_prefix_space", true, where);
        decoder.push_back(std::move(s));
    } else {
        ZT_FAIL("{}: decoder type \"{}\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                "Metaspace, Sequence)",
                where, type);
    }
}

std::vector<int32_t> Tokenizer::Impl::template_ids(const json & special_tokens, const json & item,
                                                  const std::string & where) {
    auto st = item.find("SpecialToken");
    ZT_CHECK(st != item.end() && st->is_object(), "{}: a template item must be SpecialToken or Sequence", where);
    const std::string name = json_string(*st, "id", where);
    ZT_CHECK(special_tokens.is_object() && special_tokens.contains(name),
             "{}: template token \"{}\" is missing from \"special_tokens\"", where, name);
    const json & spec = special_tokens[name];
    ZT_CHECK(spec.is_object() && spec.contains("ids") && spec["ids"].is_array(),
             "{}: special_tokens[\"{}\"] needs an \"ids\" array", where, name);
    std::vector<int32_t> ids;
    for (const json & v : spec["ids"]) {
        ZT_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab_size,
                 "{}: special_tokens[\"{}\"] has an id outside the vocab [0, {})", where, name, vocab_size);
        ids.push_back(v.get<int32_t>());
    }
    return ids;
}

void Tokenizer::Impl::load_post_processor(const json & p, const std::string & where) {
    if (p.is_null()) return;
    const std::string type = json_type(p, where);
    if (type == "Sequence") {
        auto it = p.find("processors");
        ZT_CHECK(it != p.end() && it->is_array(), "{}: Sequence needs a \"processors\" array", where);
        for (size_t k = 0; k < it->size(); ++k)
            load_post_processor((*it)[k], fmt::format("{}.processors[{}]", where, k));
    } else if (type == "ByteLevel") {
        // offsets only
    } else if (type == "TemplateProcessing") {
        auto single = p.find("single");
        ZT_CHECK(single != p.end() && single->is_array(), "{}: TemplateProcessing needs a \"single\" array", where);
        const json special = p.contains("special_tokens") ? p["special_tokens"] : json::object();
        bool seen_sequence = false;
        prefix_ids.clear();
        suffix_ids.clear();
        for (const json & item : *single) {
            ZT_CHECK(item.is_object(), "{}: template items must be objects", where);
            if (item.contains("Sequence")) {
                ZT_CHECK(!seen_sequence, "{}: the single template names the sequence twice", where);
                seen_sequence = true;
                continue;
            }
            auto ids = template_ids(special, item, where);
            auto & dst = seen_sequence ? suffix_ids : prefix_ids;
            dst.insert(dst.end(), ids.begin(), ids.end());
        }
        ZT_CHECK(seen_sequence, "{}: the single template never names the sequence $A", where);
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
        auto id_of = [&](const char * key) {
            ZT_CHECK(p.contains(key) && p[key].is_array() && p[key].size() == 2 && p[key][1].is_number_integer(),
                     "{}: \"{}\" must be [token, id]", where, key);
            int64_t id = p[key][1].get<int64_t>();
            ZT_CHECK(id >= 0 && id < vocab_size, "{}: \"{}\" id {} is outside the vocab", where, key, id);
            return int32_t(id);
        };
        prefix_ids = {id_of("cls")};
        suffix_ids = {id_of("sep")};
    } else {
        ZT_FAIL("{}: post-processor type \"{}\" is not supported (supported: TemplateProcessing, ByteLevel, "
                "BertProcessing, RobertaProcessing, Sequence)",
                where, type);
    }
}

std::optional<int32_t> Tokenizer::Impl::lookup(const std::string & token) const {
    if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
    if (auto it = model.vocab().find(token); it != model.vocab().end()) return it->second;
    return std::nullopt;
}

std::optional<int32_t> Tokenizer::Impl::config_token(const json & cfg, const char * key) const {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return std::nullopt;
    std::string token;
    if (it->is_string()) token = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        token = (*it)["content"].get<std::string>();
    else
        ZT_FAIL("{}: tokenizer_config.json \"{}\" must be a string or {{\"content\": ...}}", path, key);
    auto id = lookup(token);
    ZT_CHECK(id.has_value(), "{}: tokenizer_config.json names {} \"{}\", which is not a token of tokenizer.json", path,
             key, token);
    return id;
}

void Tokenizer::Impl::load_config(const std::string & config_text) {
    bool config_add_bos = false, config_add_eos = false;
    if (!config_text.empty()) {
        ZT_CHECK(json_depth_ok(config_text), "{}: tokenizer_config.json nests deeper than {} levels", path,
                 max_json_depth);
        json cfg = json::parse(config_text, nullptr, false);
        ZT_CHECK(!cfg.is_discarded() && cfg.is_object(),
                 "{}: tokenizer_config.json is not a JSON object; fix or delete it", path);
        bos = config_token(cfg, "bos_token");
        eos = config_token(cfg, "eos_token");
        config_add_bos = json_bool(cfg, "add_bos_token", false, path + ": tokenizer_config.json");
        config_add_eos = json_bool(cfg, "add_eos_token", false, path + ": tokenizer_config.json");
    }
    // HF `tokenizers` adds special tokens through the post-processor only; a tokenizer.json without a template
    // falls back on tokenizer_config's add_bos_token / add_eos_token (what transformers' slow classes do).
    if (prefix_ids.empty() && suffix_ids.empty()) {
        if (config_add_bos && bos) prefix_ids = {*bos};
        if (config_add_eos && eos) suffix_ids = {*eos};
    }
}

// ---- encoding -------------------------------------------------------------------------------------

std::string Tokenizer::Impl::normalize(std::string_view s) const {
    std::string cur(s);
    for (const auto & step : normalizer) {
        switch (step.kind) {
            case NormalizerStep::nfc: cur = unicode_normalize(cur, UnicodeForm::nfc); break;
            case NormalizerStep::nfd: cur = unicode_normalize(cur, UnicodeForm::nfd); break;
            case NormalizerStep::nfkc: cur = unicode_normalize(cur, UnicodeForm::nfkc); break;
            case NormalizerStep::nfkd: cur = unicode_normalize(cur, UnicodeForm::nfkd); break;
            case NormalizerStep::prepend:
                if (!cur.empty()) cur = step.a + cur;
                break;
            case NormalizerStep::replace: cur = replace_all(cur, step.a, step.b); break;
        }
    }
    return cur;
}

// HF AddedVocabulary::find_matches: cut the text at added tokens, honouring single_word / lstrip / rstrip.
void Tokenizer::Impl::split_added(const Segment & seg, const TokenMatcher & matcher, std::vector<Segment> & out) const {
    if (matcher.empty() || seg.text.empty()) {
        if (!seg.text.empty()) out.push_back(seg);
        return;
    }
    std::vector<TokenMatcher::Match> hits;
    matcher.find_all(seg.text, hits);
    const std::string & s = seg.text;
    auto char_before = [&](size_t pos) {   // code point ending at pos (pos > 0)
        size_t b = pos - 1;
        while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        size_t len;
        return utf8_decode_at(s, b, len);
    };
    size_t start_offset = 0;
    for (const auto & h : hits) {
        const AddedToken & tok = added[size_t(h.index)];
        size_t start = h.start, stop = h.end;
        if (tok.single_word) {
            size_t len;
            bool start_space = start == 0 || !unicode_is_word_char(char_before(start));
            bool stop_space = stop == s.size() || !unicode_is_word_char(utf8_decode_at(s, stop, len));
            if (!start_space || !stop_space) continue;
        }
        if (tok.lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t b = ns - 1;
                while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
                size_t len;
                if (!unicode_is_whitespace(utf8_decode_at(s, b, len))) break;
                ns = b;
            }
            start = std::max(ns, start_offset);
        }
        if (tok.rstrip) {
            while (stop < s.size()) {
                size_t len;
                if (!unicode_is_whitespace(utf8_decode_at(s, stop, len))) break;
                stop += len;
            }
        }
        if (start_offset < start)
            out.push_back(Segment{s.substr(start_offset, start - start_offset), -1, seg.at_start && start_offset == 0});
        out.push_back(Segment{{}, tok.id, false});
        start_offset = std::max(start_offset, stop);
    }
    if (start_offset < s.size())
        out.push_back(Segment{s.substr(start_offset), -1, seg.at_start && start_offset == 0});
}

void Tokenizer::Impl::pre_tokenize(std::vector<Segment> & pieces) const {
    std::vector<Segment> next;
    for (const auto & step : pre_tokenizer) {
        next.clear();
        for (auto & piece : pieces) {
            switch (step.kind) {
                case PreTokenizerStep::split:
                    split_by(*step.regex, step.behavior, step.invert, piece, next);
                    break;
                case PreTokenizerStep::byte_level: {
                    if (step.add_prefix_space && piece.text.compare(0, 1, " ") != 0) piece.text.insert(0, " ");
                    std::vector<Segment> parts;
                    if (step.regex) split_by(*step.regex, SplitBehavior::isolated, false, piece, parts);
                    else parts.push_back(std::move(piece));
                    const auto & alphabet = byte_level_alphabet();
                    for (auto & part : parts) {
                        std::string mapped;
                        mapped.reserve(part.text.size() * 2);
                        for (unsigned char c : part.text) mapped += alphabet[c];
                        part.text = std::move(mapped);
                        next.push_back(std::move(part));
                    }
                    break;
                }
                case PreTokenizerStep::metaspace: {
                    piece.text = replace_all(piece.text, " ", step.replacement);
                    bool starts = piece.text.compare(0, step.replacement.size(), step.replacement) == 0;
                    if (!starts && (step.prepend_scheme == "always" || (step.prepend_scheme == "first" && piece.at_start)))
                        piece.text.insert(0, step.replacement);
                    if (step.metaspace_split) split_by(*step.regex, SplitBehavior::merged_with_next, false, piece, next);
                    else next.push_back(std::move(piece));
                    break;
                }
            }
        }
        pieces.swap(next);
    }
}

void Tokenizer::Impl::encode_text(const Segment & seg, std::vector<int32_t> & ids) const {
    std::vector<Segment> normalized_parts;
    Segment normalized{normalize(seg.text), -1, seg.at_start};
    split_added(normalized, normalized_matcher, normalized_parts);
    for (auto & part : normalized_parts) {
        if (part.id >= 0) {
            ids.push_back(part.id);
            continue;
        }
        std::vector<Segment> pieces{std::move(part)};
        pre_tokenize(pieces);
        for (const auto & piece : pieces) model.tokenize(piece.text, ids);
    }
}

// =====================================================================================================

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer & Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string & path) {
    std::string json_path = path, config_path;
    if (is_directory(path)) {
        json_path = path + "/tokenizer.json";
        config_path = path + "/tokenizer_config.json";
        ZT_CHECK(file_exists(json_path), "{} has no tokenizer.json: point --tokenizer at a Hugging Face model folder "
                 "or at its tokenizer.json", path);
    } else {
        size_t slash = path.find_last_of('/');
        config_path = (slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "/tokenizer_config.json";
    }
    std::string config = file_exists(config_path) ? read_file(config_path) : std::string();
    return from_json(read_file(json_path), config, json_path);
}

Tokenizer Tokenizer::from_json(const std::string & tokenizer_json, const std::string & tokenizer_config_json,
                               const std::string & path_for_errors) {
    return from_json(tokenizer_json, tokenizer_config_json, path_for_errors, max_vocab_entries);
}

Tokenizer Tokenizer::from_json(const std::string & tokenizer_json, const std::string & tokenizer_config_json,
                               const std::string & path_for_errors, int64_t vocab_entry_limit) {
    auto impl = std::make_unique<Impl>();
    impl->entry_limit = std::min(vocab_entry_limit, max_vocab_entries);
    impl->path = path_for_errors;
    const std::string & where = path_for_errors;
    try {
        ZT_CHECK(json_depth_ok(tokenizer_json), "{}: JSON nests deeper than {} levels; this is not a tokenizer.json",
                 where, max_json_depth);
        json doc = json::parse(tokenizer_json, nullptr, false);
        ZT_CHECK(!doc.is_discarded(), "{}: not valid JSON (or not UTF-8); expected a Hugging Face tokenizer.json",
                 where);
        ZT_CHECK(doc.is_object() && doc.contains("model"),
                 "{}: no \"model\" object; expected a Hugging Face tokenizer.json", where);
        impl->load_model(doc["model"]);
        impl->load_added_tokens(doc.contains("added_tokens") ? doc["added_tokens"] : json());
        impl->load_normalizer(doc.contains("normalizer") ? doc["normalizer"] : json(), where + ": normalizer");
        impl->load_pre_tokenizer(doc.contains("pre_tokenizer") ? doc["pre_tokenizer"] : json(),
                                 where + ": pre_tokenizer");
        impl->load_decoder(doc.contains("decoder") ? doc["decoder"] : json(), where + ": decoder");
        impl->load_post_processor(doc.contains("post_processor") ? doc["post_processor"] : json(),
                                  where + ": post_processor");
        for (size_t k = 0; k < impl->added.size(); ++k) {
            const AddedToken & t = impl->added[k];
            if (t.normalized) impl->normalized_matcher.add(impl->normalize(t.content), int32_t(k));
            else impl->raw_matcher.add(t.content, int32_t(k));
        }
        impl->id_special.resize(size_t(impl->vocab_size), 0);
        impl->load_config(tokenizer_config_json);
    } catch (const Error &) {
        throw;
    } catch (const json::exception & e) {
        ZT_FAIL("{}: malformed tokenizer file: {}", where, e.what());
    } catch (const std::bad_alloc &) {
        ZT_FAIL("{}: out of memory while loading the tokenizer; the file is too large", where);
    }
    return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(const std::string & text, bool add_special_tokens) const {
    const Impl & m = *impl_;
    size_t bad = utf8_find_invalid(text);
    ZT_CHECK(bad == std::string::npos, "cannot tokenize: the text is not valid UTF-8 (bad byte at offset {}); "
             "send UTF-8 text or token ids", bad);
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = m.prefix_ids;
    std::vector<Segment> raw_parts;
    m.split_added(Segment{text, -1, true}, m.raw_matcher, raw_parts);
    for (const auto & part : raw_parts) {
        if (part.id >= 0) ids.push_back(part.id);
        else m.encode_text(part, ids);
    }
    if (add_special_tokens) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
    return ids;
}

namespace {
// Strips up to `start` leading and `stop` trailing copies of `content` (one character) from `token`.
void strip_token(std::string & token, const std::string & content, size_t start, size_t stop) {
    size_t front = 0;
    for (size_t i = 0; i < start && token.compare(front, content.size(), content) == 0 && front < token.size(); ++i)
        front += content.size();
    size_t back = token.size();
    for (size_t i = 0; i < stop && back >= front + content.size() &&
                       token.compare(back - content.size(), content.size(), content) == 0; ++i)
        back -= content.size();
    token = token.substr(front, back - front);
}
}  // namespace

std::string Tokenizer::decode(const std::vector<int32_t> & ids, bool skip_special) const {
    const Impl & m = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        if (id < 0 || id >= m.vocab_size || !m.id_present[size_t(id)]) continue;   // HF skips unknown ids
        if (skip_special && m.id_special[size_t(id)]) continue;
        tokens.push_back(m.id_to_token[size_t(id)]);
    }
    if (!m.has_decoder) {
        std::string out;
        for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
        return out;
    }
    for (const auto & step : m.decoder) {
        switch (step.kind) {
            case DecoderStep::byte_level:
                for (auto & t : tokens) {
                    std::string bytes;
                    bool all = true;
                    for (size_t i = 0; i < t.size() && all;) {
                        size_t len;
                        int b = byte_level_byte(utf8_decode_at(t, i, len));
                        if (b < 0) all = false;
                        else bytes += char(b);
                        i += len;
                    }
                    if (all) t = std::move(bytes);   // else keep the token as written (HF does the same)
                }
                break;
            case DecoderStep::replace:
                for (auto & t : tokens) t = replace_all(t, step.a, step.b);
                break;
            case DecoderStep::byte_fallback: {
                // Runs of <0xXX> tokens become their bytes (kept as bytes even when not valid UTF-8).
                std::vector<std::string> merged;
                std::string run;
                bool in_run = false;
                auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
                for (auto & t : tokens) {
                    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) && hex(t[4])) {
                        run += char(std::stoi(t.substr(3, 2), nullptr, 16));
                        in_run = true;
                        continue;
                    }
                    if (in_run) { merged.push_back(std::move(run)); run.clear(); in_run = false; }
                    merged.push_back(std::move(t));
                }
                if (in_run) merged.push_back(std::move(run));
                tokens.swap(merged);
                break;
            }
            case DecoderStep::fuse: {
                std::string all;
                for (auto & t : tokens) all += t;
                tokens.assign(1, std::move(all));
                break;
            }
            case DecoderStep::strip:
                for (auto & t : tokens) strip_token(t, step.a, step.start, step.stop);
                break;
            case DecoderStep::metaspace:
                // HF drops every replacement character of the first token (not only a leading one).
                for (size_t i = 0; i < tokens.size(); ++i)
                    tokens[i] = replace_all(tokens[i], step.a, i == 0 && step.prepend ? "" : " ");
                break;
        }
    }
    std::string out;
    for (auto & t : tokens) out += t;
    return out;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return !impl_->prefix_ids.empty(); }
bool Tokenizer::is_special(int32_t id) const {
    return id >= 0 && id < impl_->vocab_size && !impl_->id_special.empty() && impl_->id_special[size_t(id)];
}
std::optional<int32_t> Tokenizer::token_id(const std::string & token) const { return impl_->lookup(token); }

}  // namespace zt
