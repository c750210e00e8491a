//! The registry client and its operations, by digest: resolve, get and put manifests; check,
//! mount, pull and push blobs (pushes and pulls in `upload` and `download`). It holds one
//! session per registry (`session`), opened on first use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::Digest as _;
use ureq::http::Method;

use super::credentials::AuthFiles;
use super::locations::BlobLocations;
use super::reference::Repository;
use super::request::{encode, header, read_limited, Payload, Request};
use super::session::Session;
use super::{tls, RegistryError};
use crate::cancel::CancelToken;

/// Manifest media types we read, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests are small documents; anything bigger is not one (containers/image has the same cap).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// How a client talks to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Verify TLS certificates (`--tls-verify`); when false, plain http is accepted too.
    pub tls_verify: bool,
    /// `--cert-dir`: CAs (`*.crt`) and a client certificate (`NAME.cert` + `NAME.key`).
    pub cert_dir: Option<PathBuf>,
    /// `--authfile`: the only auth file to read.
    pub auth_file: Option<PathBuf>,
    /// Further attempts after a transient failure.
    pub retries: u32,
    /// The first wait between attempts; doubled each time.
    pub backoff: Duration,
    /// Bytes per upload request; memory does not depend on it (bodies stream from the file),
    /// a failed upload resumes at a chunk boundary or where the registry says it stopped.
    pub chunk_size: u64,
    /// Blobs transferred at once.
    pub parallel: usize,
    /// The file remembering which repositories hold which blobs, for cross-repository mounts.
    pub blob_locations: Option<PathBuf>,
    /// How long a connection may take to open, and a read or write may wait for the peer.
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            cert_dir: None,
            auth_file: None,
            retries: 4,
            backoff: Duration::from_millis(500),
            chunk_size: 256 * 1024 * 1024,
            parallel: 3,
            blob_locations: None,
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(300),
        }
    }
}

/// A manifest (or index) as the registry served it, verified.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

pub(crate) type Notifier = Arc<dyn Fn(&str) + Send + Sync>;

/// A registry client; cheap to share between threads.
pub struct Client {
    pub(crate) options: ClientOptions,
    pub(crate) auth_files: AuthFiles,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) locations: BlobLocations,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) cancel: CancelToken,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        // The process-wide TLS provider; a second install (another client) is a no-op.
        let _ = tls::provider().install_default();
        Ok(Client {
            auth_files: AuthFiles::discover(options.auth_file.as_deref()),
            locations: BlobLocations::load(options.blob_locations.as_deref()),
            options,
            sessions: Mutex::new(HashMap::new()),
            notifier: None,
            cancel: CancelToken::new(),
        })
    }

    /// Stops transfers (between chunks and reads, and during backoff waits) with
    /// [`RegistryError::Interrupted`] once `cancel` is cancelled.
    pub fn with_cancel(mut self, cancel: CancelToken) -> Client {
        self.cancel = cancel;
        self
    }

    pub(crate) fn check_cancel(&self) -> Result<(), RegistryError> {
        if self.cancel.is_cancelled() {
            Err(RegistryError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Where notices (retries) go; silent otherwise.
    pub fn with_notifier(mut self, notify: impl Fn(&str) + Send + Sync + 'static) -> Client {
        self.notifier = Some(Arc::new(notify));
        self
    }

    /// Use exactly these auth files (instead of the ones podman would read).
    pub fn with_auth_files(mut self, files: AuthFiles) -> Client {
        self.auth_files = files;
        self
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The session with `registry`, opened (and pinged) on first use.
    pub(crate) fn session(&self, registry: &str) -> Result<Arc<Session>, RegistryError> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if let Some(s) = sessions.get(registry) {
            return Ok(s.clone());
        }
        let session = Arc::new(Session::open(self, registry)?);
        sessions.insert(registry.to_string(), session.clone());
        Ok(session)
    }

    /// The manifest `reference` (a tag or a digest) of `repository`, verified against the digest
    /// asked for, else against the one the registry announces.
    pub fn get_manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Manifest, RegistryError> {
        let session = self.session(&repository.registry)?;
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            session.base, repository.name
        );
        let request = Request::new(Method::GET, url)
            .header("Accept", MANIFEST_ACCEPT)
            .scope(repository, "pull");
        let mut response = session.send(&request, Payload::None)?;
        if response.status().as_u16() != 200 {
            return Err(session.status_error(
                &request,
                response,
                &format!("manifest {repository}:{reference}"),
            ));
        }
        let announced = header(&response, "docker-content-digest");
        let content_type = header(&response, "content-type");
        let bytes = read_limited(&session, &request, &mut response, MAX_MANIFEST)?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let expected = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            announced.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: repository.registry.clone(),
                    what: format!("manifest {repository}:{reference}"),
                    expected,
                    found: digest,
                });
            }
        }
        let media_type = media_type_of(content_type.as_deref(), &bytes);
        Ok(Manifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// What manifest `reference` (a tag or a digest) names, without fetching it (`HEAD`), or
    /// `None` when the repository has no such manifest.
    pub fn resolve(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let session = self.session(&repository.registry)?;
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            session.base, repository.name
        );
        let request = Request::new(Method::HEAD, url)
            .header("Accept", MANIFEST_ACCEPT)
            .scope(repository, "pull");
        let response = session.send(&request, Payload::None)?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => {
                return Err(session.status_error(
                    &request,
                    response,
                    &format!("manifest {repository}:{reference}"),
                ))
            }
        }
        let announced = header(&response, "docker-content-digest");
        let size = header(&response, "content-length").and_then(|v| v.parse::<u64>().ok());
        let content_type = header(&response, "content-type");
        let (digest, media_type, size) = match (announced, size) {
            (Some(digest), Some(size)) if digest.starts_with("sha256:") => {
                let media_type = media_type_of(content_type.as_deref(), b"");
                (digest, media_type, size)
            }
            // Not every registry says which digest it serves: fetch and hash it.
            _ => {
                let m = self.get_manifest(repository, reference)?;
                let size = m.bytes.len() as u64;
                (m.digest, m.media_type, size)
            }
        };
        let parsed = Digest::from_str(&digest).map_err(|e| RegistryError::Protocol {
            registry: repository.registry.clone(),
            method: "HEAD".into(),
            path: request.path(),
            status: 200,
            message: format!("the digest {digest:?} is not valid: {e}"),
        })?;
        Ok(Some(Descriptor::new(
            MediaType::from(media_type.as_str()),
            size,
            parsed,
        )))
    }

    /// Every tag of `repository`, in one request, when it has at most `max`: `Ok(None)` when
    /// it has more (the registry pages the list, or sends more than `max`), since then one
    /// request per tag asked about costs the registry less than listing them all. A repository
    /// nobody pushed to yet (`NAME_UNKNOWN`) has no tags.
    pub fn list_tags(
        &self,
        repository: &Repository,
        max: usize,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let session = self.session(&repository.registry)?;
        let url = format!("{}/v2/{}/tags/list?n={max}", session.base, repository.name);
        let request = Request::new(Method::GET, url).scope(repository, "pull");
        let mut response = session.send(&request, Payload::None)?;
        if response.status().as_u16() != 200 {
            let error =
                session.status_error(&request, response, &format!("the tags of {repository}"));
            return match error {
                RegistryError::NotFound { message, .. } if message.contains("(NAME_UNKNOWN)") => {
                    Ok(Some(Vec::new()))
                }
                e => Err(e),
            };
        }
        if header(&response, "link").is_some() {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        // About 100 bytes a tag; a registry that ignores `n` may send more.
        let limit = (max as u64 + 1) * 256;
        let bytes = match read_limited(&session, &request, &mut response, limit) {
            Ok(bytes) => bytes,
            Err(RegistryError::Protocol { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let list: TagList =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                registry: repository.registry.clone(),
                method: "GET".into(),
                path: request.path(),
                status: 200,
                message: format!("the tag list is not JSON: {e}"),
            })?;
        let tags = list.tags.unwrap_or_default();
        Ok((tags.len() <= max).then_some(tags))
    }

    /// Stores a manifest under `reference` (a tag, or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let session = self.session(&repository.registry)?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            session.base, repository.name
        );
        let request = Request::new(Method::PUT, url)
            .header("Content-Type", media_type)
            .scope(repository, "pull,push");
        let response = session.send(&request, Payload::Bytes(bytes))?;
        if response.status().as_u16() != 201 {
            return Err(session.status_error(
                &request,
                response,
                &format!("manifest {repository}:{reference}"),
            ));
        }
        if let Some(stored) = header(&response, "docker-content-digest") {
            if stored != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: repository.registry.clone(),
                    what: format!("manifest {repository}:{reference} as stored"),
                    expected: digest,
                    found: stored,
                });
            }
        }
        Ok(digest)
    }

    /// The size of blob `digest` in `repository`, or `None` when the repository lacks it.
    pub fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let session = self.session(&repository.registry)?;
        let url = format!("{}/v2/{}/blobs/{digest}", session.base, repository.name);
        let request = Request::new(Method::HEAD, url).scope(repository, "pull");
        let response = session.send(&request, Payload::None)?;
        match response.status().as_u16() {
            200 => Ok(Some(
                header(&response, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(session.status_error(&request, response, &format!("blob {digest}"))),
        }
    }

    /// Asks the registry to link blob `digest` from `from` into `repository`. `Ok(None)`: it is
    /// there now; `Ok(Some(location))`: the registry could not, and opened an upload instead.
    pub fn mount_blob(
        &self,
        repository: &Repository,
        digest: &str,
        from: &Repository,
    ) -> Result<Option<String>, RegistryError> {
        let session = self.session(&repository.registry)?;
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={}&from={}",
            session.base,
            repository.name,
            encode(digest),
            encode(&from.name)
        );
        let request = Request::new(Method::POST, url)
            .scope(repository, "pull,push")
            .scope(from, "pull");
        let response = session.send(&request, Payload::Bytes(&[]))?;
        match response.status().as_u16() {
            201 => Ok(None),
            202 => Ok(Some(session.location(&request, response)?)),
            _ => Err(session.status_error(&request, response, &format!("blob {digest}"))),
        }
    }
}

/// A manifest's media type: the `Content-Type` without parameters, else its `mediaType`.
pub(crate) fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
    let from_header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| c.starts_with("application/vnd."));
    from_header.unwrap_or_else(|| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_header_or_the_document() {
        assert_eq!(
            media_type_of(
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                b"{}"
            ),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_of(
                Some("text/plain"),
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
}
