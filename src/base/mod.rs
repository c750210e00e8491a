//! Base images and compilation bases.
//!
//! A *base* is an OS tree as an image in the store (from Debian, a rootfs, an OCI layout, a
//! `docker save` archive, or busybox). A *compilation base* is a base plus one layer: what the
//! prerequisites script changed, run in a sandbox on the base and committed from the overlay's
//! upper dir. Its name is derived from the base's digest, the script's hash and the fissile-oci
//! version (like fissile's BaseImageName), so a new base, script or version never reuses a
//! stale one.

mod build;
mod compilation;
mod pull;
mod resolve;
mod rootfs_lookup;
mod source;
pub mod stemcell;

use std::path::PathBuf;

use oci_spec::image::Descriptor;

pub use build::build_base;
pub use compilation::{
    compilation_base_name, ensure_compilation_base, is_compilation_base, CompilationBaseRequest,
    DEFAULT_PREREQUISITES,
};
pub use pull::pull_base;
pub use resolve::{
    default_base_tag, resolve_compilation_base, unpack_named, BaseChoice, CompilationBase,
};
pub use rootfs_lookup::exists_in_rootfs;
pub use source::BaseSource;
pub use stemcell::stemcell_of;

use crate::extract;
use crate::oci::store::{annotations, OciStore};
use crate::oci::OciError;

pub const KIND_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.kind";
pub const BASE_DIGEST_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.base.digest";
pub const SCRIPT_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.prerequisites.sha256";
pub const VERSION_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.version";
pub(crate) const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

#[derive(thiserror::Error, Debug)]
pub enum BaseError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    #[error(transparent)]
    Build(#[from] rootfs_builder::BuildError),
    #[error(transparent)]
    Normalize(#[from] crate::rootless::NormalizeError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("base {name:?} has no bash (looked for /bin/bash and /usr/bin/bash): BOSH packaging scripts run under bash; build the base from a source that has it (debian:SUITE) or add it to the rootfs")]
    NoBash { name: String },
    #[error(
        "the prerequisites script failed on base {base:?} ({outcome}); its output is in {log}"
    )]
    PrerequisitesFailed {
        base: String,
        outcome: String,
        log: PathBuf,
    },
    #[error("no base {name:?} in {}; known: {known}. Build one with `fissile-oci base build --from ...`", .store.display())]
    UnknownBase {
        name: String,
        store: PathBuf,
        known: String,
    },
    #[error(
        "cannot build the default base debian:{suite}. On an air-gapped host import one instead: \
         `fissile-oci base build --from rootfs:TARBALL --tag {tag}` (or oci:LAYOUT, docker-archive:TAR), \
         or pass --base NAME"
    )]
    DefaultBase {
        suite: String,
        tag: String,
        #[source]
        source: Box<BaseError>,
    },
    #[error("interrupted: base {tag} was not built (its staging dir is removed)")]
    Interrupted { tag: String },
    #[error("no store in {}: build a base first (fissile-oci base build)", .store.display())]
    NoStore { store: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BaseError {
    let path = path.into();
    move |source| BaseError::Io { path, source }
}

/// Bases and compilation bases in the store, with their kind.
pub fn list(store: &OciStore) -> Result<Vec<(String, String, Descriptor)>, BaseError> {
    let mut out = Vec::new();
    for entry in store.refs()? {
        let notes = annotations(&entry.descriptor);
        if let Some(kind) = notes
            .get(KIND_ANNOTATION)
            .filter(|k| k.as_str() == "base" || k.as_str() == "compilation-base")
        {
            out.push((entry.name, kind.clone(), entry.descriptor));
        }
    }
    Ok(out)
}
