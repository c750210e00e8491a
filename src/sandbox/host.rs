//! What the runtime spec depends on about the host: who we are, which subordinate id ranges we
//! own (`/etc/subuid`, `/etc/subgid`), whether `newuidmap`/`newgidmap` exist, and whether we can
//! create cgroups. Detected once per helper; a plain value so the spec builder stays pure.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A range of subordinate ids from `/etc/subuid` or `/etc/subgid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// Whether resource limits can be enforced through cgroups, and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupSupport {
    /// Root on a cgroup v1 or hybrid host: the helper makes the container's cgroups itself
    /// (see `cgroup_v1`).
    V1,
    /// Root on a cgroup v2 host: libcontainer's cgroup manager does.
    V2,
    /// Limits are skipped; the reason is shown once.
    Unavailable { reason: String },
}

/// Facts about the host that shape the runtime spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostContext {
    pub euid: u32,
    pub egid: u32,
    /// Our subordinate uid range, when `/etc/subuid` has one.
    pub subuid: Option<IdRange>,
    pub subgid: Option<IdRange>,
    /// `newuidmap` and `newgidmap` are installed (needed to map more than one id).
    pub id_map_helpers: bool,
    pub cgroups: CgroupSupport,
    /// The memory controller accounts swap, so a memory limit can include it (on v2, where
    /// `memory.swap.max` exists; on v1 the helper checks `memory.memsw.*` itself).
    #[serde(default)]
    pub cgroup_swap: bool,
}

/// Most ids mapped from a subordinate range: uid 1..=65535 inside, as a distro rootfs needs.
const MAX_SUBORDINATE_IDS: u32 = 65535;

impl HostContext {
    /// Looks at the running process and the host.
    pub fn detect() -> HostContext {
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        if euid == 0 {
            // Subordinate ids only shape a rootless user namespace: skip the user database,
            // /etc/sub[ug]id and the PATH search, which are a measurable part of a short run.
            let cgroups = detect_cgroups(true);
            let cgroup_swap = cgroups == CgroupSupport::V2 && v2_swap_accounted();
            return HostContext {
                euid,
                egid,
                subuid: None,
                subgid: None,
                id_map_helpers: false,
                cgroups,
                cgroup_swap,
            };
        }
        let user_name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(euid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let group_name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(egid))
            .ok()
            .flatten()
            .map(|g| g.name);
        let read = |path: &str| fs_err::read_to_string(path).unwrap_or_default();
        HostContext {
            euid,
            egid,
            subuid: parse_subid(&read("/etc/subuid"), user_name.as_deref(), euid),
            subgid: parse_subid(&read("/etc/subgid"), group_name.as_deref(), egid)
                .or_else(|| parse_subid(&read("/etc/subgid"), user_name.as_deref(), euid)),
            id_map_helpers: ["newuidmap", "newgidmap"].iter().all(|b| in_path(b)),
            cgroups: detect_cgroups(euid == 0),
            cgroup_swap: false,
        }
    }

    pub fn is_root(&self) -> bool {
        self.euid == 0
    }

    /// The subordinate ranges to map, when both exist and can be written (root writes maps
    /// directly; others need the setuid helpers).
    pub fn subordinate_ranges(&self) -> Option<(IdRange, IdRange)> {
        match (self.subuid, self.subgid) {
            (Some(u), Some(g)) if self.id_map_helpers => Some((
                IdRange {
                    start: u.start,
                    count: u.count.min(MAX_SUBORDINATE_IDS),
                },
                IdRange {
                    start: g.start,
                    count: g.count.min(MAX_SUBORDINATE_IDS),
                },
            )),
            _ => None,
        }
    }
}

/// The first `name:start:count` (or `uid:start:count`) line for us in a subuid/subgid file.
pub fn parse_subid(content: &str, name: Option<&str>, id: u32) -> Option<IdRange> {
    let id = id.to_string();
    content.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if owner != id && Some(owner) != name {
            return None;
        }
        let range = IdRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        };
        (range.count > 0).then_some(range)
    })
}

/// Whether `binary` is a file in one of `$PATH`'s dirs.
pub fn in_path(binary: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    path.split(':')
        .any(|dir| !dir.is_empty() && Path::new(dir).join(binary).is_file())
}

fn detect_cgroups(root: bool) -> CgroupSupport {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let probe = if unified {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/pids")
    };
    if !probe.is_dir() {
        return CgroupSupport::Unavailable {
            reason: format!("{} is not mounted", probe.display()),
        };
    }
    if !root {
        // libcontainer's unprivileged cgroup support needs systemd delegation (cgroup v2 with a
        // user manager), which it does not drive without the systemd feature; on v1 and hybrid
        // hosts there is no unprivileged delegation at all.
        let kind = if unified { "cgroup v2" } else { "cgroup v1" };
        return CgroupSupport::Unavailable {
            reason: format!("running rootless on {kind}: no delegated cgroup"),
        };
    }
    if nix::unistd::access(probe, nix::unistd::AccessFlags::W_OK).is_err() {
        return CgroupSupport::Unavailable {
            reason: format!("{} is not writable", probe.display()),
        };
    }
    if !unified {
        return CgroupSupport::V1;
    }
    // libcgroups enables what the root offers in every cgroup on the way down; a limit whose
    // controller is not there would make every container fail to start.
    let offered = fs_err::read_to_string(probe.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = ["pids", "memory"]
        .into_iter()
        .filter(|c| !offered.split_whitespace().any(|o| o == *c))
        .collect();
    if !missing.is_empty() {
        return CgroupSupport::Unavailable {
            reason: format!(
                "the cgroup v2 root offers no {} controller",
                missing.join(" or ")
            ),
        };
    }
    CgroupSupport::V2
}

/// Whether cgroup v2 memory controllers here have `memory.swap.max` (swap accounting can be
/// turned off at boot). Looked for beside a `memory.max`: in our own cgroup, else in the first
/// child of the root that has one. Without any, assumed (the kernel's default).
fn v2_swap_accounted() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let own = fs_err::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| root.join(p.trim_start_matches('/')))
            })
        });
    let children = fs_err::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path());
    own.into_iter()
        .chain(children)
        .find(|dir| dir.join("memory.max").is_file())
        .is_none_or(|dir| dir.join("memory.swap.max").is_file())
}

/// `CAP_SYS_RESOURCE`, from linux/capability.h.
const CAP_SYS_RESOURCE: u32 = 24;

/// Why the device rules cannot be loaded on a cgroup v2 host, if they cannot. There they are a
/// BPF program, and libcgroups raises `RLIMIT_MEMLOCK` to unlimited before loading it (even on
/// kernels that no longer count BPF memory against it): without `CAP_SYS_RESOURCE`, a hard limit
/// below unlimited makes that fail, and so every sandbox. A root in a container started without
/// that capability is the usual case.
pub fn v2_device_rules_problem() -> Option<String> {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map(|(_, hard)| hard)
        .ok();
    memlock_problem(effective_capability(&status, CAP_SYS_RESOURCE), hard)
}

/// What to do about [`v2_device_rules_problem`].
pub const V2_DEVICE_RULES_FIX: &str = "give it CAP_SYS_RESOURCE (a container: --cap-add \
     SYS_RESOURCE), or an unlimited locked-memory limit (ulimit -l unlimited; a container: \
     --ulimit memlock=-1)";

fn memlock_problem(cap_sys_resource: bool, memlock_hard: Option<u64>) -> Option<String> {
    if cap_sys_resource || memlock_hard == Some(nix::sys::resource::RLIM_INFINITY) {
        return None;
    }
    let limit = match memlock_hard {
        Some(bytes) => format!("{} KiB", bytes / 1024),
        None => "unknown".to_string(),
    };
    Some(format!(
        "this root lacks CAP_SYS_RESOURCE and its hard RLIMIT_MEMLOCK is {limit}: libcontainer \
         cannot load the cgroup v2 device rules (it raises that limit to unlimited first), so \
         no sandbox would start"
    ))
}

/// Whether capability `cap` is in the effective set a `/proc/<pid>/status` text shows.
fn effective_capability(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| set & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_need_cap_sys_resource_or_an_unlimited_memlock() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let capped = "Name:\tx\nCapEff:\t000001fffeffffff\n";
        assert!(effective_capability(root, CAP_SYS_RESOURCE));
        assert!(!effective_capability(capped, CAP_SYS_RESOURCE));
        assert!(!effective_capability("Name:\tx\n", CAP_SYS_RESOURCE));
        assert_eq!(memlock_problem(true, Some(8 << 20)), None);
        assert_eq!(
            memlock_problem(false, Some(nix::sys::resource::RLIM_INFINITY)),
            None
        );
        let problem = memlock_problem(false, Some(8 << 20)).unwrap();
        assert!(problem.contains("CAP_SYS_RESOURCE"), "{problem}");
        assert!(problem.contains("8192 KiB"), "{problem}");
    }

    #[test]
    fn subid_lines_by_name_or_id() {
        let content = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            parse_subid(content, Some("alice"), 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(content, Some("carol"), 1001).map(|r| r.start),
            Some(200000)
        );
        assert_eq!(parse_subid(content, Some("bob"), 1002), None);
        assert_eq!(parse_subid("garbage\n", None, 0), None);
    }

    #[test]
    fn subordinate_ranges_need_helpers_and_are_capped() {
        let mut host = HostContext {
            euid: 1000,
            egid: 1000,
            subuid: Some(IdRange {
                start: 100000,
                count: 1 << 20,
            }),
            subgid: Some(IdRange {
                start: 100000,
                count: 65536,
            }),
            id_map_helpers: false,
            cgroups: CgroupSupport::V1,
            cgroup_swap: false,
        };
        assert_eq!(host.subordinate_ranges(), None);
        host.id_map_helpers = true;
        let (u, g) = host.subordinate_ranges().unwrap();
        assert_eq!((u.count, g.count), (65535, 65535));
    }
}
