//! The caller's side: [`LibcontainerSandbox`] has its zygote fork a helper per run (see
//! `zygote`) and talks to it over a run socket. Safe to use from many threads at once: all the
//! libcontainer work happens in the helpers. A single-threaded caller that exits afterwards
//! (`fissile-oci run`) can instead do the helper's work in its own process
//! ([`LibcontainerSandbox::run_in_this_process`]).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::error::SandboxError;
use super::host::{CgroupSupport, HostContext};
use super::types::{Outcome, SandboxSpec};
use super::zygote::{read_frame, write_frame, ToCaller, Zygote};
use super::Sandbox;
use crate::cancel::CancelToken;

pub use super::zygote::ZYGOTE_SUBCOMMAND;

/// Runs sandboxes with libcontainer, each from a helper process its zygote forks.
pub struct LibcontainerSandbox {
    helper_exe: PathBuf,
    runtime_root: PathBuf,
    host: HostContext,
    limits_notice: Option<String>,
    notice_shown: AtomicBool,
    /// Started on the first run; stops when this is dropped.
    zygote: Mutex<Option<Zygote>>,
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
            zygote: Mutex::new(None),
        }
    }

    /// The zygote is this very binary, started through `/proc/self/exe`, which stays valid even
    /// when the binary is replaced on disk mid-run (an upgrade, a rebuild): helpers always run
    /// the same code as their caller. State goes to [`super::default_runtime_root`].
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
    /// The run stops (its container killed and removed) when the returned process is dropped
    /// unwaited, or when this process dies.
    pub fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        self.show_limits_notice(spec);
        let spawn_err = |source| SandboxError::SpawnHelper {
            exe: self.helper_exe.clone(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        self.fork_helper(&theirs).map_err(spawn_err)?;
        drop(theirs);
        let io_err = |source| SandboxError::HelperIo { pid: 0, source };
        write_frame(&ours, spec).map_err(io_err)?;
        match read_frame::<ToCaller>(&ours).map_err(io_err)? {
            Some(ToCaller::Started { pid }) => Ok(SandboxProcess { pid, socket: ours }),
            Some(ToCaller::Reply(reply)) => {
                Err(reply
                    .into_result()
                    .err()
                    .unwrap_or_else(|| SandboxError::HelperDied {
                        pid: 0,
                        status: "it answered before it started".into(),
                    }))
            }
            Some(ToCaller::Exited { status }) => Err(SandboxError::HelperDied { pid: 0, status }),
            None => Err(SandboxError::HelperDied {
                pid: 0,
                status: "the zygote closed the run".into(),
            }),
        }
    }

    /// Hands the helper's end of a run socket to the zygote, starting it first if needed, and
    /// once more if the one there has died.
    fn fork_helper(&self, theirs: &UnixStream) -> std::io::Result<()> {
        let mut zygote = self.zygote.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if zygote.is_none() {
                *zygote = Some(Zygote::start(&self.helper_exe, &self.runtime_root)?);
            }
            match zygote.as_ref().map(|z| z.fork_helper(theirs)) {
                Some(Ok(())) => return Ok(()),
                Some(Err(err)) if attempt == 1 => return Err(err),
                _ => *zygote = None,
            }
        }
        unreachable!("the second attempt returns")
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
        let stop = process.stopper();
        let callback = cancel.on_cancel(move || stop.stop());
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
    socket: UnixStream,
}

/// Stops a run from another thread (see [`SandboxProcess::stopper`]).
pub struct Stopper(Option<UnixStream>);

impl Stopper {
    /// Asks the helper to stop: it kills and removes the container, and the run ends with
    /// [`SandboxError::Interrupted`].
    pub fn stop(&self) {
        if let Some(socket) = &self.0 {
            let _ = write_frame(socket, &"stop");
        }
    }
}

impl SandboxProcess {
    /// The helper's pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Asks the helper to stop: it kills and removes the container, then `wait` returns
    /// [`SandboxError::Interrupted`].
    pub fn terminate(&self) {
        self.stopper().stop();
    }

    /// A handle that stops this run from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.socket.try_clone().ok())
    }

    /// Waits for the run to end.
    pub fn wait(self) -> Result<Outcome, SandboxError> {
        let pid = self.pid;
        loop {
            let frame = read_frame::<ToCaller>(&self.socket)
                .map_err(|source| SandboxError::HelperIo { pid, source })?;
            match frame {
                Some(ToCaller::Reply(reply)) => return reply.into_result(),
                Some(ToCaller::Started { .. }) => {}
                Some(ToCaller::Exited { status }) => {
                    return Err(SandboxError::HelperDied { pid, status })
                }
                None => {
                    return Err(SandboxError::HelperDied {
                        pid,
                        status: "its status is unknown: the zygote is gone".into(),
                    })
                }
            }
        }
    }
}
