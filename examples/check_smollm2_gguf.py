#!/usr/bin/env python3
"""Runs ztinfer on a real GGUF model and compares its greedy tokens with HF transformers loading the same file.

Default model: ~/.cache/ztinfer-bench/SmolLM2-135M-Instruct.Q4_1.gguf (llama architecture, Q4_1 matrices, a Q8_0
token_embd, F32 norms, the gpt2 "smollm" tokenizer). Never commit the GGUF file.

ztinfer runs each prompt as text ("prompt": ztinfer tokenizes with the GGUF's own tokenizer) on 1 and 2 CPU ranks
(mpirun -np 2), with the weights streamed from pinned host memory ("cpu") and from an NVMe file ("nvme"), greedy,
--tokens new tokens. The reference is transformers' AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)
(every tensor dequantized to float32, eager attention) running generate(do_sample=False) on the ids of
AutoTokenizer(dir, gguf_file=...) for the same text, cut after the first end-of-sequence id that ztinfer stops at
(tokenizer.ggml.eos_token_id / eot_token_id). Prints, per prompt and run, whether the prompt lengths and the
generated ids match, and the first position where they differ. Exit status 0 when every run matches.

Usage: python3 examples/check_smollm2_gguf.py [--gguf FILE] [--ztinfer build/ztinfer] [--tokens 32]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["The capital of France is", "Once upon a time, there was a", "def fibonacci(n):",
           "The three primary colors are"]


def eos_ids(path):
    r = gguf.GGUFReader(path)
    ids = set()
    for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if k in r.fields:
            ids.add(int(r.fields[k].contents()))
    return ids


def hf_reference(path, n_tokens, eos):
    d, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    out = {}
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_tokens,
                               do_sample=False, eos_token_id=None, pad_token_id=0)
            toks = g[0, ids.shape[1]:].tolist()
            for i, t in enumerate(toks):
                if t in eos:
                    toks = toks[:i + 1]
                    break
            out[p] = dict(prompt_ids=ids[0].tolist(), tokens=toks)
    return out


def run_ztinfer(binary, path, n_tokens, ranks, tier, work):
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        for i, p in enumerate(PROMPTS):
            f.write(json.dumps({"custom_id": str(i), "prompt": p}) + "\n")
    out = os.path.join(work, f"out-{ranks}-{tier}.jsonl")
    offload = {"device": tier}
    if tier == "nvme":
        offload["nvme_path"] = os.path.join(work, "nvme")
        os.makedirs(offload["nvme_path"], exist_ok=True)
    ds = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 10000, "offload_param": offload},
          "ztinfer": {"model": os.path.abspath(path), "input": inp, "output": out, "device": "cpu",
                      "batch_size": len(PROMPTS), "max_new_tokens": n_tokens, "temperature": 0, "resume": False,
                      "threads": max(1, (os.cpu_count() or 2) // ranks)}}
    cfg = os.path.join(work, f"ds-{ranks}-{tier}.json")
    with open(cfg, "w") as f:
        json.dump(ds, f)
    cmd = [binary, "--config", cfg]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"ztinfer failed ({ranks} ranks, {tier}): exit {r.returncode}")
    recs = {}
    with open(out) as f:
        for line in f:
            j = json.loads(line)
            recs[PROMPTS[int(j["custom_id"])]] = j
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.expanduser("~/.cache/ztinfer-bench/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--ztinfer", default=os.path.join(os.path.dirname(__file__), "..", "build", "ztinfer"))
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(2)
    eos = eos_ids(args.gguf)
    ref = hf_reference(args.gguf, args.tokens, eos)
    ok = True
    work = tempfile.mkdtemp(prefix="zt_smollm2_")
    try:
        for ranks in (1, 2):
            for tier in ("cpu", "nvme"):
                recs = run_ztinfer(args.ztinfer, args.gguf, args.tokens, ranks, tier, work)
                for p in PROMPTS:
                    r, want = recs[p], ref[p]
                    if "error" in r:
                        print(f"{ranks} rank(s) {tier:4s} {p!r}: ERROR {r['error']}")
                        ok = False
                        continue
                    got = r["token_ids"]
                    same_prompt = r["usage"]["prompt_tokens"] == len(want["prompt_ids"])
                    same = got == want["tokens"] and same_prompt
                    first = next((i for i, (a, b) in enumerate(zip(got, want["tokens"])) if a != b),
                                 None if len(got) == len(want["tokens"]) else min(len(got), len(want["tokens"])))
                    ok &= same
                    print(f"{ranks} rank(s) {tier:4s} {p!r}: {'match' if same else 'DIFFER'} "
                          f"({len(got)} tokens, prompt {r['usage']['prompt_tokens']} vs HF {len(want['prompt_ids'])}"
                          f"{'' if first is None else f', first difference at {first}'}) text={r.get('text', '')!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("all runs match HF" if ok else "some runs differ from HF")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
