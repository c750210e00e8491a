//! An unprivileged user for the rootless tests: as root, `fissile-oci-test` is created once (a
//! system user, with `/etc/subuid` and `/etc/subgid` ranges of 65536 ids), and commands run as
//! that user through `setpriv`, with a clean environment.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const USER: &str = "fissile-oci-test";

/// Where the test user's subordinate ids start when the test adds its ranges.
pub const SUBORDINATE_START: u32 = 3_000_000;

/// Creates the test user once per test binary; its uid and gid.
pub fn test_user() -> Result<(u32, u32), String> {
    static USER_IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    USER_IDS
        .get_or_init(|| {
            if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
                let status = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        USER,
                    ])
                    .status()
                    .map_err(|e| format!("useradd: {e}"))?;
                if !status.success() {
                    return Err(format!("useradd {USER} failed"));
                }
            }
            for file in ["/etc/subuid", "/etc/subgid"] {
                let content = std::fs::read_to_string(file).unwrap_or_default();
                if !content.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
                    let mut content = content;
                    if !content.is_empty() && !content.ends_with('\n') {
                        content.push('\n');
                    }
                    content.push_str(&format!("{USER}:{SUBORDINATE_START}:65536\n"));
                    std::fs::write(file, content).map_err(|e| format!("{file}: {e}"))?;
                }
            }
            let user = nix::unistd::User::from_name(USER)
                .ok()
                .flatten()
                .ok_or("user not found after useradd")?;
            Ok((user.uid.as_raw(), user.gid.as_raw()))
        })
        .clone()
}

/// The test user's first subordinate uid.
pub fn subuid_start() -> u32 {
    let content = std::fs::read_to_string("/etc/subuid").unwrap();
    fissile_oci::sandbox::parse_subid(&content, Some(USER), u32::MAX)
        .expect("the test user has a subuid range")
        .start
}

/// `setpriv` as `(uid, gid)` with no supplementary groups, then `program`.
pub fn as_user(uid: u32, gid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null());
    command
}

/// Whether the user can reach (search) `path` and every dir above it.
pub fn user_can_reach(uid: u32, gid: u32, path: &Path) -> bool {
    as_user(uid, gid, "test")
        .arg("-x")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// The fissile-oci binary, or a copy in `tmp` the test user can execute when the build dir is
/// not reachable for it (a checkout under /root).
pub fn user_binary(uid: u32, gid: u32, tmp: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_fissile-oci"));
    if user_can_reach(uid, gid, bin) {
        return bin.to_path_buf();
    }
    let copy = tmp.join("fissile-oci");
    std::fs::copy(bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `dir` (created), owned by the user.
pub fn user_dir(uid: u32, gid: u32, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    nix::unistd::chown(dir, Some(uid.into()), Some(gid.into())).unwrap();
    dir.to_path_buf()
}

pub fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(dir) {
        let path = entry.unwrap().into_path();
        nix::unistd::fchownat(
            None,
            &path,
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}
