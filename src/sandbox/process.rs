//! Process plumbing of the helper: pidfds, signals, waiting with a deadline, reaping.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::log_relay::LogRelay;

/// The signals that make the helper stop its container and clean up.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Blocks the stop signals and returns a signalfd that reports them. Blocked signals are
/// inherited by children: the container's executor unblocks everything before `exec`.
pub fn block_stop_signals() -> nix::Result<SignalFd> {
    let set = stop_signals();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

/// A pidfd for a child: waiting on it cannot race with pid reuse.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid.as_raw()).ok_or(nix::Error::ESRCH)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|err| nix::Error::from_raw(err.raw_os_error()))
}

/// SIGKILLs the process behind `pidfd`; one already gone is no error.
pub fn pidfd_kill(pidfd: &OwnedFd) -> nix::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL) {
        Ok(()) => Ok(()),
        Err(err) if err == rustix::io::Errno::SRCH => Ok(()),
        Err(err) => Err(nix::Error::from_raw(err.raw_os_error())),
    }
}

/// Why waiting stopped.
#[derive(Debug)]
pub enum WaitEnd {
    /// The process ended; its status.
    Ended(WaitStatus),
    /// The deadline passed first.
    Deadline,
    /// One of the stop signals arrived first.
    Signal(Signal),
    /// The caller cancelled the run first (or went away).
    Cancelled,
}

/// Waits for the child behind `pidfd` to end, the deadline to pass, a stop signal, or `cancel`
/// to become readable (anything from the caller, or its end closing), copying the container's
/// output into its log meanwhile when it has a capped one.
pub fn wait_child(
    pid: Pid,
    pidfd: &OwnedFd,
    signals: &SignalFd,
    cancel: Option<BorrowedFd>,
    deadline: Option<Instant>,
    mut log: Option<&mut LogRelay>,
) -> nix::Result<WaitEnd> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(WaitEnd::Deadline);
                }
                // Round up so that we do not wake a millisecond early and spin.
                let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(cancel) = cancel {
            fds.push(PollFd::new(cancel, PollFlags::POLLIN));
        }
        let log_at = fds.len();
        if let Some(log) = log.as_deref() {
            fds.push(PollFd::new(log.pipe(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, timeout) {
            Err(nix::Error::EINTR) => continue,
            Err(err) => return Err(err),
            Ok(_) => {}
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (child_ended, signalled, cancelled, output) = (
            ready(&fds[0]),
            ready(&fds[1]),
            cancel.is_some() && ready(&fds[2]),
            fds.get(log_at).is_some_and(ready),
        );
        drop(fds);
        if output {
            if let Some(relay) = log.as_deref_mut() {
                let open = relay
                    .pump()
                    .map_err(|e| nix::Error::try_from(e).unwrap_or(nix::Error::EIO))?;
                if !open {
                    // A pipe at its end (every writer gone) stays readable: stop polling it.
                    log = None;
                }
            }
        }
        if signalled {
            if let Ok(Some(info)) = signals.read_signal() {
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                    return Ok(WaitEnd::Signal(signal));
                }
            }
        }
        if child_ended {
            return nix::sys::wait::waitpid(pid, None).map(WaitEnd::Ended);
        }
        if cancelled {
            return Ok(WaitEnd::Cancelled);
        }
    }
}

/// Reaps whatever children are already gone (after a failed container build, libcontainer may
/// leave its intermediate process as a zombie); waits a little for ones still exiting.
pub fn reap_children() {
    let until = Instant::now() + std::time::Duration::from_millis(200);
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
