//! Registry credentials, found where podman and docker keep them.
//!
//! An auth file given with `--authfile` or `$REGISTRY_AUTH_FILE` is the only one read (as in
//! containers/image). Otherwise, in order: `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`) and the legacy `~/.dockercfg`. In each file a `credHelpers` entry for
//! the registry, else a `credsStore`, names a `docker-credential-<helper>` program to ask;
//! otherwise `auths` is searched from the most specific key (`host/ns/repo`) to the host, then
//! in the legacy spellings (`https://host/v1/`, `index.docker.io` for Docker Hub). The first file
//! that knows the registry wins.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::reference::{Repository, DOCKER_HUB};
use super::RegistryError;

/// What a registry is told, once it asks.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

// Never print secrets, not even in debug output.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

/// Credentials for one registry and where they came from (for error messages).
#[derive(Clone, Debug)]
pub struct Found {
    pub credential: Credential,
    pub origin: String,
}

/// The auth files to read, in order.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    files: Vec<AuthFile>,
}

#[derive(Clone, Debug)]
struct AuthFile {
    path: PathBuf,
    /// `~/.dockercfg`: the `auths` map is the whole file.
    legacy: bool,
}

impl AuthFiles {
    /// The files podman would read, or only `explicit` (`--authfile`).
    pub fn discover(explicit: Option<&Path>) -> AuthFiles {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let file = |path: PathBuf| AuthFile {
            path,
            legacy: false,
        };
        if let Some(path) = explicit
            .map(Path::to_path_buf)
            .or_else(|| env("REGISTRY_AUTH_FILE").map(PathBuf::from))
        {
            return AuthFiles {
                files: vec![file(path)],
            };
        }
        let home = env("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let mut files = Vec::new();
        match env("XDG_RUNTIME_DIR") {
            Some(dir) => files.push(file(PathBuf::from(dir).join("containers/auth.json"))),
            None => files.push(file(PathBuf::from(format!(
                "/run/containers/{}/auth.json",
                nix::unistd::getuid()
            )))),
        }
        let config_home = env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        files.push(file(config_home.join("containers/auth.json")));
        files.push(file(match env("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => home.join(".docker/config.json"),
        }));
        files.push(AuthFile {
            path: home.join(".dockercfg"),
            legacy: true,
        });
        AuthFiles { files }
    }

    /// Only these files (tests, and callers with their own configuration).
    pub fn from_paths(paths: &[PathBuf]) -> AuthFiles {
        AuthFiles {
            files: paths
                .iter()
                .map(|p| AuthFile {
                    path: p.clone(),
                    legacy: false,
                })
                .collect(),
        }
    }

    /// The credentials for `repository`, if any file knows its registry.
    pub fn lookup(&self, repository: &Repository) -> Result<Option<Found>, RegistryError> {
        for file in &self.files {
            let text = match fs_err::read_to_string(&file.path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(RegistryError::Credentials {
                        path: file.path.clone(),
                        message: e.to_string(),
                    })
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let parsed = if file.legacy {
                serde_json::from_str::<BTreeMap<String, AuthEntry>>(&text).map(|auths| ConfigFile {
                    auths,
                    ..ConfigFile::default()
                })
            } else {
                serde_json::from_str::<ConfigFile>(&text)
            };
            let config = parsed.map_err(|e| RegistryError::Credentials {
                path: file.path.clone(),
                message: format!("not an auth file: {e}"),
            })?;
            if let Some(found) = config.lookup(repository, &file.path)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl ConfigFile {
    fn lookup(&self, repository: &Repository, path: &Path) -> Result<Option<Found>, RegistryError> {
        let registry = repository.registry.as_str();
        let helper = self
            .cred_helpers
            .get(registry)
            .or_else(|| {
                (registry == DOCKER_HUB)
                    .then(|| self.cred_helpers.get("index.docker.io"))
                    .flatten()
            })
            .or(self.creds_store.as_ref())
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper {
            return ask_helper(helper, registry);
        }
        for key in candidate_keys(repository) {
            let entry = self
                .auths
                .iter()
                .find(|(k, _)| normalise_key(k) == key)
                .map(|(_, v)| v);
            if let Some(entry) = entry {
                if let Some(credential) = entry.credential(path, &key)? {
                    return Ok(Some(Found {
                        credential,
                        origin: format!("{} (\"{key}\")", path.display()),
                    }));
                }
            }
        }
        Ok(None)
    }
}

impl AuthEntry {
    fn credential(&self, path: &Path, key: &str) -> Result<Option<Credential>, RegistryError> {
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token.to_string())));
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = |why: &str| RegistryError::Credentials {
                path: path.to_path_buf(),
                message: format!("the \"auth\" of {key:?} {why}"),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("is not base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| bad("is not base64 of USER:PASSWORD"))?;
            return Ok(Some(Credential::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        match (&self.username, &self.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }))
            }
            _ => Ok(None),
        }
    }
}

/// `host/ns/repo`, `host/ns`, `host`: the most specific first, as containers/image searches.
fn candidate_keys(repository: &Repository) -> Vec<String> {
    let mut keys = Vec::new();
    let mut path = format!("{}/{}", repository.registry, repository.name);
    loop {
        keys.push(path.clone());
        match path.rfind('/') {
            Some(i) => path.truncate(i),
            None => break,
        }
    }
    keys
}

/// A key as written in a file, reduced to `host[/path]`: scheme and the legacy `/v1/` suffix
/// dropped, Docker Hub's old names turned into `docker.io`.
fn normalise_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key.split_once('/') {
        Some((host, rest)) if host == "index.docker.io" || host == "registry-1.docker.io" => {
            format!("{DOCKER_HUB}/{rest}")
        }
        None if key == "index.docker.io" || key == "registry-1.docker.io" => DOCKER_HUB.into(),
        _ => key.to_string(),
    }
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `docker-credential-<helper> get`, the server on stdin, JSON on stdout.
fn ask_helper(helper: &str, registry: &str) -> Result<Option<Found>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let failed = |message: String| RegistryError::CredentialHelper {
        helper: program.clone(),
        message,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot run it ({e}); install it or remove it from the auth file"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| failed(format!("cannot write to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // The helpers' own wording for "nothing stored for this server".
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("{}: {}", out.status, said.trim())));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|e| failed(format!("unexpected answer: {e}")))?;
    let credential = if reply.username == "<token>" {
        Credential::IdentityToken(reply.secret)
    } else {
        Credential::Basic {
            username: reply.username,
            password: reply.secret,
        }
    };
    Ok(Some(Found {
        credential,
        origin: format!("{program} for {server}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(registry: &str, name: &str) -> Repository {
        Repository {
            registry: registry.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_most_specific_key_wins_and_legacy_keys_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "reg.io": {"auth": b64("host:pw1")},
                "reg.io/team": {"auth": b64("team:pw2")},
                "https://index.docker.io/v1/": {"auth": b64("hub:pw3")},
                "tok.io": {"identitytoken": "refresh"},
                "plain.io": {"username": "u", "password": "p:with:colons"}
            }})
            .to_string(),
        )
        .unwrap();
        let files = AuthFiles::from_paths(std::slice::from_ref(&path));
        let user = |r: Repository| match files.lookup(&r).unwrap().map(|f| f.credential) {
            Some(Credential::Basic { username, password }) => format!("{username}:{password}"),
            Some(Credential::IdentityToken(t)) => format!("token:{t}"),
            None => "none".into(),
        };
        assert_eq!(user(repo("reg.io", "team/app")), "team:pw2");
        assert_eq!(user(repo("reg.io", "other/app")), "host:pw1");
        assert_eq!(user(repo("docker.io", "library/debian")), "hub:pw3");
        assert_eq!(user(repo("tok.io", "x")), "token:refresh");
        assert_eq!(user(repo("plain.io", "x")), "u:p:with:colons");
        assert_eq!(user(repo("unknown.io", "x")), "none");
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, r#"{"auths": {"reg.io": {"auth": "!!!"}}}"#).unwrap();
        let err = AuthFiles::from_paths(std::slice::from_ref(&path))
            .lookup(&repo("reg.io", "x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.json") && err.contains("base64"), "{err}");
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers": {"reg.io": "fissile-oci-none"}}"#).unwrap();
        let err = AuthFiles::from_paths(std::slice::from_ref(&path))
            .lookup(&repo("reg.io", "x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("docker-credential-fissile-oci-none"), "{err}");
    }
}
