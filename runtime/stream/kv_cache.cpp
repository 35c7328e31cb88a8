// KvCache: allocation, per-layer views and the offloaded cache's per-layer loads and write-backs (see kv_cache.h).
#include "runtime/stream/kv_cache.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>

#include "runtime/base/error.h"
#include "runtime/base/trace.h"

namespace zt {

KvCache::KvCache(Backend & backend, int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads,
                 int64_t head_dim, KvPlacement placement, Tracer * tracer)
    : be_(&backend), tracer_(tracer), placement_(placement), n_layers_(n_layers), n_slots_(n_slots),
      max_len_(max_len), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {
    ZT_CHECK(n_layers > 0 && n_slots > 0 && max_len > 0 && n_kv_heads > 0 && head_dim > 0,
             "KV cache dimensions must be positive: layers {} slots {} max_len {} kv_heads {} head_dim {}",
             n_layers, n_slots, max_len, n_kv_heads, head_dim);
    ZT_CHECK(placement.prefetch >= 0 && placement.prefetch <= 64, "KV cache prefetch {} must be in [0, 64]",
             placement.prefetch);
    // checked product: L*S*M*KV*D*4 bytes
    uint64_t bytes = sizeof(float);
    for (int64_t d : {n_layers, n_slots, max_len, n_kv_heads, head_dim}) {
        ZT_CHECK(bytes <= std::numeric_limits<uint64_t>::max() / uint64_t(d), "KV cache size overflows");
        bytes *= uint64_t(d);
    }
    ZT_CHECK(bytes <= (uint64_t(1) << 46), "KV cache of {} slots x {} positions needs {} GiB per K/V: reduce "
             "batch_size, micro_batches or the context length", n_slots, max_len, bytes >> 30);
    const MemKind where = placement.offload ? MemKind::pinned_host : MemKind::device;
    k_ = backend.alloc(size_t(bytes), where, placement.offload ? "KV cache (host)" : "KV cache");
    v_ = backend.alloc(size_t(bytes), where, placement.offload ? "KV cache (host)" : "KV cache");
    if (placement.offload) {
        const size_t ring = size_t(placement.prefetch) + 2;   // loading j+prefetch, computing j, writing back j-1
        for (size_t i = 0; i < ring; ++i) {
            ring_k_.push_back(backend.alloc(layer_bytes(), MemKind::device, "KV cache ring"));
            ring_v_.push_back(backend.alloc(layer_bytes(), MemKind::device, "KV cache ring"));
        }
        loaded_.resize(ring);
        ring_layer_.assign(ring, -1);
    }
}

KvCache::~KvCache() = default;
KvCache::KvCache(KvCache &&) noexcept = default;
KvCache & KvCache::operator=(KvCache &&) noexcept = default;

size_t KvCache::device_bytes() const {
    if (!placement_.offload) return bytes();
    return ring_k_.size() * 2 * layer_bytes();
}

Tensor KvCache::view(const Buffer & b, size_t offset) const {
    return b.view(DType::F32, {n_slots_, max_len_, n_kv_heads_, head_dim_}, offset);
}

Tensor KvCache::k(int64_t layer) const {
    ZT_CHECK(layer >= 0 && layer < n_layers_, "KV cache layer {} outside [0, {})", layer, n_layers_);
    if (!placement_.offload) return view(k_, size_t(layer) * layer_bytes());
    ZT_CHECK(ring_layer_[slot_of(layer)] == layer, "KV cache layer {} is not on the device: acquire it first", layer);
    return view(ring_k_[slot_of(layer)], 0);
}

Tensor KvCache::v(int64_t layer) const {
    ZT_CHECK(layer >= 0 && layer < n_layers_, "KV cache layer {} outside [0, {})", layer, n_layers_);
    if (!placement_.offload) return view(v_, size_t(layer) * layer_bytes());
    ZT_CHECK(ring_layer_[slot_of(layer)] == layer, "KV cache layer {} is not on the device: acquire it first", layer);
    return view(ring_v_[slot_of(layer)], 0);
}

// A span of the copy stream's KV work in the tracer ("kv" category: the stage time of the metrics).
namespace {
void traced(Backend & be, Stream * s, Tracer * tracer, const std::string & name, const std::function<void()> & issue) {
    if (!tracer) { issue(); return; }
    auto t0 = std::make_shared<double>(0);
    be.host_task(s, [tracer, t0] { *t0 = tracer->now_us(); });
    issue();
    be.host_task(s, [tracer, t0, name] { tracer->add(name, "kv", "copy", *t0, tracer->now_us()); });
}
}  // namespace

void KvCache::move_rows(int64_t layer, bool to_device, bool new_rows) {
    const size_t slot = slot_of(layer), row = size_t(n_kv_heads_ * head_dim_) * sizeof(float);
    const size_t layer_off = size_t(layer) * layer_bytes(), slot_bytes = size_t(max_len_) * row;
    Stream * copy = be_->stream(StreamRole::copy);
    for (const AttentionSeq & q : step_) {
        // a load brings the positions before this step, a write-back the ones this step added
        const size_t p0 = new_rows ? size_t(q.past_len) : 0;
        const size_t p1 = new_rows ? size_t(q.past_len + q.n_tokens) : size_t(q.past_len);
        if (p1 <= p0) continue;
        const size_t in_layer = size_t(q.slot) * slot_bytes + p0 * row, bytes = (p1 - p0) * row;
        char * host_k = static_cast<char *>(k_.data()) + layer_off + in_layer;
        char * host_v = static_cast<char *>(v_.data()) + layer_off + in_layer;
        char * dev_k = static_cast<char *>(ring_k_[slot].data()) + in_layer;
        char * dev_v = static_cast<char *>(ring_v_[slot].data()) + in_layer;
        be_->copy_async(to_device ? dev_k : host_k, to_device ? host_k : dev_k, bytes, copy);
        be_->copy_async(to_device ? dev_v : host_v, to_device ? host_v : dev_v, bytes, copy);
        bytes_moved_ += 2 * bytes;
    }
}

void KvCache::load(int64_t layer) {
    const size_t slot = slot_of(layer);
    Stream * copy = be_->stream(StreamRole::copy);
    traced(*be_, copy, tracer_, "kv load layer " + std::to_string(layer), [&] { move_rows(layer, true, false); });
    loaded_[slot] = be_->record(copy);
    ring_layer_[slot] = layer;
}

void KvCache::begin_step(const std::vector<AttentionSeq> & seqs) {
    if (!placement_.offload) return;
    step_ = seqs;
    std::fill(ring_layer_.begin(), ring_layer_.end(), -1);   // a ring slot's rows are only valid for its own step
    for (int64_t j = 0; j < std::min<int64_t>(placement_.prefetch, n_layers_); ++j) load(j);
}

void KvCache::acquire(int64_t layer) {
    if (!placement_.offload) return;
    ZT_CHECK(layer >= 0 && layer < n_layers_, "KV cache layer {} outside [0, {})", layer, n_layers_);
    if (ring_layer_[slot_of(layer)] != layer) load(layer);
    const int64_t ahead = layer + placement_.prefetch;
    if (placement_.prefetch > 0 && ahead < n_layers_) load(ahead);
    be_->wait(be_->stream(StreamRole::compute), loaded_[slot_of(layer)]);
}

void KvCache::release(int64_t layer) {
    if (!placement_.offload) return;
    Stream * copy = be_->stream(StreamRole::copy);
    be_->wait(copy, be_->record(be_->stream(StreamRole::compute)));   // after this layer's compute
    traced(*be_, copy, tracer_, "kv store layer " + std::to_string(layer), [&] { move_rows(layer, false, true); });
}

}  // namespace zt
