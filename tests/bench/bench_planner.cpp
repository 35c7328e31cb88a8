// bench_planner: does `ztinfer plan` predict what real jobs do? On CPU ranks with the simulated link
// (ztinfer.test_link_gbps: every slice copy takes bytes / X GB/s), for >= 12 different job configurations
// (offload tier none/cpu/nvme, batch_size x micro_batches, prefetch_depth 1-3, world 1/2/4, resident_layers,
// overlap on/off, KV-cache offload, bf16 and q8_0 weights, slow and fast links) it compares the planner's
// prediction with the job's <output>.metrics.json:
//   speed   predicted.tokens_per_s vs tokens_per_second (generated tokens of all ranks / loop seconds)
//   memory  predicted.memory.device + pinned vs memory.device_peak + pinned_peak (per rank, the largest rank;
//           on the CPU backend "device" memory is host memory its MemoryAccount counts), and, for tier nvme,
//           predicted.memory.nvme vs memory.nvme_file_bytes
//
// How: `ztinfer synth` writes a bf16 Llama model (default 8 layers, hidden 512, intermediate 1536, 8 heads, 4 KV
// heads, Llama 2 tokenizer) to a temp folder and `ztinfer quantize --type q8_0` a GGUF copy. The machine profile
// is measured once: the plain run of `ztinfer bench --profile P` (copies, NVMe, matmul, attention, overheads with
// --profile-threads threads), then `mpirun -np 2` and `-np 4`, which only add the all-gather of 2 and 4 ranks to
// P (benchmark_profile.cpp) (--profile-file reuses a profile instead). For each configuration the bench writes
// its ds.json and a JSONL of token-id prompts (lengths drawn with a fixed seed, max_tokens G, ignore_eos), runs
// `ztinfer plan --config C --ranks N --profile P --json` and then the job (plain, or `mpirun --oversubscribe
// --bind-to none -np N`). A second table splits a step: predicted vs measured fetch / all-gather / compute / kv.
//
// Goals (exit 1 when one is missed; PASS/MISS printed for each):
//   speed   median |error| of tokens/s <= 10 % and the worst <= 20 %
//   memory  every configuration's device + pinned within 10 %, and NVMe bytes within 10 % for tier nvme
// A busy machine only slows jobs down, so a configuration whose speed error exceeds 20 % runs again (at most 3
// attempts, every one printed) and the goals take its fastest attempt. Exit 2: the bench itself failed.
// --gate median-and-memory (CI): the exit status follows the median and memory goals only; the worst-case goal is
// still printed. Why: on a 2-core VM that other work shares, load that comes and goes between the profile and a
// job swings single configurations by 2x (seen: 105-122 % while other builds ran), but not the median.
// Options: --ztinfer PATH (default: $ZT_BINARY, else the ztinfer beside this program), --keep, --only NAME,
// --json FILE (every row and goal), --list (the configurations).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
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

using bench::exe_dir;
using bench::read_json;
using bench::shell_quote;
using bench::source_dir_of;
using bench::tail_of;

constexpr double kMedianSpeedGoal = 0.10, kWorstSpeedGoal = 0.20, kMemoryGoal = 0.10;
constexpr int kMaxAttempts = 3;
constexpr double kMiB = 1024.0 * 1024.0;

// One job configuration. link_gbps 0: no simulated link (a copy costs a memcpy).
struct JobSpec {
    std::string name, model = "bf16";   // model: "bf16" (the synth folder) or "q8_0" (the GGUF copy)
    int world = 1, threads = 1;
    std::string tier = "cpu";           // offload_param.device
    int64_t batch = 4, micro = 1, depth = 2, resident = 0;
    bool overlap = true, kv_cpu = false;
    double link_gbps = 0;
    int64_t requests = 0;               // 0: one wave, world x batch x micro
    int64_t gen = 16;                   // max_tokens of every request
    size_t index = 0;                   // position in job_specs(): the seed of its prompt lengths
};

// The sweep. Link rates are for the default model (bf16: ~50 MB of streamed layers per step, q8_0 ~27 MB; a rank
// fetches 1/N of it): on the 2-core dev VM, where a decode step of 4 sequences computes in ~20 ms, 0.1-1 GB/s
// makes the step link-bound (d1-slow, resident4, nvme, q8-slow, w2-slow, q8-w2-nvme, w4: fetch busy > 85 % of
// the loop) and 2-20 GB/s or no streaming compute-bound (resident, mb2-fast, d3-mb4, kv-cpu, w2-mb2-fast);
// overlap-off pays fetch + compute. max_tokens is sized for loops of ~1-2.5 s there.
std::vector<JobSpec> job_specs() {
    std::vector<JobSpec> v;
    auto add = [&](JobSpec s) { v.push_back(std::move(s)); };
    add({"bf16-resident", "bf16", 1, 2, "none", 4, 1, 2, 0, true, false, 0, 0, 128});
    add({"bf16-cpu-d1-slow", "bf16", 1, 1, "cpu", 2, 1, 1, 0, true, false, 0.5, 0, 16});
    add({"bf16-cpu-mb2-fast", "bf16", 1, 2, "cpu", 4, 2, 2, 0, true, false, 20, 0, 96});
    add({"bf16-cpu-d3-mb4", "bf16", 1, 1, "cpu", 2, 4, 3, 0, true, false, 2, 0, 32});
    add({"bf16-cpu-overlap-off", "bf16", 1, 1, "cpu", 4, 1, 2, 0, false, false, 1.5, 0, 32});
    add({"bf16-cpu-resident4", "bf16", 1, 1, "cpu", 4, 1, 2, 4, true, false, 0.4, 0, 24});
    add({"bf16-nvme-d2", "bf16", 1, 1, "nvme", 4, 1, 2, 0, true, false, 1, 0, 16});
    add({"bf16-cpu-kv-cpu", "bf16", 1, 1, "cpu", 4, 1, 2, 0, true, true, 8, 6, 48});
    add({"q8-cpu-slow", "q8_0", 1, 1, "cpu", 4, 1, 2, 0, true, false, 0.3, 0, 16});
    add({"q8-resident-b8", "q8_0", 1, 2, "none", 8, 1, 2, 0, true, false, 0, 12, 100});
    add({"bf16-w2-cpu-slow", "bf16", 2, 1, "cpu", 4, 1, 2, 0, true, false, 0.3, 0, 16});
    add({"bf16-w2-cpu-mb2-fast", "bf16", 2, 1, "cpu", 4, 2, 1, 0, true, false, 10, 0, 40});
    add({"q8-w2-nvme-d3", "q8_0", 2, 1, "nvme", 4, 1, 3, 0, true, false, 0.5, 0, 32});
    add({"bf16-w4-cpu-slow", "bf16", 4, 1, "cpu", 2, 1, 2, 0, true, false, 0.15, 0, 16});
    add({"q8-w4-cpu-mb2-d1", "q8_0", 4, 1, "cpu", 2, 2, 1, 0, true, false, 0.1, 12, 16});
    return v;
}

struct Attempt {
    bool ok = false;
    std::string error;
    double tokens_per_s = 0, loop_s = 0, wall_s = 0;
    bool have_memory = false;
    double device_pinned = 0, nvme_file = 0;
    json metrics;
};

struct Row {
    JobSpec spec;
    bool plan_ok = false;
    std::string plan_error;
    json plan;
    double pred_tps = 0, pred_mem = 0, pred_nvme = 0;
    std::string bound;
    std::vector<Attempt> attempts;
    int best = -1;                      // index of the fastest successful attempt
    const Attempt * measured() const { return best < 0 ? nullptr : &attempts[size_t(best)]; }
};

double rel_err(double predicted, double measured) { return measured > 0 ? (predicted - measured) / measured : NAN; }

struct Shell {
    int status = 0;
    double seconds = 0;
};
// Runs `cmd` with stdout to `out` and stderr to `err` (the same file when equal), at most timeout_s seconds.
Shell run_shell(const std::string & cmd, const std::string & out, const std::string & err, int timeout_s) {
    std::string full = "timeout --kill-after=10 " + std::to_string(timeout_s) + " " + cmd + " >" + shell_quote(out);
    full += out == err ? " 2>&1" : " 2>" + shell_quote(err);
    const auto t0 = Clock::now();
    const int st = std::system(full.c_str());
    Shell r;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

struct Bench {
    std::string ztinfer, mpirun, dir, tokenizer, profile;
    int64_t layers = 8, hidden = 512, intermediate = 1536, heads = 8, kv_heads = 4;
    int64_t min_prompt = 8, max_prompt = 40;
    int profile_threads = 1, job_timeout = 180;
    uint64_t seed = 1234;

    std::string launcher(int world) const {
        if (world <= 1) return shell_quote(ztinfer);
        return shell_quote(mpirun) + " --oversubscribe --bind-to none -np " + std::to_string(world) + " " +
               shell_quote(ztinfer);
    }

    // Runs a setup command; throws with the log's tail when it fails.
    double setup(const std::string & what, const std::string & cmd, int timeout_s) const {
        const std::string log = dir + "/" + what + ".log";
        std::printf("  $ %s\n", cmd.c_str());
        std::fflush(stdout);
        const Shell s = run_shell(cmd, log, log, timeout_s);
        if (s.status != 0)
            throw std::runtime_error(fmt::format("{} failed (status {}{}):\n{}", what, s.status,
                                                 s.status == 124 ? ", timed out" : "", tail_of(log, 3000)));
        std::printf("    %.1f s\n", s.seconds);
        return s.seconds;
    }

    void make_models() const {
        setup("synth", fmt::format("{} synth --arch llama --layers {} --hidden {} --heads {} --kv-heads {} "
                                   "--intermediate {} --dtype bf16 --seed 1 --tokenizer {} --out {}",
                                   shell_quote(ztinfer), layers, hidden, heads, kv_heads, intermediate,
                                   shell_quote(tokenizer), shell_quote(dir + "/bf16")), 300);
        setup("quantize", fmt::format("{} quantize --model {} --type q8_0 --threads 2 --out {}", shell_quote(ztinfer),
                                      shell_quote(dir + "/bf16"), shell_quote(dir + "/q8_0.gguf")), 300);
    }

    // The profile: the plain run measures everything with profile_threads threads on the whole machine, then
    // `mpirun -np 2` and `-np 4` add only their all-gather figures (benchmark_profile.cpp). `extra` goes on every
    // command line ({dir}: the work folder), `extra_plain` on the plain one only.
    void measure_profile(std::string extra, std::string extra_plain) const {
        for (std::string * a : {&extra, &extra_plain})
            for (size_t at; (at = a->find("{dir}")) != std::string::npos;) a->replace(at, 5, dir);
        fs::create_directories(dir + "/nvme-bench");
        setup("profile", fmt::format("{} bench --device cpu --threads {} --profile {} {} {}", shell_quote(ztinfer),
                                     profile_threads, shell_quote(profile), extra, extra_plain), 600);
        for (int n : {2, 4})
            setup(fmt::format("profile-np{}", n), fmt::format("{} bench --device cpu --threads 1 --profile {} {}",
                                                              launcher(n), shell_quote(profile), extra), 600);
    }

    std::string model_path(const JobSpec & s) const { return s.model == "q8_0" ? dir + "/q8_0.gguf" : dir + "/bf16"; }

    // Writes <name>.jsonl (the requests) and <name>.json (ds.json); returns the ds.json path.
    std::string write_job(const JobSpec & s) const {
        const std::string base = dir + "/" + s.name;
        const int64_t n = s.requests > 0 ? s.requests : s.world * s.batch * s.micro;
        std::mt19937_64 rng(seed + s.index);
        std::uniform_int_distribution<int64_t> len(min_prompt, max_prompt);
        std::uniform_int_distribution<int32_t> tok(100, 30000);
        {
            std::ofstream in(base + ".jsonl");
            for (int64_t i = 0; i < n; ++i) {
                std::vector<int32_t> ids{1};
                const int64_t L = len(rng);
                while (int64_t(ids.size()) < L) ids.push_back(tok(rng));
                in << json{{"custom_id", fmt::format("{}-{}", s.name, i)}, {"prompt_token_ids", ids},
                           {"max_tokens", s.gen}, {"ignore_eos", true}}.dump() << "\n";
            }
        }
        json offload = {{"device", s.tier}};
        if (s.tier == "nvme") {
            offload["nvme_path"] = base + ".nvme";
            fs::create_directories(base + ".nvme");
        }
        json zt = {{"model", model_path(s)}, {"task", "generate"}, {"input", base + ".jsonl"},
                   {"output", base + ".out.jsonl"}, {"device", "cpu"}, {"threads", s.threads},
                   {"batch_size", s.batch}, {"micro_batches", s.micro}, {"prefetch_depth", s.depth},
                   {"resident_layers", s.resident}, {"overlap", s.overlap}, {"resume", false},
                   {"temperature", 0}, {"seed", 7}, {"max_new_tokens", s.gen}, {"collective_timeout_s", 120}};
        if (s.link_gbps > 0) zt["test_link_gbps"] = s.link_gbps;
        if (s.kv_cpu) zt["kv_cache"] = {{"offload", "cpu"}};
        const json ds = {{"zero_optimization", {{"stage", 3}, {"offload_param", offload}}}, {"ztinfer", zt}};
        std::ofstream(base + ".json") << ds.dump(2) << "\n";
        return base + ".json";
    }

    void plan(Row & r, const std::string & config) const {
        const std::string out = dir + "/" + r.spec.name + ".plan.json", err = dir + "/" + r.spec.name + ".plan.log";
        const std::string cmd = fmt::format("{} plan --config {} --ranks {} --profile {} --json", shell_quote(ztinfer),
                                            shell_quote(config), r.spec.world, shell_quote(profile));
        const Shell s = run_shell(cmd, out, err, 120);
        // exit 3: nothing fits the budget; the JSON (and the configured prediction) is printed all the same
        if (s.status != 0 && s.status != 3) {
            r.plan_error = fmt::format("`{}` failed (status {}): {}", cmd, s.status, tail_of(err, 1500));
            return;
        }
        try {
            r.plan = read_json(out);
            const json & p = r.plan.at("predicted");
            r.pred_tps = p.at("tokens_per_s").get<double>();
            r.bound = p.at("bound").get<std::string>();
            const json & m = p.at("memory");
            r.pred_mem = m.at("device").get<double>() + m.at("pinned").get<double>();
            r.pred_nvme = m.at("nvme").get<double>();
            r.plan_ok = true;
        } catch (const std::exception & e) {
            r.plan_error = fmt::format("`{}` printed no usable JSON ({}): {}", cmd, e.what(), tail_of(out, 1500));
        }
    }

    Attempt run_job(const JobSpec & s, const std::string & config, int attempt) const {
        Attempt a;
        const std::string output = dir + "/" + s.name + ".out.jsonl";
        const std::string log = dir + "/" + s.name + fmt::format(".run{}.log", attempt);
        std::error_code ec;
        fs::remove(output, ec);
        fs::remove(output + ".metrics.json", ec);
        const std::string cmd = launcher(s.world) + " --config " + shell_quote(config);
        const Shell sh = run_shell(cmd, log, log, job_timeout);
        a.wall_s = sh.seconds;
        if (sh.status != 0) {
            a.error = fmt::format("`{}` failed (status {}{}):\n{}", cmd, sh.status,
                                  sh.status == 124 ? ", timed out" : "", tail_of(log, 2000));
            return a;
        }
        try {
            a.metrics = read_json(output + ".metrics.json");
            a.tokens_per_s = a.metrics.at("tokens_per_second").get<double>();
            a.loop_s = a.metrics.at("loop_seconds").get<double>();
            const int64_t want = (s.requests > 0 ? s.requests : s.world * s.batch * s.micro) * s.gen;
            const int64_t got = a.metrics.at("tokens").at("generated").get<int64_t>();
            if (got != want) {
                a.error = fmt::format("generated {} tokens, expected {} (every request runs to max_tokens)", got, want);
                return a;
            }
            if (a.metrics.contains("memory")) {
                const json & m = a.metrics["memory"];
                a.device_pinned = m.at("device_peak").get<double>() + m.at("pinned_peak").get<double>();
                a.nvme_file = m.value("nvme_file_bytes", 0.0);
                a.have_memory = true;
            }
            a.ok = true;
        } catch (const std::exception & e) {
            a.error = fmt::format("{}.metrics.json: {}", output, e.what());
        }
        return a;
    }
};

std::string pct(double e) { return std::isnan(e) ? "n/a" : fmt::format("{:+.1f}%", e * 100); }
std::string abs_pct(double e) {
    return std::isnan(e) ? "n/a" : std::isinf(e) ? "unknown" : fmt::format("{:.1f}%", e * 100);
}
std::string mib(double b) { return fmt::format("{:.1f}", b / kMiB); }

void print_row(const Row & r) {
    const JobSpec & s = r.spec;
    const Attempt * a = r.measured();
    const double se = a && r.plan_ok ? rel_err(r.pred_tps, a->tokens_per_s) : NAN;
    const bool mem = a && r.plan_ok && a->have_memory;
    const bool nvme = s.tier == "nvme";
    std::printf("%-22s %2d %-4s %2lldx%-2lld %2lld %9s %9s %8s %-16s %8s %8s %8s %8s %8s %8s\n", s.name.c_str(),
                s.world, s.tier.c_str(), (long long)s.batch, (long long)s.micro, (long long)s.depth,
                r.plan_ok ? fmt::format("{:.1f}", r.pred_tps).c_str() : "n/a",
                a ? fmt::format("{:.1f}", a->tokens_per_s).c_str() : "failed", pct(se).c_str(),
                r.plan_ok ? r.bound.c_str() : "n/a", r.plan_ok ? mib(r.pred_mem).c_str() : "n/a",
                a && a->have_memory ? mib(a->device_pinned).c_str() : "n/a",
                mem ? pct(rel_err(r.pred_mem, a->device_pinned)).c_str() : "n/a",
                nvme && r.plan_ok ? mib(r.pred_nvme).c_str() : "-",
                nvme && a && a->have_memory ? mib(a->nvme_file).c_str() : "-",
                nvme && mem ? pct(rel_err(r.pred_nvme, a->nvme_file)).c_str() : "-");
}

// Where the time goes, per step (ms): the planner's full decode step and its resources' busy times vs the job's
// loop seconds and stage seconds (busiest rank) over its steps; then, for a memory miss, both breakdowns.
void print_breakdown(const std::vector<Row> & rows) {
    std::printf("\nper step (ms), predicted / measured: step = a full decode step / loop over steps; fetch, "
                "all-gather, compute, kv = busy time (measured: stage_seconds of the busiest rank over steps)\n");
    std::printf("%-22s %6s %15s %15s %15s %15s %15s\n", "config", "steps", "step", "fetch", "all-gather", "compute",
                "kv");
    for (const Row & r : rows) {
        const Attempt * a = r.measured();
        if (!a || !r.plan_ok || !r.plan.contains("configured")) continue;
        const json sp = r.plan["configured"].value("speed", json::object());
        const json st = a->metrics.value("stage_seconds", json::object());
        const double steps = a->metrics.value("steps", 0.0);
        auto cell = [&](const char * pk, const char * mk) {
            const double p = sp.value(pk, 0.0) * 1e3;
            const double m = steps > 0 ? (mk ? st.value(mk, 0.0) : a->loop_s) / steps * 1e3 : 0;
            return fmt::format("{:7.2f}/{:<7.2f}", p, m);
        };
        std::printf("%-22s %6s %15s %15s %15s %15s %15s\n", r.spec.name.c_str(),
                    fmt::format("{}/{}", sp.value("steps", int64_t(0)), int64_t(steps)).c_str(),
                    cell("step_seconds", nullptr).c_str(), cell("fetch_seconds", "fetch").c_str(),
                    cell("all_gather_seconds", "all_gather").c_str(), cell("compute_seconds", "compute").c_str(),
                    cell("kv_seconds", "kv").c_str());
    }
    for (const Row & r : rows) {
        const Attempt * a = r.measured();
        if (!a || !r.plan_ok || !a->have_memory) continue;
        const bool nvme = r.spec.tier == "nvme";
        if (std::fabs(rel_err(r.pred_mem, a->device_pinned)) <= kMemoryGoal &&
            (!nvme || std::fabs(rel_err(r.pred_nvme, a->nvme_file)) <= kMemoryGoal))
            continue;
        std::string pred, meas;
        const json cm = r.plan.contains("configured") ? r.plan.at("configured").value("memory", json::object())
                                                      : json::object();
        for (const json & it : cm.value("items", json::array()))
            pred += fmt::format(" {} ({}) {:.2f};", it.value("name", "?"), it.value("tier", "?"),
                                it.value("bytes", 0.0) / kMiB);
        const json & m = a->metrics.at("memory");
        const json by_purpose = m.value("device_by_purpose", json::object());   // items() of a temporary dangles
        for (const auto & [k, v] : by_purpose.items())
            meas += fmt::format(" {} {:.2f};", k, v.get<double>() / kMiB);
        std::printf("memory miss %s, MiB: predicted%s\n  measured: device_peak %.2f, pinned_peak %.2f, host_peak "
                    "%.2f, nvme_file_bytes %.2f; device by purpose:%s\n", r.spec.name.c_str(), pred.c_str(),
                    m.value("device_peak", 0.0) / kMiB, m.value("pinned_peak", 0.0) / kMiB,
                    m.value("host_peak", 0.0) / kMiB, m.value("nvme_file_bytes", 0.0) / kMiB, meas.c_str());
    }
}

json row_json(const Row & r) {
    const JobSpec & s = r.spec;
    json attempts = json::array();
    for (const Attempt & a : r.attempts)
        attempts.push_back({{"ok", a.ok}, {"error", a.error}, {"tokens_per_second", a.tokens_per_s},
                            {"loop_seconds", a.loop_s}, {"wall_seconds", a.wall_s},
                            {"device_plus_pinned_bytes", a.have_memory ? json(a.device_pinned) : json(nullptr)},
                            {"nvme_file_bytes", a.have_memory ? json(a.nvme_file) : json(nullptr)}});
    const Attempt * a = r.measured();
    json j = {{"name", s.name}, {"model", s.model}, {"world", s.world}, {"threads", s.threads}, {"tier", s.tier},
              {"batch_size", s.batch}, {"micro_batches", s.micro}, {"prefetch_depth", s.depth},
              {"resident_layers", s.resident}, {"overlap", s.overlap}, {"kv_offload", s.kv_cpu ? "cpu" : "none"},
              {"test_link_gbps", s.link_gbps}, {"max_tokens", s.gen}, {"attempts", attempts}, {"best_attempt", r.best},
              {"plan_error", r.plan_error}};
    if (r.plan_ok) {
        j["predicted"] = {{"tokens_per_second", r.pred_tps}, {"bound", r.bound},
                          {"device_plus_pinned_bytes", r.pred_mem}, {"nvme_bytes", r.pred_nvme}};
        if (r.plan.contains("configured")) j["configured"] = r.plan.at("configured");
    }
    if (a) {
        j["measured"] = {{"tokens_per_second", a->tokens_per_s}, {"loop_seconds", a->loop_s}};
        if (a->metrics.contains("stage_seconds")) j["measured"]["stage_seconds"] = a->metrics["stage_seconds"];
        if (a->metrics.contains("memory")) j["measured"]["memory"] = a->metrics["memory"];
        if (r.plan_ok) {
            j["speed_error"] = rel_err(r.pred_tps, a->tokens_per_s);
            if (a->have_memory) {
                j["memory_error"] = rel_err(r.pred_mem, a->device_pinned);
                if (s.tier == "nvme") j["nvme_error"] = rel_err(r.pred_nvme, a->nvme_file);
            }
        }
    }
    return j;
}

}  // namespace

int main(int argc, char ** argv) {
    CLI::App app{"bench_planner: `ztinfer plan`'s predicted tokens/s and memory against real jobs (CPU ranks, "
                 "simulated link)"};
    Bench b;
    std::string only, json_path, keep_dir, profile_file, profile_error;
    std::string profile_args = "--hidden 512 --max-bytes 256MiB";
    std::string profile_plain_args = "--nvme-path {dir}/nvme-bench";
    bool list = false;
    std::string gate = "all";
    app.add_option("--ztinfer", b.ztinfer, "ztinfer binary (default: $ZT_BINARY, else the one beside this program)");
    app.add_option("--mpirun", b.mpirun, "mpirun (default: $ZT_MPIEXEC, else mpirun from PATH)");
    app.add_option("--tokenizer", b.tokenizer, "tokenizer folder (default: <source>/tests/data/tokenizers/llama2)");
    app.add_option("--keep", keep_dir, "work in this folder and keep it (models, profile, configs, plans, logs)");
    app.add_option("--only", only, "run only the configurations whose name contains this");
    app.add_option("--json", json_path, "write every row, attempt and goal as JSON to this file");
    app.add_option("--profile-file", profile_file, "use this machine profile instead of measuring one");
    app.add_option("--profile-threads", b.profile_threads, "threads of the plain `ztinfer bench --profile` run")
        ->capture_default_str();
    app.add_option("--profile-args", profile_args, "arguments of every `ztinfer bench --profile` run ({dir}: the "
                   "work folder; --hidden: the matmul size)")->capture_default_str();
    app.add_option("--profile-plain-args", profile_plain_args, "more arguments of the plain (1-rank) profile run")
        ->capture_default_str();
    app.add_option("--layers", b.layers)->capture_default_str();
    app.add_option("--hidden", b.hidden)->capture_default_str();
    app.add_option("--intermediate", b.intermediate)->capture_default_str();
    app.add_option("--job-timeout", b.job_timeout, "seconds one job may run")->capture_default_str();
    app.add_flag("--list", list, "print the configurations and exit");
    app.add_option("--gate", gate, "which goals set the exit status: all | median-and-memory (CI)")
        ->check(CLI::IsMember({"all", "median-and-memory"}))->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::vector<JobSpec> specs, all = job_specs();
    for (size_t i = 0; i < all.size(); ++i) {
        all[i].index = i;
        if (only.empty() || all[i].name.find(only) != std::string::npos) specs.push_back(all[i]);
    }
    if (list || specs.empty()) {
        for (const JobSpec & s : all)
            std::printf("%-22s model %-4s world %d threads %d tier %-4s batch %lldx%lld depth %lld resident %lld "
                        "overlap %d kv %s link %.2f GB/s requests %lld max_tokens %lld\n", s.name.c_str(),
                        s.model.c_str(), s.world, s.threads, s.tier.c_str(), (long long)s.batch, (long long)s.micro,
                        (long long)s.depth, (long long)s.resident, int(s.overlap), s.kv_cpu ? "cpu" : "none",
                        s.link_gbps, (long long)(s.requests > 0 ? s.requests : s.world * s.batch * s.micro),
                        (long long)s.gen);
        if (specs.empty()) std::fprintf(stderr, "bench_planner: --only %s matches no configuration\n", only.c_str());
        return specs.empty() ? 2 : 0;
    }

    const auto t_start = Clock::now();
    const std::string build = exe_dir();
    if (b.ztinfer.empty()) b.ztinfer = std::getenv("ZT_BINARY") ? std::getenv("ZT_BINARY") : build + "/ztinfer";
    if (b.mpirun.empty()) b.mpirun = std::getenv("ZT_MPIEXEC") ? std::getenv("ZT_MPIEXEC") : "mpirun";
    if (b.tokenizer.empty()) b.tokenizer = source_dir_of(build) + "/tests/data/tokenizers/llama2";
    if (!fs::exists(b.ztinfer)) {
        std::fprintf(stderr, "bench_planner: no ztinfer at %s (build it: ninja -C build ztinfer, or give --ztinfer)\n",
                     b.ztinfer.c_str());
        return 2;
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);

    if (!keep_dir.empty()) {
        fs::create_directories(keep_dir);
        b.dir = fs::absolute(keep_dir).string();
    } else {
        b.dir = (fs::temp_directory_path() / "zt_bench_planner_XXXXXX").string();
        if (!mkdtemp(b.dir.data())) { std::perror("bench_planner: mkdtemp"); return 2; }
    }
    int rc = 0;
    try {
        std::printf("bench_planner: work folder %s\nmodels (llama, %lld layers, hidden %lld, intermediate %lld, %lld "
                    "heads, %lld KV heads; bf16 and q8_0):\n", b.dir.c_str(), (long long)b.layers,
                    (long long)b.hidden, (long long)b.intermediate, (long long)b.heads, (long long)b.kv_heads);
        b.make_models();
        if (!profile_file.empty()) {
            b.profile = fs::absolute(profile_file).string();
            std::printf("machine profile: %s (given)\n", b.profile.c_str());
        } else {
            b.profile = b.dir + "/profile.json";
            std::printf("machine profile:\n");
            try {
                b.measure_profile(profile_args, profile_plain_args);
            } catch (const std::exception & e) {   // the jobs still run and print; the verdict is exit 2
                profile_error = e.what();
                std::printf("  FAILED: %s\n", profile_error.c_str());
            }
        }

        std::printf("configurations (%zu):\n", specs.size());
        std::vector<Row> rows;
        for (size_t i = 0; i < specs.size(); ++i) {
            Row r;
            r.spec = specs[i];
            const std::string config = b.write_job(r.spec);
            b.plan(r, config);
            if (!r.plan_ok) std::printf("  %s: plan: %s\n", r.spec.name.c_str(), r.plan_error.c_str());
            for (int k = 1; k <= kMaxAttempts; ++k) {
                r.attempts.push_back(b.run_job(r.spec, config, k));
                const Attempt & a = r.attempts.back();
                if (!a.ok) {
                    std::printf("  %s attempt %d: FAILED %s\n", r.spec.name.c_str(), k, a.error.c_str());
                    break;   // a failing job is a bug to fix, not noise to retry
                }
                const double e = r.plan_ok ? rel_err(r.pred_tps, a.tokens_per_s) : NAN;
                std::printf("  %-22s attempt %d: %.1f tok/s (loop %.2f s, job %.1f s), predicted %s: %s\n",
                            r.spec.name.c_str(), k, a.tokens_per_s, a.loop_s, a.wall_s,
                            r.plan_ok ? fmt::format("{:.1f}", r.pred_tps).c_str() : "n/a", pct(e).c_str());
                std::fflush(stdout);
                if (r.best < 0 || a.tokens_per_s > r.attempts[size_t(r.best)].tokens_per_s) r.best = k - 1;
                if (!r.plan_ok || std::fabs(rel_err(r.pred_tps, r.measured()->tokens_per_s)) <= kWorstSpeedGoal)
                    break;
            }
            rows.push_back(std::move(r));
        }

        std::printf("\n%-22s %2s %-4s %5s %2s %9s %9s %8s %-16s %8s %8s %8s %8s %8s %8s\n", "config", "N", "tier",
                    "bxm", "d", "pred t/s", "meas t/s", "err", "pred bound", "pred MiB", "meas MiB", "err",
                    "pNVMe", "mNVMe", "err");
        for (const Row & r : rows) print_row(r);
        std::printf("columns: N = ranks; bxm = batch_size x micro_batches; d = prefetch_depth; t/s = generated "
                    "tokens of all ranks per loop second (measured: the fastest attempt); MiB = device + pinned "
                    "per rank (largest rank); NVMe = predicted memory.nvme vs metrics memory.nvme_file_bytes, MiB; "
                    "err = (predicted - measured) / measured\n");

        print_breakdown(rows);

        std::vector<double> speed_errs;
        bool speed_complete = true, mem_ok = true;
        double worst_mem = 0;
        std::string mem_worst_name, mem_missing;
        for (const Row & r : rows) {
            const Attempt * a = r.measured();
            if (!a || !r.plan_ok) { speed_complete = false; mem_ok = false; continue; }
            speed_errs.push_back(std::fabs(rel_err(r.pred_tps, a->tokens_per_s)));
            if (!a->have_memory) { mem_ok = false; mem_missing = r.spec.name; continue; }
            std::vector<double> errs{std::fabs(rel_err(r.pred_mem, a->device_pinned))};
            if (r.spec.tier == "nvme") errs.push_back(std::fabs(rel_err(r.pred_nvme, a->nvme_file)));
            for (double e : errs) {
                if (std::isnan(e) || e > kMemoryGoal) mem_ok = false;
                if (std::isnan(e) || e > worst_mem) { worst_mem = std::isnan(e) ? INFINITY : e; mem_worst_name = r.spec.name; }
            }
        }
        double median = NAN, worst = NAN;
        if (!speed_errs.empty()) {
            std::vector<double> s = speed_errs;
            std::sort(s.begin(), s.end());
            median = s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
            worst = s.back();
        }
        const bool ok_median = speed_complete && median <= kMedianSpeedGoal;
        const bool ok_worst = speed_complete && worst <= kWorstSpeedGoal;
        const std::string incomplete = speed_complete ? "" : " (some configurations have no prediction or no "
                                                              "measurement: see above)";
        std::printf("%s speed: median |error| %s (goal <= 10%%)%s\n", ok_median ? "PASS" : "MISS",
                    abs_pct(median).c_str(), incomplete.c_str());
        std::printf("%s speed: worst |error| %s (goal <= 20%%)%s\n", ok_worst ? "PASS" : "MISS", abs_pct(worst).c_str(),
                    incomplete.c_str());
        if (!mem_missing.empty())
            std::printf("MISS memory: %s's metrics.json has no \"memory\" (this ztinfer does not write it)\n",
                        mem_missing.c_str());
        else
            std::printf("%s memory: every configuration's device + pinned (and NVMe for tier nvme) within 10%%: "
                        "worst |error| %s (%s)%s\n", mem_ok ? "PASS" : "MISS", abs_pct(worst_mem).c_str(),
                        mem_worst_name.empty() ? "-" : mem_worst_name.c_str(), incomplete.c_str());
        const bool ok = ok_median && (ok_worst || gate == "median-and-memory") && mem_ok;
        if (!ok_worst && ok) std::printf("(--gate %s: the worst-case goal does not set the exit status)\n", gate.c_str());
        const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
        std::printf("bench_planner: %s (%zu configurations, %.1f s)\n", ok ? "PASS" : "MISS", rows.size(), total);
        if (!json_path.empty()) {
            json jr = json::array();
            for (const Row & r : rows) jr.push_back(row_json(r));
            json prof = nullptr;
            try { prof = read_json(b.profile); } catch (const std::exception &) {}
            const json out = {{"model", {{"arch", "llama"}, {"layers", b.layers}, {"hidden", b.hidden},
                                         {"intermediate", b.intermediate}, {"heads", b.heads},
                                         {"kv_heads", b.kv_heads}, {"dtypes", {"bf16", "q8_0"}}}},
                              {"profile", prof}, {"rows", jr},
                              {"goals", {{"speed_median", {{"pass", ok_median}, {"value", median}, {"goal", kMedianSpeedGoal}}},
                                         {"speed_worst", {{"pass", ok_worst}, {"value", worst}, {"goal", kWorstSpeedGoal}}},
                                         {"memory", {{"pass", mem_ok}, {"worst", worst_mem}, {"goal", kMemoryGoal}}}}},
                              {"pass", ok}, {"seconds", total}};
            std::ofstream(json_path) << out.dump(2) << "\n";
        }
        rc = ok ? 0 : 1;
        if (!profile_error.empty()) {
            std::printf("bench_planner: the machine profile could not be measured (see above): exit 2\n");
            rc = 2;
        }
    } catch (const std::exception & e) {
        std::fprintf(stderr, "bench_planner: error: %s\n", e.what());
        rc = 2;
    }
    if (!keep_dir.empty()) std::printf("kept %s\n", b.dir.c_str());
    else { std::error_code ec; fs::remove_all(b.dir, ec); }
    return rc;
}
