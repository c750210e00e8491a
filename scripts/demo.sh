#!/usr/bin/env bash
# The main job end to end on the example release: installs what it needs, builds fissile-oci,
# and shows what would be compiled (releases, fingerprints, compile order).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt_packages "${PROJECT_APT_PACKAGES[@]}"
ensure_cargo

cargo build --release --locked
bin=target/release/fissile-oci

echo "== inspect examples/hello-release"
"$bin" inspect -v examples/hello-release
echo
echo "== inspect with a role manifest (only what its jobs need)"
"$bin" inspect examples/hello-release -m examples/role-manifest.yml --json
