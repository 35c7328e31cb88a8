// KvCache: allocation and per-layer views of the (L,S,M,KV,D) fp32 key and value blocks.
#include "runtime/kv_cache.h"

#include <limits>

#include "runtime/error.h"

namespace zt {

KvCache::KvCache(Backend & backend, int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads,
                 int64_t head_dim)
    : n_layers_(n_layers), n_slots_(n_slots), max_len_(max_len), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {
    ZT_CHECK(n_layers > 0 && n_slots > 0 && max_len > 0 && n_kv_heads > 0 && head_dim > 0,
             "KV cache dimensions must be positive: layers {} slots {} max_len {} kv_heads {} head_dim {}",
             n_layers, n_slots, max_len, n_kv_heads, head_dim);
    // checked product: L*S*M*KV*D*4 bytes
    uint64_t bytes = sizeof(float);
    for (int64_t d : {n_layers, n_slots, max_len, n_kv_heads, head_dim}) {
        ZT_CHECK(bytes <= std::numeric_limits<uint64_t>::max() / uint64_t(d), "KV cache size overflows");
        bytes *= uint64_t(d);
    }
    ZT_CHECK(bytes <= (uint64_t(1) << 46), "KV cache of {} slots x {} positions needs {} GiB per K/V: reduce "
             "batch_size or the context length", n_slots, max_len, bytes >> 30);
    k_ = backend.alloc(size_t(bytes), MemKind::device, "KV cache");
    v_ = backend.alloc(size_t(bytes), MemKind::device, "KV cache");
}

Tensor KvCache::layer_view(const Buffer & b, int64_t layer) const {
    ZT_CHECK(layer >= 0 && layer < n_layers_, "KV cache layer {} outside [0, {})", layer, n_layers_);
    return b.view(DType::F32, {n_slots_, max_len_, n_kv_heads_, head_dim_}, size_t(layer) * layer_bytes());
}

Tensor KvCache::k(int64_t layer) const { return layer_view(k_, layer); }
Tensor KvCache::v(int64_t layer) const { return layer_view(v_, layer); }

}  // namespace zt
