//! The helper's private mount namespace, for the mounts only its run may see: the hidden cgroup
//! hierarchies of cgroup v1 hosts (`cgroup_v1`) and the run's tmpfs (`scratch`). Rootless, the
//! helper's user namespace came with a mount namespace of its own already (`userns`).

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Moves the calling (single-threaded) process to a mount namespace of its own. Slave, not
/// private: the host's later mounts still reach it, its own never reach the host.
pub fn enter_private() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
}
