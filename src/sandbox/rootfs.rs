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

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::runtime::{Mount, MountBuilder};

use super::side_job;
use crate::workdir::remove_tree;

#[derive(thiserror::Error, Debug)]
pub enum RootfsError {
    #[error("failed to create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lower dir {path} is not a directory")]
    LowerNotDir { path: PathBuf },
    #[error("rootfs {path} is not a directory")]
    PlainNotDir { path: PathBuf },
}

/// Changes: what the sandbox wrote, deleted (whiteouts) or made opaque.
pub fn upper_dir(scratch: &Path) -> PathBuf {
    scratch.join("upper")
}

/// overlayfs's private work dir (same filesystem as `upper`).
pub fn overlay_work_dir(scratch: &Path) -> PathBuf {
    scratch.join("work")
}

/// An empty dir, the container's `root.path`; the overlay is mounted over it inside the
/// container only.
pub fn merged_dir(scratch: &Path) -> PathBuf {
    scratch.join("merged")
}

/// The overlay mount entry: `lowerdir` top first, `volatile`. Rootless, `userxattr` keeps
/// overlay metadata in `user.overlay.*` (an unprivileged mount cannot write `trusted.*`): opaque
/// dirs are then marked `user.overlay.opaque` instead of `trusted.overlay.opaque`.
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
        format!("workdir={}", overlay_work_dir(scratch).display()),
    ];
    // No syncs: without `volatile`, tearing the overlay down at the end of every run syncs the
    // whole upper filesystem (everyone's dirty pages: 40-180 ms per run measured here during
    // parallel builds). The upper dir is scratch; what a compile keeps is written to bind mounts
    // and made durable by the store.
    options.push("volatile".to_string());
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
/// existing `upper/` is kept: a run may continue on the changes of an earlier one). A work dir
/// used before also needs a [`OverlayWorkReset`].
pub fn prepare_overlay(lower: &[PathBuf], scratch: &Path) -> Result<(), RootfsError> {
    for path in lower {
        if !path.is_dir() {
            return Err(RootfsError::LowerNotDir { path: path.clone() });
        }
    }
    for dir in [
        upper_dir(scratch),
        overlay_work_dir(scratch),
        merged_dir(scratch),
    ] {
        fs_err::create_dir_all(&dir).map_err(|source| RootfsError::Create {
            path: dir.clone(),
            source,
        })?;
    }
    // The top of the overlay shows upper's own mode: make `/` the usual 0755 and not whatever
    // umask gave the scratch dir.
    let upper = upper_dir(scratch);
    if let Some(mode) = lower
        .first()
        .and_then(|top| fs_err::metadata(top).ok())
        .map(|m| m.permissions().mode() & 0o7777)
    {
        let _ = fs_err::set_permissions(&upper, std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

pub fn check_plain(dir: &Path) -> Result<(), RootfsError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(RootfsError::PlainNotDir {
            path: dir.to_path_buf(),
        })
    }
}

/// The dirs overlayfs leaves in `scratch/work` with mode 000, outermost first.
const LOCKED_DIRS: [&str; 3] = ["work", "work/incompat", "work/incompat/volatile"];

/// What a `volatile` mount leaves behind, deepest first, `work/work` included, each with
/// whether it is a dir: the kernel refuses to mount the work dir again while `work/incompat`
/// has entries, and would otherwise remove and remake `work/work` itself, inside the
/// container's start-up.
const LEFTOVERS: [(&str, bool); 4] = [
    ("work/incompat/volatile/dirty", false),
    ("work/incompat/volatile", true),
    ("work/incompat", true),
    ("work", true),
];

/// Where the reset moves an earlier run's work dir, next to it, to be removed off the critical
/// path.
const MOVED_ASIDE: &str = "work.old";

/// After a run: keeps the overlay's work dir for the next run on this scratch dir, whose
/// [`OverlayWorkReset`] clears it off the critical path (removing it here cost more than all the
/// rest of the clean-up where the filesystem discards freed blocks at once), but opens up the
/// mode-000 dirs overlayfs made in it, so that the owner of the scratch dir can `rm -r` it.
pub fn finish_overlay(scratch: &Path) {
    let work = overlay_work_dir(scratch);
    for dir in LOCKED_DIRS {
        let _ = fs_err::set_permissions(work.join(dir), std::fs::Permissions::from_mode(0o700));
    }
}

/// Makes `scratch/work` mountable again. [`Self::reset_in_side_job`] moves an earlier run's
/// work dir aside (a rename frees no blocks, so nothing waits for a discard) and makes an empty
/// one; [`Self::clear_in_side_job`] then removes the moved-aside dir while the container is
/// built. Should anything get in the way (`work.old` still there because a run was killed
/// before clearing it, or unexpected entries in it), [`Self::finish`] removes both dirs whole
/// and makes `work` anew.
pub struct OverlayWorkReset {
    scratch: PathBuf,
    /// `None` if a path has a NUL byte.
    paths: Option<ResetPaths>,
    /// The reset moved the old work dir aside and succeeded, so the tail has it to remove.
    /// Otherwise `finish` removes whatever is there, and the tail must not race it.
    moved_aside: AtomicBool,
}

struct ResetPaths {
    work: CString,
    moved_aside: CString,
    /// [`LEFTOVERS`] under `work.old`.
    aside: [CString; 4],
}

impl OverlayWorkReset {
    pub fn new(scratch: &Path) -> OverlayWorkReset {
        let c_string = |path: PathBuf| CString::new(path.into_os_string().into_vec()).ok();
        let moved_aside = scratch.join(MOVED_ASIDE);
        let paths = (|| {
            let [a, b, c, d] = LEFTOVERS.map(|(entry, _)| c_string(moved_aside.join(entry)));
            Some(ResetPaths {
                aside: [a?, b?, c?, d?],
                work: c_string(overlay_work_dir(scratch))?,
                moved_aside: c_string(moved_aside)?,
            })
        })();
        OverlayWorkReset {
            scratch: scratch.to_path_buf(),
            paths,
            moved_aside: AtomicBool::new(false),
        }
    }

    /// Side-job part (through [`side_job::sys`] only): 0, or `-errno` of the first step that
    /// failed for another reason than its entry not being there.
    pub fn reset_in_side_job(&self) -> i32 {
        let Some(paths) = &self.paths else {
            return -libc::EINVAL;
        };
        match side_job::sys::rename(&paths.work, &paths.moved_aside) {
            0 => {}
            // Nothing to reset; prepare_overlay makes `work`.
            err if err == -libc::ENOENT => return 0,
            // Such as `work.old` still being there: for `finish`.
            err => return err,
        }
        // Made while prepare_overlay may be making it too.
        match side_job::sys::mkdir(&paths.work, 0o755) {
            made if made == 0 || made == -libc::EEXIST => {
                self.moved_aside.store(true, Ordering::Relaxed);
                0
            }
            err => err,
        }
    }

    /// Side-job tail (through [`side_job::sys`] only): removes what the reset moved aside,
    /// unless something unexpected is in it (then it waits for a [`Self::finish`]).
    pub fn clear_in_side_job(&self) {
        let Some(paths) = &self.paths else {
            return;
        };
        if !self.moved_aside.load(Ordering::Relaxed) {
            return;
        }
        // What was moved aside may be a file or a symlink where a dir belonged: unlinked
        // itself, never followed.
        if side_job::sys::remove(&paths.moved_aside, false) == -libc::EISDIR
            && remove_leftovers(&paths.aside) == 0
        {
            side_job::sys::remove(&paths.moved_aside, true);
        }
    }

    /// Given what [`Self::reset_in_side_job`] returned (or `None` if it did not run): removes
    /// and remakes the whole work dir unless it succeeded.
    pub fn finish(&self, reset: Option<i32>) -> Result<(), RootfsError> {
        if reset == Some(0) {
            return Ok(());
        }
        let work = overlay_work_dir(&self.scratch);
        // Files or symlinks where these dirs belong are removed themselves, never followed.
        let _ = remove_tree(&self.scratch.join(MOVED_ASIDE));
        remove_tree(&work)
            .and_then(|()| fs_err::create_dir_all(&work))
            .map_err(|source| RootfsError::Create { path: work, source })
    }
}

/// Removes [`LEFTOVERS`] (given under one dir), through [`side_job::sys`]: 0, or the `-errno`
/// of the first removal that failed for another reason than the entry not being there.
fn remove_leftovers(leftovers: &[CString; 4]) -> i32 {
    for (path, (_, dir)) in leftovers.iter().zip(LEFTOVERS) {
        let removed = side_job::sys::remove(path, dir);
        if removed < 0 && removed != -libc::ENOENT {
            return removed;
        }
    }
    0
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
                "volatile".to_string(),
                "userxattr".to_string(),
            ]
        );
    }

    /// Runs a work dir reset as the helper does, its side-job parts in a side job.
    fn reset(scratch: &Path) {
        let reset = OverlayWorkReset::new(scratch);
        let reset_ref = &reset;
        let [result] = side_job::start(
            false,
            || [reset_ref.reset_in_side_job()],
            || reset_ref.clear_in_side_job(),
        )
        .unwrap()
        .wait()
        .unwrap();
        reset.finish(Some(result)).unwrap();
    }

    /// What a `volatile` overlay mount leaves in `scratch/work`, modes as the kernel sets them.
    fn leave_volatile_marker(scratch: &Path) -> PathBuf {
        let volatile = overlay_work_dir(scratch).join("work/incompat/volatile");
        std::fs::create_dir_all(&volatile).unwrap();
        std::fs::write(volatile.join("dirty"), "").unwrap();
        for dir in LOCKED_DIRS.iter().rev() {
            let path = overlay_work_dir(scratch).join(dir);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        volatile
    }

    #[test]
    fn finish_leaves_an_overlay_work_dir_its_owner_can_remove() {
        let tmp = tempfile::tempdir().unwrap();
        leave_volatile_marker(tmp.path());
        finish_overlay(tmp.path());
        for dir in LOCKED_DIRS {
            let mode = std::fs::metadata(overlay_work_dir(tmp.path()).join(dir))
                .unwrap()
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o700, "{dir}");
        }
    }

    #[test]
    fn reset_removes_what_a_volatile_mount_left_and_leaves_an_empty_overlay_work_dir() {
        let tmp = tempfile::tempdir().unwrap();
        leave_volatile_marker(tmp.path());
        reset(tmp.path());
        let work = overlay_work_dir(tmp.path());
        assert!(work.is_dir(), "work is there");
        assert_eq!(
            std::fs::read_dir(&work).unwrap().count(),
            0,
            "work is empty"
        );
        assert!(
            !tmp.path().join(MOVED_ASIDE).exists(),
            "work.old is cleared"
        );
    }

    #[test]
    fn a_moved_aside_dir_with_unexpected_content_is_removed_by_the_next_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let stray = overlay_work_dir(tmp.path()).join("work/incompat/other-feature");
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::set_permissions(
            stray.parent().unwrap(),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        reset(tmp.path());
        assert!(overlay_work_dir(tmp.path()).is_dir());
        assert!(!overlay_work_dir(tmp.path()).join("work").exists());
        assert!(
            tmp.path().join(MOVED_ASIDE).exists(),
            "the tail leaves what it does not know"
        );

        leave_volatile_marker(tmp.path());
        reset(tmp.path());
        assert!(!tmp.path().join(MOVED_ASIDE).exists());
        assert!(overlay_work_dir(tmp.path()).is_dir());
        assert_eq!(
            std::fs::read_dir(overlay_work_dir(tmp.path()))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn reset_replaces_a_file_or_symlink_in_place_of_the_dirs_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        std::os::unix::fs::symlink(&outside, overlay_work_dir(&scratch)).unwrap();
        std::fs::write(scratch.join(MOVED_ASIDE), "not a dir").unwrap();
        reset(&scratch);
        assert!(std::fs::symlink_metadata(overlay_work_dir(&scratch))
            .unwrap()
            .is_dir());
        assert!(std::fs::symlink_metadata(scratch.join(MOVED_ASIDE)).is_err());
        let mode = std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "the symlink's target is untouched");
    }

    #[test]
    fn reset_of_a_fresh_scratch_dir_is_a_no_op() {
        let tmp = tempfile::tempdir().unwrap();
        reset(tmp.path());
        // Nothing to remove is success; making `work/` is prepare_overlay's part.
        assert!(!overlay_work_dir(tmp.path()).exists());
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
