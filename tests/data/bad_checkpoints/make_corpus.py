#!/usr/bin/env python3
"""Regenerates the broken-safetensors corpus in this folder: each file is broken in exactly one way."""
import json, os, struct

def raw(h, data=b"", n=None):
    hb = h.encode() if isinstance(h, str) else h
    return struct.pack("<Q", len(hb) if n is None else n) + hb + data

def e(dt, shape, b, en):
    return {"dtype": dt, "shape": shape, "data_offsets": [b, en]}

files = {
    "truncated.safetensors": raw(json.dumps({"w": e("F32", [4, 4], 0, 64)}), b"\0" * 40),
    "header_len_huge.safetensors": raw("{}", b"", n=1 << 63),
    "header_len_over_100mb.safetensors": raw("{}", b"", n=100_000_001),
    "header_not_utf8.safetensors": raw(b'{"w\xff":{}}'),
    "header_not_json.safetensors": raw("{this is not json}"),
    "overlap.safetensors": raw(json.dumps({"a": e("F32", [2], 0, 8), "b": e("F32", [2], 4, 12)}), b"\0" * 12),
    "gap.safetensors": raw(json.dumps({"a": e("F32", [1], 0, 4), "b": e("F32", [1], 8, 12)}), b"\0" * 12),
    "reversed.safetensors": raw(json.dumps({"a": e("F32", [2], 8, 0)}), b"\0" * 8),
    "shape_overflow.safetensors": raw(json.dumps({"a": e("F32", [1 << 62, 1 << 62], 0, 4)}), b"\0" * 4),
    "span_mismatch.safetensors": raw(json.dumps({"a": e("F16", [3], 0, 8)}), b"\0" * 8),
    "unknown_dtype.safetensors": raw(json.dumps({"a": e("Q4_K", [4], 0, 4)}), b"\0" * 4),
    "trailing_bytes.safetensors": raw(json.dumps({"a": e("F32", [1], 0, 4)}), b"\0" * 9),
    "too_short.safetensors": b"\x05\0\0",
}
here = os.path.dirname(os.path.abspath(__file__))
for name, data in files.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
