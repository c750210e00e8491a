//! Bases and compilation bases, end to end through the CLI and real sandboxes: busybox bases,
//! prerequisites layers with whiteouts, naming, rootfs and docker-archive imports, and (slow, but
//! run in CI) a real Debian base with gcc.

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

mod common_cli;
mod common_debian;
mod common_skip;

use common_cli::{fissile, succeed};
use fissile_oci::oci::{image, OciStore};

/// Runs `cmd`, asserting success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

fn sandboxes_work() -> bool {
    common_cli::root_or_skip(
        "building compilation bases here runs the sandbox as root; the sandbox tests cover rootless mode",
    )
}

fn base_digest(work: &Path, name: &str) -> String {
    let store = OciStore::open(&work.join("oci")).unwrap();
    store.resolve(name).unwrap().unwrap().digest().to_string()
}

fn last_layer_entries(work: &Path, name: &str) -> Vec<String> {
    let store = OciStore::open(&work.join("oci")).unwrap();
    let manifest = image::read_manifest(&store, &store.resolve(name).unwrap().unwrap()).unwrap();
    let layer = manifest.layers().last().unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        store.open_blob(layer).unwrap(),
    ));
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn busybox_base_is_reproducible_and_its_compilation_base_runs_scripts() {
    if !sandboxes_work() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (w1, w2) = (tmp.path().join("w1"), tmp.path().join("w2"));
    let name = ok(fissile(&w1).args(["base", "build", "--from", "busybox"]));
    let name = name.trim();
    assert!(name.starts_with("fissile-cbase-"), "{name}");
    ok(fissile(&w2).args(["-q", "base", "build", "--from", "busybox"]));
    assert_eq!(
        base_digest(&w1, "busybox"),
        base_digest(&w2, "busybox"),
        "same source, same digest"
    );
    assert_eq!(
        base_digest(&w1, name),
        base_digest(&w2, name),
        "the prerequisites layer is deterministic too"
    );

    let list = ok(fissile(&w1).args(["base", "list"]));
    assert!(
        list.contains("busybox") && list.contains("compilation-base") && list.contains(name),
        "{list}"
    );
    assert_eq!(
        ok(fissile(&w1).args(["base", "name", "--base", "busybox"])).trim(),
        name
    );

    // The compilation base has the /var/vcap tree, and runs bash scripts in a sandbox.
    let store = OciStore::open(&w1.join("oci")).unwrap();
    let rootfs = fissile_oci::oci::unpack::unpack_image(
        &store,
        &store.resolve(name).unwrap().unwrap(),
        &w1.join("rootfs"),
    )
    .unwrap();
    assert!(rootfs.join("var/vcap/packages").is_dir());
    let out = ok(fissile(&w1).arg("run").arg("--base").arg(name).args([
        "--",
        "/bin/bash",
        "-c",
        "test -d /var/vcap/packages && test -d /var/vcap/source && echo bash $BASH_VERSION",
    ]));
    assert!(out.starts_with("bash "), "{out}");
    assert!(ok(fissile(&w1).args(["cache", "verify"])).starts_with("ok:"));
}

#[test]
fn prerequisites_changes_become_a_layer_with_whiteouts_and_a_new_name() {
    if !sandboxes_work() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w");
    let script = tmp.path().join("prep.sh");
    std::fs::write(&script, "set -e\nmkdir -p /opt/tools && echo v1 > /opt/tools/version\nrm /etc/group\nrm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/only-this\n").unwrap();
    let default_name = ok(fissile(&w).args(["base", "build", "--from", "busybox"]))
        .trim()
        .to_string();
    let custom = ok(fissile(&w)
        .args(["base", "build", "--from", "busybox", "--prerequisites"])
        .arg(&script))
    .trim()
    .to_string();
    assert_ne!(
        default_name, custom,
        "a different script makes a different compilation base"
    );
    assert_eq!(
        ok(fissile(&w)
            .args(["base", "name", "--base", "busybox", "--prerequisites"])
            .arg(&script))
        .trim(),
        custom
    );

    let entries = last_layer_entries(&w, &custom);
    for want in [
        "opt/tools/version",
        "etc/.wh.group",
        "usr/sbin/.wh..wh..opq",
        "usr/sbin/only-this",
    ] {
        assert!(
            entries.iter().any(|e| e == want),
            "{want} missing from {entries:?}"
        );
    }
    let store = OciStore::open(&w.join("oci")).unwrap();
    let rootfs = fissile_oci::oci::unpack::unpack_image(
        &store,
        &store.resolve(&custom).unwrap().unwrap(),
        &w.join("rootfs"),
    )
    .unwrap();
    assert!(!rootfs.join("etc/group").exists());
    assert!(rootfs.join("etc/passwd").exists());
    assert_eq!(
        std::fs::read_dir(rootfs.join("usr/sbin")).unwrap().count(),
        1
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/tools/version")).unwrap(),
        "v1\n"
    );

    // A failing script is reported with its log, and nothing is named after it.
    std::fs::write(&script, "echo about to fail; exit 3\n").unwrap();
    let out = fissile(&w)
        .args(["base", "build", "--from", "busybox", "--prerequisites"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prerequisites script failed")
            && err.contains("exited with code 3")
            && err.contains(".log"),
        "{err}"
    );
}

#[test]
fn a_base_without_bash_is_refused_with_a_fix() {
    if !sandboxes_work() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    rootfs_builder::busybox::build(
        &{
            std::fs::create_dir_all(&tree).unwrap();
            tree.clone()
        },
        false,
    )
    .unwrap();
    let out = fissile(&tmp.path().join("w"))
        .args(["base", "build", "--from"])
        .arg(format!("rootfs:{}", tree.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no bash") && err.contains("debian:SUITE"),
        "{err}"
    );
}

#[test]
fn rootfs_tarball_and_docker_archive_imports() {
    if !sandboxes_work() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w");
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    rootfs_builder::busybox::build(&tree, true).unwrap();
    let tarball = tmp.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let name = ok(fissile(&w)
        .args(["base", "build", "--tag", "from-tar", "--from"])
        .arg(format!("rootfs:{}", tarball.display())));
    assert!(name.trim().starts_with("fissile-cbase-"));

    if Command::new("skopeo").arg("--version").output().is_err() {
        common_skip::skip_part(
            "the docker-archive half needs skopeo (scripts/test.sh installs it)",
        );
        return;
    }
    let archive = tmp.path().join("saved.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:from-tar", w.join("oci").display()))
        .arg(format!(
            "docker-archive:{}:example/base:1",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w2 = tmp.path().join("w2");
    let name2 = ok(fissile(&w2)
        .args(["base", "build", "--tag", "imported", "--from"])
        .arg(format!("docker-archive:{}", archive.display())));
    // Same layers, same script: the imported base behaves as the original.
    let store = OciStore::open(&w2.join("oci")).unwrap();
    let m = image::read_manifest(&store, &store.resolve("imported").unwrap().unwrap()).unwrap();
    let store1 = OciStore::open(&w.join("oci")).unwrap();
    let m1 = image::read_manifest(&store1, &store1.resolve("from-tar").unwrap().unwrap()).unwrap();
    assert_eq!(m.layers().len(), m1.layers().len());
    assert!(name2.trim().starts_with("fissile-cbase-"));
}

#[test]
fn unknown_sources_and_missing_bases_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fissile(tmp.path())
        .args(["base", "build", "--from", "ubuntu:jammy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("debian:SUITE"));
    let out = fissile(tmp.path())
        .args(["base", "name", "--base", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("base build"));
}

/// Slow (a few minutes: mmdebstrap from the apt mirror), and run in CI all the same.
#[test]
fn debian_compilation_base_compiles_with_gcc() {
    if !sandboxes_work() {
        return;
    }
    // The base is bootstrapped here once per target dir, and reused by the other Debian tests
    // through `compile`'s default base.
    let Some(w) = common_debian::debian_work_dir() else {
        return;
    };
    let started = std::time::Instant::now();
    let name = ok(fissile(&w).args(["base", "build", "--from", "debian:bookworm"]))
        .trim()
        .to_string();
    eprintln!(
        "debian:bookworm compilation base built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let store = OciStore::open(&w.join("oci")).unwrap();
    let rootfs = fissile_oci::oci::unpack::unpack_image(
        &store,
        &store.resolve(&name).unwrap().unwrap(),
        &w.join("rootfs"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(rootfs.join("etc/machine-id")).unwrap_or_default(),
        b"",
        "no host machine id"
    );
    assert_eq!(
        name,
        ok(fissile(&w).args(["base", "name"])).trim(),
        "debian-bookworm is the default base"
    );
    assert_eq!(
        std::fs::read_dir(rootfs.join("var/lib/apt/lists"))
            .unwrap()
            .count(),
        0,
        "apt lists cleaned"
    );
    let out = ok(fissile(&w).arg("run").arg("--rootfs").arg(&rootfs).args([
        "--",
        "/bin/bash",
        "-c",
        "gcc --version | head -1 && printf 'int main(){return 0;}' > /tmp/t.c && gcc /tmp/t.c -o /tmp/t && /tmp/t && echo compiled",
    ]));
    assert!(out.contains("gcc") && out.contains("compiled"), "{out}");
    // /etc/shadow has no build day (ageing off), and PAM still lets root become an account.
    let out = ok(fissile(&w).arg("run").arg("--rootfs").arg(&rootfs).args([
        "--",
        "/bin/bash",
        "-c",
        "grep -c '^root:\\*::' /etc/shadow; su -s /bin/sh nobody -c 'id -u'",
    ]));
    assert_eq!(out, "1\n65534\n", "{out}");
}
