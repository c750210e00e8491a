//! The validated task graph the scheduler runs: dependencies checked (range, cycles), dependants
//! indexed, and each node's remaining critical path computed once, since it is the ready-queue
//! priority for the whole run.

use std::collections::VecDeque;

/// One task as the caller describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Direct dependencies, as indexes into the node list, in any order (duplicates are ignored).
    pub dependencies: Vec<usize>,
    /// Expected duration in any unit (the compile command uses the last recorded compile time in
    /// seconds, else 1.0). Only relative sizes matter for scheduling.
    pub weight: f64,
    /// Which pool of workers runs it (see [`super::RunOptions::with_lane`]); 0, the main one,
    /// unless said otherwise.
    pub lane: usize,
    /// Ready at once, without its dependencies: a job that can do without them (fetching a
    /// finished result) until it asks for them with [`super::Step::Attach`].
    pub detached: bool,
    /// Runs only when a node that runs needs it (an attached dependant); otherwise it ends
    /// [`super::Status::NotNeeded`].
    pub on_demand: bool,
}

impl Node {
    pub fn new(dependencies: Vec<usize>, weight: f64) -> Self {
        Self {
            dependencies,
            weight,
            lane: 0,
            detached: false,
            on_demand: false,
        }
    }

    /// Run by the workers of `lane`.
    pub fn in_lane(mut self, lane: usize) -> Self {
        self.lane = lane;
        self
    }

    /// Ready without its dependencies, until its job attaches it.
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// Run only when needed by a node that runs.
    pub fn on_demand(mut self) -> Self {
        self.on_demand = true;
        self
    }
}

#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum GraphError {
    #[error("node {node} depends on node {dependency}, but there are only {len} nodes")]
    UnknownDependency {
        node: usize,
        dependency: usize,
        len: usize,
    },
    #[error("dependency cycle (each node depends on the next): {}", display_cycle(.cycle))]
    Cycle {
        /// The nodes of one cycle, each depending on the next; the first is repeated at the end.
        cycle: Vec<usize>,
    },
    #[error("node {node} has weight {weight}; weights must be finite and not negative")]
    BadWeight { node: usize, weight: f64 },
}

fn display_cycle(cycle: &[usize]) -> String {
    let parts: Vec<String> = cycle.iter().map(|n| n.to_string()).collect();
    parts.join(" -> ")
}

/// A checked DAG with its critical-path priorities.
#[derive(Debug, Clone)]
pub struct Graph {
    dependencies: Vec<Vec<usize>>,
    dependants: Vec<Vec<usize>>,
    weights: Vec<f64>,
    lanes: Vec<usize>,
    detached: Vec<bool>,
    on_demand: Vec<bool>,
    remaining: Vec<f64>,
    topological: Vec<usize>,
}

impl Graph {
    /// Validates `nodes` (every dependency in range, weights finite and >= 0, no cycle) and
    /// computes the priorities. A bad graph is an error here rather than a run that never ends.
    pub fn new(nodes: &[Node]) -> Result<Self, GraphError> {
        let len = nodes.len();
        let mut dependencies = Vec::with_capacity(len);
        let mut dependants = vec![Vec::new(); len];
        let mut weights = Vec::with_capacity(len);
        for (node, spec) in nodes.iter().enumerate() {
            if !spec.weight.is_finite() || spec.weight < 0.0 {
                return Err(GraphError::BadWeight {
                    node,
                    weight: spec.weight,
                });
            }
            let mut deps = spec.dependencies.clone();
            deps.sort_unstable();
            deps.dedup();
            for &dependency in &deps {
                if dependency >= len {
                    return Err(GraphError::UnknownDependency {
                        node,
                        dependency,
                        len,
                    });
                }
                dependants[dependency].push(node);
            }
            dependencies.push(deps);
            weights.push(spec.weight);
        }
        let lanes = nodes.iter().map(|n| n.lane).collect();
        let detached = nodes.iter().map(|n| n.detached).collect();
        let on_demand = nodes.iter().map(|n| n.on_demand).collect();
        let topological = topological_order(&dependencies, &dependants)?;
        // Longest weighted path from each node to any sink, filled sinks-first.
        let mut remaining = vec![0.0; len];
        for &node in topological.iter().rev() {
            let tail = dependants[node]
                .iter()
                .map(|&d| remaining[d])
                .fold(0.0, f64::max);
            remaining[node] = weights[node] + tail;
        }
        Ok(Self {
            dependencies,
            dependants,
            weights,
            lanes,
            detached,
            on_demand,
            remaining,
            topological,
        })
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Direct dependencies of `node`, sorted, without duplicates.
    pub fn dependencies(&self, node: usize) -> &[usize] {
        &self.dependencies[node]
    }

    /// Nodes that depend directly on `node`, in increasing order.
    pub fn dependants(&self, node: usize) -> &[usize] {
        &self.dependants[node]
    }

    pub fn weight(&self, node: usize) -> f64 {
        self.weights[node]
    }

    /// The lane the node starts in.
    pub fn lane(&self, node: usize) -> usize {
        self.lanes[node]
    }

    /// Whether the node starts detached from its dependencies.
    pub fn is_detached(&self, node: usize) -> bool {
        self.detached[node]
    }

    /// Whether the node runs only when needed.
    pub fn is_on_demand(&self, node: usize) -> bool {
        self.on_demand[node]
    }

    /// The node's priority: its weight plus the longest weighted path from it to any sink.
    pub fn remaining_path(&self, node: usize) -> f64 {
        self.remaining[node]
    }

    /// The longest weighted path through the graph: no schedule can finish sooner.
    pub fn critical_path(&self) -> f64 {
        self.remaining.iter().copied().fold(0.0, f64::max)
    }

    pub fn total_weight(&self) -> f64 {
        self.weights.iter().sum()
    }

    /// `max(critical path, total weight / workers)`: a makespan no schedule on `workers` workers
    /// can beat (it is not always reachable).
    pub fn lower_bound(&self, workers: usize) -> f64 {
        self.critical_path()
            .max(self.total_weight() / workers.max(1) as f64)
    }

    /// Dependencies before dependants (Kahn's algorithm, deterministic for a given input).
    pub fn topological_order(&self) -> &[usize] {
        &self.topological
    }
}

/// Kahn's algorithm; whatever it cannot order lies on or behind a cycle, and one is reported.
fn topological_order(
    dependencies: &[Vec<usize>],
    dependants: &[Vec<usize>],
) -> Result<Vec<usize>, GraphError> {
    let len = dependencies.len();
    let mut missing: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..len).filter(|&n| missing[n] == 0).collect();
    let mut order = Vec::with_capacity(len);
    while let Some(node) = queue.pop_front() {
        order.push(node);
        for &d in &dependants[node] {
            missing[d] -= 1;
            if missing[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    if order.len() == len {
        return Ok(order);
    }
    // Every unordered node has an unordered dependency: following those from any unordered node
    // must come back to a node already on the path.
    let start = (0..len)
        .find(|&n| missing[n] > 0)
        .expect("an unordered node");
    let mut position = vec![usize::MAX; len];
    let mut path = Vec::new();
    let mut node = start;
    while position[node] == usize::MAX {
        position[node] = path.len();
        path.push(node);
        node = *dependencies[node]
            .iter()
            .find(|&&dep| missing[dep] > 0)
            .expect("an unordered node has an unordered dependency");
    }
    let mut cycle = path.split_off(position[node]);
    cycle.push(node);
    Err(GraphError::Cycle { cycle })
}

/// Ready nodes, longest remaining critical path first, ties to the lower index; shared by the
/// real scheduler and its simulation so both make the same choices.
pub(super) struct ReadyQueue<'g> {
    graph: &'g Graph,
    heap: std::collections::BinaryHeap<Ready>,
}

struct Ready {
    priority: f64,
    node: usize,
}

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ready {}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Max-heap: higher priority wins, then the lower node index.
        self.priority
            .total_cmp(&other.priority)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl<'g> ReadyQueue<'g> {
    pub(super) fn new(graph: &'g Graph) -> Self {
        Self {
            graph,
            heap: Default::default(),
        }
    }

    /// A queue holding the nodes without dependencies.
    pub(super) fn with_sources(graph: &'g Graph) -> Self {
        let mut queue = Self::new(graph);
        for node in (0..graph.len()).filter(|&n| graph.dependencies(n).is_empty()) {
            queue.push(node);
        }
        queue
    }

    pub(super) fn push(&mut self, node: usize) {
        let priority = self.graph.remaining_path(node);
        self.heap.push(Ready { priority, node });
    }

    /// The node [`Self::pop`] would return.
    pub(super) fn peek(&self) -> Option<usize> {
        self.heap.peek().map(|r| r.node)
    }

    pub(super) fn pop(&mut self) -> Option<usize> {
        self.heap.pop().map(|r| r.node)
    }
}
