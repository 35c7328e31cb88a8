// Quantize: `ztinfer quantize`'s pieces. quantize_row against the gguf package's bytes (Q8_0/Q4_0/Q4_1, fixtures
// of examples/make_quantize_fixtures.py) and its round-trip error on Gaussian rows for every type; GgufWriter
// through read_gguf_header (metadata, tensor index, data at the offsets, no file under the final name when a write
// is abandoned); quantize_model on `ztinfer synth` models: names, shapes, types, metadata keys, llama's q/k row
// order, and its errors for a bad --type, a missing model and an unwritable --out.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_names.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/quant_block.h"
#include "runtime/model/quantize_block.h"
#include "runtime/model/quantize_model.h"
#include "runtime/model/synthetic_model.h"
#include "test_support.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
const QuantType kAllTypes[] = {QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1,
                               QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K};
// RMS error bounds relative to RMS(x) on Gaussian rows, by QuantType: a little above what the schemes reach (0.54%,
// 8.7%, 7.8%, 7.0%, 3.5%, 1.7%: about what a 32-block min/max grid of 8, 4 and 5 bits and a 16-block grid of 6 bits
// allow; the gguf package's Q5_1 gets 3.8% on the same rows), far below the next type down.
const double kBound[] = {0.006, 0.095, 0.085, 0.078, 0.039, 0.019};

// RMS(dequantize(quantize(x)) - x) / RMS(x) over rows of n weights.
double relative_rms_error(QuantType t, const std::vector<float> & x, int64_t n) {
    std::vector<uint8_t> q(size_t(quant_row_bytes(t, n)));
    std::vector<float> y(static_cast<size_t>(n));
    double err = 0, ref = 0;
    for (size_t r = 0; r < x.size() / size_t(n); ++r) {
        quantize_row(t, x.data() + r * size_t(n), q.data(), n);
        dequantize_row(t, q.data(), y.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            const double d = double(y[size_t(i)]) - x[r * size_t(n) + size_t(i)];
            err += d * d;
            ref += double(x[r * size_t(n) + size_t(i)]) * x[r * size_t(n) + size_t(i)];
        }
    }
    return std::sqrt(err / ref);
}

std::vector<float> gaussian(size_t n, float sigma, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> x(n);
    for (float & v : x) v = dist(rng);
    return x;
}

TEST(Quantize, ReferenceTypesMatchTheGgufPackageByteForByte) {
    const std::string dir = std::string(ZT_TEST_DATA) + "/quantize/";
    const std::string in = test::read_file(dir + "input.f32");
    ASSERT_EQ(in.size(), 16u * 128 * 4) << "missing fixture (examples/make_quantize_fixtures.py makes it)";
    std::vector<float> x(in.size() / 4);
    std::memcpy(x.data(), in.data(), in.size());
    for (QuantType t : {QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1}) {
        const std::string want = test::read_file(dir + quant_layout(t).name + ".bin");
        const int64_t row = 128, rows = int64_t(x.size()) / row, row_bytes = quant_row_bytes(t, row);
        ASSERT_EQ(int64_t(want.size()), rows * row_bytes) << quant_layout(t).name;
        std::string got(want.size(), '\0');
        for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * row, got.data() + r * row_bytes, row);
        int diffs = 0;
        for (size_t i = 0; i < got.size(); ++i)
            if (got[i] != want[i] && diffs++ < 5)
                ADD_FAILURE() << quant_layout(t).name << " byte " << i << " (block " << i / size_t(quant_layout(t).block_bytes)
                              << "): " << int(uint8_t(got[i])) << " vs gguf's " << int(uint8_t(want[i]));
        EXPECT_EQ(diffs, 0) << quant_layout(t).name;
    }
}

TEST(Quantize, RoundTripErrorOnGaussianRowsIsWithinEachTypesBound) {
    const int64_t n = 1024;
    const std::vector<float> x = gaussian(size_t(64 * n), 0.02f, 7);
    double err[6];
    for (QuantType t : kAllTypes) {
        err[int(t)] = relative_rms_error(t, x, n);
        std::printf("  %s: RMS error %.2f%% of RMS(x)\n", quant_layout(t).name, 100 * err[int(t)]);
        EXPECT_LT(err[int(t)], kBound[int(t)]) << quant_layout(t).name;
    }
    // the K types' fitted scales beat the reference types of as many bits
    EXPECT_LT(err[int(QuantType::Q4_K)], err[int(QuantType::Q4_0)]);
    EXPECT_LT(err[int(QuantType::Q4_K)], err[int(QuantType::Q4_1)]);
    EXPECT_LT(err[int(QuantType::Q5_K)], 0.6 * err[int(QuantType::Q4_K)]);
    EXPECT_LT(err[int(QuantType::Q6_K)], 0.6 * err[int(QuantType::Q5_K)]);
    EXPECT_LT(err[int(QuantType::Q8_0)], 0.5 * err[int(QuantType::Q6_K)]);
}

TEST(Quantize, ScalesOffsetsAndFlatBlocksReadBack) {
    const int64_t n = 512;
    for (QuantType t : kAllTypes) {
        for (float sigma : {1e-3f, 30.0f}) {   // the error is relative: the same at any scale fp16 holds
            const std::vector<float> x = gaussian(size_t(8 * n), sigma, 11);
            EXPECT_LT(relative_rms_error(t, x, n), kBound[int(t)]) << quant_layout(t).name << " sigma " << sigma;
        }
        std::vector<float> x = gaussian(size_t(n), 0.02f, 3);   // all positive, with an offset (the min's path)
        for (float & v : x) v = 0.5f + std::fabs(v);
        EXPECT_LT(relative_rms_error(t, x, n), kBound[int(t)]) << quant_layout(t).name << " positive";
        std::vector<float> flat(size_t(n), 0.0f), y(size_t(n), 1.0f);   // zeros read back as zeros
        std::vector<uint8_t> q(size_t(quant_row_bytes(t, n)));
        quantize_row(t, flat.data(), q.data(), n);
        dequantize_row(t, q.data(), y.data(), n);
        for (float v : y) ASSERT_EQ(v, 0.0f) << quant_layout(t).name;
    }
    try {
        std::vector<float> x(300);
        std::vector<uint8_t> q(1024);
        quantize_row(QuantType::Q4_K, x.data(), q.data(), 300);
        FAIL() << "no error";
    } catch (const Error & e) {
        EXPECT_HAS(std::string(e.what()), "Q4_K weights come in blocks of 256");
    }
}

TEST(Quantize, GgufWriterRoundTripsThroughTheHeaderReader) {
    const std::string dir = test::make_temp_dir("gguf_writer");
    const std::string path = dir + "/t.gguf";
    const std::vector<float> norm = gaussian(7, 1.0f, 1), mat = gaussian(3 * 256, 0.02f, 2);
    std::vector<uint8_t> q4k(size_t(3 * quant_row_bytes(QuantType::Q4_K, 256)));
    for (int r = 0; r < 3; ++r) quantize_row(QuantType::Q4_K, mat.data() + 256 * r, q4k.data() + r * 144, 256);
    std::vector<uint16_t> f16(2 * 5 * 3);
    for (size_t i = 0; i < f16.size(); ++i) f16[i] = f32_to_f16(float(i) - 7.5f);
    {
        GgufWriter w(path);
        w.add_string("general.architecture", "llama");
        w.add_u32("llama.block_count", 30);
        w.add_i32("test.negative", -5);
        w.add_f32("llama.rope.freq_base", 10000.5f);
        w.add_bool("tokenizer.ggml.add_bos_token", true);
        w.add_strings("tokenizer.ggml.tokens", {"a", "", "\xc4\xa0the"});
        w.add_i32s("tokenizer.ggml.token_type", {1, 3, 1});
        w.add_f32s("tokenizer.ggml.scores", {0.0f, -1.5f, -1000.0f});
        w.add_tensor("norm.weight", {7}, GgmlType::F32);
        w.add_tensor("blk.0.attn_q.weight", {3, 256}, GgmlType::Q4_K);
        w.add_tensor("cube", {2, 5, 3}, GgmlType::F16);
        EXPECT_THROW(w.add_u32("llama.block_count", 1), Error);
        EXPECT_THROW(w.add_tensor("cube", {1}, GgmlType::F32), Error);
        EXPECT_THROW(w.add_tensor("bad", {2, 100}, GgmlType::Q4_K), Error);   // not whole blocks
        w.write_header();
        w.write_tensor_data(norm.data(), 7 * 4);
        w.write_tensor_data(q4k.data(), 144);   // a tensor may come in pieces
        w.write_tensor_data(q4k.data() + 144, 2 * 144);
        w.write_tensor_data(f16.data(), f16.size() * 2);
        EXPECT_FALSE(fs::exists(path)) << "the final name appears only at finish()";
        w.finish();
    }
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    const GgufFile g = read_gguf_header(path);
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.alignment, 32u);
    EXPECT_EQ(g.metadata["general.architecture"], "llama");
    EXPECT_EQ(g.metadata["llama.block_count"], 30);
    EXPECT_EQ(g.metadata["test.negative"], -5);
    EXPECT_EQ(g.metadata["llama.rope.freq_base"].get<double>(), 10000.5);
    EXPECT_EQ(g.metadata["tokenizer.ggml.add_bos_token"], true);
    EXPECT_EQ(g.metadata["tokenizer.ggml.tokens"], nlohmann::json({"a", "", "\xc4\xa0the"}));
    EXPECT_EQ(g.metadata["tokenizer.ggml.token_type"], nlohmann::json({1, 3, 1}));
    EXPECT_EQ(g.metadata["tokenizer.ggml.scores"], nlohmann::json({0.0, -1.5, -1000.0}));
    EXPECT_EQ(g.metadata.size(), 8u);
    ASSERT_EQ(g.tensors.size(), 3u);
    EXPECT_EQ(g.tensors[0].name, "norm.weight");
    EXPECT_EQ(g.tensors[0].shape, std::vector<int64_t>({7}));
    EXPECT_EQ(g.tensors[1].shape, std::vector<int64_t>({3, 256}));
    EXPECT_EQ(g.tensors[1].type_name, "Q4_K");
    EXPECT_EQ(g.tensors[2].shape, std::vector<int64_t>({2, 5, 3}));
    EXPECT_EQ(g.tensors[2].type_name, "F16");
    const std::string file = test::read_file(path);
    const std::string want[] = {std::string(reinterpret_cast<const char *>(norm.data()), 28),
                                std::string(reinterpret_cast<const char *>(q4k.data()), q4k.size()),
                                std::string(reinterpret_cast<const char *>(f16.data()), f16.size() * 2)};
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(g.tensors[size_t(i)].offset % 32, 0u);
        ASSERT_EQ(g.tensors[size_t(i)].bytes, want[i].size());
        EXPECT_EQ(file.substr(size_t(g.tensors[size_t(i)].offset), want[i].size()), want[i]) << g.tensors[size_t(i)].name;
    }
    {   // abandoned: the writer is destroyed without finish()
        GgufWriter w(dir + "/gone.gguf");
        w.add_tensor("x", {4}, GgmlType::F32);
        w.write_header();
        EXPECT_TRUE(fs::exists(dir + "/gone.gguf.tmp"));
    }
    EXPECT_FALSE(fs::exists(dir + "/gone.gguf.tmp"));
    EXPECT_FALSE(fs::exists(dir + "/gone.gguf"));
    fs::remove_all(dir);
}

// A synth model folder (hidden 256 so the K types' 256-blocks fit) quantized; returns the GGUF's header.
struct Quantized {
    std::string dir, model, out;
    GgufFile gguf;
};
Quantized synth_and_quantize(const std::string & arch, const std::string & tokenizer, int64_t hidden,
                             const std::string & type) {
    Quantized q;
    q.dir = test::make_temp_dir("quantize");
    SynthOptions o;
    o.arch = arch;
    o.layers = 2, o.hidden = hidden, o.heads = 4, o.kv_heads = 2, o.intermediate = 2 * hidden;
    o.tokenizer_dir = std::string(ZT_TEST_DATA) + "/tokenizers/" + tokenizer;
    o.out_dir = q.model = q.dir + "/model";
    synthesize_model(o);
    q.out = q.dir + "/model." + type + ".gguf";
    QuantizeOptions qo;
    qo.model_dir = q.model, qo.type = type, qo.out = q.out, qo.progress = false;
    const QuantizeReport r = quantize_model(qo);
    EXPECT_EQ(r.bytes_out, fs::file_size(q.out));
    q.gguf = read_gguf_header(q.out);
    return q;
}

const GgufTensorInfo & tensor_named(const GgufFile & g, const std::string & name) {
    for (const auto & t : g.tensors) if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
}

// The GGUF tensor dequantized (rows x K) next to the HF tensor widened to fp32.
std::vector<float> read_back(const Quantized & q, const GgufTensorInfo & t) {
    const std::string file = test::read_file(q.out);
    const int64_t k = t.shape.back(), rows = int64_t(t.bytes) / quant_row_bytes(*quant_type_from_name(t.type_name), k);
    std::vector<float> out(size_t(rows * k));
    dequantize_row(*quant_type_from_name(t.type_name), file.data() + t.offset, out.data(), rows * k);
    return out;
}

TEST(Quantize, LlamaModelTensorsTypesMetadataAndQkOrder) {
    const Quantized q = synth_and_quantize("llama", "llama2", 256, "q4_k");
    const GgufFile & g = q.gguf;
    const ModelConfig cfg = ModelConfig::load(q.model);
    const Checkpoint ckpt(q.model);
    // every checkpoint tensor under its GGUF name with its shape; the llama3 rope factors added
    EXPECT_EQ(g.tensors.size(), ckpt.names().size() + 1);
    for (const std::string & hf : ckpt.names()) {
        const GgufTensorInfo & t = tensor_named(g, *gguf_name_from_hf(hf));
        EXPECT_EQ(t.shape, ckpt.tensor(hf).shape) << hf;
        const std::string want = t.shape.size() == 1 ? "F32" : t.name == "output.weight" ? "Q6_K" : "Q4_K";
        EXPECT_EQ(t.type_name, want) << t.name;
    }
    EXPECT_EQ(tensor_named(g, "rope_freqs.weight").shape, std::vector<int64_t>({cfg.head_dim / 2}));
    EXPECT_EQ(g.tensors.front().name, "rope_freqs.weight");
    EXPECT_EQ(g.tensors[1].name, "token_embd.weight");
    EXPECT_EQ(g.tensors.back().name, "output.weight");
    for (const char * key : {"general.architecture", "general.name", "general.file_type", "general.quantization_version",
                             "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                             "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length",
                             "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
                             "llama.rope.dimension_count", "llama.attention.key_length", "tokenizer.ggml.model",
                             "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                             "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"})
        EXPECT_TRUE(g.metadata.contains(key)) << key;
    EXPECT_EQ(g.metadata["general.architecture"], "llama");
    EXPECT_EQ(g.metadata["general.file_type"], 14);
    EXPECT_EQ(g.metadata["general.quantization_version"], 2);
    EXPECT_EQ(g.metadata["llama.block_count"], 2);
    EXPECT_EQ(g.metadata["llama.attention.head_count_kv"], 2);
    EXPECT_EQ(g.metadata["llama.rope.dimension_count"], cfg.head_dim);
    EXPECT_EQ(g.metadata["tokenizer.ggml.model"], "llama");
    EXPECT_EQ(g.metadata["tokenizer.ggml.tokens"].size(), size_t(cfg.vocab_size));
    EXPECT_EQ(g.metadata["tokenizer.ggml.tokens"][1], "<s>");
    EXPECT_EQ(g.metadata["tokenizer.ggml.token_type"][0], 3);      // <unk>: control, as convert_hf_to_gguf
    EXPECT_EQ(g.metadata["tokenizer.ggml.token_type"][1], 3);      // <s>: control
    EXPECT_EQ(g.metadata["tokenizer.ggml.token_type"][3], 6);      // <0x00>: byte
    EXPECT_EQ(g.metadata["tokenizer.ggml.bos_token_id"], 1);
    EXPECT_EQ(g.metadata["tokenizer.ggml.add_bos_token"], true);
    // q rows in GGUF's interleaved order, v rows as they are; the weights within Q4_K's error
    for (const char * proj : {"q", "k", "v"}) {
        const std::string hf = std::string("model.layers.1.self_attn.") + proj + "_proj.weight";
        const Tensor w = ckpt.tensor(hf);
        const std::vector<float> got = read_back(q, tensor_named(g, *gguf_name_from_hf(hf)));
        const int64_t rows = w.dim(0), k = w.dim(1);
        double err = 0, ref = 0;
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t gr = proj[0] == 'v' ? r : gguf_qk_row_of_hf_row(r, cfg.head_dim);
            for (int64_t j = 0; j < k; ++j) {
                const double d = got[size_t(gr * k + j)] - w.ptr<float>()[r * k + j];
                err += d * d, ref += double(w.ptr<float>()[r * k + j]) * w.ptr<float>()[r * k + j];
            }
        }
        EXPECT_LT(std::sqrt(err / ref), 0.08) << hf;
    }
    fs::remove_all(q.dir);
}

TEST(Quantize, QwenModelFallsBackToQ8_0AndDescribesAByteLevelTokenizer) {
    // hidden 64: rows are not whole 256-blocks, so every matrix is Q8_0; qwen2 ties the embedding (no output)
    const Quantized q = synth_and_quantize("qwen2", "qwen3", 64, "q4_k");
    const GgufFile & g = q.gguf;
    for (const auto & t : g.tensors) {
        EXPECT_EQ(t.type_name, t.shape.size() == 1 ? "F32" : "Q8_0") << t.name;
        EXPECT_NE(t.name, "output.weight");
    }
    EXPECT_EQ(tensor_named(g, "blk.0.attn_q.bias").type_name, "F32");
    EXPECT_EQ(g.metadata["general.architecture"], "qwen2");
    EXPECT_EQ(g.metadata["qwen2.block_count"], 2);
    EXPECT_FALSE(g.metadata.contains("qwen2.vocab_size"));   // convert_hf_to_gguf writes it for llama only
    EXPECT_EQ(g.metadata["tokenizer.ggml.model"], "gpt2");
    EXPECT_EQ(g.metadata["tokenizer.ggml.pre"], "qwen2");
    EXPECT_GT(g.metadata["tokenizer.ggml.merges"].size(), 100000u);
    EXPECT_EQ(g.metadata["tokenizer.ggml.merges"][0], "\xc4\xa0 \xc4\xa0");
    EXPECT_EQ(g.metadata["tokenizer.ggml.add_bos_token"], false);
    EXPECT_TRUE(g.metadata.contains("tokenizer.chat_template"));
    EXPECT_FALSE(g.metadata.contains("tokenizer.ggml.scores"));
    const auto & tokens = g.metadata["tokenizer.ggml.tokens"];
    const auto & types = g.metadata["tokenizer.ggml.token_type"];
    ASSERT_EQ(tokens.size(), types.size());
    EXPECT_EQ(tokens[151643], "<|endoftext|>");
    EXPECT_EQ(types[151643], 3);
    EXPECT_EQ(types[0], 1);
    EXPECT_EQ(g.metadata["tokenizer.ggml.eos_token_id"], 151645);   // <|im_end|>
    fs::remove_all(q.dir);
}

TEST(Quantize, ErrorsNameTheTypeTheModelAndTheOutput) {
    auto message = [](const QuantizeOptions & o) {
        try {
            quantize_model(o);
        } catch (const Error & e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string dir = test::make_temp_dir("quantize_err");
    QuantizeOptions o;
    o.model_dir = dir + "/nothing", o.type = "q3_k", o.out = dir + "/x.gguf", o.progress = false;
    EXPECT_HAS(message(o), "--type q3_k is not one of q8_0, q4_0, q4_1, q4_k, q5_k, q6_k");
    o.type = "Q8_0";
    EXPECT_HAS(message(o), "--model " + dir + "/nothing is not a folder");
    SynthOptions so;
    so.arch = "llama", so.tokenizer_dir = std::string(ZT_TEST_DATA) + "/tokenizers/llama2", so.out_dir = dir + "/m";
    synthesize_model(so);
    o.model_dir = so.out_dir, o.out = dir + "/no/such/folder/x.gguf";
    EXPECT_HAS(message(o), "cannot create " + o.out + ".tmp");
    o.out = dir + "/x.gguf";
    EXPECT_EQ(message(o), "no error");
    EXPECT_TRUE(fs::exists(o.out));
    EXPECT_FALSE(fs::exists(o.out + ".tmp"));
    fs::remove_all(dir);
}

}  // namespace
}  // namespace zt
