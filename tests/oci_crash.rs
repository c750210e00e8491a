//! Crash safety: a process adding layers, images and refs is SIGKILLed at random instants; after
//! each kill the store verifies clean and a rerun completes.

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fissile_oci::oci::{self, gc, Compression, ImageSpec, LayerOptions, OciStore};

const CHILD_ENV: &str = "FISSILE_OCI_CRASH_CHILD_STORE";

fn pseudo_random(seed: u64) -> u64 {
    // xorshift: enough to spread kill times and file sizes without a rand dependency.
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn add_image(store: &OciStore, scratch: &Path, prefix: &str, i: u64) {
    let tree = scratch.join(format!("tree-{}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    let size = (pseudo_random(i) % 400_000) as usize;
    std::fs::write(tree.join("bin/payload"), vec![(i % 251) as u8; size]).unwrap();
    std::fs::write(tree.join("version"), i.to_string()).unwrap();
    let compression = if i % 2 == 0 {
        Compression::Gzip
    } else {
        Compression::Zstd
    };
    let layer = oci::write_layer(
        store,
        &tree,
        &LayerOptions {
            compression,
            mtime: 0,
            ..LayerOptions::default()
        },
    )
    .unwrap();
    let manifest = oci::write_image(
        store,
        &ImageSpec {
            layers: vec![layer],
            ..ImageSpec::default()
        },
    )
    .unwrap();
    store
        .set_ref(&format!("{prefix}-{}", i % 7), &manifest)
        .unwrap();
    if i % 5 == 0 {
        store
            .remove_ref(&format!("{prefix}-{}", (i + 3) % 7))
            .unwrap();
    }
    std::fs::remove_dir_all(&tree).unwrap();
}

/// The writer that gets killed; only does something when the parent test starts it.
#[test]
#[ignore = "child process of store_survives_sigkill_at_random_points, started by it"]
fn crash_writer_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let root = Path::new(&root);
    let store = OciStore::open_or_create(&root.join("oci")).unwrap();
    for i in 0.. {
        add_image(&store, root, "child", i);
    }
}

#[test]
fn store_survives_sigkill_at_random_points() {
    let tmp = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let mut kills_mid_write = 0;
    for trial in 0..60u64 {
        let mut child = Command::new(&me)
            .args([
                "--exact",
                "crash_writer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = 20 + pseudo_random(trial * 7919) % 180;
        std::thread::sleep(Duration::from_millis(delay));
        let still_running = child.try_wait().unwrap().is_none();
        assert!(
            still_running,
            "the writer must still be writing when it is killed (trial {trial})"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        kills_mid_write += 1;

        let store = OciStore::open_or_create(&tmp.path().join("oci")).unwrap();
        let report = gc::verify(&store).unwrap();
        assert!(
            report.problems.is_empty(),
            "trial {trial} (killed after {delay} ms): {:?}",
            report.problems
        );
        // The index is always whole JSON, and a rerun can add to the store.
        store.refs().unwrap();
        add_image(&store, tmp.path(), "rerun", trial);
        if trial % 10 == 9 {
            gc::gc(&store, &[]).unwrap();
            let report = gc::verify(&store).unwrap();
            assert!(
                report.problems.is_empty(),
                "after gc: {:?}",
                report.problems
            );
        }
    }
    assert_eq!(kills_mid_write, 60);
    let store = OciStore::open_or_create(&tmp.path().join("oci")).unwrap();
    let child_refs = store
        .refs()
        .unwrap()
        .iter()
        .filter(|r| r.name.starts_with("child-"))
        .count();
    assert!(
        child_refs > 0,
        "the killed writers must have committed some images for this test to mean anything"
    );
}
