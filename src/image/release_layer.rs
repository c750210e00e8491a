//! The small top layer of a runnable image: what the packages were built from and what runs
//! them. Each release's `release.MF` goes to `/var/vcap/releases/<release>/release.MF`, each
//! job's files to `/var/vcap/jobs-src/<job>/` as its job archive holds them (`job.MF`, `monit`,
//! `templates/…`), where fissile put them for its run-time tooling to render.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImageError;
use crate::extract::{self, ExtractLimits};
use crate::oci::{self, Compression, Layer, LayerOptions, OciStore};
use crate::release::{Job, JobSource, Release, ReleaseError, ReleaseKind};

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

/// A job's files in `dest` (which must not exist), as its job archive holds them.
fn stage_job(job: &Job, dest: &Path, limits: &ExtractLimits) -> Result<(), ImageError> {
    match &job.source {
        JobSource::Archive(archive) => {
            extract::extract_archive(archive, dest, limits)?;
        }
        JobSource::TarballMember { tarball, member } => {
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
        JobSource::Dir(dir) => stage_job_dir(dir, dest)?,
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct JobSpecTemplates {
    #[serde(default)]
    templates: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

/// A source directory's job, as `bosh create-release` archives it: `spec` as `job.MF`,
/// `monit`, and each template its spec lists under `templates/`.
fn stage_job_dir(dir: &Path, dest: &Path) -> Result<(), ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let spec_path = dir.join("spec");
    let spec_bytes = fs_err::read(&spec_path).map_err(io(&spec_path))?;
    let spec: JobSpecTemplates =
        crate::release::yaml::parse(&spec_bytes, &spec_path).map_err(ReleaseError::from)?;
    fs_err::create_dir_all(dest).map_err(io(dest))?;
    fs_err::write(dest.join("job.MF"), &spec_bytes).map_err(io(dest))?;
    let monit = dir.join("monit");
    if monit.is_file() {
        fs_err::copy(&monit, dest.join("monit")).map_err(io(&monit))?;
    }
    for source in spec.templates.unwrap_or_default().keys() {
        let relative = extract::normalize_entry_path(source.as_bytes()).map_err(|reason| {
            ImageError::Invalid {
                what: spec_path.display().to_string(),
                message: format!("template {source:?}: {reason}"),
            }
        })?;
        let from = dir.join("templates").join(&relative);
        let meta = fs_err::symlink_metadata(&from).map_err(io(&from))?;
        if !meta.is_file() {
            return Err(ImageError::Invalid {
                what: from.display().to_string(),
                message: "a template must be a regular file".into(),
            });
        }
        let to = dest.join("templates").join(&relative);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent).map_err(io(parent))?;
        }
        fs_err::copy(&from, &to).map_err(io(&from))?;
    }
    Ok(())
}
