//! Checks a release manifest (`release.MF` or a dev release manifest) and turns its entries into
//! the model, leaving where each archive lives to the caller.

use std::path::Path;

use super::manifest::{JobEntry, PackageEntry, ReleaseManifest};
use super::{validate_name, ReleaseError};
use crate::release::digest::MultiDigest;

/// A package or job entry with its names checked and its digest parsed.
pub struct Listed<'a, E> {
    pub entry: &'a E,
    pub digest: MultiDigest,
}

pub fn check_manifest(manifest: &ReleaseManifest, path: &Path) -> Result<(), ReleaseError> {
    if manifest.name.is_empty() {
        return Err(ReleaseError::invalid(path, "release manifest has no name"));
    }
    validate_name(path, "release", &manifest.name)?;
    if manifest.version.trim().is_empty() {
        return Err(ReleaseError::invalid(
            path,
            format!(
                "release {:?} has no version in its manifest (bosh refuses such a release)",
                manifest.name
            ),
        ));
    }
    if manifest.packages.is_empty() && !manifest.compiled_packages.is_empty() {
        let stemcell = manifest.compiled_packages[0]
            .stemcell
            .as_deref()
            .unwrap_or("unknown stemcell");
        return Err(ReleaseError::invalid(
            path,
            format!(
                "this is a compiled release (for {stemcell}); fissile-oci compiles source releases"
            ),
        ));
    }
    Ok(())
}

pub fn packages<'a>(
    manifest: &'a ReleaseManifest,
    path: &Path,
) -> Result<Vec<Listed<'a, PackageEntry>>, ReleaseError> {
    manifest
        .packages
        .iter()
        .map(|p| {
            validate_name(path, "package", &p.name)?;
            for dep in &p.dependencies {
                validate_name(path, "package", dep)?;
            }
            if p.fingerprint().is_none() {
                return Err(ReleaseError::invalid(
                    path,
                    format!("package {:?} has no fingerprint or version", p.name),
                ));
            }
            Ok(Listed {
                digest: parse_digest(path, "package", &p.name, p.sha1.as_deref())?,
                entry: p,
            })
        })
        .collect()
}

pub fn jobs<'a>(
    manifest: &'a ReleaseManifest,
    path: &Path,
) -> Result<Vec<Listed<'a, JobEntry>>, ReleaseError> {
    manifest
        .jobs
        .iter()
        .map(|j| {
            validate_name(path, "job", &j.name)?;
            Ok(Listed {
                digest: parse_digest(path, "job", &j.name, j.sha1.as_deref())?,
                entry: j,
            })
        })
        .collect()
}

fn parse_digest(
    path: &Path,
    what: &str,
    name: &str,
    sha1: Option<&str>,
) -> Result<MultiDigest, ReleaseError> {
    let sha1 = sha1.ok_or_else(|| {
        ReleaseError::invalid(path, format!("{what} {name:?} has no sha1 digest"))
    })?;
    MultiDigest::parse(sha1)
        .map_err(|e| ReleaseError::invalid(path, format!("{what} {name:?}: {e}")))
}
