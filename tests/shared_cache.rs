//! The fleet's shared cache end to end: real sandboxes on the busybox base, and Debian's
//! `docker-registry` (distribution 2.8) on 127.0.0.1 as the meeting point. Runner A compiles and
//! pushes; runner B, on a fresh work dir, pulls everything and compiles nothing; a changed
//! dependency is compiled again, not served stale; `--cache-mode read` never pushes; a registry
//! that dies mid-run or serves a corrupt blob costs a warning and a local compile, nothing
//! corrupt is stored; four shards of a 60-package release compile each package once across the
//! fleet, and a final run pulls everything.

#![allow(clippy::disallowed_methods)]

mod common_cli;
mod common_registry;
mod common_release;
mod common_skip;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common_cli::{fissile, succeed};
use common_registry::{Damage, Options, Proxy, Registry};
use common_release::release;

fn ready() -> bool {
    common_cli::root_or_skip("shared cache tests compile in sandboxes as root here")
        && common_registry::available()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copies its sources and writes which dependencies it saw.
fn script(extra: &str) -> String {
    format!(
        "{extra}\ncp -a . \"$BOSH_INSTALL_TARGET\"\nls /var/vcap/packages > \"$BOSH_INSTALL_TARGET/seen\"\n"
    )
}

fn pkg(name: &str, deps: &[&str], extra: &str) -> (String, Vec<String>, String) {
    (
        name.to_string(),
        deps.iter().map(|d| d.to_string()).collect(),
        script(extra),
    )
}

/// lib <- tool <- app, and notes alone. tool links to lib's files, as packages do: an absolute
/// link and a relative one, which mean something only in the sandbox.
fn demo(dir: &Path) -> PathBuf {
    release(
        dir,
        "demo",
        &[
            pkg("lib", &[], ""),
            pkg(
                "tool",
                &["lib"],
                "ln -s /var/vcap/packages/lib/seen \"$BOSH_INSTALL_TARGET/lib-seen\"\n\
                 ln -s ../lib/input.txt \"$BOSH_INSTALL_TARGET/lib-input\"",
            ),
            pkg("app", &["tool"], ""),
            pkg("notes", &[], ""),
        ],
    )
}

/// A work dir with the busybox base.
fn busybox_work(dir: &Path, name: &str) -> PathBuf {
    let work = dir.join(name);
    succeed(fissile(&work).args(["-q", "base", "build", "--from", "busybox"]));
    work
}

fn compile(work: &Path, release: &Path, cache: &str, summary: &Path) -> Command {
    let mut cmd = fissile(work);
    cmd.arg("compile")
        .arg(release)
        .args(["--base", "busybox", "--cache", cache, "--tls-verify=false"])
        .arg("--summary")
        .arg(summary);
    cmd
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// name -> (status, cache key)
fn statuses(path: &Path) -> BTreeMap<String, (String, String)> {
    summary(path)["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                (
                    p["status"].as_str().unwrap().to_string(),
                    p["cache_key"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn all(path: &Path, status: &str) -> bool {
    statuses(path).values().all(|(s, _)| s == status)
}

/// The package refs of a work dir's store with their manifest digests.
fn package_refs(work: &Path) -> BTreeMap<String, String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("oci/index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            name.starts_with("pkg-")
                .then(|| (name.to_string(), m["digest"].as_str().unwrap().to_string()))
        })
        .collect()
}

fn tags(registry: &Registry, repo: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo}", registry.host()))
        .output()
        .unwrap();
    if !out.status.success() {
        // distribution answers 404 (NAME_UNKNOWN) for a repository nothing was pushed to.
        assert!(stderr(&out).contains("404"), "{}", stderr(&out));
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Requests that write to the registry: uploads, mounts, manifests.
fn writes(registry: &Registry) -> usize {
    registry
        .requests()
        .iter()
        .filter(|(m, _, _)| m == "PUT" || m == "POST" || m == "PATCH")
        .count()
}

#[test]
fn runner_b_pulls_everything_runner_a_compiled_and_a_changed_dependency_compiles_again() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Options::default());
    let cache = format!("{}/fleet/cache", registry.host());
    let rel = demo(tmp.path());

    let a = busybox_work(tmp.path(), "a");
    let sa = tmp.path().join("a.json");
    succeed(&mut compile(&a, &rel, &cache, &sa));
    assert!(all(&sa, "compiled"), "{:?}", statuses(&sa));
    let a_summary = summary(&sa);
    assert_eq!(
        a_summary["shared_cache"]["pushed"], 5,
        "4 packages and the base"
    );
    // One tag per cache key (pkg-<name>-<key>) and the compilation base, in a plain
    // distribution 2.8: OCI 1.0 manifests with our config media type and artifactType.
    let stored = tags(&registry, "fleet/cache");
    for (name, (_, key)) in statuses(&sa) {
        assert!(stored.contains(&format!("pkg-{name}-{key}")), "{stored:?}");
    }
    assert!(
        stored.iter().any(|t| t.starts_with("cbase-busybox-")),
        "{stored:?}"
    );
    let (_, app_key) = &statuses(&sa)["app"];
    let raw = succeed(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{cache}:pkg-app-{app_key}")),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cloudfoundry.fissile-oci.package.v2"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cloudfoundry.fissile-oci.package.config.v2+json"
    );
    assert_eq!(
        manifest["annotations"]["org.cloudfoundry.fissile-oci.cache-key"],
        app_key.as_str()
    );
    // What the key covers travels in one annotation; the config is one blob for all.
    let described: serde_json::Value = serde_json::from_str(
        manifest["annotations"]["org.cloudfoundry.fissile-oci.package"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(described["cache_key"], app_key.as_str());
    assert_eq!(described["name"], "app");
    assert!(described["diff_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let (_, lib_key) = &statuses(&sa)["lib"];
    let lib: serde_json::Value = serde_json::from_slice(
        &succeed(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{cache}:pkg-lib-{lib_key}")),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(lib["config"], manifest["config"]);

    // Runner B: an empty work dir, not even a base; nothing compiles.
    let b = tmp.path().join("b");
    let sb = tmp.path().join("b.json");
    let out = succeed(&mut compile(&b, &rel, &cache, &sb));
    assert!(all(&sb, "pulled"), "{:?}\n{}", statuses(&sb), stderr(&out));
    assert!(
        stderr(&out).contains("pulled from the shared cache"),
        "the base came from the cache: {}",
        stderr(&out)
    );
    // The same images, byte for byte, as A made them; the same files for dependants.
    assert_eq!(package_refs(&a), package_refs(&b));
    for (name, (_, key)) in statuses(&sb) {
        let seen = |w: &Path| std::fs::read(w.join("packages").join(&key).join("seen")).unwrap();
        assert_eq!(seen(&a), seen(&b), "{name}");
    }
    let (_, tool_key) = &statuses(&sb)["tool"];
    for (link, target) in [
        ("lib-seen", "/var/vcap/packages/lib/seen"),
        ("lib-input", "../lib/input.txt"),
    ] {
        let path = b.join("packages").join(tool_key).join(link);
        assert_eq!(std::fs::read_link(&path).unwrap(), Path::new(target));
    }
    succeed(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:pkg-app-{app_key}", b.join("oci").display())),
    );
    succeed(fissile(&b).args(["cache", "verify"]));
    // B pushes nothing: the cache had it all.
    assert_eq!(summary(&sb)["shared_cache"]["pushed"], 0);

    // A changed dependency: lib and what depends on it compile again; notes still comes
    // from the cache.
    std::fs::write(rel.join("src/lib/input.txt"), "lib, changed\n").unwrap();
    let c = tmp.path().join("c");
    let sc = tmp.path().join("c.json");
    succeed(&mut compile(&c, &rel, &cache, &sc));
    let now = statuses(&sc);
    let before = statuses(&sa);
    for name in ["lib", "tool", "app"] {
        assert_eq!(now[name].0, "compiled", "{name}: {now:?}");
        assert_ne!(now[name].1, before[name].1, "{name} has a new key");
    }
    assert_eq!(now["notes"].0, "pulled");
    let changed =
        std::fs::read_to_string(c.join("packages").join(&now["lib"].1).join("lib/input.txt"))
            .unwrap();
    assert_eq!(changed, "lib, changed\n");

    // export takes the cache too: a fresh work dir writes the compiled release, compiling
    // nothing.
    let d = tmp.path().join("d");
    let out = succeed(
        fissile(&d)
            .arg("export")
            .arg(&rel)
            .args(["--base", "busybox", "--stemcell", "ubuntu-jammy/1.1"])
            .args(["--cache", &cache, "--tls-verify=false", "-o"])
            .arg(tmp.path().join("out")),
    );
    assert!(stderr(&out).contains("0 compiled"), "{}", stderr(&out));
    let written = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        written.ends_with("-ubuntu-jammy-1.1.tgz") && Path::new(&written).is_file(),
        "{written}"
    );
}

#[test]
fn read_mode_never_pushes() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Options::default());
    let cache = format!("{}/fleet/cache", registry.host());
    let rel = demo(tmp.path());
    let a = busybox_work(tmp.path(), "a");
    let sa = tmp.path().join("a.json");
    succeed(compile(&a, &rel, &cache, &sa).args(["--cache-mode", "read"]));
    assert!(all(&sa, "compiled"));
    assert_eq!(summary(&sa)["shared_cache"]["pushed"], 0);
    assert!(tags(&registry, "fleet/cache").is_empty());
    assert_eq!(writes(&registry), 0, "{:?}", registry.requests());
    assert!(
        registry.requests().iter().any(|(m, _, _)| m == "HEAD"),
        "it looked things up: {:?}",
        registry.requests()
    );
}

#[test]
fn a_registry_stopped_mid_run_leaves_a_warning_and_a_local_compile() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(Options::default());
    let cache = format!("{}/fleet/cache", registry.host());
    let first = release(
        tmp.path(),
        "rel",
        &[
            pkg("a", &[], ""),
            pkg("b", &["a"], ""),
            pkg("c", &["b"], ""),
        ],
    );
    let a = busybox_work(tmp.path(), "a");
    succeed(&mut compile(&a, &first, &cache, &tmp.path().join("a.json")));
    // The same release with two more packages: d takes a while, e waits for it.
    let second = release(
        &tmp.path().join("v2"),
        "rel",
        &[
            pkg("a", &[], ""),
            pkg("b", &["a"], ""),
            pkg("c", &["b"], ""),
            pkg("d", &["c"], "sleep 2"),
            pkg("e", &["d"], ""),
        ],
    );
    let b = busybox_work(tmp.path(), "b");
    let sb = tmp.path().join("b.json");
    let mut child = compile(&b, &second, &cache, &sb)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let (mut pulled, mut started_d, mut killed) = (0, false, false);
    for line in lines.lines() {
        let line = line.unwrap();
        if line.contains("\"event\":\"finished\"") && line.contains("\"status\":\"pulled\"") {
            pulled += 1;
        }
        started_d |= line.contains("\"event\":\"started\"") && line.contains("\"package\":\"d\"");
        seen.push(line);
        // The registry dies while d compiles, once a, b and c are pulled: pulls of packages
        // the cache has do not wait for their dependencies, so c (and then d) may be ready
        // before b is.
        if started_d && pulled == 3 && !killed {
            registry.kill();
            killed = true;
        }
    }
    assert!(killed, "{}", seen.join("\n"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", seen.join("\n"));
    let st = statuses(&sb);
    for name in ["a", "b", "c"] {
        assert_eq!(st[name].0, "pulled", "{st:?}");
    }
    for name in ["d", "e"] {
        assert_eq!(st[name].0, "compiled", "{st:?}");
    }
    let report = summary(&sb);
    assert!(
        report["shared_cache"]["down"].is_string(),
        "{}",
        report["shared_cache"]
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("\"event\":\"warning\"") && l.contains("cannot reach")),
        "{}",
        seen.join("\n")
    );
    succeed(fissile(&b).args(["cache", "verify"]));
}

#[test]
fn a_corrupt_blob_is_detected_compiled_here_and_not_stored() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Options::default());
    let rel = demo(tmp.path());
    let a = busybox_work(tmp.path(), "a");
    let direct = format!("{}/fleet/cache", registry.host());
    succeed(&mut compile(&a, &rel, &direct, &tmp.path().join("a.json")));
    // B reaches the registry through a proxy that flips a byte in every blob it serves.
    let proxy = Proxy::start(registry.port, Damage::FlipBlobByte);
    let damaged = format!("{}/fleet/cache", proxy.host());
    let b = busybox_work(tmp.path(), "b");
    let before = std::fs::read_dir(b.join("oci/blobs/sha256"))
        .unwrap()
        .count();
    let sb = tmp.path().join("b.json");
    let out = succeed(compile(&b, &rel, &damaged, &sb).args(["--cache-mode", "read"]));
    assert!(all(&sb, "compiled"), "{:?}", statuses(&sb));
    assert!(proxy.damaged.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    // Nothing the proxy damaged is in the store: every blob hashes to its name, and the
    // compiled packages are B's own (the same bytes as A's, since the compile is
    // reproducible).
    succeed(fissile(&b).args(["cache", "verify"]));
    assert_eq!(package_refs(&a), package_refs(&b));
    let after = std::fs::read_dir(b.join("oci/blobs/sha256"))
        .unwrap()
        .count();
    assert!(after > before);
    let warnings = summary(&sb)["shared_cache"]["warnings"].clone();
    assert!(
        warnings.as_array().is_some_and(|w| w.len() >= 4),
        "a notice per package: {warnings}"
    );
}

#[test]
fn cache_required_fails_the_run_when_the_registry_is_down() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rel = demo(tmp.path());
    let a = busybox_work(tmp.path(), "a");
    let nobody = format!("127.0.0.1:{}/fleet/cache", common_registry::free_port());
    let out = compile(&a, &rel, &nobody, &tmp.path().join("a.json"))
        .arg("--cache-required")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--cache-required"),
        "{}",
        stderr(&out)
    );
    // Without it, the same run compiles everything here and says why.
    let sa = tmp.path().join("a2.json");
    let out = succeed(&mut compile(&a, &rel, &nobody, &sa));
    assert!(all(&sa, "compiled"));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

/// A 60-package release: each package depends on up to three earlier ones, a few chains run
/// through it.
fn sixty(dir: &Path) -> PathBuf {
    let packages: Vec<(String, Vec<String>, String)> = (0..60)
        .map(|i: usize| {
            let deps: Vec<String> = (0..i)
                .filter(|j| (i * 7 + j * 13) % 17 == 0 || *j + 10 == i)
                .take(3)
                .map(|j| format!("p{j:02}"))
                .collect();
            (format!("p{i:02}"), deps, script("sleep 0.1"))
        })
        .collect();
    release(dir, "sixty", &packages)
}

#[test]
fn four_shards_compile_each_package_once_and_a_final_run_compiles_nothing() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Options::default());
    let cache = format!("{}/fleet/cache", registry.host());
    let rel = sixty(tmp.path());
    fleet(tmp.path(), &rel, &cache, 4);
}

#[test]
fn without_a_tag_listing_shards_look_keys_up_one_by_one() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Options::default());
    // Some registries refuse to list a repository's tags to whoever may pull from it.
    let proxy = Proxy::start(registry.port, Damage::RefuseTagList);
    let cache = format!("127.0.0.1:{}/fleet/cache", proxy.port);
    let rel = sixty(tmp.path());
    fleet(tmp.path(), &rel, &cache, 2);
    assert!(proxy.damaged.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let heads = registry
        .requests()
        .iter()
        .filter(|(method, path, _)| method == "HEAD" && path.contains("/manifests/pkg-"))
        .count();
    assert!(heads > 0, "the keys were looked up one by one");
}

/// `shards` runners, each with its own work dir, started at once as a CI matrix would, then
/// a final unsharded run: each package compiled exactly once across the fleet, and the final
/// run compiles nothing.
fn fleet(tmp: &Path, rel: &Path, cache: &str, shards: usize) {
    let works: Vec<PathBuf> = (1..=shards)
        .map(|i| busybox_work(tmp, &format!("shard{i}")))
        .collect();
    let children: Vec<(PathBuf, std::process::Child)> = works
        .iter()
        .enumerate()
        .map(|(i, work)| {
            let s = tmp.join(format!("shard{}.json", i + 1));
            let child = compile(work, rel, cache, &s)
                .args(["-j", "2", "--shard", &format!("{}/{shards}", i + 1)])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (s, child)
        })
        .collect();
    let mut compiled: BTreeMap<String, usize> = BTreeMap::new();
    for (s, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let st = statuses(&s);
        assert_eq!(st.len(), 60);
        for (name, (status, _)) in st {
            assert!(
                ["compiled", "pulled", "skipped"].contains(&status.as_str()),
                "{name}: {status}"
            );
            if status == "compiled" {
                *compiled.entry(name).or_default() += 1;
            }
        }
        // What a shard did not compile or need is left to its owner, and says so.
        for p in summary(&s)["packages"].as_array().unwrap() {
            if p["status"] == "skipped" {
                let why = p["error"].as_str().unwrap();
                assert!(
                    why.starts_with("shard ") && why.ends_with(&format!("/{shards} compiles it")),
                    "{why}"
                );
            }
        }
    }
    assert_eq!(compiled.len(), 60, "every package compiled: {compiled:?}");
    assert!(
        compiled.values().all(|&n| n == 1),
        "each exactly once across the fleet: {compiled:?}"
    );
    // The final, unsharded run on a fresh work dir pulls everything and compiles nothing.
    let fin = tmp.join("final");
    let sf = tmp.join("final.json");
    let out = succeed(&mut compile(&fin, rel, cache, &sf));
    assert!(all(&sf, "pulled"), "{:?}\n{}", statuses(&sf), stderr(&out));
    assert!(stderr(&out).contains("0 compiled"), "{}", stderr(&out));
}
