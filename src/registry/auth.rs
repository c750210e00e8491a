//! A session's authorization: `Basic` with the repository's credentials, or a `Bearer` token
//! from the registry's token service for the request's scopes (Basic credentials, a refresh
//! token, or none), cached per scope set and fetched again once when the registry says it
//! expired.

use base64::Engine as _;
use ureq::http::{Method, Response};
use ureq::Body;

use super::challenge::Challenge;
use super::credentials::{Credential, Found};
use super::reference::Repository;
use super::request::{
    build, encode, error_message, read_limited, Failure, Request, MAX_ERROR_BODY,
};
use super::session::Session;
use super::{retry, RegistryError};

impl Session {
    pub(super) fn credential(
        &self,
        repository: &Repository,
    ) -> Result<Option<Found>, RegistryError> {
        let mut known = self.credentials.lock().expect("credentials lock");
        if let Some(found) = known.get(repository) {
            return Ok(found.clone());
        }
        let found = self.auth_files.lookup(repository)?;
        known.insert(repository.clone(), found.clone());
        Ok(found)
    }

    /// The `Authorization` header for a request, as the registry's challenge asks.
    pub(super) fn authorization(&self, request: &Request) -> Result<Option<String>, RegistryError> {
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
    pub(super) fn forget_token(&self, request: &Request) -> bool {
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
                self.send_plain(&token_request, None, Some(form.as_bytes()))
                    .map_err(|e| token_service(e, realm))?
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
                self.send_plain(&token_request, auth.as_deref(), None)
                    .map_err(|e| token_service(e, realm))?
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

    pub(super) fn auth_error(
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
}

/// An unreachable token service is named as such (it is often another host than the registry).
fn token_service(error: RegistryError, realm: &str) -> RegistryError {
    match error {
        RegistryError::Unreachable {
            registry,
            message,
            attempts,
        } => RegistryError::Unreachable {
            registry,
            message: format!("its token service {realm}: {message}"),
            attempts,
        },
        other => other,
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

fn basic(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}
