//! `fissile-oci doctor` on this host, as root and as an unprivileged user: the checks that apply,
//! their findings as JSON, and exit 125 when compiles cannot run.

#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod common_cli;
mod common_skip;

use common_cli::fissile;

fn checks(stdout: &[u8]) -> (bool, Vec<(String, String)>) {
    let v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    let checks = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v["ready"].as_bool().unwrap(), checks)
}

#[test]
fn an_unwritable_work_dir_makes_the_host_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = fissile(&file.join("work"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let (ready, checks) = checks(&out.stdout);
    assert!(!ready);
    assert!(
        checks.contains(&("work dir".into(), "fail".into())),
        "{checks:?}"
    );
}

#[test]
fn this_host_can_compile_as_root_and_as_a_user() {
    if !common_cli::root_or_skip("the unprivileged run switches user, which needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fissile(&tmp.path().join("root-work"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let (ready, root_checks) = checks(&out.stdout);
    assert!(ready, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0));
    let names: Vec<&str> = root_checks.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "proc",
        "cgroups",
        "overlayfs",
        "seccomp",
        "work dir",
        "runtime dir",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(!names.contains(&"subordinate ids"), "root needs none");

    // The same binary as nobody (65534, no subordinate ids): rootless checks run, the overlay
    // is really mounted in a user namespace.
    let bin = tmp.path().join("fissile-oci");
    std::fs::copy(env!("CARGO_BIN_EXE_fissile-oci"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--work-dir")
        .arg(tmp.path().join("user-work"))
        .args(["doctor", "--json"])
        .env("HOME", "/nonexistent")
        .env_remove("XDG_RUNTIME_DIR")
        .current_dir(Path::new("/"))
        .output()
        .unwrap();
    let (ready, user_checks) = checks(&out.stdout);
    let status = |name: &str| {
        user_checks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    assert_eq!(status("subordinate ids"), "warn", "{user_checks:?}");
    assert_eq!(status("user namespaces"), "ok", "{user_checks:?}");
    assert_eq!(status("overlayfs"), "ok", "{user_checks:?}");
    assert!(ready, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0));
}
