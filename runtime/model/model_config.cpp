// ModelConfig: reads a Hugging Face config.json (model_type llama, mistral, qwen2, qwen3) with the same defaults
// as transformers' config classes, and rejects anything that would change results and is not implemented
// (other rope types such as longrope, partial rotary, non-SiLU activations, MLP biases, other layer types).
// A GGUF file's metadata is first turned into the config.json it stands for (gguf_to_config_json), then read alike.
#include "runtime/model/model_config.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/model/gguf_checkpoint.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_names.h"

namespace zt {

const char * arch_name(Arch a) {
    switch (a) {
        case Arch::llama: return "llama";
        case Arch::mistral: return "mistral";
        case Arch::qwen2: return "qwen2";
        case Arch::qwen3: return "qwen3";
    }
    return "?";
}

namespace {

using json = nlohmann::json;

// j[key] when present and not null, else nullptr.
const json * field(const json & j, const char * key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
}

int64_t get_int(const json & j, const char * key, const std::string & path, bool required, int64_t def) {
    const json * v = field(j, key);
    if (!v) {
        ZT_CHECK(!required, "{}: \"{}\" is missing; config.json must give it for this model", path, key);
        return def;
    }
    ZT_CHECK(v->is_number_integer(), "{}: \"{}\" must be an integer, found {}", path, key, v->dump());
    if (v->is_number_unsigned()) {
        ZT_CHECK(v->get<uint64_t>() <= uint64_t(INT64_MAX), "{}: \"{}\" = {} is too large", path, key, v->dump());
    }
    return v->get<int64_t>();
}

double get_double(const json & j, const char * key, const std::string & path, double def) {
    const json * v = field(j, key);
    if (!v) return def;
    ZT_CHECK(v->is_number(), "{}: \"{}\" must be a number, found {}", path, key, v->dump());
    return v->get<double>();
}

bool get_bool(const json & j, const char * key, const std::string & path, bool def) {
    const json * v = field(j, key);
    if (!v) return def;
    ZT_CHECK(v->is_boolean(), "{}: \"{}\" must be true or false, found {}", path, key, v->dump());
    return v->get<bool>();
}

void check_range(int64_t v, int64_t lo, int64_t hi, const char * key, const std::string & path) {
    ZT_CHECK(v >= lo && v <= hi, "{}: \"{}\" = {} is out of range [{}, {}]; config.json is corrupt or not a "
             "supported model", path, key, v, lo, hi);
}

DType dtype_from_torch_name(const std::string & s) {
    if (s == "bfloat16") return DType::BF16;
    if (s == "float16" || s == "half") return DType::F16;
    return DType::F32;   // "float32", "auto", anything else: informational only
}

// yarn_get_mscale of transformers: 0.1 * mscale * ln(scale) + 1, or 1 for scale <= 1.
double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// "yarn" as transformers' standardize_rope_params + _compute_yarn_parameters read it: original_max_position_embeddings
// from the top level of config.json (which wins), else from the rope dict, else max_position_embeddings; "factor"
// must be there (null: max_position_embeddings / original); attention_factor given, else from factor and
// mscale / mscale_all_dim; beta_fast / beta_slow default (also when 0 or null) to 32 / 1; truncate to true.
void parse_yarn(ModelConfig & c, const json & j, const json & rp, const std::string & path) {
    RopeScaling & rs = c.rope_scaling;
    rs.type = RopeScaling::Type::yarn;
    rs.original_max_position_embeddings =
        field(j, "original_max_position_embeddings")
            ? get_int(j, "original_max_position_embeddings", path, false, 0)
            : get_int(rp, "original_max_position_embeddings", path, false, c.max_position_embeddings);
    check_range(rs.original_max_position_embeddings, 1, int64_t(1) << 40,
                "rope_scaling.original_max_position_embeddings", path);
    ZT_CHECK(rp.contains("factor"), "{}: rope_scaling type \"yarn\" needs \"factor\" (null: max_position_embeddings "
             "/ original_max_position_embeddings)", path);
    rs.factor = field(rp, "factor") ? get_double(rp, "factor", path, 1.0)
                                    : double(c.max_position_embeddings) / double(rs.original_max_position_embeddings);
    ZT_CHECK(rs.factor > 0, "{}: rope_scaling factor must be > 0, found {}", path, rs.factor);
    if (field(rp, "attention_factor")) {
        rs.attention_factor = get_double(rp, "attention_factor", path, 1.0);
        ZT_CHECK(rs.attention_factor > 0, "{}: rope_scaling attention_factor must be > 0, found {}", path,
                 rs.attention_factor);
    } else {
        const double mscale = get_double(rp, "mscale", path, 0), mscale_all_dim = get_double(rp, "mscale_all_dim", path, 0);
        rs.attention_factor = mscale != 0 && mscale_all_dim != 0
                                  ? yarn_mscale(rs.factor, mscale) / yarn_mscale(rs.factor, mscale_all_dim)
                                  : yarn_mscale(rs.factor, 1.0);
    }
    rs.beta_fast = get_double(rp, "beta_fast", path, 0);
    rs.beta_slow = get_double(rp, "beta_slow", path, 0);
    if (rs.beta_fast == 0) rs.beta_fast = 32;   // python's `x or 32`
    if (rs.beta_slow == 0) rs.beta_slow = 1;
    ZT_CHECK(rs.beta_fast > 0 && rs.beta_slow > 0, "{}: rope_scaling beta_fast and beta_slow must be > 0, found {} and "
             "{}", path, rs.beta_fast, rs.beta_slow);
    rs.truncate = get_bool(rp, "truncate", path, true);
}

void parse_rope(ModelConfig & c, const json & j, const std::string & path) {
    // transformers 4.x writes "rope_theta" + "rope_scaling"; 5.x writes "rope_parameters" {rope_type, rope_theta,
    // ...}. As in transformers, rope_scaling wins over rope_parameters when both are there.
    const json * rp = field(j, "rope_scaling");
    if (!rp || (rp->is_object() && rp->empty())) rp = field(j, "rope_parameters");
    c.rope_theta = get_double(j, "rope_theta", path, 10000.0);
    double partial = get_double(j, "partial_rotary_factor", path, 1.0);
    if (rp) {
        ZT_CHECK(rp->is_object(), "{}: \"rope_scaling\"/\"rope_parameters\" must be an object or null, found {}",
                 path, rp->dump());
        c.rope_theta = get_double(*rp, "rope_theta", path, c.rope_theta);
        partial = get_double(*rp, "partial_rotary_factor", path, partial);
        std::string type = "default";
        if (const json * t = field(*rp, "rope_type")) type = t->is_string() ? t->get<std::string>() : t->dump();
        else if (const json * t2 = field(*rp, "type")) type = t2->is_string() ? t2->get<std::string>() : t2->dump();
        if (type == "default") {
            c.rope_scaling.type = RopeScaling::Type::none;
        } else if (type == "linear") {
            c.rope_scaling.type = RopeScaling::Type::linear;
            ZT_CHECK(field(*rp, "factor"), "{}: rope_scaling type \"linear\" needs \"factor\"", path);
            c.rope_scaling.factor = get_double(*rp, "factor", path, 1.0);
        } else if (type == "llama3") {
            c.rope_scaling.type = RopeScaling::Type::llama3;
            for (const char * k : {"factor", "low_freq_factor", "high_freq_factor"})
                ZT_CHECK(field(*rp, k), "{}: rope_scaling type \"llama3\" needs \"{}\"", path, k);
            c.rope_scaling.factor = get_double(*rp, "factor", path, 1.0);
            c.rope_scaling.low_freq_factor = get_double(*rp, "low_freq_factor", path, 1.0);
            c.rope_scaling.high_freq_factor = get_double(*rp, "high_freq_factor", path, 4.0);
            c.rope_scaling.original_max_position_embeddings =
                get_int(*rp, "original_max_position_embeddings", path, false,
                        get_int(j, "original_max_position_embeddings", path, false, c.max_position_embeddings));
            ZT_CHECK(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor,
                     "{}: llama3 rope_scaling needs high_freq_factor > low_freq_factor (found {} and {})", path,
                     c.rope_scaling.high_freq_factor, c.rope_scaling.low_freq_factor);
            check_range(c.rope_scaling.original_max_position_embeddings, 1, int64_t(1) << 40,
                        "rope_scaling.original_max_position_embeddings", path);
        } else if (type == "yarn") {
            parse_yarn(c, j, *rp, path);
        } else if (type == "dynamic") {
            c.rope_scaling.type = RopeScaling::Type::dynamic;
            ZT_CHECK(field(*rp, "factor"), "{}: rope_scaling type \"dynamic\" needs \"factor\"", path);
            c.rope_scaling.factor = get_double(*rp, "factor", path, 1.0);
            ZT_CHECK(c.head_dim > 2, "{}: rope_scaling type \"dynamic\" needs head_dim > 2 (its exponent is "
                     "head_dim / (head_dim - 2)), found {}", path, c.head_dim);
        } else {
            ZT_FAIL("{}: rope_scaling type \"{}\" is not supported (supported: default, linear, llama3, yarn, "
                    "dynamic); results would differ from Hugging Face, so this model cannot run", path, type);
        }
        ZT_CHECK(c.rope_scaling.factor > 0, "{}: rope_scaling factor must be > 0, found {}", path,
                 c.rope_scaling.factor);
    }
    ZT_CHECK(partial == 1.0, "{}: partial_rotary_factor = {} is not supported (only full-width RoPE, 1.0)", path,
             partial);
    ZT_CHECK(c.rope_theta > 0, "{}: rope_theta must be > 0, found {}", path, c.rope_theta);
}

// Sets c.layer_window and c.sliding_window as transformers builds the masks. Mistral: every layer slides by
// "sliding_window" (4096 when the key is absent, as MistralConfig; null: none). Qwen2/3: only with use_sliding_window,
// and only layers typed "sliding_attention" (explicit layer_types, or i >= max_window_layers, as Qwen2Config derives
// them). Llama: none.
void parse_sliding_window(ModelConfig & c, const json & j, const std::string & path) {
    c.layer_window.assign(size_t(c.num_hidden_layers), 0);
    c.sliding_window = 0;
    if (c.arch == Arch::llama) return;
    const bool present = j.contains("sliding_window");
    const bool is_null = present && j.at("sliding_window").is_null();
    if (c.arch != Arch::mistral && !get_bool(j, "use_sliding_window", path, false)) return;
    if (is_null) return;
    const int64_t w = present ? get_int(j, "sliding_window", path, false, 0) : 4096;
    ZT_CHECK(w > 0, "{}: \"sliding_window\" must be > 0 or null, found {}", path, w);
    const int64_t window = std::min<int64_t>(w, INT32_MAX);   // wider than any position: the same as no limit
    if (c.arch == Arch::mistral) {
        c.layer_window.assign(size_t(c.num_hidden_layers), window);
    } else if (const json * lt = field(j, "layer_types")) {
        ZT_CHECK(lt->is_array() && int64_t(lt->size()) == c.num_hidden_layers, "{}: \"layer_types\" must be a list "
                 "of num_hidden_layers = {} strings, found {}", path, c.num_hidden_layers, lt->dump());
        for (size_t i = 0; i < lt->size(); ++i) {
            const json & t = (*lt)[i];
            const bool sliding = t.is_string() && t.get<std::string>() == "sliding_attention";
            ZT_CHECK(sliding || (t.is_string() && t.get<std::string>() == "full_attention"), "{}: layer_types[{}] = {} "
                     "is not supported (supported: \"full_attention\", \"sliding_attention\")", path, i, t.dump());
            if (sliding) c.layer_window[i] = window;
        }
    } else {
        const int64_t max_window_layers = get_int(j, "max_window_layers", path, false, 28);
        ZT_CHECK(max_window_layers >= 0, "{}: \"max_window_layers\" must be >= 0, found {}", path, max_window_layers);
        for (int64_t i = max_window_layers; i < c.num_hidden_layers; ++i) c.layer_window[size_t(i)] = window;
    }
    for (int64_t lw : c.layer_window) if (lw > 0) c.sliding_window = lw;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json & j, const std::string & path) {
    ZT_CHECK(j.is_object(), "{}: config.json must hold a JSON object", path);
    ModelConfig c;
    const json * mt = field(j, "model_type");
    ZT_CHECK(mt && mt->is_string(), "{}: \"model_type\" is missing; this is not a Hugging Face model config "
             "(supported model_type: llama, mistral, qwen2, qwen3)", path);
    c.model_type = mt->get<std::string>();
    if (c.model_type == "llama") c.arch = Arch::llama;
    else if (c.model_type == "mistral") c.arch = Arch::mistral;
    else if (c.model_type == "qwen2") c.arch = Arch::qwen2;
    else if (c.model_type == "qwen3") c.arch = Arch::qwen3;
    else ZT_FAIL("{}: model_type \"{}\" is not supported (supported: llama, mistral, qwen2, qwen3)", path, c.model_type);

    if (const json * a = field(j, "architectures")) {
        ZT_CHECK(a->is_array(), "{}: \"architectures\" must be a list of strings", path);
        for (const auto & s : *a) {
            ZT_CHECK(s.is_string(), "{}: \"architectures\" must be a list of strings", path);
            c.architectures.push_back(s.get<std::string>());
        }
    }

    if (const json * act = field(j, "hidden_act")) {
        ZT_CHECK(act->is_string() && act->get<std::string>() == "silu", "{}: hidden_act {} is not supported (only "
                 "\"silu\")", path, act->dump());
    }
    ZT_CHECK(!get_bool(j, "mlp_bias", path, false), "{}: mlp_bias = true is not supported", path);

    c.vocab_size = get_int(j, "vocab_size", path, true, 0);
    c.hidden_size = get_int(j, "hidden_size", path, true, 0);
    c.intermediate_size = get_int(j, "intermediate_size", path, true, 0);
    c.num_hidden_layers = get_int(j, "num_hidden_layers", path, true, 0);
    c.num_attention_heads = get_int(j, "num_attention_heads", path, true, 0);
    check_range(c.vocab_size, 1, int64_t(1) << 24, "vocab_size", path);
    check_range(c.hidden_size, 1, int64_t(1) << 20, "hidden_size", path);
    check_range(c.intermediate_size, 1, int64_t(1) << 22, "intermediate_size", path);
    check_range(c.num_hidden_layers, 1, 10000, "num_hidden_layers", path);
    check_range(c.num_attention_heads, 1, 1 << 16, "num_attention_heads", path);

    // HF class defaults when the key is absent: llama -> heads; mistral -> 8; qwen2/qwen3 -> 32. null -> heads.
    const int64_t kv_default = c.arch == Arch::llama ? c.num_attention_heads : c.arch == Arch::mistral ? 8 : 32;
    c.num_key_value_heads = j.contains("num_key_value_heads") ? get_int(j, "num_key_value_heads", path, false,
                                                                        c.num_attention_heads)
                                                              : kv_default;
    check_range(c.num_key_value_heads, 1, c.num_attention_heads, "num_key_value_heads", path);
    ZT_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "{}: num_attention_heads = {} is not a multiple "
             "of num_key_value_heads = {} (grouped-query attention needs whole groups)", path, c.num_attention_heads,
             c.num_key_value_heads);

    if (field(j, "head_dim")) {
        c.head_dim = get_int(j, "head_dim", path, false, 0);
    } else if (c.arch == Arch::qwen3) {
        c.head_dim = 128;   // Qwen3Config default
    } else {
        ZT_CHECK(c.hidden_size % c.num_attention_heads == 0, "{}: hidden_size = {} is not a multiple of "
                 "num_attention_heads = {}, and no head_dim is given", path, c.hidden_size, c.num_attention_heads);
        c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    check_range(c.head_dim, 1, 1 << 14, "head_dim", path);
    ZT_CHECK(c.head_dim % 2 == 0, "{}: head_dim = {} must be even for RoPE", path, c.head_dim);

    const int64_t max_pos_default = c.arch == Arch::llama ? 2048 : c.arch == Arch::mistral ? 131072 : 32768;
    c.max_position_embeddings = get_int(j, "max_position_embeddings", path, false, max_pos_default);
    check_range(c.max_position_embeddings, 1, int64_t(1) << 40, "max_position_embeddings", path);

    c.rms_norm_eps = get_double(j, "rms_norm_eps", path, 1e-6);
    ZT_CHECK(c.rms_norm_eps > 0 && c.rms_norm_eps < 1, "{}: rms_norm_eps = {} is out of range (0, 1)", path,
             c.rms_norm_eps);
    parse_rope(c, j, path);

    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", path, false);
    switch (c.arch) {
        case Arch::qwen2: c.attention_bias = true; c.attention_out_bias = false; break;
        case Arch::mistral: c.attention_bias = c.attention_out_bias = false; break;
        case Arch::llama:
        case Arch::qwen3: c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", path, false); break;
    }
    c.qk_norm = c.arch == Arch::qwen3;
    c.is_causal = get_bool(j, "is_causal", path, true);
    parse_sliding_window(c, j, path);

    const json * dt = field(j, "torch_dtype");
    if (!dt) dt = field(j, "dtype");
    if (dt && dt->is_string()) c.torch_dtype = dtype_from_torch_name(dt->get<std::string>());

    if (const json * e = field(j, "eos_token_id")) {
        if (e->is_array()) {
            for (const auto & x : *e) {
                ZT_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0, "{}: eos_token_id entries must be "
                         "non-negative integers, found {}", path, x.dump());
                c.eos_token_ids.push_back(x.get<int64_t>());
            }
        } else {
            ZT_CHECK(e->is_number_integer() && e->get<int64_t>() >= 0, "{}: eos_token_id must be a non-negative "
                     "integer or a list of them, found {}", path, e->dump());
            c.eos_token_ids.push_back(e->get<int64_t>());
        }
    }
    c.bos_token_id = get_int(j, "bos_token_id", path, false, -1);
    return c;
}

ModelConfig ModelConfig::load(const std::string & model_dir) {
    if (is_gguf_model_path(model_dir)) return from_gguf(read_gguf_header(model_dir), model_dir);
    const std::string path = model_dir + "/config.json";
    std::ifstream f(path, std::ios::binary);
    ZT_CHECK(f.good(), "{}: cannot open; a model directory needs the Hugging Face config.json", path);
    std::stringstream ss;
    ss << f.rdbuf();
    return from_json(parse_json_file(ss.str(), path), path);   // nesting-limited: no deep value to quote
}

namespace {

const json * gguf_meta(const GgufFile & f, const std::string & key) {
    const auto it = f.metadata.find(key);
    return it == f.metadata.end() || it->is_null() ? nullptr : &*it;
}

const GgufTensorInfo * gguf_tensor(const GgufFile & f, const std::string & name) {
    for (const GgufTensorInfo & t : f.tensors)
        if (t.name == name) return &t;
    return nullptr;
}

// {arch}.rope.scaling.* -> config.json's "rope_scaling" (convert_hf_to_gguf writes linear and yarn this way).
void gguf_rope_scaling(const GgufFile & f, const std::string & arch, const std::string & path, json & j) {
    const std::string k = arch + ".rope.scaling.";
    const json * type = gguf_meta(f, k + "type");
    ZT_CHECK(!gguf_tensor(f, "rope_freqs.weight"), "{}: has rope_freqs.weight, per-frequency RoPE factors (how "
             "convert_hf_to_gguf stores Llama 3's \"llama3\" rope scaling); ztinfer cannot read them from a GGUF file: "
             "run the Hugging Face model folder instead", path);
    if (!type) return;
    ZT_CHECK(type->is_string(), "{}: GGUF metadata \"{}type\" must be a string, found {}", path, k, type->dump());
    const std::string t = type->get<std::string>();
    if (t == "none") return;
    ZT_CHECK(t == "linear" || t == "yarn", "{}: GGUF rope scaling type \"{}\" is not supported (supported: none, "
             "linear, yarn); results would differ, so this model cannot run", path, t);
    const json * factor = gguf_meta(f, k + "factor");
    ZT_CHECK(factor, "{}: GGUF rope scaling type \"{}\" needs \"{}factor\"", path, t, k);
    json rs = {{"rope_type", t}, {"factor", *factor}};
    if (t == "yarn") {
        const json * orig = gguf_meta(f, k + "original_context_length");
        ZT_CHECK(orig, "{}: GGUF rope scaling type \"yarn\" needs \"{}original_context_length\"", path, k);
        rs["original_max_position_embeddings"] = *orig;
        static const std::pair<const char *, const char *> kYarnKeys[] = {
            {"yarn_attn_factor", "attention_factor"}, {"yarn_beta_fast", "beta_fast"}, {"yarn_beta_slow", "beta_slow"}};
        for (const auto & [gk, hk] : kYarnKeys)
            if (const json * v = gguf_meta(f, k + gk)) rs[hk] = *v;
    }
    j["rope_scaling"] = rs;
}

}  // namespace

json ModelConfig::gguf_to_config_json(const GgufFile & f, const std::string & path) {
    const json * a = gguf_meta(f, "general.architecture");
    ZT_CHECK(a && a->is_string(), "{}: GGUF metadata has no \"general.architecture\" string; not a model file "
             "(re-convert it with llama.cpp's convert_hf_to_gguf)", path);
    const std::string arch = a->get<std::string>();
    ZT_CHECK(arch == "llama" || arch == "mistral" || arch == "qwen2" || arch == "qwen3", "{}: general.architecture "
             "\"{}\" is not supported (supported: llama, mistral, qwen2, qwen3)", path, arch);
    json j = json::object();
    j["model_type"] = arch == "mistral" ? "llama" : arch;
    for (const char * k : {"block_count", "embedding_length", "feed_forward_length", "attention.head_count"})
        ZT_CHECK(gguf_meta(f, arch + "." + k), "{}: GGUF metadata has no \"{}.{}\"; the file is incomplete "
                 "(re-convert it)", path, arch, k);
    for (int i = 0; i < kGgufConfigKeyCount; ++i)
        if (const json * v = gguf_meta(f, arch + "." + kGgufConfigKeys[i].gguf)) j[kGgufConfigKeys[i].hf] = *v;
    // llama.cpp: no head_count_kv = one KV head per query head (not the HF classes' defaults of 8 or 32)
    if (!j.contains("num_key_value_heads")) j["num_key_value_heads"] = j["num_attention_heads"];
    // Mistral's sliding window applies to every layer (model_type mistral); llama and qwen files without it attend
    // fully, as transformers reads them.
    if (arch == "mistral" && j.contains("sliding_window")) j["model_type"] = "mistral";
    else j.erase("sliding_window");
    if (const json * c = gguf_meta(f, arch + ".attention.causal")) j["is_causal"] = *c;

    // head_dim: attention.key_length, else what attn_q's rows say (heads x head_dim), else hidden / heads.
    const GgufTensorInfo * q = gguf_tensor(f, "blk.0.attn_q.weight");
    const json & heads = j["num_attention_heads"];
    const json & hidden = j["hidden_size"];
    if (!j.contains("head_dim") && heads.is_number_integer() && heads.get<int64_t>() > 0) {
        const int64_t h = heads.get<int64_t>();
        if (q && q->shape[0] % h == 0) j["head_dim"] = q->shape[0] / h;
        else if (hidden.is_number_integer() && hidden.get<int64_t>() % h == 0) j["head_dim"] = hidden.get<int64_t>() / h;
    }
    if (const json * rd = gguf_meta(f, arch + ".rope.dimension_count")) {
        const json & hd = j.contains("head_dim") ? j["head_dim"] : json();
        if (rd->is_number_integer() && hd.is_number_integer() && rd->get<int64_t>() != hd.get<int64_t>())
            j["partial_rotary_factor"] = rd->get<double>() / hd.get<double>();   // refused by from_json, named
    }
    if (!j.contains("vocab_size")) {
        const json * tokens = gguf_meta(f, "tokenizer.ggml.tokens");
        const GgufTensorInfo * embd = gguf_tensor(f, "token_embd.weight");
        if (tokens && tokens->is_array()) j["vocab_size"] = tokens->size();
        else if (embd) j["vocab_size"] = embd->shape[0];
    }
    gguf_rope_scaling(f, arch, path, j);

    // From the tensors: biases (qwen2 always has them), tied embeddings (no output.weight).
    if (arch != "qwen2") j["attention_bias"] = gguf_tensor(f, "blk.0.attn_q.bias") != nullptr;
    j["tie_word_embeddings"] = gguf_tensor(f, "output.weight") == nullptr;

    // End of sequence: the tokenizer's eos, and its end-of-turn / end-of-message tokens where given (llama.cpp
    // stops at those too).
    json eos = json::array();
    for (const char * k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
        if (const json * e = gguf_meta(f, k); e && std::find(eos.begin(), eos.end(), *e) == eos.end()) eos.push_back(*e);
    if (!eos.empty()) j["eos_token_id"] = eos;
    if (const json * b = gguf_meta(f, "tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *b;
    return j;
}

ModelConfig ModelConfig::from_gguf(const GgufFile & f, const std::string & path) {
    return from_json(gguf_to_config_json(f, path), path + " (GGUF metadata read as config.json)");
}

int32_t ModelConfig::window_of(int64_t l) const {
    if (l < 0 || l >= int64_t(layer_window.size())) return 0;
    return int32_t(std::min<int64_t>(layer_window[size_t(l)], INT32_MAX));
}

// Yarn and dynamic scaling exist to run past the pretraining context: as vLLM derives max_model_len, yarn allows
// original_max_position_embeddings * factor, dynamic max_position_embeddings * factor (never less than
// max_position_embeddings).
int64_t ModelConfig::max_context() const {
    const RopeScaling & rs = rope_scaling;
    double scaled = 0;
    if (rs.type == RopeScaling::Type::yarn) scaled = double(rs.original_max_position_embeddings) * rs.factor;
    if (rs.type == RopeScaling::Type::dynamic) scaled = double(max_position_embeddings) * rs.factor;
    scaled = std::min(scaled, double(int64_t(1) << 40));
    return std::max(max_position_embeddings, int64_t(scaled));
}

std::string ModelConfig::max_context_reason() const {
    if (max_context() > max_position_embeddings) {
        const bool yarn = rope_scaling.type == RopeScaling::Type::yarn;
        return fmt::format("{} rope scaling: {}={} x factor {}", yarn ? "yarn" : "dynamic",
                           yarn ? "original_max_position_embeddings" : "max_position_embeddings",
                           yarn ? rope_scaling.original_max_position_embeddings : max_position_embeddings,
                           rope_scaling.factor);
    }
    return fmt::format("max_position_embeddings={}", max_position_embeddings);
}

}  // namespace zt
