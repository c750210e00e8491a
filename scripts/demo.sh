#!/usr/bin/env bash
# The main job end to end: installs what it needs, builds fissile-oci, shows what the example
# release contains, compiles it in sandboxes on the default Debian compilation base (built from
# the host's apt mirror on first use, reused after), then compiles it again to show the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt_packages "${PROJECT_APT_PACKAGES[@]}"
ensure_cargo

cargo build --release --locked
bin=target/release/fissile-oci
out="${DEMO_OUT:-$(mktemp -d)}"
mkdir -p "$out"

echo "== inspect examples/hello-release"
"$bin" inspect examples/hello-release
echo
echo "== compile (first run builds the default base if needed, then compiles every package)"
"$bin" compile examples/hello-release --summary "$out/summary.json" --graph "$out/graph.dot" --metrics "$out/metrics.csv"
echo
echo "== compile again: everything comes from the cache"
"$bin" compile examples/hello-release --summary "$out/summary-cached.json"
echo
echo "== the compiled packages are images in the OCI store"
"$bin" cache list
echo
bundle_key=$(python3 -c 'import json,sys; print(next(p["cache_key"] for p in json.load(open(sys.argv[1]))["packages"] if p["name"] == "hello-bundle"))' "$out/summary.json")
work="${FISSILE_OCI_WORK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fissile-oci}"
echo "== hello-bundle's smoke test, run at compile time:"
cat "$work/packages/$bundle_key/smoke-test.txt"
echo
echo "summary, graph and metrics are in $out"
