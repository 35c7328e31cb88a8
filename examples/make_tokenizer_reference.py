#!/usr/bin/env python3
# Regenerates tests/data/tokenizer_reference.jsonl.xz: the ids Hugging Face `tokenizers` gives for every text
# of tests/data/tokenizer_corpus.jsonl with each tokenizer under tests/data/tokenizers/ (qwen3, llama3, llama2),
# encode(text, add_special_tokens=False), plus add_special_tokens=True for the first texts, and HF's decode of
# the ids where it differs from the text. One JSON object per line:
#   {"tokenizer": "qwen3", "text": <corpus line index>, "special": false, "ids": [...], "decoded": "..."?}
# Two variants built from those files cover features the three lack (the C++ test builds the same variants):
#   llama2_metaspace: llama2 with normalizer null and a Metaspace pre-tokeniser + decoder (prepend_scheme
#                     "first", split false), as in Mistral-style tokenizer.json files;
#   qwen3_flags:      qwen3 plus added tokens <x> (lstrip+rstrip), <y> (single_word), <z> (normalized, not
#                     special), <w> (lstrip), ids 151669..151672.
# Usage: pip install tokenizers; python3 examples/make_tokenizer_reference.py
import json
import lzma
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer, __version__

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")
NAMES = ["qwen3", "llama3", "llama2", "llama2_metaspace", "qwen3_flags"]
VARIANT_OF = {"llama2_metaspace": "llama2", "qwen3_flags": "qwen3"}
FLAG_TOKENS = [("<x>", dict(lstrip=True, rstrip=True)), ("<y>", dict(single_word=True)),
               ("<z>", dict(normalized=True, special=False)), ("<w>", dict(lstrip=True))]


def make_variant(name, doc):
    if name == "llama2_metaspace":
        doc["normalizer"] = None
        doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
        doc["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    elif name == "qwen3_flags":
        for i, (content, flags) in enumerate(FLAG_TOKENS):
            tok = {"id": 151669 + i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                   "normalized": False, "special": True}
            tok.update(flags)
            doc["added_tokens"].append(tok)
    return doc
N_SPECIAL = 40  # texts also encoded with add_special_tokens=True

texts = [json.loads(line)["text"] for line in open(os.path.join(DATA, "tokenizer_corpus.jsonl"), encoding="utf-8")]
out_path = os.path.join(DATA, "tokenizer_reference.jsonl.xz")
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for name in NAMES:
        src = os.path.join(DATA, "tokenizers", VARIANT_OF.get(name, name), "tokenizer.json.xz")
        dst = os.path.join(tmp, name + ".json")
        raw = subprocess.run(["xz", "-dc", src], check=True, capture_output=True).stdout
        if name in VARIANT_OF:
            raw = json.dumps(make_variant(name, json.loads(raw))).encode()
        with open(dst, "wb") as f:
            f.write(raw)
        tok = Tokenizer.from_file(dst)
        for i, text in enumerate(texts):
            for special in ([False, True] if i < N_SPECIAL and name not in VARIANT_OF else [False]):
                ids = tok.encode(text, add_special_tokens=special).ids
                row = {"tokenizer": name, "text": i, "special": special, "ids": ids}
                if not special:
                    decoded = tok.decode(ids, skip_special_tokens=False)
                    if decoded != text:
                        row["decoded"] = decoded
                rows.append(row)
with lzma.open(out_path, "wt", encoding="utf-8", preset=9) as f:
    f.write(json.dumps({"tokenizers_version": __version__, "texts": len(texts)}) + "\n")
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"{len(rows)} rows for {len(texts)} texts (tokenizers {__version__}) -> {out_path}", file=sys.stderr)
