// Forward: the decoder forward pass over a Backend, written as the plain sequence of ops HF's modeling code runs:
//   x = embed(tokens)                                                      (T,C)
//   per layer: h = rmsnorm(x); q,k,v = h·Wq,Wk,Wv (+bias)                  (T,H,D) (T,KV,D) (T,KV,D)
//              [qwen3: q,k = rmsnorm per head]; q,k = rope(q,k, positions)
//              kv_store(k,v); a = attention(q, cache)                      (T,H,D)
//              x = x + a·Wo;  h = rmsnorm(x);  x = x + (silu(h·Wg) * h·Wu)·Wd
//   hidden = rmsnorm(x) on the rows needed; logits = hidden·W_lm^T          (R,V)
// The weights of each unit (embedding, layer, head) come from the Schedule (schedule.cpp), which streams them in
// (fetch + all-gather) or hands out resident ones; this file does not know where they live.
// Sequences are independent rows of one step; each op is batch-invariant, so a sequence's logits do not depend
// on what else is in the batch. Sliding-window layers keep the whole cache and attend to the window only
// (cfg.layer_window; no memory is saved). Dynamic RoPE scaling: each sequence's frequencies follow its own length
// (rope.h), uploaded per token row with the step's metadata.
#include "runtime/stream/forward.h"

#include <algorithm>
#include <cstring>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/stream/kv_cache.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/model/rope.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/weight_store.h"
#include "runtime/base/trace.h"

namespace zt {

struct Forward::Impl {
    Backend & be;
    const PartitionPlan * plan = nullptr;
    Schedule * schedule = nullptr;
    // owned only by the resident constructor
    std::unique_ptr<PartitionPlan> own_plan;
    std::unique_ptr<WeightStore> own_store;
    std::unique_ptr<Communicator> own_comm;
    std::unique_ptr<Schedule> own_schedule;
    bool has_lm_head = false;
    int64_t vocab_rows = 0;   // rows of lm_head (V)
    KvCache cache;
    bool reserved = false;
    Buffer inv_freq_buf;   // (D/2) f32
    Tensor inv_freq;
    float rope_scaling = 1.0f;   // yarn's attention factor on cos/sin
    bool rope_dynamic = false;   // dynamic scaling: each sequence's frequencies follow its length (MicroBuffers::freqs)

    // Per micro-batch: its residual stream and its step metadata, sized for `cap` tokens (grown on demand).
    struct MicroBuffers {
        int64_t cap = 0;
        Buffer x;      // (T_b,C) f32: the residual stream, kept across the layers of a step
        Buffer ints;   // tokens (T_b) i32, positions (T_b) i32, output rows (T_b) i32
        Buffer freqs;  // dynamic RoPE only: (T_b,D/2) f32, each row its sequence's frequencies for this step
    };
    std::vector<MicroBuffers> micro;
    // Per-layer temporaries shared by the micro-batches (one runs at a time), sized for the largest one.
    int64_t cap = 0;
    Buffer h, q, k, v, att, tmp, gate, up;       // (T,C) (T,H*D) (T,KV*D) (T,KV*D) (T,H*D) (T,C) (T,I) (T,I)
    int64_t out_cap = 0;
    Buffer sel, out;                             // selected hidden rows (R,C), logits (R,V), all micro-batches

    explicit Impl(Backend & backend) : be(backend) {}
};

namespace {
// Head unit: tensors[0] = final norm, tensors[1] = lm_head (absent for base-model saves); embed unit: tensors[0].
const PartitionUnit * find_unit(const PartitionPlan & plan, UnitKind kind) {
    for (const auto & u : plan.units) if (u.kind == kind) return &u;
    return nullptr;
}
}  // namespace

Forward::Forward(const ModelConfig & cfg, const ModelWeights & weights, Backend & backend, const ForwardOptions & options)
    : cfg_(cfg), opt_(options), impl_(std::make_unique<Impl>(backend)) {
    ZT_CHECK(int64_t(weights.layers.size()) == cfg.num_hidden_layers, "weights have {} layers, config.json says {}",
             weights.layers.size(), cfg.num_hidden_layers);
    PartitionOptions po;
    po.world = 1;
    po.stream = false;
    Impl & m = *impl_;
    m.own_plan = std::make_unique<PartitionPlan>(plan_partition(cfg, weights, po));
    WeightStoreOptions so;
    so.tier = OffloadTier::none;
    m.own_store = std::make_unique<WeightStore>(*m.own_plan, 0, backend, so);
    m.own_comm = make_local_communicator(&backend);
    m.own_schedule = std::make_unique<Schedule>(*m.own_plan, *m.own_store, backend, *m.own_comm, ScheduleOptions{});
    init(*m.own_plan, *m.own_schedule);
}

Forward::Forward(const ModelConfig & cfg, const PartitionPlan & plan, Schedule & schedule, Backend & backend,
                 const ForwardOptions & options, Tracer * tracer)
    : cfg_(cfg), opt_(options), tracer_(tracer), impl_(std::make_unique<Impl>(backend)) {
    init(plan, schedule);
}

void Forward::init(const PartitionPlan & plan, Schedule & schedule) {
    const ModelConfig & cfg = cfg_;
    Backend & backend = impl_->be;
    impl_->plan = &plan;
    impl_->schedule = &schedule;
    ZT_CHECK(int64_t(plan.units.size()) == cfg.num_hidden_layers + 2, "the partition plan has {} units, expected "
             "embed + {} layers + head", plan.units.size(), cfg.num_hidden_layers);
    const PartitionUnit * head = find_unit(plan, UnitKind::head);
    ZT_CHECK(head && find_unit(plan, UnitKind::embed), "the partition plan has no embed or head unit");
    impl_->has_lm_head = head->tensors.size() > 1;
    impl_->vocab_rows = impl_->has_lm_head ? head->tensors[1].source.dim(0) : 0;
    ZT_CHECK(cfg.num_key_value_heads > 0 && cfg.num_attention_heads % cfg.num_key_value_heads == 0,
             "num_attention_heads {} is not a multiple of num_key_value_heads {}", cfg.num_attention_heads,
             cfg.num_key_value_heads);
    const std::vector<float> inv = rope_inv_freq(cfg);
    impl_->inv_freq_buf = backend.alloc(inv.size() * sizeof(float), MemKind::device, "rope frequencies");
    impl_->inv_freq = impl_->inv_freq_buf.view(DType::F32, {int64_t(inv.size())});
    Stream * s = backend.stream(StreamRole::compute);
    backend.copy_async(impl_->inv_freq.data, inv.data(), inv.size() * sizeof(float), s);
    backend.synchronize(s);
    impl_->rope_scaling = rope_attention_scaling(cfg);
    impl_->rope_dynamic = rope_is_dynamic(cfg);
}

Forward::~Forward() = default;

void Forward::reserve(int32_t n_slots, int32_t max_len) {
    ZT_CHECK(n_slots > 0 && max_len > 0, "KV cache needs at least one slot and one position, got {} x {}", n_slots, max_len);
    impl_->cache = KvCache();   // free the old one first
    KvPlacement placement;
    placement.offload = opt_.kv_offload;
    // load layer j + depth's cache with layer j + depth's weights (the copy stream runs them in issue order)
    const ScheduleOptions & so = impl_->schedule->options();
    placement.prefetch = so.overlap ? std::max(1, so.prefetch_depth) : 0;
    impl_->cache = KvCache(impl_->be, cfg_.num_hidden_layers, n_slots, max_len, cfg_.num_key_value_heads, cfg_.head_dim,
                           placement, tracer_);
    impl_->reserved = true;
}

size_t Forward::kv_cache_bytes() const { return impl_->cache.bytes(); }
uint64_t Forward::kv_bytes_moved() const { return impl_->cache.bytes_moved(); }

namespace {

// Runs the layers over the batch and leaves the final-normed hidden state of the rows needed in impl.sel (R,C).
// Returns R.
int64_t run_layers(const ModelConfig & cfg, Forward::Impl & m, const std::vector<SequenceStep> & batch,
                   bool all_positions, bool logits);

}  // namespace

void Forward::step(const std::vector<SequenceStep> & batch, std::vector<float> & logits, bool all_positions) {
    ZT_CHECK(impl_->has_lm_head,
             "this checkpoint has no lm_head (a base-model save such as {}): it can only compute embeddings "
             "(hidden states), not logits; use an embedding task or a checkpoint with lm_head.weight",
             cfg_.architectures.empty() ? cfg_.model_type : cfg_.architectures.front());
    Impl & m = *impl_;
    const int64_t R = run_layers(cfg_, m, batch, all_positions, /*logits=*/true);
    const int64_t V = m.vocab_rows;
    logits.resize(size_t(R * V));
    if (R == 0) return;
    Stream * s = m.be.stream(StreamRole::compute);
    m.be.copy_async(logits.data(), m.out.data(), size_t(R * V) * sizeof(float), s);
    m.be.synchronize(s);
}

void Forward::step_hidden(const std::vector<SequenceStep> & batch, std::vector<float> & hidden, bool all_positions) {
    Impl & m = *impl_;
    const int64_t R = run_layers(cfg_, m, batch, all_positions, /*logits=*/false);
    const int64_t C = cfg_.hidden_size;
    hidden.resize(size_t(R * C));
    if (R == 0) return;
    Stream * s = m.be.stream(StreamRole::compute);
    m.be.copy_async(hidden.data(), m.sel.data(), size_t(R * C) * sizeof(float), s);
    m.be.synchronize(s);
}

namespace {

// One micro-batch of a step: its sequences, its tokens and the output rows it contributes.
struct MicroBatch {
    std::vector<AttentionSeq> seqs;     // row0 = offset of the sequence's tokens within the micro-batch
    std::vector<int32_t> tokens, positions, rows;
    std::vector<float> freqs;           // dynamic RoPE: (T,D/2), each token its sequence's rope_inv_freq(past + n)
    int64_t row0 = 0;                   // first output row of this micro-batch (rows are in batch order)
    int64_t T() const { return int64_t(tokens.size()); }
    int64_t R() const { return int64_t(rows.size()); }
};

int64_t run_layers(const ModelConfig & cfg, Forward::Impl & m, const std::vector<SequenceStep> & batch,
                   bool all_positions, bool logits) {
    ZT_CHECK(m.reserved, "Forward::reserve must be called before step");
    Backend & be = m.be;
    Stream * s = be.stream(StreamRole::compute);
    const int64_t C = cfg.hidden_size, H = cfg.num_attention_heads, KV = cfg.num_key_value_heads,
                  D = cfg.head_dim, I = cfg.intermediate_size, V = cfg.vocab_size;
    const float eps = float(cfg.rms_norm_eps);

    // ---- host-side plan: per micro-batch tokens, positions, per-sequence rows, output rows -------------
    std::vector<MicroBatch> mbs;
    std::vector<char> slot_used(size_t(m.cache.n_slots()), 0);
    int64_t R = 0, T_max = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        const SequenceStep & b = batch[i];
        ZT_CHECK(b.cache_slot >= 0 && b.cache_slot < m.cache.n_slots(), "sequence {} of the batch: cache slot {} "
                 "outside [0, {})", i, b.cache_slot, m.cache.n_slots());
        ZT_CHECK(!slot_used[size_t(b.cache_slot)], "sequence {} of the batch: cache slot {} is used twice in one step",
                 i, b.cache_slot);
        slot_used[size_t(b.cache_slot)] = 1;
        ZT_CHECK(b.n_tokens > 0 && b.tokens != nullptr, "sequence {} of the batch has no tokens", i);
        ZT_CHECK(b.past_len >= 0 && int64_t(b.past_len) + b.n_tokens <= m.cache.max_len(),
                 "sequence {} of the batch: {} past + {} new tokens exceed the KV cache's {} positions", i, b.past_len,
                 b.n_tokens, m.cache.max_len());
        ZT_CHECK(i == 0 || b.micro_batch >= batch[i - 1].micro_batch, "sequence {} of the batch: micro-batch {} after "
                 "micro-batch {}: list the micro-batches in order", i, b.micro_batch, batch[i - 1].micro_batch);
        if (mbs.empty() || b.micro_batch != batch[i - 1].micro_batch) {
            mbs.emplace_back();
            mbs.back().row0 = R;
        }
        MicroBatch & mb = mbs.back();
        mb.seqs.push_back({b.cache_slot, b.past_len, b.n_tokens, int32_t(mb.tokens.size())});
        if (m.rope_dynamic) {   // HF recomputes inv_freq from this call's length (rope.h: per sequence here)
            const std::vector<float> f = rope_inv_freq(cfg, int64_t(b.past_len) + b.n_tokens);
            for (int32_t j = 0; j < b.n_tokens; ++j) mb.freqs.insert(mb.freqs.end(), f.begin(), f.end());
        }
        for (int32_t j = 0; j < b.n_tokens; ++j) {
            ZT_CHECK(b.tokens[j] >= 0 && b.tokens[j] < V, "sequence {} of the batch: token id {} outside the "
                     "vocabulary [0, {})", i, b.tokens[j], V);
            if (b.emit && (all_positions || j == b.n_tokens - 1)) { mb.rows.push_back(int32_t(mb.tokens.size())); ++R; }
            mb.tokens.push_back(b.tokens[j]);
            mb.positions.push_back(b.past_len + j);
        }
        T_max = std::max(T_max, mb.T());
    }
    if (mbs.empty()) {   // nothing to compute on this rank: still take part in every unit's all-gather
        m.schedule->run([](int, const void *, const void *) {});
        return 0;
    }

    // ---- buffers --------------------------------------------------------------------------------------
    if (T_max > m.cap) {
        const int64_t n = std::max<int64_t>(T_max, 2 * m.cap);
        auto f32 = [&](int64_t cols) { return be.alloc(size_t(n * cols) * sizeof(float), MemKind::device, "activations"); };
        m.h = f32(C); m.q = f32(H * D); m.k = f32(KV * D); m.v = f32(KV * D); m.att = f32(H * D);
        m.tmp = f32(C); m.gate = f32(I); m.up = f32(I);
        m.cap = n;
    }
    if (m.micro.size() < mbs.size()) m.micro.resize(mbs.size());
    for (size_t b = 0; b < mbs.size(); ++b) {
        Forward::Impl::MicroBuffers & mb = m.micro[b];
        const int64_t T = mbs[b].T();
        if (T > mb.cap) {
            const int64_t n = std::max<int64_t>(T, 2 * mb.cap);
            mb.x = be.alloc(size_t(n * C) * sizeof(float), MemKind::device, "activations");
            mb.ints = be.alloc(size_t(3 * n) * sizeof(int32_t), MemKind::device, "activations");
            if (m.rope_dynamic) mb.freqs = be.alloc(size_t(n * (D / 2)) * sizeof(float), MemKind::device, "activations");
            mb.cap = n;
        }
        if (m.rope_dynamic) be.copy_async(mb.freqs.data(), mbs[b].freqs.data(), mbs[b].freqs.size() * sizeof(float), s);
        const size_t cap4 = size_t(mb.cap) * 4;
        be.copy_async(mb.ints.data(), mbs[b].tokens.data(), size_t(T) * 4, s);
        be.copy_async(static_cast<char *>(mb.ints.data()) + cap4, mbs[b].positions.data(), size_t(T) * 4, s);
        if (mbs[b].R() > 0)
            be.copy_async(static_cast<char *>(mb.ints.data()) + 2 * cap4, mbs[b].rows.data(), size_t(mbs[b].R()) * 4, s);
    }
    if (R > m.out_cap) {
        const int64_t n = std::max<int64_t>(R, 2 * m.out_cap);
        m.sel = be.alloc(size_t(n * C) * sizeof(float), MemKind::device, "activations");
        m.out = be.alloc(size_t(n * std::max<int64_t>(m.vocab_rows, 1)) * sizeof(float), MemKind::device, "logits");
        m.out_cap = n;
    }

    // ---- the units: embed, layers, head (weights arrive through the schedule); every micro-batch per unit --
    std::vector<AttentionSeq> step_seqs;   // every sequence of the step (the offloaded KV cache moves their rows)
    for (const MicroBatch & mb : mbs) step_seqs.insert(step_seqs.end(), mb.seqs.begin(), mb.seqs.end());
    m.cache.begin_step(step_seqs);
    m.schedule->run([&](int u, const void * flat, const void * persistent) {
        const PartitionUnit & unit = m.plan->units[size_t(u)];
        LayerWeights L;
        if (unit.kind == UnitKind::layer) {
            L = bind_layer(unit, flat, persistent);
            m.cache.acquire(unit.layer);
        }
        for (size_t b = 0; b < mbs.size(); ++b) {
            const MicroBatch & mb = mbs[b];
            const Forward::Impl::MicroBuffers & buf = m.micro[b];
            const int64_t T = mb.T(), Rb = mb.R();
            const size_t cap4 = size_t(buf.cap) * 4;
            Tensor x = buf.x.view(DType::F32, {T, C});
            Tensor tok_t = buf.ints.view(DType::I32, {T}, 0);
            Tensor pos_t = buf.ints.view(DType::I32, {T}, cap4);
            if (unit.kind == UnitKind::embed) {
                be.embedding(x, tok_t, bind_single(unit, flat, persistent, 0), s);
                continue;
            }
            if (unit.kind == UnitKind::head) {
                if (Rb == 0) continue;
                // final norm on the rows needed only (RMSNorm is per row, so this equals HF's norm-then-select)
                Tensor row_t = buf.ints.view(DType::I32, {Rb}, 2 * cap4);
                Tensor sel = m.sel.view(DType::F32, {Rb, C}, size_t(mb.row0 * C) * sizeof(float));
                be.gather_rows(sel, x, row_t, s);
                be.rmsnorm(sel, sel, bind_single(unit, flat, persistent, 0), eps, s);
                if (logits)
                    be.matmul(m.out.view(DType::F32, {Rb, m.vocab_rows}, size_t(mb.row0 * m.vocab_rows) * sizeof(float)),
                              sel, bind_single(unit, flat, persistent, 1), Tensor(), s);
                continue;
            }
            const int64_t l = unit.layer;
            Tensor h = m.h.view(DType::F32, {T, C}), tmp = m.tmp.view(DType::F32, {T, C});
            Tensor q = m.q.view(DType::F32, {T, H, D}), k = m.k.view(DType::F32, {T, KV, D});
            Tensor v = m.v.view(DType::F32, {T, KV, D}), att = m.att.view(DType::F32, {T, H, D});
            Tensor gate = m.gate.view(DType::F32, {T, I}), up = m.up.view(DType::F32, {T, I});
            be.rmsnorm(h, x, L.input_norm, eps, s);
            be.matmul(q, h, L.q, L.q_bias, s);
            be.matmul(k, h, L.k, L.k_bias, s);
            be.matmul(v, h, L.v, L.v_bias, s);
            if (cfg.qk_norm) {   // qwen3: RMSNorm over each head's D values
                Tensor q_heads = m.q.view(DType::F32, {T * H, D}), k_heads = m.k.view(DType::F32, {T * KV, D});
                be.rmsnorm(q_heads, q_heads, L.q_norm, eps, s);
                be.rmsnorm(k_heads, k_heads, L.k_norm, eps, s);
            }
            const Tensor freqs = m.rope_dynamic ? buf.freqs.view(DType::F32, {T, D / 2}) : m.inv_freq;
            be.rope(q, pos_t, freqs, m.rope_scaling, s);
            be.rope(k, pos_t, freqs, m.rope_scaling, s);
            Tensor kc = m.cache.k(l), vc = m.cache.v(l);
            be.kv_store(kc, vc, k, v, mb.seqs, s);
            be.attention(att, q, kc, vc, mb.seqs, cfg.is_causal, cfg.window_of(l), s);
            be.matmul(tmp, m.att.view(DType::F32, {T, H * D}), L.o, L.o_bias, s);
            be.add(x, x, tmp, s);
            be.rmsnorm(h, x, L.post_norm, eps, s);
            be.matmul(gate, h, L.gate, Tensor(), s);
            be.matmul(up, h, L.up, Tensor(), s);
            be.swiglu(gate, gate, up, s);
            be.matmul(tmp, gate, L.down, Tensor(), s);
            be.add(x, x, tmp, s);
        }
        if (unit.kind == UnitKind::layer) m.cache.release(unit.layer);
    });
    return R;
}

}  // namespace

}  // namespace zt
