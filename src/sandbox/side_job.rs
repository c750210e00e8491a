//! Set-up work a forked child does while the helper goes on with the rest.
//!
//! Two steps of a run wait on the kernel rather than on us: making a network namespace
//! (`setup_net`, about half a millisecond of CPU) and clearing the overlay work dir an earlier
//! run left (where freed blocks are discarded synchronously, 50-300 µs per dir). With a second
//! core, a child does them while the helper builds the spec, bundle and cgroups; the helper
//! waits for it right before the container is built.
//!
//! The child is a raw `clone` without `CLONE_VM`: a copy of the helper made without glibc's
//! fork handlers. It must therefore only make raw system calls, with everything it needs (paths
//! as C strings) built before the clone, and leave with `_exit`: no allocation, no panics,
//! nothing dropped. Its results are `i32`s (by convention `-errno` on failure) sent back on a
//! pipe.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::Pid;

/// A running side job with `N` results; [`Self::wait`] gives them. Dropped unwaited, it is
/// waited for (an fd it opened then stays open until we exit).
pub struct SideJob<const N: usize> {
    child: Pid,
    /// The report pipe. Its write end stays open here until the child is reaped: with a shared
    /// fd table, closing it would close it for the child too.
    report: Option<(OwnedFd, OwnedFd)>,
}

/// Runs `job` in a forked child. With `share_fds`, the child shares our fd table, so an fd it
/// opens (and reports) is ours. See the module doc for what `job` may do.
pub fn start<const N: usize>(
    share_fds: bool,
    job: impl FnOnce() -> [i32; N],
) -> nix::Result<SideJob<N>> {
    let (report, report_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if share_fds {
        flags |= libc::CLONE_FILES as libc::c_ulong;
    }
    // SAFETY: a raw clone without CLONE_VM is a fork (optionally sharing the fd table). The
    // child runs `job`, which keeps to raw system calls, writes its results and `_exit`s.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        let results = job();
        // SAFETY: one write(2) of an array on the stack (far below PIPE_BUF), then _exit(2).
        unsafe {
            libc::write(
                report_tx.as_raw_fd(),
                results.as_ptr().cast(),
                std::mem::size_of::<[i32; N]>(),
            );
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(nix::Error::last());
    }
    Ok(SideJob {
        child: Pid::from_raw(pid as i32),
        report: Some((report, report_tx)),
    })
}

impl<const N: usize> SideJob<N> {
    /// Waits for the child and returns what its job returned.
    pub fn wait(mut self) -> nix::Result<[i32; N]> {
        self.reap()
    }

    fn reap(&mut self) -> nix::Result<[i32; N]> {
        let Some((report, report_tx)) = self.report.take() else {
            return Err(nix::Error::ECHILD);
        };
        // Reaped before the write end is closed, so that a child killed before it reported
        // reads as end-of-file instead of blocking.
        while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(self.child, None) {}
        drop(report_tx);
        let mut bytes = vec![0u8; std::mem::size_of::<[i32; N]>()];
        if nix::unistd::read(report.as_raw_fd(), &mut bytes)? != bytes.len() {
            return Err(nix::Error::ECHILD);
        }
        let mut results = [0; N];
        for (result, chunk) in results.iter_mut().zip(bytes.chunks_exact(4)) {
            *result = i32::from_ne_bytes(chunk.try_into().expect("chunks of four bytes"));
        }
        Ok(results)
    }
}

impl<const N: usize> Drop for SideJob<N> {
    fn drop(&mut self) {
        let _ = self.reap();
    }
}

/// The `-errno` of the last failed system call, for a job's result.
pub fn last_errno() -> i32 {
    -nix::errno::Errno::last_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn the_results_of_the_job_come_back() {
        let job = start(false, || [42, -2]).unwrap();
        assert_eq!(job.wait().unwrap(), [42, -2]);
    }

    #[test]
    fn an_fd_opened_by_a_job_sharing_fds_is_ours() {
        let path = c"/proc/version";
        // SAFETY: open(2) of a C string built before the clone.
        let job = start(true, || {
            [unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) }]
        })
        .unwrap();
        let [fd] = job.wait().unwrap();
        assert!(fd >= 0);
        // SAFETY: the child opened it in our fd table and is gone.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(std::io::read_to_string(file).unwrap().starts_with("Linux"));
    }

    #[test]
    fn a_child_killed_before_reporting_is_an_error_not_a_hang() {
        // SAFETY: kill(2) of ourselves, the forked child.
        let job = start(false, || {
            [unsafe { libc::kill(libc::getpid(), libc::SIGKILL) }]
        })
        .unwrap();
        assert!(job.wait().is_err());
    }
}
