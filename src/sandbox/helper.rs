//! The helper process: `fissile-oci __sandbox-helper`, one per container, single-threaded
//! because libcontainer is not thread-safe (process-wide env and cwd). It reads a
//! [`SandboxSpec`] as JSON from fd 3 (a socket), runs it, and writes a [`HelperReply`] back on the
//! same socket. Its stdin/stdout/stderr are the caller's, so the container can inherit them.
//! A single-threaded caller that exits afterwards (`fissile-oci run`) does the same work in its
//! own process instead (`in_process_main`).
//!
//! Every exit path ends the same way: kill the container's init if it still runs (its pid
//! namespace dies with it), reap it, remove the container's cgroups and state dir (directly once
//! its init has exited, through libcontainer's `delete(true)` otherwise), remove the bundle. Stop
//! signals (INT, TERM, HUP) are blocked and read from a signalfd, so they interrupt the wait and
//! take that path too; the helper asks for SIGTERM when its parent dies. SIGKILL of the helper
//! itself leaves the container to its own parent-death SIGKILL and the state to the next run's
//! stale scan.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::cgroup_v1::ContainerCgroups;
use super::container::{self, Stdio};
use super::error::SandboxError;
use super::host::{CgroupSupport, HostContext};
use super::netns;
use super::process::{self, WaitEnd};
use super::rootfs;
use super::runtime_spec::{build_runtime_spec, inherit_network_namespace};
use super::seccomp;
use super::security;
use super::side_job::{self, SideJob};
use super::state::{self, Claim, RuntimeDirs};
use super::types::{ExitStatus, Network, Outcome, RootfsSpec, SandboxSpec};
use super::userns;

/// The fd the helper talks to its caller on.
pub const HELPER_FD: i32 = 3;

/// What the helper answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum HelperReply {
    Finished(Outcome),
    /// Stopped by a signal to the helper; the container was killed and removed.
    Interrupted {
        container_id: String,
        signal: i32,
    },
    /// The run could not happen; `stage` says where it failed, `message` has the whole chain.
    Failed {
        container_id: Option<String>,
        stage: String,
        message: String,
    },
}

/// Entry point of the hidden subcommand; returns the process exit code. `caller_pid` is the
/// process that started us: if it is no longer our parent, it died before we could ask to be
/// told, and we stop at once.
pub fn helper_main(runtime_root: &Path, caller_pid: Option<u32>) -> i32 {
    HELPER_START.get_or_init(Instant::now);
    if !die_with(caller_pid) {
        return 1;
    }
    // SAFETY: fd 3 was set up by the caller for us alone; we take ownership once.
    let mut socket = unsafe { UnixStream::from_raw_fd(HELPER_FD) };
    let _ = nix::fcntl::fcntl(
        HELPER_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let reply = match read_spec(&mut socket) {
        Ok(spec) => run(&spec, runtime_root, HostContext::detect()),
        Err(message) => failed(None, "reading the sandbox spec", message),
    };
    answer(socket, &reply)
}

/// The helper's work done by the caller itself (see
/// [`super::LibcontainerSandbox::run_in_this_process`]).
pub(super) fn in_process_main(
    spec: &SandboxSpec,
    runtime_root: &Path,
    host: HostContext,
) -> HelperReply {
    HELPER_START.get_or_init(Instant::now);
    run(spec, runtime_root, host)
}

/// Asks for SIGTERM when the caller dies (handled: the container is still removed). False when
/// the caller is already gone, so it could not tell us.
fn die_with(caller_pid: Option<u32>) -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    caller_pid.is_none_or(|pid| nix::unistd::getppid().as_raw() as u32 == pid)
}

fn answer(mut socket: UnixStream, reply: &HelperReply) -> i32 {
    let code = match reply {
        HelperReply::Finished(_) => 0,
        HelperReply::Interrupted { signal, .. } => 128 + signal,
        HelperReply::Failed { .. } => 1,
    };
    let json = serde_json::to_vec(reply).unwrap_or_default();
    let _ = socket.write_all(&json);
    code
}

impl HelperReply {
    /// The caller's view of a reply.
    pub fn into_result(self) -> Result<Outcome, SandboxError> {
        match self {
            HelperReply::Finished(outcome) => Ok(outcome),
            HelperReply::Interrupted {
                container_id,
                signal,
            } => Err(SandboxError::Interrupted {
                container_id,
                signal,
            }),
            HelperReply::Failed {
                container_id,
                stage,
                message,
            } => Err(SandboxError::Failed {
                container_id: container_id.unwrap_or_else(|| "-".into()),
                stage,
                message,
            }),
        }
    }
}

fn read_spec(socket: &mut UnixStream) -> Result<SandboxSpec, String> {
    let mut buf = Vec::new();
    socket.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}

fn failed(id: Option<&str>, stage: &str, message: impl ToString) -> HelperReply {
    HelperReply::Failed {
        container_id: id.map(str::to_string),
        stage: stage.to_string(),
        message: message.to_string(),
    }
}

static HELPER_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// With `FISSILE_OCI_SANDBOX_TIMING` set, phase times (since the helper's `main`) go to stderr.
fn timing(phase: &str) {
    if std::env::var_os("FISSILE_OCI_SANDBOX_TIMING").is_some() {
        let start = HELPER_START.get_or_init(Instant::now);
        eprintln!(
            "sandbox timing: {phase} at {:.2} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn run(spec: &SandboxSpec, runtime_root: &Path, host: HostContext) -> HelperReply {
    let signals = match process::block_stop_signals() {
        Ok(fd) => fd,
        Err(err) => return failed(None, "blocking signals", err),
    };
    if !host.is_root() {
        if let Err(err) = userns::enter_rootless_namespaces(&host) {
            return failed(None, "entering the rootless namespaces", chain(&err));
        }
    }
    let overlay_work_reset = match &spec.rootfs {
        RootfsSpec::Overlay { scratch, .. } => Some(rootfs::OverlayWorkReset::new(scratch)),
        RootfsSpec::Plain { .. } => None,
    };
    let side_work = match SideWork::start(spec, overlay_work_reset.as_ref()) {
        Ok(work) => work,
        Err(err) => return failed(None, "starting the set-up side job", err),
    };
    let dirs = match RuntimeDirs::open(runtime_root) {
        Ok(dirs) => dirs,
        Err(err) => return failed(None, "opening the runtime dir", chain(&err)),
    };
    // Leftovers of helpers that died without cleaning up.
    for stale in state::stale_claims(&dirs) {
        container::delete_stale(&dirs, &stale.id);
        stale.release();
    }

    timing("stale scan done");
    let id = state::new_container_id();
    let mut runtime_spec = match build_runtime_spec(spec, &host, &id) {
        Ok(s) => s,
        Err(err) => return failed(Some(&id), "building the runtime spec", chain(&err)),
    };
    let prepared = match &spec.rootfs {
        RootfsSpec::Overlay { lower, scratch } => rootfs::prepare_overlay(lower, scratch),
        RootfsSpec::Plain { dir, .. } => rootfs::check_plain(dir),
    };
    if let Err(err) = prepared {
        return failed(Some(&id), "preparing the rootfs", chain(&err));
    }
    timing("rootfs prepared");
    if side_work.makes_netns {
        inherit_network_namespace(&mut runtime_spec);
    }
    let claim = match Claim::create(&dirs, &id) {
        Ok(claim) => claim,
        Err(err) => return failed(Some(&id), "creating the bundle", chain(&err)),
    };
    let config = claim.bundle.join("config.json");
    if let Err(err) = runtime_spec.save(&config) {
        claim.release();
        return failed(Some(&id), "writing config.json", chain(&err));
    }
    state::restrict(&config);

    let own_cgroups = host.is_root() && host.cgroups == CgroupSupport::V1;
    let reply = run_container(spec, &dirs, &claim, &signals, own_cgroups, side_work);
    if let RootfsSpec::Overlay { scratch, .. } = &spec.rootfs {
        rootfs::finish_overlay(scratch);
    }
    claim.release();
    timing("cleaned up");
    reply
}

/// The network namespace and the reset of the overlay work dir, which a [`side_job`] makes
/// while the helper prepares the rest.
struct SideWork<'a> {
    job: Option<SideJob<'a, 2>>,
    makes_netns: bool,
    overlay_work_reset: Option<&'a rootfs::OverlayWorkReset>,
}

impl<'a> SideWork<'a> {
    fn start(
        spec: &SandboxSpec,
        overlay_work_reset: Option<&'a rootfs::OverlayWorkReset>,
    ) -> nix::Result<SideWork<'a>> {
        let makes_netns = spec.network == Network::None;
        let job = if makes_netns || overlay_work_reset.is_some() {
            // Shares our fd table: the namespace's fd is opened there.
            let job = move || {
                [
                    if makes_netns {
                        netns::make_in_side_job()
                    } else {
                        0
                    },
                    overlay_work_reset.map_or(0, rootfs::OverlayWorkReset::reset_in_side_job),
                ]
            };
            let tail = move || {
                if let Some(reset) = overlay_work_reset {
                    reset.clear_in_side_job();
                }
            };
            Some(side_job::start(true, job, tail)?)
        } else {
            None
        };
        Ok(SideWork {
            job,
            makes_netns,
            overlay_work_reset,
        })
    }

    /// Waits for the side job's results, joins the namespace and completes the reset; on
    /// failure, the stage and the error. The side job's tail runs on; it is reaped on drop.
    fn finish(&mut self) -> Result<(), (&'static str, String)> {
        let results = self.job.as_mut().map(SideJob::results).transpose();
        let results =
            results.map_err(|err| ("waiting for the set-up side job", err.to_string()))?;
        if self.makes_netns {
            let made = results.map_or(-libc::ECHILD, |[netns, _]| netns);
            netns::enter_made(made)
                .map_err(|err| ("creating the network namespace", chain(&err)))?;
        }
        if let Some(reset) = self.overlay_work_reset {
            reset
                .finish(results.map(|[_, reset]| reset))
                .map_err(|err| ("preparing the rootfs", chain(&err)))?;
        }
        Ok(())
    }
}

fn run_container(
    spec: &SandboxSpec,
    dirs: &RuntimeDirs,
    claim: &Claim,
    signals: &nix::sys::signalfd::SignalFd,
    own_cgroups: bool,
    mut side_work: SideWork,
) -> HelperReply {
    let id = claim.id.as_str();
    let (stdio, mut log) = match Stdio::open(spec) {
        Ok(opened) => opened,
        Err(err) => return failed(Some(id), "opening stdio", err),
    };
    let filter = match seccomp::load_or_compile(&security::seccomp_profile(), dirs.root()) {
        Ok(filter) => filter,
        Err(err) => return failed(Some(id), "compiling the seccomp filter", chain(&err)),
    };
    // On cgroup v1 the container's processes start in cgroups the helper made and entered
    // (see `cgroup_v1`); they are dropped, and so removed, after the container on every path.
    let mut cgroups = None;
    if own_cgroups {
        let entered = ContainerCgroups::create(id, spec).and_then(|mut cg| {
            cg.hide_hierarchies()?;
            cg.enter()?;
            Ok(cg)
        });
        match entered {
            Ok(cg) => cgroups = Some(cg),
            Err(err) => return failed(Some(id), "creating the container's cgroups", chain(&err)),
        }
    }
    timing("cgroups entered");
    if let Err((stage, err)) = side_work.finish() {
        return failed(Some(id), stage, err);
    }
    timing("side job done");
    let started = Instant::now();
    let built = container::build(id, dirs, &claim.bundle, stdio, filter);
    if let Some(cg) = cgroups.as_mut() {
        cg.retire_stand_in();
    }
    timing("built");
    let mut container = match built {
        Ok(c) => c,
        Err(err) => {
            process::reap_children();
            container::delete_stale(dirs, id);
            return failed(Some(id), "creating the container", chain(&err));
        }
    };
    let pid = container.pid().unwrap_or(Pid::from_raw(0));
    let pidfd = match process::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(err) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            let _ = container::delete(&mut container);
            return failed(Some(id), "opening a pidfd for the container", err);
        }
    };
    // From here on, every path goes through the kill/reap/delete below.
    let mut setup_error = None;
    if let Some(cg) = &cgroups {
        if let Err(err) = cg.leave().and_then(|()| cg.limit(spec)) {
            setup_error = Some(("limiting the container's cgroups", chain(&err)));
        }
    }
    if setup_error.is_none() {
        if let Err(err) = container.start() {
            setup_error = Some(("starting the container", chain(&err)));
        }
    }
    timing("started");
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let end = match setup_error {
        Some(_) => Ok(WaitEnd::Deadline),
        None => process::wait_child(pid, &pidfd, signals, deadline, log.as_mut()),
    };
    let (end, status) = match end {
        Ok(WaitEnd::Ended(status)) => (None, Some(status)),
        Ok(other) => {
            // Killing pid 1 of the container's pid namespace kills every process in it.
            let _ = process::pidfd_kill(&pidfd, Signal::SIGKILL);
            let status = nix::sys::wait::waitpid(pid, None).ok();
            (Some(other), status)
        }
        Err(err) => {
            let _ = process::pidfd_kill(&pidfd, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            setup_error = Some(("waiting for the container", err.to_string()));
            (None, None)
        }
    };
    let wall = started.elapsed();
    // The container's processes are gone (pid 1 of its namespace took them along): what is
    // left in the pipe is all there will be.
    if let Some(log) = log {
        let path = log.path().to_path_buf();
        if let Err(err) = log.finish() {
            setup_error.get_or_insert(("writing the log", format!("{}: {err}", path.display())));
        }
    }
    let oom_killed = matches!(status, Some(WaitStatus::Signaled(_, Signal::SIGKILL, _)))
        && spec.memory_limit.is_some()
        && cgroups
            .as_ref()
            .map_or_else(|| container::oom_killed(id), ContainerCgroups::oom_killed);
    timing("exited");
    let deleted = match status {
        Some(_) => container::remove_exited(&mut container, dirs, id, cgroups.as_mut()),
        None => container::delete(&mut container),
    };
    timing("deleted");

    if let Some((stage, message)) = setup_error {
        return failed(Some(id), stage, message);
    }
    if let Err(err) = deleted {
        return failed(Some(id), "deleting the container", chain(&err));
    }
    let status = match (end, status) {
        (Some(WaitEnd::Signal(signal)), _) => {
            return HelperReply::Interrupted {
                container_id: id.to_string(),
                signal: signal as i32,
            }
        }
        (Some(_), _) => ExitStatus::TimedOut,
        (None, Some(WaitStatus::Exited(_, code))) => ExitStatus::Exited(code),
        (None, Some(WaitStatus::Signaled(_, signal, _))) => ExitStatus::Signaled(signal as i32),
        (None, other) => {
            return failed(Some(id), "waiting for the container", format!("{other:?}"))
        }
    };
    HelperReply::Finished(Outcome {
        container_id: id.to_string(),
        status,
        wall,
        oom_killed,
    })
}
