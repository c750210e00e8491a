use std::path::PathBuf;

use crate::extract::ExtractError;
use crate::release::digest::DigestError;
use crate::release::yaml::YamlError;

/// Everything that can be wrong with a release given to us; each names the file involved.
#[derive(thiserror::Error, Debug)]
pub enum ReleaseError {
    #[error("{path}: not a BOSH release (expected a release tarball, a directory with release.MF, dev_releases/ or packages/)")]
    NotARelease { path: PathBuf },
    #[error("failed to read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {what} name {name:?} is not allowed: {reason}")]
    BadName {
        path: PathBuf,
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("{path}: package {name:?} is listed more than once")]
    DuplicatePackage { path: PathBuf, name: String },
    #[error("{path}: job {name:?} is listed more than once")]
    DuplicateJob { path: PathBuf, name: String },
    #[error("{tarball}: {member} is listed in release.MF but missing from the tarball")]
    MissingMember { tarball: PathBuf, member: String },
    #[error("{path}: package {package:?}: archive {digest} not found in the bosh cache {cache} (run `bosh create-release` there, or point --bosh-cache at the cache that has it)")]
    MissingArchive {
        path: PathBuf,
        package: String,
        digest: String,
        cache: PathBuf,
    },
    #[error("{path}: dev release version {version:?} not found; known versions: {known}")]
    UnknownVersion {
        path: PathBuf,
        version: String,
        known: String,
    },
    #[error("{path}: --release-version applies to dev releases only, this is a {kind}")]
    VersionNotApplicable { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: package {package:?}: pattern {pattern:?} matches no file under src/ or blobs/"
    )]
    NoFilesForPattern {
        path: PathBuf,
        package: String,
        pattern: String,
    },
}

impl ReleaseError {
    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> ReleaseError {
        ReleaseError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReleaseError {
        let path = path.into();
        move |source| ReleaseError::Io { path, source }
    }
}
