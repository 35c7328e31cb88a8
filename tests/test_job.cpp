// The generate job end to end on a tiny synthetic model with the real Llama 2 tokenizer: result and error
// records, per-line faults (8, 9, 10), batch-independence of seeded sampling, stop strings, resume.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/job/job.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/synthetic_model.h"

using namespace zt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

class Job : public ::testing::Test {
protected:
    static fs::path dir_;
    static void SetUpTestSuite() {
        dir_ = fs::temp_directory_path() / ("zt_job_test_" + std::to_string(::getpid()));
        fs::create_directories(dir_ / "tok");
        const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2/";
        ASSERT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + (dir_ / "tok/tokenizer.json").string()).c_str()), 0);
        fs::copy_file(src + "tokenizer_config.json", dir_ / "tok/tokenizer_config.json");
        SynthOptions o;
        o.arch = "llama";
        o.layers = 2;
        o.hidden = 32;
        o.heads = 4;
        o.kv_heads = 2;
        o.intermediate = 64;
        o.max_position_embeddings = 256;
        o.tokenizer_dir = (dir_ / "tok").string();
        o.dtype = "bf16";
        o.seed = 3;
        o.out_dir = (dir_ / "model").string();
        synthesize_model(o);
    }
    static void TearDownTestSuite() { fs::remove_all(dir_); }

    // Runs a job over `lines`; returns records by custom_id (error records without one by "line:N").
    std::map<std::string, json> run(const std::vector<std::string> & lines, int batch_size = 4,
                                    const std::string & name = "job", bool resume = false, JobStats * stats = nullptr,
                                    const std::string & model = "model") {
        const fs::path in = dir_ / (name + ".jsonl"), out = dir_ / (name + ".out.jsonl");
        {
            std::ofstream f(in, std::ios::binary);
            for (const auto & l : lines) f << l << "\n";
        }
        json ds = {{"ztinfer", {{"model", model}, {"input", in.filename().string()}, {"output", out.filename().string()},
                                {"device", "cpu"}, {"batch_size", batch_size}, {"max_new_tokens", 6}, {"threads", 2},
                                {"resume", resume}, {"seed", 11}}}};
        const JobConfig cfg = JobConfig::from_json(ds, (dir_ / "ds.json").string());
        const JobStats s = run_job(cfg);
        if (stats) *stats = s;
        std::map<std::string, json> records;
        std::ifstream f(out);
        std::string line;
        while (std::getline(f, line)) {
            json r;
            try { r = json::parse(line); } catch (const json::exception &) { continue; }   // a torn line (resume test)
            const std::string key = r["custom_id"].is_string() ? r["custom_id"].get<std::string>()
                                                               : "line:" + std::to_string(r["line"].get<int>());
            // a custom_id's result record wins over its duplicate's error record
            if (!records.count(key) || (records[key].contains("error") && !r.contains("error"))) records[key] = r;
        }
        return records;
    }
};
fs::path Job::dir_;

}  // namespace

TEST_F(Job, WritesResultRecords) {
    auto r = run({R"({"custom_id": "a", "prompt": "Hello world", "max_tokens": 5, "logprobs": true})",
                  R"({"custom_id": "b", "prompt_token_ids": [1, 2, 3, 4]})"});
    ASSERT_EQ(r.size(), 2u);
    const json & a = r["a"];
    ASSERT_FALSE(a.contains("error")) << a.dump();
    EXPECT_TRUE(a["finish_reason"] == "length" || a["finish_reason"] == "stop");
    EXPECT_EQ(a["usage"]["prompt_tokens"].get<int>(), 3);   // <s> Hello world
    EXPECT_EQ(a["usage"]["completion_tokens"].get<size_t>(), a["token_ids"].size());
    EXPECT_LE(a["token_ids"].size(), 5u);
    ASSERT_EQ(a["logprobs"].size(), a["token_ids"].size());
    for (const auto & lp : a["logprobs"]) EXPECT_LE(lp.get<double>(), 0.0);
    EXPECT_TRUE(a["text"].is_string());
    EXPECT_EQ(r["b"]["usage"]["prompt_tokens"].get<int>(), 4);
    EXPECT_FALSE(r["b"].contains("logprobs"));
}

TEST_F(Job, BadLinesGetErrorRecordsAndTheRestRuns) {
    auto r = run({R"({"custom_id": "ok1", "prompt": "fine"})",
                  R"({"custom_id": "broken", "prompt": )",
                  "{\"custom_id\": \"utf\", \"prompt\": \"\xff\"}",
                  R"({"custom_id": "ok1", "prompt": "duplicate"})",
                  R"({"custom_id": "empty", "prompt": ""})",
                  R"({"custom_id": "zero", "prompt": "x", "max_tokens": 0})",
                  R"({"custom_id": "topp", "prompt": "x", "top_p": 2})",
                  R"({"custom_id": "temp", "prompt": "x", "temperature": -1})",
                  R"({"custom_id": "vocab", "prompt_token_ids": [1, 99999999]})",
                  R"({"custom_id": "toolong", "prompt_token_ids": [1, 2, 3], "max_tokens": 300})",
                  R"(["not", "an", "object"])",
                  R"({"custom_id": "ok2", "prompt": "also fine"})"});
    auto code = [&](const std::string & id) { return r[id]["error"]["code"].get<std::string>(); };
    EXPECT_FALSE(r["ok1"].contains("error"));   // the first ok1 ran; the duplicate got an error record
    EXPECT_FALSE(r["ok2"].contains("error"));
    EXPECT_EQ(code("broken"), "invalid_json");
    EXPECT_EQ(code("utf"), "invalid_utf8");
    EXPECT_EQ(code("empty"), "invalid_request");
    EXPECT_EQ(code("zero"), "invalid_request");
    EXPECT_EQ(code("topp"), "invalid_request");
    EXPECT_EQ(code("temp"), "invalid_request");
    EXPECT_EQ(code("vocab"), "invalid_request");
    EXPECT_EQ(code("toolong"), "context_length_exceeded");
    const std::string msg = r["toolong"]["error"]["message"];
    EXPECT_NE(msg.find("3 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("300"), std::string::npos) << msg;
    EXPECT_NE(msg.find("256"), std::string::npos) << msg;
    EXPECT_EQ(r["line:11"]["error"]["code"], "invalid_request");
}

TEST_F(Job, DuplicateCustomIdIsAnError) {
    // ...and the duplicate's record is an error record (the first record wins the id in the map above)
    const fs::path out = dir_ / "dup.out.jsonl";
    run({R"({"custom_id": "d", "prompt": "one"})", R"({"custom_id": "d", "prompt": "two"})"}, 2, "dup");
    std::ifstream f(out);
    std::string line;
    int errors = 0, results = 0;
    while (std::getline(f, line)) {
        const json j = json::parse(line);
        if (j.contains("error")) {
            ++errors;
            EXPECT_EQ(j["error"]["code"], "duplicate_custom_id");
            EXPECT_EQ(j["line"], 2);
        } else {
            ++results;
        }
    }
    EXPECT_EQ(errors, 1);
    EXPECT_EQ(results, 1);
}

TEST_F(Job, SampledOutputDoesNotDependOnTheBatch) {
    const std::string probe = R"({"custom_id": "probe", "prompt": "The quick brown fox", "temperature": 0.9, "top_k": 50, "seed": 5, "max_tokens": 6})";
    auto alone = run({probe}, 1, "alone");
    auto crowd = run({R"({"custom_id": "x1", "prompt": "Some other text that is longer than the probe"})", probe,
                      R"({"custom_id": "x2", "prompt_token_ids": [1, 7, 9]})",
                      R"({"custom_id": "x3", "prompt": "Third", "temperature": 1.0})"}, 3, "crowd");
    EXPECT_EQ(alone["probe"]["token_ids"], crowd["probe"]["token_ids"]);
    EXPECT_EQ(alone["probe"]["text"], crowd["probe"]["text"]);
}

TEST_F(Job, StopStringTruncatesText) {
    auto first = run({R"({"custom_id": "s", "prompt": "abc", "max_tokens": 6})"}, 1, "nostop");
    const std::string text = first["s"]["text"];
    ASSERT_GE(text.size(), 2u);
    const std::string stop = text.substr(text.size() / 2, 1 + (text.size() > 3));
    json line = {{"custom_id", "s"}, {"prompt", "abc"}, {"max_tokens", 6}, {"stop", stop}};
    auto second = run({line.dump()}, 1, "stop");
    EXPECT_EQ(second["s"]["finish_reason"], "stop");
    EXPECT_EQ(second["s"]["text"], text.substr(0, text.find(stop)));
}

TEST_F(Job, ResumeSkipsFinishedRequests) {
    const std::vector<std::string> lines = {R"({"custom_id": "r1", "prompt": "one"})", R"({"custom_id": "r2", "prompt": "two"})"};
    run({lines[0]}, 2, "resume", /*resume=*/false);
    {   // simulate a crash mid-write: a torn last line
        std::ofstream f(dir_ / "resume.out.jsonl", std::ios::app);
        f << R"({"custom_id": "r2", "te)";
    }
    JobStats s;
    auto r = run(lines, 2, "resume", /*resume=*/true, &s);
    EXPECT_EQ(s.skipped, 1);
    EXPECT_EQ(s.completed, 1);
    EXPECT_EQ(r.size(), 2u);
    EXPECT_FALSE(r["r2"].contains("error"));
}

TEST_F(Job, NanLogitsAreAPerRequestError) {
    // a copy of the model whose final norm is NaN: every request must get a nan_logits error record
    const fs::path nan_model = dir_ / "nan-model";
    fs::create_directories(nan_model);
    for (const auto & e : fs::directory_iterator(dir_ / "model")) fs::copy_file(e.path(), nan_model / e.path().filename());
    uint64_t offset = 0, bytes = 0;
    {
        SafetensorsFile f((nan_model / "model.safetensors").string());
        const SafetensorsEntry * norm = f.find("model.norm.weight");
        ASSERT_NE(norm, nullptr);
        offset = norm->file_offset;
        bytes = norm->bytes;
    }
    {
        std::fstream f(nan_model / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(std::streamoff(offset));
        const std::vector<uint16_t> nan(bytes / 2, 0x7fc0);   // bf16 quiet NaN
        f.write(reinterpret_cast<const char *>(nan.data()), std::streamsize(bytes));
    }
    auto r = run({R"({"custom_id": "n1", "prompt": "hello"})", R"({"custom_id": "n2", "prompt_token_ids": [1, 5]})"}, 2,
                 "nan", false, nullptr, "nan-model");
    ASSERT_EQ(r.size(), 2u);
    for (const char * id : {"n1", "n2"}) {
        EXPECT_EQ(r[id]["error"]["code"], "nan_logits") << r[id].dump();
        EXPECT_NE(r[id]["error"]["message"].get<std::string>().find("NaN"), std::string::npos);
    }
}

TEST_F(Job, ResumeWritesNoRecordTwice) {
    // results, duplicates and invalid lines of the first run are all skipped by the rerun
    const std::vector<std::string> lines = {R"({"custom_id": "a", "prompt": "one"})", R"({"custom_id": "a", "prompt": "dup"})",
                                            R"({"custom_id": "b", "prompt": "x", "max_tokens": 0})", R"(not json)",
                                            R"({"custom_id": "c", "prompt": "three"})"};
    JobStats first, second;
    run(lines, 2, "resume2", /*resume=*/false, &first);
    EXPECT_EQ(first.completed, 2);
    EXPECT_EQ(first.failed, 3);
    run(lines, 2, "resume2", /*resume=*/true, &second);
    EXPECT_EQ(second.skipped, 5);
    EXPECT_EQ(second.completed + second.failed, 0);
    std::ifstream f(dir_ / "resume2.out.jsonl");
    int n = 0;
    for (std::string l; std::getline(f, l);) ++n;
    EXPECT_EQ(n, 5);
}

TEST_F(Job, ResumeRerunsAWholeLastRecordThatLacksItsNewline) {
    // A crash after write(2) of a record's bytes but before its '\n' reached the disk: the last record is
    // complete JSON without its newline. One rule (a record is a line ending in '\n') must decide both what the
    // rerun skips and what it cuts off: the request runs again and all 6 records are there exactly once.
    std::vector<std::string> lines;
    for (int i = 0; i < 6; ++i)
        lines.push_back(json{{"custom_id", "n" + std::to_string(i)}, {"prompt_token_ids", {1, 2 + i}}}.dump());
    run(lines, 2, "nonewline", /*resume=*/false);
    const fs::path out = dir_ / "nonewline.out.jsonl";
    std::string text;
    {
        std::ifstream f(out, std::ios::binary);
        text.assign(std::istreambuf_iterator<char>(f), {});
    }
    ASSERT_EQ(text.back(), '\n');
    fs::resize_file(out, text.size() - 1);   // the last record, whole but for its newline
    JobStats s;
    run(lines, 2, "nonewline", /*resume=*/true, &s);
    EXPECT_EQ(s.skipped, 5);
    EXPECT_EQ(s.completed, 1);
    std::ifstream f(out, std::ios::binary);
    std::map<std::string, int> count;
    for (std::string l; std::getline(f, l);) ++count[json::parse(l)["custom_id"].get<std::string>()];
    EXPECT_EQ(count.size(), 6u);
    for (const auto & [id, n] : count) EXPECT_EQ(n, 1) << id;
}

namespace {
// A job config over files given by absolute path (the fixture's model), resume off unless `extra` says.
JobConfig config_for(const fs::path & dir, const fs::path & in, const fs::path & out, const json & extra = json::object()) {
    json z = {{"model", (dir / "model").string()}, {"input", in.string()}, {"output", out.string()},
              {"device", "cpu"}, {"batch_size", 2}, {"max_new_tokens", 4}, {"threads", 1}, {"resume", false}};
    for (const auto & [k, v] : extra.items()) z[k] = v;
    return JobConfig::from_json(json{{"ztinfer", z}}, (dir / "ds.json").string());
}
std::string text_of(const fs::path & p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_F(Job, OutputThatIsALinkToTheInputIsRefusedAndTheInputKept) {
    // the old check compared path strings: a symbolic or hard link to the input was truncated ("resume": false)
    // or "resumed from" (every request skipped)
    const fs::path in = dir_ / "linked.in.jsonl";
    const std::string requests = R"({"custom_id": "a", "prompt_token_ids": [1, 2]})" "\n";
    std::ofstream(in) << requests;
    const fs::path sym = dir_ / "linked.sym.jsonl", hard = dir_ / "linked.hard.jsonl";
    fs::remove(sym);
    fs::remove(hard);
    fs::create_symlink(in, sym);
    fs::create_hard_link(in, hard);
    for (const fs::path & out : {sym, hard, dir_ / "sub" / ".." / "linked.in.jsonl"}) {
        for (bool resume : {false, true}) {
            try {
                run_job(config_for(dir_, in, out, {{"resume", resume}}));
                ADD_FAILURE() << out << " was accepted as the output of " << in;
            } catch (const Error & e) {
                EXPECT_NE(std::string(e.what()).find("is the input file"), std::string::npos) << e.what();
            }
            EXPECT_EQ(text_of(in), requests) << "the input was changed through " << out;
        }
    }
}

TEST_F(Job, InputThatIsAFolderIsAnError) {
    const fs::path folder = dir_ / "input-folder";
    fs::create_directories(folder);
    try {
        run_job(config_for(dir_, folder, dir_ / "folder.out.jsonl"));
        ADD_FAILURE() << "a folder ran as the input";
    } catch (const Error & e) {
        EXPECT_NE(std::string(e.what()).find(folder.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("folder"), std::string::npos) << e.what();
    }
}

TEST_F(Job, TemperatureBelowTheFloorEqualsGreedy) {
    auto r = run({R"({"custom_id": "greedy", "prompt_token_ids": [1, 5, 9, 13], "temperature": 0})",
                  R"({"custom_id": "tiny", "prompt_token_ids": [1, 5, 9, 13], "temperature": 1e-320, "seed": 7})",
                  R"({"custom_id": "small", "prompt_token_ids": [1, 5, 9, 13], "temperature": 1e-7, "seed": 8})"},
                 3, "tinytemp");
    ASSERT_FALSE(r["greedy"].contains("error")) << r["greedy"].dump();
    EXPECT_EQ(r["tiny"]["token_ids"], r["greedy"]["token_ids"]) << r["tiny"].dump();
    EXPECT_EQ(r["small"]["token_ids"], r["greedy"]["token_ids"]) << r["small"].dump();
}

TEST_F(Job, MaxTokensNearInt64MaxIsALineErrorAndTheRestRuns) {
    // n_prompt + max_tokens overflowed and passed the context check
    auto r = run({R"({"custom_id": "ok", "prompt_token_ids": [1, 2]})",
                  R"({"custom_id": "max", "prompt_token_ids": [1, 2], "max_tokens": 9223372036854775807})",
                  R"({"custom_id": "max2", "prompt_token_ids": [1, 2, 3], "max_tokens": 9223372036854775806})"},
                 4, "int64max");
    EXPECT_FALSE(r["ok"].contains("error")) << r["ok"].dump();
    for (const char * id : {"max", "max2"}) {
        EXPECT_EQ(r[id]["error"]["code"], "context_length_exceeded") << r[id].dump();
        EXPECT_NE(r[id]["error"]["message"].get<std::string>().find("922337203685477580"), std::string::npos);
    }
}

namespace {
// A copy of the fixture's model whose config.json claims a context of 2^40 positions (nothing is sized by it
// but the KV cache the job reserves).
fs::path huge_context_model(const fs::path & dir) {
    const fs::path m = dir / "huge-context-model";
    if (fs::exists(m)) return m;
    fs::create_directories(m);
    for (const auto & e : fs::directory_iterator(dir / "model")) fs::copy_file(e.path(), m / e.path().filename());
    json c = json::parse(text_of(m / "config.json"));
    c["max_position_embeddings"] = int64_t(1) << 40;
    std::ofstream(m / "config.json") << c.dump();
    return m;
}
}  // namespace

TEST_F(Job, MaxTokensAbove2To31WithALargeContextIsALineError) {
    // the KV reservation took the longest request's length as int32: 2^31 + 7 became negative and the whole job
    // died with an internal error
    const fs::path model = huge_context_model(dir_);
    auto r = run({R"({"custom_id": "ok", "prompt_token_ids": [1, 2]})",
                  R"({"custom_id": "big", "prompt_token_ids": [1, 2], "max_tokens": 2147483653})"},
                 4, "int32", false, nullptr, model.string());
    EXPECT_FALSE(r["ok"].contains("error")) << r["ok"].dump();
    EXPECT_EQ(r["big"]["error"]["code"], "kv_cache_exceeded") << r["big"].dump();
    EXPECT_NE(r["big"]["error"]["message"].get<std::string>().find("max_tokens is 2147483653"), std::string::npos);
}

TEST_F(Job, KvCacheTooLargeBecauseOfOneLineBlamesThatLine) {
    // 601 slots x (2^31 - 98) positions x 128 bytes is 2^47.2 bytes per K/V: more than KvCache allows (2^46,
    // checked before anything is allocated) and more than a 47-bit address space could map, so nothing is ever
    // touched. That is the one long line's doing, not batch_size's: it gets an error record naming its
    // max_tokens; the 600 others run with a cache sized for them.
    const fs::path model = huge_context_model(dir_);
    std::vector<std::string> lines;
    for (int i = 0; i < 600; ++i)
        lines.push_back(json{{"custom_id", "s" + std::to_string(i)}, {"prompt_token_ids", {1, 2 + i % 50}},
                             {"max_tokens", 1}}.dump());
    lines.push_back(R"({"custom_id": "long", "prompt_token_ids": [1, 2], "max_tokens": 2147483548})");
    JobStats s;
    auto r = run(lines, 1024, "kvblame", false, &s, model.string());
    EXPECT_EQ(s.completed, 600);
    EXPECT_EQ(r["long"]["error"]["code"], "kv_cache_exceeded") << r["long"].dump();
    const std::string msg = r["long"]["error"]["message"];
    EXPECT_NE(msg.find("max_tokens is 2147483548"), std::string::npos) << msg;
    EXPECT_NE(msg.find("601 slot"), std::string::npos) << msg;
    EXPECT_FALSE(r["s0"].contains("error")) << r["s0"].dump();
}

TEST_F(Job, ThreadsBeyondTheMachineAreCapped) {
    // 100,000 threads exhausted the machine's process limit (and the job then ignored SIGTERM)
    const auto t0 = std::chrono::steady_clock::now();
    const fs::path in = dir_ / "threads.in.jsonl";
    std::ofstream(in) << R"({"custom_id": "a", "prompt_token_ids": [1, 2]})" << "\n";
    const JobConfig cfg = config_for(dir_, in, dir_ / "threads.out.jsonl", {{"threads", 100000}});
    EXPECT_EQ(job_threads(cfg, 0), int(std::max(1u, std::thread::hardware_concurrency())));
    const JobStats s = run_job(cfg);
    EXPECT_EQ(s.completed, 1);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
}

TEST_F(Job, PromptThatTokenizesToNoTokensIsALineError) {
    // A BPE tokenizer with no unk token and no byte fallback drops characters it has no token for (as HF's does)
    // and this one adds no BOS: "zzz" became zero ids and the line vanished without a record.
    const fs::path model = dir_ / "drops-text-model";
    fs::create_directories(model);
    for (const auto & e : fs::directory_iterator(dir_ / "model"))
        if (e.path().filename() != "tokenizer_config.json") fs::copy_file(e.path(), model / e.path().filename());
    json vocab = json::object();
    for (int i = 0; i < 10; ++i) vocab[std::string(1, char('a' + i))] = i;
    std::ofstream(model / "tokenizer.json", std::ios::trunc)
        << json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}}.dump();
    auto r = run({R"({"custom_id": "ok", "prompt": "abc"})", R"({"custom_id": "dropped", "prompt": "zzz"})"}, 4,
                 "notokens", false, nullptr, model.string());
    ASSERT_EQ(r.size(), 2u);
    EXPECT_FALSE(r["ok"].contains("error")) << r["ok"].dump();
    EXPECT_EQ(r["dropped"]["error"]["code"], "invalid_request") << r["dropped"].dump();
    const std::string msg = r["dropped"]["error"]["message"];
    EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no tokens"), std::string::npos) << msg;
}
