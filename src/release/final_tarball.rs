//! Final release tarballs (`release.MF`, `packages/<n>.tgz`, `jobs/<n>.tgz`, `license.tgz`) and
//! directories holding one extracted.
//!
//! A tarball is read as a stream, twice at most: once for `release.MF` (usually the first entry,
//! so this stops early), once to verify every archive without unpacking anything to disk.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::listed::{self, Listed};
use super::manifest::ReleaseManifest;
use super::{
    job, Job, JobSource, LoadOptions, Package, PackageSource, Release, ReleaseError, ReleaseKind,
};
use crate::extract;
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
    let packages = listed::packages(&manifest, path)?;
    let jobs = listed::jobs(&manifest, path)?;

    let mut expected: HashMap<String, (&MultiDigest, Kind)> = HashMap::new();
    for p in &packages {
        expected.insert(
            format!("packages/{}.tgz", p.entry.name),
            (&p.digest, Kind::Package),
        );
    }
    for j in &jobs {
        expected.insert(
            format!("jobs/{}.tgz", j.entry.name),
            (&j.digest, Kind::Job(j.entry.name.clone())),
        );
    }
    let license_digest = match manifest.license.as_ref().and_then(|l| l.sha1.as_deref()) {
        Some(s) => Some(
            MultiDigest::parse(s)
                .map_err(|e| ReleaseError::invalid(path, format!("license: {e}")))?,
        ),
        None => None,
    };
    if let Some(d) = &license_digest {
        expected.insert("license.tgz".to_string(), (d, Kind::License));
    }

    let mut job_specs: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
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
            Kind::Package | Kind::License => {
                let actual = digest::digest_reader(algorithm, &mut entry).map_err(corrupt)?;
                want.check(&member, &actual)?;
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
    for member in expected.keys() {
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

    Ok(Release {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        kind: ReleaseKind::Tarball,
        path: path.to_path_buf(),
        packages: to_packages(&packages, |name| PackageSource::TarballMember {
            tarball: path.to_path_buf(),
            member: format!("packages/{name}.tgz"),
        }),
        jobs: to_jobs(&jobs, &mut job_specs, |name| JobSource::TarballMember {
            tarball: path.to_path_buf(),
            member: format!("jobs/{name}.tgz"),
        }),
        warnings,
    })
}

enum Kind {
    Package,
    Job(String),
    License,
}

/// A directory with an extracted release tarball: archives are files, verified in parallel.
pub fn load_extracted(path: &Path, _options: &LoadOptions) -> Result<Release, ReleaseError> {
    let manifest: ReleaseManifest = crate::release::yaml::read(&path.join("release.MF"))?;
    listed::check_manifest(&manifest, path)?;
    let packages = listed::packages(&manifest, path)?;
    let jobs = listed::jobs(&manifest, path)?;
    let package_files: Vec<(PathBuf, &MultiDigest)> = packages
        .iter()
        .map(|p| {
            (
                path.join("packages").join(format!("{}.tgz", p.entry.name)),
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
    verify_files(package_files.iter().chain(job_files.iter()))?;
    let mut job_specs = read_job_specs(
        jobs.iter()
            .map(|j| j.entry.name.as_str())
            .zip(job_files.iter().map(|f| f.0.as_path())),
    )?;
    Ok(Release {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        kind: ReleaseKind::ExtractedTarball,
        path: path.to_path_buf(),
        packages: to_packages(&packages, |name| {
            PackageSource::Archive(path.join("packages").join(format!("{name}.tgz")))
        }),
        jobs: to_jobs(&jobs, &mut job_specs, |name| {
            JobSource::Archive(path.join("jobs").join(format!("{name}.tgz")))
        }),
        warnings: Vec::new(),
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
            digest.verify_file(file).map_err(ReleaseError::from)
        })
        .collect();
    results.into_iter().collect()
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
    packages: &[Listed<'_, super::manifest::PackageEntry>],
    source: impl Fn(&str) -> PackageSource,
) -> Vec<Package> {
    packages
        .iter()
        .map(|p| Package {
            name: p.entry.name.clone(),
            fingerprint: p.entry.fingerprint().unwrap_or_default().to_string(),
            sha1: p.entry.sha1.clone(),
            dependencies: p.entry.dependencies.clone(),
            source: source(&p.entry.name),
        })
        .collect()
}

pub(super) fn to_jobs(
    jobs: &[Listed<'_, super::manifest::JobEntry>],
    specs: &mut HashMap<String, Vec<String>>,
    source: impl Fn(&str) -> JobSource,
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
            source: source(&j.entry.name),
        })
        .collect()
}
