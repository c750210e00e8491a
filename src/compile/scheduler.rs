//! A generic, synchronous DAG executor: runs one job per node on up to N worker threads, a node
//! only after all its dependencies succeeded.
//!
//! Why it looks like this:
//! - **No slot is held while waiting.** fissile queued packages in a fixed topological order and
//!   let a worker take the next one even if its dependencies were still compiling; the worker
//!   then sat blocked, so fewer than N packages compiled at once. Here only *ready* nodes are
//!   ever handed to a worker.
//! - **Longest remaining critical path first.** Among ready nodes, the one with the largest
//!   weight-plus-longest-path-to-a-sink starts first (ties: lower index, for reproducible runs).
//!   Long chains start early and the short leaves fill the gaps, which keeps the makespan close
//!   to `max(critical path, total work / N)`; [`sim`] compares both policies without running
//!   anything.
//! - **Failures are reported one by one.** Fail-fast stops starting nodes, cancels the running
//!   ones through their [`CancelToken`] and waits for them; every node that failed on its own
//!   keeps its own error, a node that died because it was cancelled is `Cancelled`, and nodes
//!   behind a failure are `Skipped` naming it. With `KeepGoing` everything not behind a failure
//!   still runs.
//! - **Plain threads.** Jobs are long (seconds to minutes) and blocking (they wait for a sandbox),
//!   so N scoped worker threads share the graph state under one mutex. A worker that finishes a
//!   job records it and takes the next ready node itself: a dependant starts without another
//!   thread having to be woken first, which matters on a loaded machine. The calling thread
//!   delivers [`Event`]s (so the progress display needs no locking) and turns the caller's
//!   cancellation into a stop. Job panics are caught and reported as failures of that node.
//! - **Lanes, detached and on-demand nodes** (the shared cache). Nodes run in lanes, each with
//!   its own number of workers, so fetching a result from a registry never takes a compile
//!   slot. A *detached* node is ready without its dependencies (a fetch needs none of them); its
//!   job may ask to run again later ([`Step::Later`]: a poll that holds no worker while it
//!   waits) or to become an ordinary node after all ([`Step::Attach`]: the fetch failed, so it
//!   is compiled, and now needs its dependencies). An *on-demand* node runs only when an
//!   attached node that runs depends on it: a shard fetches what another shard compiles only
//!   if it needs it.

mod graph;
mod run;
pub mod sim;

use std::time::{Duration, Instant};

pub use crate::cancel::{CallbackId, CancelToken};
pub use graph::{Graph, GraphError, Node};
pub use run::{run, run_steps};
pub use sim::{least_deps_first_order, schedule, simulate, Policy, Simulation};

/// What happens to the rest of the graph when a job fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Start nothing more, cancel running jobs, wait for them, report.
    #[default]
    FailFast,
    /// Run everything that does not depend (transitively) on a failed node.
    KeepGoing,
}

/// What a job of [`run_steps`] asks for next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<S> {
    /// The node is done.
    Done(S),
    /// Call the job again after this long; the node holds no worker meanwhile.
    Later(Duration),
    /// From now on the node waits for its dependencies (which are needed from now on) and runs
    /// in `lane`; its job is called again once they succeeded.
    Attach { lane: usize },
}

/// How to run a graph.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Maximum number of jobs of lane 0 running at once; 0 is treated as 1.
    pub workers: usize,
    /// The worker limits of lanes 1, 2, ...
    pub other_lanes: Vec<usize>,
    pub on_failure: OnFailure,
    /// The caller's token (e.g. cancelled by a SIGINT handler thread): when it is cancelled no
    /// new job starts, running jobs are cancelled, and the report says `interrupted`.
    pub cancel: Option<CancelToken>,
}

impl RunOptions {
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            other_lanes: Vec::new(),
            on_failure: OnFailure::default(),
            cancel: None,
        }
    }

    /// Adds a lane with `workers` workers of its own; it is lane 1, then 2, ...
    pub fn with_lane(mut self, workers: usize) -> Self {
        self.other_lanes.push(workers);
        self
    }

    /// The worker limit of every lane, lane 0 first (each at least 1).
    pub fn lane_limits(&self) -> Vec<usize> {
        std::iter::once(self.workers)
            .chain(self.other_lanes.iter().copied())
            .map(|w| w.max(1))
            .collect()
    }

    pub fn keep_going(mut self, keep_going: bool) -> Self {
        self.on_failure = if keep_going {
            OnFailure::KeepGoing
        } else {
            OnFailure::FailFast
        };
        self
    }

    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }
}

/// A job that panicked, as its node's error (`E: From<JobPanic>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPanic(pub String);

impl std::fmt::Display for JobPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the job panicked: {}", self.0)
    }
}

impl std::error::Error for JobPanic {}

impl From<JobPanic> for String {
    fn from(panic: JobPanic) -> String {
        panic.to_string()
    }
}

/// The final state of one node; `E` is the jobs' error type.
#[derive(Debug, Clone, PartialEq)]
pub enum Status<S, E> {
    Succeeded(S),
    /// The job returned this error (or panicked) on its own, not because it was cancelled.
    Failed(E),
    /// Not run because the node `because` failed and this node depends on it (transitively).
    Skipped {
        because: usize,
    },
    /// The job was running when the run was stopped and returned an error after the
    /// cancellation reached it; `error` is what it said (e.g. "killed by signal 9").
    Cancelled {
        error: E,
    },
    /// Never started: the run stopped first (fail-fast or interrupt). Also a node waiting to
    /// be called again ([`Step::Later`]) when the run stopped.
    NotStarted,
    /// An on-demand node that nothing which ran needed.
    NotNeeded,
}

impl<S, E> Status<S, E> {
    pub fn is_succeeded(&self) -> bool {
        matches!(self, Status::Succeeded(_))
    }

    /// A short lowercase name: `succeeded`, `failed`, `skipped`, `cancelled`, `not-started`,
    /// `not-needed`.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Succeeded(_) => "succeeded",
            Status::Failed(_) => "failed",
            Status::Skipped { .. } => "skipped",
            Status::Cancelled { .. } => "cancelled",
            Status::NotStarted => "not-started",
            Status::NotNeeded => "not-needed",
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Fail-fast: this node failed first.
    Failure(usize),
    /// The caller's token was cancelled.
    Interrupted,
}

/// Progress, delivered in order on the thread that called [`run`].
#[derive(Debug)]
pub enum Event<'a, S, E> {
    /// A worker took the node and calls its job (events arrive shortly after the fact); sent
    /// again when a node that attached ([`Step::Attach`]) is taken, not for a [`Step::Later`].
    Started(usize),
    /// The node has its final status. Sent once for every started node and for every node
    /// skipped behind a failure; never for nodes that end `NotStarted`.
    Finished(usize, &'a Status<S, E>),
    /// The run stops starting nodes and cancels the running ones; sent once.
    Stopping(StopReason),
}

/// When a started node's job ran, measured on its worker thread (start: when the worker took
/// the node; end: when the job returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
}

impl Span {
    pub fn duration(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct RunReport<S, E> {
    /// One status per node, by index.
    pub statuses: Vec<Status<S, E>>,
    /// One span per node that was started.
    pub spans: Vec<Option<Span>>,
    /// From the call to [`run`] until it returned.
    pub wall: Duration,
    /// The caller's token was cancelled during the run.
    pub interrupted: bool,
    /// What stopped the run first, if anything did.
    pub stopped: Option<StopReason>,
}

impl<S, E> RunReport<S, E> {
    /// Every node succeeded or was not needed (and the run was not interrupted).
    pub fn all_succeeded(&self) -> bool {
        !self.interrupted
            && self
                .statuses
                .iter()
                .all(|s| s.is_succeeded() || matches!(s, Status::NotNeeded))
    }

    /// The nodes that failed on their own, with their errors, by index.
    pub fn failures(&self) -> Vec<(usize, &E)> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(node, status)| match status {
                Status::Failed(error) => Some((node, error)),
                _ => None,
            })
            .collect()
    }
}
