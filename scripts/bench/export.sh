#!/usr/bin/env bash
# Benchmark of `fissile-oci export` from a warm cache: the real-world release (the 11 packages
# of scripts/real-release.sh), already compiled, written as a BOSH compiled release tarball,
# against `tar -czf` of the same install dirs (what bosh-agent does for each compiled package),
# measured in the same run.
#
# Untimed first: the release is generated, and one `export` compiles it (minutes on a fresh
# work dir; the default Debian base is built on first use) and warms the cache and page cache.
# Measured, $BENCH_RUNS rounds, each running in turn:
#   (a) fissile-oci -q -w WORK export RELEASE --base BASE --stemcell S -o FRESH_DIR
#       everything a CI job pays: the release read and fingerprinted, the plan, the cache
#       lookups, every compiled package streamed from its layer into a tgz, the tarball
#       written, fsynced and renamed
#   (b) for each package: tar -czf OUT/<name>.tgz -C WORK/packages/<key> .
#       the peer: the same install dirs, compressed by tar and gzip, nothing else
# Medians are compared: target (a) <= 1.2x (b). Peak RSS of (a) (GNU time -v, one extra run):
# target <= 64 MB. Each prints PASS or MISS; the script exits 0 either way. The ratio of CPU
# seconds (user + sys) is printed too: on a shared machine it moves less than wall time.
#
# How to run (as root: compiles run in sandboxes):
#   scripts/bench/export.sh
# Environment:
#   BENCH_DIR    where the release, the work dir and the outputs live (default
#                /var/tmp/fissile-oci-bench/export)
#   BENCH_WORK   the work dir (default $BENCH_DIR/work); pointing it at a work dir that has the
#                release compiled already (e.g. target/tmp/debian-work) skips the compile
#   BENCH_RUNS   measured rounds (default 7)
#   BENCH_BASE   the compilation base (default debian-<host suite>)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
case ${1:-} in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (no arguments; see --help)" >&2; exit 2 ;;
esac
log() { printf '==> %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { echo "scripts/bench/export.sh needs root (compiles run in sandboxes)" >&2; exit 2; }

RUNS=${BENCH_RUNS:-7}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench/export}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
WORK=${BENCH_WORK:-$BENCH_DIR/work}
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
BASE=${BENCH_BASE:-debian-$SUITE}
STEMCELL=ubuntu-jammy/1.329

log "building (cargo build --release in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
mkdir -p "$BENCH_DIR/bin"
# A private copy, so a concurrent cargo build cannot swap the binary in the middle of the runs.
BIN="$BENCH_DIR/bin/fissile-oci"
cp "$target_dir/release/fissile-oci" "$BIN"

REL="$BENCH_DIR/real-release"
log "generating the real release: scripts/real-release.sh $REL (untimed)"
bash "$ROOT/scripts/real-release.sh" "$REL" >&2

log "compiling and exporting once (untimed; warms the cache)"
SUMMARY="$BENCH_DIR/summary.json"
rm -rf "$BENCH_DIR/warm"
"$BIN" -q -w "$WORK" export "$REL" --base "$BASE" --stemcell "$STEMCELL" -o "$BENCH_DIR/warm" \
  --summary "$SUMMARY" >/dev/null
mapfile -t PACKAGES < <(python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["packages"]:
    assert p["status"] in ("compiled", "cached", "imported"), p
    print(p["name"], p["cache_key"])' "$SUMMARY")
INSTALLED=$(for p in "${PACKAGES[@]}"; do echo "$WORK/packages/${p#* }"; done | xargs du -scb | tail -n 1 | cut -f1)

calc() { awk "BEGIN { print $* }"; }

# Wall seconds and CPU seconds (user + sys of the waited-for children) of one command, run in
# the subshell whose times /proc/$BASHPID/stat holds.
measure() {
  local t0 t1 c0 c1 me=$BASHPID
  t0=$(date +%s.%N); c0=$(awk '{print $14+$15+$16+$17}' "/proc/$me/stat")
  "$@"
  t1=$(date +%s.%N); c1=$(awk '{print $14+$15+$16+$17}' "/proc/$me/stat")
  echo "$(calc "$t1 - $t0") $(calc "($c1 - $c0) / $(getconf CLK_TCK)")"
}

run_export() {
  local out="$BENCH_DIR/out-a"
  rm -rf "$out"
  "$BIN" -q -w "$WORK" export "$REL" --base "$BASE" --stemcell "$STEMCELL" -o "$out" >/dev/null
}

run_tar() {
  local out="$BENCH_DIR/out-b" p
  rm -rf "$out"; mkdir -p "$out"
  for p in "${PACKAGES[@]}"; do
    tar -czf "$out/${p%% *}.tgz" -C "$WORK/packages/${p#* }" .
  done
}

declare -a A_WALL A_CPU B_WALL B_CPU
log "measuring: $RUNS rounds of (a) export then (b) tar -czf"
for ((i = 0; i < RUNS; i++)); do
  read -r w c < <(measure run_export); A_WALL+=("$w"); A_CPU+=("$c")
  read -r w c < <(measure run_tar); B_WALL+=("$w"); B_CPU+=("$c")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
a_wall=$(median "${A_WALL[@]}"); b_wall=$(median "${B_WALL[@]}")
a_cpu=$(median "${A_CPU[@]}"); b_cpu=$(median "${B_CPU[@]}")

rss_kb=0
if [[ -x /usr/bin/time ]]; then
  rm -rf "$BENCH_DIR/out-rss"
  rss_kb=$(/usr/bin/time -v "$BIN" -q -w "$WORK" export "$REL" --base "$BASE" --stemcell "$STEMCELL" \
    -o "$BENCH_DIR/out-rss" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
fi

tarball=$(ls "$BENCH_DIR"/out-a/*.tgz)
ratio=$(calc "$a_wall / $b_wall")
cpu_ratio=$(calc "$a_cpu / $b_cpu")
verdict() { if [[ $(calc "($1) ? 1 : 0") == 1 ]]; then echo PASS; else echo MISS; fi; }
printf '\nexport of the real-world release (%d packages, %s MB installed) from a warm cache, %d rounds, %s\n' \
  "${#PACKAGES[@]}" "$(calc "$INSTALLED / 1000000")" "$RUNS" "$(git -C "$ROOT" rev-parse --short HEAD)"
printf '%-52s %8s %8s %8s\n' "command" "wall s" "CPU s" "/ tar"
printf '%-52s %8.3f %8.3f %7.2fx\n' "(a) fissile-oci export" "$a_wall" "$a_cpu" "$ratio"
printf '%-52s %8.3f %8.3f %7.2fx\n' "(b) tar -czf of the same install dirs" "$b_wall" "$b_cpu" 1
printf 'CPU seconds ratio: %.2fx; output %s (%s bytes); %d CPUs, load %s\n' "$cpu_ratio" \
  "$(basename "$tarball")" "$(stat -c %s "$tarball")" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'target: export <= 1.2x tar -czf ............ %.2fx  %s\n' "$ratio" "$(verdict "$ratio <= 1.2")"
printf 'target: peak RSS <= 64 MB ................... %.1f MB  %s\n' "$(calc "$rss_kb / 1024")" \
  "$(verdict "$rss_kb > 0 && $rss_kb <= 65536")"
