#!/usr/bin/env bash
# Benchmark of `fissile-oci compile` against its peers on the same release, in one run:
#   1. fissile-oci   `fissile-oci compile -j $BENCH_JOBS` in a work dir that has the Debian
#                    compilation base (unpacked) and no compiled package;
#   2. bare metal    the same packaging scripts run directly in a chroot of the same unpacked
#                    compilation base (a private volatile overlay over it, so it is not dirtied),
#                    no isolation: the floor (same toolchain);
#   3. podman        `podman run --rm --network none` per package on the same compilation base,
#                    copied into a private podman storage;
#   4. docker        `docker run --rm --network none` per package, against a dockerd this script
#                    starts itself (private data root and socket, --bridge=none, no iptables) and
#                    stops by PID at the end; skipped, with the reason, when it cannot start.
# Peers 2-4 compile with the same contract as fissile-oci (src/compile/package.rs): a private copy
# of the package's staged sources at /var/vcap/source/<pkg> as the cwd, each direct dependency at
# /var/vcap/packages/<dep> (read-only in containers; in the bare chroot all outputs share one
# /var/vcap/packages), an empty /var/vcap/packages/<pkg>, `bash -x ./packaging` with the BOSH_*
# environment, PATH, HOME=/root, LANG=C.UTF-8, SOURCE_DATE_EPOCH, the log to a file. They are
# scheduled by one generated Makefile per run over the package DAG (`make -j $BENCH_JOBS`, a
# recipe per package, targets listed in fissile-oci's compile order), so the three peers have the
# same scheduler shape; the timed part of a recipe includes copying the package's sources, as
# fissile-oci's includes staging them. fissile-oci's time is the whole process (start-up, plan,
# staging, sandboxes, publishing, every layer commit) until it exits.
#
# Releases:
#   real     RELEASE_DIR if given (any release path fissile-oci accepts), else the release
#            scripts/real-release.sh generates into $BENCH_DIR/peers/real-release (10 packages from
#            Debian's upstream tarballs; downloads are cached by that script), else
#            examples/hello-release. Sources are staged once (untimed) as fissile-oci stages them;
#            each package's v2 fingerprint is recomputed from the staged files and must equal
#            `fissile-oci inspect --json`'s, so every tool compiles exactly the same files.
#   trivial  scripts/bench/gen_packages.py: $BENCH_TRIVIAL_PACKAGES (200) packages whose packaging
#            is `echo $BOSH_PACKAGE_NAME > $BOSH_INSTALL_TARGET/out`, in the shapes
#            $BENCH_TRIVIAL_SHAPES (fan: independent leaves; chain: each depends on the previous),
#            through fissile-oci, podman and docker (and bare metal, as a reference), reported as
#            ms per package.
#
# Every measurement is verified, so a broken peer is not timed as fast: the tool exits 0 (make
# stops at the first failing package), every package's output dir exists and is non-empty (trivial:
# holds its name), the list of output paths of every package equals bare metal's, and (real
# release) the produced ELF programs are run in a chroot of the base with that tool's outputs
# mounted (`--version`/`-v`/`-V`/`--help`; at least one must succeed).
# fissile-oci's own peak RSS while compiling the real release: VmHWM of its main process, polled
# every 50 ms from /proc/<pid>/status until it exits (the sandbox helpers are separate processes;
# their largest VmHWM is printed too).
#
# Resetting between repetitions (untimed): fissile-oci's compiled package refs are dropped from the
# work dir's index.json and the blobs no image references any more are moved to a trash dir (what
# `fissile-oci cache gc` does, without deleting), WORK/{packages,runs,logs} are moved there too
# (so no learned timings either: each compile is a first one); the compilation base stays
# unpacked. Peers get a fresh overlay / fresh output dirs per run. Nothing is deleted until the
# very end: on journal-less ext4 every file created within 60 s (360 s before writeback) of a mass
# deletion is slower (fs/ext4/ialloc.c recently_deleted()), which would penalise whichever tool
# runs next; for the same reason a run that starts less than $BENCH_SETTLE_SECONDS (default 70) s
# after the previous run's final cleanup first syncs and waits. `sync` before every timed run.
# Order per repetition: fissile-oci, bare metal, podman, docker. The machine may be shared: each
# run also records the CPU seconds all processes on the machine used meanwhile (/proc/stat); a run
# that cost more than 1.25x the cheapest run of the same tool (peers.py DISTURBED) shared the
# machine with other work, is marked DISTURBED and is left out of the medians.
#
# Setup, untimed: cargo build --release (or $BENCH_BIN), apt installs of podman and docker.io when
# missing (with a policy-rc.d that stops the package from starting its own daemon), the work dir
# $BENCH_DIR/peers/work with the Debian base (imported from the default work dir when that has
# debian-<suite>, else `base build --from debian:<suite>`, ~2.5 min), the compilation base copied
# with skopeo to a docker-archive and loaded into podman's private storage and into dockerd.
#
# Targets (from issue 8), each printed PASS/MISS (the script exits 0 either way: a benchmark
# reports, it does not gate): real release fissile-oci <= 1.03x bare metal and faster than podman;
# trivial packages >= 20x fewer ms per package than podman and than docker; fissile-oci peak RSS
# <= 64 MB (10^6 bytes). nproc, memory, kernel and the load average (start and end) are printed.
#
# How to run (as root; needs cargo, python3, make, unshare, chroot; podman, docker.io and skopeo
# are installed with apt-get when missing):
#   scripts/bench/peers.sh [RELEASE_DIR]
# Environment:
#   BENCH_DIR               base dir (default /var/tmp/fissile-oci-bench); this script uses
#                           $BENCH_DIR/peers: work/, podman/, docker/, images/ and real-release/
#                           are kept between runs (base, images, downloads), the rest is replaced
#   BENCH_JOBS              parallelism of every tool (default 2)
#   BENCH_TOOLS             subset of "fissile bare podman docker" (default all four)
#   BENCH_REPS              repetitions of the real release per tool (default 1; median reported)
#   BENCH_TRIVIAL_REPS      repetitions of each trivial release per tool (default 3)
#   BENCH_TRIVIAL_PACKAGES  packages in the trivial releases (default 200)
#   BENCH_TRIVIAL_SHAPES    "fan chain" (default), or one of them
#   BENCH_SKIP_REAL=1       skip the real release;  BENCH_SKIP_TRIVIAL=1  skip the trivial ones
#   BENCH_BIN               a fissile-oci binary to use instead of building one
#   BENCH_BASE_FROM         where the Debian base comes from when the work dir has none (a
#                           `base build --from` SOURCE; default: see above)
#   BENCH_BARE_RM_SOURCES=1 a diagnostic: bare metal deletes each package's build tree (in the
#                           background) as soon as it is compiled, as fissile-oci deletes its
#                           scratch dirs during the run; by default all peers keep them to the end
#   BENCH_SETTLE_SECONDS    see "Resetting" above (default 70; 0 never waits)
#   BENCH_KEEP=1            keep the run dirs (outputs, logs, Makefiles) instead of deleting them
# A quick run: BENCH_SKIP_REAL=1 BENCH_TRIVIAL_PACKAGES=20 BENCH_TRIVIAL_REPS=1 scripts/bench/peers.sh
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/bench/fs.sh
source "$SCRIPT_DIR/fs.sh"
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
PY="$SCRIPT_DIR/peers.py"
RUNNER="$SCRIPT_DIR/peers_run.sh"
# shellcheck source=../lib.sh
. "$ROOT/scripts/lib.sh"

RELEASE_ARG=""
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    *)
      [[ -z $RELEASE_ARG ]] || { echo "one RELEASE_DIR at most (see --help)" >&2; exit 2; }
      RELEASE_ARG=$arg ;;
  esac
done
if [[ -n $RELEASE_ARG ]]; then
  [[ -e $RELEASE_ARG ]] || { echo "no release at $RELEASE_ARG" >&2; exit 2; }
  RELEASE_ARG=$(cd "$(dirname "$RELEASE_ARG")" && pwd)/$(basename "$RELEASE_ARG")
fi

JOBS=${BENCH_JOBS:-2}
TOOLS=${BENCH_TOOLS:-fissile bare podman docker}
REPS=${BENCH_REPS:-1}
TREPS=${BENCH_TRIVIAL_REPS:-3}
TPACKAGES=${BENCH_TRIVIAL_PACKAGES:-200}
TSHAPES=${BENCH_TRIVIAL_SHAPES:-fan chain}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fissile-oci-bench}
SDE=${SOURCE_DATE_EPOCH:-0}

log() { printf '==> %s\n' "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
# CPU seconds used by everything on the machine so far (user, nice, system, irq, softirq, steal)
machine_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }
want() { [[ " $TOOLS " == *" $1 "* ]]; }

if [[ $(id -u) != 0 ]]; then
  echo "scripts/bench/peers.sh needs root (chroot, overlay mounts, rootful podman and dockerd);"
  echo "nothing was measured."
  exit 0
fi

LOAD_START=$(loadavg)
DATE_START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
echo "nproc: $(nproc)    load average at start (1/5/15 min): $LOAD_START"

# --- dirs ------------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR/peers"
D=$(cd "$BENCH_DIR/peers" && pwd)
W="$D/work"
RES="$D/results"
TRASH="$D/trash-$$"
mkdir -p "$TRASH"
for old in "$RES" "$D/runs" "$D/stage"; do
  [[ -e $old ]] && mv "$old" "$TRASH/$(basename "$old")-old"
done
mkdir -p "$RES" "$D/runs" "$D/stage" "$D/bin" "$D/images"
RUN_ID=0
SETTLE=${BENCH_SETTLE_SECONDS:-70}
if [[ -f $D/.cleaned-at ]]; then
  since=$(($(date +%s) - $(cat "$D/.cleaned-at")))
  if ((since < SETTLE)); then
    log "the previous run deleted its run dirs ${since}s ago: sync and wait $((SETTLE - since))s (see --help, Resetting)"
    sync
    sleep $((SETTLE - since))
  fi
fi

# --- tools -----------------------------------------------------------------------------------
ensure_apt_packages make python3 skopeo util-linux coreutils
SKIP_PODMAN="" SKIP_DOCKER=""
# Installing a package that ships a service must not start it (dockerd would create its default
# bridge network): a policy-rc.d that refuses, only for the install, unless one exists already.
install_quietly() {
  local made=0 rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made=1
  fi
  ensure_apt_packages "$@" || rc=$?
  ((made)) && rm -f /usr/sbin/policy-rc.d
  return $rc
}
if want podman && ! command -v podman >/dev/null 2>&1; then
  install_quietly podman || SKIP_PODMAN="podman could not be installed with apt-get"
fi
want podman || SKIP_PODMAN="not in BENCH_TOOLS"
if want docker && ! command -v dockerd >/dev/null 2>&1; then
  install_quietly docker.io || SKIP_DOCKER="docker.io (dockerd) could not be installed with apt-get"
fi
want docker || SKIP_DOCKER="not in BENCH_TOOLS"
if [[ -z $SKIP_DOCKER ]] && ! command -v docker >/dev/null 2>&1; then
  SKIP_DOCKER="no docker client"
fi

# --- binary ----------------------------------------------------------------------------------
if [[ -n ${BENCH_BIN:-} ]]; then
  SRC_BIN=$BENCH_BIN
else
  log "building the release binary (cargo build --release in $ROOT)"
  ensure_cargo
  (cd "$ROOT" && cargo build --release --quiet)
  target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
  [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
  SRC_BIN="$target_dir/release/fissile-oci"
fi
[[ -x $SRC_BIN ]] || { echo "no fissile-oci binary at $SRC_BIN" >&2; exit 1; }
# A private copy: a concurrent cargo build cannot swap it mid-run.
BIN="$D/bin/fissile-oci"
cp "$SRC_BIN" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
BIN_DESC="$("$BIN" --version) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock rootfs-builder 2>/dev/null || echo ', uncommitted changes in the tree'))"

# --- dockerd (ours, started and stopped by PID) ------------------------------------------------
DOCKER_SOCK=/run/fissile-oci-peers-docker.sock
DOCKER_EXEC=/run/fissile-oci-peers-docker
DOCKER_PIDFILE=/run/fissile-oci-peers-docker.pid
DOCKERD_PID=""
DOCKER=(docker -H "unix://$DOCKER_SOCK")
docker_up() {
  [[ -n $DOCKERD_PID ]] && return 0
  mkdir -p "$D/docker/data"
  echo '{}' >"$D/docker/daemon.json" # an empty config: /etc/docker/daemon.json is not read
  log "starting dockerd (private data root $D/docker/data, socket $DOCKER_SOCK, no bridge)"
  dockerd --config-file "$D/docker/daemon.json" --data-root "$D/docker/data" \
    --exec-root "$DOCKER_EXEC" -H "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PIDFILE" \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >>"$D/docker/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local i
  for ((i = 0; i < 60; i++)); do
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
      wait "$DOCKERD_PID" 2>/dev/null || true
      DOCKERD_PID=""
      SKIP_DOCKER="dockerd exited at start: $(grep -iE 'level=(fatal|error)|failed' "$D/docker/dockerd.log" | tail -n 1 | cut -c1-300)"
      return 1
    fi
    "${DOCKER[@]}" version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  SKIP_DOCKER="dockerd did not answer on $DOCKER_SOCK within 30 s (see $D/docker/dockerd.log)"
  docker_down
  return 1
}
docker_down() {
  [[ -n $DOCKERD_PID ]] || return 0
  local i containerd=""
  [[ -f $DOCKER_EXEC/containerd/containerd.pid ]] && containerd=$(cat "$DOCKER_EXEC/containerd/containerd.pid")
  kill "$DOCKERD_PID" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID" 2>/dev/null
  wait "$DOCKERD_PID" 2>/dev/null || true
  # dockerd stops the containerd it started; if it could not, that one (by its pid file) too.
  if [[ -n $containerd ]] && kill -0 "$containerd" 2>/dev/null &&
      tr '\0' ' ' <"/proc/$containerd/cmdline" | grep -q "$DOCKER_EXEC"; then
    kill "$containerd" 2>/dev/null || true
  fi
  DOCKERD_PID=""
}
cleanup() {
  docker_down
  # containers/storage keeps its overlay dir bind-mounted on itself after podman exits
  if mountpoint -q "$D/podman/storage/overlay" 2>/dev/null; then
    umount "$D/podman/storage/overlay" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- work dir with the Debian compilation base -------------------------------------------------
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
BASE="debian-$SUITE"
has_ref() { # LAYOUT_DIR REF
  [[ -f $1/index.json ]] && python3 - "$1/index.json" "$2" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1]))
sys.exit(0 if any(m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]
                  for m in idx.get("manifests", [])) else 1)
EOF
}
if ! has_ref "$W/oci" "$BASE"; then
  from=${BENCH_BASE_FROM:-}
  if [[ -z $from ]]; then
    dflt=${FISSILE_OCI_WORK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fissile-oci}
    if has_ref "$dflt/oci" "$BASE"; then from="oci:$dflt/oci:$BASE"; else from="debian:$SUITE"; fi
  fi
  log "the bench work dir has no $BASE: base build --from $from (untimed)"
  "$BIN" -w "$W" base build --from "$from" --tag "$BASE" >/dev/null
fi
CBASE=$("$BIN" -q -w "$W" base name --base "$BASE")
# A 1-package warm-up compile builds the compilation base if needed and unpacks it.
python3 "$SCRIPT_DIR/gen_packages.py" --out "$D/stage/rel-warmup" --shape fan --packages 1
sed -i 's/^name: p0001$/name: peers-warmup/' "$D/stage/rel-warmup/packages/p0001/spec"
mv "$D/stage/rel-warmup/packages/p0001" "$D/stage/rel-warmup/packages/peers-warmup"
"$BIN" -q -w "$W" compile "$D/stage/rel-warmup" --base "$BASE" -j 1 >"$D/stage/warmup.log" 2>&1 ||
  { echo "the warm-up compile failed:" >&2; tail -n 20 "$D/stage/warmup.log" >&2; exit 1; }
CBASE_DIGEST=$(python3 - "$W/oci/index.json" "$CBASE" <<'EOF'
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"].split(":", 1)[1])
EOF
)
ROOTFS="$W/rootfs/$CBASE_DIGEST"
[[ -n $CBASE_DIGEST && -d $ROOTFS/usr/bin ]] || { echo "the unpacked compilation base $ROOTFS is missing" >&2; exit 1; }
log "compilation base $CBASE, unpacked at $ROOTFS"

reset_work() {
  python3 "$PY" reset-work "$W" --trash "$TRASH/work-blobs-$((RUN_ID++))" >/dev/null
  local d
  for d in packages runs logs; do
    [[ -e $W/$d ]] && mv "$W/$d" "$TRASH/work-$d-$((RUN_ID++))"
  done
  return 0
}
reset_work

# --- the base image in podman and docker -------------------------------------------------------
TAG=${CBASE_DIGEST:0:12}
IMAGE="fissile-peers/cbase:$TAG"
IMG_TAR="$D/images/cbase-$TAG.tar"
if [[ ( -z $SKIP_PODMAN || -z $SKIP_DOCKER ) && ! -f $IMG_TAR ]]; then
  log "skopeo copy oci:$W/oci:$CBASE docker-archive:$IMG_TAR:$IMAGE (untimed)"
  skopeo copy -q "oci:$W/oci:$CBASE" "docker-archive:$IMG_TAR.tmp:$IMAGE"
  mv "$IMG_TAR.tmp" "$IMG_TAR"
fi
PODMAN=(podman --root "$D/podman/storage" --runroot /run/fissile-oci-peers-podman
  --cgroup-manager cgroupfs --events-backend file)
# Debian's podman picks crun once it is installed, and crun 1.8 refuses cgroup v1 hybrid hosts
# like this one; runc is what the published tables were measured with.
if command -v runc >/dev/null 2>&1; then
  PODMAN+=(--runtime "$(command -v runc)")
fi
PODMAN_RUN_ARGS=""
if [[ -z $SKIP_PODMAN ]]; then
  if ! "${PODMAN[@]}" image exists "docker.io/$IMAGE" 2>/dev/null; then
    log "podman load -i $IMG_TAR (private storage $D/podman/storage; untimed)"
    "${PODMAN[@]}" load -q -i "$IMG_TAR" >/dev/null
  fi
  # podman asks for rlimits above the caller's hard limits unless told (see shared notes).
  if ! "${PODMAN[@]}" run --rm --network none --pull never "docker.io/$IMAGE" /bin/true >/dev/null 2>"$D/podman-check.log"; then
    PODMAN_RUN_ARGS="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    # shellcheck disable=SC2086
    "${PODMAN[@]}" run --rm --network none --pull never $PODMAN_RUN_ARGS "docker.io/$IMAGE" /bin/true \
      >/dev/null 2>>"$D/podman-check.log" ||
      SKIP_PODMAN="podman run fails: $(tail -n 1 "$D/podman-check.log")"
  fi
fi
if [[ -z $SKIP_DOCKER ]] && docker_up; then
  if ! "${DOCKER[@]}" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "docker load -i $IMG_TAR (untimed)"
    "${DOCKER[@]}" load -q -i "$IMG_TAR" >/dev/null
  fi
  "${DOCKER[@]}" run --rm --network none "$IMAGE" /bin/true >/dev/null 2>"$D/docker-check.log" ||
    SKIP_DOCKER="docker run fails: $(tail -n 1 "$D/docker-check.log")"
  docker_down
fi
[[ -n $SKIP_PODMAN ]] && log "podman skipped: $SKIP_PODMAN"
[[ -n $SKIP_DOCKER ]] && log "docker skipped: $SKIP_DOCKER"

# --- releases ----------------------------------------------------------------------------------
# stage KIND RELEASE: plan and pristine staged sources (untimed).
stage() {
  local kind=$1 rel=$2
  "$BIN" -q inspect --json "$rel" >"$D/stage/$kind.inspect.json"
  python3 "$PY" stage --release "$rel" --inspect "$D/stage/$kind.inspect.json" \
    --out "$D/stage/$kind" --plan "$D/stage/$kind.plan.json" >&2
}

REAL=""
if [[ ${BENCH_SKIP_REAL:-0} != 1 ]]; then
  if [[ -n $RELEASE_ARG ]]; then
    REAL=$RELEASE_ARG
  elif [[ -x $ROOT/scripts/real-release.sh || -f $ROOT/scripts/real-release.sh ]]; then
    log "generating the real release: scripts/real-release.sh $D/real-release (untimed)"
    bash "$ROOT/scripts/real-release.sh" "$D/real-release" >&2
    REAL="$D/real-release"
  else
    log "no scripts/real-release.sh: using examples/hello-release as the real release"
    REAL="$ROOT/examples/hello-release"
  fi
  stage real "$REAL"
fi
SHAPES=()
if [[ ${BENCH_SKIP_TRIVIAL:-0} != 1 ]]; then
  for shape in $TSHAPES; do
    python3 "$SCRIPT_DIR/gen_packages.py" --out "$D/stage/rel-$shape" --shape "$shape" --packages "$TPACKAGES"
    stage "trivial-$shape" "$D/stage/rel-$shape"
    SHAPES+=("$shape")
  done
fi

# --- measurements ------------------------------------------------------------------------------
# smoke MAP.json: runs the ELF programs of those outputs in a chroot of the base; prints OK/TOTAL.
smoke() {
  local map=$1 s
  s=$(mktemp -d "$D/runs/smoke-XXXXXX")
  python3 -c 'import json, sys
for k, v in json.load(open(sys.argv[1])).items(): print(k, v)' "$map" >"$s/list"
  unshare --mount --propagation private bash "$RUNNER" smoke "$ROOTFS" "$s" "$s/list" 2>"$s/err" | tail -n 1
}

# finish KIND TOOL REP WALL RC MAP [record args...]: verification and the result file.
finish() {
  local kind=$1 tool=$2 rep=$3 wall=$4 rc=$5 map=$6
  shift 6
  local base="$RES/$kind-$tool-$rep" error="" smoke_out="" trivial=()
  [[ $kind == trivial-* ]] && trivial=(--trivial)
  if ((rc != 0)); then
    error="exit $rc (see $base.log)"
  elif ! python3 "$PY" verify --plan "$D/stage/$kind.plan.json" --map "$map" \
      --listing "$base.listing.json" "${trivial[@]}" >/dev/null 2>"$base.verify"; then
    error="verification: $(head -n 1 "$base.verify")"
  elif [[ $kind == real ]]; then
    smoke_out=$(smoke "$map" || true)
    local ok=${smoke_out%%/*} rest=${smoke_out#*/}
    local total=${rest%% *}
    if [[ -z $smoke_out || -z $total ]]; then
      error="smoke test: it printed nothing (see $D/runs/smoke-*/err)"
    elif [[ $ok == 0 && $total != 0 ]]; then
      error="smoke test: none of the $total produced programs ran"
    fi
    smoke_out="$ok of $total programs ran"
  fi
  python3 "$PY" record --out "$base.json" --tool "$tool" --wall "$wall" --load "$LOAD_T0-$LOAD_T1" \
    --machine-cpu "$(awk -v a="$CPU_T0" -v b="$CPU_T1" 'BEGIN {print b - a}')" \
    ${error:+--error "$error"} ${smoke_out:+--smoke "$smoke_out"} "$@"
  if [[ -n $error ]]; then
    log "  $tool: FAILED: $error"
  else
    log "  $tool: $(awk -v w="$wall" 'BEGIN {printf "%.2f s", w}')${smoke_out:+, $smoke_out}"
  fi
}

run_fissile() { # KIND RELEASE REP
  local kind=$1 rel=$2 rep=$3 base="$RES/$1-fissile-$3" t0 t1 pid rc=0 rpid=""
  reset_work
  sync
  LOAD_T0=$(cut -d' ' -f1 /proc/loadavg)
  CPU_T0=$(machine_cpu)
  t0=$(now)
  "$BIN" -q -w "$W" compile "$rel" --base "$BASE" -j "$JOBS" --summary "$base.summary.json" \
    >"$base.log" 2>&1 &
  pid=$!
  if [[ $kind == real ]]; then
    python3 "$PY" rss "$pid" "$BIN" "$base.rss.json" &
    rpid=$!
  fi
  wait "$pid" || rc=$?
  t1=$(now)
  CPU_T1=$(machine_cpu)
  LOAD_T1=$(cut -d' ' -f1 /proc/loadavg)
  [[ -n $rpid ]] && wait "$rpid"
  [[ -f $base.summary.json ]] &&
    python3 "$PY" outputs-fissile --summary "$base.summary.json" --work "$W" --out "$base.map.json"
  [[ -f $base.map.json ]] || echo '{}' >"$base.map.json"
  finish "$kind" fissile "$rep" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$rc" \
    "$base.map.json" --summary "$base.summary.json" ${rpid:+--rss "$base.rss.json"}
}

run_make() { # TOOL KIND REP
  local tool=$1 kind=$2 rep=$3 base="$RES/$2-$1-$3" run="$D/runs/$2-$1-$3" t0 t1 rc=0 outdir
  mkdir -p "$run/times" "$run/logs" "$run/stamps"
  python3 "$PY" makefile --plan "$D/stage/$kind.plan.json" --runner "bash $RUNNER package" \
    --stamps "$run/stamps" --out "$run/Makefile"
  export PEERS_TOOL=$tool PEERS_SOURCES="$D/stage/$kind" PEERS_RUN=$run PEERS_SDE=$SDE
  export PEERS_RM_SOURCES=${BENCH_BARE_RM_SOURCES:-0}
  local cmd=(make -s -j "$JOBS" -f "$run/Makefile" all)
  case $tool in
    bare)
      cmd=(unshare --mount --propagation private bash "$RUNNER" bare-ns "$ROOTFS" "$run" "${cmd[@]}")
      outdir="$run/upper/var/vcap/packages" ;;
    podman)
      mkdir -p "$run/src" "$run/out"
      export PEERS_ENGINE="${PODMAN[*]}" PEERS_RUN_ARGS=$PODMAN_RUN_ARGS PEERS_IMAGE="docker.io/$IMAGE"
      outdir="$run/out" ;;
    docker)
      mkdir -p "$run/src" "$run/out"
      export PEERS_ENGINE="${DOCKER[*]}" PEERS_RUN_ARGS="" PEERS_IMAGE=$IMAGE
      outdir="$run/out" ;;
  esac
  sync
  LOAD_T0=$(cut -d' ' -f1 /proc/loadavg)
  CPU_T0=$(machine_cpu)
  t0=$(now)
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "${cmd[@]}" >"$base.log" 2>&1 || rc=$?
  t1=$(now)
  CPU_T1=$(machine_cpu)
  LOAD_T1=$(cut -d' ' -f1 /proc/loadavg)
  python3 "$PY" outputs-dir --plan "$D/stage/$kind.plan.json" --dir "$outdir" --out "$base.map.json"
  finish "$kind" "$tool" "$rep" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$rc" \
    "$base.map.json" --times "$run/times"
}

# measure KIND RELEASE REPS TOOL...
measure() {
  local kind=$1 rel=$2 reps=$3 rep tool
  shift 3
  for ((rep = 1; rep <= reps; rep++)); do
    for tool in "$@"; do
      want "$tool" || continue
      case $tool in
        fissile) log "$kind, run $rep: fissile-oci compile -j $JOBS"; run_fissile "$kind" "$rel" "$rep" ;;
        bare) log "$kind, run $rep: bare metal (chroot, make -j $JOBS)"; run_make bare "$kind" "$rep" ;;
        podman)
          [[ -z $SKIP_PODMAN ]] || continue
          log "$kind, run $rep: podman run (make -j $JOBS)"; run_make podman "$kind" "$rep" ;;
        docker)
          [[ -z $SKIP_DOCKER ]] || continue
          docker_up || { log "docker skipped: $SKIP_DOCKER"; continue; }
          log "$kind, run $rep: docker run (make -j $JOBS)"; run_make docker "$kind" "$rep"
          docker_down ;;
      esac
    done
  done
}

if [[ -n $REAL ]]; then
  measure real "$REAL" "$REPS" fissile bare podman docker
fi
for shape in "${SHAPES[@]}"; do
  measure "trivial-$shape" "$D/stage/rel-$shape" "$TREPS" fissile bare podman docker
done
docker_down
python3 "$PY" crosscheck --results "$RES" >&2

LOAD_END=$(loadavg)

# --- report ------------------------------------------------------------------------------------
version_of() { "$@" 2>/dev/null | head -n 1 || echo "?"; }
report_args=(--results "$RES" --jobs "$JOBS")
[[ -n $REAL ]] && report_args+=(--plan "$D/stage/real.plan.json")
for shape in "${SHAPES[@]}"; do report_args+=(--trivial "$shape=$TPACKAGES"); done
[[ -n $SKIP_PODMAN ]] && report_args+=(--skip "podman=$SKIP_PODMAN")
[[ -n $SKIP_DOCKER ]] && report_args+=(--skip "docker=$SKIP_DOCKER")
want fissile || report_args+=(--skip "fissile=not in BENCH_TOOLS")
want bare || report_args+=(--skip "bare=not in BENCH_TOOLS")

{
  echo
  echo "=== fissile-oci against its peers: same release, same compilation base, -j $JOBS ==="
  echo "date: $DATE_START    machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
  echo "fissile-oci: $BIN_DESC"
  echo "podman: $(version_of podman --version)    docker: client $(version_of docker --version), daemon $(version_of dockerd --version)"
  echo "compilation base: $CBASE (unpacked at $ROOTFS); image $IMAGE for podman and docker"
  [[ -n $REAL ]] && echo "real release: $REAL"
  echo
  echo "commands (per package for the peers; the Makefile in each run dir lists them in DAG order):"
  echo "  fissile-oci  $BIN -q -w $W compile RELEASE --base $BASE -j $JOBS --summary F.json"
  echo "  bare         unshare -m bash peers_run.sh bare-ns ROOTFS RUN make -j $JOBS -f RUN/Makefile; per package:"
  echo "               cp -a STAGED/PKG ROOT/var/vcap/source/PKG; mkdir ROOT/var/vcap/packages/PKG;"
  echo "               chroot ROOT env -i -C /var/vcap/source/PKG BOSH_...=... bash -x ./packaging"
  echo "  podman       ${PODMAN[*]} run --rm --network none --pull never $PODMAN_RUN_ARGS \\"
  echo "                 -w /var/vcap/source/PKG -v SRC:/var/vcap/source/PKG -v OUT/DEP:/var/vcap/packages/DEP:ro \\"
  echo "                 -v OUT/PKG:/var/vcap/packages/PKG -e BOSH_...=... docker.io/$IMAGE /bin/bash -x ./packaging"
  echo "  docker       ${DOCKER[*]} run --rm --network none --pull never (same -w, -v, -e) $IMAGE /bin/bash -x ./packaging"
  echo "               against: dockerd --data-root $D/docker/data --exec-root $DOCKER_EXEC -H unix://$DOCKER_SOCK \\"
  echo "                 --bridge=none --iptables=false --ip6tables=false --ip-masq=false"
  echo
  python3 "$PY" report "${report_args[@]}"
  echo
  echo "bench dir: $(fsinfo "$D")"
  echo "nproc: $(nproc)    load average start: $LOAD_START    end: $LOAD_END"
  python3 - "$(nproc)" "$LOAD_START" "$LOAD_END" <<'EOF'
import sys
nproc = int(sys.argv[1])
l1 = float(sys.argv[2].split()[0])
if l1 > nproc:
    print(f"NOTE: the machine was busy before this run started (1-min load {l1:.1f} > {nproc} cores; during the")
    print("      compiles the bench itself keeps it above that): other work may have shared the machine,")
    print("      see the per-run machine CPU above.")
EOF
} | tee "$RES/report.txt"

if [[ ${BENCH_KEEP:-0} == 1 ]]; then
  log "run dirs kept in $D/runs; results in $RES"
  rm -rf "$TRASH"
else
  log "removing run dirs and trash (results stay in $RES)"
  rm -rf "$TRASH" "$D/runs"
fi
date +%s >"$D/.cleaned-at"
exit 0
