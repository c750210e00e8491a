//! Exit codes a CI system can act on: 0 ok, 1 a package failed, 2 bad usage or bad input, 125 the
//! host or environment failed, 130 interrupted (tests/compile.rs and tests/sandbox_cli.rs check
//! 130 and `run`'s own 124-128+N).

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Output;

mod common_cli;
mod common_skip;

use common_cli::fissile;

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn example() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hello-release"
    ))
}

#[test]
fn success_is_0_and_bad_usage_or_input_is_2() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let out = fissile(&work)
        .arg("inspect")
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = fissile(&work)
        .args(["compile", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    // Not a release: the message names the path.
    let out = fissile(&work)
        .arg("inspect")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains(&tmp.path().display().to_string()));
    // A role manifest naming an instance group it does not have.
    let manifest = tmp.path().join("roles.yml");
    std::fs::write(
        &manifest,
        "instance_groups:\n- name: web\n  jobs:\n  - name: hello\n    release: hello\n",
    )
    .unwrap();
    let out = fissile(&work)
        .arg("inspect")
        .arg(example())
        .arg("-m")
        .arg(&manifest)
        .args(["--roles", "db"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no instance group \"db\""),
        "{}",
        stderr(&out)
    );
    let out = fissile(&work)
        .arg("inspect")
        .arg(example())
        .arg("-m")
        .arg(&manifest)
        .args(["--roles", "web"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

#[test]
fn an_unwritable_work_dir_is_the_hosts_problem_125() {
    // A work dir under a regular file can be created by nobody, root included.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = fissile(&file.join("work"))
        .args(["cache", "gc"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("a-file/work"), "{}", stderr(&out));
}

#[test]
fn a_missing_mmdebstrap_is_the_hosts_problem_125() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fissile(&tmp.path().join("work"))
        .args(["base", "build", "--from", "debian:bookworm"])
        // Neither mmdebstrap nor debootstrap can be found.
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("mmdebstrap"), "{}", stderr(&out));
}

#[test]
fn a_failed_package_is_1() {
    if !common_cli::root_or_skip("compiles run sandboxes as root here") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let out = fissile(&work)
        .args(["-q", "base", "build", "--from", "busybox"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rel = tmp.path().join("rel");
    std::fs::create_dir_all(rel.join("packages/broken")).unwrap();
    std::fs::create_dir_all(rel.join("config")).unwrap();
    std::fs::write(rel.join("config/final.yml"), "name: rel\n").unwrap();
    std::fs::write(
        rel.join("packages/broken/spec"),
        "name: broken\nfiles: []\n",
    )
    .unwrap();
    std::fs::write(rel.join("packages/broken/packaging"), "exit 3\n").unwrap();
    let out = fissile(&work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
}
