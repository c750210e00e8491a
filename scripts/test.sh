#!/usr/bin/env bash
# Installs what the tests need (idempotently) and runs the whole suite: formatting, lints, and
# every unit and integration test.
#
#   scripts/test.sh [--fresh] [extra cargo test args]
#
# Ends with the tests that skipped themselves (tests/common_skip: no root, a tool missing...),
# then one line: `total: N passed, M failed, K skipped (J ignored), P skipped in part`.
#
# --fresh (or FISSILE_OCI_FRESH=1) proves the brand-new-machine path on a used machine: every
# cache the build and the tests fill (cargo's registry and target dir, the Debian source
# tarballs and the private apt lists of scripts/real-release.sh, the default work dir, the
# tests' Debian work dir) points at empty temporary dirs for this run, removed at the end.
# Only what apt installed system-wide stays (it is checked, and installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

fresh="${FISSILE_OCI_FRESH:-}"
args=()
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    *) args+=("$arg") ;;
  esac
done

ensure_apt_packages "${PROJECT_APT_PACKAGES[@]}"
ensure_cargo

if [ -n "$fresh" ]; then
  # Not under /tmp: the target dir and the Debian base need a few GB of real disk.
  fresh_dir="$(mktemp -d /var/tmp/fissile-oci-fresh.XXXXXX)"
  # The rootless tests run the built binary as an unprivileged user: let it through.
  chmod 755 "$fresh_dir"
  remove_fresh_dir() {
    # Compiled packages and bases hold read-only dirs; open them up before removing.
    chmod -R u+rwX "$fresh_dir" 2>/dev/null || true
    rm -rf "$fresh_dir"
  }
  trap remove_fresh_dir EXIT
  export CARGO_HOME="$fresh_dir/cargo-home"
  export CARGO_TARGET_DIR="$fresh_dir/target"
  export FISSILE_OCI_SOURCE_CACHE="$fresh_dir/sources"
  export FISSILE_OCI_WORK_DIR="$fresh_dir/work"
  export XDG_CACHE_HOME="$fresh_dir/xdg-cache"
  echo "== fresh: every cache points into $fresh_dir (empty)"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log="$(mktemp)"
set +e
cargo test --workspace --locked --no-fail-fast ${args[@]+"${args[@]}"} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary, so CI reads the total rather than the last binary's.
# A test that cannot run here says so through tests/common_skip, on a line of its own:
#   fissile-oci-test skipped: BINARY::TEST: REASON        (the whole test; libtest says `ok`)
#   fissile-oci-test skipped part: BINARY::TEST: REASON   (the rest of the test ran)
# Those lines are listed, and whole skips are taken off libtest's `passed` and counted as skipped,
# with the #[ignore]d tests; a test skipped in part stays in `passed` and is counted apart.
awk -v prefix="fissile-oci-test skipped" '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed/) passed += $(i-1)
      if ($(i) ~ /^failed/) failed += $(i-1)
      if ($(i) ~ /^ignored/) ignored += $(i-1)
    }
  }
  # Anywhere in the line: run one at a time, libtest prints "test NAME ... " before the test runs.
  (at = index($0, prefix)) {
    line = substr($0, at + length(prefix))
    kind = (line ~ /^: /) ? "whole" : (line ~ /^ part: /) ? "part" : ""
    if (kind == "") next
    sub(/^( part)?: /, "", line)
    test = line
    sub(/: .*/, "", test)
    if (!((kind, test) in seen)) { seen[kind, test] = 1; count[kind]++ }
    shown[kind] = shown[kind] "  " line "\n"
  }
  END {
    if (count["whole"]) printf "skipped (libtest says ok):\n%s", shown["whole"]
    if (count["part"]) printf "skipped in part (the rest ran):\n%s", shown["part"]
    printf "total: %d passed, %d failed, %d skipped (%d ignored), %d skipped in part\n",
      passed - count["whole"], failed, count["whole"] + ignored, ignored, count["part"]
  }' "$log"
rm -f "$log"
exit "$rc"
