//! Sessions with registries and the requests of the distribution API.
//!
//! A session per registry is opened on first use: `GET /v2/` over https (or http when TLS is
//! not verified and the registry does not speak it) tells the scheme and the challenge. Each
//! request then carries `Basic` credentials or a `Bearer` token fetched for its scopes (cached
//! per scope set, fetched again once when the registry says it expired), and is retried with
//! backoff on transient failures.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::str::FromStr;

use base64::Engine as _;
use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::Digest as _;
use ureq::http::{Method, Response};
use ureq::Body;

use super::challenge::{self, Challenge};
use super::credentials::{AuthFiles, Credential, Found};
use super::locations::BlobLocations;
use super::reference::{api_host, Repository};
use super::{retry, tls, RegistryError};
use crate::cancel::CancelToken;

/// Manifest media types we read, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests are small documents; anything bigger is not one (containers/image has the same cap).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// Registry error bodies are read up to this much.
const MAX_ERROR_BODY: u64 = 64 * 1024;

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

type Notifier = Arc<dyn Fn(&str) + Send + Sync>;

/// A registry client; cheap to share between threads.
pub struct Client {
    pub(crate) options: ClientOptions,
    auth_files: AuthFiles,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) locations: BlobLocations,
    notifier: Option<Notifier>,
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

/// One request of the API, before its body.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// `repository:NAME:ACTIONS` scopes for a bearer token, and the repository for credentials.
    pub scopes: Vec<(Repository, &'static str)>,
}

impl Request {
    pub fn new(method: Method, url: String) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            scopes: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub fn scope(mut self, repository: &Repository, actions: &'static str) -> Request {
        self.scopes.push((repository.clone(), actions));
        self
    }

    /// The path for messages (no host, no query).
    pub fn path(&self) -> String {
        let without_scheme = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        let path = without_scheme
            .find('/')
            .map_or("/", |i| &without_scheme[i..]);
        path.split('?').next().unwrap_or(path).to_string()
    }
}

/// A body that can be sent again on a retry.
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
}

/// Why one attempt failed.
pub(crate) enum Failure {
    Transport(ureq::Error),
    /// A status worth retrying (429, 5xx), with the response for its message.
    Status(Response<Body>),
}

/// Why a streamed request failed: worth resuming, or not.
pub(crate) enum StreamFailure {
    Transient(Failure),
    Fatal(RegistryError),
}

/// A registry, as this process talks to it.
pub(crate) struct Session {
    pub registry: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub base: String,
    agent: ureq::Agent,
    challenge: Option<Challenge>,
    auth_files: AuthFiles,
    credentials: Mutex<HashMap<Repository, Option<Found>>>,
    tokens: Mutex<HashMap<String, String>>,
    retries: u32,
    backoff: Duration,
    notifier: Option<Notifier>,
    cancel: CancelToken,
}

impl Session {
    fn open(client: &Client, registry: &str) -> Result<Session, RegistryError> {
        let host = api_host(registry);
        let verify = client.options.tls_verify;
        let dirs = tls::cert_dirs(client.options.cert_dir.as_deref(), host);
        let tls_config = tls::config(verify, &dirs)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls_config)
            .max_redirects(10)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(300)))
            .timeout_per_write(Some(Duration::from_secs(300)))
            .user_agent(concat!("fissile-oci/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(16)
            .build()
            .into();
        let mut session = Session {
            registry: registry.to_string(),
            base: format!("https://{host}"),
            agent,
            challenge: None,
            auth_files: client.auth_files.clone(),
            credentials: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            retries: client.options.retries,
            backoff: client.options.backoff,
            notifier: client.notifier.clone(),
            cancel: client.cancel.clone(),
        };
        let ping = Request::new(Method::GET, format!("{}/v2/", session.base));
        let response = if verify {
            session.send_unauthenticated(&ping, session.retries)?
        } else {
            // As containers/image does for an insecure registry: https if it answers at all,
            // else plain http.
            match session.send_unauthenticated(&ping, 0) {
                Ok(r) => r,
                Err(_) => {
                    session.base = format!("http://{host}");
                    let ping = Request::new(Method::GET, format!("{}/v2/", session.base));
                    session.send_unauthenticated(&ping, session.retries)?
                }
            }
        };
        match response.status().as_u16() {
            200 => {}
            401 => {
                let values: Vec<&str> = response
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                session.challenge = challenge::parse(&values);
                if session.challenge.is_none() {
                    return Err(RegistryError::Unsupported {
                        registry: registry.to_string(),
                        message: format!(
                            "asks for an authentication scheme this client does not know: {values:?}"
                        ),
                    });
                }
            }
            _ => {
                return Err(session.status_error(&ping, response, "the registry API (/v2/)"));
            }
        }
        Ok(session)
    }

    fn say(&self, message: &str) {
        if let Some(n) = &self.notifier {
            n(message);
        }
    }

    /// The ping: no credentials yet, transient failures retried; a TLS failure says whether
    /// the peer speaks TLS at all.
    fn send_unauthenticated(
        &self,
        request: &Request,
        retries: u32,
    ) -> Result<Response<Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.agent.run(build(request, None, ())) {
                Ok(response) if !retry::transient_status(response.status().as_u16()) => {
                    return Ok(response)
                }
                Ok(response) => Failure::Status(response),
                Err(e) => {
                    if let Some(message) = tls::tls_error(&e) {
                        let not_tls = tls::is_not_tls(&e);
                        return Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            message: if not_tls {
                                format!("{message} (it does not speak TLS: a plain http registry?)")
                            } else {
                                message
                            },
                            hint: if not_tls {
                                "use --tls-verify=false for a plain http registry".into()
                            } else {
                                "trust its CA with --cert-dir DIR (a directory with the CA as ca.crt), or pass --tls-verify=false".into()
                            },
                        });
                    }
                    if !retry::transient_transport(&e) {
                        return Err(self.unreachable(&e, attempt));
                    }
                    Failure::Transport(e)
                }
            };
            if attempt > retries {
                return Err(match failure {
                    Failure::Transport(e) => self.unreachable(&e, attempt),
                    Failure::Status(r) => self.status_error(request, r, "the registry API (/v2/)"),
                });
            }
            self.wait_before_retry(request, failure, attempt)?;
        }
    }

    /// Sleeps before the next attempt, or turns the last failure into the error.
    pub fn wait_before_retry(
        &self,
        request: &Request,
        failure: Failure,
        attempt: u32,
    ) -> Result<(), RegistryError> {
        if self.cancel.is_cancelled() {
            return Err(RegistryError::Interrupted);
        }
        let retry_after = match &failure {
            Failure::Status(r) => header(r, "retry-after"),
            Failure::Transport(_) => None,
        };
        if attempt > self.retries {
            return Err(match failure {
                Failure::Transport(e) => self.unreachable(&e, attempt),
                Failure::Status(response) => self.status_error(request, response, "the request"),
            });
        }
        let what = match &failure {
            Failure::Transport(e) => transport_message(e),
            Failure::Status(r) => format!("answered {}", r.status()),
        };
        let delay = retry::delay(self.backoff, attempt, retry_after.as_deref());
        self.say(&format!(
            "{} {}: {what}; retrying in {:.1}s (attempt {} of {})",
            self.registry,
            request.path(),
            delay.as_secs_f64(),
            attempt + 1,
            self.retries + 1
        ));
        if self.cancel.wait_timeout(delay) {
            return Err(RegistryError::Interrupted);
        }
        Ok(())
    }

    pub fn unreachable(&self, error: &ureq::Error, attempts: u32) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            message: transport_message(error),
            attempts,
        }
    }

    /// One request with its authorization, retried on transient failures.
    pub fn send(
        &self,
        request: &Request,
        payload: Payload<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        if self.cancel.is_cancelled() {
            return Err(RegistryError::Interrupted);
        }
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let auth = self.authorization(request)?;
            let result = match payload {
                Payload::None => self.agent.run(build(request, auth.as_deref(), ())),
                Payload::Bytes(bytes) => self.agent.run(build(request, auth.as_deref(), bytes)),
            };
            let failure = match result {
                Ok(response) if response.status().as_u16() == 401 && !renewed => {
                    // A cached token may have expired: fetch one once more, then believe it.
                    renewed = true;
                    if self.forget_token(request) {
                        attempt -= 1;
                        continue;
                    }
                    return Ok(response);
                }
                Ok(response) if retry::transient_status(response.status().as_u16()) => {
                    Failure::Status(response)
                }
                Ok(response) => return Ok(response),
                Err(e) if retry::transient_transport(&e) => Failure::Transport(e),
                Err(e) => return Err(self.unreachable(&e, attempt)),
            };
            self.wait_before_retry(request, failure, attempt)?;
        }
    }

    /// One request whose body streams from `reader` (`len` bytes); not retried here, since the
    /// body cannot be replayed: the caller resumes.
    pub fn send_stream(
        &self,
        request: &Request,
        reader: &mut dyn Read,
        len: u64,
    ) -> Result<Response<Body>, StreamFailure> {
        let auth = self.authorization(request).map_err(StreamFailure::Fatal)?;
        let mut with_length = request.clone();
        with_length
            .headers
            .push(("Content-Length", len.to_string()));
        let body = ureq::SendBody::from_reader(reader);
        match self.agent.run(build(&with_length, auth.as_deref(), body)) {
            Ok(r) if retry::transient_status(r.status().as_u16()) => {
                Err(StreamFailure::Transient(Failure::Status(r)))
            }
            Ok(r) => Ok(r),
            Err(_) if self.cancel.is_cancelled() => {
                Err(StreamFailure::Fatal(RegistryError::Interrupted))
            }
            Err(e) if retry::transient_transport(&e) => {
                Err(StreamFailure::Transient(Failure::Transport(e)))
            }
            Err(e) => Err(StreamFailure::Fatal(self.unreachable(&e, 1))),
        }
    }

    fn credential(&self, repository: &Repository) -> Result<Option<Found>, RegistryError> {
        let mut known = self.credentials.lock().expect("credentials lock");
        if let Some(found) = known.get(repository) {
            return Ok(found.clone());
        }
        let found = self.auth_files.lookup(repository)?;
        known.insert(repository.clone(), found.clone());
        Ok(found)
    }

    /// The `Authorization` header for a request, as the registry's challenge asks.
    fn authorization(&self, request: &Request) -> Result<Option<String>, RegistryError> {
        let Some(challenge) = &self.challenge else {
            return Ok(None);
        };
        let Some((repository, _)) = request.scopes.first() else {
            return Ok(None);
        };
        let found = self.credential(repository)?;
        match challenge {
            Challenge::Basic => Ok(found.and_then(|f| match f.credential {
                Credential::Basic { username, password } => Some(basic(&username, &password)),
                Credential::IdentityToken(_) => None,
            })),
            Challenge::Bearer { realm, service } => {
                let key = scope_key(request);
                if let Some(token) = self.tokens.lock().expect("tokens lock").get(&key) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token = self.fetch_token(realm, service.as_deref(), request, found.as_ref())?;
                self.tokens
                    .lock()
                    .expect("tokens lock")
                    .insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Drops the token used for `request`; true if there was one.
    fn forget_token(&self, request: &Request) -> bool {
        matches!(self.challenge, Some(Challenge::Bearer { .. }))
            && self
                .tokens
                .lock()
                .expect("tokens lock")
                .remove(&scope_key(request))
                .is_some()
    }

    /// A bearer token from the registry's token service, for the request's scopes.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        request: &Request,
        found: Option<&Found>,
    ) -> Result<String, RegistryError> {
        let scopes: Vec<String> = request
            .scopes
            .iter()
            .map(|(r, actions)| format!("repository:{}:{actions}", r.name))
            .collect();
        let mut token_request = Request::new(Method::GET, realm.to_string());
        let response = match found.map(|f| &f.credential) {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=fissile-oci&refresh_token={}",
                    encode(refresh)
                );
                if let Some(s) = service {
                    form.push_str(&format!("&service={}", encode(s)));
                }
                form.push_str(&format!("&scope={}", encode(&scopes.join(" "))));
                token_request.method = Method::POST;
                token_request =
                    token_request.header("Content-Type", "application/x-www-form-urlencoded");
                self.send_plain(&token_request, None, Some(form.as_bytes()))?
            }
            other => {
                let mut url = realm.to_string();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                if let Some(s) = service {
                    url.push_str(&format!("{sep}service={}", encode(s)));
                    sep = '&';
                }
                for scope in &scopes {
                    url.push_str(&format!("{sep}scope={}", encode(scope)));
                    sep = '&';
                }
                token_request.url = url;
                let auth = match other {
                    Some(Credential::Basic { username, password }) => {
                        Some(basic(username, password))
                    }
                    _ => None,
                };
                self.send_plain(&token_request, auth.as_deref(), None)?
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            let repository = request
                .scopes
                .first()
                .map(|(r, _)| r.clone())
                .expect("a scoped request");
            return Err(self.auth_error(status, &repository, response, &token_request));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let mut response = response;
        let bytes = read_limited(self, &token_request, &mut response, MAX_ERROR_BODY)?;
        let reply: TokenReply =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                method: token_request.method.to_string(),
                path: token_request.path(),
                status,
                message: format!("the token service's answer is not JSON with a token: {e}"),
            })?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                method: token_request.method.to_string(),
                path: token_request.path(),
                status,
                message: "the token service answered without a token".into(),
            })
    }

    /// A request outside the registry's own auth (the token service), retried.
    fn send_plain(
        &self,
        request: &Request,
        auth: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match body {
                Some(bytes) => self.agent.run(build(request, auth, bytes)),
                None => self.agent.run(build(request, auth, ())),
            };
            let failure = match result {
                Ok(r) if retry::transient_status(r.status().as_u16()) => Failure::Status(r),
                Ok(r) => return Ok(r),
                Err(e) if retry::transient_transport(&e) => Failure::Transport(e),
                Err(e) => return Err(self.unreachable(&e, attempt)),
            };
            self.wait_before_retry(request, failure, attempt)?;
        }
    }

    fn auth_error(
        &self,
        status: u16,
        repository: &Repository,
        response: Response<Body>,
        request: &Request,
    ) -> RegistryError {
        let message = error_message(response);
        let found = self.credential(repository).ok().flatten();
        match (status, found) {
            (401, Some(found)) => RegistryError::CredentialsRefused {
                registry: self.registry.clone(),
                origin: format!("from {}", found.origin),
                message,
            },
            (401, None) => RegistryError::CredentialsMissing {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                message,
            },
            (403, _) => RegistryError::Denied {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                action: format!("{} {}", request.method, request.path()),
                message,
            },
            _ => RegistryError::Protocol {
                registry: self.registry.clone(),
                method: request.method.to_string(),
                path: request.path(),
                status,
                message,
            },
        }
    }

    /// The error for a response that is not the one the API promises.
    pub fn status_error(
        &self,
        request: &Request,
        response: Response<Body>,
        what: &str,
    ) -> RegistryError {
        let status = response.status().as_u16();
        match status {
            401 | 403 => {
                let repository = request
                    .scopes
                    .first()
                    .map(|(r, _)| r.clone())
                    .unwrap_or_else(|| Repository {
                        registry: self.registry.clone(),
                        name: String::new(),
                    });
                self.auth_error(status, &repository, response, request)
            }
            404 => RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_string(),
                message: error_message(response),
            },
            _ => RegistryError::Protocol {
                registry: self.registry.clone(),
                method: request.method.to_string(),
                path: request.path(),
                status,
                message: error_message(response),
            },
        }
    }

    /// The absolute URL of a response's `Location`.
    pub fn location(
        &self,
        request: &Request,
        response: Response<Body>,
    ) -> Result<String, RegistryError> {
        match header(&response, "location") {
            Some(location) => Ok(self.absolute(&location)),
            None => Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                method: request.method.to_string(),
                path: request.path(),
                status: response.status().as_u16(),
                message: "no Location header in the answer".into(),
            }),
        }
    }

    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }
}

/// The scopes of a request as a cache key for its token.
fn scope_key(request: &Request) -> String {
    let mut scopes: Vec<String> = request
        .scopes
        .iter()
        .map(|(r, a)| format!("{}:{a}", r.name))
        .collect();
    scopes.sort();
    scopes.join(" ")
}

fn build<B>(request: &Request, auth: Option<&str>, body: B) -> ureq::http::Request<B> {
    let mut builder = ureq::http::Request::builder()
        .method(request.method.clone())
        .uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    if let Some(auth) = auth {
        builder = builder.header("Authorization", auth);
    }
    builder
        .body(body)
        .expect("method, URL and headers built from valid parts")
}

fn basic(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

pub(crate) fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// Reads a small body whole, refusing more than `max` bytes.
pub(crate) fn read_limited(
    session: &Session,
    request: &Request,
    response: &mut Response<Body>,
    max: u64,
) -> Result<Vec<u8>, RegistryError> {
    response
        .body_mut()
        .with_config()
        .limit(max)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => RegistryError::Protocol {
                registry: session.registry.clone(),
                method: request.method.to_string(),
                path: request.path(),
                status: response.status().as_u16(),
                message: format!("the answer is larger than {max} bytes"),
            },
            e => session.unreachable(&e, 1),
        })
}

/// The registry's own words from an error body (`{"errors": [{"code", "message"}]}`), else
/// the status line.
pub(crate) fn error_message(mut response: Response<Body>) -> String {
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{} ({})", e.message, e.code))
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() || text.len() > 200 {
                status.to_string()
            } else {
                format!("{status}: {text}")
            }
        }
    }
}

fn transport_message(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

/// A manifest's media type: the `Content-Type` without parameters, else its `mediaType`.
fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
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

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

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
