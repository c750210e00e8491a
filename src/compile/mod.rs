//! `compile`: the package DAG compiled in sandboxes over a compilation base, results stored as
//! OCI layers and published for dependants.
//!
//! - [`Compiler::compile`] runs a whole plan (`compiler`): `units` gives each package its
//!   cache [`key`] and finds what the store has, `stage` copies sources out, the [`scheduler`]
//!   runs the ready packages' jobs (`job`) on N workers, and the committer (`commit`) writes
//!   each result as an image (`package`) off the critical path.
//! - The sandbox is reached only through [`crate::sandbox::Sandbox`], so everything here can be
//!   tested with a fake (`tests/orchestration.rs`).
//! - What comes out: `outcome` (progress events, the report, typed failures), [`report`]
//!   (summary JSON, DOT graph, fissile's metrics CSV), `status`.

mod commit;
mod compiler;
mod job;
pub mod key;
mod outcome;
mod package;
pub mod report;
pub mod scheduler;
pub mod shell;
mod stage;
mod status;
mod timings;
mod units;

pub use compiler::{CompileError, CompileOptions, Compiler};
pub use job::tail;
pub use outcome::{CompileReport, Failure, PackageError, Progress};
pub use status::PackageStatus;
