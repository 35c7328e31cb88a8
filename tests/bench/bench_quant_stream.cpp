// bench_quant_stream: streaming moves quantized bytes. A streamed step fetches every streamed layer once, as the
// bytes it is stored in, so while the link is the bottleneck a step costs S / link (S = bytes per step) and
// tokens/s scales with 1 / S: Q4_K (4.5 bits/weight) moves 16 / 4.5 = 3.56x fewer bytes than BF16 and should run
// ~3.5x faster over the same link, Q8_0 (8.5 bits/weight) ~1.9x.
//
// How: a Llama-2-7B-shaped layer stack (default 2 layers of hidden 4096, intermediate 11008, 32 heads, Llama 2
// tokenizer: vocab 32000; Llama 2's RoPE) is written by `ztinfer synth --dtype bf16`, then `ztinfer quantize --type q8_0` and
// `--type q4_k` make the quantized models from it. For each weight type and B in {1, 16, 64} the real job runs:
// the ztinfer binary of the build dir (one rank, CPU, --threads compute threads, offload_param "cpu", a simulated
// link "test_link_gbps", the embedding and LM head resident, every layer streamed) over B requests of --prompt
// token ids with max_tokens --gen and "ignore_eos" (every run takes --gen steps). Each run's <output>.metrics.json
// gives weights.streamed_bytes_per_step (S), weights.fetched_bytes_per_step, weights.bits_per_weight,
// tokens_per_second, link.efficiency.
//
// Calibration: first each type runs once at B = 1 streamed over an unlimited link (no test_link_gbps): its step
// time C(type) is the compute (and slice copy) cost, and its metrics give S(type). The link is then set so that
// fetching Q4_K's step takes F(Q4_K) = --fetch-factor (3) x the largest C at B = 1 of the three types. So every
// type is link-bound at B = 1: F(type) = S(type) / link >= F(Q4_K) >= 3 x C(type).
//
// Limits: a step costs at least F(type) = S(type) / link (the limit, printed first), so tokens/s <= B x gen /
// (steps x F) and tokens/s(Q4_K) / tokens/s(BF16) <= S(BF16) / S(Q4_K) (~3.5) while both are link-bound.
//
// Goals (exit 1 when one is missed):
//   (a) every run fetches S(type) per step (fetched within 1% of the plan's streamed bytes, the same for every B),
//       and S falls with bits/weight: S(type) / S(BF16) within 2% of bits(type) / 16 (the rest is padding).
//   (b) at B = 1 every type is link-bound: the link was busy >= 80% of the loop.
//   (c) tokens/s(Q4_K) / tokens/s(BF16) >= 3.0 at B = 1 and at every other B where both runs are link-bound
//       (link busy >= 80%); the other Bs print the ratio only.
// --layers, --batches, --gen, --prompt, --link-gbps resize it; --json FILE writes the table and goals as JSON.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/bench/bench_support.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int64_t kPersistenceThreshold = 10000;   // norms stay whole; every matrix of a layer is streamed
constexpr double kLinkBound = 0.8;                  // a run is link-bound when the link was busy >= 80% of the loop

using bench::exe_dir;
using bench::read_json;
using bench::shell_quote;
using bench::source_dir_of;
using bench::tail_of;

// Runs a shell command with its output in `log`; throws with the log's tail when it fails.
double run_command(const std::string & cmd, const std::string & log) {
    const auto t0 = Clock::now();
    const int status = std::system((cmd + " >" + shell_quote(log) + " 2>&1").c_str());
    if (status != 0)
        throw std::runtime_error("`" + cmd + "` failed (status " + std::to_string(status) + "):\n" + tail_of(log, 3000));
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct WeightType {
    std::string name;       // "bf16", "q8_0", "q4_k"
    std::string model;      // the model the job loads
};

struct Run {
    std::string type;
    int64_t B = 0;
    double link_gbps = 0;   // 0: unlimited (calibration)
    int64_t steps = 0, generated = 0, completed = 0;
    double streamed_per_step = 0, fetched_per_step = 0, bits_per_weight = 0;
    double loop_s = 0, tokens_per_s = 0, link_busy = 0, fetch_s = 0, compute_s = 0, wall_s = 0;
};

struct Bench {
    std::string ztinfer, dir;
    int64_t prompt = 8, gen = 4, threads = 1;

    Run run(const WeightType & wt, int64_t B, double link_gbps) const {
        Run r;
        r.type = wt.name;
        r.B = B;
        r.link_gbps = link_gbps;
        const std::string name = fmt::format("{}_b{}_{}", wt.name, B, link_gbps > 0 ? "link" : "free");
        const std::string input = dir + "/" + name + ".jsonl", output = dir + "/" + name + ".out.jsonl";
        const std::string config = dir + "/" + name + ".json", log = dir + "/" + name + ".log";
        {
            std::ofstream in(input);
            for (int64_t i = 0; i < B; ++i) {
                std::vector<int32_t> ids{1};
                for (int64_t j = 1; j < prompt; ++j) ids.push_back(int32_t(100 + (i * 131 + j * 17) % 30000));
                in << json{{"custom_id", "r" + std::to_string(i)}, {"prompt_token_ids", ids}, {"max_tokens", gen},
                           {"ignore_eos", true}}.dump() << "\n";
            }
        }
        json zt = {{"model", wt.model}, {"task", "generate"}, {"input", input}, {"output", output},
                   {"device", "cpu"}, {"batch_size", B}, {"micro_batches", 1}, {"threads", threads},
                   {"resume", false}, {"temperature", 0}, {"max_new_tokens", gen},
                   {"prefill_chunk", std::max<int64_t>(512, B * prompt)}};
        if (link_gbps > 0) zt["test_link_gbps"] = link_gbps;
        const json cfg = {{"zero_optimization", {{"stage", 3},
                                                 {"offload_param", {{"device", "cpu"}}},
                                                 {"stage3_param_persistence_threshold", kPersistenceThreshold}}},
                          {"ztinfer", zt}};
        std::ofstream(config) << cfg.dump(2) << "\n";
        std::error_code ec;
        fs::remove(output, ec);
        r.wall_s = run_command(shell_quote(ztinfer) + " --config " + shell_quote(config), log);
        const json m = read_json(output + ".metrics.json");
        r.steps = m.at("steps").get<int64_t>();
        r.generated = m.at("tokens").at("generated").get<int64_t>();
        r.completed = m.at("requests").at("completed").get<int64_t>();
        r.streamed_per_step = m.at("weights").at("streamed_bytes_per_step").get<double>();
        r.fetched_per_step = m.at("weights").at("fetched_bytes_per_step").get<double>();
        r.bits_per_weight = m.at("weights").at("bits_per_weight").get<double>();
        r.loop_s = m.at("loop_seconds").get<double>();
        r.tokens_per_s = m.at("tokens_per_second").get<double>();
        r.link_busy = m.at("link").at("efficiency").get<double>();
        r.fetch_s = m.at("stage_seconds").at("fetch").get<double>();
        r.compute_s = m.at("stage_seconds").at("compute").get<double>();
        return r;
    }
};

json run_json(const Run & r) {
    return {{"type", r.type}, {"B", r.B}, {"link_gbps", r.link_gbps}, {"steps", r.steps},
            {"generated_tokens", r.generated}, {"completed", r.completed},
            {"streamed_bytes_per_step", r.streamed_per_step}, {"fetched_bytes_per_step", r.fetched_per_step},
            {"bits_per_weight", r.bits_per_weight}, {"loop_seconds", r.loop_s}, {"tokens_per_second", r.tokens_per_s},
            {"link_busy", r.link_busy}, {"fetch_seconds", r.fetch_s}, {"compute_seconds", r.compute_s},
            {"job_wall_seconds", r.wall_s}};
}

}  // namespace

int main(int argc, char ** argv) {
    CLI::App app{"bench_quant_stream: bytes per step and tokens/s of BF16, Q8_0 and Q4_K weights streamed over the "
                 "same simulated link (CPU, Llama-2-7B-shaped layers)"};
    int64_t layers = 2, hidden = 4096, intermediate = 11008, heads = 32, prompt = 8, gen = 4, threads = 1;
    double link_gbps = 0, fetch_factor = 3.0;
    bool keep = false;
    std::string json_path, ztinfer, tokenizer;
    std::vector<int64_t> batches;
    std::vector<std::string> type_names = {"bf16", "q8_0", "q4_k"};
    app.add_option("--layers", layers)->capture_default_str();
    app.add_option("--hidden", hidden)->capture_default_str();
    app.add_option("--heads", heads)->capture_default_str();
    app.add_option("--intermediate", intermediate)->capture_default_str();
    app.add_option("--prompt", prompt, "prompt tokens per request")->capture_default_str();
    app.add_option("--gen", gen, "generated tokens per request (max_tokens, ignore_eos)")->capture_default_str();
    app.add_option("--threads", threads, "compute threads of each job")->capture_default_str();
    app.add_option("--batches", batches, "batches B to sweep (default 1,16,64; 1 is always run)");
    app.add_option("--types", type_names, "weight types (bf16 always runs: the reference)")->capture_default_str()
        ->check(CLI::IsMember({"bf16", "q8_0", "q4_k"}));
    app.add_option("--link-gbps", link_gbps, "simulated link GB/s (default: calibrated, see --fetch-factor)");
    app.add_option("--fetch-factor", fetch_factor, "calibration: fetching a Q4_K step takes this x the slowest "
                   "unlimited-link step at B = 1")->capture_default_str();
    app.add_option("--json", json_path, "write the table and goals as JSON to this file");
    app.add_option("--ztinfer", ztinfer, "ztinfer binary (default: the one beside this program)");
    app.add_option("--tokenizer", tokenizer, "tokenizer folder (default: <source>/tests/data/tokenizers/llama2)");
    app.add_flag("--keep", keep, "keep the temp folder (models, configs, logs, outputs)");
    CLI11_PARSE(app, argc, argv);
    if (batches.empty()) batches = {1, 16, 64};
    std::sort(batches.begin(), batches.end());
    batches.erase(std::unique(batches.begin(), batches.end()), batches.end());
    if (batches.front() < 1) { std::fprintf(stderr, "--batches must be >= 1\n"); return 2; }
    if (batches.front() != 1) batches.insert(batches.begin(), 1);   // the calibrated, link-bound reference

    const auto t_start = Clock::now();
    const std::string build = exe_dir();
    if (ztinfer.empty()) ztinfer = build + "/ztinfer";
    if (tokenizer.empty()) tokenizer = source_dir_of(build) + "/tests/data/tokenizers/llama2";
    if (!fs::exists(ztinfer)) { std::fprintf(stderr, "bench_quant_stream: no ztinfer at %s (build it, or --ztinfer)\n", ztinfer.c_str()); return 2; }

    std::string dir = (fs::temp_directory_path() / "zt_bench_quant_stream_XXXXXX").string();
    if (!mkdtemp(dir.data())) { std::perror("mkdtemp"); return 2; }
    int rc = 0;
    try {
        Bench b;
        b.ztinfer = ztinfer;
        b.dir = dir;
        b.prompt = prompt;
        b.gen = gen;
        b.threads = threads;

        // The models: synth (bf16), then quantize it.
        std::vector<WeightType> types = {{"bf16", dir + "/bf16"}};
        for (const char * t : {"q8_0", "q4_k"})
            if (std::count(type_names.begin(), type_names.end(), t)) types.push_back({t, dir + "/" + t + ".gguf"});
        double make_s = run_command(fmt::format("{} synth --arch llama --layers {} --hidden {} --heads {} --kv-heads {} "
                                                "--intermediate {} --dtype bf16 --seed 1 --tokenizer {} --out {}",
                                                shell_quote(ztinfer), layers, hidden, heads, heads, intermediate,
                                                shell_quote(tokenizer), shell_quote(types[0].model)),
                                    dir + "/synth.log");
        // Llama 2's RoPE (theta 10000, no scaling) in place of synth's Llama 3.1 scaling, whose GGUF form
        // (a rope_freqs tensor) ztinfer does not load
        json mcfg = read_json(types[0].model + "/config.json");
        mcfg.erase("rope_scaling");
        mcfg["rope_theta"] = 10000.0;
        std::ofstream(types[0].model + "/config.json") << mcfg.dump(2) << "\n";
        const int64_t vocab = mcfg.at("vocab_size").get<int64_t>();
        for (size_t i = 1; i < types.size(); ++i)
            make_s += run_command(fmt::format("{} quantize --type {} --model {} --out {}", shell_quote(ztinfer),
                                              types[i].name, shell_quote(types[0].model), shell_quote(types[i].model)),
                                  dir + "/quantize_" + types[i].name + ".log");

        // Calibration: each type at B = 1 over an unlimited link.
        std::map<std::string, Run> free_run;
        double slowest_step = 0;
        for (const WeightType & wt : types) {
            const Run r = b.run(wt, 1, 0);
            free_run[wt.name] = r;
            slowest_step = std::max(slowest_step, r.loop_s / double(std::max<int64_t>(r.steps, 1)));
        }
        // the smallest S (q4_k when it runs) gets F = fetch_factor x the slowest step
        std::string smallest = "bf16";
        for (const WeightType & wt : types)
            if (free_run[wt.name].streamed_per_step < free_run[smallest].streamed_per_step) smallest = wt.name;
        const bool has_q4k = free_run.count("q4_k") > 0;
        const double S_bf16 = free_run["bf16"].streamed_per_step;
        const double S_q4k = has_q4k ? free_run["q4_k"].streamed_per_step : 0.0;
        const bool calibrated = link_gbps <= 0;
        if (calibrated) link_gbps = free_run[smallest].streamed_per_step / (fetch_factor * slowest_step) / 1e9;

        std::printf("bench_quant_stream: llama %lld layers (all streamed), hidden %lld, intermediate %lld, %lld heads, "
                    "vocab %lld (embedding and LM head resident); prompt %lld + %lld generated tokens per request "
                    "(ignore_eos); 1 rank, %lld compute thread(s), offload cpu; models made in %.0f s\n",
                    (long long)layers, (long long)hidden, (long long)intermediate, (long long)heads, (long long)vocab,
                    (long long)prompt,
                    (long long)gen, (long long)threads, make_s);
        std::printf("simulated link %.4f GB/s (%s); the limit of each type: F = S / link per step\n", link_gbps,
                    calibrated ? fmt::format("calibrated: F({}) = {:.1f} x the slowest unlimited-link step at B = 1, "
                                             "{:.1f} ms", smallest, fetch_factor, slowest_step * 1e3).c_str()
                               : "--link-gbps");
        std::printf("%6s %9s %10s %10s %12s\n", "type", "bits/w", "MiB/step", "F ms/step", "free ms/step");
        for (const WeightType & wt : types) {
            const Run & f = free_run[wt.name];
            std::printf("%6s %9.3f %10.1f %10.1f %12.1f\n", wt.name.c_str(), f.bits_per_weight,
                        f.streamed_per_step / (1 << 20), f.streamed_per_step / (link_gbps * 1e9) * 1e3,
                        f.loop_s / double(std::max<int64_t>(f.steps, 1)) * 1e3);
        }

        std::vector<Run> runs;
        for (int64_t B : batches)
            for (const WeightType & wt : types) runs.push_back(b.run(wt, B, link_gbps));
        const auto find = [&](const std::string & type, int64_t B) -> const Run & {
            for (const Run & r : runs) if (r.type == type && r.B == B) return r;
            throw std::runtime_error("no run of " + type + " at B " + std::to_string(B));
        };

        std::printf("%6s %4s %5s %9s %10s %10s %9s %9s %8s %7s %9s\n", "type", "B", "steps", "bits/w", "MiB/step",
                    "tok/s", "bound", "of bnd", "link", "vs bf16", "res tok/s");
        json rows = json::array();
        bool ok_a = true, ok_b = true, ok_c = true;
        double worst_step = 1.0, worst_bits = 1.0, worst_ratio = 1e9;
        for (const Run & r : runs) {
            const Run & ref = find("bf16", r.B);
            const double F = r.streamed_per_step / (link_gbps * 1e9);
            const double bound = double(r.B * gen) / (double(r.steps) * F);
            const double vs_bf16 = r.tokens_per_s / ref.tokens_per_s;
            const double step_ratio = r.fetched_per_step / r.streamed_per_step;
            const double bits_ratio = (r.streamed_per_step / ref.streamed_per_step) / (r.bits_per_weight / 16.0);
            const bool same_S = std::fabs(r.streamed_per_step - free_run[r.type].streamed_per_step) < 0.5;
            const bool ok_row = step_ratio >= 0.99 && step_ratio <= 1.01 && same_S && bits_ratio >= 0.98 &&
                                bits_ratio <= 1.02 && r.generated == r.B * gen && r.completed == r.B;
            ok_a = ok_a && ok_row;
            if (std::fabs(step_ratio - 1) > std::fabs(worst_step - 1)) worst_step = step_ratio;
            if (std::fabs(bits_ratio - 1) > std::fabs(worst_bits - 1)) worst_bits = bits_ratio;
            const bool link_bound = r.link_busy >= kLinkBound;
            if (r.B == 1) ok_b = ok_b && link_bound;
            if (r.type == "q4_k" && (r.B == 1 || (link_bound && ref.link_busy >= kLinkBound))) {
                worst_ratio = std::min(worst_ratio, vs_bf16);
                ok_c = ok_c && vs_bf16 >= 3.0;
            }
            const std::string res = r.B == 1 ? fmt::format("{:9.2f}", free_run[r.type].tokens_per_s) : "        -";
            std::printf("%6s %4lld %5lld %9.3f %10.1f %10.3f %9.3f %9.2f %7.0f%% %7.2f %s\n", r.type.c_str(),
                        (long long)r.B, (long long)r.steps, r.bits_per_weight, r.fetched_per_step / (1 << 20),
                        r.tokens_per_s, bound, r.tokens_per_s / bound, r.link_busy * 100, vs_bf16, res.c_str());
            json row = run_json(r);
            row["limit_seconds_per_step"] = F;
            row["tokens_per_second_bound"] = bound;
            row["tokens_per_second_vs_bf16"] = vs_bf16;
            row["link_bound"] = link_bound;
            rows.push_back(row);
        }
        std::printf("columns: MiB/step = weight bytes fetched per step (measured); bound = B x gen / (steps x S / link) "
                    "tokens/s, the link's limit; link = fraction of the loop the link was fetching; vs bf16 = tokens/s "
                    "over BF16's at the same B; res tok/s = the unlimited-link run (compute only), B = 1\n");
        std::printf("%s (a) bytes/step fetched = S +-1%% for every run, and S(type) / S(bf16) = bits/16 +-2%%: worst %.4f, "
                    "%.4f\n", ok_a ? "PASS" : "FAIL", worst_step, worst_bits);
        std::printf("%s (b) every type is link-bound at B = 1 (link busy >= %.0f%%)\n", ok_b ? "PASS" : "FAIL",
                    kLinkBound * 100);
        if (has_q4k)
            std::printf("%s (c) tokens/s(q4_k) / tokens/s(bf16) >= 3.0 where link-bound: lowest %.2f (limit S(bf16) / "
                        "S(q4_k) = %.2f)\n", ok_c ? "PASS" : "FAIL", worst_ratio > 1e8 ? 0.0 : worst_ratio,
                        S_bf16 / S_q4k);
        else
            std::printf("SKIP (c) q4_k is not in --types\n");
        const bool ok = ok_a && ok_b && ok_c;
        const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
        std::printf("bench_quant_stream: %s (%.1f s)\n", ok ? "PASS" : "FAIL", total);
        if (!json_path.empty()) {
            json calib = json::object();
            for (const auto & [name, r] : free_run) calib[name] = run_json(r);
            const json out = {{"model", {{"layers", layers}, {"hidden", hidden}, {"intermediate", intermediate},
                                         {"heads", heads}, {"vocab", vocab}}},
                              {"prompt_tokens", prompt}, {"generated_tokens_per_request", gen}, {"threads", threads},
                              {"link_gbps", link_gbps}, {"link_calibrated", calibrated}, {"fetch_factor", fetch_factor},
                              {"calibration", calib}, {"rows", rows},
                              {"goals", {{"a_bytes_per_step", {{"pass", ok_a}, {"worst_fetched_over_S", worst_step},
                                                               {"worst_S_over_bits", worst_bits}}},
                                         {"b_link_bound_at_B1", {{"pass", ok_b}}},
                                         {"c_q4k_over_bf16", {{"pass", ok_c}, {"lowest", worst_ratio > 1e8 ? 0.0 : worst_ratio},
                                                              {"goal", 3.0}, {"limit", has_q4k ? S_bf16 / S_q4k : 0.0},
                                                              {"ran", has_q4k}}}}},
                              {"pass", ok}, {"seconds", total}};
            std::ofstream(json_path) << out.dump(2) << "\n";
        }
        rc = ok ? 0 : 1;
    } catch (const std::exception & e) {
        std::fprintf(stderr, "bench_quant_stream: error: %s\n", e.what());
        rc = 2;
    }
    if (keep) std::printf("kept %s\n", dir.c_str());
    else { std::error_code ec; fs::remove_all(dir, ec); }
    return rc;
}
