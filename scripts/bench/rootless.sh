#!/usr/bin/env bash
# Benchmark of what running rootless costs a compile, measured against root in the same run.
#
# What it does, in one run (as root):
#   1. cargo build --release; an unprivileged user ($BENCH_USER, created as a system user with
#      /etc/subuid and /etc/subgid ranges of 65536 ids when it does not exist), a copy of the
#      binary it can execute, and two template work dirs (root's and the user's) with the busybox
#      base and its compilation base unpacked by a 1-package warm-up compile.
#   2. Two release source dirs of $BENCH_PACKAGES (100) independent trivial packages
#      (scripts/bench/gen_packages.py, fan shape):
#        plain  `echo $BOSH_PACKAGE_NAME > $BOSH_INSTALL_TARGET/out`
#        owned  the same, plus a 0600 file of uid 1000 in the output and a 0700 dir of uid 1000
#               in the sources: rootless, neither can be read or removed by the user itself, so
#               every package's layer commit and scratch removal go through the tree helper
#               (`fissile-oci __tree-helper`, a process in a user namespace)
#   3. Clean compiles (`compile REL --base busybox -j $BENCH_JOBS` on a fresh `cp -a` of the
#      template, untimed copy), wall time of the whole process, median of 3:
#        root  plain     as root
#        user  plain     as the user (rootless sandboxes; the tree helper is never started)
#        user  owned     as the user (two jobs per package for the one tree helper of the run)
#      and `fissile-oci __tree-helper` itself, as the user, given 1 and 101 jobs removing a path
#      that does not exist, against `fissile-oci --version` as the user (the exec alone): its
#      start (a user namespace, newuidmap and newgidmap) and the cost of one job on a running
#      helper (one helper serves a whole run). 25 interleaved rounds, medians.
#   4. A table: ms per package, and the ratios user-plain / root-plain (what rootless costs a
#      package whose files are the user's own: the rootless sandbox) and user-owned / user-plain
#      (what the tree helper costs when it is needed). Root's path is the one it always was: a
#      layer commit as root never starts the helper (see docs/DECISIONS.md for the A/B of the
#      layer writer before and after). A benchmark reports; it exits 0 either way.
#
# How to run (as root): sudo scripts/bench/rootless.sh
# Environment:
#   BENCH_DIR       base dir (default /var/tmp/fissile-oci-bench); this script REPLACES
#                   $BENCH_DIR/rootless
#   BENCH_USER      the unprivileged user (default fissile-oci-bench)
#   BENCH_PACKAGES  packages per release (default 100)
#   BENCH_JOBS      -j for the compiles (default 2)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_packages.py"

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (there are none; see --help)" >&2; exit 2 ;;
  esac
done

[[ $(id -u) == 0 ]] || { echo "run as root: the benchmark compares root with a user it sets up" >&2; exit 2; }
PACKAGES=${BENCH_PACKAGES:-100}
JOBS=${BENCH_JOBS:-2}
BENCH_USER=${BENCH_USER:-fissile-oci-bench}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench}
D="$BENCH_DIR/rootless"

log() { printf '==> %s\n' "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
LOAD_START=$(loadavg)
echo "nproc: $(nproc)    load average at start (1/5/15 min): $LOAD_START"

# --- the user --------------------------------------------------------------------------------
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  log "creating the system user $BENCH_USER"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
fi
for f in /etc/subuid /etc/subgid; do
  if ! grep -q "^$BENCH_USER:" "$f"; then
    # Above every range already there, so none overlaps.
    start=$(awk -F: 'BEGIN {m = 4000000} {if ($2 + $3 > m) m = $2 + $3} END {print m}' "$f")
    log "giving $BENCH_USER the subordinate ids $start-$((start + 65535)) in $f"
    echo "$BENCH_USER:$start:65536" >>"$f"
  fi
done
UID_=$(id -u "$BENCH_USER"); GID_=$(id -g "$BENCH_USER")
AS_USER=(setpriv --reuid="$UID_" --regid="$GID_" --clear-groups env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/nonexistent)
as_user() { "${AS_USER[@]}" "$@"; }

# --- build and templates ---------------------------------------------------------------------
log "building the release binary (cargo build --release in $ROOT)"
(cd "$ROOT" && cargo build --release --quiet)
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
OLD=""
if [[ -e $D ]]; then OLD="$D.old-$$"; mv "$D" "$OLD"; fi
mkdir -p "$D"
chmod 755 "$BENCH_DIR" "$D"
D=$(cd "$D" && pwd)
RESULTS="$D/results"
mkdir -p "$RESULTS" "$D/bin"
# A copy the user can execute wherever the checkout is.
BIN="$D/bin/fissile-oci"
cp "$target_dir/release/fissile-oci" "$BIN"
chmod 755 "$D/bin" "$BIN"

for shape in plain owned warmup; do
  n=$PACKAGES; [[ $shape == warmup ]] && n=1
  python3 "$GEN" --out "$D/rel-$shape" --shape fan --packages "$n"
done
sed -i 's/^name: p0001$/name: warmup/' "$D/rel-warmup/packages/p0001/spec"
mv "$D/rel-warmup/packages/p0001" "$D/rel-warmup/packages/warmup"
for p in "$D"/rel-owned/packages/*/; do
  cat >>"$p/packaging" <<'EOF'
mkdir -p held/deep && chown -R 1000:1000 held && chmod 700 held/deep held
echo secret > $BOSH_INSTALL_TARGET/key && chown 1000:1000 $BOSH_INSTALL_TARGET/key && chmod 600 $BOSH_INSTALL_TARGET/key
EOF
done
chmod -R a+rX "$D"/rel-*

template() { # WHO DIR: busybox base and a warm-up compile, as root or as the user
  local who=$1 dir=$2 run=()
  mkdir -p "$dir"
  if [[ $who == user ]]; then chown "$UID_:$GID_" "$dir"; run=(as_user); fi
  "${run[@]}" "$BIN" -q -w "$dir" base build --from busybox >/dev/null
  "${run[@]}" "$BIN" -q -w "$dir" compile "$D/rel-warmup" --base busybox -j 1 >/dev/null
}
log "templates: the busybox base, as root and as $BENCH_USER"
template root "$D/template-root"
template user "$D/template-user"

# clean_compile WHO REL RUN: prints the wall seconds of a compile on a fresh copy of the template.
clean_compile() {
  local who=$1 rel=$2 run=$3 w="$D/work-$1-$2-$3" t0 t1 prefix=()
  cp -a "$D/template-$who" "$w"
  [[ $who == user ]] && prefix=(as_user)
  sync
  t0=$(now)
  if ! "${prefix[@]}" "$BIN" -q -w "$w" compile "$D/rel-$rel" --base busybox -j "$JOBS" \
      >"$RESULTS/$who-$rel-$run.log" 2>&1; then
    echo "the $who compile of $rel failed:" >&2; tail -n 20 "$RESULTS/$who-$rel-$run.log" >&2; exit 1
  fi
  t1=$(now)
  if [[ -n $(ls -A "$w/runs" 2>/dev/null) ]]; then
    echo "the $who compile of $rel left scratch dirs in $w/runs" >&2; exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b - a}'
}

# --- measurements ----------------------------------------------------------------------------
# Interleaved, so that drift in a shared machine's load hits every kind alike.
for run in 1 2 3; do
  for kind in root-plain user-plain user-owned; do
    t=$(clean_compile "${kind%-*}" "${kind#*-}" "$run")
    echo "$t" >>"$RESULTS/$kind.walls"
    log "$kind run $run: ${t}s"
  done
done
log "the tree helper alone, as $BENCH_USER: started for 1 job and for 101, against the exec alone"
for n in 1 101; do
  for ((i = 0; i < n; i++)); do echo "{\"Remove\":{\"paths\":[\"$D/nothing-here\"]}}"; done >"$D/jobs-$n"
done
chmod 644 "$D"/jobs-*
# Interleaved rounds, medians: the exec alone, a helper with 1 job, a helper with 101 jobs.
python3 - "$RESULTS" "$BIN" "$D" "${AS_USER[@]}" <<'PY'
import statistics, subprocess, sys, time
res, binary, d, as_user = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = {"version": [binary, "--version"], "helper-1": [binary, "__tree-helper"], "helper-101": [binary, "__tree-helper"]}
times = {k: [] for k in runs}
for _ in range(25):
    for key, cmd in runs.items():
        jobs = open(f"{d}/jobs-{key.split('-')[1]}") if key != "version" else subprocess.DEVNULL
        t0 = time.perf_counter()
        out = subprocess.run(as_user + cmd, stdin=jobs, capture_output=True, text=True)
        times[key].append(time.perf_counter() - t0)
        if out.returncode != 0 or (key != "version" and out.stdout.count('"Done"') != int(key.split("-")[1])):
            sys.exit(f"{key} failed: {out.returncode} {out.stdout[-200:]} {out.stderr[-500:]}")
for key, t in times.items():
    open(f"{res}/{key}", "w").write(f"{statistics.median(t)}\n")
PY

LOAD_END=$(loadavg)
echo
echo "=== what rootless costs a compile: $PACKAGES independent trivial packages, -j $JOBS, busybox base ==="
python3 - "$RESULTS" "$PACKAGES" "$LOAD_START" "$LOAD_END" "$(nproc)" <<'EOF'
import statistics, sys
res, n, load_start, load_end, nproc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
walls = {k: [float(x) for x in open(f"{res}/{k}.walls").read().split()]
         for k in ("root-plain", "user-plain", "user-owned")}
med = {k: statistics.median(v) for k, v in walls.items()}
per = {k: v / n * 1e3 for k, v in med.items()}
labels = {
    "root-plain": "root, plain packages",
    "user-plain": "rootless, plain packages",
    "user-owned": "rootless, files the user cannot touch",
}
print(f"{'clean compile':<40} {'median':>8} {'runs':>5} {'ms/pkg':>8}")
for k, label in labels.items():
    print(f"{label:<40} {med[k]:>7.2f}s {len(walls[k]):>5} {per[k]:>8.1f}")
print()
print(f"rootless / root (plain):                 {med['user-plain'] / med['root-plain']:.2f}x  "
      f"(+{per['user-plain'] - per['root-plain']:.1f} ms per package)")
print(f"tree helper needed / not (rootless):     {med['user-owned'] / med['user-plain']:.2f}x  "
      f"(+{per['user-owned'] - per['user-plain']:.1f} ms per package: a failed commit here, then a commit and a removal in the helper)")
version, one, many = (float(open(f"{res}/{k}").read()) for k in ("version", "helper-1", "helper-101"))
print(f"tree helper start (user namespace, newuidmap, newgidmap): {(one - version) * 1e3:.1f} ms beyond the exec "
      f"({version * 1e3:.1f} ms for `--version`)")
job = (many - one) / 100 * 1e3
print(f"tree helper job on a running helper (remove nothing):     "
      + (f"{job:.2f} ms" if job >= 0.05 else f"under 0.05 ms ({job:.2f}: within the noise)"))
print()
print(f"nproc: {nproc}    load average start: {load_start}    end: {load_end}")
if max(float(load_start.split()[0]), float(load_end.split()[0])) > nproc:
    print("NOTE: the machine was loaded (1-min load above the cores): compare the ratios, not the times.")
EOF

log "removing the work dirs of this run${OLD:+ and the previous bench dir} (the results stay in $RESULTS)"
# As the user: what its compiles left is theirs (root could too, but this is the user's path).
for w in "$D"/work-user-* "$D/template-user"; do as_user "$BIN" -q -w "$w" cache clean || true; done
rm -rf "$D"/work-* "$D"/template-* "$D".old-*
exit 0
