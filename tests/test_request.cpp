// Request line parsing and validation (faults 9 and 10): each bad line becomes an error record naming the
// line and what is wrong; good lines carry defaults from the job config.
#include <gtest/gtest.h>

#include "runtime/job/request.h"
#include "runtime/model/unicode_text.h"

using namespace zt;

namespace {
SamplingDefaults defaults() {
    SamplingDefaults d;
    d.max_new_tokens = 16;
    d.temperature = 0.5;
    d.seed = 9;
    return d;
}
RequestError expect_error(const std::string & line, const std::string & code, const std::string & needle) {
    auto r = parse_request(line, 7, defaults());
    EXPECT_TRUE(std::holds_alternative<RequestError>(r)) << line;
    if (!std::holds_alternative<RequestError>(r)) return {};
    const auto & e = std::get<RequestError>(r);
    EXPECT_EQ(e.code, code) << e.message;
    EXPECT_NE(e.message.find(needle), std::string::npos) << "message: " << e.message;
    EXPECT_NE(e.message.find("line 7"), std::string::npos) << "message: " << e.message;
    EXPECT_EQ(e.line, 7);
    return e;
}
}  // namespace

TEST(Request, GoodLineWithDefaultsAndOverrides) {
    auto r = parse_request(R"({"custom_id": "a", "prompt": "hi", "top_p": 0.9, "stop": "x", "logprobs": true})", 1, defaults());
    ASSERT_TRUE(std::holds_alternative<Request>(r));
    const auto & q = std::get<Request>(r);
    EXPECT_EQ(q.custom_id, "a");
    EXPECT_EQ(*q.prompt, "hi");
    EXPECT_EQ(q.max_tokens, 16);
    EXPECT_DOUBLE_EQ(q.sampling.temperature, 0.5);
    EXPECT_DOUBLE_EQ(q.sampling.top_p, 0.9);
    EXPECT_EQ(q.sampling.seed, derive_seed(9, "a"));
    EXPECT_EQ(q.stop, std::vector<std::string>{"x"});
    EXPECT_TRUE(q.logprobs);
}

TEST(Request, TokenIdsAndOpenAiBody) {
    auto r = parse_request(R"({"custom_id": "b", "body": {"prompt_token_ids": [1, 2, 3], "max_tokens": 4, "seed": 5}})", 2, defaults());
    ASSERT_TRUE(std::holds_alternative<Request>(r));
    const auto & q = std::get<Request>(r);
    EXPECT_EQ(q.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
    EXPECT_EQ(q.max_tokens, 4);
    EXPECT_EQ(q.sampling.seed, 5u);
}

TEST(Request, MalformedJsonKeepsCustomIdWhenVisible) {
    auto e = expect_error(R"({"custom_id": "c", "prompt": "unterminated)", "invalid_json", "not valid JSON");
    ASSERT_TRUE(e.custom_id.has_value());
    EXPECT_EQ(*e.custom_id, "c");
    expect_error("[1, 2]", "invalid_request", "JSON object");
    expect_error("not json at all", "invalid_json", "not valid JSON");
}

TEST(Request, InvalidUtf8) {
    auto e = expect_error("{\"custom_id\": \"u\", \"prompt\": \"bad \xff\xfe byte\"}", "invalid_utf8", "UTF-8");
    EXPECT_EQ(*e.custom_id, "u");
    expect_error("{\"custom_id\": \"v\", \"prompt\": \"overlong \xc0\xaf\"}", "invalid_utf8", "UTF-8");
    expect_error("{\"custom_id\": \"w\", \"prompt\": \"surrogate \xed\xa0\x80\"}", "invalid_utf8", "UTF-8");
}

TEST(Request, FieldValidation) {
    expect_error(R"({"prompt": "x"})", "invalid_request", "custom_id");
    expect_error(R"({"custom_id": "", "prompt": "x"})", "invalid_request", "empty");
    expect_error(R"({"custom_id": "a", "prompt": ""})", "invalid_request", "\"prompt\" is empty");
    expect_error(R"({"custom_id": "a", "prompt_token_ids": []})", "invalid_request", "empty");
    expect_error(R"({"custom_id": "a", "prompt_token_ids": [1, -2]})", "invalid_request", "non-negative");
    expect_error(R"({"custom_id": "a"})", "invalid_request", "exactly one");
    expect_error(R"({"custom_id": "a", "prompt": "x", "prompt_token_ids": [1]})", "invalid_request", "exactly one");
    expect_error(R"({"custom_id": "a", "prompt": "x", "max_tokens": 0})", "invalid_request", "max_tokens");
    expect_error(R"({"custom_id": "a", "prompt": "x", "max_tokens": -3})", "invalid_request", "max_tokens");
    expect_error(R"({"custom_id": "a", "prompt": "x", "max_tokens": "5"})", "invalid_request", "integer");
    expect_error(R"({"custom_id": "a", "prompt": "x", "temperature": -0.1})", "invalid_request", "temperature");
    expect_error(R"({"custom_id": "a", "prompt": "x", "top_p": 0})", "invalid_request", "top_p");
    expect_error(R"({"custom_id": "a", "prompt": "x", "top_p": 1.5})", "invalid_request", "top_p");
    expect_error(R"({"custom_id": "a", "prompt": "x", "top_k": -1})", "invalid_request", "top_k");
    expect_error(R"({"custom_id": "a", "prompt": "x", "stop": 3})", "invalid_request", "stop");
    expect_error(R"({"custom_id": "a", "prompt": "x", "stop": [""]})", "invalid_request", "stop");
}

TEST(Request, Utf8Validator) {
    EXPECT_TRUE(utf8_is_valid("plain"));
    EXPECT_TRUE(utf8_is_valid("Привет 你好 \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9"));
    EXPECT_FALSE(utf8_is_valid("\xe4\xbd"));          // truncated
    EXPECT_FALSE(utf8_is_valid("\xf4\x90\x80\x80"));  // > U+10FFFF
}

namespace {
std::string nested(size_t levels, const std::string & inner = "1") {
    return std::string(levels, '[') + inner + std::string(levels, ']');
}
}  // namespace

TEST(Request, DeeplyNestedValuesAreAnErrorRecordNotACrash) {
    // 200,000 levels parse fine, but copying or printing them recursed once per level: a stack overflow
    const std::string deep = nested(200000);
    for (const std::string & line : {R"({"custom_id": )" + deep + R"(, "prompt": "x"})",
                                     R"({"custom_id": "d", "prompt_token_ids": [1, )" + deep + "]}"}) {
        const RequestError e = expect_error(line, "invalid_json", "nested");
        EXPECT_LT(e.message.size(), 500u) << e.message.substr(0, 500);
    }
    auto emb = parse_embed_request(R"({"custom_id": "e", "input": )" + deep + "}", 7, "");
    ASSERT_TRUE(std::holds_alternative<RequestError>(emb));
    EXPECT_EQ(std::get<RequestError>(emb).code, "invalid_json");
    // 64 levels are still a value (here one of the wrong type)
    expect_error(R"({"custom_id": "f", "prompt_token_ids": [1, )" + nested(62) + "]}", "invalid_request",
                 "prompt_token_ids");
}

TEST(Request, LongValuesAreCutInMessages) {
    std::string ids = "[";
    for (int i = 0; i < 20000; ++i) ids += std::to_string(i) + ",";
    ids += "\"x\"]";
    const RequestError e = expect_error(R"({"custom_id": )" + ids + R"(, "prompt": "x"})", "invalid_request",
                                        "custom_id");
    EXPECT_LT(e.message.size(), 400u) << e.message.substr(0, 600);
    EXPECT_NE(e.message.find("characters)"), std::string::npos) << e.message;
}

TEST(Request, MaxTokensTooLargeForInt64IsRejectedWithItsValue) {
    expect_error(R"({"custom_id": "m", "prompt": "x", "max_tokens": 18446744073709551615})", "invalid_request",
                 "18446744073709551615");
}

TEST(Request, TemperatureBelowTheFloorIsGreedy) {
    for (const char * t : {"1e-320", "1e-7"}) {
        auto r = parse_request(std::string(R"({"custom_id": "t", "prompt": "x", "temperature": )") + t + "}", 1,
                               defaults());
        ASSERT_TRUE(std::holds_alternative<Request>(r)) << t;
        EXPECT_EQ(std::get<Request>(r).sampling.temperature, 0.0) << t;
    }
    auto r = parse_request(R"({"custom_id": "t", "prompt": "x", "temperature": 1e-5})", 1, defaults());
    ASSERT_TRUE(std::holds_alternative<Request>(r));
    EXPECT_EQ(std::get<Request>(r).sampling.temperature, 1e-5);
}
