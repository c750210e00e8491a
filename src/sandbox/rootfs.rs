//! The overlay root filesystem of a sandbox, its copy-on-write mounts, and where their changes
//! are kept.
//!
//! The overlay is not mounted on the host: it is the first entry of the runtime spec's `mounts`,
//! on `/`, so libcontainer mounts it inside the container's own mount namespace (and, rootless,
//! inside its user namespace, where kernels since 5.11 allow overlayfs) on top of the empty
//! `scratch/merged` dir that serves as `root.path`; `pivot_root` then enters the overlay. One code
//! path for root and rootless, and nothing to unmount: the mount dies with the container's mount
//! namespace on every exit path, even when the helper is SIGKILLed. Mount points that
//! libcontainer creates (`/proc`, `/dev`, bind-mount destinations) are created through the
//! overlay, so they land in the upper dir, never in the shared lower dirs. Copy-on-write mounts
//! ([`CopyOnWriteMount`]) are overlays of their own, mounted the same way.
//!
//! Every upper and work dir lives in one place, [`Changes`]: under the scratch dir on disk, or
//! on the run's private tmpfs (see `scratch`), mounted at `scratch/tmpfs` in the helper's
//! mount namespace only.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};

use super::types::{CopyOnWriteMount, ScratchSpace};
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

/// What the sandbox wrote, deleted (whiteouts) or made opaque, when its changes are on disk
/// (what a base build commits as a layer).
pub fn upper_dir(scratch: &Path) -> PathBuf {
    Changes::on_disk(scratch).upper()
}

/// An empty dir, the container's `root.path`; the overlay is mounted over it inside the
/// container only. Always on disk: it is a mount point, nothing is written to it.
pub fn merged_dir(scratch: &Path) -> PathBuf {
    scratch.join("merged")
}

/// Where the run's tmpfs is mounted (in the helper's mount namespace) when its changes are kept
/// in memory.
pub fn tmpfs_dir(scratch: &Path) -> PathBuf {
    scratch.join("tmpfs")
}

/// Where the upper and work dirs of a run's overlays are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    base: PathBuf,
}

impl Changes {
    /// Where the changes of a run on `scratch` go, given its scratch space.
    pub fn of(scratch: &Path, space: ScratchSpace) -> Changes {
        match space {
            ScratchSpace::Disk => Changes::on_disk(scratch),
            ScratchSpace::Tmpfs { .. } => Changes::on_tmpfs(scratch),
        }
    }

    pub fn on_disk(scratch: &Path) -> Changes {
        Changes {
            base: scratch.to_path_buf(),
        }
    }

    pub fn on_tmpfs(scratch: &Path) -> Changes {
        Changes {
            base: tmpfs_dir(scratch),
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.base.join("upper")
    }

    /// overlayfs's private work dir (same filesystem as the upper dir).
    pub fn work(&self) -> PathBuf {
        self.base.join("work")
    }

    /// The upper and work dirs of copy-on-write mount `index`.
    pub fn cow(&self, index: usize) -> (PathBuf, PathBuf) {
        let dir = self.base.join("cow").join(index.to_string());
        (dir.join("upper"), dir.join("work"))
    }

    /// Every work dir, the root's first.
    fn work_dirs(&self, cow_mounts: usize) -> impl Iterator<Item = PathBuf> + '_ {
        std::iter::once(self.work()).chain((0..cow_mounts).map(|i| self.cow(i).1))
    }
}

/// Mount options every overlay here gets. No syncs (`volatile`): without it, tearing the
/// overlay down at the end of every run syncs the whole upper filesystem (everyone's dirty
/// pages: 40-180 ms per run measured here during parallel builds); the changes are scratch, and
/// what a compile keeps is written to bind mounts and made durable by the store. No device
/// nodes and no set-uid programs. Rootless, `userxattr` keeps overlay metadata in
/// `user.overlay.*` (an unprivileged mount cannot write `trusted.*`): opaque dirs are then
/// marked `user.overlay.opaque` instead of `trusted.overlay.opaque`.
fn overlay_options(lowerdir: String, upper: &Path, work: &Path, rootless: bool) -> Vec<String> {
    let mut options = vec![
        format!("lowerdir={lowerdir}"),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
        "volatile".to_string(),
        "nodev".to_string(),
        "nosuid".to_string(),
    ];
    if rootless {
        options.push("userxattr".to_string());
    }
    options
}

/// The overlay root's mount entry: `lowerdir` top first.
pub fn overlay_mount(
    lower: &[PathBuf],
    changes: &Changes,
    rootless: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let lowerdir = lower
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    MountBuilder::default()
        .destination("/")
        .typ("overlay")
        .source("overlay")
        .options(overlay_options(
            lowerdir,
            &changes.upper(),
            &changes.work(),
            rootless,
        ))
        .build()
}

/// The mount entry of copy-on-write mount `index`.
pub fn cow_mount(
    mount: &CopyOnWriteMount,
    index: usize,
    changes: &Changes,
    rootless: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let (upper, work) = changes.cow(index);
    MountBuilder::default()
        .destination(mount.destination.clone())
        .typ("overlay")
        .source("overlay")
        .options(overlay_options(
            mount.source.to_string_lossy().into_owned(),
            &upper,
            &work,
            rootless,
        ))
        .build()
}

/// Checks the lower dirs and the copy-on-write sources, and makes `merged/` under `scratch` and
/// every upper and work dir under `changes`. Existing upper dirs are kept (a run may go on from
/// the changes of an earlier one: `run --scratch`, `shell` on a kept compile); a work dir an
/// earlier run left is emptied, since the kernel refuses to mount a `volatile` overlay's work
/// dir again while it holds the marker of the last mount.
pub fn prepare_overlay(
    lower: &[PathBuf],
    cow_mounts: &[CopyOnWriteMount],
    scratch: &Path,
    changes: &Changes,
) -> Result<(), RootfsError> {
    for path in lower.iter().chain(cow_mounts.iter().map(|m| &m.source)) {
        if !path.is_dir() {
            return Err(RootfsError::LowerNotDir { path: path.clone() });
        }
    }
    let create = |dir: PathBuf| {
        fs_err::create_dir_all(&dir).map_err(|source| RootfsError::Create { path: dir, source })
    };
    create(merged_dir(scratch))?;
    create(changes.upper())?;
    for index in 0..cow_mounts.len() {
        create(changes.cow(index).0)?;
    }
    for work in changes.work_dirs(cow_mounts.len()) {
        // A file or symlink where the dir belongs is removed itself, never followed.
        let stale = match fs_err::symlink_metadata(&work) {
            Ok(meta) if meta.is_dir() => {
                fs_err::read_dir(&work).is_ok_and(|mut entries| entries.next().is_some())
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if stale {
            remove_tree(&work).map_err(|source| RootfsError::Create {
                path: work.clone(),
                source,
            })?;
        }
        create(work)?;
    }
    // The top of the overlay shows upper's own mode: make `/` the usual 0755 and not whatever
    // umask gave the scratch dir. The same for each copy-on-write mount and its source.
    let tops = std::iter::once((lower.first(), changes.upper())).chain(
        cow_mounts
            .iter()
            .enumerate()
            .map(|(i, m)| (Some(&m.source), changes.cow(i).0)),
    );
    for (top, upper) in tops {
        if let Some(mode) = top
            .and_then(|top| fs_err::metadata(top).ok())
            .map(|m| m.permissions().mode() & 0o7777)
        {
            let _ = fs_err::set_permissions(&upper, std::fs::Permissions::from_mode(mode));
        }
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

/// The dirs overlayfs leaves in a `volatile` mount's work dir with mode 000, outermost first.
const LOCKED_DIRS: [&str; 3] = ["work", "work/incompat", "work/incompat/volatile"];

/// After a run: opens up the mode-000 dirs overlayfs made in each work dir, so that the owner
/// of the scratch dir (a rootless user, or a person after `--keep-sandbox`) can remove it.
pub fn finish_overlay(changes: &Changes, cow_mounts: usize) {
    for work in changes.work_dirs(cow_mounts) {
        for dir in LOCKED_DIRS {
            let _ = fs_err::set_permissions(work.join(dir), std::fs::Permissions::from_mode(0o700));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_name_every_dir_and_forbid_devices_and_set_uid() {
        let m = overlay_mount(
            &["/a".into(), "/b".into()],
            &Changes::on_disk(Path::new("/s")),
            true,
        )
        .unwrap();
        assert_eq!(m.destination(), Path::new("/"));
        assert_eq!(m.typ().as_deref(), Some("overlay"));
        assert_eq!(
            m.options().as_ref().unwrap(),
            &[
                "lowerdir=/a:/b",
                "upperdir=/s/upper",
                "workdir=/s/work",
                "volatile",
                "nodev",
                "nosuid",
                "userxattr",
            ]
        );
        let cow = CopyOnWriteMount {
            source: "/src".into(),
            destination: "/var/vcap/source/p".into(),
        };
        let m = cow_mount(&cow, 1, &Changes::on_tmpfs(Path::new("/s")), false).unwrap();
        assert_eq!(m.destination(), Path::new("/var/vcap/source/p"));
        assert_eq!(
            m.options().as_ref().unwrap(),
            &[
                "lowerdir=/src",
                "upperdir=/s/tmpfs/cow/1/upper",
                "workdir=/s/tmpfs/cow/1/work",
                "volatile",
                "nodev",
                "nosuid",
            ]
        );
    }

    /// What a `volatile` overlay mount leaves in a work dir, modes as the kernel sets them.
    fn leave_volatile_marker(work: &Path) {
        let volatile = work.join("work/incompat/volatile");
        std::fs::create_dir_all(&volatile).unwrap();
        std::fs::write(volatile.join("dirty"), "").unwrap();
        for dir in LOCKED_DIRS.iter().rev() {
            std::fs::set_permissions(work.join(dir), std::fs::Permissions::from_mode(0o000))
                .unwrap();
        }
    }

    #[test]
    fn finish_leaves_work_dirs_their_owner_can_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let changes = Changes::on_disk(tmp.path());
        leave_volatile_marker(&changes.work());
        leave_volatile_marker(&changes.cow(0).1);
        finish_overlay(&changes, 1);
        for work in [changes.work(), changes.cow(0).1] {
            for dir in LOCKED_DIRS {
                let mode = std::fs::metadata(work.join(dir)).unwrap().permissions();
                assert_eq!(mode.mode() & 0o777, 0o700, "{dir}");
            }
        }
    }

    #[test]
    fn prepare_makes_every_dir_keeps_upper_and_empties_used_work_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let source = tmp.path().join("source");
        let scratch = tmp.path().join("scratch");
        let cow = [CopyOnWriteMount {
            source: source.clone(),
            destination: "/src".into(),
        }];
        let changes = Changes::on_disk(&scratch);
        assert!(prepare_overlay(std::slice::from_ref(&lower), &[], &scratch, &changes).is_err());
        std::fs::create_dir(&lower).unwrap();
        assert!(matches!(
            prepare_overlay(std::slice::from_ref(&lower), &cow, &scratch, &changes),
            Err(RootfsError::LowerNotDir { path }) if path == source
        ));
        std::fs::create_dir(&source).unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o750)).unwrap();
        prepare_overlay(std::slice::from_ref(&lower), &cow, &scratch, &changes).unwrap();
        for dir in ["upper", "work", "merged", "cow/0/upper", "cow/0/work"] {
            assert!(scratch.join(dir).is_dir(), "{dir}");
        }
        let mode = std::fs::metadata(changes.cow(0).0).unwrap().permissions();
        assert_eq!(
            mode.mode() & 0o777,
            0o750,
            "the cow upper takes its source's mode"
        );

        // A second run on the same scratch dir: changes stay, used work dirs are emptied.
        std::fs::write(changes.upper().join("kept"), "x").unwrap();
        leave_volatile_marker(&changes.work());
        leave_volatile_marker(&changes.cow(0).1);
        prepare_overlay(std::slice::from_ref(&lower), &cow, &scratch, &changes).unwrap();
        assert!(changes.upper().join("kept").is_file());
        for work in [changes.work(), changes.cow(0).1] {
            assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "{work:?}");
        }
    }

    #[test]
    fn a_file_or_symlink_in_place_of_a_work_dir_is_replaced_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let outside = tmp.path().join("outside");
        let scratch = tmp.path().join("scratch");
        for dir in [&lower, &outside, &scratch] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(outside.join("precious"), "x").unwrap();
        let changes = Changes::on_disk(&scratch);
        std::os::unix::fs::symlink(&outside, changes.work()).unwrap();
        prepare_overlay(std::slice::from_ref(&lower), &[], &scratch, &changes).unwrap();
        assert!(std::fs::symlink_metadata(changes.work()).unwrap().is_dir());
        assert!(
            outside.join("precious").is_file(),
            "the target is untouched"
        );
    }
}
