//! BOSH releases in their on-disk forms, read into one model: final release tarballs (or
//! their extracted directories), compiled release tarballs (`compiled_packages`, for one
//! [`Stemcell`]), dev releases built by the bosh CLI, and release source directories. Every
//! package, job and license archive is verified against its recorded digest on load.

mod dev;
pub mod digest;
mod error;
mod final_tarball;
pub mod fingerprint;
mod index;
mod job;
mod listed;
mod manifest;
mod names;
mod source_dir;
pub mod stemcell;
pub mod version;
pub(crate) mod yaml;

use std::path::{Path, PathBuf};

pub use error::ReleaseError;
pub use names::validate_name;
pub use stemcell::Stemcell;

use crate::extract::ExtractLimits;

/// How a release was given to us; detected from the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseKind {
    /// A final (or dev) release tarball as `bosh create-release --tarball` writes it.
    Tarball,
    /// A directory holding an extracted release tarball (`release.MF` at its top).
    ExtractedTarball,
    /// A release directory with `dev_releases/`, package archives in the bosh blob cache.
    Dev,
    /// A release source directory: `packages/<n>/spec`, fingerprints computed here.
    Source,
}

impl ReleaseKind {
    pub fn describe(self) -> &'static str {
        match self {
            ReleaseKind::Tarball => "release tarball",
            ReleaseKind::ExtractedTarball => "extracted release tarball",
            ReleaseKind::Dev => "dev release",
            ReleaseKind::Source => "release source directory",
        }
    }
}

/// Where a package's sources come from when it is staged for compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageSource {
    /// A verified package archive on disk (bosh cache, extracted release).
    Archive(PathBuf),
    /// The member `packages/<name>.tgz` of a release tarball.
    TarballMember { tarball: PathBuf, member: String },
    /// Files of a source-directory package, the way `bosh create-release` would archive them.
    Files(Vec<SourceFile>),
}

/// One file of a source-directory package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path inside the package archive (and under `/var/vcap/source/<pkg>`).
    pub relative_path: String,
    /// Where it is on disk; `None` for a blob known only from `config/blobs.yml`.
    pub disk_path: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// BOSH v2 fingerprint (40-hex for the sha1 era, 64-hex for the sha256 era).
    pub fingerprint: String,
    /// The archive's recorded digest string, when the release has archives.
    pub sha1: Option<String>,
    /// Direct dependencies, by package name within the same release.
    pub dependencies: Vec<String>,
    pub source: PackageSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub fingerprint: Option<String>,
    /// Packages this job lists in its `job.MF` (or `spec` in a source directory).
    pub packages: Vec<String>,
    /// The verified job archive and its manifest entry, when the release has archives.
    pub archive: Option<JobArchive>,
    /// A source directory's job: the files of its archive (`job.MF`, `monit`,
    /// `templates/...`), as `bosh create-release` would put them in.
    pub files: Vec<SourceFile>,
}

/// Where a verified archive of a release is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveLocation {
    File(PathBuf),
    /// A member of a release tarball (`jobs/x.tgz`, `license.tgz`, `LICENSE`).
    TarballMember {
        tarball: PathBuf,
        member: String,
    },
}

/// A job archive and its `jobs[]` entry as the release manifest wrote it, so that a compiled
/// release carries both unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobArchive {
    pub location: ArchiveLocation,
    pub version: Option<String>,
    pub fingerprint: Option<String>,
    pub sha1: String,
    /// The `packages` newer bosh CLIs write into the entry; `None` when it had none.
    pub packages: Option<Vec<String>>,
}

/// The release's license: its `license` entry, `license.tgz` and the `LICENSE*`/`NOTICE*`
/// files bosh puts beside it at the top of a tarball.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct License {
    pub version: Option<String>,
    pub fingerprint: Option<String>,
    pub sha1: Option<String>,
    /// `None` when the manifest lists a license the release does not carry (old tarballs).
    pub archive: Option<ArchiveLocation>,
    /// Top-level `LICENSE*` and `NOTICE*` files, by name. In a source directory, with no
    /// archive and no digest, they are what `license.tgz` is made of.
    pub files: Vec<(String, ArchiveLocation)>,
}

#[derive(Clone, Debug)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub kind: ReleaseKind,
    pub path: PathBuf,
    pub packages: Vec<Package>,
    pub jobs: Vec<Job>,
    /// For a compiled release, the stemcell its packages were compiled for; its `packages`
    /// are then the compiled packages, whose archives hold installed files.
    pub stemcell: Option<Stemcell>,
    pub license: Option<License>,
    /// `commit_hash` and `uncommitted_changes` of the release manifest, as written.
    pub commit_hash: Option<String>,
    pub uncommitted_changes: Option<String>,
    /// Non-fatal findings worth telling the user (e.g. a license listed but absent).
    pub warnings: Vec<String>,
}

impl Release {
    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn is_compiled(&self) -> bool {
        self.stemcell.is_some()
    }

    /// The kind in words, with the stemcell of a compiled release.
    pub fn describe(&self) -> String {
        match &self.stemcell {
            Some(stemcell) => format!("compiled {} for {stemcell}", self.kind.describe()),
            None => self.kind.describe().to_string(),
        }
    }
}

/// Settings that affect how releases are found and checked.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The bosh CLI's local blob cache, where dev releases keep their archives.
    pub bosh_cache: PathBuf,
    /// Dev releases: the version to read instead of the latest.
    pub release_version: Option<String>,
    pub limits: ExtractLimits,
}

impl LoadOptions {
    pub fn new(bosh_cache: PathBuf) -> LoadOptions {
        LoadOptions {
            bosh_cache,
            release_version: None,
            limits: ExtractLimits::default(),
        }
    }

    /// `~/.bosh/cache`, the bosh CLI's default.
    pub fn default_bosh_cache() -> PathBuf {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into());
        home.join(".bosh").join("cache")
    }
}

/// Works out which kind of release `path` holds.
pub fn detect(path: &Path) -> Result<ReleaseKind, ReleaseError> {
    let meta = fs_err::metadata(path).map_err(|source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(ReleaseKind::Tarball);
    }
    if path.join("release.MF").is_file() {
        return Ok(ReleaseKind::ExtractedTarball);
    }
    if path.join("dev_releases").is_dir() {
        return Ok(ReleaseKind::Dev);
    }
    if path.join("packages").is_dir() || path.join("jobs").is_dir() {
        return Ok(ReleaseKind::Source);
    }
    Err(ReleaseError::NotARelease {
        path: path.to_path_buf(),
    })
}

/// Reads and verifies the release at `path`, whatever its kind.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Release, ReleaseError> {
    let kind = detect(path)?;
    if options.release_version.is_some() && kind != ReleaseKind::Dev {
        return Err(ReleaseError::VersionNotApplicable {
            path: path.to_path_buf(),
            kind: kind.describe(),
        });
    }
    let release = match kind {
        ReleaseKind::Tarball => final_tarball::load(path, options)?,
        ReleaseKind::ExtractedTarball => final_tarball::load_extracted(path, options)?,
        ReleaseKind::Dev => dev::load(path, options)?,
        ReleaseKind::Source => source_dir::load(path)?,
    };
    check_unique_names(&release)?;
    Ok(release)
}

fn check_unique_names(release: &Release) -> Result<(), ReleaseError> {
    let mut seen = std::collections::HashSet::new();
    for p in &release.packages {
        if !seen.insert(p.name.as_str()) {
            return Err(ReleaseError::DuplicatePackage {
                path: release.path.clone(),
                name: p.name.clone(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for j in &release.jobs {
        if !seen.insert(j.name.as_str()) {
            return Err(ReleaseError::DuplicateJob {
                path: release.path.clone(),
                name: j.name.clone(),
            });
        }
    }
    Ok(())
}
