// What a job refuses before it starts, and the helpers that make it refuse cleanly: the output's lock (one job
// per output), the paths check (no file the job writes is its input), JSON nesting limits and cut values.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/job/job_config.h"
#include "runtime/base/json_input.h"
#include "runtime/job/output_lock.h"

using namespace zt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string & name) {
    const fs::path d = fs::temp_directory_path() / ("zt_job_inputs_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}
std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const Error & e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST(OutputLock, SecondHolderFailsNamingTheFirstAndTheLockGoesWithTheHolder) {
    const fs::path d = temp_dir("lock");
    const std::string out = (d / "sub" / "out.jsonl").string();
    {
        OutputLock first(out);
        EXPECT_TRUE(fs::exists(OutputLock::lock_path(out)));
        const std::string msg = error_of([&] { OutputLock second(out); });
        EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
        EXPECT_NE(msg.find(out), std::string::npos) << msg;
        EXPECT_NE(msg.find("another job"), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(OutputLock::lock_path(out)));
    { OutputLock again(out); }   // released: the next job takes it
    // a stale lock file (its holder was killed) does not block: the flock went with the holder's descriptor
    std::ofstream(OutputLock::lock_path(out)) << "pid 1 on host gone\n";
    { OutputLock after_crash(out); }
    // the lock file is never followed through a symbolic link
    fs::create_symlink(d / "elsewhere", OutputLock::lock_path(out));
    const std::string msg = error_of([&] { OutputLock linked(out); });
    EXPECT_NE(msg.find("symbolic link"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(d / "elsewhere"));
    fs::remove_all(d);
}

TEST(JobPaths, NoFileTheJobWritesIsTheInput) {
    const fs::path d = temp_dir("paths");
    std::ofstream(d / "in.jsonl") << "{}\n";
    auto check = [&](const json & z) {
        json all = {{"model", "m"}, {"input", (d / "in.jsonl").string()}, {"output", (d / "out.jsonl").string()}};
        for (const auto & [k, v] : z.items()) all[k] = v;
        return error_of([&] { JobConfig::from_json(json{{"ztinfer", all}}, (d / "ds.json").string()).check_paths(); });
    };
    EXPECT_EQ(check({}), "(no error)");
    fs::create_symlink(d / "in.jsonl", d / "sym.jsonl");
    fs::create_hard_link(d / "in.jsonl", d / "hard.jsonl");
    for (const char * out : {"in.jsonl", "sym.jsonl", "hard.jsonl"})
        EXPECT_NE(check({{"output", (d / out).string()}}).find("is the input file"), std::string::npos) << out;
    // files beside the output: <output>.metrics.json, an .npy output's index, the trace
    fs::create_symlink(d / "in.jsonl", d / "x.metrics.json");
    EXPECT_NE(check({{"output", (d / "x").string()}}).find("metrics"), std::string::npos);
    fs::create_symlink(d / "in.jsonl", d / "e.npy.index.jsonl");
    EXPECT_NE(check({{"output", (d / "e.npy").string()}}).find("index"), std::string::npos);
    EXPECT_NE(check({{"trace", (d / "sym.jsonl").string()}}).find("trace"), std::string::npos);
    // a folder, or nothing, as the input
    const std::string folder = check({{"input", d.string()}});
    EXPECT_NE(folder.find("is a folder"), std::string::npos) << folder;
    EXPECT_NE(check({{"input", (d / "missing.jsonl").string()}}).find("missing.jsonl"), std::string::npos);
    fs::remove_all(d);
}

TEST(JsonInput, NestingDepthIgnoresBracketsInStringsAndComments) {
    EXPECT_EQ(json_nesting_depth(R"({"a": [1, {"b": []}]})"), 4u);
    EXPECT_EQ(json_nesting_depth(R"({"a": "[[[[\"[[["})"), 1u);
    EXPECT_EQ(json_nesting_depth("{\"a\": 1 // [[[[\n}", true), 1u);
    EXPECT_EQ(json_nesting_depth("{/* [[[[ */ \"a\": [1]}", true), 2u);
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    EXPECT_EQ(json_nesting_depth(deep), 200000u);
    EXPECT_THROW(parse_json_input(deep), JsonTooDeep);
    const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
    EXPECT_NO_THROW(parse_json_input(ok));
    EXPECT_THROW(parse_json_input("[" + ok + "]"), JsonTooDeep);
}

TEST(JsonInput, FileErrorsNameTheFileAndAreCut) {
    // nlohmann's complaint quotes the token it stopped at: a 1 MB unterminated string was quoted whole
    try {
        parse_json_file("{\"a\": \"" + std::string(1 << 20, 'x'), "/m/config.json");
        ADD_FAILURE() << "not JSON, accepted";
    } catch (const Error & e) {
        EXPECT_NE(e.message().find("/m/config.json: not valid JSON"), std::string::npos) << e.message();
        EXPECT_LT(e.message().size(), 2 * kMaxQuotedJsonChars);
    }
    try {
        parse_json_file(std::string(100000, '{'), "/m/x.safetensors: safetensors header");
        ADD_FAILURE() << "nested 100,000 deep, accepted";
    } catch (const Error & e) {
        EXPECT_NE(e.message().find("/m/x.safetensors: safetensors header: arrays/objects are nested 100000 levels"),
                  std::string::npos) << e.message();
    }
    EXPECT_EQ(parse_json_file("// ds\n{\"a\": [1]}", "ds.json", true)["a"][0], 1);
}

TEST(JsonInput, QuotedValuesAreCut) {
    EXPECT_EQ(quote_json(json("short")), "\"short\"");
    const std::string q = quote_json(json(std::string(5000, 'x')));
    EXPECT_LE(q.size(), kMaxQuotedJsonChars + 30);
    EXPECT_NE(q.find("(5002 characters)"), std::string::npos) << q;
    // never cut inside a UTF-8 character
    std::string euros;
    for (int i = 0; i < 300; ++i) euros += "\xE2\x82\xAC";
    const std::string e = quote_json(json(euros));
    EXPECT_TRUE(json::parse("\"" + e.substr(1, e.find("...") - 1) + "\"").is_string()) << e;
}
