//! The small top layer of a runnable image: what the packages were built from and what runs
//! them. Each release's `release.MF` goes to `/var/vcap/releases/<release>/release.MF`, each
//! job's files to `/var/vcap/jobs-src/<job>/` as its job archive holds them (`job.MF`, `monit`,
//! `templates/…`), where fissile put them for its run-time tooling to render.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::ImageError;
use crate::extract::{self, ExtractLimits};
use crate::oci::{self, Compression, Layer, LayerOptions, OciStore};
use crate::release::{ArchiveLocation, Job, Release, ReleaseKind};

const MAX_RELEASE_MF: u64 = 64 * 1024 * 1024;
/// As when releases are read: anything bigger is not a job archive.
const MAX_JOB_ARCHIVE: u64 = 512 * 1024 * 1024;

/// Stages the releases' manifests and the jobs under `staging` (which must not exist) and
/// writes them as one deterministic layer.
pub fn write_release_layer(
    store: &OciStore,
    contents: &[(&Release, Vec<&Job>)],
    staging: &Path,
    mtime: u64,
    limits: &ExtractLimits,
) -> Result<Layer, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let mut job_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (release, jobs) in contents {
        let dir = staging.join("var/vcap/releases").join(&release.name);
        fs_err::create_dir_all(&dir).map_err(io(&dir))?;
        let manifest = dir.join("release.MF");
        fs_err::write(&manifest, release_manifest(release)?).map_err(io(&manifest))?;
        for job in jobs {
            if let Some(other) = job_owner.insert(&job.name, &release.name) {
                return Err(ImageError::JobConflict {
                    job: job.name.clone(),
                    first: other.to_string(),
                    second: release.name.clone(),
                });
            }
            stage_job(
                job,
                &staging.join("var/vcap/jobs-src").join(&job.name),
                limits,
            )?;
        }
    }
    Ok(oci::write_layer(
        store,
        staging,
        &LayerOptions {
            compression: Compression::Gzip,
            mtime,
            ..LayerOptions::default()
        },
    )?)
}

/// The release's manifest as bosh wrote it, or, for a source directory (which has none), one
/// written from what was read.
fn release_manifest(release: &Release) -> Result<Vec<u8>, ImageError> {
    let path = &release.path;
    match release.kind {
        ReleaseKind::Tarball => extract::read_member(
            extract::open_archive(path)?,
            path,
            "release.MF",
            MAX_RELEASE_MF,
        )?
        .ok_or_else(|| ImageError::Invalid {
            what: path.display().to_string(),
            message: "has no release.MF any more".into(),
        }),
        ReleaseKind::ExtractedTarball => {
            let file = path.join("release.MF");
            fs_err::read(&file).map_err(|source| ImageError::Io { path: file, source })
        }
        ReleaseKind::Dev => {
            let file = path
                .join("dev_releases")
                .join(&release.name)
                .join(format!("{}-{}.yml", release.name, release.version));
            match fs_err::read(&file) {
                Ok(bytes) => Ok(bytes),
                Err(_) => Ok(generated_manifest(release)),
            }
        }
        ReleaseKind::Source => Ok(generated_manifest(release)),
    }
}

/// A `release.MF` for a release that has none: names, versions, fingerprints and dependencies
/// (there are no archives, so no digests).
fn generated_manifest(release: &Release) -> Vec<u8> {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::from(
        "# Written by fissile-oci from a release source directory: no archives, so no digests.\n",
    );
    out.push_str(&format!(
        "name: {}\nversion: {}\npackages:\n",
        q(&release.name),
        q(&release.version)
    ));
    for p in &release.packages {
        out.push_str(&format!(
            "- name: {}\n  version: {}\n  fingerprint: {}\n  dependencies: [{}]\n",
            q(&p.name),
            q(&p.fingerprint),
            q(&p.fingerprint),
            p.dependencies
                .iter()
                .map(|d| q(d))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("jobs:\n");
    for j in &release.jobs {
        out.push_str(&format!("- name: {}\n", q(&j.name)));
        if let Some(fp) = &j.fingerprint {
            out.push_str(&format!("  version: {}\n  fingerprint: {}\n", q(fp), q(fp)));
        }
    }
    out.into_bytes()
}

/// A job's files in `dest` (which must not exist), as its job archive holds them: the verified
/// archive itself, or for a source directory the files `bosh create-release` would archive.
fn stage_job(job: &Job, dest: &Path, limits: &ExtractLimits) -> Result<(), ImageError> {
    match job.archive.as_ref().map(|a| &a.location) {
        Some(ArchiveLocation::File(archive)) => {
            extract::extract_archive(archive, dest, limits)?;
        }
        Some(ArchiveLocation::TarballMember { tarball, member }) => {
            let label = PathBuf::from(format!("{}:{member}", tarball.display()));
            let bytes = extract::read_member(
                extract::open_archive(tarball)?,
                tarball,
                member,
                MAX_JOB_ARCHIVE,
            )?
            .ok_or_else(|| ImageError::Invalid {
                what: label.display().to_string(),
                message: "is missing from the tarball".into(),
            })?;
            extract::extract_reader(Cursor::new(bytes), &label, dest, limits)?;
        }
        None => stage_job_files(job, dest)?,
    }
    Ok(())
}

/// A source directory's job: `job.MF` (its spec), `monit` and its templates, copied.
fn stage_job_files(job: &Job, dest: &Path) -> Result<(), ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    if job.files.is_empty() {
        return Err(ImageError::Invalid {
            what: format!("job {:?}", job.name),
            message: "has neither an archive nor files (its spec could not be read)".into(),
        });
    }
    fs_err::create_dir_all(dest).map_err(io(dest))?;
    for file in &job.files {
        let relative =
            extract::normalize_entry_path(file.relative_path.as_bytes()).map_err(|reason| {
                ImageError::Invalid {
                    what: format!("job {:?}", job.name),
                    message: format!("file {:?}: {reason}", file.relative_path),
                }
            })?;
        let Some(from) = &file.disk_path else {
            return Err(ImageError::Invalid {
                what: format!("job {:?}", job.name),
                message: format!("file {:?} is not on disk", file.relative_path),
            });
        };
        let meta = fs_err::symlink_metadata(from).map_err(io(from))?;
        if !meta.is_file() {
            return Err(ImageError::Invalid {
                what: from.display().to_string(),
                message: "a job file must be a regular file".into(),
            });
        }
        let to = dest.join(&relative);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent).map_err(io(parent))?;
        }
        fs_err::copy(from, &to).map_err(io(from))?;
    }
    Ok(())
}
