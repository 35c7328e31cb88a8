// Layer partitions (ZeRO stage 3 for inference): each unit of the model (the embedding, every decoder layer,
// the LM head) packs its tensors, in a canonical order, into one flat byte buffer padded so that it splits
// into `world` equal slices of slice_bytes. Rank r owns bytes [r·slice, (r+1)·slice) of every streamed unit and
// gets the rest by all-gather each step. Tensors below the persistence threshold (norms, biases) are
// "persistent": whole on every rank, outside the flat buffer. Units that are not streamed (the first
// resident_layers layers; the embedding and LM head unless partition_embeddings; everything for offload "none")
// are kept whole on every rank.
//
//   flat buffer of a unit:  | q | k | v | o | gate | up | down | pad |      (each tensor block-aligned, below)
//                           |  slice 0  |  slice 1  | ... | slice N-1 |     (slice_bytes each)
//
// Quantized weights (Q8_0 .. Q6_K) are packed as their GGUF blocks: a tensor's bytes are rows x
// dtype_row_bytes(type, cols) (Tensor::bytes()), never numel x an element size. "Block bytes" below is a
// quantized type's block size (Q8_0 34, Q4_0 18, Q4_1 20, Q4_K 144, Q5_K 176, Q6_K 210) and an unquantized
// type's element size (BF16 2, F32 4).
//   - A tensor starts at an offset that is a multiple of lcm(256, its block bytes) (256 for BF16/F32, 2304 for
//     Q4_K, 4352 for Q8_0, 26880 for Q6_K), so its blocks sit at multiples of their size in the flat buffer.
//   - slice_bytes is the smallest multiple of align (4096) >= flat / world whose world - 1 cuts r·slice_bytes
//     each fall on a block boundary of the tensor they cut (or between tensors). A multiple of slice_align =
//     lcm(4096, the block bytes of every packed tensor) always qualifies (r·slice_bytes - offset is then a
//     multiple of the block bytes), so the search is bounded by it.
// Why: a rank's slice is whole blocks of each tensor it holds, so it can be checked or decoded by its owner
// alone; 4096 keeps slices O_DIRECT / DMA aligned (the NVMe tier reads them with O_DIRECT).
// Cost: up to lcm(256, B) - 1 bytes before each tensor (< 27 KB even for Q6_K), and flat_bytes - packed_bytes
// < world x slice_align per unit. slice_align is 4 KiB for BF16/F32, 36 KiB for Q4_K, 68 KiB for Q8_0, but 1.23
// MiB for a Q4_K + Q6_K layer (Q4_K_M files) and 4.5 MiB for Q5_K + Q6_K. The search helps small worlds (a 7B
// Q4_K_M layer: 0.5 KiB of padding at world 1, 4.5 KiB at 2 instead of 0.5 / 1.7 MiB) but not large ones: once a
// tensor of each type spans two cuts, the slice must be a multiple of both block sizes and of 4096, i.e. of the
// lcm (world 4 and 8: 4.2 MiB per layer, 3.6 % of its 115 MB, streamed every step like the weights).
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
    size_t bytes = 0;                          // source.bytes(): rows x row bytes (whole blocks) when quantized
    size_t block_bytes = 1;                    // bytes of one block (quantized) or one element; offset % it == 0
};

struct PartitionUnit {
    UnitKind kind = UnitKind::layer;
    int layer = -1;                            // layer index for layer units
    std::string name;                          // "embed", "layer 3", "head"
    std::vector<PackedTensor> tensors;         // canonical order
    size_t packed_bytes = 0;                   // end of the last packed tensor
    size_t slice_bytes = 0;                    // flat_bytes / world (multiple of align, cuts on block boundaries;
                                               // 0 when nothing is packed)
    size_t slice_align = 0;                    // lcm(align, block bytes of every packed tensor): the bound of the
                                               // slice search (a multiple of it always cuts whole blocks)
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
    size_t align = 4096;                       // slice alignment (O_DIRECT and DMA friendly); block sizes join it
};

struct PartitionPlan {
    int world = 1;
    std::vector<PartitionUnit> units;          // compute order: embed, layer 0 .. L-1, head
    size_t streamed_bytes() const;             // sum of flat_bytes over streamed units
    size_t resident_bytes() const;             // sum of flat_bytes over resident units + all persistent blocks
    size_t max_flat_bytes() const;             // largest streamed unit (one ring buffer)
    size_t max_slice_bytes() const;
    // Bits per weight of the packed (flat-buffer) tensors of the streamed units, padding not counted: 8 x their
    // bytes / their weights (16 for BF16, 8.5 for Q8_0, 4.5 for Q4_K); over every unit's packed tensors when
    // nothing is streamed; 0 when nothing is packed.
    double bits_per_weight() const;
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
