//! `fissile-oci compile` end to end: real sandboxes on a busybox base (fast), and the example
//! release on the Debian base with real gcc (slow, runs in CI).

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common_cli;
mod common_debian;
mod common_release;
mod common_skip;

use common_cli::{fissile, succeed};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// Runs `cmd`, asserting success; returns stderr (where the CLI reports progress).
fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(cmd).stderr).into_owned()
}

fn root_or_skip() -> bool {
    common_cli::root_or_skip(
        "compile tests run sandboxes as root here; the sandbox suite covers rootless mode",
    )
}

/// A source-directory release: (name, deps, packaging script) per package (the slice type lets
/// the literals' dependency arrays of different lengths coerce).
fn release(dir: &Path, name: &str, packages: &[(&str, &[&str], &str)]) -> PathBuf {
    common_release::release(dir, name, packages)
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn statuses(summary: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = summary["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Checks run inside each package's sandbox: the BOSH contract, from the inside.
const CHECKING_SCRIPT: &str = r#"set -e
test "$BOSH_PACKAGE_NAME" = "$(basename "$PWD")"
test "$BOSH_COMPILE_TARGET" = "/var/vcap/source/$BOSH_PACKAGE_NAME"
test "$BOSH_INSTALL_TARGET" = "/var/vcap/packages/$BOSH_PACKAGE_NAME"
test "$BOSH_PACKAGES_DIR" = "/var/vcap/packages"
test -n "$BOSH_PACKAGE_VERSION"
test -f "$BOSH_PACKAGE_NAME/input.txt"
test "$(hostname)" = compiler
for dep in $DEPS; do
  test -f /var/vcap/packages/$dep/marker
  if touch /var/vcap/packages/$dep/write-test 2>/dev/null; then echo "dependency $dep is writable"; exit 41; fi
done
# Only direct dependencies are mounted.
for other in $(ls /var/vcap/packages); do
  case " $DEPS $BOSH_PACKAGE_NAME " in *" $other "*) ;; *) echo "unexpected mount $other"; exit 42;; esac
done
echo "$BOSH_PACKAGE_NAME $BOSH_PACKAGE_VERSION" > "$BOSH_INSTALL_TARGET/marker"
cat "$BOSH_PACKAGE_NAME/input.txt" >> "$BOSH_INSTALL_TARGET/marker"
"#;

fn checking(deps: &str) -> String {
    format!("DEPS='{deps}'\n{CHECKING_SCRIPT}")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    ok(fissile(&work).args(["-q", "base", "build", "--from", "busybox"]));
    Fixture {
        dir: tmp.path().to_path_buf(),
        work,
        _tmp: tmp,
    }
}

fn dag(f: &Fixture) -> PathBuf {
    release(
        &f.dir,
        "dag",
        &[
            ("base-lib", &[], &checking("")),
            ("tool", &[], &checking("")),
            ("mid", &["base-lib"], &checking("base-lib")),
            ("app", &["mid", "tool"], &checking("mid tool")),
        ],
    )
}

#[test]
fn a_dag_compiles_with_the_bosh_contract_then_comes_from_the_cache() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = dag(&f);
    let s = f.dir.join("s.json");
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "-j", "2", "--summary"])
        .arg(&s));
    let first = summary(&s);
    assert!(
        statuses(&first).iter().all(|(_, st)| st == "compiled"),
        "{first}"
    );
    for p in first["packages"].as_array().unwrap() {
        let digest = p["layer_digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(p["cache_key"].as_str().unwrap().len(), 64);
    }
    // skopeo reads every compiled package from the store.
    if Command::new("skopeo").arg("--version").output().is_ok() {
        let key = first["packages"][0]["cache_key"].as_str().unwrap();
        let name = first["packages"][0]["name"].as_str().unwrap();
        let out = run(Command::new("skopeo").arg("inspect").arg(format!(
            "oci:{}:pkg-{name}-{key}",
            f.work.join("oci").display()
        )));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "--summary"])
        .arg(&s));
    assert!(statuses(&summary(&s)).iter().all(|(_, st)| st == "cached"));
    assert!(ok(fissile(&f.work).args(["cache", "verify"])).is_empty());

    // Change the leaf: it and its dependants recompile, nothing else.
    std::fs::write(rel.join("src/base-lib/input.txt"), "changed\n").unwrap();
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "--summary"])
        .arg(&s));
    let st = statuses(&summary(&s));
    assert_eq!(
        st,
        vec![
            ("app".into(), "compiled".into()),
            ("base-lib".into(), "compiled".into()),
            ("mid".into(), "compiled".into()),
            ("tool".into(), "cached".into())
        ]
    );
    // The output of a dependant saw the new dependency.
    let marker = std::fs::read_dir(f.work.join("packages"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("marker")).ok())
        .any(|m| m.contains("changed"));
    assert!(marker);
}

#[test]
fn fail_fast_and_keep_going_report_each_failure() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = release(
        &f.dir,
        "failing",
        &[
            ("ok-a", &[], "echo fine > $BOSH_INSTALL_TARGET/x"),
            ("bad-one", &[], "echo 'first problem here'; exit 3"),
            ("bad-two", &[], "echo 'second problem here' >&2; exit 4"),
            ("after-bad", &["bad-one"], "true"),
            ("after-ok", &["ok-a"], "true"),
        ],
    );
    let s = f.dir.join("s.json");
    let out = run(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "-j", "2", "--keep-going", "--summary"])
        .arg(&s));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("package bad-one failed: packaging script exited with code 3"),
        "{err}"
    );
    assert!(
        err.contains("package bad-two failed: packaging script exited with code 4"),
        "{err}"
    );
    assert!(
        err.contains("first problem here") && err.contains("second problem here"),
        "log tails shown: {err}"
    );
    let st = statuses(&summary(&s));
    assert_eq!(
        st,
        vec![
            ("after-bad".into(), "skipped".into()),
            ("after-ok".into(), "compiled".into()),
            ("bad-one".into(), "failed".into()),
            ("bad-two".into(), "failed".into()),
            ("ok-a".into(), "compiled".into())
        ]
    );

    // Fail fast: stops at the first failure; nothing behind it starts.
    let work2 = f.dir.join("work2");
    ok(fissile(&work2).args(["-q", "base", "build", "--from", "busybox"]));
    let out = run(fissile(&work2)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "-j", "1", "--summary"])
        .arg(&s));
    assert_eq!(out.status.code(), Some(1));
    let st = statuses(&summary(&s));
    assert!(st.iter().any(|(_, s)| s == "failed"));
    assert!(
        st.iter().any(|(n, s)| n == "after-bad" && s == "skipped"),
        "{st:?}"
    );
    assert!(
        std::fs::read_dir(work2.join("runs"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no scratch dirs left"
    );
}

#[test]
fn keep_sandbox_keeps_the_failed_scratch_dir() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = release(
        &f.dir,
        "kept",
        &[("broken", &[], "touch partial-output; exit 1")],
    );
    let out = run(fissile(&f.work).arg("compile").arg(&rel).args([
        "--base",
        "busybox",
        "--keep-sandbox",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scratch dir kept") && err.contains("fissile-oci shell"),
        "{err}"
    );
    let kept = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("scratch dir kept: "))
        .unwrap();
    // The staged sources are untouched; what the script wrote is the build tree kept on disk
    // (the copy-on-write layer over the sources).
    assert!(Path::new(kept).join("source/packaging").exists());
    assert!(!Path::new(kept).join("source/partial-output").exists());
    assert!(Path::new(kept)
        .join("sandbox/cow/0/upper/partial-output")
        .exists());
    // `shell` reopens the kept dir, with the partial output the failed script left.
    let out = run(fissile(&f.work).arg("shell").arg(&rel).args([
        "broken",
        "--base",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "ls; echo $BOSH_INSTALL_TARGET",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("partial-output") && stdout.contains("/var/vcap/packages/broken"),
        "{stdout}"
    );
    // Exit codes of the shell come back.
    let out = run(fissile(&f.work).arg("shell").arg(&rel).args([
        "broken", "--base", "busybox", "--", "/bin/sh", "-c", "exit 7",
    ]));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn shell_mounts_the_compiled_dependencies() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = dag(&f);
    let out = run(fissile(&f.work).arg("shell").arg(&rel).args([
        "app",
        "--base",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "ls /var/vcap/packages; cat /var/vcap/packages/mid/marker",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mid\n") && stdout.contains("tool") && !stdout.contains("base-lib\n"),
        "only direct deps: {stdout}"
    );
    assert!(stdout.contains("source of mid"), "{stdout}");
    let out = run(fissile(&f.work)
        .arg("shell")
        .arg(&rel)
        .args(["nope", "--base", "busybox"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no package \"nope\""));
}

#[test]
fn role_manifest_compiles_only_the_needed_closure() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = dag(&f);
    std::fs::create_dir_all(rel.join("jobs/mid-job")).unwrap();
    std::fs::write(
        rel.join("jobs/mid-job/spec"),
        "name: mid-job\npackages: [mid]\n",
    )
    .unwrap();
    let manifest = f.dir.join("roles.yml");
    std::fs::write(
        &manifest,
        "instance_groups:\n- name: g\n  jobs:\n  - name: mid-job\n    release: dag\n",
    )
    .unwrap();
    let s = f.dir.join("s.json");
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "-m"])
        .arg(&manifest)
        .arg("--summary")
        .arg(&s));
    assert_eq!(
        statuses(&summary(&s)),
        vec![
            ("base-lib".into(), "compiled".into()),
            ("mid".into(), "compiled".into())
        ]
    );
}

#[test]
fn sigint_stops_everything_and_a_rerun_succeeds() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    // A sleep no other test (or other run of the suite on this machine) starts: processes are
    // counted machine-wide by their command line.
    let sleep = format!("sleep {}", 3000 + std::process::id() % 1000);
    let rel = release(
        &f.dir,
        "slow",
        &[
            (
                "sleepy",
                &[],
                &format!("{sleep}; touch $BOSH_INSTALL_TARGET/done"),
            ),
            ("sleepy2", &[], &sleep),
        ],
    );
    let mut child = fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "-j", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both sandboxes run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && count_processes(&sleep) < 2 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        count_processes(&sleep),
        2,
        "both compiles should be running"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count_processes(&sleep), 0, "no compile process left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&f.work.display().to_string()),
        "no mount left under the work dir"
    );
    let runs = std::fs::read_dir(f.work.join("runs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "no scratch dir left");
    // A rerun (with a quick script) completes on the same work dir.
    std::fs::write(
        rel.join("packages/sleepy/packaging"),
        "touch $BOSH_INSTALL_TARGET/done",
    )
    .unwrap();
    std::fs::write(rel.join("packages/sleepy2/packaging"), "true").unwrap();
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox"]));
}

fn count_processes(cmdline: &str) -> usize {
    processes().filter(|(_, c)| c == cmdline).count()
}

/// The host's processes: pid and command line, arguments joined by spaces.
fn processes() -> impl Iterator<Item = (u32, String)> {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| {
        let e = e.ok()?;
        let pid = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        Some((
            pid,
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim()
                .to_string(),
        ))
    })
}

#[test]
fn two_concurrent_runs_on_one_work_dir_compile_each_shared_package_once() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    // Two releases sharing base-lib and tool (same files, so the same keys); each package
    // takes long enough for the runs to overlap. Each script's sleep has a command line of its
    // own (and of this test process), so the executions are counted on the host's /proc.
    let marker = |i: u32| format!("sleep 0.6{:03}{i}", std::process::id() % 1000);
    let slow = |i: u32, deps: &str| format!("{}\n{}", marker(i), checking(deps));
    let names = ["base-lib", "tool", "mid", "app", "other"];
    let first = release(
        &f.dir,
        "first",
        &[
            ("base-lib", &[], &slow(0, "")),
            ("tool", &[], &slow(1, "")),
            ("mid", &["base-lib"], &slow(2, "base-lib")),
            ("app", &["mid", "tool"], &slow(3, "mid tool")),
        ],
    );
    let second = release(
        &f.dir,
        "second",
        &[
            ("base-lib", &[], &slow(0, "")),
            ("tool", &[], &slow(1, "")),
            ("other", &["base-lib"], &slow(4, "base-lib")),
        ],
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let markers: Vec<String> = (0..names.len() as u32).map(marker).collect();
        std::thread::spawn(move || {
            // Distinct host pids seen running each script's sleep: one per execution.
            let mut seen: Vec<std::collections::BTreeSet<u32>> = vec![Default::default(); 5];
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (pid, cmdline) in processes() {
                    if let Some(i) = markers.iter().position(|m| *m == cmdline) {
                        seen[i].insert(pid);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            seen.iter().map(|s| s.len()).collect::<Vec<_>>()
        })
    };
    let spawn = |rel: &Path, summary: &Path| {
        fissile(&f.work)
            .arg("compile")
            .arg(rel)
            .args(["--base", "busybox", "-j", "2", "--no-wait", "--summary"])
            .arg(summary)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (s1, s2) = (f.dir.join("first.json"), f.dir.join("second.json"));
    // --no-wait: a run that found the work dir taken would exit 2 at once.
    let (a, b) = (spawn(&first, &s1), spawn(&second, &s2));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let executions = watcher.join().unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    for (name, count) in names.iter().zip(&executions) {
        assert_eq!(
            *count, 1,
            "{name}'s packaging script ran {count} times: {executions:?}"
        );
    }
    let (one, two) = (statuses(&summary(&s1)), statuses(&summary(&s2)));
    let of = |list: &[(String, String)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    for shared in ["base-lib", "tool"] {
        let both = [of(&one, shared), of(&two, shared)];
        both.iter()
            .for_each(|s| assert!(s == "compiled" || s == "cached", "{shared}: {both:?}"));
        assert_eq!(
            both.iter().filter(|s| *s == "compiled").count(),
            1,
            "{shared} is compiled by exactly one run: {both:?}"
        );
    }
    for own in ["mid", "app"] {
        assert_eq!(of(&one, own), "compiled");
    }
    assert_eq!(of(&two, "other"), "compiled");
    let out =
        run(fissile(&f.work)
            .arg("compile")
            .arg(&first)
            .args(["--base", "busybox", "--no-wait"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 cached"));
}

#[test]
fn the_example_release_compiles_with_gcc_on_the_debian_base() {
    if !root_or_skip() {
        return;
    }
    let Some(work) = common_debian::debian_work_dir() else {
        return;
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-release");
    let s = work.join("summary.json");
    ok(fissile(&work)
        .arg("compile")
        .arg(&example)
        .arg("--summary")
        .arg(&s));
    let st = statuses(&summary(&s));
    assert_eq!(st.len(), 5);
    assert!(
        st.iter().all(|(_, s)| s == "compiled" || s == "cached"),
        "{st:?}"
    );
    let bundle = summary(&s)["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello-bundle")
        .unwrap()
        .clone();
    let dir = work
        .join("packages")
        .join(bundle["cache_key"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("smoke-test.txt"))
            .unwrap()
            .trim(),
        "hello, bosh"
    );
}

#[test]
fn a_release_tarball_compiles_and_shells_from_its_archives() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    // A final release tarball made here: packages/<n>.tgz with packaging and sources, as bosh does.
    let stage = f.dir.join("stage");
    let mut manifest = String::from("name: tarred\nversion: '1'\npackages:\n");
    for (name, deps, script) in [
        ("lower", "[]", "cat input.txt > $BOSH_INSTALL_TARGET/out"),
        (
            "upper",
            "[lower]",
            "cat /var/vcap/packages/lower/out input.txt > $BOSH_INSTALL_TARGET/out",
        ),
    ] {
        let pkg = stage.join("pkg").join(name);
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("packaging"), script).unwrap();
        std::fs::write(pkg.join("input.txt"), format!("from {name}\n")).unwrap();
        let archive = stage.join("packages").join(format!("{name}.tgz"));
        std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
        assert!(Command::new("tar")
            .arg("-C")
            .arg(&pkg)
            .arg("-czf")
            .arg(&archive)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let sha1 = String::from_utf8(run(Command::new("sha1sum").arg(&archive)).stdout).unwrap();
        let sha1 = sha1.split_whitespace().next().unwrap().to_string();
        let fp = format!("{:0>40}", name.len());
        manifest.push_str(&format!("- name: {name}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {sha1}\n  dependencies: {deps}\n"));
    }
    std::fs::write(stage.join("release.MF"), manifest).unwrap();
    let tarball = f.dir.join("tarred-1.tgz");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .arg("-czf")
        .arg(&tarball)
        .args(["release.MF", "packages"])
        .status()
        .unwrap()
        .success());
    let s = f.dir.join("s.json");
    ok(fissile(&f.work)
        .arg("compile")
        .arg(&tarball)
        .args(["--base", "busybox", "--summary"])
        .arg(&s));
    let summary = summary(&s);
    let upper = summary["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "upper")
        .unwrap();
    let out = std::fs::read_to_string(
        f.work
            .join("packages")
            .join(upper["cache_key"].as_str().unwrap())
            .join("out"),
    )
    .unwrap();
    assert_eq!(out, "from lower\nfrom upper\n");
    let out = run(fissile(&f.work).arg("shell").arg(&tarball).args([
        "upper",
        "--base",
        "busybox",
        "--",
        "/bin/cat",
        "input.txt",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from upper\n");
}

#[test]
fn a_flooding_package_keeps_a_bounded_log_and_is_still_reported() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = release(
        &f.dir,
        "chatty",
        &[(
            "flood",
            &[],
            "echo first words\nyes 'a chatty build says this again and again' | head -c 600000000\necho\necho last words\nexit 4\n",
        )],
    );
    let s = f.dir.join("s.json");
    let out = run(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox", "--summary"])
        .arg(&s));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("package flood failed"), "{stderr}");
    assert!(
        stderr.contains("last words"),
        "the failure shows the log's end: {stderr}"
    );
    let summary = summary(&s);
    let log = PathBuf::from(summary["packages"][0]["log"].as_str().unwrap());
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= (16 << 20) + 1024, "the log is {size} bytes");
    let head = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&head);
    assert!(text.contains("first words"));
    assert!(text.contains("bytes of output cut here"));
}

#[test]
fn build_trees_live_on_a_tmpfs_and_one_that_outgrows_it_is_compiled_again_on_disk() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    // `fits` builds in its source dir and checks where that is; `huge` needs 24 MiB of build
    // tree, three times its 8 MiB tmpfs.
    let rel = release(
        &f.dir,
        "scratch",
        &[
            (
                "fits",
                &[],
                "set -e\ndd if=/dev/zero of=build.o bs=1M count=2 2>/dev/null\n\
                 grep -o 'upperdir=[^,]*' /proc/self/mountinfo > $BOSH_INSTALL_TARGET/where\n\
                 ls > $BOSH_INSTALL_TARGET/listing\n",
            ),
            (
                "huge",
                &[],
                "set -e\ndd if=/dev/zero of=build.o bs=1M count=24 2>/dev/null\n\
                 echo built > $BOSH_INSTALL_TARGET/out\n",
            ),
        ],
    );
    let summary_path = f.dir.join("summary.json");
    let err = ok(fissile(&f.work)
        .arg("-v")
        .arg("compile")
        .arg(&rel)
        .args([
            "--base",
            "busybox",
            "--scratch",
            "tmpfs",
            "--scratch-size",
            "8M",
        ])
        .arg("--summary")
        .arg(&summary_path));
    assert!(
        err.contains("build trees on a tmpfs of up to 8 MiB per package (--scratch-size)"),
        "{err}"
    );
    assert_eq!(
        statuses(&summary(&summary_path)),
        [
            ("fits".to_string(), "compiled".to_string()),
            ("huge".to_string(), "compiled".to_string())
        ]
    );
    let note = err
        .lines()
        .find(|l| l.contains("note:"))
        .unwrap_or_else(|| panic!("no line says huge ran again: {err}"));
    assert!(
        note.contains("huge") && note.contains("8 MiB tmpfs") && note.contains("on disk"),
        "{note}"
    );
    assert_eq!(err.matches("note:").count(), 1, "only huge: {err}");
    // Each file is one package's (`where` and `listing` fits', `out` huge's).
    let published = |file: &str| {
        std::fs::read_dir(f.work.join("packages"))
            .unwrap()
            .map(|e| e.unwrap().path().join(file))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|| panic!("no {file} published"))
    };
    // The overlays' upper dirs, as the kernel shows them inside: on the run's tmpfs.
    let uppers = published("where");
    assert!(
        uppers.contains("/sandbox/tmpfs/upper") && uppers.contains("/sandbox/tmpfs/cow/0/upper"),
        "{uppers}"
    );
    let listing = published("listing");
    assert!(
        listing.contains("build.o") && listing.contains("packaging") && listing.contains("fits"),
        "the sources and the build tree in one dir: {listing}"
    );
    assert_eq!(published("out"), "built\n");
    // Nothing of the runs is left: their tmpfs went with them, their scratch dirs with the run.
    let runs: Vec<_> = std::fs::read_dir(f.work.join("runs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "{runs:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&f.work.display().to_string()),
        "no mount of the run reached the host: {mounts}"
    );
}
