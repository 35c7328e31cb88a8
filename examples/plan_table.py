#!/usr/bin/env python3
"""The planner's choices for the 7B and 70B shapes under 16 / 24 / 80 GiB GPU budgets, as a markdown table
(docs/PERFORMANCE.md, "Planner: what it picks for 7B and 70B").

    python3 examples/plan_table.py [--ztinfer build/ztinfer] [--profile PROFILE.json]

Runs `ztinfer plan --shape ... --device cuda --json` for each row (no GPU needed: the planner only computes).
Without --profile the planner uses its conservative CUDA defaults, which the table's caption names.
Standard library only.
"""
import argparse
import json
import subprocess
import sys

GiB = 1 << 30

# (label, shape, dtype, task, requests, prompt tokens, new tokens, host memory)
ROWS = [
    ("7B chat batch", "llama2-7b", "bf16", "generate", 1000, 512, 128, "64GiB"),
    ("7B chat batch, Q4_K", "llama2-7b", "q4_k", "generate", 1000, 512, 128, "64GiB"),
    ("7B embedding, 32k tokens", "qwen2-7b", "bf16", "embed", 16, 32768, 0, "64GiB"),
    ("70B chat batch", "llama2-70b", "f16", "generate", 1000, 512, 128, "32GiB"),
    ("70B chat batch", "llama2-70b", "f16", "generate", 1000, 512, 128, "256GiB"),
    ("70B chat batch, Q4_K", "llama2-70b", "q4_k", "generate", 1000, 512, 128, "64GiB"),
]
BUDGETS = ["16GiB", "24GiB", "80GiB"]


def plan(ztinfer, profile, shape, dtype, task, n, prompt, new, gpu, host):
    cmd = [ztinfer, "--log-level", "off", "plan", "--shape", shape, "--dtype", dtype, "--task", task, "--device", "cuda",
           "--requests", str(n), "--prompt-tokens", str(prompt), "--new-tokens", str(max(new, 1)),
           "--gpu-memory", gpu, "--host-memory", host, "--nvme-path", "/nvme", "--nvme-space", "4TiB", "--json"]
    if profile:
        cmd += ["--profile", profile]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout), " ".join(cmd)


def gib(b):
    return f"{b / GiB:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ztinfer", default="build/ztinfer")
    ap.add_argument("--profile", default="")
    a = ap.parse_args()
    print("| workload | weights | GPU | host | tier | resident layers | batch x micro | depth | KV | GPU mem GiB | "
          "pinned GiB | NVMe GiB | predicted tok/s | bound by |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    profile_source = None
    for label, shape, dtype, task, n, prompt, new, host in ROWS:
        for gpu in BUDGETS:
            r, _ = plan(a.ztinfer, a.profile, shape, dtype, task, n, prompt, new, gpu, host)
            profile_source = r["profile"]
            work = f"{label} ({n} x {prompt}" + (f" + {new}" if task == "generate" else "") + " tokens)"
            b = r["best"]
            if b is None:
                print(f"| {work} | {shape} {dtype} | {gpu} | {host} | refused: {r['refusal'][:160]} |"
                      + " |" * 9)
                continue
            s, m, sp = b["settings"], b["memory"], b["speed"]
            print(f"| {work} | {shape} {dtype} | {gpu} | {host} | {s['tier']} | {s['resident_layers']} | "
                  f"{s['batch_size']} x {s['micro_batches']} | {s['prefetch_depth']} | {s['kv_offload']} | "
                  f"{gib(m['device'])} | {gib(m['pinned'])} | {gib(m['nvme'])} | {sp['tokens_per_s']:.1f} | "
                  f"{sp['bound']} |")
    print(f"\nProfile: {profile_source}")


if __name__ == "__main__":
    main()
