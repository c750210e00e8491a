//! `fissile-oci run`: one command in a sandbox, for debugging packaging scripts and benchmarks.
//! Usually done in this very process, with no helper; a helper is started only when other
//! threads are running (forked by the zygote, the hidden `__sandbox-zygote` subcommand in
//! `zygote.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};

use fissile_oci::sandbox::{
    default_runtime_root, BindMount, Input, LibcontainerSandbox, Output, RootfsSpec, SandboxError,
    SandboxSpec, DEFAULT_HOSTNAME, DEFAULT_PIDS_LIMIT,
};

use super::args::{parse_size, NetworkArg};
use super::Printer;

pub const RUN_ABOUT: &str = "\
Run a command in a sandbox: the same isolation as a package compile (own pid, mount, uts, ipc,
cgroup and network namespaces, reduced capabilities, no_new_privs, seccomp, pids limit).

By default the rootfs is the lower layer of an overlay: the command may write anywhere, its
changes go to a scratch dir that is removed afterwards (kept with --scratch), and DIR itself is
never modified. As root the sandbox runs with cgroup limits; as another user it runs rootless
(a user namespace maps you to root inside; limits are skipped where no cgroup is delegated).

Exit status: the command's, 128+N when it was killed by signal N, 124 when --timeout passed,
130 when interrupted, 125 when the sandbox could not be set up, 2 for bad usage.

Examples:
  fissile-oci run --rootfs /tmp/bb -- /bin/sh -c 'echo hello from $(hostname)'
  fissile-oci run --rootfs ROOTFS --mount ./src:/var/vcap/source/pkg --cwd /var/vcap/source/pkg \\
      --env BOSH_INSTALL_TARGET=/var/vcap/packages/pkg -- bash -x ./packaging
  fissile-oci run --rootfs ROOTFS --mount /data:/data:ro --network host -- wget -qO- example.com
  fissile-oci run --rootfs ROOTFS --memory 512M --pids 256 --timeout 60 -- make -j4
  fissile-oci run --rootfs ROOTFS --scratch /tmp/changes -- sh -c 'apt-get install -y gcc'";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Root filesystem directory (e.g. an unpacked base image)
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// A base or compilation base from the work dir's store (unpacked once, then reused)
    #[arg(long, value_name = "REF", conflicts_with = "rootfs")]
    pub base: Option<String>,
    /// Run on an overlay over the rootfs: writes go to a scratch dir (default)
    #[arg(long, overrides_with = "no_overlay")]
    pub overlay: bool,
    /// Run directly on the rootfs dir: writes change it (see --read-only)
    #[arg(long, overrides_with = "overlay")]
    pub no_overlay: bool,
    /// With --no-overlay: mount the rootfs read-only
    #[arg(long, requires = "no_overlay")]
    pub read_only: bool,
    /// Keep the overlay's changes in DIR/upper (default: a temp dir, removed afterwards)
    #[arg(long, value_name = "DIR", conflicts_with = "no_overlay")]
    pub scratch: Option<PathBuf>,
    /// Bind-mount a host path; append :ro for read-only (repeatable)
    #[arg(long = "mount", value_name = "SRC:DST[:ro]", value_parser = parse_mount)]
    pub mounts: Vec<BindMount>,
    /// Set an environment variable; K alone takes the value from our environment (repeatable)
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub cwd: PathBuf,
    /// Hostname inside the sandbox
    #[arg(long, value_name = "NAME", default_value = DEFAULT_HOSTNAME)]
    pub hostname: String,
    /// User and group inside the sandbox
    #[arg(long, value_name = "UID[:GID]", default_value = "0:0", value_parser = parse_user)]
    pub user: (u32, u32),
    /// none: own network namespace with loopback only; host: the host's network
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// Memory limit, e.g. 512M or 2G (needs a usable cgroup)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Process limit; 0 for none (needs a usable cgroup)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PIDS_LIMIT)]
    pub pids: i64,
    /// Kill the whole sandbox after this many seconds (exit status 124)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Where container state is kept [default: /run/fissile-oci/sandbox as root, else
    /// $XDG_RUNTIME_DIR/fissile-oci/sandbox, or /tmp/fissile-oci-UID/sandbox]
    #[arg(long, value_name = "DIR", env = "FISSILE_OCI_RUNTIME_ROOT")]
    pub runtime_root: Option<PathBuf>,
    /// The command and its arguments
    #[arg(last = true, value_name = "CMD", required = true, num_args = 1..)]
    pub command: Vec<String>,
}

pub fn run(args: RunArgs, work_dir: Option<&Path>, printer: Printer) -> anyhow::Result<ExitCode> {
    let from_base = match &args.base {
        Some(reference) => Some(fissile_oci::base::unpack_named(
            &fissile_oci::workdir::WorkDir::resolve(work_dir)?,
            reference,
        )?),
        None => None,
    };
    if from_base.is_some() && args.no_overlay && !args.read_only {
        bail!("--base with --no-overlay needs --read-only: the unpacked base is shared and must not change");
    }
    let Some(rootfs_dir) = args.rootfs.as_ref().or(from_base.as_ref()) else {
        bail!("--rootfs DIR or --base REF is required: the root filesystem to run in");
    };
    let rootfs_dir = std::path::absolute(rootfs_dir)
        .with_context(|| format!("bad rootfs path {}", rootfs_dir.display()))?;
    if !rootfs_dir.is_dir() {
        bail!("rootfs {} is not a directory", rootfs_dir.display());
    }
    let mut temp_scratch = None;
    let rootfs = if args.no_overlay {
        RootfsSpec::Plain {
            dir: rootfs_dir,
            readonly: args.read_only,
        }
    } else {
        let scratch = match &args.scratch {
            Some(dir) => std::path::absolute(dir)
                .with_context(|| format!("bad scratch path {}", dir.display()))?,
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fissile-oci-run-")
                    .tempdir()
                    .context("failed to create a scratch dir")?;
                let path = dir.path().to_path_buf();
                temp_scratch = Some(dir);
                path
            }
        };
        RootfsSpec::Overlay {
            lower: vec![rootfs_dir],
            scratch,
        }
    };

    let mut spec = SandboxSpec::new(rootfs, args.command.clone());
    spec.mounts = args.mounts.clone();
    for mount in &mut spec.mounts {
        mount.source = std::path::absolute(&mount.source)
            .with_context(|| format!("bad mount source {}", mount.source.display()))?;
        if !mount.source.exists() {
            bail!("mount source {} does not exist", mount.source.display());
        }
    }
    spec.env = parse_env(&args.env)?;
    spec.cwd = args.cwd.clone();
    spec.hostname = args.hostname.clone();
    (spec.uid, spec.gid) = args.user;
    spec.network = args.network.into();
    spec.pids_limit = (args.pids > 0).then_some(args.pids);
    spec.memory_limit = args.memory.map(super::args::memory_limit);
    spec.timeout = args.timeout;
    spec.stdin = Input::Inherit;
    spec.stdout = Output::Inherit;
    spec.stderr = Output::Inherit;

    let runtime_root = args
        .runtime_root
        .clone()
        .unwrap_or_else(default_runtime_root);
    // /proc/self/exe survives the binary being replaced on disk while we run.
    let mut sandbox = LibcontainerSandbox::new(PathBuf::from("/proc/self/exe"), runtime_root);
    if printer.quiet {
        sandbox = sandbox.without_notice();
    }
    let result = run_forwarding_signals(&sandbox, &spec);
    if let Some(dir) = temp_scratch {
        let path = dir.path().to_path_buf();
        if let Err(err) = dir.close() {
            printer.warn(format!(
                "failed to remove scratch dir {}: {err}",
                path.display()
            ));
        }
    }
    match result {
        Ok(outcome) => {
            printer.detail(format!(
                "sandbox {} {} in {:.1} ms",
                outcome.container_id,
                outcome.status,
                outcome.wall.as_secs_f64() * 1000.0
            ));
            if outcome.oom_killed {
                printer.warn("the command was killed by the memory limit");
            }
            Ok(ExitCode::from(outcome.shell_code().clamp(0, 255) as u8))
        }
        Err(SandboxError::Interrupted { signal, .. }) => {
            Ok(ExitCode::from((128 + signal).clamp(0, 255) as u8))
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(125))
        }
    }
}

/// Runs the sandbox while INT, TERM and HUP sent to us stop the run: the helper kills and
/// removes the container (Ctrl-C reaches the helper directly too, as it shares our process
/// group).
fn run_forwarding_signals(
    sandbox: &LibcontainerSandbox,
    spec: &SandboxSpec,
) -> Result<fissile_oci::sandbox::Outcome, SandboxError> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    // Blocked before the thread starts, so every thread has them blocked and only sigwait
    // takes them; the helper is spawned with a clean mask by std.
    let _ = set.thread_block();
    // Usually single-threaded here (`--base` may have started a thread pool): then this process
    // does the helper's work itself, which saves starting one; the signals blocked above then
    // stop the run directly.
    match sandbox.run_in_this_process(spec) {
        Err(SandboxError::NotSingleThreaded { .. }) => {}
        other => return other,
    }
    let process = sandbox.spawn(spec)?;
    let stopper = process.stopper();
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            stopper.stop();
        }
    });
    process.wait()
}

fn parse_env(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some(("", _)) => bail!("--env {item:?}: empty variable name"),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => match std::env::var(item) {
                Ok(v) => Ok((item.clone(), v)),
                Err(_) => bail!("--env {item:?}: not set in our environment (use K=V)"),
            },
        })
        .collect()
}

fn parse_mount(s: &str) -> Result<BindMount, String> {
    let (rest, readonly) = match s.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (s.strip_suffix(":rw").unwrap_or(s), false),
    };
    let Some((source, destination)) = rest.split_once(':') else {
        return Err(format!("{s:?} is not SRC:DST or SRC:DST:ro"));
    };
    if source.is_empty() || !Path::new(destination).is_absolute() {
        return Err(format!(
            "{s:?}: SRC must be non-empty and DST an absolute path inside the sandbox"
        ));
    }
    Ok(BindMount {
        source: source.into(),
        destination: destination.into(),
        readonly,
    })
}

fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = s.split_once(':').unwrap_or((s, s));
    let parse = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("{s:?} is not UID[:GID]"))
    };
    Ok((parse(uid)?, parse(gid)?))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        let m = parse_mount("/a:/b:ro").unwrap();
        assert_eq!(
            (m.source, m.destination, m.readonly),
            ("/a".into(), "/b".into(), true)
        );
        assert!(!parse_mount("/a:/b").unwrap().readonly);
        assert!(parse_mount("/a").is_err());
        assert!(parse_mount("/a:rel").is_err());
    }

    #[test]
    fn users_and_timeouts_parse() {
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1:2").unwrap(), (1, 2));
        assert!(parse_user("x").is_err());
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_seconds("0").is_err());
    }
}
