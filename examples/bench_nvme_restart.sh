#!/usr/bin/env bash
# Start-up time of an NVMe-offload job, cold (no slice files in nvme_path: every rank writes its slices from the
# checkpoint) vs warm (a rerun of the same job: every rank reuses its slice file, ztinfer.nvme_reuse), through the
# real ztinfer binary under mpirun. Prints load_seconds (metrics.json: the slowest rank's start-up, from the
# config read to the first step), the bytes in nvme_path and each rank's nvme_file_reused, per model:
#   - a random-weight Llama of ~1 GB (bf16; `ztinfer synth`; SIZE=small for a ~0.25 GB one),
#   - SmolLM2-135M-Instruct Q4_1 GGUF when ~/.cache/ztinfer has it (examples/fetch_smollm2.py),
# and checks that the warm run's records equal the cold run's byte for byte, that no cold rank reused and every
# warm rank did. Each pair runs REPEAT times (default 3); the table shows the medians and every run.
#   usage: examples/bench_nvme_restart.sh [BUILD_DIR] [NP]     (defaults: build, 2 ranks)
#   WORK=folder (default: a fresh mktemp -d, removed at the end) holds the model, nvme_path and outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
np=${2:-2}
bin=$(realpath "$build/ztinfer")
[ -x "$bin" ] || { echo "bench_nvme_restart: $bin is missing: build it first (ninja -C $build ztinfer)" >&2; exit 1; }
work=${WORK:-$(mktemp -d /tmp/zt_nvme_restart.XXXXXX)}
keep=${WORK:+1}
mkdir -p "$work"
cleanup() { [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT

mpi=(mpirun -np "$np" --oversubscribe)
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

tok=$work/tok
mkdir -p "$tok"
xz -dc tests/data/tokenizers/llama2/tokenizer.json.xz > "$tok/tokenizer.json"
cp tests/data/tokenizers/llama2/tokenizer_config.json "$tok/"
printf '%s\n' '{"custom_id": "a", "prompt": "Once upon a time", "max_tokens": 4}' \
              '{"custom_id": "b", "prompt": "Hello there", "max_tokens": 4}' > "$work/in.jsonl"

# config NAME MODEL: the job's ds.json (nvme offload, everything streamed)
config() {
  cat > "$work/$1.json" <<EOF
{
  "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 10000,
                        "offload_param": {"device": "nvme", "nvme_path": "$work/nvme-$3", "buffer_count": 4}},
  "aio": {"block_size": 1048576, "queue_depth": 8},
  "ztinfer": {"model": "$2", "input": "$work/in.jsonl", "output": "$work/$1.jsonl", "device": "cpu",
              "batch_size": 2, "threads": 1, "resume": false, "max_new_tokens": 4, "partition_embeddings": true}
}
EOF
  echo "$work/$1.json"
}

# run NAME MODEL TAG: runs the job, prints "load_seconds nvme_bytes reused-per-rank"
run() {
  local cfg
  cfg=$(config "$1" "$2" "$3")
  "${mpi[@]}" "$bin" run --config "$cfg" > "$work/$1.log" 2>&1 || { cat "$work/$1.log" >&2; exit 1; }
  python3 - "$work/$1.jsonl.metrics.json" "$work/nvme-$3" <<'EOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
size = sum(os.path.getsize(os.path.join(sys.argv[2], f)) for f in os.listdir(sys.argv[2]))
print(f"{m['load_seconds']:.2f} {size} {','.join(str(r.get('nvme_file_reused')).lower() for r in m['per_rank'])}")
EOF
}

# median of numbers
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }

# bench TAG MODEL: REPEAT times (default 3) cold (nvme_path emptied first) then warm; medians
bench() {
  local colds=() warms=() cold_s bytes cold_reused warm_s warm_reused
  for _ in $(seq "${REPEAT:-3}"); do
    rm -rf "$work/nvme-$1"
    sync
    read -r cold_s bytes cold_reused < <(run "$1-cold" "$2" "$1")
    read -r warm_s _ warm_reused < <(run "$1-warm" "$2" "$1")
    [ "$cold_reused" = "$(sed 's/true/false/g' <<< "$warm_reused")" ] && [ "${warm_reused//true/}" = "${warm_reused//[a-z]/}" ] ||
      { echo "bench_nvme_restart: $1: cold reused $cold_reused, warm reused $warm_reused" >&2; exit 1; }
    cmp -s "$work/$1-cold.jsonl" "$work/$1-warm.jsonl" || { echo "bench_nvme_restart: $1: the warm run wrote other records" >&2; exit 1; }
    colds+=("$cold_s") warms+=("$warm_s")
  done
  cold_s=$(median "${colds[@]}") warm_s=$(median "${warms[@]}")
  printf '| %s | %s | %d | %.1f | %s s (%s; reused: %s) | %s s (%s; reused: %s) | %.1fx |\n' "$1" \
    "$(du -sh --apparent-size "$2" | cut -f1)" "$np" "$(python3 -c "print($bytes / 2**20)")" "$cold_s" "${colds[*]}" \
    "$cold_reused" "$warm_s" "${warms[*]}" "$warm_reused" "$(python3 -c "print($cold_s / max($warm_s, 1e-9))")"
}

model=$work/model
if [ "${SIZE:-}" = small ]; then
  "$bin" synth --arch llama --layers 4 --hidden 1024 --heads 16 --kv-heads 16 --intermediate 2816 --dtype bf16 \
    --seed 1 --tokenizer "$tok" --out "$model" > /dev/null 2>&1
else
  "$bin" synth --arch llama --layers 8 --hidden 2048 --heads 16 --kv-heads 16 --intermediate 5504 --dtype bf16 \
    --seed 1 --tokenizer "$tok" --out "$model" > /dev/null 2>&1
fi
echo "| model | checkpoint | ranks | slice files MiB (all ranks) | cold load_seconds (runs) | warm load_seconds (runs) | cold / warm |"
echo "|---|---|---|---|---|---|---|"
bench synthetic-llama "$model"
gguf=$HOME/.cache/ztinfer/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$gguf" ]; then
  bench smollm2-q4_1 "$gguf"
else
  echo "(no $gguf: run examples/fetch_smollm2.py for the GGUF row)" >&2
fi
