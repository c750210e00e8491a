//! Image references as docker, podman and skopeo write them after `docker://`:
//! `[HOST[:PORT]/]NAME[:TAG][@DIGEST]`. A first component with a `.` or `:`, or `localhost`, is a
//! registry host; otherwise the image is on Docker Hub (`docker.io`, `library/` for one-component
//! names), whose API answers at `registry-1.docker.io`.

use std::fmt;

use super::RegistryError;

pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A repository on a registry: `127.0.0.1:5000/team/app`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// `host[:port]` as written (Docker Hub as `docker.io`).
    pub registry: String,
    /// The path inside the registry, e.g. `library/debian`.
    pub name: String,
}

impl Repository {
    /// The host the API is reached at.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// A repository and a tag or a digest (or both: the digest wins when pulling).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub repository: Repository,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `[HOST[:PORT]/]NAME[:TAG][@DIGEST]` (without the `docker://`).
    pub fn parse(input: &str) -> Result<Reference, RegistryError> {
        let bad = |reason: &str| RegistryError::Reference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty: write HOST[:PORT]/REPOSITORY[:TAG]"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|r| bad(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (path, tag) = match rest[last_slash..].find(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(bad(&format!(
                    "tag {tag:?} is not valid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                )));
            }
        }
        let (registry, name) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), path.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        check_host(&registry).map_err(|r| bad(&r))?;
        let name = if registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name
        };
        check_name(&name).map_err(|r| bad(&r))?;
        Ok(Reference {
            repository: Repository { registry, name },
            tag,
            digest,
        })
    }

    /// What the manifest is fetched by: the digest, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => (name, Some(port)),
        _ => (host, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("{port:?} is not a port number"));
        }
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a registry host"))
    }
}

/// Path components: lowercase letters and digits, joined by `.`, `_`, `__` or dashes.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no repository name after the registry".into());
    }
    if name.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = !bytes.is_empty()
            && alnum(bytes[0])
            && alnum(bytes[bytes.len() - 1])
            && bytes
                .iter()
                .all(|&b| alnum(b) || b == b'.' || b == b'_' || b == b'-')
            && !component.contains("..")
            && !component.contains("___");
        if !ok {
            return Err(format!(
                "repository component {component:?} is not valid: lowercase letters and digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some(("sha512", hex))
            if hex.len() == 128
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "digest {digest:?} is not sha256:<64 hex> (or sha512:<128 hex>)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/team/app:1.0");
        assert_eq!(r.repository.registry, "127.0.0.1:5000");
        assert_eq!(r.repository.name, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_reference(), "1.0");
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.0");

        let r = parse("localhost/app");
        assert_eq!(r.repository.registry, "localhost");
        assert_eq!(r.manifest_reference(), "latest");

        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("reg.example.com/app:1@{digest}"));
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.repository.api_host(), "reg.example.com");
    }

    #[test]
    fn docker_hub_is_normalised() {
        let r = parse("debian:bookworm");
        assert_eq!(r.repository.registry, "docker.io");
        assert_eq!(r.repository.name, "library/debian");
        assert_eq!(r.repository.api_host(), "registry-1.docker.io");
        assert_eq!(parse("bitnami/redis").repository.name, "bitnami/redis");
        assert_eq!(
            parse("index.docker.io/library/alpine").repository.registry,
            "docker.io"
        );
    }

    #[test]
    fn bad_references_say_why() {
        for bad in [
            "",
            "Reg.example.com/App",
            "host:99999/app",
            "host.io/app:-bad",
            "host.io/app@sha256:xyz",
            "host.io/",
            "host.io/a//b",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not an image reference"), "{bad}: {err}");
        }
        assert!(valid_tag("v1.0_rc-2"));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag(&"a".repeat(129)));
    }
}
