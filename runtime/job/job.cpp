// The job (see job.h): load -> partition and stream the weights -> read and validate requests -> the task's loop
// (generate_loop.cpp / embed_loop.cpp), every rank in lockstep -> records (rank 0 writes them all) -> metrics.
// The rank's backend, communicator and threads are made in job_launch.cpp.
#include "runtime/job/job.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cmath>
#include <deque>
#include <fstream>
#include <optional>
#include <set>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/generation_config.h"
#include "runtime/model/gguf_checkpoint.h"
#include "runtime/model/gguf_file.h"
#include "runtime/job/embedding_output.h"
#include "runtime/base/error.h"
#include "runtime/job/job_run.h"
#include "runtime/job/output_lock.h"
#include "runtime/job/plan_config.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/base/memory_usage.h"
#include "runtime/model/model_config.h"
#include "runtime/job/progress.h"
#include "runtime/job/request.h"
#include "runtime/job/request_handout.h"
#include "runtime/job/result_writer.h"
#include "runtime/job/sampler.h"
#include "runtime/stream/schedule.h"
#include "runtime/model/tokenizer.h"
#include "runtime/base/trace.h"
#include "runtime/stream/weight_store.h"

namespace zt {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// End-of-sequence ids: the tokenizer's EOS, config.json's and generation_config.json's eos_token_id.
std::set<int32_t> eos_ids_of(const std::string & model_dir, const ModelConfig & mc, const Tokenizer * tok) {
    std::set<int32_t> ids;
    if (tok) if (auto e = tok->eos_id()) ids.insert(*e);
    for (int64_t e : mc.eos_token_ids) ids.insert(int32_t(e));
    for (int32_t e : generation_config_eos_ids(model_dir)) ids.insert(e);
    return ids;
}

OffloadTier tier_of(const std::string & device) {
    if (device == "cpu") return OffloadTier::cpu;
    if (device == "nvme") return OffloadTier::nvme;
    return OffloadTier::none;
}

double mib(size_t bytes) { return double(bytes) / (1024.0 * 1024.0); }

}  // namespace

std::atomic<bool> & job_stop_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

// The tokenizer: the "ztinfer.tokenizer" folder when given, else the GGUF file's tokenizer.ggml.* or the model
// folder's tokenizer.json; none when a folder has none (requests then give token ids).
std::optional<Tokenizer> load_job_tokenizer(const JobConfig & cfg, const GgufFile * gguf) {
    if (!cfg.tokenizer.empty()) {
        spdlog::info("tokenizer: {} (\"ztinfer.tokenizer\", in place of the model's)", cfg.tokenizer);
        return Tokenizer::load(cfg.tokenizer);
    }
    if (gguf) {
        try {
            return Tokenizer::from_gguf(*gguf, cfg.model);
        } catch (const Error & e) {
            ZT_FAIL("{} (set \"ztinfer.tokenizer\" to the model's Hugging Face tokenizer folder to use that instead)",
                    e.message());
        }
    }
    if (std::ifstream(cfg.model + "/tokenizer.json").good()) return Tokenizer::load(cfg.model);
    spdlog::warn("{} has no tokenizer.json: requests must give token ids{} (or set \"ztinfer.tokenizer\" to a "
                 "tokenizer folder)", cfg.model, cfg.task == "embed" ? "" : ", and results have no text");
    return std::nullopt;
}

namespace {
JobStats run_on_ranks(const JobConfig & cfg, const WorldInfo & world, int n_threads, Backend & backend,
                      Communicator & comm, Clock::time_point t_load);
}  // namespace

JobStats run_job(const JobConfig & configured, const WorldInfo & world) {
    const auto t_load = Clock::now();
    JobConfig cfg = configured;   // "auto" keys get the planner's values (apply_auto_settings) before the model loads
    const int rank = world.rank, n_ranks = world.size;
    if (rank == 0) for (const auto & w : cfg.warnings) spdlog::warn("{}: {}", cfg.config_path, w);

    cfg.check_paths();   // after every override (--input/--output): input readable, output not the input
    // --- backend and communicator ------------------------------------------------------------------
    const int n_threads = job_threads(cfg, rank);
    std::unique_ptr<Backend> backend = make_job_backend(cfg, world, n_threads);
    std::unique_ptr<Communicator> comm = make_job_communicator(cfg, world, *backend);
    try {
        if (!cfg.auto_keys.empty()) apply_auto_settings(cfg, rank, n_ranks, n_threads, *comm);
        JobStats stats = run_on_ranks(cfg, world, n_threads, *backend, *comm, t_load);
        // (TCP has nothing to finalize: its destructor tells the peers this rank leaves cleanly, so they do not
        // take its closed sockets for a death)
        if (stats.interrupted && (n_ranks > 1 || world.via_mpi_launcher()) && comm->name() != "tcp") {
            // The launcher is stopping the job (Slurm preemption, or mpirun forwarding SIGTERM, which SIGKILLs the
            // ranks odls_base_sigkill_timeout = 1 s later): MPI_Finalize would wait for the launcher's teardown and
            // be killed inside it. Every output is synced, so leave MPI without finalizing and exit now.
            (void)comm.release();
        }
        return stats;
    } catch (const std::exception & e) {
        if (n_ranks == 1) throw;
        // The other ranks would wait for this one in the next collective: log why, then end every rank now.
        if (const auto * ze = dynamic_cast<const Error *>(&e)) spdlog::error("{}: {}", ze->location(), ze->message());
        else spdlog::error("unexpected error: {}", e.what());
        spdlog::error("rank {} failed: stopping all {} ranks (MPI_Abort); fix the error above and rerun (finished "
                      "requests are kept and skipped)", rank, n_ranks);
        comm->abort(1);   // does not return
    }
    return {};
}

namespace {

// The model as this rank streams it: config, tokenizer, this rank's weight slices and the schedule and forward
// pass over them (members depend on the ones above them).
struct StreamedModel {
    ModelConfig mc;
    std::optional<Tokenizer> tok;         // empty: the model folder has no tokenizer.json
    std::optional<PartitionPlan> plan;
    std::unique_ptr<WeightStore> store;
    std::unique_ptr<Tracer> tracer;
    std::unique_ptr<Schedule> schedule;
    std::unique_ptr<Forward> forward;
    ForwardOptions fo;
};

// Step 1: model, tokenizer, weights: partitioned over the ranks, this rank's slices in the store, the checkpoint
// unmapped again; logs the memory it took.
std::unique_ptr<StreamedModel> load_streamed_model(const JobConfig & cfg, int rank, int n_ranks, Backend & backend,
                                                   Communicator & comm, JobStats & stats) {
    const StreamingConfig & st = cfg.streaming;
    const bool embed = cfg.task == "embed";
    auto m = std::make_unique<StreamedModel>();
    std::optional<GgufFile> gguf;   // a .gguf model: its header, read once for the config and the tokenizer
    if (is_gguf_model_path(cfg.model)) gguf.emplace(read_gguf_header(cfg.model));
    m->mc = gguf ? ModelConfig::from_gguf(*gguf, cfg.model) : ModelConfig::load(cfg.model);
    const ModelConfig & mc = m->mc;
    m->tok = load_job_tokenizer(cfg, gguf ? &*gguf : nullptr);
    const auto & tok = m->tok;
    const MemoryUsage mem_before = memory_usage();
    auto ckpt = std::make_unique<Checkpoint>(cfg.model);
    const ModelWeights weights = bind_weights(*ckpt, mc);
    ZT_CHECK(embed || weights.lm_head.data != nullptr, "{} has no lm_head (a base-model save): it can compute "
             "embeddings (\"ztinfer.task\": \"embed\") but not generate text", cfg.model);
    ZT_CHECK(!tok || tok->vocab_size() <= mc.vocab_size,
             "{}: tokenizer{} has {} tokens but the model's vocab_size is {}: the tokenizer belongs to another model",
             cfg.model, cfg.tokenizer.empty() ? "" : " " + cfg.tokenizer, tok ? tok->vocab_size() : 0, mc.vocab_size);
    PartitionOptions po;
    po.world = n_ranks;
    po.persistence_threshold = st.persistence_threshold;
    po.resident_layers = int(st.resident_layers);
    po.partition_embeddings = st.partition_embeddings;
    po.stream = st.offload_device != "none";
    m->plan.emplace(plan_partition(mc, weights, po));
    const PartitionPlan & plan = *m->plan;
    WeightStoreOptions so;
    so.tier = tier_of(st.offload_device);
    so.nvme_path = st.nvme_path;
    if (so.tier == OffloadTier::nvme) so.checkpoint = ckpt->identity();   // the NVMe file's header names it
    so.nvme_reuse = st.nvme_reuse;   // ztinfer.nvme_reuse: a named slice file per rank, reused by a rerun
    so.model = cfg.model;
    so.aio_block_size = size_t(st.aio_block_size);
    so.aio_queue_depth = int(st.aio_queue_depth);
    so.buffer_count = int(st.buffer_count);
    m->store = std::make_unique<WeightStore>(plan, rank, backend, so);
    ckpt.reset();   // this rank's bytes are in the store now: unmap the checkpoint
    m->tracer = std::make_unique<Tracer>(rank, !st.trace.empty());
    m->schedule = std::make_unique<Schedule>(plan, *m->store, backend, comm,
                                             ScheduleOptions{int(st.prefetch_depth), st.overlap}, m->tracer.get());
    m->fo.kv_offload = cfg.batch.kv_offload == "cpu";
    m->forward = std::make_unique<Forward>(mc, plan, *m->schedule, backend, m->fo, m->tracer.get());
    const MemoryUsage mem_after = memory_usage();
    const WeightMemory wm = m->store->memory();
    stats.weight_host_bytes = wm.total() + m->schedule->ring_bytes();
    stats.rss_growth_bytes = mem_after.rss_bytes > mem_before.rss_bytes ? mem_after.rss_bytes - mem_before.rss_bytes : 0;
    stats.streamed_bytes_per_step = plan.streamed_bytes();
    stats.weight_bits_per_weight = plan.bits_per_weight();
    spdlog::info("memory: rank {} of {}, offload {}: streamed weights {:.1f} MiB per step ({:.2f} bits/weight), own "
                 "slices {:.1f} MiB, staging {:.1f} MiB, resident {:.1f} MiB, ring {:.1f} MiB ({} x {:.1f} MiB); RSS "
                 "grew by {:.1f} MiB while loading", rank, n_ranks, st.offload_device, mib(plan.streamed_bytes()),
                 plan.bits_per_weight(), mib(wm.slices), mib(wm.staging), mib(wm.resident),
                 mib(m->schedule->ring_bytes()), m->schedule->ring_buffers(), mib(plan.max_flat_bytes()),
                 mib(stats.rss_growth_bytes));
    return m;
}

// Step 2 (every rank, before rank 0 opens the output for writing): what the output already holds (resume).
FinishedRequests read_done_before(const JobConfig & cfg) {
    if (!cfg.resume) return {};
    if (cfg.task == "embed") return EmbeddingOutput::read_finished(cfg.output);
    return std::ifstream(cfg.output).good() ? ResultWriter::read_finished(cfg.output) : FinishedRequests{};
}

// Step 3, per valid request this rank reads into its queue: tokenizes a text prompt and checks the ids and the
// length against the model; false when the request cannot run, with the line's error record queued when `report`
// (balanced: every rank prepares every request and rank 0 reports).
bool prepare_request(JobRun & run, Request & r, bool report) {
    const JobConfig & cfg = run.cfg;
    const ModelConfig & mc = run.mc;
    const bool embed = cfg.task == "embed";
    const int64_t line_no = r.line, vocab = mc.vocab_size, max_ctx = mc.max_context();
    auto fail = [&](RequestError e) { if (report) run.fail(e); };
    if (r.prompt) {
        if (!run.tok) {
            fail({line_no, r.custom_id, "invalid_request", fmt::format("line {}: the {} is text but {} has no "
                      "tokenizer.json: give token ids instead", line_no, embed ? "input" : "prompt", cfg.model)});
            return false;
        }
        try {
            r.prompt_ids = run.tok->encode(*r.prompt, /*add_special_tokens=*/true);
        } catch (const Error & e) {
            fail({line_no, r.custom_id, "invalid_request", fmt::format("line {}: cannot tokenize the {}: {}",
                      line_no, embed ? "input" : "prompt", e.message())});
            return false;
        }
        r.prompt.reset();   // the ids are what runs (a balanced queue is held by every rank: keep it small)
    }
    if (r.prompt_ids.empty()) {   // a text whose every character the tokenizer drops (id lists are never empty)
        fail({line_no, r.custom_id, "invalid_request", fmt::format("line {}: the {} tokenized to no tokens: the "
                  "tokenizer of {} drops all of its characters and adds no special tokens; give a text it keeps "
                  "or token ids", line_no, embed ? "input" : "prompt", cfg.model)});
        return false;
    }
    for (int32_t id : r.prompt_ids) {
        if (id >= vocab) {
            fail({line_no, r.custom_id, "invalid_request", fmt::format("line {}: the token ids hold {} but the "
                      "vocabulary has {} tokens", line_no, id, vocab)});
            return false;
        }
    }
    const int64_t n_prompt = int64_t(r.prompt_ids.size());
    if (embed && n_prompt > max_ctx) {
        fail({line_no, r.custom_id, "context_length_exceeded",
                  fmt::format("line {}: the input has {} tokens, more than the model's context of {} ({}); shorten "
                              "it or split it into several lines", line_no, n_prompt, max_ctx, mc.max_context_reason())});
        return false;
    }
    if (!embed && r.max_tokens > max_ctx - n_prompt) {   // (n_prompt + max_tokens could overflow)
        fail({line_no, r.custom_id, "context_length_exceeded",
                  fmt::format("line {}: prompt has {} tokens and max_tokens is {}: together more than the model's "
                              "context of {} ({}); shorten the prompt or lower max_tokens", line_no, n_prompt,
                              r.max_tokens, max_ctx, mc.max_context_reason())});
        return false;
    }
    const int64_t positions = n_prompt + (embed ? 0 : r.max_tokens);
    if (positions > INT32_MAX) {   // a KV-cache slot holds at most INT32_MAX positions
        fail({line_no, r.custom_id, "kv_cache_exceeded",
                  fmt::format("line {}: prompt has {} tokens and max_tokens is {}: {} positions, more than a KV-cache "
                              "slot holds ({}); lower max_tokens", line_no, n_prompt, r.max_tokens, positions,
                              INT32_MAX)});
        return false;
    }
    return true;
}

// Step 3: every rank reads every line; invalid lines get their error record (from rank 0), lines done before are
// skipped. The valid requests go to run.queue in run order (request_handout.h): balanced, all of them on every
// rank (checked equal across ranks); static, request k only on rank k % N.
void read_requests(JobRun & run, const FinishedRequests & done_before) {
    const JobConfig & cfg = run.cfg;
    JobStats & stats = run.stats;
    const int rank = run.rank, n_ranks = run.n_ranks;
    const bool embed = cfg.task == "embed";
    std::ifstream in(cfg.input, std::ios::binary);
    ZT_CHECK(in.good(), "cannot open input {}: check \"ztinfer.input\" in {}", cfg.input, cfg.config_path);
    std::set<std::string> seen;
    std::string line;
    int64_t line_no = 0, n_valid = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;   // blank lines are not requests
        const int64_t row = stats.requests++;
        auto parsed = embed ? parse_embed_request(line, line_no, cfg.embedding.instruction)
                            : parse_request(line, line_no, cfg.sampling);
        if (done_before.lines.count(line_no)) {   // resume: this line already has its error record
            if (auto * r = std::get_if<Request>(&parsed)) seen.insert(r->custom_id);
            else if (const auto & id = std::get<RequestError>(parsed).custom_id) seen.insert(*id);
            ++stats.skipped;
            continue;
        }
        if (auto * e = std::get_if<RequestError>(&parsed)) {
            if (e->custom_id && !seen.insert(*e->custom_id).second) e->code = "duplicate_custom_id",
                e->message = fmt::format("line {}: custom_id \"{}\" was used by an earlier line (and this line is "
                                         "invalid too: {})", line_no, *e->custom_id, e->message);
            if (rank == 0) run.fail(*e);   // every rank sees it; rank 0 reports it
            continue;
        }
        Request r = std::move(std::get<Request>(parsed));
        r.row = row;
        if (!seen.insert(r.custom_id).second) {
            if (rank == 0)
                run.fail({line_no, r.custom_id, "duplicate_custom_id",
                          fmt::format("line {}: custom_id \"{}\" was used by an earlier line: custom_ids must be "
                                      "unique", line_no, r.custom_id)});
            continue;
        }
        if (done_before.custom_ids.count(r.custom_id)) { ++stats.skipped; continue; }
        ++run.total;
        if (!run.balanced && (n_valid++ % n_ranks) != rank) continue;   // static: another rank's request
        if (prepare_request(run, r, !run.balanced || rank == 0)) run.queue.push_back(std::move(r));
    }
    const int64_t chunk = cfg.batch.prefill_chunk;
    std::stable_sort(run.queue.begin(), run.queue.end(), [chunk](const Request & a, const Request & b) {
        return runs_before(a.prompt_ids.size(), a.max_tokens, b.prompt_ids.size(), b.max_tokens, chunk);
    });
    if (run.balanced && n_ranks > 1) run.check_same_queue();
    if (stats.skipped && rank == 0)
        spdlog::info("resuming: {} requests already in {} are skipped", stats.skipped, cfg.output);
}

// Step 4 (rank 0): the output, and run.write_record / run.sync_output writing to it.
struct JobOutput {
    std::unique_ptr<ResultWriter> lines;
    std::unique_ptr<EmbeddingOutput> embeddings;
};
void open_output(JobRun & run, JobOutput & out) {
    const JobConfig & cfg = run.cfg;
    if (cfg.task == "embed") {
        out.embeddings = std::make_unique<EmbeddingOutput>(cfg.output, run.stats.requests, run.mc.hidden_size,
                                                           cfg.resume);
        EmbeddingOutput & emb_out = *out.embeddings;
        run.write_record = [&emb_out](const std::string & text) {
            const json r = json::parse(text);
            if (r.contains("error")) { emb_out.write_error(r); return; }
            const std::vector<float> v = r["embedding"].get<std::vector<float>>();
            emb_out.write(r["row"].get<int64_t>(), r["custom_id"].get<std::string>(), v.data(),
                          r["usage"]["prompt_tokens"].get<int64_t>());
        };
        run.sync_output = [&emb_out] { emb_out.sync(); };
    } else {
        out.lines = std::make_unique<ResultWriter>(cfg.output, cfg.resume);
        ResultWriter & w = *out.lines;
        run.write_record = [&w](const std::string & text) { w.write_line(text); };
        run.sync_output = [&w] { w.sync(); };
    }
}

// Step 5: the KV cache: micro_batches x batch_size slots (fewer for a short queue), one per request running at a
// time, each as long as the longest queued request needs. When that cache cannot be had (too large, out of
// memory) and the longest requests are the cause, they get their own error records (naming max_tokens and the
// sizes) and the cache is sized for the others; a cache too large for every request is the job's error.
// Balanced, the queue is the job's: every rank sizes the same cache, and a failure on any rank drops the same
// requests on every rank (rank 0 records them), so the queues stay equal.
void reserve_kv_cache(JobRun & run) {
    const bool embed = run.cfg.task == "embed";
    auto positions = [embed](const Request & r) { return int64_t(r.prompt_ids.size()) + (embed ? 0 : r.max_tokens); };
    const int64_t want_slots = run.cfg.batch_size * run.cfg.batch.micro_batches;
    for (;;) {
        int64_t max_len = 1;
        for (const auto & r : run.queue) max_len = std::max(max_len, positions(r));   // <= INT32_MAX (prepare_request)
        run.n_slots = int32_t(run.balanced ? balanced_slots(want_slots, int64_t(run.queue.size()), run.n_ranks)
                                           : std::min<int64_t>(want_slots, std::max<size_t>(run.queue.size(), 1)));
        std::optional<Error> error;
        try {
            run.forward.reserve(run.n_slots, int32_t(max_len));
        } catch (const Error & e) {
            error = e;
        }
        int failed[1] = {error ? 1 : 0};
        if (run.balanced && run.n_ranks > 1) run.comm.all_reduce_max(failed, 1, nullptr);
        if (!failed[0]) return;
        const std::string why = error ? error->message() : "it failed on another rank";
        const bool all_longest = std::all_of(run.queue.begin(), run.queue.end(),
                                             [&](const Request & r) { return positions(r) == max_len; });
        if (run.queue.empty() || (all_longest && run.n_slots > 1)) {
            if (error) throw *error;
            ZT_FAIL("rank {}: the KV cache of {} slot(s) of {} positions could not be reserved on another rank (its "
                    "error is in its log)", run.rank, run.n_slots, max_len);
        }
        std::deque<Request> rest;
        for (auto & r : run.queue) {
            if (positions(r) < max_len) { rest.push_back(std::move(r)); continue; }
            if (run.balanced && run.rank != 0) continue;   // rank 0 records the balanced queue's errors
            run.fail({r.line, r.custom_id, "kv_cache_exceeded",
                      fmt::format("line {}: prompt has {} tokens and max_tokens is {}: the KV cache for {} slot(s) "
                                  "of {} positions cannot be reserved ({}); lower this line's max_tokens (the "
                                  "cache is sized for the longest request)", r.line, r.prompt_ids.size(),
                                  r.max_tokens, run.n_slots, max_len, why)});
        }
        run.queue = std::move(rest);
    }
}

// Step 6: the task's loop, all ranks in lockstep (device memory by purpose noted as it ends), then the output
// synced and (after SIGTERM) the rerun hint.
void run_task_loop(JobRun & run) {
    const JobConfig & cfg = run.cfg;
    const bool embed = cfg.task == "embed";
    const auto t_loop = Clock::now();
    if (run.rank == 0) run.progress.emplace(embed ? "embeddings" : "requests", run.total);
    run.exchange_records();   // validation errors found while reading
    if (embed) run_embed_loop(run);
    else run_generate_loop(run);
    run.stats.device_by_purpose = run.backend.memory_stats().device_by_purpose;   // before anything is freed
    if (run.progress) run.progress->finish();
    if (run.sync_output) run.sync_output();
    run.stats.generate_seconds = seconds_since(t_loop);
    if (run.stats.interrupted && run.rank == 0)
        spdlog::warn("stopped by a signal (SIGTERM/SIGINT, e.g. Slurm preemption): {} of {} requests are unfinished. "
                     "Everything finished is in {} (synced). To finish the rest, rerun the same command: finished "
                     "custom_ids are skipped (\"ztinfer.resume\" is on by default)", run.total - run.finished_all,
                     run.total, cfg.output);
}

// Step 7: the trace (when asked) and the metrics (with this rank's memory peaks, NVMe file and peak RSS): every
// rank's stats -> rank 0 -> <output>.metrics.json.
void write_trace_and_metrics(JobRun & run, const StreamedModel & m, Clock::time_point t_load) {
    const JobConfig & cfg = run.cfg;
    const StreamingConfig & st = cfg.streaming;
    JobStats & stats = run.stats;
    Communicator & comm = run.comm;
    const Tracer & tracer = *m.tracer;
    if (!st.trace.empty()) {
        const std::vector<std::string> all = comm.gather_strings(tracer.events_json());
        if (run.rank == 0) {
            Tracer::write_file(st.trace, all);
            spdlog::info("trace of {} steps written to {} (open it in https://ui.perfetto.dev)", stats.steps, st.trace);
        }
    }
    stats.fetch_seconds = tracer.total_us("fetch") * 1e-6;
    stats.all_gather_seconds = tracer.total_us("all_gather") * 1e-6;
    stats.compute_seconds = tracer.total_us("compute") * 1e-6;
    stats.kv_seconds = tracer.total_us("kv") * 1e-6;
    stats.bytes_fetched = m.schedule->bytes_fetched();
    stats.kv_bytes_moved = m.forward->kv_bytes_moved();
    const MemoryStats mem = run.backend.memory_stats();   // peaks since the backend was made (the whole job)
    stats.device_peak = mem.device_peak;
    stats.pinned_peak = mem.pinned_peak;
    stats.host_peak = mem.host_peak;
    stats.nvme_file_bytes = m.store->nvme_file_bytes();
    stats.nvme_file_reused = m.store->nvme_file_reused();
    stats.peak_rss = memory_usage().peak_bytes;
    stats.wall_seconds = seconds_since(t_load);
    const std::vector<std::string> all = comm.gather_strings(stats_to_json(stats).dump());
    if (run.rank == 0) {
        std::vector<JobStats> per_rank;
        for (const auto & text : all) per_rank.push_back(stats_from_json(json::parse(text)));
        const std::string path = metrics_path_for(cfg.output);
        const json metrics = job_metrics_json(cfg, per_rank);
        write_metrics_file(path, metrics);
        spdlog::info("metrics written to {}: {:.1f} tokens/s, {:.0f} bytes fetched per token, link busy {:.0f}% of the loop",
                     path, metrics.value("tokens_per_second", 0.0), metrics.value("bytes_fetched_per_token", 0.0),
                     100.0 * metrics["link"].value("efficiency", 0.0));
    }
}

JobStats run_on_ranks(const JobConfig & cfg, const WorldInfo & world, int n_threads, Backend & backend,
                      Communicator & comm, Clock::time_point t_load) {
    JobStats stats;
    const int rank = world.rank, n_ranks = world.size;
    const bool embed = cfg.task == "embed";
    std::optional<OutputLock> lock;   // rank 0, the only writer, holds the output for the job's life
    if (rank == 0) lock.emplace(cfg.output);
    const std::unique_ptr<StreamedModel> m = load_streamed_model(cfg, rank, n_ranks, backend, comm, stats);
    const ModelConfig & mc = m->mc;
    if (rank == 0)
        spdlog::info("model {}: {} layers, hidden {}, vocab {}, context {}; task {}; {} rank(s) over {}, backend {} "
                     "({} threads), prefetch depth {}, overlap {}", cfg.model, mc.num_hidden_layers, mc.hidden_size,
                     mc.vocab_size, mc.max_context(), cfg.task, n_ranks, comm.name(), backend.name(), n_threads,
                     cfg.streaming.prefetch_depth, cfg.streaming.overlap ? "on" : "off");
    JobRun run(cfg, rank, n_ranks, backend, comm, mc, m->tok ? &*m->tok : nullptr, *m->forward, stats);
    run.balanced = cfg.batch.assignment == "balanced";
    if (!embed) run.eos = eos_ids_of(cfg.model, mc, run.tok);

    const FinishedRequests done_before = read_done_before(cfg);
    comm.barrier();   // every rank has read the output before rank 0 opens it for writing
    read_requests(run, done_before);
    JobOutput out;
    if (rank == 0) open_output(run, out);
    reserve_kv_cache(run);
    stats.load_seconds = seconds_since(t_load);
    const std::string share = run.balanced
        ? fmt::format("requests to run on rank {}: handed out as its slots free ({} on all ranks", rank, run.queue.size())
        : fmt::format("{} requests to run on rank {} (request k on rank k % {}; {} on all ranks", run.queue.size(), rank,
                      n_ranks, run.total);
    spdlog::info("{}, {} invalid, {} already done); {} sequences at a time ({} micro-batch(es) of {}), prefill chunk "
                 "{} tokens, KV cache {:.1f} MiB{}; loaded in {:.2f}s", share, stats.failed, stats.skipped, run.n_slots,
                 (run.n_slots + cfg.batch_size - 1) / cfg.batch_size, std::min<int64_t>(cfg.batch_size, run.n_slots),
                 cfg.batch.prefill_chunk, mib(m->forward->kv_cache_bytes()),
                 m->fo.kv_offload ? " in pinned host memory (offloaded)" : "", stats.load_seconds);
    run_task_loop(run);
    write_trace_and_metrics(run, *m, t_load);
    comm.barrier();
    return stats;
}

}  // namespace

}  // namespace zt
