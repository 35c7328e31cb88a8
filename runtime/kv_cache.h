// KvCache: the keys and values of every layer for n_slots sequences of up to max_len positions, fp32.
// Layout, per tensor (K and V separately): (L, S, M, KV, D) = layers × slots × positions × KV heads × head_dim.
// Layers are outermost so that one layer of the whole batch is one contiguous (S,M,KV,D) block: that is what
// the attention/kv_store ops take, and what the offloaded-KV schedule (store_kv(j-1) / load_kv(j+1) in
// ARCHITECTURE.md) moves per layer.
#pragma once
#include <cstdint>

#include "runtime/backend.h"

namespace zt {

class KvCache {
public:
    KvCache() = default;
    // Allocates (zeroed) device memory on `backend`; throws zt::Error with the size when it cannot.
    KvCache(Backend & backend, int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads, int64_t head_dim);

    Tensor k(int64_t layer) const;   // (S,M,KV,D) f32 of one layer
    Tensor v(int64_t layer) const;   // (S,M,KV,D) f32 of one layer

    int64_t n_layers() const { return n_layers_; }
    int64_t n_slots() const { return n_slots_; }
    int64_t max_len() const { return max_len_; }
    size_t bytes() const { return k_.bytes() + v_.bytes(); }
    // Bytes of one layer's K (or V) block: S*M*KV*D*4.
    size_t layer_bytes() const { return size_t(n_slots_ * max_len_ * n_kv_heads_ * head_dim_) * sizeof(float); }

private:
    Tensor layer_view(const Buffer & b, int64_t layer) const;
    int64_t n_layers_ = 0, n_slots_ = 0, max_len_ = 0, n_kv_heads_ = 0, head_dim_ = 0;
    Buffer k_, v_;
};

}  // namespace zt
