// Throughput batch jobs (issue 5), on CPU ranks:
//  - Forward: micro-batches (block schedule), prompts prefilled in chunks and the KV cache offloaded to pinned host
//    memory give logits bit-identical to one sequence at a time, whole prompts, on-device cache (also with sliding
//    windows and yarn RoPE: tests/data/hf/{mistral,qwen2}-window, qwen3-yarn); chunks bound
//    the activation memory and the offloaded cache leaves only a ring of layers on the device;
//  - the job under mpirun: micro_batches x batch_size, prefill_chunk and kv_cache.offload "cpu" on 2 ranks give
//    the same token_ids and logprobs as the plain one-rank run; the metrics JSON beside the output says what
//    was fetched and moved;
//  - task "embed": last/mean pooling of every HF fixture (causal, and bidirectional with "is_causal": false)
//    matches HF transformers (cosine >= 1 - 1e-5, fp32), through mpirun with chunked prefill; L2 normalisation;
//    the instruction prefix; .npy output + id index, row = input line, resumable; bad lines become error records.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/job/embedding_output.h"
#include "runtime/stream/forward.h"
#include "runtime/model/model_config.h"
#include "runtime/model/synthetic_model.h"
#include "job_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt;
using namespace zt::test;

namespace {

const char * kFixtures[] = {"llama", "mistral", "qwen2", "qwen3"};

std::string fixture_dir(const std::string & arch) { return std::string(ZT_TEST_DATA) + "/hf/" + arch + "-fp32"; }

std::vector<std::vector<int32_t>> fixture_prompts(const std::string & arch) {
    const json ref = json::parse(read_file(fixture_dir(arch) + "/embeddings.json"));
    return ref["prompts"].get<std::vector<std::vector<int32_t>>>();
}

// An 8-layer fp32 llama (Llama 2 tokenizer): deeper than the offloaded cache's device ring (prefetch 2 + 2 = 4
// layers), so every layer's cache really goes through host memory and back each step.
std::string deep_model_dir() {
    static std::string dir;
    if (!dir.empty()) return dir;
    dir = make_temp_dir("tp_deep");
    SynthOptions o;
    o.arch = "llama"; o.layers = 8; o.hidden = 64; o.heads = 4; o.kv_heads = 2; o.intermediate = 96;
    o.dtype = "fp32"; o.out_dir = dir + "/model"; o.tokenizer_dir = dir + "/tok";
    fs::create_directories(o.tokenizer_dir);
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2";
    EXPECT_EQ(std::system(("xz -dc " + src + "/tokenizer.json.xz > " + o.tokenizer_dir + "/tokenizer.json && cp " +
                           src + "/tokenizer_config.json " + o.tokenizer_dir + "/").c_str()), 0);
    synthesize_model(o);
    return dir;
}

double cosine(const std::vector<float> & a, const std::vector<float> & b) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < a.size(); ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
    return ab / std::sqrt(aa * bb);
}

// Greedy decode of `prompts` with Forward: every step's logits rows, concatenated. Either one sequence at a time
// with whole prompts (the reference), or all together: sequence i in micro-batch i % n_micro, prompts fed in
// chunks of `chunk` tokens.
std::vector<float> decode_logits(const std::string & dir, const std::vector<std::vector<int32_t>> & prompts,
                                 bool together, int n_micro, int chunk, bool kv_offload, int new_tokens = 5) {
    const ModelConfig cfg = ModelConfig::load(dir);
    const Checkpoint ckpt(dir);
    const ModelWeights w = bind_weights(ckpt, cfg);
    auto backend = make_cpu_backend(2);
    ForwardOptions fo;
    fo.kv_offload = kv_offload;
    Forward fwd(cfg, w, *backend, fo);
    const int32_t n = int32_t(prompts.size());
    fwd.reserve(n, 64);
    const int64_t V = cfg.vocab_size;
    std::vector<std::vector<float>> per_seq(static_cast<size_t>(n));   // each sequence's rows in order
    std::vector<float> logits;
    auto argmax = [&](const float * row) { return int32_t(std::max_element(row, row + V) - row); };
    std::vector<int32_t> past(size_t(n), 0), last(size_t(n), 0);
    std::vector<int> generated(size_t(n), 0);
    auto run = [&](const std::vector<int> & seqs) {
        while (true) {
            std::vector<SequenceStep> batch;
            std::vector<int> who;
            for (int mb = 0; mb < n_micro; ++mb)
                for (int i : seqs) {
                    if (i % n_micro != mb || generated[size_t(i)] >= new_tokens) continue;
                    const int32_t len = int32_t(prompts[size_t(i)].size());
                    SequenceStep s;
                    s.cache_slot = i;
                    s.past_len = past[size_t(i)];
                    s.micro_batch = mb;
                    if (past[size_t(i)] < len) {
                        s.n_tokens = std::min(len - past[size_t(i)], chunk);
                        s.tokens = prompts[size_t(i)].data() + past[size_t(i)];
                        s.emit = past[size_t(i)] + s.n_tokens == len;
                    } else {
                        s.tokens = &last[size_t(i)];
                        s.n_tokens = 1;
                    }
                    batch.push_back(s);
                    who.push_back(i);
                }
            if (batch.empty()) return;
            fwd.step(batch, logits);
            size_t r = 0;
            for (size_t b = 0; b < batch.size(); ++b) {
                const int i = who[b];
                past[size_t(i)] += batch[b].n_tokens;
                if (!batch[b].emit) continue;
                const float * row = logits.data() + (r++) * size_t(V);
                per_seq[size_t(i)].insert(per_seq[size_t(i)].end(), row, row + V);
                last[size_t(i)] = argmax(row);
                ++generated[size_t(i)];
            }
        }
    };
    if (together) {
        std::vector<int> all;
        for (int i = 0; i < n; ++i) all.push_back(i);
        run(all);
    } else {
        for (int i = 0; i < n; ++i) run({i});
    }
    std::vector<float> out;
    for (const auto & s : per_seq) out.insert(out.end(), s.begin(), s.end());
    return out;
}

}  // namespace

TEST(BlockSchedule, MicroBatchesPrefillChunksAndKvOffloadAreBitIdentical) {
    std::vector<std::string> models;
    for (const char * arch : kFixtures) models.push_back(fixture_dir(arch));
    models.push_back(deep_model_dir() + "/model");
    // sliding windows of 8 (every layer; some layers) and yarn, with their own 40- and 23-token prompts
    for (const char * name : {"mistral-window", "qwen2-window", "qwen3-yarn"})
        models.push_back(std::string(ZT_TEST_DATA) + "/hf/" + name);
    for (const std::string & model : models) {
        const std::string arch = fs::path(model).filename().string();
        const bool long_fixture = fs::exists(model + "/logits_chunked.bin");
        const auto prompts = long_fixture ? json::parse(read_file(model + "/reference.json"))["prompts"]
                                                .get<std::vector<std::vector<int32_t>>>()
                                          : fixture_prompts("llama");
        const std::vector<float> want = decode_logits(model, prompts, false, 1, 1 << 20, false);
        struct Variant { int micro, chunk; bool offload; };
        for (const Variant v : {Variant{1, 1 << 20, true}, Variant{2, 4, false}, Variant{3, 3, true}, Variant{4, 1, true}}) {
            const std::vector<float> got = decode_logits(model, prompts, true, v.micro, v.chunk, v.offload);
            ASSERT_EQ(got.size(), want.size());
            EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
                << arch << ": " << v.micro << " micro-batches, prefill chunk " << v.chunk << ", kv offload "
                << v.offload << " changed the logits";
        }
    }
}

TEST(ThroughputJob, MicroBatchesChunksAndKvOffloadOnTwoRanksMatchThePlainRun) {
    REQUIRE_JOB_MPI();
    const std::string dir = make_temp_dir("tp_job");
    std::ofstream in(dir + "/in.jsonl");
    for (int i = 0; i < 11; ++i) {
        json r = {{"custom_id", fmt::format("r{}", i)}, {"max_tokens", 4 + i % 5}, {"logprobs", true}};
        std::vector<int> ids;
        for (int t = 0; t < 3 + (i * 7) % 19; ++t) ids.push_back(3 + (i * 31 + t * 17) % 250);
        r["prompt_token_ids"] = ids;
        if (i % 3 == 1) r["temperature"] = 0.9, r["seed"] = 100 + i, r["top_p"] = 0.8;
        in << r.dump() << "\n";
    }
    in.close();
    const std::string model = fixture_dir("qwen3");
    const auto ref = run_job_command(job_command(0, write_job_config(dir, "ref", model, dir + "/in.jsonl", {}, "none")));
    ASSERT_EQ(ref.status, 0) << ref.log;
    const auto want = read_job_records(dir + "/ref.jsonl");
    ASSERT_EQ(want.size(), 11u);
    const json variant = {{"batch_size", 2}, {"micro_batches", 3}, {"prefill_chunk", 4}, {"kv_cache", {{"offload", "cpu"}}}};
    const auto r = run_job_command(job_command(2, write_job_config(dir, "blocks", model, dir + "/in.jsonl", variant)));
    ASSERT_EQ(r.status, 0) << r.log;
    const auto got = read_job_records(dir + "/blocks.jsonl");
    ASSERT_EQ(got.size(), want.size());
    for (const auto & [id, w] : want) {
        ASSERT_TRUE(got.count(id)) << id;
        EXPECT_EQ(got.at(id)["token_ids"], w["token_ids"]) << id;
        EXPECT_EQ(got.at(id)["logprobs"], w["logprobs"]) << id;
        EXPECT_EQ(got.at(id)["finish_reason"], w["finish_reason"]) << id;
    }
    // the metrics file beside the output
    const json m = json::parse(read_file(dir + "/blocks.jsonl.metrics.json"));
    EXPECT_EQ(m["ranks"], 2);
    EXPECT_EQ(m["requests"]["completed"], 11);
    EXPECT_EQ(m["bytes_fetched_per_rank"].size(), 2u);
    EXPECT_GT(m["bytes_fetched_per_rank"][0].get<double>(), 0);
    EXPECT_GT(m["per_rank"][0]["kv_bytes_moved"].get<double>(), 0);
    EXPECT_GT(m["tokens_per_second"].get<double>(), 0);
    for (const char * stage : {"load", "fetch", "all_gather", "compute", "kv", "write"})
        EXPECT_TRUE(m["stage_seconds"].contains(stage)) << stage;
    EXPECT_HAS(r.log, "3 micro-batch(es) of 2");
    fs::remove_all(dir);
}

namespace {

// Runs an embed job of the fixture's prompts (token ids) and returns custom_id -> embedding.
std::map<std::string, std::vector<float>> embed_fixture(const std::string & dir, const std::string & model,
                                                        const std::string & name, int np, const json & extra) {
    std::ofstream in(dir + "/" + name + ".in.jsonl");
    const auto prompts = fixture_prompts("llama");   // same prompts for every fixture
    for (size_t i = 0; i < prompts.size(); ++i) in << json{{"custom_id", fmt::format("p{}", i)}, {"input", prompts[i]}}.dump() << "\n";
    in.close();
    json z = {{"task", "embed"}, {"prefill_chunk", 4}};
    for (auto & [k, v] : extra.items()) z[k] = v;
    const auto r = run_job_command(job_command(np, write_job_config(dir, name, model, dir + "/" + name + ".in.jsonl", z)));
    EXPECT_EQ(r.status, 0) << r.log;
    std::map<std::string, std::vector<float>> out;
    for (const auto & [id, rec] : read_job_records(dir + "/" + name + ".jsonl")) {
        EXPECT_FALSE(rec.contains("error")) << rec.dump();
        if (rec.contains("embedding")) out[id] = rec["embedding"].get<std::vector<float>>();
        EXPECT_EQ(rec["usage"]["prompt_tokens"], rec["usage"]["total_tokens"]);
    }
    return out;
}

}  // namespace

TEST(EmbedJob, EveryFixtureAndPoolingMatchesHfCausalAndBidirectional) {
    REQUIRE_JOB_MPI();
    const std::string dir = make_temp_dir("embed_hf");
    for (const char * arch : kFixtures) {
        const json ref = json::parse(read_file(fixture_dir(arch) + "/embeddings.json"));
        ASSERT_EQ(fixture_prompts(arch), fixture_prompts("llama"));
        // a bidirectional copy: config.json says "is_causal": false (gte-Qwen2 style)
        const std::string bidi = dir + "/" + arch + "-bidi";
        fs::create_directories(bidi);
        json cfg = json::parse(read_file(fixture_dir(arch) + "/config.json"));
        cfg["is_causal"] = false;
        std::ofstream(bidi + "/config.json") << cfg.dump(2);
        fs::create_symlink(fixture_dir(arch) + "/model.safetensors", bidi + "/model.safetensors");
        struct Case { const char * model_kind; const char * pooling; int np; };
        for (const Case c : {Case{"causal", "last", 2}, Case{"causal", "mean", 0}, Case{"non_causal", "last", 0},
                             Case{"non_causal", "mean", 2}}) {
            const bool causal = std::string(c.model_kind) == "causal";
            const std::string name = fmt::format("{}-{}-{}", arch, c.model_kind, c.pooling);
            const auto got = embed_fixture(dir, causal ? fixture_dir(arch) : bidi, name, c.np,
                                           {{"embedding", {{"pooling", c.pooling}, {"normalize", false}}}});
            const auto & want = ref[c.model_kind][c.pooling];
            ASSERT_EQ(got.size(), want.size()) << name;
            for (size_t i = 0; i < want.size(); ++i) {
                const auto & v = got.at(fmt::format("p{}", i));
                const double cs = cosine(v, want[i].get<std::vector<float>>());
                EXPECT_GE(cs, 1 - 1e-5) << name << " prompt " << i;
            }
        }
    }
    fs::remove_all(dir);
}

TEST(EmbedJob, NormalizeInstructionNpyIndexResumeAndBadLines) {
    REQUIRE_JOB_MPI();
    const std::string dir = make_temp_dir("embed_npy");
    // a synthetic model with the Llama 2 tokenizer, so text inputs and instructions are tokenized
    const std::string tok = dir + "/tok", model = dir + "/model";
    fs::create_directories(tok);
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2";
    ASSERT_EQ(std::system(("xz -dc " + src + "/tokenizer.json.xz > " + tok + "/tokenizer.json && cp " + src +
                           "/tokenizer_config.json " + tok + "/").c_str()), 0);
    SynthOptions o;
    o.arch = "qwen2"; o.layers = 2; o.hidden = 64; o.heads = 4; o.kv_heads = 2; o.intermediate = 96;
    o.tokenizer_dir = tok; o.out_dir = model; o.dtype = "fp32";
    synthesize_model(o);
    const std::vector<std::string> lines = {
        R"({"custom_id": "a", "input": "The quick brown fox"})",
        R"({"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {"input": "jumps over", "model": "m"}})",
        R"({"custom_id": "c", "input": "the lazy dog", "instruction": "Query: "})",
        R"({"custom_id": "d", "input": "Query: the lazy dog", "instruction": ""})",
        R"({"custom_id": "e", "input": ["x", "y"]})",
        R"({"custom_id": "f", "method": "POST", "url": "/v1/completions", "body": {"input": "z"}})",
        R"({"custom_id": "g", "input": )",
        R"({"custom_id": "a", "input": "again"})",
        R"({"custom_id": "h", "input": [5, 6, 7, 8, 9]})"};
    std::ofstream in(dir + "/in.jsonl");
    for (const auto & l : lines) in << l << "\n";
    in.close();
    // JSONL output, normalised (the default), 2 ranks, chunked prefill
    const auto r1 = run_job_command(job_command(2, write_job_config(dir, "emb", model, dir + "/in.jsonl",
                                                                    {{"task", "embed"}, {"prefill_chunk", 2}})));
    ASSERT_EQ(r1.status, 0) << r1.log;
    const auto recs = read_job_records(dir + "/emb.jsonl");
    ASSERT_EQ(recs.size(), lines.size()) << "one record per line";
    for (const char * id : {"a", "b", "c", "d", "h"}) {
        ASSERT_TRUE(recs.at(id).contains("embedding")) << recs.at(id).dump();
        const auto v = recs.at(id)["embedding"].get<std::vector<float>>();
        ASSERT_EQ(v.size(), 64u);
        double n2 = 0;
        for (float x : v) n2 += double(x) * x;
        EXPECT_NEAR(n2, 1.0, 1e-5) << id;
    }
    EXPECT_EQ(recs.at("c")["embedding"], recs.at("d")["embedding"]) << "instruction + input = the same text";
    EXPECT_EQ(recs.at("line 5")["error"]["code"], "invalid_request");
    EXPECT_HAS(recs.at("line 5")["error"]["message"].get<std::string>(), "one input per line");
    EXPECT_EQ(recs.at("line 6")["error"]["code"], "invalid_request");
    EXPECT_HAS(recs.at("line 6")["error"]["message"].get<std::string>(), "/v1/embeddings");
    EXPECT_EQ(recs.at("line 7")["error"]["code"], "invalid_json");
    EXPECT_EQ(recs.at("line 8")["error"]["code"], "duplicate_custom_id");

    // .npy output: rows in input order, zeros where a line failed, the index names the rows; bit-equal to JSONL
    const json npy_cfg = {{"task", "embed"}, {"prefill_chunk", 2}, {"output", dir + "/emb.npy"}, {"resume", true}};
    const auto r2 = run_job_command(job_command(2, write_job_config(dir, "npy", model, dir + "/in.jsonl", npy_cfg)));
    ASSERT_EQ(r2.status, 0) << r2.log;
    const NpyMatrix m = read_npy_f32(dir + "/emb.npy");
    ASSERT_EQ(m.rows, int64_t(lines.size()));
    ASSERT_EQ(m.cols, 64);
    const auto index = read_job_records(EmbeddingOutput::index_path(dir + "/emb.npy"));
    EXPECT_EQ(index.size(), lines.size());
    for (const char * id : {"a", "b", "c", "d", "h"}) {
        const int64_t row = index.at(id)["row"];
        const auto want = recs.at(id)["embedding"].get<std::vector<float>>();
        EXPECT_EQ(std::memcmp(m.data.data() + row * 64, want.data(), 64 * sizeof(float)), 0) << id;
    }
    EXPECT_EQ(index.at("a")["row"], 0);
    EXPECT_EQ(index.at("h")["row"], 8);
    for (int64_t c = 0; c < 64; ++c) EXPECT_EQ(m.data[size_t(4 * 64 + c)], 0.0f) << "the failed line's row stays zero";
    // rerun: everything is already there; nothing is written twice
    const auto r3 = run_job_command(job_command(2, write_job_config(dir, "npy", model, dir + "/in.jsonl", npy_cfg)));
    ASSERT_EQ(r3.status, 0) << r3.log;
    EXPECT_EQ(read_job_records(EmbeddingOutput::index_path(dir + "/emb.npy")).size(), lines.size());
    EXPECT_HAS(r3.log, "already in");
    fs::remove_all(dir);
}

// Chunked prefill bounds activation memory by the chunk, not the prompt; the offloaded KV cache leaves only a ring
// of layers on the device (fixture: 2 layers, so the ring of prefetch + 2 = 4 layer blocks is the whole cache;
// a deeper synthetic model shows the saving).
TEST(BlockSchedule, PrefillChunksBoundActivationsAndKvOffloadLeavesARing) {
    const std::string model = deep_model_dir() + "/model";
    std::vector<int32_t> prompt;
    for (int i = 0; i < 120; ++i) prompt.push_back(3 + (i * 37) % 200);
    auto measure = [&](int chunk, bool offload, std::vector<float> & logits) {
        const ModelConfig cfg = ModelConfig::load(model);
        const Checkpoint ckpt(model);
        const ModelWeights w = bind_weights(ckpt, cfg);
        auto backend = make_cpu_backend(1);
        ForwardOptions fo;
        fo.kv_offload = offload;
        Forward fwd(cfg, w, *backend, fo);
        fwd.reserve(1, 128);
        for (int32_t past = 0; past < int32_t(prompt.size()); past += chunk) {
            SequenceStep s;
            s.past_len = past;
            s.tokens = prompt.data() + past;
            s.n_tokens = std::min<int32_t>(chunk, int32_t(prompt.size()) - past);
            s.emit = past + s.n_tokens == int32_t(prompt.size());
            fwd.step({s}, logits);
        }
        return backend->memory_stats().device_by_purpose;
    };
    std::vector<float> whole_logits, chunk_logits, off_logits;
    auto whole = measure(1 << 20, false, whole_logits);
    auto chunked = measure(8, false, chunk_logits);
    auto off = measure(8, true, off_logits);
    EXPECT_EQ(whole_logits, chunk_logits);
    EXPECT_EQ(whole_logits, off_logits);
    EXPECT_LT(chunked["activations"] * 8, whole["activations"]) << "activations: chunks of 8 tokens vs 120 tokens";
    EXPECT_EQ(off.count("KV cache"), 0u) << "offloaded: no whole KV cache on the device";
    EXPECT_EQ(off["KV cache ring"] * 2, whole["KV cache"]) << "ring of prefetch 2 + 2 = 4 of 8 layers";
}
