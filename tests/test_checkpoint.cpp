// Checkpoint + bind_weights: single-file and sharded checkpoints, base-model saves without the "model." prefix,
// tied embeddings, and checkpoint != config faults (missing tensor, wrong shape, wrong/mixed dtype, missing
// shard, tensor not in its shard, duplicate tensors), a symlink loop or dangling link named as such (not "not
// found"), and the checkpoint identity (stable for the same files, changed by another file, mtime or config).
// Checkpoints are written to temp dirs by write_safetensors.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.h"
#include "runtime/base/error.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
using json = nlohmann::json;

namespace {


json tiny_config(const std::string & model_type) {
    return json{{"model_type", model_type}, {"vocab_size", 10}, {"hidden_size", 8}, {"intermediate_size", 12},
                {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                {"head_dim", 4}, {"max_position_embeddings", 64}};
}

// Name -> shape of every tensor the config needs (with `prefix`, and lm_head unless `with_lm_head` is false).
std::map<std::string, std::vector<int64_t>> tensor_shapes(const ModelConfig & c, const std::string & prefix,
                                                           bool with_lm_head) {
    const int64_t V = c.vocab_size, C = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
    const int64_t HD = c.num_attention_heads * D, KVD = c.num_key_value_heads * D;
    std::map<std::string, std::vector<int64_t>> m;
    m[prefix + "embed_tokens.weight"] = {V, C};
    m[prefix + "norm.weight"] = {C};
    if (with_lm_head) m["lm_head.weight"] = {V, C};
    for (int i = 0; i < c.num_hidden_layers; ++i) {
        const std::string p = prefix + "layers." + std::to_string(i) + ".";
        m[p + "input_layernorm.weight"] = {C};
        m[p + "post_attention_layernorm.weight"] = {C};
        m[p + "self_attn.q_proj.weight"] = {HD, C};
        m[p + "self_attn.k_proj.weight"] = {KVD, C};
        m[p + "self_attn.v_proj.weight"] = {KVD, C};
        m[p + "self_attn.o_proj.weight"] = {C, HD};
        if (c.attention_bias) {
            m[p + "self_attn.q_proj.bias"] = {HD};
            m[p + "self_attn.k_proj.bias"] = {KVD};
            m[p + "self_attn.v_proj.bias"] = {KVD};
        }
        if (c.attention_out_bias) m[p + "self_attn.o_proj.bias"] = {C};
        if (c.qk_norm) {
            m[p + "self_attn.q_norm.weight"] = {D};
            m[p + "self_attn.k_norm.weight"] = {D};
        }
        m[p + "mlp.gate_proj.weight"] = {I, C};
        m[p + "mlp.up_proj.weight"] = {I, C};
        m[p + "mlp.down_proj.weight"] = {C, I};
    }
    return m;
}

// Writes the tensors (value = running index, so views can be checked) as one file or as `shards` files.
void write_checkpoint(const std::string & dir, const std::map<std::string, std::vector<int64_t>> & shapes,
                      DType dtype = DType::F32, int shards = 1,
                      const std::map<std::string, DType> & dtype_override = {}) {
    std::vector<std::vector<uint8_t>> storage;
    std::vector<std::vector<SafetensorsWriteEntry>> per_shard(static_cast<size_t>(shards));
    json weight_map = json::object();
    int k = 0;
    for (const auto & [name, shape] : shapes) {
        const DType t = dtype_override.count(name) ? dtype_override.at(name) : dtype;
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        std::vector<float> f(static_cast<size_t>(n), static_cast<float>(k));
        storage.emplace_back(size_t(n) * dtype_size(t));
        if (t == DType::F32 || t == DType::F16 || t == DType::BF16)
            convert_from_f32(storage.back().data(), t, f.data(), size_t(n));   // other dtypes: zeros
        const int s = k % shards;
        per_shard[size_t(s)].push_back({name, t, shape, storage.back().data()});
        weight_map[name] = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards);
        ++k;
    }
    if (shards == 1) {
        write_safetensors(dir + "/model.safetensors", per_shard[0]);
        return;
    }
    for (int s = 0; s < shards; ++s)
        write_safetensors(dir + fmt::format("/model-{:05d}-of-{:05d}.safetensors", s + 1, shards),
                          per_shard[size_t(s)]);
    std::ofstream(dir + "/model.safetensors.index.json") << json{{"metadata", json::object()},
                                                                 {"weight_map", weight_map}}.dump(2);
}

std::string bind_error(const std::string & dir, const ModelConfig & c) {
    try {
        Checkpoint ck(dir);
        bind_weights(ck, c);
    } catch (const Error & e) {
        return e.message();
    }
    return "";
}


}  // namespace

TEST(Checkpoint, BindsEveryArchitecture) {
    for (const char * arch : {"llama", "mistral", "qwen2", "qwen3"}) {
        const std::string dir = make_temp_dir("ckpt");
        const ModelConfig c = ModelConfig::from_json(tiny_config(arch), "config.json");
        const auto shapes = tensor_shapes(c, "model.", true);
        write_checkpoint(dir, shapes, DType::BF16);
        Checkpoint ck(dir);
        EXPECT_EQ(ck.names().size(), shapes.size());
        const ModelWeights w = bind_weights(ck, c);
        ASSERT_EQ(w.layers.size(), 2u) << arch;
        EXPECT_EQ(w.embed.shape, (std::vector<int64_t>{10, 8}));
        EXPECT_EQ(w.embed.dtype, DType::BF16);
        EXPECT_NE(w.lm_head.data, w.embed.data);
        EXPECT_EQ(w.layers[1].q.shape, (std::vector<int64_t>{8, 8}));
        EXPECT_EQ(w.layers[1].k.shape, (std::vector<int64_t>{4, 8}));
        EXPECT_EQ(w.layers[1].o.shape, (std::vector<int64_t>{8, 8}));
        EXPECT_EQ(w.layers[0].down.shape, (std::vector<int64_t>{8, 12}));
        EXPECT_EQ(w.layers[0].q_bias.data != nullptr, c.attention_bias) << arch;
        EXPECT_EQ(w.layers[0].q_norm.data != nullptr, c.qk_norm) << arch;
        // Views point into the mapping: value = index of the tensor in name order.
        int idx = 0;
        for (const auto & [name, shape] : shapes) {
            if (name == "model.norm.weight") {
                EXPECT_EQ(bf16_to_f32(w.final_norm.ptr<uint16_t>()[0]), float(idx));
            }
            ++idx;
        }
    }
}

TEST(Checkpoint, TiedEmbeddingsAndBaseModelWithoutPrefix) {
    // gte-Qwen2 style: Qwen2Model save, no "model." prefix, no lm_head.
    const std::string dir = make_temp_dir("ckpt");
    json j = tiny_config("qwen2");
    const ModelConfig c = ModelConfig::from_json(j, "config.json");
    write_checkpoint(dir, tensor_shapes(c, "", false));
    ModelWeights w = bind_weights(Checkpoint(dir), c);
    EXPECT_EQ(w.lm_head.data, nullptr) << "base-model save has no LM head";
    EXPECT_NE(w.layers[1].v_bias.data, nullptr);

    // Tied: lm_head is the embedding, whether or not lm_head.weight is saved.
    j["tie_word_embeddings"] = true;
    const ModelConfig ct = ModelConfig::from_json(j, "config.json");
    const std::string dir2 = make_temp_dir("ckpt");
    write_checkpoint(dir2, tensor_shapes(ct, "model.", false));
    Checkpoint ck(dir2);
    w = bind_weights(ck, ct);
    EXPECT_EQ(w.lm_head.data, w.embed.data);
    EXPECT_EQ(w.lm_head.shape, w.embed.shape);
}

TEST(Checkpoint, ShardedIndexLoads) {
    const std::string dir = make_temp_dir("ckpt");
    const ModelConfig c = ModelConfig::from_json(tiny_config("llama"), "config.json");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F16, 3);
    Checkpoint ck(dir);
    EXPECT_TRUE(ck.has("model.layers.1.mlp.up_proj.weight"));
    EXPECT_FALSE(ck.has("model.layers.2.mlp.up_proj.weight"));
    EXPECT_EQ(bind_weights(ck, c).layers[1].up.dtype, DType::F16);
    try {
        ck.tensor("nope");
        FAIL();
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "'nope'");
    }
}

TEST(Checkpoint, MissingShardAndTensorNotInShard) {
    const ModelConfig c = ModelConfig::from_json(tiny_config("llama"), "config.json");
    std::string dir = make_temp_dir("ckpt");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F32, 2);
    std::filesystem::remove(dir + "/model-00002-of-00002.safetensors");
    std::string msg = bind_error(dir, c);
    EXPECT_HAS(msg, "model-00002-of-00002.safetensors");
    EXPECT_HAS(msg, "missing");

    // The index claims a tensor lives in shard 1 but it is not there.
    dir = make_temp_dir("ckpt");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F32, 2);
    json idx = json::parse(std::ifstream(dir + "/model.safetensors.index.json"));
    idx["weight_map"]["model.ghost.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(dir + "/model.safetensors.index.json") << idx.dump();
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "'model.ghost.weight'");
    EXPECT_HAS(msg, "model-00001-of-00002.safetensors");

    // A tensor in two shards.
    dir = make_temp_dir("ckpt");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F32, 2);
    float x[8] = {};
    idx = json::parse(std::ifstream(dir + "/model.safetensors.index.json"));
    std::string in_shard1;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it)
        if (it->get<std::string>() == "model-00001-of-00002.safetensors") in_shard1 = it.key();
    write_safetensors(dir + "/model-00002-of-00002.safetensors", {{in_shard1, DType::F32, {1}, x}});
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "'" + in_shard1 + "' is in two shards");

    // Index that is not JSON, shard path escaping the directory, and an empty directory.
    dir = make_temp_dir("ckpt");
    std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": ";
    EXPECT_HAS(bind_error(dir, c), "model.safetensors.index.json");
    std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": {"a": "../../etc/passwd"}})";
    EXPECT_HAS(bind_error(dir, c), "not a file inside the model directory");
    dir = make_temp_dir("ckpt");
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, dir);
    EXPECT_HAS(msg, "no model.safetensors");
}

TEST(Checkpoint, CheckpointDoesNotMatchConfig) {
    const ModelConfig c = ModelConfig::from_json(tiny_config("qwen3"), "config.json");
    auto shapes = tensor_shapes(c, "model.", true);

    // Missing tensor.
    std::string dir = make_temp_dir("ckpt");
    auto missing = shapes;
    missing.erase("model.layers.1.self_attn.k_norm.weight");
    write_checkpoint(dir, missing);
    std::string msg = bind_error(dir, c);
    EXPECT_HAS(msg, "'model.layers.1.self_attn.k_norm.weight' is missing");
    EXPECT_HAS(msg, dir);
    EXPECT_HAS(msg, "does not match config.json");

    // Wrong shape.
    dir = make_temp_dir("ckpt");
    auto wrong = shapes;
    wrong["model.layers.0.mlp.gate_proj.weight"] = {13, 8};
    write_checkpoint(dir, wrong);
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "'model.layers.0.mlp.gate_proj.weight'");
    EXPECT_HAS(msg, "(13, 8)");
    EXPECT_HAS(msg, "expects (12, 8)");

    // Unsupported dtype, and mixed dtypes.
    dir = make_temp_dir("ckpt");
    write_checkpoint(dir, shapes, DType::F64);
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "dtype F64");
    dir = make_temp_dir("ckpt");
    write_checkpoint(dir, shapes, DType::F32, 1, {{"model.layers.1.mlp.up_proj.weight", DType::BF16}});
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "'model.layers.1.mlp.up_proj.weight' has dtype BF16");
    EXPECT_HAS(msg, "one dtype");

    // A 1-byte tensor ahead of the weights leaves every weight misaligned.
    dir = make_temp_dir("ckpt");
    auto misaligned = shapes;
    misaligned["aaa.junk"] = {1};
    write_checkpoint(dir, misaligned, DType::F32, 1, {{"aaa.junk", DType::U8}});
    msg = bind_error(dir, c);
    EXPECT_HAS(msg, "not aligned");
    EXPECT_HAS(msg, "'model.");

    // A config with more layers than the checkpoint.
    json j = tiny_config("qwen3");
    j["num_hidden_layers"] = 3;
    dir = make_temp_dir("ckpt");
    write_checkpoint(dir, shapes);
    msg = bind_error(dir, ModelConfig::from_json(j, "config.json"));
    EXPECT_HAS(msg, "model.layers.2.");
}

TEST(Checkpoint, TruncatedShardNamesTheFile) {
    const ModelConfig c = ModelConfig::from_json(tiny_config("llama"), "config.json");
    const std::string dir = make_temp_dir("ckpt");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F32, 2);
    const std::string shard = dir + "/model-00001-of-00002.safetensors";
    std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 7);
    const std::string msg = bind_error(dir, c);
    EXPECT_HAS(msg, shard);
    EXPECT_HAS(msg, "truncated");
}

TEST(Checkpoint, SymlinkLoopOrDanglingLinkIsNamedNotNotFound) {
    namespace fs = std::filesystem;
    const std::string dir = make_temp_dir("ckpt_link");
    const std::string file = dir + "/model.safetensors";
    fs::create_symlink(file, file);   // a loop: stat says ELOOP
    std::string msg = bind_error(dir, ModelConfig::from_json(tiny_config("llama"), "config.json"));
    EXPECT_HAS(msg, file + " is a symlink loop (or too many levels of links): fix or remove the link");
    fs::remove(file);
    // a shard of an index that loops through two links
    std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": {"a": "s.safetensors"}})";
    fs::create_symlink(dir + "/t.safetensors", dir + "/s.safetensors");
    fs::create_symlink(dir + "/s.safetensors", dir + "/t.safetensors");
    msg = bind_error(dir, ModelConfig::from_json(tiny_config("llama"), "config.json"));
    EXPECT_HAS(msg, dir + "/s.safetensors is a symlink loop");
    fs::remove(dir + "/model.safetensors.index.json");
    // a dangling link (an interrupted Hugging Face cache download)
    fs::create_symlink(dir + "/blobs/0123abcd", file);
    msg = bind_error(dir, ModelConfig::from_json(tiny_config("llama"), "config.json"));
    EXPECT_HAS(msg, file + " is a symbolic link to " + dir + "/blobs/0123abcd, which does not exist");
    fs::remove_all(dir);
}

TEST(Checkpoint, IdentityFollowsTheFilesNotTheirTensorData) {
    namespace fs = std::filesystem;
    const ModelConfig c = ModelConfig::from_json(tiny_config("llama"), "config.json");
    const std::string a = make_temp_dir("ckpt_id"), b = make_temp_dir("ckpt_id");
    for (const std::string & d : {a, b}) {
        write_checkpoint(d, tensor_shapes(c, "model.", true));
        std::ofstream(d + "/config.json") << tiny_config("llama").dump();
    }
    const std::string id = Checkpoint(a).identity();
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(Checkpoint(a).identity(), id) << "stable for the same files";
    // same config and tensor layout, another file (another write time) -> another identity
    const auto written = fs::last_write_time(a + "/model.safetensors");
    fs::last_write_time(b + "/model.safetensors", written + std::chrono::seconds(5));
    EXPECT_NE(Checkpoint(b).identity(), id);
    // the same file touched, or config.json changed -> another identity
    const auto t = fs::last_write_time(a + "/model.safetensors");
    fs::last_write_time(a + "/model.safetensors", t + std::chrono::seconds(1));
    EXPECT_NE(Checkpoint(a).identity(), id);
    fs::last_write_time(a + "/model.safetensors", t);
    EXPECT_EQ(Checkpoint(a).identity(), id);
    std::ofstream(a + "/config.json") << tiny_config("mistral").dump();
    EXPECT_NE(Checkpoint(a).identity(), id);
    fs::remove_all(a);
    fs::remove_all(b);
}

TEST(Checkpoint, DeeplyNestedIndexNamesTheFile) {
    // model.safetensors.index.json with 200,000 nested arrays under "metadata": refused before it is parsed,
    // naming the index (before, the unused deep value went through unnoticed).
    const ModelConfig c = ModelConfig::from_json(tiny_config("llama"), "config.json");
    const std::string dir = make_temp_dir("ckpt_deep");
    write_checkpoint(dir, tensor_shapes(c, "model.", true), DType::F32, 2);
    const std::string index = dir + "/model.safetensors.index.json";
    std::string text = read_file(index);
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    text.replace(text.find("\"metadata\": {}"), 14, "\"metadata\": " + deep);
    std::ofstream(index, std::ios::trunc) << text;
    const std::string msg = bind_error(dir, c);
    EXPECT_HAS(msg, index);
    EXPECT_HAS(msg, "levels deep, more than the 64 allowed");
    std::filesystem::remove_all(dir);
}
