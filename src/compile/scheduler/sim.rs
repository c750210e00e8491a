//! Event-driven simulation of a run with known durations (the node weights), no threads and no
//! sleeping: used to compare the scheduler's policy with fissile's on the same graph, and by the
//! benchmark to separate what the policy costs from what the real scheduler adds.

use super::graph::{Graph, ReadyQueue};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Which scheduling policy to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// What [`super::run`] does: a node starts when its dependencies are done and a worker is
    /// free; the ready node with the longest remaining critical path goes first.
    CriticalPath,
    /// What fissile does: one FIFO queue in [`least_deps_first_order`]; a free worker takes the
    /// next package even if its dependencies are still compiling, and blocks until they are done,
    /// holding its slot meanwhile.
    LeastDepsFirstBlocking,
}

/// The outcome of a simulation, in weight units.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub makespan: f64,
    pub start: Vec<f64>,
    pub finish: Vec<f64>,
}

impl Simulation {
    /// Node indexes by start time (ties by index): the order in which the policy starts work.
    pub fn start_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.start.len()).collect();
        order.sort_by(|&a, &b| self.start[a].total_cmp(&self.start[b]).then(a.cmp(&b)));
        order
    }
}

/// The makespan `policy` reaches on `workers` workers when every node takes exactly its weight.
pub fn simulate(graph: &Graph, workers: usize, policy: Policy) -> f64 {
    schedule(graph, workers, policy).makespan
}

/// Like [`simulate`], with every node's start and finish time.
pub fn schedule(graph: &Graph, workers: usize, policy: Policy) -> Simulation {
    let workers = workers.max(1);
    match policy {
        Policy::CriticalPath => critical_path(graph, workers),
        Policy::LeastDepsFirstBlocking => blocking_fifo(graph, workers),
    }
}

/// fissile's queue order (`createDepBuckets` in fissile's compilator): repeated passes over the
/// packages in their given order (fissile sorts them by release and package name first), each
/// pass queueing every package whose dependencies are all queued already, including those
/// queued earlier in the same pass. Packages without dependencies therefore come first, and a
/// package comes in the first pass after its last dependency: "least dependencies first".
///
/// The order is topological, which is what keeps fissile's blocking workers from deadlocking;
/// it knows nothing about durations. (fissile also moved packages named `ruby-2.*` to the front,
/// a hand-made critical-path hint; this generic order has no names and leaves that out.)
pub fn least_deps_first_order(graph: &Graph) -> Vec<usize> {
    let len = graph.len();
    let mut unqueued: Vec<usize> = (0..len).map(|n| graph.dependencies(n).len()).collect();
    let mut queued = vec![false; len];
    let mut order = Vec::with_capacity(len);
    let mut progress = true;
    while progress {
        progress = false;
        for node in 0..len {
            if queued[node] || unqueued[node] != 0 {
                continue;
            }
            queued[node] = true;
            progress = true;
            order.push(node);
            for &d in graph.dependants(node) {
                unqueued[d] -= 1;
            }
        }
    }
    debug_assert_eq!(order.len(), len, "a validated graph is acyclic");
    order
}

/// Finish times are ordered with `total_cmp` so they can live in a heap.
#[derive(PartialEq)]
struct Time(f64);

impl Eq for Time {}

impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn critical_path(graph: &Graph, workers: usize) -> Simulation {
    let len = graph.len();
    let mut start = vec![0.0; len];
    let mut finish = vec![0.0; len];
    let mut missing: Vec<usize> = (0..len).map(|n| graph.dependencies(n).len()).collect();
    let mut ready = ReadyQueue::with_sources(graph);
    let mut running: BinaryHeap<Reverse<(Time, usize)>> = BinaryHeap::new();
    let mut now = 0.0;
    loop {
        while running.len() < workers {
            let Some(node) = ready.pop() else { break };
            start[node] = now;
            finish[node] = now + graph.weight(node);
            running.push(Reverse((Time(finish[node]), node)));
        }
        let Some(Reverse((Time(t), _))) = running.peek() else {
            break;
        };
        now = *t;
        // Everything finishing at `now` completes before the freed workers choose, as the real
        // scheduler would if those completions arrived together.
        while let Some(Reverse((Time(t), node))) = running.peek() {
            if *t != now {
                break;
            }
            let node = *node;
            running.pop();
            for &d in graph.dependants(node) {
                missing[d] -= 1;
                if missing[d] == 0 {
                    ready.push(d);
                }
            }
        }
    }
    let makespan = finish.iter().copied().fold(0.0, f64::max);
    Simulation {
        makespan,
        start,
        finish,
    }
}

fn blocking_fifo(graph: &Graph, workers: usize) -> Simulation {
    let len = graph.len();
    let mut start = vec![0.0; len];
    let mut finish = vec![0.0; len];
    // The worker that frees up first takes the next queued package; since the queue is
    // topological, every dependency's finish time is already known when a package is taken.
    let mut free_at: BinaryHeap<Reverse<(Time, usize)>> =
        (0..workers).map(|w| Reverse((Time(0.0), w))).collect();
    for node in least_deps_first_order(graph) {
        let Reverse((Time(taken), worker)) = free_at.pop().expect("at least one worker");
        let deps_done = graph
            .dependencies(node)
            .iter()
            .map(|&d| finish[d])
            .fold(0.0, f64::max);
        start[node] = taken.max(deps_done);
        finish[node] = start[node] + graph.weight(node);
        free_at.push(Reverse((Time(finish[node]), worker)));
    }
    let makespan = finish.iter().copied().fold(0.0, f64::max);
    Simulation {
        makespan,
        start,
        finish,
    }
}
