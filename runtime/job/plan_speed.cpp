// The planner's speed model (planner.h): the job's steps (simulate_steps) run through the schedule's pipeline as
// schedule.cpp really has it, with each stage's time from the machine profile:
//
//   streamed unit g (counting across steps), ring of depth + 1 buffers (depth = prefetch_depth, 0 without overlap):
//     fetch g     copy stream, once compute of unit g - (depth + 1) has freed its ring slot:
//                 tier cpu  slice / H2D           tier nvme  extent / NVMe + slice / H2D
//                 (+ offloaded KV cache of the layer: past positions loaded + new rows written back, / H2D)
//     gather g    comm stream, after fetch g on every rank: flat x (N - 1) / N / all-gather busbw (none for N = 1)
//     compute g   compute stream, after gather g: the slowest rank's micro-batches, each
//                 sum of the unit's matmuls (profile seconds per weight at that T) + attention (4 H D pairs / rate)
//                 + elementwise traffic / memory bandwidth + a per-unit overhead
//   resident units compute as soon as the compute stream is free; without overlap every stage waits for the last.
//   After the head, the host samples (3 passes over R x V logits) and pays the step overhead before the next step.
// A CPU backend whose ranks share the cores computes slower in proportion (threads per rank x ranks per node over
// the cores, against the threads the profile was measured with), and when they take every core the all-gather's
// copies run on them too (its time adds to the unit's compute). Each copy also pays the profile's fixed copy
// latency; the 2nd..Mth micro-batches of a unit re-read its weights after the unit's bytes (the profile's
// reuse_factor at that distance). Tokens/s = the trace's tokens / its time.
#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <map>
#include <thread>
#include <tuple>

#include "runtime/job/planner.h"
#include "runtime/stream/slice_header.h"

namespace zt {

namespace {

constexpr int kMatrices = 7;   // q, k, v, o, gate, up, down

struct LayerShape {            // (dtype, N, K) of each matrix of a layer
    std::array<DType, kMatrices> dtype{};
    std::array<int64_t, kMatrices> n{}, k{};
    bool operator<(const LayerShape & o) const {
        return std::tie(dtype, n, k) < std::tie(o.dtype, o.n, o.k);
    }
};

class StepCost {
public:
    StepCost(const PlanModel & m, const PlanBudget & b, const MachineProfile & p)
        : m_(m), p_(p) {
        const ModelConfig & mc = m.config;
        C_ = mc.hidden_size; H_ = mc.num_attention_heads; KV_ = mc.num_key_value_heads; D_ = mc.head_dim;
        I_ = mc.intermediate_size; V_ = mc.vocab_size;
        for (const LayerWeights & L : m.weights.layers) {
            LayerShape ls;
            const Tensor * t[kMatrices] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
            for (int i = 0; i < kMatrices; ++i) ls.dtype[i] = t[i]->dtype, ls.n[i] = t[i]->dim(0), ls.k[i] = t[i]->dim(1);
            auto it = shape_index_.find(ls);
            if (it == shape_index_.end()) it = shape_index_.emplace(ls, int(shapes_.size())).first, shapes_.push_back(ls);
            layer_shape_.push_back(it->second);
        }
        // CPU ranks on one machine share its cores: time scales with the cores a rank really gets
        if (b.device == "cpu") {
            const int cores = std::max(1, p.cores > 0 ? p.cores : int(std::thread::hardware_concurrency()));
            const int threads = b.threads > 0 ? std::min(b.threads, cores) : cores;
            const double per_rank = std::min(double(threads), double(cores) / std::max(1, b.ranks_per_node));
            const int measured = p.threads > 0 ? p.threads : cores;
            compute_scale_ = double(measured) / std::max(per_rank, 1e-9);
        }
    }

    int n_shapes() const { return int(shapes_.size()); }
    int layer_shape(int64_t layer) const { return layer_shape_[size_t(layer)]; }

    // Seconds of one layer of shape `shape` over one micro-batch (reuse: not the unit's first micro-batch, so
    // its weights were read by the one before, the rest of the layer in between).
    double layer(int shape, const MicroBatchLoad & ld, bool reuse) {
        const int64_t T = ld.tokens;
        double t = matmuls(shape, T, reuse);
        const double decode_pairs = ld.attention_pairs - ld.prefill_pairs;
        const double flop_per_pair = 4.0 * double(H_) * double(D_);
        if (p_.attention_decode_gflops > 0) t += flop_per_pair * decode_pairs / (p_.attention_decode_gflops * 1e9);
        if (p_.attention_prefill_gflops > 0) t += flop_per_pair * ld.prefill_pairs / (p_.attention_prefill_gflops * 1e9);
        // elementwise: two norms, RoPE, residual adds, SwiGLU, the KV store, each reading and writing fp32 rows
        const double bytes = 4.0 * double(T) * double(10 * C_ + 4 * H_ * D_ + 6 * KV_ * D_ + 3 * I_);
        t += bytes / (p_.memory_gbps * 1e9);
        return t * compute_scale_ + p_.unit_overhead_s;
    }
    double embed(const MicroBatchLoad & ld) const {
        const double row = double(dtype_row_bytes(m_.weights.embed.dtype, C_)) + 4.0 * double(C_);
        return double(ld.tokens) * row / (p_.memory_gbps * 1e9) * compute_scale_ + p_.unit_overhead_s;
    }
    double head(const MicroBatchLoad & ld, bool logits, bool reuse) const {
        if (ld.rows == 0) return 0;
        double t = 3.0 * 4.0 * double(ld.rows) * double(C_) / (p_.memory_gbps * 1e9);
        if (logits && m_.weights.lm_head.data)
            t += p_.matmul_seconds(m_.weights.lm_head.dtype, ld.rows, m_.weights.lm_head.dim(0), C_,
                                   reuse ? m_.weights.lm_head.bytes() : 0);
        return t * compute_scale_ + p_.unit_overhead_s;
    }
    // Host work after the step: sampling reads each logits row three times (finite check, copy, argmax/sampling).
    double host_after_step(int64_t rows, bool logits) const {
        const double sample = logits ? 3.0 * 4.0 * double(rows) * double(V_) / (p_.memory_gbps * 1e9) : 0.0;
        return p_.step_overhead_s + sample;
    }

private:
    double matmuls(int shape, int64_t T, bool reuse) {
        const auto key = std::make_tuple(shape, T, reuse);
        auto it = matmul_cache_.find(key);
        if (it != matmul_cache_.end()) return it->second;
        const LayerShape & ls = shapes_[size_t(shape)];
        double t = 0;
        size_t layer_bytes = 0;   // the reuse distance: the layer's matrices
        for (int i = 0; i < kMatrices; ++i) layer_bytes += size_t(ls.n[i] * dtype_row_bytes(ls.dtype[i], ls.k[i]));
        for (int i = 0; i < kMatrices; ++i)
            t += p_.matmul_seconds(ls.dtype[i], T, ls.n[i], ls.k[i], reuse ? layer_bytes : 0);
        matmul_cache_.emplace(key, t);
        return t;
    }

    const PlanModel & m_;
    const MachineProfile & p_;
    int64_t C_ = 0, H_ = 0, KV_ = 0, D_ = 0, I_ = 0, V_ = 0;
    double compute_scale_ = 1;
    std::vector<LayerShape> shapes_;
    std::map<LayerShape, int> shape_index_;
    std::vector<int> layer_shape_;
    std::map<std::tuple<int, int64_t, bool>, double> matmul_cache_;
};

}  // namespace

SpeedEstimate estimate_speed(const PlanModel & m, const PartitionPlan & plan, const PlanSettings & s,
                             const StepTrace & trace, const PlanBudget & b, const MachineProfile & p) {
    StepCost cost(m, b, p);
    const int world = plan.world;
    const bool gen = !trace.embed;   // logits and sampling (embeddings stop at the final norm)
    // --- per unit: fetch and all-gather seconds (the same every step) ---------------------------------------
    const double link = b.test_link_gbps > 0 ? std::min(b.test_link_gbps, p.h2d_gbps) : p.h2d_gbps;
    // every copy on the copy stream also pays a fixed cost (a paced copy: the pacing sleep's overshoot)
    const bool paced = b.device == "cpu" && b.test_link_gbps > 0;
    const double copy_latency = paced ? p.paced_copy_latency_s : p.copy_latency_s;
    // KV-cache copies are short (rows of a few sequences): paced ones mostly finish past their pacing target and
    // do not sleep, so they pay the plain copy latency
    const double kv_copy_latency = p.copy_latency_s;
    const size_t U = plan.units.size();
    std::vector<double> fetch(U, 0), gather(U, 0);
    for (size_t u = 0; u < U; ++u) {
        const PartitionUnit & unit = plan.units[u];
        if (!unit.streamed) continue;
        fetch[u] = double(unit.slice_bytes) / (link * 1e9) + copy_latency;
        if (s.tier == "nvme") {   // the ranks of a node read the same disk at once: its rate is shared
            const double nvme_gbps = p.nvme_gbps > 0 ? p.nvme_gbps : default_profile(p.device).nvme_gbps;   // not measured
            const double nvme = nvme_gbps / std::max(1, b.ranks_per_node);
            fetch[u] += double(slice_extent(unit.slice_bytes)) / (nvme * 1e9);
        }
        if (world > 1)
            gather[u] = double(unit.flat_bytes) * double(world - 1) / double(world) / (p.allgather_gbps(world) * 1e9);
    }
    const bool kv_offload = s.kv_offload == "cpu";
    // CPU ranks whose compute threads take every core: the all-gather (MPI copies on the comm thread) runs on the
    // same cores, so its time adds to the compute of the unit it gathers instead of hiding behind it
    const int cores = std::max(1, p.cores > 0 ? p.cores : int(std::thread::hardware_concurrency()));
    const int rank_threads = b.threads > 0 ? std::min(b.threads, cores) : cores;
    const bool cores_taken = b.device == "cpu" && rank_threads * std::max(1, b.ranks_per_node) >= cores;
    // and with more compute threads than cores, each rank's share of a core (the profile's all-gather ran on idle
    // ranks) stretches the collective in proportion
    const double oversubscribed = b.device == "cpu" ? std::max(1.0, double(rank_threads) * std::max(1, b.ranks_per_node) /
                                                                      double(cores)) : 1.0;
    for (double & g : gather) g *= oversubscribed;
    // the CPU backend's copy thread copies (memcpy) while the compute threads run: with every core taken, it takes
    // its fair share, 1 / (threads + 1) of the cores, for as long as it copies
    std::vector<double> copy_steal(U, 0);
    if (cores_taken)
        for (size_t u = 0; u < U; ++u)
            if (plan.units[u].streamed)
                copy_steal[u] = double(plan.units[u].slice_bytes) / (p.memcpy_gbps * 1e9) / double(rank_threads + 1);
    const double kv_row = 2.0 * double(m.config.num_key_value_heads) * double(m.config.head_dim) * 4.0;   // K + V

    // --- the pipeline, carried across steps (the next step's first units are fetched during this one) ------
    const int64_t depth = s.overlap ? s.prefetch_depth : 0;
    const bool overlap = s.overlap;
    double copy_free = 0, comm_free = 0, compute_free = 0;
    std::deque<double> ring_freed;      // compute end of the last depth + 1 streamed units
    double busy_fetch = 0, busy_gather = 0, busy_compute = 0, busy_kv = 0;
    std::vector<double> unit_compute(U, 0);
    for (int64_t step = 0; step < trace.steps; ++step) {
        // the slowest rank's compute of every unit in this step, and the KV bytes the busiest rank moves per layer
        std::fill(unit_compute.begin(), unit_compute.end(), 0.0);
        double kv_move = 0;   // seconds: the busiest rank's KV-cache moves of one layer
        int64_t rows_max = 0;
        std::vector<double> shape_time(size_t(cost.n_shapes()));
        for (const RankSteps & rs : trace.ranks) {
            const auto & loads = rs.steps[size_t(step)];
            if (loads.empty()) continue;
            std::fill(shape_time.begin(), shape_time.end(), 0.0);
            double e = 0, h = 0, kv = 0;
            int64_t rows = 0;
            for (size_t mb = 0; mb < loads.size(); ++mb) {
                const MicroBatchLoad & ld = loads[mb];
                for (int k = 0; k < cost.n_shapes(); ++k) shape_time[size_t(k)] += cost.layer(k, ld, mb > 0);
                e += cost.embed(ld);
                h += cost.head(ld, gen, mb > 0);
                rows += ld.rows;
                kv += (ld.past_positions + double(ld.tokens)) * kv_row / (link * 1e9) +
                      4.0 * double(ld.sequences) * kv_copy_latency;   // K and V, loaded and written back
            }
            rows_max = std::max(rows_max, rows);
            kv_move = std::max(kv_move, kv);
            for (size_t u = 0; u < U; ++u) {
                const PartitionUnit & unit = plan.units[u];
                const double t = unit.kind == UnitKind::embed ? e
                               : unit.kind == UnitKind::head  ? h
                                                              : shape_time[size_t(cost.layer_shape(unit.layer))];
                unit_compute[u] = std::max(unit_compute[u], t);
            }
        }
        const double kv_time = kv_offload ? kv_move : 0.0;
        for (size_t u = 0; u < U; ++u) {
            const PartitionUnit & unit = plan.units[u];
            const bool layer = unit.kind == UnitKind::layer;
            double ready = compute_free;
            if (unit.streamed) {
                const double slot_free = ring_freed.size() > size_t(depth) ? ring_freed.front() : 0.0;
                double f0 = std::max(copy_free, slot_free);
                if (!overlap) f0 = std::max(f0, compute_free);
                const double f1 = f0 + fetch[u] + (layer ? kv_time : 0.0);
                const double g0 = std::max(comm_free, f1);
                const double g1 = g0 + gather[u];
                copy_free = f1;
                comm_free = g1;
                ready = std::max(ready, g1);
                busy_fetch += fetch[u];
                busy_gather += gather[u];
            } else if (layer && kv_time > 0) {
                // resident layer with an offloaded KV cache: its load is still on the copy stream
                const double f0 = overlap ? copy_free : std::max(copy_free, compute_free);
                copy_free = f0 + kv_time;
                ready = std::max(ready, copy_free);
            }
            if (layer) busy_kv += kv_time;
            const double work = unit_compute[u] + (unit.streamed && cores_taken ? gather[u] : 0.0) + copy_steal[u];
            const double c1 = ready + work;
            busy_compute += work;
            compute_free = c1;
            if (unit.streamed) {
                ring_freed.push_back(c1);
                while (ring_freed.size() > size_t(depth) + 1) ring_freed.pop_front();
            }
        }
        const double host = cost.host_after_step(rows_max, gen);
        compute_free += host;
        busy_compute += host;
    }
    SpeedEstimate e;
    int64_t tokens = 0;
    for (const RankSteps & rs : trace.ranks) tokens += rs.tokens_out;
    const double sim_seconds = compute_free;
    e.steps = int64_t(std::llround(double(trace.steps) * trace.scale));
    e.loop_seconds = sim_seconds * trace.scale;
    e.tokens_per_s = sim_seconds > 0 ? double(tokens) / sim_seconds : 0.0;
    const double n = std::max<double>(1.0, double(trace.steps));
    e.step_seconds = sim_seconds / n;
    e.fetch_seconds = busy_fetch / n;
    e.all_gather_seconds = busy_gather / n;
    e.compute_seconds = busy_compute / n;
    e.kv_seconds = busy_kv / n;
    std::vector<std::pair<double, std::string>> stages = {
        {e.compute_seconds, "compute"},
        {e.all_gather_seconds, "all-gather"},
        {e.fetch_seconds, s.tier == "nvme" ? "NVMe + link" : (b.device == "cpu" && b.test_link_gbps > 0 ? "link (simulated)"
                                                                                                     : "link (H2D)")},
        {e.kv_seconds, "KV offload"}};
    e.bound = std::max_element(stages.begin(), stages.end())->second;
    return e;
}

}  // namespace zt
