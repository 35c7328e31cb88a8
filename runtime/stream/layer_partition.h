// Layer partitions (ZeRO stage 3 for inference): each unit of the model (the embedding, every decoder layer,
// the LM head) packs its tensors, in a canonical order, into one flat byte buffer padded so that it splits
// into `world` equal slices of slice_bytes (a multiple of 4096). Rank r owns bytes [r·slice, (r+1)·slice) of
// every streamed unit and gets the rest by all-gather each step. Tensors below the persistence threshold
// (norms, biases) are "persistent": whole on every rank, outside the flat buffer. Units that are not streamed
// (the first resident_layers layers; the embedding and LM head unless partition_embeddings; everything for
// offload "none") are kept whole on every rank.
//
//   flat buffer of a unit:  | q | k | v | o | gate | up | down | pad |      (each tensor 256-byte aligned)
//                           |  slice 0  |  slice 1  | ... | slice N-1 |     (slice_bytes each, 4096-aligned)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/model/tensor.h"

namespace zt {

enum class UnitKind { embed, layer, head };

struct PackedTensor {
    std::string name;                          // HF-style name, for errors and traces ("layers.3.q")
    Tensor source;                             // where the bytes are at start-up (a view into the checkpoint)
    Tensor LayerWeights::* field = nullptr;    // which LayerWeights member (layer units); nullptr otherwise
    bool persistent = false;                   // below the threshold: whole on every rank, outside the flat buffer
    size_t offset = 0;                         // byte offset in the flat buffer, or in the persistent block
};

struct PartitionUnit {
    UnitKind kind = UnitKind::layer;
    int layer = -1;                            // layer index for layer units
    std::string name;                          // "embed", "layer 3", "head"
    std::vector<PackedTensor> tensors;         // canonical order
    size_t packed_bytes = 0;                   // end of the last packed tensor
    size_t slice_bytes = 0;                    // flat_bytes / world (multiple of align; 0 when nothing is packed)
    size_t flat_bytes = 0;                     // world * slice_bytes >= packed_bytes
    size_t persistent_bytes = 0;               // size of the persistent block
    bool streamed = false;                     // false: the whole flat buffer lives on every rank
};

struct PartitionOptions {
    int world = 1;
    int64_t persistence_threshold = 100000;    // zero_optimization.stage3_param_persistence_threshold (elements)
    int resident_layers = 0;                   // ztinfer.resident_layers: the first layers stay whole
    bool partition_embeddings = false;         // ztinfer.partition_embeddings: stream embed and lm_head too
    bool stream = true;                        // false (offload "none"): every unit whole on every rank
    size_t align = 4096;                       // slice alignment (O_DIRECT and DMA friendly)
};

struct PartitionPlan {
    int world = 1;
    std::vector<PartitionUnit> units;          // compute order: embed, layer 0 .. L-1, head
    size_t streamed_bytes() const;             // sum of flat_bytes over streamed units
    size_t resident_bytes() const;             // sum of flat_bytes over resident units + all persistent blocks
    size_t max_flat_bytes() const;             // largest streamed unit (one ring buffer)
    size_t max_slice_bytes() const;
};

// Packs `weights` (bound to `cfg`) into units. Deterministic: every rank computes the same plan.
PartitionPlan plan_partition(const ModelConfig & cfg, const ModelWeights & weights, const PartitionOptions & opt);

// Copies rank r's slice of the unit's flat buffer into dst (slice_bytes), reading only the source bytes that fall
// into it (padding is zero). For a resident unit, copy_flat writes the whole flat buffer (flat_bytes).
void copy_slice(const PartitionUnit & unit, int rank, void * dst);
void copy_flat(const PartitionUnit & unit, void * dst);
void copy_persistent(const PartitionUnit & unit, void * dst);   // persistent_bytes

// Views of a unit's tensors over its full flat buffer and its persistent block (both already on this rank).
LayerWeights bind_layer(const PartitionUnit & unit, const void * flat, const void * persistent);
Tensor bind_single(const PartitionUnit & unit, const void * flat, const void * persistent, size_t index = 0);

}  // namespace zt
