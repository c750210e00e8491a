//! Unpacking images: our unpacker gives the same tree as umoci, and an overlayfs upper dir
//! committed as a layer (whiteouts, opaque dirs) round-trips over its lower layer.

#![allow(clippy::disallowed_methods)]

mod common_skip;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fissile_oci::oci::{self, unpack, Compression, ImageSpec, LayerOptions, OciStore};

/// Everything that matters about a tree: per path, kind, mode bits and content or link target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let meta = entry.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let desc = if meta.file_type().is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else {
            format!(
                "file {mode:o} {}",
                fissile_oci::release::digest::digest_bytes(
                    fissile_oci::release::digest::Algorithm::Sha256,
                    &std::fs::read(entry.path()).unwrap()
                )
            )
        };
        out.insert(rel, desc);
    }
    out
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn layer(store: &OciStore, dir: &Path, overlay_upper: bool) -> oci::Layer {
    oci::write_layer(
        store,
        dir,
        &LayerOptions {
            compression: Compression::Gzip,
            mtime: 0,
            overlay_upper,
            ..LayerOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn our_unpacker_matches_umoci() {
    if Command::new("umoci").arg("--version").output().is_err() {
        common_skip::skip("umoci is not installed (scripts/test.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    write(&l1, "etc/os-release", b"ID=test\n");
    write(&l1, "usr/bin/tool", b"#!/bin/sh\n");
    std::fs::set_permissions(
        l1.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/bin", l1.join("bin")).unwrap();
    write(&l2, "etc/os-release", b"ID=test2\n");
    write(&l2, "var/lib/data", &vec![3u8; 50_000]);
    let store = OciStore::open_or_create(&tmp.path().join("oci")).unwrap();
    let manifest = oci::write_image(
        &store,
        &ImageSpec {
            layers: vec![layer(&store, &l1, false), layer(&store, &l2, false)],
            ..ImageSpec::default()
        },
    )
    .unwrap();
    store.set_ref("img", &manifest).unwrap();

    let ours = unpack::unpack_image(&store, &manifest, &tmp.path().join("rootfs")).unwrap();
    let bundle = tmp.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack")
        .arg("--image")
        .arg(format!("{}:img", store.root().display()))
        .arg(&bundle);
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&ours), snapshot(&bundle.join("rootfs")));
    // Unpacking again reuses the finished tree.
    assert_eq!(
        unpack::unpack_image(&store, &manifest, &tmp.path().join("rootfs")).unwrap(),
        ours
    );
}

#[test]
fn a_corrupt_layer_never_becomes_a_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tmp.path().join("l1");
    write(&l1, "a/b", &vec![1u8; 100_000]);
    let store = OciStore::open_or_create(&tmp.path().join("oci")).unwrap();
    let l = layer(&store, &l1, false);
    let manifest = oci::write_image(
        &store,
        &ImageSpec {
            layers: vec![l.clone()],
            ..ImageSpec::default()
        },
    )
    .unwrap();
    let path = store.blob_path(l.descriptor.digest()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55; // inside the gzip trailer: the tar itself still parses
    std::fs::write(&path, &bytes).unwrap();
    let rootfs = tmp.path().join("rootfs");
    assert!(unpack::unpack_image(&store, &manifest, &rootfs).is_err());
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left behind"
    );
}

/// Mounts an overlay and returns a guard that unmounts it.
struct Overlay(PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlay_upper_dir_commits_with_whiteouts_and_round_trips() {
    if !nix::unistd::geteuid().is_root() {
        common_skip::skip("mounting overlayfs for this test needs root (the sandbox tests cover rootless overlays)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let p = tmp.path().join(d);
        std::fs::create_dir_all(&p).unwrap();
        p
    });
    write(&lower, "keep.txt", b"keep");
    write(&lower, "gone.txt", b"delete me");
    write(&lower, "gonedir/x", b"x");
    write(&lower, "opaque/old1", b"old");
    write(&lower, "opaque/sub/old2", b"old");
    write(&lower, "changed.txt", b"before");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let guard = Overlay(merged.clone());
    std::fs::remove_file(merged.join("gone.txt")).unwrap();
    std::fs::remove_dir_all(merged.join("gonedir")).unwrap();
    // Removing and recreating a directory makes overlayfs mark it opaque.
    std::fs::remove_dir_all(merged.join("opaque")).unwrap();
    write(&merged, "opaque/new", b"new");
    write(&merged, "changed.txt", b"after");
    write(&merged, "added/file", b"added");
    let expected = snapshot(&merged);
    drop(guard);

    let store = OciStore::open_or_create(&tmp.path().join("oci")).unwrap();
    let upper_layer = layer(&store, &upper, true);
    // The committed layer carries OCI whiteouts, not overlay's device nodes.
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        store.open_blob(&upper_layer.descriptor).unwrap(),
    ));
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        assert_ne!(
            e.header().entry_type(),
            tar::EntryType::Char,
            "no device nodes in a committed layer"
        );
        names.push(e.path().unwrap().to_string_lossy().into_owned());
    }
    for want in [
        ".wh.gone.txt",
        ".wh.gonedir",
        "opaque/.wh..wh..opq",
        "opaque/new",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let manifest = oci::write_image(
        &store,
        &ImageSpec {
            layers: vec![layer(&store, &lower, false), upper_layer],
            ..ImageSpec::default()
        },
    )
    .unwrap();
    let rootfs = unpack::unpack_image(&store, &manifest, &tmp.path().join("rootfs")).unwrap();
    assert_eq!(snapshot(&rootfs), expected);
    assert_eq!(std::fs::metadata(&rootfs).unwrap().uid(), 0);
}
