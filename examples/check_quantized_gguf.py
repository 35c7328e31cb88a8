#!/usr/bin/env python3
# check_quantized_gguf: checks `ztinfer quantize` against the Python GGUF world (run by hand, not in CI: it needs
# torch, transformers >= 4.41 with gguf support and the gguf package).
#   1. For synth models (llama + Llama 3 tokenizer, mistral + Llama 2 SentencePiece tokenizer, qwen2 and qwen3 +
#      Qwen tokenizer; hidden 256 so the K types' 256-blocks fit): `ztinfer quantize` to q8_0 and q4_k, then
#      - gguf.GGUFReader reads the file: every HF tensor under its GGUF name with its shape (ne reversed), the
#        metadata keys convert_hf_to_gguf writes (ARCH_KEYS below, and the gguf package's SpecialVocab for the
#        tokenizer's special ids, flags, merges and chat template, values compared), rope_freqs for llama3 RoPE, and the weights dequantized by the gguf package against the HF weights (llama's q/k rows
#        un-permuted): the worst tensor's RMS error relative to the tensor's RMS;
#      - transformers loads it (from_pretrained(dir, gguf_file=...)) and its greedy tokens on a short prompt are
#        compared with the HF model's.
#      With --convert PATH (llama.cpp's convert_hf_to_gguf.py): its --outtype q8_0 file of the same model against
#      ours: metadata keys and values, tensor names, shapes and types, and the Q8_0 bytes of every tensor.
#   2. With --smollm HF_DIR --reference GGUF (SmolLM2-135M-Instruct in f32 and llama.cpp's Q4_1 GGUF of it):
#      `ztinfer quantize --type q4_1` of the HF folder against the reference: the metadata keys, the tokenizer
#      arrays and ids, tensor names, shapes and types, and how many Q4_1 blocks are byte-identical.
# Run: python3 examples/check_quantized_gguf.py [--ztinfer build/launcher/ztinfer] [--smollm DIR --reference FILE]
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

if "--convert" in sys.argv:   # the gguf-py next to convert_hf_to_gguf.py: the SpecialVocab it runs
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--convert") + 1]).resolve().parent / "gguf-py"))
from gguf import GGUFReader  # noqa: E402
from gguf import quants  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "tests" / "data" / "tokenizers"

# metadata keys convert_hf_to_gguf writes (set_gguf_parameters + set_vocab) for these models; the tokenizer's special
# ids, add_*_token flags, merges and chat template come from the gguf package's own SpecialVocab (the code
# convert_hf_to_gguf runs), values compared too
ARCH_KEYS = {"general.architecture", "general.type", "general.name", "general.file_type",
             "general.quantization_version", "{a}.block_count", "{a}.context_length", "{a}.embedding_length",
             "{a}.feed_forward_length", "{a}.attention.head_count", "{a}.attention.head_count_kv",
             "{a}.rope.freq_base", "{a}.attention.layer_norm_rms_epsilon", "{a}.attention.key_length",
             "{a}.attention.value_length", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
             "tokenizer.ggml.token_type"}
LLAMA_KEYS = {"{a}.vocab_size", "{a}.rope.dimension_count"}
SPM_KEYS = {"tokenizer.ggml.scores"}
SPECIAL_KEY = {"bos": "bos", "eos": "eos", "unk": "unknown", "sep": "seperator", "pad": "padding", "cls": "cls",
               "mask": "mask", "eot": "eot", "eom": "eom"}


def special_vocab_expectations(model_dir, n_vocab, byte_level):
    """Keys and values SpecialVocab (what convert_hf_to_gguf uses) adds for this tokenizer folder."""
    from gguf import SpecialVocab
    sv = SpecialVocab(model_dir, load_merges=byte_level, n_vocab=n_vocab)
    want = {f"tokenizer.ggml.{SPECIAL_KEY[t]}_token_id": i for t, i in sv.special_token_ids.items()}
    want.update({f"tokenizer.ggml.add_{t}_token": v for t, v in sv.add_special_token.items()})
    if sv.merges:
        want["tokenizer.ggml.merges"] = list(sv.merges)
    if sv.chat_template is not None:
        want["tokenizer.chat_template"] = sv.chat_template
    return want


SYNTH = [("llama", "llama3"), ("mistral", "llama2"), ("qwen2", "qwen3"), ("qwen3", "qwen3")]
LAYER = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
         "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.weight": "attn_v.weight",
         "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.weight": "attn_output.weight",
         "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
         "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
         "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    parts = hf.split(".")
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def permute_qk(w, n_head):   # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return r.stderr


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def compare_with_convert(ours_path, conv_path):
    """Our q8_0 file against convert_hf_to_gguf's: returns a list of differences (empty: the same)."""
    ours, conv = GGUFReader(ours_path), GGUFReader(conv_path)
    skip = {"general.name", "general.basename", "general.size_label", "general.finetune"}
    k_ours = {k for k in ours.fields if not k.startswith("GGUF.")} - skip
    k_conv = {k for k in conv.fields if not k.startswith("GGUF.")} - skip
    diffs = []
    if k_conv - k_ours:
        diffs.append(f"keys only convert_hf_to_gguf writes: {sorted(k_conv - k_ours)}")
    if k_ours - k_conv:
        diffs.append(f"keys only ours: {sorted(k_ours - k_conv)}")
    for k in sorted(k_ours & k_conv):
        a, b = field(ours, k), field(conv, k)
        same = abs(a - b) <= 1e-6 * max(1.0, abs(b)) if isinstance(b, float) else a == b
        if not same:
            diffs.append(f"{k}: ours {str(a)[:70]!r}, convert's {str(b)[:70]!r}")
    t_ours = {t.name: t for t in ours.tensors}
    t_conv = {t.name: t for t in conv.tensors}
    if set(t_ours) != set(t_conv):
        diffs.append(f"tensor names differ: {sorted(set(t_ours) ^ set(t_conv))}")
    identical = 0
    for name in sorted(set(t_ours) & set(t_conv)):
        a, b = t_ours[name], t_conv[name]
        if list(a.shape) != list(b.shape) or a.tensor_type != b.tensor_type:
            diffs.append(f"{name}: {a.tensor_type.name}{list(a.shape)} vs convert's {b.tensor_type.name}{list(b.shape)}")
        elif np.array_equal(np.asarray(a.data).view(np.uint8), np.asarray(b.data).view(np.uint8)):
            identical += 1
        elif a.tensor_type.name == "F32":
            x, y = np.asarray(a.data, dtype=np.float64), np.asarray(b.data, dtype=np.float64)
            diffs.append(f"{name} (F32): values differ by up to {np.abs(x - y).max() / np.abs(y).max():.1e} of max|x|")
        else:
            diffs.append(f"{name} ({a.tensor_type.name}): bytes differ")
    print(f"    vs convert_hf_to_gguf --outtype q8_0: {identical}/{len(t_conv)} tensors byte-identical, "
          f"{len(k_ours & k_conv)} metadata keys in both")
    return diffs


def check_synth(ztinfer, arch, tok, work, prompt, convert):
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = work / f"{arch}-{tok}"
    # qwen3: head_dim 128 (2 heads), as transformers' GGUF loader takes Qwen3Config's default head_dim
    heads, kv_heads = ("2", "1") if arch == "qwen3" else ("4", "2")
    run([ztinfer, "synth", "--arch", arch, "--tokenizer", TOKENIZERS / tok, "--hidden", "256", "--heads", heads,
         "--kv-heads", kv_heads, "--intermediate", "512", "--layers", "2", "--seed", "1", "--out", model])
    cfg = json.loads((model / "config.json").read_text())
    hf = load_file(model / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ref_model = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
    want = ref_model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
    for qtype in ("q8_0", "q4_k"):
        out = work / f"{arch}-{tok}.{qtype}.gguf"
        run([ztinfer, "quantize", "--model", model, "--type", qtype, "--out", out])
        r = GGUFReader(out)
        garch = "llama" if arch in ("llama", "mistral") else arch
        keys = {k for k in r.fields if not k.startswith("GGUF.")}
        byte_level = tok != "llama2"
        special = special_vocab_expectations(model, cfg["vocab_size"], byte_level)
        expected = {k.format(a=garch) for k in ARCH_KEYS | (LLAMA_KEYS if garch == "llama" else set())
                    | (set() if byte_level else SPM_KEYS)} | set(special)
        tensors = {t.name: t for t in r.tensors}
        problems = []
        if missing := expected - keys:
            problems.append(f"missing keys {sorted(missing)}")
        extra = sorted(keys - expected)
        for k, v in special.items():
            if k in keys and field(r, k) != v:
                problems.append(f"{k}: {str(field(r, k))[:60]!r}, SpecialVocab says {str(v)[:60]!r}")
        names = {gguf_name(n) for n in hf if not (cfg.get("tie_word_embeddings") and n == "lm_head.weight")}
        if cfg.get("rope_scaling", {}) and cfg["rope_scaling"].get("rope_type") == "llama3":
            names.add("rope_freqs.weight")
        if set(tensors) != names:
            problems.append(f"tensors differ: {sorted(set(tensors) ^ names)}")
        worst = (0.0, "")
        for name, w in hf.items():
            g = gguf_name(name)
            if g not in tensors:
                continue
            t = tensors[g]
            shape = tuple(int(d) for d in reversed(t.shape[:len(t.shape)]))
            if shape != w.shape:
                problems.append(f"{g}: shape {shape} vs {w.shape}")
                continue
            got = quants.dequantize(t.data, t.tensor_type).reshape(w.shape).astype(np.float64)
            ref = w.astype(np.float64)
            if garch == "llama" and (".attn_q." in g or ".attn_k." in g):
                heads = cfg["num_attention_heads"] if ".attn_q." in g else cfg["num_key_value_heads"]
                ref = permute_qk(ref, heads)
            err = float(np.sqrt(((got - ref) ** 2).mean() / (ref ** 2).mean()))
            worst = max(worst, (err, f"{g} {t.tensor_type.name}"))
        qm = AutoModelForCausalLM.from_pretrained(work, gguf_file=out.name, torch_dtype=torch.float32)
        got = qm.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
        same = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), len(want))
        types = sorted({t.tensor_type.name for t in r.tensors})
        print(f"{arch:8s} {tok:7s} {qtype}: {len(r.tensors)} tensors {types}, pre={field(r, 'tokenizer.ggml.pre')!r}, "
              f"worst RMS error {100 * worst[0]:.2f}% ({worst[1]}); transformers greedy: {same}/16 tokens as the "
              f"HF model{'' if same == 16 else f' (HF {want}, GGUF {got})'}")
        if extra:
            print(f"    keys beyond convert_hf_to_gguf's: {extra}")
        for p in problems:
            print(f"    PROBLEM: {p}")
        if qtype == "q8_0" and convert:
            conv = work / f"{arch}-{tok}.convert.q8_0.gguf"
            run([sys.executable, convert, model, "--outtype", "q8_0", "--outfile", conv])
            for d in compare_with_convert(out, conv):
                print(f"    convert_hf_to_gguf: {d}")
        if qtype == "q8_0" and same != 16:
            problems.append("q8_0 greedy tokens differ")
        if problems:
            return False
    return True


def greedy_vs_hf(hf_dir, gguf_path, prompt, n=16):
    """Greedy tokens of transformers' model from the GGUF vs from the HF folder: (tokens equal before the first
    difference, n)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(prompt, return_tensors="pt").input_ids
    want = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).generate(
        ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()
    qm = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, torch_dtype=torch.float32)
    got = qm.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()
    return next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), n), tok.decode(got)


def check_smollm(ztinfer, hf_dir, reference, work, prompt):
    out = work / "smollm2.q4_1.gguf"
    log = run([ztinfer, "quantize", "--model", hf_dir, "--type", "q4_1", "--out", out])
    print(log.strip().splitlines()[-1])
    ours, ref = GGUFReader(out), GGUFReader(reference)
    descriptive = {"general.organization", "general.finetune", "general.basename", "general.size_label",
                   "general.license", "general.languages", "general.name"}
    k_ours = {k for k in ours.fields if not k.startswith("GGUF.")}
    k_ref = {k for k in ref.fields if not k.startswith("GGUF.")} - descriptive
    print(f"SmolLM2 metadata: {len(k_ref & k_ours)} keys in both; only in llama.cpp's: {sorted(k_ref - k_ours)}; "
          f"only in ours: {sorted(k_ours - k_ref - descriptive)}")
    ok = True
    for k in sorted(k_ref & k_ours):
        a, b = field(ours, k), field(ref, k)
        if isinstance(a, float) or isinstance(b, float):
            same = abs(a - b) <= 1e-6 * max(1.0, abs(b))
        else:
            same = a == b
        if not same:
            print(f"    differs: {k}: ours {str(a)[:80]!r} vs {str(b)[:80]!r}")
            ok = ok and k in ("general.file_type",)
    t_ours = {t.name: t for t in ours.tensors}
    t_ref = {t.name: t for t in ref.tensors}
    print(f"SmolLM2 tensors: {len(t_ours)} ours, {len(t_ref)} llama.cpp's, names equal: {set(t_ours) == set(t_ref)}")
    same_blocks = total_blocks = 0
    type_diffs = []
    for name, t in t_ref.items():
        o = t_ours.get(name)
        if o is None:
            continue
        if list(o.shape) != list(t.shape):
            print(f"    shape differs: {name} {list(o.shape)} vs {list(t.shape)}")
            ok = False
        if o.tensor_type != t.tensor_type:
            type_diffs.append(f"{name} {o.tensor_type.name} vs {t.tensor_type.name}")
        elif t.tensor_type.name == "Q4_1":
            a = np.asarray(o.data).reshape(-1, 20)
            b = np.asarray(t.data).reshape(-1, 20)
            same_blocks += int((a == b).all(axis=1).sum())
            total_blocks += a.shape[0]
    if type_diffs:
        print(f"    types differ ({len(type_diffs)}): {type_diffs[:4]}")
    if total_blocks:
        print(f"SmolLM2 Q4_1 blocks byte-identical to llama.cpp's: {same_blocks}/{total_blocks} "
              f"({100 * same_blocks / total_blocks:.2f}%)")
    for qtype in ("q8_0", "q4_k", "q4_1"):
        path = out if qtype == "q4_1" else work / f"smollm2.{qtype}.gguf"
        if qtype != "q4_1":
            run([ztinfer, "quantize", "--model", hf_dir, "--type", qtype, "--out", path])
        same, text = greedy_vs_hf(Path(hf_dir), path, prompt)
        print(f"SmolLM2 {qtype}: transformers greedy {same}/16 tokens as the f32 HF model ({text!r})")
        if qtype == "q8_0" and same < 16:
            ok = False
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ztinfer", default=str(ROOT / "build" / "launcher" / "ztinfer"))
    ap.add_argument("--smollm", help="SmolLM2 HF folder (f32)")
    ap.add_argument("--reference", help="llama.cpp's GGUF of the same model (Q4_1)")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--only", help="comma-separated synth archs to check (default: all)")
    ap.add_argument("--convert", help="llama.cpp's convert_hf_to_gguf.py, to compare its q8_0 files with ours")
    a = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for arch, tok in SYNTH:
            if a.only and arch not in a.only.split(","):
                continue
            ok = check_synth(a.ztinfer, arch, tok, work, a.prompt, a.convert) and ok
        if a.smollm and a.reference:
            ok = check_smollm(a.ztinfer, a.smollm, a.reference, work, a.prompt) and ok
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
