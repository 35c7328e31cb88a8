// The model shapes `ztinfer bench` measures (--shape and its overrides) and their random bf16 weights: ONE
// decoder layer in host memory that every layer points at (see benchmark_impl.h).
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend/parallel_for.h"
#include "runtime/base/error.h"
#include "runtime/base/trace.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/model/dtype.h"

namespace zt::bench_detail {

Shape shape_of(const BenchmarkOptions & opt) {
    Shape s;
    if (opt.shape == "llama2-7b") s = {"llama2-7b", 4096, 11008, 32, 32, 32000, 32};
    else if (opt.shape == "llama2-13b") s = {"llama2-13b", 5120, 13824, 40, 40, 32000, 40};
    else if (opt.shape == "llama2-70b") s = {"llama2-70b", 8192, 28672, 64, 8, 32000, 80};
    else if (opt.shape == "qwen2-7b") s = {"qwen2-7b", 3584, 18944, 28, 4, 152064, 28};   // gte-Qwen2-7B's body
    else ZT_FAIL("--shape {} is not known: use llama2-7b, llama2-13b, llama2-70b or qwen2-7b (and --hidden, --intermediate, "
                 "--heads, --kv-heads, --vocab to change it)", opt.shape);
    const bool custom = opt.hidden > 0 || opt.intermediate > 0 || opt.heads > 0 || opt.kv_heads > 0 || opt.vocab > 0;
    if (opt.hidden > 0) s.hidden = opt.hidden;
    if (opt.intermediate > 0) s.intermediate = opt.intermediate;
    if (opt.heads > 0) s.heads = opt.heads;
    if (opt.kv_heads > 0) s.kv_heads = opt.kv_heads;
    else if (opt.heads > 0 && s.heads % s.kv_heads != 0) s.kv_heads = s.heads;
    if (opt.vocab > 0) s.vocab = opt.vocab;
    if (opt.layers > 0) s.layers = opt.layers;
    if (custom) s.name += " (modified)";
    return s;
}

ModelConfig model_config(const Shape & s, int64_t layers, int64_t max_positions, bool causal) {
    json j = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", s.hidden},
                    {"intermediate_size", s.intermediate}, {"num_hidden_layers", layers},
                    {"num_attention_heads", s.heads}, {"num_key_value_heads", s.kv_heads}, {"vocab_size", s.vocab},
                    {"max_position_embeddings", std::max<int64_t>(4096, max_positions)}, {"rms_norm_eps", 1e-5},
                    {"rope_theta", 10000.0}, {"torch_dtype", "bfloat16"}};
    if (!causal) j["is_causal"] = false;
    return ModelConfig::from_json(j, "bench shape " + s.name);
}

RandomModel::RandomModel(const Shape & s, int n_threads) {
    ThreadPool pool(n_threads);
    pool_ = &pool;
    const int64_t C = s.hidden, I = s.intermediate, D = s.hidden / s.heads, H = s.heads, KV = s.kv_heads;
    const float in_c = 1.0f / std::sqrt(float(C));
    embed_ = make({s.vocab, C}, 1.0f, 1.0f);
    norm_ = make({C}, 0.0f, 1.0f);
    layer_.input_norm = make({C}, 0.0f, 1.0f);
    layer_.post_norm = make({C}, 0.0f, 1.0f);
    layer_.q = make({H * D, C}, in_c, 0.0f);
    layer_.k = make({KV * D, C}, in_c, 0.0f);
    layer_.v = make({KV * D, C}, in_c, 0.0f);
    layer_.o = make({C, H * D}, 1.0f / std::sqrt(float(H * D)), 0.0f);
    layer_.gate = make({I, C}, in_c, 0.0f);
    layer_.up = make({I, C}, in_c, 0.0f);
    layer_.down = make({C, I}, 1.0f / std::sqrt(float(I)), 0.0f);
    pool_ = nullptr;
}

ModelWeights RandomModel::weights(int64_t layers) const {
    ModelWeights w;
    w.embed = embed_;
    w.final_norm = norm_;
    w.lm_head = embed_;   // tied: one more copy of the vocabulary is not worth the host memory
    w.layers.assign(size_t(layers), layer_);
    return w;
}

// multiply-adds of the layer's matmuls per token
double RandomModel::layer_params() const {
    double n = 0;
    for (const Tensor * t : {&layer_.q, &layer_.k, &layer_.v, &layer_.o, &layer_.gate, &layer_.up, &layer_.down})
        n += double(t->numel());
    return n;
}

// values uniform in (offset - a, offset + a) with a = sqrt(3) std
Tensor RandomModel::make(std::vector<int64_t> shape, float std_dev, float offset) {
    Tensor t(nullptr, DType::BF16, std::move(shape));
    storage_.emplace_back(new uint16_t[size_t(t.numel())]);
    uint16_t * p = storage_.back().get();
    t.data = p;
    const float a = std::sqrt(3.0f) * std_dev;
    const uint64_t seed = storage_.size();
    pool_->parallel_for(t.numel(), 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float u = float(pattern_word(uint64_t(i), seed) >> 8) * (1.0f / 16777216.0f);   // [0, 1)
            p[i] = f32_to_bf16(offset + a * (2.0f * u - 1.0f));
        }
    });
    return t;
}

double layer_compute_us(const Tracer & tracer) {
    const json events = json::parse("[" + tracer.events_json() + "]");
    double us = 0;
    for (const auto & e : events)
        if (e.value("ph", "") == "X" && e.value("name", "").rfind("compute layer", 0) == 0) us += e["dur"].get<double>();
    return us;
}

}  // namespace zt::bench_detail
