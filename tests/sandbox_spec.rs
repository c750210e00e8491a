//! The OCI runtime spec of a sandbox, checked as data: no root, no containers.

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Duration;

use fissile_oci::sandbox::{
    build_runtime_spec, BindMount, CgroupSupport, CopyOnWriteMount, HostContext, IdRange,
    RootfsSpec, SandboxSpec, ScratchSpace, SpecError,
};
use fissile_oci::sandbox::{inherit_network_namespace, rootless_id_maps};
use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::Value;

fn root_host() -> HostContext {
    HostContext {
        euid: 0,
        egid: 0,
        subuid: None,
        subgid: None,
        id_map_helpers: true,
        cgroups: CgroupSupport::V2,
        cgroup_swap: true,
    }
}

fn rootless_host(ranges: bool) -> HostContext {
    let range = ranges.then_some(IdRange {
        start: 100000,
        count: 65536,
    });
    HostContext {
        euid: 1000,
        egid: 1001,
        subuid: range,
        subgid: range,
        id_map_helpers: true,
        cgroups: CgroupSupport::Unavailable {
            reason: "rootless on cgroup v1".into(),
        },
        cgroup_swap: false,
    }
}

fn compile_spec() -> SandboxSpec {
    let mut spec = SandboxSpec::new(
        RootfsSpec::Overlay {
            lower: vec!["/work/rootfs/sha256-abc".into()],
            scratch: "/work/runs/1/pkg".into(),
        },
        vec!["bash".into(), "./packaging".into()],
    );
    spec.cwd = "/var/vcap/source/pkg".into();
    spec.env = vec![(
        "BOSH_INSTALL_TARGET".into(),
        "/var/vcap/packages/pkg".into(),
    )];
    spec.mounts = vec![
        BindMount {
            source: "/work/packages/key-pkg".into(),
            destination: "/var/vcap/packages/pkg".into(),
            readonly: false,
        },
        BindMount {
            source: "/work/src/pkg".into(),
            destination: "/var/vcap/source/pkg".into(),
            readonly: false,
        },
        BindMount {
            source: "/work/packages/key-dep".into(),
            destination: "/var/vcap/packages/dep".into(),
            readonly: true,
        },
        BindMount {
            source: "/work/cache".into(),
            destination: "/var".into(),
            readonly: true,
        },
    ];
    spec.memory_limit = Some(1 << 30);
    spec.timeout = Some(Duration::from_secs(600));
    spec
}

fn json(spec: &Spec) -> Value {
    serde_json::to_value(spec).unwrap()
}

fn namespaces(spec: &Spec) -> Vec<LinuxNamespaceType> {
    let linux = spec.linux().as_ref().unwrap();
    linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect()
}

fn mount_destinations(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

#[test]
fn namespaces_isolate_everything_but_the_user_by_default() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    use LinuxNamespaceType::*;
    assert_eq!(
        namespaces(&spec),
        vec![Pid, Mount, Uts, Ipc, Cgroup, Network]
    );
    let mut host_net = compile_spec();
    host_net.network = fissile_oci::sandbox::Network::Host;
    let spec = build_runtime_spec(&host_net, &root_host(), "c1").unwrap();
    assert!(!namespaces(&spec).contains(&Network));
    // Rootless, the helper's own user namespace is shared: no `user` entry is asked of the runtime.
    let spec = build_runtime_spec(&compile_spec(), &rootless_host(true), "c1").unwrap();
    assert!(!namespaces(&spec).contains(&User));
    assert_eq!(spec.hostname().as_deref(), Some("compiler"));
}

#[test]
fn process_has_reduced_capabilities_no_new_privs_and_no_rlimits() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.no_new_privileges(), Some(true));
    assert!(
        process.rlimits().is_none(),
        "rlimits must not exceed the caller's: set none"
    );
    let caps = process.capabilities().as_ref().unwrap();
    let effective = caps.effective().as_ref().unwrap();
    for kept in [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Setuid,
        Capability::SysChroot,
    ] {
        assert!(effective.contains(&kept), "{kept}");
    }
    for dropped in [
        Capability::SysAdmin,
        Capability::SysPtrace,
        Capability::SysModule,
        Capability::NetAdmin,
        Capability::SysRawio,
        Capability::SysBoot,
        Capability::SysTime,
        Capability::Mknod,
    ] {
        for set in [caps.effective(), caps.bounding(), caps.permitted()] {
            assert!(!set.as_ref().unwrap().contains(&dropped), "{dropped}");
        }
    }
    assert_eq!(process.cwd(), Path::new("/var/vcap/source/pkg"));
    let env = process.env().as_ref().unwrap();
    assert!(env.contains(&"BOSH_INSTALL_TARGET=/var/vcap/packages/pkg".to_string()));
    assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin:")));
    assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
}

#[test]
fn proc_and_sys_are_masked_and_read_only_where_they_leak() {
    let value = json(&build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap());
    let list = |key: &str| -> Vec<String> {
        value["linux"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let masked = list("maskedPaths");
    for path in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/sys/firmware",
    ] {
        assert!(masked.contains(&path.to_string()), "{path} not masked");
    }
    let readonly = list("readonlyPaths");
    for path in ["/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/irq"] {
        assert!(readonly.contains(&path.to_string()), "{path} not read-only");
    }
}

/// The profile is compiled once and installed by the container's init right before `exec`
/// (src/sandbox/seccomp.rs), so the runtime spec carries none: libcontainer would compile it
/// again in every container.
#[test]
fn seccomp_denies_dangerous_syscalls_with_eperm() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    let seccomp = &fissile_oci::sandbox::seccomp_profile();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    let denied: Vec<&str> = seccomp
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActErrno && r.args().is_none())
        .filter(|r| r.errno_ret() == Some(libc::EPERM as u32))
        .flat_map(|r| r.names().iter().map(String::as_str))
        .collect();
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "ptrace",
        "reboot",
        "swapon",
        "swapoff",
        "bpf",
        "perf_event_open",
        "add_key",
        "keyctl",
        "request_key",
        "setns",
        "open_by_handle_at",
        "userfaultfd",
    ] {
        assert!(denied.contains(&name), "{name} not denied");
    }
    // unshare/clone are denied only when they ask for a namespace.
    let conditional = seccomp
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.names().iter().any(|n| n == "unshare") && r.args().is_some())
        .count();
    assert!(conditional >= 7);
}

#[test]
fn limits_only_where_libcontainer_enforces_them_and_always_a_unique_cgroup_path() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    let value = json(&spec);
    assert_eq!(value["linux"]["cgroupsPath"], "/fissile-oci/c1");
    assert_eq!(value["linux"]["resources"]["pids"]["limit"], 4096);
    assert_eq!(value["linux"]["resources"]["memory"]["limit"], 1 << 30);
    assert_eq!(value["linux"]["resources"]["devices"][0]["allow"], false);

    let rootless = build_runtime_spec(&compile_spec(), &rootless_host(false), "c2").unwrap();
    let value = json(&rootless);
    assert!(value["linux"].get("resources").is_none_or(Value::is_null));
    assert_eq!(value["linux"]["cgroupsPath"], "/fissile-oci/c2");

    // On cgroup v1 the helper writes the limits itself (src/sandbox/cgroup_v1.rs): resources in
    // the spec would make libcontainer look for hierarchies it is not shown.
    let v1_host = HostContext {
        cgroups: CgroupSupport::V1,
        ..root_host()
    };
    let v1 = build_runtime_spec(&compile_spec(), &v1_host, "c3").unwrap();
    let value = json(&v1);
    assert!(value["linux"].get("resources").is_none_or(Value::is_null));
    assert_eq!(value["linux"]["cgroupsPath"], "/fissile-oci/c3");
}

#[test]
fn mounts_overlay_first_standard_mounts_then_binds_parents_first() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    assert_eq!(
        mount_destinations(&spec),
        vec![
            "/",
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/var",
            "/var/vcap/packages/pkg",
            "/var/vcap/source/pkg",
            "/var/vcap/packages/dep",
        ]
    );
    let mounts = spec.mounts().as_ref().unwrap();
    let overlay = &mounts[0];
    assert_eq!(overlay.typ().as_deref(), Some("overlay"));
    let options = overlay.options().as_ref().unwrap();
    assert!(options.contains(&"lowerdir=/work/rootfs/sha256-abc".to_string()));
    assert!(options.contains(&"upperdir=/work/runs/1/pkg/upper".to_string()));
    assert!(options.contains(&"workdir=/work/runs/1/pkg/work".to_string()));
    assert!(!options.contains(&"userxattr".to_string()));
    assert!(
        options.contains(&"volatile".to_string()),
        "no syncfs of the host disk per run"
    );
    assert!(
        options.contains(&"nodev".to_string()) && options.contains(&"nosuid".to_string()),
        "no device node or set-uid program of the lower dirs works"
    );
    assert_eq!(
        spec.root().as_ref().unwrap().path(),
        Path::new("/work/runs/1/pkg/merged")
    );
    let sys = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(sys.typ().as_deref(), Some("sysfs"));
    let dep = mounts.last().unwrap();
    assert_eq!(dep.typ().as_deref(), Some("bind"));
    assert!(dep.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert!(
        !mount_destinations(&spec).contains(&"/tmp".to_string()),
        "/tmp lives in the overlay"
    );

    let rootless = build_runtime_spec(&compile_spec(), &rootless_host(false), "c1").unwrap();
    let mounts = rootless.mounts().as_ref().unwrap();
    assert!(mounts[0]
        .options()
        .as_ref()
        .unwrap()
        .contains(&"userxattr".to_string()));
    let sys = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys
        .options()
        .as_ref()
        .unwrap()
        .contains(&"rbind".to_string()));
    let pts = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/dev/pts"))
        .unwrap();
    assert!(!pts
        .options()
        .as_ref()
        .unwrap()
        .contains(&"gid=5".to_string()));
}

#[test]
fn plain_rootfs_is_used_as_is() {
    let mut spec = compile_spec();
    spec.rootfs = RootfsSpec::Plain {
        dir: "/srv/rootfs".into(),
        readonly: true,
    };
    let built = build_runtime_spec(&spec, &root_host(), "c1").unwrap();
    let root = built.root().as_ref().unwrap();
    assert_eq!(
        (root.path().as_path(), root.readonly()),
        (Path::new("/srv/rootfs"), Some(true))
    );
    assert_eq!(mount_destinations(&built)[0], "/proc");
}

#[test]
fn rootless_id_maps_map_the_caller_to_root_and_ranges_above() {
    let (uids, gids) = rootless_id_maps(&rootless_host(true));
    let triples = |maps: &[oci_spec::runtime::LinuxIdMapping]| -> Vec<(u32, u32, u32)> {
        maps.iter()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    assert_eq!(triples(&uids), vec![(0, 1000, 1), (1, 100000, 65535)]);
    assert_eq!(triples(&gids), vec![(0, 1001, 1), (1, 100000, 65535)]);
    let (uids, _) = rootless_id_maps(&rootless_host(false));
    assert_eq!(triples(&uids), vec![(0, 1000, 1)]);
    let mut no_helpers = rootless_host(true);
    no_helpers.id_map_helpers = false;
    assert_eq!(rootless_id_maps(&no_helpers).0.len(), 1);

    // Only mapped ids can be used inside.
    let mut spec = compile_spec();
    (spec.uid, spec.gid) = (1000, 1000);
    assert!(build_runtime_spec(&spec, &rootless_host(true), "c1").is_ok());
    assert!(matches!(
        build_runtime_spec(&spec, &rootless_host(false), "c1"),
        Err(SpecError::UnmappedId { uid: 1000, .. })
    ));
}

#[test]
fn the_network_namespace_can_be_inherited_from_the_helper() {
    let types = |spec: &oci_spec::runtime::Spec| -> Vec<String> {
        json(spec)["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    };
    let mut spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    assert!(types(&spec).contains(&"network".to_string()));
    inherit_network_namespace(&mut spec);
    let left = types(&spec);
    assert!(!left.contains(&"network".to_string()), "{left:?}");
    assert!(left.contains(&"pid".to_string()) && left.contains(&"mount".to_string()));
}

#[test]
fn bad_specs_are_refused() {
    let refuse = |change: &dyn Fn(&mut SandboxSpec)| {
        let mut spec = compile_spec();
        change(&mut spec);
        build_runtime_spec(&spec, &root_host(), "c1").unwrap_err()
    };
    assert!(matches!(refuse(&|s| s.args.clear()), SpecError::NoCommand));
    assert!(matches!(
        refuse(&|s| s.tty = true),
        SpecError::TtyUnsupported
    ));
    assert!(matches!(
        refuse(&|s| s.cwd = "relative".into()),
        SpecError::RelativePath { .. }
    ));
    assert!(matches!(
        refuse(&|s| s.rootfs = RootfsSpec::Overlay {
            lower: vec![],
            scratch: "/s".into()
        }),
        SpecError::NoLowerDir
    ));
    let err = refuse(&|s| {
        s.rootfs = RootfsSpec::Overlay {
            lower: vec!["/a:b".into()],
            scratch: "/s".into(),
        }
    });
    assert!(err.to_string().contains("/a:b"), "{err}");
    let cow = |source: &str, destination: &str| CopyOnWriteMount {
        source: source.into(),
        destination: destination.into(),
    };
    let err = refuse(&|s| s.cow_mounts = vec![cow("/src,x", "/d")]);
    assert!(err.to_string().contains("/src,x"), "{err}");
    assert!(matches!(
        refuse(&|s| s.cow_mounts = vec![cow("/src", "rel")]),
        SpecError::RelativePath { .. }
    ));
    assert!(matches!(
        refuse(&|s| {
            s.cow_mounts = vec![cow("/src", "/d")];
            s.rootfs = RootfsSpec::Plain {
                dir: "/r".into(),
                readonly: true,
            };
        }),
        SpecError::CowWithoutOverlay
    ));
}

#[test]
fn changes_go_to_the_runs_tmpfs_and_sources_are_copy_on_write_overlays() {
    let mut spec = compile_spec();
    spec.mounts
        .retain(|m| m.destination != Path::new("/var/vcap/source/pkg"));
    spec.cow_mounts = vec![CopyOnWriteMount {
        source: "/work/runs/1/src".into(),
        destination: "/var/vcap/source/pkg".into(),
    }];
    let options = |spec: &Spec, dest: &str| -> Vec<String> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount on {dest}"))
            .options()
            .clone()
            .unwrap()
    };
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let on_disk = build_runtime_spec(&spec, &root_host(), "c1").unwrap();
    assert_eq!(
        options(&on_disk, "/var/vcap/source/pkg"),
        strings(&[
            "lowerdir=/work/runs/1/src",
            "upperdir=/work/runs/1/pkg/cow/0/upper",
            "workdir=/work/runs/1/pkg/cow/0/work",
            "volatile",
            "nodev",
            "nosuid",
        ])
    );
    // Parents first, the copy-on-write mount among the binds.
    assert_eq!(
        &mount_destinations(&on_disk)[7..],
        [
            "/var",
            "/var/vcap/packages/pkg",
            "/var/vcap/packages/dep",
            "/var/vcap/source/pkg"
        ]
    );

    spec.scratch_space = ScratchSpace::Tmpfs { size: 1 << 30 };
    let on_tmpfs = build_runtime_spec(&spec, &root_host(), "c1").unwrap();
    let root = options(&on_tmpfs, "/");
    assert!(root.contains(&"upperdir=/work/runs/1/pkg/tmpfs/upper".to_string()));
    assert!(root.contains(&"workdir=/work/runs/1/pkg/tmpfs/work".to_string()));
    let source = options(&on_tmpfs, "/var/vcap/source/pkg");
    assert!(source.contains(&"upperdir=/work/runs/1/pkg/tmpfs/cow/0/upper".to_string()));
    assert_eq!(
        on_tmpfs.root().as_ref().unwrap().path(),
        Path::new("/work/runs/1/pkg/merged"),
        "the mount point stays on disk"
    );

    let rootless = build_runtime_spec(&spec, &rootless_host(false), "c1").unwrap();
    assert!(options(&rootless, "/var/vcap/source/pkg").contains(&"userxattr".to_string()));
}

#[test]
fn the_spec_saves_as_a_runtime_config() {
    let spec = build_runtime_spec(&compile_spec(), &root_host(), "c1").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    spec.save(&path).unwrap();
    let loaded = Spec::load(&path).unwrap();
    assert_eq!(loaded, spec);
    assert!(loaded.version().starts_with("1."));
}
