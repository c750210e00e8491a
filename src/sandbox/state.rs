//! Where containers keep their state, and how a crashed run's leftovers are recognised.
//!
//! ```text
//! RUNTIME_ROOT/state/<id>/          libcontainer's state dir (state.json, notify socket)
//! RUNTIME_ROOT/bundles/<id>/        config.json and `owner`
//! RUNTIME_ROOT/seccomp-<hash>.bpf   the compiled seccomp filter (see `seccomp`)
//! ```
//! `owner` holds the helper's pid (for people) and an exclusive `flock` for the helper's whole
//! life (for programs): the kernel drops the lock when the helper dies, however it dies, so a
//! bundle whose `owner` can be locked belongs to a dead helper and its container is stale. The
//! lock is taken before the file gets its name, so a scan never sees an unlocked live owner.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(thiserror::Error, Debug)]
pub enum StateError {
    #[error("failed to create runtime dir {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("runtime dir {path} is not ours (owner uid {owner}, we are {uid}); set another runtime root")]
    NotOurs { path: PathBuf, owner: u32, uid: u32 },
    #[error("runtime dir {root} is not private: {path} {why}, so another user could replace the container state or the seccomp filter kept there; point XDG_RUNTIME_DIR (or run's --runtime-root) at a dir only you can write")]
    NotPrivate {
        root: PathBuf,
        path: PathBuf,
        why: String,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// The default runtime root: `/run/fissile-oci/sandbox` as root, else
/// `$XDG_RUNTIME_DIR/fissile-oci/sandbox`, else `/tmp/fissile-oci-<uid>/sandbox` as long as
/// `/tmp/fissile-oci-<uid>` is a private dir of ours (another user may have made it first;
/// [`RuntimeDirs::open`] then refuses it). Whether it is a tmpfs does not matter on a compile:
/// a runtime root on this machine's ext4 (with `discard`) instead of a tmpfs gave 1.000x the
/// wall time of a 200-package chain (docs/DECISIONS.md, "Runtime root on a tmpfs").
pub fn default_runtime_root() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/fissile-oci/sandbox");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
    {
        return dir.join("fissile-oci/sandbox");
    }
    let dir = Path::new("/tmp").join(format!("fissile-oci-{uid}"));
    // Made private when missing; refused when taken, by RuntimeDirs::open.
    private_dir(&dir);
    dir.join("sandbox")
}

/// Makes `dir` (mode 0700) in a world-writable dir, or checks that the one already there is a
/// real directory of ours that nobody else can enter: another user could have made it first.
fn private_dir(dir: &Path) -> bool {
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    let Ok(meta) = fs_err::symlink_metadata(dir) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
}

/// A runtime root with its `state/` and `bundles/` dirs.
#[derive(Clone, Debug)]
pub struct RuntimeDirs {
    root: PathBuf,
}

impl RuntimeDirs {
    /// Creates the dirs (mode 0700) and checks that nobody else can change what is in them
    /// ([`check_private`]): under /tmp another user could have made the root, or a dir above
    /// it, first.
    pub fn open(root: &Path) -> Result<RuntimeDirs, StateError> {
        let dirs = RuntimeDirs {
            root: root.to_path_buf(),
        };
        for dir in [dirs.state_root(), dirs.bundles_root()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| StateError::CreateDir {
                    path: dir.clone(),
                    source,
                })?;
        }
        let uid = nix::unistd::geteuid().as_raw();
        let owner =
            std::os::unix::fs::MetadataExt::uid(&fs_err::metadata(root).map_err(|source| {
                StateError::CreateDir {
                    path: root.to_path_buf(),
                    source,
                }
            })?);
        if owner != uid {
            return Err(StateError::NotOurs {
                path: root.to_path_buf(),
                owner,
                uid,
            });
        }
        check_private(root, uid)?;
        Ok(dirs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// libcontainer's root path: one `<id>/` dir per container.
    pub fn state_root(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn bundles_root(&self) -> PathBuf {
        self.root.join("bundles")
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.bundles_root().join(id)
    }

    pub fn container_state_dir(&self, id: &str) -> PathBuf {
        self.state_root().join(id)
    }
}

/// Checks that only `uid` (and root) can change what is under `root`: `root` must be a
/// directory of `uid` that nobody else may write to, and every directory above it (the real
/// path, and any symlink on the way) must belong to `uid` or root and, where others may write to
/// it, be sticky, so that they cannot rename or remove our entries in it (as in /tmp).
pub fn check_private(root: &Path, uid: u32) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |path: &Path, why: String| StateError::NotPrivate {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        why,
    };
    let trusted = |owner: u32| owner == uid || owner == 0;
    // Symlinks on the way as written: each must be ours or root's.
    for path in root.ancestors() {
        if let Ok(meta) = fs_err::symlink_metadata(path) {
            if meta.file_type().is_symlink() && !trusted(meta.uid()) {
                return Err(refuse(path, format!("is a symlink of uid {}", meta.uid())));
            }
        }
    }
    let real = fs_err::canonicalize(root).map_err(|source| StateError::CreateDir {
        path: root.to_path_buf(),
        source,
    })?;
    for (depth, path) in real.ancestors().enumerate() {
        let meta = fs_err::symlink_metadata(path).map_err(|source| StateError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        let (owner, mode) = (meta.uid(), meta.mode());
        if depth == 0 {
            if owner != uid {
                return Err(refuse(path, format!("belongs to uid {owner}")));
            }
            if mode & 0o022 != 0 {
                return Err(refuse(
                    path,
                    format!("is writable by others (mode {:o})", mode & 0o7777),
                ));
            }
            continue;
        }
        if !trusted(owner) {
            return Err(refuse(path, format!("belongs to uid {owner}")));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refuse(
                path,
                format!(
                    "is writable by others and not sticky (mode {:o})",
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// A unique container id: our pid, the time, and a per-process counter.
pub fn new_container_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("fissile-{}-{:x}-{n}", std::process::id(), nanos)
}

/// A bundle dir we hold the `owner` lock of: our own live one, or a stale one being cleaned.
pub struct Claim {
    pub id: String,
    pub bundle: PathBuf,
    _lock: Flock<File>,
}

impl Claim {
    /// Creates the bundle dir for a new container and locks it for this process's life.
    pub fn create(dirs: &RuntimeDirs, id: &str) -> Result<Claim, StateError> {
        let bundle = dirs.bundle_dir(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&bundle)
            .map_err(|source| StateError::CreateDir {
                path: bundle.clone(),
                source,
            })?;
        let pending = bundle.join("owner.pending");
        let write_err = |source| StateError::Write {
            path: pending.clone(),
            source,
        };
        // nix's Flock takes a std File.
        let file = fs_err::File::create(&pending)
            .map_err(write_err)?
            .into_file();
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            StateError::Lock {
                path: pending.clone(),
                source: e,
            }
        })?;
        writeln!(lock, "{}", std::process::id()).map_err(write_err)?;
        fs_err::rename(&pending, bundle.join("owner")).map_err(write_err)?;
        Ok(Claim {
            id: id.to_string(),
            bundle,
            _lock: lock,
        })
    }

    /// Removes the bundle dir (the lock goes with the claim).
    pub fn release(self) {
        let _ = fs_err::remove_dir_all(&self.bundle);
    }
}

/// Bundles whose owner is dead, locked for cleaning (a concurrent scan skips them).
pub fn stale_claims(dirs: &RuntimeDirs) -> Vec<Claim> {
    let Ok(entries) = fs_err::read_dir(dirs.bundles_root()) else {
        return Vec::new();
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let bundle = entry.path();
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let owner = bundle.join("owner");
        let Ok(file) = fs_err::File::open(&owner).map(fs_err::File::into_file) else {
            // Still being created, or its creator died before naming `owner`: only old ones.
            if is_older_than(&bundle, std::time::Duration::from_secs(60)) {
                let _ = fs_err::remove_dir_all(&bundle);
            }
            continue;
        };
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            stale.push(Claim {
                id,
                bundle,
                _lock: lock,
            });
        }
    }
    stale
}

fn is_older_than(path: &Path, age: std::time::Duration) -> bool {
    fs_err::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Makes a file readable only by us (bundle config.json may hold env secrets).
pub fn restrict(path: &Path) {
    let _ = fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_must_be_a_real_dir_of_ours_closed_to_others() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("fresh");
        assert!(private_dir(&fresh));
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(private_dir(&fresh), "ours already: reused");

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!private_dir(&open), "others can enter it");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(!private_dir(&link), "a symlink could point anywhere");
    }

    /// Runs `check_private` on `root` as `uid` and says whether it accepted.
    fn private(root: &Path, uid: u32) -> Result<(), String> {
        check_private(root, uid).map_err(|e| e.to_string())
    }

    #[test]
    fn a_runtime_root_must_be_ours_under_dirs_nobody_else_can_rearrange() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let parent = tmp.path().join("parent");
        let root = parent.join("root");
        std::fs::create_dir_all(&root).unwrap();
        mode(&root, 0o700);
        mode(&parent, 0o755);
        private(&root, me).unwrap();

        // A parent others may write to: they could move our root away and put theirs.
        mode(&parent, 0o777);
        let err = private(&root, me).unwrap_err();
        assert!(err.contains("not sticky"), "{err}");
        // Sticky, as /tmp is: they cannot touch our entries.
        mode(&parent, 0o1777);
        private(&root, me).unwrap();
        mode(&parent, 0o755);

        // A root others may write to.
        mode(&root, 0o770);
        assert!(private(&root, me)
            .unwrap_err()
            .contains("writable by others"));
        mode(&root, 0o700);

        // Another user's dirs: the root, or a dir above it.
        let other = me.wrapping_add(4242);
        assert!(private(&root, other)
            .unwrap_err()
            .contains("belongs to uid"));
        if me == 0 {
            std::os::unix::fs::chown(&parent, Some(65534), None).unwrap();
            let err = private(&root, me).unwrap_err();
            assert!(err.contains("belongs to uid 65534"), "{err}");
            std::os::unix::fs::chown(&parent, Some(0), None).unwrap();

            // A symlink of another user on the way.
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&parent, &link).unwrap();
            std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
            let err = private(&link.join("root"), me).unwrap_err();
            assert!(err.contains("is a symlink of uid 65534"), "{err}");
        }
        // RuntimeDirs::open refuses what check_private refuses.
        mode(&parent, 0o777);
        assert!(matches!(
            RuntimeDirs::open(&root),
            Err(StateError::NotPrivate { .. })
        ));
    }

    #[test]
    fn the_default_runtime_root_is_run_as_root_else_the_users_own() {
        let root = default_runtime_root();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(root, Path::new("/run/fissile-oci/sandbox"));
        } else {
            assert!(root.ends_with("fissile-oci/sandbox") || root.ends_with("sandbox"));
            assert!(!root.starts_with("/dev/shm"), "{}", root.display());
        }
    }

    #[test]
    fn live_claims_are_not_stale_and_dead_ones_are() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RuntimeDirs::open(tmp.path()).unwrap();
        let live = Claim::create(&dirs, "a").unwrap();
        assert!(stale_claims(&dirs).is_empty());
        // A claim whose lock is gone (its process died) is stale.
        drop(live);
        let stale = stale_claims(&dirs);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].id, "a");
        // While one scan holds it, another does not see it.
        assert!(stale_claims(&dirs).is_empty());
        stale.into_iter().for_each(Claim::release);
        assert!(!dirs.bundle_dir("a").exists());
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(new_container_id(), new_container_id());
    }
}
