//! The zygote: one single-threaded process per [`super::LibcontainerSandbox`]
//! (`fissile-oci __sandbox-zygote`, exec'd once, on the first run) that forks a helper for each
//! run. libcontainer must be driven from a single-threaded process, and the caller (a compile's
//! scheduler) has many threads; exec'ing the 65 MB binary once per package cost a process start
//! (the dynamic loader's relocations, page faults, argument parsing) and a teardown each time,
//! 18% of the CPU samples of a chain of trivial packages (BENCHMARKS.md). A fork of the small,
//! idle zygote shares all of that (docs/DECISIONS.md, "One zygote per compile forks the
//! helpers"). Compile-level figure: a zygote exec'd per package instead made a 200-package chain
//! of trivial packages 1.16x slower (wall, 16.6 against 14.3 ms per package, `-j 2`, 10 rounds of
//! `scripts/bench/compile_ab.py`, BENCHMARKS.md); on the 11-package real release it is below the
//! noise.
//!
//! The wire, all Unix stream sockets:
//! - control (the zygote's fd 3): per run, one byte carrying four fds (`SCM_RIGHTS`): the run
//!   socket and the caller's stdin, stdout and stderr, which become the helper's 0, 1 and 2 (a
//!   container inheriting its output gets the caller's). The zygote ends when the caller closes
//!   it, which the kernel does when the caller dies.
//! - run socket: length-prefixed JSON frames. The helper sends [`ToCaller::Started`] with its
//!   pid, reads the [`SandboxSpec`], and answers [`ToCaller::Reply`]. Anything more from the
//!   caller, or its end closing, stops the run (the container is killed and removed): that is
//!   how a run is cancelled, and how helpers outlive no dead caller. The zygote keeps its copy
//!   of the helper's end until it has reaped the helper, then sends [`ToCaller::Exited`], so a
//!   helper that died without answering is reported with its status.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::helper::{self, HelperReply};
use super::host::HostContext;

/// The name of the hidden subcommand that runs the zygote.
pub const ZYGOTE_SUBCOMMAND: &str = "__sandbox-zygote";

/// The fd the zygote reads requests on.
const CONTROL_FD: RawFd = 3;

/// A frame larger than this is refused: no spec or reply comes near it.
const MAX_FRAME: u32 = 64 << 20;

/// What a caller reads on a run socket.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToCaller {
    /// The helper runs, with this pid.
    Started { pid: u32 },
    /// The run's end.
    Reply(HelperReply),
    /// The helper is gone (sent by the zygote once it reaped it), with its status.
    Exited { status: String },
}

/// Writes `value` as one frame: its JSON length (u32, little-endian), then its JSON.
pub fn write_frame(mut to: impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&json);
    to.write_all(&frame)
}

/// Reads one frame; `None` at the end of the stream (between frames).
pub fn read_frame<T: for<'de> Deserialize<'de>>(mut from: impl Read) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    let mut json = vec![0u8; len as usize];
    from.read_exact(&mut json)?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
}

/// The caller's handle on its zygote.
pub struct Zygote {
    child: Child,
    control: UnixStream,
}

impl Zygote {
    /// Starts `exe __sandbox-zygote` with the control socket on its fd 3.
    pub fn start(exe: &Path, runtime_root: &Path) -> std::io::Result<Zygote> {
        let (control, theirs) = UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(exe);
        command
            .arg(ZYGOTE_SUBCOMMAND)
            .arg("--runtime-root")
            .arg(runtime_root);
        // SAFETY: between fork and exec the child only calls dup2 and fcntl, which are
        // async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // dup2 clears close-on-exec on the new fd, but does nothing (and so leaves it
                // set) when the socket already is fd 3: clear it then.
                let kept = if theirs_fd == CONTROL_FD {
                    libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(theirs_fd, CONTROL_FD)
                };
                if kept < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Zygote { child, control })
    }

    /// Asks for a helper on the caller's end of `run`'s pair: `theirs` is the helper's end.
    /// Returns once the zygote has the request (it forks right away).
    pub fn fork_helper(&self, theirs: &UnixStream) -> std::io::Result<()> {
        // A closed stdio fd of ours becomes /dev/null for the helper.
        let stdio = [0, 1, 2]
            .map(|fd| std_fd(fd).map_or_else(dev_null, Ok))
            .into_iter()
            .collect::<std::io::Result<Vec<OwnedFd>>>()?;
        let fds: Vec<RawFd> = std::iter::once(theirs.as_raw_fd())
            .chain(stdio.iter().map(AsRawFd::as_raw_fd))
            .collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(b"r")],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        if sent != 1 {
            return Err(std::io::Error::other("the zygote took no request"));
        }
        Ok(())
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The end of the control socket is the zygote's signal to exit.
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// One of our own stdio fds, when it is open.
fn std_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: the fd is only borrowed for the duration of the dup.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().ok()
}

fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// Entry point of the hidden subcommand: serves runs until the caller closes the control
/// socket; returns the process exit code.
pub fn zygote_main(runtime_root: &Path) -> i32 {
    // SAFETY: fd 3 was set up by the caller for us alone; we take ownership once.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let _ = nix::fcntl::fcntl(
        CONTROL_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // Stop signals (a Ctrl-C reaches the whole process group) are for the helpers, which
    // clean up their containers; the zygote ends with its caller. SIGCHLD is read from a
    // signalfd to reap helpers.
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        blocked.add(signal);
    }
    let mut original = SigSet::empty();
    if let Err(err) =
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut original))
    {
        eprintln!("fissile-oci zygote: cannot block signals: {err}");
        return 1;
    }
    let mut children = SigSet::empty();
    children.add(Signal::SIGCHLD);
    let sigchld =
        match SignalFd::with_flags(&children, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(fd) => fd,
            Err(err) => {
                eprintln!("fissile-oci zygote: cannot watch its children: {err}");
                return 1;
            }
        };
    // Once for all helpers.
    let host = HostContext::detect();
    let mut zygote = Serving {
        control,
        sigchld,
        original,
        runs: HashMap::new(),
    };
    loop {
        let (request, reaped) = match zygote.wait() {
            Ok(ready) => ready,
            Err(err) => {
                eprintln!("fissile-oci zygote: {err}");
                return 1;
            }
        };
        if reaped {
            zygote.reap();
        }
        if !request {
            continue;
        }
        let fds = match zygote.receive() {
            Ok(Some(fds)) => fds,
            Ok(None) => return 0,
            Err(err) => {
                eprintln!("fissile-oci zygote: reading a request: {err}");
                return 1;
            }
        };
        if let Some((run, stdio)) = zygote.fork_helper(fds) {
            // The forked child: nothing of the zygote's stays open in a helper.
            let original = zygote.original;
            drop(zygote);
            return become_helper(run, stdio, original, runtime_root, host);
        }
    }
}

/// In the forked child: the caller's stdio in place, the signal mask the zygote started with,
/// and the run served.
fn become_helper(
    run: UnixStream,
    stdio: [OwnedFd; 3],
    mask: SigSet,
    runtime_root: &Path,
    host: HostContext,
) -> i32 {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
    for (target, fd) in stdio.iter().enumerate() {
        // SAFETY: dup2 onto 0, 1 and 2, which this process owns and replaces here.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            return 1;
        }
    }
    drop(stdio);
    helper::serve(run, runtime_root, host)
}

struct Serving {
    control: OwnedFd,
    sigchld: SignalFd,
    /// The signal mask the zygote was started with, restored in each helper.
    original: SigSet,
    /// Each live helper's run socket, until it is reaped.
    runs: HashMap<Pid, UnixStream>,
}

impl Serving {
    /// Waits for a request or a child's end: which of them are ready.
    fn wait(&self) -> nix::Result<(bool, bool)> {
        loop {
            let mut fds = [
                PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
            ];
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Err(nix::Error::EINTR) => continue,
                Err(err) => return Err(err),
                Ok(_) => {}
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            return Ok((ready(&fds[0]), ready(&fds[1])));
        }
    }

    /// Reaps every helper that ended and tells its caller how.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigchld.read_signal() {}
        loop {
            let status = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if let Some(run) = self.runs.remove(&pid) {
                let status = match status {
                    WaitStatus::Exited(_, code) => format!("exit status {code}"),
                    WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
                    other => format!("{other:?}"),
                };
                // The caller may be gone already: best effort, never blocking the zygote.
                let _ = run.set_nonblocking(true);
                let _ = write_frame(&run, &ToCaller::Exited { status });
            }
        }
    }

    /// One request: the run socket and three stdio fds; `None` when the caller closed the
    /// control socket.
    fn receive(&self) -> std::io::Result<Option<[OwnedFd; 4]>> {
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut byte)];
        let message = loop {
            match recvmsg::<()>(
                self.control.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                other => break other?,
            }
        };
        if message.bytes == 0 {
            return Ok(None);
        }
        let mut fds = Vec::new();
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these fds in our table for us alone.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        fds.try_into().map(Some).map_err(|fds: Vec<OwnedFd>| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a request with {} fds instead of 4", fds.len()),
            )
        })
    }

    /// Forks a helper for a request. In the parent: `None` (the run socket is kept until the
    /// helper is reaped). In the child: its run socket and stdio.
    fn fork_helper(&mut self, fds: [OwnedFd; 4]) -> Option<(UnixStream, [OwnedFd; 3])> {
        let [run, stdin, stdout, stderr] = fds;
        let run = UnixStream::from(run);
        // SAFETY: the zygote is single-threaded, so the child may go on running Rust code.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => Some((run, [stdin, stdout, stderr])),
            Ok(ForkResult::Parent { child }) => {
                self.runs.insert(child, run);
                None
            }
            Err(err) => {
                let reply = helper::failed(None, "forking the sandbox helper", err);
                let _ = write_frame(&run, &ToCaller::Reply(reply));
                None
            }
        }
    }
}
