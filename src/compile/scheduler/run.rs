//! The run loop. `workers` threads share the graph state under one mutex; a worker that finishes
//! a job records the outcome and takes the next ready node itself, so a dependant starts without
//! waiting for another thread to be woken, which is slow on a loaded machine (see
//! docs/DECISIONS.md, "Scheduler: ready nodes only, longest critical path first"). The calling
//! thread only delivers events and turns the caller's cancellation into a stop.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use super::graph::{Graph, ReadyQueue};
use super::{
    CancelToken, Event, JobPanic, OnFailure, RunOptions, RunReport, Span, Status, StopReason,
};

/// Messages to the calling thread, sent under the state lock so their order is causal: a
/// dependency's `Finished` always comes before its dependant's `Started`. Not generic over the
/// job's result type, so the caller's token can hold a sender in a `'static` callback; results
/// travel through [`Shared::outcomes`].
enum Msg {
    Started(usize),
    /// The node's outcome is in its slot.
    Finished(usize),
    Skipped(usize, usize),
    Stopping(StopReason),
    /// The caller's token was cancelled (sent by its callback).
    Interrupt,
    /// A worker thread is done.
    Exited,
}

/// What the workers share.
struct Shared<'g, S, E> {
    core: Mutex<Core<'g>>,
    changed: Condvar,
    on_failure: OnFailure,
    interrupt: Option<CancelToken>,
    tx: Sender<Msg>,
    /// Each finished job's status and span, written once by its worker, taken by the caller.
    outcomes: Vec<Slot<S, E>>,
}

type Slot<S, E> = Mutex<Option<(Status<S, E>, Span)>>;

struct Core<'g> {
    graph: &'g Graph,
    ready: ReadyQueue<'g>,
    /// Dependencies of each node that have not succeeded yet.
    missing: Vec<usize>,
    /// The node has a final status (finished or skipped).
    settled: Vec<bool>,
    running: HashMap<usize, CancelToken>,
    stopped: Option<StopReason>,
    interrupted: bool,
}

/// Runs `job(node, token)` once for every node of `graph` whose dependencies all succeeded, at
/// most `options.workers` at a time, and returns when nothing runs any more.
///
/// `job` is called on worker threads; `token` is the node's own [`CancelToken`], cancelled when
/// the run stops (fail-fast or the caller's token). An `Err` returned after the cancellation
/// reached the job (it saw `is_cancelled()`, a wait returned early, or an `on_cancel` callback
/// ran) is reported as [`Status::Cancelled`]; any other `Err`, or a panic, as
/// [`Status::Failed`]. `on_event` is called on the calling thread, in causal order.
pub fn run<S, E, J, V>(
    graph: &Graph,
    options: &RunOptions,
    job: J,
    mut on_event: V,
) -> RunReport<S, E>
where
    S: Send,
    E: Send + From<JobPanic>,
    J: Fn(usize, &CancelToken) -> Result<S, E> + Sync,
    V: FnMut(Event<'_, S, E>),
{
    let began = Instant::now();
    let len = graph.len();
    let (tx, rx) = mpsc::channel::<Msg>();
    let already = options.cancel.as_ref().is_some_and(CancelToken::peek);
    let shared = Shared {
        core: Mutex::new(Core {
            graph,
            ready: ReadyQueue::with_sources(graph),
            missing: (0..len).map(|n| graph.dependencies(n).len()).collect(),
            settled: vec![false; len],
            running: HashMap::new(),
            stopped: already.then_some(StopReason::Interrupted),
            interrupted: already,
        }),
        changed: Condvar::new(),
        on_failure: options.on_failure,
        interrupt: options.cancel.clone(),
        tx: tx.clone(),
        outcomes: (0..len).map(|_| Mutex::new(None)).collect(),
    };
    if already {
        on_event(Event::Stopping(StopReason::Interrupted));
    }
    let hook = options.cancel.as_ref().and_then(|token| {
        let tx = tx.clone();
        token.on_cancel(move || {
            let _ = tx.send(Msg::Interrupt);
        })
    });
    drop(tx);

    let mut statuses: Vec<Option<Status<S, E>>> = (0..len).map(|_| None).collect();
    let mut spans: Vec<Option<Span>> = vec![None; len];
    let threads = options.workers.max(1).min(len);
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| worker(&shared, &job));
        }
        let _stop_on_panic = StopOnPanic(&shared);
        let mut exited = 0;
        while exited < threads {
            // Workers hold senders until they send `Exited`, so this cannot disconnect early.
            match rx.recv().expect("workers send Exited before leaving") {
                Msg::Started(node) => on_event(Event::Started(node)),
                Msg::Finished(node) => {
                    let mut slot = shared.outcomes[node]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let (status, span) = slot.take().expect("a finished node's outcome");
                    spans[node] = Some(span);
                    on_event(Event::Finished(node, statuses[node].insert(status)));
                }
                Msg::Skipped(node, because) => {
                    let status = statuses[node].insert(Status::Skipped { because });
                    on_event(Event::Finished(node, status));
                }
                Msg::Stopping(reason) => on_event(Event::Stopping(reason)),
                Msg::Interrupt => {
                    let mut core = shared.lock();
                    core.interrupted = true;
                    let tokens = shared.stop(&mut core, StopReason::Interrupted);
                    drop(core);
                    shared.changed.notify_all();
                    cancel_all(tokens);
                }
                Msg::Exited => exited += 1,
            }
        }
    });

    if let (Some(token), Some(id)) = (options.cancel.as_ref(), hook) {
        token.remove_callback(id);
    }
    let core = shared.core.into_inner().unwrap_or_else(|p| p.into_inner());
    RunReport {
        statuses: statuses
            .into_iter()
            .map(|s| s.unwrap_or(Status::NotStarted))
            .collect(),
        spans,
        wall: began.elapsed(),
        interrupted: core.interrupted,
        stopped: core.stopped,
    }
}

/// One worker: take the best ready node, run it, record the outcome, repeat; leave when the run
/// stopped or when nothing is ready and nothing runs (then nothing can become ready).
fn worker<S, E, J>(shared: &Shared<'_, S, E>, job: &J)
where
    S: Send,
    E: Send + From<JobPanic>,
    J: Fn(usize, &CancelToken) -> Result<S, E> + Sync,
{
    let _exit = ExitNotice(shared);
    loop {
        let mut to_cancel = Vec::new();
        let picked = {
            let mut core = shared.lock();
            loop {
                let interrupted = shared.interrupt.as_ref().is_some_and(CancelToken::peek);
                if interrupted && core.stopped.is_none() {
                    core.interrupted = true;
                    to_cancel = shared.stop(&mut core, StopReason::Interrupted);
                }
                if core.stopped.is_some() {
                    break None;
                }
                if let Some(node) = core.ready.pop() {
                    let token = CancelToken::new();
                    core.running.insert(node, token.clone());
                    shared.send(Msg::Started(node));
                    break Some((node, token, Instant::now()));
                }
                if core.running.is_empty() {
                    break None;
                }
                core = shared.changed.wait(core).unwrap_or_else(|p| p.into_inner());
            }
        };
        cancel_all(to_cancel);
        let Some((node, token, start)) = picked else {
            return;
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| job(node, &token)))
            .unwrap_or_else(|payload| Err(panic_message(&*payload).into()));
        let end = Instant::now();
        let observed = token.close();
        let status = match result {
            Ok(value) => Status::Succeeded(value),
            Err(error) if observed => Status::Cancelled { error },
            Err(error) => Status::Failed(error),
        };
        let tokens = {
            let mut core = shared.lock();
            shared.finish(&mut core, node, status, Span { start, end })
        };
        shared.changed.notify_all();
        cancel_all(tokens);
    }
}

impl<'g, S, E> Shared<'g, S, E> {
    fn lock(&self) -> MutexGuard<'_, Core<'g>> {
        // Jobs run outside the lock and their panics are caught, so poisoning cannot leave the
        // state half-updated in practice; carry on with it.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, msg: Msg) {
        // The receiver lives until every worker has exited, so this cannot fail for them.
        let _ = self.tx.send(msg);
    }

    /// Stops the run once; returns the running jobs' tokens, to be cancelled outside the lock
    /// (their callbacks may kill processes).
    fn stop(&self, core: &mut Core<'_>, reason: StopReason) -> Vec<CancelToken> {
        if core.stopped.is_some() {
            return Vec::new();
        }
        core.stopped = Some(reason);
        self.send(Msg::Stopping(reason));
        core.running.values().cloned().collect()
    }

    /// Records a job's outcome: dependants of a success may become ready, everything behind a
    /// failure is skipped (unless an earlier failure claimed it), and fail-fast stops the run.
    fn finish(
        &self,
        core: &mut Core<'_>,
        node: usize,
        status: Status<S, E>,
        span: Span,
    ) -> Vec<CancelToken> {
        core.running.remove(&node);
        core.settled[node] = true;
        let graph = core.graph;
        let failed = matches!(status, Status::Failed(_));
        if status.is_succeeded() {
            for &d in graph.dependants(node) {
                core.missing[d] -= 1;
                if core.missing[d] == 0 {
                    core.ready.push(d);
                }
            }
        }
        *self.outcomes[node]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((status, span));
        self.send(Msg::Finished(node));
        if !failed {
            return Vec::new();
        }
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            for &d in graph.dependants(n) {
                if !core.settled[d] {
                    core.settled[d] = true;
                    self.send(Msg::Skipped(d, node));
                    stack.push(d);
                }
            }
        }
        match self.on_failure {
            OnFailure::FailFast => self.stop(core, StopReason::Failure(node)),
            OnFailure::KeepGoing => Vec::new(),
        }
    }
}

/// Tells the others and the calling thread that a worker left, however it leaves.
struct ExitNotice<'a, 'g, S, E>(&'a Shared<'g, S, E>);

impl<S, E> Drop for ExitNotice<'_, '_, S, E> {
    fn drop(&mut self) {
        self.0.changed.notify_all();
        self.0.send(Msg::Exited);
    }
}

/// If the caller's event callback panics, stop the run so the panic surfaces once the running
/// jobs return, not after the whole graph has been worked through.
struct StopOnPanic<'a, 'g, S, E>(&'a Shared<'g, S, E>);

impl<S, E> Drop for StopOnPanic<'_, '_, S, E> {
    fn drop(&mut self) {
        if thread::panicking() {
            let tokens = {
                let mut core = self.0.lock();
                self.0.stop(&mut core, StopReason::Interrupted)
            };
            self.0.changed.notify_all();
            cancel_all(tokens);
        }
    }
}

fn cancel_all(tokens: Vec<CancelToken>) {
    for token in tokens {
        token.cancel();
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> JobPanic {
    JobPanic(
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_string()),
    )
}
