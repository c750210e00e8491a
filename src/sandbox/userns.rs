//! Rootless mode: the helper moves itself into a user namespace of its own (the caller is root
//! inside; with `/etc/subuid` ranges and `newuidmap`, ids 1..=65535 map to them), plus a mount
//! and a cgroup namespace, before it asks libcontainer for a container. The container then
//! inherits that user namespace instead of asking libcontainer for one.
//!
//! Why not let libcontainer create the user namespace (a `user` entry in the spec)? Because
//! libcontainer 0.7's cgroup v1 manager has no rootless mode: it always creates
//! `/sys/fs/cgroup/<controller>/<path>` and fails with EACCES on a v1 or hybrid host. Its v2
//! manager does have one (permission errors mean "stay in the parent cgroup"). In our own mount
//! namespace we mount a cgroup2 filesystem (our cgroup namespace's view) on /sys/fs/cgroup, so
//! libcontainer sees a unified host and takes the v2 path. Limits are not applied rootless;
//! isolation is unchanged. The same private mount namespace lets overlayfs run unprivileged
//! (kernel >= 5.11), which the rootfs code relies on.

use std::io::{Read, Write};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::LinuxIdMapping;

use super::host::HostContext;
use super::runtime_spec::rootless_id_maps;

#[derive(thiserror::Error, Debug)]
pub enum UserNsError {
    #[error("failed to create a user namespace (are unprivileged user namespaces disabled? see /proc/sys/user/max_user_namespaces)")]
    Unshare(#[source] nix::Error),
    #[error("failed to write {path}")]
    WriteMap {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed for pid {pid}: {message}")]
    MapTool {
        tool: String,
        pid: i32,
        message: String,
    },
    #[error("failed to mount a cgroup2 filesystem on /sys/fs/cgroup in our mount namespace")]
    MountCgroup(#[source] nix::Error),
    #[error("failed to fork the id-mapping helper")]
    Fork(#[source] nix::Error),
    #[error("failed to create a socket pair")]
    Socket(#[source] std::io::Error),
}

/// Enters the rootless namespaces; afterwards this process is uid 0 with full capabilities in a
/// user namespace it owns. Must be called while single-threaded.
pub fn enter_rootless_namespaces(host: &HostContext) -> Result<(), UserNsError> {
    let (uid_maps, gid_maps) = rootless_id_maps(host);
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
    enter_user_namespace(flags, &uid_maps, &gid_maps)?;
    mount_cgroup2()
}

/// Moves this process into new namespaces (`flags` has `CLONE_NEWUSER`) whose uid and gid maps
/// are the given ones: written by ourselves for one id each, through `newuidmap`/`newgidmap`
/// otherwise. Afterwards this process has full capabilities in the new user namespace. Must be
/// called while single-threaded.
pub(crate) fn enter_user_namespace(
    flags: CloneFlags,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<(), UserNsError> {
    if uid_maps.len() == 1 && gid_maps.len() == 1 {
        // One id each: we may write our own maps, after giving up setgroups (CVE-2014-8989).
        nix::sched::unshare(flags).map_err(UserNsError::Unshare)?;
        write_file("/proc/self/setgroups", "deny")?;
        write_file("/proc/self/uid_map", &map_lines(uid_maps))?;
        write_file("/proc/self/gid_map", &map_lines(gid_maps))?;
        Ok(())
    } else {
        map_from_outside(flags, uid_maps, gid_maps)
    }
}

/// Ranges need the setuid `newuidmap`/`newgidmap`, run from outside the new namespace: a child
/// forked before `unshare` waits for the go-ahead, maps our pid, and reports back.
fn map_from_outside(
    flags: CloneFlags,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<(), UserNsError> {
    let target = Pid::this();
    let (mut go_rx, mut go_tx) =
        std::os::unix::net::UnixStream::pair().map_err(UserNsError::Socket)?;
    // SAFETY: single-threaded; the child runs two commands and exits without returning.
    match unsafe { nix::unistd::fork() }.map_err(UserNsError::Fork)? {
        ForkResult::Child => {
            drop(go_tx);
            let mut byte = [0u8];
            let mut report = String::new();
            if go_rx.read_exact(&mut byte).is_ok() {
                // Both at once: each is an exec of a setuid binary, milliseconds apiece.
                let running: Vec<_> = [("newuidmap", uid_maps), ("newgidmap", gid_maps)]
                    .into_iter()
                    .map(|(tool, maps)| (tool, spawn_map_tool(tool, target, maps)))
                    .collect();
                for (tool, child) in running {
                    if let Err(message) = finish_map_tool(child) {
                        if report.is_empty() {
                            report = format!("{tool}\n{message}");
                        }
                    }
                }
            }
            let _ = go_rx.write_all(report.as_bytes());
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(go_rx);
            let unshared = nix::sched::unshare(flags);
            let _ = go_tx.write_all(if unshared.is_ok() { b"1" } else { b"" });
            let _ = go_tx.shutdown(std::net::Shutdown::Write);
            let mut report = String::new();
            let _ = go_tx.read_to_string(&mut report);
            let _ = nix::sys::wait::waitpid(child, None);
            unshared.map_err(UserNsError::Unshare)?;
            if let Some((tool, message)) = report.split_once('\n') {
                return Err(UserNsError::MapTool {
                    tool: tool.to_string(),
                    pid: target.as_raw(),
                    message: message.to_string(),
                });
            }
            Ok(())
        }
    }
}

fn spawn_map_tool(
    tool: &str,
    pid: Pid,
    maps: &[LinuxIdMapping],
) -> std::io::Result<std::process::Child> {
    let mut command = std::process::Command::new(tool);
    command.arg(pid.to_string());
    for m in maps {
        command.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
}

fn finish_map_tool(child: std::io::Result<std::process::Child>) -> Result<(), String> {
    let output = child
        .and_then(|c| c.wait_with_output())
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

fn map_lines(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn write_file(path: &str, content: &str) -> Result<(), UserNsError> {
    fs_err::write(path, content).map_err(|source| UserNsError::WriteMap {
        path: path.to_string(),
        source,
    })
}

/// Makes /sys/fs/cgroup a cgroup2 filesystem in our mount namespace (see the module doc).
fn mount_cgroup2() -> Result<(), UserNsError> {
    let cgroup = Path::new("/sys/fs/cgroup");
    let is_cgroup2 = nix::sys::statfs::statfs(cgroup)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if is_cgroup2 {
        return Ok(());
    }
    nix::mount::mount(
        Some("cgroup2"),
        cgroup,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(UserNsError::MountCgroup)
}
