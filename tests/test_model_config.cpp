// ModelConfig: HF config.json parsing for llama, mistral, qwen2, qwen3 with transformers' defaults (sliding
// windows per layer, yarn and dynamic RoPE scaling), and the configs that must be rejected (unknown architecture,
// unknown rope type, bad sizes, bad windows and scaling factors) with messages naming the file.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/model/model_config.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
using json = nlohmann::json;

namespace {

json base_config(const std::string & model_type) {
    return json{{"model_type", model_type}, {"vocab_size", 1000}, {"hidden_size", 64}, {"intermediate_size", 128},
                {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0}};
}

std::string config_error(const json & j) {
    try {
        ModelConfig::from_json(j, "/models/x/config.json");
    } catch (const Error & e) {
        return e.message();
    }
    return "";
}


}  // namespace

TEST(ModelConfig, LlamaWithLlama3RopeScaling) {
    json j = base_config("llama");
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    j["eos_token_id"] = {128001, 128008, 128009};
    j["bos_token_id"] = 128000;
    j["torch_dtype"] = "bfloat16";
    j["tie_word_embeddings"] = false;
    const ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.arch, Arch::llama);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.num_key_value_heads, 2);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::llama3);
    EXPECT_EQ(c.rope_scaling.factor, 8.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
    EXPECT_EQ(c.bos_token_id, 128000);
    EXPECT_EQ(c.torch_dtype, DType::BF16);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.qk_norm);
    EXPECT_TRUE(c.is_causal);
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(c.max_context(), 2048);
}

TEST(ModelConfig, TransformersV5RopeParameters) {
    json j = base_config("llama");
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 123.0}, {"factor", 32.0},
                            {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}};
    ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_theta, 123.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::llama3);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 2048);   // defaults to max_position_embeddings
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 77.0}};
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::none);
    EXPECT_EQ(c.rope_theta, 77.0);
    j["rope_parameters"] = {{"type", "linear"}, {"factor", 2.0}};
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::linear);
    EXPECT_EQ(c.rope_scaling.factor, 2.0);
}

TEST(ModelConfig, Qwen2BiasTiedAndSlidingWindowRules) {
    json j = base_config("qwen2");
    j["num_hidden_layers"] = 3;
    j["tie_word_embeddings"] = true;
    j["sliding_window"] = 4096;
    j["use_sliding_window"] = false;
    ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_TRUE(c.attention_bias);
    EXPECT_FALSE(c.attention_out_bias);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.sliding_window, 0) << "use_sliding_window false: no window";
    EXPECT_EQ(c.layer_window, (std::vector<int64_t>{0, 0, 0}));
    j["use_sliding_window"] = true;
    j["max_window_layers"] = 28;   // 3 layers, all below max_window_layers: full attention everywhere
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").sliding_window, 0);
    j["max_window_layers"] = 1;    // layers 1 and 2 slide (Qwen2Config: i >= max_window_layers)
    j["sliding_window"] = 1024;
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.sliding_window, 1024);
    EXPECT_EQ(c.layer_window, (std::vector<int64_t>{0, 1024, 1024}));
    EXPECT_EQ(c.window_of(0), 0);
    EXPECT_EQ(c.window_of(2), 1024);
    EXPECT_EQ(c.max_context(), 2048) << "the window is implemented: it no longer limits the context";
    EXPECT_EQ(c.max_context_reason(), "max_position_embeddings=2048");
    j.erase("sliding_window");     // Qwen2Config's default window
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").layer_window, (std::vector<int64_t>{0, 4096, 4096}));
    j["sliding_window"] = 1024;
    j.erase("max_window_layers");
    j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};   // explicit types win
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").layer_window, (std::vector<int64_t>{1024, 0, 1024}));
}

TEST(ModelConfig, SlidingWindowBadValuesRejected) {
    json j = base_config("qwen2");
    j["use_sliding_window"] = true;
    j["max_window_layers"] = 0;
    for (int64_t w : {0, -8}) {
        j["sliding_window"] = w;
        EXPECT_HAS(config_error(j), "\"sliding_window\" must be > 0 or null");
        json m = base_config("mistral");
        m["sliding_window"] = w;
        EXPECT_HAS(config_error(m), "\"sliding_window\" must be > 0 or null");
    }
    j["sliding_window"] = "8";
    EXPECT_HAS(config_error(j), "\"sliding_window\" must be an integer");
    j["sliding_window"] = 8;
    j["max_window_layers"] = -1;
    EXPECT_HAS(config_error(j), "max_window_layers");
    j.erase("max_window_layers");
    j["layer_types"] = {"sliding_attention"};   // 2 layers
    EXPECT_HAS(config_error(j), "num_hidden_layers = 2");
    j["layer_types"] = {"sliding_attention", "chunked_attention"};
    EXPECT_HAS(config_error(j), "layer_types[1] = \"chunked_attention\" is not supported");
    j["sliding_window"] = int64_t(1) << 40;   // wider than any position: kept as the int32 maximum
    j["layer_types"] = {"sliding_attention", "full_attention"};
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").window_of(0), INT32_MAX);
}

TEST(ModelConfig, MistralSlidingWindowAndDefaults) {
    json j = base_config("mistral");
    j["sliding_window"] = nullptr;
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").sliding_window, 0);
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").layer_window, (std::vector<int64_t>{0, 0}));
    j["sliding_window"] = 512;
    ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.sliding_window, 512);
    EXPECT_EQ(c.layer_window, (std::vector<int64_t>{512, 512}));
    EXPECT_EQ(c.max_context(), 2048);
    j.erase("sliding_window");   // MistralConfig's default is 4096
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").sliding_window, 4096);
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").max_context(), 2048);
}

TEST(ModelConfig, YarnRopeScaling) {
    // Qwen2.5's model-card form: 4.x rope_scaling with "type"
    json j = base_config("qwen2");
    j["max_position_embeddings"] = 32768;
    j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
    ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::yarn);
    EXPECT_EQ(c.rope_scaling.factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
    EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);   // yarn_get_mscale(factor)
    EXPECT_EQ(c.rope_scaling.beta_fast, 32.0);
    EXPECT_EQ(c.rope_scaling.beta_slow, 1.0);
    EXPECT_TRUE(c.rope_scaling.truncate);
    EXPECT_EQ(c.max_context(), 4 * 32768) << "yarn: original_max_position_embeddings * factor (as vLLM)";
    EXPECT_HAS(c.max_context_reason(), "yarn");
    // Qwen3's 5.x form, no original_max_position_embeddings: max_position_embeddings; explicit knobs
    j = base_config("qwen3");
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 2.0}, {"attention_factor", 0.5},
                            {"beta_fast", 8}, {"beta_slow", 2}, {"truncate", false}};
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_theta, 1e6);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 2048);
    EXPECT_EQ(c.rope_scaling.attention_factor, 0.5);
    EXPECT_EQ(c.rope_scaling.beta_fast, 8.0);
    EXPECT_EQ(c.rope_scaling.beta_slow, 2.0);
    EXPECT_FALSE(c.rope_scaling.truncate);
    EXPECT_EQ(c.max_context(), 4096);
    // a top-level original_max_position_embeddings wins (transformers' standardize_rope_params); mscale pair
    j["original_max_position_embeddings"] = 1024;
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 512},
                            {"mscale", 0.707}, {"mscale_all_dim", 1.0}};
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 1024);
    EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor,
                     (0.1 * 0.707 * std::log(4.0) + 1.0) / (0.1 * 1.0 * std::log(4.0) + 1.0));
    // factor null: max_position_embeddings / original_max_position_embeddings
    j.erase("original_max_position_embeddings");
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", nullptr}, {"original_max_position_embeddings", 512}};
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").rope_scaling.factor, 4.0);
}

TEST(ModelConfig, DynamicRopeScaling) {
    json j = base_config("llama");
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    const ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::dynamic);
    EXPECT_EQ(c.rope_scaling.factor, 2.0);
    EXPECT_EQ(c.max_context(), 4096) << "dynamic: max_position_embeddings * factor (as vLLM)";
    j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};   // 4.x spelling
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").rope_scaling.type, RopeScaling::Type::dynamic);
}

TEST(ModelConfig, RopeScalingBadValuesRejected) {
    json j = base_config("llama");
    for (const char * type : {"yarn", "dynamic", "linear"}) {
        j["rope_scaling"] = {{"rope_type", type}};
        EXPECT_HAS(config_error(j), "needs \"factor\"");
        for (double f : {0.0, -2.0}) {
            j["rope_scaling"] = {{"rope_type", type}, {"factor", f}};
            EXPECT_HAS(config_error(j), "factor must be > 0");
        }
        j["rope_scaling"] = {{"rope_type", type}, {"factor", "4"}};
        EXPECT_HAS(config_error(j), "must be a number");
    }
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"attention_factor", 0.0}};
    EXPECT_HAS(config_error(j), "attention_factor must be > 0");
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 0}};
    EXPECT_HAS(config_error(j), "original_max_position_embeddings");
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", -1}};
    EXPECT_HAS(config_error(j), "beta_fast");
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", "yes"}};
    EXPECT_HAS(config_error(j), "truncate");
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    j["head_dim"] = 2;
    EXPECT_HAS(config_error(j), "head_dim > 2");
}

TEST(ModelConfig, Qwen3QkNormHeadDimAndCausality) {
    json j = base_config("qwen3");
    j["head_dim"] = 32;
    j["is_causal"] = false;
    ModelConfig c = ModelConfig::from_json(j, "config.json");
    EXPECT_TRUE(c.qk_norm);
    EXPECT_EQ(c.head_dim, 32);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.is_causal);
    j.erase("head_dim");
    EXPECT_EQ(ModelConfig::from_json(j, "config.json").head_dim, 128);   // Qwen3Config default
    j["attention_bias"] = true;
    c = ModelConfig::from_json(j, "config.json");
    EXPECT_TRUE(c.attention_bias);
    EXPECT_TRUE(c.attention_out_bias);
}

TEST(ModelConfig, KeyValueHeadDefaultsFollowTransformers) {
    json j = base_config("llama");
    j.erase("num_key_value_heads");
    EXPECT_EQ(ModelConfig::from_json(j, "c").num_key_value_heads, 4);
    j["num_key_value_heads"] = nullptr;
    EXPECT_EQ(ModelConfig::from_json(j, "c").num_key_value_heads, 4);
    j["num_key_value_heads"] = 3;
    EXPECT_HAS(config_error(j), "not a multiple of num_key_value_heads = 3");
}

TEST(ModelConfig, UnknownArchitectureRejected) {
    json j = base_config("gpt2");
    const std::string msg = config_error(j);
    EXPECT_HAS(msg, "/models/x/config.json");
    EXPECT_HAS(msg, "\"gpt2\"");
    EXPECT_HAS(msg, "llama, mistral, qwen2, qwen3");
    j.erase("model_type");
    EXPECT_HAS(config_error(j), "model_type");
}

TEST(ModelConfig, UnknownRopeTypeRejected) {
    json j = base_config("llama");
    j["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}};
    std::string msg = config_error(j);
    EXPECT_HAS(msg, "/models/x/config.json");
    EXPECT_HAS(msg, "\"longrope\"");
    EXPECT_HAS(msg, "not supported");
    EXPECT_HAS(msg, "default, linear, llama3, yarn, dynamic");
    j["rope_scaling"] = {{"type", "su"}, {"factor", 4.0}};
    EXPECT_HAS(config_error(j), "\"su\"");
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
    EXPECT_HAS(config_error(j), "low_freq_factor");
    j["rope_scaling"] = nullptr;
    j["partial_rotary_factor"] = 0.5;
    EXPECT_HAS(config_error(j), "partial_rotary_factor");
}

TEST(ModelConfig, BadSizesRejectedWithField) {
    for (const char * key : {"hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                             "num_attention_heads"}) {
        json j = base_config("llama");
        j[key] = 0;
        EXPECT_HAS(config_error(j), key);
        j[key] = -5;
        EXPECT_HAS(config_error(j), key);
        j[key] = "64";
        EXPECT_HAS(config_error(j), key);
        j.erase(key);
        EXPECT_HAS(config_error(j), key);
    }
    json j = base_config("llama");
    j["hidden_size"] = int64_t(1) << 40;
    EXPECT_HAS(config_error(j), "out of range");
    j = base_config("llama");
    j["num_hidden_layers"] = 100000;
    EXPECT_HAS(config_error(j), "num_hidden_layers");
    j = base_config("llama");
    j["hidden_act"] = "gelu";
    EXPECT_HAS(config_error(j), "hidden_act");
    j = base_config("llama");
    j["hidden_size"] = 66;   // not a multiple of 4 heads and no head_dim
    EXPECT_HAS(config_error(j), "head_dim");
    j = base_config("llama");
    j["eos_token_id"] = "x";
    EXPECT_HAS(config_error(j), "eos_token_id");
}

TEST(ModelConfig, LoadNamesTheFile) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "zt_cfg_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    try {
        ModelConfig::load(tmpl);
        FAIL();
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), tmpl + "/config.json");
    }
    std::ofstream(tmpl + "/config.json") << "{\"model_type\": \"llama\",";
    try {
        ModelConfig::load(tmpl);
        FAIL();
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), "not valid JSON");
        EXPECT_HAS(e.message(), tmpl + "/config.json");
    }
    std::ofstream(tmpl + "/config.json") << base_config("qwen2").dump();
    EXPECT_EQ(ModelConfig::load(tmpl).arch, Arch::qwen2);
}

TEST(ModelConfig, DeeplyNestedConfigNamesTheFile) {
    // config.json with 200,000 nested arrays as hidden_act: the message quoting it recursed once per level and
    // overflowed the stack. Now the file is refused before it is parsed, naming it.
    const std::string dir = make_temp_dir("cfg_deep");
    std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "hidden_act": )" << std::string(200000, '[')
                                        << std::string(200000, ']') << "}";
    try {
        ModelConfig::load(dir);
        ADD_FAILURE() << "a config.json nested 200,000 levels deep was accepted";
    } catch (const Error & e) {
        EXPECT_HAS(e.message(), dir + "/config.json");
        EXPECT_HAS(e.message(), "levels deep, more than the 64 allowed");
    }
    std::filesystem::remove_all(dir);
}
