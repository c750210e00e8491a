//! The mounts of a sandbox: the overlay root (when asked), the standard kernel filesystems, then
//! the caller's bind mounts, parents before children. No tmpfs on /tmp: packaging scripts write
//! there and it lives in the overlay like everything else.

use oci_spec::runtime::{Mount, MountBuilder};

use super::host::HostContext;
use super::rootfs;
use super::runtime_spec::{strings, SpecError};
use super::types::{RootfsSpec, SandboxSpec};

pub fn mounts(spec: &SandboxSpec, host: &HostContext) -> Result<Vec<Mount>, SpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(strings(options))
            .build()
    };
    let mut mounts = Vec::new();
    if let RootfsSpec::Overlay { lower, scratch } = &spec.rootfs {
        mounts.push(rootfs::overlay_mount(lower, scratch, !host.is_root())?);
    }
    mounts.push(mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    )?);
    mounts.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    )?);
    let devpts: &[&str] = if host.is_root() || host.subordinate_ranges().is_some() {
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]
    } else {
        // gid 5 (tty) is not mapped in a single-id user namespace.
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ]
    };
    mounts.push(mount("/dev/pts", "devpts", "devpts", devpts)?);
    mounts.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    )?);
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    )?);
    if host.is_root() {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        // From a user namespace the kernel refuses a fresh sysfs while the host's /sys has
        // mounts on top of it ("mount too revealing"): bind the host's, read-only.
        mounts.push(mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    }
    let mut binds = spec.mounts.clone();
    binds.sort_by_key(|m| m.destination.components().count());
    for bind in binds {
        let access = if bind.readonly { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(bind.destination)
                .typ("bind")
                .source(bind.source)
                .options(strings(&["bind", "nosuid", "nodev", access]))
                .build()?,
        );
    }
    Ok(mounts)
}
