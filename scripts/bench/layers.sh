#!/usr/bin/env bash
# Benchmark of the deterministic layer writer (`fissile_oci::oci::write_layer`, driven by
# `examples/layer_write.rs`) on a ~1 GiB tree shaped like a compiled package, against plain
# tar + compressor pipelines and `umoci repack` of the same tree.
#
# The tree (generated once by gen_tree.py, kept in $BENCH_DIR/tree-1g, regenerated only if missing):
#   ~30% of bytes: ~25k small code-like text files (gzip about 3x)
#   ~40%: ~1000 object-file-like binaries (low-entropy code, tables, strings, padding; about 1.8x)
#   ~30%: 5 large binaries, mostly random (incompressible); plus a few symlinks
#
# Measured (warm page cache: one warm-up run, then $BENCH_RUNS measured runs, median shown):
#   (a) layer_write TREE --store S --compression gzip   (flate2/zlib-rs, level 6)
#   (b) layer_write TREE --store S --compression zstd   (level 3)
#   (c) tar -C TREE -cf - . | gzip -6 > /dev/null
#   (d) tar -C TREE -cf - . | zstd -3 -q > /dev/null
#   (e) umoci repack --image X:new BUNDLE                (BUNDLE/rootfs holds a copy of TREE;
#       the layout X is restored from a pristine copy before each run, untimed)
#   (f) layer_write ... --compression none              (reference: walk + read + tar + 2x sha256 + write)
#   The store S persists across runs: after the warm-up the blob already exists, so measured runs
#   write the blob to a temp file and drop it (no fsync), like the pipelines that write nothing.
#   (a0) measures gzip into a fresh store each run, i.e. including the blob's fsync and rename.
# Peak RSS (GNU time -v, one extra run) of layer_write with gzip and zstd, and of umoci.
# On a shared machine other work skews wall times (the report prints how busy the CPUs were);
# the CPU s column (user + sys of all threads/processes) is much less affected.
# Targets: our gzip >= 75 MB/s and >= 2x faster than tar|gzip -6; our zstd >= 250 MB/s;
# our peak RSS < 64 MB. Each prints PASS or MISS; the script exits 0 either way.
#
# How to run (from anywhere; needs cargo, python3, tar, gzip, umoci; hyperfine and GNU time if
# available, zstd is installed with apt-get if missing and possible):
#   scripts/bench/layers.sh
# Environment:
#   BENCH_DIR    where the tree and results are kept (default /var/tmp/fissile-oci-bench); the
#                stores and umoci bundle (a few GB) live in BENCH_DIR/work-layers while it runs
#   BENCH_RUNS   measured runs per command (default 3)
#   BENCH_SEED   generator seed (default 42; only used when the tree is generated)
#   BENCH_NO_HYPERFINE=1  use the built-in median-of-N loop even if hyperfine is installed
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
case ${1:-} in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (no arguments; see --help)" >&2; exit 2 ;;
esac

RUNS=${BENCH_RUNS:-3}
SEED=${BENCH_SEED:-42}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench}
NPROC=$(nproc)
log() { printf '==> %s\n' "$*" >&2; }
q() { printf '%q' "$1"; }

# --- tools -----------------------------------------------------------------------------------
if ! command -v zstd >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing zstd with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y zstd >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 || true; DEBIAN_FRONTEND=noninteractive apt-get install -y zstd >/dev/null 2>&1; } ||
      log "could not install zstd"
  fi
fi
HAVE_ZSTD=0; command -v zstd >/dev/null 2>&1 && HAVE_ZSTD=1
HAVE_UMOCI=0; command -v umoci >/dev/null 2>&1 && HAVE_UMOCI=1
HAVE_HYPERFINE=0; command -v hyperfine >/dev/null 2>&1 && HAVE_HYPERFINE=1
[[ ${BENCH_NO_HYPERFINE:-0} == 1 ]] && HAVE_HYPERFINE=0
HAVE_TIME=0; [[ -x /usr/bin/time ]] && HAVE_TIME=1

# --- build -----------------------------------------------------------------------------------
log "building (cargo build --release --example layer_write in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet --example layer_write)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
mkdir -p "$BENCH_DIR/bin"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
# A private copy, so a concurrent cargo build cannot swap the binary in the middle of the runs.
BIN="$BENCH_DIR/bin/layer_write"
cp "$target_dir/release/examples/layer_write" "$BIN"

# --- generate (or reuse) ---------------------------------------------------------------------
TREE="$BENCH_DIR/tree-1g"
if [[ -d $TREE ]]; then
  log "reusing $TREE"
else
  log "generating $TREE (about 1 GiB; under a minute)"
  python3 "$SCRIPT_DIR/gen_tree.py" --out "$TREE" --seed "$SEED"
fi
INPUT_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
FILES=$(find "$TREE" -type f | wc -l)
RESULTS="$BENCH_DIR/results-layers"
WORK="$BENCH_DIR/work-layers"
rm -rf "$RESULTS" "$WORK"
mkdir -p "$RESULTS" "$WORK"

# --- measuring -------------------------------------------------------------------------------
# measure KEY CMD [PREPARE]: warm-up once, then RUNS measured runs (PREPARE, untimed, before
# each); writes $RESULTS/KEY.json {"median","min","max","cpu"} (seconds; cpu = median user+sys).
measure() {
  local key=$1 cmd=$2 prep=${3:-true}
  log "measuring $key: $cmd"
  if ((HAVE_HYPERFINE)); then
    hyperfine --warmup 1 --runs "$RUNS" --style basic --command-name "$key" --prepare "$prep" \
      --export-json "$RESULTS/$key.hyperfine.json" "$cmd" >"$RESULTS/$key.log" 2>&1 ||
      { cat "$RESULTS/$key.log" >&2; return 1; }
    python3 - "$RESULTS/$key.hyperfine.json" >"$RESULTS/$key.json" <<'EOF'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
cpu = statistics.median(u + s for u, s in zip(r["user"] if isinstance(r["user"], list) else [r["user"]],
                                               r["system"] if isinstance(r["system"], list) else [r["system"]]))
print(json.dumps({"median": r["median"], "min": r["min"], "max": r["max"], "cpu": cpu}))
EOF
  else
    bash -c "$prep"; bash -c "$cmd" # warm-up
    local times=() cpus=() line
    for ((i = 0; i < RUNS; i++)); do
      bash -c "$prep"
      if ((HAVE_TIME)); then
        line=$(/usr/bin/time -f '%e %U %S' bash -c "$cmd" 2>&1 >/dev/null | tail -n1)
        times+=("${line%% *}"); cpus+=("$(awk '{print $2 + $3}' <<<"$line")")
      else
        local t0 t1; t0=$(date +%s.%N); bash -c "$cmd"; t1=$(date +%s.%N)
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"); cpus+=(nan)
      fi
    done
    python3 - "${times[*]}" "${cpus[*]}" >"$RESULTS/$key.json" <<'EOF'
import json, statistics, sys
t = [float(x) for x in sys.argv[1].split()]
c = [float(x) for x in sys.argv[2].split()]
print(json.dumps({"median": statistics.median(t), "min": min(t), "max": max(t), "cpu": statistics.median(c)}))
EOF
  fi
}

# peak_rss KEY CMD [PREPARE]: peak RSS in KB of CMD (itself, via exec) from one more run.
peak_rss() {
  local key=$1 cmd=$2 prep=${3:-true}
  if ((HAVE_TIME)); then
    bash -c "$prep"
    /usr/bin/time -v -o "$RESULTS/$key.time" bash -c "exec $cmd" >/dev/null 2>&1 || true
    awk -F': ' '/Maximum resident set size/ {print $2}' "$RESULTS/$key.time" >"$RESULTS/$key.rss"
  else
    echo n/a >"$RESULTS/$key.rss"
  fi
}

# Busy share of all cores over one second while this script sleeps, i.e. what other processes
# use: a reading well above 0 means noisy results.
busy_pct() {
  local a b
  a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2];
    printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0}'
}

# One checked run per compression: fails loudly if the writer fails, and keeps its JSON line.
for c in gzip zstd none; do
  log "checking layer_write --compression $c"
  "$BIN" "$TREE" --store "$WORK/store-$c" --compression "$c" >"$RESULTS/check-$c.jsonl"
done

ours() { echo "$(q "$BIN") $(q "$TREE") --store $(q "$WORK/store-$1") --compression $1 > /dev/null"; }
BUSY_BEFORE=$(busy_pct)
measure gzip "$(ours gzip)"
measure gzip_fresh "$(q "$BIN") $(q "$TREE") --store $(q "$WORK/store-fresh") --compression gzip > /dev/null" \
  "rm -rf $(q "$WORK/store-fresh")"
measure zstd "$(ours zstd)"
measure none "$(ours none)"
peak_rss gzip "$(ours gzip)"
peak_rss zstd "$(ours zstd)"
measure tar_gzip "tar -C $(q "$TREE") -cf - . | gzip -6 > /dev/null"
if ((HAVE_ZSTD)); then measure tar_zstd "tar -C $(q "$TREE") -cf - . | zstd -3 -q > /dev/null"; fi

if ((HAVE_UMOCI)); then
  UM="$WORK/umoci"
  rootless=(); [[ $(id -u) == 0 ]] || rootless=(--rootless)
  log "preparing the umoci bundle (untimed): init, new, unpack, cp -a TREE into rootfs"
  mkdir -p "$UM"
  umoci init --layout "$UM/pristine" >/dev/null
  umoci new --image "$UM/pristine:base" >/dev/null
  umoci unpack "${rootless[@]}" --image "$UM/pristine:base" "$UM/bundle" >/dev/null
  cp -a "$TREE/." "$UM/bundle/rootfs/"
  restore="rm -rf $(q "$UM/img") && cp -a $(q "$UM/pristine") $(q "$UM/img")"
  repack="umoci repack --image $(q "$UM/img"):new $(q "$UM/bundle") > /dev/null"
  measure umoci "$repack" "$restore"
  peak_rss umoci "$repack" "$restore"
  # The new layer is the largest blob in the layout.
  UMOCI_BLOB=$(find "$UM/img/blobs" -type f -printf '%s\n' | sort -n | tail -n1)
fi
BUSY_AFTER=$(busy_pct)
# The stores and the umoci bundle are a few GB: keep only the results.
rm -rf "$WORK"

# --- report ----------------------------------------------------------------------------------
echo
echo "=== fissile-oci layer write benchmark ==="
echo "tree: $TREE: $FILES files, $(awk -v b="$INPUT_BYTES" 'BEGIN {printf "%.1f", b / 1e6}') MB of regular files"
echo "nproc: $NPROC. layer_write walks, reads, tars and hashes (diff_id) on the calling thread and"
echo "compresses, hashes and writes the blob on a second thread: at most ~2 cores busy."
echo "warm page cache: one warm-up run, then $RUNS measured runs per command, median shown."
echo "timer: $( ((HAVE_HYPERFINE)) && echo "hyperfine $(hyperfine --version | awk '{print $2}')" || echo "median-of-$RUNS loop")"
echo "CPU used by other processes (all cores, 1 s sample) before/after measuring: ${BUSY_BEFORE}% / ${BUSY_AFTER}%"
if ((BUSY_BEFORE > 10 || BUSY_AFTER > 10)); then
  echo "WARNING: the machine was busy with other work; timings are noisy (see min-max), rerun when idle."
fi
echo
rows=(
  "gzip=(a) layer_write gzip -6"
  "gzip_fresh=(a0) layer_write gzip, new store+fsync"
  "zstd=(b) layer_write zstd -3"
  "tar_gzip=(c) tar | gzip -6"
)
((HAVE_ZSTD)) && rows+=("tar_zstd=(d) tar | zstd -3")
((HAVE_UMOCI)) && rows+=("umoci=(e) umoci repack")
rows+=("none=(f) layer_write none (reference)")
python3 - "$RESULTS" "$INPUT_BYTES" "${UMOCI_BLOB:-}" "${rows[@]}" <<'EOF'
import json, os, sys
results, total, umoci_blob = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [r.split("=", 1) for r in sys.argv[4:]]
mb = total / 1e6
def load(key):
    r = json.load(open(f"{results}/{key}.json"))
    path = f"{results}/{key}.rss"
    rss = open(path).read().strip() if os.path.exists(path) else ""
    r["rss_mb"] = int(rss) * 1024 / 1e6 if rss.isdigit() else None
    return r
data = {key: load(key) for key, _ in rows}
base = data["gzip"]["median"]
print("ratio = this tool's seconds / (a)'s seconds: above 1 means slower than our gzip writer")
print(f"{'tool':<42} {'seconds':>8} {'min-max s':>13} {'MB/s':>7} {'ratio':>6} {'CPU s':>7} {'peak RSS MB':>12}")
for key, label in rows:
    r = data[key]
    rss = f"{r['rss_mb']:.1f}" if r["rss_mb"] is not None else "-"
    print(f"{label:<42} {r['median']:>8.2f} {r['min']:>6.2f}-{r['max']:<6.2f} {mb / r['median']:>7.1f} "
          f"{r['median'] / base:>6.2f} {r['cpu']:>7.2f} {rss:>12}")
print()
sizes = []
for c in ("gzip", "zstd", "none"):
    j = json.loads(open(f"{results}/check-{c}.jsonl").read().splitlines()[0])
    sizes.append(f"{c} {j['blob_bytes'] / 1e6:.1f} MB ({j['uncompressed_tar_bytes'] / j['blob_bytes']:.2f}x)")
if umoci_blob:
    sizes.append(f"umoci layer {int(umoci_blob) / 1e6:.1f} MB")
print("blobs: " + ", ".join(sizes))
print()
verdict = lambda ok: "PASS" if ok else "MISS"
g, z = mb / data["gzip"]["median"], mb / data["zstd"]["median"]
speedup = data["tar_gzip"]["median"] / data["gzip"]["median"]
print(f"target our gzip >= 75 MB/s:             {verdict(g >= 75)} ({g:.1f} MB/s)")
print(f"target our gzip >= 2x tar|gzip -6:      {verdict(speedup >= 2)} ({speedup:.2f}x)")
print(f"target our zstd >= 250 MB/s:            {verdict(z >= 250)} ({z:.1f} MB/s)")
for c in ("gzip", "zstd"):
    r = data[c]["rss_mb"]
    print(f"target peak RSS < 64 MB ({c}):         {verdict(r is not None and r < 64)} "
          f"({'n/a' if r is None else f'{r:.1f} MB'})")
EOF
exit 0
