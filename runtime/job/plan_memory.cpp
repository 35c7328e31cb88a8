// The planner's memory model (planner.h): what one rank of a job allocates, term by term, each the arithmetic of
// the code that allocates it (the purpose names are the ones MemoryAccount and the `memory:` line use):
//
//   tier    term                 bytes                                                        allocated in
//   device  resident weights     flat_bytes of every unit kept whole + every persistent block weight_store.cpp
//   device  weight ring          (depth + 1) x max_flat_bytes, depth = prefetch_depth (0 when overlap is off);
//                                none when nothing is streamed                                schedule.cpp
//   device  KV cache             2 x L x S x M x KV x D x 4 (fp32 K and V; S slots, M positions) kv_cache.cpp
//   device  KV cache ring        (offload "cpu") (prefetch + 2) x 2 x S x M x KV x D x 4,
//                                prefetch = max(1, depth) (0 when overlap is off)             kv_cache.cpp
//   device  activations          shared (T_cap, C + 2 H D + 2 KV D + C + 2 I) fp32, per micro-batch (T_b, C) fp32
//                                + 3 T_b i32 (+ T_b D/2 fp32 with dynamic RoPE), the selected rows (R, C), where
//                                each capacity grows to max(T, 2 x old) when a step needs more forward.cpp
//   device  logits               (R_cap, V) fp32 (V = 0 rows: embeddings)                     forward.cpp
//   pinned  weight slices        (tier "cpu") sum of round_up(slice_bytes, 4096) over streamed units weight_store.cpp
//   pinned  NVMe staging         (tier "nvme") buffer_count x max extent                       weight_store.cpp
//   pinned  KV cache (host)      (offload "cpu") 2 x L x S x M x KV x D x 4                   kv_cache.cpp
//   nvme    slice file           4096 header + sum of round_up(slice_bytes + 64, 4096)        weight_store.cpp
//   device  cuBLASLt workspace   (CUDA) 32 MiB                                                backend_cuda_ops.cpp
//   device  matmul scratch       (CUDA) the largest matmul's bf16 x (T, K) [+ a 64 MiB W tile for block weights
//                                at T > 8], rounded up to 2 MiB                              backend_cuda_*.cpp
// S = min(batch_size x micro_batches, requests of the rank), M = the longest prompt + max_tokens of the rank,
// T and R as simulate_steps() replays the loop. The rank with the most is reported.
#include <algorithm>

#include <fmt/format.h>

#include "runtime/backend/memory_account.h"
#include "runtime/job/planner.h"
#include "runtime/model/rope.h"
#include "runtime/stream/slice_header.h"

namespace zt {

namespace {

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// The capacity forward.cpp ends with for a buffer that steps ask `need` rows of, in order.
int64_t grown_capacity(const std::vector<int64_t> & needs) {
    int64_t cap = 0;
    for (int64_t n : needs)
        if (n > cap) cap = std::max(n, 2 * cap);
    return cap;
}

struct RankMemory {
    MemoryEstimate e;
    void add(const std::string & name, const std::string & tier, size_t bytes, const std::string & formula) {
        if (bytes == 0) return;
        e.items.push_back({name, tier, bytes, formula});
        if (tier == "device") e.device += bytes;
        else if (tier == "pinned") e.pinned += bytes;
        else if (tier == "host") e.host += bytes;
        else e.nvme += bytes;
    }
};

// CUDA backend (compute_dtype "auto"): the scratch the largest matmul grows to (backend_cuda_ops.cpp, _quant.cpp):
// x narrowed to bf16 (T, K) and, for block weights at T > 8, one dequantized tile of at most 64 MiB of W rows,
// rounded up to 2 MiB. bf16/f16 weights need no converted copy of W under "auto".
size_t cuda_matmul_scratch(const Tensor & w, int64_t T) {
    if (!w.data || T <= 0) return 0;
    const int64_t N = w.dim(0), K = w.dim(1);
    size_t bytes = 0;
    if (dtype_is_quantized(w.dtype)) {
        if (T <= 8) return 0;   // the fused GEMV reads the blocks directly
        int64_t rows = std::max<int64_t>(1, int64_t((size_t(64) << 20) / (size_t(K) * 2)));
        if (rows >= 64) rows = rows / 64 * 64;
        bytes = round_up(size_t(T) * size_t(K) * 2, 256) + round_up(size_t(std::min(rows, N)) * size_t(K) * 2, 256);
    } else if (w.dtype != DType::F32) {
        bytes = round_up(size_t(T) * size_t(K) * 2, 256);
    }
    return bytes ? round_up(bytes, size_t(2) << 20) : 0;
}

MemoryEstimate rank_memory(const PlanModel & m, const PartitionPlan & plan, const PlanSettings & s,
                           const RankSteps & rs, bool cuda) {
    const ModelConfig & mc = m.config;
    const int64_t L = mc.num_hidden_layers, C = mc.hidden_size, H = mc.num_attention_heads,
                  KV = mc.num_key_value_heads, D = mc.head_dim, I = mc.intermediate_size;
    RankMemory r;

    // weights
    size_t resident = 0, persistent = 0, slices = 0, file = kSliceHeaderBytes, max_extent = kSliceHeaderBytes;
    int n_resident = 0, n_streamed = 0;
    for (const PartitionUnit & u : plan.units) {
        persistent += u.persistent_bytes;
        if (!u.streamed) { resident += u.flat_bytes; n_resident += u.flat_bytes > 0; continue; }
        ++n_streamed;
        slices += round_up(u.slice_bytes, 4096);
        file += slice_extent(u.slice_bytes);
        max_extent = std::max(max_extent, slice_extent(u.slice_bytes));
    }
    r.add("resident weights", "device", resident + persistent,
          fmt::format("{} whole units {} + persistent tensors {}", n_resident, format_bytes(resident),
                      format_bytes(persistent)));
    const int64_t depth = s.overlap ? s.prefetch_depth : 0;
    if (n_streamed > 0) {
        r.add("weight ring", "device", size_t(depth + 1) * plan.max_flat_bytes(),
              fmt::format("({} + 1) x {} (largest streamed unit)", depth, format_bytes(plan.max_flat_bytes())));
        if (s.tier == "cpu")
            r.add("weight slices", "pinned", slices, fmt::format("{} own slices of {} (4 KiB aligned)", n_streamed,
                                                                 format_bytes(plan.max_slice_bytes())));
        if (s.tier == "nvme") {
            r.add("NVMe staging", "pinned", size_t(s.buffer_count) * max_extent,
                  fmt::format("buffer_count {} x {}", s.buffer_count, format_bytes(max_extent)));
            r.add("slice file", "nvme", file, fmt::format("4 KiB header + {} slice extents", n_streamed));
        }
    }

    // KV cache
    const int64_t S = rs.n_slots, M = rs.max_len;
    const size_t layer = size_t(S) * size_t(M) * size_t(KV) * size_t(D) * 4;   // one layer's K (or V)
    const std::string kv_shape = fmt::format("{} slots x {} positions x {} KV heads x {} x 4 B", S, M, KV, D);
    if (s.kv_offload == "cpu") {
        const int64_t prefetch = s.overlap ? std::max<int64_t>(1, s.prefetch_depth) : 0;
        r.add("KV cache ring", "device", size_t(prefetch + 2) * 2 * layer,
              fmt::format("({} + 2) layers x K,V x {}", prefetch, kv_shape));
        r.add("KV cache (host)", "pinned", size_t(L) * 2 * layer, fmt::format("{} layers x K,V x {}", L, kv_shape));
    } else {
        r.add("KV cache", "device", size_t(L) * 2 * layer, fmt::format("{} layers x K,V x {}", L, kv_shape));
    }

    // activations: replay the growth of forward.cpp's buffers over the steps
    std::vector<int64_t> shared_needs, rows_needs;
    std::vector<std::vector<int64_t>> micro_needs;
    for (const auto & step : rs.steps) {
        int64_t t_max = 0, rows = 0;
        for (size_t b = 0; b < step.size(); ++b) {
            t_max = std::max(t_max, step[b].tokens);
            rows += step[b].rows;
            if (micro_needs.size() <= b) micro_needs.resize(b + 1);
            micro_needs[b].push_back(step[b].tokens);
        }
        if (!step.empty()) shared_needs.push_back(t_max), rows_needs.push_back(rows);
    }
    const int64_t t_cap = grown_capacity(shared_needs), r_cap = grown_capacity(rows_needs);
    size_t micro = 0;
    const bool dyn = rope_is_dynamic(mc);
    for (const auto & needs : micro_needs) {
        const int64_t cap = grown_capacity(needs);
        micro += size_t(cap) * (size_t(C) * 4 + 12 + (dyn ? size_t(D / 2) * 4 : 0));
    }
    const size_t shared = size_t(t_cap) * size_t(C + H * D + 2 * KV * D + H * D + C + 2 * I) * 4;
    r.add("activations", "device", shared + micro + size_t(r_cap) * size_t(C) * 4,
          fmt::format("{} tokens x {} floats shared + {} micro-batch(es) {} + {} rows x {}", t_cap,
                      C + H * D + 2 * KV * D + H * D + C + 2 * I, micro_needs.size(), format_bytes(micro), r_cap, C));
    const PartitionUnit & head = plan.units.back();
    const int64_t vocab_rows = head.tensors.size() > 1 ? head.tensors[1].source.dim(0) : 0;
    r.add("logits", "device", size_t(r_cap) * size_t(std::max<int64_t>(vocab_rows, 1)) * 4,
          fmt::format("{} rows x {} x 4 B", r_cap, std::max<int64_t>(vocab_rows, 1)));
    r.add("rope frequencies", "device", size_t(D / 2) * 4, fmt::format("{} x 4 B", D / 2));
    if (cuda) {
        r.add("cuBLASLt workspace", "device", size_t(32) << 20, "32 MiB on the compute stream");
        size_t scratch = cuda_matmul_scratch(m.weights.lm_head, r_cap);
        for (const LayerWeights & L : m.weights.layers)
            for (const Tensor * w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
                scratch = std::max(scratch, cuda_matmul_scratch(*w, t_cap));
        r.add("matmul scratch", "device", scratch, fmt::format("the largest matmul's bf16 operands at {} tokens", t_cap));
    }
    return r.e;
}

}  // namespace

MemoryEstimate estimate_memory(const PlanModel & m, const PartitionPlan & plan, const PlanSettings & s,
                               const StepTrace & trace, const PlanBudget & b) {
    MemoryEstimate best;
    for (const RankSteps & rs : trace.ranks) {
        MemoryEstimate e = rank_memory(m, plan, s, rs, b.device == "cuda");
        if (best.items.empty() || e.device + e.pinned + e.host > best.device + best.pinned + best.host) best = std::move(e);
    }
    return best;
}

}  // namespace zt
