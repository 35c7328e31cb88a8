#!/usr/bin/env python3
"""ztinfer vs HF transformers + accelerate with the weights offloaded to CPU, side by side on one GPU.

Both run the same synthetic Llama-2-7B-shaped model (random bf16 weights written once by `ztinfer synth`), the
same prompts (random token ids, --prompt long) and greedy decoding of exactly --new tokens (HF: min_new_tokens;
ztinfer: ignore_eos), at each --batch size. HF keeps at most --hf-gpu-memory of weights on the GPU
(device_map="auto" with max_memory, so accelerate streams the rest from CPU RAM each forward pass); ztinfer
streams every layer from pinned host memory (offload_param.device "cpu"). Prints generated tokens/s of both and
the ratio (the issue's goal: >= 10x), and writes them to --json.

Needs torch, transformers, accelerate, safetensors (present on the GPU machine) and a CUDA build of ztinfer.
"""
import argparse
import json
import lzma
import os
import shutil
import subprocess
import time


def make_model(ztinfer, work, layers, src_root):
    model = os.path.join(work, f"llama2-7b-shape-{layers}L")
    if os.path.exists(os.path.join(model, "config.json")):
        return model
    tok = os.path.join(work, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    src = os.path.join(src_root, "tests", "data", "tokenizers", "llama2")
    with lzma.open(os.path.join(src, "tokenizer.json.xz")) as f, open(os.path.join(tok, "tokenizer.json"), "wb") as o:
        shutil.copyfileobj(f, o)
    shutil.copy(os.path.join(src, "tokenizer_config.json"), tok)
    t0 = time.time()
    subprocess.run([ztinfer, "synth", "--arch", "llama", "--layers", str(layers), "--hidden", "4096", "--heads", "32",
                    "--kv-heads", "32", "--intermediate", "11008", "--dtype", "bf16", "--seed", "7",
                    "--tokenizer", tok, "--out", model], check=True)
    print(f"synthesized {model} in {time.time() - t0:.0f}s", flush=True)
    return model


def prompts(n, length, vocab, seed=0):
    import random
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(length)] for _ in range(n)]


def run_hf(model, batch_prompts, new_tokens, gpu_memory):
    import torch
    from transformers import AutoModelForCausalLM
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, device_map="auto",
                                             max_memory={0: gpu_memory, "cpu": "400GiB"})
    load = time.time() - t0
    ids = torch.tensor(batch_prompts, device="cuda:0")
    with torch.no_grad():
        m.generate(ids[:, :8], max_new_tokens=2, min_new_tokens=2, do_sample=False)   # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        secs = time.time() - t0
    generated = (out.shape[1] - ids.shape[1]) * ids.shape[0]
    del m
    torch.cuda.empty_cache()
    return {"seconds": secs, "generated": int(generated), "tok_per_s": generated / secs, "load_seconds": load}


def run_ztinfer(ztinfer, model, work, batch_prompts, new_tokens):
    d = os.path.join(work, f"zt-b{len(batch_prompts)}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "in.jsonl"), "w") as f:
        for i, p in enumerate(batch_prompts):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt_token_ids": p, "max_tokens": new_tokens,
                                "ignore_eos": True}) + "\n")
    cfg = {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}},
           "ztinfer": {"model": model, "input": "in.jsonl", "output": "out.jsonl", "device": "cuda",
                       "batch_size": len(batch_prompts), "resume": False, "max_new_tokens": new_tokens}}
    with open(os.path.join(d, "ds.json"), "w") as f:
        json.dump(cfg, f)
    if os.path.exists(os.path.join(d, "out.jsonl")):
        os.remove(os.path.join(d, "out.jsonl"))
    t0 = time.time()
    p = subprocess.run([ztinfer, "--config", os.path.join(d, "ds.json")], capture_output=True, text=True)
    wall = time.time() - t0
    log = p.stdout + p.stderr
    print(log[-3000:], flush=True)
    p.check_returncode()
    generated = 0
    with open(os.path.join(d, "out.jsonl")) as f:
        for line in f:
            generated += len(json.loads(line)["token_ids"])
    # the job's own generation-loop time (excludes loading), from its log line "... = X generated tokens/s"
    gen_secs = None
    for line in log.splitlines():
        if "generated tokens/s" in line and "s =" in line:
            try:
                gen_secs = float(line.split("steps, ")[1].split("s =")[0])
            except (IndexError, ValueError):
                pass
    secs = gen_secs or wall
    return {"seconds": secs, "wall_seconds": wall, "generated": generated, "tok_per_s": generated / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ztinfer", default="build/ztinfer")
    ap.add_argument("--work", default="/tmp/zt-hf")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--hf-gpu-memory", default="4GiB", help="weights HF may keep on the GPU (the rest is offloaded)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(a.work, exist_ok=True)
    model = make_model(a.ztinfer, a.work, a.layers, root)
    rows = []
    print(f"{'batch':>5} {'HF+accelerate tok/s':>20} {'ztinfer tok/s':>14} {'ratio':>7}", flush=True)
    for b in [int(x) for x in a.batch.split(",")]:
        ps = prompts(b, a.prompt, 32000, seed=b)
        zt = run_ztinfer(a.ztinfer, model, a.work, ps, a.new)
        hf = run_hf(model, ps, a.new, a.hf_gpu_memory)
        ratio = zt["tok_per_s"] / hf["tok_per_s"]
        rows.append({"batch": b, "prompt": a.prompt, "new": a.new, "hf": hf, "ztinfer": zt, "ratio": ratio})
        print(f"{b:>5} {hf['tok_per_s']:>20.2f} {zt['tok_per_s']:>14.2f} {ratio:>7.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": model, "layers": a.layers, "hf_gpu_memory": a.hf_gpu_memory, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
