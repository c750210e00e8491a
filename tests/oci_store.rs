//! The OCI store against real tools: deterministic layers, skopeo and umoci reading what we
//! write, imports of what skopeo writes, corruption caught by verify and never served.

#![allow(clippy::disallowed_methods)]

mod common_skip;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use fissile_oci::oci::{self, gc, image, Compression, ImageSpec, LayerOptions, OciStore};

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        common_skip::skip(&format!(
            "{name} is not installed (scripts/test.sh installs it)"
        ));
    }
    found
}

/// A small tree with the shapes layers must carry: nested dirs, exec bits, a symlink, a
/// hard link, an empty dir, a long name.
fn sample_tree(root: &Path) {
    let w = |rel: &str, content: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("lib/libx.a", &vec![7u8; 100_000], 0o644);
    w("share/doc/README", b"readme\n", 0o644);
    w(
        &format!("share/{}/deep.txt", "n".repeat(120)),
        b"long name\n",
        0o600,
    );
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("../bin/tool", root.join("share/tool-link")).unwrap();
    std::fs::hard_link(root.join("lib/libx.a"), root.join("lib/libx-copy.a")).unwrap();
}

fn store(dir: &Path) -> OciStore {
    OciStore::open_or_create(&dir.join("oci")).unwrap()
}

fn options(compression: Compression) -> LayerOptions {
    LayerOptions {
        compression,
        mtime: 0,
        ..LayerOptions::default()
    }
}

#[test]
fn same_tree_gives_byte_identical_layers_whatever_the_mtimes_and_owners() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    sample_tree(&a);
    sample_tree(&b);
    // Different times, and (as root) different owners, in the second copy.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for entry in walkdir::WalkDir::new(&b).into_iter().flatten() {
        if entry.file_type().is_file() {
            let f = std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap();
            f.set_modified(old).unwrap();
        }
        if nix::unistd::geteuid().is_root() {
            let _ = std::os::unix::fs::lchown(entry.path(), Some(1234), Some(5678));
        }
    }
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let s = store(tmp.path());
        let la = oci::write_layer(&s, &a, &options(compression)).unwrap();
        let lb = oci::write_layer(&s, &b, &options(compression)).unwrap();
        let la2 =
            oci::write_layer(&store(&tmp.path().join("other")), &a, &options(compression)).unwrap();
        assert_eq!(
            la.descriptor.digest(),
            lb.descriptor.digest(),
            "{compression:?}"
        );
        assert_eq!(
            la.descriptor.digest(),
            la2.descriptor.digest(),
            "{compression:?}"
        );
        assert_eq!(la.diff_id, lb.diff_id);
    }
    // And the digest does depend on the content.
    std::fs::write(b.join("share/doc/README"), b"changed\n").unwrap();
    let s = store(tmp.path());
    assert_ne!(
        oci::write_layer(&s, &a, &options(Compression::Gzip))
            .unwrap()
            .descriptor
            .digest(),
        oci::write_layer(&s, &b, &options(Compression::Gzip))
            .unwrap()
            .descriptor
            .digest()
    );
}

#[test]
fn layer_entries_are_sorted_prefixed_and_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sample_tree(&tree);
    let s = store(tmp.path());
    let mut opts = options(Compression::None);
    opts.prefix = Some("var/vcap/packages/pkg".into());
    opts.mtime = 1_700_000_000;
    let layer = oci::write_layer(&s, &tree, &opts).unwrap();
    assert_eq!(
        layer.descriptor.digest().to_string(),
        layer.diff_id.to_string(),
        "uncompressed: digest is the diff_id"
    );
    let blob = s.open_blob(&layer.descriptor).unwrap();
    let mut archive = tar::Archive::new(blob);
    let mut names = Vec::new();
    let mut links = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if h.entry_type() == tar::EntryType::Link || h.entry_type() == tar::EntryType::Symlink {
            links.insert(
                name.clone(),
                (
                    h.entry_type(),
                    entry
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
            );
        }
        names.push(name);
    }
    assert_eq!(
        &names[..4],
        &[
            "var/",
            "var/vcap/",
            "var/vcap/packages/",
            "var/vcap/packages/pkg/"
        ]
    );
    assert!(names.iter().all(|n| n.starts_with("var/")));
    assert_eq!(
        links.get("var/vcap/packages/pkg/lib/libx.a"),
        Some(&(
            tar::EntryType::Link,
            "var/vcap/packages/pkg/lib/libx-copy.a".to_string()
        )),
        "{links:?}"
    );
    assert_eq!(
        links
            .get("var/vcap/packages/pkg/share/tool-link")
            .unwrap()
            .1,
        "../bin/tool"
    );
    assert!(names.contains(&"var/vcap/packages/pkg/empty/".to_string()));
    assert!(names.iter().any(|n| n.len() > 100), "long names survive");
}

fn image_with(
    s: &OciStore,
    tree: &Path,
    name: &str,
    compression: Compression,
) -> oci_spec::image::Descriptor {
    let layer = oci::write_layer(s, tree, &options(compression)).unwrap();
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.cloudfoundry.bosh.package.name".to_string(),
        "pkg".to_string(),
    );
    let manifest = oci::write_image(
        s,
        &ImageSpec {
            layers: vec![layer],
            annotations,
            ..ImageSpec::default()
        },
    )
    .unwrap();
    s.set_ref(name, &manifest).unwrap();
    manifest
}

#[test]
fn skopeo_reads_and_copies_what_we_write_and_we_import_what_it_writes() {
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sample_tree(&tree);
    let s = store(tmp.path());
    image_with(&s, &tree, "pkg-gzip", Compression::Gzip);
    image_with(&s, &tree, "pkg-zstd", Compression::Zstd);
    for r in ["pkg-gzip", "pkg-zstd"] {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{r}", s.root().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["Layers"].as_array().unwrap().len(), 1);
        assert_eq!(json["Os"], "linux");
    }
    let dir_copy = tmp.path().join("dircopy");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:pkg-gzip", s.root().display()))
        .arg(format!("dir:{}", dir_copy.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir_copy.join("manifest.json").is_file());

    // skopeo writes a layout of its own; we import from it.
    let theirs = tmp.path().join("theirs");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:pkg-gzip", s.root().display()))
        .arg(format!("oci:{}:copied", theirs.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = OciStore::open_or_create(&tmp.path().join("fresh")).unwrap();
    let imported = oci::import::import_oci_layout(&fresh, &theirs, Some("copied"), "base").unwrap();
    let m = image::read_manifest(&fresh, &imported).unwrap();
    assert_eq!(m.layers().len(), 1);
    assert!(gc::verify(&fresh).unwrap().problems.is_empty());

    // And as an oci-archive and a docker-archive made by skopeo.
    for (transport, file) in [
        ("oci-archive", "img.oci.tar"),
        ("docker-archive", "img.docker.tar"),
    ] {
        let path = tmp.path().join(file);
        let dest = if transport == "docker-archive" {
            format!("{transport}:{}:example/pkg:1", path.display())
        } else {
            format!("{transport}:{}", path.display())
        };
        let out = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:pkg-gzip", s.root().display()))
            .arg(dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = if transport == "docker-archive" {
            let (name, d) = oci::import::import_docker_archive(&fresh, &path, None).unwrap();
            assert!(name.ends_with("example/pkg:1"), "{name}");
            d
        } else {
            oci::import::import_oci_archive(&fresh, &path, None, "from-archive").unwrap()
        };
        assert_eq!(image::read_manifest(&fresh, &d).unwrap().layers().len(), 1);
    }
    assert!(gc::verify(&fresh).unwrap().problems.is_empty());
}

#[test]
fn umoci_unpacks_our_images() {
    if !tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sample_tree(&tree);
    let s = store(tmp.path());
    image_with(&s, &tree, "pkg", Compression::Gzip);
    let bundle = tmp.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack")
        .arg("--image")
        .arg(format!("{}:pkg", s.root().display()))
        .arg(&bundle);
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    for rel in ["bin/tool", "lib/libx.a", "share/doc/README"] {
        assert_eq!(
            std::fs::read(rootfs.join(rel)).unwrap(),
            std::fs::read(tree.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read_link(rootfs.join("share/tool-link")).unwrap(),
        Path::new("../bin/tool")
    );
    let mode = std::fs::metadata(rootfs.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn a_corrupt_blob_is_reported_by_verify_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sample_tree(&tree);
    let s = store(tmp.path());
    let manifest = image_with(&s, &tree, "pkg", Compression::Gzip);
    assert!(gc::verify(&s).unwrap().problems.is_empty());
    let m = image::read_manifest(&s, &manifest).unwrap();
    let layer = &m.layers()[0];
    let path = s.blob_path(layer.digest()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let report = gc::verify(&s).unwrap();
    assert!(
        report.problems.iter().any(|p| p
            .contains(&layer.digest().to_string().replace("sha256:", ""))
            && p.contains("digest mismatch")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("\"pkg\"")),
        "the ref that needs it is named: {:?}",
        report.problems
    );
    let mut sink = Vec::new();
    let err = s
        .open_blob(layer)
        .unwrap()
        .read_to_end(&mut sink)
        .unwrap_err();
    assert!(err.to_string().contains("not sha256:"), "{err}");
}

#[test]
fn refs_are_replaced_removed_and_garbage_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sample_tree(&tree);
    let s = store(tmp.path());
    let first = image_with(&s, &tree, "pkg", Compression::Gzip);
    std::fs::write(tree.join("share/doc/README"), b"v2").unwrap();
    let second = image_with(&s, &tree, "pkg", Compression::Gzip);
    assert_ne!(first.digest(), second.digest());
    let refs = s.refs().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].descriptor.digest(), second.digest());
    let report = gc::gc(&s, &[]).unwrap();
    assert_eq!(
        report.blobs_removed, 3,
        "old manifest, config (its diff_ids differ) and layer"
    );
    assert!(!s.has_blob(first.digest()) && s.has_blob(second.digest()));
    assert!(gc::verify(&s).unwrap().problems.is_empty());
    assert!(s.remove_ref("pkg").unwrap());
    assert!(!s.remove_ref("pkg").unwrap());
    gc::gc(&s, &[]).unwrap();
    assert_eq!(std::fs::read_dir(s.blobs_dir()).unwrap().count(), 0);
}
