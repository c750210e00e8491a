//! The work-dir lock: one writer at a time, and a waiting process is told who holds it.

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
    /// Takes the work-dir lock. When another process holds it: with `wait`, `on_wait` is told who
    /// and we block until it is free; without, `Busy` names the holder.
    pub fn lock(
        &self,
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
        if !flock(&file, false).map_err(io)? {
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
            flock(&file, true).map_err(io)?;
        }
        // Who holds the lock, for the message a waiting process prints.
        let cmdline: Vec<String> = std::env::args().collect();
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "pid {} ({})", std::process::id(), cmdline.join(" ")).map_err(io)?;
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

/// `flock(LOCK_EX)`; returns false when `block` is false and someone else holds it.
pub(crate) fn flock(file: &File, block: bool) -> std::io::Result<bool> {
    let flags = libc::LOCK_EX | if block { 0 } else { libc::LOCK_NB };
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
