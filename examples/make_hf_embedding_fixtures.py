#!/usr/bin/env python3
"""Writes HF-transformers reference embeddings for the fp32 HF-parity fixtures (tests/data/hf/<arch>-fp32).

For each of llama, mistral, qwen2, qwen3 it loads the fixture's saved weights as the base model (AutoModel,
float32, attn_implementation="eager"; the lm_head is not used) and runs every prompt of reference.json plus one
longer prompt (LONG_LEN ids drawn with a fixed seed from 3..V-1) one at a time (no padding), taking
last_hidden_state (after the final RMSNorm) two ways:
  causal      the normal forward pass
  non_causal  bidirectional attention (every token attends to every token), as embedding models such as
              gte-Qwen2 get from `"is_causal": false` in config.json. transformers 5.x honours that config key
              itself: create_causal_mask() falls back to create_bidirectional_mask() when config.is_causal is
              False, so the model is loaded with a config whose is_causal is False. As a cross-check the causal model is also run
              with an explicit 4-D float mask of zeros (1, 1, T, T), which create_causal_mask() returns as-is and
              eager attention adds to the scores; both must agree.
The script asserts non-causality: changing the last token changes the first token's hidden state with
non_causal attention and leaves it bit-identical with causal attention.
Pooling: "last" = the last token's hidden vector, "mean" = the mean over all tokens (in float64, stored as the
float32 value). Vectors are raw (not L2-normalised). Output, per fixture:
  tests/data/hf/<arch>-fp32/embeddings.json
    {"prompts": [[ids], ...], "causal": {"last": [[C floats], ...], "mean": [...]},
     "non_causal": {"last": [...], "mean": [...]}, "hidden_size": C, "note": "..."}
Checked by tests/test_embedding_parity.cpp.

Usage: python3 examples/make_hf_embedding_fixtures.py [--data tests/data/hf]
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModel

ARCHS = ("llama", "mistral", "qwen2", "qwen3")
LONG_LEN = 23
LONG_SEED = 23


def hidden(model, ids, mask4d=False):
    """last_hidden_state (T, C) of one prompt, float32."""
    x = torch.tensor([ids], dtype=torch.long)
    kw = dict(use_cache=False)
    if mask4d:   # additive float mask of zeros: nothing masked
        kw["attention_mask"] = torch.zeros(1, 1, len(ids), len(ids), dtype=torch.float32)
    with torch.no_grad():
        h = model(input_ids=x, **kw).last_hidden_state[0]
    assert h.dtype == torch.float32
    return h


def pool(h):
    last = h[-1].numpy().astype(np.float32)
    mean = h.double().mean(dim=0).numpy().astype(np.float32)
    return last.tolist(), mean.tolist()


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_causality(causal, non_causal, ids, vocab):
    """Changing the last token moves token 0 under non_causal attention, never under causal attention."""
    alt = list(ids)
    alt[-1] = 3 + (alt[-1] - 3 + 1) % (vocab - 3)
    c0, c1 = hidden(causal, ids)[0], hidden(causal, alt)[0]
    n0, n1 = hidden(non_causal, ids)[0], hidden(non_causal, alt)[0]
    assert torch.equal(c0, c1), "causal: the first token saw the last token"
    diff = float((n0 - n1).abs().max())
    assert diff > 1e-3, f"non_causal: the first token did not see the last token (max diff {diff:.2e})"
    return diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()   # no load report about the unused lm_head.weight
    for arch in ARCHS:
        d = os.path.join(args.data, f"{arch}-fp32")
        with open(os.path.join(d, "reference.json")) as f:
            ref = json.load(f)
        vocab = int(ref["vocab_size"])
        long_prompt = np.random.default_rng(LONG_SEED).integers(3, vocab, size=LONG_LEN).tolist()
        prompts = [list(map(int, p)) for p in ref["prompts"]] + [long_prompt]

        causal = AutoModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        # from_pretrained(..., is_causal=False) does not work: is_causal is no declared config field of these
        # architectures, so the kwarg goes to the model's __init__ (TypeError). Set it on the config instead.
        nc_cfg = AutoConfig.from_pretrained(d)
        nc_cfg.is_causal = False
        non_causal = AutoModel.from_pretrained(d, config=nc_cfg, dtype=torch.float32,
                                               attn_implementation="eager").eval()
        assert getattr(causal.config, "is_causal", True) is True
        assert non_causal.config.is_causal is False
        C = int(causal.config.hidden_size)

        out = dict(prompts=prompts, causal=dict(last=[], mean=[]), non_causal=dict(last=[], mean=[]),
                   hidden_size=C)
        min_cross, min_mask_cos, max_mask_diff = 1.0, 1.0, 0.0
        for ids in prompts:
            hc = hidden(causal, ids)
            hn = hidden(non_causal, ids)
            hm = hidden(causal, ids, mask4d=True)    # the cross-check: explicit all-zeros 4-D mask
            max_mask_diff = max(max_mask_diff, float((hn - hm).abs().max()))
            for kind, h in (("causal", hc), ("non_causal", hn)):
                last, mean = pool(h)
                out[kind]["last"].append(last)
                out[kind]["mean"].append(mean)
            for p in ("last", "mean"):
                min_cross = min(min_cross, cosine(out["causal"][p][-1], out["non_causal"][p][-1]))
            min_mask_cos = min(min_mask_cos, cosine(pool(hn)[0], pool(hm)[0]), cosine(pool(hn)[1], pool(hm)[1]))
        assert max_mask_diff < 1e-4, f"is_causal=False vs 4-D zeros mask disagree: {max_mask_diff:.2e}"
        sensitivity = check_causality(causal, non_causal, prompts[-1], vocab)

        out["note"] = (
            f"HF transformers {transformers.__version__} / torch {torch.__version__}: AutoModel (base model, "
            f"final RMSNorm included) on {arch}-fp32/model.safetensors, float32, eager attention, one prompt at a "
            f"time, no padding. prompts = reference.json's prompts + one of {LONG_LEN} ids "
            f"(numpy default_rng({LONG_SEED}).integers(3, {vocab})). causal: the normal forward pass. non_causal: "
            f"loaded with is_causal=False (config.json's `is_causal: false`, which transformers maps to a "
            f"bidirectional mask), cross-checked against an explicit all-zeros 4-D float mask (max |diff| "
            f"{max_mask_diff:.1e}). last = last token's hidden vector, mean = mean over tokens (float64, stored as "
            f"float32); raw, not L2-normalised. min cosine(causal, non_causal) over prompts and poolings: "
            f"{min_cross:.6f}. Made by examples/make_hf_embedding_fixtures.py.")
        path = os.path.join(d, "embeddings.json")
        with open(path, "w") as f:
            json.dump(out, f)
        print(f"{path}: {len(prompts)} prompts (lens {[len(p) for p in prompts]}), C={C}; "
              f"non_causal vs 4-D zeros mask: max |diff| {max_mask_diff:.1e}, min cos {min_mask_cos:.9f}; "
              f"min cos(causal, non_causal) {min_cross:.6f}; token-0 sensitivity to last token {sensitivity:.2e}")


if __name__ == "__main__":
    main()
