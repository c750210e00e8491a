//! The run loop. `workers` threads share the graph state under one mutex; a worker that finishes
//! a job records the outcome and takes the next ready node itself, so a dependant starts without
//! waiting for another thread to be woken, which is slow on a loaded machine (see
//! docs/DECISIONS.md, "Scheduler: ready nodes only, longest critical path first"). The calling
//! thread only delivers events and turns the caller's cancellation into a stop.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use super::graph::{Graph, ReadyQueue};
use super::{
    CancelToken, Event, JobPanic, OnFailure, RunOptions, RunReport, Span, Status, Step, StopReason,
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
    /// Ready nodes, per lane.
    ready: Vec<ReadyQueue<'g>>,
    /// Worker limit and running jobs, per lane.
    limits: Vec<usize>,
    busy: Vec<usize>,
    /// The lane each node runs in now.
    lane: Vec<usize>,
    /// The node waits for its dependencies (not detached, or attached since).
    attached: Vec<bool>,
    /// Something that runs needs the node (every node that is not on demand).
    wanted: Vec<bool>,
    /// In a ready queue, running, or waiting to run again.
    queued: Vec<bool>,
    /// A dependency failed: the node is skipped if it ever needs its dependencies.
    blocked_by: Vec<Option<usize>>,
    /// Dependencies of each node that have not succeeded yet.
    missing: Vec<usize>,
    /// The node has a final status (finished or skipped).
    settled: Vec<bool>,
    /// `Started` was sent since the node last attached; and when.
    announced: Vec<Option<Instant>>,
    running: HashMap<usize, CancelToken>,
    /// Nodes to run again, and when.
    later: BinaryHeap<Reverse<(Instant, usize)>>,
    stopped: Option<StopReason>,
    interrupted: bool,
}

impl<'g> Core<'g> {
    /// Queues the node if it can run now.
    fn offer(&mut self, node: usize) {
        if self.queued[node] || self.settled[node] || !self.wanted[node] {
            return;
        }
        if self.attached[node] && self.missing[node] > 0 {
            return;
        }
        self.queued[node] = true;
        self.ready[self.lane[node]].push(node);
    }

    /// Marks `node` needed, and with it the dependencies of every attached node so reached.
    fn want(&mut self, node: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if self.wanted[n] {
                continue;
            }
            self.wanted[n] = true;
            if self.attached[n] {
                stack.extend(self.graph.dependencies(n).iter().copied());
            }
            self.offer(n);
        }
    }

    /// The best ready node of a lane that has a free worker: highest priority, then lowest
    /// index, across lanes.
    fn pick(&mut self) -> Option<usize> {
        let graph = self.graph;
        let lane = (0..self.ready.len())
            .filter(|&l| self.busy[l] < self.limits[l])
            .filter_map(|l| self.ready[l].peek().map(|n| (l, n)))
            .max_by(|&(_, a), &(_, b)| {
                graph
                    .remaining_path(a)
                    .total_cmp(&graph.remaining_path(b))
                    .then_with(|| b.cmp(&a))
            })
            .map(|(l, _)| l)?;
        let node = self.ready[lane].pop()?;
        self.busy[lane] += 1;
        Some(node)
    }

    /// Moves the nodes whose wait is over to their ready queues; returns the next deadline.
    fn wake_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((due, node))) = self.later.peek() {
            if due > now {
                return Some(due);
            }
            self.later.pop();
            self.ready[self.lane[node]].push(node);
        }
        None
    }
}

/// Runs `job(node, token)` once for every node of `graph` whose dependencies all succeeded, at
/// most `options.workers` at a time, and returns when nothing runs any more.
///
/// `job` is called on worker threads; `token` is the node's own [`CancelToken`], cancelled when
/// the run stops (fail-fast or the caller's token). An `Err` returned after the cancellation
/// reached the job (it saw `is_cancelled()`, a wait returned early, or an `on_cancel` callback
/// ran) is reported as [`Status::Cancelled`]; any other `Err`, or a panic, as
/// [`Status::Failed`]. `on_event` is called on the calling thread, in causal order.
pub fn run<S, E, J, V>(graph: &Graph, options: &RunOptions, job: J, on_event: V) -> RunReport<S, E>
where
    S: Send,
    E: Send + From<JobPanic>,
    J: Fn(usize, &CancelToken) -> Result<S, E> + Sync,
    V: FnMut(Event<'_, S, E>),
{
    run_steps(
        graph,
        options,
        |node, token| job(node, token).map(Step::Done),
        on_event,
    )
}

/// [`run`] for jobs that may ask to be called again later or to attach ([`Step`]), over
/// graphs with lanes, detached and on-demand nodes (see [`super::Node`]).
pub fn run_steps<S, E, J, V>(
    graph: &Graph,
    options: &RunOptions,
    job: J,
    mut on_event: V,
) -> RunReport<S, E>
where
    S: Send,
    E: Send + From<JobPanic>,
    J: Fn(usize, &CancelToken) -> Result<Step<S>, E> + Sync,
    V: FnMut(Event<'_, S, E>),
{
    let began = Instant::now();
    let len = graph.len();
    let limits = options.lane_limits();
    let (tx, rx) = mpsc::channel::<Msg>();
    let already = options.cancel.as_ref().is_some_and(CancelToken::peek);
    let mut core = Core {
        graph,
        ready: limits.iter().map(|_| ReadyQueue::new(graph)).collect(),
        busy: vec![0; limits.len()],
        lane: (0..len)
            .map(|n| graph.lane(n).min(limits.len() - 1))
            .collect(),
        limits: limits.clone(),
        attached: (0..len).map(|n| !graph.is_detached(n)).collect(),
        wanted: vec![false; len],
        queued: vec![false; len],
        blocked_by: vec![None; len],
        missing: (0..len).map(|n| graph.dependencies(n).len()).collect(),
        settled: vec![false; len],
        announced: vec![None; len],
        running: HashMap::new(),
        later: BinaryHeap::new(),
        stopped: already.then_some(StopReason::Interrupted),
        interrupted: already,
    };
    for node in (0..len).filter(|&n| !graph.is_on_demand(n)) {
        core.want(node);
    }
    let shared = Shared {
        core: Mutex::new(core),
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
    let threads = limits.iter().sum::<usize>().min(len);
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
            .enumerate()
            .map(|(n, s)| {
                s.unwrap_or(if core.wanted[n] {
                    Status::NotStarted
                } else {
                    Status::NotNeeded
                })
            })
            .collect(),
        spans,
        wall: began.elapsed(),
        interrupted: core.interrupted,
        stopped: core.stopped,
    }
}

/// One worker: take the best ready node of a lane with room, run it, record the outcome,
/// repeat; leave when the run stopped or when nothing is ready, nothing runs and nothing waits
/// to run again (then nothing can become ready).
fn worker<S, E, J>(shared: &Shared<'_, S, E>, job: &J)
where
    S: Send,
    E: Send + From<JobPanic>,
    J: Fn(usize, &CancelToken) -> Result<Step<S>, E> + Sync,
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
                let next_due = core.wake_due(Instant::now());
                if let Some(node) = core.pick() {
                    let token = CancelToken::new();
                    core.running.insert(node, token.clone());
                    let start = match core.announced[node] {
                        Some(start) => start,
                        None => {
                            let now = Instant::now();
                            core.announced[node] = Some(now);
                            shared.send(Msg::Started(node));
                            now
                        }
                    };
                    break Some((node, token, start));
                }
                if core.running.is_empty() && next_due.is_none() && core.later.is_empty() {
                    break None;
                }
                core = match next_due {
                    Some(due) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        shared
                            .changed
                            .wait_timeout(core, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => shared.changed.wait(core).unwrap_or_else(|p| p.into_inner()),
                };
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
        let tokens = {
            let mut core = shared.lock();
            let lane = core.lane[node];
            core.busy[lane] -= 1;
            match result {
                Ok(Step::Later(after)) => {
                    core.running.remove(&node);
                    core.later.push(Reverse((end + after, node)));
                    Vec::new()
                }
                Ok(Step::Attach { lane }) => {
                    core.running.remove(&node);
                    shared.attach(&mut core, node, lane)
                }
                Ok(Step::Done(value)) => shared.finish(
                    &mut core,
                    node,
                    Status::Succeeded(value),
                    Span { start, end },
                ),
                Err(error) if observed => shared.finish(
                    &mut core,
                    node,
                    Status::Cancelled { error },
                    Span { start, end },
                ),
                Err(error) => {
                    shared.finish(&mut core, node, Status::Failed(error), Span { start, end })
                }
            }
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

    /// The node needs its dependencies from now on, and runs in `lane` once they succeeded;
    /// if one of them failed already, it is skipped behind it.
    fn attach(&self, core: &mut Core<'_>, node: usize, lane: usize) -> Vec<CancelToken> {
        core.queued[node] = false;
        core.attached[node] = true;
        core.announced[node] = None;
        core.lane[node] = lane.min(core.limits.len() - 1);
        if let Some(failed) = core.blocked_by[node] {
            core.settled[node] = true;
            self.send(Msg::Skipped(node, failed));
            self.skip_behind(core, node, failed);
            return Vec::new();
        }
        let graph = core.graph;
        for &d in graph.dependencies(node) {
            core.want(d);
        }
        core.offer(node);
        Vec::new()
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
        let succeeded = status.is_succeeded();
        *self.outcomes[node]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((status, span));
        self.send(Msg::Finished(node));
        if succeeded {
            for &d in graph.dependants(node) {
                core.missing[d] -= 1;
                core.offer(d);
            }
        }
        if !failed {
            return Vec::new();
        }
        self.skip_behind(core, node, node);
        match self.on_failure {
            OnFailure::FailFast => self.stop(core, StopReason::Failure(node)),
            OnFailure::KeepGoing => Vec::new(),
        }
    }

    /// Skips what depends on `from` (which failed, or is skipped behind `failed`): attached
    /// dependants at once; a detached one does not need it yet, and is skipped only if it
    /// ever attaches.
    fn skip_behind(&self, core: &mut Core<'_>, from: usize, failed: usize) {
        let graph = core.graph;
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &d in graph.dependants(n) {
                if core.settled[d] {
                    continue;
                }
                if core.attached[d] {
                    core.settled[d] = true;
                    self.send(Msg::Skipped(d, failed));
                    stack.push(d);
                } else {
                    core.blocked_by[d].get_or_insert(failed);
                }
            }
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
