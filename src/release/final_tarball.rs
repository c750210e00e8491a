//! Final release tarballs (`release.MF`, `packages/<n>.tgz`, `jobs/<n>.tgz`, `license.tgz`),
//! compiled release tarballs (`compiled_packages/<n>.tgz` instead of `packages/`), and
//! directories holding either extracted.
//!
//! A tarball is read as a stream, twice at most: once for `release.MF` (usually the first entry,
//! so this stops early), once to verify every archive without unpacking anything to disk.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::listed::{self, Listed, PackageRecord};
use super::manifest::ReleaseManifest;
use super::{
    job, ArchiveLocation, Job, JobArchive, License, LoadOptions, Package, PackageSource, Release,
    ReleaseError, ReleaseKind,
};
use crate::extract::{self, TAR_HEAD_BYTES};
use crate::release::digest::{self, MultiDigest};

const MAX_RELEASE_MF: u64 = 64 * 1024 * 1024;
/// Job archives hold templates and a manifest; anything bigger is not a job.
const MAX_JOB_ARCHIVE: u64 = 512 * 1024 * 1024;

/// How a member is named in messages: `release.tgz:packages/x.tgz`.
fn member_path(tarball: &Path, member: &str) -> PathBuf {
    PathBuf::from(format!("{}:{}", tarball.display(), member))
}

pub fn load(path: &Path, options: &LoadOptions) -> Result<Release, ReleaseError> {
    let manifest_bytes = extract::read_member(
        extract::open_archive(path)?,
        path,
        "release.MF",
        MAX_RELEASE_MF,
    )?
    .ok_or_else(|| {
        ReleaseError::invalid(
            path,
            "no release.MF in the tarball; is this a BOSH release?",
        )
    })?;
    let manifest: ReleaseManifest =
        crate::release::yaml::parse(&manifest_bytes, &member_path(path, "release.MF"))?;
    listed::check_manifest(&manifest, path)?;
    let (packages, stemcell) = listed::package_records(&manifest, path)?;
    let jobs = listed::jobs(&manifest, path)?;
    let package_dir = packages_dir(stemcell.is_some());

    let mut expected: HashMap<String, (&MultiDigest, Kind)> = HashMap::new();
    let what = if stemcell.is_some() {
        "compiled package"
    } else {
        "package"
    };
    for p in &packages {
        expected.insert(
            format!("{package_dir}/{}.tgz", p.name),
            (&p.digest, Kind::Package(p.name.clone())),
        );
    }
    for j in &jobs {
        expected.insert(
            format!("jobs/{}.tgz", j.entry.name),
            (&j.digest, Kind::Job(j.entry.name.clone())),
        );
    }
    let license_digest = license_digest(&manifest, path)?;
    if let Some(d) = &license_digest {
        expected.insert("license.tgz".to_string(), (d, Kind::License));
    }

    let mut job_specs: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut license_files: Vec<String> = Vec::new();
    let mut unpacked: u64 = 0;
    let mut archive = tar::Archive::new(extract::open_archive(path)?);
    let corrupt = |e: std::io::Error| {
        ReleaseError::invalid(path, format!("the tarball is truncated or corrupt: {e}"))
    };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = match extract::normalize_entry_path(&entry.path_bytes()) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(reason) => return Err(ReleaseError::invalid(path, format!("bad entry: {reason}"))),
        };
        let Some((want, kind)) = expected.get(&name) else {
            if is_license_file(&name) && entry.header().entry_type().is_file() {
                license_files.push(name);
            }
            continue;
        };
        if !entry.header().entry_type().is_file() {
            return Err(ReleaseError::invalid(
                member_path(path, &name),
                "is not a regular file",
            ));
        }
        unpacked += entry.size();
        if unpacked > options.limits.max_unpacked_bytes {
            return Err(ReleaseError::invalid(
                path,
                format!("archives add up to more than {} bytes; raise --max-unpacked-size if this is expected", options.limits.max_unpacked_bytes),
            ));
        }
        let member = member_path(path, &name);
        let algorithm = want.strongest().algorithm;
        match kind {
            Kind::Package(package) => {
                let (actual, head) =
                    digest::digest_reader_keeping_head(algorithm, &mut entry, TAR_HEAD_BYTES)
                        .map_err(corrupt)?;
                want.check(&member, &actual).map_err(|e| {
                    ReleaseError::invalid(path, format!("{what} {package:?}: field sha1: {e}"))
                })?;
                check_archive(&member, &head)?;
            }
            Kind::License => {
                let (actual, head) =
                    digest::digest_reader_keeping_head(algorithm, &mut entry, TAR_HEAD_BYTES)
                        .map_err(corrupt)?;
                want.check(&member, &actual)?;
                check_archive(&member, &head)?;
            }
            Kind::Job(job_name) => {
                if entry.size() > MAX_JOB_ARCHIVE {
                    return Err(ReleaseError::invalid(
                        &member,
                        "job archive is implausibly large",
                    ));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(corrupt)?;
                want.check(&member, &digest::digest_bytes(algorithm, &bytes))?;
                let spec = job::read_job_manifest(std::io::Cursor::new(bytes), &member)?;
                job_specs.insert(job_name.clone(), spec.packages);
            }
        }
        seen.insert(name);
    }

    let mut warnings = Vec::new();
    let mut members: Vec<&String> = expected.keys().collect();
    members.sort();
    for member in members {
        if !seen.contains(member) {
            if member == "license.tgz" {
                // Old tarballs list a license they do not carry; nothing we compile needs it.
                warnings.push(format!(
                    "{}: license listed in release.MF but license.tgz is missing",
                    path.display()
                ));
                continue;
            }
            return Err(ReleaseError::MissingMember {
                tarball: path.to_path_buf(),
                member: member.clone(),
            });
        }
    }

    let in_tarball = |member: String| ArchiveLocation::TarballMember {
        tarball: path.to_path_buf(),
        member,
    };
    license_files.sort();
    license_files.dedup();
    let license = license(
        &manifest,
        seen.contains("license.tgz")
            .then(|| in_tarball("license.tgz".to_string())),
        license_files
            .into_iter()
            .map(|name| (name.clone(), in_tarball(name)))
            .collect(),
    );
    Ok(Release {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        kind: ReleaseKind::Tarball,
        path: path.to_path_buf(),
        packages: to_packages(&packages, |name| PackageSource::TarballMember {
            tarball: path.to_path_buf(),
            member: format!("{package_dir}/{name}.tgz"),
        }),
        jobs: to_jobs(&jobs, &mut job_specs, |name| {
            in_tarball(format!("jobs/{name}.tgz"))
        }),
        stemcell,
        license,
        commit_hash: manifest.commit_hash.clone(),
        uncommitted_changes: manifest.uncommitted_changes.clone(),
        warnings,
    })
}

enum Kind {
    Package(String),
    Job(String),
    License,
}

/// Where a release keeps its package archives: `compiled_packages/` in a compiled release.
fn packages_dir(compiled: bool) -> &'static str {
    if compiled {
        "compiled_packages"
    } else {
        "packages"
    }
}

/// `LICENSE*` and `NOTICE*` at the top of a release, as bosh puts them beside license.tgz.
fn is_license_file(name: &str) -> bool {
    !name.contains('/') && (name.starts_with("LICENSE") || name.starts_with("NOTICE"))
}

pub(super) fn license_digest(
    manifest: &ReleaseManifest,
    path: &Path,
) -> Result<Option<MultiDigest>, ReleaseError> {
    match manifest.license.as_ref().and_then(|l| l.sha1.as_deref()) {
        Some(s) => Ok(Some(MultiDigest::parse(s).map_err(|e| {
            ReleaseError::invalid(path, format!("license: field sha1: {e}"))
        })?)),
        None => Ok(None),
    }
}

/// The license of the model: the manifest's entry with the archive and files found.
pub(super) fn license(
    manifest: &ReleaseManifest,
    archive: Option<ArchiveLocation>,
    files: Vec<(String, ArchiveLocation)>,
) -> Option<License> {
    let entry = manifest.license.as_ref();
    if entry.is_none() && archive.is_none() && files.is_empty() {
        return None;
    }
    Some(License {
        version: entry.and_then(|l| l.version.clone()),
        fingerprint: entry.and_then(|l| l.fingerprint.clone()),
        sha1: entry.and_then(|l| l.sha1.clone()),
        archive,
        files,
    })
}

/// A directory with an extracted release tarball: archives are files, verified in parallel.
pub fn load_extracted(path: &Path, _options: &LoadOptions) -> Result<Release, ReleaseError> {
    let manifest: ReleaseManifest = crate::release::yaml::read(&path.join("release.MF"))?;
    listed::check_manifest(&manifest, path)?;
    let (packages, stemcell) = listed::package_records(&manifest, path)?;
    let jobs = listed::jobs(&manifest, path)?;
    let package_dir = packages_dir(stemcell.is_some());
    let package_files: Vec<(PathBuf, &MultiDigest)> = packages
        .iter()
        .map(|p| {
            (
                path.join(package_dir).join(format!("{}.tgz", p.name)),
                &p.digest,
            )
        })
        .collect();
    let job_files: Vec<(PathBuf, &MultiDigest)> = jobs
        .iter()
        .map(|j| {
            (
                path.join("jobs").join(format!("{}.tgz", j.entry.name)),
                &j.digest,
            )
        })
        .collect();
    let license_digest = license_digest(&manifest, path)?;
    let license_tgz = path.join("license.tgz");
    let mut warnings = Vec::new();
    let mut license_file: Vec<(PathBuf, &MultiDigest)> = Vec::new();
    if let Some(d) = &license_digest {
        if license_tgz.is_file() {
            license_file.push((license_tgz.clone(), d));
        } else {
            warnings.push(format!(
                "{}: license listed in release.MF but license.tgz is missing",
                path.display()
            ));
        }
    }
    verify_files(
        package_files
            .iter()
            .chain(job_files.iter())
            .chain(license_file.iter()),
    )?;
    let mut job_specs = read_job_specs(
        jobs.iter()
            .map(|j| j.entry.name.as_str())
            .zip(job_files.iter().map(|f| f.0.as_path())),
    )?;
    let mut files = Vec::new();
    for entry in fs_err::read_dir(path).map_err(ReleaseError::io(path))? {
        let entry = entry.map_err(ReleaseError::io(path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_license_file(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push((name, ArchiveLocation::File(entry.path())));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let license = license(
        &manifest,
        (license_digest.is_some() && license_tgz.is_file())
            .then(|| ArchiveLocation::File(license_tgz.clone())),
        files,
    );
    Ok(Release {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        kind: ReleaseKind::ExtractedTarball,
        path: path.to_path_buf(),
        packages: to_packages(&packages, |name| {
            PackageSource::Archive(path.join(package_dir).join(format!("{name}.tgz")))
        }),
        jobs: to_jobs(&jobs, &mut job_specs, |name| {
            ArchiveLocation::File(path.join("jobs").join(format!("{name}.tgz")))
        }),
        stemcell,
        license,
        commit_hash: manifest.commit_hash.clone(),
        uncommitted_changes: manifest.uncommitted_changes.clone(),
        warnings,
    })
}

/// Verifies archive files against their digests on all cores; reports the first failure in
/// manifest order so the message does not depend on scheduling.
pub(super) fn verify_files<'a>(
    files: impl Iterator<Item = &'a (PathBuf, &'a MultiDigest)>,
) -> Result<(), ReleaseError> {
    let files: Vec<_> = files.collect();
    let results: Vec<Result<(), ReleaseError>> = files
        .par_iter()
        .map(|(file, digest)| {
            if !file.is_file() {
                return Err(ReleaseError::invalid(
                    file.clone(),
                    "listed in the release manifest but missing",
                ));
            }
            let reader = fs_err::File::open(file).map_err(ReleaseError::io(file))?;
            let (actual, head) = digest::digest_reader_keeping_head(
                digest.strongest().algorithm,
                reader,
                TAR_HEAD_BYTES,
            )
            .map_err(ReleaseError::io(file))?;
            digest.check(file, &actual)?;
            check_archive(file, &head)
        })
        .collect();
    results.into_iter().collect()
}

/// An archive whose digest matches can still be no tarball at all (an empty file, garbage
/// listed with its own digest): refuse it now, naming it, rather than when it is unpacked.
fn check_archive(member: &Path, head: &[u8]) -> Result<(), ReleaseError> {
    extract::check_tar_head(head).map_err(|why| {
        ReleaseError::invalid(
            member,
            format!("is not a readable tarball ({why}), although its digest matches the manifest"),
        )
    })
}

pub(super) fn read_job_specs<'a>(
    jobs: impl Iterator<Item = (&'a str, &'a Path)>,
) -> Result<HashMap<String, Vec<String>>, ReleaseError> {
    let mut specs = HashMap::new();
    for (name, file) in jobs {
        let reader = fs_err::File::open(file).map_err(ReleaseError::io(file))?;
        specs.insert(
            name.to_string(),
            job::read_job_manifest(reader, file)?.packages,
        );
    }
    Ok(specs)
}

pub(super) fn to_packages(
    packages: &[PackageRecord],
    source: impl Fn(&str) -> PackageSource,
) -> Vec<Package> {
    packages
        .iter()
        .map(|p| Package {
            name: p.name.clone(),
            fingerprint: p.fingerprint.clone(),
            sha1: Some(p.sha1.clone()),
            dependencies: p.dependencies.clone(),
            source: source(&p.name),
        })
        .collect()
}

pub(super) fn to_jobs(
    jobs: &[Listed<'_, super::manifest::JobEntry>],
    specs: &mut HashMap<String, Vec<String>>,
    location: impl Fn(&str) -> ArchiveLocation,
) -> Vec<Job> {
    jobs.iter()
        .map(|j| Job {
            name: j.entry.name.clone(),
            fingerprint: j
                .entry
                .fingerprint
                .clone()
                .or_else(|| j.entry.version.clone()),
            packages: specs.remove(&j.entry.name).unwrap_or_default(),
            archive: Some(JobArchive {
                location: location(&j.entry.name),
                version: j.entry.version.clone(),
                fingerprint: j.entry.fingerprint.clone(),
                sha1: j.entry.sha1.clone().unwrap_or_default(),
                packages: j.entry.packages.clone(),
            }),
            files: Vec::new(),
        })
        .collect()
}
