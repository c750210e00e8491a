//! The run loop: the caller's thread keeps the ready queue and the statuses; each started job
//! runs on its own scoped thread and reports back over a channel.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::Instant;

use super::graph::{Graph, ReadyQueue};
use super::{CancelToken, Event, OnFailure, RunOptions, RunReport, Span, Status, StopReason};

/// What wakes the scheduler thread.
enum Wake {
    /// The node's job returned; its thread is about to end with the outcome.
    Done(usize),
    /// The caller's token was cancelled.
    Interrupt,
}

struct Outcome<S> {
    result: Result<S, String>,
    end: Instant,
    /// The cancellation had reached the job before it returned.
    observed: bool,
}

struct Running<'scope, S> {
    token: CancelToken,
    handle: ScopedJoinHandle<'scope, Outcome<S>>,
}

/// Runs `job(node, token)` once for every node of `graph` whose dependencies all succeeded, at
/// most `options.workers` at a time, and returns when nothing runs any more.
///
/// `job` is called on worker threads; `token` is the node's own [`CancelToken`], cancelled when
/// the run stops (fail-fast or the caller's token). An `Err` returned after the cancellation
/// reached the job (it saw `is_cancelled()`, a wait returned early, or an `on_cancel` callback
/// ran) is reported as [`Status::Cancelled`]; any other `Err`, or a panic, as
/// [`Status::Failed`]. `on_event` is called on this thread, in order.
pub fn run<S, J, E>(graph: &Graph, options: &RunOptions, job: J, mut on_event: E) -> RunReport<S>
where
    S: Send,
    J: Fn(usize, &CancelToken) -> Result<S, String> + Sync,
    E: FnMut(Event<'_, S>),
{
    let began = Instant::now();
    let len = graph.len();
    let workers = options.workers.max(1);
    let (tx, rx) = mpsc::channel::<Wake>();
    // Runs at once (queueing the message) if the caller's token is already cancelled.
    let hook = options.cancel.as_ref().and_then(|token| {
        let tx = tx.clone();
        token.on_cancel(move || {
            let _ = tx.send(Wake::Interrupt);
        })
    });

    let mut statuses: Vec<Option<Status<S>>> = (0..len).map(|_| None).collect();
    let mut spans: Vec<Option<Span>> = vec![None; len];
    let mut missing: Vec<usize> = (0..len).map(|n| graph.dependencies(n).len()).collect();
    let mut ready = ReadyQueue::with_sources(graph);
    let mut stopped: Option<StopReason> = None;
    let mut interrupted = false;

    thread::scope(|scope| {
        let mut running: HashMap<usize, Running<'_, S>> = HashMap::new();
        loop {
            if options.cancel.as_ref().is_some_and(CancelToken::peek) {
                interrupted = true;
                stop(
                    &mut stopped,
                    StopReason::Interrupted,
                    &running,
                    &mut on_event,
                );
            }
            while stopped.is_none() && running.len() < workers {
                let Some(node) = ready.pop() else { break };
                on_event(Event::Started(node));
                let start = Instant::now();
                match spawn(scope, &job, node, tx.clone()) {
                    Ok(r) => {
                        spans[node] = Some(Span { start, end: start });
                        running.insert(node, r);
                    }
                    Err(error) => {
                        spans[node] = Some(Span {
                            start,
                            end: Instant::now(),
                        });
                        let status = Status::Failed(format!("could not start a thread: {error}"));
                        if finish(
                            graph,
                            node,
                            status,
                            &mut statuses,
                            &mut missing,
                            &mut ready,
                            &mut on_event,
                        ) && options.on_failure == OnFailure::FailFast
                        {
                            stop(
                                &mut stopped,
                                StopReason::Failure(node),
                                &running,
                                &mut on_event,
                            );
                        }
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            // `tx` lives in this function, so the channel cannot disconnect while jobs run.
            match rx.recv().expect("the scheduler holds a sender") {
                Wake::Interrupt => {
                    interrupted = true;
                    stop(
                        &mut stopped,
                        StopReason::Interrupted,
                        &running,
                        &mut on_event,
                    );
                }
                Wake::Done(node) => {
                    let r = running.remove(&node).expect("a running node reported done");
                    let outcome = r.handle.join().unwrap_or_else(|payload| Outcome {
                        // Unreachable in practice: the job's panic is caught on its thread.
                        result: Err(panic_message(&*payload)),
                        end: Instant::now(),
                        observed: false,
                    });
                    if let Some(span) = spans[node].as_mut() {
                        span.end = outcome.end;
                    }
                    let status = match outcome.result {
                        Ok(value) => Status::Succeeded(value),
                        Err(error) if outcome.observed => Status::Cancelled { error },
                        Err(error) => Status::Failed(error),
                    };
                    if finish(
                        graph,
                        node,
                        status,
                        &mut statuses,
                        &mut missing,
                        &mut ready,
                        &mut on_event,
                    ) && options.on_failure == OnFailure::FailFast
                    {
                        stop(
                            &mut stopped,
                            StopReason::Failure(node),
                            &running,
                            &mut on_event,
                        );
                    }
                }
            }
        }
    });

    if let (Some(token), Some(id)) = (options.cancel.as_ref(), hook) {
        token.remove_callback(id);
    }
    RunReport {
        statuses: statuses
            .into_iter()
            .map(|s| s.unwrap_or(Status::NotStarted))
            .collect(),
        spans,
        wall: began.elapsed(),
        interrupted,
        stopped,
    }
}

/// Stops the run once: no more starts, every running job's token cancelled.
fn stop<S, E>(
    stopped: &mut Option<StopReason>,
    reason: StopReason,
    running: &HashMap<usize, Running<'_, S>>,
    on_event: &mut E,
) where
    E: FnMut(Event<'_, S>),
{
    if stopped.is_none() {
        *stopped = Some(reason);
        on_event(Event::Stopping(reason));
        for r in running.values() {
            r.token.cancel();
        }
    }
}

/// Starts `job(node)` on a scoped thread that catches panics, closes the node's token when the
/// job returns, and then wakes the scheduler.
fn spawn<'scope, 'env, S, J>(
    scope: &'scope Scope<'scope, 'env>,
    job: &'env J,
    node: usize,
    tx: mpsc::Sender<Wake>,
) -> std::io::Result<Running<'scope, S>>
where
    S: Send + 'scope,
    J: Fn(usize, &CancelToken) -> Result<S, String> + Sync,
{
    let token = CancelToken::new();
    let job_token = token.clone();
    let handle = thread::Builder::new()
        .name(format!("job-{node}"))
        .spawn_scoped(scope, move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| job(node, &job_token)))
                .unwrap_or_else(|payload| Err(panic_message(&*payload)));
            let end = Instant::now();
            let observed = job_token.close();
            let _ = tx.send(Wake::Done(node));
            Outcome {
                result,
                end,
                observed,
            }
        })?;
    Ok(Running { token, handle })
}

/// Records `status` for `node` and updates the graph state: dependants of a success may become
/// ready; dependants of a failure are skipped. Returns whether the node failed on its own.
fn finish<S, E>(
    graph: &Graph,
    node: usize,
    status: Status<S>,
    statuses: &mut [Option<Status<S>>],
    missing: &mut [usize],
    ready: &mut ReadyQueue<'_>,
    on_event: &mut E,
) -> bool
where
    E: FnMut(Event<'_, S>),
{
    let failed = matches!(status, Status::Failed(_));
    let succeeded = status.is_succeeded();
    on_event(Event::Finished(node, statuses[node].insert(status)));
    if succeeded {
        for &d in graph.dependants(node) {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.push(d);
            }
        }
    } else if failed {
        // Everything behind the failure, unless an earlier failure claimed it already.
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            for &d in graph.dependants(n) {
                if statuses[d].is_none() {
                    let skipped = statuses[d].insert(Status::Skipped { because: node });
                    on_event(Event::Finished(d, skipped));
                    stack.push(d);
                }
            }
        }
    }
    failed
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_string());
    format!("the job panicked: {text}")
}
