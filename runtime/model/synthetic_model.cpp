// Synthetic model directories: config.json valid for transformers' {Llama,Mistral,Qwen2,Qwen3}ForCausalLM, a
// seeded random model.safetensors (N(0, 0.02) weights, norms 1 + N(0, 0.02)), tokenizer files copied from a
// tokenizer folder (tokenizer.json.xz decompressed with `xz -dc`), and generation_config.json.
#include "runtime/model/synthetic_model.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.h"
#include "runtime/base/error.h"
#include "runtime/base/json_input.h"
#include "runtime/model/model_config.h"
#include "runtime/model/safetensors.h"

namespace zt {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

json read_json_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    ZT_CHECK(f.good(), "{}: cannot open", path);
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_json_file(ss.str(), path);   // nesting-limited: a --tokenizer folder comes from outside
}

void write_text_file(const std::string & path, const std::string & text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    ZT_CHECK(f.good(), "{}: cannot create", path);
    f << text;
    f.close();
    ZT_CHECK(!f.fail(), "{}: write failed", path);
}

std::string shell_quote(const std::string & s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// Copies src to dst (replacing it, even when read-only; a no-op when both are the same file); dst is left
// writable by its owner so that a later synth run into the same folder can replace it again.
void copy_into(const std::string & src, const std::string & dst) {
    std::error_code ec;
    if (fs::exists(dst) && fs::equivalent(src, dst)) return;
    fs::remove(dst, ec);
    fs::copy_file(src, dst, ec);
    ZT_CHECK(!ec, "synth: cannot copy {} to {}: {}", src, dst, ec.message());
    fs::permissions(dst, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add, ec);
}

// Normal(0, 1) from a seeded mt19937_64 by Box-Muller, so values depend only on the seed (not on the C++
// library's distributions).
class NormalGen {
public:
    explicit NormalGen(uint64_t seed) : rng_(seed) {}
    double next() {
        if (have_spare_) { have_spare_ = false; return spare_; }
        const double u1 = (double(rng_() >> 11) + 1.0) * 0x1.0p-53;   // (0, 1]
        const double u2 = double(rng_() >> 11) * 0x1.0p-53;           // [0, 1)
        const double r = std::sqrt(-2.0 * std::log(u1));
        const double t = 2.0 * M_PI * u2;
        spare_ = r * std::sin(t);
        have_spare_ = true;
        return r * std::cos(t);
    }
private:
    std::mt19937_64 rng_;
    double spare_ = 0;
    bool have_spare_ = false;
};

uint64_t name_hash(const std::string & s) {   // FNV-1a: per-tensor streams independent of tensor order
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) { h ^= c; h *= 0x100000001b3ull; }
    return h;
}

// Id of a special token named in tokenizer_config.json ("<s>" or {"content": "<s>", ...}); -1 when null/absent.
int64_t special_token_id(const json & tok_cfg, const char * key, const json & tokenizer) {
    auto it = tok_cfg.find(key);
    if (it == tok_cfg.end() || it->is_null()) return -1;
    std::string content;
    if (it->is_string()) content = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        content = (*it)["content"].get<std::string>();
    else return -1;
    if (tokenizer.contains("added_tokens") && tokenizer["added_tokens"].is_array()) {
        for (const auto & t : tokenizer["added_tokens"])
            if (t.value("content", "") == content && t.contains("id")) return t["id"].get<int64_t>();
    }
    const json & vocab = tokenizer["model"]["vocab"];
    if (vocab.is_object() && vocab.contains(content)) return vocab[content].get<int64_t>();
    if (vocab.is_array()) {
        for (size_t i = 0; i < vocab.size(); ++i)
            if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0] == content) return int64_t(i);
    }
    return -1;
}

int64_t vocab_size_of(const json & tok, const std::string & path) {
    ZT_CHECK(tok.is_object() && tok.contains("model") && tok["model"].is_object() && tok["model"].contains("vocab"),
             "{}: has no model.vocab; not a Hugging Face tokenizer.json", path);
    int64_t max_id = -1;
    const json & vocab = tok["model"]["vocab"];
    if (vocab.is_object()) {
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
            ZT_CHECK(it->is_number_integer() && it->get<int64_t>() >= 0, "{}: model.vocab id of '{}' is not a "
                     "non-negative integer", path, it.key());
            max_id = std::max(max_id, it->get<int64_t>());
        }
    } else if (vocab.is_array()) {   // Unigram: [[piece, score], ...], id = position
        max_id = int64_t(vocab.size()) - 1;
    } else {
        ZT_FAIL("{}: model.vocab is neither an object nor a list", path);
    }
    if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
        for (const auto & t : tok["added_tokens"]) {
            ZT_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() >= 0,
                     "{}: an added_tokens entry has no non-negative integer id", path);
            max_id = std::max(max_id, t["id"].get<int64_t>());
        }
    }
    ZT_CHECK(max_id >= 0 && max_id < (int64_t(1) << 24), "{}: vocabulary size {} is out of range", path, max_id + 1);
    return max_id + 1;
}

const char * architecture_class(const std::string & arch) {
    if (arch == "llama") return "LlamaForCausalLM";
    if (arch == "mistral") return "MistralForCausalLM";
    if (arch == "qwen2") return "Qwen2ForCausalLM";
    return "Qwen3ForCausalLM";
}

}  // namespace

int64_t tokenizer_json_vocab_size(const std::string & tokenizer_json_path) {
    return vocab_size_of(read_json_file(tokenizer_json_path), tokenizer_json_path);
}

void synthesize_model(const SynthOptions & o) {
    // --- options -------------------------------------------------------------------------------------------
    ZT_CHECK(o.arch == "llama" || o.arch == "mistral" || o.arch == "qwen2" || o.arch == "qwen3",
             "synth: --arch \"{}\" is not supported (use llama, mistral, qwen2 or qwen3)", o.arch);
    ZT_CHECK(o.layers >= 1 && o.layers <= 1000, "synth: --layers {} must be in [1, 1000]", o.layers);
    ZT_CHECK(o.hidden >= 2 && o.hidden <= 65536, "synth: --hidden {} must be in [2, 65536]", o.hidden);
    ZT_CHECK(o.heads >= 1 && o.hidden % o.heads == 0, "synth: --hidden {} must be a multiple of --heads {}",
             o.hidden, o.heads);
    ZT_CHECK((o.hidden / o.heads) % 2 == 0, "synth: head dim --hidden/--heads = {} must be even (RoPE)",
             o.hidden / o.heads);
    ZT_CHECK(o.kv_heads >= 1 && o.heads % o.kv_heads == 0, "synth: --heads {} must be a multiple of --kv-heads {}",
             o.heads, o.kv_heads);
    ZT_CHECK(o.intermediate >= 1 && o.intermediate <= (1 << 20), "synth: --intermediate {} must be in [1, 2^20]",
             o.intermediate);
    ZT_CHECK(o.max_position_embeddings >= 1, "synth: max_position_embeddings {} must be >= 1",
             o.max_position_embeddings);
    DType dtype;
    std::string torch_dtype;
    if (o.dtype == "fp32") { dtype = DType::F32; torch_dtype = "float32"; }
    else if (o.dtype == "bf16") { dtype = DType::BF16; torch_dtype = "bfloat16"; }
    else if (o.dtype == "fp16") { dtype = DType::F16; torch_dtype = "float16"; }
    else ZT_FAIL("synth: --dtype \"{}\" is not supported (use fp32, bf16 or fp16)", o.dtype);
    ZT_CHECK(!o.out_dir.empty(), "synth: --out is required");

    // --- tokenizer files ------------------------------------------------------------------------------------
    const std::string tok_json = o.tokenizer_dir + "/tokenizer.json";
    const std::string tok_xz = tok_json + ".xz";
    const std::string tok_cfg = o.tokenizer_dir + "/tokenizer_config.json";
    ZT_CHECK(fs::is_regular_file(tok_json) || fs::is_regular_file(tok_xz), "synth: {} has no tokenizer.json (or "
             "tokenizer.json.xz); --tokenizer must name a Hugging Face tokenizer folder", o.tokenizer_dir);
    std::error_code ec;
    fs::create_directories(o.out_dir, ec);
    ZT_CHECK(!ec && fs::is_directory(o.out_dir), "synth: cannot create output folder {}: {}", o.out_dir,
             ec.message());
    const std::string out_tok = o.out_dir + "/tokenizer.json";
    if (fs::is_regular_file(tok_json)) {
        copy_into(tok_json, out_tok);
    } else {
        fs::remove(out_tok, ec);
        const std::string cmd = "xz -dc " + shell_quote(tok_xz) + " > " + shell_quote(out_tok);
        ZT_CHECK(std::system(cmd.c_str()) == 0, "synth: `{}` failed; install xz-utils or decompress {} by hand",
                 cmd, tok_xz);
    }
    const json tokenizer = read_json_file(out_tok);
    const int64_t vocab = vocab_size_of(tokenizer, out_tok);
    json tcfg = json::object();
    if (fs::is_regular_file(tok_cfg)) {
        tcfg = read_json_file(tok_cfg);
        const std::string out_cfg = o.out_dir + "/tokenizer_config.json";
        copy_into(tok_cfg, out_cfg);
    }
    const int64_t bos = special_token_id(tcfg, "bos_token", tokenizer);
    const int64_t eos = special_token_id(tcfg, "eos_token", tokenizer);

    // --- config.json ----------------------------------------------------------------------------------------
    const int64_t head_dim = o.hidden / o.heads;
    const bool qwen = o.arch == "qwen2" || o.arch == "qwen3";
    ojson cfg;
    cfg["architectures"] = {architecture_class(o.arch)};
    cfg["model_type"] = o.arch;
    cfg["vocab_size"] = vocab;
    cfg["hidden_size"] = o.hidden;
    cfg["intermediate_size"] = o.intermediate;
    cfg["num_hidden_layers"] = o.layers;
    cfg["num_attention_heads"] = o.heads;
    cfg["num_key_value_heads"] = o.kv_heads;
    cfg["head_dim"] = head_dim;
    cfg["hidden_act"] = "silu";
    cfg["max_position_embeddings"] = o.max_position_embeddings;
    cfg["rms_norm_eps"] = qwen ? 1e-6 : 1e-5;
    cfg["initializer_range"] = 0.02;
    cfg["attention_dropout"] = 0.0;
    cfg["use_cache"] = true;
    if (o.arch == "llama") {
        cfg["rope_theta"] = 500000.0;
        // Llama 3.1's scaling with the pre-training length at 1/8 of the context (transformers wants it below
        // max_position_embeddings), so that low-, mid- and high-frequency bands all occur at small head dims.
        if (o.max_position_embeddings >= 16)
            cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                   {"high_freq_factor", 4.0},
                                   {"original_max_position_embeddings", o.max_position_embeddings / 8}};
        cfg["attention_bias"] = false;
        cfg["mlp_bias"] = false;
    } else {
        cfg["rope_theta"] = 1000000.0;
    }
    if (o.arch == "mistral") cfg["sliding_window"] = nullptr;   // full attention: no window limits the context
    if (qwen) {
        cfg["use_sliding_window"] = false;
        cfg["sliding_window"] = nullptr;
        cfg["max_window_layers"] = o.layers;
    }
    if (o.arch == "qwen3") cfg["attention_bias"] = false;
    cfg["tie_word_embeddings"] = o.arch == "qwen2";
    cfg["torch_dtype"] = torch_dtype;
    cfg["bos_token_id"] = bos >= 0 ? json(bos) : json(nullptr);
    cfg["eos_token_id"] = eos >= 0 ? json(eos) : json(nullptr);
    write_text_file(o.out_dir + "/config.json", cfg.dump(2) + "\n");

    ojson gen;
    gen["bos_token_id"] = bos >= 0 ? json(bos) : json(nullptr);
    gen["eos_token_id"] = eos >= 0 ? json(eos) : json(nullptr);
    write_text_file(o.out_dir + "/generation_config.json", gen.dump(2) + "\n");

    // --- weights --------------------------------------------------------------------------------------------
    const ModelConfig mc = ModelConfig::from_json(json::parse(cfg.dump()), o.out_dir + "/config.json");
    const int64_t C = o.hidden, I = o.intermediate, HD = o.heads * head_dim, KVD = o.kv_heads * head_dim;
    struct Spec { std::string name; std::vector<int64_t> shape; bool is_norm; };
    std::vector<Spec> specs;
    specs.push_back({"model.embed_tokens.weight", {vocab, C}, false});
    for (int64_t i = 0; i < o.layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        specs.push_back({p + "input_layernorm.weight", {C}, true});
        specs.push_back({p + "self_attn.q_proj.weight", {HD, C}, false});
        specs.push_back({p + "self_attn.k_proj.weight", {KVD, C}, false});
        specs.push_back({p + "self_attn.v_proj.weight", {KVD, C}, false});
        if (mc.attention_bias) {
            specs.push_back({p + "self_attn.q_proj.bias", {HD}, false});
            specs.push_back({p + "self_attn.k_proj.bias", {KVD}, false});
            specs.push_back({p + "self_attn.v_proj.bias", {KVD}, false});
        }
        specs.push_back({p + "self_attn.o_proj.weight", {C, HD}, false});
        if (mc.attention_out_bias) specs.push_back({p + "self_attn.o_proj.bias", {C}, false});
        if (mc.qk_norm) {
            specs.push_back({p + "self_attn.q_norm.weight", {head_dim}, true});
            specs.push_back({p + "self_attn.k_norm.weight", {head_dim}, true});
        }
        specs.push_back({p + "post_attention_layernorm.weight", {C}, true});
        specs.push_back({p + "mlp.gate_proj.weight", {I, C}, false});
        specs.push_back({p + "mlp.up_proj.weight", {I, C}, false});
        specs.push_back({p + "mlp.down_proj.weight", {C, I}, false});
    }
    specs.push_back({"model.norm.weight", {C}, true});
    if (!mc.tie_word_embeddings) specs.push_back({"lm_head.weight", {vocab, C}, false});

    std::vector<std::vector<uint8_t>> storage;
    storage.reserve(specs.size());
    std::vector<SafetensorsWriteEntry> entries;
    std::vector<float> values;
    for (const Spec & s : specs) {
        size_t n = 1;
        for (int64_t d : s.shape) n *= size_t(d);
        NormalGen g(o.seed ^ name_hash(s.name));
        values.resize(n);
        for (size_t k = 0; k < n; ++k) values[k] = float((s.is_norm ? 1.0 : 0.0) + 0.02 * g.next());
        storage.emplace_back(n * dtype_size(dtype));
        convert_from_f32(storage.back().data(), dtype, values.data(), n);
        entries.push_back({s.name, dtype, s.shape, storage.back().data()});
    }
    write_safetensors(o.out_dir + "/model.safetensors", entries, {{"format", "pt"}});

    // Self-check: what we wrote loads and binds.
    bind_weights(Checkpoint(o.out_dir), ModelConfig::load(o.out_dir));
}

}  // namespace zt
