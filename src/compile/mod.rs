//! `compile`: the package DAG compiled in sandboxes over a compilation base, results stored as
//! OCI layers and published for dependants.
//!
//! - [`Compiler::compile`] runs a whole plan (`compiler`): `units` gives each package its
//!   cache [`key`] and finds what the store has, `import` brings compiled releases' packages
//!   into the store ([`import_only`] when there is nothing else), `stage` copies sources out, the [`scheduler`]
//!   runs the ready packages' jobs (`job`) on N workers, weighted by the last compile times
//!   (`timings`), and the committer (`commit`) writes each result as an image (`package`) off
//!   the critical path; build trees go to a tmpfs or the disk ([`scratch`]), and a finished
//!   package's scratch dir goes to the run's trash, emptied after the run. [`shell`] opens one
//!   package's compile sandbox for a person.
//! - The sandbox is reached only through [`crate::sandbox::Sandbox`]: the orchestration is
//!   tested against a recording fake (`tests/orchestration.rs`, as any user, in about a second)
//!   and end to end with real sandboxes (`tests/compile.rs`); the scheduler on its own
//!   (`tests/scheduler.rs`).
//! - What comes out (`outcome`, `status`): [`Progress`] events, a [`CompileReport`] with a
//!   [`PackageStatus`] per package and a typed [`PackageError`] per failure; and [`report`]
//!   (summary JSON, DOT graph, fissile's metrics CSV).

mod commit;
mod compiler;
mod import;
mod job;
pub mod key;
mod outcome;
mod package;
mod remote;
pub mod report;
pub mod scheduler;
pub mod scratch;
pub mod shard;
pub mod shell;
mod stage;
mod status;
mod timings;
mod units;

pub use compiler::{import_only, CompileError, CompileOptions, Compiler, RunContext};
pub use import::ImportError;
pub use job::tail;
pub use outcome::{CacheSummary, CompileReport, Failure, PackageError, Progress};
pub use package::{
    BASE_ANNOTATION, CACHE_KEY_ANNOTATION, DEPENDENCIES_ANNOTATION, FINGERPRINT_ANNOTATION,
    NAME_ANNOTATION,
};
pub use remote::PushReport;
pub use shard::Shard;
pub use stage::StageError;
pub use status::PackageStatus;

pub(crate) use stage::materialize_tarball_members;
