#!/usr/bin/env python3
"""Regenerates tests/data/gguf_models/: tiny random GGUF models and what transformers computes from them.

For llama (GQA, untied lm_head), qwen2 (q/k/v biases, tied embeddings) and qwen3 (q/k norms, head_dim 16 with
hidden 32, so head_dim != hidden / heads) it builds a tiny random-weight HF model (transformers, the same recipe as
examples/make_hf_fixtures.py), a tiny byte-level BPE tokenizer (tokenizers, trained on tests/data/tokenizer_corpus.jsonl; 300 tokens, the
model's vocab padded to 320 as convert_hf_to_gguf pads it), and writes the model as GGUF with the gguf package's
GGUFWriter the way llama.cpp's convert_hf_to_gguf does: tensor names from gguf's TensorNameMap, llama's q/k rows
permuted per head (reshape(heads, 2, D/2, K).swapaxes(1, 2)), the {arch}.* keys convert_hf_to_gguf writes, and the
tokenizer as tokenizer.ggml.* (gpt2 model, tokens, token types, merges, bos/eos). One file per type:
  <arch>-f32.gguf    every tensor F32
  <arch>-f16.gguf    every matrix and the embedding F16, norms and biases F32 (convert_hf_to_gguf's default)
  <arch>-q8_0.gguf   every matrix and the embedding Q8_0 (gguf.quants.quantize), norms and biases F32
  <arch>-q4_0.gguf   every matrix and the embedding Q4_0
  <arch>-q4_1.gguf   matrices Q4_1, the embedding Q8_0 (the mix of SmolLM2-135M-Instruct.Q4_1.gguf)
The F32 file's logits and greedy tokens are checked against the HF model it was made from. Each file is loaded back by transformers (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...): dequantized
to float32; qwen3 gets head_dim passed, as transformers' GGUF reader skips attention.key_length for qwen3) and
run in float32, eager attention:
  <arch>-<type>.json         prompts (token ids), greedy (8 tokens per prompt, no eos), vocab_size, min_margin
                             (smallest top-1 vs top-2 gap along the greedy paths, relative to max |logit|)
  <arch>-<type>.logits.bin   float32 little-endian logits of every prompt position, prompts in order: (sum(len), V)
Beside them: tokenizer/ (tokenizer.json, tokenizer_config.json) and <arch>.config.json, the config.json of the
HF model each GGUF was made from.

Usage: python3 examples/make_gguf_model_fixtures.py [--out tests/data/gguf_models]
"""
import argparse
import json
import math
import os
import shutil
import tempfile

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GenerationConfig

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 320          # model rows; the tokenizer has 300, the rest are [PADn] as convert_hf_to_gguf writes them
TOKENIZER_VOCAB = 300
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPT_LENS = (5, 9)
NEW_TOKENS = 8
TYPES = {"f32": None, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}
ARCH = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}
FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}


def make_tokenizer(out_dir):
    """A byte-level BPE (GPT-2 style pre-tokenizer) with 300 tokens: 3 specials, 256 bytes, 41 merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with open(os.path.join(HERE, "..", "tests", "data", "tokenizer_corpus.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    tok.train_from_iterator(texts, trainer)
    assert tok.get_vocab_size() == TOKENIZER_VOCAB, tok.get_vocab_size()
    d = os.path.join(out_dir, "tokenizer")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(dict(bos_token="<|endoftext|>", eos_token="<|im_end|>", add_bos_token=False,
                       tokenizer_class="PreTrainedTokenizerFast"), f, indent=1)
    return tok


def make_config(arch):
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  max_position_embeddings=128, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        return transformers.LlamaConfig(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                                        rope_theta=10000.0, **common)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                        rope_theta=1000000.0, use_sliding_window=False, **common)
    if arch == "qwen3":
        return transformers.Qwen3Config(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        tie_word_embeddings=False, rope_theta=1000000.0, use_sliding_window=False,
                                        attention_bias=False, **common)
    raise ValueError(arch)


def randomize(model, seed):
    """Weights with O(1) activations and well-separated logits (as make_hf_fixtures.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def permute_qk(w, n_head):
    """convert_hf_to_gguf's LlamaModel.permute: rotate_half order -> interleaved pairs within each head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(gguf_name, ftype):
    """What llama.cpp's quantize leaves alone (1-D: norms, biases) and the embedding of the Q4_1 mix."""
    q = TYPES[ftype]
    if q is None or not gguf_name.endswith(".weight") or "norm" in gguf_name:
        return None
    if ftype == "q4_1" and gguf_name == "token_embd.weight":
        return Q.Q8_0
    return q


def add_metadata(w, arch, cfg, ftype, tok):
    hp = cfg.to_dict()
    w.add_name(f"tiny-{arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if hp.get("head_dim") is not None:
        w.add_key_length(hp["head_dim"])
        w.add_value_length(hp["head_dim"])
    w.add_file_type(FILE_TYPE[ftype])
    if arch == "llama":
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(hp.get("head_dim") or cfg.hidden_size // cfg.num_attention_heads)
    # tokenizer.ggml.*: convert_hf_to_gguf's _set_vocab_gpt2 (tokens padded to the model's vocab with [PADn])
    vocab = tok.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(cfg.vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if by_id[i] in SPECIALS else gguf.TokenType.NORMAL)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)


def write_gguf(path, arch, model, cfg, ftype, tok):
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[ARCH[arch]])
    add_metadata(w, arch, cfg, ftype, tok)
    names = gguf.get_tensor_name_map(ARCH[arch], cfg.num_hidden_layers)
    for hf_name, p in model.state_dict().items():
        if cfg.tie_word_embeddings and hf_name == "lm_head.weight":
            continue   # a tied save has no lm_head
        x = p.detach().float().numpy().copy()
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            x = permute_qk(x, cfg.num_attention_heads)
        if arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            x = permute_qk(x, cfg.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        q = tensor_type(name, ftype)
        if q is None:
            w.add_tensor(name, x.astype(np.float32))
        elif q == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x.astype(np.float32), q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(model, prompts):
    logits, greedy, margin = [], [], float("inf")
    model.generation_config.eos_token_id = None
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
                           output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p], dtype=torch.long)
            logits.append(model(input_ids=ids).logits[0].float().numpy())
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            toks = g.sequences[0, len(p):].tolist()
            assert len(toks) == NEW_TOKENS
            greedy.append(toks)
            for t, s in zip(toks, g.logits):
                top = torch.topk(s[0].float(), 2)
                assert int(top.indices[0]) == t
                margin = min(margin, float(top.values[0] - top.values[1]) / float(s[0].abs().max()))
    return np.concatenate(logits, axis=0).astype("<f4"), greedy, margin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "gguf_models"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    tok = make_tokenizer(args.out)
    rng = np.random.default_rng(14)
    prompts = [rng.integers(3, TOKENIZER_VOCAB, size=n).tolist() for n in PROMPT_LENS]
    for i, arch in enumerate(ARCH):
        torch.manual_seed(300 + i)
        cfg = make_config(arch)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        randomize(model, 300 + i)
        with open(os.path.join(args.out, f"{arch}.config.json"), "w") as f:
            f.write(cfg.to_json_string())
        for ftype in TYPES:
            name = f"{arch}-{ftype}"
            path = os.path.join(args.out, name + ".gguf")
            write_gguf(path, arch, model, cfg, ftype, tok)
            with tempfile.TemporaryDirectory() as d:   # from_pretrained wants the file in a folder
                shutil.copy(path, os.path.join(d, "m.gguf"))
                extra = dict(head_dim=cfg.head_dim) if arch == "qwen3" else {}
                ref = AutoModelForCausalLM.from_pretrained(d, gguf_file="m.gguf", dtype=torch.float32,
                                                           attn_implementation="eager", **extra).eval()
            assert ref.config.tie_word_embeddings == cfg.tie_word_embeddings, name
            logits, greedy, margin = reference(ref, prompts)
            if ftype == "f32":   # the GGUF round trip (names, q/k permutation, metadata) is the model itself
                want, want_greedy, _ = reference(model.eval(), prompts)
                err = np.abs(logits - want).max() / np.abs(want).max()
                assert err < 1e-5 and greedy == want_greedy, (name, err)
            logits.tofile(os.path.join(args.out, name + ".logits.bin"))
            with open(os.path.join(args.out, name + ".json"), "w") as f:
                json.dump(dict(arch=arch, type=ftype, vocab_size=VOCAB, prompts=prompts, greedy=greedy,
                               min_margin=margin, transformers=transformers.__version__, gguf=gguf.__version__
                               if hasattr(gguf, "__version__") else "", torch=torch.__version__), f)
            print(f"{path}: {os.path.getsize(path)} bytes, logits {logits.shape}, min greedy margin {margin:.2e}")


if __name__ == "__main__":
    main()
