//! Rootless builds end to end, as a real unprivileged user: as root, the test creates the user
//! `fissile-oci-test` with subordinate id ranges (tests/common_rootless) and runs the CLI as that
//! user, then checks that what it built is byte-identical to what root builds from the same
//! inputs (bases, compilation bases, compiled packages: their owners are recorded as the
//! container saw them), that nothing is left the user cannot remove (failed, interrupted and
//! killed runs, `cache gc`, `cache clean`), and that a host without subordinate ids is told so,
//! with the fix, before any work. The Debian tests (minutes: a rootless mmdebstrap) run in CI
//! too, and skip with `FISSILE_OCI_SKIP_DEBIAN`.

#![allow(clippy::disallowed_methods)]

mod common_cli;
mod common_debian;
mod common_rootless;
mod common_skip;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common_cli::{fissile, succeed};
use common_rootless::{as_user, test_user, user_binary, user_can_reach, user_dir};
use common_skip::skip;
use fissile_oci::oci::{image, OciStore};

/// The test user, and a temp dir it can reach.
struct User {
    uid: u32,
    gid: u32,
    exe: PathBuf,
    tmp: tempfile::TempDir,
}

impl User {
    fn new() -> Option<User> {
        if !nix::unistd::geteuid().is_root() {
            skip("the rootless builds suite creates a user, which needs root");
            return None;
        }
        if !Path::new("/bin/busybox").is_file() {
            skip("/bin/busybox is missing (install busybox-static)");
            return None;
        }
        let (uid, gid) = match test_user() {
            Ok(ids) => ids,
            Err(reason) => {
                skip(&format!("cannot create the test user: {reason}"));
                return None;
            }
        };
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = user_binary(uid, gid, tmp.path());
        Some(User { uid, gid, exe, tmp })
    }

    /// `fissile-oci --work-dir WORK` as the user.
    fn fissile(&self, work: &Path) -> Command {
        let mut command = as_user(self.uid, self.gid, &self.exe);
        command.arg("--work-dir").arg(work);
        command
    }

    /// A fresh dir the user owns.
    fn dir(&self, name: &str) -> PathBuf {
        user_dir(self.uid, self.gid, &self.tmp.path().join(name))
    }

    /// A file anyone may read (scripts, releases).
    fn readable(&self, name: &str, content: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// Whether the user, as itself, can `rm -rf` `path`.
    fn can_remove(&self, path: &Path) -> bool {
        as_user(self.uid, self.gid, "rm")
            .arg("-rf")
            .arg(path)
            .output()
            .unwrap()
            .status
            .success()
    }
}

fn ok(cmd: &mut Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// Ref name -> manifest digest of every image in a work dir's store.
fn refs(work: &Path) -> BTreeMap<String, String> {
    let store = OciStore::open(&work.join("oci")).unwrap();
    store
        .refs()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.descriptor.digest().to_string()))
        .collect()
}

/// Path, type, mode, uid, gid, size and content digest of every entry of an image's last layer.
fn last_layer(work: &Path, name: &str) -> BTreeMap<String, (String, u32, u64, u64, u64, String)> {
    let store = OciStore::open(&work.join("oci")).unwrap();
    let manifest = image::read_manifest(&store, &store.resolve(name).unwrap().unwrap()).unwrap();
    let layer = manifest.layers().last().unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        store.open_blob(layer).unwrap(),
    ));
    let mut entries = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header().clone();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        let digest = sha256_hex(&content);
        let link = header
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        entries.insert(
            path,
            (
                format!("{:?}{link}", header.entry_type()),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.size().unwrap(),
                digest,
            ),
        );
    }
    entries
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What differs between the last layers of two images, one line per entry (for messages).
fn layer_diff(a: (&Path, &str), b: (&Path, &str)) -> Vec<String> {
    let (la, lb) = (last_layer(a.0, a.1), last_layer(b.0, b.1));
    la.keys()
        .chain(lb.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| la.get(*k) != lb.get(*k))
        .map(|k| format!("{k}: root {:?}, rootless {:?}", la.get(k), lb.get(k)))
        .collect()
}

/// Names in `dir`, sorted; empty for a missing dir.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn summary(path: &Path) -> BTreeMap<String, (String, String, Option<String>)> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                (
                    p["status"].as_str().unwrap().to_string(),
                    p["cache_key"].as_str().unwrap().to_string(),
                    p["layer_digest"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

/// Waits for `cond` (polled every 100 ms) at most `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Pids of the processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .filter(|&pid| pid != std::process::id() as i32)
        .collect()
}

/// Changes owners, modes, setuid bits and deletes lower files: every kind of entry a
/// prerequisites layer records.
const PREREQUISITES: &str = r#"set -e
mkdir -p /var/vcap/packages /var/vcap/source /opt/app/secret /home/builder
echo key > /opt/app/secret/key && chmod 600 /opt/app/secret/key && chmod 700 /opt/app/secret
echo hi > /home/builder/f && chown -R 1000:1000 /home/builder && chgrp 42 /home/builder/f
chmod 640 /home/builder/f && chmod 700 /home/builder
cp /bin/busybox /opt/app/su && chmod 4755 /opt/app/su
touch /opt/app/nobody && chown 65534:65534 /opt/app/nobody
rm /etc/group
rm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/only
"#;

#[test]
fn rootless_bases_and_compilation_bases_are_byte_identical_to_roots() {
    let Some(user) = User::new() else { return };
    let script = user.readable("prep.sh", PREREQUISITES);
    let (root_work, user_work) = (user.tmp.path().join("root"), user.dir("user"));

    // A rootfs tarball whose tree the user cannot read as itself (a mode-000 file): the layer
    // is written in the tree helper after the attempt in the CLI's own process fails.
    let tree = user.tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    rootfs_builder::busybox::build(&tree, true).unwrap();
    std::fs::write(tree.join("etc/sealed"), "sealed\n").unwrap();
    std::fs::set_permissions(
        tree.join("etc/sealed"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let tarball = user.tmp.path().join("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(&tarball, std::fs::Permissions::from_mode(0o644)).unwrap();

    for (args, name) in [
        (
            vec!["base", "build", "--from", "busybox", "--prerequisites"],
            "busybox",
        ),
        (
            vec!["base", "build", "--tag", "tarred", "--prerequisites"],
            "tarred",
        ),
    ] {
        let with_source = |cmd: &mut Command| {
            cmd.args(["-q"]).args(&args).arg(&script);
            if name == "tarred" {
                cmd.arg("--from")
                    .arg(format!("rootfs:{}", tarball.display()));
            }
        };
        let mut root_cmd = fissile(&root_work);
        with_source(&mut root_cmd);
        let mut user_cmd = user.fissile(&user_work);
        with_source(&mut user_cmd);
        let root_cbase = ok(&mut root_cmd).trim().to_string();
        let user_cbase = ok(&mut user_cmd).trim().to_string();
        assert_eq!(
            user_cbase, root_cbase,
            "{name}: the compilation base is named after the base's digest"
        );
        let (root_refs, user_refs) = (refs(&root_work), refs(&user_work));
        for image in [name, root_cbase.as_str()] {
            assert_eq!(
                user_refs.get(image),
                root_refs.get(image),
                "{image}, built rootless and as root, differs:\n{}",
                layer_diff((&root_work, image), (&user_work, image)).join("\n")
            );
        }
        // Owners as the container saw them, not 0:0 everywhere: the comparison means something.
        let layer = last_layer(&user_work, &root_cbase);
        assert_eq!(layer["home/builder/f"].1, 0o640);
        assert_eq!(
            (layer["home/builder/f"].2, layer["home/builder/f"].3),
            (1000, 42)
        );
        assert_eq!(
            (layer["opt/app/nobody"].2, layer["opt/app/nobody"].3),
            (65534, 65534)
        );
        assert_eq!(layer["opt/app/su"].1, 0o4755);
        assert!(layer.contains_key("etc/.wh.group") && layer.contains_key("usr/sbin/.wh..wh..opq"));
    }
    assert!(
        last_layer(&user_work, "tarred").contains_key("etc/sealed"),
        "the unreadable file is in the rootless layer"
    );
    assert_eq!(entries(&user_work.join("runs")), Vec::<String>::new());
}

/// A release whose packages leave files of other users behind, with modes the builder cannot
/// read or remove as itself: in the sources, the output and the overlay; one package fails
/// after doing the same.
fn owners_release(user: &User) -> PathBuf {
    let root = user.tmp.path().join("owners-release");
    let packages: [(&str, &[&str], &str); 3] = [
        (
            "lib",
            &[],
            r#"set -e
mkdir -p build/deep && echo x > build/deep/f && chown -R 1000:1000 build && chmod 700 build/deep build
mkdir -p $BOSH_INSTALL_TARGET/etc && echo secret > $BOSH_INSTALL_TARGET/etc/key
chown 1000:1000 $BOSH_INSTALL_TARGET/etc/key && chmod 600 $BOSH_INSTALL_TARGET/etc/key
chown 1000 $BOSH_INSTALL_TARGET/etc && chmod 700 $BOSH_INSTALL_TARGET/etc
cat lib/input.txt > $BOSH_INSTALL_TARGET/lib.txt
mkdir -p /tmp/junk && echo j > /tmp/junk/j && chown -R 1000 /tmp/junk && chmod 700 /tmp/junk
"#,
        ),
        (
            "app",
            &["lib"],
            r#"set -e
cat /var/vcap/packages/lib/etc/key /var/vcap/packages/lib/lib.txt > $BOSH_INSTALL_TARGET/app.txt
"#,
        ),
        (
            "broken",
            &[],
            r#"mkdir -p gone/deep && echo x > gone/deep/f && chown -R 1000:1000 gone && chmod 700 gone/deep gone
exit 3
"#,
        ),
    ];
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::write(root.join("config/final.yml"), "name: owners\n").unwrap();
    for (name, deps, script) in packages {
        let dir = root.join("packages").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let deps: String = deps.iter().map(|d| format!("- {d}\n")).collect();
        std::fs::write(
            dir.join("spec"),
            format!("name: {name}\ndependencies:\n{deps}files:\n- {name}/**/*\n"),
        )
        .unwrap();
        std::fs::write(dir.join("packaging"), script).unwrap();
        std::fs::create_dir_all(root.join("src").join(name)).unwrap();
        std::fs::write(root.join("src").join(name).join("input.txt"), name).unwrap();
    }
    assert!(Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .unwrap()
        .success());
    root
}

#[test]
fn rootless_compiles_match_roots_and_cache_clean_removes_what_the_user_cannot() {
    let Some(user) = User::new() else { return };
    let release = owners_release(&user);
    let (root_work, user_work) = (user.tmp.path().join("root"), user.dir("user"));
    let (root_summary, user_summary) = (
        user.tmp.path().join("root.json"),
        user.dir("out").join("user.json"),
    );
    ok(fissile(&root_work).args(["-q", "base", "build", "--from", "busybox"]));
    ok(user
        .fissile(&user_work)
        .args(["-q", "base", "build", "--from", "busybox"]));
    for (mut cmd, summary) in [
        (fissile(&root_work), &root_summary),
        (user.fissile(&user_work), &user_summary),
    ] {
        let out = run(cmd
            .arg("compile")
            .arg(&release)
            .args(["--base", "busybox", "--keep-going", "--summary"])
            .arg(summary));
        assert_eq!(
            out.status.code(),
            Some(1),
            "broken fails, the rest compiles: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (root_packages, user_packages) = (summary(&root_summary), summary(&user_summary));
    assert_eq!(user_packages, root_packages, "same keys, same layers");
    assert_eq!(user_packages["app"].0, "compiled");
    assert_eq!(user_packages["broken"].0, "failed");

    // Scratch dirs, the failed package's included, are gone; the published packages hold
    // files of subordinate ids that the user cannot remove as itself, and `cache clean` can.
    assert_eq!(entries(&user_work.join("runs")), Vec::<String>::new());
    let lib = user_work.join("packages").join(&user_packages["lib"].1);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(lib.join("etc/key")).unwrap()),
        common_rootless::subuid_start() + 999
    );
    assert!(
        !user.can_remove(&user_work.join("packages")),
        "the user could remove the packages as itself: the test proves nothing"
    );
    ok(user.fissile(&user_work).args(["cache", "clean"]));
    assert_eq!(entries(&user_work), vec!["lock".to_string()]);
}

#[test]
fn interrupted_and_killed_rootless_compiles_leave_nothing_cache_clean_cannot_remove() {
    let Some(user) = User::new() else { return };
    let work = user.dir("work");
    ok(user
        .fissile(&work)
        .args(["-q", "base", "build", "--from", "busybox"]));
    for (signal, marker) in [
        (nix::sys::signal::Signal::SIGTERM, "4731"),
        (nix::sys::signal::Signal::SIGKILL, "4732"),
    ] {
        let release = user.tmp.path().join(format!("slow-{marker}"));
        std::fs::create_dir_all(release.join("packages/slow")).unwrap();
        std::fs::create_dir_all(release.join("src/slow")).unwrap();
        std::fs::create_dir_all(release.join("config")).unwrap();
        std::fs::write(release.join("config/final.yml"), "name: slow\n").unwrap();
        std::fs::write(release.join("src/slow/input.txt"), marker).unwrap();
        std::fs::write(
            release.join("packages/slow/spec"),
            "name: slow\nfiles:\n- slow/**/*\n",
        )
        .unwrap();
        std::fs::write(
            release.join("packages/slow/packaging"),
            format!(
                "mkdir -p held/deep $BOSH_INSTALL_TARGET/held && chown -R 1000 held \
                 $BOSH_INSTALL_TARGET/held && chmod 700 held/deep held $BOSH_INSTALL_TARGET/held\n\
                 touch $BOSH_INSTALL_TARGET/started\nsleep {marker}\n"
            ),
        )
        .unwrap();
        assert!(Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&release)
            .status()
            .unwrap()
            .success());
        let mut child = user
            .fissile(&work)
            .arg("compile")
            .arg(&release)
            // Build trees on disk: on a tmpfs (`auto`) a killed compile's build tree goes with
            // its sandbox, and there would be nothing the user cannot remove to test.
            .args(["--base", "busybox", "--scratch", "disk"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = eventually(Duration::from_secs(120), || {
            walkdir::WalkDir::new(work.join("runs"))
                .into_iter()
                .flatten()
                .any(|e| e.file_name() == "started")
        });
        assert!(started, "the package never started");
        // setpriv execs the CLI: the child's pid is the CLI's.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        let sleeper = format!("sleep {marker}");
        assert!(
            eventually(Duration::from_secs(30), || processes_mentioning(&sleeper)
                .is_empty()),
            "the packaging script outlived the CLI"
        );
        if signal == nix::sys::signal::Signal::SIGTERM {
            // Interrupted, the compile removes its scratch dir itself, rootless as well.
            assert_eq!(status.code(), Some(130));
            assert_eq!(entries(&work.join("runs")), Vec::<String>::new());
        } else {
            assert!(
                !user.can_remove(&work.join("runs")),
                "a killed compile's scratch dir held nothing the user could not remove"
            );
        }
    }
    ok(user.fissile(&work).args(["cache", "clean"]));
    assert_eq!(entries(&work), vec!["lock".to_string()]);
}

#[test]
fn a_host_without_subordinate_ids_is_told_before_any_work() {
    let Some(user) = User::new() else { return };
    // nobody exists everywhere and, as a system account, has no subordinate ids.
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if fissile_oci::sandbox::parse_subid(&subuid, Some("nobody"), 65534).is_some() {
        skip("nobody has subordinate ids on this host");
        return;
    }
    let work = user.tmp.path().join("nobody");
    user_dir(65534, 65534, &work);
    let started = Instant::now();
    let out = run(as_user(65534, 65534, &user.exe)
        .arg("--work-dir")
        .arg(&work)
        .args(["base", "build", "--from", "debian:bookworm"]));
    let err = String::from_utf8_lossy(&out.stderr);
    // The host is not ready: an environment failure (125), not bad input.
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot build base debian-bookworm as nobody (not root)")
            && err.contains(
                "/etc/subuid and /etc/subgid have no range of subordinate ids for nobody"
            )
            && err.contains("fix: sudo usermod --add-subuids"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "not up front");
    assert!(!work.join("runs").exists(), "work started before the check");

    // Where they are optional, a notice says what fails without them.
    let out = run(as_user(65534, 65534, &user.exe)
        .arg("--work-dir")
        .arg(&work)
        .args(["base", "build", "--from", "busybox"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("notice: /etc/subuid and /etc/subgid have no range")
            && err.contains("packaging that changes owners"),
        "{err}"
    );
}

/// The rootless Debian tests' shared work dir, owned by the test user: in the target dir when
/// the user can reach it, like the root tests' (tests/common_debian), else under /var/tmp.
fn rootless_debian_work_dir(user: &User) -> Option<PathBuf> {
    let root_work = common_debian::debian_work_dir()?;
    let parent = root_work.parent().unwrap();
    let base = if user_can_reach(user.uid, user.gid, parent) {
        parent.to_path_buf()
    } else {
        let hashed = sha256_hex(parent.as_os_str().as_encoded_bytes());
        let dir = PathBuf::from(format!("/var/tmp/fissile-oci-tests-{}", &hashed[..12]));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    };
    Some(user_dir(
        user.uid,
        user.gid,
        &base.join("debian-work-rootless"),
    ))
}

/// Slow (a rootless mmdebstrap, then the example release), and run in CI all the same.
#[test]
fn the_debian_default_base_builds_rootless_and_the_example_compiles_to_roots_bytes() {
    let Some(user) = User::new() else { return };
    let Some(root_work) = common_debian::debian_work_dir() else {
        return;
    };
    let Some(user_work) = rootless_debian_work_dir(&user) else {
        return;
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-release");
    if !user_can_reach(user.uid, user.gid, &example) {
        skip(&format!(
            "the test user cannot reach {} (a checkout under a private home?)",
            example.display()
        ));
        return;
    }
    // As root: the default base, built on first use or reused (tests/base.rs rebuilds it).
    let root_summary = root_work.join("rootless-reference.json");
    ok(fissile(&root_work)
        .args(["-q", "compile"])
        .arg(&example)
        .arg("--summary")
        .arg(&root_summary));
    // As the user: bootstrapped afresh every time, so the rootless mmdebstrap path runs.
    let started = Instant::now();
    let user_cbase =
        ok(user
            .fissile(&user_work)
            .args(["-q", "base", "build", "--from", "debian:bookworm"]))
        .trim()
        .to_string();
    eprintln!(
        "debian:bookworm built rootless in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let (root_refs, user_refs) = (refs(&root_work), refs(&user_work));
    assert_eq!(
        user_refs.get("debian-bookworm"),
        root_refs.get("debian-bookworm"),
        "the Debian base built rootless differs from root's (if {} predates a change to base \
         building, remove it):\n{}",
        root_work.display(),
        layer_diff(
            (&root_work, "debian-bookworm"),
            (&user_work, "debian-bookworm")
        )
        .join("\n")
    );
    assert_eq!(user_refs.get(&user_cbase), root_refs.get(&user_cbase));
    let user_summary = user_work.join("summary.json");
    ok(user
        .fissile(&user_work)
        .args(["-q", "compile"])
        .arg(&example)
        .arg("--summary")
        .arg(&user_summary));
    let (root_packages, user_packages) = (summary(&root_summary), summary(&user_summary));
    assert_eq!(user_packages.len(), 5);
    for (name, (status, key, layer)) in &user_packages {
        assert!(
            status == "compiled" || status == "cached",
            "{name}: {status}"
        );
        assert_eq!(
            (key, layer),
            (&root_packages[name].1, &root_packages[name].2),
            "{name}: same cache key and layer as root's"
        );
    }
    assert_eq!(entries(&user_work.join("runs")), Vec::<String>::new());
}

/// Slow-ish (two rootless mmdebstraps stopped halfway), and run in CI all the same.
#[test]
fn a_rootless_debian_build_stopped_halfway_leaves_nothing_cache_clean_cannot_remove() {
    let Some(user) = User::new() else { return };
    if common_debian::debian_work_dir().is_none() {
        return;
    }
    let work = user.dir("work");
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let mut child = user
            .fissile(&work)
            .args(["base", "build", "--from", "debian:bookworm"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Halfway: packages are being unpacked into the tree, as subordinate ids.
        let halfway = eventually(Duration::from_secs(300), || {
            entries(&work.join("runs")).iter().any(|staging| {
                entries(&work.join("runs").join(staging).join("rootfs/usr/bin")).len() > 100
            })
        });
        assert!(halfway, "mmdebstrap never got halfway");
        let staging: Vec<String> = entries(&work.join("runs"));
        let bootstrapping = || {
            staging
                .iter()
                .any(|s| !processes_mentioning(&format!("runs/{s}/rootfs")).is_empty())
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        if signal == nix::sys::signal::Signal::SIGTERM {
            // Interrupted, the build stops mmdebstrap and removes its own staging dir.
            assert_eq!(status.code(), Some(130));
            assert!(
                !bootstrapping(),
                "mmdebstrap outlived the interrupted build"
            );
            assert_eq!(entries(&work.join("runs")), Vec::<String>::new());
        } else {
            assert!(
                !user.can_remove(&work.join("runs")),
                "a killed build left nothing the user could not remove: the test proves nothing"
            );
            // mmdebstrap is told (a parent-death signal) and finishes the step it is in; it
            // holds the work dir's lock until then, so gc waits for it instead of racing it.
            // What gc did goes to stderr, with the other notices.
            let gc = succeed(user.fissile(&work).args(["cache", "gc"])).stderr;
            let gc = String::from_utf8_lossy(&gc);
            assert!(
                !bootstrapping(),
                "cache gc ran while mmdebstrap was still writing"
            );
            assert!(gc.contains("1 abandoned run dirs"), "{gc}");
            assert_eq!(entries(&work.join("runs")), Vec::<String>::new());
        }
    }
    ok(user.fissile(&work).args(["cache", "clean"]));
    assert_eq!(entries(&work), vec!["lock".to_string()]);
}
