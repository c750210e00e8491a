#!/usr/bin/env bash
# The per-package runner of scripts/bench/peers.sh, and its two mount-namespace wrappers. Not
# meant to be run by hand; peers.sh sets the environment.
#
#   peers_run.sh package PKG FINGERPRINT DEPS     (a Makefile recipe; DEPS: a,b or -)
#       Compiles one package the way bosh and fissile-oci do: a private copy of its staged
#       sources at /var/vcap/source/PKG (the cwd), an empty /var/vcap/packages/PKG, each direct
#       dependency at /var/vcap/packages/DEP, `bash -x ./packaging` with the BOSH_* environment,
#       output to $PEERS_RUN/logs/PKG.log, start/end times to $PEERS_RUN/times/PKG.
#       $PEERS_TOOL picks how:
#         bare    chroot $PEERS_ROOT (all outputs share its /var/vcap/packages: no isolation);
#                 PEERS_RM_SOURCES=1 deletes each build tree in the background once it is done
#         podman  $PEERS_ENGINE run --rm --network none ... $PEERS_IMAGE (sources and outputs are
#         docker  host dirs under $PEERS_RUN/src and $PEERS_RUN/out, bind-mounted; deps read-only)
#   peers_run.sh bare-ns ROOTFS RUN CMD...        (run under `unshare --mount --propagation private`)
#       Mounts a volatile overlay (lower ROOTFS, upper RUN/upper) at RUN/merged with /proc, /dev
#       and /sys, exports PEERS_ROOT=RUN/merged and runs CMD. Everything is unmounted when the
#       namespace goes; the outputs stay in RUN/upper/var/vcap/packages.
#   peers_run.sh smoke ROOTFS SCRATCH PKGLIST    (run under `unshare --mount --propagation private`)
#       The same overlay with each "name dir" line of PKGLIST bound at /var/vcap/packages/name,
#       then, chrooted, every ELF program in /var/vcap/packages/*/{bin,sbin} is run with
#       --version, -v, -V or --help (stdin /dev/null, 10 s timeout); prints "OK/TOTAL NAMES".
set -euo pipefail

mode=$1
shift

mount_base() {
  local rootfs=$1 dir=$2
  mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
  mount -t overlay overlay \
    -o "lowerdir=$rootfs,upperdir=$dir/upper,workdir=$dir/work,volatile" "$dir/merged"
  mount -t proc proc "$dir/merged/proc"
  mount --rbind /dev "$dir/merged/dev"
  mount --rbind /sys "$dir/merged/sys"
}

case $mode in
  bare-ns)
    rootfs=$1 run=$2
    shift 2
    mount_base "$rootfs" "$run"
    export PEERS_ROOT="$run/merged"
    exec "$@"
    ;;
  smoke)
    rootfs=$1 scratch=$2 list=$3
    mount_base "$rootfs" "$scratch"
    m="$scratch/merged"
    while read -r name dir; do
      mkdir -p "$m/var/vcap/packages/$name"
      mount --bind "$dir" "$m/var/vcap/packages/$name"
    done <"$list"
    cat >"$m/tmp/peers-smoke.sh" <<'EOF'
ok=0 total=0 names=()
LD_LIBRARY_PATH=$(for d in /var/vcap/packages/*/lib; do [ -d "$d" ] && printf '%s:' "$d"; done)
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH%:}
for f in /var/vcap/packages/*/bin/* /var/vcap/packages/*/sbin/*; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || continue
  total=$((total + 1))
  for flag in --version -v -V --help; do
    if timeout 10 "$f" "$flag" </dev/null >/dev/null 2>&1; then
      ok=$((ok + 1)); names+=("$(basename "$f")"); break
    fi
  done
done
echo "$ok/$total ${names[*]}"
EOF
    exec chroot "$m" /bin/bash /tmp/peers-smoke.sh
    ;;
  package) ;;
  *) echo "peers_run.sh: unknown mode $mode" >&2; exit 2 ;;
esac

pkg=$1 fp=$2 deps=$3
[[ $deps == - ]] && deps=""
t0=$EPOCHREALTIME
log="$PEERS_RUN/logs/$pkg.log"
env_vars=(
  "BOSH_COMPILE_TARGET=/var/vcap/source/$pkg"
  "BOSH_INSTALL_TARGET=/var/vcap/packages/$pkg"
  "BOSH_PACKAGE_NAME=$pkg"
  "BOSH_PACKAGE_VERSION=$fp"
  "BOSH_PACKAGES_DIR=/var/vcap/packages"
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "HOME=/root"
  "LANG=C.UTF-8"
  "SOURCE_DATE_EPOCH=$PEERS_SDE"
)
rc=0
case $PEERS_TOOL in
  bare)
    cp -a "$PEERS_SOURCES/$pkg" "$PEERS_ROOT/var/vcap/source/$pkg"
    mkdir "$PEERS_ROOT/var/vcap/packages/$pkg"
    chroot "$PEERS_ROOT" /usr/bin/env -i -C "/var/vcap/source/$pkg" "${env_vars[@]}" \
      /bin/bash -x ./packaging </dev/null >"$log" 2>&1 || rc=$?
    # A diagnostic: delete the build tree right away, in the background, as fissile-oci's commit
    # thread deletes each package's scratch dir (sources and build tree) while others compile.
    if [[ ${PEERS_RM_SOURCES:-0} == 1 && $rc == 0 ]]; then
      rm -rf "${PEERS_ROOT:?}/var/vcap/source/$pkg" </dev/null >/dev/null 2>&1 &
    fi
    ;;
  podman | docker)
    cp -a "$PEERS_SOURCES/$pkg" "$PEERS_RUN/src/$pkg"
    mkdir "$PEERS_RUN/out/$pkg"
    args=(run --rm --network none --pull never -w "/var/vcap/source/$pkg"
      -v "$PEERS_RUN/src/$pkg:/var/vcap/source/$pkg")
    for d in ${deps//,/ }; do
      args+=(-v "$PEERS_RUN/out/$d:/var/vcap/packages/$d:ro")
    done
    args+=(-v "$PEERS_RUN/out/$pkg:/var/vcap/packages/$pkg")
    for e in "${env_vars[@]}"; do args+=(-e "$e"); done
    # shellcheck disable=SC2086 # PEERS_ENGINE and PEERS_RUN_ARGS are word lists without spaces in words
    $PEERS_ENGINE "${args[@]}" $PEERS_RUN_ARGS "$PEERS_IMAGE" /bin/bash -x ./packaging \
      </dev/null >"$log" 2>&1 || rc=$?
    ;;
  *) echo "peers_run.sh: unknown PEERS_TOOL $PEERS_TOOL" >&2; exit 2 ;;
esac
t1=$EPOCHREALTIME
echo "$t0 $t1" >"$PEERS_RUN/times/$pkg"
if ((rc != 0)); then
  echo "$PEERS_TOOL: package $pkg failed (exit $rc); last lines of $log:" >&2
  tail -n 15 "$log" | sed 's/^/    /' >&2
  exit 1
fi
