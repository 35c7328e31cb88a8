// GGUF models (issue 14): tiny llama / qwen2 / qwen3 GGUF files (tests/data/gguf_models, made by
// examples/make_gguf_model_fixtures.py as convert_hf_to_gguf writes them) read through ModelConfig::load +
// Checkpoint + bind_weights: the config equals the HF config.json the file was made from, llama's q/k rows come
// back in HF's order (whole rows, quantized ones too), tied / mixed-dtype files bind, and Forward on the CPU backend
// matches transformers loading the same GGUF (logits of every prompt position within 1e-4 of the largest |logit|,
// greedy tokens equal). Broken files (unsupported architecture, a missing tensor, a wrong shape, an unknown tensor
// type) are errors naming what is wrong. A job runs a GGUF model with its own tokenizer or "ztinfer.tokenizer", on
// 1 and 2 ranks, streaming from host memory and NVMe.
#include <gtest/gtest.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/job/job.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_names.h"
#include "runtime/model/model_config.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "tests/job_runner.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string data_dir() { return std::string(ZT_TEST_DATA) + "/gguf_models"; }
std::string gguf_path(const std::string & name) { return data_dir() + "/" + name + ".gguf"; }

json read_json(const std::string & path) {
    std::ifstream f(path);
    EXPECT_TRUE(f.good()) << "missing " << path << ": run examples/make_gguf_model_fixtures.py";
    return json::parse(f);
}

std::string read_bytes(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// A copy of a fixture under the test's temp folder, with `edit` applied to its bytes.
class GgufModelFiles : public ::testing::Test {
protected:
    fs::path dir_;
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("zt_gguf_model_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    template <typename Edit>
    std::string edited(const std::string & name, Edit edit) {
        std::string b = read_bytes(gguf_path(name));
        edit(b);
        const std::string p = (dir_ / (name + ".edited.gguf")).string();
        std::ofstream(p, std::ios::binary) << b;
        return p;
    }
};

// Offset of the bytes after the string `s` (u64 length + bytes) in a GGUF header.
size_t after_string(const std::string & bytes, const std::string & s) {
    std::string pat(8, '\0');
    const uint64_t n = s.size();
    std::memcpy(pat.data(), &n, 8);
    pat += s;
    const size_t at = bytes.find(pat);
    EXPECT_NE(at, std::string::npos) << s;
    return at + pat.size();
}

TEST(GgufModel, ConfigFromMetadataEqualsTheHfConfig) {
    for (const std::string arch : {"llama", "qwen2", "qwen3"}) {
        const ModelConfig want = ModelConfig::from_json(read_json(data_dir() + "/" + arch + ".config.json"), arch);
        for (const std::string type : {"f32", "f16", "q8_0", "q4_0", "q4_1"}) {
            const ModelConfig got = ModelConfig::load(gguf_path(arch + "-" + type));
            SCOPED_TRACE(arch + "-" + type);
            EXPECT_EQ(got.arch, want.arch);
            EXPECT_EQ(got.vocab_size, want.vocab_size);
            EXPECT_EQ(got.hidden_size, want.hidden_size);
            EXPECT_EQ(got.intermediate_size, want.intermediate_size);
            EXPECT_EQ(got.num_hidden_layers, want.num_hidden_layers);
            EXPECT_EQ(got.num_attention_heads, want.num_attention_heads);
            EXPECT_EQ(got.num_key_value_heads, want.num_key_value_heads);
            EXPECT_EQ(got.head_dim, want.head_dim);
            EXPECT_EQ(got.max_position_embeddings, want.max_position_embeddings);
            EXPECT_EQ(got.rope_theta, want.rope_theta);
            EXPECT_EQ(float(got.rms_norm_eps), float(want.rms_norm_eps));   // GGUF stores it as f32
            EXPECT_EQ(got.rope_scaling.type, RopeScaling::Type::none);
            EXPECT_EQ(got.tie_word_embeddings, want.tie_word_embeddings);
            EXPECT_EQ(got.attention_bias, want.attention_bias);
            EXPECT_EQ(got.attention_out_bias, want.attention_out_bias);
            EXPECT_EQ(got.qk_norm, want.qk_norm);
            EXPECT_EQ(got.sliding_window, 0);
            EXPECT_EQ(got.eos_token_ids, want.eos_token_ids);
            EXPECT_EQ(got.bos_token_id, want.bos_token_id);
        }
    }
}

// Metadata alone (no file): rope scaling, sliding window, per-arch rules and the errors.
GgufFile meta_only(const std::string & arch, json extra = json::object()) {
    GgufFile f;
    f.path = "mem.gguf";
    f.metadata = {{"general.architecture", arch}, {arch + ".block_count", 2}, {arch + ".embedding_length", 64},
                  {arch + ".feed_forward_length", 128}, {arch + ".attention.head_count", 4},
                  {arch + ".context_length", 4096}, {arch + ".vocab_size", 100}};
    for (auto & [k, v] : extra.items()) f.metadata[k] = v;
    GgufTensorInfo out;
    out.name = "output.weight";
    out.shape = {100, 64};
    f.tensors.push_back(out);
    return f;
}

TEST(GgufModel, ConfigFromMetadataKeys) {
    ModelConfig c = ModelConfig::from_gguf(meta_only("llama"), "mem.gguf");
    EXPECT_EQ(c.num_key_value_heads, 4) << "no head_count_kv: one KV head per head, as llama.cpp";
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);

    c = ModelConfig::from_gguf(meta_only("qwen2", {{"qwen2.rope.scaling.type", "yarn"}, {"qwen2.rope.scaling.factor", 4.0},
                                                   {"qwen2.rope.scaling.original_context_length", 1024}}), "m");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::yarn);
    EXPECT_EQ(c.rope_scaling.factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 1024);
    EXPECT_TRUE(c.attention_bias) << "qwen2 always has q/k/v biases";
    EXPECT_EQ(c.max_context(), 4096);

    c = ModelConfig::from_gguf(meta_only("llama", {{"llama.rope.scaling.type", "linear"}, {"llama.rope.scaling.factor", 2.0}}), "m");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::linear);
    EXPECT_EQ(c.rope_scaling.factor, 2.0);

    c = ModelConfig::from_gguf(meta_only("mistral", {{"mistral.attention.sliding_window", 512}}), "m");
    EXPECT_EQ(c.sliding_window, 512);
    EXPECT_EQ(c.window_of(1), 512);
    c = ModelConfig::from_gguf(meta_only("qwen3", {{"qwen3.attention.sliding_window", 512},
                                                   {"qwen3.attention.key_length", 32}}), "m");
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(c.head_dim, 32);
    EXPECT_TRUE(c.qk_norm);

    GgufFile tied = meta_only("llama", {{"tokenizer.ggml.eos_token_id", 7}, {"tokenizer.ggml.eot_token_id", 9},
                                        {"tokenizer.ggml.bos_token_id", 1}});
    tied.tensors.clear();
    tied.metadata.erase("llama.vocab_size");
    tied.metadata["tokenizer.ggml.tokens"] = json::array({"a", "b", "c"});
    c = ModelConfig::from_gguf(tied, "m");
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.vocab_size, 3);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{7, 9}));
    EXPECT_EQ(c.bos_token_id, 1);
}

void expect_error(const GgufFile & f, const std::string & needle) {
    try {
        ModelConfig::from_gguf(f, f.path);
        ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error & e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST(GgufModel, ConfigErrorsNameTheKey) {
    expect_error(meta_only("gemma3"), "general.architecture \"gemma3\" is not supported");
    GgufFile f = meta_only("llama");
    f.metadata.erase("llama.feed_forward_length");
    expect_error(f, "llama.feed_forward_length");
    expect_error(meta_only("llama", {{"llama.rope.scaling.type", "longrope"}}), "rope scaling type \"longrope\"");
    expect_error(meta_only("llama", {{"llama.rope.dimension_count", 8}}), "partial_rotary_factor");
    f = meta_only("llama");
    f.tensors.push_back(GgufTensorInfo{"rope_freqs.weight", {8}, 0, "F32", 0, 32});
    expect_error(f, "rope_freqs.weight");
}

TEST(GgufModel, LlamaQkRowsAreUnpermutedWholeRows) {
    for (const std::string type : {"f32", "q8_0", "q4_1"}) {
        SCOPED_TRACE(type);
        const std::string path = gguf_path("llama-" + type);
        const GgufFile f = read_gguf_header(path);
        const std::string bytes = read_bytes(path);
        const Checkpoint ck(path);
        ASSERT_NE(ck.gguf(), nullptr);
        const ModelConfig cfg = ModelConfig::load(path);
        for (const std::string which : {"q", "k", "v"}) {
            const std::string hf = "model.layers.1.self_attn." + which + "_proj.weight";
            const Tensor t = ck.tensor(hf);
            const auto info = std::find_if(f.tensors.begin(), f.tensors.end(), [&](const GgufTensorInfo & i) {
                return i.name == *gguf_name_from_hf(hf);
            });
            ASSERT_NE(info, f.tensors.end());
            EXPECT_EQ(t.shape, info->shape);
            EXPECT_EQ(dtype_name(t.dtype), info->type_name);
            const size_t row = size_t(dtype_row_bytes(t.dtype, t.dim(1)));
            for (int64_t r = 0; r < t.dim(0); ++r) {
                const int64_t src = which == "v" ? r : gguf_qk_row_of_hf_row(r, cfg.head_dim);
                ASSERT_EQ(std::memcmp(static_cast<const char *>(t.data) + size_t(r) * row,
                                      bytes.data() + info->offset + size_t(src) * row, row), 0)
                    << hf << " row " << r;
            }
        }
    }
}

TEST(GgufModel, WeightsBindWithMixedDtypesAndTiedEmbeddings) {
    const std::string path = gguf_path("qwen2-q4_1");
    const ModelConfig cfg = ModelConfig::load(path);
    const Checkpoint ck(path);
    const ModelWeights w = bind_weights(ck, cfg);
    EXPECT_EQ(w.embed.dtype, DType::Q8_0);
    EXPECT_EQ(w.lm_head.data, w.embed.data) << "no output.weight: lm_head is token_embd";
    EXPECT_EQ(w.layers[0].q.dtype, DType::Q4_1);
    EXPECT_EQ(w.layers[0].down.dtype, DType::Q4_1);
    EXPECT_EQ(w.layers[0].q_bias.dtype, DType::F32);
    EXPECT_EQ(w.final_norm.dtype, DType::F32);
    EXPECT_EQ(w.layers[1].down.shape, (std::vector<int64_t>{cfg.hidden_size, cfg.intermediate_size}));
    EXPECT_EQ(w.layers[1].down.bytes(), size_t(cfg.hidden_size * (cfg.intermediate_size / 32) * 20));

    const std::string lpath = gguf_path("llama-q8_0");
    const ModelWeights lw = bind_weights(Checkpoint(lpath), ModelConfig::load(lpath));
    EXPECT_NE(lw.lm_head.data, lw.embed.data);
    EXPECT_EQ(lw.lm_head.dtype, DType::Q8_0);
}

// The layer partition packs quantized tensors by their row bytes (Tensor::bytes), and the slices of 2 ranks put
// back together hold each tensor's bytes from the file unchanged.
TEST(GgufModel, QuantizedTensorsPartitionByRowBytes) {
    const std::string path = gguf_path("qwen3-q4_1");
    const ModelConfig cfg = ModelConfig::load(path);
    const Checkpoint ck(path);
    const ModelWeights w = bind_weights(ck, cfg);
    PartitionOptions po;
    po.world = 2;
    po.persistence_threshold = 100;
    po.partition_embeddings = true;
    const PartitionPlan plan = plan_partition(cfg, w, po);
    size_t quantized = 0;
    for (const PartitionUnit & u : plan.units) {
        ASSERT_TRUE(u.streamed) << u.name;
        std::vector<uint8_t> flat(u.flat_bytes);
        for (int r = 0; r < 2; ++r) copy_slice(u, r, flat.data() + size_t(r) * u.slice_bytes);
        for (const PackedTensor & t : u.tensors) {
            if (t.persistent) continue;
            ASSERT_LE(t.offset + t.source.bytes(), u.packed_bytes) << t.name;
            EXPECT_EQ(std::memcmp(flat.data() + t.offset, t.source.data, t.source.bytes()), 0) << t.name;
            if (dtype_is_quantized(t.source.dtype)) ++quantized;
        }
    }
    EXPECT_EQ(quantized, size_t(2 + 7 * cfg.num_hidden_layers)) << "embed, lm_head and 7 matrices per layer";
    EXPECT_EQ(w.layers[0].gate.bytes(), size_t(cfg.intermediate_size * (cfg.hidden_size / 32) * 20));
}

TEST_F(GgufModelFiles, IdentityFollowsTheFile) {
    const std::string a = (dir_ / "a.gguf").string();
    fs::copy_file(gguf_path("qwen3-q8_0"), a);
    const std::string id = Checkpoint(a).identity();
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(Checkpoint(a).identity(), id);
    struct utimbuf times{1000000000, 1000000000};
    ASSERT_EQ(::utime(a.c_str(), &times), 0);
    EXPECT_NE(Checkpoint(a).identity(), id) << "touched";
    EXPECT_NE(Checkpoint(gguf_path("qwen3-q8_0")).identity(), Checkpoint(gguf_path("qwen3-q4_0")).identity());
}

void expect_load_error(const std::string & path, const std::string & needle) {
    try {
        const ModelConfig cfg = ModelConfig::load(path);
        bind_weights(Checkpoint(path), cfg);
        ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error & e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST_F(GgufModelFiles, BrokenFilesAreErrorsNamingTheTensor) {
    // a tensor renamed (same length): model.layers.1.mlp.down_proj.weight is missing
    expect_load_error(edited("llama-f32", [](std::string & b) {
                          const size_t at = after_string(b, "blk.1.ffn_down.weight");
                          b.replace(at - 6, 6, "wexght");
                      }),
                      "tensor 'model.layers.1.mlp.down_proj.weight' (GGUF blk.1.ffn_down.weight) is missing");
    // feed_forward_length 64 -> 32: every ffn tensor has the wrong shape for the metadata
    expect_load_error(edited("llama-f32", [](std::string & b) {
                          const size_t at = after_string(b, "llama.feed_forward_length");
                          uint32_t v = 32;
                          std::memcpy(&b[at + 4], &v, 4);   // after the u32 value type
                      }),
                      "tensor 'model.layers.0.mlp.gate_proj.weight' (GGUF blk.0.ffn_gate.weight) has shape (64, 32) but the GGUF metadata");
    // attn_v's type number -> 16 (IQ2_XXS): read_gguf_header names the type
    expect_load_error(edited("llama-f32", [](std::string & b) {
                          const size_t at = after_string(b, "blk.0.attn_v.weight");
                          uint32_t t = 16;
                          std::memcpy(&b[at + 4 + 2 * 8], &t, 4);   // after n_dims and ne[2]
                      }),
                      "blk.0.attn_v.weight is IQ2_XXS");
    // general.architecture "llama" -> "gemma" (same length as "llama"? no: "bloom")
    expect_load_error(edited("llama-f32", [](std::string & b) {
                          const size_t at = after_string(b, "general.architecture");
                          b.replace(at + 4 + 8, 5, "bloom");
                      }),
                      "general.architecture \"bloom\" is not supported");
}

// Parity with transformers loading the same GGUF file.
class GgufParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufParity, LogitsAndGreedyTokens) {
    const std::string name = GetParam(), path = gguf_path(name);
    const json ref = read_json(data_dir() + "/" + name + ".json");
    const auto prompts = ref.at("prompts").get<std::vector<std::vector<int32_t>>>();
    const auto greedy = ref.at("greedy").get<std::vector<std::vector<int32_t>>>();
    const std::string lb = read_bytes(data_dir() + "/" + name + ".logits.bin");
    std::vector<float> want(lb.size() / sizeof(float));
    std::memcpy(want.data(), lb.data(), lb.size());

    const ModelConfig cfg = ModelConfig::load(path);
    const Checkpoint ckpt(path);
    const ModelWeights w = bind_weights(ckpt, cfg);
    ASSERT_EQ(cfg.vocab_size, ref.at("vocab_size").get<int64_t>());
    auto backend = make_cpu_backend(2);
    Forward fwd(cfg, w, *backend);
    const int32_t n = int32_t(prompts.size());
    fwd.reserve(n, 32);
    const int64_t V = cfg.vocab_size;

    std::vector<SequenceStep> batch;
    for (int32_t i = 0; i < n; ++i) batch.push_back({i, 0, prompts[size_t(i)].data(), int32_t(prompts[size_t(i)].size())});
    std::vector<float> logits;
    fwd.step(batch, logits, /*all_positions=*/true);
    ASSERT_EQ(logits.size(), want.size());
    double worst = 0;
    for (size_t row = 0; row * size_t(V) < want.size(); ++row) {
        double max_abs = 0, max_err = 0;
        for (int64_t v = 0; v < V; ++v) {
            max_abs = std::max(max_abs, std::fabs(double(want[row * size_t(V) + size_t(v)])));
            max_err = std::max(max_err, std::fabs(double(logits[row * size_t(V) + size_t(v)]) - want[row * size_t(V) + size_t(v)]));
        }
        worst = std::max(worst, max_err / max_abs);
        EXPECT_LT(max_err / max_abs, 1e-4) << name << " row " << row;
    }
    std::printf("[ GgufParity ] %-10s max |logit - HF| / max |HF logit| = %.2e\n", name.c_str(), worst);

    std::vector<std::vector<int32_t>> gen(static_cast<size_t>(n));
    std::vector<int32_t> next(static_cast<size_t>(n));
    size_t row = 0;
    for (int32_t i = 0; i < n; ++i) {
        row += prompts[size_t(i)].size();
        next[size_t(i)] = int32_t(std::max_element(&logits[(row - 1) * size_t(V)], &logits[row * size_t(V)]) -
                                  &logits[(row - 1) * size_t(V)]);
    }
    for (size_t step = 0; step < greedy[0].size(); ++step) {
        batch.clear();
        for (int32_t i = 0; i < n; ++i) {
            gen[size_t(i)].push_back(next[size_t(i)]);
            batch.push_back({i, int32_t(prompts[size_t(i)].size() + step), &gen[size_t(i)].back(), 1});
        }
        if (step + 1 == greedy[0].size()) break;
        fwd.step(batch, logits);
        for (int32_t i = 0; i < n; ++i)
            next[size_t(i)] = int32_t(std::max_element(&logits[size_t(i) * size_t(V)], &logits[size_t(i + 1) * size_t(V)]) -
                                      &logits[size_t(i) * size_t(V)]);
    }
    for (int32_t i = 0; i < n; ++i) EXPECT_EQ(gen[size_t(i)], greedy[size_t(i)]) << name << " prompt " << i;
}

INSTANTIATE_TEST_SUITE_P(, GgufParity,
                         ::testing::Values("llama-f32", "qwen2-f32", "qwen3-f32", "llama-f16", "qwen2-f16", "qwen3-f16",
                                           "llama-q8_0", "qwen2-q8_0", "qwen3-q8_0", "llama-q4_0", "qwen2-q4_0",
                                           "qwen3-q4_0", "llama-q4_1", "qwen2-q4_1", "qwen3-q4_1"),
                         [](const ::testing::TestParamInfo<std::string> & p) {
                             std::string s = p.param;
                             std::replace(s.begin(), s.end(), '-', '_');
                             return s;
                         });

// A job on a GGUF model, with the file's own tokenizer (Tokenizer::from_gguf) and with "ztinfer.tokenizer":
// token-id prompts give HF's greedy tokens (up to the first eos, where the job stops), and a text prompt is
// tokenized as HF tokenizers does (the same count either way, the same generated ids).
TEST_F(GgufModelFiles, JobRunsAGgufModelWithItsOwnOrAFolderTokenizer) {
    const json ref = read_json(data_dir() + "/llama-f32.json");
    const auto prompts = ref.at("prompts").get<std::vector<std::vector<int32_t>>>();
    const auto greedy = ref.at("greedy").get<std::vector<std::vector<int32_t>>>();
    const fs::path in = dir_ / "in.jsonl";
    {
        std::ofstream f(in);
        for (size_t i = 0; i < prompts.size(); ++i)
            f << json{{"custom_id", "p" + std::to_string(i)}, {"prompt_token_ids", prompts[i]}}.dump() << "\n";
        f << R"({"custom_id": "text", "prompt": "The capital of France is"})" << "\n";
    }
    std::vector<json> text_results;
    for (const bool folder : {false, true}) {
        const fs::path out = dir_ / (folder ? "out-folder.jsonl" : "out-own.jsonl");
        json z = {{"model", gguf_path("llama-f32")}, {"input", in.string()}, {"output", out.string()},
                  {"device", "cpu"}, {"batch_size", 4}, {"max_new_tokens", 8}, {"threads", 2}, {"resume", false}};
        if (folder) z["tokenizer"] = data_dir() + "/tokenizer";
        run_job(JobConfig::from_json(json{{"ztinfer", z}}, (dir_ / "ds.json").string()));
        std::map<std::string, json> recs;
        std::ifstream f(out);
        for (std::string line; std::getline(f, line);) {
            const json r = json::parse(line);
            recs[r.at("custom_id").get<std::string>()] = r;
        }
        ASSERT_EQ(recs.size(), 3u);
        for (size_t i = 0; i < prompts.size(); ++i) {
            const json & r = recs["p" + std::to_string(i)];
            ASSERT_FALSE(r.contains("error")) << r.dump();
            std::vector<int32_t> want = greedy[i];
            const auto eos = std::find(want.begin(), want.end(), 2);   // <|im_end|>: the job stops there
            if (eos != want.end()) want.erase(eos + 1, want.end());
            EXPECT_EQ(r.at("token_ids").get<std::vector<int32_t>>(), want) << "prompt " << i << " folder " << folder;
        }
        const json & t = recs["text"];
        ASSERT_FALSE(t.contains("error")) << t.dump();
        // tokenizers' encoding of the text with tests/data/gguf_models/tokenizer (examples/make_gguf_model_fixtures.py)
        EXPECT_EQ(t.at("usage").at("prompt_tokens").get<int>(), 17) << "folder " << folder;
        EXPECT_TRUE(t.at("text").is_string());
        text_results.push_back(t);
    }
    EXPECT_EQ(text_results[0].at("token_ids"), text_results[1].at("token_ids"));
    EXPECT_EQ(text_results[0].at("text"), text_results[1].at("text"));
}

// The ztinfer binary on 2 CPU ranks, weights streamed from host memory and from NVMe files (the NVMe header names
// the GGUF file's identity), quantized files with mixed dtypes: the same greedy tokens as transformers.
TEST_F(GgufModelFiles, TwoRanksCpuAndNvmeTiersGiveHfTokens) {
    REQUIRE_JOB_MPI();
    for (const std::string model : {"qwen2-q4_1", "llama-q8_0"}) {
        const json ref = read_json(data_dir() + "/" + model + ".json");
        const auto prompts = ref.at("prompts").get<std::vector<std::vector<int32_t>>>();
        const auto greedy = ref.at("greedy").get<std::vector<std::vector<int32_t>>>();
        const std::string dir = dir_.string(), in = dir + "/in.jsonl";
        {
            std::ofstream f(in);
            for (size_t i = 0; i < prompts.size(); ++i)
                f << json{{"custom_id", "p" + std::to_string(i)}, {"prompt_token_ids", prompts[i]}}.dump() << "\n";
        }
        for (const std::string tier : {"cpu", "nvme"}) {
            fs::create_directories(dir + "/nvme");
            const std::string name = model + "-" + tier;
            const std::string cfg = test::write_job_config(dir, name, gguf_path(model), in, json::object(), tier);
            if (tier == "nvme") {   // write_job_config's ds.json, with the NVMe folder
                json ds = read_json(cfg);
                ds["zero_optimization"]["offload_param"]["nvme_path"] = dir + "/nvme";
                std::ofstream(cfg) << ds.dump(2);
            }
            const test::JobRunResult r = test::run_job_command(test::job_command(2, cfg));
            ASSERT_EQ(r.status, 0) << r.log;
            auto recs = test::read_job_records(dir + "/" + name + ".jsonl");
            ASSERT_EQ(recs.size(), prompts.size()) << r.log;
            for (size_t i = 0; i < prompts.size(); ++i) {
                std::vector<int32_t> want = greedy[i];
                const auto eos = std::find(want.begin(), want.end(), 2);
                if (eos != want.end()) want.erase(eos + 1, want.end());
                EXPECT_EQ(recs["p" + std::to_string(i)].at("token_ids").get<std::vector<int32_t>>(), want)
                    << name << " prompt " << i;
            }
        }
    }
}

}  // namespace
}  // namespace zt
