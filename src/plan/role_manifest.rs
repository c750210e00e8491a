//! fissile role manifests, read only for what compilation needs: which jobs of which releases
//! the instance groups run (`instance_groups[].jobs[]` with `name` and `release`; the older
//! `roles:` / `release_name` spelling is accepted too).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::release::yaml::YamlError;

#[derive(Deserialize, Debug, Default)]
struct RoleManifestFile {
    #[serde(default)]
    instance_groups: Option<Vec<InstanceGroup>>,
    #[serde(default)]
    roles: Option<Vec<InstanceGroup>>,
}

#[derive(Deserialize, Debug)]
struct InstanceGroup {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    jobs: Option<Vec<JobRef>>,
}

#[derive(Deserialize, Debug)]
struct JobRef {
    name: String,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    release_name: Option<String>,
}

/// One job an instance group runs; `release` is `None` when the manifest leaves it implicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleJob {
    pub instance_group: String,
    pub job: String,
    pub release: Option<String>,
}

#[derive(Debug)]
pub struct RoleManifest {
    pub path: PathBuf,
    pub jobs: Vec<RoleJob>,
}

#[derive(thiserror::Error, Debug)]
pub enum RoleManifestError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{path}: no instance_groups (or roles) with jobs")]
    Empty { path: PathBuf },
    #[error("{path}: no instance group {name:?} (--roles); it has: {known}")]
    UnknownGroup {
        path: PathBuf,
        name: String,
        known: String,
    },
}

impl RoleManifest {
    /// The same manifest with only the named instance groups (fissile's `--roles`); every name
    /// must be one of its groups.
    pub fn only_groups(self, names: &[String]) -> Result<RoleManifest, RoleManifestError> {
        let mut known: Vec<&str> = Vec::new();
        for job in &self.jobs {
            if !known.contains(&job.instance_group.as_str()) {
                known.push(&job.instance_group);
            }
        }
        if let Some(missing) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(RoleManifestError::UnknownGroup {
                path: self.path.clone(),
                name: missing.clone(),
                known: known.join(", "),
            });
        }
        Ok(RoleManifest {
            jobs: self
                .jobs
                .into_iter()
                .filter(|j| names.contains(&j.instance_group))
                .collect(),
            path: self.path,
        })
    }

    pub fn read(path: &Path) -> Result<RoleManifest, RoleManifestError> {
        let file: RoleManifestFile = crate::release::yaml::read(path)?;
        let groups = file.instance_groups.or(file.roles).unwrap_or_default();
        let jobs: Vec<RoleJob> = groups
            .into_iter()
            .flat_map(|g| {
                let group = g.name.unwrap_or_default();
                g.jobs
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |j| RoleJob {
                        instance_group: group.clone(),
                        job: j.name,
                        release: j.release.or(j.release_name),
                    })
            })
            .collect();
        if jobs.is_empty() {
            return Err(RoleManifestError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(RoleManifest {
            path: path.to_path_buf(),
            jobs,
        })
    }
}
