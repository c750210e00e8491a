#!/usr/bin/env bash
# Benchmark of the shared compile cache and of `compile --shard` (issue 18): a fleet of four CI
# runners splitting one release through a registry, against one runner alone, in the same run.
#
# The release (scripts/bench/gen_fleet.py): $BENCH_PACKAGES (200) packages over 8 layers, each
# depending on one to three below; every packaging script sleeps $BENCH_SLEEP (0.2) s, work that
# stands in for the CPU of another machine, so four runners can be simulated on two cores.
# The registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1, a fresh one (empty
# storage, free port, the in-memory blob descriptor cache of distribution's default config) for
# the run, stopped by PID at the end. It runs on the same cores as the runners: its CPU is the
# one cost here that a real fleet would not pay on the runners' machines, and it is printed. Its
# storage is a tmpfs mounted for the run (unmounted at the end): it stands in for a registry on
# another machine, and on these machines' ext4 (no journal) the files every run deletes slow the
# next file creations for minutes, so a registry on the runners' disk made each run slower than
# the one before (0.32x, 0.36x, 0.39x in a row, against 0.33x, 0.33x, 0.34x on a tmpfs, measured
# interleaved). BENCH_REGISTRY_DISK=1 keeps it on disk.
#
# Each work dir is fresh, with the busybox base built into it before the clock starts (the base
# is not what is measured), except (c)'s, which starts empty. Then:
#   (a) single   one cold runner: `compile REL --base busybox -j J`, no --cache.
#   (b) fleet    four runners started at once, each `compile ... -j J --cache R/fleet
#                --shard I/4` on its own work dir, against the empty repository. The wall is
#                from the first start to the last exit (each run exits only when its pushes are
#                done). Duplicate compiles: for each package, the runs whose --summary says
#                `compiled`, minus one, summed.
#   (c) warm     one more runner on an empty work dir (no base either), `compile ... --cache
#                R/fleet`: everything (the base included) pulled; its summary is checked.
# Targets: (b) <= 0.35x (a) with 0 duplicate compiles; (c) <= 0.1x (a). PASS or MISS each; the
# script exits 0 either way (a benchmark reports, it does not gate). The load average is printed
# before and after: the machine may be shared, and a load above nproc makes every figure worse.
#
# How to run (as root: the packages compile in sandboxes; needs cargo, python3,
# docker-registry, GNU time):
#   scripts/bench/fleet.sh
# Environment:
#   BENCH_DIR        base dir (default /var/tmp/fissile-oci-bench); this script REPLACES
#                    $BENCH_DIR/fleet
#   BENCH_PACKAGES   packages in the release (default 200)
#   BENCH_SLEEP      seconds each packaging script sleeps (default 0.2)
#   BENCH_JOBS       -j of every runner (default 4)
#   BENCH_REGISTRY_DISK  1: the registry's storage on disk under $BENCH_DIR, not on a tmpfs
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
case ${1:-} in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (no arguments; see --help)" >&2; exit 2 ;;
esac

PACKAGES=${BENCH_PACKAGES:-200}
SLEEP=${BENCH_SLEEP:-0.2}
JOBS=${BENCH_JOBS:-4}
SHARDS=4
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench}
log() { printf '==> %s\n' "$*" >&2; }

for tool in python3 docker-registry /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "run as root: the release is compiled in sandboxes" >&2; exit 1; }

log "building (cargo build --release in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DIR="$BENCH_DIR/fleet"
# A registry tmpfs left mounted by a run that was killed.
if mountpoint -q "$DIR/registry/data" 2>/dev/null; then umount "$DIR/registry/data"; fi
rm -rf "$DIR"
mkdir -p "$DIR/bin"
# A private copy, so a concurrent cargo build cannot swap the binary in the middle of the runs.
BIN="$DIR/bin/fissile-oci"
cp "$target_dir/release/fissile-oci" "$BIN"

REL="$DIR/release"
python3 "$SCRIPT_DIR/gen_fleet.py" --out "$REL" --packages "$PACKAGES" --sleep "$SLEEP"
log "release: $PACKAGES packages sleeping ${SLEEP}s each, in $REL"

REGISTRY_PID=""
stop_registry() {
  if [[ -n $REGISTRY_PID ]]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=""
  fi
}
cleanup() {
  stop_registry
  if mountpoint -q "$DIR/registry/data" 2>/dev/null; then umount "$DIR/registry/data"; fi
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$DIR/registry/data"
if [[ ${BENCH_REGISTRY_DISK:-0} != 1 ]]; then
  mount -t tmpfs -o size=4g,mode=0700 fissile-oci-bench-registry "$DIR/registry/data"
fi
cat > "$DIR/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $DIR/registry/data
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$DIR/registry/config.yml" >"$DIR/registry/log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
(echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null ||
  { echo "the registry did not start: $(cat "$DIR/registry/log")" >&2; exit 1; }
CACHE="127.0.0.1:$PORT/bench/fleet"

# A fresh work dir with the busybox base (not timed).
work_with_base() {
  "$BIN" -q -w "$1" base build --from busybox >/dev/null
}
now() { date +%s.%N; }
# CPU seconds (user + system) the registry has used so far: its CPU is shared with the runners
# here, so it is printed per phase.
registry_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$REGISTRY_PID/stat"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
# Package statuses of a summary, "name status" per line.
statuses() {
  python3 -c 'import json,sys
for p in json.load(open(sys.argv[1]))["packages"]: print(p["name"], p["status"])' "$1"
}
count() { statuses "$1" | awk -v s="$2" '$2 == s' | wc -l; }
fail_with() { echo "$1 failed (exit $2); its stderr:" >&2; tail -20 "$3" >&2; exit 1; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log "(a) one cold runner, -j $JOBS"
work_with_base "$DIR/single"
t0=$(now)
"$BIN" -w "$DIR/single" compile "$REL" --base busybox -j "$JOBS" \
  --summary "$DIR/single.json" 2>"$DIR/single.err" || fail_with "(a)" $? "$DIR/single.err"
SINGLE=$(secs "$t0" "$(now)")
[[ $(count "$DIR/single.json" compiled) == "$PACKAGES" ]] ||
  { echo "(a) did not compile every package" >&2; exit 1; }
log "(a) ${SINGLE}s"

log "(b) $SHARDS shards started at once, -j $JOBS each, cache $CACHE"
for i in $(seq "$SHARDS"); do work_with_base "$DIR/shard$i"; done
CPU0=$(registry_cpu)
t0=$(now)
pids=()
for i in $(seq "$SHARDS"); do
  "$BIN" -w "$DIR/shard$i" compile "$REL" --base busybox -j "$JOBS" \
    --cache "$CACHE" --tls-verify=false --shard "$i/$SHARDS" \
    --summary "$DIR/shard$i.json" 2>"$DIR/shard$i.err" &
  pids+=($!)
done
for i in $(seq "$SHARDS"); do
  rc=0
  wait "${pids[$((i - 1))]}" || rc=$?
  ends[i]=$(now)
  [[ $rc == 0 ]] || fail_with "shard $i" "$rc" "$DIR/shard$i.err"
done
# Each wait returns once its run has exited; the last one to exit sets the fleet's end.
FLEET=$(secs "$t0" "$(printf '%s\n' "${ends[@]}" | sort -g | tail -1)")
for i in $(seq "$SHARDS"); do
  SHARD_LINE[i]="shard $i/$SHARDS: $(secs "$t0" "${ends[i]}")s, $(count "$DIR/shard$i.json" compiled) compiled, $(count "$DIR/shard$i.json" pulled) pulled, $(count "$DIR/shard$i.json" skipped) left to others"
  log "${SHARD_LINE[i]}"
done
COMPILES=$(for i in $(seq "$SHARDS"); do statuses "$DIR/shard$i.json"; done | awk '$2 == "compiled"' | wc -l)
DISTINCT=$(for i in $(seq "$SHARDS"); do statuses "$DIR/shard$i.json"; done | awk '$2 == "compiled" {print $1}' | sort -u | wc -l)
DUPLICATES=$((COMPILES - DISTINCT))
[[ $DISTINCT == "$PACKAGES" ]] ||
  { echo "(b) the fleet compiled $DISTINCT packages of $PACKAGES" >&2; exit 1; }
FLEET_CPU=$(secs "$CPU0" "$(registry_cpu)")
log "(b) ${FLEET}s, $COMPILES compiles of $DISTINCT packages, registry CPU ${FLEET_CPU}s"

log "(c) a warm runner on an empty work dir, cache $CACHE"
CPU1=$(registry_cpu)
t0=$(now)
"$BIN" -w "$DIR/warm" compile "$REL" --base busybox -j "$JOBS" \
  --cache "$CACHE" --tls-verify=false \
  --summary "$DIR/warm.json" 2>"$DIR/warm.err" || fail_with "(c)" $? "$DIR/warm.err"
WARM=$(secs "$t0" "$(now)")
WARM_CPU=$(secs "$CPU1" "$(registry_cpu)")
WARM_PULLED=$(count "$DIR/warm.json" pulled)
log "(c) ${WARM}s, $WARM_PULLED pulled"
stop_registry

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
verdict() { if awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; then echo PASS; else echo MISS; fi; }
FR=$(ratio "$FLEET" "$SINGLE")
WR=$(ratio "$WARM" "$SINGLE")
echo
echo "fleet of $SHARDS shards vs one runner: $PACKAGES packages sleeping ${SLEEP}s, -j $JOBS ($(date -u +%FT%TZ), $(nproc) CPUs)"
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
if [[ ${BENCH_REGISTRY_DISK:-0} == 1 ]]; then
  echo "registry storage: on disk ($DIR/registry/data)"
else
  echo "registry storage: a tmpfs"
fi
printf '%-34s %8s %8s\n' run wall_s ratio
printf '%-34s %8s %8s\n' "(a) one cold runner" "$SINGLE" 1.000
printf '%-34s %8s %8s\n' "(b) $SHARDS shards, first start to last exit" "$FLEET" "$FR"
printf '%-34s %8s %8s\n' "(c) warm runner, empty work dir" "$WARM" "$WR"
for i in $(seq "$SHARDS"); do echo "  ${SHARD_LINE[i]}"; done
echo "registry CPU: ${FLEET_CPU}s in (b), ${WARM_CPU}s in (c)"
echo "(b) wall: $FR x (a) (target <= 0.35x): $(verdict "$FR" 0.35)"
echo "(b) duplicate compiles: $DUPLICATES (target 0): $(verdict "$DUPLICATES" 0)"
echo "(c) wall: $WR x (a) (target <= 0.1x), $WARM_PULLED of $PACKAGES pulled: $(verdict "$WR" 0.1)"
