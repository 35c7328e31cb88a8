// Parsing and validation of ds.json + its "ztinfer" section (see job_config.h).
#include "runtime/job_config.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "runtime/error.h"

namespace fs = std::filesystem;

namespace zt {

namespace {

// DeepSpeed top-level keys we accept silently (inference and training configs are often shared).
const std::set<std::string> kDeepSpeedKeys = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print",
    "wall_clock_breakdown", "zero_optimization", "fp16", "bf16", "amp", "aio", "optimizer", "scheduler",
    "gradient_clipping", "prescale_gradients", "zero_allow_untested_optimizer", "activation_checkpointing",
    "flops_profiler", "tensorboard", "wandb", "csv_monitor", "comms_logger", "tensor_parallel", "dtype",
    "replace_with_kernel_inject", "communication_data_type", "seq_parallel_communication_data_type",
    "elasticity", "checkpoint", "data_types", "compression_training", "monitor_config", "autotuning",
    "memory_breakdown", "dump_state", "hybrid_engine", "nebula", "zero_force_ds_cpu_optimizer"};

const std::set<std::string> kZtKeys = {
    "model", "task", "input", "output", "device", "batch_size", "threads", "resume", "max_new_tokens",
    "temperature", "top_k", "top_p", "seed",
    // read by later parts of the engine (weight streaming, batch jobs); accepted here without warning
    "resident_layers", "prefetch_depth", "overlap", "trace", "kv_offload", "micro_batches"};

std::string resolve(const fs::path & base, const std::string & p) {
    if (p.empty()) return p;
    fs::path path(p);
    return (path.is_absolute() ? path : base / path).lexically_normal().string();
}

template <typename T>
T get_as(const nlohmann::json & z, const char * key, T fallback, const std::string & path) {
    if (!z.contains(key) || z[key].is_null()) return fallback;
    try {
        return z[key].get<T>();
    } catch (const nlohmann::json::exception &) {
        ZT_FAIL("{}: \"ztinfer.{}\" has the wrong type ({}): fix it in the config", path, key, z[key].dump());
    }
}

}  // namespace

JobConfig JobConfig::from_json(const nlohmann::json & j, const std::string & path) {
    ZT_CHECK(j.is_object(), "{}: the config must be a JSON object (DeepSpeed ds.json with a \"ztinfer\" section)", path);
    ZT_CHECK(j.contains("ztinfer") && j["ztinfer"].is_object(),
             "{}: no \"ztinfer\" object: add one with at least \"model\", \"input\" and \"output\" "
             "(see configs/demo.json)", path);
    JobConfig c;
    c.config_path = fs::absolute(path).lexically_normal().string();
    c.deepspeed = j;
    const fs::path base = fs::path(c.config_path).parent_path();
    const auto & z = j["ztinfer"];

    for (const auto & [k, v] : j.items())
        if (k != "ztinfer" && !kDeepSpeedKeys.count(k)) c.warnings.push_back(fmt::format("unknown key \"{}\" (ignored)", k));
    for (const auto & [k, v] : z.items())
        if (!kZtKeys.count(k)) c.warnings.push_back(fmt::format("unknown key \"ztinfer.{}\" (ignored)", k));

    c.model = resolve(base, get_as<std::string>(z, "model", "", path));
    c.task = get_as<std::string>(z, "task", c.task, path);
    c.input = resolve(base, get_as<std::string>(z, "input", "", path));
    c.output = resolve(base, get_as<std::string>(z, "output", "", path));
    c.device = get_as<std::string>(z, "device", c.device, path);
    c.batch_size = get_as<int64_t>(z, "batch_size", c.batch_size, path);
    c.threads = get_as<int64_t>(z, "threads", c.threads, path);
    c.resume = get_as<bool>(z, "resume", c.resume, path);
    auto & s = c.sampling;
    s.max_new_tokens = get_as<int64_t>(z, "max_new_tokens", s.max_new_tokens, path);
    s.temperature = get_as<double>(z, "temperature", s.temperature, path);
    s.top_k = get_as<int64_t>(z, "top_k", s.top_k, path);
    s.top_p = get_as<double>(z, "top_p", s.top_p, path);
    s.seed = get_as<uint64_t>(z, "seed", s.seed, path);

    ZT_CHECK(!c.model.empty(), "{}: \"ztinfer.model\" is missing: set it to a Hugging Face model directory "
             "(config.json, *.safetensors, tokenizer.json)", path);
    ZT_CHECK(c.task == "generate", "{}: \"ztinfer.task\" is \"{}\": supported tasks are \"generate\"", path, c.task);
    ZT_CHECK(!c.input.empty(), "{}: \"ztinfer.input\" is missing: set it to a JSONL file of requests", path);
    ZT_CHECK(!c.output.empty(), "{}: \"ztinfer.output\" is missing: set it to the JSONL file to write", path);
    ZT_CHECK(c.device == "cpu" || c.device == "cuda" || c.device == "auto",
             "{}: \"ztinfer.device\" is \"{}\": use \"cpu\", \"cuda\" or \"auto\"", path, c.device);
    ZT_CHECK(c.batch_size >= 1 && c.batch_size <= 65536, "{}: \"ztinfer.batch_size\" = {} must be in [1, 65536]", path, c.batch_size);
    ZT_CHECK(c.threads >= 0, "{}: \"ztinfer.threads\" = {} must be >= 0 (0 = all cores)", path, c.threads);
    ZT_CHECK(s.max_new_tokens >= 1, "{}: \"ztinfer.max_new_tokens\" = {} must be >= 1", path, s.max_new_tokens);
    ZT_CHECK(s.temperature >= 0, "{}: \"ztinfer.temperature\" = {} must be >= 0 (0 = greedy)", path, s.temperature);
    ZT_CHECK(s.top_k >= 0, "{}: \"ztinfer.top_k\" = {} must be >= 0 (0 = off)", path, s.top_k);
    ZT_CHECK(s.top_p > 0 && s.top_p <= 1, "{}: \"ztinfer.top_p\" = {} must be in (0, 1]", path, s.top_p);
    return c;
}

JobConfig JobConfig::load(const std::string & path) {
    std::ifstream in(path);
    ZT_CHECK(in.good(), "cannot open config {}: check the path given to --config", path);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in, nullptr, true, /*ignore_comments=*/true);
    } catch (const nlohmann::json::exception & e) {
        ZT_FAIL("{} is not valid JSON: {}", path, e.what());
    }
    return from_json(j, path);
}

}  // namespace zt
