//! `compile --shard I/N`: one release split across N runners that a CI matrix starts at once.
//! The CI system is the scheduler and the shared cache the meeting point: each shard computes
//! the same partition of the package graph, compiles its own part, and pulls what it needs from
//! the others' parts once they appear in the cache.
//!
//! The partition depends on nothing but the plan and N, never on this runner (its core count,
//! the compile times its work dir remembers, what its store or the registry holds right now),
//! so N runners agree on it without talking. It is a list schedule of the graph on N shards
//! (HEFT's rule): packages in order of their remaining critical path, each to the shard where it
//! would finish first, counting a package's own time for its weight, and a hop through the
//! registry for each dependency another shard compiles. Every package weighs the same: the only
//! times this runner knows are its own, and two runners with different ones would disagree. So
//! the shards get the same share of work, long chains stay on one shard, and a package goes
//! where its dependencies are unless that shard is already the busiest.
//!
//! Each shard is modelled as a runner compiling [`MODEL_SLOTS`] packages at once, whatever its
//! `-j`, for the same reason. Modelled as compiling one at a time, a shard looked busy as soon as
//! it had one package more than the others, so a dependant went to another shard, and a chain
//! paid a hop through the registry at almost every link: `scripts/bench/fleet.sh`'s release,
//! simulated (0.215 s a package, 0.2 s a hop, `-j 4`), finished in 0.31-0.35x of one runner's
//! time that way, 0.29-0.31x with four slots, over six random graphs of its shape.

use std::fmt;
use std::str::FromStr;

use super::scheduler::{Graph, GraphError, Node};

/// What a hop through the registry costs, in package weights: a push, a poll, a pull. Enough
/// to keep a dependant with its dependency when the shards are evenly loaded, not enough to
/// pile a whole layer of the graph onto one shard.
const HOP: f64 = 0.5;

/// Packages a shard is modelled to compile at once: a hosted CI runner's cores.
const MODEL_SLOTS: usize = 4;

/// This runner's shard: the `index`th (from 1) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The shard's position from 0, as [`partition`] numbers them.
    pub fn position(&self) -> usize {
        self.index - 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N` with 1 <= I <= N (as GitLab's `$CI_NODE_INDEX/$CI_NODE_TOTAL`).
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard: write I/N, e.g. 2/4 (1 <= I <= N)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The shard (from 0) of each of `dependencies.len()` packages, given each package's direct
/// dependencies by index.
pub fn partition(dependencies: &[Vec<usize>], shards: usize) -> Result<Vec<usize>, GraphError> {
    let shards = shards.max(1);
    let nodes: Vec<Node> = dependencies
        .iter()
        .map(|deps| Node::new(deps.clone(), 1.0))
        .collect();
    let graph = Graph::new(&nodes)?;
    let len = graph.len();
    // Longest remaining path first: a dependency always comes before its dependants (its path
    // is longer by its own weight), ties by index.
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| {
        graph
            .remaining_path(b)
            .total_cmp(&graph.remaining_path(a))
            .then(a.cmp(&b))
    });
    let mut owner = vec![usize::MAX; len];
    let mut finish = vec![0.0f64; len];
    // When each slot of each shard is free again.
    let mut free = vec![[0.0f64; MODEL_SLOTS]; shards];
    let mut assigned = vec![0usize; shards];
    for node in order {
        let mut best: Option<(f64, usize, usize, usize)> = None;
        for (shard, slots) in free.iter().enumerate() {
            let (slot, shard_free) = earliest(slots);
            let mut ready = 0.0f64;
            let mut local = 0;
            for &d in graph.dependencies(node) {
                let hop = if owner[d] == shard {
                    local += 1;
                    0.0
                } else {
                    HOP
                };
                ready = ready.max(finish[d] + hop);
            }
            let end = shard_free.max(ready) + graph.weight(node);
            // Earliest finish; then most dependencies at hand; then the fewest packages so
            // far; then the lowest shard.
            let better = match best {
                None => true,
                Some((best_end, best_local, _, best_shard)) => {
                    end < best_end - 1e-9
                        || ((end - best_end).abs() <= 1e-9
                            && (local > best_local
                                || (local == best_local && assigned[shard] < assigned[best_shard])))
                }
            };
            if better {
                best = Some((end, local, slot, shard));
            }
        }
        let (end, _, slot, shard) = best.expect("at least one shard");
        owner[node] = shard;
        finish[node] = end;
        free[shard][slot] = end;
        assigned[shard] += 1;
    }
    Ok(owner)
}

/// The slot free first, and when.
fn earliest(slots: &[f64; MODEL_SLOTS]) -> (usize, f64) {
    slots
        .iter()
        .copied()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .expect("at least one slot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_as_ci_matrices_write_them() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        assert_eq!("1/1".parse::<Shard>().unwrap().position(), 0);
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn independent_packages_are_shared_evenly() {
        let owners = partition(&vec![Vec::new(); 10], 4).unwrap();
        let mut counts = [0; 4];
        for o in &owners {
            counts[*o] += 1;
        }
        assert!(counts.iter().all(|&c| c == 2 || c == 3), "{counts:?}");
    }

    #[test]
    fn a_chain_stays_on_one_shard_and_the_leaves_fill_the_others() {
        // 0 <- 1 <- 2 <- 3 (a chain), and 4..12 alone.
        let mut deps: Vec<Vec<usize>> = vec![vec![], vec![0], vec![1], vec![2]];
        deps.extend(std::iter::repeat_with(Vec::new).take(8));
        let owners = partition(&deps, 3).unwrap();
        assert!(owners[..4].iter().all(|&o| o == owners[0]), "{owners:?}");
        let mut counts = [0; 3];
        for o in &owners {
            counts[*o] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), 12);
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
    }

    #[test]
    fn dependants_stay_with_their_dependency_while_its_shard_has_room() {
        // 0 and 1 alone; 2 and 3 need 0. A shard compiling one package at a time would look
        // busy with 2 and send 3 to the other shard, a hop through the registry.
        let deps: Vec<Vec<usize>> = vec![vec![], vec![], vec![0], vec![0]];
        let owners = partition(&deps, 2).unwrap();
        assert_eq!(owners[2], owners[0], "{owners:?}");
        assert_eq!(owners[3], owners[0], "{owners:?}");
        assert_ne!(owners[1], owners[0], "{owners:?}");
    }

    #[test]
    fn the_same_graph_gives_the_same_partition() {
        let deps: Vec<Vec<usize>> = (0..60)
            .map(|i: usize| {
                (0..i)
                    .filter(|j| (i * 7 + j * 3) % 11 == 0)
                    .take(3)
                    .collect()
            })
            .collect();
        let a = partition(&deps, 4).unwrap();
        assert_eq!(a, partition(&deps, 4).unwrap());
        assert!(a.iter().all(|&s| s < 4));
        // Every shard has work, within a few packages of an even share.
        for s in 0..4 {
            let n = a.iter().filter(|&&o| o == s).count();
            assert!((10..=20).contains(&n), "shard {s}: {n} of 60");
        }
    }
}
