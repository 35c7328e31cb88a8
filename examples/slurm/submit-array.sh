#!/usr/bin/env bash
# Splits one input JSONL into N shards, submits array-shards.sbatch as a job array over them (one array task per
# shard, each a full ztinfer job of its own), and array-merge.sbatch as a job that runs only when every array task
# succeeded (--dependency=afterok), merging the shard outputs into one file in input order.
#
# Usage:  examples/slurm/submit-array.sh CONFIG INPUT N WORKDIR [extra sbatch options for both jobs...]
#   CONFIG   the ds.json every shard runs (its "input"/"output" are replaced by the shard's)
#   INPUT    the requests JSONL to split (blank lines dropped; each shard gets a contiguous run of lines)
#   N        number of shards = array tasks (they run at once if the cluster has room; add --array=...%K to
#            array-shards.sbatch to cap that)
#   WORKDIR  where shards/ (shard-000.jsonl...), outputs/ (shard-000.out.jsonl...) and merged.jsonl go
# Environment: ZTINFER (the binary, passed on to the jobs), ARRAY_OPTS (sbatch options for the array job only, e.g.
# "--ntasks-per-node=4 --gpus-per-node=4" or "--array=0-99%10" to run at most 10 shards at once), SBATCH (default
# sbatch), SLURM_SCRIPTS (folder of the two .sbatch files, default: this script's folder). Resubmitting with the same WORKDIR keeps the shards (they
# are not re-split if shards/ exists with N files) and resumes each shard's output.
# What to edit: nothing here; edit the #SBATCH lines of array-shards.sbatch (GPUs per task, --time) instead.
set -euo pipefail

usage() { sed -n '6,11p' "$0" >&2; exit 2; }
[ $# -ge 4 ] || usage
config=$1 input=$2 n=$3 work=$4; shift 4
SBATCH=${SBATCH:-sbatch}
scripts=${SLURM_SCRIPTS:-$(cd "$(dirname "$0")" && pwd)}
[ -f "$config" ] || { echo "submit-array: config '$config' not found" >&2; exit 2; }
[ -f "$input" ] || { echo "submit-array: input '$input' not found" >&2; exit 2; }
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "submit-array: N='$n' must be a whole number >= 1" >&2; exit 2; }
[ -f "$scripts/array-shards.sbatch" ] && [ -f "$scripts/array-merge.sbatch" ] ||
  { echo "submit-array: array-shards.sbatch / array-merge.sbatch not found in '$scripts': set SLURM_SCRIPTS" >&2; exit 2; }

mkdir -p "$work/shards" "$work/outputs"
work=$(cd "$work" && pwd)
existing=$(find "$work/shards" -maxdepth 1 -name 'shard-*.jsonl' | wc -l)
if [ "$existing" -eq 0 ]; then
  # contiguous runs of the non-blank lines, ceil(lines / n) each; shards past the end are written empty
  awk -v n="$n" -v dir="$work/shards" '
    NF { line[++m] = $0 }
    END {
      per = int((m + n - 1) / n); if (per < 1) per = 1
      for (i = 0; i < n; i++) { f = sprintf("%s/shard-%03d.jsonl", dir, i); printf "" > f; close(f) }
      for (k = 1; k <= m; k++) { f = sprintf("%s/shard-%03d.jsonl", dir, int((k - 1) / per)); print line[k] >> f }
    }' "$input"
  echo "submit-array: split $input into $n shards in $work/shards"
elif [ "$existing" -ne "$n" ]; then
  echo "submit-array: $work/shards already holds $existing shards, not $n: use another WORKDIR or N=$existing" >&2
  exit 2
else
  echo "submit-array: reusing the $n shards in $work/shards (resuming)"
fi

export CONFIG=$config SHARD_DIR=$work/shards OUT_DIR=$work/outputs MERGED=$work/merged.jsonl NSHARDS=$n
read -r -a array_opts <<< "${ARRAY_OPTS:-}"
array=$("$SBATCH" --parsable --array="0-$((n - 1))" "$@" "${array_opts[@]}" "$scripts/array-shards.sbatch")
array=${array%%;*}
merge=$("$SBATCH" --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes "$@" "$scripts/array-merge.sbatch")
merge=${merge%%;*}
echo "submit-array: array job $array ($n tasks), merge job $merge (after all succeed) -> $work/merged.jsonl"
echo "$array $merge"
