//! Driving libcontainer for one container: stdio, build, the executor that runs in the
//! container's init just before `exec`, kill, delete, and the OOM check. Only ever called from
//! the single-threaded helper process.

use std::os::fd::OwnedFd;
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt;
use fs_err::OpenOptions;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use oci_spec::runtime::Spec;

use super::cgroup_v1;
use super::log_relay::LogRelay;
use super::seccomp::Filter;
use super::state::RuntimeDirs;
use super::types::{Input, Output, SandboxSpec};

/// The container's stdin, stdout and stderr.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio {
    /// Opens what the spec asks for. An output file is created (0644) or appended to; when
    /// stdout and stderr name the same file it is opened once and shared, so lines interleave
    /// in order. A capped file is a pipe whose relay the caller pumps while the container runs.
    /// An inherited stream that we do not have (closed fd) becomes /dev/null.
    pub fn open(spec: &SandboxSpec) -> std::io::Result<(Stdio, Option<LogRelay>)> {
        let stdin = match spec.stdin {
            Input::Inherit => inherit(0, false)?,
            Input::Null => dev_null(false)?,
        };
        let mut relays: Vec<LogRelay> = Vec::new();
        let mut open_output = |output: &Output, fd: i32| -> std::io::Result<OwnedFd> {
            match output {
                Output::Inherit => inherit(fd, true),
                Output::File(path) => Ok(OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(path)?
                    .into()),
                Output::CappedFile { path, head, tail } => {
                    if !relays.is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "stdout and stderr may share one capped log, not have one each",
                        ));
                    }
                    let (relay, write) = LogRelay::open(path, *head, *tail)?;
                    relays.push(relay);
                    Ok(write)
                }
            }
        };
        let stdout = open_output(&spec.stdout, 1)?;
        let stderr = match (&spec.stdout, &spec.stderr) {
            (Output::File(a), Output::File(b)) if a == b => stdout.try_clone()?,
            (Output::CappedFile { path: a, .. }, Output::CappedFile { path: b, .. }) if a == b => {
                stdout.try_clone()?
            }
            _ => open_output(&spec.stderr, 2)?,
        };
        Ok((
            Stdio {
                stdin,
                stdout,
                stderr,
            },
            relays.pop(),
        ))
    }
}

fn inherit(fd: i32, write: bool) -> std::io::Result<OwnedFd> {
    // SAFETY: the fd is only borrowed for the duration of the dup.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match borrowed.try_clone_to_owned() {
        Ok(owned) => Ok(owned),
        Err(err) if err.raw_os_error() == Some(libc::EBADF) => dev_null(write),
        Err(err) => Err(err),
    }
}

fn dev_null(write: bool) -> std::io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

/// Creates the container from the bundle (its init waits for `start`); `seccomp` is installed
/// by its init right before the command.
pub fn build(
    id: &str,
    dirs: &RuntimeDirs,
    bundle: &Path,
    stdio: Stdio,
    seccomp: Filter,
) -> Result<Container, LibcontainerError> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(SandboxExecutor { seccomp })
        .with_root_path(dirs.state_root())?
        .validate_id()?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
}

/// Deletes a container (killing what is left of it) and its cgroup.
pub fn delete(container: &mut Container) -> Result<(), LibcontainerError> {
    container.delete(true)
}

/// Loads and deletes the container of a dead helper. When libcontainer cannot (half-written
/// state), the state dir and any empty cgroup dirs are removed by hand.
///
/// A helper that died between creating and starting its container leaves an init process
/// waiting for a start that never comes (its parent-death signal may not be set yet). Rootless
/// there is no cgroup to find it by, so it is recognised by the name libcontainer gives it
/// until `exec`, and killed.
pub fn delete_stale(dirs: &RuntimeDirs, id: &str) {
    let state_dir = dirs.container_state_dir(id);
    if state_dir.exists() {
        if let Some(pid) = Container::load(state_dir.clone())
            .ok()
            .and_then(|c| c.pid())
        {
            kill_waiting_init(pid);
        }
        let deleted = Container::load(state_dir.clone()).and_then(|mut c| c.delete(true));
        if deleted.is_err() {
            let _ = fs_err::remove_dir_all(&state_dir);
        }
    }
    remove_cgroup_dirs(id);
}

fn kill_waiting_init(pid: nix::unistd::Pid) {
    let comm = fs_err::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "youki:[2:INIT]" {
        return;
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Removes the (empty) cgroup dirs named after the container under every hierarchy. True when
/// none is left; a dir that is still busy (a process not yet gone) is retried briefly.
fn remove_cgroup_dirs(id: &str) -> bool {
    let relative = super::runtime_spec::cgroups_path(id);
    let relative = relative.strip_prefix("/").unwrap_or(&relative);
    let root = Path::new("/sys/fs/cgroup");
    let Ok(hierarchies) = fs_err::read_dir(root) else {
        return true;
    };
    let mut all_gone = remove_cgroup_dir(&root.join(relative));
    for hierarchy in hierarchies.flatten() {
        all_gone &= remove_cgroup_dir(&hierarchy.path().join(relative));
    }
    all_gone
}

fn remove_cgroup_dir(dir: &Path) -> bool {
    cgroup_v1::remove_retrying(|| fs_err::remove_dir(dir))
}

/// Whether the kernel OOM-killed something in the memory cgroup libcontainer made (v1
/// `memory.oom_control`, v2 `memory.events`). Read before `delete` removes the cgroup.
pub fn oom_killed(id: &str) -> bool {
    let relative = super::runtime_spec::cgroups_path(id);
    let relative = relative.strip_prefix("/").unwrap_or(&relative);
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
    ];
    candidates
        .iter()
        .any(|path| fs_err::read_to_string(path).is_ok_and(|text| cgroup_v1::oom_kills(&text) > 0))
}

/// Runs in the container's init process after libcontainer has set it up, in place of the
/// default executor: restores the signal state the helper changed (blocked stop signals, Rust's
/// ignored SIGPIPE) so the command starts as from a shell, asks for SIGKILL when the helper dies,
/// installs the seccomp filter (see `seccomp`), and reports a command that cannot be executed
/// with a shell's codes (127 not found, 126 not executable) instead of failing the container
/// setup.
#[derive(Clone)]
struct SandboxExecutor {
    seccomp: Filter,
}

impl Executor for SandboxExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        for signal in Signal::iterator() {
            if !matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                // SAFETY: restoring the default disposition installs no handler code.
                let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
            }
        }
        let _ =
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

        // Last, so that nothing of ours runs under the filter but `execvp`. `no_new_privs` is
        // set by libcontainer already; setting it again makes the unprivileged load certain.
        let installed = nix::sys::prctl::set_no_new_privs()
            .map_err(std::io::Error::from)
            .and_then(|()| self.seccomp.install());
        if let Err(err) = installed {
            eprintln!("fissile-oci: cannot install the seccomp filter: {err}");
            // SAFETY: ending the init process before the command could run unfiltered.
            unsafe { libc::_exit(125) }
        }

        let c_args: Vec<std::ffi::CString> = args
            .iter()
            .map(|a| std::ffi::CString::new(a.as_bytes()).unwrap_or_default())
            .collect();
        let err = nix::unistd::execvp(&c_args[0], &c_args).unwrap_err();
        let code = match err {
            nix::Error::ENOENT => 127,
            _ => 126,
        };
        eprintln!("fissile-oci: cannot run {}: {}", args[0], err.desc());
        // SAFETY: ending the init process before any cleanup could touch shared state.
        unsafe { libc::_exit(code) }
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Runs in the init process before it waits for `start`, after its last credential
        // change (which would clear the setting): from here on, the helper's death kills it.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        // A missing command is reported by `exec` as exit 127, like a shell does.
        Ok(())
    }
}
