//! Checks a release manifest (`release.MF` or a dev release manifest) and turns its entries into
//! the model, leaving where each archive lives to the caller.

use std::path::Path;

use super::manifest::{CompiledPackageEntry, JobEntry, PackageEntry, ReleaseManifest};
use super::{validate_name, ReleaseError, Stemcell};
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
    if !manifest.packages.is_empty() && !manifest.compiled_packages.is_empty() {
        return Err(ReleaseError::invalid(
            path,
            "lists both packages and compiled_packages: a release is either a source or a compiled release",
        ));
    }
    Ok(())
}

/// The compiled packages of a release, and the one stemcell they were compiled for.
type Compiled<'a> = (Vec<Listed<'a, CompiledPackageEntry>>, Stemcell);

/// A compiled release's packages, their digests, and the one stemcell they were compiled for.
/// `None` for a source release (no `compiled_packages`).
pub fn compiled_packages<'a>(
    manifest: &'a ReleaseManifest,
    path: &Path,
) -> Result<Option<Compiled<'a>>, ReleaseError> {
    if manifest.compiled_packages.is_empty() {
        return Ok(None);
    }
    let mut stemcell: Option<(Stemcell, &str)> = None;
    let mut listed = Vec::with_capacity(manifest.compiled_packages.len());
    for p in &manifest.compiled_packages {
        validate_name(path, "compiled package", &p.name)?;
        let field = |field: &str, problem: String| {
            ReleaseError::invalid(
                path,
                format!("compiled package {:?}: field {field}: {problem}", p.name),
            )
        };
        for dep in &p.dependencies {
            validate_name(path, "package", dep)?;
        }
        if p.fingerprint().is_none() {
            return Err(field(
                "fingerprint",
                "missing (and no version to stand for it)".into(),
            ));
        }
        let raw = p
            .stemcell
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| field("stemcell", "missing; it must be <os>/<version>".into()))?;
        let parsed = Stemcell::parse(raw).map_err(|e| field("stemcell", e))?;
        match &stemcell {
            None => stemcell = Some((parsed, &p.name)),
            Some((first, first_name)) if *first != parsed => {
                return Err(field(
                    "stemcell",
                    format!("{parsed} differs from {first} of compiled package {first_name:?}; a compiled release is for one stemcell"),
                ));
            }
            Some(_) => {}
        }
        let sha1 = p
            .sha1
            .as_deref()
            .ok_or_else(|| field("sha1", "missing".into()))?;
        let digest = MultiDigest::parse(sha1).map_err(|e| field("sha1", e.to_string()))?;
        listed.push(Listed { entry: p, digest });
    }
    let (stemcell, _) = stemcell.expect("at least one compiled package");
    Ok(Some((listed, stemcell)))
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

/// A package entry of either kind, owned, with its digest parsed: what the loaders build the
/// model from.
pub struct PackageRecord {
    pub name: String,
    pub fingerprint: String,
    pub sha1: String,
    pub dependencies: Vec<String>,
    pub digest: MultiDigest,
}

/// The release's packages (source or compiled) and, for a compiled release, its stemcell.
pub fn package_records(
    manifest: &ReleaseManifest,
    path: &Path,
) -> Result<(Vec<PackageRecord>, Option<Stemcell>), ReleaseError> {
    if let Some((compiled, stemcell)) = compiled_packages(manifest, path)? {
        let records = compiled
            .into_iter()
            .map(|p| PackageRecord {
                name: p.entry.name.clone(),
                fingerprint: p.entry.fingerprint().unwrap_or_default().to_string(),
                sha1: p.entry.sha1.clone().unwrap_or_default(),
                dependencies: p.entry.dependencies.clone(),
                digest: p.digest,
            })
            .collect();
        return Ok((records, Some(stemcell)));
    }
    let records = packages(manifest, path)?
        .into_iter()
        .map(|p| PackageRecord {
            name: p.entry.name.clone(),
            fingerprint: p.entry.fingerprint().unwrap_or_default().to_string(),
            sha1: p.entry.sha1.clone().unwrap_or_default(),
            dependencies: p.entry.dependencies.clone(),
            digest: p.digest,
        })
        .collect();
    Ok((records, None))
}
