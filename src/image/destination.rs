//! Where images go, written as skopeo writes transports: `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME[:TAG]]` and
//! `docker://HOST[:PORT]/REPO[:TAG]`. As in skopeo, the path ends at the first `:`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::registry::reference::valid_tag;
use crate::registry::Reference;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An OCI image layout directory (created if needed).
    Layout { dir: PathBuf, tag: Option<String> },
    /// A tar of an OCI image layout.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// A `docker save` archive, for `docker load` and `podman load`.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// A registry repository.
    Registry(Reference),
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME[:TAG]] or docker://HOST[:PORT]/REPO[:TAG]";
        if let Some(rest) = s.strip_prefix("docker://") {
            return Reference::parse(rest)
                .map(Destination::Registry)
                .map_err(|e| e.to_string());
        }
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} names no transport: {usage}"))?;
        let (path, tag) = match rest.split_once(':') {
            Some((path, tag)) => (path, Some(tag.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: the path is empty: {usage}"));
        }
        if let Some(tag) = &tag {
            check_name(tag)?;
        }
        let path = PathBuf::from(path);
        match transport {
            "oci" => Ok(Destination::Layout { dir: path, tag }),
            "oci-archive" => Ok(Destination::OciArchive { file: path, tag }),
            "docker-archive" => Ok(Destination::DockerArchive {
                file: path,
                reference: tag,
            }),
            "docker" => Err(format!("{s:?}: write docker://HOST/REPO[:TAG]")),
            other => Err(format!("unknown transport {other:?}: {usage}")),
        }
    }
}

impl Destination {
    /// The image name the destination itself gives, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Destination::Layout { tag, .. } | Destination::OciArchive { tag, .. } => tag.as_deref(),
            Destination::DockerArchive { reference, .. } => reference.as_deref(),
            Destination::Registry(reference) => reference.tag.as_deref(),
        }
    }

    /// Checks that `name` can name an image here (a docker tag for a registry, a docker
    /// reference for a docker archive, an OCI ref name otherwise).
    pub fn check_image_name(&self, name: &str) -> Result<(), String> {
        match self {
            Destination::Registry(_) if !valid_tag(name) => Err(format!(
                "{name:?} is not a valid tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )),
            Destination::DockerArchive { .. } => {
                Reference::parse(&docker_archive_name(name))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => check_name(name),
        }
    }
}

/// A docker archive's `RepoTags` entry for an image name: `NAME:TAG`, `:latest` when the name
/// has no tag.
pub fn docker_archive_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// An image name that is also an OCI ref name: printable, no whitespace.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(format!(
            "{name:?} cannot name an image: use letters, digits and . _ - / :"
        ));
    }
    Ok(())
}

/// The default image name: the releases' names joined by `-`, in the characters every
/// destination accepts.
pub fn default_name<'a>(releases: impl IntoIterator<Item = &'a str>) -> String {
    let joined = releases.into_iter().collect::<Vec<_>>().join("-");
    let cleaned: String = joined
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.' || c == '_');
    if cleaned.is_empty() {
        "release".to_string()
    } else {
        cleaned.chars().take(100).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skopeo_transports() {
        assert_eq!(
            "oci:/out/layout:v1".parse::<Destination>().unwrap(),
            Destination::Layout {
                dir: "/out/layout".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci-archive:img.tar".parse::<Destination>().unwrap(),
            Destination::OciArchive {
                file: "img.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:/tmp/x.tar:team/app:1.0"
                .parse::<Destination>()
                .unwrap(),
            Destination::DockerArchive {
                file: "/tmp/x.tar".into(),
                reference: Some("team/app:1.0".into())
            }
        );
        let Destination::Registry(r) = "docker://127.0.0.1:5000/team/app:2"
            .parse::<Destination>()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.repository.name, "team/app");
        assert_eq!(r.tag.as_deref(), Some("2"));
        for bad in ["nowhere", "oci:", "ftp:x", "docker:x", "oci:/x:has space"] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(default_name(["hello"]), "hello");
        assert_eq!(
            default_name(["Cf_Mysql", "routing+x"]),
            "cf_mysql-routing-x"
        );
        assert_eq!(docker_archive_name("hello"), "hello:latest");
        assert_eq!(docker_archive_name("team/hello:1-web"), "team/hello:1-web");
        assert_eq!(
            docker_archive_name("localhost:5000/hello"),
            "localhost:5000/hello:latest"
        );
        let registry: Destination = "docker://r.io/app".parse().unwrap();
        assert!(registry.check_image_name("1.0-web").is_ok());
        assert!(registry.check_image_name("a/b").is_err());
        let archive: Destination = "docker-archive:x.tar".parse().unwrap();
        assert!(archive.check_image_name("Hello").is_err());
    }
}
