//! The data a sandbox run is made of: what to run and where ([`SandboxSpec`]) and how it ended
//! ([`Outcome`]). Pure data, serialisable, because it crosses the process boundary to the helper
//! as JSON.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `PATH` given to the command when the caller sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Hostname inside the sandbox unless the caller picks another.
pub const DEFAULT_HOSTNAME: &str = "compiler";
/// What a compile's log keeps of a flood at each end (first and last bytes): a failure report
/// shows the end, and 16 MiB of log is plenty to read.
pub const LOG_KEEP_BYTES: u64 = 8 << 20;
/// Process limit unless the caller picks another: stops fork bombs, roomy for `make -j`.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// One command to run in a fresh sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub rootfs: RootfsSpec,
    /// Bind mounts, applied parents first (sorted by destination depth, stable).
    pub mounts: Vec<BindMount>,
    /// Host dirs shown writable but never written (overlays over them, their changes kept in
    /// the scratch space). Need an [`RootfsSpec::Overlay`] root; mounted after `mounts`.
    #[serde(default)]
    pub cow_mounts: Vec<CopyOnWriteMount>,
    /// Where the changes of an overlay root and of `cow_mounts` live.
    #[serde(default)]
    pub scratch_space: ScratchSpace,
    /// The command; `args[0]` is looked up in the sandbox's `PATH`.
    pub args: Vec<String>,
    /// Environment; `PATH` is added (as [`DEFAULT_PATH`]) when absent.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    pub hostname: String,
    /// User and group ids inside the sandbox.
    pub uid: u32,
    pub gid: u32,
    pub network: Network,
    /// Maximum number of processes (cgroup pids controller); `None` for no limit.
    pub pids_limit: Option<i64>,
    /// Maximum memory in bytes (cgroup memory controller, swap included where the host allows).
    pub memory_limit: Option<i64>,
    /// Wall-clock limit; the whole container is killed when it passes.
    pub timeout: Option<Duration>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// Give the command a terminal (interactive shells). Not supported yet: rejected.
    pub tty: bool,
}

impl SandboxSpec {
    /// A spec with the defaults: no mounts, scratch on disk, cwd `/`, hostname `compiler`, root inside, no network,
    /// pids limit 4096, no memory limit or timeout, stdin from /dev/null, output inherited.
    pub fn new(rootfs: RootfsSpec, args: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            rootfs,
            mounts: Vec::new(),
            cow_mounts: Vec::new(),
            scratch_space: ScratchSpace::Disk,
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            hostname: DEFAULT_HOSTNAME.to_string(),
            uid: 0,
            gid: 0,
            network: Network::None,
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            memory_limit: None,
            timeout: None,
            stdin: Input::Null,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            tty: false,
        }
    }

    /// The environment as `K=V` strings, with `PATH` defaulted.
    pub fn env_strings(&self) -> Vec<String> {
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env
    }
}

/// The sandbox's root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootfsSpec {
    /// Read-only lower dirs (top first) under a private writable layer. The lower dirs are never
    /// written to; `upper/`, `work/` and `merged/` are created under `scratch`, and `upper/` holds
    /// every change once the run is over.
    Overlay {
        lower: Vec<PathBuf>,
        scratch: PathBuf,
    },
    /// A directory used as is (mount points are created in it when missing).
    Plain { dir: PathBuf, readonly: bool },
}

/// A host path made visible inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub readonly: bool,
}

/// A host dir made visible and writable inside the sandbox without ever being written: an
/// overlay with `source` as its read-only lower dir, whose changes live in the sandbox's scratch
/// space. A compile's staged sources are shown this way: the packaging script unpacks and builds
/// in its source dir, and the build tree lands in the scratch space (a tmpfs when it fits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOnWriteMount {
    pub source: PathBuf,
    pub destination: PathBuf,
}

/// Where a sandbox's changes go: the overlay root's upper dir and those of its copy-on-write
/// mounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScratchSpace {
    /// Under the scratch dir, on its filesystem. They outlive the run: a base build commits
    /// them, `compile --keep-sandbox` keeps them for `shell`.
    #[default]
    Disk,
    /// On a tmpfs of at most `size` bytes, private to the run and gone with it: nothing of the
    /// build tree touches the disk. The run falls back to `Disk` (and says why in its
    /// [`ScratchReport`]) where no such tmpfs can be used.
    Tmpfs { size: u64 },
}

/// Where a run's changes went, as the helper found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScratchReport {
    /// On a tmpfs (else on disk, under the scratch dir).
    pub tmpfs: bool,
    /// Why the tmpfs that was asked for could not be used.
    pub fallback: Option<String>,
    /// Bytes the tmpfs held when the command ended.
    pub used: u64,
    /// The tmpfs was full (no free block or inode) when the command ended: a failure may be
    /// for want of space, and the same run on disk may pass.
    pub full: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A network namespace of its own with only the loopback interface, up.
    None,
    /// The host's network namespace.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The caller's stdin.
    Inherit,
    /// `/dev/null`.
    Null,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// The caller's stdout or stderr.
    Inherit,
    /// A file, created when missing and appended to; stdout and stderr may name the same file.
    File(PathBuf),
    /// A file as with `File`, through a pipe the helper copies: of a flood only the first
    /// `head` and the last `tail` bytes are kept, with a line saying how much was cut. stdout
    /// and stderr may name the same one (then they share the pipe, and the same caps).
    CappedFile { path: PathBuf, head: u64, tail: u64 },
}

/// How a sandboxed command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited by itself with this code.
    Exited(i32),
    /// Killed by this signal (from inside, or by the kernel, e.g. the OOM killer).
    Signaled(i32),
    /// Killed by us because the timeout passed.
    TimedOut,
}

/// The result of one sandbox run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The container's id (its state dir and cgroup are named after it; both are gone now).
    pub container_id: String,
    pub status: ExitStatus,
    /// From container creation to the end of its init process.
    pub wall: Duration,
    /// The memory cgroup recorded an OOM kill (only known where cgroups are in use).
    pub oom_killed: bool,
    /// Where its changes went.
    #[serde(default)]
    pub scratch: ScratchReport,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Exited(0)
    }

    /// The exit code a shell would show: the code, 128 + signal, or 124 for a timeout (as
    /// coreutils `timeout` does).
    pub fn shell_code(&self) -> i32 {
        match self.status {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
            ExitStatus::TimedOut => 124,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "killed by signal {signal} ({name})")
            }
            ExitStatus::TimedOut => write!(f, "timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_defaulted_once() {
        let mut spec = SandboxSpec::new(
            RootfsSpec::Plain {
                dir: "/r".into(),
                readonly: true,
            },
            vec!["true".into()],
        );
        assert!(spec.env_strings().contains(&format!("PATH={DEFAULT_PATH}")));
        spec.env.push(("PATH".into(), "/bin".into()));
        assert_eq!(spec.env_strings(), vec!["PATH=/bin".to_string()]);
    }

    #[test]
    fn shell_codes() {
        let out = |status| Outcome {
            container_id: "c".into(),
            status,
            wall: Duration::ZERO,
            oom_killed: false,
            scratch: ScratchReport::default(),
        };
        assert_eq!(out(ExitStatus::Exited(3)).shell_code(), 3);
        assert_eq!(out(ExitStatus::Signaled(9)).shell_code(), 137);
        assert_eq!(out(ExitStatus::TimedOut).shell_code(), 124);
        assert_eq!(
            ExitStatus::Signaled(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let mut spec = SandboxSpec::new(
            RootfsSpec::Overlay {
                lower: vec!["/a".into(), "/b".into()],
                scratch: "/s".into(),
            },
            vec!["sh".into(), "-c".into(), "exit 3".into()],
        );
        spec.timeout = Some(Duration::from_millis(1500));
        spec.stdout = Output::File("/log".into());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSpec>(&json).unwrap(), spec);
    }
}
