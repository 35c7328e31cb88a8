// Checkpoint: opens a Hugging Face model directory's safetensors (one file, or shards listed by
// model.safetensors.index.json) or a GGUF file, and binds the tensors a ModelConfig needs, checking presence,
// shape and dtype.
#include "runtime/model/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/hash.h"
#include "runtime/base/json_input.h"
#include "runtime/model/gguf_names.h"

namespace zt {

namespace {

// Whether p is a regular file (after links). A link loop or a dangling link is an error naming it: "not found"
// would send the user looking for a file that is there.
bool file_exists(const std::string & p) {
    struct stat st{};
    if (::stat(p.c_str(), &st) == 0) return S_ISREG(st.st_mode);
    const int err = errno;
    ZT_CHECK(err != ELOOP, "{} is a symlink loop (or too many levels of links): fix or remove the link", p);
    if (err == ENOENT && ::lstat(p.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        std::error_code ec;
        const std::string target = std::filesystem::read_symlink(p, ec).string();
        ZT_FAIL("{} is a symbolic link to {}, which does not exist (an interrupted download leaves such links in the "
                "Hugging Face cache): download the model again or fix the link", p, target);
    }
    return false;
}

std::string shape_str(const std::vector<int64_t> & s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

Checkpoint::Checkpoint(const std::string & model_dir) : dir_(model_dir) {
    if (is_gguf_model_path(model_dir)) {
        gguf_ = std::make_unique<GgufCheckpoint>(model_dir);
        return;
    }
    const std::string single = model_dir + "/model.safetensors";
    const std::string index_path = model_dir + "/model.safetensors.index.json";
    std::map<std::string, std::string> weight_map;   // tensor -> shard file name (sharded checkpoints only)
    if (file_exists(single)) {
        files_.push_back(std::make_unique<SafetensorsFile>(single));
    } else if (file_exists(index_path)) {
        std::ifstream f(index_path, std::ios::binary);
        ZT_CHECK(f.good(), "{}: cannot open", index_path);
        std::stringstream ss;
        ss << f.rdbuf();
        nlohmann::json j = parse_json_file(ss.str(), index_path);
        ZT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                 "{}: has no \"weight_map\" object (tensor name -> shard file)", index_path);
        std::vector<std::string> shards;
        for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
            ZT_CHECK(it->is_string(), "{}: weight_map entry for '{}' is not a file name", index_path, it.key());
            const std::string shard = it->get<std::string>();
            ZT_CHECK(!shard.empty() && shard[0] != '/' && shard.find("..") == std::string::npos,
                     "{}: weight_map entry for '{}' names \"{}\", which is not a file inside the model directory",
                     index_path, it.key(), shard);
            weight_map[it.key()] = shard;
            if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
        }
        ZT_CHECK(!shards.empty(), "{}: weight_map is empty", index_path);
        for (const auto & s : shards) {
            const std::string p = model_dir + "/" + s;
            ZT_CHECK(file_exists(p), "{}: shard {} (listed in {}) is missing; the download is incomplete", p, s,
                     index_path);
        }
        for (const auto & s : shards) files_.push_back(std::make_unique<SafetensorsFile>(model_dir + "/" + s));
    } else {
        ZT_FAIL("{}: no model.safetensors or model.safetensors.index.json found; a model directory needs its "
                "weights as safetensors (convert .bin/.pth checkpoints with transformers' save_pretrained)",
                model_dir);
    }

    for (const auto & f : files_)
        for (const auto & e : f->header().entries) index_.emplace_back(e.name, f.get());
    std::sort(index_.begin(), index_.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
    for (size_t i = 1; i < index_.size(); ++i) {
        ZT_CHECK(index_[i].first != index_[i - 1].first, "{}: tensor '{}' is in two shards, {} and {}; the checkpoint "
                 "is inconsistent", model_dir, index_[i].first, index_[i - 1].second->path(), index_[i].second->path());
    }
    for (const auto & [name, shard] : weight_map) {
        const std::string p = model_dir + "/" + shard;
        auto it = std::lower_bound(index_.begin(), index_.end(), name,
                                   [](const auto & a, const std::string & n) { return a.first < n; });
        ZT_CHECK(it != index_.end() && it->first == name && it->second->path() == p, "{}: tensor '{}' is listed in "
                 "model.safetensors.index.json for this shard but the shard does not hold it{}", p, name,
                 (it != index_.end() && it->first == name) ? fmt::format(" (it is in {})", it->second->path()) : "");
    }
}

bool Checkpoint::has(const std::string & name) const {
    if (gguf_) return gguf_->has(name);
    auto it = std::lower_bound(index_.begin(), index_.end(), name,
                               [](const auto & a, const std::string & n) { return a.first < n; });
    return it != index_.end() && it->first == name;
}

Tensor Checkpoint::tensor(const std::string & name) const {
    if (gguf_) return gguf_->tensor(name);
    auto it = std::lower_bound(index_.begin(), index_.end(), name,
                               [](const auto & a, const std::string & n) { return a.first < n; });
    ZT_CHECK(it != index_.end() && it->first == name, "{}: tensor '{}' is not in the checkpoint", dir_, name);
    return it->second->tensor(*it->second->find(name));
}

std::string Checkpoint::identity() const {
    std::string desc;
    if (gguf_) {
        desc = gguf_->identity_text();
    } else {
        std::ifstream cfg(dir_ + "/config.json", std::ios::binary);
        std::stringstream ss;
        ss << cfg.rdbuf();
        desc = "config.json " + std::to_string(ss.str().size()) + "\n" + ss.str() + "\n";
    }
    for (const auto & f : files_) {
        struct stat st{};
        ZT_CHECK(::stat(f->path().c_str(), &st) == 0, "{}: cannot stat: {}", f->path(), std::strerror(errno));
        desc += fmt::format("file {} {} {}.{:09}\n", std::filesystem::path(f->path()).filename().string(),
                            st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        for (const auto & e : f->header().entries) {
            desc += fmt::format("{} {} {} {} {}", e.name, dtype_name(e.dtype), e.file_offset, e.bytes, e.shape.size());
            for (int64_t d : e.shape) desc += " " + std::to_string(d);
            desc += "\n";
        }
        for (const auto & [k, v] : f->header().metadata)
            desc += fmt::format("meta {} {} {} {}\n", k.size(), k, v.size(), v);
    }
    return fmt::format("{:016x}{:016x}", hash64(desc, 0), hash64(desc, 0x9e3779b97f4a7c15ull));
}

std::vector<std::string> Checkpoint::names() const {
    if (gguf_) return gguf_->names();
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto & p : index_) out.push_back(p.first);
    return out;
}

ModelWeights bind_weights(const Checkpoint & ckpt, const ModelConfig & cfg) {
    // Causal-LM saves name tensors "model.…"; base-model saves (e.g. gte-Qwen2's Qwen2Model) have no prefix.
    std::string prefix = "model.";
    if (!ckpt.has("model.embed_tokens.weight") && ckpt.has("embed_tokens.weight")) prefix = "";

    // A matrix (or the embedding / lm_head) may be quantized; a norm or bias is a float vector. Safetensors saves
    // hold one dtype; a GGUF file mixes them by design.
    enum class Kind { matrix, vector };
    const bool one_dtype = ckpt.gguf() == nullptr;
    const char * source = one_dtype ? "config.json" : "the GGUF metadata";
    bool have_dtype = false;
    DType dtype = DType::F32;
    std::string first_name;
    auto get = [&](const std::string & name_hf, std::vector<int64_t> shape, Kind kind = Kind::matrix) -> Tensor {
        // in messages, a GGUF tensor goes by both names: 'model.norm.weight' (GGUF output_norm.weight)
        const std::string name = one_dtype ? fmt::format("'{}'", name_hf)
                                           : fmt::format("'{}' (GGUF {})", name_hf,
                                                         gguf_name_from_hf(name_hf).value_or("?"));
        ZT_CHECK(ckpt.has(name_hf), "{}: tensor {} is missing; the checkpoint does not match {} (model_type {}, {} "
                 "layers)", ckpt.dir(), name, source, cfg.model_type, cfg.num_hidden_layers);
        Tensor t = ckpt.tensor(name_hf);
        ZT_CHECK(t.shape == shape, "{}: tensor {} has shape {} but {} (model_type {}) expects {}; the checkpoint "
                 "does not match {}", ckpt.dir(), name, shape_str(t.shape), source, cfg.model_type,
                 shape_str(shape), source);
        const bool is_float = t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16;
        if (kind == Kind::vector) {
            ZT_CHECK(is_float, "{}: tensor {} has dtype {}; norms and biases must be F32, F16 or BF16", ckpt.dir(),
                     name, dtype_name(t.dtype));
        } else {
            ZT_CHECK(is_float || dtype_is_quantized(t.dtype), "{}: tensor {} has dtype {}; weights must be F32, "
                     "F16, BF16 or one of GGUF's Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K", ckpt.dir(), name,
                     dtype_name(t.dtype));
        }
        if (!have_dtype) {
            have_dtype = true;
            dtype = t.dtype;
            first_name = name_hf;
        }
        ZT_CHECK(!one_dtype || t.dtype == dtype, "{}: tensor '{}' has dtype {} but '{}' has {}; all weights must share "
                 "one dtype", ckpt.dir(), name_hf, dtype_name(t.dtype), first_name, dtype_name(dtype));
        // The safetensors writers order tensors by alignment, and GGUF aligns every tensor to 32 bytes, so this
        // holds for real checkpoints; kernels rely on it (a quantized row starts with an fp16 scale).
        const size_t align = dtype_is_quantized(t.dtype) ? 2 : dtype_size(t.dtype);
        ZT_CHECK(reinterpret_cast<uintptr_t>(t.data) % align == 0, "{}: tensor {} data is not aligned to {} bytes "
                 "in the file; re-save the checkpoint with the safetensors library (or re-convert the GGUF file)",
                 ckpt.dir(), name, align);
        return t;
    };

    const int64_t V = cfg.vocab_size, C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim;
    const int64_t HD = cfg.num_attention_heads * D, KVD = cfg.num_key_value_heads * D;
    ModelWeights w;
    w.embed = get(prefix + "embed_tokens.weight", {V, C});
    w.layers.resize(size_t(cfg.num_hidden_layers));
    for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
        const std::string p = prefix + "layers." + std::to_string(i) + ".";
        LayerWeights & l = w.layers[size_t(i)];
        l.input_norm = get(p + "input_layernorm.weight", {C}, Kind::vector);
        l.q = get(p + "self_attn.q_proj.weight", {HD, C});
        l.k = get(p + "self_attn.k_proj.weight", {KVD, C});
        l.v = get(p + "self_attn.v_proj.weight", {KVD, C});
        l.o = get(p + "self_attn.o_proj.weight", {C, HD});
        if (cfg.attention_bias) {
            l.q_bias = get(p + "self_attn.q_proj.bias", {HD}, Kind::vector);
            l.k_bias = get(p + "self_attn.k_proj.bias", {KVD}, Kind::vector);
            l.v_bias = get(p + "self_attn.v_proj.bias", {KVD}, Kind::vector);
        }
        if (cfg.attention_out_bias) l.o_bias = get(p + "self_attn.o_proj.bias", {C}, Kind::vector);
        if (cfg.qk_norm) {
            l.q_norm = get(p + "self_attn.q_norm.weight", {D}, Kind::vector);
            l.k_norm = get(p + "self_attn.k_norm.weight", {D}, Kind::vector);
        }
        l.post_norm = get(p + "post_attention_layernorm.weight", {C}, Kind::vector);
        l.gate = get(p + "mlp.gate_proj.weight", {I, C});
        l.up = get(p + "mlp.up_proj.weight", {I, C});
        l.down = get(p + "mlp.down_proj.weight", {C, I});
    }
    w.final_norm = get(prefix + "norm.weight", {C}, Kind::vector);
    if (cfg.tie_word_embeddings) {
        w.lm_head = w.embed;   // HF ties lm_head to the embedding even when a copy is saved
    } else if (ckpt.has("lm_head.weight")) {
        w.lm_head = get("lm_head.weight", {V, C});
    }   // else: base-model save, no LM head (embeddings only)
    return w;
}

}  // namespace zt
