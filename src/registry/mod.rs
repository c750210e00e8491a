//! The registry client: OCI distribution (docker registry v2) over HTTP, for pushing images,
//! pulling bases, and the shared cache of compiled packages.
//!
//! - [`Reference`] and [`Repository`] parse `HOST[:PORT]/NAME[:TAG][@DIGEST]` (`reference`);
//! - [`Client`] talks to registries (`client`); its operations work by digest: resolve, get and
//!   put manifests; check, mount, pull and push blobs. It keeps a session per registry
//!   (`session`), which finds the scheme (https, or http with `--tls-verify=false`), answers
//!   `Basic` or `Bearer` challenges (`challenge`, `auth`) with the credentials podman and docker
//!   would use (`credentials`), trusts the system's roots and a certificate directory (`tls`),
//!   and retries with backoff when a connection is refused or reset or the registry answers
//!   5xx/429 (`retry`); `request` is one API request as data;
//! - blob uploads (`upload`) stream a file in ranged chunks, with bounded memory, and resume
//!   from the offset the registry confirms after a failure; downloads (`download`) resume with
//!   a `Range` request and are verified before they are kept;
//! - whole images go between the store and a registry with [`push_image`] and [`pull_image`]
//!   (`transfer`): several blobs at once, only those missing (HEAD first, then a cross-repository
//!   mount from a repository known to hold the blob, recorded in a [`BlobLocations`] file), every
//!   blob and manifest verified by digest, the manifest last, so a tag never names a partial
//!   image. A [`Reporter`] sees each blob start, advance and end.
//!
//! The client is blocking (`ureq`, rustls with ring): the project is thread-based, and a
//! transfer needs no more than a thread per blob in flight.

mod auth;
mod challenge;
mod client;
pub mod credentials;
mod download;
mod locations;
pub mod reference;
mod request;
mod retry;
mod session;
mod tls;
mod transfer;
mod upload;

use std::path::PathBuf;

pub use client::{Client, ClientOptions, Manifest};
pub use locations::BlobLocations;
pub use reference::{Reference, Repository};
pub use transfer::{
    pull_image, push_image, BlobKind, BlobOutcome, NoReporter, PulledImage, PushReport, Reporter,
};

/// What went wrong talking to a registry. [`RegistryError::is_environment`] tells a problem
/// of the host or the registry (unreachable, TLS, corrupt data, server errors) from one of the
/// user's input (a bad reference, refused credentials, a missing image).
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    #[error("{input:?} is not an image reference: {reason}")]
    Reference { input: String, reason: String },
    #[error("cannot reach the registry {registry}: {message}{}", if *.attempts > 1 { format!(" (after {} attempts)", .attempts) } else { String::new() })]
    Unreachable {
        registry: String,
        message: String,
        attempts: u32,
    },
    #[error("TLS with {registry} failed: {message}; {hint}")]
    Tls {
        registry: String,
        message: String,
        hint: String,
    },
    #[error("{registry} refused the credentials {origin}: {message}; log in again (podman login {registry}) or fix the auth file")]
    CredentialsRefused {
        registry: String,
        origin: String,
        message: String,
    },
    #[error("{registry} wants credentials for {repository} and none were found ({message}); log in with `podman login {registry}` or `docker login {registry}`, or pass --authfile FILE")]
    CredentialsMissing {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("{registry} denied {action} on {repository}: {message}")]
    Denied {
        registry: String,
        repository: String,
        action: String,
        message: String,
    },
    #[error("{what} not found on {registry}: {message}")]
    NotFound {
        registry: String,
        what: String,
        message: String,
    },
    #[error("{registry} answered {method} {path} with {status}: {message}")]
    Protocol {
        registry: String,
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{what} from {registry} is corrupt: expected {expected}, got {found}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        found: String,
    },
    #[error("{registry}: {message}")]
    Unsupported { registry: String, message: String },
    #[error("{}: {message}", .path.display())]
    Credentials { path: PathBuf, message: String },
    #[error("{helper}: {message}")]
    CredentialHelper { helper: String, message: String },
    #[error("certificate directory {}: {message}", .path.display())]
    CertDir { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] crate::oci::OciError),
    #[error("interrupted")]
    Interrupted,
}

impl RegistryError {
    /// True when the host, the network or the registry failed (exit 125), false when the
    /// user's input is wrong (exit 2).
    pub fn is_environment(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. }
            | RegistryError::Tls { .. }
            | RegistryError::Protocol { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::CredentialHelper { .. } => true,
            RegistryError::Store(e) => matches!(e, crate::oci::OciError::Io { .. }),
            RegistryError::Interrupted => false,
            RegistryError::Reference { .. }
            | RegistryError::CredentialsRefused { .. }
            | RegistryError::CredentialsMissing { .. }
            | RegistryError::Denied { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::Unsupported { .. }
            | RegistryError::Credentials { .. }
            | RegistryError::CertDir { .. } => false,
        }
    }
}
