#!/usr/bin/env bash
# The demo: installs dependencies, builds, writes a small random-weight Llama model (Llama 2 tokenizer),
# runs the generate job of configs/demo.json over examples/prompts.jsonl as 2 MPI ranks (each holds half of
# every layer in pinned host memory and all-gathers the rest every step) and prints the results.
# The model has RANDOM weights: the text is gibberish; the point is the pipeline. --no-build skips install+build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--no-build" ] || bash .ci/build.sh
mkdir -p demo/tokenizer
if [ ! -f demo/tokenizer/tokenizer.json ]; then
  xz -dc tests/data/tokenizers/llama2/tokenizer.json.xz > demo/tokenizer/tokenizer.json
  cp tests/data/tokenizers/llama2/tokenizer_config.json demo/tokenizer/
fi
if [ ! -f demo/model/model.safetensors ]; then
  ./build/ztinfer synth --arch llama --layers 4 --hidden 256 --heads 8 --kv-heads 4 --intermediate 688 \
    --tokenizer demo/tokenizer --dtype bf16 --seed 1 --out demo/model
fi
./build/ztinfer info
# OpenMPI refuses root unless told; --oversubscribe lets 2 ranks share fewer cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe --bind-to none -np 2 ./build/ztinfer --config configs/demo.json
echo "== results (demo/out.jsonl)"
cat demo/out.jsonl
