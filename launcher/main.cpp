// ztinfer command line (CLI11): `ztinfer --config ds.json` (= `ztinfer run --config ds.json`) runs a job;
// `plan` predicts a job's memory and speed and searches its settings (runtime/job/planner.h); `synth` writes a
// random-weight HF model directory; `quantize` writes a GGUF file of Q8_0..Q6_K weights from one;
// `tokenize` maps JSONL text <-> ids; `info` prints JSON
// with the version, compiled backends and visible devices; `bench` prints nccl-tests-style tables of H2D, NVMe,
// all-gather, layer and streamed-decode rates (runtime/bench/benchmark.h).
#include <csignal>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "comm/world.h"
#include "runtime/bench/benchmark.h"
#include "runtime/base/error.h"
#include "runtime/job/job.h"
#include "runtime/job/job_config.h"
#include "runtime/job/plan_config.h"
#include "runtime/base/json_input.h"
#include "runtime/base/log.h"
#include "runtime/job/request.h"
#include "runtime/model/quantize_model.h"
#include "runtime/model/synthetic_model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/unicode_text.h"
#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#endif

namespace {

using json = nlohmann::json;

void on_stop_signal(int) { zt::job_stop_flag().store(true); }

int command_run(const zt::WorldInfo & world, const std::string & config_path, const std::string & input,
                const std::string & output, const std::string & trace, const std::string & communicator) {
    zt::JobConfig cfg = zt::JobConfig::load(config_path);
    if (!communicator.empty()) cfg.gpu.communicator = communicator;
    if (!input.empty()) cfg.input = std::filesystem::absolute(input).string();
    if (!output.empty()) cfg.output = std::filesystem::absolute(output).string();
    if (!trace.empty()) cfg.streaming.trace = std::filesystem::absolute(trace).string();
    std::signal(SIGTERM, on_stop_signal);   // SLURM preemption / walltime: finish the step, sync, exit
    std::signal(SIGINT, on_stop_signal);
    const zt::JobStats s = zt::run_job(cfg, world);
    // every rank reports its own share; rank 0 wrote every record
    spdlog::info("done: {} requests ({} completed and {} errors on this rank, {} skipped as already done) -> {}",
                 s.requests, s.completed, s.failed, s.skipped, cfg.output);
    spdlog::info("tokens on this rank: {} prompt, {} generated in {} steps, {:.2f}s = {:.1f} generated tokens/s "
                 "(load {:.2f}s)", s.prompt_tokens, s.generated_tokens, s.steps, s.generate_seconds,
                 s.generate_seconds > 0 ? s.generated_tokens / s.generate_seconds : 0.0, s.load_seconds);
    if (s.interrupted) return 143;   // 128 + SIGTERM: the scheduler sees a stopped job; rerun resumes
    return 0;
}

int command_tokenize(const std::string & tokenizer_dir, const std::string & jsonl, bool decode, bool special) {
    const zt::Tokenizer tok = zt::Tokenizer::load(tokenizer_dir);
    std::ifstream file;
    std::istream * in = &std::cin;
    if (jsonl != "-") {
        file.open(jsonl, std::ios::binary);
        ZT_CHECK(file.good(), "cannot open {}: check --jsonl", jsonl);
        in = &file;
    }
    std::string line;
    int64_t line_no = 0;
    int errors = 0;
    while (std::getline(*in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json out;
        try {
            if (!zt::utf8_is_valid(line)) throw std::runtime_error("not valid UTF-8");
            const json j = zt::parse_json_input(line);   // nesting-limited: dumps below never recurse deeply
            if (decode) {
                if (!j.contains("ids") || !j["ids"].is_array()) throw std::runtime_error("needs {\"ids\": [...]}");
                std::vector<int32_t> ids;
                for (const auto & v : j["ids"]) {
                    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.vocab_size())
                        throw std::runtime_error("id " + zt::quote_json(v) + " is outside the vocabulary");
                    ids.push_back(v.get<int32_t>());
                }
                out["text"] = tok.decode(ids, !special);
            } else {
                if (!j.contains("text") || !j["text"].is_string()) throw std::runtime_error("needs {\"text\": \"...\"}");
                out["ids"] = tok.encode(j["text"].get<std::string>(), special);
            }
        } catch (const std::exception & e) {
            out = {{"line", line_no}, {"error", {{"code", "invalid_request"}, {"message", e.what()}}}};
            ++errors;
        }
        std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    return errors ? 1 : 0;
}

int command_quantize(const zt::QuantizeOptions & o) {
    const zt::QuantizeReport r = zt::quantize_model(o);
    std::string types;
    for (const auto & [type, n] : r.tensors_by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, type);
    spdlog::info("wrote {}: {} tensors ({}), {:.1f} MiB from {:.1f} MiB in {:.1f}s", o.out, r.tensors, types,
                 double(r.bytes_out) / (1 << 20), double(r.bytes_in) / (1 << 20), r.seconds);
    return 0;
}

// `ztinfer plan`: exit 0 when the configured settings fit (or the search found settings that do), 3 when nothing
// fits the budget (the refusal says the smallest budget that would), 1 on errors.
int command_plan(const std::string & config_path, const zt::PlanRequest & req, bool as_json) {
    std::optional<zt::JobConfig> cfg;
    if (!config_path.empty()) cfg.emplace(zt::JobConfig::load(config_path));
    const zt::PlanResult r = zt::plan_for_config(cfg ? &*cfg : nullptr, req);
    if (as_json) std::cout << zt::plan_report_json(r).dump(2) << '\n';
    else std::cout << zt::plan_report_text(r);
    if (!r.best) {
        spdlog::error("{}", r.refusal);
        return 3;
    }
    if (!r.configured.fits)
        spdlog::warn("the settings as configured do not fit ({}); the best settings found are listed: set them in the "
                     "ds.json, or set those keys to \"auto\"", r.configured.why_not);
    return 0;
}

int command_info() {
    json info;
    info["name"] = "ztinfer";
    info["version"] = ZT_VERSION;
    json backends = json::array({"cpu"});
    json devices = json::array({{{"backend", "cpu"}, {"threads", std::thread::hardware_concurrency()}}});
#ifdef ZT_HAVE_CUDA
    info["cuda_toolkit"] = true;   // device discovery is compiled in; the CUDA backend itself is not there yet
    const int n = zt::cuda_device_count();
    for (int i = 0; i < n; ++i) devices.push_back({{"backend", "cuda"}, {"index", i}, {"name", zt::cuda_device_name(i)}});
#else
    info["cuda_toolkit"] = false;
#endif
    json comms = json::array({"local"});
    if (zt::mpi_available()) comms.push_back("mpi");
    info["communicators"] = comms;   // NCCL arrives with the CUDA backend
    info["backends"] = backends;   // backends that can run a job in this build
    info["devices"] = devices;
    std::cout << info.dump(2) << '\n';
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    CLI::App app{"ztinfer: batch inference for LLMs larger than GPU memory (DeepSpeed ds.json + \"ztinfer\" section)"};
    app.set_version_flag("--version", std::string("ztinfer ") + ZT_VERSION);
    std::string log_level, config, input, output, trace, communicator;
    const auto communicators = CLI::IsMember({"auto", "nccl", "mpi", "tcp"});
    const char * communicator_help = "override ztinfer.communicator: tcp = ranks meet at MASTER_ADDR:MASTER_PORT over "
                                     "TCP, no MPI (e.g. under srun --mpi=none)";
    app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (or ZT_LOG_LEVEL)");
    app.add_option("--config", config, "ds.json to run (same as `ztinfer run --config`)");
    app.add_option("--input", input, "override ztinfer.input");
    app.add_option("--output", output, "override ztinfer.output");
    app.add_option("--trace", trace, "write a Chrome-trace JSON timeline (Perfetto) of fetch/all-gather/compute");
    app.add_option("--communicator", communicator, communicator_help)->check(communicators);

    auto * run = app.add_subcommand("run", "run the job a ds.json describes");
    run->add_option("--config,config", config, "ds.json")->required();
    run->add_option("--input", input, "override ztinfer.input");
    run->add_option("--output", output, "override ztinfer.output");
    run->add_option("--trace", trace, "write a Chrome-trace JSON timeline (Perfetto) of fetch/all-gather/compute");
    run->add_option("--communicator", communicator, communicator_help)->check(communicators);

    zt::SynthOptions so;
    auto * synth = app.add_subcommand("synth", "write a random-weight HF model directory (transformers loads it too)");
    synth->add_option("--arch", so.arch, "llama|mistral|qwen2|qwen3")->required()
        ->check(CLI::IsMember({"llama", "mistral", "qwen2", "qwen3"}));
    synth->add_option("--layers", so.layers, "decoder layers")->capture_default_str();
    synth->add_option("--hidden", so.hidden, "hidden size")->capture_default_str();
    synth->add_option("--heads", so.heads, "attention heads")->capture_default_str();
    synth->add_option("--kv-heads", so.kv_heads, "key/value heads (GQA)")->capture_default_str();
    synth->add_option("--intermediate", so.intermediate, "MLP size")->capture_default_str();
    synth->add_option("--tokenizer", so.tokenizer_dir, "folder with tokenizer.json (and tokenizer_config.json)")->required();
    synth->add_option("--dtype", so.dtype, "fp32|bf16|fp16")->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
    synth->add_option("--seed", so.seed, "random seed")->capture_default_str();
    synth->add_option("--out", so.out_dir, "output folder")->required();

    zt::QuantizeOptions qo;
    auto * quantize = app.add_subcommand("quantize", "write a GGUF file (llama.cpp's format) of quantized weights from "
                                         "an HF model folder");
    quantize->add_option("--model", qo.model_dir, "HF model folder (config.json, safetensors, tokenizer.json)")->required();
    quantize->add_option("--type", qo.type, "q8_0|q4_0|q4_1|q4_k|q5_k|q6_k")->required();
    quantize->add_option("--out", qo.out, "the .gguf to write (through FILE.tmp, renamed when complete)")->required();
    quantize->add_option("--threads", qo.threads, "threads (0 = all cores)")->capture_default_str();

    std::string tok_dir, jsonl = "-";
    bool decode = false, special = false;
    auto * tokenize = app.add_subcommand("tokenize", "JSONL {\"text\"} lines -> {\"ids\"} on stdout (--decode: back)");
    tokenize->add_option("--tokenizer", tok_dir, "model folder or tokenizer.json")->required();
    tokenize->add_option("--jsonl", jsonl, "input JSONL ('-' = stdin)")->capture_default_str();
    tokenize->add_flag("--decode", decode, "ids -> text");
    tokenize->add_flag("--special", special, "add BOS like the model does (encode) / keep special tokens (decode)");

    zt::PlanRequest plan_req;
    std::string plan_config, plan_gpu_mem, plan_host_mem, plan_nvme;
    bool plan_json = false;
    auto * plan = app.add_subcommand("plan", "predict a job's memory per rank and tier and its tokens/s, and search "
                                     "the settings that fit the budget (offload tier, resident_layers, batch_size x "
                                     "micro_batches, prefetch_depth, KV offload)");
    plan->add_option("--config,config", plan_config, "ds.json of the job to plan");
    plan->add_option("--profile", plan_req.profile, "machine profile from `ztinfer bench --profile` (default: "
                     "ztinfer.profile, else conservative defaults)");
    plan->add_option("--gpu-memory", plan_gpu_mem, "GPU memory per rank, e.g. 24GiB (default: max_gpu_memory, else "
                     "the card)");
    plan->add_option("--host-memory", plan_host_mem, "host memory per node, e.g. 64GiB (default: ztinfer.host_memory, "
                     "else MemAvailable)");
    plan->add_option("--nvme-path", plan_req.nvme_path, "a folder on the NVMe disk (default: offload_param.nvme_path): "
                     "lets the plan stream weights from NVMe");
    plan->add_option("--nvme-space", plan_nvme, "free NVMe space per node (default: what nvme_path's disk has)");
    plan->add_option("--ranks", plan_req.ranks, "ranks of the job (mpirun -np)")->capture_default_str()
        ->check(CLI::Range(1, 1 << 16));
    plan->add_option("--ranks-per-node", plan_req.ranks_per_node, "ranks sharing a node's memory (default: all)")
        ->check(CLI::Range(1, 1 << 16));
    plan->add_option("--threads", plan_req.threads, "CPU backend threads per rank (default: ztinfer.threads)")
        ->check(CLI::Range(1, 1 << 16));
    plan->add_option("--device", plan_req.device, "cpu|cuda (default: ztinfer.device)")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    plan->add_option("--requests", plan_req.requests, "workload: requests (with --prompt-tokens, --new-tokens; "
                     "default: the job's input file)")->check(CLI::Range(int64_t(1), int64_t(10000000)));
    plan->add_option("--prompt-tokens", plan_req.prompt_tokens, "workload: prompt tokens per request")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
    plan->add_option("--new-tokens", plan_req.new_tokens, "workload: generated tokens per request")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
    plan->add_option("--shape", plan_req.shape, "plan a model shape instead of --config: llama2-7b|llama2-13b|"
                     "llama2-70b|qwen2-7b");
    plan->add_option("--dtype", plan_req.dtype, "--shape's weight type: bf16|f16|f32|q8_0|q4_0|q4_1|q4_k|q5_k|q6_k")
        ->capture_default_str();
    plan->add_option("--layers", plan_req.layers, "--shape's decoder layers (0 = the shape's)")
        ->check(CLI::Range(0, 100000));
    plan->add_option("--task", plan_req.task, "--shape's task: generate|embed")->capture_default_str()
        ->check(CLI::IsMember({"generate", "embed"}));
    plan->add_flag("--json", plan_json, "print one JSON object (predicted.tokens_per_s, best, ...) instead of tables");

    auto * info = app.add_subcommand("info", "print version, compiled backends and visible devices as JSON");

    zt::BenchmarkOptions bench_opt;
    auto * bench = app.add_subcommand("bench", "measure H2D copies, NVMe reads, all-gather, layer compute and a "
                                      "streamed decode step (nccl-tests-style tables; under mpirun rank 0 prints)");
    bench->add_option("--device", bench_opt.device, "cpu|cuda|auto")->capture_default_str()
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    bench->add_option("--threads", bench_opt.threads, "CPU backend threads (0 = all cores)")->capture_default_str();
    bench->add_option("--shape", bench_opt.shape, "llama2-7b|llama2-13b|llama2-70b|qwen2-7b")->capture_default_str();
    bench->add_option("--layers", bench_opt.layers, "decoder layers of the decode step (0 = the shape's)")->capture_default_str();
    bench->add_option("--hidden", bench_opt.hidden, "override the shape's hidden size");
    bench->add_option("--intermediate", bench_opt.intermediate, "override the shape's MLP size");
    bench->add_option("--heads", bench_opt.heads, "override the shape's attention heads");
    bench->add_option("--kv-heads", bench_opt.kv_heads, "override the shape's key/value heads");
    bench->add_option("--vocab", bench_opt.vocab, "override the shape's vocabulary size");
    bench->add_option("--batch", bench_opt.batches, "batch sizes, e.g. 1,8,32,64")->delimiter(',')->capture_default_str();
    bench->add_option("--context", bench_opt.context, "decode: past length of every sequence")->capture_default_str();
    bench->add_option("--prompt", bench_opt.prompt, "prefill: prompt tokens per sequence")->capture_default_str();
    bench->add_option("--min-bytes", bench_opt.min_bytes, "smallest copy / all-gather (e.g. 1MiB)")->capture_default_str();
    bench->add_option("--max-bytes", bench_opt.max_bytes, "largest copy / all-gather (e.g. 1GiB)")->capture_default_str();
    bench->add_option("--iters", bench_opt.iters, "timed iterations per size")->capture_default_str();
    bench->add_option("--warmup", bench_opt.warmup, "warm-up iterations per size")->capture_default_str();
    bench->add_option("--steps", bench_opt.steps, "timed steps per layer/decode row")->capture_default_str();
    bench->add_option("--nvme-path", bench_opt.nvme_path, "folder on the NVMe drive (no path: the nvme table is skipped)");
    bench->add_option("--nvme-bytes", bench_opt.nvme_bytes, "size of the NVMe test file")->capture_default_str();
    bench->add_option("--aio-block-size", bench_opt.aio_block_size, "NVMe bytes per read request")->capture_default_str();
    bench->add_option("--aio-queue-depth", bench_opt.aio_queue_depth, "NVMe reads in flight")->capture_default_str();
    bench->add_option("--only", bench_opt.only, "tables: h2d,nvme,allgather,layer,gemm,decode,embed-memory")->delimiter(',')
        ->capture_default_str();
    bench->add_option("--json", bench_opt.json_path, "also write every figure as JSON to this file");
    bench->add_option("--lengths", bench_opt.lengths, "embed-memory: sequence lengths, e.g. 8192,16384")->delimiter(',')
        ->capture_default_str();
    bench->add_option("--max-gpu-memory", bench_opt.max_gpu_memory, "cap on device memory (CUDA), e.g. 24GiB");
    bench->add_option("--profile", bench_opt.profile_path, "measure the machine profile for `ztinfer plan` into this JSON file");
    app.require_subcommand(0, 1);

    CLI11_PARSE(app, argc, argv);
    zt::WorldInfo world;
    try {
        world = zt::discover_world();   // mpirun / srun / RANK+WORLD_SIZE; plain `ztinfer` is rank 0 of 1
    } catch (const zt::Error & e) {
        std::cerr << "ztinfer: " << e.what() << '\n';
        return 2;
    }
    zt::set_error_rank(world.rank);
    zt::log_init(world.rank, log_level);
    try {
        if (*run) return command_run(world, config, input, output, trace, communicator);
        if (*synth) { zt::synthesize_model(so); spdlog::info("wrote {}", so.out_dir); return 0; }
        if (*quantize) return command_quantize(qo);
        if (*tokenize) return command_tokenize(tok_dir, jsonl, decode, special);
        if (*info) return command_info();
        if (*plan) {
            if (!plan_gpu_mem.empty()) plan_req.gpu_memory = zt::parse_byte_size(plan_gpu_mem, "--gpu-memory");
            if (!plan_host_mem.empty()) plan_req.host_memory = zt::parse_byte_size(plan_host_mem, "--host-memory");
            if (!plan_nvme.empty()) plan_req.nvme_space = zt::parse_byte_size(plan_nvme, "--nvme-space");
            return command_plan(plan_config, plan_req, plan_json);
        }
        if (*bench) return zt::run_benchmark(bench_opt, world);
        if (!config.empty()) return command_run(world, config, input, output, trace, communicator);
        std::cerr << app.help() << "\nGive --config ds.json to run a job, or a subcommand.\n";
        return 2;
    } catch (const zt::Error & e) {
        spdlog::error("{}: {}", e.location(), e.message());   // the log pattern already names the rank
        return 1;
    } catch (const std::exception & e) {
        spdlog::error("unexpected error: {}", e.what());
        return 1;
    }
}
