// Layer partitions: for world 1..4 and persistence thresholds 0 / 1000 / huge, every unit's slices are
// 4096-aligned and cover the packed bytes, the slices concatenated equal the flat buffer, bind_layer/bind_single
// over the flat buffer and persistent block reproduce every tensor byte for byte, the persistent set is exactly
// the tensors below the threshold, resident_layers / partition_embeddings / stream flags are honoured, a tied LM
// head gets its own copy, copy_slice reads only its own source bytes (the rest is PROT_NONE), overflow is an error.
// Quantized weights (views over host buffers of random GGUF blocks; Q4_K, Q4_K + Q6_K, Q8_0, Q4_0 + Q4_1 + Q8_0,
// Q5_K): tensors packed as rows x row bytes at offsets aligned to lcm(256, block bytes), slices the smallest
// 4096-multiple whose cuts split no block, every slice boundary on a block boundary of the tensor it cuts (and each rank's
// piece of a tensor dequantizes on its own to the same weights), slices reassemble the exact bytes, bind_layer
// views keep the quantized dtype, and rows that are not whole blocks are an error naming the tensor.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <random>

#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"
#include "runtime/stream/layer_partition.h"

using namespace zt;

namespace {

// A model held in memory: random bytes for every tensor, ModelWeights views into them.
struct MemModel {
    ModelConfig cfg;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> storage;
    ModelWeights w;
};

struct MemModelOptions {
    // threshold 1000 splits a layer: q (48,40), o, gate, up, down are packed; k, v (16,40), norms, biases persist
    int64_t layers = 3, vocab = 37, hidden = 40, intermediate = 40, heads = 3, kv_heads = 1, head_dim = 16;
    bool bias = true, out_bias = false, qk_norm = true, tied = false, no_lm_head = false;
    DType dtype = DType::BF16;                 // every tensor, unless overridden below
    std::optional<DType> matrix;               // q, k, v, o, gate, up, down, embed, lm_head (e.g. Q4_K)
    std::optional<DType> v_down;               // v and down only (Q4_K_M files keep them in Q6_K)
    std::optional<DType> k_up;                 // k and up only (a third type in one layer)
    uint32_t seed = 1;
};

// Random bytes for every tensor: for a quantized type, rows x whole random blocks (never dequantized as weights
// except against themselves).
Tensor random_tensor(MemModel & m, DType t, std::vector<int64_t> shape, std::mt19937 & rng) {
    const size_t bytes = Tensor(nullptr, t, shape).bytes();
    auto buf = std::make_unique<std::vector<uint8_t>>(bytes);
    for (uint8_t & b : *buf) b = uint8_t(rng());
    Tensor out(buf->data(), t, std::move(shape));
    m.storage.push_back(std::move(buf));
    return out;
}

std::unique_ptr<MemModel> make_mem_model(const MemModelOptions & o) {
    auto m = std::make_unique<MemModel>();
    std::mt19937 rng(o.seed);
    ModelConfig & c = m->cfg;
    c.vocab_size = o.vocab;
    c.hidden_size = o.hidden;
    c.intermediate_size = o.intermediate;
    c.num_hidden_layers = o.layers;
    c.num_attention_heads = o.heads;
    c.num_key_value_heads = o.kv_heads;
    c.head_dim = o.head_dim;
    c.tie_word_embeddings = o.tied;
    c.attention_bias = o.bias;
    c.attention_out_bias = o.out_bias;
    c.qk_norm = o.qk_norm;
    const int64_t V = o.vocab, C = o.hidden, I = o.intermediate, HD = o.heads * o.head_dim,
                  KVD = o.kv_heads * o.head_dim, D = o.head_dim;
    const DType t = o.dtype, mt = o.matrix.value_or(t), vd = o.v_down.value_or(mt), ku = o.k_up.value_or(mt);
    m->w.embed = random_tensor(*m, mt, {V, C}, rng);
    m->w.final_norm = random_tensor(*m, t, {C}, rng);
    if (o.tied) m->w.lm_head = m->w.embed;
    else if (!o.no_lm_head) m->w.lm_head = random_tensor(*m, mt, {V, C}, rng);
    for (int64_t i = 0; i < o.layers; ++i) {
        LayerWeights l;
        l.input_norm = random_tensor(*m, t, {C}, rng);
        l.q = random_tensor(*m, mt, {HD, C}, rng);
        l.k = random_tensor(*m, ku, {KVD, C}, rng);
        l.v = random_tensor(*m, vd, {KVD, C}, rng);
        l.o = random_tensor(*m, mt, {C, HD}, rng);
        if (o.bias) {
            l.q_bias = random_tensor(*m, t, {HD}, rng);
            l.k_bias = random_tensor(*m, t, {KVD}, rng);
            l.v_bias = random_tensor(*m, t, {KVD}, rng);
        }
        if (o.out_bias) l.o_bias = random_tensor(*m, t, {C}, rng);
        if (o.qk_norm) {
            l.q_norm = random_tensor(*m, t, {D}, rng);
            l.k_norm = random_tensor(*m, t, {D}, rng);
        }
        l.post_norm = random_tensor(*m, t, {C}, rng);
        l.gate = random_tensor(*m, mt, {I, C}, rng);
        l.up = random_tensor(*m, ku, {I, C}, rng);
        l.down = random_tensor(*m, vd, {C, I}, rng);
        m->w.layers.push_back(l);
    }
    return m;
}

bool same_bytes(const Tensor & a, const Tensor & b) {
    return a.dtype == b.dtype && a.shape == b.shape && a.bytes() == b.bytes() &&
           std::memcmp(a.data, b.data, a.bytes()) == 0;
}

const Tensor LayerWeights::* const kCanonical[] = {
    &LayerWeights::input_norm, &LayerWeights::q,      &LayerWeights::q_bias, &LayerWeights::q_norm,
    &LayerWeights::k,          &LayerWeights::k_bias, &LayerWeights::k_norm, &LayerWeights::v,
    &LayerWeights::v_bias,     &LayerWeights::o,      &LayerWeights::o_bias, &LayerWeights::post_norm,
    &LayerWeights::gate,       &LayerWeights::up,     &LayerWeights::down};

}  // namespace

TEST(LayerPartition, SlicesFlatBufferAndBindingsRoundTrip) {
    for (bool tied : {false, true}) {
        MemModelOptions mo;
        mo.tied = tied;
        mo.out_bias = tied;   // cover o_bias too
        mo.dtype = tied ? DType::F32 : DType::BF16;
        const auto m = make_mem_model(mo);
        for (int world = 1; world <= 4; ++world) {
            for (int64_t threshold : {int64_t(0), int64_t(1000), std::numeric_limits<int64_t>::max()}) {
                SCOPED_TRACE(testing::Message() << "tied " << tied << " world " << world << " threshold " << threshold);
                PartitionOptions opt;
                opt.world = world;
                opt.persistence_threshold = threshold;
                opt.partition_embeddings = true;
                const PartitionPlan plan = plan_partition(m->cfg, m->w, opt);
                ASSERT_EQ(plan.world, world);
                ASSERT_EQ(plan.units.size(), m->w.layers.size() + 2);
                EXPECT_EQ(plan.units.front().kind, UnitKind::embed);
                EXPECT_EQ(plan.units.front().name, "embed");
                EXPECT_EQ(plan.units.back().kind, UnitKind::head);
                EXPECT_EQ(plan.units.back().name, "head");
                size_t streamed = 0, resident = 0, max_slice = 0;
                for (size_t ui = 0; ui < plan.units.size(); ++ui) {
                    const PartitionUnit & u = plan.units[ui];
                    SCOPED_TRACE(u.name);
                    EXPECT_EQ(u.slice_bytes % 4096, 0u);
                    EXPECT_EQ(u.flat_bytes, size_t(world) * u.slice_bytes);
                    EXPECT_GE(u.flat_bytes, u.packed_bytes);
                    EXPECT_LT(u.flat_bytes - u.packed_bytes, size_t(world) * 4096) << "no more padding than needed";
                    if (u.packed_bytes == 0) {
                        EXPECT_EQ(u.slice_bytes, 0u);
                        EXPECT_FALSE(u.streamed);
                    } else {
                        EXPECT_TRUE(u.streamed);
                    }
                    (u.streamed ? streamed : resident) += u.flat_bytes;
                    resident += u.persistent_bytes;
                    if (u.streamed) max_slice = std::max(max_slice, u.slice_bytes);
                    size_t flat_end = 0, pers_end = 0;
                    for (const PackedTensor & t : u.tensors) {
                        EXPECT_EQ(t.persistent, t.source.numel() < threshold) << t.name;
                        EXPECT_EQ(t.offset % 256, 0u) << t.name;
                        size_t & end = t.persistent ? pers_end : flat_end;
                        EXPECT_GE(t.offset, end) << t.name << " overlaps the tensor before it";
                        end = t.offset + t.source.bytes();
                    }
                    EXPECT_EQ(u.packed_bytes, flat_end);
                    EXPECT_EQ(u.persistent_bytes, pers_end);

                    // Slices of every rank, concatenated, are the flat buffer (padding zero).
                    std::vector<uint8_t> flat(u.flat_bytes, 0xAB), cat(u.flat_bytes, 0xCD);
                    copy_flat(u, flat.data());
                    for (int r = 0; r < world; ++r) copy_slice(u, r, cat.data() + size_t(r) * u.slice_bytes);
                    EXPECT_EQ(flat, cat);
                    for (size_t b = u.packed_bytes; b < u.flat_bytes; ++b) ASSERT_EQ(flat[b], 0) << "padding byte " << b;
                    std::vector<uint8_t> pers(u.persistent_bytes, 0xEF);
                    copy_persistent(u, pers.data());

                    if (u.kind == UnitKind::layer) {
                        const LayerWeights & src = m->w.layers[size_t(u.layer)];
                        const LayerWeights got = bind_layer(u, flat.data(), pers.data());
                        for (auto field : kCanonical) {
                            EXPECT_EQ((src.*field).data == nullptr, (got.*field).data == nullptr);
                            if ((src.*field).data) {
                                EXPECT_TRUE(same_bytes(src.*field, got.*field));
                            }
                        }
                        // canonical order, fields set
                        size_t k = 0;
                        for (auto field : kCanonical) {
                            if (!(src.*field).data) continue;
                            ASSERT_LT(k, u.tensors.size());
                            EXPECT_EQ(u.tensors[k].field, field) << u.tensors[k].name;
                            ++k;
                        }
                        EXPECT_EQ(k, u.tensors.size());
                        EXPECT_EQ(u.tensors[1].name, "layers." + std::to_string(u.layer) + ".q");
                    } else if (u.kind == UnitKind::embed) {
                        ASSERT_EQ(u.tensors.size(), 1u);
                        EXPECT_TRUE(same_bytes(bind_single(u, flat.data(), pers.data()), m->w.embed));
                    } else {
                        ASSERT_EQ(u.tensors.size(), 2u);
                        EXPECT_TRUE(same_bytes(bind_single(u, flat.data(), pers.data(), 0), m->w.final_norm));
                        const Tensor lm = bind_single(u, flat.data(), pers.data(), 1);
                        EXPECT_TRUE(same_bytes(lm, m->w.lm_head));
                        EXPECT_NE(lm.data, m->w.embed.data) << "the LM head is its own copy even when tied";
                    }
                }
                EXPECT_EQ(plan.streamed_bytes(), streamed);
                EXPECT_EQ(plan.resident_bytes(), resident);
                EXPECT_EQ(plan.max_slice_bytes(), max_slice);
                EXPECT_EQ(plan.max_flat_bytes(), size_t(world) * max_slice);
                if (plan.units[1].slice_bytes > 0) {
                    std::vector<uint8_t> dst(plan.units[1].slice_bytes);
                    EXPECT_THROW(copy_slice(plan.units[1], world, dst.data()), Error) << "rank outside the world";
                }
            }
        }
    }
}

TEST(LayerPartition, StreamingFlagsAndTiedHead) {
    MemModelOptions mo;
    mo.layers = 4;
    mo.tied = true;
    const auto m = make_mem_model(mo);
    PartitionOptions opt;
    opt.world = 2;
    opt.persistence_threshold = 1000;
    opt.resident_layers = 2;
    PartitionPlan p = plan_partition(m->cfg, m->w, opt);
    EXPECT_FALSE(p.units[0].streamed) << "embed stays whole without partition_embeddings";
    EXPECT_FALSE(p.units[1].streamed) << "layer 0 is resident";
    EXPECT_FALSE(p.units[2].streamed) << "layer 1 is resident";
    EXPECT_TRUE(p.units[3].streamed);
    EXPECT_TRUE(p.units[4].streamed);
    EXPECT_FALSE(p.units[5].streamed);
    EXPECT_EQ(p.units[3].name, "layer 2");
    EXPECT_EQ(p.units[3].layer, 2);
    // Norms (C = 40 < 1000) are persistent; the tied LM head is packed into the head unit as its own tensor.
    EXPECT_TRUE(p.units[5].tensors[0].persistent);
    EXPECT_FALSE(p.units[5].tensors[1].persistent);
    EXPECT_EQ(p.units[5].tensors[1].source.data, m->w.embed.data);
    EXPECT_EQ(p.units[5].packed_bytes, m->w.embed.bytes());
    EXPECT_EQ(p.streamed_bytes(), p.units[3].flat_bytes + p.units[4].flat_bytes);
    EXPECT_EQ(p.max_slice_bytes(), std::max(p.units[3].slice_bytes, p.units[4].slice_bytes));

    opt.partition_embeddings = true;
    p = plan_partition(m->cfg, m->w, opt);
    EXPECT_TRUE(p.units[0].streamed);
    EXPECT_TRUE(p.units[5].streamed);

    opt.stream = false;   // offload "none": everything whole on every rank
    p = plan_partition(m->cfg, m->w, opt);
    for (const PartitionUnit & u : p.units) EXPECT_FALSE(u.streamed) << u.name;
    EXPECT_EQ(p.streamed_bytes(), 0u);
    EXPECT_EQ(p.max_slice_bytes(), 0u);

    // A base-model save without an LM head: the head unit holds only the final norm (persistent: not streamed).
    mo.tied = false;
    mo.no_lm_head = true;
    const auto base = make_mem_model(mo);
    opt.stream = true;
    p = plan_partition(base->cfg, base->w, opt);
    ASSERT_EQ(p.units.back().tensors.size(), 1u);
    EXPECT_EQ(p.units.back().packed_bytes, 0u);
    EXPECT_FALSE(p.units.back().streamed);
}

TEST(LayerPartition, CopySliceTouchesOnlyItsOwnSourceBytes) {
    // One embedding of 64 KiB in its own mapping: world 4 gives 16 KiB slices = 4 pages each. For rank r every
    // page outside its slice is PROT_NONE, so reading a byte of another rank's range crashes the test.
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    ASSERT_EQ(4096 % page, 0u);
    const int64_t V = 64, C = 256;
    const size_t bytes = size_t(V * C) * 4;
    void * map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    for (size_t i = 0; i < bytes; ++i) static_cast<uint8_t *>(map)[i] = uint8_t(i * 7 + 3);
    std::vector<uint8_t> copy(static_cast<uint8_t *>(map), static_cast<uint8_t *>(map) + bytes);
    ModelWeights w;
    w.embed = Tensor(map, DType::F32, {V, C});
    ModelConfig cfg;
    PartitionOptions opt;
    opt.world = 4;
    opt.persistence_threshold = 0;
    opt.partition_embeddings = true;
    const PartitionPlan plan = plan_partition(cfg, w, opt);
    const PartitionUnit & u = plan.units[0];
    ASSERT_EQ(u.slice_bytes, bytes / 4);
    for (int r = 0; r < 4; ++r) {
        const size_t lo = size_t(r) * u.slice_bytes, hi = lo + u.slice_bytes;
        uint8_t * base = static_cast<uint8_t *>(map);
        ASSERT_EQ(mprotect(base, bytes, PROT_NONE), 0);
        ASSERT_EQ(mprotect(base + lo, hi - lo, PROT_READ), 0);
        std::vector<uint8_t> got(u.slice_bytes);
        copy_slice(u, r, got.data());
        EXPECT_EQ(0, std::memcmp(got.data(), copy.data() + lo, u.slice_bytes)) << "rank " << r;
    }
    munmap(map, bytes);
}

TEST(LayerPartition, OverflowAndBadOptionsAreErrors) {
    MemModelOptions mo;
    mo.layers = 1;
    const auto m = make_mem_model(mo);
    PartitionOptions opt;
    opt.world = 0;
    EXPECT_THROW(plan_partition(m->cfg, m->w, opt), Error);
    opt.world = 2;
    ModelWeights huge = m->w;
    huge.layers[0].gate.shape = {int64_t(1) << 40, int64_t(1) << 40};   // element count overflows size_t
    try {
        plan_partition(m->cfg, huge, opt);
        ADD_FAILURE() << "expected an overflow error";
    } catch (const Error & e) {
        EXPECT_NE(std::string(e.message()).find("overflow"), std::string::npos) << e.message();
        EXPECT_NE(std::string(e.message()).find("layers.0.gate"), std::string::npos) << e.message();
    }
    ModelConfig wrong = m->cfg;
    wrong.num_hidden_layers = 5;
    EXPECT_THROW(plan_partition(wrong, m->w, opt), Error);
}

namespace {

size_t block_bytes(DType t) {
    return dtype_is_quantized(t) ? size_t(quant_layout(quant_type_of(t)).block_bytes) : dtype_size(t);
}

// The weights of the whole blocks at p (bytes a multiple of the block size), dequantized.
std::vector<float> dequantize_blocks(DType t, const uint8_t * p, size_t bytes) {
    const QuantLayout & l = quant_layout(quant_type_of(t));
    const int64_t n = int64_t(bytes / size_t(l.block_bytes)) * l.block_weights;
    std::vector<float> out(static_cast<size_t>(n));
    dequantize_row(quant_type_of(t), p, out.data(), n);
    return out;
}

}  // namespace

TEST(LayerPartition, QuantizedSlicesNeverSplitABlock) {
    struct Mix {
        const char * name;
        DType matrix;
        std::optional<DType> v_down, k_up;
    };
    // Rows of 256 (hidden) and 512 (intermediate) weights: whole blocks of every type.
    const Mix mixes[] = {
        {"Q4_K", DType::Q4_K, std::nullopt, std::nullopt},
        {"Q4_K + Q6_K (Q4_K_M)", DType::Q4_K, DType::Q6_K, std::nullopt},
        {"Q8_0", DType::Q8_0, std::nullopt, std::nullopt},
        {"Q4_0 + Q4_1 + Q8_0", DType::Q4_0, DType::Q4_1, DType::Q8_0},
        {"Q5_K", DType::Q5_K, std::nullopt, std::nullopt},
    };
    size_t cuts_inside = 0;   // boundaries that fall strictly inside a tensor (the case the rule is about)
    for (const Mix & mix : mixes) {
        MemModelOptions mo;
        mo.layers = 2;
        mo.vocab = 64;
        mo.hidden = 256;
        mo.intermediate = 512;
        mo.heads = 2;
        mo.kv_heads = 1;
        mo.head_dim = 128;
        mo.dtype = DType::F32;   // norms and biases stay F32, as in GGUF files
        mo.matrix = mix.matrix;
        mo.v_down = mix.v_down;
        mo.k_up = mix.k_up;
        const auto m = make_mem_model(mo);
        for (int world = 1; world <= 5; ++world) {
            for (int64_t threshold : {int64_t(0), int64_t(1000)}) {
                SCOPED_TRACE(testing::Message() << mix.name << " world " << world << " threshold " << threshold);
                PartitionOptions opt;
                opt.world = world;
                opt.persistence_threshold = threshold;
                opt.partition_embeddings = true;
                const PartitionPlan plan = plan_partition(m->cfg, m->w, opt);
                for (const PartitionUnit & u : plan.units) {
                    SCOPED_TRACE(u.name);
                    size_t want_align = 4096;
                    for (const PackedTensor & t : u.tensors) {
                        const Tensor & s = t.source;
                        const size_t rows = size_t(s.numel() / s.dim(-1));
                        EXPECT_EQ(t.bytes, rows * size_t(dtype_row_bytes(s.dtype, s.dim(-1)))) << t.name;
                        EXPECT_EQ(t.bytes, s.bytes()) << t.name;
                        EXPECT_EQ(t.block_bytes, block_bytes(s.dtype)) << t.name;
                        EXPECT_EQ(t.offset % std::lcm(size_t(256), t.block_bytes), 0u) << t.name;
                        if (!t.persistent) want_align = std::lcm(want_align, t.block_bytes);
                    }
                    if (u.packed_bytes == 0) continue;
                    EXPECT_EQ(u.slice_align, want_align);
                    EXPECT_EQ(u.slice_bytes % 4096, 0u);
                    // the smallest 4096-multiple >= packed / world whose cuts split no block: every smaller one
                    // splits some block (the whole-block property itself is checked below)
                    const size_t per_rank = (u.packed_bytes + size_t(world) - 1) / size_t(world);
                    for (size_t s = (per_rank + 4095) / 4096 * 4096; s < u.slice_bytes; s += 4096) {
                        bool splits = false;
                        for (size_t k = 1; k < size_t(world); ++k)
                            for (const PackedTensor & t : u.tensors)
                                splits = splits || (!t.persistent && k * s > t.offset && k * s < t.offset + t.bytes &&
                                                    (k * s - t.offset) % t.block_bytes != 0);
                        EXPECT_TRUE(splits) << "slice " << s << " would do, but " << u.slice_bytes << " was chosen";
                    }
                    EXPECT_GE(u.flat_bytes, u.packed_bytes);
                    EXPECT_LT(u.flat_bytes - u.packed_bytes, size_t(world) * want_align) << "no more padding than needed";

                    std::vector<uint8_t> flat(u.flat_bytes, 0xAB), cat(u.flat_bytes, 0xCD);
                    copy_flat(u, flat.data());
                    for (int r = 0; r < world; ++r) copy_slice(u, r, cat.data() + size_t(r) * u.slice_bytes);
                    ASSERT_EQ(flat, cat) << "the slices reassemble the flat buffer";
                    EXPECT_TRUE(std::all_of(flat.begin() + long(u.packed_bytes), flat.end(), [](uint8_t b) { return b == 0; }))
                        << "padding is zero";
                    std::vector<uint8_t> pers(u.persistent_bytes, 0xEF);
                    copy_persistent(u, pers.data());

                    for (const PackedTensor & t : u.tensors) {
                        if (t.persistent) continue;
                        EXPECT_EQ(0, std::memcmp(flat.data() + t.offset, t.source.data, t.bytes)) << t.name;
                        // Every slice boundary inside this tensor is a block boundary of it, and each rank's piece
                        // of it is whole blocks that dequantize, on their own, to the tensor's own weights there.
                        if (!dtype_is_quantized(t.source.dtype)) continue;
                        const std::vector<float> all =
                            dequantize_blocks(t.source.dtype, static_cast<const uint8_t *>(t.source.data), t.bytes);
                        const size_t per_block_weights = size_t(dtype_block_weights(t.source.dtype));
                        for (int r = 0; r < world; ++r) {
                            const size_t lo = std::max(t.offset, size_t(r) * u.slice_bytes);
                            const size_t hi = std::min(t.offset + t.bytes, size_t(r + 1) * u.slice_bytes);
                            if (lo >= hi) continue;
                            if (lo > t.offset) ++cuts_inside;
                            ASSERT_EQ((lo - t.offset) % t.block_bytes, 0u) << t.name << ": rank " << r << "'s slice starts inside a block";
                            ASSERT_EQ((hi - t.offset) % t.block_bytes, 0u) << t.name << ": rank " << r << "'s slice ends inside a block";
                            const uint8_t * piece = cat.data() + size_t(r) * u.slice_bytes + (lo - size_t(r) * u.slice_bytes);
                            const std::vector<float> got = dequantize_blocks(t.source.dtype, piece, hi - lo);
                            const size_t first = (lo - t.offset) / t.block_bytes * per_block_weights;
                            ASSERT_EQ(0, std::memcmp(got.data(), all.data() + first, got.size() * sizeof(float)))
                                << t.name << ": rank " << r << "'s piece decodes differently";
                        }
                    }

                    if (u.kind == UnitKind::layer) {
                        const LayerWeights & src = m->w.layers[size_t(u.layer)];
                        const LayerWeights got = bind_layer(u, flat.data(), pers.data());
                        for (auto field : kCanonical) {
                            ASSERT_EQ((src.*field).data == nullptr, (got.*field).data == nullptr);
                            if (!(src.*field).data) continue;
                            EXPECT_EQ((got.*field).dtype, (src.*field).dtype) << "the view keeps the quantized dtype";
                            EXPECT_TRUE(same_bytes(src.*field, got.*field));
                        }
                        EXPECT_EQ(got.q.dtype, mix.matrix);
                        EXPECT_EQ(got.down.dtype, mix.v_down.value_or(mix.matrix));
                        EXPECT_EQ(got.input_norm.dtype, DType::F32);
                    } else {
                        for (size_t i = 0; i < u.tensors.size(); ++i)
                            EXPECT_TRUE(same_bytes(bind_single(u, flat.data(), pers.data(), i), u.tensors[i].source));
                    }
                }
                // Bits per weight of the streamed (packed) tensors: the types' own, padding not counted.
                if (!mix.v_down && !mix.k_up && threshold > 0) {   // threshold 0 packs the F32 norms too
                    EXPECT_DOUBLE_EQ(plan.bits_per_weight(), dtype_bits_per_weight(mix.matrix));
                }
            }
        }
    }
    EXPECT_GT(cuts_inside, 50u) << "the sweep must cut tensors mid-way, not only between them";
}

TEST(LayerPartition, QuantizedRowsThatAreNotWholeBlocksAreAnError) {
    MemModelOptions mo;
    mo.layers = 1;
    mo.hidden = 256;
    mo.intermediate = 512;
    mo.heads = 2;
    mo.kv_heads = 1;
    mo.head_dim = 128;
    mo.dtype = DType::F32;
    mo.matrix = DType::Q4_K;
    const auto m = make_mem_model(mo);
    ModelWeights bad = m->w;
    bad.layers[0].up.shape = {256 * 2, 200};   // same 73728 bytes, but a row of 200 weights is not 256-weight blocks
    PartitionOptions opt;
    try {
        plan_partition(m->cfg, bad, opt);
        ADD_FAILURE() << "expected an error";
    } catch (const Error & e) {
        const std::string msg = e.message();
        EXPECT_NE(msg.find("layers.0.up"), std::string::npos) << msg;
        EXPECT_NE(msg.find("Q4_K"), std::string::npos) << msg;
        EXPECT_NE(msg.find("256-weight blocks"), std::string::npos) << msg;
    }
}

TEST(LayerPartition, BitsPerWeightOfTheStreamedTensors) {
    MemModelOptions mo;
    mo.layers = 2;
    mo.vocab = 64;
    mo.hidden = 256;
    mo.intermediate = 512;
    mo.heads = 2;
    mo.kv_heads = 1;
    mo.head_dim = 128;
    mo.dtype = DType::F32;
    mo.matrix = DType::Q4_K;
    mo.v_down = DType::Q6_K;
    const auto m = make_mem_model(mo);
    PartitionOptions opt;
    opt.persistence_threshold = 1000;   // norms persistent: not counted
    const PartitionPlan plan = plan_partition(m->cfg, m->w, opt);
    double bytes = 0, weights = 0;
    for (const PartitionUnit & u : plan.units)
        if (u.streamed)
            for (const PackedTensor & t : u.tensors)
                if (!t.persistent) { bytes += double(t.bytes); weights += double(t.source.numel()); }
    ASSERT_GT(weights, 0);
    EXPECT_DOUBLE_EQ(plan.bits_per_weight(), 8 * bytes / weights);
    EXPECT_GT(plan.bits_per_weight(), 4.5);
    EXPECT_LT(plan.bits_per_weight(), 6.5625);
    opt.stream = false;   // nothing streamed: every unit's packed tensors (embed and head, Q4_K, join in)
    const PartitionPlan all = plan_partition(m->cfg, m->w, opt);
    EXPECT_GT(all.bits_per_weight(), 4.5);
    EXPECT_LT(all.bits_per_weight(), plan.bits_per_weight()) << "the Q4_K embedding and head pull it down";
}
