//! A run's scratch dir, `WORK/runs/<id>/`: staged sources, package archives copied out of
//! release tarballs, overlay upper dirs. What the run is done with goes to its `trash/`
//! ([`RunDir::discard`]): a rename, so that no tree is deleted while packages still compile
//! (on ext4, freshly freed inodes slow down the files made next). The run removes the whole dir
//! on every way out (success, failure, interrupt: `Drop`), except the entries it was asked to
//! keep (`--keep-sandbox`). An `owner` file names the process (pid and start time), so
//! `cache gc` can tell the dir of a live run (a `shell` holds no lock while it runs) from what a
//! killed run left, trash included.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{remove_tree, WorkDir};

/// The owner file in every run dir.
const OWNER: &str = "owner";
/// Where [`RunDir::discard`] moves what the run is done with.
const TRASH: &str = "trash";

/// The scratch dir of this run; removed when dropped, but for what [`RunDir::keep`] named.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    kept: Mutex<Vec<PathBuf>>,
}

impl RunDir {
    /// Makes `WORK/runs/<prefix><utc time>-<pid>/` with its owner file.
    pub fn create(wd: &WorkDir, prefix: &str) -> std::io::Result<RunDir> {
        let path = wd.runs().join(format!(
            "{prefix}{}-{}",
            crate::clock::utc_now().replace([' ', ':'], ""),
            std::process::id()
        ));
        fs_err::create_dir_all(&path)?;
        let run = RunDir {
            path,
            kept: Mutex::new(Vec::new()),
        };
        fs_err::write(run.path.join(OWNER), Owner::this_process().to_line())?;
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves `entry` (inside the run dir) to the run's trash, removed with the run dir. Where
    /// the rename fails, the entry stays where it is, and goes with the run dir all the same.
    pub fn discard(&self, entry: &Path) {
        let Some(name) = entry.file_name() else {
            return;
        };
        let trash = self.path.join(TRASH);
        let _ = fs_err::create_dir_all(&trash);
        let _ = fs_err::rename(entry, trash.join(name));
    }

    /// Keeps `entry` (inside the run dir) when the run ends: a failed package's scratch dir for
    /// `fissile-oci shell`. The owner file stays with it; `cache gc` removes both once this
    /// process is gone.
    pub fn keep(&self, entry: &Path) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.to_path_buf());
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let kept = std::mem::take(self.kept.get_mut().unwrap_or_else(|p| p.into_inner()));
        if kept.is_empty() {
            let _ = remove_tree(&self.path);
            return;
        }
        let Ok(entries) = fs_err::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name() != OWNER && !kept.contains(&path) {
                let _ = remove_tree(&path);
            }
        }
    }
}

/// Which process a run dir belongs to: its pid, and its start time (clock ticks after boot, as
/// `/proc/PID/stat` has it), so a reused pid is not mistaken for the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    fn this_process() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start)
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut fields = text.split_whitespace();
        Some(Owner {
            pid: fields.next()?.parse().ok()?,
            start: fields.next()?.parse().ok()?,
        })
    }

    fn is_alive(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of `/proc/PID/stat`; `None` when the process does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The dirs under `WORK/runs/` whose owner is gone (or unknown: an owner file is written
/// first, so a dir without one was left by a crash or an older version). The caller holds the
/// work-dir lock, so no new run dir appears meanwhile.
pub fn abandoned_run_dirs(wd: &WorkDir) -> std::io::Result<Vec<PathBuf>> {
    let runs = wd.runs();
    let entries = match fs_err::read_dir(&runs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let owner = fs_err::read_to_string(path.join(OWNER))
            .ok()
            .and_then(|t| Owner::parse(&t));
        if !owner.is_some_and(Owner::is_alive) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_goes_away_but_for_what_it_keeps() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        let path = {
            let run = RunDir::create(&wd, "").unwrap();
            std::fs::create_dir_all(run.path().join("archives-0")).unwrap();
            std::fs::write(run.path().join("archives-0/p.tgz"), "x").unwrap();
            let done = run.path().join("pkg-4567");
            std::fs::create_dir_all(done.join("source")).unwrap();
            run.discard(&done);
            assert!(!done.exists(), "discarded: out of the way at once");
            assert!(run.path().join("trash/pkg-4567/source").is_dir());
            run.path().to_path_buf()
        };
        assert!(!path.exists(), "trash included");
        let (path, kept) = {
            let run = RunDir::create(&wd, "").unwrap();
            let kept = run.path().join("pkg-0123");
            std::fs::create_dir_all(kept.join("source")).unwrap();
            std::fs::create_dir_all(run.path().join("other")).unwrap();
            run.keep(&kept);
            (run.path().to_path_buf(), kept)
        };
        assert!(kept.join("source").is_dir());
        assert!(!path.join("other").exists());
        assert!(path.join(OWNER).is_file());
    }

    #[test]
    fn only_dirs_of_live_owners_are_kept_from_gc() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        let live = RunDir::create(&wd, "live-").unwrap();
        let runs = wd.runs();
        // A dead owner: pid 1's start time is known, and no process has this one.
        let dead = runs.join("dead");
        std::fs::create_dir_all(&dead).unwrap();
        let init = Owner {
            pid: 1,
            start: start_time(1).unwrap() + 1,
        };
        std::fs::write(dead.join(OWNER), init.to_line()).unwrap();
        let orphan = runs.join("base-abc");
        std::fs::create_dir_all(&orphan).unwrap();
        assert_eq!(abandoned_run_dirs(&wd).unwrap(), vec![orphan, dead]);
        assert!(Owner::this_process().is_alive());
        drop(live);
    }

    #[test]
    fn a_start_time_is_known_for_this_process_and_for_no_missing_one() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(start_time(u32::MAX), None);
    }
}
