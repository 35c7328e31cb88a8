#!/usr/bin/env python3
# make_quant_fixtures: writes tests/data/quant/<TYPE>.bin (raw GGUF blocks: random bytes, with every fp16 scale field
# set to a finite value in [-2, 2]) and <TYPE>.f32 (those blocks dequantized by the gguf PyPI package, the reference
# that ggml's own Python tools use), for the block types ztinfer reads: Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K.
# Run: python3 examples/make_quant_fixtures.py (needs `pip install gguf numpy`); the outputs are committed (~20 KB).
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "quant"
# byte offsets of the fp16 fields inside one block (ggml's block structs)
F16_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
BLOCKS = {"Q8_0": 16, "Q4_0": 16, "Q4_1": 16, "Q4_K": 4, "Q5_K": 4, "Q6_K": 4}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261207)
    for name, fields in F16_FIELDS.items():
        t = getattr(T, name)
        block_weights, block_bytes = GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(BLOCKS[name], block_bytes), dtype=np.uint8)
        for off in fields:
            vals = rng.uniform(-2, 2, size=BLOCKS[name]).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(-1, 2)
        ref = quants.dequantize(raw.reshape(1, -1), t).astype(np.float32).reshape(-1)
        assert ref.size == BLOCKS[name] * block_weights and np.isfinite(ref).all()
        (OUT / f"{name}.bin").write_bytes(raw.tobytes())
        (OUT / f"{name}.f32").write_bytes(ref.tobytes())
        print(f"{name}: {BLOCKS[name]} blocks of {block_weights} weights, {block_bytes} bytes each")


if __name__ == "__main__":
    main()
