//! Hostile and broken releases: every one exits 2 with a message that names the file and the
//! problem. Fixtures are generated here.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;

fn pkgs() -> Vec<ArchivePackage> {
    vec![
        ArchivePackage::new("base", &[]),
        ArchivePackage::new("top", &["base"]),
    ]
}

fn jobs() -> Vec<ArchiveJob> {
    vec![ArchiveJob::new("svc", &["top"])]
}

fn inspect_path(path: &Path) -> String {
    inspect_fails(&[path.as_os_str()])
}

#[test]
fn digest_mismatch_in_a_tarball_names_member_expected_and_actual() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = pkgs();
    let expected = "1".repeat(40);
    p[1].sha1 = Some(expected.clone());
    let path = final_tarball(tmp.path(), "r", &p, &jobs(), true, true);
    let err = inspect_path(&path);
    assert!(
        err.contains(&format!("{}:packages/top.tgz", path.display())),
        "{err}"
    );
    assert!(
        err.contains(&expected) && err.contains(&sha1_hex(&p[1].archive)),
        "{err}"
    );
}

#[test]
fn digest_mismatch_of_a_job_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let path = extracted_release(tmp.path(), "r", &pkgs(), &jobs());
    std::fs::write(path.join("jobs/svc.tgz"), b"tampered").unwrap();
    let err = inspect_path(&path);
    assert!(
        err.contains("jobs/svc.tgz") && err.contains("digest mismatch"),
        "{err}"
    );
}

#[test]
fn tampered_archive_in_the_bosh_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = dev_release(tmp.path(), "r", &[("1+dev.1", &pkgs())], &jobs());
    let file = cache.join(sha1_hex(&pkgs()[0].archive));
    std::fs::write(&file, b"not the archive").unwrap();
    let err = inspect_fails(&[
        root.as_os_str(),
        OsStr::new("--bosh-cache"),
        cache.as_os_str(),
    ]);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("digest mismatch"),
        "{err}"
    );
}

#[test]
fn truncated_gzip_release() {
    let tmp = tempfile::tempdir().unwrap();
    let path = final_tarball(tmp.path(), "r", &pkgs(), &jobs(), true, true);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = inspect_path(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn malformed_release_manifest_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let path = extracted_release(tmp.path(), "r", &pkgs(), &jobs());
    std::fs::write(
        path.join("release.MF"),
        b"name: r\npackages: [\n  - {name: x\n",
    )
    .unwrap();
    let err = inspect_path(&path);
    assert!(
        err.contains("release.MF") && err.contains("malformed YAML"),
        "{err}"
    );
}

#[test]
fn malformed_manifest_inside_a_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.tgz");
    std::fs::write(&path, tgz(&[("release.MF", b"name: [oops", 0o644)], true)).unwrap();
    let err = inspect_path(&path);
    assert!(
        err.contains("r.tgz:release.MF") && err.contains("malformed YAML"),
        "{err}"
    );
}

#[test]
fn package_names_that_are_paths_are_refused() {
    for bad in ["../escape", "a/b", ".."] {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = pkgs();
        p[0].name = bad.to_string();
        p[1].dependencies = vec![bad.to_string()];
        let path = extracted_release(tmp.path(), "r", &p[..1], &[]);
        let err = inspect_path(&path);
        assert!(
            err.contains("release.MF") || err.contains(&path.display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(&format!("{bad:?}")) && err.contains("not allowed"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn traversal_entry_in_a_release_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.tgz");
    let mf = release_manifest("r", "1", &pkgs()[..1], &[]);
    // Hand-written header: the tar crate's own path setter refuses `..`.
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_gnu();
        h.set_size(mf.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "release.MF", mf.as_bytes()).unwrap();
        let mut h = tar::Header::new_old();
        let name = b"../../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).unwrap();
        b.finish().unwrap();
    }
    std::fs::write(&path, &tar).unwrap();
    let err = inspect_path(&path);
    assert!(err.contains("r.tgz") && err.contains(".."), "{err}");
    assert!(!tmp.path().parent().unwrap().join("evil").exists());
}

#[test]
fn package_listed_but_missing_from_the_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pkgs();
    let mf = release_manifest("r", "1", &p, &[]);
    let path = tmp.path().join("r.tgz");
    std::fs::write(
        &path,
        tgz(
            &[
                ("release.MF", mf.as_bytes(), 0o644),
                ("packages/base.tgz", &p[0].archive, 0o644),
            ],
            true,
        ),
    )
    .unwrap();
    let err = inspect_path(&path);
    assert!(
        err.contains("packages/top.tgz") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn tarball_without_release_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.tgz");
    std::fs::write(&path, tgz(&[("hello.txt", b"hi", 0o644)], true)).unwrap();
    let err = inspect_path(&path);
    assert!(err.contains("no release.MF"), "{err}");
}

#[test]
fn not_a_release_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let err = inspect_path(tmp.path());
    assert!(err.contains("not a BOSH release"), "{err}");
    let err = inspect_path(&tmp.path().join("nope"));
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn archives_over_the_size_limit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = final_tarball(tmp.path(), "r", &pkgs(), &jobs(), true, true);
    let out = fissile()
        .args(["inspect", "--max-unpacked-size", "100"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-unpacked-size"), "{err}");
}

#[test]
fn missing_dependency_names_both_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let p = vec![ArchivePackage::new("top", &["ghost"])];
    let path = extracted_release(tmp.path(), "r", &p, &[]);
    let err = inspect_path(&path);
    assert!(
        err.contains("\"top\"") && err.contains("\"ghost\""),
        "{err}"
    );
}

#[test]
fn dependency_cycle_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let p = vec![
        ArchivePackage::new("a", &["b"]),
        ArchivePackage::new("b", &["c"]),
        ArchivePackage::new("c", &["a"]),
        ArchivePackage::new("d", &[]),
    ];
    let path = extracted_release(tmp.path(), "r", &p, &[]);
    let err = inspect_path(&path);
    assert!(err.contains("a -> b -> c -> a"), "{err}");
}

#[test]
fn duplicate_package_names_in_one_release() {
    let tmp = tempfile::tempdir().unwrap();
    let p = vec![ArchivePackage::new("a", &[]), ArchivePackage::new("a", &[])];
    let path = extracted_release(tmp.path(), "r", &p, &[]);
    let err = inspect_path(&path);
    assert!(err.contains("\"a\" is listed more than once"), "{err}");
}

#[test]
fn job_archive_without_job_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let job = ArchiveJob {
        name: "svc".into(),
        packages: vec![],
        archive: tgz(&[("monit", b"", 0o644)], true),
    };
    let path = final_tarball(tmp.path(), "r", &pkgs(), &[job], true, true);
    let err = inspect_path(&path);
    assert!(
        err.contains("jobs/svc.tgz") && err.contains("no job.MF"),
        "{err}"
    );
}

#[test]
fn a_compiled_package_with_a_bad_digest_is_named_with_its_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("compiled");
    write(
        &root.join("release.MF"),
        b"name: r\nversion: 1\ncompiled_packages:\n- name: a\n  version: x\n  fingerprint: x\n  sha1: aa\n  stemcell: ubuntu-jammy/1.1\n  dependencies: []\n",
        0o644,
    );
    let err = inspect_path(&root);
    assert!(
        err.contains("compiled package \"a\"") && err.contains("field sha1"),
        "{err}"
    );
}

#[test]
fn bad_digest_string_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = pkgs();
    p[0].sha1 = Some("md5:abc".into());
    let path = extracted_release(tmp.path(), "r", &p, &[]);
    let err = inspect_path(&path);
    assert!(err.contains("\"base\"") && err.contains("md5"), "{err}");
}

#[test]
fn version_flag_on_a_non_dev_release_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = extracted_release(tmp.path(), "r", &pkgs(), &[]);
    let err = inspect_fails(&[
        path.as_os_str(),
        OsStr::new("--release-version"),
        OsStr::new("1"),
    ]);
    assert!(err.contains("dev releases only"), "{err}");
}

#[test]
fn no_release_given() {
    let err = inspect_fails(&[]);
    assert!(err.contains("no release given"), "{err}");
}

#[test]
fn a_release_manifest_without_a_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = extracted_release(tmp.path(), "r", &pkgs(), &jobs());
    let mf = std::fs::read_to_string(path.join("release.MF")).unwrap();
    let without: String = mf
        .lines()
        .filter(|l| !l.starts_with("version:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, mf);
    std::fs::write(path.join("release.MF"), without).unwrap();
    let err = inspect_path(&path);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("has no version"),
        "{err}"
    );
}

#[test]
fn a_package_archive_that_is_no_tarball_is_refused_although_its_digest_matches() {
    // An empty file, and garbage, each listed with its own (matching) digest: in a tarball and
    // in an extracted release.
    for bytes in [&b""[..], &b"this is not a tarball at all"[..]] {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = pkgs();
        p[1].archive = bytes.to_vec();
        let path = final_tarball(tmp.path(), "r", &p, &jobs(), true, true);
        let err = inspect_path(&path);
        assert!(
            err.contains(&format!("{}:packages/top.tgz", path.display()))
                && err.contains("is not a readable tarball"),
            "{err}"
        );
        let dir = extracted_release(&tmp.path().join("x"), "r", &p, &jobs());
        let err = inspect_path(&dir);
        assert!(
            err.contains("packages/top.tgz") && err.contains("is not a readable tarball"),
            "{err}"
        );
    }
}
