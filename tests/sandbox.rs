//! Real containers through the library API, on a busybox rootfs built by the test. As root this
//! is the rootful suite (cgroup limits included); as another user it runs rootless, and tests
//! that need cgroups report themselves skipped (`common_skip`). Every run is checked for
//! leftovers: state dirs, mounts under its scratch dir, and cgroup dirs named after its container.

#![allow(clippy::disallowed_methods)]

mod common_sandbox;
mod common_skip;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common_sandbox::*;
use common_skip::{skip, skip_part};
use fissile_oci::cancel::CancelToken;
use fissile_oci::sandbox::{
    BindMount, CgroupSupport, ExitStatus, HostContext, LibcontainerSandbox, Network, Outcome,
    Output, RootfsSpec, Sandbox, SandboxError, SandboxSpec,
};

struct Env {
    tmp: tempfile::TempDir,
    rootfs: Rootfs,
    runtime_root: PathBuf,
    sandbox: LibcontainerSandbox,
    runs: AtomicUsize,
}

impl Env {
    fn new() -> Option<Env> {
        if let Some(reason) = sandbox_unavailable() {
            skip(&reason);
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = build_rootfs(&tmp.path().join("rootfs"));
        let runtime_root = tmp.path().join("runtime");
        let sandbox = LibcontainerSandbox::new(PathBuf::from(BIN), runtime_root.clone());
        Some(Env {
            tmp,
            rootfs,
            runtime_root,
            sandbox,
            runs: AtomicUsize::new(0),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `sh -c SCRIPT` on an overlay over the rootfs, output to a log file.
    fn sh(&self, script: &str) -> SandboxSpec {
        self.spec(&["/bin/sh", "-c", script])
    }

    fn spec(&self, args: &[&str]) -> SandboxSpec {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let mut spec = SandboxSpec::new(
            RootfsSpec::Overlay {
                lower: vec![self.rootfs.dir.clone()],
                scratch: self.path(&format!("scratch/{n}")),
            },
            args.iter().map(|a| a.to_string()).collect(),
        );
        let log = self.path(&format!("log-{n}"));
        spec.stdout = Output::File(log.clone());
        spec.stderr = Output::File(log);
        spec.timeout = Some(Duration::from_secs(60));
        spec
    }

    /// Runs, returns the outcome and the log, and asserts that nothing was left behind.
    fn run(&self, spec: &SandboxSpec) -> (Outcome, String) {
        let outcome = self.sandbox.run(spec, &CancelToken::new()).unwrap();
        let Output::File(log) = &spec.stdout else {
            unreachable!()
        };
        let log = std::fs::read_to_string(log).unwrap_or_default();
        self.assert_clean(Some(&outcome.container_id));
        (outcome, log)
    }

    fn assert_clean(&self, id: Option<&str>) {
        let left = leftovers(&self.runtime_root, &self.path("scratch"), id);
        assert!(left.is_empty(), "left behind: {left:#?}");
    }

    fn cgroups_usable(&self, what: &str) -> bool {
        match HostContext::detect().cgroups {
            CgroupSupport::V1 | CgroupSupport::V2 => true,
            CgroupSupport::Unavailable { reason } => {
                skip(&format!("{what}: {reason}"));
                false
            }
        }
    }
}

#[test]
fn exit_codes_signals_and_missing_commands() {
    let Some(env) = Env::new() else { return };
    let (out, _) = env.run(&env.sh("exit 0"));
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert!(out.success());
    let (out, _) = env.run(&env.sh("exit 3"));
    assert_eq!(out.status, ExitStatus::Exited(3));
    let (out, log) = env.run(&env.spec(&["no-such-command"]));
    assert_eq!(out.status, ExitStatus::Exited(127), "{log}");
    assert!(log.contains("no-such-command"), "{log}");
    if env.rootfs.has_probe {
        let (out, _) = env.run(&env.spec(&["/probe", "segv"]));
        assert_eq!(out.status, ExitStatus::Signaled(libc::SIGSEGV));
        assert_eq!(out.shell_code(), 128 + libc::SIGSEGV);
    } else {
        skip_part("signal exit: no C compiler for the probe");
    }
}

#[test]
fn readonly_mounts_are_readonly_and_readwrite_mounts_write_through() {
    let Some(env) = Env::new() else { return };
    let ro = env.path("ro-src");
    let rw = env.path("rw-src");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("input"), "from host\n").unwrap();
    let mut spec = env.sh("cat /var/vcap/packages/dep/input; \
         (echo x > /var/vcap/packages/dep/new) 2>&1 && echo RO-WRITABLE; \
         echo built > /var/vcap/packages/pkg/output");
    spec.mounts = vec![
        BindMount {
            source: ro.clone(),
            destination: "/var/vcap/packages/dep".into(),
            readonly: true,
        },
        BindMount {
            source: rw.clone(),
            destination: "/var/vcap/packages/pkg".into(),
            readonly: false,
        },
    ];
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{log}");
    assert!(log.contains("from host"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("RO-WRITABLE"), "{log}");
    assert!(!ro.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(rw.join("output")).unwrap(),
        "built\n"
    );
}

#[test]
fn env_cwd_hostname_and_user() {
    let Some(env) = Env::new() else { return };
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = env.sh("echo \"FOO=$FOO PATH=$PATH\"; pwd; hostname; id -u");
    spec.env = vec![("FOO".into(), "bar baz".into())];
    spec.cwd = "/var/vcap/source/pkg".into();
    spec.mounts = vec![BindMount {
        source: src,
        destination: "/var/vcap/source/pkg".into(),
        readonly: false,
    }];
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{log}");
    assert!(log.contains("FOO=bar baz PATH=/usr/local/sbin:"), "{log}");
    assert!(
        log.contains("\n/var/vcap/source/pkg\ncompiler\n0\n"),
        "{log}"
    );

    let host = HostContext::detect();
    if host.is_root() || host.subordinate_ranges().is_some() {
        let mut spec = env.sh("id -u; id -g; touch /tmp/mine && ls -n /tmp/mine");
        (spec.uid, spec.gid) = (1000, 1000);
        let (out, log) = env.run(&spec);
        assert!(out.success(), "{log}");
        assert!(log.starts_with("1000\n1000\n"), "{log}");
        assert!(log.contains(" 1000     1000 "), "{log}");
    } else {
        skip_part("uid 1000 inside: rootless without /etc/subuid ranges maps only uid 0");
    }
}

#[test]
fn host_processes_are_invisible() {
    let Some(env) = Env::new() else { return };
    let (out, log) = env.run(&env.sh(
        "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n; ps -o pid,args; true",
    ));
    assert!(out.success(), "{log}");
    // sh and ps (the glob may see a pid or two of ps starting).
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs <= 3, "{log}");
    assert!(!log.contains("cargo") && !log.contains("sandbox-"), "{log}");
    assert!(log.contains("    1 /bin/sh -c"), "{log}");
}

#[test]
fn capabilities_are_reduced_and_no_new_privs_is_set() {
    let Some(env) = Env::new() else { return };
    let (out, log) = env.run(&env.sh("cat /proc/self/status"));
    assert!(out.success(), "{log}");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        let value = u64::from_str_radix(&status_field(&log, field).unwrap(), 16).unwrap();
        assert_eq!(value, EXPECTED_CAPS, "{field}: {value:x}");
        // CAP_SYS_ADMIN 21, CAP_SYS_PTRACE 19, CAP_SYS_MODULE 16, CAP_NET_ADMIN 12.
        for bit in [21, 19, 16, 12] {
            assert_eq!(value & cap_bit(bit), 0, "{field} has cap {bit}");
        }
    }
    assert_eq!(status_field(&log, "CapAmb").unwrap(), "0000000000000000");
    assert_eq!(status_field(&log, "NoNewPrivs").unwrap(), "1");
    assert_eq!(status_field(&log, "Seccomp").unwrap(), "2");
}

#[test]
fn no_network_but_loopback() {
    let Some(env) = Env::new() else { return };
    let server = HostServer::start(Duration::from_secs(60));
    let port = server.port;
    let (out, log) = env.run(&env.sh(&network_script(port)));
    assert!(out.success(), "{log}");
    assert!(log.contains("host-unreachable"), "{log}");
    assert!(log.contains("loopback got: ping"), "{log}");
    assert!(
        log.contains("ifaces=lo,\n"),
        "only loopback expected: {log}"
    );
    assert_eq!(server.accepted(), 0);

    // Positive control: with the host network the same server answers.
    let mut spec = env.sh(&format!("nc -w 2 127.0.0.1 {port} </dev/null"));
    spec.network = Network::Host;
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{log}");
    assert!(log.contains("host-server"), "{log}");
    assert_eq!(server.accepted(), 1);
}

#[test]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    let Some(env) = Env::new() else { return };
    if !env.cgroups_usable("fork bomb vs pids limit") {
        return;
    }
    let mut spec = env.sh("bomb() { bomb | bomb & }; bomb 2>/dev/null; \
         i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; \
         n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n");
    spec.pids_limit = Some(64);
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{out:?} {log}");
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs <= 64, "{procs} processes with a limit of 64");
    // The host is fine: it can still start processes.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn memory_hog_is_killed_by_the_memory_limit() {
    let Some(env) = Env::new() else { return };
    if !env.cgroups_usable("memory hog vs memory limit") {
        return;
    }
    let mut spec = env.sh("x=0123456789abcdef; while true; do x=$x$x; done");
    spec.memory_limit = Some(64 << 20);
    let (out, log) = env.run(&spec);
    assert_eq!(out.status, ExitStatus::Signaled(libc::SIGKILL), "{log}");
    assert!(out.oom_killed, "{out:?}");
}

/// The devices cgroup (written by the helper itself on cgroup v1) lets a build use the usual
/// character devices and nothing else: a block device node that the rootfs brings along cannot
/// be opened, even by root with CAP_DAC_OVERRIDE. (The node sits in the overlay's lower dir: bind
/// mounts are `nodev`, which would refuse it for another reason.) Without the rule the open would
/// succeed or fail with ENXIO (no such loop device), never with EPERM.
#[test]
fn device_nodes_outside_the_allowed_set_cannot_be_opened() {
    let Some(env) = Env::new() else { return };
    if !env.cgroups_usable("device rules") {
        return;
    }
    nix::sys::stat::mknod(
        &env.rootfs.dir.join("loop0"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap();
    let script = "head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
                  head -c 1 /loop0 >/dev/null || echo loop-denied";
    // The overlay root is `nodev`: no device node on it opens at all.
    let (out, log) = env.run(&env.sh(script));
    assert!(out.success(), "{out:?} {log}");
    assert!(log.contains("4\n") && log.contains("null-ok"), "{log}");
    assert!(
        log.contains("Permission denied") && log.contains("loop-denied"),
        "{log}"
    );
    // A plain rootfs is not: there the device cgroup is what says no.
    let mut plain = env.sh(script);
    plain.rootfs = RootfsSpec::Plain {
        dir: env.rootfs.dir.clone(),
        readonly: true,
    };
    let (out, log) = env.run(&plain);
    assert!(out.success(), "{out:?} {log}");
    assert!(log.contains("4\n") && log.contains("null-ok"), "{log}");
    assert!(
        log.contains("Operation not permitted") && log.contains("loop-denied"),
        "{log}"
    );
}

#[test]
fn timeout_kills_a_process_tree_that_ignores_sigterm() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("trap '' TERM; sleep 4701 & sleep 4701");
    spec.timeout = Some(Duration::from_secs(1));
    let (out, log) = env.run(&spec);
    assert_eq!(out.status, ExitStatus::TimedOut, "{log}");
    assert_eq!(out.shell_code(), 124);
    assert!(out.wall < Duration::from_secs(30), "{:?}", out.wall);
    assert!(processes_with("sleep 4701").is_empty());
}

#[test]
fn overlay_writes_never_reach_the_lower_dir() {
    let Some(env) = Env::new() else { return };
    let before = snapshot(&env.rootfs.dir);
    let spec = env.sh(
        "echo new > /new-file; echo extra >> /etc/passwd; rm /bin/ls; \
         mkdir -p /var/vcap/data; touch /tmp/t; chmod 700 /etc",
    );
    let RootfsSpec::Overlay { scratch, .. } = &spec.rootfs else {
        unreachable!()
    };
    let upper = scratch.join("upper");
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{log}");
    assert_eq!(snapshot(&env.rootfs.dir), before, "the lower dir changed");
    assert_eq!(
        std::fs::read_to_string(upper.join("new-file")).unwrap(),
        "new\n"
    );
    assert!(std::fs::read_to_string(upper.join("etc/passwd"))
        .unwrap()
        .ends_with("extra\n"));
    // A deletion is a whiteout: a 0/0 character device.
    let whiteout = std::fs::symlink_metadata(upper.join("bin/ls")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    // Mount points were created in the upper dir, never in the lower one.
    assert!(!env.rootfs.dir.join("var").exists());
}

#[test]
fn escape_attempts_fail() {
    let Some(env) = Env::new() else { return };
    let marker = env.path("host-marker");
    std::fs::write(&marker, "host secret\n").unwrap();
    let host_pid = std::process::id();
    for (name, script, expect) in escape_scripts(&marker, host_pid) {
        let (_, log) = env.run(&env.sh(&script));
        assert!(
            log.contains(expect) && !log.contains("ALLOWED"),
            "{name}: {log}"
        );
        assert!(!log.contains("host secret"), "{name}: {log}");
    }
    if !env.rootfs.has_probe {
        skip_part("syscall-level escape probes: no C compiler (cc -static) for the probe");
        return;
    }
    for args in probe_checks(&marker, host_pid) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, log) = env.run(&env.spec(&args));
        assert!(
            out.success() && log.contains("denied"),
            "{args:?}: {out:?} {log}"
        );
    }
}

#[test]
fn an_interrupted_run_is_killed_and_cleaned_up() {
    let Some(env) = Env::new() else { return };
    let process = env.sandbox.spawn(&env.sh("sleep 4702")).unwrap();
    assert!(eventually(Duration::from_secs(30), || !processes_with(
        "sleep 4702"
    )
    .is_empty()));
    process.terminate();
    match process.wait() {
        Err(SandboxError::Interrupted { container_id, .. }) => {
            env.assert_clean(Some(&container_id))
        }
        other => panic!("expected an interrupted run, got {other:?}"),
    }
    assert!(processes_with("sleep 4702").is_empty());
}

#[test]
fn a_crashed_helper_is_cleaned_up_by_the_next_run() {
    let Some(env) = Env::new() else { return };
    let process = env.sandbox.spawn(&env.sh("sleep 4703")).unwrap();
    assert!(eventually(Duration::from_secs(30), || !processes_with(
        "sleep 4703"
    )
    .is_empty()));
    let helper = nix::unistd::Pid::from_raw(process.id() as i32);
    nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(matches!(
        process.wait(),
        Err(SandboxError::HelperDied { .. })
    ));
    // The container dies with its helper...
    assert!(eventually(Duration::from_secs(10), || processes_with(
        "sleep 4703"
    )
    .is_empty()));
    // ...but its state stays until the next run notices the dead owner.
    let stale: Vec<String> = std::fs::read_dir(env.runtime_root.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stale.len(), 1);
    let (out, _) = env.run(&env.sh("true"));
    assert!(out.success());
    env.assert_clean(Some(&stale[0]));
}

#[test]
fn plain_readonly_rootfs() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("touch /x 2>&1 || echo cannot-write; cat /etc/passwd | head -1");
    spec.rootfs = RootfsSpec::Plain {
        dir: env.rootfs.dir.clone(),
        readonly: true,
    };
    let (out, log) = env.run(&spec);
    assert!(out.success(), "{log}");
    assert!(
        log.contains("cannot-write") && log.contains("root:x:0:0"),
        "{log}"
    );
    assert!(!env.rootfs.dir.join("x").exists());
}

#[test]
fn bad_specs_are_refused_before_anything_runs() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("true");
    spec.rootfs = RootfsSpec::Overlay {
        lower: vec![env.path("missing")],
        scratch: env.path("scratch/bad"),
    };
    let err = env.sandbox.run(&spec, &CancelToken::new()).unwrap_err();
    assert_eq!(err.stage(), Some("preparing the rootfs"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    env.assert_clean(None);
}
