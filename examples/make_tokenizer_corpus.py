#!/usr/bin/env python3
# Assembles tests/data/tokenizer_corpus.jsonl: >= 300 varied texts for tokenizer parity tests, taken from
# files found on a Debian machine (gettext catalogues in many scripts, /usr/share/doc, Python's stdlib,
# man pages, C headers) plus hand-written edge cases (emoji ZWJ sequences, flags, digit and whitespace runs,
# CRLF, special tokens written in the text, combining characters, empty-ish strings).
# Deterministic: the same machine gives the same corpus. Usage: python3 examples/make_tokenizer_corpus.py [OUT]
import glob
import gettext
import gzip
import json
import os
import random
import sys
import unicodedata

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                           "tokenizer_corpus.jsonl")
rng = random.Random(1234)
texts = []


def add(t, limit=1500):
    if t is None:
        return
    t = t[:limit]
    if t not in texts:
        texts.append(t)


# 1. hand-written edge cases
EDGE = [
    "", " ", "  ", "\n", "\t", "\r\n", " \n ", "a", "A", "0", "!", "\u00a0", "\u3000", "\u2028", "\u0085",
    "Hello world", " Hello world", "Hello world ", "  Hello   world  ", "hello\tworld\t\ttabs",
    "I'm sure you're right, they've said we'll go; she'd know. IT'S FINE. I'M OK. We'VE done it.",
    "Don't, won't, can't, shouldn't've, y'all, o'clock, rock'n'roll",
    "1234567890123456789012345678901234567890", "3.14159265358979323846264338327950288419716939937510",
    "Phone: +1 (555) 123-4567, year 2024, price $1,299.99, 1e-10, 0xDEADBEEF, 0b1010",
    "12 345 678 910 1112 13141 516171 8192021",
    " " * 40 + "x", "x" + " " * 37, "\t" * 20 + "tabs", "\n" * 15, "a\n\n\nb\n\n\n\nc",
    "line one\r\nline two\r\nline three\r\n", "\r\n\r\n\r\nCRLF only\r\n", "mixed\r\nline\nendings\rhere",
    "trailing spaces   \n   leading spaces\n\t\tindented\n",
    "👋 Hello 🌍! 😀😃😄😁", "👨‍👩‍👧‍👦 family, 👩‍💻 coder, 🏳️‍🌈 flag, 🧑🏽‍🚀 astronaut",
    "🇫🇷🇩🇪🇯🇵🇺🇸🇬🇧🇨🇳🇧🇷 flags", "❤️ ✨ ☕ ✅ ❌ ⚠️ 1️⃣ #️⃣ ©️ ®️ ™️",
    "👍🏻👍🏼👍🏽👍🏾👍🏿 skin tones", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland tag sequence",
    "你好，世界！这是一个测试。", "日本語のテキスト、カタカナとひらがな。漢字も。", "한국어 텍스트입니다. 안녕하세요!",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "مرحبا بالعالم! هذا نص عربي للاختبار.", "שלום עולם! זהו טקסט בעברית.", "नमस्ते दुनिया! यह हिंदी पाठ है।",
    "Γειά σου Κόσμε! Ελληνικά κείμενα.", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง", "Xin chào thế giới! Tiếng Việt có dấu.",
    "Mixed: English, 中文, Русский, العربية, 日本語, 한국어 in one line 123.",
    "e\u0301 vs \u00e9: cafe\u0301 caf\u00e9", "A\u030a\u212b\u00c5 angstrom", "n\u0303o\u0308u\u0308 combining marks",
    "\u1100\u1161\u11a8 conjoining jamo", "ﬁ ﬂ ligatures, ① ② ③ circled, Ⅻ roman, ½ ¾ fractions",
    "ſ long s: 'ſ 'S 'K 'Ｓ", "fullwidth ＡＢＣ１２３ and halfwidth ｱｲｳ",
    "zero\u200bwidth\u200cjoiner\u200dmarks\ufeffbom", "soft\u00adhyphen and\u2060word joiner",
    "<|endoftext|>", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|endoftext|>", " <|endoftext|> spaced ", "<|endoftext|<|endoftext|>|>",
    "<|begin_of_text|>Hello<|end_of_text|>", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "Hi <s> there </s> bye", "<s><s></s></s>", "<<s>>", "< s >",
    "<think>\nreasoning\n</think>\n\nanswer", "<0x0A> <0xFF> literal byte-token text",
    "▁ metaspace ▁▁ chars", "Ġ Ċ ĉ byte-level chars", "\x00\x01\x02 control \x7f chars \x1b[31mred\x1b[0m",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "int main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }  // loop",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "https://example.com/path?query=1&b=two#frag user@example.org",
    "!!!???...,,,;;;:::---___***&&&%%%$$$###@@@", "((([[[{{{}}}]]])))", "a-b_c.d/e\\f|g~h`i^j",
    "UPPER lower MiXeD CamelCase snake_case kebab-case SCREAMING_CASE",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "word " * 100, "ab" * 300, "x" * 700, "9" * 500, " " * 300, "\n" * 100 + "end", "!" * 200,
    "\t \t \n \r\n \u00a0 \u2003 mixed whitespace \u3000 end",
    "𝕳𝖊𝖑𝖑𝖔 math alphanumerics 𝐀𝐁𝐂 𝟏𝟐𝟑", "Ancient: 𐌰𐌱𐌲 Gothic, 𓀀𓀁 hieroglyphs, 𠀀𠀁 CJK ext B",
    "a <x> b", "a<x>b", "a  <x>  b", "word<x>", "<x>word", " <x> ", "<x><x>", "Hello <y>there", "Hello<y> there",
    "x <z> y", "x<z>y", "<z>", "Hi  <w>  there", "é<w>", "café <x>", "<y> <y>y <y>", "\t<w>\t<x>\t",
    "é" * 50, "中" * 200, "😀" * 60, "a😀b😀c", "\u0300 leading combining", "x\u0300\u0301\u0302\u0303\u0304",
]
for e in EDGE:
    add(e, limit=100000)

# 2. gettext catalogues: translated messages in many scripts
LANGS = ["zh_CN", "zh_TW", "ja", "ko", "ru", "uk", "ar", "he", "hi", "el", "th", "vi", "de", "fr", "es", "pl",
         "tr", "fa", "bn", "ta", "ka", "hy", "am", "my", "km", "si"]
for lang in LANGS:
    mos = sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo"))
    msgs = []
    for mo in mos[:12]:
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)
            msgs += [v for k, v in sorted(cat._catalog.items(), key=lambda kv: str(kv[0])) if k and isinstance(v, str)]
        except Exception:
            pass
    rng.shuffle(msgs)
    chosen = [m for m in msgs if len(m) > 20][:10]
    for i in range(0, len(chosen), 2):
        add("\n".join(chosen[i:i + 2]))

# 3. documentation, man pages, source code, python stdlib
def read_text(path, limit):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="strict") as f:
                return f.read(limit * 4)
        with open(path, "r", encoding="utf-8", errors="strict") as f:
            return f.read(limit * 4)
    except Exception:
        return None


def take_chunk(t, limit):
    if not t:
        return None
    if len(t) <= limit:
        return t
    start = rng.randrange(0, len(t) - limit)
    return t[start:start + limit]


sources = [
    (sorted(glob.glob("/usr/share/doc/*/copyright")), 40, 1200),
    (sorted(glob.glob("/usr/share/doc/*/changelog*.gz")), 25, 1200),
    (sorted(glob.glob("/usr/share/man/man1/*.gz")), 20, 1000),
    (sorted(glob.glob("/usr/share/man/*/man1/*.gz")), 15, 1000),
    (sorted(glob.glob("/usr/lib/python3*/*.py")), 35, 1500),
    (sorted(glob.glob("/usr/lib/python3*/test/*.py")), 10, 1500),
    (sorted(glob.glob("/usr/include/*.h")), 20, 1200),
    (sorted(glob.glob("/usr/share/common-licenses/*")), 5, 1500),
]
for files, count, limit in sources:
    if not files:
        continue
    picks = rng.sample(files, min(count, len(files)))
    for p in sorted(picks):
        add(take_chunk(read_text(p, limit), limit))

# 4. variants: CRLF versions, NFD versions (NFC matters), special tokens spliced in
base = [t for t in texts if len(t) > 50]
for t in rng.sample(base, 15):
    add(t.replace("\n", "\r\n"))
for t in [x for x in texts if any(ord(c) > 0xC0 for c in x)][:15]:
    add(unicodedata.normalize("NFD", t))
specials = ["<|endoftext|>", "<|im_start|>", "<|begin_of_text|>", "<|eot_id|>", "<s>", "</s>", "<unk>"]
for t in rng.sample(base, 12):
    pos = rng.randrange(0, len(t))
    add(t[:pos] + rng.choice(specials) + t[pos:])

with open(OUT, "w", encoding="utf-8") as f:
    for t in texts:
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
print(f"{len(texts)} texts, {os.path.getsize(OUT)} bytes -> {OUT}")
