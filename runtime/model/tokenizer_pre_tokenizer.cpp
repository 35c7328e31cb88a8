// The pre-tokeniser stage of the tokenizer (tokenizer.h): loads tokenizer.json's "pre_tokenizer" (Split with a
// regex or string pattern and HF's five delimiter behaviours, ByteLevel with the GPT-2 regex, Metaspace,
// Sequence) and cuts normalised text into the pieces the BPE model sees. Regexes are Oniguruma patterns (HF
// `tokenizers`) translated to PCRE2 and JIT-compiled.
#include "runtime/base/error.h"
#include "runtime/model/tokenizer_impl.h"
#include "runtime/model/unicode_text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <memory>
#include <utility>

namespace zt {

using namespace tokenizer_detail;

namespace {

constexpr size_t max_regex_bytes = 64 * 1024;

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

}  // namespace

namespace tokenizer_detail {

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

}  // namespace tokenizer_detail

namespace {

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

// A Split / Replace "pattern": {"Regex": "..."} or {"String": "..."}.
std::shared_ptr<Regex> json_pattern(const json & step, const std::string & where) {
    auto it = step.find("pattern");
    ZT_CHECK(it != step.end() && it->is_object(), "{}: \"pattern\" must be {{\"Regex\": ...}} or {{\"String\": ...}}",
             where);
    if (it->contains("Regex")) return std::make_shared<Regex>(json_string(*it, "Regex", where), false, where);
    if (it->contains("String")) return std::make_shared<Regex>(json_string(*it, "String", where), true, where);
    ZT_FAIL("{}: \"pattern\" must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
}

const char * gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace

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

}  // namespace zt
