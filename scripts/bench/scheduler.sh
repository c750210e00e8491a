#!/usr/bin/env bash
# Benchmark of the compile scheduler's efficiency (issue 7, benchmark 3): how close the REAL
# scheduler (src/compile/scheduler) gets to the best possible makespan, and what fissile's
# least-deps-first blocking queue would have given on the same graphs.
#
# What it does (examples/scheduler_sim.rs): for fixed-seed generated DAGs (a chain, a wide fan,
# a diamond lattice, random layered DAGs of 50-300 nodes) with log-normal (skewed) durations,
# scaled so each DAG's lower bound at 2 workers is BENCH_TARGET_SECONDS, it runs the scheduler
# with jobs that sleep their duration, at N=2 and N=4 workers, and prints per DAG and N:
#   makespan (wall time of the run, best of BENCH_RUNS), the lower bound
#   max(critical path, total work / N), their ratio (target <= 1.05, PASS/MISS), how much the
#   sleeps themselves overran (a loaded machine wakes sleepers late), the ratio against the bound
#   recomputed from the durations the jobs really took (the scheduler's own share), the same
#   policy simulated with exact durations, and fissile's policy simulated (makespan and ratio).
# A MISS says whether the sleeps or the scheduler overran. The script exits 0 either way (a
# benchmark reports, it does not gate).
#
# How to run (from anywhere; needs cargo):
#   scripts/bench/scheduler.sh              # the full benchmark (~2 min of runs with 3 each)
#   scripts/bench/scheduler.sh --sim-only   # simulations only, instant
# Environment:
#   BENCH_TARGET_SECONDS  lower bound of each DAG at 2 workers, seconds (default 3)
#   BENCH_WORKERS         worker counts, comma-separated (default 2,4)
#   BENCH_RUNS            real runs per DAG and N, the fastest is reported (default 3)
#   BENCH_ONLY            run only the DAG with this name (e.g. layered-300)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
. "$ROOT/scripts/lib.sh"

extra=()
for arg in "$@"; do
  case "$arg" in
    --sim-only) extra+=(--sim-only) ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (use --sim-only)" >&2; exit 2 ;;
  esac
done
[[ -n ${BENCH_ONLY:-} ]] && extra+=(--only "$BENCH_ONLY")

log() { printf '==> %s\n' "$*" >&2; }

# Busy share of all cores over one second while this script sleeps, i.e. what other processes
# use: sleeping jobs wake late on a busy machine, which shows up as "overrun".
busy_pct() {
  local a b
  a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2];
    printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0}'
}

ensure_cargo
log "building the probe (cargo build --release --example scheduler_sim in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet --example scheduler_sim)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
PROBE="$target_dir/release/examples/scheduler_sim"
[[ -x $PROBE ]] || { echo "no probe at $PROBE after the build" >&2; exit 1; }

BUSY_BEFORE=$(busy_pct)
out=$("$PROBE" --target-seconds "${BENCH_TARGET_SECONDS:-3}" --workers "${BENCH_WORKERS:-2,4}" \
  --runs "${BENCH_RUNS:-3}" ${extra[@]+"${extra[@]}"})
BUSY_AFTER=$(busy_pct)

echo
echo "=== fissile-oci scheduler efficiency (sleep-based jobs, real threads) ==="
echo "nproc: $(nproc)    load average: $(cut -d' ' -f1-3 /proc/loadavg)    runs per row: ${BENCH_RUNS:-3} (fastest shown)"
echo "CPU used by other processes (all cores, 1 s sample) before/after: ${BUSY_BEFORE}% / ${BUSY_AFTER}%"
if ((BUSY_BEFORE > 10 || BUSY_AFTER > 10)); then
  echo "WARNING: the machine was busy with other work; sleeps wake late (see overrun), rerun when idle."
fi
echo "lb = max(critical path, total work / N); real/lb' uses the durations the jobs really slept;"
echo "ld = fissile's least-deps-first queue with blocking workers (simulated, exact durations)."
echo
printf '%s\n' "$out"
