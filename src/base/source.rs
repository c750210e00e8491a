//! Where a base image comes from, as the user writes it on the command line.

use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseSource {
    /// `debian:SUITE`: bootstrapped from the host's apt mirror.
    Debian { suite: String },
    /// `rootfs:PATH`: a rootfs tarball (e.g. a `docker export`) or directory.
    Rootfs(PathBuf),
    /// `oci:LAYOUT[:REF]`: an OCI layout directory or `oci-archive` tarball.
    Oci {
        layout: PathBuf,
        reference: Option<String>,
    },
    /// `docker-archive:TAR`: a `docker save` archive.
    DockerArchive(PathBuf),
    /// `busybox`: the host's static busybox (and bash), for tests and demos.
    Busybox,
    /// `stemcell:TARBALL`: a BOSH stemcell whose root filesystem is its `image` member (warden,
    /// bosh-lite); the base records the stemcell's OS and version.
    Stemcell(PathBuf),
    /// `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`: an image on a registry.
    Registry(crate::registry::Reference),
}

impl FromStr for BaseSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(reference) = s.strip_prefix("docker://") {
            return crate::registry::Reference::parse(reference)
                .map(BaseSource::Registry)
                .map_err(|e| e.to_string());
        }
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let need = |what: &str| -> Result<String, String> {
            if rest.is_empty() {
                Err(format!(
                    "{kind}: needs {what}, e.g. {kind}:{}",
                    example(kind)
                ))
            } else {
                Ok(rest.to_string())
            }
        };
        match kind {
            "debian" => Ok(BaseSource::Debian { suite: need("a suite")? }),
            "rootfs" => Ok(BaseSource::Rootfs(need("a tarball or directory")?.into())),
            "docker-archive" => Ok(BaseSource::DockerArchive(need("an archive path")?.into())),
            "stemcell" => Ok(BaseSource::Stemcell(need("a stemcell tarball")?.into())),
            "oci" => {
                let rest = need("a layout path")?;
                // A ref never contains '/', a path usually does: split on the last ':' only
                // when what follows looks like a ref.
                match rest.rsplit_once(':') {
                    Some((layout, reference)) if !reference.contains('/') && !reference.is_empty() => Ok(BaseSource::Oci {
                        layout: layout.into(),
                        reference: Some(reference.to_string()),
                    }),
                    _ => Ok(BaseSource::Oci {
                        layout: rest.into(),
                        reference: None,
                    }),
                }
            }
            "busybox" if rest.is_empty() => Ok(BaseSource::Busybox),
            _ => Err(format!(
                "unknown base source {s:?}: use debian:SUITE, rootfs:TARBALL_OR_DIR, oci:LAYOUT[:REF], docker-archive:TAR, stemcell:TARBALL, docker://HOST/REPO[:TAG] or busybox"
            )),
        }
    }
}

fn example(kind: &str) -> &'static str {
    match kind {
        "debian" => "bookworm",
        "rootfs" => "rootfs.tar",
        "oci" => "./layout:latest",
        "stemcell" => "bosh-warden-boshlite-ubuntu-jammy-go_agent.tgz",
        _ => "image.tar",
    }
}

impl BaseSource {
    /// The ref the built base is stored under unless `--tag` says otherwise.
    pub fn default_tag(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_matches('-')
                .to_string()
        };
        let stem = |p: &PathBuf| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into())
        };
        match self {
            BaseSource::Debian { suite } => format!("debian-{}", clean(suite)),
            BaseSource::Busybox => "busybox".to_string(),
            BaseSource::Rootfs(p) => format!("rootfs-{}", clean(&stem(p))),
            BaseSource::Oci { layout, reference } => {
                format!(
                    "oci-{}{}",
                    clean(&stem(layout)),
                    reference
                        .as_deref()
                        .map(|r| format!("-{}", clean(r)))
                        .unwrap_or_default()
                )
            }
            BaseSource::DockerArchive(p) => format!("docker-{}", clean(&stem(p))),
            BaseSource::Stemcell(p) => format!("stemcell-{}", clean(&stem(p))),
            BaseSource::Registry(r) => format!(
                "registry-{}{}",
                clean(&r.repository.name),
                r.tag
                    .as_deref()
                    .map(|t| format!("-{}", clean(t)))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "busybox".parse::<BaseSource>().unwrap(),
            BaseSource::Busybox
        );
        assert_eq!(
            "debian:bookworm".parse::<BaseSource>().unwrap(),
            BaseSource::Debian {
                suite: "bookworm".into()
            }
        );
        assert_eq!(
            "oci:/srv/layout:base".parse::<BaseSource>().unwrap(),
            BaseSource::Oci {
                layout: "/srv/layout".into(),
                reference: Some("base".into())
            }
        );
        assert_eq!(
            "oci:/srv/layout".parse::<BaseSource>().unwrap(),
            BaseSource::Oci {
                layout: "/srv/layout".into(),
                reference: None
            }
        );
        assert!("debian:"
            .parse::<BaseSource>()
            .unwrap_err()
            .contains("debian:bookworm"));
        assert!("ubuntu:jammy".parse::<BaseSource>().is_err());
        let registry = "docker://127.0.0.1:5000/team/base:v1"
            .parse::<BaseSource>()
            .unwrap();
        assert_eq!(registry.default_tag(), "registry-team-base-v1");
        assert!("docker://Bad/Name".parse::<BaseSource>().is_err());
        assert_eq!(
            "rootfs:/tmp/my root.tar"
                .parse::<BaseSource>()
                .unwrap()
                .default_tag(),
            "rootfs-my-root.tar"
        );
    }
}
