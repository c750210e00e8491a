//! Fixtures for the sandbox tests: a busybox-static rootfs built in a temp dir (plus a static
//! escape probe when a C compiler is around), checks for leftovers (state dirs, mounts, cgroups,
//! processes), and a runner for the `fissile-oci run` CLI, optionally as another user.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_fissile-oci");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why sandboxes cannot run here at all, if they cannot.
pub fn sandbox_unavailable() -> Option<String> {
    if !Path::new("/bin/busybox").is_file() {
        return Some("/bin/busybox is missing (install busybox-static)".into());
    }
    if is_root() {
        return None;
    }
    let ok = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "not root and unprivileged user namespaces are unavailable".into())
}

/// A busybox rootfs: /bin/busybox with every applet linked, /etc/passwd and /etc/group, the
/// usual empty mount points, and /probe when `cc -static` works.
pub struct Rootfs {
    pub dir: PathBuf,
    pub has_probe: bool,
}

pub fn build_rootfs(dir: &Path) -> Rootfs {
    for sub in ["bin", "etc", "proc", "dev", "sys", "tmp", "mnt", "root"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nbuilder:x:1000:\n",
    )
    .unwrap();
    let has_probe = compile_probe(&dir.join("probe"));
    Rootfs {
        dir: dir.to_path_buf(),
        has_probe,
    }
}

fn compile_probe(out: &Path) -> bool {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common_sandbox/probe.c");
    Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(out)
        .arg(source)
        .status()
        .is_ok_and(|s| s.success())
}

/// Path, size, mode and mtime of everything under `dir` (to prove a lower dir untouched).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                (m.len(), m.mode(), m.mtime()),
            )
        })
        .collect()
}

/// Everything a finished run may have left behind: entries under the runtime root's state and
/// bundle dirs, mounts under `scratch_root`, and cgroup dirs named after the container.
pub fn leftovers(
    runtime_root: &Path,
    scratch_root: &Path,
    container_id: Option<&str>,
) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["state", "bundles"] {
        if let Ok(entries) = std::fs::read_dir(runtime_root.join(sub)) {
            for e in entries.flatten() {
                found.push(format!("state: {}", e.path().display()));
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let scratch = scratch_root.to_string_lossy();
    for line in mountinfo.lines() {
        if line
            .split(' ')
            .nth(4)
            .is_some_and(|mp| mp.starts_with(&*scratch))
        {
            found.push(format!("mount: {line}"));
        }
    }
    if let Some(id) = container_id {
        found.extend(
            cgroup_dirs(id)
                .into_iter()
                .map(|p| format!("cgroup: {}", p.display())),
        );
    }
    found
}

pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup/fissile-oci").join(id)];
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            dirs.push(h.path().join("fissile-oci").join(id));
        }
    }
    dirs.into_iter().filter(|d| d.exists()).collect()
}

/// Pids of host processes whose command line starts with `needle` (e.g. "sleep 4711").
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with(needle) && pid != std::process::id() as i32 {
            pids.push(pid);
        }
    }
    pids
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entries left in a dir that should be empty (a CLI's TMPDIR after its runs).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What a CLI run gave.
#[derive(Debug)]
pub struct CliResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `fissile-oci run` with a private runtime root and TMPDIR (where its default scratch dirs
/// go: tests check it is empty afterwards), optionally as another user.
pub struct Cli {
    pub exe: PathBuf,
    pub runtime_root: PathBuf,
    pub tmpdir: PathBuf,
    pub user: Option<(u32, u32)>,
}

impl Cli {
    pub fn command(&self, run_args: &[&str]) -> Command {
        let mut command = match self.user {
            None => Command::new(&self.exe),
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(&self.exe);
                c
            }
        };
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", "/nonexistent")
            .env("TMPDIR", &self.tmpdir)
            .arg("run")
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .args(run_args);
        command
    }

    pub fn run(&self, run_args: &[&str]) -> CliResult {
        let out = self.command(run_args).output().unwrap();
        CliResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A TCP server on the host's 127.0.0.1 that counts the connections it accepts (for at most
/// `life`), to show what the sandbox can and cannot reach.
pub struct HostServer {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HostServer {
    pub fn start(life: Duration) -> HostServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + life;
            while Instant::now() < until {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = std::io::Write::write_all(&mut stream, b"host-server\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostServer { port, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Lists the interfaces, tries the host's server, and checks loopback inside: a web server on
/// the sandbox's own 127.0.0.1, fetched with retries while it starts (slow on a loaded machine).
/// (No `wget -T`: busybox's segfaults with it, on the host too.)
pub fn network_script(host_port: u16) -> String {
    format!(
        "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); \
         nc -w 2 127.0.0.1 {host_port} </dev/null && echo HOST-REACHED || echo host-unreachable; \
         mkdir -p /tmp/www; echo ping > /tmp/www/index.html; \
         httpd -p 127.0.0.1:8080 -h /tmp/www; \
         for i in $(seq 1 100); do \
           got=$(wget -q -O - http://127.0.0.1:8080/ 2>/dev/null) && break; sleep 0.1; \
         done; \
         echo \"loopback got: $got\""
    )
}

/// The shell snippets and expectations shared by the rootful and rootless suites. Each entry:
/// a name, the `sh -c` script, and what its output must contain.
pub fn escape_scripts(
    host_marker: &Path,
    host_pid: u32,
) -> Vec<(&'static str, String, &'static str)> {
    let marker = host_marker.display();
    vec![
        (
            "mount",
            "mount -t tmpfs none /mnt 2>&1 && echo ALLOWED || echo denied".to_string(),
            "denied",
        ),
        (
            "proc sys write",
            "(echo evil > /proc/sys/kernel/hostname) 2>&1 && echo ALLOWED || echo denied".into(),
            "denied",
        ),
        (
            "sysrq",
            "(echo h > /proc/sysrq-trigger) 2>&1 && echo ALLOWED || echo denied".into(),
            "denied",
        ),
        (
            "insmod",
            "insmod /bin/busybox 2>&1 && echo ALLOWED || echo denied".into(),
            "denied",
        ),
        (
            "host file via /proc/1/root",
            format!("cat /proc/1/root{marker} 2>&1 && echo ALLOWED || echo denied"),
            "denied",
        ),
        (
            "host file directly",
            format!("cat {marker} 2>&1 && echo ALLOWED || echo denied"),
            "denied",
        ),
        (
            "host process memory",
            format!("cat /proc/{host_pid}/mem 2>&1 | head -c 1 && echo; cat /proc/{host_pid}/cmdline 2>/dev/null | grep -q sandbox && echo ALLOWED || echo denied"),
            "denied",
        ),
    ]
}

/// Probe modes (need /probe) and the output that shows the attempt failed.
pub fn probe_checks(host_marker: &Path, host_pid: u32) -> Vec<Vec<String>> {
    vec![
        vec!["/probe".into(), "mount".into()],
        vec!["/probe".into(), "module".into()],
        vec!["/probe".into(), "ptrace".into(), host_pid.to_string()],
        vec!["/probe".into(), "ptrace-child".into()],
        vec!["/probe".into(), "unshare".into()],
        vec![
            "/probe".into(),
            "chroot".into(),
            host_marker.display().to_string(),
        ],
    ]
}

/// CapEff of the kept set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE.
pub const EXPECTED_CAPS: u64 = 0x2004_05fb;

pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

pub fn cap_bit(n: u32) -> u64 {
    1 << n
}
