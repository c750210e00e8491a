#!/usr/bin/env bash
# The cached no-op compile (every package already in the store) of a release of N trivial
# packages, this tree against a baseline revision, in one time window: what a CI runner pays on
# every job whose release did not change.
#
#   scripts/bench/noop_ab.sh [BASELINE_REV]      (default: main)
#
# 1. Builds both release binaries (the baseline in a temporary git worktree, its own target dir).
# 2. One work dir per binary with the busybox base, and the same release (scripts/bench/
#    gen_packages.py, fan shape, $BENCH_PACKAGES packages, default 200) compiled once.
# 3. Alternates blocks of $BENCH_RUNS_PER_BLOCK no-op compiles of each binary for $BENCH_BLOCKS
#    blocks (the order flips every block: this machine's speed drifts within minutes, and two
#    commands timed one after the other, as hyperfine does, carry that drift into the ratio).
# 4. Prints the median and mean wall time of each and the ratio new/baseline.
#
# Environment: BENCH_DIR (default /var/tmp/fissile-oci-bench; uses and replaces $BENCH_DIR/noop),
# BENCH_PACKAGES (200), BENCH_BLOCKS (10), BENCH_RUNS_PER_BLOCK (10). Run as root (sandboxes).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
BASELINE=${1:-main}
PACKAGES=${BENCH_PACKAGES:-200}
BLOCKS=${BENCH_BLOCKS:-10}
PER_BLOCK=${BENCH_RUNS_PER_BLOCK:-10}
D=${BENCH_DIR:-/var/tmp/fissile-oci-bench}/noop

log() { printf '==> %s\n' "$*" >&2; }

rm -rf "$D"
mkdir -p "$D"
log "nproc $(nproc), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

log "building this tree ($ROOT)"
(cd "$ROOT" && cargo build --release --quiet)
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/fissile-oci" "$D/new"

log "building the baseline $BASELINE ($(git -C "$ROOT" rev-parse --short "$BASELINE"))"
git -C "$ROOT" worktree add --detach --quiet "$D/baseline-src" "$BASELINE"
trap 'git -C "$ROOT" worktree remove --force "$D/baseline-src" 2>/dev/null || true' EXIT
(cd "$D/baseline-src" && CARGO_TARGET_DIR="$D/baseline-target" cargo build --release --quiet)
cp "$D/baseline-target/release/fissile-oci" "$D/baseline"

python3 "$SCRIPT_DIR/gen_packages.py" --out "$D/release" --shape fan --packages "$PACKAGES"
for bin in baseline new; do
  log "$bin: busybox base and a first compile of $PACKAGES packages"
  "$D/$bin" -q -w "$D/work-$bin" base build --from busybox >/dev/null
  "$D/$bin" -q -w "$D/work-$bin" compile "$D/release" --base busybox >/dev/null
done

python3 - "$D" "$BLOCKS" "$PER_BLOCK" <<'EOF'
import statistics, subprocess, sys, time
d, blocks, per_block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = {"baseline": [], "new": []}
for block in range(blocks):
    order = ["baseline", "new"] if block % 2 == 0 else ["new", "baseline"]
    for bin in order:
        for _ in range(per_block):
            t0 = time.perf_counter()
            subprocess.run([f"{d}/{bin}", "-q", "-w", f"{d}/work-{bin}", "compile",
                            f"{d}/release", "--base", "busybox"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[bin].append(time.perf_counter() - t0)
for bin, t in times.items():
    print(f"{bin:9} no-op compile: median {statistics.median(t) * 1000:7.1f} ms, "
          f"mean {statistics.mean(t) * 1000:7.1f} ms, min {min(t) * 1000:7.1f} ms ({len(t)} runs)")
ratio = statistics.median(times["new"]) / statistics.median(times["baseline"])
print(f"ratio new/baseline (medians): {ratio:.3f}x")
EOF
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
