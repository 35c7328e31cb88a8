// GGUF <-> HF names and the llama q/k row order (gguf_names.h).
#include <gtest/gtest.h>

#include <set>

#include "runtime/model/gguf_names.h"

using namespace zt;

TEST(GgufNames, TensorNamesMapBothWays) {
    EXPECT_EQ(*hf_name_from_gguf("token_embd.weight"), "model.embed_tokens.weight");
    EXPECT_EQ(*hf_name_from_gguf("output.weight"), "lm_head.weight");
    EXPECT_EQ(*hf_name_from_gguf("blk.12.attn_k.bias"), "model.layers.12.self_attn.k_proj.bias");
    EXPECT_EQ(*hf_name_from_gguf("blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
    EXPECT_FALSE(hf_name_from_gguf("rope_freqs.weight"));
    EXPECT_FALSE(hf_name_from_gguf("blk.x.attn_q.weight"));
    EXPECT_FALSE(hf_name_from_gguf("blk.1attn_q.weight"));
    for (const char * g : {"token_embd.weight", "output_norm.weight", "output.weight", "blk.7.attn_q_norm.weight",
                           "blk.3.attn_output.weight", "blk.30.ffn_down.weight"})
        EXPECT_EQ(*gguf_name_from_hf(*hf_name_from_gguf(g)), g);
    EXPECT_EQ(*gguf_name_from_hf("layers.2.mlp.up_proj.weight"), "blk.2.ffn_up.weight");   // base-model save
    EXPECT_FALSE(gguf_name_from_hf("model.layers.2.mlp.experts.0.weight"));
}

TEST(GgufNames, LlamaQkRowOrderIsConvertHfToGgufsPermutation) {
    // convert_hf_to_gguf: w.reshape(heads, 2, D/2, K).swapaxes(1, 2).reshape(heads*D, K): GGUF row h*D + 2i + half
    // holds HF row h*D + half*D/2 + i. Written out for D = 4, 2 heads.
    const int64_t expect[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(gguf_qk_row_of_hf_row(r, 4), expect[r]) << r;
    std::set<int64_t> seen;
    for (int64_t r = 0; r < 3 * 64; ++r) seen.insert(gguf_qk_row_of_hf_row(r, 64));
    EXPECT_EQ(seen.size(), 3u * 64u);
    EXPECT_EQ(*seen.rbegin(), 3 * 64 - 1);
    EXPECT_TRUE(gguf_arch_permutes_qk("llama"));
    EXPECT_FALSE(gguf_arch_permutes_qk("qwen2"));
}
