//! The work-dir lock, and the locks of names in it.
//!
//! Compiles hold the work-dir lock *shared*: any number of them use one work dir at once.
//! What removes things (`cache gc`, `cache clean`) and `base build` hold it *exclusive*, so
//! they wait for the compiles and never remove what one uses. Compiles meet on *name locks*
//! instead (`WORK/locks/<name>`: a cache key, a base): the run that holds a key's lock makes
//! that package, and another run that needs it waits and then finds it in the store. A waiting
//! process is told who holds the lock.

use fs_err::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;

use super::{WorkDir, WorkDirError};

/// The work dirs whose lock this process holds, and the descriptor it holds each through:
/// a child that must keep a work dir locked for as long as it lives (a bootstrapper that may
/// outlive us) inherits that descriptor.
static HELD: Mutex<Vec<(PathBuf, RawFd)>> = Mutex::new(Vec::new());

impl WorkDir {
    /// Takes the work-dir lock, exclusive. When another process holds it: with `wait`,
    /// `on_wait` is told who and we block until it is free; without, `Busy` names the holder.
    pub fn lock(
        &self,
        wait: bool,
        on_wait: impl FnOnce(&str),
    ) -> Result<WorkDirLock, WorkDirError> {
        self.lock_as(true, wait, on_wait)
    }

    /// Takes the work-dir lock shared with other compiles: only an exclusive holder (a `cache
    /// gc`) makes us wait, as [`WorkDir::lock`] does.
    pub fn lock_shared(
        &self,
        wait: bool,
        on_wait: impl FnOnce(&str),
    ) -> Result<WorkDirLock, WorkDirError> {
        self.lock_as(false, wait, on_wait)
    }

    fn lock_as(
        &self,
        exclusive: bool,
        wait: bool,
        on_wait: impl FnOnce(&str),
    ) -> Result<WorkDirLock, WorkDirError> {
        self.create()?;
        let path = self.root.join("lock");
        let io = |source| WorkDirError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !flock_as(&file, exclusive, false).map_err(io)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            let holder = if holder.is_empty() {
                "another fissile-oci process".to_string()
            } else {
                holder
            };
            if !wait {
                return Err(WorkDirError::Busy {
                    path: self.root.clone(),
                    holder,
                });
            }
            on_wait(&holder);
            flock_as(&file, exclusive, true).map_err(io)?;
        }
        // Who holds the lock, for the message a waiting process prints (shared, the last one
        // to take it: one line written at once, so it is never a mix of two).
        let cmdline: Vec<String> = std::env::args().collect();
        let line = format!("pid {} ({})\n", std::process::id(), cmdline.join(" "));
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        let fd = file.as_raw_fd();
        held().push((self.root.clone(), fd));
        Ok(WorkDirLock { _file: file, fd })
    }

    /// The descriptor through which this process holds this work dir's lock, if it does.
    pub fn held_lock(&self) -> Option<RawFd> {
        held()
            .iter()
            .find(|(root, _)| *root == self.root)
            .map(|&(_, fd)| fd)
    }
}

fn held() -> std::sync::MutexGuard<'static, Vec<(PathBuf, RawFd)>> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held for as long as this value lives; the kernel releases it if the process dies (and every
/// child that inherited its descriptor, see [`WorkDir::held_lock`]).
pub struct WorkDirLock {
    _file: File,
    fd: RawFd,
}

impl Drop for WorkDirLock {
    fn drop(&mut self) {
        // Forgotten before the file closes (fields drop after this), so a reused descriptor
        // number is never mistaken for the lock.
        held().retain(|&(_, fd)| fd != self.fd);
    }
}

/// The lock of one name in the work dir (`WORK/locks/<name>`), held while this value lives.
pub struct NameLock {
    _file: File,
}

impl WorkDir {
    /// `WORK/locks/`: one empty file per name ever locked; `cache gc` empties it.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Takes the lock of `name` (letters, digits, `-`, `_`, `.`), waiting for the run that
    /// holds it: `on_wait` is called once if we must wait. Gives up with `None` when `cancel`
    /// is cancelled meanwhile.
    pub fn lock_name(
        &self,
        name: &str,
        cancel: &crate::cancel::CancelToken,
        on_wait: impl FnOnce(),
    ) -> Result<Option<NameLock>, WorkDirError> {
        debug_assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        let dir = self.locks();
        let path = dir.join(name);
        let io = |source| WorkDirError::Io {
            path: path.clone(),
            source,
        };
        fs_err::create_dir_all(&dir).map_err(|source| WorkDirError::Io {
            path: dir.clone(),
            source,
        })?;
        let file = fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut on_wait = Some(on_wait);
        // Polled rather than blocking, so an interrupt is noticed; a lock changes hands after
        // a compile, so a few milliseconds of delay are nothing.
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            if flock_as(&file, true, false).map_err(io)? {
                return Ok(Some(NameLock { _file: file }));
            }
            if let Some(f) = on_wait.take() {
                f();
            }
            if cancel.wait_timeout(pause) {
                return Ok(None);
            }
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }
}

/// `flock(LOCK_EX)`; returns false when `block` is false and someone else holds it.
pub(crate) fn flock(file: &File, block: bool) -> std::io::Result<bool> {
    flock_as(file, true, block)
}

/// `flock(LOCK_EX)` or `flock(LOCK_SH)`; returns false when `block` is false and someone else
/// holds it in a conflicting way.
fn flock_as(file: &File, exclusive: bool, block: bool) -> std::io::Result<bool> {
    let mode = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    let flags = mode | if block { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: flock on a valid open descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), flags) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !block => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workdir::WorkDir;

    #[test]
    fn the_held_lock_is_known_until_it_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (
            WorkDir::at(tmp.path().join("a")),
            WorkDir::at(tmp.path().join("b")),
        );
        assert_eq!(a.held_lock(), None);
        let held = a.lock(false, |_| {}).unwrap();
        assert!(a.held_lock().is_some());
        assert_eq!(b.held_lock(), None);
        drop(held);
        assert_eq!(a.held_lock(), None);
    }

    #[test]
    fn compiles_share_the_lock_and_gc_waits_for_them() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        let first = wd.lock_shared(false, |_| {}).unwrap();
        let second = wd.lock_shared(false, |_| {}).unwrap();
        assert!(matches!(
            wd.lock(false, |_| {}),
            Err(WorkDirError::Busy { .. })
        ));
        drop((first, second));
        let exclusive = wd.lock(false, |_| {}).unwrap();
        assert!(matches!(
            wd.lock_shared(false, |_| {}),
            Err(WorkDirError::Busy { .. })
        ));
        drop(exclusive);
    }

    #[test]
    fn a_name_lock_is_held_by_one_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        let cancel = crate::cancel::CancelToken::new();
        let held = wd.lock_name("abc", &cancel, || {}).unwrap().unwrap();
        // Another holder waits; cancelled, it gives up.
        let waiter = std::thread::scope(|s| {
            let t = s.spawn(|| {
                let mut waited = false;
                let got = wd.lock_name("abc", &cancel, || waited = true).unwrap();
                (got.is_some(), waited)
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            cancel.cancel();
            t.join().unwrap()
        });
        assert_eq!(waiter, (false, true));
        drop(held);
        let again = crate::cancel::CancelToken::new();
        assert!(wd
            .lock_name("abc", &again, || panic!("free"))
            .unwrap()
            .is_some());
        assert!(wd
            .lock_name("other", &again, || panic!("free"))
            .unwrap()
            .is_some());
    }

    #[test]
    fn second_locker_is_told_who_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path());
        let _held = wd.lock(false, |_| {}).unwrap();
        // flock locks belong to the open file description, so a second open in this process
        // conflicts just like another process would.
        match wd.lock(false, |_| {}) {
            Err(WorkDirError::Busy { holder, .. }) => {
                assert!(holder.contains(&std::process::id().to_string()), "{holder}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("second lock must fail"),
        }
    }
}
