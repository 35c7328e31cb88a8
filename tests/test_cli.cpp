// The ztinfer binary: info prints JSON, tokenize round-trips, and user mistakes end with a clear message and
// a non-zero exit instead of a crash.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Result { int status; std::string out; };

Result run_cli(const std::string & args) {
    const std::string cmd = std::string(ZT_BINARY) + " " + args + " 2>&1";
    FILE * p = ::popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    const int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

fs::path temp_dir(const std::string & name) {
    const fs::path d = fs::temp_directory_path() / ("zt_cli_" + name + "_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
}

}  // namespace

TEST(Cli, InfoPrintsJson) {
    const Result r = run_cli("info");
    ASSERT_EQ(r.status, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["name"], "ztinfer");
    EXPECT_TRUE(j["version"].is_string());
    EXPECT_NE(std::find(j["backends"].begin(), j["backends"].end(), "cpu"), j["backends"].end());
    EXPECT_TRUE(j["devices"].is_array());
}

TEST(Cli, MissingConfigSaysWhichFile) {
    const Result r = run_cli("--config /nonexistent/ds.json");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("/nonexistent/ds.json"), std::string::npos) << r.out;
    const Result bad_sub = run_cli("frobnicate");
    EXPECT_NE(bad_sub.status, 0);
}

TEST(Cli, ConfigWithoutZtinferSectionIsExplained) {
    const fs::path d = temp_dir("cfg");
    std::ofstream(d / "ds.json") << R"({"zero_optimization": {"stage": 3}})";
    const Result r = run_cli("run --config " + (d / "ds.json").string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("\"ztinfer\""), std::string::npos) << r.out;
    fs::remove_all(d);
}

TEST(Cli, TokenizeRoundTrip) {
    const fs::path d = temp_dir("tok");
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/qwen3/";
    ASSERT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + (d / "tokenizer.json").string()).c_str()), 0);
    fs::copy_file(src + "tokenizer_config.json", d / "tokenizer_config.json");
    std::ofstream(d / "in.jsonl") << R"({"text": "Hello, world! 你好"})" << "\n" << R"({"nope": 1})" << "\n";
    const Result enc = run_cli("tokenize --tokenizer " + d.string() + " --jsonl " + (d / "in.jsonl").string());
    EXPECT_EQ(enc.status, 1) << enc.out;   // one bad line -> non-zero, but the good line is still encoded
    const auto nl = enc.out.find('\n');
    const json first = json::parse(enc.out.substr(0, nl));
    ASSERT_TRUE(first.contains("ids")) << enc.out;
    EXPECT_NE(enc.out.find("\"error\""), std::string::npos);
    std::ofstream(d / "ids.jsonl") << json{{"ids", first["ids"]}}.dump() << "\n";
    const Result dec = run_cli("tokenize --decode --tokenizer " + d.string() + " --jsonl " + (d / "ids.jsonl").string());
    ASSERT_EQ(dec.status, 0) << dec.out;
    EXPECT_EQ(json::parse(dec.out)["text"], "Hello, world! 你好");
    fs::remove_all(d);
}

namespace {
// <d>/model: a tiny llama (2 layers, hidden 32) with the Llama 2 tokenizer, written by `ztinfer synth`.
void synth_tiny_model(const fs::path & d) {
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2/";
    fs::create_directories(d / "tok");
    ASSERT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + (d / "tok/tokenizer.json").string()).c_str()), 0);
    fs::copy_file(src + "tokenizer_config.json", d / "tok/tokenizer_config.json");
    const Result synth = run_cli("synth --arch llama --layers 2 --hidden 32 --heads 4 --kv-heads 2 --intermediate 64 "
                                 "--tokenizer " + (d / "tok").string() + " --out " + (d / "model").string());
    ASSERT_EQ(synth.status, 0) << synth.out;
}
std::string text_of(const fs::path & p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST(Cli, OutputOverrideOntoTheInputIsRefusedAndTheInputKept) {
    // --output was applied after the output == input check (which compared ds.json's strings): the job then
    // truncated its own input ("resume": false) and appended its results to it
    const fs::path d = temp_dir("override");
    synth_tiny_model(d);
    const std::string requests = json{{"custom_id", "a"}, {"prompt", "hello"}}.dump() + "\n";
    std::ofstream(d / "in.jsonl") << requests;
    std::ofstream(d / "ds.json") << json{{"ztinfer", {{"model", "model"}, {"input", "in.jsonl"}, {"output", "out.jsonl"},
                                                      {"max_new_tokens", 2}, {"threads", 1}, {"resume", false}}}}.dump();
    fs::create_symlink(d / "in.jsonl", d / "in-link.jsonl");
    for (const std::string & out : {(d / "in.jsonl").string(), (d / "in-link.jsonl").string()}) {
        const Result r = run_cli("--config " + (d / "ds.json").string() + " --output " + out);
        EXPECT_EQ(r.status, 1) << r.out;
        EXPECT_NE(r.out.find("is the input file"), std::string::npos) << r.out;
        EXPECT_EQ(text_of(d / "in.jsonl"), requests) << "the input was overwritten through --output " << out;
    }
    fs::remove_all(d);
}

TEST(Cli, TokenizeOfDeeplyNestedLinesIsAnErrorRecordNotACrash) {
    // 200,000 levels parse, but printing the bad id recursed once per level (stack overflow)
    const fs::path d = temp_dir("tokdeep");
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/qwen3/";
    ASSERT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + (d / "tokenizer.json").string()).c_str()), 0);
    fs::copy_file(src + "tokenizer_config.json", d / "tokenizer_config.json");
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    std::ofstream(d / "ids.jsonl") << "{\"ids\": [1, " << deep << "]}\n" << R"({"ids": [1]})" << "\n";
    const Result r = run_cli("tokenize --decode --tokenizer " + d.string() + " --jsonl " + (d / "ids.jsonl").string());
    EXPECT_EQ(r.status, 1) << r.out.substr(0, 500);
    const auto nl = r.out.find('\n');
    ASSERT_NE(nl, std::string::npos) << r.out.substr(0, 500);
    const json first = json::parse(r.out.substr(0, nl));
    EXPECT_NE(first["error"]["message"].get<std::string>().find("nested"), std::string::npos) << first.dump();
    EXPECT_TRUE(json::parse(r.out.substr(nl + 1)).contains("text")) << r.out.substr(0, 500);
    fs::remove_all(d);
}

TEST(Cli, SigtermSyncsOutputAndRerunFinishesTheRest) {
    // fault 15: SIGTERM mid-job -> exit 143 with only whole records; the same command again completes the
    // job, every custom_id exactly once.
    const fs::path d = temp_dir("sigterm");
    synth_tiny_model(d);
    const int n = 40;
    {
        std::ofstream in(d / "in.jsonl");
        for (int i = 0; i < n; ++i) in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt", "count " + std::to_string(i)}}.dump() << "\n";
    }
    std::ofstream(d / "ds.json") << json{{"ztinfer", {{"model", "model"}, {"input", "in.jsonl"}, {"output", "out.jsonl"},
                                                      {"batch_size", 1}, {"max_new_tokens", 200}, {"threads", 1}}}}.dump();
    const std::string cmd = std::string(ZT_BINARY) + " --config " + (d / "ds.json").string();
    const Result stopped = [&] {
        const std::string sh = "sh -c '" + cmd + " 2>/dev/null & pid=$!; sleep 1; kill -TERM $pid; wait $pid; echo rc=$?'";
        FILE * p = ::popen(sh.c_str(), "r");
        std::string out;
        char buf[256];
        while (std::fgets(buf, sizeof buf, p)) out += buf;
        ::pclose(p);
        return Result{0, out};
    }();
    auto count_records = [&](int & torn) {
        std::set<std::string> ids;
        int lines = 0;
        torn = 0;
        std::ifstream f(d / "out.jsonl");
        std::string line;
        while (std::getline(f, line)) {
            ++lines;
            try {
                const json r = json::parse(line);
                EXPECT_FALSE(r.contains("error")) << line;
                ids.insert(r["custom_id"].get<std::string>());
            } catch (const json::exception &) { ++torn; }
        }
        EXPECT_EQ(size_t(lines - torn), ids.size()) << "a custom_id was written twice";
        return ids.size();
    };
    int torn = 0;
    const size_t first = count_records(torn);
    if (stopped.out.find("rc=143") == std::string::npos) GTEST_SKIP() << "job finished before SIGTERM: " << stopped.out;
    EXPECT_EQ(torn, 0);
    EXPECT_LT(first, size_t(n));
    const Result rerun = run_cli("--config " + (d / "ds.json").string());
    ASSERT_EQ(rerun.status, 0) << rerun.out;
    EXPECT_NE(rerun.out.find("already"), std::string::npos) << rerun.out;
    EXPECT_EQ(count_records(torn), size_t(n));
    fs::remove_all(d);
}
