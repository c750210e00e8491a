//! Debian rootfs trees from the host's configured apt mirror, with mmdebstrap (root, or rootless
//! through `--mode=unshare` with /etc/subuid ranges) or debootstrap (root only) as a fallback.
//!
//! Rootless, mmdebstrap's unshare mode writes the tree as the user's subordinate ids: its root
//! is the range's first id. The bare user cannot read or remove much of it, so [`build`] stops
//! there and says how the tree's owners map ([`Bootstrapped`]); the caller normalises it and
//! packs it where those ids are mapped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::BuildError;

#[derive(Clone, Debug)]
pub struct DebianOptions {
    pub suite: String,
    /// Mirror URI; `None` takes the host's apt source for the suite, else deb.debian.org.
    pub mirror: Option<String>,
    pub packages: Vec<String>,
    /// Extra `--aptopt` settings; the host's `Acquire::` settings are added automatically.
    pub apt_options: Vec<String>,
    /// A descriptor the bootstrapper and its children inherit: a lock held through it (the
    /// work dir's) then lasts until the last of them has exited, even if the caller dies first.
    pub hold_open: Option<std::os::fd::RawFd>,
}

/// The host's Debian codename (`VERSION_CODENAME` in /etc/os-release).
pub fn host_suite() -> Option<String> {
    let text = fs_err::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The URI of the host's apt source that serves `suite` (deb822 `.sources` or one-line lists).
pub fn host_mirror(suite: &str) -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(dir) = fs_err::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        texts.extend(
            paths
                .iter()
                .filter_map(|p| fs_err::read_to_string(p).ok().map(|t| (p.clone(), t))),
        );
    }
    if let Ok(t) = fs_err::read_to_string("/etc/apt/sources.list") {
        texts.push((PathBuf::from("/etc/apt/sources.list"), t));
    }
    for (path, text) in texts {
        if path.extension().is_some_and(|e| e == "sources") {
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                };
                let types = field("Types:").unwrap_or_default();
                let suites = field("Suites:").unwrap_or_default();
                if types.split_whitespace().any(|t| t == "deb")
                    && suites.split_whitespace().any(|s| s == suite)
                {
                    if let Some(uri) =
                        field("URIs:").and_then(|u| u.split_whitespace().next().map(str::to_string))
                    {
                        return Some(uri);
                    }
                }
            }
        } else {
            for line in text.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == suite {
                    return Some(words[1].to_string());
                }
            }
        }
    }
    None
}

/// `Acquire::…` settings from the host's apt.conf.d (e.g. proxies, snapshot validity), which the
/// bootstrap's own apt needs to reach the same mirror.
fn host_acquire_options() -> Vec<String> {
    let Ok(dir) = fs_err::read_dir("/etc/apt/apt.conf.d") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| fs_err::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("Acquire::") && l.ends_with(';'))
                .map(|l| l.trim_end_matches(';').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Who wrote a bootstrapped tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrapped {
    /// Root, in the caller's own user namespace: owners are what they are.
    AsRoot,
    /// mmdebstrap's unshare mode: the tree's uid N is the caller's `uids.0 + N` for `uids.1`
    /// ids, and likewise for gids.
    Unshared { uids: (u32, u32), gids: (u32, u32) },
}

/// The subordinate uid and gid ranges (start, count) mmdebstrap's unshare mode maps for
/// `user`: the first `/etc/subuid` and `/etc/subgid` lines for the user's *name* (mmdebstrap
/// reads both files by the user name, never by number).
pub fn unshare_id_ranges(
    user: &str,
    subuid: &str,
    subgid: &str,
) -> Option<((u32, u32), (u32, u32))> {
    let find = |content: &str| {
        content.lines().find_map(|line| {
            let mut fields = line.trim().splitn(3, ':');
            if fields.next()? != user {
                return None;
            }
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            Some((start, count))
        })
    };
    Some((find(subuid)?, find(subgid)?))
}

/// Bootstraps `suite` into `target` (must not exist or be empty), not yet normalised (see
/// [`crate::normalize`]); says who wrote it. `progress` gets each line the bootstrapper prints.
/// `stop` is asked every few tenths of a second: once it says yes, the bootstrapper's process
/// group is stopped and this returns [`BuildError::Interrupted`] when it has exited. In unshare
/// mode that is SIGKILL (its mounts live in its own mount namespace, and SIGTERM would only make
/// mmdebstrap wait for the apt or dpkg run in progress, a minute or more); as root, SIGTERM, so
/// that mmdebstrap unmounts what it mounted in the tree.
pub fn build(
    options: &DebianOptions,
    target: &Path,
    progress: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<Bootstrapped, BuildError> {
    let mirror = options
        .mirror
        .clone()
        .or_else(|| host_mirror(&options.suite))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let root = is_root();
    let written_by = if root {
        Bootstrapped::AsRoot
    } else {
        unshared_by()?
    };
    let mut cmd;
    if have("mmdebstrap") {
        cmd = Command::new("mmdebstrap");
        cmd.arg(if root {
            "--mode=root"
        } else {
            "--mode=unshare"
        })
        .arg("--variant=minbase")
        .arg("--format=directory");
        if !options.packages.is_empty() {
            cmd.arg(format!("--include={}", options.packages.join(",")));
        }
        for opt in host_acquire_options()
            .iter()
            .chain(options.apt_options.iter())
        {
            cmd.arg(format!("--aptopt={opt}"));
        }
        cmd.arg(&options.suite).arg(target).arg(&mirror);
    } else if have("debootstrap") && root {
        cmd = Command::new("debootstrap");
        cmd.arg("--variant=minbase");
        if !options.packages.is_empty() {
            cmd.arg(format!("--include={}", options.packages.join(",")));
        }
        cmd.arg(&options.suite).arg(target).arg(&mirror);
    } else {
        return Err(BuildError::MissingTool {
            tool: "mmdebstrap".into(),
            hint: "install the Debian package mmdebstrap (debootstrap works too, as root)".into(),
        });
    }
    let described = format!("{cmd:?}");
    // A bootstrapper that outlived us would go on writing into a staging dir that a later
    // `cache clean` is removing: it gets SIGTERM (and cleans up) when the thread that started
    // it ends, which is when the process does, however it dies; and it holds `hold_open`
    // (the work dir's lock) until it is gone. Its own process group lets `stop` reach its
    // children too.
    let hold_open = options.hold_open;
    cmd.process_group(0);
    // SAFETY: between fork and exec the child only calls prctl and fcntl, which are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = hold_open {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::io(target))?;
    // Both streams carry progress; merge them through one reader thread per stream.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }));
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut stopped = false;
    loop {
        let line = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !stopped && stop() {
                    stopped = true;
                    let signal = if root { libc::SIGTERM } else { libc::SIGKILL };
                    // The child is not reaped before `wait` below: its process group (its pid)
                    // is still its own.
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        progress(&line);
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(BuildError::io(target))?;
    if stopped {
        return Err(BuildError::Interrupted {
            tool: cmd.get_program().to_string_lossy().into_owned(),
        });
    }
    if !status.success() {
        return Err(BuildError::CommandFailed {
            command: described,
            status: status.to_string(),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(written_by)
}

/// The ranges mmdebstrap's unshare mode will map for the user running it.
fn unshared_by() -> Result<Bootstrapped, BuildError> {
    let user = Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok_or_else(|| {
            BuildError::Invalid(
                "cannot tell the user name (`id -un` failed): mmdebstrap's unshare mode needs it"
                    .into(),
            )
        })?;
    let read = |path: &str| fs_err::read_to_string(path).unwrap_or_default();
    let (uids, gids) = unshare_id_ranges(&user, &read("/etc/subuid"), &read("/etc/subgid"))
        .ok_or_else(|| {
            BuildError::Invalid(format!(
                "mmdebstrap's unshare mode needs lines for {user} in /etc/subuid and /etc/subgid: \
                 sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
            ))
        })?;
    Ok(Bootstrapped::Unshared { uids, gids })
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid; no libc needed for that.
    fs_err::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshare_ranges_are_found_by_user_name_only() {
        let subuid = "1001:5000:10\nalice:100000:65536\nalice:200000:65536\n";
        let subgid = "alice:300000:65536\n";
        assert_eq!(
            unshare_id_ranges("alice", subuid, subgid),
            Some(((100000, 65536), (300000, 65536)))
        );
        assert_eq!(unshare_id_ranges("bob", subuid, subgid), None);
        assert_eq!(unshare_id_ranges("alice", subuid, ""), None);
        assert_eq!(
            unshare_id_ranges("1001", subuid, "1001:1:2"),
            Some(((5000, 10), (1, 2)))
        );
    }

    #[test]
    fn host_suite_and_mirror_are_read_from_the_host() {
        // Only meaningful on Debian hosts; elsewhere there is nothing to read.
        if let Some(suite) = host_suite() {
            assert!(!suite.contains('"'));
            if let Some(m) = host_mirror(&suite) {
                assert!(
                    m.starts_with("http") || m.starts_with("file:") || m.starts_with("mirror+"),
                    "{m}"
                );
            }
        } else {
            crate::common_skip::skip("not a Debian host (no VERSION_CODENAME)");
        }
    }
}
