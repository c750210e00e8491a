//! Root filesystem trees for compilation bases, built from a Debian mirror (mmdebstrap), from the
//! host's static busybox, or normalised from any tree, so that nothing host-specific (machine
//! ids, apt lists and caches, logs, device nodes) ends up in a base image.
//!
//! This crate only produces directories; fissile-oci turns them into OCI layers with its
//! deterministic layer writer. Keeping it free of the store avoids a dependency cycle between the
//! two crates (the CLI needs both).

// Unit tests may use std::fs; clippy.toml steers the rest to fs_err.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

// The workspace's one skip helper: a skipped test must be seen and counted (scripts/test.sh).
#[cfg(test)]
#[path = "../../tests/common_skip/mod.rs"]
mod common_skip;

pub mod busybox;
pub mod debian;
pub mod normalize;

use std::path::PathBuf;

#[derive(thiserror::Error, Debug)]
pub enum BuildError {
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} is not installed: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("{command} failed with {status}; its last output:\n{tail}")]
    CommandFailed {
        command: String,
        status: String,
        tail: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted: {tool} was stopped")]
    Interrupted { tool: String },
}

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
        let path = path.into();
        move |source| BuildError::Io { path, source }
    }
}

/// The packages a typical BOSH packaging script expects on a compilation base.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "build-essential",
    "bash",
    "ca-certificates",
    "file",
    "pkg-config",
    "cmake",
    "autoconf",
    "automake",
    "libtool",
    "m4",
    "patch",
    "perl",
    "python3",
    "git",
    "curl",
    "wget",
    "rsync",
    "unzip",
    "bzip2",
    "xz-utils",
    "zstd",
];
