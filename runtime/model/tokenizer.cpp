// Tokenizer (see tokenizer.h): loads a Hugging Face tokenizer.json (+ tokenizer_config.json), validates it
// against hostile input, and runs HF's pipeline: added-token extraction -> normaliser -> pre-tokeniser
// (PCRE2 regex Split, ByteLevel, Metaspace) -> BPE model -> post-processor template; decoding runs HF's
// decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace). This file is the pipeline: loading, the
// model vocab, added / special tokens, the post-processor and tokenizer_config.json, encode and decode; the
// stages are tokenizer_normalizer.cpp, tokenizer_pre_tokenizer.cpp, tokenizer_bpe.cpp, tokenizer_decoder.cpp.
#include "runtime/model/tokenizer.h"

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/model/tokenizer_bpe.h"
#include "runtime/model/tokenizer_impl.h"
#include "runtime/model/unicode_text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unordered_map>
#include <unordered_set>

namespace zt {

using namespace tokenizer_detail;

namespace {

constexpr int64_t max_token_id = 10'000'000;

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

}  // namespace

// ---- JSON helpers ---------------------------------------------------------------------------------

namespace tokenizer_detail {

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

}  // namespace tokenizer_detail

// =====================================================================================================

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
        const size_t depth = json_nesting_depth(config_text);
        ZT_CHECK(depth <= kMaxJsonDepth, "{}: tokenizer_config.json nests deeper than {} levels ({}); it is corrupt, "
                 "replace it with a good copy", path, kMaxJsonDepth, depth);
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
        const size_t depth = json_nesting_depth(tokenizer_json);
        ZT_CHECK(depth <= kMaxJsonDepth, "{}: JSON nests deeper than {} levels ({}); this is not a tokenizer.json",
                 where, kMaxJsonDepth, depth);
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
    m.decode_tokens(tokens);
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
