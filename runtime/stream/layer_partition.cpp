// Layer partitions: packs each unit's tensors (embed, every layer, head; quantized ones as their blocks) into a
// flat buffer of world equal slices (4096- and block-aligned: no slice boundary splits a block) plus a persistent
// block for small tensors, copies a rank's slice out of the checkpoint (touching only the source bytes inside
// it), and binds tensor views over the gathered buffers.
#include "runtime/stream/layer_partition.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"

namespace zt {

namespace {

constexpr size_t kTensorAlign = 256;   // every packed tensor starts at a multiple of lcm(256, its block bytes)

size_t add_checked(size_t a, size_t b, const std::string & what) {
    ZT_CHECK(a <= std::numeric_limits<size_t>::max() - b,
             "layer partition: size overflow computing {} ({} + {}): the model is too large for this platform",
             what, a, b);
    return a + b;
}

size_t mul_checked(size_t a, size_t b, const std::string & what) {
    ZT_CHECK(b == 0 || a <= std::numeric_limits<size_t>::max() / b,
             "layer partition: size overflow computing {} ({} * {}): the model is too large for this platform",
             what, a, b);
    return a * b;
}

size_t round_up_checked(size_t x, size_t a, const std::string & what) {
    const size_t r = x % a;
    return r == 0 ? x : add_checked(x, a - r, what);
}

// lcm(a, b) of two sizes, overflow-checked.
size_t lcm_checked(size_t a, size_t b, const std::string & what) {
    const size_t g = std::gcd(a, b);
    return mul_checked(a / g, b, what);
}

// Bytes of one block of a quantized type, of one element otherwise.
size_t block_bytes_of(DType t) {
    return dtype_is_quantized(t) ? size_t(quant_layout(quant_type_of(t)).block_bytes) : dtype_size(t);
}

// Bytes of a tensor: rows x row bytes (whole blocks along the last dim for a quantized type, elements otherwise),
// with every product checked for overflow.
size_t tensor_bytes_checked(const Tensor & t, const std::string & name) {
    size_t rows = 1;
    for (size_t i = 0; i < t.shape.size(); ++i) {
        const int64_t d = t.shape[i];
        ZT_CHECK(d >= 0, "layer partition: tensor {} has a negative dimension in shape {}", name, t.shape_str());
        if (i + 1 < t.shape.size()) rows = mul_checked(rows, size_t(d), "the row count of " + name);
    }
    const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
    if (!dtype_is_quantized(t.dtype)) {
        const size_t n = mul_checked(rows, size_t(cols), "the element count of " + name);
        return mul_checked(n, dtype_size(t.dtype), "the byte size of " + name);
    }
    const int64_t per_block = dtype_block_weights(t.dtype);
    ZT_CHECK(!t.shape.empty() && cols % per_block == 0,
             "layer partition: tensor {} is {} of shape {}: its rows ({} weights) are not whole {}-weight blocks; "
             "the model file is damaged or was written by an unsupported quantizer", name, dtype_name(t.dtype),
             t.shape_str(), cols, per_block);
    const size_t row = mul_checked(size_t(cols / per_block), block_bytes_of(t.dtype), "the row bytes of " + name);
    return mul_checked(rows, row, "the byte size of " + name);
}

int64_t numel_of(const Tensor & t) {
    int64_t n = 1;
    for (int64_t d : t.shape) n = (d != 0 && n > std::numeric_limits<int64_t>::max() / d) ? std::numeric_limits<int64_t>::max() : n * d;
    return n;
}

// (member, HF-style suffix) of every LayerWeights tensor in canonical order.
struct LayerField {
    Tensor LayerWeights::* field;
    const char * name;
};
constexpr LayerField kLayerFields[] = {
    {&LayerWeights::input_norm, "input_norm"}, {&LayerWeights::q, "q"},       {&LayerWeights::q_bias, "q_bias"},
    {&LayerWeights::q_norm, "q_norm"},         {&LayerWeights::k, "k"},       {&LayerWeights::k_bias, "k_bias"},
    {&LayerWeights::k_norm, "k_norm"},         {&LayerWeights::v, "v"},       {&LayerWeights::v_bias, "v_bias"},
    {&LayerWeights::o, "o"},                   {&LayerWeights::o_bias, "o_bias"},
    {&LayerWeights::post_norm, "post_norm"},   {&LayerWeights::gate, "gate"}, {&LayerWeights::up, "up"},
    {&LayerWeights::down, "down"},
};

void add_tensor(PartitionUnit & u, const std::string & name, const Tensor & t, Tensor LayerWeights::* field) {
    if (t.data == nullptr) return;   // absent optional tensor
    PackedTensor p;
    p.name = name;
    p.source = t;
    p.field = field;
    p.bytes = tensor_bytes_checked(t, name);
    p.block_bytes = block_bytes_of(t.dtype);
    u.tensors.push_back(std::move(p));
}

// Whether cutting the unit's flat buffer every `slice` bytes (world - 1 cuts) splits no block of any packed tensor.
bool cuts_whole_blocks(const PartitionUnit & u, size_t slice, size_t world) {
    for (size_t k = 1; k < world; ++k) {
        const size_t cut = k * slice;
        for (const PackedTensor & t : u.tensors)
            if (!t.persistent && cut > t.offset && cut < t.offset + t.bytes && (cut - t.offset) % t.block_bytes != 0)
                return false;
    }
    return true;
}

// The smallest multiple of `align` (>= per_rank) whose cuts split no block. A multiple of u.slice_align (lcm of
// align and every block size) always qualifies, so the search ends there at the latest; for one block type that
// is usually the first candidate's neighbourhood, and for a mix (Q4_K + Q6_K: lcm 1.23 MiB) it saves most of the
// padding the lcm would cost.
size_t smallest_whole_block_slice(const PartitionUnit & u, size_t per_rank, size_t world, size_t align) {
    const size_t bound = round_up_checked(per_rank, u.slice_align, "the slice size of " + u.name);
    mul_checked(world, bound, "the flat buffer size of " + u.name);   // every candidate's cuts fit in size_t
    for (size_t s = round_up_checked(per_rank, align, "the slice size of " + u.name); s < bound; s += align)
        if (cuts_whole_blocks(u, s, world)) return s;
    return bound;
}

// Assigns offsets, sizes and the streamed flag of a unit whose tensors are listed.
void layout_unit(PartitionUnit & u, const PartitionOptions & opt) {
    size_t flat_end = 0, pers_end = 0;
    u.slice_align = opt.align;
    for (PackedTensor & t : u.tensors) {
        t.persistent = numel_of(t.source) < opt.persistence_threshold;
        size_t & end = t.persistent ? pers_end : flat_end;
        const size_t align = lcm_checked(kTensorAlign, t.block_bytes, "the alignment of " + t.name);
        t.offset = round_up_checked(end, align, "the offset of " + t.name);
        end = add_checked(t.offset, t.bytes, "the end of " + t.name);
        if (!t.persistent) u.slice_align = lcm_checked(u.slice_align, t.block_bytes, "the slice alignment of " + u.name);
    }
    u.packed_bytes = flat_end;
    u.persistent_bytes = pers_end;
    if (flat_end == 0) {
        u.slice_bytes = u.flat_bytes = 0;
        u.streamed = false;
        return;
    }
    const size_t world = size_t(opt.world);
    const size_t per_rank = flat_end / world + (flat_end % world != 0 ? 1 : 0);
    u.slice_bytes = smallest_whole_block_slice(u, per_rank, world, opt.align);
    u.flat_bytes = mul_checked(world, u.slice_bytes, "the flat buffer size of " + u.name);
    bool want = false;
    if (u.kind == UnitKind::layer) want = u.layer >= opt.resident_layers;
    else want = opt.partition_embeddings;
    u.streamed = opt.stream && want;
}

// Copies bytes [lo, hi) of the unit's flat buffer to dst, reading only the overlapping source bytes; gaps are zero.
void copy_range(const PartitionUnit & unit, size_t lo, size_t hi, uint8_t * dst) {
    size_t cursor = lo;
    for (const PackedTensor & t : unit.tensors) {
        if (t.persistent) continue;
        const size_t a = t.offset, b = t.offset + t.bytes;
        const size_t s = std::max(a, lo), e = std::min(b, hi);
        if (s >= e) continue;
        if (s > cursor) std::memset(dst + (cursor - lo), 0, s - cursor);
        std::memcpy(dst + (s - lo), static_cast<const uint8_t *>(t.source.data) + (s - a), e - s);
        cursor = e;
    }
    if (hi > cursor) std::memset(dst + (cursor - lo), 0, hi - cursor);
}

Tensor view_of(const PartitionUnit & unit, const PackedTensor & t, const void * flat, const void * persistent) {
    const void * base = t.persistent ? persistent : flat;
    ZT_CHECK(base != nullptr, "bind {}: tensor {} lives in the {} buffer, but none was given", unit.name, t.name,
             t.persistent ? "persistent" : "flat");
    return Tensor(const_cast<uint8_t *>(static_cast<const uint8_t *>(base)) + t.offset, t.source.dtype,
                  t.source.shape);
}

}  // namespace

size_t PartitionPlan::streamed_bytes() const {
    size_t n = 0;
    for (const PartitionUnit & u : units)
        if (u.streamed) n = add_checked(n, u.flat_bytes, "the streamed bytes");
    return n;
}

size_t PartitionPlan::resident_bytes() const {
    size_t n = 0;
    for (const PartitionUnit & u : units) {
        if (!u.streamed) n = add_checked(n, u.flat_bytes, "the resident bytes");
        n = add_checked(n, u.persistent_bytes, "the resident bytes");
    }
    return n;
}

size_t PartitionPlan::max_flat_bytes() const {
    size_t n = 0;
    for (const PartitionUnit & u : units)
        if (u.streamed) n = std::max(n, u.flat_bytes);
    return n;
}

size_t PartitionPlan::max_slice_bytes() const {
    size_t n = 0;
    for (const PartitionUnit & u : units)
        if (u.streamed) n = std::max(n, u.slice_bytes);
    return n;
}

double PartitionPlan::bits_per_weight() const {
    const bool any_streamed = std::any_of(units.begin(), units.end(), [](const PartitionUnit & u) { return u.streamed; });
    double bytes = 0, weights = 0;
    for (const PartitionUnit & u : units) {
        if (any_streamed && !u.streamed) continue;
        for (const PackedTensor & t : u.tensors) {
            if (t.persistent) continue;
            bytes += double(t.bytes);
            weights += double(numel_of(t.source));
        }
    }
    return weights > 0 ? 8.0 * bytes / weights : 0.0;
}

PartitionPlan plan_partition(const ModelConfig & cfg, const ModelWeights & weights, const PartitionOptions & opt) {
    ZT_CHECK(opt.world >= 1, "layer partition: world size must be >= 1, got {}", opt.world);
    ZT_CHECK(opt.align >= 1, "layer partition: slice alignment must be >= 1 byte, got {}", opt.align);
    ZT_CHECK(opt.resident_layers >= 0, "ztinfer.resident_layers must be >= 0, got {}", opt.resident_layers);
    ZT_CHECK(cfg.num_hidden_layers <= 0 || int64_t(weights.layers.size()) == cfg.num_hidden_layers,
             "layer partition: the weights have {} layers but config.json says num_hidden_layers = {}",
             weights.layers.size(), cfg.num_hidden_layers);
    ZT_CHECK(weights.embed.data != nullptr, "layer partition: the weights have no embedding (embed_tokens)");

    PartitionPlan plan;
    plan.world = opt.world;
    plan.units.reserve(weights.layers.size() + 2);

    PartitionUnit embed;
    embed.kind = UnitKind::embed;
    embed.name = "embed";
    add_tensor(embed, "embed_tokens", weights.embed, nullptr);
    plan.units.push_back(std::move(embed));

    for (size_t i = 0; i < weights.layers.size(); ++i) {
        PartitionUnit u;
        u.kind = UnitKind::layer;
        u.layer = int(i);
        u.name = "layer " + std::to_string(i);
        const std::string prefix = "layers." + std::to_string(i) + ".";
        for (const LayerField & f : kLayerFields) add_tensor(u, prefix + f.name, weights.layers[i].*(f.field), f.field);
        plan.units.push_back(std::move(u));
    }

    PartitionUnit head;
    head.kind = UnitKind::head;
    head.name = "head";
    add_tensor(head, "norm", weights.final_norm, nullptr);
    add_tensor(head, "lm_head", weights.lm_head, nullptr);   // may alias embed (tied): still its own copy here
    plan.units.push_back(std::move(head));

    for (PartitionUnit & u : plan.units) layout_unit(u, opt);
    return plan;
}

void copy_slice(const PartitionUnit & unit, int rank, void * dst) {
    if (unit.slice_bytes == 0) return;
    const size_t world = unit.flat_bytes / unit.slice_bytes;
    ZT_CHECK(rank >= 0 && size_t(rank) < world, "copy_slice of {}: rank {} is outside world size {}", unit.name,
             rank, world);
    const size_t lo = size_t(rank) * unit.slice_bytes;
    copy_range(unit, lo, lo + unit.slice_bytes, static_cast<uint8_t *>(dst));
}

void copy_flat(const PartitionUnit & unit, void * dst) {
    if (unit.flat_bytes == 0) return;
    copy_range(unit, 0, unit.flat_bytes, static_cast<uint8_t *>(dst));
}

void copy_persistent(const PartitionUnit & unit, void * dst) {
    if (unit.persistent_bytes == 0) return;
    uint8_t * out = static_cast<uint8_t *>(dst);
    std::memset(out, 0, unit.persistent_bytes);
    for (const PackedTensor & t : unit.tensors)
        if (t.persistent) std::memcpy(out + t.offset, t.source.data, t.bytes);
}

LayerWeights bind_layer(const PartitionUnit & unit, const void * flat, const void * persistent) {
    ZT_CHECK(unit.kind == UnitKind::layer, "bind_layer: unit {} is not a decoder layer", unit.name);
    LayerWeights lw;
    for (const PackedTensor & t : unit.tensors) {
        ZT_CHECK(t.field != nullptr, "bind_layer: tensor {} of {} has no LayerWeights field", t.name, unit.name);
        lw.*(t.field) = view_of(unit, t, flat, persistent);
    }
    return lw;
}

Tensor bind_single(const PartitionUnit & unit, const void * flat, const void * persistent, size_t index) {
    ZT_CHECK(index < unit.tensors.size(), "bind_single: unit {} has {} tensors, asked for #{}", unit.name,
             unit.tensors.size(), index);
    return view_of(unit, unit.tensors[index], flat, persistent);
}

}  // namespace zt
