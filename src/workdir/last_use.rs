//! When each image of the store was last used: compiled, found in the cache, or compiled on
//! (a compilation base). `cache gc --max-size/--max-age` evicts the least recently used first.
//! One small JSON file, `WORK/last-use.json`, rewritten once per run.

use std::collections::BTreeMap;

use super::WorkDir;

const FILE: &str = "last-use.json";

/// Ref name -> Unix time of its last use, in milliseconds (runs seconds apart stay ordered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastUse(BTreeMap<String, u64>);

impl LastUse {
    /// What the work dir recorded; empty when nothing (or something unreadable) is there: the
    /// record only orders evictions, it never decides what is cached.
    pub fn load(wd: &WorkDir) -> LastUse {
        let map = fs_err::read(wd.root().join(FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        LastUse(map)
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    pub fn record<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, now: u64) {
        for name in names {
            self.0.insert(name.to_string(), now);
        }
    }

    /// Drops names that are no longer in the store.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|name, _| keep(name));
    }

    /// Reads the record, changes it and writes it back, under a lock of its own: runs that
    /// share the work dir end at any time, and none loses another's uses.
    pub fn update(wd: &WorkDir, change: impl FnOnce(&mut LastUse)) -> std::io::Result<()> {
        let path = wd.root().join(".last-use.lock");
        let lock = fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        super::flock(&lock, true)?;
        let mut uses = LastUse::load(wd);
        change(&mut uses);
        uses.save(wd)
    }

    /// Replaces the file through a rename (readers see the old or the new record). Not synced:
    /// a record lost in a crash only makes the next eviction order less exact, and a cached
    /// no-op compile should not wait for the disk.
    pub fn save(&self, wd: &WorkDir) -> std::io::Result<()> {
        let path = wd.root().join(FILE);
        let tmp = wd.root().join(format!(".{FILE}.{}", std::process::id()));
        let bytes = serde_json::to_vec(&self.0).map_err(std::io::Error::other)?;
        fs_err::write(&tmp, bytes)?;
        fs_err::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_recorded_kept_and_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        assert_eq!(LastUse::load(&wd), LastUse::default());
        let mut uses = LastUse::default();
        uses.record(["a", "b"], 10);
        uses.record(["b"], 20);
        uses.save(&wd).unwrap();
        let mut back = LastUse::load(&wd);
        assert_eq!((back.get("a"), back.get("b")), (Some(10), Some(20)));
        back.retain(|n| n != "a");
        assert_eq!(back.get("a"), None);
        std::fs::write(tmp.path().join(FILE), "not json").unwrap();
        assert_eq!(LastUse::load(&wd), LastUse::default());
    }
}
