//! Blob downloads: `GET /v2/NAME/blobs/DIGEST` (following the registry's redirect to its
//! storage), streamed into a writer while hashed. A connection lost on the way resumes with a
//! `Range` request from the bytes already written (or skips them when the server sends the
//! whole blob again); the digest and the size are checked at the end, so a writer that is
//! dropped on error never keeps a corrupt blob.

use std::io::{Read, Write};

use sha2::Digest as _;
use ureq::http::Method;

use super::client::Client;
use super::reference::Repository;
use super::request::{header, Failure, Payload, Request};
use super::{retry, RegistryError};

impl Client {
    /// Streams blob `digest` (`size` bytes) of `repository` into `sink`; `progress` is told the
    /// bytes received so far. Fails, with nothing promised about `sink`, unless the bytes are
    /// exactly the blob.
    pub fn pull_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        let Some(expected_hex) = digest.strip_prefix("sha256:") else {
            return Err(RegistryError::Unsupported {
                registry: repository.registry.clone(),
                message: format!("blob {digest}: only sha256 blobs are supported"),
            });
        };
        let session = self.session(&repository.registry)?;
        let url = format!("{}/v2/{}/blobs/{digest}", session.base, repository.name);
        let mut hasher = sha2::Sha256::new();
        let mut done = 0u64;
        let mut attempt = 0u32;
        let mut buf = vec![0u8; 256 * 1024];
        let corrupt = |found: String| RegistryError::DigestMismatch {
            registry: repository.registry.clone(),
            what: format!("blob {digest} of {repository}"),
            expected: format!("{digest} ({size} bytes)"),
            found,
        };
        loop {
            let mut request = Request::new(Method::GET, url.clone()).scope(repository, "pull");
            if done > 0 {
                request = request.header("Range", format!("bytes={done}-"));
            }
            let response = session.send(&request, Payload::None)?;
            let status = response.status().as_u16();
            // A server that ignores the range sends the whole blob again: skip what we have.
            let mut skip = match status {
                200 => done,
                206 if content_range_start(header(&response, "content-range").as_deref())
                    == Some(done) =>
                {
                    0
                }
                206 => done,
                _ => {
                    return Err(session.status_error(
                        &request,
                        response,
                        &format!("blob {digest} of {repository}"),
                    ))
                }
            };
            if status == 206 && skip != 0 {
                // A partial answer from elsewhere than asked: start over.
                return Err(corrupt(
                    "a partial answer that does not start where asked".into(),
                ));
            }
            let mut body = response.into_body().into_reader();
            let failure = loop {
                self.check_cancel()?;
                let n = match body.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(e) if retry::transient_io(&e) => break Some(e),
                    Err(e) => return Err(session.unreachable(&ureq::Error::Io(e), attempt + 1)),
                };
                let mut chunk = &buf[..n];
                if skip > 0 {
                    let s = skip.min(chunk.len() as u64) as usize;
                    chunk = &chunk[s..];
                    skip -= s as u64;
                }
                if done + chunk.len() as u64 > size {
                    return Err(corrupt(format!("more than {size} bytes")));
                }
                hasher.update(chunk);
                sink.write_all(chunk).map_err(|e| {
                    RegistryError::Store(crate::oci::OciError::Io {
                        path: "<download>".into(),
                        source: e,
                    })
                })?;
                done += chunk.len() as u64;
                progress(done);
            };
            match failure {
                None if done == size => break,
                None => {
                    // The body ended early without an error: as good as a reset connection.
                    attempt += 1;
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the body ended after {done} of {size} bytes"),
                    );
                    session.wait_before_retry(
                        &request,
                        Failure::Transport(ureq::Error::Io(e)),
                        attempt,
                    )?;
                }
                Some(e) => {
                    attempt += 1;
                    session.wait_before_retry(
                        &request,
                        Failure::Transport(ureq::Error::Io(e)),
                        attempt,
                    )?;
                }
            }
        }
        let found = hex::encode(hasher.finalize());
        if found != expected_hex {
            return Err(corrupt(format!("sha256:{found}")));
        }
        Ok(())
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: Option<&str>) -> Option<u64> {
    let value = value?.trim().strip_prefix("bytes")?.trim_start();
    value.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("bytes=5-")), None);
        assert_eq!(content_range_start(None), None);
    }
}
