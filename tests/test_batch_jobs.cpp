// Batch jobs survive what happens to real ones: the ztinfer binary on CPU ranks under mpirun (weights streamed,
// offload "cpu", one thread per rank), on a tiny synthetic model (6 layers, hidden 64, vocab 256, context 64).
//  - kill -9 of every process of the job (mpirun and each rank) mid-way, then the same command again: the output
//    holds every custom_id exactly once, whole lines only, and token_ids/finish_reason equal an uninterrupted run;
//  - a torn last line (a crash in the middle of a write) is not left in the output by the rerun;
//  - SIGTERM to mpirun mid-way: non-zero exit, a "rerun" hint in the log, whole lines only; the rerun completes
//    and equals the uninterrupted run;
//  - one input mixing flat and OpenAI batch lines with malformed JSON, invalid values, a too-long request, a
//    duplicate custom_id, invalid UTF-8 and wrong OpenAI url/method: one record per non-blank line, the right
//    error code and a message naming the problem, and the good lines' tokens equal a run of the good lines alone;
//    running the finished job again appends nothing;
//  - seeded (and job-seed-derived) sampling with temperature/top_p/top_k gives the same tokens on 1, 2 and 4 ranks;
//    another job seed changes exactly the requests without a seed of their own;
//  - requests of 1 and 20 tokens mixed on and across 3 ranks: the job ends, in lockstep, every line answered;
//  - a second job on the output of a running one fails at once naming the first's pid; the first's output holds
//    one record per request.
// Every run has a time limit (a hang fails the test instead of blocking the suite). Needs MPI (mpirun): skipped
// without it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/model/synthetic_model.h"
#include "job_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace zt::test;

namespace {

#define REQUIRE_MPI() REQUIRE_JOB_MPI()

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Live (not zombie) processes of session `sid`. mpirun puts every rank in a process group of its own, but they
// stay in mpirun's session, so the session is "the whole job".
std::vector<pid_t> session_processes(pid_t sid) {
    std::vector<pid_t> pids;
    std::error_code ec;
    for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const pid_t pid = pid_t(std::stol(name));
        if (getsid(pid) != sid) continue;
        const std::string stat = read_file("/proc/" + name + "/stat");   // "pid (comm) S ..."
        const size_t paren = stat.rfind(')');
        if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z') continue;
        pids.push_back(pid);
    }
    return pids;
}

// A command (mpirun or plain ztinfer) running in the background in a session of its own, stdout+stderr to a log.
class Job {
public:
    Job(const std::string & cmd, const std::string & log_path) : log_path_(log_path), t0_(Clock::now()) {
        allow_mpirun_as_root_for_jobs();
        pid_ = fork();
        if (pid_ == 0) {
            setsid();
            const std::string sh = "exec " + cmd + " >" + log_path + " 2>&1";
            execl("/bin/sh", "sh", "-c", sh.c_str(), nullptr);
            _exit(127);
        }
    }
    ~Job() { if (!reaped_) kill_all(); }
    Job(const Job &) = delete;
    Job & operator=(const Job &) = delete;

    std::string log() const { return read_file(log_path_); }
    void signal_launcher(int sig) const { ::kill(pid_, sig); }   // mpirun only (what Ctrl-C in a script or a scheduler hits)
    pid_t pid() const { return pid_; }   // the launcher's (for plain ztinfer: the job's own, `exec` keeps it)

    // SIGKILL to every process of the job at once (a node failure); returns when none is left.
    void kill_all() {
        if (!reaped_) ::kill(pid_, SIGKILL);   // the launcher itself, even before its setsid()
        for (int i = 0; i < 500; ++i) {
            const auto pids = session_processes(pid_);
            if (pids.empty()) break;
            for (pid_t p : pids) ::kill(p, SIGKILL);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        reap();
    }
    // Whether the launcher has exited (it is reaped then).
    bool exited() {
        if (!reaped_ && waitpid(pid_, &status_, WNOHANG) == pid_) {
            reaped_ = true;
            seconds_ = seconds_since(t0_);
        }
        return reaped_;
    }
    // Waits up to `limit` s; returns whether the job exited by itself (else it is killed).
    bool wait(double limit) {
        while (seconds_since(t0_) < limit) {
            if (exited()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        kill_all();
        return false;
    }
    // The exit code, or 128 + the signal that ended it.
    int exit_code() const { return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_); }
    double seconds() const { return seconds_; }

private:
    void reap() {
        if (!reaped_ && waitpid(pid_, &status_, 0) == pid_) reaped_ = true;
        seconds_ = seconds_since(t0_);
    }
    std::string log_path_;
    Clock::time_point t0_;
    pid_t pid_ = -1;
    int status_ = 0;
    bool reaped_ = false;
    double seconds_ = 0;
};

struct RunResult {
    int code = -1;
    std::string log;
    double seconds = 0;
};

// Runs a command to the end (at most `limit` s: a hang is killed and reported as code -1).
RunResult run(const std::string & cmd, const std::string & log_path, double limit = 90) {
    Job job(cmd, log_path);
    const bool exited = job.wait(limit);
    return {exited ? job.exit_code() : -1, job.log() + (exited ? "" : "\n[test: killed after the time limit]"),
            job.seconds()};
}

// Whole lines of an output file as JSON; a line that is not JSON (torn, garbage) is a failure.
std::vector<json> read_records(const std::string & path) {
    std::vector<json> recs;
    std::ifstream in(path, std::ios::binary);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        try {
            recs.push_back(json::parse(line));
        } catch (const json::exception &) {
            ADD_FAILURE() << path << " line " << n << " is not a JSON record (torn?): " << line;
        }
    }
    return recs;
}
size_t count_lines(const std::string & path) {
    const std::string s = read_file(path);
    return size_t(std::count(s.begin(), s.end(), '\n'));
}

// Records by custom_id (error records without one by "line N"); a key seen twice is a failure.
std::map<std::string, json> by_id(const std::vector<json> & recs) {
    std::map<std::string, json> m;
    for (const auto & r : recs) {
        const json cid = r.value("custom_id", json());
        const std::string id = cid.is_string() ? cid.get<std::string>() : "line " + r.value("line", json(-1)).dump();
        EXPECT_EQ(m.count(id), 0u) << "custom_id " << id << " has two records";
        m[id] = r;
    }
    return m;
}
// What two runs must agree on: token_ids and finish_reason per custom_id (the error code for error records).
json essence(const std::map<std::string, json> & recs) {
    json e = json::object();
    for (const auto & [id, r] : recs)
        e[id] = r.contains("error") ? r["error"].value("code", json())
                                    : json{r.value("token_ids", json()), r.value("finish_reason", json())};
    return e;
}

// The model every test uses: llama, 6 layers, hidden 64, context 64, a 256-token tokenizer (t0..t253, <s>, </s>).
constexpr int kContext = 64;
struct TempDir {   // removed at exit
    std::string path;
    ~TempDir() { if (!path.empty()) fs::remove_all(path); }
};
std::string tiny_model_dir() {
    static TempDir dir;
    if (!dir.path.empty()) return dir.path;
    const std::string tok = make_temp_dir("batch_tok");
    json vocab = json::object();
    for (int i = 0; i < 254; ++i) vocab["t" + std::to_string(i)] = i;
    const json tj = {{"version", "1.0"},
                     {"added_tokens", {{{"id", 254}, {"content", "<s>"}, {"special", true}},
                                       {{"id", 255}, {"content", "</s>"}, {"special", true}}}},
                     {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
    write_file(tok + "/tokenizer.json", tj.dump());
    write_file(tok + "/tokenizer_config.json", json{{"bos_token", "<s>"}, {"eos_token", "</s>"}}.dump());
    zt::SynthOptions o;
    o.arch = "llama"; o.layers = 6; o.hidden = 64; o.heads = 4; o.kv_heads = 2; o.intermediate = 128;
    o.max_position_embeddings = kContext; o.seed = 11; o.tokenizer_dir = tok; o.out_dir = make_temp_dir("batch_model");
    zt::synthesize_model(o);
    fs::remove_all(tok);
    return dir.path = o.out_dir;
}

// Writes <dir>/<name>.json: offload "cpu" (every layer streamed), 1 thread, 2 slots per rank, resume on; the
// output is <dir>/<name>.jsonl. `extra` adds or replaces "ztinfer" keys.
std::string write_config(const std::string & dir, const std::string & name, const std::string & input,
                         const json & extra = json::object()) {
    json z = {{"model", tiny_model_dir()}, {"input", input}, {"output", dir + "/" + name + ".jsonl"},
              {"device", "cpu"}, {"threads", 1}, {"batch_size", 2}, {"max_new_tokens", 16}, {"seed", 1234},
              {"collective_timeout_s", 30}};
    for (const auto & [k, v] : extra.items()) z[k] = v;
    const json ds = {{"zero_optimization", {{"stage", 3}, {"stage3_param_persistence_threshold", 1000},
                                            {"offload_param", {{"device", "cpu"}}}}},
                     {"ztinfer", z}};
    const std::string path = dir + "/" + name + ".json";
    write_file(path, ds.dump(2));
    return path;
}

std::string write_lines(const std::string & path, const std::vector<std::string> & lines) {
    std::string text;
    for (const auto & l : lines) text += l + "\n";
    write_file(path, text);
    return path;
}

// --- the interrupted job: 40 requests of 16..24 tokens, a third sampled with a seed, some with a derived seed ---
constexpr int kJobRequests = 40;
std::string write_job_input(const std::string & dir) {
    std::vector<std::string> lines;
    for (int i = 0; i < kJobRequests; ++i) {
        json ids = json::array();
        for (int k = 0; k < 3 + i % 7; ++k) ids.push_back((i * 37 + k * 11) % 250);
        json r = {{"custom_id", "req-" + std::to_string(i)}, {"prompt_token_ids", ids}, {"max_tokens", 16 + i % 9}};
        if (i % 3 == 0) r.update({{"temperature", 0.8}, {"seed", 100 + i}});
        if (i % 5 == 1) r.update({{"temperature", 0.7}, {"top_p", 0.9}});   // seed derived from the job's
        lines.push_back(r.dump());
    }
    return write_lines(dir + "/in.jsonl", lines);
}
// The simulated link (every slice copy sleeps bytes / 0.03 GB/s) makes a step ~15 ms, so the job takes a few
// seconds: long enough to interrupt, and the sleeps cost no CPU.
const json kSlowLink = {{"test_link_gbps", 0.03}};

// The uninterrupted np 2 run of that job (computed once; its speed does not matter, so no simulated link).
const std::map<std::string, json> & reference_records() {
    static std::map<std::string, json> ref;
    if (!ref.empty()) return ref;
    const std::string dir = make_temp_dir("batch_ref");
    const RunResult r = run(job_command(2, write_config(dir, "ref", write_job_input(dir))), dir + "/log.txt");
    EXPECT_EQ(r.code, 0) << r.log;
    ref = by_id(read_records(dir + "/ref.jsonl"));
    fs::remove_all(dir);
    return ref;
}

// Polls (every 10 ms, up to 60 s) until `path` holds at least n lines or the job has exited.
void wait_for_lines(Job & job, const std::string & path, size_t n) {
    const auto t0 = Clock::now();
    while (count_lines(path) < n && !job.exited() && seconds_since(t0) < 60)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// The rerun of an interrupted job: completes, skips what was there, and the output equals the reference.
void expect_rerun_completes(const std::string & cmd, const std::string & dir, const std::string & output,
                            size_t records_before) {
    const RunResult r = run(cmd, dir + "/rerun-log.txt");
    ASSERT_EQ(r.code, 0) << r.log;
    if (records_before > 0) {
        EXPECT_HAS(r.log, "resuming: " + std::to_string(records_before) + " requests already in");
    }
    EXPECT_EQ(read_file(output).back(), '\n');
    const auto got = by_id(read_records(output));
    EXPECT_EQ(got.size(), size_t(kJobRequests));
    EXPECT_EQ(essence(got), essence(reference_records())) << "the resumed output differs from the uninterrupted run";
}

}  // namespace

TEST(BatchJobs, KillNineMidJobThenRerunEqualsUninterruptedRun) {
    REQUIRE_MPI();
    const auto & ref = reference_records();
    ASSERT_EQ(ref.size(), size_t(kJobRequests));
    for (const auto & [id, r] : ref) ASSERT_FALSE(r.contains("error")) << r.dump();

    const std::string dir = make_temp_dir("batch_kill9");
    const std::string out = dir + "/job.jsonl";
    const std::string cmd = job_command(2, write_config(dir, "job", write_job_input(dir), kSlowLink));
    size_t before = 0;
    {
        Job job(cmd, dir + "/log.txt");
        wait_for_lines(job, out, 8);
        job.kill_all();   // mpirun and both ranks, at once
        before = count_lines(out);
        ASSERT_GE(before, 8u) << job.log();
        ASSERT_LT(before, size_t(kJobRequests)) << "the job finished before it could be killed: slow it down\n"
                                                << job.log();
    }
    EXPECT_EQ(by_id(read_records(out)).size(), before) << "whole, distinct records only after kill -9";
    expect_rerun_completes(cmd, dir, out, before);
    fs::remove_all(dir);
}

TEST(BatchJobs, TornLastLineFromACrashIsNotLeftInTheRerunOutput) {
    REQUIRE_MPI();
    // A crash in the middle of write(2) (kill -9 of a large record, power loss) leaves a partial last line. The
    // rerun runs that request again; the output must end up as whole JSON lines only, each custom_id once.
    const auto & ref = reference_records();
    ASSERT_EQ(ref.size(), size_t(kJobRequests));
    const std::string dir = make_temp_dir("batch_torn");
    const std::string out = dir + "/job.jsonl";
    std::string text;
    int n = 0;
    for (const auto & [id, r] : ref)
        if (n++ < 5) text += r.dump() + "\n";
    const std::string sixth = std::next(ref.begin(), 5)->second.dump();
    write_file(out, text + sixth.substr(0, sixth.size() / 2));   // no newline: torn
    const std::string cmd = job_command(2, write_config(dir, "job", write_job_input(dir)));
    expect_rerun_completes(cmd, dir, out, 5);
    fs::remove_all(dir);
}

TEST(BatchJobs, SigtermFlushesExitsNonZeroWithResumeHintAndRerunCompletes) {
    REQUIRE_MPI();
    ASSERT_EQ(reference_records().size(), size_t(kJobRequests));
    const std::string dir = make_temp_dir("batch_term");
    const std::string out = dir + "/job.jsonl";
    const std::string cmd = job_command(2, write_config(dir, "job", write_job_input(dir), kSlowLink));
    size_t before = 0;
    {
        Job job(cmd, dir + "/log.txt");
        wait_for_lines(job, out, 4);
        // mpirun passes SIGTERM on to the ranks (after odls_base_sigkill_timeout, 1 s, and SIGKILLs them 1 s later)
        job.signal_launcher(SIGTERM);
        ASSERT_TRUE(job.wait(30)) << "mpirun still running 30 s after SIGTERM\n" << job.log();
        const std::string log = job.log();
        EXPECT_NE(job.exit_code(), 0) << log;
        EXPECT_HAS(log, "rerun");
        before = count_lines(out);
        ASSERT_LT(before, size_t(kJobRequests)) << "the job finished before SIGTERM reached the ranks\n" << log;
        const std::string text = read_file(out);
        EXPECT_TRUE(text.empty() || text.back() == '\n') << "the last record is not a whole line";
    }
    EXPECT_EQ(by_id(read_records(out)).size(), before);
    expect_rerun_completes(cmd, dir, out, before);
    fs::remove_all(dir);
}

TEST(BatchJobs, MixedGoodAndBadLinesEachGetOneRecord) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("batch_mixed");
    json long_prompt = json::array();
    for (int i = 0; i < kContext - 4; ++i) long_prompt.push_back(i);
    // {line text, expected error code ("" = a result, "blank" = no record), words the message must hold}
    struct Line { std::string text, code; std::vector<std::string> words; };
    const std::vector<Line> lines = {
        {R"({"custom_id": "flat1", "prompt_token_ids": [1, 2, 3], "max_tokens": 4})", "", {}},
        {R"({"custom_id": "batch1", "method": "POST", "url": "/v1/completions", "body": {"prompt_token_ids": [4, 5, 6], "max_tokens": 4}})", "", {}},
        {R"({"custom_id": "broken", "prompt_token_ids": [1, 2)", "invalid_json", {"line 3", "JSON"}},
        {"", "blank", {}},
        {R"({"custom_id": "neg-temp", "prompt_token_ids": [1], "max_tokens": 4, "temperature": -1})", "invalid_request", {"line 5", "temperature"}},
        {R"({"custom_id": "zero-top-p", "prompt_token_ids": [1], "max_tokens": 4, "top_p": 0})", "invalid_request", {"line 6", "top_p"}},
        {R"({"custom_id": "zero-max", "prompt_token_ids": [1], "max_tokens": 0})", "invalid_request", {"line 7", "max_tokens"}},
        {R"({"custom_id": "no-ids", "prompt_token_ids": [], "max_tokens": 4})", "invalid_request", {"line 8", "prompt_token_ids"}},
        {json{{"custom_id", "too-long"}, {"prompt_token_ids", long_prompt}, {"max_tokens", 10}}.dump(), "context_length_exceeded", {"line 9", "context", "64", "max_tokens"}},
        {json{{"custom_id", "just-fits"}, {"prompt_token_ids", long_prompt}, {"max_tokens", 4}}.dump(), "", {}},
        {R"({"custom_id": "flat1", "prompt_token_ids": [7, 8], "max_tokens": 4})", "duplicate_custom_id", {"line 11", "flat1"}},
        {R"({"custom_id": "bad-utf8", "prompt_token_ids": [1], "max_tokens": 2, "note": ")" "\xff\xfe" R"("})", "invalid_utf8", {"line 12", "UTF-8"}},
        {R"({"custom_id": "embed-url", "method": "POST", "url": "/v1/embeddings", "body": {"prompt_token_ids": [1], "max_tokens": 4}})", "invalid_request", {"line 13", "/v1/embeddings"}},
        {R"({"custom_id": "chat-url", "method": "POST", "url": "/v1/chat/completions", "body": {"prompt_token_ids": [1], "max_tokens": 4}})", "invalid_request", {"line 14", "chat"}},
        {R"({"custom_id": "get", "method": "GET", "url": "/v1/completions", "body": {"prompt_token_ids": [1], "max_tokens": 4}})", "invalid_request", {"line 15", "GET", "POST"}},
        {R"({"custom_id": "flat2", "prompt_token_ids": [9, 10, 11, 12], "max_tokens": 6, "temperature": 0.5, "seed": 3})", "", {}},
        {"   \t", "blank", {}},
        {R"({"custom_id": "batch2", "method": "POST", "url": "/v1/completions", "body": {"prompt_token_ids": [13, 14], "max_tokens": 5, "temperature": 0.9, "top_k": 10}})", "", {}},
        {R"({"custom_id": "big-id", "prompt_token_ids": [1, 300], "max_tokens": 4})", "invalid_request", {"line 19", "300", "vocabulary"}},
    };
    std::vector<std::string> all, good;
    for (const auto & l : lines) {
        all.push_back(l.text);
        if (l.code.empty()) good.push_back(l.text);
    }
    const std::string cmd = job_command(2, write_config(dir, "mixed", write_lines(dir + "/mixed-in.jsonl", all)));
    const RunResult r = run(cmd, dir + "/log.txt");
    ASSERT_EQ(r.code, 0) << r.log;
    const std::string first_output = read_file(dir + "/mixed.jsonl");
    const RunResult g = run(job_command(2, write_config(dir, "good", write_lines(dir + "/good-in.jsonl", good))),
                            dir + "/good-log.txt");
    ASSERT_EQ(g.code, 0) << g.log;

    const std::vector<json> recs = read_records(dir + "/mixed.jsonl");
    std::map<int64_t, json> errors;     // by line
    std::map<std::string, json> results;
    for (const auto & rec : recs) {
        if (rec.contains("error")) {
            const int64_t line = rec.value("line", int64_t(-1));
            EXPECT_EQ(errors.count(line), 0u) << "two records for line " << line;
            errors[line] = rec;
        } else {
            const std::string id = rec.value("custom_id", "");
            EXPECT_EQ(results.count(id), 0u) << "two results for " << id;
            results[id] = rec;
        }
    }
    size_t non_blank = 0;
    const auto good_run = by_id(read_records(dir + "/good.jsonl"));
    for (size_t i = 0; i < lines.size(); ++i) {
        const Line & l = lines[i];
        const int64_t line_no = int64_t(i + 1);
        if (l.code == "blank") {
            EXPECT_EQ(errors.count(line_no), 0u) << "a blank line got a record";
            continue;
        }
        ++non_blank;
        if (l.code.empty()) {
            const std::string id = json::parse(l.text)["custom_id"];
            ASSERT_EQ(results.count(id), 1u) << "no result for line " << line_no << ": " << l.text;
            ASSERT_EQ(good_run.count(id), 1u) << id;
            EXPECT_EQ(results[id]["token_ids"], good_run.at(id).value("token_ids", json())) << id << ": other lines "
                                                                                             "changed its tokens";
            EXPECT_EQ(results[id]["finish_reason"], good_run.at(id).value("finish_reason", json())) << id;
            continue;
        }
        ASSERT_EQ(errors.count(line_no), 1u) << "no error record for line " << line_no << ": " << l.text;
        json & e = errors[line_no];
        EXPECT_EQ(e["error"]["code"], l.code) << "line " << line_no << ": " << e.dump();
        const std::string msg = e["error"].value("message", "");
        for (const auto & w : l.words) EXPECT_HAS(msg, w) << " (line " << line_no << ")";
    }
    EXPECT_EQ(recs.size(), non_blank) << "one record per non-blank line";
    EXPECT_EQ(errors[9]["custom_id"], "too-long");
    EXPECT_EQ(errors[3]["custom_id"], "broken") << "the custom_id of a malformed line is still reported";
    EXPECT_EQ(errors[12]["custom_id"], "bad-utf8");
    EXPECT_EQ(results["just-fits"]["token_ids"].size() + kContext - 4, size_t(kContext))
        << "prompt + max_tokens == context is allowed (or it stopped early: " << results["just-fits"].dump() << ")";
    // running the finished job again (resume is on) writes nothing: neither results nor error records twice
    const RunResult again = run(cmd, dir + "/again-log.txt");
    ASSERT_EQ(again.code, 0) << again.log;
    EXPECT_EQ(read_file(dir + "/mixed.jsonl"), first_output) << again.log;
    fs::remove_all(dir);
}

TEST(BatchJobs, SampledOutputsIdenticalFor1And2And4Ranks) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("batch_sampled");
    std::vector<std::string> lines;
    for (int i = 0; i < 12; ++i) {
        json r = {{"custom_id", "s" + std::to_string(i)}, {"prompt_token_ids", {5 + i % 4, 17, 42 + i % 4}},
                  {"max_tokens", 10 + i % 5}, {"temperature", 0.8}, {"top_p", 0.9}, {"top_k", 20}};
        if (i % 4 != 3) r["seed"] = 7 + i;   // s3, s7, s11: derived from the job seed and the custom_id
        lines.push_back(r.dump());
    }
    const std::string input = write_lines(dir + "/in.jsonl", lines);
    std::map<int, json> got;
    for (int np : {0, 2, 4}) {
        const std::string name = "np" + std::to_string(np);
        const RunResult r = run(job_command(np, write_config(dir, name, input)), dir + "/" + name + ".log");
        ASSERT_EQ(r.code, 0) << name << "\n" << r.log;
        got[np] = essence(by_id(read_records(dir + "/" + name + ".jsonl")));
        ASSERT_EQ(got[np].size(), 12u) << r.log;
    }
    EXPECT_EQ(got[2], got[0]) << "np 2 differs from plain ztinfer";
    EXPECT_EQ(got[4], got[0]) << "np 4 differs from plain ztinfer";
    // another job seed changes exactly the requests without a "seed" of their own
    const RunResult r = run(job_command(2, write_config(dir, "seed2", input, {{"seed", 99}})), dir + "/seed2.log");
    ASSERT_EQ(r.code, 0) << r.log;
    const json other = essence(by_id(read_records(dir + "/seed2.jsonl")));
    for (int i = 0; i < 12; ++i) {
        const std::string id = "s" + std::to_string(i);
        if (i % 4 != 3) EXPECT_EQ(other[id], got[0][id]) << id << " has its own seed";
        else EXPECT_NE(other[id], got[0][id]) << id << " derives its seed from the job's";
    }
    // the sampling is real: s0 and s4 share their prompt but not their seed
    const json a = got[0]["s0"][0], b = got[0]["s4"][0];
    const size_t n = std::min(a.size(), b.size());
    EXPECT_NE(json(std::vector<json>(a.begin(), a.begin() + long(n))), json(std::vector<json>(b.begin(), b.begin() + long(n))))
        << got[0].dump();
    fs::remove_all(dir);
}

TEST(BatchJobs, EarlyEosOnOneRankDoesNotHang) {
    REQUIRE_MPI();
    const std::string dir = make_temp_dir("batch_early");
    // valid request k runs on rank k % 3, 2 slots per rank: rank 0 gets only 1-token requests, ranks 1 and 2 mix
    // 1 and 20 tokens (a slot frees after one step and takes the next request while its neighbour goes on);
    // ignore_eos makes every request run to max_tokens. An invalid line in the middle changes no assignment.
    const std::vector<int> max_tokens = {1, 20, 1, 1, 1, 20, 1, 20, 1};
    std::vector<std::string> lines;
    for (size_t k = 0; k < max_tokens.size(); ++k) {
        lines.push_back(json{{"custom_id", "e" + std::to_string(k)}, {"prompt_token_ids", {3, 4, 5 + int(k)}},
                             {"max_tokens", max_tokens[k]}, {"ignore_eos", true}}.dump());
        if (k == 4) lines.push_back(R"({"custom_id": "bad", "prompt_token_ids": [1], "max_tokens": -3})");
    }
    const RunResult r = run(job_command(3, write_config(dir, "early", write_lines(dir + "/in.jsonl", lines),
                                                            {{"collective_timeout_s", 20}})),
                            dir + "/log.txt", 60);
    ASSERT_EQ(r.code, 0) << r.log;
    const auto recs = by_id(read_records(dir + "/early.jsonl"));
    ASSERT_EQ(recs.size(), lines.size()) << "every line answered once\n" << r.log;
    for (size_t k = 0; k < max_tokens.size(); ++k) {
        json rec = recs.at("e" + std::to_string(k));
        EXPECT_EQ(rec["token_ids"].size(), size_t(max_tokens[k])) << rec.dump();
        EXPECT_EQ(rec["finish_reason"], "length") << rec.dump();
    }
    json bad = recs.at("bad");
    EXPECT_EQ(bad["error"]["code"], "invalid_request") << bad.dump();
    // lockstep: every rank took the same number of steps, about the longest request's (one prefill + 19 decodes,
    // +1 when its slot only freed up after a 1-token neighbour)
    std::regex steps_re(R"(generated in (\d+) steps)");
    std::vector<int> steps;
    for (auto it = std::sregex_iterator(r.log.begin(), r.log.end(), steps_re); it != std::sregex_iterator(); ++it)
        steps.push_back(std::stoi((*it)[1]));
    ASSERT_EQ(steps.size(), 3u) << r.log;
    for (int s : steps) {
        EXPECT_EQ(s, steps[0]) << r.log;
        EXPECT_GE(s, 20);
        EXPECT_LE(s, 21) << r.log;
    }
    fs::remove_all(dir);
}

TEST(BatchJobs, SecondJobOnTheSameOutputFailsAtOnceNamingTheFirst) {
    REQUIRE_MPI();   // (the reference run is np 2)
    // Two jobs appending to one output used to both succeed, interleaving records (more records than requests).
    // Plain ztinfer (one rank, no mpirun): its pid is the Job's own.
    ASSERT_EQ(reference_records().size(), size_t(kJobRequests));
    const std::string dir = make_temp_dir("batch_lock");
    const std::string out = dir + "/job.jsonl";
    const std::string cmd = job_command(0, write_config(dir, "job", write_job_input(dir), kSlowLink));
    Job first(cmd, dir + "/log1.txt");
    wait_for_lines(first, out, 2);
    ASSERT_FALSE(first.exited()) << "the first job ended before the second started: slow it down\n" << first.log();
    const RunResult second = run(cmd, dir + "/log2.txt", 30);
    EXPECT_NE(second.code, 0) << second.log;
    EXPECT_LT(second.seconds, 20.0) << "the second job did not fail at once";
    EXPECT_HAS(second.log, "pid " + std::to_string(first.pid()));
    EXPECT_HAS(second.log, "another job");
    ASSERT_TRUE(first.wait(120)) << first.log();
    EXPECT_EQ(first.exit_code(), 0) << first.log();
    const auto recs = read_records(out);
    EXPECT_EQ(recs.size(), size_t(kJobRequests)) << "one record per request";
    EXPECT_EQ(essence(by_id(recs)), essence(reference_records()));
    fs::remove_all(dir);
}
