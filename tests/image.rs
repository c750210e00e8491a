//! `fissile-oci image` end to end: images of a release compiled here, read back by the tools
//! people use (skopeo, umoci, podman), pushed to a real registry (distribution 2.8) with TLS and
//! htpasswd credentials, pulled back as a base; and the failures of a push or a pull (wrong
//! password, unknown CA, a registry that dies or corrupts a blob) with their exit codes and no
//! partial state in the store.
//!
//! Most tests use a small release on the busybox base (seconds); the example release, compiled
//! with gcc on the Debian base, is pushed and run with podman in the Debian test.

#![allow(clippy::disallowed_methods)]

mod common_cli;
mod common_debian;
mod common_registry;
mod common_skip;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common_cli::{fissile, succeed};
use common_registry::{Damage, Options, Proxy, Registry, PASSWORD, USER};

fn root_or_skip() -> bool {
    common_cli::root_or_skip("image tests compile in sandboxes as root here")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `REFERENCE DIGEST` lines of a successful `image` run.
fn written(out: &Output) -> Vec<(String, String)> {
    stdout(out)
        .lines()
        .map(|l| {
            let (r, d) = l.rsplit_once(' ').unwrap();
            (r.to_string(), d.to_string())
        })
        .collect()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A release source directory: `lib` <- `tool` (a script reading lib's file) for job `runner`,
/// `notes` for job `docs`; an optional `big` package of incompressible bytes for job `bulk`.
fn demo_release(dir: &Path, big_bytes: Option<usize>) -> PathBuf {
    let root = dir.join("demo");
    write(&root.join("config/final.yml"), "name: demo\n");
    write(&root.join("packages/lib/spec"), "name: lib\nfiles: []\n");
    write(
        &root.join("packages/lib/packaging"),
        "echo 'lib data' > $BOSH_INSTALL_TARGET/lib.txt\n",
    );
    write(
        &root.join("packages/tool/spec"),
        "name: tool\ndependencies: [lib]\nfiles: [tool/*]\n",
    );
    write(
        &root.join("src/tool/run.sh"),
        "#!/bin/sh\necho \"tool says: $(cat /var/vcap/packages/lib/lib.txt)\"\n",
    );
    write(
        &root.join("packages/tool/packaging"),
        "mkdir -p $BOSH_INSTALL_TARGET/bin && cp tool/run.sh $BOSH_INSTALL_TARGET/bin/tool && chmod 755 $BOSH_INSTALL_TARGET/bin/tool\n",
    );
    write(
        &root.join("packages/notes/spec"),
        "name: notes\nfiles: []\n",
    );
    write(
        &root.join("packages/notes/packaging"),
        "echo notes > $BOSH_INSTALL_TARGET/README\n",
    );
    write(
        &root.join("jobs/runner/spec"),
        "---\nname: runner\ntemplates:\n  ctl.erb: bin/ctl\npackages: [tool]\n",
    );
    write(
        &root.join("jobs/runner/templates/ctl.erb"),
        "exec /var/vcap/packages/tool/bin/tool\n",
    );
    write(&root.join("jobs/runner/monit"), "check process runner\n");
    write(
        &root.join("jobs/docs/spec"),
        "---\nname: docs\ntemplates: {}\npackages: [notes]\n",
    );
    write(&root.join("jobs/docs/monit"), "");
    if let Some(bytes) = big_bytes {
        write(&root.join("packages/big/spec"), "name: big\nfiles: []\n");
        write(
            &root.join("packages/big/packaging"),
            &format!("head -c {bytes} /dev/urandom > $BOSH_INSTALL_TARGET/blob\n"),
        );
        write(
            &root.join("jobs/bulk/spec"),
            "---\nname: bulk\ntemplates: {}\npackages: [big]\n",
        );
        write(&root.join("jobs/bulk/monit"), "");
    }
    root
}

/// A fresh work dir with the busybox base.
fn busybox_work(dir: &Path) -> PathBuf {
    let work = dir.join("work");
    succeed(fissile(&work).args(["base", "build", "--from", "busybox"]));
    work
}

fn image(work: &Path, release: &Path) -> Command {
    let mut cmd = fissile(work);
    cmd.arg("image").arg(release).args(["--base", "busybox"]);
    cmd
}

/// The refs of an OCI layout's index, with their digests.
fn refs(layout: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The files under `var/vcap/packages/` of an image, unpacked with umoci.
fn unpacked_packages(layout: &Path, tag: &str, scratch: &Path) -> BTreeSet<String> {
    let bundle = scratch.join(format!("bundle-{tag}"));
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci: {}", stderr(&out));
    std::fs::read_dir(bundle.join("rootfs/var/vcap/packages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn tools(names: &[&str]) -> bool {
    for name in names {
        if common_registry::which(name).is_none() {
            common_skip::skip(&format!(
                "{name} is not installed (scripts/test.sh installs it)"
            ));
            return false;
        }
    }
    true
}

#[test]
fn images_are_reproducible_and_read_by_skopeo_and_umoci() {
    if !root_or_skip() || !tools(&["skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    let release = demo_release(tmp.path(), None);

    // Into the work dir's store, named after the release; the same inputs, the same digest.
    let first = succeed(image(&work, &release).env("SOURCE_DATE_EPOCH", "1700000000"));
    let first = written(&first);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].0,
        format!("oci:{}:demo", work.join("oci").display())
    );
    let again = written(&succeed(
        image(&work, &release).env("SOURCE_DATE_EPOCH", "1700000000"),
    ));
    assert_eq!(again, first);
    let later = written(&succeed(
        image(&work, &release).env("SOURCE_DATE_EPOCH", "1800000000"),
    ));
    assert_ne!(
        later[0].1, first[0].1,
        "created changed, the digest must too"
    );

    // Another layout, with a tag: the same image (the tag is not part of it).
    let layout = tmp.path().join("layout");
    let out = succeed(
        image(&work, &release)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("-o")
            .arg(format!("oci:{}:v1", layout.display())),
    );
    assert_eq!(written(&out)[0].1, first[0].1);
    assert_eq!(refs(&layout), vec![("v1".to_string(), first[0].1.clone())]);
    let inspected = skopeo_json(&["inspect", &format!("oci:{}:v1", layout.display())]);
    let labels = &inspected["Labels"];
    assert_eq!(labels["org.cloudfoundry.bosh.releases"], "demo/0+dev");
    assert_eq!(labels["org.cloudfoundry.bosh.jobs"], "docs,runner");
    assert!(labels["org.cloudfoundry.bosh.package.tool.fingerprint"]
        .as_str()
        .is_some_and(|f| f.len() == 40));
    assert_eq!(inspected["Created"], "2023-11-14T22:13:20Z");
    let config = skopeo_json(&[
        "inspect",
        "--config",
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(config["config"]["WorkingDir"], "/var/vcap");
    // Base (1), lib, notes, tool, release layer: a history line each.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 5);
    assert_eq!(config["history"].as_array().unwrap().len(), 5);

    // The package layers are the very blobs of the compiled packages in the store.
    let raw = skopeo_json(&["inspect", "--raw", &format!("oci:{}:v1", layout.display())]);
    let layers: Vec<String> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let store_refs = refs(&work.join("oci"));
    for package in ["lib", "notes", "tool"] {
        let (_, manifest) = store_refs
            .iter()
            .find(|(name, _)| name.starts_with(&format!("pkg-{package}-")))
            .unwrap();
        let blob = work
            .join("oci/blobs/sha256")
            .join(manifest.strip_prefix("sha256:").unwrap());
        let pkg: serde_json::Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        let layer = pkg["layers"][0]["digest"].as_str().unwrap().to_string();
        assert!(
            layers.contains(&layer),
            "{package}: {layer} not in {layers:?}"
        );
    }
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.name"],
        "busybox"
    );

    // umoci unpacks it: packages, jobs as in their archives, the release manifest.
    let packages = unpacked_packages(&layout, "v1", tmp.path());
    assert_eq!(packages, ["lib", "notes", "tool"].map(String::from).into());
    let rootfs = tmp.path().join("bundle-v1/rootfs");
    assert!(rootfs.join("var/vcap/jobs-src/runner/job.MF").is_file());
    assert!(rootfs.join("var/vcap/jobs-src/runner/monit").is_file());
    assert!(rootfs
        .join("var/vcap/jobs-src/runner/templates/ctl.erb")
        .is_file());
    let manifest =
        std::fs::read_to_string(rootfs.join("var/vcap/releases/demo/release.MF")).unwrap();
    assert!(manifest.contains("name: 'tool'"), "{manifest}");

    // An oci-archive holds the same image.
    let archive = tmp.path().join("demo-oci.tar");
    succeed(
        image(&work, &release)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("-o")
            .arg(format!("oci-archive:{}:v2", archive.display())),
    );
    let inspected = skopeo_json(&["inspect", &format!("oci-archive:{}:v2", archive.display())]);
    assert_eq!(inspected["Digest"], first[0].1);
}

#[test]
fn each_instance_group_image_has_exactly_its_packages() {
    if !root_or_skip() || !tools(&["umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    let release = demo_release(tmp.path(), None);
    let roles = tmp.path().join("roles.yml");
    write(
        &roles,
        "instance_groups:\n- name: web\n  jobs:\n  - name: runner\n    release: demo\n- name: docs\n  jobs:\n  - name: docs\n",
    );
    let layout = tmp.path().join("groups");
    let out = succeed(
        image(&work, &release)
            .arg("-m")
            .arg(&roles)
            .args(["--tag", "1.0", "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    let names: Vec<String> = written(&out)
        .into_iter()
        .map(|(r, _)| r.rsplit(':').next().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["1.0-web", "1.0-docs"]);
    assert_eq!(
        unpacked_packages(&layout, "1.0-web", tmp.path()),
        ["lib", "tool"].map(String::from).into()
    );
    assert_eq!(
        unpacked_packages(&layout, "1.0-docs", tmp.path()),
        ["notes"].map(String::from).into()
    );
    let jobs = |tag: &str| -> BTreeSet<String> {
        std::fs::read_dir(
            tmp.path()
                .join(format!("bundle-{tag}/rootfs/var/vcap/jobs-src")),
        )
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
    };
    assert_eq!(jobs("1.0-web"), ["runner"].map(String::from).into());
    assert_eq!(jobs("1.0-docs"), ["docs"].map(String::from).into());
}

#[test]
fn a_docker_archive_loads_and_runs_in_podman() {
    if !root_or_skip() || !tools(&["podman", "runc"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    let release = demo_release(tmp.path(), None);
    let archive = tmp.path().join("demo.tar");
    let name = format!("fissile-oci-test/demo-{}:1", std::process::id());
    succeed(
        image(&work, &release)
            .arg("-o")
            .arg(format!("docker-archive:{}:{name}", archive.display())),
    );
    let output = podman_load_and_run(&archive, &name, &["/var/vcap/packages/tool/bin/tool"]);
    assert_eq!(output.trim(), "tool says: lib data");
}

/// `podman load`, then `podman run` (runc: crun refuses this host's hybrid cgroups), then the
/// image is removed; returns the command's output.
fn podman_load_and_run(archive: &Path, name: &str, command: &[&str]) -> String {
    let load = Command::new("podman")
        .arg("load")
        .arg("-i")
        .arg(archive)
        .output()
        .unwrap();
    assert!(load.status.success(), "podman load: {}", stderr(&load));
    let local = format!("localhost/{name}");
    let run = Command::new("podman")
        .args(["--runtime", "runc", "run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(&local)
        .args(command)
        .output()
        .unwrap();
    let _ = Command::new("podman").args(["rmi", "-f", &local]).output();
    assert!(run.status.success(), "podman run: {}", stderr(&run));
    stdout(&run)
}

#[test]
fn registry_failures_have_clear_errors_and_exit_codes() {
    if !root_or_skip() || !common_registry::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    let release = demo_release(tmp.path(), None);
    let registry = Registry::start(Options {
        tls: true,
        htpasswd: true,
        ..Options::default()
    });
    let cert_dir = registry.cert_dir.clone().unwrap();
    let good = registry.auth_file("good.json", USER, PASSWORD);
    let bad = registry.auth_file("bad.json", USER, "not-the-password");
    let dest = format!("docker://{}/demo/app:1", registry.host());
    succeed(
        fissile(&work)
            .arg("compile")
            .arg(&release)
            .args(["--base", "busybox"]),
    );
    let before = refs(&work.join("oci"));

    // A wrong password: the user's input, exit 2.
    let out = image(&work, &release)
        .args(["-o", &dest, "--cert-dir"])
        .arg(&cert_dir)
        .arg("--authfile")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );

    // No CA: the host does not trust the registry, exit 125, the fix named.
    let out = image(&work, &release)
        .args(["-o", &dest, "--authfile"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("--cert-dir"), "{}", stderr(&out));

    // A tag that would take a base's name in the store: refused.
    let out = image(&work, &release)
        .args(["--tag", "busybox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already names a base"),
        "{}",
        stderr(&out)
    );
    // Two different names for one image.
    let out = image(&work, &release)
        .args([
            "--tag",
            "a",
            "-o",
            &format!("oci:{}:b", tmp.path().join("x").display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Nothing of this named anything in the store.
    assert_eq!(refs(&work.join("oci")), before);

    // With the CA and the password it goes through; skopeo, with the same credentials, sees it.
    let out = succeed(
        image(&work, &release)
            .args(["-o", &dest, "--cert-dir"])
            .arg(&cert_dir)
            .arg("--authfile")
            .arg(&good),
    );
    let digest = written(&out)[0].1.clone();
    let inspected = skopeo_json(&[
        "inspect",
        &format!("--cert-dir={}", cert_dir.display()),
        &format!("--creds={USER}:{PASSWORD}"),
        &dest,
    ]);
    assert_eq!(inspected["Digest"], digest);
    assert_eq!(
        inspected["Labels"]["org.cloudfoundry.bosh.releases"],
        "demo/0+dev"
    );

    // A credential helper, as docker's config.json names one, gives the same access.
    let helpers = tmp.path().join("helpers");
    write(
        &helpers.join("docker-credential-fissiletest"),
        &format!(
            "#!/bin/sh\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found'; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n",
            registry.host()
        ),
    );
    std::fs::set_permissions(
        helpers.join("docker-credential-fissiletest"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let docker_config = tmp.path().join("docker-config");
    write(
        &docker_config.join("config.json"),
        &format!(
            "{{\"credHelpers\": {{\"{}\": \"fissiletest\"}}}}",
            registry.host()
        ),
    );
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = succeed(
        image(&work, &release)
            .args(["-o", &dest, "--cert-dir"])
            .arg(&cert_dir)
            .env("PATH", path)
            .env("DOCKER_CONFIG", &docker_config)
            .env("HOME", tmp.path())
            .env("XDG_RUNTIME_DIR", tmp.path().join("no-runtime"))
            .env_remove("REGISTRY_AUTH_FILE"),
    );
    assert_eq!(written(&out)[0].1, digest);
}

#[test]
fn a_push_interrupted_or_killed_mid_way_fails_with_130_or_125_and_leaves_no_trace() {
    if !root_or_skip() || !common_registry::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    // 96 MB that gzip cannot shrink: a push that lasts long enough to be interrupted.
    let release = demo_release(tmp.path(), Some(96_000_000));
    succeed(&mut image(&work, &release));
    let before = refs(&work.join("oci"));
    let mut registry = Registry::start(Options::default());
    let uploads = registry
        .dir
        .join("data/docker/registry/v2/repositories/demo/big/_uploads");
    let push = |dest: &str| {
        image(&work, &release)
            .args(["-o", dest, "--tls-verify=false"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_upload = || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while walk_size(&uploads) <= 16_000_000 {
            assert!(Instant::now() < deadline, "the push never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    // ^C in the middle: it stops at once, with 130.
    let dest = format!("docker://{}/demo/big:1", registry.host());
    let child = push(&dest);
    wait_for_upload();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let interrupted = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(interrupted.elapsed() < Duration::from_secs(10));
    std::fs::remove_dir_all(&uploads).unwrap();

    // The registry killed once a good part of the big layer has arrived.
    let child = push(&dest);
    wait_for_upload();
    registry.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the registry"),
        "{}",
        stderr(&out)
    );
    assert_eq!(refs(&work.join("oci")), before, "the store's names changed");
    succeed(fissile(&work).args(["cache", "verify"]));

    // Back on the same storage: no tag, so nobody pulls half an image.
    registry.restart();
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &dest])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("manifest unknown"),
        "{}",
        stderr(&out)
    );
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn a_base_pulled_through_a_corrupting_proxy_is_refused_with_125() {
    if !root_or_skip() || !common_registry::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = busybox_work(tmp.path());
    let release = demo_release(tmp.path(), None);
    let registry = Registry::start(Options::default());
    let dest = format!("docker://{}/demo/app:1", registry.host());
    let pushed = written(&succeed(image(&work, &release).args([
        "-o",
        &dest,
        "--tls-verify=false",
    ])))[0]
        .1
        .clone();

    // Straight from the registry, into a fresh work dir: the same digest.
    let other = tmp.path().join("other");
    succeed(fissile(&other).args([
        "base",
        "build",
        "--from",
        &dest,
        "--tls-verify=false",
        "--tag",
        "pulled",
    ]));
    let pulled: Vec<(String, String)> = refs(&other.join("oci"));
    assert!(
        pulled.contains(&("pulled".to_string(), pushed.clone())),
        "{pulled:?}"
    );

    // Through a proxy that flips a byte in every blob: refused, nothing named, no temp file.
    let proxy = Proxy::start(registry.port, Damage::FlipBlobByte);
    let third = tmp.path().join("third");
    let out = fissile(&third)
        .args(["base", "build", "--from"])
        .arg(format!("docker://{}/demo/app:1", proxy.host()))
        .args(["--tls-verify=false", "--tag", "pulled"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("is corrupt"), "{}", stderr(&out));
    assert!(refs(&third.join("oci")).is_empty());
    let temp_files: Vec<_> = std::fs::read_dir(third.join("oci/blobs/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temp_files.is_empty(), "{temp_files:?}");
    succeed(fissile(&third).args(["cache", "verify"]));
}

/// The example release, compiled with gcc on the Debian base: pushed to a registry with TLS and
/// htpasswd, pushed again without a blob, pulled back as a base with the same digest; and run
/// with podman from a docker archive.
#[test]
fn the_example_release_image_goes_through_a_registry_and_runs_in_podman() {
    if !root_or_skip() || !common_registry::available() || !tools(&["podman", "runc"]) {
        return;
    }
    let Some(work) = common_debian::debian_work_dir() else {
        return;
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-release");
    let registry = Registry::start(Options {
        tls: true,
        htpasswd: true,
        ..Options::default()
    });
    let cert_dir = registry.cert_dir.clone().unwrap();
    let auth = registry.auth_file("auth.json", USER, PASSWORD);
    let dest = format!("docker://{}/hello/app:1", registry.host());
    let push = |dest: &str| {
        succeed(
            fissile(&work)
                .arg("image")
                .arg(&example)
                .args(["-o", dest, "--cert-dir"])
                .arg(&cert_dir)
                .arg("--authfile")
                .arg(&auth),
        )
    };
    let digest = written(&push(&dest))[0].1.clone();
    let inspected = skopeo_json(&[
        "inspect",
        &format!("--cert-dir={}", cert_dir.display()),
        &format!("--creds={USER}:{PASSWORD}"),
        &dest,
    ]);
    assert_eq!(inspected["Digest"], digest);
    let labels = &inspected["Labels"];
    for package in [
        "greeter",
        "hello-bundle",
        "libcolor",
        "libgreet",
        "greet-scripts",
    ] {
        assert!(
            labels[format!("org.cloudfoundry.bosh.package.{package}.fingerprint")].is_string(),
            "{package}: {labels}"
        );
    }
    assert!(labels["org.opencontainers.image.base.name"]
        .as_str()
        .is_some_and(|n| n.starts_with("debian-")));

    // Again: every blob is there; nothing is uploaded.
    let uploads = registry.blob_uploads();
    assert_eq!(written(&push(&dest))[0].1, digest);
    assert_eq!(
        registry.blob_uploads(),
        uploads,
        "the second push uploaded a blob"
    );

    // Pulled back as a base (into a fresh work dir): the same manifest digest.
    let pulled_work = tempfile::tempdir().unwrap();
    let out = succeed(
        fissile(pulled_work.path())
            .args([
                "base",
                "build",
                "--from",
                &dest,
                "--tag",
                "hello-base",
                "--cert-dir",
            ])
            .arg(&cert_dir)
            .arg("--authfile")
            .arg(&auth),
    );
    assert!(stderr(&out).contains(&digest), "{}", stderr(&out));
    assert!(refs(&pulled_work.path().join("oci")).contains(&("hello-base".to_string(), digest)));

    // The compiled program runs in podman, from a docker archive.
    let archive = pulled_work.path().join("hello.tar");
    let name = format!("fissile-oci-test/hello-{}:1", std::process::id());
    succeed(
        fissile(&work)
            .arg("image")
            .arg(&example)
            .arg("-o")
            .arg(format!("docker-archive:{}:{name}", archive.display())),
    );
    let output = podman_load_and_run(
        &archive,
        &name,
        &["/var/vcap/packages/greeter/bin/greeter", "podman"],
    );
    assert!(output.contains("podman"), "{output}");
}
