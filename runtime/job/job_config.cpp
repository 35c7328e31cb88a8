// Parsing and validation of ds.json + its "ztinfer" section (see job_config.h).
#include "runtime/job/job_config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>
#include <set>

#include "runtime/base/error.h"
#include "runtime/job/embedding_output.h"
#include "runtime/job/job_metrics.h"
#include "runtime/base/json_input.h"
#include "runtime/job/output_lock.h"
#include "runtime/job/sampler.h"

namespace fs = std::filesystem;

namespace zt {

namespace {

// DeepSpeed keys: those honoured are read below; every other known DeepSpeed key is accepted (inference and
// training configs are often shared) but named in a warning, since it changes nothing here.
const std::set<std::string> kDeepSpeedKeys = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print",
    "wall_clock_breakdown", "zero_optimization", "fp16", "bf16", "amp", "aio", "optimizer", "scheduler",
    "gradient_clipping", "prescale_gradients", "zero_allow_untested_optimizer", "activation_checkpointing",
    "flops_profiler", "tensorboard", "wandb", "csv_monitor", "comms_logger", "tensor_parallel", "dtype",
    "replace_with_kernel_inject", "communication_data_type", "seq_parallel_communication_data_type",
    "elasticity", "checkpoint", "data_types", "compression_training", "monitor_config", "autotuning",
    "memory_breakdown", "dump_state", "hybrid_engine", "nebula", "zero_force_ds_cpu_optimizer"};
const std::set<std::string> kHonouredTop = {"zero_optimization", "aio"};
const std::set<std::string> kHonouredZero = {"stage", "offload_param", "stage3_param_persistence_threshold"};
const std::set<std::string> kHonouredOffload = {"device", "nvme_path", "buffer_count", "pin_memory"};
const std::set<std::string> kHonouredAio = {"block_size", "queue_depth"};

const std::set<std::string> kZtKeys = {
    "model", "tokenizer", "task", "input", "output", "device", "batch_size", "threads", "resume", "max_new_tokens",
    "temperature", "top_k", "top_p", "seed", "resident_layers", "prefetch_depth", "overlap", "trace",
    "partition_embeddings", "collective_timeout_s", "test_link_gbps", "test_race_delay_us", "max_gpu_memory",
    "compute_dtype", "communicator", "micro_batches", "prefill_chunk", "request_assignment", "kv_cache", "embedding",
    "profile", "host_memory", "nvme_reuse"};
const std::set<std::string> kKvCacheKeys = {"offload"};
const std::set<std::string> kEmbeddingKeys = {"pooling", "normalize", "instruction"};

std::string resolve(const fs::path & base, const std::string & p) {
    if (p.empty()) return p;
    fs::path path(p);
    return (path.is_absolute() ? path : base / path).lexically_normal().string();
}

template <typename T>
T get_as(const nlohmann::json & z, const char * key, T fallback, const std::string & path,
         const char * section = "ztinfer") {
    if (!z.contains(key) || z[key].is_null()) return fallback;
    const auto & v = z[key];
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        // nlohmann would truncate 8.7 to 8 and turn 1e300 into INT64_MIN: only whole numbers that fit are taken
        const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                        : v.is_number_integer() ? std::is_signed_v<T> || v.get<int64_t>() >= 0
                                                : false;
        ZT_CHECK(fits, "{}: \"{}.{}\" = {} must be {} integer{}: fix it in the config", path, section, key,
                 quote_json(v), std::is_signed_v<T> ? "an" : "a non-negative",
                 v.is_number() ? fmt::format(" (digits only, no fraction or exponent, at most {})",
                                             std::numeric_limits<T>::max()) : "");
        return v.get<T>();
    } else {
        try {
            return v.get<T>();
        } catch (const nlohmann::json::exception &) {
            ZT_FAIL("{}: \"{}.{}\" has the wrong type ({}): fix it in the config", path, section, key, quote_json(v));
        }
    }
}

// A key the planner may choose (planner.h's kPlanAutoKeys): the string "auto" adds `auto_name` to c.auto_keys and
// keeps `fallback` (the default); anything else is read as get_as reads it, its errors saying "auto" is accepted.
template <typename T>
T get_or_auto(const nlohmann::json & o, const char * key, T fallback, const std::string & path, const char * section,
              const char * auto_name, JobConfig & c) {
    if (o.contains(key) && o[key].is_string() && o[key].get<std::string>() == "auto") {
        c.auto_keys.insert(auto_name);
        return fallback;
    }
    if constexpr (!std::is_same_v<T, std::string>)
        ZT_CHECK(!o.contains(key) || !o[key].is_string(), "{}: \"{}.{}\" = {} must be a number or \"auto\" (the "
                 "planner chooses it): fix it in the config", path, section, key, quote_json(o[key]));
    try {
        return get_as<T>(o, key, fallback, path, section);
    } catch (const Error & e) {
        ZT_FAIL("{}; or write \"auto\" to let the planner choose it", e.message());
    }
}

// Names the keys of object `o` (at `where`) that are not in `honoured`, as one "accepted but not used" warning;
// with `known`, only keys in it (the others are unknown keys, warned about separately).
void warn_unused(const nlohmann::json & o, const std::set<std::string> & honoured, const std::string & where,
                 std::vector<std::string> & warnings, const std::set<std::string> * known = nullptr) {
    if (!o.is_object()) return;
    std::string names;
    for (const auto & [k, v] : o.items())
        if (!honoured.count(k) && (!known || known->count(k))) names += (names.empty() ? "" : ", ") + where + k;
    if (!names.empty())
        warnings.push_back(fmt::format("DeepSpeed keys accepted but not used by ztinfer (they change nothing): {}", names));
}

// zero_optimization / aio -> StreamingConfig, with a warning for every DeepSpeed key that is not honoured.
void read_deepspeed(const nlohmann::json & j, const fs::path & base, const std::string & path, JobConfig & c) {
    StreamingConfig & st = c.streaming;
    warn_unused(j, kHonouredTop, "", c.warnings, &kDeepSpeedKeys);
    if (j.contains("zero_optimization")) {
        const auto & z = j["zero_optimization"];
        ZT_CHECK(z.is_object(), "{}: \"zero_optimization\" must be an object", path);
        warn_unused(z, kHonouredZero, "zero_optimization.", c.warnings);
        const int64_t stage = get_as<int64_t>(z, "stage", 3, path, "zero_optimization");
        st.persistence_threshold = get_as<int64_t>(z, "stage3_param_persistence_threshold", st.persistence_threshold,
                                                   path, "zero_optimization");
        if (z.contains("offload_param") && !z["offload_param"].is_null()) {
            const auto & o = z["offload_param"];
            ZT_CHECK(o.is_object(), "{}: \"zero_optimization.offload_param\" must be an object", path);
            warn_unused(o, kHonouredOffload, "zero_optimization.offload_param.", c.warnings);
            st.offload_device = get_or_auto<std::string>(o, "device", "none", path, "zero_optimization.offload_param",
                                                         "tier", c);
            st.nvme_path = resolve(base, get_as<std::string>(o, "nvme_path", "", path, "zero_optimization.offload_param"));
            st.buffer_count = get_as<int64_t>(o, "buffer_count", st.buffer_count, path, "zero_optimization.offload_param");
            if (!get_as<bool>(o, "pin_memory", true, path, "zero_optimization.offload_param"))
                c.warnings.push_back("zero_optimization.offload_param.pin_memory = false is not honoured: slices are "
                                     "always kept in pinned memory (that is what lets copies overlap compute)");
        }
        if (stage != 3 && st.offload_device != "none")
            c.warnings.push_back(fmt::format("zero_optimization.stage is {}: parameters are partitioned as in stage 3 "
                                             "anyway, because offload_param.device is \"{}\"", stage, st.offload_device));
    }
    if (j.contains("aio")) {
        const auto & a = j["aio"];
        ZT_CHECK(a.is_object(), "{}: \"aio\" must be an object", path);
        warn_unused(a, kHonouredAio, "aio.", c.warnings);
        st.aio_block_size = get_as<int64_t>(a, "block_size", st.aio_block_size, path, "aio");
        st.aio_queue_depth = get_as<int64_t>(a, "queue_depth", st.aio_queue_depth, path, "aio");
    }
    ZT_CHECK(st.offload_device == "none" || st.offload_device == "cpu" || st.offload_device == "nvme",
             "{}: \"zero_optimization.offload_param.device\" is \"{}\": use \"cpu\" (pinned host memory), \"nvme\" "
             "(with nvme_path), \"none\" (every rank keeps the whole model) or \"auto\" (the planner picks one; "
             "\"nvme\" only when nvme_path is set)", path, st.offload_device);
    ZT_CHECK(st.offload_device != "nvme" || !st.nvme_path.empty(), "{}: offload_param.device is \"nvme\" but "
             "\"zero_optimization.offload_param.nvme_path\" is missing: set it to a folder on a fast local disk", path);
    ZT_CHECK(st.buffer_count >= 1 && st.buffer_count <= 64, "{}: \"zero_optimization.offload_param.buffer_count\" = {} "
             "must be in [1, 64]", path, st.buffer_count);
    ZT_CHECK(st.persistence_threshold >= 0, "{}: \"zero_optimization.stage3_param_persistence_threshold\" = {} must "
             "be >= 0", path, st.persistence_threshold);
    ZT_CHECK(st.aio_block_size >= 4096 && st.aio_block_size % 4096 == 0 && st.aio_block_size <= (int64_t(1) << 30),
             "{}: \"aio.block_size\" = {} must be a multiple of 4096 in [4096, 1 GiB] (O_DIRECT reads)", path,
             st.aio_block_size);
    ZT_CHECK(st.aio_queue_depth >= 1 && st.aio_queue_depth <= 1024, "{}: \"aio.queue_depth\" = {} must be in [1, 1024]",
             path, st.aio_queue_depth);
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
    read_deepspeed(j, base, path, c);
    for (const auto & [k, v] : z.items())
        if (!kZtKeys.count(k)) c.warnings.push_back(fmt::format("unknown key \"ztinfer.{}\" (ignored)", k));

    c.model = resolve(base, get_as<std::string>(z, "model", "", path));
    c.tokenizer = resolve(base, get_as<std::string>(z, "tokenizer", "", path));
    c.task = get_as<std::string>(z, "task", c.task, path);
    c.input = resolve(base, get_as<std::string>(z, "input", "", path));
    c.output = resolve(base, get_as<std::string>(z, "output", "", path));
    c.device = get_as<std::string>(z, "device", c.device, path);
    c.batch_size = get_or_auto<int64_t>(z, "batch_size", c.batch_size, path, "ztinfer", "batch_size", c);
    c.threads = get_as<int64_t>(z, "threads", c.threads, path);
    c.resume = get_as<bool>(z, "resume", c.resume, path);
    auto & s = c.sampling;
    s.max_new_tokens = get_as<int64_t>(z, "max_new_tokens", s.max_new_tokens, path);
    s.temperature = get_as<double>(z, "temperature", s.temperature, path);
    s.top_k = get_as<int64_t>(z, "top_k", s.top_k, path);
    s.top_p = get_as<double>(z, "top_p", s.top_p, path);
    s.seed = get_as<uint64_t>(z, "seed", s.seed, path);
    auto & st = c.streaming;
    st.resident_layers = get_or_auto<int64_t>(z, "resident_layers", st.resident_layers, path, "ztinfer",
                                              "resident_layers", c);
    st.prefetch_depth = get_or_auto<int64_t>(z, "prefetch_depth", st.prefetch_depth, path, "ztinfer",
                                             "prefetch_depth", c);
    st.overlap = get_as<bool>(z, "overlap", st.overlap, path);
    st.partition_embeddings = get_as<bool>(z, "partition_embeddings", st.partition_embeddings, path);
    st.nvme_reuse = get_as<bool>(z, "nvme_reuse", st.nvme_reuse, path);
    st.trace = resolve(base, get_as<std::string>(z, "trace", "", path));
    st.collective_timeout_s = get_as<double>(z, "collective_timeout_s", st.collective_timeout_s, path);
    st.test_link_gbps = get_as<double>(z, "test_link_gbps", st.test_link_gbps, path);
    st.test_race_delay_us = get_as<int64_t>(z, "test_race_delay_us", st.test_race_delay_us, path);
    auto & g = c.gpu;
    if (z.contains("max_gpu_memory")) {
        const auto & m = z["max_gpu_memory"];
        if (m.is_string()) {
            g.max_memory_bytes = parse_byte_size(m.get<std::string>(), path + ": \"ztinfer.max_gpu_memory\"");
        } else if (m.is_number()) {
            const double v = m.get<double>();
            ZT_CHECK(v > 0 && v < 1.8e19, "{}: \"ztinfer.max_gpu_memory\" = {} must be > 0 and < 1.8e19: a share of "
                     "the card in (0, 1], bytes, or a string such as \"24GiB\"", path, v);
            if (v <= 1) g.max_memory_fraction = v;
            else g.max_memory_bytes = size_t(v);
        } else {
            ZT_FAIL("{}: \"ztinfer.max_gpu_memory\" must be a number (a share of the card in (0, 1], or bytes) or a "
                    "string such as \"24GiB\"", path);
        }
    }
    c.profile = resolve(base, get_as<std::string>(z, "profile", "", path));
    if (z.contains("host_memory") && !z["host_memory"].is_null()) {
        const auto & h = z["host_memory"];
        if (h.is_string()) {
            c.host_memory_bytes = parse_byte_size(h.get<std::string>(), path + ": \"ztinfer.host_memory\"");
        } else {
            ZT_CHECK(h.is_number() && h.get<double>() >= 1 && h.get<double>() < 1.8e19, "{}: \"ztinfer.host_memory\" "
                     "= {} must be a number of bytes (>= 1) or a string such as \"200GiB\" (the planner's host "
                     "memory per node; leave it out to use MemAvailable)", path, quote_json(h));
            c.host_memory_bytes = h.is_number_unsigned() ? size_t(h.get<uint64_t>()) : size_t(h.get<double>());
        }
    }
    g.compute_dtype = get_as<std::string>(z, "compute_dtype", g.compute_dtype, path);
    g.communicator = get_as<std::string>(z, "communicator", g.communicator, path);
    ZT_CHECK(g.compute_dtype == "auto" || g.compute_dtype == "fp32" || g.compute_dtype == "bf16" ||
             g.compute_dtype == "fp16", "{}: \"ztinfer.compute_dtype\" is \"{}\": use \"auto\" (the weights' dtype), "
             "\"fp32\", \"bf16\" or \"fp16\"", path, g.compute_dtype);
    ZT_CHECK(g.communicator == "auto" || g.communicator == "nccl" || g.communicator == "mpi" || g.communicator == "tcp",
             "{}: \"ztinfer.communicator\" is \"{}\": use \"auto\", \"nccl\", \"mpi\" or \"tcp\"", path,
             g.communicator);
    auto & b = c.batch;
    b.micro_batches = get_or_auto<int64_t>(z, "micro_batches", b.micro_batches, path, "ztinfer", "micro_batches", c);
    b.prefill_chunk = get_as<int64_t>(z, "prefill_chunk", b.prefill_chunk, path);
    b.assignment = get_as<std::string>(z, "request_assignment", b.assignment, path);
    ZT_CHECK(b.assignment == "balanced" || b.assignment == "static", "{}: \"ztinfer.request_assignment\" is \"{}\": "
             "use \"balanced\" (ranks are handed requests as their slots free) or \"static\" (request k to rank k % "
             "N)", path, b.assignment);
    if (z.contains("kv_cache") && !z["kv_cache"].is_null()) {
        const auto & kv = z["kv_cache"];
        ZT_CHECK(kv.is_object(), "{}: \"ztinfer.kv_cache\" must be an object such as {{\"offload\": \"cpu\"}}", path);
        for (const auto & [k, v] : kv.items())
            if (!kKvCacheKeys.count(k)) c.warnings.push_back(fmt::format("unknown key \"ztinfer.kv_cache.{}\" (ignored)", k));
        b.kv_offload = get_or_auto<std::string>(kv, "offload", b.kv_offload, path, "ztinfer.kv_cache", "kv_offload", c);
    }
    ZT_CHECK(b.kv_offload == "none" || b.kv_offload == "cpu", "{}: \"ztinfer.kv_cache.offload\" is \"{}\": use "
             "\"none\" (KV cache in device memory), \"cpu\" (pinned host memory, streamed per layer) or \"auto\" "
             "(the planner picks one)", path,
             b.kv_offload);
    ZT_CHECK(b.micro_batches >= 1 && b.micro_batches <= 4096, "{}: \"ztinfer.micro_batches\" = {} must be in "
             "[1, 4096], or \"auto\"", path, b.micro_batches);
    ZT_CHECK(b.prefill_chunk >= 1, "{}: \"ztinfer.prefill_chunk\" = {} must be >= 1 (tokens)", path, b.prefill_chunk);
    if (z.contains("embedding") && !z["embedding"].is_null()) {
        const auto & e = z["embedding"];
        ZT_CHECK(e.is_object(), "{}: \"ztinfer.embedding\" must be an object such as {{\"pooling\": \"last\", "
                 "\"normalize\": true}}", path);
        for (const auto & [k, v] : e.items())
            if (!kEmbeddingKeys.count(k)) c.warnings.push_back(fmt::format("unknown key \"ztinfer.embedding.{}\" (ignored)", k));
        auto & em = c.embedding;
        em.pooling = get_as<std::string>(e, "pooling", em.pooling, path, "ztinfer.embedding");
        em.normalize = get_as<bool>(e, "normalize", em.normalize, path, "ztinfer.embedding");
        em.instruction = get_as<std::string>(e, "instruction", em.instruction, path, "ztinfer.embedding");
        ZT_CHECK(em.pooling == "last" || em.pooling == "mean", "{}: \"ztinfer.embedding.pooling\" is \"{}\": use "
                 "\"last\" (last token, as gte-Qwen2) or \"mean\"", path, em.pooling);
    }
    ZT_CHECK(st.resident_layers >= 0 && st.resident_layers <= INT32_MAX, "{}: \"ztinfer.resident_layers\" = {} must "
             "be in [0, {}], or \"auto\"", path, st.resident_layers, INT32_MAX);
    ZT_CHECK(st.prefetch_depth >= 0 && st.prefetch_depth <= 64, "{}: \"ztinfer.prefetch_depth\" = {} must be in "
             "[0, 64] (2 is usually enough), or \"auto\"", path, st.prefetch_depth);
    ZT_CHECK(st.collective_timeout_s > 0, "{}: \"ztinfer.collective_timeout_s\" = {} must be > 0", path,
             st.collective_timeout_s);
    ZT_CHECK(st.test_link_gbps >= 0 && st.test_race_delay_us >= 0, "{}: ztinfer.test_link_gbps and "
             "ztinfer.test_race_delay_us must be >= 0", path);

    ZT_CHECK(!c.model.empty(), "{}: \"ztinfer.model\" is missing: set it to a Hugging Face model directory "
             "(config.json, *.safetensors, tokenizer.json) or a .gguf file", path);
    if (z.contains("tokenizer") && !z["tokenizer"].is_null()) {
        std::error_code ec;
        ZT_CHECK(!c.tokenizer.empty() && fs::is_directory(c.tokenizer, ec), "{}: \"ztinfer.tokenizer\" = \"{}\" is "
                 "not a folder: set it to a Hugging Face tokenizer folder (with tokenizer.json), or remove it to use "
                 "the model's own tokenizer", path, c.tokenizer);
        ZT_CHECK(fs::is_regular_file(c.tokenizer + "/tokenizer.json", ec), "{}: \"ztinfer.tokenizer\" folder {} has "
                 "no tokenizer.json: give a Hugging Face tokenizer folder", path, c.tokenizer);
    }
    ZT_CHECK(c.task == "generate" || c.task == "embed", "{}: \"ztinfer.task\" is \"{}\": supported tasks are "
             "\"generate\" and \"embed\"", path, c.task);
    ZT_CHECK(!c.input.empty(), "{}: \"ztinfer.input\" is missing: set it to a JSONL file of requests", path);
    ZT_CHECK(!c.output.empty(), "{}: \"ztinfer.output\" is missing: set it to the JSONL file to write", path);
    ZT_CHECK(c.device == "cpu" || c.device == "cuda" || c.device == "auto",
             "{}: \"ztinfer.device\" is \"{}\": use \"cpu\", \"cuda\" or \"auto\"", path, c.device);
    ZT_CHECK(c.batch_size >= 1 && c.batch_size <= 65536, "{}: \"ztinfer.batch_size\" = {} must be in [1, 65536], or "
             "\"auto\"", path, c.batch_size);
    ZT_CHECK(c.threads >= 0, "{}: \"ztinfer.threads\" = {} must be >= 0 (0 = all cores)", path, c.threads);
    ZT_CHECK(s.max_new_tokens >= 1, "{}: \"ztinfer.max_new_tokens\" = {} must be >= 1", path, s.max_new_tokens);
    ZT_CHECK(s.temperature >= 0, "{}: \"ztinfer.temperature\" = {} must be >= 0 (0 = greedy)", path, s.temperature);
    if (s.temperature < kGreedyBelowTemperature) s.temperature = 0;   // greedy (sampler.h)
    ZT_CHECK(s.top_k >= 0, "{}: \"ztinfer.top_k\" = {} must be >= 0 (0 = off)", path, s.top_k);
    ZT_CHECK(s.top_p > 0 && s.top_p <= 1, "{}: \"ztinfer.top_p\" = {} must be in (0, 1]", path, s.top_p);
    return c;
}

void JobConfig::check_paths() const {
    std::error_code ec;
    const fs::file_status in_status = fs::status(input, ec);
    ZT_CHECK(!ec && fs::exists(in_status), "cannot open input {}: {}: check \"ztinfer.input\" in {} (or --input)",
             input, ec ? ec.message() : "no such file", config_path);
    ZT_CHECK(!fs::is_directory(in_status), "input {} is a folder, not a JSONL file of requests: check "
             "\"ztinfer.input\" in {} (or --input)", input, config_path);
    struct stat in_st {};
    ZT_CHECK(::stat(input.c_str(), &in_st) == 0, "cannot stat input {}: {}", input, std::strerror(errno));
    const fs::path in_canonical = fs::weakly_canonical(input, ec);
    std::vector<std::pair<std::string, std::string>> written = {{"the output", output},
                                                              {"the output's metrics file", metrics_path_for(output)},
                                                              {"the output's lock file", OutputLock::lock_path(output)}};
    if (EmbeddingOutput::is_npy(output))
        written.push_back({"the .npy output's index", EmbeddingOutput::index_path(output)});
    if (!streaming.trace.empty()) written.push_back({"the trace file (\"ztinfer.trace\" / --trace)", streaming.trace});
    for (const auto & [what, path] : written) {
        struct stat st {};
        bool same = path == input;
        if (::stat(path.c_str(), &st) == 0) same = same || (st.st_dev == in_st.st_dev && st.st_ino == in_st.st_ino);
        else if (!in_canonical.empty()) same = same || fs::weakly_canonical(path, ec) == in_canonical;
        ZT_CHECK(!same, "{} {} is the input file {} (the same file, {}): the job would overwrite or \"resume from\" "
                 "its own requests. Write the results to another file (\"ztinfer.output\" in {}, or --output)",
                 what, path, input, path == input ? "the same path" : "a symbolic or hard link to it", config_path);
    }
}

size_t parse_byte_size(const std::string & text, const std::string & what) {
    size_t i = 0;
    double v = 0;
    try {
        v = std::stod(text, &i);
    } catch (const std::exception &) {
        ZT_FAIL("{} = \"{}\" is not a size: write e.g. \"24GiB\", \"40GB\", \"512MiB\" or a number of bytes", what, text);
    }
    std::string unit = text.substr(i);
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    static const std::map<std::string, double> kUnits = {
        {"", 1}, {"b", 1}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"k", 1024.0}, {"m", 1048576.0},
        {"g", 1073741824.0}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
    const auto it = kUnits.find(unit);
    ZT_CHECK(it != kUnits.end(), "{} = \"{}\": unknown unit \"{}\"; use B, KB, MB, GB, TB (powers of 1000) or KiB, "
             "MiB, GiB, TiB (powers of 1024)", what, text, unit);
    ZT_CHECK(v > 0 && v * it->second < 1.8e19, "{} = \"{}\" must be a positive size", what, text);
    return size_t(v * it->second);
}

JobConfig JobConfig::load(const std::string & path) {
    std::error_code ec;
    ZT_CHECK(!fs::is_directory(path, ec), "config {} is a folder: give the ds.json file to --config", path);
    std::ifstream in(path, std::ios::binary);
    ZT_CHECK(in.good(), "cannot open config {}: check the path given to --config", path);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json j;
    try {
        j = parse_json_input(text.str(), /*comments=*/true);
    } catch (const JsonTooDeep & e) {
        ZT_FAIL("{}: {}: a ds.json needs a few levels; flatten the config", path, e.what());
    } catch (const nlohmann::json::exception & e) {
        ZT_FAIL("{} is not valid JSON: {}", path, e.what());
    }
    return from_json(j, path);
}

}  // namespace zt
