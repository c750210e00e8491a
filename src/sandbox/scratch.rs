//! A run's changes in memory: the tmpfs behind [`ScratchSpace::Tmpfs`].
//!
//! The helper mounts a tmpfs of the asked size at `scratch/tmpfs` in its own private mount
//! namespace; the container's mount namespace is copied from the helper's, so libcontainer finds
//! it there when it mounts the overlays whose upper and work dirs live on it (see
//! `rootfs::Changes`). Nobody else sees it, and it goes with the last process of the run however
//! the run ends: a whole build tree is freed without a single inode to delete on disk, and no
//! mount can be left behind. What it held when the command ended, and whether it was full, go
//! into the run's [`ScratchReport`], so a compile that ran out of room can be run again on disk.
//!
//! Why: every package's overlay upper and work dirs, its copy-on-write source mount and its
//! `/tmp` are made and later removed on disk otherwise; on this project's ext4 (no journal,
//! `discard`) those metadata operations are the larger part of a small package's cost
//! (docs/DECISIONS.md, "Build trees on a private tmpfs"). Compile-level figures (`-j 2`,
//! `scripts/bench/compile_ab.py`, BENCHMARKS.md): a 200-package chain of trivial packages took
//! 0.65x the wall time of the same build trees on disk (9.3 against 14.3 ms per package, 10
//! rounds); the 11-package real release, whose time is the compilers' CPU, 1.006x wall, 0.976x
//! summed package time and 0.973x CPU (2 rounds): no difference the noise of this shared machine
//! can resolve, so `auto` keeps the tmpfs.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::rootfs;
use super::types::ScratchReport;

#[derive(thiserror::Error, Debug)]
pub enum ScratchError {
    #[error("failed to create the tmpfs mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to mount a tmpfs of {size} bytes at {path}")]
    Mount {
        path: PathBuf,
        size: u64,
        #[source]
        source: nix::Error,
    },
    #[error("this kernel's tmpfs keeps no user.* extended attributes (Linux 6.6 and later do), which a rootless overlay needs for its upper dir")]
    NoUserXattrs,
}

/// A tmpfs held less than this much free space (or no free inode) when the command ended: it
/// was full, as far as the build is concerned.
fn nearly_full(size: u64) -> u64 {
    size / 100 + (1 << 20)
}

/// Mounts the run's tmpfs at `scratch/tmpfs`. The calling process must be alone in a private
/// mount namespace (the mount must reach neither the host nor other runs). Rootless, the
/// overlays will keep their metadata in `user.*` xattrs: checked here, so that a kernel whose
/// tmpfs has none is a clean fallback to disk rather than a container that cannot start.
pub fn mount_tmpfs(scratch: &Path, size: u64, rootless: bool) -> Result<(), ScratchError> {
    let dir = rootfs::tmpfs_dir(scratch);
    fs_err::create_dir_all(&dir).map_err(|source| ScratchError::MountPoint {
        path: dir.clone(),
        source,
    })?;
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={size},mode=0755").as_str()),
    )
    .map_err(|source| ScratchError::Mount {
        path: dir.clone(),
        size,
        source,
    })?;
    if rootless && !keeps_user_xattrs(&dir) {
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        return Err(ScratchError::NoUserXattrs);
    }
    Ok(())
}

fn keeps_user_xattrs(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let value = b"1";
    // SAFETY: a NUL-terminated path and name, and a value buffer, all outliving the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.fissile-oci.probe".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    rc == 0
}

/// What the tmpfs of a run holds now (called once its command has ended).
pub fn report(scratch: &Path, size: u64) -> ScratchReport {
    let mut report = ScratchReport {
        tmpfs: true,
        ..ScratchReport::default()
    };
    if let Ok(fs) = nix::sys::statfs::statfs(&rootfs::tmpfs_dir(scratch)) {
        let block = count(fs.block_size());
        let free = count(fs.blocks_available()) * block;
        report.used = count(fs.blocks()).saturating_sub(count(fs.blocks_free())) * block;
        report.full = free < nearly_full(size) || count(fs.files_free()) == 0;
    }
    report
}

/// statfs counts are signed or 32 bits wide on some targets.
fn count(n: impl TryInto<u64>) -> u64 {
    n.try_into().unwrap_or(0)
}
