//! The OCI side of fissile-oci: an image layout store, a deterministic layer writer (also for
//! overlayfs upper dirs, with whiteouts), image manifests, unpacking images to rootfs dirs,
//! imports from other layouts and `docker save` archives, and verify/gc.

pub mod gc;
pub mod image;
pub mod import;
pub mod layer;
pub(crate) mod pgzip;
pub mod store;
pub mod unpack;
mod xattr;

use std::path::{Path, PathBuf};

pub use image::{write_image, ImageSpec};
pub use layer::{write_layer, Compression, Layer, LayerOptions, Owners};
pub use store::{OciStore, RefEntry};

#[derive(thiserror::Error, Debug)]
pub enum OciError {
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("unsupported digest {digest:?}: only sha256 blobs are stored")]
    UnsupportedDigest { digest: String },
    #[error("no image named {name:?} in {store}; known: {known}")]
    UnknownRef {
        store: PathBuf,
        name: String,
        known: String,
    },
    #[error(transparent)]
    Extract(#[from] crate::extract::ExtractError),
    /// Rootless, the tree was written as a layer by the tree helper, which failed.
    #[error(transparent)]
    TreeHelper(Box<crate::rootless::TreeError>),
}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }

    pub(crate) fn invalid(path: &Path, message: impl std::fmt::Display) -> OciError {
        OciError::Invalid {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// A read error from a [`store::VerifyingReader`] is a corrupt blob, not an i/o failure.
    pub(crate) fn from_read(path: &Path, e: std::io::Error) -> OciError {
        if e.kind() == std::io::ErrorKind::InvalidData {
            OciError::invalid(path, e)
        } else {
            OciError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    }
}
