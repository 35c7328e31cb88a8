// Wing runtime/stream/: how weights move and meet the activations: the flat padded partition of every unit
// (layer_partition), where a rank's slices live (weight_store: pinned host or an NVMe file via nvme_file, its
// header and slice tags in slice_header), the prefetch/all-gather loop (schedule), the KV cache (kv_cache,
// offloadable) and the decoder forward pass over a batch of sequences (forward).
//
// Forward: the decoder forward pass of a loaded model on a Backend, over a batch of sequences that each
// bring some new tokens (a prompt chunk, or one generated token) and own a slot of the KV cache.
// Block schedule (FlexGen's zig-zag): the batch is split into micro-batches, and every unit's weights, once here,
// are applied to every micro-batch before the next unit is needed: for unit u: for micro-batch b: compute(u, b).
// Each micro-batch keeps its own residual stream (T_b, C); the per-layer temporaries are shared, so activation
// memory grows with the largest micro-batch, not with the whole batch.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"

namespace zt {

class Backend;
class Schedule;
class Tracer;
struct PartitionPlan;

// One sequence's share of a step: `n_tokens` new tokens at positions past_len .. past_len + n_tokens - 1,
// whose keys/values are appended to KV-cache slot `cache_slot` (which already holds past_len positions).
struct SequenceStep {
    int32_t cache_slot = 0;
    int32_t past_len = 0;
    const int32_t * tokens = nullptr;
    int32_t n_tokens = 0;
    int32_t micro_batch = 0;   // sequences of one micro-batch go through a layer together; the batch lists its
                               // micro-batches in non-decreasing order
    bool emit = true;          // false: no output row (a prompt chunk that is not the prompt's last)
};

struct ForwardOptions {
    bool kv_offload = false;   // ztinfer.kv_cache.offload "cpu": KV cache in pinned host memory, streamed per layer
};

class Forward {
public:
    // Streamed weights: each step runs `schedule` over `plan` (both the caller's; they outlive the Forward).
    // Every rank must call step() / step_hidden() once per step, also with an empty batch (see Schedule::run).
    Forward(const ModelConfig & cfg, const PartitionPlan & plan, Schedule & schedule, Backend & backend,
            const ForwardOptions & options = {}, Tracer * tracer = nullptr);
    // Resident weights (the reference, and tests): a one-rank plan with every unit whole in backend memory
    // (offload "none"), run by the same schedule.
    Forward(const ModelConfig & cfg, const ModelWeights & weights, Backend & backend, const ForwardOptions & options = {});
    ~Forward();

    // (Re)allocates the KV cache: n_slots sequences of up to max_len positions each (clears it).
    void reserve(int32_t n_slots, int32_t max_len);
    size_t kv_cache_bytes() const;        // K + V of every layer (host memory when offloaded)
    uint64_t kv_bytes_moved() const;      // offloaded cache: bytes loaded + written back so far

    // Runs every layer over the batch (which may be empty: then the step only takes part in the collectives and
    // logits is empty). logits is resized to (n_rows, V): with all_positions = false one row per emitting
    // sequence (its last new token), else one row per new token of each emitting sequence, in batch order.
    // Batch-invariant (CPU backend): a sequence's rows are bit-identical whatever else is in the batch, however
    // the batch is split into micro-batches, and however its prompt is split into chunks over steps (except with
    // dynamic RoPE scaling, whose frequencies, as in HF, follow the length each chunk reaches: see rope.h).
    void step(const std::vector<SequenceStep> & batch, std::vector<float> & logits, bool all_positions = false);

    // Same rows as step(), but the final-normed hidden states (n_rows, C) instead of logits: what embedding
    // models pool (works for base-model saves without lm_head).
    void step_hidden(const std::vector<SequenceStep> & batch, std::vector<float> & hidden, bool all_positions = false);

    const ModelConfig & config() const { return cfg_; }

    struct Impl;   // backend buffers, KV cache (forward.cpp)

private:
    void init(const PartitionPlan & plan, Schedule & schedule);
    ModelConfig cfg_;
    ForwardOptions opt_;
    Tracer * tracer_ = nullptr;
    std::unique_ptr<Impl> impl_;
};

}  // namespace zt
