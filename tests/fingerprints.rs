//! Fingerprints of source-directory packages against chunk strings spelled out here, on trees the
//! tests generate: both digest eras, symlinks, exec bits, excluded_files, blobs (downloaded and
//! recorded only), pre_packaging and spec.lock.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::path::Path;

use sha1::Digest as _;

fn fp_sha1(text: &str) -> String {
    sha1_hex(text.as_bytes())
}

fn fp_sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn s256(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

fn package_fingerprints(release: &Path) -> Vec<(String, String)> {
    let json = inspect_json(&[release.as_os_str()]);
    json["releases"][0]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["fingerprint"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fingerprint_of(release: &Path, name: &str) -> String {
    package_fingerprints(release)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// A release whose `pkg` package exercises every chunk rule.
fn rich_release(root: &Path) {
    write(&root.join("config/final.yml"), b"name: vectors\n", 0o644);
    write(
        &root.join("packages/pkg/spec"),
        b"---\nname: pkg\ndependencies: [zeta, alpha]\nfiles:\n- app/**/*\n- vendor.tgz\nexcluded_files:\n- app/*.log\n",
        0o644,
    );
    write(
        &root.join("packages/pkg/packaging"),
        b"make install\n",
        0o755,
    );
    write(
        &root.join("packages/pkg/pre_packaging"),
        b"echo pre\n",
        0o644,
    );
    write(&root.join("src/app/main.c"), b"int main(){}\n", 0o644);
    write(&root.join("src/app/bin/run"), b"#!/bin/sh\n", 0o750);
    write(&root.join("src/app/.hidden"), b"dot\n", 0o644);
    write(&root.join("src/app/debug.log"), b"excluded\n", 0o644);
    std::os::unix::fs::symlink("main.c", root.join("src/app/link.c")).unwrap();
    write(&root.join("blobs/vendor.tgz"), b"blob bytes", 0o644);
    // Same name in src/ and blobs/: src wins.
    write(&root.join("blobs/app/main.c"), b"shadowed", 0o644);
    for dep in ["alpha", "zeta"] {
        write(
            &root.join(format!("packages/{dep}/spec")),
            format!("name: {dep}\nfiles: []\n").as_bytes(),
            0o644,
        );
        write(
            &root.join(format!("packages/{dep}/packaging")),
            b"true\n",
            0o644,
        );
    }
}

/// The chunk text for `pkg`, written out by hand from bosh-cli's fingerprint.go.
fn rich_chunks(digest: impl Fn(&[u8]) -> String) -> String {
    let mut text = String::from("v2");
    // Sorted bytewise: ".hidden" < "bin/run" < ... ; paths relative to src/ or blobs/.
    for (path, content, mode) in [
        ("app/.hidden", &b"dot\n"[..], "100644"),
        ("app/bin/run", b"#!/bin/sh\n", "100755"),
        ("app/link.c", b"main.c", "symlink"),
        ("app/main.c", b"int main(){}\n", "100644"),
        ("packaging", b"make install\n", ""),
        ("pre_packaging", b"echo pre\n", ""),
        ("vendor.tgz", b"blob bytes", "100644"),
    ] {
        text.push_str(path);
        text.push_str(&digest(content));
        text.push_str(mode);
    }
    text.push_str("alpha,zeta");
    text
}

#[test]
fn sha1_era_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    assert_eq!(
        fingerprint_of(tmp.path(), "pkg"),
        fp_sha1(&rich_chunks(sha1_hex))
    );
    // No dependencies: no trailing chunk at all.
    let alpha = format!("v2packaging{}", sha1_hex(b"true\n"));
    assert_eq!(fingerprint_of(tmp.path(), "alpha"), fp_sha1(&alpha));
}

#[test]
fn sha256_era_when_the_release_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    let expected = fp_sha256(&rich_chunks(s256));
    // bosh recorded this package's sha256-era fingerprint in .final_builds: use that era.
    write(
        &tmp.path().join(".final_builds/packages/pkg/index.yml"),
        format!("---\nbuilds:\n  {expected}:\n    version: {expected}\n    sha1: sha256:{}\nformat-version: '2'\n", "a".repeat(64)).as_bytes(),
        0o644,
    );
    assert_eq!(fingerprint_of(tmp.path(), "pkg"), expected);
    // Packages with no record follow the era of the release's latest final release.
    assert_eq!(fingerprint_of(tmp.path(), "alpha").len(), 40);
    write(
        &tmp.path().join("releases/vectors/index.yml"),
        b"builds:\n  x: {version: '3'}\n  y: {version: '12'}\n",
        0o644,
    );
    write(
        &tmp.path().join("releases/vectors/vectors-12.yml"),
        format!("name: vectors\nversion: '12'\npackages:\n- name: alpha\n  fingerprint: {}\n  sha1: x\n", "b".repeat(64)).as_bytes(),
        0o644,
    );
    let alpha = format!("v2packaging{}", s256(b"true\n"));
    assert_eq!(fingerprint_of(tmp.path(), "alpha"), fp_sha256(&alpha));
}

#[test]
fn a_recorded_sha1_fingerprint_keeps_the_sha1_era() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    let expected = fp_sha1(&rich_chunks(sha1_hex));
    write(
        &tmp.path().join("releases/vectors/index.yml"),
        b"builds:\n  x: {version: '1'}\n",
        0o644,
    );
    write(
        &tmp.path().join("releases/vectors/vectors-1.yml"),
        format!(
            "name: vectors\nversion: '1'\npackages:\n- name: pkg\n  fingerprint: {}\n  sha1: x\n",
            "b".repeat(64)
        )
        .as_bytes(),
        0o644,
    );
    write(
        &tmp.path().join(".dev_builds/packages/pkg/index.yml"),
        format!("builds:\n  {expected}:\n    version: {expected}\n").as_bytes(),
        0o644,
    );
    assert_eq!(fingerprint_of(tmp.path(), "pkg"), expected);
}

#[test]
fn blob_known_only_from_blobs_yml() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    std::fs::remove_file(tmp.path().join("blobs/vendor.tgz")).unwrap();
    write(
        &tmp.path().join("config/blobs.yml"),
        format!(
            "vendor.tgz:\n  size: 10\n  object_id: abc\n  sha: {}\n",
            sha1_hex(b"blob bytes")
        )
        .as_bytes(),
        0o644,
    );
    assert_eq!(
        fingerprint_of(tmp.path(), "pkg"),
        fp_sha1(&rich_chunks(sha1_hex))
    );
}

#[test]
fn changing_content_mode_or_link_target_changes_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    let base = fingerprint_of(tmp.path(), "pkg");
    let main = tmp.path().join("src/app/main.c");
    std::fs::set_permissions(&main, std::os::unix::fs::PermissionsExt::from_mode(0o744)).unwrap();
    let exec = fingerprint_of(tmp.path(), "pkg");
    assert_ne!(base, exec);
    // Only "any exec bit" matters, like git: 0o711 is the same as 0o744.
    std::fs::set_permissions(&main, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    assert_eq!(exec, fingerprint_of(tmp.path(), "pkg"));
    std::fs::remove_file(tmp.path().join("src/app/link.c")).unwrap();
    std::os::unix::fs::symlink("bin/run", tmp.path().join("src/app/link.c")).unwrap();
    assert_ne!(exec, fingerprint_of(tmp.path(), "pkg"));
    // Excluded files do not count.
    write(&tmp.path().join("src/app/other.log"), b"x", 0o644);
    let before = fingerprint_of(tmp.path(), "pkg");
    write(&tmp.path().join("src/app/other.log"), b"y", 0o644);
    assert_eq!(before, fingerprint_of(tmp.path(), "pkg"));
}

#[test]
fn spec_lock_fingerprint_is_used_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    rich_release(tmp.path());
    let pinned = "c".repeat(40);
    write(
        &tmp.path().join("packages/pkg/spec.lock"),
        format!("name: pkg\nfingerprint: {pinned}\ndependencies: [alpha]\n").as_bytes(),
        0o644,
    );
    assert_eq!(fingerprint_of(tmp.path(), "pkg"), pinned);
}

#[test]
fn files_through_a_symlinked_directory_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        &root.join("packages/p/spec"),
        b"name: p\nfiles:\n- real/*\n- linked/*\n",
        0o644,
    );
    write(&root.join("packages/p/packaging"), b"x", 0o644);
    write(&root.join("src/real/a"), b"a", 0o644);
    std::os::unix::fs::symlink("real", root.join("src/linked")).unwrap();
    // `linked/*` reaches only files through a symlinked dir: bosh finds no packageable file.
    let err = inspect_fails(&[root.as_os_str()]);
    assert!(
        err.contains("linked/*") && err.contains("matches no file"),
        "{err}"
    );
}

#[test]
fn spec_errors_name_the_spec_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        &root.join("packages/p/spec"),
        b"name: p\nfiles:\n- missing/*\n",
        0o644,
    );
    write(&root.join("packages/p/packaging"), b"x", 0o644);
    let err = inspect_fails(&[root.as_os_str()]);
    assert!(
        err.contains("packages/p/spec") && err.contains("missing/*"),
        "{err}"
    );

    std::fs::remove_file(root.join("packages/p/packaging")).unwrap();
    write(&root.join("packages/p/spec"), b"name: p\n", 0o644);
    let err = inspect_fails(&[root.as_os_str()]);
    assert!(
        err.contains("packages/p/packaging") && err.contains("packaging script"),
        "{err}"
    );

    write(&root.join("packages/p/packaging"), b"x", 0o644);
    write(
        &root.join("packages/p/spec"),
        b"name: p\nfiles: [packaging]\n",
        0o644,
    );
    write(&root.join("src/packaging"), b"x", 0o644);
    let err = inspect_fails(&[root.as_os_str()]);
    assert!(err.contains("must not include its packaging"), "{err}");

    write(
        &root.join("packages/p/spec"),
        b"name: p\nfiles: ['../../etc/*']\n",
        0o644,
    );
    let err = inspect_fails(&[root.as_os_str()]);
    assert!(err.contains("outside src/"), "{err}");
}
