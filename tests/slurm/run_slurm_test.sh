#!/usr/bin/env bash
# Tests examples/slurm/*.sbatch against a real Slurm (Debian's slurm-wlm) started on this one machine.
#
# What it does: starts munged, slurmctld and two slurmd (nodes n1 and n2, both this host, 8 CPUs and 8 fake GPUs
# each: GRES files are /dev/null-like device nodes, ztinfer runs on the CPU) with a generated slurm.conf in a
# private work folder (own ports, state, logs; the machine's /etc/slurm is not used), makes a tiny random Llama
# (`ztinfer synth`) and a prompts JSONL, runs the job once without Slurm as the reference, then sbatches each
# example with its #SBATCH lines as written except the sizes this machine has (overridden on the sbatch command
# line) and checks that every output holds each request exactly once and equals the reference:
#   1. single-node-8gpu.sbatch     1 node x 8 ranks, srun --mpi=pmix
#   2. multi-node-srun.sbatch      2 nodes x 2 ranks, srun --mpi=pmix
#   3. multi-node-mpirun.sbatch    2 nodes x 2 ranks, mpirun inside the allocation
#   4. preemptible.sbatch, stopped mid-job three ways, each time resumed to the full output:
#      a. `scancel --batch --signal=TERM` (what --signal=B:TERM@120 does): the trap forwards SIGTERM, the ranks stop
#         (exit 143) and the script requeues the job;  b. `scontrol requeue` (Slurm requeues it);
#      c. `scancel --signal=TERM` (the ranks only): they stop and the script requeues the job
#   5. submit-array.sh: 3 shards as a job array + the merge job (afterok); merged file in input order
#   6. preemptible.sbatch under a real time limit: --time=2 --signal=B:TERM@60, requeued until done (~3 min)
#   7. multi-node-tcp.sbatch       2 nodes x 2 ranks, srun --mpi=none, ranks meet over TCP (no MPI in the job)
# Then stops everything it started (by pid) and removes the work folder (kept on failure or with --keep).
# Exit status: 0 passed, 1 an example failed, 77 the cluster could not be set up here (not root, apt-get failed, a
# daemon would not start): the reason is printed and tests/run.sh reports the test as skipped.
#
# Usage: bash tests/slurm/run_slurm_test.sh [--keep] [--only N[,N...]]     (N: 1-7, or 4a: only 4's first way;
#        CI runs --only 1,2,3,4a,5,7, ~2 min; all of them take ~9 min)       (as root; builds nothing: needs
#        build/ztinfer with MPI, e.g. from `bash .ci/build.sh`)
# Installs slurm-wlm and munge with apt-get when missing. Environment: ZT_SLURM_WORKDIR (work folder, default a new
# /tmp/zt-slurm.XXXXXX), ZT_SLURM_PORT (first of 3 TCP ports, default random), ZT_SLURM_TIMEOUT (seconds per job,
# default 300). What to edit: nothing; it runs as is on a Debian 12 machine or container (no systemd needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

keep=0 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --only) only=",${2:?--only needs a list, e.g. 1,4},"; shift ;;
    *) echo "run_slurm_test: unknown option $1 (known: --keep, --only N[,N])" >&2; exit 2 ;;
  esac
  shift
done
want() { [ -z "$only" ] || [[ "$only" == *",$1,"* ]]; }

say() { echo "== slurm-test: $*"; }
die() { echo "slurm-test: FAILED: $*" >&2; exit 1; }
# the cluster itself cannot be had here (no root, no packages, a daemon that will not start): exit 77, which
# tests/run.sh reports as skipped with this reason; a failing example is a failure (die)
unavailable() { echo "slurm-test: SKIPPED: Slurm cannot run here: $*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || unavailable "run as root (it starts slurmctld/slurmd/munged as root, like a one-machine cluster)"
[ -x build/ztinfer ] || die "build/ztinfer is missing: build it first (bash .ci/build.sh)"
build/ztinfer info 2>/dev/null | grep -qi 'mpi' || say "warning: 'ztinfer info' does not mention MPI; multi-rank jobs need it"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null ||
    unavailable "apt-get install slurm-wlm munge failed"
fi
for c in slurmctld slurmd munged munge sbatch srun scontrol scancel squeue sinfo mpirun python3 mknod; do
  command -v "$c" >/dev/null || unavailable "'$c' not found (apt-get install slurm-wlm munge openmpi-bin python3)"
done
say "$(slurmctld -V), $(mpirun --version 2>/dev/null | head -1)"

W=${ZT_SLURM_WORKDIR:-$(mktemp -d /tmp/zt-slurm.XXXXXX)}
mkdir -p "$W" && W=$(cd "$W" && pwd)
chmod 755 "$W"
job_timeout=${ZT_SLURM_TIMEOUT:-300}
port=${ZT_SLURM_PORT:-$((20000 + RANDOM % 20000))}
host=$(hostname -s)
pids=()
export SLURM_CONF=$W/etc/slurm.conf
unset SLURM_JOB_ID SLURM_JOBID SLURM_PROCID SLURM_NTASKS SLURM_NPROCS SLURM_LOCALID 2>/dev/null || true

# ours PID: the process runs with this cluster's SLURM_CONF (daemons, slurmstepd, job scripts, ranks all do)
ours() { [ "$1" != $$ ] && { tr '\0' '\n' < "/proc/$1/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF"; }
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  if [ -f "$SLURM_CONF" ] && scontrol ping >/dev/null 2>&1; then
    local jobs; jobs=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
      scancel $jobs 2>/dev/null
      for _ in $(seq 80); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done   # KillWait is 30 s
    fi
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done; done
  [ -f "$W/munge/munged.pid" ] && kill "$(cat "$W/munge/munged.pid")" 2>/dev/null && sleep 0.5
  # what is left (a slurmstepd retrying a dead slurmctld, a rank stuck in MPI_Init): this cluster's processes only,
  # found by their SLURM_CONF, killed by pid
  local left=()
  for d in /proc/[0-9]*; do p=${d#/proc/}; ours "$p" && left+=("$p"); done
  [ ${#left[@]} -eq 0 ] || { echo "slurm-test: killing leftover processes ${left[*]}" >&2; kill -KILL "${left[@]}" 2>/dev/null; }
  if [ "$rc" -ne 0 ] || [ "$keep" = 1 ]; then
    echo "slurm-test: work folder kept: $W (logs: $W/log, job logs: $W/jobs)" >&2
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the one-machine cluster -----------------------------------------------------------------------------------
say "cluster in $W (ports $port-$((port + 2)))"
mkdir -p "$W"/{etc,munge,msock,state,log,jobs,spool/n1,spool/n2,tmp/n1,tmp/n2,gpu}
chmod 700 "$W/munge"; chmod 755 "$W/msock"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$W/munge/munge.key"
munged -f --key-file="$W/munge/munge.key" --socket="$W/msock/munge.sock" --pid-file="$W/munge/munged.pid" \
  --seed-file="$W/munge/munged.seed" --log-file="$W/log/munged.log" || unavailable "munged did not start: $(tail -3 "$W/log/munged.log" 2>/dev/null | tr '\n' ' ')"
munge -S "$W/msock/munge.sock" -n | unmunge -S "$W/msock/munge.sock" >/dev/null || unavailable "munge round trip failed"

# 8 fake GPUs per node: character devices like /dev/null (slurmd wants devices); plain files if mknod is refused
# (slurmd then logs an error per file but still counts them)
for i in 0 1 2 3 4 5 6 7; do mknod "$W/gpu/nvidia$i" c 1 3 2>/dev/null || : > "$W/gpu/nvidia$i"; done

cat > "$SLURM_CONF" <<EOF
# generated by tests/slurm/run_slurm_test.sh: a private two-node cluster on this one host
ClusterName=zttest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
AuthType=auth/munge
AuthInfo=socket=$W/msock/munge.sock
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool/%n
# PMIx keeps per-node files under TmpFS; the two nodes share this host, so each gets its own
TmpFS=$W/tmp/%n
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd-%n.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups needed: processes tracked through /proc, no binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# the nodes say 8 CPUs whatever this host has
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=600
GresTypes=gpu
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 1)) CPUs=8 RealMemory=2000 Gres=gpu:8 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 2)) CPUs=8 RealMemory=2000 Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
printf 'AutoDetect=off\nNodeName=n[1-2] Name=gpu File=%s/gpu/nvidia[0-7]\n' "$W" > "$W/etc/gres.conf"
: > "$W/etc/cgroup.conf"

slurmctld -D -f "$SLURM_CONF" > "$W/log/slurmctld.out" 2>&1 & pids+=($!)
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
scontrol ping 2>/dev/null | grep -q UP || { tail -20 "$W/log/slurmctld.out" >&2; unavailable "slurmctld did not come up (its log above)"; }
for n in n1 n2; do slurmd -D -N "$n" -f "$SLURM_CONF" > "$W/log/slurmd-$n.out" 2>&1 & pids+=($!); done
for _ in $(seq 60); do [ "$(sinfo -h -o %T | sort -u)" = idle ] && break; sleep 0.5; done
[ "$(sinfo -h -o %T | sort -u)" = idle ] ||
  { sinfo >&2; tail -5 "$W"/log/slurmd-n*.out "$W/log/slurmctld.log" >&2; unavailable "the nodes did not become idle (the slurmd logs above)"; }
say "nodes up: $(sinfo -h -o '%P %D %T %N')"

# ---- model, prompts, reference -----------------------------------------------------------------------------------
mkdir -p "$W/tok" "$W/ref"
xz -dc tests/data/tokenizers/llama2/tokenizer.json.xz > "$W/tok/tokenizer.json"
cp tests/data/tokenizers/llama2/tokenizer_config.json "$W/tok/"
build/ztinfer synth --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --tokenizer "$W/tok" --seed 3 --out "$W/model" >"$W/log/synth.log" 2>&1 || { cat "$W/log/synth.log" >&2; die "synth failed"; }
python3 - "$W/prompts.jsonl" <<'PY'
import json, random, sys
rnd = random.Random(5)
with open(sys.argv[1], "w") as f:
    for i in range(24):
        ids = [1] + [rnd.randrange(100, 30000) for _ in range(rnd.randrange(3, 20))]
        f.write(json.dumps({"custom_id": f"req-{i:02d}", "prompt_token_ids": ids, "max_tokens": rnd.randrange(8, 40)}) + "\n")
        if i == 9:   # an invalid line: every output must hold its error record once, too
            f.write(json.dumps({"custom_id": "bad-max-tokens", "prompt_token_ids": [1, 2], "max_tokens": 0}) + "\n")
            f.write("\n")
PY
n_lines=$(grep -c . "$W/prompts.jsonl")

# config NAME OUTPUT [LINK_GBPS]: a job config; LINK_GBPS > 0 slows every weight fetch (ztinfer's test_link_gbps) so
# that a job lasts long enough to be stopped mid-way; outputs do not depend on it
config() {
  local link=${3:-0}
  cat > "$W/$1.json" <<EOF
{
  "zero_optimization": { "stage": 3, "offload_param": { "device": "cpu" }, "stage3_param_persistence_threshold": 1000 },
  "ztinfer": {
    "model": "$W/model", "task": "generate", "input": "$W/prompts.jsonl", "output": "$2",
    "device": "cpu", "batch_size": 2, "threads": 1, "temperature": 0.8, "top_p": 0.95, "seed": 11,
    "collective_timeout_s": 120$( [ "$link" = 0 ] || echo ", \"test_link_gbps\": $link" )
  }
}
EOF
  echo "$W/$1.json"
}

# same OUT REF: OUT holds every input line's record exactly once, and equals REF record for record
same() {
  python3 - "$1" "$2" "$W/prompts.jsonl" <<'PY' || die "$1 differs from the uninterrupted run $2 (see above)"
import json, os, sys
sharded = os.environ.get("SAME_SHARDED") == "1"
def load(p):
    recs, raw = {}, open(p, "rb").read()
    if raw and not raw.endswith(b"\n"):
        print(f"{p}: last line cut short"); sys.exit(1)
    for k, line in enumerate(raw.decode().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        key = f"line {r['line']}" if "error" in r else r["custom_id"]
        if "error" in r and sharded and r.get("custom_id"):   # a shard's error record names the shard's line
            key = r["custom_id"]; r.pop("line"); r["error"].pop("message")
        if key in recs:
            print(f"{p}:{k}: {key} appears twice"); sys.exit(1)
        recs[key] = r
    return recs
out, ref = load(sys.argv[1]), load(sys.argv[2])
n = sum(1 for l in open(sys.argv[3]) if l.strip())
if len(ref) != n:
    print(f"{sys.argv[2]}: {len(ref)} records for {n} input lines"); sys.exit(1)
missing, extra = sorted(set(ref) - set(out)), sorted(set(out) - set(ref))
diff = sorted(k for k in set(ref) & set(out) if ref[k] != out[k])
if missing or extra or diff:
    print(f"{sys.argv[1]}: missing {missing[:5]}, unexpected {extra[:5]}, different {diff[:5]}"); sys.exit(1)
PY
}

# wait_job ID: waits until the job (every task of an array) has left the queue's active states; prints its state.
# Slurm holds a requeued job back for about 2 minutes (measured: EligibleTime = requeue + 121 s, Reason=BeginTime);
# to keep the test short, such a job is made eligible 15 s after (scontrol update StartTime=now); at once is too
# early: its step's PMIx folder (named after job and step id) is still there and the relaunch fails.
job_state() { scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | sort -u | tr '\n' ' '; }
wait_job() {   # ID [SECONDS]
  local t=0 s held=0 limit=${2:-$job_timeout}
  while :; do
    s=$(job_state "$1")
    if [ "$s" = "PENDING " ] && scontrol show job -o "$1" 2>/dev/null | grep -q 'Reason=BeginTime'; then
      held=$((held + 1))   # after 15 s: the old run's step is cleaned up by then (its PMIx folder, same job id)
      [ $((held % 30)) -ne 0 ] || scontrol update JobId="$1" StartTime=now >/dev/null 2>&1 || true
    fi
    case "$s" in *PENDING*|*RUNNING*|*CONFIGURING*|*COMPLETING*|*REQUEUE*|*SUSPENDED*|*SIGNALING*|*STAGE_OUT*|"") ;; *) echo "$s"; return 0 ;; esac
    t=$((t + 1)); [ "$t" -le $((limit * 2)) ] || { echo "TIMEOUT($s)"; return 0; }
    sleep 0.5
  done
}
# lines_in FILE: whole records in FILE so far
lines_in() { [ -f "$1" ] && grep -c . "$1" || echo 0; }
show_log() { echo "---- $1" >&2; tail -40 "$1" >&2 || true; }

# sbatch with the environment the examples read; the sizes this host has override the scripts' #SBATCH lines
export ZTINFER=$repo/build/ztinfer OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# both "nodes" are this host: keep OpenMPI's TCP on loopback (the other interfaces may be firewalled), no shared
# memory transport (vader names its segments /dev/shm/vader_segment.<host>.<job>.<local rank>: n1's and n2's
# local rank 0 collide and MPI_Init hangs), and let oversubscribed ranks yield the CPU
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl=self,tcp
cd "$W/jobs"

say "reference: the job without Slurm, 1 rank"
"$ZTINFER" --config "$(config ref "$W/ref/out.jsonl")" > "$W/log/ref.log" 2>&1 || { show_log "$W/log/ref.log"; die "reference run failed"; }
[ "$(lines_in "$W/ref/out.jsonl")" -eq "$n_lines" ] || die "reference: $(lines_in "$W/ref/out.jsonl") records for $n_lines lines"
say "reference: $n_lines records"

run_example() {   # NAME SCRIPT [sbatch options...]: sbatch --wait, check the output
  local name=$1 script=$2; shift 2
  local out=$W/$name/out.jsonl rc=0 jid
  mkdir -p "$W/$name"
  export CONFIG; CONFIG=$(config "$name" "$out")
  jid=$(timeout "$job_timeout" sbatch --parsable --wait -o "$W/jobs/$name-%j.log" --time=10 "$@" \
        "$repo/examples/slurm/$script") || rc=$?
  [ "$rc" -eq 0 ] || { show_log "$(ls "$W/jobs/$name-"*.log | tail -1)"; die "$name: sbatch --wait $script exited $rc"; }
  local s; s=$(job_state "$jid")
  [ "$s" = "COMPLETED " ] || { show_log "$W/jobs/$name-$jid.log"; die "$name: job $jid ended $s"; }
  same "$out" "$W/ref/out.jsonl"
  say "$name: ok (job $jid, $(grep -m1 -o 'job [0-9]* on .*' "$W/jobs/$name-$jid.log" || echo "log $W/jobs/$name-$jid.log"))"
}

want 1 && run_example single-node single-node-8gpu.sbatch --cpus-per-task=1
want 2 && run_example multi-srun multi-node-srun.sbatch --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1
want 3 && run_example multi-mpirun multi-node-mpirun.sbatch --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1
# both "nodes" are this host, whose node names (n1, n2) do not resolve: rank 0 is reached at 127.0.0.1
want 7 && (export MASTER_ADDR=127.0.0.1; run_example multi-tcp multi-node-tcp.sbatch --ntasks-per-node=2 \
  --gpus-per-node=2 --cpus-per-task=1)

# ---- preemption: stop mid-job, let it resume, compare -------------------------------------------------------------
preempt() {   # NAME HOW: HOW = batch-term | requeue | step-term | time-limit
  local name=$1 how=$2 out=$W/$1/out.jsonl jid t=0 n s log link=0.002 opts=(--time=10)
  # time-limit: the real --signal=B:TERM@60 of a 2-minute job (Slurm checks time limits periodically, so the signal
  # comes roughly 45-75 s in); steps slow enough that the first run cannot finish by then, the second one can
  [ "$how" != time-limit ] || { link=0.0007; opts=(--time=2 --signal=B:TERM@60); }
  mkdir -p "$W/$name"
  export CONFIG; CONFIG=$(config "$name" "$out" "$link")
  jid=$(sbatch --parsable -o "$W/jobs/$name-%j.log" "${opts[@]}" --nodes=1 --ntasks-per-node=2 --gpus-per-node=2 \
        --cpus-per-task=1 "$repo/examples/slurm/preemptible.sbatch")
  log=$W/jobs/$name-$jid.log
  if [ "$how" != time-limit ]; then
    # stop it once a few records are out and most are not
    while n=$(lines_in "$out"); [ "$n" -lt 3 ]; do
      t=$((t + 1)); [ "$t" -le $((job_timeout * 10)) ] || die "$name: job $jid wrote no records in ${job_timeout}s"
      [ "$(job_state "$jid")" != "COMPLETED " ] || { show_log "$log"; die "$name: job $jid ended before it could be stopped"; }
      sleep 0.1
    done
    [ "$n" -lt "$n_lines" ] || die "$name: the job finished before it could be stopped (make it slower)"
    case "$how" in
      batch-term) scancel --batch --signal=TERM "$jid" ;;   # what --signal=B:TERM@120 sends
      requeue) scontrol requeue "$jid" ;;
      step-term) scancel --signal=TERM "$jid" ;;
    esac
    say "$name: job $jid stopped with '$how' at $n of $n_lines records"
  else
    say "$name: job $jid runs until its time limit's signal"
  fi
  s=$(wait_job "$jid" $((job_timeout * 2)))
  [ "$s" = "COMPLETED " ] || { show_log "$log"; die "$name: job $jid ended $s"; }
  grep -qi 'exit code 143' "$log" || [ "$how" = requeue ] ||
    { show_log "$log"; die "$name: no rank stopped with 143 (clean stop) in $log"; }
  local restarts; restarts=$(scontrol show job -o "$jid" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
  [ "${restarts:-0}" -ge 1 ] || { show_log "$log"; die "$name: job $jid was not requeued (Restarts=${restarts:-?})"; }
  case "$how" in
    batch-term|step-term|time-limit) grep -q 'requeueing; the next run resumes' "$log" || { show_log "$log"; die "$name: the script did not requeue"; } ;;
    requeue) grep -q 'leaving the requeue to Slurm' "$log" || say "$name: (the batch shell was gone before it could log)" ;;
  esac
  [ "$how" != time-limit ] || grep -q 'SIGTERM (preemption or time limit)' "$log" || { show_log "$log"; die "$name: no SIGTERM trap"; }
  same "$out" "$W/ref/out.jsonl"
  say "$name: ok: requeued $restarts time(s), every request once, output equals the uninterrupted run"
}
{ want 4 || want 4a; } && preempt preempt-batch-term batch-term
want 4 && { preempt preempt-requeue requeue; preempt preempt-step-term step-term; }
want 6 && preempt preempt-time-limit time-limit

# ---- job array + merge --------------------------------------------------------------------------------------------
if want 5; then
  export CONFIG; CONFIG=$(config array "$W/array/unused.jsonl")
  ids=$(ARRAY_OPTS="--ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1 -o $W/jobs/array-%A_%a.log" \
        bash "$repo/examples/slurm/submit-array.sh" "$CONFIG" "$W/prompts.jsonl" 3 "$W/array" --time=10 | tail -1)
  read -r array merge <<< "$ids"
  s=$(wait_job "$array"); [ "$s" = "COMPLETED " ] || { for f in "$W"/jobs/array-*.log; do show_log "$f"; done; die "array job $array ended $s"; }
  s=$(wait_job "$merge"); [ "$s" = "COMPLETED " ] || { for f in "$W"/jobs/array-*.log; do show_log "$f"; done; show_log "$W/jobs/ztinfer-merge-$merge.log"; die "merge job $merge ended $s"; }
  SAME_SHARDED=1 same "$W/array/merged.jsonl" "$W/ref/out.jsonl"
  # input order: the merged custom_ids / lines follow prompts.jsonl
  python3 - "$W/array/merged.jsonl" "$W/prompts.jsonl" <<'PY' || die "merged.jsonl is not in input order"
import json, sys
got = [json.loads(l).get("custom_id") for l in open(sys.argv[1]) if l.strip()]
want = [json.loads(l)["custom_id"] for l in open(sys.argv[2]) if l.strip()]
sys.exit(0 if got == want else 1)
PY
  say "array: ok (array job $array x 3 shards, merge job $merge): $(grep -h '^merge:' "$W/jobs/ztinfer-merge-$merge.log")"
fi

say "all passed"
