#!/usr/bin/env python3
# check_gguf_tokenizer: ztinfer's tokenizer read from a real GGUF file (Tokenizer::from_gguf, through the
# build/gguf_tokenize tool) against Hugging Face on every text of tests/data/tokenizer_corpus.jsonl:
#   - HF `tokenizers` on the model's own tokenizer.json (the ground truth the GGUF was converted from),
#   - HF transformers reading the same GGUF (AutoTokenizer.from_pretrained(dir, gguf_file=...)).
# Prints the agreement figures and exits 1 when any text's ids differ from the tokenizer.json's.
# Defaults: the SmolLM2-135M-Instruct Q4_1 GGUF and its HF folder under ~/.cache/ztinfer-bench (never committed).
# Usage: ninja -C build gguf_tokenize && python3 examples/check_gguf_tokenizer.py [--gguf F] [--hf-dir D] [--tool T]
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "ztinfer-bench"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=str(CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--hf-dir", default=str(CACHE / "smollm2-135m-f32"), help="folder with the model's tokenizer.json")
    ap.add_argument("--tool", default=str(ROOT / "build" / "gguf_tokenize"))
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "tokenizer_corpus.jsonl"))
    args = ap.parse_args()
    for p in (args.gguf, args.hf_dir, args.tool):
        if not os.path.exists(p):
            sys.exit(f"missing {p}")

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    texts = [json.loads(line)["text"] for line in open(args.corpus, encoding="utf-8")]
    out = subprocess.run([args.tool, args.gguf, args.corpus], check=True, capture_output=True, text=True).stdout
    ours = [json.loads(line) for line in out.split("\n") if line]
    assert len(ours) == len(texts), (len(ours), len(texts))

    hf_json = Tokenizer.from_file(os.path.join(args.hf_dir, "tokenizer.json"))
    with tempfile.TemporaryDirectory() as tmp:   # transformers wants the GGUF's folder; link it into an empty one
        os.symlink(os.path.abspath(args.gguf), os.path.join(tmp, "model.gguf"))
        hf_gguf = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")

    n = len(texts)
    eq_json = eq_json_special = eq_gguf = eq_gguf_special = dec_ok = 0
    bad = []
    for i, (text, got) in enumerate(zip(texts, ours)):
        want = hf_json.encode(text, add_special_tokens=False).ids
        want_special = hf_json.encode(text, add_special_tokens=True).ids
        eq_json += got["ids"] == want
        eq_json_special += got["ids_special"] == want_special
        eq_gguf += got["ids"] == hf_gguf.encode(text, add_special_tokens=False)
        eq_gguf_special += got["ids_special"] == hf_gguf.encode(text, add_special_tokens=True)
        dec_ok += got["decoded"] == hf_json.decode(want, skip_special_tokens=False)
        if got["ids"] != want or got["ids_special"] != want_special:
            bad.append(i)
    print(f"{args.gguf}: {n} corpus texts")
    print(f"  ids == HF tokenizers on {args.hf_dir}/tokenizer.json: {eq_json}/{n} "
          f"(add_special_tokens=True: {eq_json_special}/{n})")
    print(f"  ids == transformers reading the GGUF:            {eq_gguf}/{n} (add_special_tokens=True: {eq_gguf_special}/{n})")
    print(f"  decode == HF decode:                             {dec_ok}/{n}")
    for i in bad[:10]:
        print(f"  MISMATCH text #{i} {texts[i][:60]!r}: ours {ours[i]['ids'][:20]} "
              f"HF {hf_json.encode(texts[i], add_special_tokens=False).ids[:20]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
