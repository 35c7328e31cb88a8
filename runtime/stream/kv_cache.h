// KvCache: the keys and values of every layer for n_slots sequences of up to max_len positions, fp32.
// Layout, per tensor (K and V separately): (L, S, M, KV, D) = layers × slots × positions × KV heads × head_dim.
// Layers are outermost so that one layer of the whole batch is one contiguous (S,M,KV,D) block: that is what
// the attention/kv_store ops take, and what the offloaded cache moves per layer.
//
// Placement (ztinfer.kv_cache.offload):
//   "none": all L layers in device memory; acquire/release do nothing.
//   "cpu":  all L layers in pinned host memory and a ring of prefetch + 2 layer blocks on the device. Per step:
//             begin_step(seqs): load layers 0 .. prefetch-1                         (copy stream)
//             acquire(j):       compute waits for j's load; load j + prefetch       (copy stream)
//             release(j):       write j back to host once compute is done with it   (copy stream)
//           so layer j+1's cache arrives while j computes and j-1 is written back; the copy stream keeps them in
//           order (a ring slot is reloaded only after its write-back). Only what the step uses moves: a load brings
//           positions [0, past_len) of each sequence of the step, a write-back takes its new positions
//           [past_len, past_len + n_tokens) (FlexGen's policy), so per layer and step the link carries the live
//           cache once plus the new rows, not the whole (S,M) block. The bytes are only moved, so results are
//           bit-identical to the on-device cache.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend/backend.h"

namespace zt {

class Tracer;

struct KvPlacement {
    bool offload = false;   // "cpu": host storage, device ring
    int prefetch = 1;       // layers loaded ahead of the one computing (0: load just before compute)
};

class KvCache {
public:
    KvCache() = default;
    // Allocates (zeroed) memory on `backend`; throws zt::Error with the size when it cannot.
    KvCache(Backend & backend, int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads,
            int64_t head_dim, KvPlacement placement = {}, Tracer * tracer = nullptr);
    ~KvCache();
    KvCache(KvCache &&) noexcept;
    KvCache & operator=(KvCache &&) noexcept;

    Tensor k(int64_t layer) const;   // (S,M,KV,D) f32 of one layer, in device memory (offloaded: acquired first)
    Tensor v(int64_t layer) const;   // (S,M,KV,D) f32 of one layer

    // Offloaded cache only (no-ops otherwise): see the top of this file. Call begin_step() once per step before
    // the first acquire with every sequence of the step (slot, past_len, n_tokens), then acquire(j) ... release(j)
    // around each layer's compute, layers in order.
    void begin_step(const std::vector<AttentionSeq> & seqs);
    void acquire(int64_t layer);
    void release(int64_t layer);

    int64_t n_layers() const { return n_layers_; }
    int64_t n_slots() const { return n_slots_; }
    int64_t max_len() const { return max_len_; }
    bool offloaded() const { return placement_.offload; }
    size_t bytes() const { return size_t(n_layers_) * 2 * layer_bytes(); }   // K + V of every layer
    size_t device_bytes() const;                                              // what lives on the device
    uint64_t bytes_moved() const { return bytes_moved_; }                     // loads + write-backs so far
    // Bytes of one layer's K (or V) block: S*M*KV*D*4.
    size_t layer_bytes() const { return size_t(n_slots_ * max_len_ * n_kv_heads_ * head_dim_) * sizeof(float); }

private:
    Tensor view(const Buffer & b, size_t offset) const;
    void load(int64_t layer);          // host layer -> its ring slot (copy stream), records loaded_[slot]
    // Copies rows [p0, p1) of every step sequence's slot between the host layer and its ring slot (copy stream).
    void move_rows(int64_t layer, bool to_device, bool new_rows);
    size_t slot_of(int64_t layer) const { return size_t(layer) % ring_k_.size(); }

    Backend * be_ = nullptr;
    Tracer * tracer_ = nullptr;
    KvPlacement placement_;
    int64_t n_layers_ = 0, n_slots_ = 0, max_len_ = 0, n_kv_heads_ = 0, head_dim_ = 0;
    Buffer k_, v_;                       // (L,S,M,KV,D): device ("none") or pinned host ("cpu")
    std::vector<Buffer> ring_k_, ring_v_;   // offloaded: prefetch + 2 device layer blocks
    std::vector<Event> loaded_;          // per ring slot: its load is done
    std::vector<int64_t> ring_layer_;    // per ring slot: the layer it holds (-1: none)
    std::vector<AttentionSeq> step_;     // this step's sequences (offloaded: what loads and write-backs move)
    uint64_t bytes_moved_ = 0;
};

}  // namespace zt
