// The generate job (see job.h): load -> read and validate requests -> continuous batching -> JSONL records.
#include "runtime/job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/forward.h"
#include "runtime/model_config.h"
#include "runtime/progress.h"
#include "runtime/request.h"
#include "runtime/result_writer.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace zt {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

json error_record(const RequestError & e) {
    json r;
    r["custom_id"] = e.custom_id ? json(*e.custom_id) : json(nullptr);
    r["line"] = e.line;
    r["error"] = {{"code", e.code}, {"message", e.message}};
    return r;
}

// A request being generated, holding one KV-cache slot.
struct Active {
    Request req;
    int32_t slot = 0;
    int32_t past = 0;                 // positions already in the KV cache
    std::vector<int32_t> generated;
    std::vector<double> logprobs;
    Sampler sampler;
    std::string text;                 // decoded generated text (special tokens skipped)
    Active(Request r, int32_t s) : req(std::move(r)), slot(s), sampler(req.sampling) {}
};

// End-of-sequence ids: the tokenizer's EOS, config.json's and generation_config.json's eos_token_id.
std::set<int32_t> eos_ids_of(const std::string & model_dir, const ModelConfig & mc, const Tokenizer & tok) {
    std::set<int32_t> ids;
    if (auto e = tok.eos_id()) ids.insert(*e);
    for (int64_t e : mc.eos_token_ids) ids.insert(int32_t(e));
    std::ifstream gen(model_dir + "/generation_config.json");
    if (gen.good()) {
        try {
            const json g = json::parse(gen);
            if (g.contains("eos_token_id")) {
                const auto & e = g["eos_token_id"];
                if (e.is_number_integer()) ids.insert(e.get<int32_t>());
                if (e.is_array()) for (const auto & x : e) if (x.is_number_integer()) ids.insert(x.get<int32_t>());
            }
        } catch (const json::exception & e) {
            spdlog::warn("{}/generation_config.json is not valid JSON ({}); ignoring it", model_dir, e.what());
        }
    }
    return ids;
}

bool logits_finite(const float * row, int64_t n) {
    for (int64_t i = 0; i < n; ++i) if (!std::isfinite(row[i])) return false;
    return true;
}

}  // namespace

std::atomic<bool> & job_stop_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

JobStats run_generate_job(const JobConfig & cfg) {
    JobStats stats;
    const auto t_load = Clock::now();
    for (const auto & w : cfg.warnings) spdlog::warn("{}: {}", cfg.config_path, w);

    // --- model, tokenizer, backend --------------------------------------------------------------
    if (cfg.device == "cuda")
        ZT_FAIL("{}: \"ztinfer.device\" is \"cuda\" but this build has no CUDA backend yet: use \"cpu\" or \"auto\"",
                cfg.config_path);
    const ModelConfig mc = ModelConfig::load(cfg.model);
    const Tokenizer tok = Tokenizer::load(cfg.model);
    const Checkpoint ckpt(cfg.model);
    const ModelWeights weights = bind_weights(ckpt, mc);
    ZT_CHECK(weights.lm_head.data != nullptr,
             "{} has no lm_head (a base-model save): it can compute embeddings but not generate text", cfg.model);
    ZT_CHECK(tok.vocab_size() <= mc.vocab_size,
             "{}: tokenizer has {} tokens but config.json vocab_size is {}: the tokenizer belongs to another model",
             cfg.model, tok.vocab_size(), mc.vocab_size);
    const int n_threads = cfg.threads > 0 ? int(cfg.threads) : int(std::max(1u, std::thread::hardware_concurrency()));
    auto backend = make_cpu_backend(n_threads);
    Forward forward(mc, weights, *backend);
    const std::set<int32_t> eos = eos_ids_of(cfg.model, mc, tok);
    const int64_t vocab = mc.vocab_size, max_ctx = mc.max_context();
    spdlog::info("model {}: {} layers, hidden {}, vocab {}, context {}, backend cpu ({} threads)", cfg.model,
                 mc.num_hidden_layers, mc.hidden_size, vocab, max_ctx, n_threads);

    // --- requests ---------------------------------------------------------------------------------
    ResultWriter out(cfg.output, cfg.resume);
    std::ifstream in(cfg.input, std::ios::binary);
    ZT_CHECK(in.good(), "cannot open input {}: check \"ztinfer.input\" in {}", cfg.input, cfg.config_path);
    std::deque<Request> queue;
    std::set<std::string> seen;
    auto fail = [&](const RequestError & e) {
        out.write(error_record(e));
        ++stats.failed;
    };
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;   // blank lines are not requests
        ++stats.requests;
        auto parsed = parse_request(line, line_no, cfg.sampling);
        if (out.finished().lines.count(line_no)) {   // resume: this line already has its error record
            if (auto * r = std::get_if<Request>(&parsed)) seen.insert(r->custom_id);
            else if (const auto & id = std::get<RequestError>(parsed).custom_id) seen.insert(*id);
            ++stats.skipped;
            continue;
        }
        if (auto * e = std::get_if<RequestError>(&parsed)) {
            if (e->custom_id && !seen.insert(*e->custom_id).second) e->code = "duplicate_custom_id",
                e->message = fmt::format("line {}: custom_id \"{}\" was used by an earlier line (and this line is "
                                         "invalid too: {})", line_no, *e->custom_id, e->message);
            fail(*e);
            continue;
        }
        Request r = std::move(std::get<Request>(parsed));
        if (!seen.insert(r.custom_id).second) {
            fail({line_no, r.custom_id, "duplicate_custom_id",
                  fmt::format("line {}: custom_id \"{}\" was used by an earlier line: custom_ids must be unique",
                              line_no, r.custom_id)});
            continue;
        }
        if (out.finished().custom_ids.count(r.custom_id)) { ++stats.skipped; continue; }
        if (r.prompt) {
            try {
                r.prompt_ids = tok.encode(*r.prompt, /*add_special_tokens=*/true);
            } catch (const Error & e) {
                fail({line_no, r.custom_id, "invalid_request", fmt::format("line {}: cannot tokenize the prompt: {}", line_no, e.message())});
                continue;
            }
        }
        for (int32_t id : r.prompt_ids) {
            if (id >= vocab) {
                fail({line_no, r.custom_id, "invalid_request",
                      fmt::format("line {}: prompt_token_ids holds {} but the vocabulary has {} tokens", line_no, id, vocab)});
                r.prompt_ids.clear();
                break;
            }
        }
        if (r.prompt_ids.empty()) continue;
        const int64_t n_prompt = int64_t(r.prompt_ids.size());
        if (n_prompt + r.max_tokens > max_ctx) {
            fail({line_no, r.custom_id, "context_length_exceeded",
                  fmt::format("line {}: prompt has {} tokens and max_tokens is {}: {} > the model's context of {} "
                              "({}); shorten the prompt or lower max_tokens", line_no, n_prompt, r.max_tokens,
                              n_prompt + r.max_tokens, max_ctx, mc.max_context_reason())});
            continue;
        }
        queue.push_back(std::move(r));
    }
    if (stats.skipped) spdlog::info("resuming: {} requests already in {} are skipped", stats.skipped, cfg.output);

    // KV cache: batch_size slots, each as long as the longest request needs
    int64_t max_len = 1;
    for (const auto & r : queue) max_len = std::max<int64_t>(max_len, int64_t(r.prompt_ids.size()) + r.max_tokens);
    const int32_t n_slots = int32_t(std::min<int64_t>(cfg.batch_size, std::max<size_t>(queue.size(), 1)));
    forward.reserve(n_slots, int32_t(max_len));
    stats.load_seconds = seconds_since(t_load);
    spdlog::info("{} requests to run ({} invalid, {} already done), batch size {}, loaded in {:.2f}s", queue.size(),
                 stats.failed, stats.skipped, n_slots, stats.load_seconds);

    // --- generation loop: continuous batching --------------------------------------------------------
    const auto t_gen = Clock::now();
    const int64_t total = int64_t(queue.size());
    Progress progress("requests", total);
    std::vector<std::optional<Active>> slots(static_cast<size_t>(n_slots), std::nullopt);
    std::vector<float> logits;
    std::vector<SequenceStep> batch;
    std::vector<int32_t> batch_slot;
    int64_t finished = 0;

    auto finish = [&](Active & a, const char * reason) {
        json r;
        r["custom_id"] = a.req.custom_id;
        r["text"] = a.text;
        r["token_ids"] = a.generated;
        r["finish_reason"] = reason;
        r["usage"] = {{"prompt_tokens", a.req.prompt_ids.size()}, {"completion_tokens", a.generated.size()}};
        if (a.req.logprobs) r["logprobs"] = a.logprobs;
        out.write(r);
        ++stats.completed;
    };

    while (finished < total) {
        if (job_stop_flag().load()) {
            stats.interrupted = true;
            spdlog::warn("stop requested: {} requests unfinished; outputs are synced, rerun the same command to "
                         "finish them", total - finished);
            break;
        }
        // admit queued requests into free slots (their whole prompt is this step's input)
        for (int32_t s = 0; s < n_slots && !queue.empty(); ++s) {
            if (slots[size_t(s)]) continue;
            slots[size_t(s)].emplace(std::move(queue.front()), s);
            queue.pop_front();
            stats.prompt_tokens += int64_t(slots[size_t(s)]->req.prompt_ids.size());
        }
        batch.clear();
        batch_slot.clear();
        for (int32_t s = 0; s < n_slots; ++s) {
            auto & a = slots[size_t(s)];
            if (!a) continue;
            SequenceStep st;
            st.cache_slot = s;
            st.past_len = a->past;
            if (a->past == 0) {
                st.tokens = a->req.prompt_ids.data();
                st.n_tokens = int32_t(a->req.prompt_ids.size());
            } else {
                st.tokens = &a->generated.back();
                st.n_tokens = 1;
            }
            batch.push_back(st);
            batch_slot.push_back(s);
        }
        forward.step(batch, logits);
        for (size_t b = 0; b < batch.size(); ++b) {
            auto & a = slots[size_t(batch_slot[b])];
            a->past += batch[b].n_tokens;
            const float * row = logits.data() + b * size_t(vocab);
            const char * reason = nullptr;
            if (!logits_finite(row, vocab)) {
                fail({a->req.line, a->req.custom_id, "nan_logits",
                      fmt::format("line {}: the model produced NaN/Inf logits at position {}: the weights or inputs "
                                  "overflow; check the checkpoint's dtype", a->req.line, a->past)});
                a.reset();
                ++finished;
                continue;
            }
            const int32_t id = a->sampler.sample(row, vocab);
            a->generated.push_back(id);
            ++stats.generated_tokens;
            if (a->req.logprobs) a->logprobs.push_back(Sampler::logprob(row, vocab, id));
            if (eos.count(id)) reason = "stop";
            // stop strings need the text every step; otherwise it is decoded once, at the end
            if (!a->req.stop.empty()) a->text = tok.decode(a->generated, /*skip_special=*/true);
            for (const auto & s : a->req.stop) {
                const size_t at = a->text.find(s);
                if (at != std::string::npos) { a->text.resize(at); reason = "stop"; break; }
            }
            if (!reason && int64_t(a->generated.size()) >= a->req.max_tokens) reason = "length";
            if (reason) {
                if (a->req.stop.empty()) a->text = tok.decode(a->generated, /*skip_special=*/true);
                finish(*a, reason);
                a.reset();
                ++finished;
            }
        }
        progress.update(finished, stats.generated_tokens);
    }
    progress.finish();
    out.sync();
    stats.generate_seconds = seconds_since(t_gen);
    return stats;
}

}  // namespace zt
