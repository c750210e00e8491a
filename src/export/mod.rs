//! BOSH compiled release tarballs, what `bosh export-release` and `bosh-agent compile` write and
//! `bosh upload-release` accepts: one per release, from what a compile left in the store.
//!
//! - Which packages and jobs go in ([`plan_exports`]): every package of the release the plan
//!   selected, read from its package image (compiled, cached or imported); every job whose
//!   packages are all there, its archive copied byte for byte; the license as it came.
//! - The tarball ([`write_release`], `tarball`): `release.MF` first (`manifest`), then
//!   `LICENSE*`/`NOTICE*`, `license.tgz`, `jobs/`, `compiled_packages/` (`package`: each the
//!   install dir at the tar root), names sorted within each group, entries `./`-prefixed, owner
//!   0:0, mtime `SOURCE_DATE_EPOCH` or 0, fixed gzip levels (`gzip`, `tar`): the same inputs give
//!   the same bytes. Everything streams through temp files next to the output, so memory does
//!   not grow with the release; the result is renamed into place, never over a different file.

mod gzip;
mod manifest;
mod package;
mod source_archive;
mod tar;
mod tarball;

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use crate::compile::key::package_ref;
use crate::compile::CompileReport;
use crate::oci::{image, OciError, OciStore};
use crate::plan::Plan;
use crate::release::digest::{Algorithm, MultiDigest};
use crate::release::fingerprint::Era;
use crate::release::{Job, Package, Release, ReleaseKind, Stemcell};

pub use package::PACKAGE_GZIP_LEVEL;
pub use tarball::{write_release, OUTER_GZIP_LEVEL};

#[derive(thiserror::Error, Debug)]
pub enum ExportError {
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] OciError),
    #[error("package {package:?}: its layer {blob} cannot be exported: {detail}")]
    Layer {
        package: String,
        blob: PathBuf,
        detail: String,
    },
    #[error("package {package:?} of release {release:?} has no image in the store (its compile did not succeed)")]
    NotCompiled { release: String, package: String },
    #[error("release {release:?}: the compilation base records no stemcell, so the compiled release cannot say which one it is for; pass --stemcell OS/VERSION (e.g. --stemcell ubuntu-jammy/1.329), or compile on a base built from a stemcell (base build --from stemcell:STEMCELL.tgz)")]
    NoStemcell { release: String },
    #[error("{path}: job {job:?} cannot be archived: {reason}")]
    NoJobArchive {
        path: PathBuf,
        job: String,
        reason: &'static str,
    },
    #[error("cannot name the compiled release after its version")]
    Version(#[source] Box<crate::release::ReleaseError>),
    #[error("{path} exists and differs from the compiled release just written; remove it or export elsewhere with -o DIR")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Digest(#[from] crate::release::digest::DigestError),
    #[error(transparent)]
    Stage(#[from] crate::compile::StageError),
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ExportError {
        let path = path.into();
        move |source| ExportError::Io { path, source }
    }
}

/// How to write compiled releases.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub out_dir: PathBuf,
    /// `--digest`: the algorithm of every compiled package's `sha1`; by default each package's
    /// source digest's (its fingerprint's for a source directory).
    pub digest: Option<Algorithm>,
    /// `--stemcell`: the stemcell source releases were compiled for, instead of the base's.
    pub stemcell: Option<Stemcell>,
    /// Every entry's mtime.
    pub mtime: u64,
}

/// One compiled release to write.
pub struct ReleaseExport<'a> {
    pub release: &'a Release,
    pub stemcell: Stemcell,
    /// In the release's order.
    pub packages: Vec<PackageExport<'a>>,
    pub jobs: Vec<&'a Job>,
    /// Jobs left out because some of their packages were not selected.
    pub dropped_jobs: Vec<&'a str>,
}

pub struct PackageExport<'a> {
    pub package: &'a Package,
    /// The package image's layer: its files under `var/vcap/packages/<name>/`.
    pub layer: Descriptor,
    pub algorithm: Algorithm,
}

impl ReleaseExport<'_> {
    /// `<name>-<version>-<os>-<stemcell version>.tgz`, as `bosh-agent compile` names it.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.tgz",
            self.release.name,
            self.release.version,
            self.stemcell.file_suffix()
        )
    }
}

/// What goes into each release's compiled release, after a successful compile of `plan`:
/// releases with nothing selected are left out.
pub fn plan_exports<'a>(
    plan: &'a Plan,
    report: &CompileReport,
    store: &OciStore,
    options: &ExportOptions,
    base_stemcell: Option<&Stemcell>,
) -> Result<Vec<ReleaseExport<'a>>, ExportError> {
    let refs = store.ref_map()?;
    let mut exports = Vec::new();
    for (rid, release) in plan.releases.iter().enumerate() {
        let selected: Vec<(usize, usize)> = plan.node_of[rid]
            .iter()
            .enumerate()
            .filter_map(|(pid, node)| node.map(|n| (pid, n)))
            .collect();
        if selected.is_empty() {
            continue;
        }
        // The version becomes part of a file name: a hostile one must not leave DIR.
        crate::release::validate_name(&release.path, "release version", &release.version)
            .map_err(|e| ExportError::Version(Box::new(e)))?;
        let stemcell = match &release.stemcell {
            Some(own) => own.clone(),
            None => options
                .stemcell
                .clone()
                .or_else(|| base_stemcell.cloned())
                .ok_or_else(|| ExportError::NoStemcell {
                    release: release.name.clone(),
                })?,
        };
        let mut packages = Vec::with_capacity(selected.len());
        for &(pid, node) in &selected {
            let package = &release.packages[pid];
            let outcome = &report.packages[node];
            let not_compiled = || ExportError::NotCompiled {
                release: release.name.clone(),
                package: package.name.clone(),
            };
            let descriptor = refs
                .get(&package_ref(&outcome.name, &outcome.cache_key))
                .ok_or_else(not_compiled)?;
            let manifest = image::read_manifest(store, descriptor)?;
            let layer = manifest.layers().last().cloned().ok_or_else(not_compiled)?;
            packages.push(PackageExport {
                package,
                layer,
                algorithm: options.digest.unwrap_or_else(|| source_era(package)),
            });
        }
        let present: HashSet<&str> = packages.iter().map(|p| p.package.name.as_str()).collect();
        let mut jobs = Vec::new();
        let mut dropped_jobs = Vec::new();
        for job in &release.jobs {
            if !job.packages.iter().all(|p| present.contains(p.as_str())) {
                dropped_jobs.push(job.name.as_str());
                continue;
            }
            if job.archive.is_none() && (job.files.is_empty() || job.fingerprint.is_none()) {
                return Err(ExportError::NoJobArchive {
                    path: release.path.clone(),
                    job: job.name.clone(),
                    reason: match release.kind {
                        ReleaseKind::Source => {
                            "its files are not all there (the warning above says which)"
                        }
                        _ => "the release lists no archive for it",
                    },
                });
            }
            jobs.push(job);
        }
        exports.push(ReleaseExport {
            release,
            stemcell,
            packages,
            jobs,
            dropped_jobs,
        });
    }
    Ok(exports)
}

/// The digest algorithm a package's source used: its archive's recorded digest (the strongest
/// of several), or for a source directory the era of its fingerprint.
fn source_era(package: &Package) -> Algorithm {
    if let Some(digest) = package
        .sha1
        .as_deref()
        .and_then(|s| MultiDigest::parse(s).ok())
    {
        return digest.strongest().algorithm;
    }
    fingerprint_era(&package.fingerprint)
}

/// The digest algorithm of a fingerprint's era: sha256 for 64 hex characters, else sha1.
pub(crate) fn fingerprint_era(fingerprint: &str) -> Algorithm {
    match Era::of(fingerprint) {
        Some(Era::Sha256) => Algorithm::Sha256,
        _ => Algorithm::Sha1,
    }
}
