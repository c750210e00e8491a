#!/usr/bin/env bash
# Installs what the tests need (idempotently) and runs the whole suite: formatting, lints, and
# every unit and integration test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt_packages "${PROJECT_APT_PACKAGES[@]}"
ensure_cargo

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked "$@" 2>&1 | tee /tmp/fissile-oci-test.log
