//! Blob uploads: `POST` opens an upload, `PATCH`es with `Content-Range` send the blob in chunks
//! streamed from its file (memory is a few buffers whatever the size), `PUT ?digest=` commits.
//!
//! A small blob (up to [`MONOLITHIC_MAX`] and one chunk) goes up in one body instead: a `POST
//! ?digest=` with the blob, which the OCI distribution spec lets a registry commit at once
//! (201); one that answers 202 instead (distribution 2.x) has opened an upload, which one `PUT
//! ?digest=` with the blob commits, and is asked with an empty `POST` from then on. Two requests
//! at most where the chunked flow takes three, which on a busy registry is a shorter push.
//!
//! After a transient failure the upload resumes where the registry says it stopped (`GET` on the
//! upload's location, `Range: 0-N`), or starts afresh if the registry lost it. The bytes sent are
//! hashed on the way: a local blob that does not match its digest is never committed. A registry
//! that refuses ranged chunks gets the rest of the blob in one streamed `PATCH`, as skopeo sends
//! it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::Ordering;

use sha2::Digest as _;
use ureq::http::Method;

use super::client::Client;
use super::reference::Repository;
use super::request::{encode, error_message, header, Request, StreamFailure};
use super::session::{Session, SINGLE_POST_NO, SINGLE_POST_YES};
use super::RegistryError;
use crate::oci::OciError;

/// The largest blob sent in one request body (read into memory, hashed before it leaves).
const MONOLITHIC_MAX: u64 = 4 * 1024 * 1024;

/// Fresh upload sessions one blob may use before giving up (lost uploads, range confusion).
const MAX_RESTARTS: u32 = 3;

impl Client {
    /// Uploads `path`, the blob `digest` of `size` bytes, to `repository`. `location` is an
    /// upload the registry already opened (after a refused mount). `progress` is told the bytes
    /// sent so far.
    pub fn push_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        path: &Path,
        location: Option<String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        let session = self.session(&repository.registry)?;
        let mut upload = Upload {
            session: &session,
            cancel: &self.cancel,
            repository,
            path,
            size,
            chunk: self.options.chunk_size.max(1),
            ranged: true,
            hashed: Hashed::new(),
        };
        if location.is_none()
            && size <= MONOLITHIC_MAX.min(upload.chunk)
            && upload.monolithic(digest, self)?
        {
            progress(size);
            return Ok(());
        }
        let mut location = match location {
            Some(l) => l,
            None => upload.open()?,
        };
        let mut offset = 0u64;
        let mut attempt = 0u32;
        let mut restarts = 0u32;
        while offset < size {
            let len = if upload.ranged {
                upload.chunk.min(size - offset)
            } else {
                size - offset
            };
            match upload.send_chunk(&location, offset, len, progress) {
                Ok(Sent::Accepted { next, confirmed }) => {
                    location = next;
                    offset = confirmed;
                    attempt = 0;
                }
                Ok(Sent::RangeRefused) if upload.ranged && offset == 0 => {
                    // Not every registry takes ranged chunks: the whole blob in one stream.
                    upload.ranged = false;
                    location = upload.open()?;
                }
                Ok(Sent::RangeRefused) | Ok(Sent::Lost) => {
                    restarts += 1;
                    if restarts > MAX_RESTARTS {
                        return Err(RegistryError::Protocol {
                            registry: repository.registry.clone(),
                            method: "PATCH".into(),
                            path: format!("/v2/{}/blobs/uploads/", repository.name),
                            status: 416,
                            message: format!(
                                "the upload of {digest} was lost or out of step {MAX_RESTARTS} times"
                            ),
                        });
                    }
                    location = upload.open()?;
                    offset = 0;
                }
                Err(StreamFailure::Fatal(e)) => return Err(e),
                Err(StreamFailure::Transient(failure)) => {
                    attempt += 1;
                    let request = Request::new(Method::PATCH, location.clone());
                    session.wait_before_retry(&request, failure, attempt)?;
                    match upload.status(&location)? {
                        Some(confirmed) => offset = confirmed,
                        None => {
                            location = upload.open()?;
                            offset = 0;
                        }
                    }
                }
            }
        }
        let found = upload.hashed.digest_at(size, path)?;
        if found != digest {
            // The store's file changed under us: never let the registry have it.
            let _ = session.send(
                &Request::new(Method::DELETE, location),
                super::request::Payload::None,
            );
            return Err(RegistryError::Store(OciError::DigestMismatch {
                path: path.to_path_buf(),
                expected: digest.to_string(),
                found,
            }));
        }
        upload.commit(&location, digest, self)
    }
}

enum Sent {
    /// The chunk is in; the registry's next upload location and confirmed length.
    Accepted { next: String, confirmed: u64 },
    /// 416: the registry is not where we thought (or refuses ranges).
    RangeRefused,
    /// 404: the upload is gone.
    Lost,
}

struct Upload<'a> {
    session: &'a Session,
    cancel: &'a crate::cancel::CancelToken,
    repository: &'a Repository,
    path: &'a Path,
    size: u64,
    chunk: u64,
    ranged: bool,
    hashed: Hashed,
}

impl Upload<'_> {
    fn request(&self, method: Method, url: String) -> Request {
        Request::new(method, url).scope(self.repository, "pull,push")
    }

    /// `POST /v2/NAME/blobs/uploads/`: a new upload's location.
    fn open(&mut self) -> Result<String, RegistryError> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/",
            self.session.base, self.repository.name
        );
        let request = self.request(Method::POST, url);
        let response = self
            .session
            .send(&request, super::request::Payload::Bytes(&[]))?;
        if response.status().as_u16() != 202 {
            return Err(self.session.status_error(
                &request,
                response,
                &format!("repository {}", self.repository),
            ));
        }
        if let Some(min) = header(&response, "oci-chunk-min-length").and_then(|v| v.parse().ok()) {
            self.chunk = self.chunk.max(min);
        }
        self.session.location(&request, response)
    }

    /// The blob in one body: `POST ?digest=` (committed if the registry answers 201), else
    /// `PUT ?digest=` on the upload the `POST` opened. `Ok(false)`: the registry would not
    /// take it that way; the caller sends it in chunks, from a fresh upload.
    fn monolithic(&mut self, digest: &str, client: &Client) -> Result<bool, RegistryError> {
        let io = |e: std::io::Error| {
            RegistryError::Store(OciError::Io {
                path: self.path.to_path_buf(),
                source: e,
            })
        };
        let bytes = fs_err::read(self.path).map_err(io)?;
        let found = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        if bytes.len() as u64 != self.size || found != digest {
            // The store's file changed under us: never let the registry have it.
            return Err(RegistryError::Store(OciError::DigestMismatch {
                path: self.path.to_path_buf(),
                expected: digest.to_string(),
                found,
            }));
        }
        let uploads = format!(
            "{}/v2/{}/blobs/uploads/",
            self.session.base, self.repository.name
        );
        let single = self.session.single_post.load(Ordering::Relaxed) != SINGLE_POST_NO;
        let request = if single {
            self.request(Method::POST, format!("{uploads}?digest={}", encode(digest)))
                .header("Content-Type", "application/octet-stream")
        } else {
            self.request(Method::POST, uploads)
        };
        let body: &[u8] = if single { &bytes } else { &[] };
        let response = self
            .session
            .send(&request, super::request::Payload::Bytes(body))?;
        let location = match response.status().as_u16() {
            201 if single => {
                self.session
                    .single_post
                    .store(SINGLE_POST_YES, Ordering::Relaxed);
                return Ok(true);
            }
            202 => {
                if single {
                    // It opened an upload and left the body: not worth sending twice again.
                    self.session
                        .single_post
                        .store(SINGLE_POST_NO, Ordering::Relaxed);
                }
                self.session.location(&request, response)?
            }
            401 | 403 => {
                return Err(self.session.status_error(
                    &request,
                    response,
                    &format!("repository {}", self.repository),
                ))
            }
            _ => {
                if single {
                    self.session
                        .single_post
                        .store(SINGLE_POST_NO, Ordering::Relaxed);
                }
                return Ok(false);
            }
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let request = self
            .request(
                Method::PUT,
                format!("{location}{sep}digest={}", encode(digest)),
            )
            .header("Content-Type", "application/octet-stream");
        let response = self
            .session
            .send(&request, super::request::Payload::Bytes(&bytes))?;
        match response.status().as_u16() {
            201 | 204 => Ok(true),
            400 => match self.digest_invalid(digest, error_message(response)) {
                Ok(mismatch) => Err(mismatch),
                Err(_) => Ok(false),
            },
            404 if client.blob_exists(self.repository, digest)?.is_some() => Ok(true),
            401 | 403 => Err(self.session.status_error(
                &request,
                response,
                &format!("upload of {digest} to {}", self.repository),
            )),
            _ => Ok(false),
        }
    }

    /// A commit's 400 whose registry says `DIGEST_INVALID`: it received other bytes than
    /// `digest` names, as the mismatch; any other 400's `message` back.
    fn digest_invalid(&self, digest: &str, message: String) -> Result<RegistryError, String> {
        if message.contains("DIGEST_INVALID") {
            Ok(RegistryError::DigestMismatch {
                registry: self.repository.registry.clone(),
                what: format!("the upload of {digest} as the registry received it"),
                expected: digest.to_string(),
                found: format!("other bytes ({message})"),
            })
        } else {
            Err(message)
        }
    }

    /// One `PATCH` of `len` bytes from `offset`, streamed from the file.
    fn send_chunk(
        &mut self,
        location: &str,
        offset: u64,
        len: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Sent, StreamFailure> {
        let io = |e: std::io::Error| {
            StreamFailure::Fatal(RegistryError::Store(OciError::Io {
                path: self.path.to_path_buf(),
                source: e,
            }))
        };
        let mut file = fs_err::File::open(self.path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.hashed
            .rewind_to(offset, self.path)
            .map_err(StreamFailure::Fatal)?;
        let mut request = self
            .request(Method::PATCH, location.to_string())
            .header("Content-Type", "application/octet-stream");
        if self.ranged {
            request = request.header("Content-Range", format!("{offset}-{}", offset + len - 1));
        }
        let mut reader = Tee {
            inner: std::io::BufReader::with_capacity(256 * 1024, file).take(len),
            hashed: &mut self.hashed,
            sent: offset,
            progress,
            cancel: self.cancel,
        };
        let response = self.session.send_stream(&request, &mut reader, len)?;
        match response.status().as_u16() {
            202 => {
                let confirmed = header(&response, "range")
                    .and_then(|r| range_end(&r))
                    .unwrap_or(offset + len);
                let next = self
                    .session
                    .location(&request, response)
                    .map_err(StreamFailure::Fatal)?;
                Ok(Sent::Accepted { next, confirmed })
            }
            416 => Ok(Sent::RangeRefused),
            404 => Ok(Sent::Lost),
            400 if self.ranged && offset == 0 => Ok(Sent::RangeRefused),
            _ => Err(StreamFailure::Fatal(self.session.status_error(
                &request,
                response,
                &format!("upload to {}", self.repository),
            ))),
        }
    }

    /// Where the registry's copy of the upload ends, or `None` if the upload is gone.
    fn status(&self, location: &str) -> Result<Option<u64>, RegistryError> {
        let request = self.request(Method::GET, location.to_string());
        let response = self.session.send(&request, super::request::Payload::None)?;
        match response.status().as_u16() {
            204 | 200 => Ok(header(&response, "range")
                .and_then(|r| range_end(&r))
                // "0-0" is both "nothing" and "one byte" in distribution: resend from 0.
                .filter(|&end| end > 1)
                .or(Some(0))
                .filter(|&end| end <= self.size)),
            404 => Ok(None),
            _ => Err(self.session.status_error(
                &request,
                response,
                &format!("upload to {}", self.repository),
            )),
        }
    }

    /// `PUT LOCATION?digest=D`: the blob is complete. A lost answer to a commit that went
    /// through leaves the blob in place, which a `HEAD` confirms.
    fn commit(&self, location: &str, digest: &str, client: &Client) -> Result<(), RegistryError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let request = self.request(
            Method::PUT,
            format!("{location}{sep}digest={}", encode(digest)),
        );
        let response = match self
            .session
            .send(&request, super::request::Payload::Bytes(&[]))
        {
            Ok(r) => r,
            Err(e @ RegistryError::Unreachable { .. }) => {
                return match client.blob_exists(self.repository, digest) {
                    Ok(Some(_)) => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        match response.status().as_u16() {
            201 | 204 => Ok(()),
            400 => match self.digest_invalid(digest, error_message(response)) {
                Ok(mismatch) => Err(mismatch),
                Err(message) => Err(RegistryError::Protocol {
                    registry: self.repository.registry.clone(),
                    method: "PUT".into(),
                    path: request.path(),
                    status: 400,
                    message,
                }),
            },
            404 if client.blob_exists(self.repository, digest)?.is_some() => Ok(()),
            _ => Err(self.session.status_error(
                &request,
                response,
                &format!("upload of {digest} to {}", self.repository),
            )),
        }
    }
}

/// `0-N` (or `bytes=0-N`): the length it confirms, N+1.
fn range_end(range: &str) -> Option<u64> {
    let range = range.trim().trim_start_matches("bytes=");
    let (_, end) = range.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

/// The sha256 of the blob's first `at` bytes, kept as the bytes go out; a snapshot at the last
/// confirmed point lets an upload resume earlier without hashing from the start.
struct Hashed {
    hasher: sha2::Sha256,
    at: u64,
    checkpoint: (sha2::Sha256, u64),
}

impl Hashed {
    fn new() -> Hashed {
        Hashed {
            hasher: sha2::Sha256::new(),
            at: 0,
            checkpoint: (sha2::Sha256::new(), 0),
        }
    }

    fn update(&mut self, position: u64, bytes: &[u8]) {
        if position == self.at {
            self.hasher.update(bytes);
            self.at += bytes.len() as u64;
        }
    }

    /// Makes the state cover exactly the first `offset` bytes, reading the file if needed.
    fn rewind_to(&mut self, offset: u64, path: &Path) -> Result<(), RegistryError> {
        if offset == self.at {
            self.checkpoint = (self.hasher.clone(), self.at);
            return Ok(());
        }
        let (mut hasher, mut at) = if self.checkpoint.1 <= offset {
            self.checkpoint.clone()
        } else {
            (sha2::Sha256::new(), 0)
        };
        let io = |e: std::io::Error| {
            RegistryError::Store(OciError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let mut file = fs_err::File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(at)).map_err(io)?;
        let mut buf = vec![0u8; 256 * 1024];
        while at < offset {
            let want = buf.len().min((offset - at) as usize);
            let n = file.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        self.hasher = hasher;
        self.at = at;
        self.checkpoint = (self.hasher.clone(), self.at);
        Ok(())
    }

    fn digest_at(&mut self, size: u64, path: &Path) -> Result<String, RegistryError> {
        self.rewind_to(size, path)?;
        Ok(format!(
            "sha256:{}",
            hex::encode(self.hasher.clone().finalize())
        ))
    }
}

/// The chunk's bytes on their way out: hashed, counted, reported; cut short on cancellation.
struct Tee<'a, R> {
    inner: R,
    hashed: &'a mut Hashed,
    sent: u64,
    progress: &'a mut dyn FnMut(u64),
    cancel: &'a crate::cancel::CancelToken,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.hashed.update(self.sent, &buf[..n]);
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_registries_write_them() {
        assert_eq!(range_end("0-1023"), Some(1024));
        assert_eq!(range_end("bytes=0-9"), Some(10));
        assert_eq!(range_end("garbage"), None);
    }

    #[test]
    fn the_hash_survives_a_resume_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut hashed = Hashed::new();
        hashed.update(0, &data[..60_000]);
        // The registry kept only 40,000 bytes: hash state goes back, then on.
        hashed.rewind_to(40_000, &path).unwrap();
        hashed.update(40_000, &data[40_000..]);
        let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        assert_eq!(hashed.digest_at(100_000, &path).unwrap(), expected);
    }
}
