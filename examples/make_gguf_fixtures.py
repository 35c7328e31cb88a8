#!/usr/bin/env python3
# make_gguf_fixtures: writes tests/data/gguf/tiny.gguf with the gguf PyPI package's GGUFWriter (the writer of
# llama.cpp's own convert scripts): metadata of every value type (integers, floats, bool, string, arrays of numbers
# and of strings) and tensors of F32, F16, BF16, Q8_0, Q4_1 and Q4_K, plus tiny.json: what a reader must find (the
# metadata, each tensor's shape, type and its values dequantized by the same package). Committed (~15 KB).
# Run: python3 examples/make_gguf_fixtures.py (needs `pip install gguf numpy`).
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter, quants

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "gguf"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    w = GGUFWriter(str(OUT / "tiny.gguf"), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int32("test.i32", -5)
    w.add_int8("test.i8", -3)
    w.add_uint16("test.u16", 65535)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float64("test.f64", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.strings", ["a", "bc", ""])
    want = {"metadata": {"general.architecture": "llama", "llama.block_count": 2, "test.u64": 1 << 40,
                         "test.i32": -5, "test.i8": -3, "test.u16": 65535, "test.f64": 0.125, "test.bool": True,
                         "test.string": "héllo", "test.ints": [1, 2, 3], "test.strings": ["a", "bc", ""]},
            "tensors": {}}
    specs = [("f32.weight", T.F32, (3, 32)), ("f16.weight", T.F16, (2, 64)), ("bf16.weight", T.BF16, (2, 32)),
             ("q8_0.weight", T.Q8_0, (3, 64)), ("q4_1.weight", T.Q4_1, (2, 32)), ("q4_k.weight", T.Q4_K, (2, 256))]
    for name, t, shape in specs:
        x = rng.standard_normal(shape).astype(np.float32)
        if t == T.F32:
            data = x
        elif t == T.F16:
            data = x.astype(np.float16)
        elif t == T.Q4_K:   # the package cannot quantize K types: random blocks with finite fp16 scales
            raw = rng.integers(0, 256, size=(shape[0], shape[1] // 256 * 144), dtype=np.uint8)
            for r in range(shape[0]):
                for b in range(shape[1] // 256):
                    raw[r, b * 144:b * 144 + 4] = rng.uniform(-1, 1, 2).astype(np.float16).view(np.uint8)
            data = raw
        else:
            data = quants.quantize(x, t)
        w.add_tensor(name, data, raw_dtype=t if t not in (T.F32, T.F16) else None)
        if t == T.F32:
            values = x
        elif t == T.F16:
            values = data.astype(np.float32)
        else:
            values = quants.dequantize(data, t)
        want["tensors"][name] = {"type": t.name, "shape": list(shape),
                                 "values": [float(v) for v in np.asarray(values, np.float32).reshape(-1)]}
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (OUT / "tiny.json").write_text(json.dumps(want))
    print("wrote", OUT / "tiny.gguf", (OUT / "tiny.gguf").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
