// Synthetic model directories: every arch writes a folder that ModelConfig/Checkpoint/bind_weights accept, the
// vocabulary comes from the tokenizer (max id + 1, added tokens included), BOS/EOS from tokenizer_config.json,
// weights are deterministic per seed, tokenizer.json.xz is decompressed, and bad options are rejected.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.h"
#include "runtime/base/error.h"
#include "runtime/model/synthetic_model.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {


// A tiny BPE tokenizer folder: ids 0..9 in the vocab, added tokens <s>=10, </s>=41 (a hole in between).
std::string make_tokenizer_dir() {
    const std::string dir = make_temp_dir("synth");
    json vocab = json::object();
    for (int i = 0; i < 10; ++i) vocab[std::string(1, char('a' + i))] = i;
    json tok = {{"version", "1.0"},
                {"added_tokens", {{{"id", 10}, {"content", "<s>"}, {"special", true}},
                                  {{"id", 41}, {"content", "</s>"}, {"special", true}}}},
                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
    std::ofstream(dir + "/tokenizer.json") << tok.dump();
    std::ofstream(dir + "/tokenizer_config.json") << json{{"bos_token", "<s>"},
                                                          {"eos_token", {{"content", "</s>"}}}}.dump();
    return dir;
}


SynthOptions tiny_options(const std::string & arch, const std::string & tok, const std::string & out) {
    SynthOptions o;
    o.arch = arch;
    o.layers = 2;
    o.hidden = 16;
    o.heads = 4;
    o.kv_heads = 2;
    o.intermediate = 24;
    o.tokenizer_dir = tok;
    o.out_dir = out;
    o.seed = 7;
    return o;
}


}  // namespace

TEST(Synth, EveryArchLoadsAndBinds) {
    const std::string tok = make_tokenizer_dir();
    for (const char * arch : {"llama", "mistral", "qwen2", "qwen3"}) {
        for (const char * dt : {"fp32", "bf16", "fp16"}) {
            const std::string out = make_temp_dir("synth") + "/model";
            SynthOptions o = tiny_options(arch, tok, out);
            o.dtype = dt;
            synthesize_model(o);
            const ModelConfig c = ModelConfig::load(out);
            EXPECT_EQ(c.model_type, arch);
            EXPECT_EQ(c.vocab_size, 42) << "max id 41 + 1";
            EXPECT_EQ(c.bos_token_id, 10);
            EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{41});
            EXPECT_EQ(c.sliding_window, 0);
            EXPECT_EQ(c.max_context(), 2048);
            Checkpoint ck(out);
            const ModelWeights w = bind_weights(ck, c);
            EXPECT_EQ(w.layers.size(), 2u);
            EXPECT_EQ(w.embed.dtype, std::string(dt) == "fp32" ? DType::F32 : std::string(dt) == "bf16" ? DType::BF16
                                                                                                          : DType::F16);
            EXPECT_EQ(w.lm_head.data == w.embed.data, std::string(arch) == "qwen2") << "qwen2 ties embeddings";
            EXPECT_EQ(ck.has("lm_head.weight"), std::string(arch) != "qwen2");
            EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
            EXPECT_TRUE(fs::exists(out + "/tokenizer_config.json"));
            const json gen = json::parse(read_file(out + "/generation_config.json"));
            EXPECT_EQ(gen["eos_token_id"], 41);
            // Norm weights are near 1, projections near 0 with std ~0.02.
            std::vector<float> norm(16), q(16 * 16);
            convert_to_f32(norm.data(), w.final_norm.data, w.final_norm.dtype, norm.size());
            convert_to_f32(q.data(), w.layers[0].q.data, w.layers[0].q.dtype, q.size());
            double sq = 0;
            for (float x : q) sq += double(x) * x;
            for (float x : norm) EXPECT_NEAR(x, 1.0f, 0.15f);
            EXPECT_NEAR(std::sqrt(sq / double(q.size())), 0.02, 0.006);
        }
    }
}

TEST(Synth, DeterministicPerSeed) {
    const std::string tok = make_tokenizer_dir();
    const std::string a = make_temp_dir("synth"), b = make_temp_dir("synth"), c = make_temp_dir("synth");
    synthesize_model(tiny_options("qwen3", tok, a));
    synthesize_model(tiny_options("qwen3", tok, b));
    SynthOptions o = tiny_options("qwen3", tok, c);
    o.seed = 8;
    synthesize_model(o);
    EXPECT_EQ(read_file(a + "/model.safetensors"), read_file(b + "/model.safetensors"));
    EXPECT_NE(read_file(a + "/model.safetensors"), read_file(c + "/model.safetensors"));
    EXPECT_EQ(read_file(a + "/config.json"), read_file(b + "/config.json"));
}

TEST(Synth, DecompressesTokenizerXz) {
    if (std::system("command -v xz > /dev/null 2>&1") != 0) GTEST_SKIP() << "xz not installed";
    const std::string tok = make_tokenizer_dir();
    ASSERT_EQ(std::system(("xz -z '" + tok + "/tokenizer.json'").c_str()), 0);
    ASSERT_FALSE(fs::exists(tok + "/tokenizer.json"));
    const std::string out = make_temp_dir("synth");
    synthesize_model(tiny_options("llama", tok, out));
    EXPECT_EQ(tokenizer_json_vocab_size(out + "/tokenizer.json"), 42);
}

TEST(Synth, BadOptionsRejected) {
    const std::string tok = make_tokenizer_dir();
    const std::string out = make_temp_dir("synth");
    auto err = [&](SynthOptions o) -> std::string {
        try {
            synthesize_model(o);
        } catch (const Error & e) {
            return e.message();
        }
        return "";
    };
    SynthOptions o = tiny_options("gpt2", tok, out);
    EXPECT_HAS(err(o), "--arch \"gpt2\"");
    o = tiny_options("llama", tok, out);
    o.kv_heads = 3;
    EXPECT_HAS(err(o), "--kv-heads");
    o = tiny_options("llama", tok, out);
    o.hidden = 18;
    EXPECT_HAS(err(o), "--hidden");
    o = tiny_options("llama", tok, out);
    o.dtype = "int4";
    EXPECT_HAS(err(o), "--dtype");
    o = tiny_options("llama", out + "/nowhere", out);
    EXPECT_HAS(err(o), "tokenizer.json");
}

TEST(Synth, DeeplyNestedTokenizerFilesNamed) {
    // A --tokenizer folder comes from outside: its tokenizer.json / tokenizer_config.json nested 200,000 levels
    // deep are refused before they are parsed, naming the file.
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    const std::string tok = make_tokenizer_dir();
    const std::string out = make_temp_dir("synth");
    std::ofstream(tok + "/tokenizer_config.json", std::ios::trunc) << R"({"bos_token": )" << deep << "}";
    try {
        synthesize_model(tiny_options("llama", tok, out));
        ADD_FAILURE() << "a tokenizer_config.json nested 200,000 levels deep was accepted";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), tok + "/tokenizer_config.json");
        EXPECT_HAS(e.message(), "levels deep, more than the 64 allowed");
    }
    std::ofstream(tok + "/tokenizer.json", std::ios::trunc) << R"({"model": )" << deep << "}";
    try {
        tokenizer_json_vocab_size(tok + "/tokenizer.json");
        ADD_FAILURE() << "a tokenizer.json nested 200,000 levels deep was accepted";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), tok + "/tokenizer.json");
        EXPECT_HAS(e.message(), "levels deep, more than the 64 allowed");
    }
    fs::remove_all(tok);
    fs::remove_all(out);
}
