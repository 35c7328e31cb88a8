// The planner's inputs (planner.h): the settings as ds.json gives them and back, the model as shapes and dtypes
// (from a checkpoint's headers or a bench shape), and the partition those settings make of it.
#include <algorithm>
#include <cctype>

#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/job/job_config.h"
#include "runtime/job/planner.h"
#include "runtime/model/gguf_checkpoint.h"
#include "runtime/model/gguf_file.h"

namespace zt {

const std::vector<std::string> kPlanAutoKeys = {"tier", "resident_layers", "batch_size", "micro_batches",
                                                "prefetch_depth", "kv_offload"};

PlanSettings plan_settings_of(const JobConfig & cfg) {
    const StreamingConfig & st = cfg.streaming;
    PlanSettings s;
    s.tier = st.offload_device;
    s.resident_layers = st.resident_layers;
    s.batch_size = cfg.batch_size;
    s.micro_batches = cfg.batch.micro_batches;
    s.prefetch_depth = st.prefetch_depth;
    s.kv_offload = cfg.batch.kv_offload;
    s.overlap = st.overlap;
    s.prefill_chunk = cfg.batch.prefill_chunk;
    s.assignment = cfg.batch.assignment;
    s.partition_embeddings = st.partition_embeddings;
    s.persistence_threshold = st.persistence_threshold;
    s.buffer_count = st.buffer_count;
    s.aio_block_size = st.aio_block_size;
    s.aio_queue_depth = st.aio_queue_depth;
    return s;
}

void apply_plan_settings(JobConfig & cfg, const PlanSettings & s) {
    cfg.streaming.offload_device = s.tier;
    cfg.streaming.resident_layers = s.resident_layers;
    cfg.batch_size = s.batch_size;
    cfg.batch.micro_batches = s.micro_batches;
    cfg.streaming.prefetch_depth = s.prefetch_depth;
    cfg.batch.kv_offload = s.kv_offload;
}

namespace {

// Tensors of the planner's models point here: plan_partition only tests data for presence, never reads it.
char g_shape_only_sentinel;

void mark_shape_only(Tensor & t) {
    if (t.data) t.data = &g_shape_only_sentinel;
}

void mark_shape_only(ModelWeights & w) {
    mark_shape_only(w.embed);
    mark_shape_only(w.final_norm);
    mark_shape_only(w.lm_head);   // tied or not, the head unit packs its own copy (layer_partition.cpp)
    for (LayerWeights & L : w.layers)
        for (Tensor * t : {&L.input_norm, &L.q, &L.k, &L.v, &L.o, &L.q_bias, &L.k_bias, &L.v_bias, &L.o_bias, &L.q_norm,
                           &L.k_norm, &L.post_norm, &L.gate, &L.up, &L.down})
            mark_shape_only(*t);
}

}  // namespace

PlanModel plan_model_from_path(const std::string & model_path) {
    PlanModel m;
    m.name = model_path;
    if (is_gguf_model_path(model_path)) {
        const GgufFile gguf = read_gguf_header(model_path);
        m.config = ModelConfig::from_gguf(gguf, model_path);
    } else {
        m.config = ModelConfig::load(model_path);
    }
    const Checkpoint ckpt(model_path);   // maps the files; bind_weights reads headers only
    m.weights = bind_weights(ckpt, m.config);
    mark_shape_only(m.weights);          // the views die with ckpt
    return m;
}

PlanModel plan_model_from_shape(const std::string & shape, const std::string & dtype, int64_t layers) {
    BenchmarkOptions bo;
    bo.shape = shape;
    const bench_detail::Shape s = bench_detail::shape_of(bo);
    std::string upper = dtype;
    for (char & c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
    if (upper == "FP32") upper = "F32";
    if (upper == "FP16") upper = "F16";
    const std::optional<DType> t = dtype_from_name(upper);
    ZT_CHECK(t && (dtype_is_float(*t) || dtype_is_quantized(*t)) && *t != DType::F64,
             "--dtype {} is not a weight type: use bf16, f16, f32, q8_0, q4_0, q4_1, q4_k, q5_k or q6_k", dtype);
    const int64_t L = layers > 0 ? layers : s.layers;
    PlanModel m;
    m.name = s.name + " " + dtype;
    m.config = bench_detail::model_config(s, L, 131072);
    const int64_t C = s.hidden, I = s.intermediate, H = s.heads, KV = s.kv_heads, D = C / H, V = s.vocab;
    void * p = &g_shape_only_sentinel;
    auto w = [&](int64_t rows, int64_t cols) {
        ZT_CHECK(!dtype_is_quantized(*t) || cols % dtype_block_weights(*t) == 0, "shape {}: rows of {} weights are "
                 "not whole {} blocks of {}", s.name, cols, dtype, dtype_block_weights(*t));
        return Tensor(p, *t, {rows, cols});
    };
    auto norm = [&](int64_t n) { return Tensor(p, DType::F32, {n}); };
    m.weights.embed = w(V, C);
    m.weights.final_norm = norm(C);
    m.weights.lm_head = w(V, C);
    LayerWeights L1;
    L1.input_norm = norm(C);
    L1.post_norm = norm(C);
    L1.q = w(H * D, C);
    L1.k = w(KV * D, C);
    L1.v = w(KV * D, C);
    L1.o = w(C, H * D);
    L1.gate = w(I, C);
    L1.up = w(I, C);
    L1.down = w(C, I);
    m.weights.layers.assign(size_t(L), L1);
    return m;
}

PartitionPlan make_plan_partition(const PlanModel & m, const PlanSettings & s, int world) {
    PartitionOptions po;
    po.world = world;
    po.persistence_threshold = s.persistence_threshold;
    po.resident_layers = int(std::min<int64_t>(s.resident_layers, m.config.num_hidden_layers));
    po.partition_embeddings = s.partition_embeddings;
    po.stream = s.tier != "none";
    return plan_partition(m.config, m.weights, po);
}

}  // namespace zt
