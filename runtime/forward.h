// Forward: the decoder forward pass of a loaded model on a Backend, over a batch of sequences that each
// bring some new tokens (a prompt chunk, or one generated token) and own a slot of the KV cache.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/model_config.h"

namespace zt {

class Backend;
class Schedule;
struct PartitionPlan;

// One sequence's share of a step: `n_tokens` new tokens at positions past_len .. past_len + n_tokens - 1,
// whose keys/values are appended to KV-cache slot `cache_slot` (which already holds past_len positions).
struct SequenceStep {
    int32_t cache_slot = 0;
    int32_t past_len = 0;
    const int32_t * tokens = nullptr;
    int32_t n_tokens = 0;
};

class Forward {
public:
    // Streamed weights: each step runs `schedule` over `plan` (both the caller's; they outlive the Forward).
    // Every rank must call step() / step_hidden() once per step, also with an empty batch (see Schedule::run).
    Forward(const ModelConfig & cfg, const PartitionPlan & plan, Schedule & schedule, Backend & backend);
    // Resident weights (the reference, and tests): a one-rank plan with every unit whole in backend memory
    // (offload "none"), run by the same schedule.
    Forward(const ModelConfig & cfg, const ModelWeights & weights, Backend & backend);
    ~Forward();

    // (Re)allocates the KV cache: n_slots sequences of up to max_len positions each (clears it).
    void reserve(int32_t n_slots, int32_t max_len);

    // Runs every layer over the batch (which may be empty: then the step only takes part in the collectives and
    // logits is empty). logits is resized to (n_rows, V): with all_positions = false one row per
    // sequence (its last new token), else one row per new token, sequences in batch order.
    // Batch-invariant: a sequence's rows are bit-identical whatever else is in the batch.
    void step(const std::vector<SequenceStep> & batch, std::vector<float> & logits, bool all_positions = false);

    // Same rows as step(), but the final-normed hidden states (n_rows, C) instead of logits: what embedding
    // models pool (works for base-model saves without lm_head).
    void step_hidden(const std::vector<SequenceStep> & batch, std::vector<float> & hidden, bool all_positions = false);

    const ModelConfig & config() const { return cfg_; }

    struct Impl;   // backend buffers, KV cache (forward.cpp)

private:
    void init(const PartitionPlan & plan, Schedule & schedule);
    ModelConfig cfg_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace zt
