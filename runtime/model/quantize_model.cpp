// quantize_model: HF folder -> GGUF (see quantize_model.h). Three steps: plan (every tensor's GGUF name, shape and
// type, from the checkpoint's index alone), metadata (config.json + the tokenizer files, as convert_hf_to_gguf
// writes them), data (one tensor at a time, in chunks of rows: widened to fp32, q/k rows put in GGUF's order,
// quantized on the thread pool, appended to the file).
#include "runtime/model/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "runtime/backend/parallel_for.h"
#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/job/progress.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_names.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/model_config.h"
#include "runtime/model/quantize_block.h"
#include "runtime/model/tokenizer.h"

namespace zt {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char * kLlama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}"
                                      "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char * kQwen2Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}"
                                     "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// llama.cpp's token types
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

json read_json(const std::string & path, bool required) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        ZT_CHECK(!required, "quantize: cannot read {}; --model must name a Hugging Face model folder", path);
        return json();
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_json_file(ss.str(), path);
}

GgmlType ggml_of(QuantType t) {
    switch (t) {
        case QuantType::Q8_0: return GgmlType::Q8_0;
        case QuantType::Q4_0: return GgmlType::Q4_0;
        case QuantType::Q4_1: return GgmlType::Q4_1;
        case QuantType::Q4_K: return GgmlType::Q4_K;
        case QuantType::Q5_K: return GgmlType::Q5_K;
        case QuantType::Q6_K: return GgmlType::Q6_K;
    }
    return GgmlType::F32;
}
std::string ggml_name(GgmlType t) { return ggml_type_name(uint32_t(t)); }   // "Q4_K", "F32"
bool is_k_type(QuantType t) { return t == QuantType::Q4_K || t == QuantType::Q5_K || t == QuantType::Q6_K; }
uint32_t file_type_of(QuantType t) {
    switch (t) {
        case QuantType::Q8_0: return 7;
        case QuantType::Q4_0: return 2;
        case QuantType::Q4_1: return 3;
        case QuantType::Q4_K: return 14;
        case QuantType::Q5_K: return 16;
        case QuantType::Q6_K: return 18;
    }
    return 0;
}

// ---- plan ----

struct Planned {
    std::string hf, gguf;
    std::vector<int64_t> shape;   // row-major
    GgmlType type;
    int64_t qk_head_dim = 0;      // > 0: rows permuted from HF's to GGUF's q/k order
    std::vector<float> data;      // generated tensors (rope_freqs) only
};

// Sort key: rope_freqs and token_embd first, then layer by layer, then the output norm and the output head.
std::pair<int64_t, std::string> order_key(const std::string & gguf) {
    if (gguf == "rope_freqs.weight") return {-2, gguf};
    if (gguf == "token_embd.weight") return {-1, gguf};
    if (gguf.compare(0, 4, "blk.") == 0) return {std::stol(gguf.substr(4)), gguf};
    return {(int64_t(1) << 40) + (gguf == "output.weight" ? 1 : 0), gguf};
}

// The type of a planned tensor; a fallback is noted in `fallbacks` ("rows of 576 weights, not whole Q4_K blocks of
// 256: Q8_0" -> the tensors), logged once per kind by plan_tensors.
GgmlType tensor_type(const Planned & p, QuantType chosen, bool tied,
                     std::map<std::string, std::vector<std::string>> & fallbacks) {
    if (p.shape.size() == 1) return GgmlType::F32;
    const bool output = p.gguf == "output.weight" || (tied && p.gguf == "token_embd.weight");
    const QuantType want = output ? (is_k_type(chosen) ? QuantType::Q6_K : QuantType::Q8_0) : chosen;
    const int64_t k = p.shape.back();
    if (k % quant_layout(want).block_weights == 0) return ggml_of(want);
    const GgmlType fallback = k % 32 == 0 ? GgmlType::Q8_0 : GgmlType::F16;
    fallbacks[fmt::format("rows of {} weights, not whole {} blocks of {}: written as {}", k, quant_layout(want).name,
                          quant_layout(want).block_weights, ggml_name(fallback))].push_back(p.gguf);
    return fallback;
}

// llama3 RoPE scaling as convert_hf_to_gguf stores it: one factor per frequency pair (rope_freqs.weight, (D/2)),
// computed in fp32 as its torch code does.
std::vector<float> llama3_rope_factors(const ModelConfig & c) {
    const RopeScaling & r = c.rope_scaling;
    const float old_len = float(r.original_max_position_embeddings), factor = float(r.factor);
    const float lff = float(r.low_freq_factor), hff = float(r.high_freq_factor);
    const double low_wavelen = double(old_len) / lff, high_wavelen = double(old_len) / hff;
    std::vector<float> out;
    for (int64_t i = 0; i < c.head_dim; i += 2) {
        const float freq = 1.0f / std::pow(float(c.rope_theta), float(i) / float(c.head_dim));
        const float wavelen = float(2 * 3.14159265358979323846) / freq;
        if (wavelen < high_wavelen) out.push_back(1.0f);
        else if (wavelen > low_wavelen) out.push_back(factor);
        else {
            const float smooth = (old_len / wavelen - lff) / (hff - lff);
            out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
        }
    }
    return out;
}

std::vector<Planned> plan_tensors(const Checkpoint & ckpt, const ModelConfig & cfg, const std::string & arch,
                                  QuantType chosen) {
    std::vector<Planned> plan;
    std::map<std::string, std::vector<std::string>> fallbacks;
    for (const std::string & name : ckpt.names()) {
        if (cfg.tie_word_embeddings && (name == "lm_head.weight")) {
            spdlog::info("quantize: {} left out: tie_word_embeddings uses token_embd as the output", name);
            continue;
        }
        const std::optional<std::string> g = gguf_name_from_hf(name);
        if (!g) {
            spdlog::warn("quantize: {} has no GGUF name (not part of the {} forward pass); left out", name, arch);
            continue;
        }
        const Tensor t = ckpt.tensor(name);
        ZT_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
                 "quantize: {} in {} is {}; quantize reads F32, F16 or BF16 checkpoints", name, ckpt.dir(),
                 dtype_name(t.dtype));
        ZT_CHECK(t.dims() == 1 || t.dims() == 2, "quantize: {} has shape {}; expected a vector or a matrix", name,
                 t.shape_str());
        Planned p{name, *g, t.shape, GgmlType::F32, 0, {}};
        const bool qk = g->find(".attn_q.") != std::string::npos || g->find(".attn_k.") != std::string::npos;
        if (qk && gguf_arch_permutes_qk(arch)) {
            p.qk_head_dim = cfg.head_dim;
            ZT_CHECK(t.shape[0] % cfg.head_dim == 0, "quantize: {} has {} rows, not whole heads of {}", name,
                     t.shape[0], cfg.head_dim);
        }
        p.type = tensor_type(p, chosen, cfg.tie_word_embeddings, fallbacks);
        plan.push_back(std::move(p));
    }
    for (const auto & [why, names] : fallbacks)
        spdlog::info("quantize: {} {} {} ({}{})", names.size(), names.size() == 1 ? "matrix has" : "matrices have",
                     why, names.front(), names.size() > 1 ? ", ..." : "");
    if (cfg.rope_scaling.type == RopeScaling::Type::llama3) {
        Planned p{"", "rope_freqs.weight", {cfg.head_dim / 2}, GgmlType::F32, 0, llama3_rope_factors(cfg)};
        plan.push_back(std::move(p));
    }
    std::sort(plan.begin(), plan.end(),
              [](const Planned & a, const Planned & b) { return order_key(a.gguf) < order_key(b.gguf); });
    bool has_embed = false;
    for (const auto & p : plan) has_embed |= p.gguf == "token_embd.weight";
    ZT_CHECK(has_embed, "quantize: {} has no model.embed_tokens.weight; not a llama/mistral/qwen2/qwen3 checkpoint",
             ckpt.dir());
    return plan;
}

// ---- metadata ----

void add_model_metadata(GgufWriter & w, const ModelConfig & c, const json & raw, const std::string & arch,
                        const std::string & name, QuantType chosen) {
    w.add_string("general.architecture", arch);
    w.add_string("general.type", "model");
    w.add_string("general.name", name);
    for (int i = 0; i < kGgufConfigKeyCount; ++i) {
        const std::string key = arch + "." + kGgufConfigKeys[i].gguf, hf = kGgufConfigKeys[i].hf;
        if (hf == "num_hidden_layers") w.add_u32(key, uint32_t(c.num_hidden_layers));
        else if (hf == "hidden_size") w.add_u32(key, uint32_t(c.hidden_size));
        else if (hf == "intermediate_size") w.add_u32(key, uint32_t(c.intermediate_size));
        else if (hf == "num_attention_heads") w.add_u32(key, uint32_t(c.num_attention_heads));
        else if (hf == "num_key_value_heads") w.add_u32(key, uint32_t(c.num_key_value_heads));
        else if (hf == "head_dim") {   // written only when config.json names it, as convert_hf_to_gguf does
            if (raw.contains("head_dim") && raw["head_dim"].is_number_integer()) {
                w.add_u32(key, uint32_t(c.head_dim));
                w.add_u32(arch + ".attention.value_length", uint32_t(c.head_dim));
            }
        } else if (hf == "max_position_embeddings") w.add_u32(key, uint32_t(c.max_position_embeddings));
        else if (hf == "rope_theta") w.add_f32(key, float(c.rope_theta));
        else if (hf == "rms_norm_eps") w.add_f32(key, float(c.rms_norm_eps));
        else if (hf == "sliding_window") { if (c.sliding_window > 0) w.add_u32(key, uint32_t(c.sliding_window)); }
        else if (hf == "vocab_size") {   // convert_hf_to_gguf writes it for llama only
            if (arch == "llama") w.add_u32(key, uint32_t(c.vocab_size));
        }
        else ZT_FAIL("internal: quantize does not know config key {} (gguf_names.cpp's kGgufConfigKeys)", hf);
    }
    if (arch == "llama") w.add_u32(arch + ".rope.dimension_count", uint32_t(c.head_dim));   // as convert_hf_to_gguf
    const RopeScaling & r = c.rope_scaling;
    if (r.type == RopeScaling::Type::linear || r.type == RopeScaling::Type::yarn) {
        w.add_string(arch + ".rope.scaling.type", r.type == RopeScaling::Type::linear ? "linear" : "yarn");
        w.add_f32(arch + ".rope.scaling.factor", float(r.factor));
        if (r.type == RopeScaling::Type::yarn)
            w.add_u32(arch + ".rope.scaling.original_context_length", uint32_t(r.original_max_position_embeddings));
    } else if (r.type == RopeScaling::Type::dynamic) {
        spdlog::warn("quantize: dynamic (NTK) RoPE scaling has no GGUF form; llama.cpp will run without it");
    }
    w.add_u32("general.file_type", file_type_of(chosen));
}

// As the gguf package's SpecialVocab finds them: tokenizer_config.json's "<typ>_token" ("<s>" or {"content": "<s>"})
// looked up among tokenizer.json's added_tokens (the first match), else config.json's "<typ>_token_id"; -1 when
// neither.
int64_t special_id(const json & tok_cfg, const json & config, const json & added, const std::string & typ) {
    if (tok_cfg.is_object() && tok_cfg.contains(typ + "_token")) {
        const json & v = tok_cfg[typ + "_token"];
        const json * s = v.is_object() && v.contains("content") ? &v["content"] : &v;
        if (s->is_string() && added.is_array())
            for (const auto & a : added)
                if (a.value("content", "") == s->get<std::string>() && a.contains("id")) return a["id"].get<int64_t>();
    }
    const std::string key = typ + "_token_id";
    if (config.is_object() && config.contains(key) && config[key].is_number_integer()) return config[key].get<int64_t>();
    return -1;
}

// tokenizer_config.json's "<typ>_token" as a string ("" when absent).
std::string config_token(const json & tok_cfg, const std::string & typ) {
    if (!tok_cfg.is_object() || !tok_cfg.contains(typ + "_token")) return "";
    const json & v = tok_cfg[typ + "_token"];
    const json * s = v.is_object() && v.contains("content") ? &v["content"] : &v;
    return s->is_string() ? s->get<std::string>() : "";
}

// SpecialVocab's add_bos/add_eos/add_sep flags (llama.cpp's gguf-py): a ByteLevel post-processor says no BOS and
// no EOS, a RobertaProcessing adds all three, a TemplateProcessing adds BOS when its single template starts with the
// bos (or cls) token, EOS when it ends with the eos token, SEP when its pair template puts the sep (or eos) token
// between A and B; tokenizer_config.json's add_*_token booleans fill in what the post-processor leaves open.
std::map<std::string, bool> special_add_flags(const json & tok, const json & tok_cfg) {
    std::map<std::string, bool> flags;
    const std::string bos = config_token(tok_cfg, "bos"), eos = config_token(tok_cfg, "eos");
    const std::string cls = config_token(tok_cfg, "cls"), sep = config_token(tok_cfg, "sep");
    auto special = [](const json & item) {
        return item.is_object() && item.contains("SpecialToken") ? item["SpecialToken"].value("id", "") : "";
    };
    auto sequence = [](const json & item) {
        return item.is_object() && item.contains("Sequence") ? item["Sequence"].value("id", "") : "";
    };
    const json pp = tok.value("post_processor", json());
    const json procs = pp.is_object() && pp.contains("processors") ? pp["processors"] : json::array({pp});
    for (const auto & p : procs) {
        if (!p.is_object()) continue;
        const std::string type = p.value("type", "");
        if (type == "ByteLevel") {
            flags.emplace("bos", false);
            flags.emplace("eos", false);
        } else if (type == "RobertaProcessing") {
            flags["bos"] = flags["eos"] = flags["sep"] = true;
        } else if (type == "TemplateProcessing" && p.contains("single") && p["single"].is_array()) {
            const json & single = p["single"];
            std::string first, last;
            if (single.size() > 1) {
                if (!(first = special(single.front())).empty()) flags["bos"] = first == bos || first == cls;
                if (!(last = special(single.back())).empty()) flags["eos"] = last == eos;
            }
            const json pair = p.value("pair", json::array());
            if (!pair.is_array() || pair.empty()) continue;
            size_t lo = !first.empty() && special(pair.front()) == first ? 1 : 0, hi = pair.size();
            if (!last.empty() && special(pair.back()) == last) --hi;
            if (hi <= lo || sequence(pair[lo]) != "A" || sequence(pair[hi - 1]) != "B" || hi - lo < 3) continue;
            const std::string mid = special(pair[lo + 1]);
            bool add_sep = !mid.empty() && (mid == sep || mid == eos) && last.empty();
            const std::string second = hi - lo == 4 ? special(pair[lo + 2]) : "";
            if (!second.empty() && (second == sep || second == eos)) add_sep = true;
            flags["sep"] = add_sep;
        }
    }
    for (const char * typ : {"bos", "eos", "sep"})   // the add_* keys GGUF has
        if (tok_cfg.is_object() && tok_cfg.contains(std::string("add_") + typ + "_token") &&
            tok_cfg[std::string("add_") + typ + "_token"].is_boolean())
            flags.emplace(typ, tok_cfg[std::string("add_") + typ + "_token"].get<bool>());
    return flags;
}

// The Split regexes, ByteLevel(use_regex) and Digits(individual) of a pre_tokenizer (alone or in a Sequence).
void scan_pre_tokenizer(const json & p, std::vector<std::string> & regexes, bool & byte_level, bool & byte_regex,
                        bool & digits, bool & metaspace) {
    if (!p.is_object()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence" && p.contains("pretokenizers"))
        for (const auto & q : p["pretokenizers"])
            scan_pre_tokenizer(q, regexes, byte_level, byte_regex, digits, metaspace);
    else if (type == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
        regexes.push_back(p["pattern"]["Regex"].get<std::string>());
    else if (type == "ByteLevel") byte_level = true, byte_regex |= p.value("use_regex", true);
    else if (type == "Digits") digits |= p.value("individual_digits", false);
    else if (type == "Metaspace") metaspace = true;
}

// A part of a merge pair with its spaces written as U+0120 ('Ġ'), as SpecialVocab does, so " " splits the pair.
std::string merge_part(const json & p) {
    std::string out;
    for (char ch : p.get<std::string>()) out += ch == ' ' ? std::string("\xc4\xa0") : std::string(1, ch);
    return out;
}

// convert_hf_to_gguf's does_token_look_special (the parts that apply to these vocabularies).
bool looks_special(const std::string & t) {
    auto ends = [&](const std::string & e) {
        return t.size() >= e.size() && t.compare(t.size() - e.size(), e.size(), e) == 0;
    };
    return t == "<pad>" || t == "<mask>" || (t.rfind("<|", 0) == 0 && ends("|>")) ||
           (t.rfind("<unused", 0) == 0 && ends(">"));
}

void add_tokenizer_metadata(GgufWriter & w, const std::string & dir, const std::string & arch, const json & config,
                            int64_t n_vocab) {
    const std::string tok_path = dir + "/tokenizer.json";
    const json tok = read_json(tok_path, true);
    const json tok_cfg = read_json(dir + "/tokenizer_config.json", false);
    ZT_CHECK(tok.contains("model") && tok["model"].is_object() && tok["model"].value("type", "") == "BPE" &&
                 tok["model"].contains("vocab") && tok["model"]["vocab"].is_object(),
             "quantize: {} is not a BPE tokenizer.json (model.type \"BPE\" with a vocab); GGUF's gpt2/llama "
             "tokenizers need one", tok_path);
    std::map<std::string, int64_t> ids;
    std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
    std::vector<int32_t> types(size_t(n_vocab), kUnused);
    for (auto it = tok["model"]["vocab"].begin(); it != tok["model"]["vocab"].end(); ++it) {
        const int64_t id = it.value().get<int64_t>();
        ids[it.key()] = id;
        if (id >= 0 && id < n_vocab) tokens[size_t(id)] = it.key(), types[size_t(id)] = kNormal;
    }
    std::vector<std::string> regexes;
    bool byte_level = false, byte_regex = false, digits = false, metaspace = false;
    scan_pre_tokenizer(tok.value("pre_tokenizer", json()), regexes, byte_level, byte_regex, digits, metaspace);
    const std::string norm = tok.value("normalizer", json()).dump();
    const bool spm = !byte_level && (metaspace || tok["model"].value("byte_fallback", false) ||
                                     norm.find("\xe2\x96\x81") != std::string::npos);
    ZT_CHECK(byte_level || spm, "quantize: {}: neither a byte-level (ByteLevel) nor a SentencePiece-style (Metaspace, "
             "byte_fallback) BPE tokenizer; GGUF has no tokenizer.ggml.model for it", tok_path);
    if (tok.contains("added_tokens"))
        for (const auto & a : tok["added_tokens"]) {
            const int64_t id = a.value("id", int64_t(-1));
            const std::string content = a.value("content", "");
            ids[content] = id;
            if (id < 0 || id >= n_vocab) continue;
            tokens[size_t(id)] = content;
            types[size_t(id)] = a.value("special", false) || looks_special(content) ? kControl : kUserDefined;
        }
    for (int64_t i = 0; i < n_vocab; ++i)
        if (types[size_t(i)] == kUnused) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
    const json added = tok.value("added_tokens", json::array());
    std::vector<std::string> merges;
    if (tok["model"].contains("merges"))
        for (const auto & m : tok["model"]["merges"])
            merges.push_back(m.is_array() ? merge_part(m[0]) + " " + merge_part(m[1]) : m.get<std::string>());

    if (byte_level) {
        std::string pre = "default";
        const auto multi_digit = [&] {
            for (const auto & kv : ids) {
                size_t i = kv.first.rfind("\xc4\xa0", 0) == 0 ? 2 : 0, n = 0;   // after an optional Ġ
                while (i < kv.first.size() && kv.first[i] >= '0' && kv.first[i] <= '9') ++i, ++n;
                if (n >= 2 && i == kv.first.size()) return true;
            }
            return false;
        };
        // Llama 3's regex: llama.cpp's "llama-bpe" ignores merges for whole-word vocab hits (as tokenizer.json's
        // ignore_merges), its "smaug-bpe" does not
        if (regexes.size() == 1 && regexes[0] == kLlama3Regex)
            pre = tok["model"].value("ignore_merges", false) ? "llama-bpe" : "smaug-bpe";
        else if (regexes.size() == 1 && regexes[0] == kQwen2Regex) pre = "qwen2";
        else if (regexes.empty() && byte_regex) pre = digits || !multi_digit() ? "smollm" : "gpt-2";
        else spdlog::warn("quantize: {}: pre-tokenizer not one llama.cpp names (llama-bpe, qwen2, smollm, gpt-2); "
                          "tokenizer.ggml.pre \"default\"", tok_path);
        w.add_string("tokenizer.ggml.model", "gpt2");
        w.add_string("tokenizer.ggml.pre", pre);
        w.add_strings("tokenizer.ggml.tokens", tokens);
        w.add_i32s("tokenizer.ggml.token_type", types);
        w.add_strings("tokenizer.ggml.merges", merges);
    } else {
        std::map<std::string, int64_t> rank;
        for (size_t r = 0; r < merges.size(); ++r) {
            const size_t sp = merges[r].find(' ');
            const std::string joined = merges[r].substr(0, sp) + merges[r].substr(sp + 1);
            rank.emplace(joined, int64_t(r));
        }
        std::vector<float> scores(size_t(n_vocab), -1000.0f);
        for (int64_t i = 0; i < n_vocab; ++i) {
            std::string & t = tokens[size_t(i)];
            if (types[size_t(i)] == kNormal) {
                if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>') types[size_t(i)] = kByte;
                const auto it = rank.find(t);
                if (it != rank.end()) scores[size_t(i)] = float(-it->second);
            }
        }
        w.add_string("tokenizer.ggml.model", "llama");
        w.add_string("tokenizer.ggml.pre", "default");
        w.add_strings("tokenizer.ggml.tokens", tokens);
        w.add_f32s("tokenizer.ggml.scores", scores);
        w.add_i32s("tokenizer.ggml.token_type", types);
    }
    // convert_hf_to_gguf's llama models copy tokenizer_config's add_prefix_space
    if (arch == "llama" && tok_cfg.is_object() && tok_cfg.contains("add_prefix_space") &&
        tok_cfg["add_prefix_space"].is_boolean())
        w.add_bool("tokenizer.ggml.add_space_prefix", tok_cfg["add_prefix_space"].get<bool>());
    const std::pair<const char *, const char *> specials[] = {
        {"bos", "bos"}, {"eos", "eos"}, {"unk", "unknown"}, {"sep", "seperator"}, {"pad", "padding"}, {"cls", "cls"},
        {"mask", "mask"}};   // SpecialVocab's types and the gguf package's key names ("seperator" sic)
    for (const auto & s : specials) {
        const int64_t id = special_id(tok_cfg, config, added, s.first);
        if (id >= 0 && id < n_vocab) w.add_u32(std::string("tokenizer.ggml.") + s.second + "_token_id", uint32_t(id));
    }
    // SpecialVocab's flags; add_bos_token always (llama.cpp's default would otherwise depend on the vocab type),
    // where SpecialVocab finds none as the runtime's tokenizer decides it
    std::map<std::string, bool> flags = special_add_flags(tok, tok_cfg);
    if (!flags.count("bos")) flags["bos"] = Tokenizer::load(dir).add_bos();
    for (const auto & [typ, on] : flags) w.add_bool("tokenizer.ggml.add_" + typ + "_token", on);
    std::string chat;
    if (tok_cfg.is_object() && tok_cfg.contains("chat_template") && tok_cfg["chat_template"].is_string())
        chat = tok_cfg["chat_template"].get<std::string>();
    else if (std::ifstream jf(dir + "/chat_template.jinja", std::ios::binary); jf) {
        std::stringstream ss;
        ss << jf.rdbuf();
        chat = ss.str();
    }
    if (!chat.empty()) w.add_string("tokenizer.chat_template", chat);
}

// ---- data ----

// Writes one planned tensor: rows in chunks, widened to fp32, q/k rows reordered, converted on the pool.
void write_tensor(GgufWriter & w, const Planned & p, const Checkpoint & ckpt, ThreadPool & pool) {
    if (!p.data.empty()) {
        w.write_tensor_data(p.data.data(), p.data.size() * 4);
        return;
    }
    const Tensor t = ckpt.tensor(p.hf);
    const int64_t k = p.shape.back(), rows = t.numel() / k;
    const size_t src_row = size_t(k) * dtype_size(t.dtype);
    const uint64_t out_row = ggml_tensor_bytes(p.type, {k});
    const std::optional<QuantType> qt = quant_type_from_name(ggml_name(p.type));   // nullopt for F32 / F16
    std::vector<int64_t> hf_row_of(static_cast<size_t>(rows));   // GGUF row -> HF row
    for (int64_t r = 0; r < rows; ++r)
        hf_row_of[size_t(p.qk_head_dim > 0 ? gguf_qk_row_of_hf_row(r, p.qk_head_dim) : r)] = r;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (8 << 20) / int64_t(out_row + 4 * k)));
    std::vector<uint8_t> out(size_t(out_row) * size_t(chunk));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
            std::vector<float> x(static_cast<size_t>(k));
            for (int64_t i = b; i < e; ++i) {
                const int64_t hf = hf_row_of[size_t(r0 + i)];
                convert_to_f32(x.data(), static_cast<const uint8_t *>(t.data) + size_t(hf) * src_row, t.dtype,
                               size_t(k));
                for (int64_t j = 0; j < k; ++j)
                    ZT_CHECK(std::isfinite(x[size_t(j)]), "quantize: {} has a non-finite weight ({}) at row {}, "
                             "column {}; the checkpoint is broken", p.hf, x[size_t(j)], hf, j);
                uint8_t * o = out.data() + size_t(i) * out_row;
                if (p.type == GgmlType::F32) std::memcpy(o, x.data(), size_t(k) * 4);
                else if (p.type == GgmlType::F16) convert_from_f32(o, DType::F16, x.data(), size_t(k));
                else quantize_row(*qt, x.data(), o, k);
            }
        });
        w.write_tensor_data(out.data(), uint64_t(n) * out_row);
    }
}

}  // namespace

QuantType parse_quantize_type(const std::string & name) {
    std::string up = name;
    for (char & ch : up) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    const std::optional<QuantType> t = quant_type_from_name(up);
    ZT_CHECK(t.has_value(), "quantize: --type {} is not one of q8_0, q4_0, q4_1, q4_k, q5_k, q6_k", name);
    return *t;
}

QuantizeReport quantize_model(const QuantizeOptions & o) {
    const auto start = std::chrono::steady_clock::now();
    const QuantType chosen = parse_quantize_type(o.type);
    ZT_CHECK(fs::is_directory(o.model_dir), "quantize: --model {} is not a folder; give a Hugging Face model folder "
             "(config.json, model.safetensors, tokenizer.json)", o.model_dir);
    ZT_CHECK(!o.out.empty(), "quantize: --out is empty; give the .gguf file to write");
    const ModelConfig cfg = ModelConfig::load(o.model_dir);
    const json raw = read_json(o.model_dir + "/config.json", true);
    const Checkpoint ckpt(o.model_dir);
    const std::string arch = cfg.arch == Arch::qwen2 ? "qwen2" : cfg.arch == Arch::qwen3 ? "qwen3" : "llama";
    const std::vector<Planned> plan = plan_tensors(ckpt, cfg, arch, chosen);
    int64_t n_vocab = 0;
    for (const auto & p : plan) if (p.gguf == "token_embd.weight") n_vocab = p.shape[0];

    GgufWriter w(o.out);
    std::string name = fs::path(o.model_dir).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(o.model_dir).lexically_normal().parent_path().filename().string();
    add_model_metadata(w, cfg, raw, arch, name, chosen);
    add_tokenizer_metadata(w, o.model_dir, arch, raw, n_vocab);
    w.add_u32("general.quantization_version", 2);
    QuantizeReport rep;
    for (const auto & p : plan) {
        w.add_tensor(p.gguf, p.shape, p.type);
        ++rep.tensors_by_type[ggml_name(p.type)];
    }
    w.write_header();
    spdlog::info("quantize: {} ({} tensors, {}) -> {} as {} ({:.1f} MiB of tensor data)", o.model_dir, plan.size(),
                 arch, o.out, quant_layout(chosen).name, double(w.data_bytes()) / (1 << 20));
    ThreadPool pool(o.threads, 0);
    Progress progress("tensors", int64_t(plan.size()));
    int64_t weights = 0;
    for (size_t i = 0; i < plan.size(); ++i) {
        write_tensor(w, plan[i], ckpt, pool);
        if (!plan[i].hf.empty()) rep.bytes_in += ckpt.tensor(plan[i].hf).bytes();
        int64_t n = 1;
        for (int64_t d : plan[i].shape) n *= d;
        weights += n;
        if (o.progress) progress.update(int64_t(i + 1), weights);
        spdlog::debug("quantize: {} {} {}", plan[i].gguf, ggml_name(plan[i].type),
                      Tensor(nullptr, DType::F32, plan[i].shape).shape_str());
    }
    if (o.progress) progress.finish();
    w.finish();
    rep.tensors = int64_t(plan.size());
    rep.bytes_out = fs::file_size(o.out);
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return rep;
}

}  // namespace zt
