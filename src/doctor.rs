//! `fissile-oci doctor`: what this host needs to compile, checked one by one, each problem with
//! its fix. A failed check means compiles cannot run here; a warning means something works
//! less well (no limits, a slower runtime dir) or only some bases can be built.

use std::path::Path;

use serde::Serialize;

use crate::rootless::check::{self, Needs, Problem};
use crate::sandbox::{
    check_private, default_runtime_root, v2_device_rules_problem, CgroupSupport, HostContext,
    V2_DEVICE_RULES_FIX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, for a compile in `work_dir`.
pub fn examine(work_dir: &Path) -> Vec<Check> {
    let host = HostContext::detect();
    let rootless = host.euid != 0;
    let mut checks = vec![proc_mounted()];
    checks.push(if rootless {
        Check::ok(
            "user",
            format!(
                "uid {}: sandboxes run rootless, in a user namespace",
                host.euid
            ),
        )
    } else {
        Check::ok("user", "root: sandboxes run with cgroup limits")
    });
    if rootless {
        checks.extend(rootless_needs(&host));
    }
    checks.push(cgroups(&host, rootless));
    checks.push(overlayfs(rootless));
    checks.push(seccomp());
    checks.push(mmdebstrap());
    checks.extend(work_dir_space(work_dir));
    checks.push(runtime_dir());
    checks
}

/// Compiles can run when nothing failed.
pub fn ready(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

fn proc_mounted() -> Check {
    if Path::new("/proc/self/exe").exists() {
        Check::ok("proc", "/proc is mounted")
    } else {
        Check::fail(
            "proc",
            "/proc is not mounted: sandbox helpers start through /proc/self/exe",
            "mount proc on /proc",
        )
    }
}

/// What a rootless run needs: a user namespace (without one nothing runs), then subordinate
/// ids and the tools that map them (without them only one id is mapped: a busybox base
/// works, a Debian base cannot be built). The same checks `base build` and `compile` make up
/// front.
fn rootless_needs(host: &HostContext) -> [Check; 2] {
    let joined = |problems: &[Problem]| {
        (
            problems
                .iter()
                .map(|p| p.what.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            problems
                .iter()
                .map(|p| p.fix.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    let fatal = check::problems(host, Needs::default());
    let userns = if fatal.is_empty() {
        Check::ok(
            "user namespaces",
            "an unprivileged user namespace can be made",
        )
    } else {
        let (what, fix) = joined(&fatal);
        Check::fail("user namespaces", what, fix)
    };
    let optional: Vec<Problem> = check::problems(
        host,
        Needs {
            subordinate_ids: true,
            mmdebstrap: false,
        },
    )
    .into_iter()
    .filter(|p| !fatal.contains(p))
    .collect();
    let ids = match (&host.subuid, &host.subgid) {
        (Some(u), Some(g)) if optional.is_empty() => Check::ok(
            "subordinate ids",
            format!(
                "/etc/subuid {}:{} and /etc/subgid {}:{}, mapped with newuidmap and newgidmap",
                u.start, u.count, g.start, g.count
            ),
        ),
        _ => {
            let (what, fix) = joined(&optional);
            Check::warn(
                "subordinate ids",
                format!("{what}: only one id can be mapped (a busybox base works, a Debian base cannot be built)"),
                fix,
            )
        }
    };
    [userns, ids]
}

fn cgroups(host: &HostContext, rootless: bool) -> Check {
    const NAME: &str = "cgroups";
    match &host.cgroups {
        CgroupSupport::V1 => Check::ok(NAME, "cgroup v1: pids and memory limits are enforced"),
        CgroupSupport::V2 if !rootless => match v2_device_rules_problem() {
            None => Check::ok(
                NAME,
                "cgroup v2: pids, memory and device rules are enforced",
            ),
            Some(problem) => Check::fail(NAME, problem, V2_DEVICE_RULES_FIX),
        },
        CgroupSupport::V2 => Check::ok(NAME, "cgroup v2: pids and memory limits are enforced"),
        CgroupSupport::Unavailable { reason } => Check::warn(
            NAME,
            format!("{reason}: pids and memory limits are not enforced"),
            if rootless {
                "run as root, or on a cgroup v2 host with a delegated cgroup (systemd-run --user --scope -p Delegate=yes ...)"
            } else {
                "mount the cgroup hierarchies (cgroup v2 at /sys/fs/cgroup)"
            },
        ),
    }
}

fn overlayfs(rootless: bool) -> Check {
    const NAME: &str = "overlayfs";
    let listed = fs_err::read_to_string("/proc/filesystems")
        .is_ok_and(|fs| fs.lines().any(|l| l.trim_end().ends_with("overlay")));
    if !listed {
        return Check::fail(
            NAME,
            "the kernel has no overlay filesystem loaded",
            "modprobe overlay (and add it to /etc/modules)",
        );
    }
    if !rootless {
        return Check::ok(NAME, "overlayfs is available");
    }
    // An unprivileged overlay mount needs Linux 5.11 or later; try one as the sandbox would.
    match probe_rootless_overlay() {
        Ok(()) => Check::ok(NAME, "overlayfs mounts in a user namespace"),
        Err(why) => Check::fail(
            NAME,
            format!("overlayfs cannot be mounted in a user namespace: {why}"),
            "use Linux 5.11 or later, or run as root",
        ),
    }
}

fn probe_rootless_overlay() -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    for dir in ["lower", "upper", "work", "merged"] {
        fs_err::create_dir(tmp.path().join(dir)).map_err(|e| e.to_string())?;
    }
    let options = format!(
        "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work,userxattr",
        tmp.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "mount",
            "-t",
            "overlay",
        ])
        .args(["-o", &options, "overlay"])
        .arg(tmp.path().join("merged"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn seccomp() -> Check {
    const NAME: &str = "seccomp";
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        Check::ok(NAME, "the kernel filters system calls (seccomp)")
    } else {
        Check::fail(
            NAME,
            "the kernel has no seccomp: sandboxes would run without their system call filter",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        )
    }
}

fn mmdebstrap() -> Check {
    const NAME: &str = "mmdebstrap";
    if crate::sandbox::in_path("mmdebstrap") {
        Check::ok(NAME, "installed: the default Debian base can be built")
    } else {
        Check::warn(
            NAME,
            "not installed: the default Debian base cannot be built here (imported bases still work: base build --from rootfs:, oci:, docker-archive:)",
            "apt-get install mmdebstrap",
        )
    }
}

fn work_dir_space(work_dir: &Path) -> Vec<Check> {
    const NAME: &str = "work dir";
    // The work dir may not exist yet: look at the first ancestor that does.
    let existing = work_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let writable =
        existing.is_dir() && nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    let mut checks = vec![if writable {
        Check::ok(NAME, format!("{} is writable", work_dir.display()))
    } else {
        Check::fail(
            NAME,
            format!(
                "{} cannot be written ({} is not writable)",
                work_dir.display(),
                existing.display()
            ),
            "pass --work-dir DIR (or set FISSILE_OCI_WORK_DIR) to a writable dir",
        )
    }];
    const GIB: u64 = 1 << 30;
    match nix::sys::statvfs::statvfs(existing) {
        Ok(vfs) => {
            // fsblkcnt_t and friends are 32 bits wide on some targets.
            #[allow(clippy::unnecessary_cast)]
            let (free, inodes) = (
                vfs.blocks_available() as u64 * vfs.fragment_size() as u64,
                vfs.files_available() as u64,
            );
            let detail = format!(
                "{:.1} GiB and {inodes} inodes free",
                free as f64 / GIB as f64
            );
            let fix = "free space there, or pass --work-dir DIR on a larger filesystem; `fissile-oci cache gc --max-size SIZE` bounds the work dir";
            checks.push(if free < GIB || (vfs.files() > 0 && inodes < 10_000) {
                Check::fail("free space", detail, fix)
            } else if free < 5 * GIB || (vfs.files() > 0 && inodes < 100_000) {
                Check::warn(
                    "free space",
                    format!("{detail}: a Debian base and a real release need a few GiB"),
                    fix,
                )
            } else {
                Check::ok("free space", detail)
            });
        }
        Err(e) => checks.push(Check::warn(
            "free space",
            format!("cannot tell ({}: {e})", existing.display()),
            "check the work dir's filesystem",
        )),
    }
    checks
}

fn runtime_dir() -> Check {
    const NAME: &str = "runtime dir";
    let root = default_runtime_root();
    if root.exists() {
        if let Err(err) = check_private(&root, nix::unistd::geteuid().as_raw()) {
            return Check::fail(
                NAME,
                err.to_string(),
                "set XDG_RUNTIME_DIR to a dir only you can write, or remove the dir another user made",
            );
        }
        Check::ok(NAME, format!("{} is private", root.display()))
    } else {
        Check::ok(NAME, format!("{} (made on first use)", root.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_makes_the_host_not_ready() {
        let mut checks = vec![Check::ok("a", "fine"), Check::warn("b", "meh", "do x")];
        assert!(ready(&checks));
        checks.push(Check::fail("c", "broken", "do y"));
        assert!(!ready(&checks));
        let json = serde_json::to_value(&checks[2]).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["fix"], "do y");
    }

    #[test]
    fn an_unwritable_work_dir_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        // Under a regular file nothing can be created, not even by root.
        let checks = work_dir_space(&file.join("work"));
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(work_dir_space(tmp.path())[0].status, Status::Ok);
    }
}
