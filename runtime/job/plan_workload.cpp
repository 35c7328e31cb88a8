// The planner's workload (planner.h): the requests a job will run, read from its input file or given as counts,
// and simulate_steps(), which replays how the job shares them among ranks (request_handout.h: balanced hand-out
// as slots free, or static k % N) and how the generate / embed loop admits them into KV-cache slots and chunks
// their prompts, step by step (job.cpp read_requests / reserve_kv_cache, job_run.cpp keep_stepping,
// generate_loop.cpp, embed_loop.cpp). The speed and memory models read the resulting StepTrace.
#include <algorithm>
#include <deque>
#include <fstream>
#include <optional>
#include <set>
#include <variant>

#include "runtime/base/error.h"
#include "runtime/job/job_config.h"
#include "runtime/job/planner.h"
#include "runtime/job/request.h"
#include "runtime/job/request_handout.h"
#include "runtime/model/tokenizer.h"

namespace zt {

Workload workload_from_input(const JobConfig & cfg, const Tokenizer * tok, int64_t max_lines) {
    Workload w;
    w.task = cfg.task;
    const bool embed = cfg.task == "embed";
    std::ifstream in(cfg.input, std::ios::binary);
    ZT_CHECK(in.good(), "cannot open input {}: check \"ztinfer.input\" in {}", cfg.input, cfg.config_path);
    std::set<std::string> seen;
    std::string line;
    int64_t line_no = 0, estimated = 0;
    bool truncated = false;
    while (std::getline(in, line)) {
        ++line_no;
        if (max_lines > 0 && line_no > max_lines) { truncated = true; break; }
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        auto parsed = embed ? parse_embed_request(line, line_no, cfg.embedding.instruction)
                            : parse_request(line, line_no, cfg.sampling);
        auto * r = std::get_if<Request>(&parsed);
        if (!r || !seen.insert(r->custom_id).second) continue;   // error records take no step
        RequestShape rs;
        if (r->prompt) {
            if (tok) {
                try {
                    rs.prompt_tokens = int64_t(tok->encode(*r->prompt, true).size());
                } catch (const Error &) {
                    continue;   // the job writes an error record for it
                }
            } else {
                rs.prompt_tokens = std::max<int64_t>(1, int64_t(r->prompt->size() + 3) / 4);
                ++estimated;
            }
        } else {
            rs.prompt_tokens = int64_t(r->prompt_ids.size());
        }
        if (rs.prompt_tokens == 0) continue;
        rs.new_tokens = embed ? 0 : r->max_tokens;
        w.requests.push_back(rs);
    }
    int64_t prompt = 0, out = 0;
    for (const auto & r : w.requests) prompt += r.prompt_tokens, out += r.new_tokens;
    const size_t n = std::max<size_t>(w.requests.size(), 1);
    w.source = fmt::format("{}: {} requests{}, {:.0f} prompt tokens and {:.0f} new tokens on average{}", cfg.input,
                           w.requests.size(), truncated ? fmt::format(" (first {} lines)", max_lines) : "",
                           double(prompt) / double(n), double(out) / double(n),
                           estimated ? fmt::format(" ({} prompts estimated at 4 bytes per token: no tokenizer)", estimated)
                                     : "");
    return w;
}

Workload workload_uniform(const std::string & task, int64_t n, int64_t prompt_tokens, int64_t new_tokens) {
    ZT_CHECK(n >= 1 && prompt_tokens >= 1 && (task == "embed" || new_tokens >= 1), "workload: {} requests of {} prompt "
             "tokens and {} new tokens: give at least one request, one prompt token and (generate) one new token", n,
             prompt_tokens, new_tokens);
    ZT_CHECK(n <= 10000000 && prompt_tokens <= (int64_t(1) << 30) && new_tokens <= (int64_t(1) << 30), "workload: {} "
             "requests of {} prompt tokens and {} new tokens: at most 10,000,000 requests of at most 2^30 tokens each",
             n, prompt_tokens, new_tokens);
    Workload w;
    w.task = task;
    w.requests.assign(size_t(n), RequestShape{prompt_tokens, task == "embed" ? 0 : new_tokens});
    w.source = task == "embed" ? fmt::format("{} inputs of {} tokens", n, prompt_tokens)
                               : fmt::format("{} requests of {} prompt tokens and {} new tokens", n, prompt_tokens,
                                             new_tokens);
    return w;
}

namespace {

struct SimSeq {
    RequestShape req;
    int64_t past = 0, generated = 0;
};

// One rank's loop: mirrors generate_loop.cpp / embed_loop.cpp (admission at the step boundary in slot order,
// per micro-batch a prompt budget of prefill_chunk tokens, decode tokens first in slot order as they come).
class RankReplay {
public:
    RankReplay(const PlanSettings & s, bool embed, RankSteps & out)
        : s_(s), embed_(embed), out_(out), slots_(size_t(out.n_slots)) {}
    int64_t active() const { return active_; }
    int64_t free_slots() const { return out_.n_slots - active_; }
    void admit(const RequestShape & r) {   // into the first free slot
        for (auto & a : slots_)
            if (!a) { a = SimSeq{r, 0, 0}; ++active_; return; }
    }
    void step() {
        const int64_t per_mb = s_.batch_size;
        const int64_t n_slots = out_.n_slots;
        const int64_t n_mb = (n_slots + per_mb - 1) / per_mb;
        std::vector<MicroBatchLoad> step;
        int64_t rows = 0;
        for (int64_t mb = 0; mb < n_mb; ++mb) {
            MicroBatchLoad load;
            int64_t budget = s_.prefill_chunk;
            for (int64_t i = mb * per_mb; i < std::min(n_slots, (mb + 1) * per_mb); ++i) {
                auto & a = slots_[size_t(i)];
                if (!a) continue;
                int64_t n = 1;
                bool emit = true, prefill = false;
                if (a->past < a->req.prompt_tokens) {
                    n = std::min(a->req.prompt_tokens - a->past, budget);
                    if (n == 0) continue;
                    budget -= n;
                    emit = a->past + n == a->req.prompt_tokens;
                    prefill = true;
                }
                const double pairs = double(n) * double(a->past) + double(n) * double(n + 1) / 2;
                load.sequences += 1;
                load.tokens += n;
                load.rows += emit ? 1 : 0;
                load.attention_pairs += pairs;
                if (prefill) load.prefill_pairs += pairs;
                load.past_positions += double(a->past);
                a->past += n;
                if (!emit) continue;
                if (embed_) {
                    out_.tokens_out += a->req.prompt_tokens;
                    a.reset();
                    --active_;
                } else if (++a->generated >= a->req.new_tokens) {
                    a.reset();
                    --active_;
                }
                if (!embed_) out_.tokens_out += 1;
            }
            if (load.sequences > 0) {
                out_.max_micro_tokens = std::max(out_.max_micro_tokens, load.tokens);
                rows += load.rows;
                step.push_back(load);
            }
        }
        out_.max_step_rows = std::max(out_.max_step_rows, rows);
        out_.steps.push_back(std::move(step));
    }

private:
    const PlanSettings & s_;
    bool embed_;
    RankSteps & out_;
    std::vector<std::optional<SimSeq>> slots_;
    int64_t active_ = 0;
};

// An even sample of at most `cap` of `q` (every stride-th), in run order (request_handout.h).
std::deque<RequestShape> run_order_sample(const std::vector<RequestShape> & q, size_t cap, int64_t prefill_chunk) {
    const size_t stride = std::max<size_t>((q.size() + cap - 1) / std::max<size_t>(cap, 1), 1);
    std::deque<RequestShape> sampled;
    for (size_t k = 0; k < q.size(); k += stride) sampled.push_back(q[k]);
    std::stable_sort(sampled.begin(), sampled.end(), [prefill_chunk](const RequestShape & a, const RequestShape & b) {
        return runs_before(size_t(a.prompt_tokens), a.new_tokens, size_t(b.prompt_tokens), b.new_tokens, prefill_chunk);
    });
    return sampled;
}

}  // namespace

StepTrace simulate_steps(const Workload & w, const PlanSettings & s, int world, int64_t max_per_rank) {
    ZT_CHECK(world >= 1 && s.batch_size >= 1 && s.micro_batches >= 1 && s.prefill_chunk >= 1,
             "planner: world {}, batch_size {}, micro_batches {} and prefill_chunk {} must be >= 1", world, s.batch_size,
             s.micro_batches, s.prefill_chunk);
    const bool embed = w.task == "embed";
    const bool balanced = s.assignment == "balanced";
    const int64_t want_slots = s.batch_size * s.micro_batches;
    StepTrace t;
    t.embed = embed;
    t.ranks.resize(size_t(world));
    auto positions = [](const RequestShape & x) { return x.prompt_tokens + x.new_tokens; };
    int64_t tokens_all = 0, tokens_sampled = 0;
    for (const auto & x : w.requests) tokens_all += embed ? x.prompt_tokens : x.new_tokens;
    const size_t cap = size_t(std::max<int64_t>(max_per_rank, 1));
    std::vector<RankReplay> replays;
    replays.reserve(size_t(world));
    if (balanced) {
        // one queue for the job, handed to the ranks' free slots each step (request_handout.h); every rank's KV
        // cache is sized by the whole workload, even when the replay samples it
        int64_t max_len = 1;
        for (const auto & x : w.requests) max_len = std::max(max_len, positions(x));
        for (int r = 0; r < world; ++r) {
            RankSteps & rs = t.ranks[size_t(r)];
            rs.max_len = max_len;
            rs.n_slots = balanced_slots(want_slots, int64_t(w.requests.size()), world);
            replays.emplace_back(s, embed, rs);
        }
        std::deque<RequestShape> queue = run_order_sample(w.requests, cap * size_t(world), s.prefill_chunk);
        for (;;) {
            bool work = !queue.empty();
            for (const auto & rr : replays) work = work || rr.active() > 0;
            if (!work) break;
            std::vector<int64_t> free;
            for (const auto & rr : replays) free.push_back(rr.free_slots());
            for (int r : hand_out(queue.size(), free)) {
                replays[size_t(r)].admit(queue.front());
                queue.pop_front();
            }
            for (auto & rr : replays) rr.step();
        }
        t.steps = int64_t(t.ranks[0].steps.size());
    } else {
        // request k -> rank k % world; each rank's KV cache is sized by its whole queue, even when sampled
        std::vector<std::vector<RequestShape>> queues(static_cast<size_t>(world));
        for (size_t k = 0; k < w.requests.size(); ++k) queues[k % size_t(world)].push_back(w.requests[k]);
        for (int r = 0; r < world; ++r) {
            const auto & q = queues[size_t(r)];
            RankSteps & rs = t.ranks[size_t(r)];
            int64_t max_len = 1;
            for (const auto & x : q) max_len = std::max(max_len, positions(x));
            rs.max_len = max_len;
            rs.n_slots = std::min<int64_t>(want_slots, std::max<int64_t>(int64_t(q.size()), 1));
            replays.emplace_back(s, embed, rs);
            std::deque<RequestShape> queue = run_order_sample(q, cap, s.prefill_chunk);
            RankReplay & rr = replays.back();
            while (rr.active() > 0 || !queue.empty()) {
                for (int64_t k = rr.free_slots(); k > 0 && !queue.empty(); --k) {
                    rr.admit(queue.front());
                    queue.pop_front();
                }
                rr.step();
            }
            t.steps = std::max<int64_t>(t.steps, int64_t(rs.steps.size()));
        }
    }
    for (auto & rs : t.ranks) tokens_sampled += rs.tokens_out;
    for (auto & rs : t.ranks) rs.steps.resize(size_t(t.steps));   // a rank that is done idles with the others
    t.scale = tokens_sampled > 0 ? double(tokens_all) / double(tokens_sampled) : 1.0;
    return t;
}

}  // namespace zt
