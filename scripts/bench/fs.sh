# Sourced by the bench scripts: what the file systems they measure on are.
# shellcheck shell=bash

# "PATH (TYPE[, journaled|, NO journal][, discard])" for the file system holding PATH (or its
# nearest existing parent). Of stacked mounts, the first is reported. `discard` matters: such a
# file system discards freed blocks as they are freed (on journal-less ext4 synchronously, so
# every removed dir waits for the device).
fsinfo() {
  local path=$1 type src dev journal="" discard=""
  while [[ ! -e $path ]]; do path=$(dirname "$path"); done
  type=$(findmnt -n -f -o FSTYPE -T "$path" 2>/dev/null || stat -f -c %T "$path")
  src=$(findmnt -n -f -o SOURCE -T "$path" 2>/dev/null || true)
  dev=$(basename "$src")
  if [[ $type == ext4 && -r /sys/fs/ext4/$dev/journal_task ]]; then
    [[ $(cat "/sys/fs/ext4/$dev/journal_task") == "<none>" ]] && journal=", NO journal" || journal=", journaled"
  fi
  if findmnt -n -f -o OPTIONS -T "$path" 2>/dev/null | tr ',' '\n' | grep -qx discard; then
    discard=", discard"
  fi
  printf '%s (%s%s%s)' "$path" "$type" "$journal" "$discard"
}

# Where fissile-oci keeps container state as root (src/sandbox/state.rs).
default_runtime_root() {
  echo /run/fissile-oci/sandbox
}
