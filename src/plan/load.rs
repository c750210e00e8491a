//! From release paths to a plan: each release read and verified, the role manifest read, the
//! selection applied.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::role_manifest::{RoleManifest, RoleManifestError};
use super::{Plan, PlanError, Selection};
use crate::release::{self, LoadOptions, Release, ReleaseError};

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanRequest<'a> {
    pub paths: &'a [PathBuf],
    pub load: &'a LoadOptions,
    /// Compile only what these instance groups' jobs need (a fissile role manifest).
    pub role_manifest: Option<&'a Path>,
    /// With a role manifest: only these of its instance groups.
    pub roles: Option<&'a [String]>,
    /// Only these releases, by name.
    pub only_releases: Option<&'a [String]>,
}

#[derive(thiserror::Error, Debug)]
pub enum LoadPlanError {
    #[error("no release given: pass release paths (tarball, dev release dir or source dir)")]
    NoRelease,
    #[error("cannot read release {}", .path.display())]
    Release {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    #[error(transparent)]
    RoleManifest(#[from] RoleManifestError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Loads every release (telling `on_loaded` about each, with the time it took) and plans them.
pub fn load_plan(
    request: &PlanRequest<'_>,
    on_loaded: &mut dyn FnMut(&Release, Duration),
) -> Result<Plan, LoadPlanError> {
    if request.paths.is_empty() {
        return Err(LoadPlanError::NoRelease);
    }
    let mut releases = Vec::with_capacity(request.paths.len());
    for path in request.paths {
        let started = Instant::now();
        let release =
            release::load(path, request.load).map_err(|source| LoadPlanError::Release {
                path: path.clone(),
                source,
            })?;
        on_loaded(&release, started.elapsed());
        releases.push(release);
    }
    let role_manifest = match request.role_manifest {
        Some(path) => {
            let manifest = RoleManifest::read(path)?;
            Some(match request.roles {
                Some(groups) => manifest.only_groups(groups)?,
                None => manifest,
            })
        }
        None => None,
    };
    let selection = Selection {
        only_releases: request.only_releases,
        role_manifest: role_manifest.as_ref(),
    };
    Ok(Plan::build(releases, &selection)?)
}
