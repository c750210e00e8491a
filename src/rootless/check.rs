//! What a rootless run needs from the host, checked before any work starts: a missing
//! `/etc/subuid` range found after minutes of bootstrapping is found too late. Each problem
//! comes with its fix. `base build` and `compile` call [`require`] when not root; a `doctor`
//! command can list [`problems`] as they are.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sandbox::HostContext;

/// What the coming work needs beyond a user namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Subordinate id ranges and `newuidmap`/`newgidmap`: a Debian bootstrap, and any sandbox
    /// in which files change owners (apt, `tar` as root).
    pub subordinate_ids: bool,
    /// mmdebstrap, which looks the ranges up by user name.
    pub mmdebstrap: bool,
}

/// One thing the host lacks, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// The work cannot run rootless here.
#[derive(thiserror::Error, Debug)]
#[error("cannot {work} as {user} (not root):{}", list(.problems))]
pub struct NotReady {
    pub work: String,
    pub user: String,
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  - {}\n    fix: {}", p.what, p.fix))
        .collect()
}

/// The subordinate ids a rootless build of a distribution needs: 65536, so that every id a
/// Debian system uses (up to `nobody`, 65534) has one.
pub const WANTED_SUBORDINATE_IDS: u32 = 65536;

/// Fails with every problem at once when the host lacks what `needs` says `work` needs.
pub fn require(host: &HostContext, needs: Needs, work: &str) -> Result<(), NotReady> {
    let problems = problems(host, needs);
    if problems.is_empty() {
        return Ok(());
    }
    Err(NotReady {
        work: work.to_string(),
        user: user_name(host.euid).unwrap_or_else(|| format!("uid {}", host.euid)),
        problems,
    })
}

/// The check before rootless work: fails with every problem at once when the host lacks what
/// `needs` says `work` needs; otherwise returns the notice to show when subordinate ids, which
/// the work can do without, are missing. As root: `Ok(None)`, with no system call.
pub fn preflight(needs: Needs, work: &str) -> Result<Option<String>, NotReady> {
    if nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let host = HostContext::detect();
    require(&host, needs, work)?;
    if needs.subordinate_ids {
        return Ok(None);
    }
    let missing = subordinate_ids(&host, false)
        .into_iter()
        .chain(id_map_tools())
        .next();
    Ok(missing.map(|p| {
        format!(
            "notice: {}: sandboxes map only your own id, so packaging that changes owners \
             (tar as root does) fails; fix: {}",
            p.what, p.fix
        )
    }))
}

/// Everything the host lacks for rootless work that needs `needs`; empty as root.
pub fn problems(host: &HostContext, needs: Needs) -> Vec<Problem> {
    if host.is_root() {
        return Vec::new();
    }
    let mut found = Vec::new();
    if let Err(problem) = user_namespaces(host) {
        found.push(problem);
    }
    if needs.subordinate_ids || needs.mmdebstrap {
        found.extend(subordinate_ids(host, needs.mmdebstrap));
        found.extend(id_map_tools());
    }
    if needs.mmdebstrap && which("mmdebstrap").is_none() {
        found.push(Problem {
            what: "mmdebstrap is not installed (it bootstraps Debian bases)".into(),
            fix: "sudo apt-get install mmdebstrap".into(),
        });
    }
    found
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn read_sysctl(path: &str) -> Option<String> {
    fs_err::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Creates a user namespace in a forked child, maps the user to root there and makes a mount
/// namespace in it: the least a sandbox or the tree helper does.
fn user_namespaces(host: &HostContext) -> Result<(), Problem> {
    let step = match probe_user_namespace(host.euid, host.egid) {
        Ok(()) => return Ok(()),
        Err(step) => step,
    };
    let sysctl = |name: &str, path: &str, bad: &str, good: &str| -> Option<Problem> {
        (read_sysctl(path).as_deref() == Some(bad)).then(|| Problem {
            what: format!("unprivileged user namespaces are disabled ({name} = {bad})"),
            fix: format!("sudo sysctl -w {name}={good} (and put it in /etc/sysctl.d/ to keep it)"),
        })
    };
    Err(sysctl(
        "user.max_user_namespaces",
        "/proc/sys/user/max_user_namespaces",
        "0",
        "15000",
    )
    .or_else(|| {
        sysctl(
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
            "0",
            "1",
        )
    })
    .or_else(|| {
        sysctl(
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "0",
        )
    })
    .unwrap_or_else(|| Problem {
        what: format!("unprivileged user namespaces do not work here ({step} failed)"),
        fix: "allow them: the sysctls user.max_user_namespaces and, where they exist, \
              kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns; \
              in a container, start it with user namespaces allowed (its seccomp profile)"
            .into(),
    }))
}

/// The probe's steps, by the exit code of the child that failed them.
const PROBE_STEPS: &[&str] = &[
    "unshare(CLONE_NEWUSER)",
    "writing /proc/self/setgroups",
    "writing /proc/self/uid_map",
    "writing /proc/self/gid_map",
    "unshare(CLONE_NEWNS) in the new user namespace",
];

fn probe_user_namespace(euid: u32, egid: u32) -> Result<(), &'static str> {
    // Everything the child needs is made before the fork: the caller may have other threads,
    // so the child may only make system calls.
    let files = [
        (c"/proc/self/setgroups", b"deny".to_vec()),
        (c"/proc/self/uid_map", format!("0 {euid} 1\n").into_bytes()),
        (c"/proc/self/gid_map", format!("0 {egid} 1\n").into_bytes()),
    ];
    // SAFETY: the child only calls unshare, open, write, close and _exit, which are
    // async-signal-safe, on memory prepared before the fork.
    match unsafe { nix::unistd::fork() } {
        Err(_) => Err("fork"),
        Ok(nix::unistd::ForkResult::Child) => {
            let code = probe_child(&files);
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Err(PROBE_STEPS
                    .get(code as usize - 1)
                    .copied()
                    .unwrap_or("the probe")),
                _ => Err("the probe"),
            }
        }
    }
}

fn probe_child(files: &[(&std::ffi::CStr, Vec<u8>)]) -> i32 {
    // SAFETY: plain system calls on NUL-terminated paths and live buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            return 1;
        }
        for (step, (path, content)) in files.iter().enumerate() {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return step as i32 + 2;
            }
            let written = libc::write(fd, content.as_ptr().cast(), content.len());
            libc::close(fd);
            if written != content.len() as isize {
                return step as i32 + 2;
            }
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 5;
        }
    }
    0
}

fn subordinate_ids(host: &HostContext, by_name: bool) -> Vec<Problem> {
    let name = user_name(host.euid);
    let who = name.clone().unwrap_or_else(|| host.euid.to_string());
    let fix = format!(
        "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who} \
         (any {WANTED_SUBORDINATE_IDS} ids that no other user's ranges overlap)"
    );
    let mut found = Vec::new();
    let files = [("/etc/subuid", host.subuid), ("/etc/subgid", host.subgid)];
    let missing: Vec<&str> = files
        .iter()
        .filter(|(_, range)| range.is_none())
        .map(|(file, _)| *file)
        .collect();
    if !missing.is_empty() {
        found.push(Problem {
            what: format!(
                "{} {} no range of subordinate ids for {who}",
                missing.join(" and "),
                if missing.len() == 1 { "has" } else { "have" }
            ),
            fix: fix.clone(),
        });
    }
    for (file, range) in files {
        if let Some(r) = range.filter(|r| r.count < WANTED_SUBORDINATE_IDS) {
            found.push(Problem {
                what: format!(
                    "{file} gives {who} {} subordinate ids; a Debian system uses ids up to 65534",
                    r.count
                ),
                fix: fix.clone(),
            });
        }
    }
    if by_name && found.is_empty() {
        let read = |path: &str| fs_err::read_to_string(path).unwrap_or_default();
        let named = name.as_deref().and_then(|n| {
            rootfs_builder::debian::unshare_id_ranges(n, &read("/etc/subuid"), &read("/etc/subgid"))
        });
        if named.is_none() {
            found.push(Problem {
                what: format!(
                    "mmdebstrap looks subordinate ids up by user name, and /etc/subuid or \
                     /etc/subgid lists {who} by number"
                ),
                fix: format!("write the lines as {who}:START:COUNT"),
            });
        }
    }
    found
}

fn id_map_tools() -> Vec<Problem> {
    let mut found = Vec::new();
    for tool in ["newuidmap", "newgidmap"] {
        match which(tool) {
            None => found.push(Problem {
                what: format!("{tool} is not installed (it maps subordinate ids)"),
                fix: "sudo apt-get install uidmap".into(),
            }),
            Some(path) if !privileged(&path) => found.push(Problem {
                what: format!(
                    "{} is neither setuid root nor has file capabilities",
                    path.display()
                ),
                fix: format!("sudo chmod u+s {} (or reinstall uidmap)", path.display()),
            }),
            Some(_) => {}
        }
    }
    found
}

/// The tool's path in `PATH`.
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

/// Setuid root, or `security.capability` set (Fedora ships new[ug]idmap with file caps).
fn privileged(path: &Path) -> bool {
    let setuid_root =
        fs_err::metadata(path).is_ok_and(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0);
    setuid_root || has_file_capabilities(path)
}

fn has_file_capabilities(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and name; a null buffer of size 0 only asks for the size.
    let size = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{CgroupSupport, IdRange};

    fn host(subuid: Option<IdRange>, helpers: bool) -> HostContext {
        HostContext {
            euid: 4242,
            egid: 4242,
            subuid,
            subgid: subuid,
            id_map_helpers: helpers,
            cgroups: CgroupSupport::Unavailable {
                reason: "test".into(),
            },
            cgroup_swap: false,
        }
    }

    #[test]
    fn root_needs_nothing() {
        let mut h = host(None, false);
        h.euid = 0;
        let needs = Needs {
            subordinate_ids: true,
            mmdebstrap: true,
        };
        assert!(problems(&h, needs).is_empty());
        assert!(require(&h, needs, "build").is_ok());
    }

    #[test]
    fn missing_and_short_ranges_are_named_with_the_fix() {
        let found = subordinate_ids(&host(None, true), false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .what
                .contains("/etc/subuid and /etc/subgid have no range"),
            "{found:?}"
        );
        assert!(found[0].fix.contains("usermod --add-subuids"), "{found:?}");
        let short = Some(IdRange {
            start: 100000,
            count: 1000,
        });
        let found = subordinate_ids(&host(short, true), false);
        assert!(found[0].what.contains("1000 subordinate ids"), "{found:?}");
        let enough = Some(IdRange {
            start: 100000,
            count: 65536,
        });
        assert!(subordinate_ids(&host(enough, true), false).is_empty());
    }

    #[test]
    fn the_error_lists_every_problem_with_its_fix() {
        let err = NotReady {
            work: "build base debian-bookworm".into(),
            user: "ci".into(),
            problems: vec![
                Problem {
                    what: "a".into(),
                    fix: "fix a".into(),
                },
                Problem {
                    what: "b".into(),
                    fix: "fix b".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "cannot build base debian-bookworm as ci (not root):\n  - a\n    fix: fix a\n  - b\n    fix: fix b"
        );
    }

    #[test]
    fn the_user_namespace_probe_matches_what_unshare_says() {
        // The probe against util-linux's own attempt at the same thing.
        let unshare = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "true"])
            .status();
        let Ok(status) = unshare else {
            crate::common_skip::skip("util-linux unshare is not installed");
            return;
        };
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        assert_eq!(
            probe_user_namespace(euid, egid).is_ok(),
            status.success(),
            "{:?}",
            probe_user_namespace(euid, egid)
        );
    }
}
