//! The overlay root filesystem of a sandbox.
//!
//! The overlay is not mounted on the host: it is the first entry of the runtime spec's `mounts`,
//! on `/`, so libcontainer mounts it inside the container's own mount namespace (and, rootless,
//! inside its user namespace, where kernels since 5.11 allow overlayfs) on top of the empty
//! `scratch/merged` dir that serves as `root.path`; `pivot_root` then enters the overlay. One code
//! path for root and rootless, and nothing to unmount: the mount dies with the container's mount
//! namespace on every exit path, even when the helper is SIGKILLed. Mount points that
//! libcontainer creates (`/proc`, `/dev`, bind-mount destinations) are created through the
//! overlay, so they land in `upper/`, never in the shared lower dirs.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};

#[derive(thiserror::Error, Debug)]
pub enum RootfsError {
    #[error("failed to create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lower dir {path} is not a directory")]
    LowerDir { path: PathBuf },
    #[error("rootfs {path} is not a directory")]
    PlainDir { path: PathBuf },
}

/// Changes: what the sandbox wrote, deleted (whiteouts) or made opaque.
pub fn upper_dir(scratch: &Path) -> PathBuf {
    scratch.join("upper")
}

/// overlayfs's private work dir (same filesystem as `upper`).
pub fn work_dir(scratch: &Path) -> PathBuf {
    scratch.join("work")
}

/// An empty dir, the container's `root.path`; the overlay is mounted over it inside the
/// container only.
pub fn merged_dir(scratch: &Path) -> PathBuf {
    scratch.join("merged")
}

/// The overlay mount entry: `lowerdir` top first. Rootless, `userxattr` keeps overlay metadata
/// in `user.overlay.*` (an unprivileged mount cannot write `trusted.*`): opaque dirs are then
/// marked `user.overlay.opaque` instead of `trusted.overlay.opaque`.
pub fn overlay_mount(
    lower: &[PathBuf],
    scratch: &Path,
    rootless: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let lowerdir = lower
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut options = vec![
        format!("lowerdir={lowerdir}"),
        format!("upperdir={}", upper_dir(scratch).display()),
        format!("workdir={}", work_dir(scratch).display()),
    ];
    if std::env::var_os("FO_VOLATILE").is_some() {
        options.push("volatile".to_string());
    }
    if rootless {
        options.push("userxattr".to_string());
    }
    MountBuilder::default()
        .destination("/")
        .typ("overlay")
        .source("overlay")
        .options(options)
        .build()
}

/// Checks the lower dirs and creates `upper/`, `work/` and `merged/` under `scratch` (an
/// existing `upper/` is kept: a run may continue on the changes of an earlier one).
pub fn prepare_overlay(lower: &[PathBuf], scratch: &Path) -> Result<(), RootfsError> {
    for path in lower {
        if !path.is_dir() {
            return Err(RootfsError::LowerDir { path: path.clone() });
        }
    }
    for dir in [upper_dir(scratch), work_dir(scratch), merged_dir(scratch)] {
        std::fs::create_dir_all(&dir).map_err(|source| RootfsError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    // The top of the overlay shows upper's own mode: make `/` the usual 0755 and not whatever
    // umask gave the scratch dir.
    let upper = upper_dir(scratch);
    if let Some(mode) = lower
        .first()
        .and_then(|top| std::fs::metadata(top).ok())
        .map(|m| m.permissions().mode() & 0o7777)
    {
        let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

pub fn check_plain(dir: &Path) -> Result<(), RootfsError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(RootfsError::PlainDir {
            path: dir.to_path_buf(),
        })
    }
}

/// After a run: overlayfs leaves `work/work` with mode 000; rootless, its owner could not
/// remove the scratch dir without this.
pub fn finish_overlay(scratch: &Path) {
    let inner = work_dir(scratch).join("work");
    if inner.is_dir() {
        let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_name_every_dir() {
        let m = overlay_mount(&["/a".into(), "/b".into()], Path::new("/s"), true).unwrap();
        assert_eq!(m.destination(), Path::new("/"));
        assert_eq!(m.typ().as_deref(), Some("overlay"));
        assert_eq!(
            m.options().as_ref().unwrap(),
            &vec![
                "lowerdir=/a:/b".to_string(),
                "upperdir=/s/upper".to_string(),
                "workdir=/s/work".to_string(),
                "userxattr".to_string(),
            ]
        );
    }

    #[test]
    fn prepare_creates_scratch_dirs_and_rejects_missing_lower() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let scratch = tmp.path().join("scratch");
        assert!(prepare_overlay(std::slice::from_ref(&lower), &scratch).is_err());
        std::fs::create_dir(&lower).unwrap();
        prepare_overlay(std::slice::from_ref(&lower), &scratch).unwrap();
        for dir in ["upper", "work", "merged"] {
            assert!(scratch.join(dir).is_dir());
        }
    }
}
