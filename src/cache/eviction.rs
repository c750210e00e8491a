//! Which images a size or age policy evicts: least recently used first, like BuildKit's
//! `keepBytes`/`keepDuration` and cargo's cache cleaning by last use. A pure function of the
//! inventory, so it is tested as data.

use std::time::Duration;

/// Bounds for the work dir; either may be absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The whole work dir's size (blobs, unpacked packages and bases, logs) must not pass this.
    pub max_size: Option<u64>,
    /// Images not used for this long go, whatever the size.
    pub max_age: Option<Duration>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.max_size.is_none() && self.max_age.is_none()
    }
}

/// An image that may be evicted now (nothing else in the store is built on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Unix time of its last use, in milliseconds.
    pub last_use: u64,
    /// What evicting it frees: its own blobs, its unpacked copy, its log.
    pub bytes: u64,
}

/// An image the policy evicts, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    pub name: String,
    pub bytes: u64,
    /// Unused for longer than `max_age` (else: evicted for size).
    pub too_old: bool,
}

/// The candidates to evict so that `usage` (the work dir's size now) fits `policy` at `now`
/// (Unix milliseconds): every one older than `max_age`, then the least recently used until the size fits (ties: by name, so
/// the choice is stable).
pub fn choose(candidates: &[Candidate], usage: u64, policy: &Policy, now: u64) -> Vec<Victim> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| a.last_use.cmp(&b.last_use).then(a.name.cmp(&b.name)));
    let mut left = usage;
    let mut victims = Vec::new();
    for c in order {
        let too_old = policy
            .max_age
            .is_some_and(|age| u128::from(now.saturating_sub(c.last_use)) > age.as_millis());
        let too_big = policy.max_size.is_some_and(|max| left > max);
        if too_old || too_big {
            left = left.saturating_sub(c.bytes);
            victims.push(Victim {
                name: c.name.clone(),
                bytes: c.bytes,
                too_old,
            });
        }
    }
    victims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, last_use: u64, bytes: u64) -> Candidate {
        Candidate {
            name: name.into(),
            last_use,
            bytes,
        }
    }

    fn names(v: &[Victim]) -> Vec<&str> {
        v.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn size_evicts_least_recently_used_until_it_fits() {
        let all = [c("new", 30, 100), c("old", 10, 100), c("mid", 20, 100)];
        let size = |max| Policy {
            max_size: Some(max),
            max_age: None,
        };
        assert!(choose(&all, 300, &size(300), 40).is_empty());
        assert_eq!(names(&choose(&all, 300, &size(250), 40)), ["old"]);
        assert_eq!(names(&choose(&all, 300, &size(100), 40)), ["old", "mid"]);
        // Other files (logs of nothing, blobs shared) may keep it too big: all go, no more.
        assert_eq!(
            names(&choose(&all, 1000, &size(10), 40)),
            ["old", "mid", "new"]
        );
    }

    #[test]
    fn age_evicts_everything_older_whatever_the_size() {
        let all = [c("a", 100_000, 1), c("b", 500_000, 1), c("c", 900_000, 1)];
        let policy = Policy {
            max_size: None,
            max_age: Some(Duration::from_secs(300)),
        };
        let v = choose(&all, 3, &policy, 1_000_000);
        assert_eq!(names(&v), ["a", "b"]);
        assert!(v.iter().all(|v| v.too_old));
        assert!(choose(&all, 3, &Policy::default(), 1_000_000).is_empty());
    }

    #[test]
    fn ties_are_broken_by_name() {
        let all = [c("b", 1, 10), c("a", 1, 10)];
        let policy = Policy {
            max_size: Some(15),
            max_age: None,
        };
        assert_eq!(names(&choose(&all, 20, &policy, 2)), ["a"]);
    }
}
