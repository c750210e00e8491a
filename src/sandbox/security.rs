//! The security profile of every sandbox: kept capabilities, masked and read-only /proc and
//! /sys paths, and the seccomp deny-list. Package builds need to own, chmod and chown files as
//! root inside; they never need to mount, trace, load modules or reach the kernel's keyrings.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Docker's default set minus CAP_MKNOD, CAP_NET_RAW and CAP_SETFCAP (no device nodes, no raw
/// sockets, no file capabilities, which `no_new_privileges` would ignore anyway). Notably absent:
/// CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_NET_ADMIN, CAP_SYS_RAWIO, CAP_SYS_BOOT,
/// CAP_SYS_TIME, CAP_DAC_READ_SEARCH.
pub const KEPT_CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::AuditWrite,
];

/// The process capabilities: the kept set bounding, permitted and effective; nothing inheritable
/// or ambient (a non-root uid inside ends with none, as with docker).
pub fn capabilities() -> LinuxCapabilities {
    let kept: Capabilities = KEPT_CAPABILITIES.into_iter().collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(kept.clone()))
        .set_permitted(Some(kept.clone()))
        .set_effective(Some(kept))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    caps
}

/// One rule of the device cgroup: which nodes (`None` for any major or minor number) may be
/// used how (`r`ead, `w`rite, `m`knod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub block: bool,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: &'static str,
}

const fn char_dev(major: Option<i64>, minor: Option<i64>, access: &'static str) -> DeviceRule {
    DeviceRule {
        block: false,
        major,
        minor,
        access,
    }
}

/// The device nodes a container may use, all others denied (host disks included, even when
/// bind-mounted in): making nodes of any kind (it has no CAP_MKNOD anyway), and null, zero,
/// full, random, urandom, tty, console, ptmx and the pty slaves. The same rules on cgroup v1
/// (written by the helper) and v2 (a BPF program libcontainer attaches, to which libcgroups adds
/// its defaults: these, plus /dev/net/tun).
pub const ALLOWED_DEVICES: [DeviceRule; 11] = [
    char_dev(None, None, "m"),
    DeviceRule {
        block: true,
        major: None,
        minor: None,
        access: "m",
    },
    char_dev(Some(1), Some(3), "rwm"),
    char_dev(Some(1), Some(5), "rwm"),
    char_dev(Some(1), Some(7), "rwm"),
    char_dev(Some(1), Some(8), "rwm"),
    char_dev(Some(1), Some(9), "rwm"),
    char_dev(Some(5), Some(0), "rwm"),
    char_dev(Some(5), Some(1), "rwm"),
    char_dev(Some(5), Some(2), "rwm"),
    char_dev(Some(136), None, "rwm"),
];

impl DeviceRule {
    /// As cgroup v1's `devices.allow` takes it: `c 1:3 rwm`, `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let number = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            if self.block { 'b' } else { 'c' },
            number(self.major),
            number(self.minor),
            self.access
        )
    }

    /// As the runtime spec takes it (`linux.resources.devices`), allowed.
    pub fn allowed(&self) -> LinuxDeviceCgroup {
        let mut builder = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(if self.block {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            })
            .access(self.access);
        if let Some(major) = self.major {
            builder = builder.major(major);
        }
        if let Some(minor) = self.minor {
            builder = builder.minor(minor);
        }
        builder.build().expect("every device rule field is set")
    }
}

/// The device rules of the runtime spec: everything denied, then [`ALLOWED_DEVICES`].
pub fn device_rules() -> Vec<LinuxDeviceCgroup> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .expect("every device rule field is set");
    std::iter::once(deny_all)
        .chain(ALLOWED_DEVICES.iter().map(DeviceRule::allowed))
        .collect()
}

/// Hidden behind /dev/null (files) or an empty read-only tmpfs (dirs); runc's defaults plus
/// powercap (energy counters, CVE-2020-8694).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Bind-mounted read-only over themselves: no sysctl writes, no sysrq.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls that fail with EPERM: mounting, namespace games, kernel modules and kexec, tracing
/// other processes, keyrings, BPF and perf, clock and swap changes, io_uring (docker blocks it
/// too: a large kernel attack surface that builds do not need).
pub const DENIED_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "setns",
    "open_by_handle_at",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "reboot",
    "swapon",
    "swapoff",
    "bpf",
    "perf_event_open",
    "add_key",
    "keyctl",
    "request_key",
    "userfaultfd",
    "acct",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
    "uselib",
    "nfsservctl",
    "_sysctl",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// CLONE_NEW* flags: new mount, cgroup, uts, ipc, user, pid and net namespaces.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];
/// CLONE_NEWTIME: only meaningful to unshare (for clone it overlaps the exit-signal byte).
const CLONE_NEWTIME: u64 = 0x80;

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// Default allow, deny-list above with EPERM, plus: `clone`/`unshare` asking for a namespace
/// fail with EPERM (checked one flag per rule, because a masked compare tests equality), and
/// `clone3`, whose flags live in memory seccomp cannot read, fails with ENOSYS so that libc
/// falls back to `clone`.
pub fn seccomp_profile() -> LinuxSeccomp {
    let mut syscalls = vec![
        syscall_rule(DENIED_SYSCALLS, EPERM, None),
        syscall_rule(&["clone3"], ENOSYS, None),
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(syscall_rule(
            &["clone", "unshare"],
            EPERM,
            Some(flag_set(flag)),
        ));
    }
    syscalls.push(syscall_rule(
        &["unshare"],
        EPERM,
        Some(flag_set(CLONE_NEWTIME)),
    ));

    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(Some(architectures()))
        .set_syscalls(Some(syscalls));
    seccomp
}

/// Filter the compat ABIs too, so a 32-bit binary meets the same rules instead of being killed.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// `(arg0 & flag) == flag`. Mask and datum are both `flag`, so the rule reads the same whichever
/// of `value`/`valueTwo` a runtime takes as the mask (runtimes disagree).
fn flag_set(flag: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(flag)
        .value_two(flag)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("all seccomp arg fields are set")
}

fn syscall_rule(names: &[&str], errno: u32, arg: Option<LinuxSeccompArg>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(errno))
        .set_args(arg.map(|a| vec![a]));
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_capabilities_are_not_kept() {
        let caps = capabilities();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.as_ref().unwrap();
            assert_eq!(set.len(), KEPT_CAPABILITIES.len());
            for cap in [
                Capability::SysAdmin,
                Capability::SysPtrace,
                Capability::SysModule,
                Capability::NetAdmin,
                Capability::SysRawio,
                Capability::SysBoot,
                Capability::SysTime,
                Capability::Mknod,
                Capability::DacReadSearch,
            ] {
                assert!(!set.contains(&cap), "{cap} is kept");
            }
        }
        assert!(caps.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn device_rules_read_the_same_on_v1_and_v2() {
        let lines: Vec<String> = ALLOWED_DEVICES.iter().map(DeviceRule::v1_line).collect();
        assert_eq!(lines[0], "c *:* m");
        assert_eq!(lines[1], "b *:* m");
        assert_eq!(lines[2], "c 1:3 rwm");
        assert_eq!(lines[10], "c 136:* rwm");
        let rules = device_rules();
        assert_eq!(rules.len(), ALLOWED_DEVICES.len() + 1);
        assert!(!rules[0].allow());
        assert_eq!(
            rules[0].typ(),
            None,
            "the first rule denies every kind of node"
        );
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        let null = &rules[3];
        assert!(null.allow());
        assert_eq!(null.typ(), Some(LinuxDeviceType::C));
        assert_eq!((null.major(), null.minor()), (Some(1), Some(3)));
        assert_eq!((rules[11].major(), rules[11].minor()), (Some(136), None));
    }

    #[test]
    fn seccomp_denies_with_eperm_and_allows_by_default() {
        let profile = seccomp_profile();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rules = profile.syscalls().as_ref().unwrap();
        let denied = &rules[0];
        assert_eq!(denied.errno_ret(), Some(EPERM));
        for name in ["mount", "ptrace", "finit_module", "keyctl", "bpf", "setns"] {
            assert!(denied.names().iter().any(|n| n == name), "{name}");
        }
        let ns_rules = rules
            .iter()
            .filter(|r| r.names().iter().any(|n| n == "unshare"))
            .count();
        assert_eq!(ns_rules, CLONE_NAMESPACE_FLAGS.len() + 1);
    }
}
