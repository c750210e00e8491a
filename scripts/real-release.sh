#!/usr/bin/env bash
# Generates "real-world", a BOSH release in source-directory form built from real upstream
# tarballs: the `.orig.tar.*` of Debian source packages.
#
#   scripts/real-release.sh [OUT_DIR]          the release (default target/real-release)
#   scripts/real-release.sh --print-lock SUITE  sources.lock lines for SUITE, read from the mirror
#
# The package definitions (spec, packaging) live in scripts/real-release/; this script copies
# them to OUT_DIR, puts each upstream tarball in as a blob (blobs/<pkg>/<file>, recorded in
# config/blobs.yml as `bosh add-blob` does) and leaves OUT_DIR ready for `fissile-oci compile`.
#
# Every tarball is the one scripts/real-release/sources.lock names, for the host's Debian suite,
# checked against the size and sha256 recorded there: the release is byte-identical on every
# machine, and a mirror that serves something else is an error naming the file and both digests.
# Downloads ask for the main suite (`apt-get source PKG/SUITE`): the newest version may live in
# the security suite, whose source files the mirror may not serve at all.
#
# Tarballs are downloaded once into a cache outside the repo
# (${FISSILE_OCI_SOURCE_CACHE:-/var/cache/fissile-oci/sources}) and never committed. apt reads a
# private configuration there (a deb-src twin of the host's Debian source, its own lists), so
# the host's apt setup is never changed. With $FISSILE_OCI set to a fissile-oci binary, the
# release's fingerprints are printed and checked against scripts/real-release/fingerprints.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
templates="$repo/scripts/real-release"
lock_file="$templates/sources.lock"
fingerprints_file="$templates/fingerprints"
cache="${FISSILE_OCI_SOURCE_CACHE:-/var/cache/fissile-oci/sources}"
apt_dir="$cache/.apt"

die() { echo "real-release: $*" >&2; exit 1; }
say() { echo "real-release: $*" >&2; }

# apt-get with the private configuration: only our deb-src entries, our own lists and caches.
apt_src() {
  apt-get -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt_dir/sources.list.d" \
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" \
    -o APT::Sandbox::User="$(id -un)" "$@" </dev/null
}

# The host's Debian suite, as apt and /etc/os-release name it (bookworm, trixie, ...).
host_suite() {
  local codename=""
  if [ -r /etc/os-release ]; then
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  fi
  [ -n "$codename" ] || die "cannot tell the host's Debian suite: /etc/os-release has no VERSION_CODENAME"
  echo "$codename"
}

# Writes the private apt configuration (a deb-src twin of the host's Debian source) and runs
# `apt-get update` on it, once per invocation.
apt_ready=""
prepare_apt() {
  [ -z "$apt_ready" ] || return 0
  local parts="$apt_dir/sources.list.d" etc=/etc/apt
  mkdir -p "$parts" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  if [ -f "$etc/sources.list.d/debian.sources" ]; then
    sed -E 's/^Types:.*/Types: deb-src/' "$etc/sources.list.d/debian.sources" > "$parts/debian-src.sources"
  elif grep -qsE '^deb[[:space:]]' "$etc/sources.list"; then
    sed -nE 's/^deb([[:space:]])/deb-src\1/p' "$etc/sources.list" > "$parts/debian-src.list"
  else
    die "found neither $etc/sources.list.d/debian.sources nor deb lines in $etc/sources.list to copy as deb-src"
  fi
  say "apt-get update (deb-src only, private lists in $apt_dir)"
  # A suite without sources on the mirror (security) makes update exit non-zero; what matters
  # is whether the main suite's sources are there, which the download below finds out.
  apt_src update -qq || say "apt-get update reported errors; continuing with the indexes it got"
  apt_ready=1
}

# Lock entries for a suite: "package source suite file size sha256" lines.
lock_entries() {
  awk -v suite="$1" '!/^#/ && NF == 6 && $3 == suite' "$lock_file"
}

# Prints "SIZE SHA256" of a file.
size_and_sha() {
  echo "$(stat -c %s "$1") $(sha256sum "$1" | cut -d' ' -f1)"
}

# Makes sure $cache/$file is the locked tarball, downloading it from $suite when needed.
fetch_orig() {
  local src="$1" suite="$2" file="$3" size="$4" sha="$5"
  local dest="$cache/$file" got
  if [ -f "$dest" ]; then
    got="$(size_and_sha "$dest")"
    [ "$got" != "$size $sha" ] || return 0
    say "$dest is not the locked tarball (size and sha256 $got, expected $size $sha): downloading it again"
  fi
  prepare_apt
  local tmp
  tmp="$(mktemp -d "$cache/.download-XXXXXX")"
  say "apt-get source --download-only $src/$suite (into $cache)"
  # It may exit non-zero when a .dsc or .debian.tar is missing from the mirror although the
  # .orig arrived: the file decides, not the exit code.
  (cd "$tmp" && apt_src source --download-only -qq "$src/$suite") ||
    say "apt-get source $src/$suite exited non-zero; checking for $file anyway"
  if [ ! -f "$tmp/$file" ]; then
    local found
    found="$(cd "$tmp" && ls -- *.orig.tar.* 2>/dev/null | tr '\n' ' ')"
    rm -rf "$tmp"
    die "the mirror's $src/$suite did not give $file (it gave: ${found:-nothing}); scripts/real-release/sources.lock names $file with sha256 $sha. If $suite moved to a new upstream version, update sources.lock and scripts/real-release/fingerprints (scripts/real-release.sh --print-lock $suite)"
  fi
  got="$(size_and_sha "$tmp/$file")"
  if [ "$got" != "$size $sha" ]; then
    rm -rf "$tmp"
    die "$file from the mirror's $src/$suite has size and sha256 $got, but scripts/real-release/sources.lock expects $size $sha: the mirror serves a different tarball under the same name; refusing to build a different release"
  fi
  mv "$tmp/$file" "$dest"
  rm -rf "$tmp"
}

# Copies $1 to $2 unless $2 already has the same bytes.
copy_if_changed() {
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2.tmp"
    mv "$2.tmp" "$2"
  fi
}

# Prints the release's fingerprints and checks them against the committed ones.
check_fingerprints() {
  [ -n "${FISSILE_OCI:-}" ] || return 0
  local got
  got="$("$FISSILE_OCI" inspect --json "$out" | python3 -c '
import json, sys
for p in sorted(json.load(sys.stdin)["releases"][0]["packages"], key=lambda p: p["name"]):
    print(p["name"], p["fingerprint"])')"
  say "fingerprints:"
  echo "$got" | sed 's/^/  /' >&2
  if [ "$got" != "$(grep -v '^#' "$fingerprints_file")" ]; then
    diff <(grep -v '^#' "$fingerprints_file") <(echo "$got") >&2 || true
    die "the fingerprints differ from scripts/real-release/fingerprints (< committed, > now)"
  fi
}

print_lock() {
  local suite="$1" pkg src line empty
  mkdir -p "$cache"
  prepare_apt
  # apt lists only the files its working dir lacks: ask from an empty one.
  empty="$(mktemp -d)"
  echo "# package  debian-source  suite  orig-tarball  size  sha256"
  while read -r pkg src _; do
    line="$(cd "$empty" && apt_src source --print-uris -qq "$src/$suite" | grep -E "\.orig\.tar\.[a-z0-9]+' " | head -n 1)" ||
      die "no source package $src in $suite on the mirror"
    # 'URI' FILE SIZE SHA256:HEX
    set -- $line
    printf '%-10s  %-10s  %s  %-32s  %8s  %s\n' "$pkg" "$src" "$suite" "$2" "$3" "${4#SHA256:}"
  done < <(awk '!/^#/ && NF == 6 { print $1, $2 }' "$lock_file" | awk '!seen[$1]++')
  rmdir "$empty"
}

main() {
  [ -d "$templates/packages" ] || die "$templates/packages is missing"
  [ -f "$lock_file" ] || die "$lock_file is missing"
  local suite entries
  suite="$(host_suite)"
  entries="$(lock_entries "$suite")"
  [ -n "$entries" ] || die "$lock_file has no tarballs for this host's suite $suite (it has: $(awk '!/^#/ && NF == 6 { print $3 }' "$lock_file" | sort -u | tr '\n' ' ')); add them with: scripts/real-release.sh --print-lock $suite"
  # OUT_DIR's packages/, config/ and blobs/ are replaced: refuse a directory we did not make.
  local marker="$out/.fissile-oci-real-release"
  if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$marker" ] &&
    ! grep -qsx 'name: real-world' "$out/config/final.yml"; then
    die "$out exists and is not a release made by this script: refusing to overwrite it"
  fi

  mkdir -p "$cache"
  local pkg src file size sha count=0
  while read -r pkg src _ file size sha; do
    [ -f "$templates/packages/$pkg/spec" ] || die "sources.lock names $pkg, which has no definition in $templates/packages"
    fetch_orig "$src" "$suite" "$file" "$size" "$sha"
  done <<< "$entries"

  mkdir -p "$out"
  echo "generated by scripts/real-release.sh" > "$marker"
  # Definitions are regenerated from the templates; blobs are kept when unchanged.
  rm -rf "$out/packages" "$out/config" "$out/src"
  cp -R "$templates/packages" "$templates/config" "$out/"
  mkdir -p "$out/blobs"

  local blobs_yml="$out/config/blobs.yml.tmp" stale
  printf -- '---\n' > "$blobs_yml"
  while read -r pkg src _ file size sha; do
    mkdir -p "$out/blobs/$pkg"
    for stale in "$out/blobs/$pkg"/*; do
      if [ -e "$stale" ] && [ "$(basename "$stale")" != "$file" ]; then rm -rf "$stale"; fi
    done
    copy_if_changed "$cache/$file" "$out/blobs/$pkg/$file"
    printf '%s:\n  size: %s\n  sha: sha256:%s\n' "$pkg/$file" "$size" "$sha" >> "$blobs_yml"
    count=$((count + 1))
  done <<< "$entries"
  for pkg in "$templates/packages"/*; do
    pkg="$(basename "$pkg")"
    grep -q "^$pkg/" "$blobs_yml" || die "package $pkg has no tarball in $lock_file for $suite"
  done
  # Blob dirs of packages no longer in the list.
  for stale in "$out/blobs"/*; do
    if [ -e "$stale" ] && [ ! -d "$out/packages/$(basename "$stale")" ]; then rm -rf "$stale"; fi
  done
  mv "$blobs_yml" "$out/config/blobs.yml"
  check_fingerprints
  say "$out ($count packages, $suite tarballs from $cache)"
}

case "${1:-}" in
  --print-lock)
    [ $# -eq 2 ] || die "usage: scripts/real-release.sh --print-lock SUITE"
    print_lock "$2"
    ;;
  -h | --help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    out="${1:-$repo/target/real-release}"
    main
    ;;
esac
