// The embed loop of a job (task "embed", see job_run.h): every request is one input whose final-normed hidden
// states are pooled into one vector:
//   "last": the hidden state of the input's last token (gte-Qwen2, e5-mistral: their tokenizers end the input
//           with EOS); "mean": the mean over the input's tokens.
// Optional L2 normalisation (ztinfer.embedding.normalize). Causal models prefill long inputs in chunks of
// prefill_chunk tokens per micro-batch and step (the KV cache carries the earlier chunks); models whose
// config.json says "is_causal": false attend in both directions, so their input must be one chunk (one step).
// Record sent to rank 0: {"custom_id", "row", "embedding": [C floats], "usage": {"prompt_tokens", "total_tokens"}}.
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "runtime/stream/forward.h"
#include "runtime/job/job_run.h"

namespace zt {

namespace {

using json = nlohmann::json;

// An input being embedded, holding one KV-cache slot.
struct Embedding {
    Request req;
    int32_t past = 0;                 // tokens already run
    std::vector<double> sum;          // mean pooling: sum of the hidden rows so far (C)
    Embedding(Request r, int64_t C) : req(std::move(r)), sum(size_t(C), 0.0) {}
    int32_t len() const { return int32_t(req.prompt_ids.size()); }
};

std::string embedding_record(const Embedding & e, std::vector<float> v, bool normalize) {
    if (normalize) {
        double n2 = 0;
        for (float x : v) n2 += double(x) * double(x);
        const double inv = n2 > 0 ? 1.0 / std::sqrt(n2) : 0.0;
        for (float & x : v) x = float(double(x) * inv);
    }
    json r;
    r["custom_id"] = e.req.custom_id;
    r["row"] = e.req.row;
    r["embedding"] = v;
    r["usage"] = {{"prompt_tokens", e.len()}, {"total_tokens", e.len()}};
    return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

void run_embed_loop(JobRun & run) {
    const JobConfig & cfg = run.cfg;
    JobStats & stats = run.stats;
    const int64_t C = run.mc.hidden_size;
    const bool mean = cfg.embedding.pooling == "mean";
    const bool causal = run.mc.is_causal;
    const int32_t per_mb = int32_t(cfg.batch_size);
    const int32_t n_slots = run.n_slots;
    const int32_t n_mb = (n_slots + per_mb - 1) / per_mb;
    if (!causal && run.rank == 0)
        spdlog::info("{}: \"is_causal\": false (bidirectional attention): every input runs in one piece, so "
                     "prefill_chunk does not bound it", run.cfg.model);
    std::vector<std::optional<Embedding>> slots(size_t(n_slots), std::nullopt);
    std::vector<float> hidden;
    std::vector<SequenceStep> batch;
    std::vector<int32_t> batch_slot;
    int64_t active = 0;

    while (run.keep_stepping(active, n_slots - active)) {
        for (int32_t s = 0; s < n_slots && !run.admitted.empty(); ++s) {
            if (slots[size_t(s)]) continue;
            slots[size_t(s)].emplace(std::move(run.admitted.front()), C);
            run.admitted.pop_front();
            ++active;
            stats.prompt_tokens += slots[size_t(s)]->len();
        }
        batch.clear();
        batch_slot.clear();
        for (int32_t mb = 0; mb < n_mb; ++mb) {
            int64_t budget = cfg.batch.prefill_chunk;
            for (int32_t s = mb * per_mb; s < std::min(n_slots, (mb + 1) * per_mb); ++s) {
                auto & e = slots[size_t(s)];
                if (!e) continue;
                const int32_t left = e->len() - e->past;
                // bidirectional attention needs the whole input at once; a causal input takes what the budget allows
                // (a first chunk always fits a micro-batch with nothing else in it)
                int32_t n = causal ? int32_t(std::min<int64_t>(left, budget)) : left;
                if (!causal && budget < left && budget < cfg.batch.prefill_chunk) n = 0;
                if (n <= 0) continue;
                budget -= n;
                SequenceStep sq;
                sq.cache_slot = s;
                sq.past_len = e->past;
                sq.tokens = e->req.prompt_ids.data() + e->past;
                sq.n_tokens = n;
                sq.micro_batch = mb;
                sq.emit = mean || e->past + n == e->len();   // mean pools every row; last only the final one
                batch.push_back(sq);
                batch_slot.push_back(s);
            }
        }
        run.forward.step_hidden(batch, hidden, /*all_positions=*/mean);
        ++stats.steps;
        size_t row = 0;
        for (size_t b = 0; b < batch.size(); ++b) {
            auto & e = slots[size_t(batch_slot[b])];
            e->past += batch[b].n_tokens;
            if (!batch[b].emit) continue;
            const int32_t rows = mean ? batch[b].n_tokens : 1;
            const float * h = hidden.data() + row * size_t(C);
            row += size_t(rows);
            if (mean)
                for (int32_t t = 0; t < rows; ++t)
                    for (int64_t c = 0; c < C; ++c) e->sum[size_t(c)] += double(h[t * C + c]);
            if (e->past < e->len()) continue;
            std::vector<float> v(static_cast<size_t>(C));
            bool finite = true;
            for (int64_t c = 0; c < C; ++c) {
                v[size_t(c)] = mean ? float(e->sum[size_t(c)] / double(e->len())) : h[c];
                finite = finite && std::isfinite(v[size_t(c)]);
            }
            if (!finite) {
                run.fail({e->req.line, e->req.custom_id, "nan_logits", fmt::format("line {}: the model produced "
                          "NaN/Inf hidden states: the weights or inputs overflow; check the checkpoint's dtype",
                          e->req.line)});
            } else {
                run.pending.push_back(embedding_record(*e, std::move(v), cfg.embedding.normalize));
                ++stats.completed;
                stats.embedded_tokens += e->len();
                run.tokens_unsent += e->len();
            }
            e.reset();
            --active;
            ++run.finished_unsent;
        }
        run.exchange_records();
    }
}

}  // namespace zt
