//! Dev releases as the bosh CLI leaves them in a release directory: `dev_releases/<name>/index.yml`
//! names the versions, `dev_releases/<name>/<name>-<version>.yml` lists packages and jobs, and the
//! archives live in the local blob cache (`~/.bosh/cache/<digest>`).

use std::path::{Path, PathBuf};

use super::final_tarball::{
    license, license_digest, read_job_specs, to_jobs, to_packages, verify_files,
};
use super::listed;
use super::manifest::{ReleaseConfig, ReleaseManifest};
use super::{
    index, version, ArchiveLocation, LoadOptions, PackageSource, Release, ReleaseError, ReleaseKind,
};
use crate::release::digest::MultiDigest;

pub fn load(path: &Path, options: &LoadOptions) -> Result<Release, ReleaseError> {
    let name = release_name(path)?;
    let releases_dir = path.join("dev_releases").join(&name);
    let index_path = releases_dir.join("index.yml");
    if !index_path.is_file() {
        return Err(ReleaseError::invalid(
            &index_path,
            format!("missing: no dev release named {name:?} (from config/dev.yml or config/final.yml) was built here"),
        ));
    }
    let versions = index::versions(&index::read(&index_path)?);
    let version = match &options.release_version {
        Some(v) if versions.iter().any(|known| known == v) => v.clone(),
        Some(v) => {
            return Err(ReleaseError::UnknownVersion {
                path: path.to_path_buf(),
                version: v.clone(),
                known: versions.join(", "),
            })
        }
        None => version::latest(versions.iter().map(String::as_str))
            .ok_or_else(|| ReleaseError::invalid(&index_path, "records no dev release builds"))?
            .to_string(),
    };
    let manifest_path = releases_dir.join(format!("{name}-{version}.yml"));
    let manifest: ReleaseManifest = crate::release::yaml::read(&manifest_path)?;
    listed::check_manifest(&manifest, &manifest_path)?;
    let (packages, stemcell) = listed::package_records(&manifest, &manifest_path)?;
    if stemcell.is_some() {
        return Err(ReleaseError::invalid(
            &manifest_path,
            "a dev release manifest with compiled_packages: dev releases hold source packages",
        ));
    }
    let jobs = listed::jobs(&manifest, &manifest_path)?;

    let locate =
        |kind: &str, name: &str, fingerprint: Option<&str>, digest: &MultiDigest, raw: &str| {
            archive_path(path, options, kind, name, fingerprint, digest, raw).ok_or_else(|| {
                ReleaseError::MissingArchive {
                    path: manifest_path.clone(),
                    package: name.to_string(),
                    digest: raw.to_string(),
                    cache: options.bosh_cache.clone(),
                }
            })
        };
    let package_files = packages
        .iter()
        .map(|p| {
            Ok((
                locate(
                    "packages",
                    &p.name,
                    Some(p.fingerprint.as_str()),
                    &p.digest,
                    &p.sha1,
                )?,
                &p.digest,
            ))
        })
        .collect::<Result<Vec<(PathBuf, &MultiDigest)>, ReleaseError>>()?;
    let job_files = jobs
        .iter()
        .map(|j| {
            let raw = j.entry.sha1.as_deref().unwrap_or_default();
            let fp = j
                .entry
                .fingerprint
                .as_deref()
                .or(j.entry.version.as_deref());
            Ok((
                locate("jobs", &j.entry.name, fp, &j.digest, raw)?,
                &j.digest,
            ))
        })
        .collect::<Result<Vec<(PathBuf, &MultiDigest)>, ReleaseError>>()?;
    // The license archive sits in the cache like the others; one that is not there is only a
    // warning, as for old tarballs.
    let license_digest = license_digest(&manifest, &manifest_path)?;
    let license_fingerprint = manifest
        .license
        .as_ref()
        .and_then(|l| l.fingerprint.as_deref().or(l.version.as_deref()));
    let license_file: Vec<(PathBuf, &MultiDigest)> = license_digest
        .iter()
        .filter_map(|d| {
            let raw = manifest.license.as_ref()?.sha1.as_deref()?;
            let file = archive_path(
                path,
                options,
                "license",
                "license",
                license_fingerprint,
                d,
                raw,
            )?;
            Some((file, d))
        })
        .collect();
    let mut warnings = Vec::new();
    if license_digest.is_some() && license_file.is_empty() {
        warnings.push(format!(
            "{}: license listed but its archive is not in the bosh cache {}",
            manifest_path.display(),
            options.bosh_cache.display()
        ));
    }
    verify_files(
        package_files
            .iter()
            .chain(job_files.iter())
            .chain(license_file.iter()),
    )?;
    let mut specs = read_job_specs(
        jobs.iter()
            .map(|j| j.entry.name.as_str())
            .zip(job_files.iter().map(|f| f.0.as_path())),
    )?;
    let mut model_packages = to_packages(&packages, |_| PackageSource::Archive(PathBuf::new()));
    for (package, (file, _)) in model_packages.iter_mut().zip(package_files.iter()) {
        package.source = PackageSource::Archive(file.clone());
    }
    let job_locations: std::collections::HashMap<&str, &PathBuf> = jobs
        .iter()
        .map(|j| j.entry.name.as_str())
        .zip(job_files.iter().map(|f| &f.0))
        .collect();
    Ok(Release {
        name: manifest.name.clone(),
        version: if manifest.version.is_empty() {
            version
        } else {
            manifest.version.clone()
        },
        kind: ReleaseKind::Dev,
        path: path.to_path_buf(),
        packages: model_packages,
        jobs: to_jobs(&jobs, &mut specs, |name| {
            ArchiveLocation::File(job_locations[name].clone())
        }),
        stemcell: None,
        license: license(
            &manifest,
            license_file
                .first()
                .map(|(f, _)| ArchiveLocation::File(f.clone())),
            Vec::new(),
        ),
        commit_hash: manifest.commit_hash.clone(),
        uncommitted_changes: manifest.uncommitted_changes.clone(),
        warnings,
    })
}

/// The release name as bosh and fissile derive it: `dev_name` in config/dev.yml, else `name`
/// (or the older `final_name`) in config/final.yml, else the only directory under dev_releases/.
pub fn release_name(path: &Path) -> Result<String, ReleaseError> {
    let dev_yml = path.join("config").join("dev.yml");
    if dev_yml.is_file() {
        let config: ReleaseConfig = crate::release::yaml::read(&dev_yml)?;
        if let Some(name) = config.dev_name.filter(|n| !n.is_empty()) {
            super::validate_name(&dev_yml, "release", &name)?;
            return Ok(name);
        }
    }
    let final_yml = path.join("config").join("final.yml");
    if final_yml.is_file() {
        let config: ReleaseConfig = crate::release::yaml::read(&final_yml)?;
        if let Some(name) = config.name.or(config.final_name).filter(|n| !n.is_empty()) {
            super::validate_name(&final_yml, "release", &name)?;
            return Ok(name);
        }
    }
    let dir = path.join("dev_releases");
    let names: Vec<String> = fs_err::read_dir(&dir)
        .map_err(ReleaseError::io(&dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(ReleaseError::invalid(
            path,
            "cannot tell the release name: set dev_name in config/dev.yml or name in config/final.yml",
        )),
    }
}

/// Where the bosh CLI keeps an archive: its cache names files by the recorded digest string; the
/// old Ruby CLI kept them in `.dev_builds/<kind>/<name>/<fingerprint>.tgz`.
fn archive_path(
    release: &Path,
    options: &LoadOptions,
    kind: &str,
    name: &str,
    fingerprint: Option<&str>,
    digest: &MultiDigest,
    raw: &str,
) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    // The digest string is a file name here: only ever join ones we parsed as hex digests.
    candidates.push(options.bosh_cache.join(digest.to_string()));
    if raw != digest.to_string() && !raw.contains('/') {
        candidates.push(options.bosh_cache.join(raw.trim()));
    }
    for d in digest.digests() {
        candidates.push(options.bosh_cache.join(d.to_string()));
    }
    if let Some(fp) = fingerprint.filter(|f| !f.contains('/') && !f.contains("..")) {
        for builds in [".dev_builds", ".final_builds"] {
            candidates.push(
                release
                    .join(builds)
                    .join(kind)
                    .join(name)
                    .join(format!("{fp}.tgz")),
            );
        }
    }
    candidates.into_iter().find(|c| c.is_file())
}
