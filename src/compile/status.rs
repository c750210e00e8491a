//! How each package of a compile ended, in the words of the summary, the graph and the display.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageStatus {
    /// Compiled in a sandbox by this run.
    Compiled,
    /// Its cache key was in the store: nothing to do.
    Cached,
    /// Its files come from a compiled release: a package of a compiled release given as input
    /// (imported into the store, or found there from an earlier import), or a source package
    /// that such a package stands in for under the director's rule (same name, fingerprint and
    /// dependencies; same stemcell OS and major version).
    Imported,
    /// Its compile or its commit to the store failed.
    Failed,
    /// Not compiled: a dependency failed, or the run stopped before it started.
    Skipped,
    /// It was compiling when the run stopped (fail-fast or an interrupt) and was killed.
    Cancelled,
}

impl PackageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageStatus::Compiled => "compiled",
            PackageStatus::Cached => "cached",
            PackageStatus::Imported => "imported",
            PackageStatus::Failed => "failed",
            PackageStatus::Skipped => "skipped",
            PackageStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for PackageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
