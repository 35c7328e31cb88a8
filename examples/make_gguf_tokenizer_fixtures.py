#!/usr/bin/env python3
# make_gguf_tokenizer_fixtures: writes tests/data/gguf_tokenizer/: one GGUF per real tokenizer under
# tests/data/tokenizers/ (qwen3, llama3, llama2) holding ONLY tokenizer metadata (no tensors), written with the
# gguf package's GGUFWriter and SpecialVocab the way llama.cpp's convert_hf_to_gguf.py writes it, xz-compressed,
# plus reference.jsonl.xz: the ids Hugging Face transformers gives when it reads each GGUF
# (AutoTokenizer.from_pretrained(dir, gguf_file=...)) for every text of tests/data/tokenizer_corpus.jsonl.
#
# How convert_hf_to_gguf.py writes each (and so this script):
#   qwen3, llama3 (byte-level BPE, its _set_vocab_gpt2 / get_vocab_base): tokenizer.ggml.model "gpt2"; tokens by id
#     up to config.json's vocab_size, ids without a token as "[PAD<i>]" of type UNUSED; added tokens CONTROL when
#     special (or looking special, "<|...|>"), else USER_DEFINED; every other token NORMAL; merges from tokenizer.json;
#     tokenizer.ggml.pre from its hash table of known tokenizers: "qwen2" (Qwen1.5 .. Qwen3) and "llama-bpe"
#     (Meta-Llama-3); bos/eos/pad ids and add_bos/add_eos from SpecialVocab (tokenizer_config.json, then config.json).
#   llama2 (SentencePiece, _set_vocab_sentencepiece): model "llama", pre "default", no merges, a score per token,
#     types UNKNOWN / CONTROL / BYTE / NORMAL, add_space_prefix true (add_dummy_prefix of the tokenizer.model),
#     special ids and add_bos from SpecialVocab. The scores would come from tokenizer.model, which is not here;
#     they are rebuilt from tokenizer.json's merge order instead (a merged piece scores -(rank of the first merge
#     making it), so HF's generate_merges recovers that order; pieces no merge makes score below all of them in id
#     order; <unk>, <s>, </s> and the <0x..> bytes score 0, as in SentencePiece).
# config.json of the real models supplies vocab_size and bos/eos ids: Qwen3 (151936, bos 151643, eos 151645),
# Meta-Llama-3-8B (128256, 128000, 128001), Llama-2-7b (32000, 1, 2).
#
# reference.jsonl.xz, one JSON object a line after a header:
#   {"tokenizer": "qwen3", "text": <corpus line>, "special": false, "ids": [...], "decoded": "..."?}
# "ids" are transformers-from-GGUF's encode(text, add_special_tokens=special) (special for the first 40 texts too);
# "decoded" is its decode(ids) where that differs from the text. The header counts, per tokenizer, the texts where
# transformers-from-GGUF differs from HF `tokenizers` on the original tokenizer.json (tokenizer_reference.jsonl.xz).
# It also writes the seeds of the fuzz_gguf_tokenizer fuzzer, tests/fuzz/corpus_gguf_tokenizer/: two tiny tokenizer
# GGUFs (a byte-level one with merges, a SentencePiece one with scores and byte tokens).
# Usage: pip install gguf transformers tokenizers; python3 examples/make_gguf_tokenizer_fixtures.py [NAME ...]
# (names: remake only those GGUFs and their rows, keeping the other tokenizers' rows of reference.jsonl.xz;
# "seeds": only the fuzzer seeds)
import importlib.metadata
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import transformers
from gguf import GGUFWriter, SpecialVocab, TokenType
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OUT = DATA / "gguf_tokenizer"
N_SPECIAL = 40
CONFIG = {
    "qwen3": {"arch": "qwen3", "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": 151645, "pre": "qwen2"},
    "llama3": {"arch": "llama", "vocab_size": 128256, "bos_token_id": 128000, "eos_token_id": 128001,
               "pre": "llama-bpe"},
    "llama2": {"arch": "llama", "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2, "pre": "default"},
}


def looks_special(token):
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def bpe_vocab(tok, vocab_size):
    """tokens and types as convert_hf_to_gguf's get_vocab_base lists them."""
    reverse = {i: t for t, i in tok.get_vocab().items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tok.decode(tok.encode(token, add_special_tokens=False))
            if decoder[i].special or looks_special(token):
                types.append(TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def spm_vocab(tokenizer_json):
    """tokens, scores, types as _set_vocab_sentencepiece lists them (scores rebuilt from the merge order)."""
    model = tokenizer_json["model"]
    special = {t["content"] for t in tokenizer_json["added_tokens"] if t["special"]}
    tokens = [None] * len(model["vocab"])
    for t, i in model["vocab"].items():
        tokens[i] = t
    made_by = {}
    for rank, m in enumerate(model["merges"]):
        a, b = m.split(" ") if isinstance(m, str) else m
        made_by.setdefault(a + b, rank)
    scores, types = [], []
    for i, t in enumerate(tokens):
        if t == model["unk_token"]:
            types.append(TokenType.UNKNOWN)
            scores.append(0.0)
        elif t in special:
            types.append(TokenType.CONTROL)
            scores.append(0.0)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(TokenType.BYTE)
            scores.append(0.0)
        else:
            types.append(TokenType.NORMAL)
            scores.append(float(-made_by[t]) if t in made_by else float(-len(model["merges"]) - i))
    return tokens, scores, types


def write_gguf(name, src_dir, path):
    cfg = CONFIG[name]
    tokenizer_json = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    w = GGUFWriter(str(path), cfg["arch"])
    if name == "llama2":
        tokens, scores, types = spm_vocab(tokenizer_json)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre(cfg["pre"])
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(True)
        special = SpecialVocab(src_dir, n_vocab=len(tokens))
    else:
        tok = AutoTokenizer.from_pretrained(str(src_dir))
        tokens, types = bpe_vocab(tok, cfg["vocab_size"])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(cfg["pre"])
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = SpecialVocab(src_dir, load_merges=True)
    special.chat_template = None   # not tokenizer behaviour; keeps the fixtures small
    special.add_to_gguf(w, quiet=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return len(tokens)


def write_fuzz_seeds():
    seeds = ROOT / "tests" / "fuzz" / "corpus_gguf_tokenizer"
    seeds.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(seeds / "tiny_gpt2.gguf"), "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(["a", "b", "ab", "\u0120", "\u0120ab", "<|end|>", "<x>"])
    w.add_token_types([1, 1, 1, 1, 1, 3, 4])
    w.add_token_merges(["a b", "\u0120 ab"])
    w.add_eos_token_id(5)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()   # no tensors: pads the header to the alignment, where the data section starts
    w.close()
    w = GGUFWriter(str(seeds / "tiny_spm.gguf"), "llama")
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "ab", "\u2581", "\u2581ab"] + [f"<0x{b:02X}>" for b in range(256)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0, 0.0, 0.0, -5.0, -5.0, -1.0, -5.0, -2.0] + [0.0] * 256)
    w.add_token_types([2, 3, 3, 1, 1, 1, 1, 1] + [6] * 256)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()   # no tensors: pads the header to the alignment, where the data section starts
    w.close()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write_fuzz_seeds()
    if sys.argv[1:] == ["seeds"]:
        return
    texts = [json.loads(line)["text"] for line in open(DATA / "tokenizer_corpus.jsonl", encoding="utf-8")]
    original = {}
    with lzma.open(DATA / "tokenizer_reference.jsonl.xz", "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            r = json.loads(line)
            original[(r["tokenizer"], r["text"], r["special"])] = r["ids"]
    names = sys.argv[1:] or list(CONFIG)
    rows, differs = [], {}
    if names != list(CONFIG):
        with lzma.open(OUT / "reference.jsonl.xz", "rt", encoding="utf-8") as f:
            differs = {k: v for k, v in json.loads(next(f))["differs_from_tokenizer_json"].items() if k not in names}
            rows = [r for r in map(json.loads, f) if r["tokenizer"] not in names]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            src = tmp / name
            src.mkdir()
            raw = subprocess.run(["xz", "-dc", str(DATA / "tokenizers" / name / "tokenizer.json.xz")], check=True,
                                 capture_output=True).stdout
            (src / "tokenizer.json").write_bytes(raw)
            shutil.copy(DATA / "tokenizers" / name / "tokenizer_config.json", src / "tokenizer_config.json")
            cfg = {k: CONFIG[name][k] for k in ("vocab_size", "bos_token_id", "eos_token_id")}
            (src / "config.json").write_text(json.dumps(cfg))
            gguf_path = tmp / f"{name}.gguf"
            n = write_gguf(name, src, gguf_path)
            with open(gguf_path, "rb") as fin, lzma.open(OUT / f"{name}.gguf.xz", "wb", preset=9 | lzma.PRESET_EXTREME) as fout:
                fout.write(fin.read())
            hf = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf_path.name)
            differs[name] = []
            for i, text in enumerate(texts):
                for special in ([False, True] if i < N_SPECIAL else [False]):
                    ids = hf.encode(text, add_special_tokens=special)
                    row = {"tokenizer": name, "text": i, "special": special, "ids": ids}
                    if not special:
                        decoded = hf.decode(ids, skip_special_tokens=False)
                        if decoded != text:
                            row["decoded"] = decoded
                    if original.get((name, i, special)) != ids:
                        differs[name].append([i, special])
                    rows.append(row)
            size = (OUT / f"{name}.gguf.xz").stat().st_size
            print(f"{name}: {n} tokens, {gguf_path.stat().st_size} bytes of GGUF -> {size} xz; transformers-from-GGUF "
                  f"differs from the original tokenizer.json on {len(differs[name])} encodes", file=sys.stderr)
    with lzma.open(OUT / "reference.jsonl.xz", "wt", encoding="utf-8", preset=9) as f:
        f.write(json.dumps({"transformers_version": transformers.__version__, "gguf_version": importlib.metadata.version("gguf"), "texts": len(texts),
                            "differs_from_tokenizer_json": differs}) + "\n")
        for r in sorted(rows, key=lambda r: (list(CONFIG).index(r["tokenizer"]), r["text"], r["special"])):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
