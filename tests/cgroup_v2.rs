//! The cgroup v2 path, which this project's machines (cgroup v1 hybrids) never take for real:
//! the limits of the runtime spec a v2 host gets, the writes libcontainer's v2 manager makes of
//! them (run against a stand-in cgroup2 tree in a temp dir, as data), and the device rules as
//! the BPF program libcgroups builds (run in its interpreter, as any user), then attached for
//! real to a cgroup of the cgroup2 hierarchy a hybrid host mounts beside the v1 ones (as root).

#![allow(clippy::disallowed_methods)]

mod common_skip;

use std::path::{Path, PathBuf};
use std::process::Command;

use common_skip::skip;
use fissile_oci::sandbox::{
    build_runtime_spec, CgroupSupport, HostContext, RootfsSpec, SandboxSpec,
};
use libcgroups::common::{CgroupManager, ControllerOpt};
use libcgroups::v2::devices::emulator::Emulator;
use libcgroups::v2::devices::program::Program;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

fn v2_host(swap: bool) -> HostContext {
    HostContext {
        euid: 0,
        egid: 0,
        subuid: None,
        subgid: None,
        id_map_helpers: false,
        cgroups: CgroupSupport::V2,
        cgroup_swap: swap,
    }
}

fn spec(pids: Option<i64>, memory: Option<i64>) -> SandboxSpec {
    let mut spec = SandboxSpec::new(
        RootfsSpec::Overlay {
            lower: vec!["/w/rootfs".into()],
            scratch: "/w/runs/1/p/sandbox".into(),
        },
        vec!["/bin/true".into()],
    );
    spec.pids_limit = pids;
    spec.memory_limit = memory;
    spec
}

/// The `linux.resources` of the runtime spec for `spec` on a v2 host.
fn resources(spec: &SandboxSpec, swap: bool) -> LinuxResources {
    let runtime = build_runtime_spec(spec, &v2_host(swap), "c1").unwrap();
    runtime
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .clone()
        .expect("limits on a v2 host")
}

#[test]
fn a_v2_host_gets_pids_memory_with_swap_and_device_rules_in_the_spec() {
    let r = resources(&spec(Some(4096), Some(1 << 30)), true);
    assert_eq!(r.pids().as_ref().unwrap().limit(), 4096);
    let memory = r.memory().as_ref().unwrap();
    assert_eq!(memory.limit(), Some(1 << 30));
    assert_eq!(
        memory.swap(),
        Some(1 << 30),
        "memory plus swap: no swap on top of the limit"
    );
    let devices = r.devices().as_ref().unwrap();
    assert!(
        !devices[0].allow() && devices[0].typ().is_none(),
        "all denied first"
    );
    assert!(devices[1..].iter().all(LinuxDeviceCgroup::allow));

    // Where swap is not accounted, asking for it would fail every start.
    let r = resources(&spec(Some(4096), Some(1 << 30)), false);
    assert_eq!(r.memory().as_ref().unwrap().swap(), None);
    // No limits asked: devices only.
    let r = resources(&spec(None, None), true);
    assert!(r.pids().is_none() && r.memory().is_none() && r.devices().is_some());
}

/// A stand-in for a cgroup2 tree: the root's files, and the container's cgroup with the files
/// the kernel would give it (libcgroups writes without creating).
fn fake_cgroup2(root: &Path, cgroup: &str) -> PathBuf {
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    let parent = root.join("fissile-oci");
    std::fs::create_dir_all(parent.join(cgroup)).unwrap();
    std::fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
    let dir = parent.join(cgroup);
    for file in [
        "cgroup.procs",
        "pids.max",
        "memory.max",
        "memory.swap.max",
        "memory.low",
    ] {
        std::fs::write(dir.join(file), "").unwrap();
    }
    dir
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn libcontainers_v2_manager_writes_our_limits_and_applies_device_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fake_cgroup2(tmp.path(), "c1");
    let resources = resources(&spec(Some(4096), Some(1 << 30)), true);
    let manager =
        libcgroups::v2::manager::Manager::new(tmp.path().to_path_buf(), "/fissile-oci/c1".into())
            .unwrap();
    manager.add_task(nix::unistd::Pid::from_raw(4242)).unwrap();
    assert_eq!(read(dir.join("cgroup.procs")), "4242");
    let applied = manager.apply(&ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    });
    assert_eq!(read(dir.join("pids.max")), "4096");
    assert_eq!(read(dir.join("memory.max")), (1u64 << 30).to_string());
    // The spec's swap is memory plus swap (v1's meaning) set to the limit, so no swap on top;
    // libcgroups 0.7 turns that into `memory.swap.max` = limit - limit = 0 and skips a 0
    // (`Memory::set`): the file is left as the kernel made it ("max"), and on a v2 host with
    // swap a package may swap beyond --memory (README, "Sandboxes"). Should a libcgroups
    // upgrade write it, this fails and the README line goes.
    assert_eq!(
        read(dir.join("memory.swap.max")),
        "",
        "libcgroups 0.7 does not write a zero swap limit"
    );
    // The device rules come last, as a BPF program attached to the cgroup's directory: a plain
    // temp dir is no cgroup, so that step fails here. Without libcgroups' cgroupsv2_devices it
    // would have been skipped without a word, and the rules never enforced.
    match applied {
        Err(libcgroups::v2::manager::V2ManagerError::DevicesController(_)) => {}
        other => panic!("expected the device step to run (and fail on a temp dir): {other:?}"),
    }
}

/// The BPF program for our device rules, as libcgroups builds it (without the defaults it
/// adds, which are ours plus /dev/net/tun).
fn program() -> Program {
    let resources = resources(&spec(None, None), true);
    let mut emulator = Emulator::with_default_allow(false);
    for rule in resources.devices().as_ref().unwrap() {
        emulator.add_rule(rule);
    }
    Program::from_rules(&emulator.rules, emulator.default_allow).unwrap()
}

#[test]
fn the_device_program_allows_the_build_nodes_and_nothing_else() {
    let program = program();
    let allowed = |typ, major, minor, access: &str| {
        program
            .execute(typ, major, minor, access.to_string())
            .unwrap()
            == 1
    };
    use LinuxDeviceType::{B, C};
    for (major, minor, what) in [
        (1, 3, "null"),
        (1, 5, "zero"),
        (1, 9, "urandom"),
        (5, 2, "ptmx"),
        (136, 7, "pty"),
    ] {
        assert!(allowed(C, major, minor, "rw"), "{what}");
    }
    assert!(
        allowed(C, 4, 1, "m"),
        "making nodes is left to capabilities"
    );
    assert!(allowed(B, 8, 0, "m"));
    for (typ, major, minor, what) in [
        (B, 8, 0, "sda"),
        (B, 7, 0, "loop0"),
        (B, 259, 0, "nvme0n1"),
        (C, 1, 1, "mem"),
        (C, 10, 200, "tun"),
        (C, 4, 1, "tty1"),
    ] {
        assert!(!allowed(typ, major, minor, "r"), "{what} read");
        assert!(!allowed(typ, major, minor, "w"), "{what} written");
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has `cap` in its effective set (`CapEff` of /proc/self/status).
fn has_effective_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap();
    u64::from_str_radix(hex, 16).unwrap() & (1 << cap) != 0
}

/// A cgroup of the host's cgroup2 hierarchy we may make: `/sys/fs/cgroup` on a v2 host, the
/// hierarchy mounted beside the v1 ones on a hybrid host.
fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next() != Some("cgroup2") {
            return None;
        }
        before.split(' ').nth(4).map(PathBuf::from)
    })
}

#[test]
fn the_device_rules_are_enforced_by_the_kernel_on_a_cgroup2_cgroup() {
    if !nix::unistd::geteuid().is_root() {
        skip("attaching a BPF device program needs root");
        return;
    }
    let Some(root) = cgroup2_root() else {
        skip("no cgroup2 hierarchy is mounted");
        return;
    };
    if !has_effective_capability(CAP_SYS_RESOURCE) {
        // libcgroups raises RLIMIT_MEMLOCK to infinity before it loads the program and fails
        // when it cannot (`Bpf(FailedToIncreaseRLimit)`), even on kernels that no longer
        // count BPF memory against it.
        skip("attaching the device program needs CAP_SYS_RESOURCE (libcgroups raises RLIMIT_MEMLOCK first), which this root lacks");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A block device node on a filesystem that allows nodes: only the cgroup can refuse it.
    let node = tmp.path().join("loop0");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap();
    let cgroup = root.join(format!("fissile-oci-test-devices-{}", std::process::id()));
    std::fs::create_dir(&cgroup).unwrap();
    let resources = resources(&spec(None, None), true);
    let applied =
        libcgroups::v2::devices::controller::Devices::apply_devices(&cgroup, resources.devices());
    // The shell moves itself in; what it runs inherits the cgroup.
    let out = applied.as_ref().ok().map(|()| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {procs}; \
                 head -c 1 /dev/zero >/dev/null && echo zero-ok; \
                 echo x > /dev/null && echo null-ok; \
                 head -c 1 {node} 2>&1 >/dev/null | grep -q 'Operation not permitted' \
                   && echo loop-denied",
                procs = cgroup.join("cgroup.procs").display(),
                node = node.display()
            ))
            .output()
            .unwrap()
    });
    // The shell has exited: the cgroup is empty and goes (with its program).
    let removed = std::fs::remove_dir(&cgroup);
    applied.unwrap();
    removed.unwrap();
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("zero-ok") && stdout.contains("null-ok") && stdout.contains("loop-denied"),
        "{stdout}"
    );
    // The same read outside the cgroup works: it was the program that said no.
    let outside = Command::new("head")
        .args(["-c", "1"])
        .arg(&node)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&outside.stderr);
    assert!(
        !err.contains("Operation not permitted"),
        "outside the cgroup the node opens (or fails otherwise): {err}"
    );
}
