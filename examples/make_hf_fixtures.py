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

Usage: python3 examples/make_hf_fixtures.py [--out tests/data/hf]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf"))
    args = ap.parse_args()
    torch.set_num_threads(2)
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
