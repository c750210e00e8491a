//! One request of the distribution API as data (method, URL, headers, token scopes), how it is
//! built for the HTTP client, and what is read back: headers, small bodies, the registry's own
//! error messages.

use ureq::http::{Method, Response};
use ureq::Body;

use super::reference::Repository;
use super::session::Session;
use super::RegistryError;

/// Registry error bodies are read up to this much.
pub(crate) const MAX_ERROR_BODY: u64 = 64 * 1024;

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

pub(crate) fn build<B>(request: &Request, auth: Option<&str>, body: B) -> ureq::http::Request<B> {
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

pub(crate) fn transport_message(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
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
}
