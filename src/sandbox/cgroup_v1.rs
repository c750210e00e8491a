//! The container's cgroups on a cgroup v1 (or hybrid) host, made by the helper rather than by
//! libcontainer's manager.
//!
//! Why: libcgroups moves the container's intermediate process into its cgroups by writing a pid to
//! `cgroup.procs`. On v1 that takes the kernel's global `cgroup_threadgroup_rwsem` for writing,
//! which waits for a full RCU grace period whenever no other migration happened in the last one: a
//! wait that can exceed the whole rest of a sandbox's start, and that runs spaced apart (as a
//! compile's are) pay most often (see docs/DECISIONS.md, "On cgroup v1 the helper makes the
//! container's cgroups"). A *thread* moving *itself* (`0` written to `tasks`) skips that lock. The
//! helper is single-threaded and one per container, so it creates the cgroups, moves itself in,
//! lets libcontainer fork the container from there (children inherit cgroups), moves back out, and
//! writes the limits ([`v1_plan`]) before the container starts. Compile-level figure: with
//! libcontainer's own v1 manager instead, a 200-package chain of trivial packages took 1.21x the
//! wall time (17.4 against 14.3 ms per package, `-j 2`, 10 rounds of
//! `scripts/bench/compile_ab.py`, BENCHMARKS.md).
//!
//! libcontainer's own cgroup manager must then have nothing to do: in the helper's private mount
//! namespace `/sys/fs/cgroup` is an empty read-only tmpfs and no cgroup hierarchy is mounted
//! anywhere ([`ContainerCgroups::hide_hierarchies`]). libcgroups finds no controller at all, so
//! its `add_task` moves nothing, and any limit it were asked to apply would fail loudly
//! (`CGroupRequired`) rather than be dropped; the runtime spec asks for none on v1 (see
//! `runtime_spec`). An earlier version showed it a cgroup2 stand-in whose `cgroup.procs` was a
//! null device: 0.6 ms faster per sandbox, nothing measurable on a compile, and a fake that a
//! libcontainer upgrade could have applied limits to without effect.
//!
//! The hierarchies used: `pids` (the pids limit), `devices` (only the nodes a build needs) and
//! `memory` when a memory limit is asked for. Dirs are `<hierarchy>/fissile-oci/<container id>`,
//! the same paths libcontainer would use, so the stale-state scan finds them either way.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::security;
use super::types::SandboxSpec;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every container's cgroup, under each hierarchy.
const PARENT: &str = "fissile-oci";

/// One step of the limits the helper writes before the container's command starts: `values`
/// written to `file` of the container's cgroup in the hierarchy of `controller`, one `write`
/// each (cgroup files take one value, one device rule, per write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Write {
    pub controller: &'static str,
    pub file: &'static str,
    pub values: Vec<String>,
    /// Skipped where the file does not exist (swap accounting is a kernel option).
    pub optional: bool,
}

/// The controllers a run's cgroups need: `pids` and `devices` always, `memory` for a limit.
pub fn v1_controllers(spec: &SandboxSpec) -> Vec<&'static str> {
    let mut controllers = vec!["pids", "devices"];
    if spec.memory_limit.is_some() {
        controllers.push("memory");
    }
    controllers
}

/// The limits of a run as cgroup v1 writes, in order: the pids limit, every device denied then
/// [`security::ALLOWED_DEVICES`] allowed, the memory limit with swap included where swap is accounted.
pub fn v1_plan(spec: &SandboxSpec) -> Vec<V1Write> {
    let write = |controller, file, values: Vec<String>, optional| V1Write {
        controller,
        file,
        values,
        optional,
    };
    let mut plan = Vec::new();
    if let Some(limit) = spec.pids_limit {
        plan.push(write("pids", "pids.max", vec![limit.to_string()], false));
    }
    plan.push(write("devices", "devices.deny", vec!["a".into()], false));
    plan.push(write(
        "devices",
        "devices.allow",
        security::ALLOWED_DEVICES
            .iter()
            .map(security::DeviceRule::v1_line)
            .collect(),
        false,
    ));
    if let Some(limit) = spec.memory_limit {
        let value = limit.to_string();
        plan.push(write(
            "memory",
            "memory.limit_in_bytes",
            vec![value.clone()],
            false,
        ));
        plan.push(write(
            "memory",
            "memory.memsw.limit_in_bytes",
            vec![value],
            true,
        ));
    }
    plan
}

#[derive(thiserror::Error, Debug)]
pub enum CgroupV1Error {
    #[error("the cgroup v1 {controller} hierarchy is not mounted (looked in /proc/self/mountinfo); mount it or run rootless")]
    NotMounted { controller: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the memory limit ({limit} bytes) is below what the container uses while starting")]
    MemoryTooLow { limit: i64 },
    #[error(
        "failed to hide the cgroup hierarchies from libcontainer in the helper's mount namespace"
    )]
    Hide(#[source] nix::Error),
}

fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CgroupV1Error {
    let path = path.into();
    move |source| CgroupV1Error::Io { path, source }
}

/// One hierarchy's part of a container's cgroups.
struct Hierarchy {
    /// The controllers of ours it holds: usually one, more where they are co-mounted.
    controllers: Vec<&'static str>,
    /// The container's cgroup dir, e.g. `/sys/fs/cgroup/pids/fissile-oci/<id>`.
    path: PathBuf,
    /// Held open: after [`ContainerCgroups::hide_hierarchies`] the paths no longer resolve in
    /// the helper.
    dir: OwnedFd,
    parent: OwnedFd,
    /// The `tasks` file of the cgroup the helper came from, to move back to.
    home_tasks: fs_err::File,
    home_tasks_path: PathBuf,
}

/// A container's cgroups, created before the container and removed after it.
pub struct ContainerCgroups {
    id: String,
    hierarchies: Vec<Hierarchy>,
    /// The cgroup mounts that detaching `/sys/fs/cgroup` does not take along, in mount order.
    mounted_elsewhere: Vec<PathBuf>,
    removed: bool,
}

impl ContainerCgroups {
    /// Creates the container's cgroup in each hierarchy it needs. Nothing moves yet.
    pub fn create(id: &str, spec: &SandboxSpec) -> Result<ContainerCgroups, CgroupV1Error> {
        let controllers = v1_controllers(spec);
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        let mut cgroups = ContainerCgroups {
            id: id.to_string(),
            hierarchies: Vec::new(),
            mounted_elsewhere: mounted_elsewhere(&mountinfo),
            removed: false,
        };
        for controller in controllers {
            let mount_point = mount_point(&mountinfo, controller)
                .ok_or(CgroupV1Error::NotMounted { controller })?;
            let parent_path = mount_point.join(PARENT);
            let path = parent_path.join(id);
            if let Some(h) = cgroups.hierarchies.iter_mut().find(|h| h.path == path) {
                h.controllers.push(controller);
                continue;
            }
            let home = own_cgroup(&own, controller).unwrap_or_else(|| "/".into());
            let home_tasks_path = mount_point.join(home.trim_start_matches('/')).join("tasks");
            let home_tasks = fs_err::File::options()
                .write(true)
                .open(&home_tasks_path)
                .map_err(io_error(&home_tasks_path))?;
            match fs_err::create_dir(&parent_path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io_error(&parent_path)(err)),
            }
            let parent = open_dir(&parent_path)?;
            fs_err::create_dir(&path).map_err(io_error(&path))?;
            let dir = match open_dir(&path) {
                Ok(dir) => dir,
                Err(err) => {
                    let _ = fs_err::remove_dir(&path);
                    return Err(err);
                }
            };
            cgroups.hierarchies.push(Hierarchy {
                controllers: vec![controller],
                path,
                dir,
                parent,
                home_tasks,
                home_tasks_path,
            });
        }
        Ok(cgroups)
    }

    /// Moves the calling thread (the whole single-threaded helper) into the container's
    /// cgroups, so the container processes it forks start there.
    pub fn enter(&self) -> Result<(), CgroupV1Error> {
        for h in &self.hierarchies {
            write_at(&h.dir, &h.path, "tasks", "0")?;
        }
        Ok(())
    }

    /// Moves the calling thread back to the cgroups it came from, so that neither the limits
    /// nor the removal count the helper.
    pub fn leave(&self) -> Result<(), CgroupV1Error> {
        for h in &self.hierarchies {
            (&h.home_tasks)
                .write_all(b"0")
                .map_err(io_error(&h.home_tasks_path))?;
        }
        Ok(())
    }

    /// Writes the limits ([`v1_plan`]). Called before the container's command starts.
    pub fn limit(&self, spec: &SandboxSpec) -> Result<(), CgroupV1Error> {
        for write in v1_plan(spec) {
            let Some(h) = self
                .hierarchies
                .iter()
                .find(|h| h.controllers.contains(&write.controller))
            else {
                continue;
            };
            let values: Vec<&str> = write.values.iter().map(String::as_str).collect();
            match write_each_at(&h.dir, &h.path, write.file, &values) {
                Err(CgroupV1Error::Io { ref source, .. })
                    if write.optional && source.kind() == std::io::ErrorKind::NotFound => {}
                Err(CgroupV1Error::Io { ref source, .. })
                    if write.file == "memory.limit_in_bytes"
                        && source.raw_os_error() == Some(libc::EBUSY) =>
                {
                    return Err(CgroupV1Error::MemoryTooLow {
                        limit: spec.memory_limit.unwrap_or_default(),
                    })
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Empties the view of cgroups in the helper's mount namespace, which must be private (see
    /// `mount_ns`; the host's mounts are untouched): `/sys/fs/cgroup` becomes an empty read-only
    /// tmpfs, and no cgroup hierarchy stays mounted anywhere, so that libcontainer's cgroup
    /// manager finds none (see the module doc). Usually one detach of the whole tree.
    pub fn hide_hierarchies(&self) -> Result<(), CgroupV1Error> {
        self.hide().map_err(CgroupV1Error::Hide)
    }

    fn hide(&self) -> nix::Result<()> {
        match umount2(CGROUP_ROOT, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) => {}
            Err(err) => return Err(err),
        }
        // libcgroups would find a hierarchy mounted anywhere and put the container there too.
        for mount_point in self.mounted_elsewhere.iter().rev() {
            match umount2(mount_point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(err) => return Err(err),
            }
        }
        mount(
            Some("tmpfs"),
            CGROUP_ROOT,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=555"),
        )
    }

    /// Whether the kernel OOM-killed something in the container's memory cgroup.
    pub fn oom_killed(&self) -> bool {
        self.hierarchies
            .iter()
            .filter(|h| h.controllers.contains(&"memory"))
            .any(|h| read_at(&h.dir, "memory.oom_control").is_some_and(|text| oom_kills(&text) > 0))
    }

    /// Moves the helper out if it is still in, and removes the cgroups once the container's
    /// processes are gone. True when none is left.
    pub fn remove(&mut self) -> bool {
        let _ = self.leave();
        let mut all_gone = true;
        for h in &self.hierarchies {
            all_gone &= remove_retrying(|| {
                unlinkat(
                    Some(h.parent.as_raw_fd()),
                    self.id.as_str(),
                    UnlinkatFlags::RemoveDir,
                )
                .map_err(std::io::Error::from)
            });
        }
        self.removed = all_gone;
        all_gone
    }
}

impl Drop for ContainerCgroups {
    fn drop(&mut self) {
        if !self.removed {
            self.remove();
        }
    }
}

/// Retries an rmdir that fails with EBUSY for a few ms (the last process of a cgroup may take
/// a moment to leave it). True when the dir is gone.
pub(super) fn remove_retrying(rmdir: impl Fn() -> std::io::Result<()>) -> bool {
    for attempt in 0..5 {
        match rmdir() {
            Ok(()) => return true,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return true,
            // The kind, not the raw errno: fs-err wraps the OS error (the kind is kept).
            Err(err) if err.kind() == std::io::ErrorKind::ResourceBusy && attempt < 4 => {
                std::thread::sleep(std::time::Duration::from_millis(2 << attempt));
            }
            Err(_) => return false,
        }
    }
    false
}

/// The `oom_kill` count of a v1 `memory.oom_control` or a v2 `memory.events`.
pub(super) fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// One line of `/proc/self/mountinfo`: the fields this module reads.
struct MountLine<'a> {
    /// Field 5, with spaces and the like octal-escaped by the kernel, unescaped.
    mount_point: PathBuf,
    fs_type: &'a str,
    /// The access mode, then (for cgroup v1) the controllers and flags.
    super_options: &'a str,
}

fn mount_lines(mountinfo: &str) -> impl Iterator<Item = MountLine<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split(' ');
        let fs_type = after.next()?;
        let super_options = after.nth(1).unwrap_or("");
        Some(MountLine {
            mount_point: PathBuf::from(unescape(before.split(' ').nth(4)?)),
            fs_type,
            super_options,
        })
    })
}

/// Where the v1 hierarchy holding `controller` is mounted, from `/proc/self/mountinfo`.
fn mount_point(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mount_lines(mountinfo)
        .find(|m| {
            m.fs_type == "cgroup"
                && m.super_options
                    .split(',')
                    .any(|o| o == controller && o != "rw" && o != "ro")
        })
        .map(|m| m.mount_point)
}

/// Every cgroup (v1 or v2) mount point in a mount table, in mount order.
fn cgroup_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mount_lines(mountinfo)
        .filter(|m| matches!(m.fs_type, "cgroup" | "cgroup2"))
        .map(|m| m.mount_point)
        .collect()
}

/// The cgroup mounts outside the tree that detaching `/sys/fs/cgroup` takes along: none on a
/// usual host, every one of them where `/sys/fs/cgroup` is no mount point of its own.
fn mounted_elsewhere(mountinfo: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let root_is_a_mount = mount_lines(mountinfo).any(|m| m.mount_point == root);
    cgroup_mount_points(mountinfo)
        .into_iter()
        .filter(|m| !(root_is_a_mount && m.starts_with(root)))
        .collect()
}

/// Our cgroup in the hierarchy holding `controller`, from `/proc/self/cgroup`.
fn own_cgroup(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\' && octal.is_some_and(|o| o.iter().all(|b| (b'0'..=b'7').contains(b))) {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read(path: &str) -> Result<String, CgroupV1Error> {
    fs_err::read_to_string(path).map_err(io_error(path))
}

fn open_dir(path: &Path) -> Result<OwnedFd, CgroupV1Error> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: `open` just returned this fd and nothing else owns it.
        unsafe { FromRawFd::from_raw_fd(fd) }
    })
    .map_err(|errno| io_error(path)(errno.into()))
}

fn write_at(dir: &OwnedFd, dir_path: &Path, name: &str, value: &str) -> Result<(), CgroupV1Error> {
    write_each_at(dir, dir_path, name, &[value])
}

/// Writes each value with a `write` of its own to one open file: cgroup files take one value
/// (one device rule) per write.
fn write_each_at(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    values: &[&str],
) -> Result<(), CgroupV1Error> {
    let path = || dir_path.join(name);
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error(path())(errno.into()))?;
    // SAFETY: `openat` just returned this fd and nothing else owns it.
    let mut file: File = unsafe { FromRawFd::from_raw_fd(fd) };
    for value in values {
        file.write_all(value.as_bytes()).map_err(io_error(path()))?;
    }
    Ok(())
}

fn read_at(dir: &OwnedFd, name: &str) -> Option<String> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // SAFETY: `openat` just returned this fd and nothing else owns it.
    let file: File = unsafe { FromRawFd::from_raw_fd(fd) };
    std::io::read_to_string(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
43 42 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
37 30 0:33 / /srv/my\\040cgroups/devices rw - cgroup cgroup rw,devices
";

    #[test]
    fn finds_the_hierarchy_of_a_controller() {
        assert_eq!(
            mount_point(MOUNTINFO, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(
            mount_point(MOUNTINFO, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            mount_point(MOUNTINFO, "devices"),
            Some(PathBuf::from("/srv/my cgroups/devices"))
        );
        assert_eq!(mount_point(MOUNTINFO, "memory"), None);
        assert_eq!(mount_point(MOUNTINFO, "rw"), None, "options are not names");
    }

    #[test]
    fn lists_every_cgroup_mount() {
        assert_eq!(
            cgroup_mount_points(MOUNTINFO),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/srv/my cgroups/devices"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn only_hierarchies_outside_a_mounted_cgroup_root_need_their_own_detach() {
        assert_eq!(
            mounted_elsewhere(MOUNTINFO),
            [PathBuf::from("/srv/my cgroups/devices")]
        );
        // No tmpfs on /sys/fs/cgroup: every hierarchy is a mount of its own.
        let bare: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains(" /sys/fs/cgroup ro,"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(mounted_elsewhere(&bare).len(), 4);
    }

    #[test]
    fn the_v1_plan_limits_pids_devices_and_memory_with_swap() {
        use crate::sandbox::types::RootfsSpec;
        let mut spec = SandboxSpec::new(
            RootfsSpec::Plain {
                dir: "/r".into(),
                readonly: true,
            },
            vec!["true".into()],
        );
        spec.pids_limit = Some(64);
        let plan = v1_plan(&spec);
        let files: Vec<_> = plan.iter().map(|w| (w.controller, w.file)).collect();
        assert_eq!(
            files,
            [
                ("pids", "pids.max"),
                ("devices", "devices.deny"),
                ("devices", "devices.allow")
            ]
        );
        assert_eq!(plan[0].values, ["64"]);
        assert_eq!(plan[1].values, ["a"], "everything denied first");
        assert!(plan[2].values.iter().any(|r| r == "c 1:3 rwm"), "/dev/null");
        assert!(
            !plan[2]
                .values
                .iter()
                .any(|r| r.starts_with("b ") && r.ends_with("rwm")),
            "no block device may be read or written"
        );
        assert_eq!(v1_controllers(&spec), ["pids", "devices"]);

        spec.pids_limit = None;
        spec.memory_limit = Some(1 << 30);
        let plan = v1_plan(&spec);
        assert_eq!(
            plan[0].file, "devices.deny",
            "no pids limit asked: none written"
        );
        let memory: Vec<_> = plan.iter().filter(|w| w.controller == "memory").collect();
        assert_eq!(memory.len(), 2);
        assert_eq!(memory[0].values, [(1u64 << 30).to_string()]);
        assert!(!memory[0].optional);
        assert_eq!(memory[1].file, "memory.memsw.limit_in_bytes");
        assert!(memory[1].optional, "swap accounting may be off");
        assert_eq!(v1_controllers(&spec), ["pids", "devices", "memory"]);
    }

    #[test]
    fn finds_our_own_cgroup() {
        let text = "12:pids:/user.slice/x\n4:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/init\n";
        assert_eq!(own_cgroup(text, "pids").as_deref(), Some("/user.slice/x"));
        assert_eq!(own_cgroup(text, "cpu").as_deref(), Some("/"));
        assert_eq!(own_cgroup(text, "memory"), None);
    }

    #[test]
    fn counts_oom_kills() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }
}
