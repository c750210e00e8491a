//! Each release kind is read into the same model, and `inspect --json` keeps its contract.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

fn packages() -> Vec<ArchivePackage> {
    vec![
        ArchivePackage::new("libz", &[]),
        ArchivePackage::new("app", &["libz", "tool"]),
        ArchivePackage::new("tool", &[]),
    ]
}

fn jobs() -> Vec<ArchiveJob> {
    vec![
        ArchiveJob::new("web", &["app"]),
        ArchiveJob::new("cli", &["tool"]),
    ]
}

fn check_contract(json: &Value, name: &str, version: &str) {
    let releases = json["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["name"], name);
    assert_eq!(releases[0]["version"], version);
    let pkgs = releases[0]["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 3);
    let expected = packages();
    for p in &expected {
        let got = pkgs.iter().find(|x| x["name"] == p.name.as_str()).unwrap();
        assert_eq!(got["fingerprint"], p.fingerprint.as_str());
        assert_eq!(got["sha1"], sha1_hex(&p.archive).as_str());
        assert_eq!(got["dependencies"], serde_json::json!(p.dependencies));
        let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            4,
            "package keys are exactly name, fingerprint, sha1, dependencies: {keys:?}"
        );
    }
    let order: Vec<&str> = json["compile_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["libz", "tool", "app"]);
}

#[test]
fn final_tarball_gzip_with_dot_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let path = final_tarball(tmp.path(), "demo", &packages(), &jobs(), true, true);
    check_contract(&inspect_json(&[path.as_os_str()]), "demo", "1.2");
}

#[test]
fn final_tarball_plain_tar_without_dot_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let path = final_tarball(tmp.path(), "demo", &packages(), &jobs(), false, false);
    // The kind is told by magic bytes, not by the misleading .tgz name.
    check_contract(&inspect_json(&[path.as_os_str()]), "demo", "1.2");
}

#[test]
fn extracted_tarball_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = extracted_release(tmp.path(), "demo", &packages(), &jobs());
    check_contract(&inspect_json(&[path.as_os_str()]), "demo", "1.2");
}

#[test]
fn dev_release_latest_version_by_default_and_pick_with_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let old = vec![ArchivePackage::new("libz", &[])];
    let new = packages();
    // 0+dev.10 is newer than 0+dev.9: versions compare numerically, not as strings.
    let (root, cache) = dev_release(
        tmp.path(),
        "demo",
        &[("0+dev.9", &old), ("0+dev.10", &new)],
        &jobs(),
    );
    let json = inspect_json(&[
        root.as_os_str(),
        OsStr::new("--bosh-cache"),
        cache.as_os_str(),
    ]);
    check_contract(&json, "demo", "0+dev.10");
    let json = inspect_json(&[
        root.as_os_str(),
        OsStr::new("--bosh-cache"),
        cache.as_os_str(),
        OsStr::new("--release-version"),
        OsStr::new("0+dev.9"),
    ]);
    assert_eq!(json["releases"][0]["version"], "0+dev.9");
    assert_eq!(json["compile_order"], serde_json::json!(["libz"]));

    let err = inspect_fails(&[
        root.as_os_str(),
        OsStr::new("--bosh-cache"),
        cache.as_os_str(),
        OsStr::new("--release-version"),
        OsStr::new("7"),
    ]);
    assert!(err.contains("0+dev.9") && err.contains("\"7\""), "{err}");
}

#[test]
fn dev_release_bosh_cache_from_home_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = dev_release(tmp.path(), "demo", &[("1+dev.1", &packages())], &jobs());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".bosh")).unwrap();
    std::fs::rename(&cache, home.join(".bosh/cache")).unwrap();
    let out = fissile()
        .env("HOME", &home)
        .args(["inspect", "--json"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_release_missing_archive_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = dev_release(tmp.path(), "demo", &[("1+dev.1", &packages())], &jobs());
    let app = &packages()[1];
    std::fs::remove_file(cache.join(sha1_hex(&app.archive))).unwrap();
    let err = inspect_fails(&[
        root.as_os_str(),
        OsStr::new("--bosh-cache"),
        cache.as_os_str(),
    ]);
    assert!(
        err.contains("\"app\"")
            && err.contains(&sha1_hex(&app.archive))
            && err.contains("bosh-cache"),
        "{err}"
    );
}

#[test]
fn multi_digest_strings_verify_the_strongest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pkgs = packages();
    for p in &mut pkgs {
        p.sha1 = Some(format!(
            "{};sha256:{}",
            sha1_hex(&p.archive),
            sha256_hex(&p.archive)
        ));
    }
    let path = extracted_release(tmp.path(), "demo", &pkgs, &jobs());
    inspect_json(&[path.as_os_str()]);
    // A wrong sha1 next to a right sha256 passes, like bosh: only the strongest is checked.
    pkgs[0].sha1 = Some(format!(
        "{};sha256:{}",
        "0".repeat(40),
        sha256_hex(&pkgs[0].archive)
    ));
    let path = extracted_release(&tmp.path().join("2"), "demo", &pkgs, &jobs());
    inspect_json(&[path.as_os_str()]);
    pkgs[0].sha1 = Some(format!("sha512:{}", "a".repeat(128)));
    let path = extracted_release(&tmp.path().join("3"), "demo", &pkgs, &jobs());
    let err = inspect_fails(&[path.as_os_str()]);
    assert!(err.contains("sha512:") && err.contains("libz.tgz"), "{err}");
}

#[test]
fn source_directory_of_the_example_release() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-release");
    let json = inspect_json(&[example.as_os_str()]);
    assert_eq!(json["releases"][0]["name"], "hello");
    let order: Vec<&str> = json["compile_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 5);
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("libgreet") < pos("greeter") && pos("libcolor") < pos("greeter"));
    assert!(pos("greeter") < pos("hello-bundle") && pos("greet-scripts") < pos("hello-bundle"));
    for p in json["releases"][0]["packages"].as_array().unwrap() {
        assert_eq!(p["fingerprint"].as_str().unwrap().len(), 40);
        assert_eq!(p["sha1"], Value::Null);
    }
}

#[test]
fn human_table_lists_packages_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = final_tarball(tmp.path(), "demo", &packages(), &jobs(), true, true);
    let out = fissile().arg("inspect").arg(&path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("demo 1.2 (release tarball"), "{text}");
    assert!(text.contains(&packages()[1].fingerprint), "{text}");
    assert!(text.contains("compile order (3 packages)"), "{text}");
}

#[test]
fn release_flag_takes_comma_separated_paths() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    let a = final_tarball(
        &tmp.path().join("a"),
        "first",
        &packages(),
        &jobs(),
        true,
        true,
    );
    let b = extracted_release(
        tmp.path(),
        "second",
        &[ArchivePackage::new("other", &[])],
        &[],
    );
    let joined = format!("{},{}", a.display(), b.display());
    let json = inspect_json(&[OsStr::new("-r"), OsStr::new(&joined)]);
    assert_eq!(json["releases"].as_array().unwrap().len(), 2);
}
