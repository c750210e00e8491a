//! The work dir: where the store, unpacked bases, compiled packages, scratch dirs and logs live
//! ([`WorkDir`]), the lock that lets one writer at a time use it ([`WorkDirLock`]), and removing
//! the trees in it that hold read-only directories ([`remove_tree`]).

mod last_use;
mod lock;
mod removal;
mod run_dir;

use std::path::{Path, PathBuf};

pub use last_use::LastUse;
pub(crate) use lock::flock;
pub use lock::{NameLock, WorkDirLock};
pub use removal::remove_tree;
pub use run_dir::{abandoned_run_dirs, RunDir};

#[derive(thiserror::Error, Debug)]
pub enum WorkDirError {
    #[error("cannot use work dir {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "work dir {path} is in use by {holder}; pass --wait to wait for it, or try again later"
    )]
    Busy { path: PathBuf, holder: String },
    #[error("no work dir: set --work-dir, FISSILE_OCI_WORK_DIR, XDG_CACHE_HOME or HOME")]
    NoDefault,
}

#[derive(Clone, Debug)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// `--work-dir`, else `$FISSILE_OCI_WORK_DIR`, else `$XDG_CACHE_HOME/fissile-oci`, else
    /// `~/.cache/fissile-oci`.
    pub fn resolve(explicit: Option<&Path>) -> Result<WorkDir, WorkDirError> {
        let non_empty = |v: std::ffi::OsString| {
            if v.is_empty() {
                None
            } else {
                Some(PathBuf::from(v))
            }
        };
        let root = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("FISSILE_OCI_WORK_DIR").and_then(non_empty))
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .and_then(non_empty)
                    .map(|p| p.join("fissile-oci"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .and_then(non_empty)
                    .map(|p| p.join(".cache").join("fissile-oci"))
            })
            .ok_or(WorkDirError::NoDefault)?;
        // Sandbox mount sources must be absolute, and a later chdir must not move the work dir.
        let root = std::path::absolute(&root).map_err(|source| WorkDirError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(WorkDir { root })
    }

    pub fn at(root: impl Into<PathBuf>) -> WorkDir {
        WorkDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn oci(&self) -> PathBuf {
        self.root.join("oci")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub fn packages(&self) -> PathBuf {
        self.root.join("packages")
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `logs/<name>-<first 16 hex of its cache key>.log`: a package compile's output.
    pub fn package_log(&self, name: &str, key: &str) -> PathBuf {
        self.logs()
            .join(format!("{name}-{}.log", key.get(..16).unwrap_or(key)))
    }

    /// `logs/<name>.log`: the prerequisites script's output for a compilation base.
    pub fn compilation_base_log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    pub fn create(&self) -> Result<(), WorkDirError> {
        fs_err::create_dir_all(&self.root).map_err(|source| WorkDirError::Io {
            path: self.root.clone(),
            source,
        })
    }
}
