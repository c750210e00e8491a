#!/usr/bin/env bash
# Shared helpers for the project's scripts: idempotent installs on a fresh Debian machine.

# Installs the given Debian packages that are not installed yet; runs `apt-get update` once.
ensure_apt_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them first)" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  # A brand-new machine may still be running its own apt jobs: wait for their lock, not fail.
  local wait_lock=(-o DPkg::Lock::Timeout=600)
  if [ -z "${_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" update -qq </dev/null
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# Makes sure cargo is on PATH (rustup installs it under ~/.cargo/bin).
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; return 1; }
}

# The Debian packages the build and the whole test suite need (libelf-dev and zlib1g-dev: the
# libbpf that libcontainer's cgroupsv2_devices builds for device rules on cgroup v2 hosts).
PROJECT_APT_PACKAGES=(ca-certificates python3 python3-yaml groff-base gcc libc6-dev make pkg-config tar gzip zstd libseccomp-dev busybox-static uidmap skopeo umoci procps util-linux mmdebstrap
  docker-registry apache2-utils openssl podman runc time libelf-dev zlib1g-dev)
