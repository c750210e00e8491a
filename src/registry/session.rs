//! A session with one registry. Opening it pings `GET /v2/` over https (or http when TLS is not
//! verified and the registry does not speak it) to learn the scheme and the challenge. Requests
//! then carry their authorization (`auth`) and are retried with backoff on transient failures;
//! a streamed request is not (its body cannot be replayed), its caller resumes.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::AtomicU8;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Method, Response};
use ureq::Body;

use super::challenge::{self, Challenge};
use super::client::{Client, Notifier};
use super::credentials::{AuthFiles, Found};
use super::reference::{api_host, Repository};
use super::request::{
    build, error_message, header, transport_message, Failure, Payload, Request, StreamFailure,
};
use super::{retry, tls, RegistryError};
use crate::cancel::CancelToken;

/// Whether a registry commits a blob sent with its `POST ?digest=`: not asked yet, yes, no.
pub(crate) const SINGLE_POST_UNKNOWN: u8 = 0;
pub(crate) const SINGLE_POST_YES: u8 = 1;
pub(crate) const SINGLE_POST_NO: u8 = 2;

/// A registry, as this process talks to it.
pub(crate) struct Session {
    pub registry: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub base: String,
    pub(super) agent: ureq::Agent,
    pub(super) challenge: Option<Challenge>,
    pub(super) auth_files: AuthFiles,
    pub(super) credentials: Mutex<HashMap<Repository, Option<Found>>>,
    pub(super) tokens: Mutex<HashMap<String, String>>,
    pub(super) retries: u32,
    pub(super) backoff: Duration,
    pub(super) notifier: Option<Notifier>,
    pub(super) cancel: CancelToken,
    /// `SINGLE_POST_*`: what the registry did with the last monolithic `POST`.
    pub(super) single_post: AtomicU8,
}

impl Session {
    pub(super) fn open(client: &Client, registry: &str) -> Result<Session, RegistryError> {
        let host = api_host(registry);
        let verify = client.options.tls_verify;
        let dirs = tls::cert_dirs(client.options.cert_dir.as_deref(), host);
        let tls_config = tls::config(verify, &dirs)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls_config)
            .max_redirects(10)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(client.options.connect_timeout))
            .timeout_per_read(Some(client.options.io_timeout))
            .timeout_per_write(Some(client.options.io_timeout))
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
            single_post: AtomicU8::new(SINGLE_POST_UNKNOWN),
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

    pub(super) fn say(&self, message: &str) {
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
