#!/usr/bin/env python3
# make_quantize_fixtures: writes tests/data/quantize/input.f32 (rows of fp32 weights: Gaussian blocks at several
# scales, an all-zero block, a constant block, a negative-only block, blocks whose scaled values sit exactly on .5
# ties, a block with one outlier) and <TYPE>.bin, those weights quantized by the gguf PyPI package's quants.quantize
# (the round-to-nearest reference of ggml's quantize_row_*_ref), for Q8_0, Q4_0 and Q4_1; test_quantize checks that
# quantize_row writes the same bytes. Run: python3 examples/make_quantize_fixtures.py (needs `pip install gguf
# numpy`); the outputs are committed (~14 KB).
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "quantize"
BLOCK = 32


def blocks():
    rng = np.random.default_rng(20261207)
    out = [rng.standard_normal(BLOCK) * s for s in (1.0, 0.02, 3e-4, 40.0) for _ in range(12)]
    out.append(np.zeros(BLOCK))                               # d = 0
    out.append(np.full(BLOCK, 0.75))                          # max == min
    out.append(-np.abs(rng.standard_normal(BLOCK)))           # all negative
    ties = (2 * np.arange(-16, 16) + 1) / 4.0                 # x * (1/d) lands on k + 0.5 for Q8_0 (d = 0.5)
    ties[0] = 63.5
    out.append(ties)
    out.append(np.arange(BLOCK) - 8.0)                        # Q4_0 / Q4_1 grid points
    spike = rng.standard_normal(BLOCK) * 0.1
    spike[7] = -25.0
    out.append(spike)
    for _ in range(10):                                       # fp16-rounded values, random signs and scales
        out.append((rng.standard_normal(BLOCK) * 10 ** rng.uniform(-3, 1)).astype(np.float16).astype(np.float64))
    return np.stack(out).astype(np.float32)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x = blocks().reshape(-1, 4 * BLOCK)                       # rows of 128 weights (4 blocks), 16 rows
    (OUT / "input.f32").write_bytes(x.tobytes())
    for name in ("Q8_0", "Q4_0", "Q4_1"):
        q = quants.quantize(x, getattr(T, name))
        (OUT / f"{name}.bin").write_bytes(q.tobytes())
        print(f"{name}: {x.shape[0]} rows of {x.shape[1]} weights -> {q.nbytes} bytes")


if __name__ == "__main__":
    main()
