// The generate job end to end on a tiny synthetic model with the real Llama 2 tokenizer: result and error
// records, per-line faults (8, 9, 10), batch-independence of seeded sampling, stop strings, resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

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
