//! The mounts of a sandbox: the overlay root (when asked), the standard kernel filesystems, then
//! the caller's bind and copy-on-write mounts, parents before children. No tmpfs on /tmp:
//! packaging scripts write there and it lives in the overlay like everything else (in the run's
//! scratch space, a tmpfs when a compile asks for one).

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
    let changes = match &spec.rootfs {
        RootfsSpec::Overlay { lower, scratch } => {
            let changes = rootfs::Changes::of(scratch, spec.scratch_space);
            mounts.push(rootfs::overlay_mount(lower, &changes, !host.is_root())?);
            Some(changes)
        }
        RootfsSpec::Plain { .. } => None,
    };
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
    let mut own = Vec::new();
    for bind in &spec.mounts {
        let access = if bind.readonly { "ro" } else { "rw" };
        own.push(
            MountBuilder::default()
                .destination(bind.destination.clone())
                .typ("bind")
                .source(bind.source.clone())
                .options(strings(&["bind", "nosuid", "nodev", access]))
                .build()?,
        );
    }
    if let Some(changes) = &changes {
        for (index, cow) in spec.cow_mounts.iter().enumerate() {
            own.push(rootfs::cow_mount(cow, index, changes, !host.is_root())?);
        }
    }
    // Parents before children; a stable sort keeps the caller's order otherwise.
    own.sort_by_key(|m| m.destination().components().count());
    mounts.extend(own);
    Ok(mounts)
}
