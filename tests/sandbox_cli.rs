//! `fissile-oci run` as a user sees it: exit codes, usage errors, stdin, scratch dirs, signals.

#![allow(clippy::disallowed_methods)]

mod common_sandbox;
mod common_skip;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common_sandbox::*;
use common_skip::{skip, skip_part};

struct CliEnv {
    tmp: tempfile::TempDir,
    rootfs: Rootfs,
    cli: Cli,
}

impl CliEnv {
    fn new() -> Option<CliEnv> {
        if let Some(reason) = sandbox_unavailable() {
            skip(&reason);
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = build_rootfs(&tmp.path().join("rootfs"));
        std::fs::create_dir(tmp.path().join("tmp")).unwrap();
        let cli = Cli {
            exe: BIN.into(),
            runtime_root: tmp.path().join("runtime"),
            tmpdir: tmp.path().join("tmp"),
            user: None,
        };
        Some(CliEnv { tmp, rootfs, cli })
    }

    fn run(&self, extra: &[&str], command: &[&str]) -> CliResult {
        let rootfs = self.rootfs.dir.to_string_lossy().into_owned();
        let mut args = vec!["--rootfs", rootfs.as_str()];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(command);
        let result = self.cli.run(&args);
        let mut left = leftovers(&self.cli.runtime_root, self.tmp.path(), None);
        left.extend(dir_entries(&self.cli.tmpdir));
        assert!(left.is_empty(), "left behind: {left:#?}");
        result
    }
}

#[test]
fn exit_statuses_follow_shell_conventions() {
    let Some(env) = CliEnv::new() else { return };
    assert_eq!(env.run(&[], &["/bin/sh", "-c", "exit 7"]).code, 7);
    assert_eq!(env.run(&[], &["true"]).code, 0);
    let r = env.run(&[], &["no-such-command"]);
    assert_eq!(r.code, 127, "{r:?}");
    let r = env.run(&["--timeout", "0.5"], &["sleep", "4731"]);
    assert_eq!(r.code, 124, "{r:?}");
    if env.rootfs.has_probe {
        assert_eq!(env.run(&[], &["/probe", "segv"]).code, 128 + libc::SIGSEGV);
    } else {
        skip_part("exit status of a signal: no C compiler for the probe");
    }
}

#[test]
fn bad_usage_exits_2_with_a_clear_message() {
    let Some(env) = CliEnv::new() else { return };
    let rootfs = env.rootfs.dir.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--", "true"], "--rootfs"),
        (
            vec!["--rootfs", "/nonexistent-rootfs", "--", "true"],
            "not a directory",
        ),
        (
            vec!["--rootfs", &rootfs, "--mount", "nodst", "--", "true"],
            "SRC:DST",
        ),
        (
            vec![
                "--rootfs",
                &rootfs,
                "--mount",
                "/nonexistent-src:/x",
                "--",
                "true",
            ],
            "does not exist",
        ),
        (
            vec!["--rootfs", &rootfs, "--network", "bridge", "--", "true"],
            "bridge",
        ),
        (
            vec!["--rootfs", &rootfs, "--memory", "lots", "--", "true"],
            "lots",
        ),
        (vec!["--rootfs", &rootfs], "CMD"),
    ];
    for (args, expect) in cases {
        let r = env.cli.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(expect), "{args:?}: {r:?}");
    }
}

#[test]
fn help_teaches_with_examples() {
    let out = std::process::Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "Examples:",
        "--mount",
        "--network",
        "--timeout",
        "124",
        "rootless",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let top = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&top.stdout).contains("__sandbox-zygote"));
}

#[test]
fn stdin_is_passed_and_scratch_keeps_the_changes() {
    let Some(env) = CliEnv::new() else { return };
    let rootfs = env.rootfs.dir.to_string_lossy().into_owned();
    let mut child = env
        .cli
        .command(&["--rootfs", &rootfs, "--", "/bin/sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");

    let scratch = env.tmp.path().join("kept");
    let scratch_arg = scratch.to_string_lossy().into_owned();
    let r = env.run(
        &["--scratch", &scratch_arg],
        &["/bin/sh", "-c", "echo kept > /result"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(scratch.join("upper/result")).unwrap(),
        "kept\n"
    );
    assert!(!env.rootfs.dir.join("result").exists());
    // A second run on the same scratch dir mounts it again (what the first overlay mount left in
    // its work dir is cleared) and sees the first run's changes.
    let r = env.run(
        &["--scratch", &scratch_arg],
        &["/bin/sh", "-c", "cat /result; echo again >> /result"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "kept\n"), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(scratch.join("upper/result")).unwrap(),
        "kept\nagain\n"
    );

    let r = env.run(
        &["--no-overlay"],
        &["/bin/sh", "-c", "echo direct > /result"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(env.rootfs.dir.join("result")).unwrap(),
        "direct\n"
    );
}

#[test]
fn sigint_stops_the_sandbox_and_exits_130() {
    let Some(env) = CliEnv::new() else { return };
    let rootfs = env.rootfs.dir.to_string_lossy().into_owned();
    let mut child = env
        .cli
        .command(&["--rootfs", &rootfs, "--", "sleep", "4732"])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || !processes_with(
        "sleep 4732"
    )
    .is_empty()));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(processes_with("sleep 4732").is_empty());
    let mut left = leftovers(&env.cli.runtime_root, env.tmp.path(), None);
    left.extend(dir_entries(&env.cli.tmpdir));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `run` does the helper's work in its own process: SIGKILLed, it takes its container along (the
/// container's init has a parent-death signal) and the next run removes the state it left.
#[test]
fn a_killed_run_takes_its_container_along_and_the_next_run_cleans_up() {
    let Some(env) = CliEnv::new() else { return };
    let rootfs = env.rootfs.dir.to_string_lossy().into_owned();
    // A scratch dir of ours: a killed `run` cannot remove a temporary one.
    let scratch = env.tmp.path().join("killed");
    let scratch = scratch.to_string_lossy().into_owned();
    let mut child = env
        .cli
        .command(&[
            "--rootfs",
            &rootfs,
            "--scratch",
            &scratch,
            "--",
            "sleep",
            "4733",
        ])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || !processes_with(
        "sleep 4733"
    )
    .is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || processes_with(
        "sleep 4733"
    )
    .is_empty()));
    let stale: Vec<String> = std::fs::read_dir(env.cli.runtime_root.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stale.len(), 1, "the killed run's state: {stale:?}");
    let r = env.run(&[], &["true"]);
    assert_eq!(r.code, 0, "{r:?}");
    let cgroups: Vec<_> = cgroup_dirs(&stale[0])
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(cgroups.is_empty(), "left behind: {cgroups:?}");
}

/// On cgroup v1 the helper hides the cgroup hierarchies from libcontainer in a private mount
/// namespace and writes the limits itself (src/sandbox/cgroup_v1.rs): the host's mounts must be
/// exactly as before, and the limits must still hold.
#[test]
fn hiding_the_cgroup_hierarchies_leaves_the_host_mounts_alone() {
    let Some(env) = CliEnv::new() else { return };
    let cgroup_mounts = || -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| line.contains(" - cgroup"))
            .map(|line| line.split(' ').nth(4).unwrap_or_default().to_string())
            .collect()
    };
    let before = cgroup_mounts();
    let r = env.run(
        &["--pids", "64", "--memory", "64M"],
        &["/bin/sh", "-c", "echo ok"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(cgroup_mounts(), before);
    // The pids limit still holds: 200 sleeping children cannot start.
    let r = env.run(
        &["--pids", "16"],
        &[
            "/bin/sh",
            "-c",
            "for i in $(seq 200); do sleep 5 & done; echo started",
        ],
    );
    assert!(r.stderr.contains("can't fork"), "{r:?}");
}

#[test]
fn libcontainers_own_events_show_with_vv_or_rust_log() {
    let Some(env) = CliEnv::new() else { return };
    let quiet = env.run(&[], &["true"]);
    assert_eq!(quiet.code, 0, "{quiet:?}");
    assert!(!quiet.stderr.contains("libcontainer"), "{quiet:?}");
    let loud = env.run(&["-vv"], &["true"]);
    assert_eq!(loud.code, 0, "{loud:?}");
    assert!(loud.stderr.contains("libcontainer"), "{loud:?}");
    let rootfs = env.rootfs.dir.to_string_lossy().into_owned();
    let out = env
        .cli
        .command(&["--rootfs", &rootfs, "--", "true"])
        .env("RUST_LOG", "libcontainer=debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("libcontainer"));
}
