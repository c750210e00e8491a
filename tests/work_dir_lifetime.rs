//! A work dir that lives for months on a CI runner: runs leave nothing under `runs/`, a killed
//! run's leftovers go at the next `cache gc`, `gc` waits for a running compile, and
//! `compile --gc-max-size` keeps the work dir under a quota. Real compiles on a busybox base.
//! (The eviction policy itself is tested against a fake sandbox in tests/orchestration.rs.)

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
mod common_cli;
mod common_skip;

use common::{final_tarball, sha1_hex, tgz, ArchivePackage};
use common_cli::{fissile, succeed};

fn root_or_skip() -> bool {
    common_cli::root_or_skip("compiles run sandboxes as root here; tests/orchestration.rs covers the same rules without a sandbox")
}

/// A work dir with the busybox base built.
fn work_dir(tmp: &Path) -> PathBuf {
    let work = tmp.join("work");
    succeed(fissile(&work).args(["-q", "base", "build", "--from", "busybox"]));
    work
}

/// A release tarball of two packages whose fingerprints depend on `version`, so every version
/// compiles afresh; each packaging script runs `script`.
fn tarball(dir: &Path, name: &str, version: u32, script: &str) -> PathBuf {
    let packages: Vec<ArchivePackage> = ["lower", "upper"]
        .iter()
        .map(|pkg| {
            let mut p = ArchivePackage::new(pkg, if *pkg == "upper" { &["lower"] } else { &[] });
            p.fingerprint = sha1_hex(format!("{name}/{pkg}/{version}").as_bytes());
            p.archive = tgz(
                &[
                    ("packaging", script.as_bytes(), 0o644),
                    (&format!("{pkg}/v"), version.to_string().as_bytes(), 0o644),
                ],
                true,
            );
            p
        })
        .collect();
    let dir = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    final_tarball(&dir, name, &packages, &[], true, true)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn twenty_compiles_of_release_tarballs_leave_no_run_dir_behind() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = work_dir(tmp.path());
    for version in 0..20 {
        let release = tarball(
            tmp.path(),
            "tarred",
            version,
            "cat */v > $BOSH_INSTALL_TARGET/v\n",
        );
        let out = succeed(
            fissile(&work)
                .arg("compile")
                .arg(&release)
                .args(["--base", "busybox"]),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("2 compiled"), "{stderr}");
        assert_eq!(
            entries(&work.join("runs")),
            Vec::<String>::new(),
            "after compile {version}"
        );
    }
    // A failure leaves nothing either, unless --keep-sandbox asks; then `cache gc` removes
    // what was kept once the run is over.
    let failing = tarball(tmp.path(), "failing", 0, "exit 3\n");
    let out = fissile(&work)
        .arg("compile")
        .arg(&failing)
        .args(["--base", "busybox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(entries(&work.join("runs")), Vec::<String>::new());
    let out = fissile(&work)
        .arg("compile")
        .arg(&failing)
        .args(["--base", "busybox", "--keep-sandbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let runs = entries(&work.join("runs"));
    assert_eq!(runs.len(), 1, "the kept scratch dir's run: {runs:?}");
    let run = work.join("runs").join(&runs[0]);
    let kept = entries(&run);
    assert!(kept.iter().any(|e| e.starts_with("lower-")), "{kept:?}");
    assert!(!kept.iter().any(|e| e.starts_with("archives-")), "{kept:?}");
    let gc = succeed(fissile(&work).args(["cache", "gc"]));
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("1 abandoned run dirs"),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_eq!(entries(&work.join("runs")), Vec::<String>::new());
}

#[test]
fn a_killed_compile_leaves_a_run_dir_that_the_next_gc_removes() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = work_dir(tmp.path());
    let release = tarball(tmp.path(), "slow", 0, "sleep 60\n");
    let mut child = fissile(&work)
        .arg("compile")
        .arg(&release)
        .args(["--base", "busybox"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until its package is compiling (its scratch dir is there), then kill it outright.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let found = entries(&work.join("runs")).into_iter().find(|run| {
            entries(&work.join("runs").join(run))
                .iter()
                .any(|e| e.starts_with("lower-"))
        });
        if let Some(run) = found {
            break work.join("runs").join(run);
        }
        assert!(Instant::now() < deadline, "the compile never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(run.is_dir(), "SIGKILL leaves the run dir");
    let gc = succeed(fissile(&work).args(["cache", "gc"]));
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("1 abandoned run dirs"),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(!run.exists());
    // The next compile is not bothered by what the killed one had started.
    let quick = tarball(tmp.path(), "quick", 0, "true\n");
    succeed(
        fissile(&work)
            .arg("compile")
            .arg(&quick)
            .args(["--base", "busybox"]),
    );
}

#[test]
fn gc_waits_for_the_run_that_holds_the_work_dir() {
    // No sandbox here: the test itself holds the lock, as a compile would.
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let wd = fissile_oci::workdir::WorkDir::at(&work);
    let held = wd.lock(false, |_| {}).unwrap();
    let out = fissile(&work)
        .args(["cache", "gc", "--no-wait"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut waiting = fissile(&work)
        .args(["cache", "gc", "--max-size", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "gc went ahead under a held lock"
    );
    drop(held);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for the work dir lock"));
}

#[test]
fn compile_keeps_the_work_dir_under_its_quota() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = work_dir(tmp.path());
    // Each package leaves 1 MB that gzip cannot shrink.
    let big = "head -c 1000000 /dev/urandom > $BOSH_INSTALL_TARGET/data\n";
    let first = tarball(tmp.path(), "first", 0, big);
    succeed(
        fissile(&work)
            .arg("compile")
            .arg(&first)
            .args(["--base", "busybox"]),
    );
    let list = |work: &Path| -> Vec<serde_json::Value> {
        let out = succeed(fissile(work).args(["cache", "list", "--json"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let after_first = fissile_oci::cache::disk_usage(&work);
    // The second release needs as much again; a quota of what the first took (plus slack for
    // logs and metadata, minus one package) makes room by evicting the first release only.
    let second = tarball(tmp.path(), "second", 0, big);
    let quota = after_first + 500_000;
    let out = succeed(
        fissile(&work)
            .arg("compile")
            .arg(&second)
            .args(["--base", "busybox", "--gc-max-size"])
            .arg(quota.to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("evicted 2 images"), "{stderr}");
    assert!(fissile_oci::cache::disk_usage(&work) <= quota);
    let packages: Vec<String> = list(&work)
        .iter()
        .filter(|e| e["kind"] == "package")
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(packages.len(), 2, "{packages:?}");
    // The survivors are the second release's: compiling it again compiles nothing.
    let again = succeed(
        fissile(&work)
            .arg("compile")
            .arg(&second)
            .args(["--base", "busybox"]),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 compiled, 2 cached"));
}
