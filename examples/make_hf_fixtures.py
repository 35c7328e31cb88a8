#!/usr/bin/env python3
"""Regenerates the HF-parity fixtures under tests/data/hf/ with transformers itself.

For each architecture (llama with GQA and llama3 rope_scaling, mistral without a sliding window in force,
qwen2 with q/k/v bias and tied embeddings, qwen3 with q/k norm and head_dim != hidden/heads) it builds a tiny
random-weight model, saves it with save_pretrained (safetensors) in fp32 and bf16 under
tests/data/hf/<arch>-<dtype>/ (config.json + model.safetensors), and writes next to it:
  reference.json  prompts (token ids), greedy (16 tokens per prompt, HF generate, do_sample=False),
                  inv_freq (HF's rotary inv_freq, float32 values), min_margin (smallest top-1 vs top-2 logit gap
                  along the greedy paths), vocab_size
  logits.bin      float32 little-endian logits of every prompt position, prompts in order: (sum(len), V)
The bf16 reference is HF run in float32 on the same bf16-rounded weights (the bf16 save loaded with
dtype=float32). Attention is "eager". Prompts run one at a time (no padding).

--set long (tests/test_hf_long_context.cpp): smaller fp32 models (vocab 64, hidden 32, head_dim 16) whose prompts
(40 and 23 tokens, then 16 greedy tokens) outrun a sliding window of 8 or an original context of 16:
  mistral-window   sliding_window 8 on every layer
  qwen2-window     use_sliding_window, max_window_layers 1 of 3 layers (layer 0 full, 1-2 slide); layer_types is
                   taken out of config.json so the loader derives it
  qwen2-yarn       rope_scaling {type: yarn, factor 4, original_max_position_embeddings 16} and a top-level
                   rope_theta (the transformers 4.x form of Qwen2.5's model cards, written into config.json)
  qwen3-yarn       rope_parameters {rope_type: yarn, factor 3, attention_factor 1.25, beta_fast 1, beta_slow
                   0.125, truncate false}, no
                   original_max_position_embeddings (taken out of config.json: max_position_embeddings 16 is used)
  llama-dynamic    rope_scaling {rope_type: dynamic, factor 4}, max_position_embeddings 16
Besides reference.json and logits.bin each has logits_chunked.bin: HF fed each prompt in chunks of CHUNK = 5
tokens through a DynamicCache(config=...), logits of every position (for dynamic scaling these differ from the
one-piece prefill, as HF recomputes the frequencies per call). reference.json adds chunk, attention_scaling and,
for dynamic, inv_freq_at {seq_len: HF's inv_freq for a call reaching seq_len}. The dynamic rotary state (HF keeps
the longest length seen across calls) is reset before every prompt, so each reference is that prompt run alone.

Usage: python3 examples/make_hf_fixtures.py [--out tests/data/hf] [--set base|long|all]
"""
import argparse
import json
import math
import os
import shutil

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

VOCAB = 256
PROMPT_LENS = (5, 11, 17)
NEW_TOKENS = 16


def make_config(arch):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        # head_dim 16 -> wavelengths 2*pi*10000^(i/8): with original_max_position_embeddings 32 the first is kept
        # (< 8), the second is smoothed (8..32), the rest are divided by factor: every llama3 branch is exercised.
        return transformers.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False,
                                        rope_theta=10000.0,
                                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                          high_freq_factor=4.0, original_max_position_embeddings=32),
                                        **common)
    if arch == "mistral":
        return transformers.MistralConfig(num_key_value_heads=1, sliding_window=None, rope_theta=1000000.0,
                                          tie_word_embeddings=False, **common)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0,
                                        use_sliding_window=False, **common)
    if arch == "qwen3":
        return transformers.Qwen3Config(num_key_value_heads=2, head_dim=24, tie_word_embeddings=False,
                                        rope_theta=1000000.0, use_sliding_window=False, attention_bias=False,
                                        **common)
    raise ValueError(arch)


def randomize(model, seed):
    """Weights with O(1) activations and well-separated logits (HF's 0.02 init gives near-uniform logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # (out, in) projection
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def reference(model, prompts):
    logits, greedy, margin = [], [], float("inf")
    # no eos: every prompt gets exactly NEW_TOKENS tokens, each the argmax of the raw logits
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
                           output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p], dtype=torch.long)
            out = model(input_ids=ids).logits[0].float()                      # (len, V)
            logits.append(out.numpy())
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            toks = g.sequences[0, len(p):].tolist()
            assert len(toks) == NEW_TOKENS
            greedy.append(toks)
            for tok, s in zip(toks, g.logits):
                top = torch.topk(s[0].float(), 2)
                assert int(top.indices[0]) == tok
                margin = min(margin, float(top.values[0] - top.values[1]) / float(s[0].abs().max()))
    return np.concatenate(logits, axis=0).astype("<f4"), greedy, margin


LONG_VOCAB = 64
LONG_PROMPT_LENS = (40, 23)
CHUNK = 5


def make_long_config(name):
    common = dict(vocab_size=LONG_VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if name == "mistral-window":
        return transformers.MistralConfig(sliding_window=8, rope_theta=10000.0, **common)
    if name == "qwen2-window":
        common.update(num_hidden_layers=3)
        return transformers.Qwen2Config(use_sliding_window=True, sliding_window=8, max_window_layers=1,
                                        rope_theta=10000.0, **common)
    if name == "qwen2-yarn":
        common.update(max_position_embeddings=64)
        # theta 100: the ramp between the dims kept and the dims interpolated spans dims 0..2
        return transformers.Qwen2Config(rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=16),
                                        rope_theta=100.0, **common)
    if name == "qwen3-yarn":
        common.update(max_position_embeddings=16)
        # ramp from dim 1.62 to 5.24, not truncated to whole dims
        return transformers.Qwen3Config(rope_parameters=dict(rope_type="yarn", rope_theta=100.0, factor=3.0,
                                                             attention_factor=1.25, beta_fast=1, beta_slow=0.125,
                                                             truncate=False),
                                        attention_bias=False, **common)
    if name == "llama-dynamic":
        common.update(max_position_embeddings=16)
        return transformers.LlamaConfig(rope_scaling=dict(rope_type="dynamic", factor=4.0), rope_theta=10000.0,
                                        **common)
    raise ValueError(name)


def reset_rope(model):
    """Dynamic RoPE keeps the longest length of any call so far; start each prompt from the loaded state."""
    for m in model.modules():
        if hasattr(m, "original_inv_freq") and hasattr(m, "max_seq_len_cached"):
            m.register_buffer("inv_freq", m.original_inv_freq.clone(), persistent=False)
            m.max_seq_len_cached = m.original_max_seq_len


def edit_config(d, fn):
    path = os.path.join(d, "config.json")
    with open(path) as f:
        j = json.load(f)
    fn(j)
    with open(path, "w") as f:
        json.dump(j, f, indent=2)


def long_reference(model, prompts):
    """reference() for --set long, the rotary state reset per prompt and per call; plus the chunked prefill."""
    logits, greedy, chunked, margin = [], [], [], float("inf")
    model.generation_config.eos_token_id = None   # else generate() takes the model's eos over gen's None
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
                           output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p], dtype=torch.long)
            reset_rope(model)
            logits.append(model(input_ids=ids).logits[0].float().numpy())
            reset_rope(model)
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            toks = g.sequences[0, len(p):].tolist()
            assert len(toks) == NEW_TOKENS
            greedy.append(toks)
            for tok, s in zip(toks, g.logits):
                top = torch.topk(s[0].float(), 2)
                assert int(top.indices[0]) == tok
                margin = min(margin, float(top.values[0] - top.values[1]) / float(s[0].abs().max()))
            reset_rope(model)
            cache = transformers.DynamicCache(config=model.config)
            for c0 in range(0, len(p), CHUNK):
                out = model(input_ids=ids[:, c0:c0 + CHUNK], past_key_values=cache, use_cache=True)
                chunked.append(out.logits[0].float().numpy())
    cat = lambda xs: np.concatenate(xs, axis=0).astype("<f4")
    return cat(logits), greedy, cat(chunked), margin


def make_long(out_dir, rng):
    prompts = [rng.integers(3, LONG_VOCAB, size=n).tolist() for n in LONG_PROMPT_LENS]
    for i, name in enumerate(("mistral-window", "qwen2-window", "qwen2-yarn", "qwen3-yarn", "llama-dynamic")):
        torch.manual_seed(200 + i)
        model = AutoModelForCausalLM.from_config(make_long_config(name), attn_implementation="eager",
                                                 dtype=torch.float32)
        randomize(model, 200 + i)
        d = os.path.join(out_dir, name)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        for f in os.listdir(d):
            if f not in ("config.json", "model.safetensors"):
                os.remove(os.path.join(d, f))
        if name == "qwen2-window":
            edit_config(d, lambda j: j.pop("layer_types"))
        if name == "qwen2-yarn":   # as Qwen2.5's model cards write it: 4.x "rope_scaling" with "type"
            def qwen25_form(j):
                rp = j.pop("rope_parameters")
                j["rope_theta"] = rp["rope_theta"]
                j["rope_scaling"] = dict(type="yarn", factor=rp["factor"],
                                         original_max_position_embeddings=rp["original_max_position_embeddings"])
            edit_config(d, qwen25_form)
        if name == "qwen3-yarn":
            edit_config(d, lambda j: j["rope_parameters"].pop("original_max_position_embeddings"))
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        logits, greedy, chunked, margin = long_reference(ref, prompts)
        logits.tofile(os.path.join(d, "logits.bin"))
        chunked.tofile(os.path.join(d, "logits_chunked.bin"))
        rot = ref.model.rotary_emb
        reset_rope(ref)
        extra = {}
        if name == "llama-dynamic":
            fn = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["dynamic"]
            extra["inv_freq_at"] = {str(n): fn(ref.config, None, seq_len=torch.tensor(n))[0].float().tolist()
                                    for n in (17, 23, 40, 55)}
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(dict(arch=name, dtype="fp32", vocab_size=LONG_VOCAB, prompts=prompts, greedy=greedy,
                           inv_freq=rot.inv_freq.float().tolist(), attention_scaling=float(rot.attention_scaling),
                           chunk=CHUNK, min_margin=margin, transformers=transformers.__version__,
                           torch=torch.__version__, **extra), f)
        print(f"{d}: logits {logits.shape}, min greedy margin {margin:.2e} (relative to max |logit|)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf"))
    ap.add_argument("--set", choices=("base", "long", "all"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.set in ("long", "all"):
        make_long(args.out, np.random.default_rng(11))
    if args.set == "long":
        return
    rng = np.random.default_rng(7)
    prompts = [rng.integers(3, VOCAB, size=n).tolist() for n in PROMPT_LENS]
    for i, arch in enumerate(("llama", "mistral", "qwen2", "qwen3")):
        torch.manual_seed(100 + i)
        cfg = make_config(arch)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        randomize(model, 100 + i)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            d = os.path.join(args.out, f"{arch}-{dtype_name}")
            shutil.rmtree(d, ignore_errors=True)
            model.to(dtype).save_pretrained(d, safe_serialization=True)
            model.to(torch.float32)
            for f in os.listdir(d):  # config.json + model.safetensors only
                if f not in ("config.json", "model.safetensors"):
                    os.remove(os.path.join(d, f))
            # the reference: the saved weights, loaded back and run in float32
            ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
            logits, greedy, margin = reference(ref, prompts)
            logits.tofile(os.path.join(d, "logits.bin"))
            inv_freq = ref.model.rotary_emb.inv_freq.float().tolist()
            with open(os.path.join(d, "reference.json"), "w") as f:
                json.dump(dict(arch=arch, dtype=dtype_name, vocab_size=VOCAB, prompts=prompts, greedy=greedy,
                               inv_freq=inv_freq, min_margin=margin,
                               transformers=transformers.__version__, torch=torch.__version__), f)
            print(f"{d}: logits {logits.shape}, min greedy margin {margin:.2e} (relative to max |logit|)")


if __name__ == "__main__":
    main()
