#!/usr/bin/env bash
# Benchmark of a registry push: `fissile-oci image ... -o docker://` of a ~1 GiB image against
# `skopeo copy oci:... docker://...` of the very same image (same manifest digest, same blobs),
# both to a local registry (Debian's docker-registry, distribution 2.8, plain http on
# 127.0.0.1), in the same run.
#
# The image: the busybox base plus four packages of 256 MiB of random bytes each (gzip cannot
# shrink them: ~1 GiB of layers) and the release layer. Its release is compiled once into
# $BENCH_DIR/work-push (kept; compiled again only if missing), then written into that store.
#
# Each measured run starts a fresh registry (empty storage, new port, so that neither tool finds
# a blob there or mounts one from an earlier run), pushes with one tool under GNU time, checks
# the digest the registry now has, and stops the registry by PID. Runs alternate between the
# tools; medians are shown. fissile-oci's command is the whole `image` command a user runs: its
# compile finds every package cached, then the push (3 blobs at once, 256 MiB chunks) does the
# work. skopeo copies with its defaults.
#
# Targets: fissile-oci's wall time <= 1.0x skopeo's; fissile-oci's peak RSS <= 64 MB (GNU time's
# maximum resident set size). Each prints PASS or MISS; the script exits 0 either way.
#
# How to run (root: the compile runs in sandboxes; needs cargo, skopeo, docker-registry, GNU time):
#   scripts/bench/push.sh
# Environment:
#   BENCH_DIR    where the work dir and results are kept (default /var/tmp/fissile-oci-bench)
#   BENCH_RUNS   measured runs per tool (default 3)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
case ${1:-} in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (no arguments; see --help)" >&2; exit 2 ;;
esac

RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench}
log() { printf '==> %s\n' "$*" >&2; }

for tool in skopeo docker-registry /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "run as root: the release is compiled in sandboxes" >&2; exit 1; }

log "building (cargo build --release in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
mkdir -p "$BENCH_DIR/bin"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
# A private copy, so a concurrent cargo build cannot swap the binary in the middle of the runs.
BIN="$BENCH_DIR/bin/fissile-oci-push"
cp "$target_dir/release/fissile-oci" "$BIN"

WORK="$BENCH_DIR/work-push"
REL="$BENCH_DIR/push-release"
if [[ ! -f $REL/config/final.yml ]]; then
  log "writing the release (4 packages of 256 MiB of random bytes) in $REL"
  rm -rf "$REL"
  mkdir -p "$REL/config" "$REL/jobs/bulk"
  echo "name: pushbench" > "$REL/config/final.yml"
  deps=""
  for i in 1 2 3 4; do
    mkdir -p "$REL/packages/blob$i"
    printf 'name: blob%s\nfiles: []\n' "$i" > "$REL/packages/blob$i/spec"
    echo 'head -c 268435456 /dev/urandom > $BOSH_INSTALL_TARGET/data' > "$REL/packages/blob$i/packaging"
    deps="$deps blob$i,"
  done
  printf -- '---\nname: bulk\ntemplates: {}\npackages: [%s]\n' "${deps%,}" > "$REL/jobs/bulk/spec"
  : > "$REL/jobs/bulk/monit"
fi
log "compiling it into $WORK (once; cached afterwards) and writing the image into the store"
"$BIN" -q -w "$WORK" base build --from busybox >/dev/null
read -r _ DIGEST < <("$BIN" -q -w "$WORK" image "$REL" --base busybox --tag pushbench)
SIZE=$(du -sb "$WORK/oci/blobs" | cut -f1)
log "image $DIGEST (store blobs: $((SIZE / 1048576)) MiB)"

REGISTRY_PID=""
stop_registry() {
  if [[ -n $REGISTRY_PID ]]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=""
  fi
  rm -rf "$BENCH_DIR/registry"
}
trap stop_registry EXIT

# A fresh registry on a free port; sets PORT and REGISTRY_PID.
start_registry() {
  stop_registry
  mkdir -p "$BENCH_DIR/registry"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$BENCH_DIR/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $BENCH_DIR/registry/data
http:
  addr: 127.0.0.1:$PORT
EOF
  docker-registry serve "$BENCH_DIR/registry/config.yml" >"$BENCH_DIR/registry/log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the registry did not start: $(cat "$BENCH_DIR/registry/log")" >&2
  exit 1
}

# Runs one push under GNU time; prints "wall_seconds max_rss_kb".
measure() {
  local stats="$BENCH_DIR/time.out"
  /usr/bin/time -f '%e %M' -o "$stats" "$@" >/dev/null 2>"$BENCH_DIR/push.err" ||
    { echo "failed: $*" >&2; cat "$BENCH_DIR/push.err" >&2; exit 1; }
  cat "$stats"
}

check_digest() {
  local got
  got=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://127.0.0.1:$PORT/bench/push:pushbench")
  [[ $got == "$DIGEST" ]] || { echo "the registry has $got, not $DIGEST" >&2; exit 1; }
}

declare -a OURS_WALL OURS_RSS SKOPEO_WALL SKOPEO_RSS
for run in $(seq "$RUNS"); do
  start_registry
  read -r wall rss < <(measure "$BIN" -q -w "$WORK" image "$REL" --base busybox \
    -o "docker://127.0.0.1:$PORT/bench/push:pushbench" --tls-verify=false)
  check_digest
  OURS_WALL+=("$wall"); OURS_RSS+=("$rss")
  log "run $run fissile-oci: ${wall}s, ${rss} KB"
  start_registry
  read -r wall rss < <(measure skopeo copy --quiet --dest-tls-verify=false \
    "oci:$WORK/oci:pushbench" "docker://127.0.0.1:$PORT/bench/push:pushbench")
  check_digest
  SKOPEO_WALL+=("$wall"); SKOPEO_RSS+=("$rss")
  log "run $run skopeo:      ${wall}s, ${rss} KB"
done
stop_registry

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ow=$(median "${OURS_WALL[@]}"); sw=$(median "${SKOPEO_WALL[@]}")
orss=$(median "${OURS_RSS[@]}"); srss=$(median "${SKOPEO_RSS[@]}")
ratio=$(awk -v a="$ow" -v b="$sw" 'BEGIN {printf "%.2f", a / b}')
mib=$((SIZE / 1048576))
echo
echo "push of a ${mib} MiB image to a local registry, median of $RUNS runs each ($(date -u +%FT%TZ), $(nproc) CPUs)"
printf '%-12s %10s %12s %14s\n' tool wall_s MB/s peak_RSS_MB
printf '%-12s %10s %12s %14s\n' fissile-oci "$ow" "$(awk -v s="$SIZE" -v t="$ow" 'BEGIN {printf "%.0f", s / t / 1e6}')" "$(awk -v k="$orss" 'BEGIN {printf "%.1f", k / 1024}')"
printf '%-12s %10s %12s %14s\n' skopeo "$sw" "$(awk -v s="$SIZE" -v t="$sw" 'BEGIN {printf "%.0f", s / t / 1e6}')" "$(awk -v k="$srss" 'BEGIN {printf "%.1f", k / 1024}')"
verdict() { if awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; then echo PASS; else echo MISS; fi; }
echo "wall: fissile-oci / skopeo = ${ratio}x (target <= 1.0x): $(verdict "$ratio" 1.0)"
echo "peak RSS: fissile-oci $(awk -v k="$orss" 'BEGIN {printf "%.1f", k / 1024}') MB (target <= 64 MB): $(verdict "$(awk -v k="$orss" 'BEGIN {print k / 1024}')" 64)"
