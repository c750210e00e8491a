//! What a compile run tells its caller: progress events as they happen, and at the end a report
//! of every package with, for each failure, the typed error and what a user needs to fix it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::report::PackageReport;
use super::scheduler::JobPanic;
use super::stage::StageError;
use super::status::PackageStatus;
use crate::oci::OciError;
use crate::sandbox::{ExitStatus, SandboxError};

/// What the display is told, in order, from the scheduling thread.
#[derive(Debug)]
pub enum Progress<'a> {
    /// What the run found: `total` packages, of which `cached` are in the store already and
    /// `imported` come from compiled releases; the rest are compiled.
    /// `pulled` of the rest are in the shared cache, and `elsewhere` are compiled by other
    /// shards (this one fetches them if it needs them).
    Planned {
        total: usize,
        cached: usize,
        imported: usize,
        pulled: usize,
        elsewhere: usize,
    },
    Cached {
        name: &'a str,
    },
    Started {
        name: &'a str,
        log: &'a Path,
    },
    /// Fetching the package from the shared cache.
    Pulling {
        name: &'a str,
    },
    /// Waiting for shard `shard` to compile the package (this one needs it).
    Waiting {
        name: &'a str,
        shard: usize,
    },
    /// Everything ran; `remaining` pushes to the shared cache are still on their way.
    Pushing {
        remaining: usize,
    },
    Finished {
        report: &'a PackageReport,
    },
    /// Something the user should know about how a package was compiled (told before its
    /// `Finished`).
    Note {
        name: &'a str,
        message: &'a str,
    },
    Stopping {
        reason: String,
    },
}

/// Why one package did not compile.
#[derive(thiserror::Error, Debug)]
pub enum PackageError {
    #[error("cannot create {}: {source}", .path.display())]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot stage its sources: {0}")]
    Stage(StageError),
    #[error("sandbox error: {0}")]
    Sandbox(SandboxError),
    #[error("packaging script {status}{}", if *.oom_killed { " (out of memory: raise --memory)" } else { "" })]
    Script {
        status: ExitStatus,
        oom_killed: bool,
    },
    #[error("cannot publish {}: {source}", .path.display())]
    Publish {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storing the compiled package failed: {0}")]
    Store(OciError),
    /// One index update names a whole batch of packages, so its error is shared.
    #[error("naming the compiled package in the store failed: {0}")]
    Name(Arc<OciError>),
    #[error("{0}")]
    Panicked(JobPanic),
    /// `--cache-required`, and the shared cache failed for this package.
    #[error("{0}")]
    SharedCache(crate::shared_cache::SharedCacheError),
    #[error("cannot take its lock in the work dir: {0}")]
    Lock(crate::workdir::WorkDirError),
    #[error("stopped while another run was compiling it")]
    Interrupted,
}

impl PackageError {
    /// Whether the package's log holds what went wrong (the script ran, or tried to).
    pub fn in_log(&self) -> bool {
        matches!(self, PackageError::Sandbox(_) | PackageError::Script { .. })
    }
}

/// A failed package, with what a user needs to fix it.
#[derive(Debug)]
pub struct Failure {
    pub name: String,
    pub error: PackageError,
    pub log: Option<PathBuf>,
    pub log_tail: Vec<String>,
    /// The kept scratch dir, with --keep-sandbox.
    pub kept: Option<PathBuf>,
}

// Boxed on its way through the scheduler: a `Result` carries it for every job.
impl From<JobPanic> for Box<Failure> {
    fn from(panic: JobPanic) -> Box<Failure> {
        Box::new(Failure {
            name: String::new(),
            error: PackageError::Panicked(panic),
            log: None,
            log_tail: Vec::new(),
            kept: None,
        })
    }
}

/// What the shared cache did for a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CacheSummary {
    pub repository: String,
    pub pulled: usize,
    pub pushed: usize,
    /// (what, why) of every push that failed.
    pub push_failures: Vec<(String, String)>,
    /// Every notice the cache gave (it failed, a package was bad).
    pub warnings: Vec<String>,
    /// Why the cache was off for the rest of the run, if it went off.
    pub down: Option<String>,
}

#[derive(Debug)]
pub struct CompileReport {
    /// One per plan node, in the plan's order.
    pub packages: Vec<PackageReport>,
    /// Sorted by package name.
    pub failures: Vec<Failure>,
    pub interrupted: bool,
    pub wall: Duration,
    /// When the run used a shared cache.
    pub cache: Option<CacheSummary>,
}

impl CompileReport {
    pub fn count(&self, status: PackageStatus) -> usize {
        self.packages.iter().filter(|p| p.status == status).count()
    }
}
