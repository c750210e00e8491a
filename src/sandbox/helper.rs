//! The helper: the single-threaded process that runs one sandbox, because libcontainer is not
//! thread-safe (process-wide env and cwd). The zygote forks one per run (see `zygote`); it sends
//! its pid, reads a [`SandboxSpec`] from its run socket, runs it, and answers with a
//! [`HelperReply`]. Its stdin/stdout/stderr are the caller's, so the container can inherit
//! them. A single-threaded caller that exits afterwards (`fissile-oci run`) does the same work
//! in its own process instead (`in_process_main`).
//!
//! Every exit path ends the same way: kill the container's init if it still runs (its pid
//! namespace dies with it), reap it, remove the container's cgroups and state dir (directly once
//! its init has exited, through libcontainer's `delete(true)` otherwise), remove the bundle. Stop
//! signals (INT, TERM, HUP) are blocked and read from a signalfd, so they interrupt the wait and
//! take that path too, as does anything more from the caller on the run socket, or its end
//! closing (a cancelled run, or a caller that died). SIGKILL of the helper itself leaves the
//! container to its own parent-death SIGKILL and the state to the next run's stale scan.

use std::borrow::Cow;
use std::os::fd::{AsFd, BorrowedFd};
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
use super::mount_ns;
use super::netns;
use super::process::{self, WaitEnd};
use super::rootfs;
use super::runtime_spec::{build_runtime_spec, inherit_network_namespace};
use super::scratch;
use super::seccomp;
use super::security;
use super::state::{self, Claim, RuntimeDirs};
use super::types::{
    ExitStatus, Network, Outcome, RootfsSpec, SandboxSpec, ScratchReport, ScratchSpace,
};
use super::userns;
use super::zygote::{read_frame, write_frame, ToCaller};

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

/// Serves one run on `socket` (in a helper the zygote forked); returns the exit code.
pub(super) fn serve(socket: UnixStream, runtime_root: &Path, host: HostContext) -> i32 {
    HELPER_START.get_or_init(Instant::now);
    let started = ToCaller::Started {
        pid: std::process::id(),
    };
    if write_frame(&socket, &started).is_err() {
        return 1;
    }
    let reply = match read_frame::<SandboxSpec>(&socket) {
        Ok(Some(spec)) => run(&spec, runtime_root, host, Some(socket.as_fd())),
        // The caller is gone before it asked for anything.
        Ok(None) => return 1,
        Err(err) => failed(None, "reading the sandbox spec", err),
    };
    let code = match &reply {
        HelperReply::Finished(_) => 0,
        HelperReply::Interrupted { signal, .. } => 128 + signal,
        HelperReply::Failed { .. } => 1,
    };
    let _ = write_frame(&socket, &ToCaller::Reply(reply));
    code
}

/// The helper's work done by the caller itself (see
/// [`super::LibcontainerSandbox::run_in_this_process`]).
pub(super) fn in_process_main(
    spec: &SandboxSpec,
    runtime_root: &Path,
    host: HostContext,
) -> HelperReply {
    HELPER_START.get_or_init(Instant::now);
    run(spec, runtime_root, host, None)
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

pub(super) fn failed(id: Option<&str>, stage: &str, message: impl ToString) -> HelperReply {
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

/// Runs `spec` to its end. `cancel`, when given, stops the run once it is readable (the caller
/// wrote to it or closed its end).
fn run(
    spec: &SandboxSpec,
    runtime_root: &Path,
    host: HostContext,
    cancel: Option<BorrowedFd>,
) -> HelperReply {
    let signals = match process::block_stop_signals() {
        Ok(fd) => fd,
        Err(err) => return failed(None, "blocking signals", err),
    };
    // Checked before a rootless helper enters its user namespace: in there, root's dirs (/tmp)
    // belong to the overflow uid and could not be told from another user's.
    let dirs = match RuntimeDirs::open(runtime_root) {
        Ok(dirs) => dirs,
        Err(err) => return failed(None, "opening the runtime dir", chain(&err)),
    };
    if !host.is_root() {
        if let Err(err) = userns::enter_rootless_namespaces(&host) {
            return failed(None, "entering the rootless namespaces", chain(&err));
        }
    }
    if spec.network == Network::None {
        if let Err(err) = netns::make_and_enter() {
            return failed(None, "creating the network namespace", chain(&err));
        }
    }
    let own_cgroups = host.is_root() && host.cgroups == CgroupSupport::V1;
    let tmpfs = match (&spec.rootfs, spec.scratch_space) {
        (RootfsSpec::Overlay { scratch, .. }, ScratchSpace::Tmpfs { size }) => {
            Some((scratch.as_path(), size))
        }
        _ => None,
    };
    // Rootless, the user namespace came with a private mount namespace already.
    if host.is_root() && (own_cgroups || tmpfs.is_some()) {
        if let Err(err) = mount_ns::enter_private() {
            return failed(None, "entering a private mount namespace", err);
        }
    }
    // A tmpfs that cannot be had is no reason to fail: the run's changes go to disk, and its
    // outcome says why.
    let mut fallback = None;
    if let Some((scratch, size)) = tmpfs {
        if let Err(err) = scratch::mount_tmpfs(scratch, size, !host.is_root()) {
            fallback = Some(chain(&err));
        }
    }
    let spec = match &fallback {
        None => Cow::Borrowed(spec),
        Some(_) => Cow::Owned(SandboxSpec {
            scratch_space: ScratchSpace::Disk,
            ..spec.clone()
        }),
    };
    let spec = spec.as_ref();
    timing("namespaces and scratch ready");
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
    let changes = match prepare_rootfs(spec) {
        Ok(changes) => changes,
        Err(err) => return failed(Some(&id), "preparing the rootfs", chain(&err)),
    };
    timing("rootfs prepared");
    if spec.network == Network::None {
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

    let mut reply = run_container(spec, &dirs, &claim, &signals, cancel, own_cgroups);
    if let HelperReply::Finished(outcome) = &mut reply {
        outcome.scratch = match (tmpfs, &fallback) {
            (Some((scratch, size)), None) => scratch::report(scratch, size),
            _ => ScratchReport {
                fallback,
                ..ScratchReport::default()
            },
        };
    }
    if let Some(changes) = &changes {
        rootfs::finish_overlay(changes, spec.cow_mounts.len());
    }
    claim.release();
    timing("cleaned up");
    reply
}

/// Checks the rootfs and, for an overlay, makes the dirs its changes go to.
fn prepare_rootfs(spec: &SandboxSpec) -> Result<Option<rootfs::Changes>, rootfs::RootfsError> {
    match &spec.rootfs {
        RootfsSpec::Overlay { lower, scratch } => {
            let changes = rootfs::Changes::of(scratch, spec.scratch_space);
            rootfs::prepare_overlay(lower, &spec.cow_mounts, scratch, &changes)?;
            Ok(Some(changes))
        }
        RootfsSpec::Plain { dir, .. } => rootfs::check_plain(dir).map(|()| None),
    }
}

fn run_container(
    spec: &SandboxSpec,
    dirs: &RuntimeDirs,
    claim: &Claim,
    signals: &nix::sys::signalfd::SignalFd,
    cancel: Option<BorrowedFd>,
    own_cgroups: bool,
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
        let entered = ContainerCgroups::create(id, spec).and_then(|cg| {
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
    let started = Instant::now();
    let built = container::build(id, dirs, &claim.bundle, stdio, filter);
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
        None => process::wait_child(pid, &pidfd, signals, cancel, deadline, log.as_mut()),
    };
    let (end, status) = match end {
        Ok(WaitEnd::Ended(status)) => (None, Some(status)),
        Ok(other) => {
            // Killing pid 1 of the container's pid namespace kills every process in it.
            let _ = process::pidfd_kill(&pidfd);
            let status = nix::sys::wait::waitpid(pid, None).ok();
            (Some(other), status)
        }
        Err(err) => {
            let _ = process::pidfd_kill(&pidfd);
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
    // libcontainer's delete for every container, exited or not (the cgroups the helper made on
    // v1 go when `cgroups` is dropped): removing an exited one by hand (its cgroup and state
    // dirs, skipping libcontainer's rediscovery of the cgroup hierarchies) gave 0.999x the wall
    // time of a 200-package chain (docs/DECISIONS.md, "Exited containers removed without
    // libcontainer's delete"), so it went.
    let deleted = container::delete(&mut container);
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
        // Cancelled by the caller: reported as the SIGTERM that used to carry a cancellation.
        (Some(WaitEnd::Cancelled), _) => {
            return HelperReply::Interrupted {
                container_id: id.to_string(),
                signal: Signal::SIGTERM as i32,
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
        scratch: ScratchReport::default(),
    })
}
