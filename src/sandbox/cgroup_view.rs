//! Narrows the helper's view of cgroup v1 hierarchies to the ones a sandbox uses.
//!
//! libcgroups' v1 manager puts a container in a new cgroup of *every* mounted hierarchy (cpu,
//! cpuacct, cpuset, blkio, ...), re-reading `/proc/self/mountinfo` and `/proc/self/cgroup`
//! through its safe procfs handle for each one, when the container is created and again when
//! it is deleted. A sandbox needs four of them: `pids` (the pids limit), `memory` (only with a
//! memory limit, also read for OOM reports), `freezer` (libcontainer freezes the cgroup to kill
//! it) and `devices` (the device rules, and where libcgroups lists a cgroup's processes). The
//! helper is a process of its own per container, so it moves to a private mount namespace and
//! detaches the other hierarchies there: the host's mounts are untouched, and container
//! creation and deletion skip the work (measured in `scripts/bench/sandbox.sh`).
//!
//! Only for root on a v1 or hybrid host; on a pure cgroup v2 host there is one hierarchy and
//! nothing to narrow, and rootless sandboxes use no cgroups.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 hierarchies a sandbox keeps: by the controller names a mount point lists.
fn keeps(controllers: &str, memory_limit: bool) -> bool {
    controllers.split(',').any(|controller| match controller {
        "pids" | "freezer" | "devices" => true,
        "memory" => memory_limit,
        _ => false,
    })
}

/// Moves the calling (single-threaded) process to a private mount namespace where only the
/// cgroup v1 hierarchies a sandbox uses stay mounted. A no-op where there is nothing to narrow.
/// On an error the process may be in the new namespace with everything still mounted, which is
/// only slower, never wrong.
pub fn narrow(memory_limit: bool) -> nix::Result<()> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return Ok(()); // cgroup v2 only
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let mut detach = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Co-mounted hierarchies appear as one dir ("cpu,cpuacct") plus symlinks to it.
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        let cgroup_v1 =
            path.join("cgroup.procs").exists() && !path.join("cgroup.controllers").exists();
        if cgroup_v1
            && !name.starts_with("name=")
            && name != "systemd"
            && !keeps(&name, memory_limit)
        {
            detach.push(path);
        }
    }
    if detach.is_empty() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Slave, not private: the host's later mounts still reach us, our unmounts never reach it.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    for path in detach {
        umount2(&path, MntFlags::MNT_DETACH)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::keeps;

    #[test]
    fn keeps_only_the_hierarchies_a_sandbox_uses() {
        assert!(keeps("pids", false));
        assert!(keeps("freezer", false));
        assert!(keeps("devices", false));
        assert!(!keeps("memory", false));
        assert!(keeps("memory", true));
        assert!(!keeps("cpu,cpuacct", true));
        assert!(!keeps("cpuset", true));
        assert!(!keeps("blkio", true));
        assert!(!keeps("net_cls,net_prio", true));
        assert!(
            keeps("cpu,pids", false),
            "a co-mount with a kept controller stays"
        );
    }
}
