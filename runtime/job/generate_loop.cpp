// The generate loop of a job (see job_run.h): continuous batching inside the lockstep, over the block schedule.
//
//   slots:  micro_batches x batch_size KV-cache slots; slot s belongs to micro-batch s / batch_size
//   step:   every rank: keep_stepping() (collective; hands this rank requests for its free slots, request_handout.h)
//           -> admit them into the free slots -> each
//           micro-batch takes its sequences' new tokens: a decoding sequence its last sampled token, a prefilling
//           one the next chunk of its prompt (at most prefill_chunk prompt tokens per micro-batch and step) ->
//           Forward::step (every fetched layer runs every micro-batch) -> sample the sequences whose prompt is
//           complete -> finished requests free their slot at the step boundary -> records to rank 0
// A request's tokens do not depend on the batch, the micro-batch split, the prefill chunks or the number of
// ranks (batch-invariant CPU ops, a random stream per request), so any of these may change between runs.
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/stream/forward.h"
#include "runtime/job/job_run.h"
#include "runtime/job/sampler.h"
#include "runtime/model/tokenizer.h"

namespace zt {

namespace {

using json = nlohmann::json;

// A request being generated, holding one KV-cache slot.
struct Active {
    Request req;
    int32_t slot = 0;
    int32_t past = 0;                 // positions already in the KV cache (prompt chunks, then generated tokens)
    std::vector<int32_t> generated;
    std::vector<double> logprobs;
    Sampler sampler;
    std::string text;                 // decoded generated text (special tokens skipped; "" without a tokenizer)
    Active(Request r, int32_t s) : req(std::move(r)), slot(s), sampler(req.sampling) {}
    int32_t prompt_len() const { return int32_t(req.prompt_ids.size()); }
};

bool logits_finite(const float * row, int64_t n) {
    for (int64_t i = 0; i < n; ++i) if (!std::isfinite(row[i])) return false;
    return true;
}

std::string result_record(const Active & a, const char * reason) {
    json r;
    r["custom_id"] = a.req.custom_id;
    r["text"] = a.text;
    r["token_ids"] = a.generated;
    r["finish_reason"] = reason;
    r["usage"] = {{"prompt_tokens", a.req.prompt_ids.size()}, {"completion_tokens", a.generated.size()}};
    if (a.req.logprobs) r["logprobs"] = a.logprobs;
    return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

void run_generate_loop(JobRun & run) {
    const JobConfig & cfg = run.cfg;
    JobStats & stats = run.stats;
    const int64_t vocab = run.mc.vocab_size;
    const int32_t per_mb = int32_t(cfg.batch_size);
    const int32_t n_slots = run.n_slots;
    const int32_t n_mb = (n_slots + per_mb - 1) / per_mb;
    std::vector<std::optional<Active>> slots(size_t(n_slots), std::nullopt);
    std::vector<float> logits;
    std::vector<SequenceStep> batch;
    std::vector<int32_t> batch_slot;
    int64_t active = 0;
    auto finish_request = [&](std::optional<Active> & a) { a.reset(); --active; ++run.finished_unsent; };

    while (run.keep_stepping(active, n_slots - active)) {
        // admit waiting requests into free slots (step boundary)
        for (int32_t s = 0; s < n_slots && !run.admitted.empty(); ++s) {
            if (slots[size_t(s)]) continue;
            slots[size_t(s)].emplace(std::move(run.admitted.front()), s);
            run.admitted.pop_front();
            ++active;
            stats.prompt_tokens += slots[size_t(s)]->prompt_len();
        }
        // each micro-batch's new tokens: decode tokens, then prompt chunks within the micro-batch's budget
        batch.clear();
        batch_slot.clear();
        for (int32_t mb = 0; mb < n_mb; ++mb) {
            int64_t budget = cfg.batch.prefill_chunk;
            for (int32_t s = mb * per_mb; s < std::min(n_slots, (mb + 1) * per_mb); ++s) {
                auto & a = slots[size_t(s)];
                if (!a) continue;
                SequenceStep sq;
                sq.cache_slot = s;
                sq.past_len = a->past;
                sq.micro_batch = mb;
                if (a->past < a->prompt_len()) {
                    const int32_t n = int32_t(std::min<int64_t>(a->prompt_len() - a->past, budget));
                    if (n == 0) continue;   // this micro-batch's prompt budget is spent: next step
                    budget -= n;
                    sq.tokens = a->req.prompt_ids.data() + a->past;
                    sq.n_tokens = n;
                    sq.emit = a->past + n == a->prompt_len();
                } else {
                    sq.tokens = &a->generated.back();
                    sq.n_tokens = 1;
                }
                batch.push_back(sq);
                batch_slot.push_back(s);
            }
        }
        run.forward.step(batch, logits);   // an empty batch still steps through every layer with the other ranks
        ++stats.steps;
        size_t row_index = 0;
        for (size_t b = 0; b < batch.size(); ++b) {
            auto & a = slots[size_t(batch_slot[b])];
            a->past += batch[b].n_tokens;
            if (!batch[b].emit) continue;   // a prompt chunk: the prompt goes on next step
            const float * row = logits.data() + (row_index++) * size_t(vocab);
            const char * reason = nullptr;
            if (!logits_finite(row, vocab)) {
                run.fail({a->req.line, a->req.custom_id, "nan_logits",
                          fmt::format("line {}: the model produced NaN/Inf logits at position {}: the weights or "
                                      "inputs overflow; check the checkpoint's dtype", a->req.line, a->past)});
                finish_request(a);
                continue;
            }
            const int32_t id = a->sampler.sample(row, vocab);
            a->generated.push_back(id);
            ++stats.generated_tokens;
            ++run.tokens_unsent;
            if (a->req.logprobs) a->logprobs.push_back(Sampler::logprob(row, vocab, id));
            if (run.eos.count(id) && !a->req.ignore_eos) reason = "stop";
            // stop strings need the text every step; otherwise it is decoded once, at the end
            if (run.tok && !a->req.stop.empty()) a->text = run.tok->decode(a->generated, /*skip_special=*/true);
            for (const auto & s : a->req.stop) {
                const size_t at = a->text.find(s);
                if (at != std::string::npos) { a->text.resize(at); reason = "stop"; break; }
            }
            if (!reason && int64_t(a->generated.size()) >= a->req.max_tokens) reason = "length";
            if (reason) {
                if (run.tok && a->req.stop.empty()) a->text = run.tok->decode(a->generated, /*skip_special=*/true);
                run.pending.push_back(result_record(*a, reason));
                ++stats.completed;
                finish_request(a);
            }
        }
        run.exchange_records();
    }
}

}  // namespace zt
