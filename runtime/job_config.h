// JobConfig: DeepSpeed's ds.json plus a "ztinfer" object that says what job to run. Relative paths resolve
// against the config file's folder; unknown keys are a warning that names them.
//
//   { "zero_optimization": {...}, "ztinfer": { "model": "demo-model", "task": "generate",
//     "input": "prompts.jsonl", "output": "out.jsonl", "device": "cpu", "batch_size": 8,
//     "max_new_tokens": 64, "temperature": 0, "top_k": 0, "top_p": 1.0, "seed": 0 } }
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zt {

struct SamplingDefaults {
    int64_t max_new_tokens = 128;
    double temperature = 0.0;   // 0 = greedy
    int64_t top_k = 0;          // 0 = off
    double top_p = 1.0;         // 1 = off
    uint64_t seed = 0;          // job seed; a request without "seed" derives its own from this and custom_id
};

struct JobConfig {
    std::string config_path;    // the ds.json this came from (absolute)
    std::string model;          // HF model directory (absolute)
    std::string task = "generate";
    std::string input;          // JSONL (absolute)
    std::string output;         // JSONL (absolute)
    std::string device = "auto";
    int64_t batch_size = 8;
    int64_t threads = 0;        // CPU backend threads (0 = all cores)
    bool resume = true;         // skip custom_ids already in output (a rerun after a crash or preemption)
    SamplingDefaults sampling;
    nlohmann::json deepspeed;   // the whole ds.json, for the parts later issues read
    std::vector<std::string> warnings;   // unknown keys, named

    // Reads and validates ds.json; throws zt::Error naming the file and key for anything wrong.
    static JobConfig load(const std::string & path);
    static JobConfig from_json(const nlohmann::json & j, const std::string & path);
};

}  // namespace zt
