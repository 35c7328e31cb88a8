// generation_config.json: eos_token_id as an integer or a list, absent file or key, and the files that must be
// refused with a message naming them (not JSON, nested 200,000 levels deep, ids outside [0, 2^31)).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/base/error.h"
#include "runtime/model/generation_config.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;

namespace {

std::string eos_error(const std::string & dir) {
    try {
        generation_config_eos_ids(dir);
    } catch (const Error & e) {
        return e.message();
    }
    return "";
}

}  // namespace

TEST(GenerationConfig, ReadsEosIds) {
    const std::string dir = make_temp_dir("gencfg");
    EXPECT_TRUE(generation_config_eos_ids(dir).empty());   // no file
    const std::string path = dir + "/generation_config.json";
    write_file(path, R"({"bos_token_id": 1, "eos_token_id": 2})");
    EXPECT_EQ(generation_config_eos_ids(dir), (std::vector<int32_t>{2}));
    write_file(path, R"({"eos_token_id": [128001, 128008, 128009]})");
    EXPECT_EQ(generation_config_eos_ids(dir), (std::vector<int32_t>{128001, 128008, 128009}));
    write_file(path, R"({"eos_token_id": null, "temperature": 0.6})");
    EXPECT_TRUE(generation_config_eos_ids(dir).empty());
    std::filesystem::remove_all(dir);
}

TEST(GenerationConfig, BadFilesNamed) {
    const std::string dir = make_temp_dir("gencfg");
    const std::string path = dir + "/generation_config.json";
    // 200,000 nested levels: refused before it is parsed (was: parsed, then ignored with a warning only when not JSON)
    write_file(path, R"({"eos_token_id": 2, "x": )" + std::string(200000, '[') + std::string(200000, ']') + "}");
    std::string msg = eos_error(dir);
    EXPECT_HAS(msg, path);
    EXPECT_HAS(msg, "levels deep, more than the 64 allowed");
    // not JSON: an error, not a warning (the EOS ids it holds would be lost)
    write_file(path, R"({"eos_token_id": 2,)");
    msg = eos_error(dir);
    EXPECT_HAS(msg, path);
    EXPECT_HAS(msg, "not valid JSON");
    // ids at their type's edge: 2^32 + 2 became 2 through get<int32_t>; negative and non-integer ones were skipped
    for (const char * bad : {"4294967298", "-1", "2.5", "\"</s>\"", "[2, 2147483648]"}) {
        write_file(path, std::string(R"({"eos_token_id": )") + bad + "}");
        msg = eos_error(dir);
        EXPECT_HAS(msg, path);
        EXPECT_HAS(msg, "eos_token_id must be a token id");
    }
    write_file(path, R"({"eos_token_id": 2147483647})");
    EXPECT_EQ(generation_config_eos_ids(dir), (std::vector<int32_t>{2147483647}));
    write_file(path, "[2]");
    EXPECT_HAS(eos_error(dir), "must hold a JSON object");
    std::filesystem::remove_all(dir);
}
