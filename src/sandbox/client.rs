//! The caller's side: [`LibcontainerSandbox`] starts one helper process per run and talks to it
//! over a socket on the helper's fd 3. Safe to use from many threads at once: all the
//! libcontainer work happens in the helpers. A single-threaded caller that exits afterwards
//! (`fissile-oci run`) can instead do the helper's work in its own process
//! ([`LibcontainerSandbox::run_in_this_process`]).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::SandboxError;
use super::helper::{HelperReply, HELPER_FD};
use super::host::{CgroupSupport, HostContext};
use super::types::{Outcome, SandboxSpec};
use super::Sandbox;
use crate::cancel::CancelToken;

/// The name of the hidden subcommand that runs the helper.
pub const HELPER_SUBCOMMAND: &str = "__sandbox-helper";

/// Runs sandboxes with libcontainer, each from a fresh helper process.
pub struct LibcontainerSandbox {
    helper_exe: PathBuf,
    runtime_root: PathBuf,
    host: HostContext,
    limits_notice: Option<String>,
    notice_shown: AtomicBool,
}

impl LibcontainerSandbox {
    /// `helper_exe` is the `fissile-oci` binary (`std::env::current_exe()` in the CLI,
    /// `env!("CARGO_BIN_EXE_fissile-oci")` in tests); `runtime_root` holds container state
    /// (see [`super::default_runtime_root`]).
    pub fn new(helper_exe: PathBuf, runtime_root: PathBuf) -> LibcontainerSandbox {
        let host = HostContext::detect();
        let limits_notice = match &host.cgroups {
            CgroupSupport::V1 | CgroupSupport::V2 => None,
            CgroupSupport::Unavailable { reason } => Some(format!(
                "notice: {reason}: pids and memory limits are not enforced"
            )),
        };
        LibcontainerSandbox {
            helper_exe,
            runtime_root,
            host,
            limits_notice,
            notice_shown: AtomicBool::new(false),
        }
    }

    /// Helpers are this very binary, started through `/proc/self/exe`, which stays valid even
    /// when the binary is replaced on disk mid-run (an upgrade, a rebuild): they always run the
    /// same code as their parent. State goes to [`super::default_runtime_root`].
    pub fn from_current_exe() -> Result<LibcontainerSandbox, SandboxError> {
        let exe = PathBuf::from("/proc/self/exe");
        if !exe.exists() {
            return Err(SandboxError::NoProc);
        }
        Ok(LibcontainerSandbox::new(exe, super::default_runtime_root()))
    }

    /// Never print the limits notice (the caller shows [`Self::limits_notice`] itself, or is
    /// asked to be quiet).
    pub fn without_notice(self) -> LibcontainerSandbox {
        self.notice_shown.store(true, Ordering::Relaxed);
        self
    }

    /// Why resource limits cannot be enforced here, if they cannot.
    pub fn limits_notice(&self) -> Option<&str> {
        self.limits_notice.as_deref()
    }

    /// Starts a run; [`SandboxProcess::wait`] gives its outcome. The limits notice is printed
    /// to stderr once per `LibcontainerSandbox` when a run asks for limits that cannot be kept.
    ///
    /// The helper stops (removing its container) when the *thread* that spawned it ends: the
    /// kernel's parent-death signal follows threads. Spawn and wait on the same thread.
    pub fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        self.show_limits_notice(spec);
        let spawn_err = |source| SandboxError::SpawnHelper {
            exe: self.helper_exe.clone(),
            source,
        };
        let (mut ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(&self.helper_exe);
        command
            .arg(HELPER_SUBCOMMAND)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .arg("--caller-pid")
            .arg(std::process::id().to_string());
        // SAFETY: between fork and exec the child only calls dup2, which is async-signal-safe.
        // dup2 also clears close-on-exec on the new fd, so only fd 3 reaches the helper.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, HELPER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(spawn_err)?;
        drop(theirs);
        let pid = child.id();
        let io_err = |source| SandboxError::HelperIo { pid, source };
        let json = serde_json::to_vec(spec).expect("a sandbox spec always serialises");
        ours.write_all(&json).map_err(io_err)?;
        ours.shutdown(Shutdown::Write).map_err(io_err)?;
        Ok(SandboxProcess {
            pid,
            child,
            socket: ours,
        })
    }

    /// Does the helper's work in this very process: no helper to fork, reap and read a reply
    /// from. Only for a single-threaded caller that exits soon after (the `run` subcommand):
    /// the run leaves this process in the sandbox's network and mount namespaces,
    /// non-dumpable, with INT, TERM and HUP blocked. Those signals stop the run (the container
    /// is killed and removed) and come back as [`SandboxError::Interrupted`]. With other
    /// threads running, returns [`SandboxError::NotSingleThreaded`] having done nothing.
    pub fn run_in_this_process(&self, spec: &SandboxSpec) -> Result<Outcome, SandboxError> {
        let threads = thread_count();
        if threads != 1 {
            return Err(SandboxError::NotSingleThreaded { threads });
        }
        self.show_limits_notice(spec);
        super::helper::in_process_main(spec, &self.runtime_root, self.host.clone()).into_result()
    }

    fn show_limits_notice(&self, spec: &SandboxSpec) {
        if let Some(notice) = &self.limits_notice {
            let wants_limits = spec.pids_limit.is_some() || spec.memory_limit.is_some();
            if wants_limits && !self.notice_shown.swap(true, Ordering::Relaxed) {
                eprintln!("{notice}");
            }
        }
    }
}

fn thread_count() -> usize {
    fs_err::read_dir("/proc/self/task")
        .map(|tasks| tasks.count())
        .unwrap_or(0)
}

impl Sandbox for LibcontainerSandbox {
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError> {
        let process = self.spawn(spec)?;
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        // The helper kills and deletes its container on SIGTERM; it is our child and is not
        // reaped before `wait` returns, so its pid cannot have been reused when this fires.
        let callback = cancel.on_cancel(move || {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        });
        let result = process.wait();
        if let Some(id) = callback {
            cancel.remove_callback(id);
        }
        result
    }
}

/// A run in progress.
pub struct SandboxProcess {
    pid: u32,
    child: Child,
    socket: UnixStream,
}

impl SandboxProcess {
    /// The helper's pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Asks the helper to stop: it kills and removes the container, then `wait` returns
    /// [`SandboxError::Interrupted`].
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// Waits for the run to end.
    pub fn wait(mut self) -> Result<Outcome, SandboxError> {
        let pid = self.pid;
        let mut buf = Vec::new();
        let read = self.socket.read_to_end(&mut buf);
        let status = self
            .child
            .wait()
            .map(|status| status.to_string())
            .map_err(|source| SandboxError::HelperIo { pid, source })?;
        read.map_err(|source| SandboxError::HelperIo { pid, source })?;
        if buf.is_empty() {
            return Err(SandboxError::HelperDied { pid, status });
        }
        let reply: HelperReply = serde_json::from_slice(&buf)
            .map_err(|source| SandboxError::BadReply { pid, source })?;
        reply.into_result()
    }
}
