// ds.json parsing: paths resolve against the config's folder, unknown keys are named warnings, bad values
// are errors naming the key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "runtime/base/error.h"
#include "runtime/job/job_config.h"

using namespace zt;
using json = nlohmann::json;

TEST(JobConfig, ResolvesPathsAndWarnsOnUnknownKeys) {
    json j = {{"zero_optimization", {{"stage", 3}}},
              {"mystery", 1},
              {"ztinfer", {{"model", "m"}, {"input", "in.jsonl"}, {"output", "/abs/out.jsonl"}, {"colour", "red"},
                           {"batch_size", 3}, {"top_p", 0.5}}}};
    const JobConfig c = JobConfig::from_json(j, "/cfg/dir/ds.json");
    EXPECT_EQ(c.model, "/cfg/dir/m");
    EXPECT_EQ(c.input, "/cfg/dir/in.jsonl");
    EXPECT_EQ(c.output, "/abs/out.jsonl");
    EXPECT_EQ(c.batch_size, 3);
    EXPECT_DOUBLE_EQ(c.sampling.top_p, 0.5);
    ASSERT_EQ(c.warnings.size(), 2u);
    EXPECT_NE(c.warnings[0].find("mystery"), std::string::npos);
    EXPECT_NE(c.warnings[1].find("ztinfer.colour"), std::string::npos);
}

TEST(JobConfig, RejectsBadValuesNamingTheKey) {
    auto expect_fail = [](json z, const std::string & needle) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        try {
            JobConfig::from_json(j, "/x/ds.json");
            ADD_FAILURE() << "accepted " << z.dump();
        } catch (const Error & e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("/x/ds.json"), std::string::npos) << e.what();
        }
    };
    expect_fail({{"task", "train"}}, "ztinfer.task");
    expect_fail({{"device", "tpu"}}, "ztinfer.device");
    expect_fail({{"batch_size", 0}}, "ztinfer.batch_size");
    expect_fail({{"top_p", 0}}, "ztinfer.top_p");
    expect_fail({{"temperature", -1}}, "ztinfer.temperature");
    expect_fail({{"max_new_tokens", 0}}, "ztinfer.max_new_tokens");
    expect_fail({{"batch_size", "eight"}}, "ztinfer.batch_size");
    expect_fail({{"model", nullptr}}, "ztinfer.model");
    EXPECT_THROW(JobConfig::from_json(json{{"zero_optimization", {}}}, "/x/ds.json"), Error);
}

TEST(JobConfig, ReadsStreamingKeysAndNamesEveryUnusedDeepSpeedKey) {
    json j = {{"train_batch_size", 8},
              {"bf16", {{"enabled", true}}},
              {"zero_optimization", {{"stage", 3}, {"stage3_param_persistence_threshold", 500},
                                     {"stage3_prefetch_bucket_size", 1000}, {"overlap_comm", true},
                                     {"offload_param", {{"device", "nvme"}, {"nvme_path", "swap"},
                                                        {"buffer_count", 3}, {"buffer_size", 100000000}}}}},
              {"aio", {{"block_size", 262144}, {"queue_depth", 4}, {"thread_count", 2}}},
              {"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}, {"prefetch_depth", 3},
                           {"overlap", false}, {"resident_layers", 1}, {"partition_embeddings", true},
                           {"trace", "t.json"}, {"collective_timeout_s", 20}, {"nvme_reuse", false}}}};
    const JobConfig c = JobConfig::from_json(j, "/cfg/ds.json");
    const StreamingConfig & s = c.streaming;
    EXPECT_EQ(s.offload_device, "nvme");
    EXPECT_EQ(s.nvme_path, "/cfg/swap");
    EXPECT_EQ(s.buffer_count, 3);
    EXPECT_EQ(s.persistence_threshold, 500);
    EXPECT_EQ(s.aio_block_size, 262144);
    EXPECT_EQ(s.aio_queue_depth, 4);
    EXPECT_EQ(s.prefetch_depth, 3);
    EXPECT_FALSE(s.overlap);
    EXPECT_EQ(s.resident_layers, 1);
    EXPECT_TRUE(s.partition_embeddings);
    EXPECT_EQ(s.trace, "/cfg/t.json");
    EXPECT_DOUBLE_EQ(s.collective_timeout_s, 20);
    EXPECT_FALSE(s.nvme_reuse);
    std::string all;
    for (const auto & w : c.warnings) all += w + "\n";
    for (const char * key : {"train_batch_size", "bf16", "zero_optimization.stage3_prefetch_bucket_size",
                             "zero_optimization.overlap_comm", "zero_optimization.offload_param.buffer_size",
                             "aio.thread_count"})
        EXPECT_NE(all.find(key), std::string::npos) << key << " not named in:\n" << all;
    for (const char * honoured : {"offload_param.device", "aio.block_size", "stage3_param_persistence_threshold"})
        EXPECT_EQ(all.find(honoured), std::string::npos) << honoured << " is honoured, not unused:\n" << all;
    // no streaming section at all: the whole model on every rank, no warnings
    const JobConfig plain = JobConfig::from_json(json{{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}}, "/c/ds.json");
    EXPECT_EQ(plain.streaming.offload_device, "none");
    EXPECT_TRUE(plain.streaming.nvme_reuse) << "NVMe slice files are reused by default";
    EXPECT_TRUE(plain.warnings.empty());
}

TEST(JobConfig, RejectsBadStreamingValues) {
    auto expect_fail = [](json j, const std::string & needle) {
        j["ztinfer"] = {{"model", "m"}, {"input", "i"}, {"output", "o"}};
        try {
            JobConfig::from_json(j, "/x/ds.json");
            ADD_FAILURE() << "accepted " << j.dump();
        } catch (const Error & e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_fail({{"zero_optimization", {{"offload_param", {{"device", "disk"}}}}}}, "offload_param.device");
    expect_fail({{"zero_optimization", {{"offload_param", {{"device", "nvme"}}}}}}, "nvme_path");
    expect_fail({{"aio", {{"block_size", 1000}}}}, "aio.block_size");
    expect_fail({{"aio", {{"queue_depth", 0}}}}, "aio.queue_depth");
    expect_fail({{"zero_optimization", {{"stage3_param_persistence_threshold", -1}}}}, "persistence_threshold");
}

TEST(JobConfig, ReadsGpuKeys) {
    auto load = [](json z) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        return JobConfig::from_json(j, "/x/ds.json");
    };
    const JobConfig d = load(json::object());
    EXPECT_EQ(d.gpu.max_memory_bytes, 0u);
    EXPECT_EQ(d.gpu.compute_dtype, "auto");
    EXPECT_EQ(d.gpu.communicator, "auto");
    EXPECT_EQ(load({{"max_gpu_memory", "24GiB"}}).gpu.max_memory_bytes, size_t(24) << 30);
    EXPECT_EQ(load({{"max_gpu_memory", "40 GB"}}).gpu.max_memory_bytes, size_t(40000000000));
    EXPECT_EQ(load({{"max_gpu_memory", 1048576}}).gpu.max_memory_bytes, size_t(1048576));
    EXPECT_DOUBLE_EQ(load({{"max_gpu_memory", 0.9}}).gpu.max_memory_fraction, 0.9);
    const JobConfig g = load({{"compute_dtype", "fp32"}, {"communicator", "mpi"}});
    EXPECT_EQ(g.gpu.compute_dtype, "fp32");
    EXPECT_EQ(g.gpu.communicator, "mpi");
    EXPECT_EQ(load({{"communicator", "tcp"}}).gpu.communicator, "tcp");
    EXPECT_TRUE(g.warnings.empty()) << g.warnings.front();
    auto expect_fail = [&](json z, const std::string & needle) {
        try {
            load(z);
            ADD_FAILURE() << "accepted " << z.dump();
        } catch (const Error & e) {
            EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
        }
    };
    expect_fail({{"max_gpu_memory", "24 parsecs"}}, "unknown unit");
    expect_fail({{"max_gpu_memory", "lots"}}, "is not a size");
    expect_fail({{"max_gpu_memory", -1}}, "max_gpu_memory");
    expect_fail({{"max_gpu_memory", 1e300}}, "max_gpu_memory");   // was size_t(1e300): undefined
    expect_fail({{"compute_dtype", "int8"}}, "compute_dtype");
    expect_fail({{"communicator", "gloo"}}, "communicator");
}

TEST(JobConfig, ReadsBatchJobAndEmbeddingKeys) {
    auto load = [](json z) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        return JobConfig::from_json(j, "/x/ds.json");
    };
    const JobConfig d = load(json::object());
    EXPECT_EQ(d.batch.micro_batches, 1);
    EXPECT_EQ(d.batch.prefill_chunk, 512);
    EXPECT_EQ(d.batch.kv_offload, "none");
    EXPECT_EQ(d.embedding.pooling, "last");
    EXPECT_TRUE(d.embedding.normalize);
    const JobConfig c = load({{"task", "embed"}, {"micro_batches", 4}, {"prefill_chunk", 64},
                              {"kv_cache", {{"offload", "cpu"}}},
                              {"embedding", {{"pooling", "mean"}, {"normalize", false}, {"instruction", "Q: "}}}});
    EXPECT_EQ(c.task, "embed");
    EXPECT_EQ(c.batch.micro_batches, 4);
    EXPECT_EQ(c.batch.prefill_chunk, 64);
    EXPECT_EQ(c.batch.kv_offload, "cpu");
    EXPECT_EQ(c.embedding.pooling, "mean");
    EXPECT_FALSE(c.embedding.normalize);
    EXPECT_EQ(c.embedding.instruction, "Q: ");
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    EXPECT_FALSE(load({{"kv_cache", {{"offload", "cpu"}, {"dtype", "fp8"}}}}).warnings.empty());
    auto expect_fail = [&](json z, const std::string & needle) {
        try {
            load(z);
            ADD_FAILURE() << "accepted " << z.dump();
        } catch (const Error & e) {
            EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
        }
    };
    expect_fail({{"task", "classify"}}, "\"embed\"");
    expect_fail({{"micro_batches", 0}}, "micro_batches");
    expect_fail({{"prefill_chunk", 0}}, "prefill_chunk");
    expect_fail({{"kv_cache", {{"offload", "nvme"}}}}, "kv_cache.offload");
    expect_fail({{"kv_cache", "cpu"}}, "kv_cache");
    expect_fail({{"embedding", {{"pooling", "cls"}}}}, "pooling");
}

namespace {
std::string write_temp(const std::string & name, const std::string & text) {
    const std::string path = ::testing::TempDir() + "zt_job_config_" + std::to_string(::getpid()) + "_" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}
std::string error_of(const json & j) {
    try {
        JobConfig::from_json(j, "/x/ds.json");
    } catch (const Error & e) {
        return e.what();
    }
    return "(accepted)";
}
}  // namespace

TEST(JobConfig, DeeplyNestedUnknownKeyIsAnErrorNotACrash) {
    // 200,000 levels parse, but the config is copied (JobConfig::deepspeed) and values are printed in messages:
    // both recursed once per level, a stack overflow
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    for (const std::string & where : {"\"mystery\": " + deep + ", \"ztinfer\": {\"model\": \"m\", \"input\": \"i\", "
                                      "\"output\": \"o\"}",
                                      "\"ztinfer\": {\"model\": \"m\", \"input\": \"i\", \"output\": \"o\", "
                                      "\"batch_size\": " + deep + "}"}) {
        const std::string path = write_temp("deep.json", "{" + where + "}");
        try {
            JobConfig::load(path);
            ADD_FAILURE() << "accepted";
        } catch (const Error & e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("nested"), std::string::npos) << msg.substr(0, 500);
            EXPECT_NE(msg.find(path), std::string::npos) << msg.substr(0, 500);
            EXPECT_LT(msg.size(), 600u);
        }
        std::remove(path.c_str());
    }
}

TEST(JobConfig, NonIntegersAreRejectedWithTheirValue) {
    const json base = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
    json j = base;
    j["ztinfer"]["batch_size"] = 8.7;   // was truncated to 8 silently
    std::string msg = error_of(j);
    EXPECT_NE(msg.find("ztinfer.batch_size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8.7"), std::string::npos) << msg;
    j = base;
    j["ztinfer"]["max_new_tokens"] = 1e300;   // was rejected as "-9223372036854775808 must be >= 1"
    msg = error_of(j);
    EXPECT_NE(msg.find("ztinfer.max_new_tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("= 1e+300"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("= -9223372036854775808"), std::string::npos) << msg;
    j = base;
    j["ztinfer"]["seed"] = -1;
    EXPECT_NE(error_of(j).find("ztinfer.seed"), std::string::npos);
    j = base;
    j["ztinfer"]["threads"] = std::string(300, '9');
    msg = error_of(j);
    EXPECT_NE(msg.find("characters)"), std::string::npos) << msg;   // a long value is cut in the message
    EXPECT_LT(msg.size(), 500u) << msg;
    j = base;
    j["ztinfer"]["batch_size"] = 16;
    EXPECT_EQ(JobConfig::from_json(j, "/x/ds.json").batch_size, 16);
}

TEST(JobConfig, TemperatureBelowTheFloorIsGreedy) {
    json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}, {"temperature", 1e-320}}}};
    EXPECT_EQ(JobConfig::from_json(j, "/x/ds.json").sampling.temperature, 0.0);
    j["ztinfer"]["temperature"] = 0.5;
    EXPECT_EQ(JobConfig::from_json(j, "/x/ds.json").sampling.temperature, 0.5);
}

TEST(JobConfig, CountsThatBecomeIntAreBounded) {
    // "resident_layers" is passed on as an int: 2^32 + 1 became 1
    json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}, {"resident_layers", 4294967297LL}}}};
    EXPECT_NE(error_of(j).find("ztinfer.resident_layers"), std::string::npos) << error_of(j);
}

// "ztinfer.tokenizer": a tokenizer folder (resolved like the other paths) that must exist and hold tokenizer.json.
TEST(JobConfig, TokenizerFolderIsResolvedAndChecked) {
    const std::string data = std::string(ZT_TEST_DATA) + "/gguf_models";
    json j = {{"ztinfer", {{"model", "llama-f32.gguf"}, {"tokenizer", "tokenizer"}, {"input", "i"}, {"output", "o"}}}};
    const JobConfig c = JobConfig::from_json(j, data + "/ds.json");
    EXPECT_EQ(c.model, data + "/llama-f32.gguf");
    EXPECT_EQ(c.tokenizer, data + "/tokenizer");
    EXPECT_TRUE(c.warnings.empty());
    EXPECT_TRUE(JobConfig::from_json(json{{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}}, "/x/ds.json")
                    .tokenizer.empty());
    for (const auto & [tok, needle] : std::vector<std::pair<std::string, std::string>>{
             {"no-such-folder", "is not a folder"}, {"llama-f32.gguf", "is not a folder"}, {".", "has no tokenizer.json"}}) {
        j["ztinfer"]["tokenizer"] = tok;
        try {
            JobConfig::from_json(j, data + "/ds.json");
            ADD_FAILURE() << "accepted tokenizer " << tok;
        } catch (const Error & e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("ztinfer.tokenizer"), std::string::npos) << e.what();
        }
    }
}

// "auto" for the planner's keys (planner.h's kPlanAutoKeys): accepted, recorded under the planner's name, the
// field kept at its default; offload "auto" needs no nvme_path.
TEST(JobConfig, AutoKeysAreRecordedForThePlanner) {
    auto load = [](json zero, json z) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        if (!zero.is_null()) j["zero_optimization"] = zero;
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        return JobConfig::from_json(j, "/x/ds.json");
    };
    const JobConfig d = load(nullptr, json::object());
    EXPECT_TRUE(d.auto_keys.empty());
    struct Case { json zero, z; const char * name; };
    const Case cases[] = {
        {{{"offload_param", {{"device", "auto"}}}}, json::object(), "tier"},
        {nullptr, {{"resident_layers", "auto"}}, "resident_layers"},
        {nullptr, {{"batch_size", "auto"}}, "batch_size"},
        {nullptr, {{"micro_batches", "auto"}}, "micro_batches"},
        {nullptr, {{"prefetch_depth", "auto"}}, "prefetch_depth"},
        {nullptr, {{"kv_cache", {{"offload", "auto"}}}}, "kv_offload"}};
    for (const Case & c : cases) {
        const JobConfig a = load(c.zero, c.z);
        EXPECT_EQ(a.auto_keys, std::set<std::string>{c.name}) << c.z.dump() << c.zero.dump();
        EXPECT_TRUE(a.warnings.empty()) << c.name << ": " << a.warnings.front();
        // the field keeps its default
        EXPECT_EQ(a.streaming.offload_device, d.streaming.offload_device) << c.name;
        EXPECT_EQ(a.streaming.resident_layers, d.streaming.resident_layers) << c.name;
        EXPECT_EQ(a.batch_size, d.batch_size) << c.name;
        EXPECT_EQ(a.batch.micro_batches, d.batch.micro_batches) << c.name;
        EXPECT_EQ(a.streaming.prefetch_depth, d.streaming.prefetch_depth) << c.name;
        EXPECT_EQ(a.batch.kv_offload, d.batch.kv_offload) << c.name;
    }
    // all at once, beside keys set by hand (which stay as set), nvme_path given for a possible "nvme"
    const JobConfig all = load({{"offload_param", {{"device", "auto"}, {"nvme_path", "swap"}}}},
                               {{"resident_layers", "auto"}, {"batch_size", "auto"}, {"micro_batches", "auto"},
                                {"prefetch_depth", "auto"}, {"kv_cache", {{"offload", "auto"}}}, {"prefill_chunk", 64}});
    EXPECT_EQ(all.auto_keys, (std::set<std::string>{"tier", "resident_layers", "batch_size", "micro_batches",
                                                     "prefetch_depth", "kv_offload"}));
    EXPECT_EQ(all.streaming.nvme_path, "/x/swap");
    EXPECT_EQ(all.batch.prefill_chunk, 64);
    // a key set by hand is not "auto"
    const JobConfig some = load({{"offload_param", {{"device", "cpu"}}}}, {{"batch_size", 4}, {"micro_batches", "auto"}});
    EXPECT_EQ(some.auto_keys, std::set<std::string>{"micro_batches"});
    EXPECT_EQ(some.streaming.offload_device, "cpu");
    EXPECT_EQ(some.batch_size, 4);
}

TEST(JobConfig, OtherStringsForAutoKeysNameTheKeyAndAuto) {
    auto expect_fail = [](json zero, json z, const std::string & key) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        if (!zero.is_null()) j["zero_optimization"] = zero;
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        try {
            JobConfig::from_json(j, "/x/ds.json");
            ADD_FAILURE() << "accepted " << j.dump();
        } catch (const Error & e) {
            const std::string m = e.message();
            EXPECT_NE(m.find(key), std::string::npos) << m;
            EXPECT_NE(m.find("\"auto\""), std::string::npos) << m;
            EXPECT_NE(m.find("/x/ds.json"), std::string::npos) << m;
        }
    };
    expect_fail({{"offload_param", {{"device", "Auto"}}}}, json::object(), "zero_optimization.offload_param.device");
    expect_fail({{"offload_param", {{"device", 3}}}}, json::object(), "zero_optimization.offload_param.device");
    for (const char * key : {"resident_layers", "batch_size", "micro_batches", "prefetch_depth"}) {
        expect_fail(nullptr, {{key, "automatic"}}, std::string("ztinfer.") + key);
        expect_fail(nullptr, {{key, "4"}}, std::string("ztinfer.") + key);
        expect_fail(nullptr, {{key, 2.5}}, std::string("ztinfer.") + key);
        expect_fail(nullptr, {{key, -1}}, std::string("ztinfer.") + key);
    }
    expect_fail(nullptr, {{"kv_cache", {{"offload", "nvme"}}}}, "ztinfer.kv_cache.offload");
    expect_fail(nullptr, {{"kv_cache", {{"offload", true}}}}, "ztinfer.kv_cache.offload");
}

TEST(JobConfig, ReadsProfileAndHostMemory) {
    auto load = [](json z) {
        json j = {{"ztinfer", {{"model", "m"}, {"input", "i"}, {"output", "o"}}}};
        for (auto & [k, v] : z.items()) j["ztinfer"][k] = v;
        return JobConfig::from_json(j, "/cfg/ds.json");
    };
    const JobConfig d = load(json::object());
    EXPECT_EQ(d.profile, "");
    EXPECT_EQ(d.host_memory_bytes, 0u);
    const JobConfig c = load({{"profile", "prof/h100.json"}, {"host_memory", "200GiB"}});
    EXPECT_EQ(c.profile, "/cfg/prof/h100.json");
    EXPECT_EQ(c.host_memory_bytes, size_t(200) << 30);
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    EXPECT_EQ(load({{"profile", "/abs/p.json"}}).profile, "/abs/p.json");
    EXPECT_EQ(load({{"host_memory", "1.5 GB"}}).host_memory_bytes, size_t(1500000000));
    EXPECT_EQ(load({{"host_memory", 123456789012ull}}).host_memory_bytes, size_t(123456789012ull));
    auto expect_fail = [&](json z, const std::string & needle) {
        try {
            load(z);
            ADD_FAILURE() << "accepted " << z.dump();
        } catch (const Error & e) {
            EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
            EXPECT_NE(e.message().find("ztinfer."), std::string::npos) << e.message();
        }
    };
    expect_fail({{"host_memory", "lots"}}, "is not a size");
    expect_fail({{"host_memory", "24 parsecs"}}, "unknown unit");
    expect_fail({{"host_memory", 0}}, "host_memory");
    expect_fail({{"host_memory", -5}}, "host_memory");
    expect_fail({{"host_memory", true}}, "host_memory");
    expect_fail({{"profile", 7}}, "profile");
}
