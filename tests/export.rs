//! Compiled BOSH releases out and in, end to end: `export` of a release tarball compiled in real
//! sandboxes (busybox base), read back by an independent reader (Python's tarfile and PyYAML,
//! tests/common_bosh_reader); the same bytes from two work dirs and after a re-import; compiled
//! releases imported without a base (both entry forms); hostile compiled releases refused;
//! stemcell identities from a rootfs and from a stemcell tarball made from the Debian base.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
mod common_bosh_reader;
mod common_cli;
mod common_debian;
mod common_skip;

use common::{sha1_hex, sha256_hex, tgz};
use common_cli::{fissile, succeed};

const EPOCH: u64 = 1_700_000_000;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(cmd).stdout).into_owned()
}

/// Runs `cmd` expecting exit 2; returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{cmd:?}: expected exit 2, got {:?}\n{stderr}",
        out.status.code()
    );
    stderr
}

fn root_or_skip() -> bool {
    common_cli::root_or_skip(
        "export compiles in sandboxes as root here; the sandbox suite covers rootless mode",
    )
}

/// A tarball of `(name, content, mode)` regular files with the names exactly as given.
fn tar_of(files: &[(&str, &[u8], u32)], gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        let raw = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..raw.len()].copy_from_slice(raw);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    if !gzip {
        return tar;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&tar).unwrap();
    enc.finish().unwrap()
}

/// The release the export tests compile: three packages (one with a symlink, a hard link, an
/// empty dir, an executable and a path longer than 100 bytes), two jobs, a license.
struct Demo {
    tarball: PathBuf,
    fingerprints: BTreeMap<&'static str, String>,
    jobs: BTreeMap<&'static str, (String, String)>,
    license_sha1: String,
}

const LONG_DIR: &str = "share/a-directory-name-long-enough-to-need-more-than-one-tar-header/and-another-level-below-it";

fn demo(dir: &Path) -> Demo {
    let packages: [(&str, &[&str], String); 3] = [
        (
            "lib",
            &[],
            format!(
                r#"set -e
mkdir -p $BOSH_INSTALL_TARGET/bin $BOSH_INSTALL_TARGET/lib $BOSH_INSTALL_TARGET/empty $BOSH_INSTALL_TARGET/{LONG_DIR}
cp tool.sh $BOSH_INSTALL_TARGET/bin/tool
chmod 755 $BOSH_INSTALL_TARGET/bin/tool
echo "lib data" > $BOSH_INSTALL_TARGET/lib/data.txt
ln -s ../lib/data.txt $BOSH_INSTALL_TARGET/bin/data-link
ln $BOSH_INSTALL_TARGET/lib/data.txt $BOSH_INSTALL_TARGET/lib/hard.txt
echo deep > $BOSH_INSTALL_TARGET/{LONG_DIR}/file.txt
"#
            ),
        ),
        (
            "app",
            &["lib"],
            "set -e\n/var/vcap/packages/lib/bin/tool > $BOSH_INSTALL_TARGET/app.txt\ncat /var/vcap/packages/lib/lib/data.txt >> $BOSH_INSTALL_TARGET/app.txt\n".into(),
        ),
        ("solo", &[], "echo solo > $BOSH_INSTALL_TARGET/solo.txt\n".into()),
    ];
    let mut manifest = String::from(
        "---\nname: demo\nversion: '1.10'\ncommit_hash: 2e46642\nuncommitted_changes: false\npackages:\n",
    );
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut fingerprints = BTreeMap::new();
    for (name, deps, packaging) in &packages {
        let archive = tgz(
            &[
                ("packaging", packaging.as_bytes(), 0o644),
                ("tool.sh", b"#!/bin/sh\necho tool says hi\n", 0o755),
            ],
            true,
        );
        let fp = sha1_hex(format!("fingerprint of {name}").as_bytes());
        manifest.push_str(&format!(
            "- name: {name}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {}\n  dependencies: [{}]\n",
            sha1_hex(&archive),
            deps.join(", ")
        ));
        fingerprints.insert(*name, fp);
        members.push((format!("packages/{name}.tgz"), archive));
    }
    manifest.push_str("jobs:\n");
    let mut jobs = BTreeMap::new();
    for (name, pkgs, listed) in [("svc", "[app]", true), ("helper", "[solo]", false)] {
        let job_mf =
            format!("---\nname: {name}\ntemplates:\n  ctl.erb: bin/ctl\npackages: {pkgs}\n");
        let archive = tgz(
            &[
                ("job.MF", job_mf.as_bytes(), 0o644),
                ("monit", b"check process x\n", 0o644),
                ("templates/ctl.erb", b"#!/bin/bash\n<%= p('x') %>\n", 0o644),
            ],
            true,
        );
        let fp = sha1_hex(format!("job {name}").as_bytes());
        let sha1 = sha1_hex(&archive);
        manifest.push_str(&format!(
            "- name: {name}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {sha1}\n"
        ));
        if listed {
            manifest.push_str(&format!("  packages: {pkgs}\n"));
        }
        jobs.insert(name, (fp, sha1));
        members.push((format!("jobs/{name}.tgz"), archive));
    }
    let license = tgz(
        &[
            ("LICENSE", b"Apache License 2.0\n", 0o644),
            ("NOTICE", b"Copyright the demo authors\n", 0o644),
        ],
        true,
    );
    let license_sha1 = sha1_hex(&license);
    let license_fp = sha1_hex(b"license");
    manifest.push_str(&format!(
        "license:\n  version: {license_fp}\n  fingerprint: {license_fp}\n  sha1: {license_sha1}\n"
    ));
    members.push(("license.tgz".into(), license));
    members.push(("LICENSE".into(), b"Apache License 2.0\n".to_vec()));
    members.push(("NOTICE".into(), b"Copyright the demo authors\n".to_vec()));
    members.insert(0, ("release.MF".into(), manifest.into_bytes()));
    let named: Vec<(String, &[u8], u32)> = members
        .iter()
        .map(|(n, c)| (format!("./{n}"), c.as_slice(), 0o644))
        .collect();
    let refs: Vec<(&str, &[u8], u32)> =
        named.iter().map(|(n, c, m)| (n.as_str(), *c, *m)).collect();
    let tarball = dir.join("demo-1.10.tgz");
    std::fs::write(&tarball, tar_of(&refs, true)).unwrap();
    Demo {
        tarball,
        fingerprints,
        jobs,
        license_sha1,
    }
}

/// A temp dir with a work dir holding the busybox base.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    succeed(fissile(&work).args(["-q", "base", "build", "--from", "busybox"]));
    Fixture {
        dir: tmp.path().to_path_buf(),
        work,
        _tmp: tmp,
    }
}

/// `export` with a fixed SOURCE_DATE_EPOCH; returns the one path it printed.
fn export(work: &Path, args: &[&std::ffi::OsStr]) -> PathBuf {
    let out = stdout(
        fissile(work)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .arg("export")
            .args(args),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one release, one path: {out}");
    PathBuf::from(lines[0])
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn a_release_tarball_compiles_and_exports_as_bosh_reads_it() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let demo = demo(&f.dir);
    let out = f.dir.join("out");
    let summary = f.dir.join("summary.json");
    let path = export(
        &f.work,
        &[
            demo.tarball.as_os_str(),
            os("--base"),
            os("busybox"),
            os("--stemcell"),
            os("ubuntu-jammy/1.329"),
            os("-o"),
            out.as_os_str(),
            os("--summary"),
            summary.as_os_str(),
        ],
    );
    assert_eq!(path, out.join("demo-1.10-ubuntu-jammy-1.329.tgz"));
    let read = common_bosh_reader::read(&path, Some(&demo.tarball), EPOCH);

    assert_eq!(
        read["names"],
        // tarfile drops directories' trailing slash.
        serde_json::json!([
            "./release.MF",
            "./LICENSE",
            "./NOTICE",
            "./license.tgz",
            "./jobs",
            "./jobs/helper.tgz",
            "./jobs/svc.tgz",
            "./compiled_packages",
            "./compiled_packages/app.tgz",
            "./compiled_packages/lib.tgz",
            "./compiled_packages/solo.tgz"
        ])
    );
    let m = &read["manifest"];
    assert_eq!(m["name"], "demo");
    assert_eq!(m["version"], "1.10", "a version stays the string it was");
    assert_eq!(m["commit_hash"], "2e46642");
    assert_eq!(m["uncommitted_changes"], false);
    assert!(m.get("packages").is_none());
    // Jobs and license entries as the source release wrote them.
    let (svc_fp, svc_sha1) = &demo.jobs["svc"];
    let (helper_fp, helper_sha1) = &demo.jobs["helper"];
    assert_eq!(
        m["jobs"],
        serde_json::json!([
            {"name": "svc", "version": svc_fp, "fingerprint": svc_fp, "sha1": svc_sha1, "packages": ["app"]},
            {"name": "helper", "version": helper_fp, "fingerprint": helper_fp, "sha1": helper_sha1}
        ])
    );
    let license_fp = sha1_hex(b"license");
    assert_eq!(
        m["license"],
        serde_json::json!({"version": license_fp, "fingerprint": license_fp, "sha1": demo.license_sha1})
    );
    let compiled = m["compiled_packages"].as_array().unwrap();
    let names: Vec<&str> = compiled
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lib", "app", "solo"], "the source release's order");
    for p in compiled {
        let name = p["name"].as_str().unwrap();
        assert_eq!(p["version"], demo.fingerprints[name]);
        assert_eq!(p["fingerprint"], demo.fingerprints[name]);
        assert_eq!(p["stemcell"], "ubuntu-jammy/1.329");
        let sha1 = p["sha1"].as_str().unwrap();
        assert!(
            sha1.len() == 40 && !sha1.contains(':'),
            "the source release's era (sha1): {sha1}"
        );
    }
    assert_eq!(compiled[1]["dependencies"], serde_json::json!(["lib"]));
    assert_eq!(compiled[0]["dependencies"], serde_json::json!([]));

    // Each compiled package is its install dir at the tar root.
    let lib = &read["packages"]["lib"];
    let entries: Vec<(String, String, u64, String)> = lib["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
                e[2].as_u64().unwrap(),
                e[3].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("no {name} in {entries:?}"))
    };
    // tarfile drops directories' trailing slash: "./" reads as ".".
    assert_eq!(entries[0].0, ".");
    assert_eq!(find("./bin/tool").1, "file");
    assert_eq!(find("./bin/tool").2, 0o755);
    assert_eq!(find("./bin/data-link").1, "symlink");
    assert_eq!(find("./bin/data-link").3, "../lib/data.txt");
    assert_eq!(find("./lib/data.txt").1, "file");
    assert_eq!(find("./lib/hard.txt").1, "hardlink");
    assert_eq!(find("./lib/hard.txt").3, "./lib/data.txt");
    assert_eq!(find("./empty").1, "dir");
    let deep = format!("./{LONG_DIR}/file.txt");
    assert!(deep.len() > 100);
    assert_eq!(lib["files"][&deep], "deep\n");
    assert_eq!(
        read["packages"]["app"]["files"]["./app.txt"],
        "tool says hi\nlib data\n"
    );

    // GNU tar extracts each compiled package to what the compile published.
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    for p in s["packages"].as_array().unwrap() {
        assert_eq!(p["status"], "compiled");
        let name = p["name"].as_str().unwrap();
        let dir = f.dir.join(format!("untar-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let member = format!("./compiled_packages/{name}.tgz");
        let tgz = f.dir.join(format!("{name}.tgz"));
        let bytes = run(Command::new("tar").arg("-xzOf").arg(&path).arg(&member)).stdout;
        std::fs::write(&tgz, bytes).unwrap();
        succeed(
            Command::new("tar")
                .arg("-xzf")
                .arg(&tgz)
                .arg("-C")
                .arg(&dir),
        );
        let published = f
            .work
            .join("packages")
            .join(p["cache_key"].as_str().unwrap());
        assert_eq!(tree(&dir), tree(&published), "{name}");
    }

    // Exporting again writes the same bytes (nothing to overwrite); a different file at the
    // path is never overwritten.
    let again = export(
        &f.work,
        &[
            demo.tarball.as_os_str(),
            os("--base"),
            os("busybox"),
            os("--stemcell"),
            os("ubuntu-jammy/1.329"),
            os("-o"),
            out.as_os_str(),
        ],
    );
    assert_eq!(again, path);
    std::fs::write(&path, b"something else").unwrap();
    let err = fails(
        fissile(&f.work)
            .arg("export")
            .arg(&demo.tarball)
            .args([
                "--base",
                "busybox",
                "--stemcell",
                "ubuntu-jammy/1.329",
                "-o",
            ])
            .arg(&out),
    );
    assert!(err.contains("exists and differs"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"something else");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
}

/// Every path under `dir` with its kind, mode and content (or link target).
fn tree(dir: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let entry = if meta.file_type().is_symlink() {
                (
                    "link".into(),
                    0,
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if meta.is_dir() {
                stack.push(p.clone());
                ("dir".into(), mode, Vec::new())
            } else {
                ("file".into(), mode, std::fs::read(&p).unwrap())
            };
            out.insert(rel, entry);
        }
    }
    out
}

#[test]
fn two_work_dirs_give_the_same_bytes_and_a_reimport_re_emits_them() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let demo = demo(&f.dir);
    let export_to = |work: &Path, out: &str| {
        export(
            work,
            &[
                demo.tarball.as_os_str(),
                os("--base"),
                os("busybox"),
                os("--stemcell"),
                os("ubuntu-jammy/1.329"),
                os("-o"),
                f.dir.join(out).as_os_str(),
            ],
        )
    };
    let first = export_to(&f.work, "a");
    let other = f.dir.join("other-work");
    succeed(fissile(&other).args(["-q", "base", "build", "--from", "busybox"]));
    let second = export_to(&other, "b");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
        "two work dirs, same tarball"
    );

    // The compiled release as input, in a work dir with no base: imported, not compiled, and
    // exported again to the same bytes.
    let fresh = f.dir.join("fresh-work");
    let s = f.dir.join("import.json");
    let again = export(
        &fresh,
        &[
            first.as_os_str(),
            os("-o"),
            f.dir.join("c").as_os_str(),
            os("--summary"),
            s.as_os_str(),
        ],
    );
    assert_eq!(again.file_name(), first.file_name());
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&s).unwrap()).unwrap();
    assert!(summary["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "imported"));
    assert!(!fresh.join("rootfs").exists(), "no base was needed");

    // Re-emitted in the sha256 era: same files, new digests, jobs untouched.
    let sha256 = export(
        &fresh,
        &[
            first.as_os_str(),
            os("--digest"),
            os("sha256"),
            os("-o"),
            f.dir.join("d").as_os_str(),
        ],
    );
    let read = common_bosh_reader::read(&sha256, Some(&demo.tarball), EPOCH);
    let original = common_bosh_reader::read(&first, Some(&demo.tarball), EPOCH);
    for p in read["manifest"]["compiled_packages"].as_array().unwrap() {
        assert!(p["sha1"].as_str().unwrap().starts_with("sha256:"), "{p}");
    }
    assert_eq!(read["packages"], original["packages"]);
    assert_eq!(read["manifest"]["jobs"], original["manifest"]["jobs"]);
}

/// A compiled release tarball made by hand: `(name, deps, files of its install dir)`.
struct CompiledPackage<'a> {
    name: &'a str,
    deps: &'a [&'a str],
    archive: Vec<u8>,
    sha1: Option<String>,
    stemcell: Option<&'a str>,
}

impl<'a> CompiledPackage<'a> {
    fn new(name: &'a str, deps: &'a [&'a str], files: &[(&str, &[u8], u32)]) -> Self {
        CompiledPackage {
            name,
            deps,
            archive: tar_of(files, true),
            sha1: None,
            stemcell: Some("ubuntu-jammy/1.200"),
        }
    }
}

fn compiled_release(dir: &Path, packages: &[CompiledPackage<'_>], dot: bool) -> PathBuf {
    let mut manifest = String::from("name: handmade\nversion: 7\ncommit_hash: abc\nuncommitted_changes: false\ncompiled_packages:\n");
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for p in packages {
        let fp = sha256_hex(p.name.as_bytes());
        let sha1 = p
            .sha1
            .clone()
            .unwrap_or_else(|| format!("sha256:{}", sha256_hex(&p.archive)));
        manifest.push_str(&format!(
            "- name: {}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {sha1}\n  dependencies: [{}]\n",
            p.name,
            p.deps.join(", ")
        ));
        if let Some(stemcell) = p.stemcell {
            manifest.push_str(&format!("  stemcell: {stemcell}\n"));
        }
        members.push((
            format!("compiled_packages/{}.tgz", p.name),
            p.archive.clone(),
        ));
    }
    members.insert(0, ("release.MF".into(), manifest.into_bytes()));
    let prefix = if dot { "./" } else { "" };
    let named: Vec<(String, &[u8], u32)> = members
        .iter()
        .map(|(n, c)| (format!("{prefix}{n}"), c.as_slice(), 0o644))
        .collect();
    let refs: Vec<(&str, &[u8], u32)> =
        named.iter().map(|(n, c, m)| (n.as_str(), *c, *m)).collect();
    let path = dir.join(format!("handmade-{}.tgz", if dot { "dot" } else { "bare" }));
    std::fs::write(&path, tar_of(&refs, true)).unwrap();
    path
}

#[test]
fn compiled_releases_import_without_a_base_in_both_entry_forms() {
    let tmp = tempfile::tempdir().unwrap();
    for dot in [false, true] {
        let rel = compiled_release(
            tmp.path(),
            &[
                CompiledPackage::new("base-lib", &[], &[("lib/libx.so", b"ELF-ish\n", 0o755)]),
                CompiledPackage::new(
                    "tool",
                    &["base-lib"],
                    &[("./bin/tool", b"#!/bin/sh\n", 0o755)],
                ),
            ],
            dot,
        );
        let inspect: serde_json::Value = serde_json::from_str(&stdout(
            fissile(&tmp.path().join("unused"))
                .args(["inspect", "--json"])
                .arg(&rel),
        ))
        .unwrap();
        assert_eq!(inspect["releases"][0]["stemcell"], "ubuntu-jammy/1.200");
        assert_eq!(
            inspect["releases"][0]["packages"][1]["dependencies"],
            serde_json::json!(["base-lib"])
        );
        assert_eq!(
            inspect["compile_order"],
            serde_json::json!([]),
            "nothing to compile"
        );

        let work = tmp.path().join(format!("work-{dot}"));
        let s = tmp.path().join("s.json");
        let err = String::from_utf8_lossy(
            &succeed(
                fissile(&work)
                    .arg("compile")
                    .arg(&rel)
                    .arg("--summary")
                    .arg(&s),
            )
            .stderr,
        )
        .into_owned();
        assert!(err.contains("2 imported"), "{err}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&s).unwrap()).unwrap();
        let packages = summary["packages"].as_array().unwrap();
        assert!(
            packages.iter().all(|p| p["status"] == "imported"),
            "{summary}"
        );
        // Stored like a compiled package: skopeo reads it; the files are under var/vcap/packages.
        let tool = packages.iter().find(|p| p["name"] == "tool").unwrap();
        let reference = format!("pkg-tool-{}", tool["cache_key"].as_str().unwrap());
        let inspected = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{reference}", work.join("oci").display())));
        assert!(
            inspected.status.success(),
            "{}",
            String::from_utf8_lossy(&inspected.stderr)
        );
        let image: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
        assert_eq!(image["Layers"].as_array().unwrap().len(), 1);
        let published = work
            .join("packages")
            .join(tool["cache_key"].as_str().unwrap());
        assert_eq!(
            std::fs::read(published.join("bin/tool")).unwrap(),
            b"#!/bin/sh\n"
        );
        succeed(fissile(&work).args(["cache", "verify"]));

        // A second compile finds them imported; an export re-emits them with their files.
        let err = String::from_utf8_lossy(&succeed(fissile(&work).arg("compile").arg(&rel)).stderr)
            .into_owned();
        assert!(err.contains("2 imported"), "{err}");
        let out = export(
            &work,
            &[
                rel.as_os_str(),
                os("-o"),
                tmp.path().join("out").as_os_str(),
            ],
        );
        assert!(
            out.ends_with("handmade-7-ubuntu-jammy-1.200.tgz"),
            "{}",
            out.display()
        );
        let read = common_bosh_reader::read(&out, None, EPOCH);
        assert_eq!(
            read["packages"]["tool"]["files"]["./bin/tool"],
            "#!/bin/sh\n"
        );
        assert_eq!(
            read["packages"]["base-lib"]["files"]["./lib/libx.so"],
            "ELF-ish\n"
        );
        for p in read["manifest"]["compiled_packages"].as_array().unwrap() {
            assert!(
                p["sha1"].as_str().unwrap().starts_with("sha256:"),
                "the input's era"
            );
        }
        std::fs::remove_file(&out).unwrap();
    }
}

/// A tarball whose one entry has a raw name (the tar crate's builder refuses `..`).
fn hostile_tgz(name: &str, content: &[u8]) -> Vec<u8> {
    tar_of(&[(name, content, 0o644)], true)
}

#[test]
fn hostile_compiled_releases_are_refused_naming_the_package_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let compile_fails = |packages: &[CompiledPackage<'_>]| -> String {
        let rel = compiled_release(tmp.path(), packages, true);
        fails(fissile(&work).arg("compile").arg(&rel))
    };

    let mut traversal = CompiledPackage::new("evil", &[], &[]);
    traversal.archive = hostile_tgz("../../escaped", b"x");
    let err = compile_fails(&[traversal]);
    assert!(
        err.contains("compiled package \"evil\"")
            && err.contains("compiled_packages/evil.tgz")
            && err.contains("../../escaped"),
        "{err}"
    );
    assert!(!tmp.path().join("escaped").exists() && !work.join("escaped").exists());

    let mut mismatch = CompiledPackage::new("tampered", &[], &[("f", b"x", 0o644)]);
    mismatch.sha1 = Some(format!("sha256:{}", sha256_hex(b"something else")));
    let err = compile_fails(&[mismatch]);
    assert!(
        err.contains("compiled_packages/tampered.tgz") && err.contains("digest mismatch"),
        "{err}"
    );

    let mut unset = CompiledPackage::new("nostem", &[], &[("f", b"x", 0o644)]);
    unset.stemcell = None;
    let err = compile_fails(&[unset]);
    assert!(
        err.contains("compiled package \"nostem\"") && err.contains("field stemcell: missing"),
        "{err}"
    );

    let mut slashless = CompiledPackage::new("slashless", &[], &[("f", b"x", 0o644)]);
    slashless.stemcell = Some("ubuntu-jammy");
    let err = compile_fails(&[slashless]);
    assert!(
        err.contains("compiled package \"slashless\"")
            && err.contains("field stemcell")
            && err.contains("<os>/<version>"),
        "{err}"
    );

    let err = compile_fails(&[
        CompiledPackage::new("a", &["b"], &[("f", b"x", 0o644)]),
        CompiledPackage::new("b", &["a"], &[("f", b"x", 0o644)]),
    ]);
    assert!(err.contains("dependencies: a -> b -> a"), "{err}");

    // A link out of the package, then a file written through it.
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder.append_link(&mut link, "./out", "/tmp").unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(1);
    file.set_mode(0o644);
    builder
        .append_data(&mut file, "./out/planted", &b"x"[..])
        .unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&builder.into_inner().unwrap()).unwrap();
    let mut through_link = CompiledPackage::new("linky", &[], &[]);
    through_link.archive = enc.finish().unwrap();
    let err = compile_fails(&[through_link]);
    assert!(err.contains("compiled package \"linky\""), "{err}");
    assert!(!Path::new("/tmp/planted").exists());
    // A version that would put the tarball outside -o DIR.
    let rel = compiled_release(
        tmp.path(),
        &[CompiledPackage::new("fine", &[], &[("f", b"x", 0o644)])],
        true,
    );
    let text = {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&rel).unwrap(),
        ));
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            members.push((e.path().unwrap().to_string_lossy().into_owned(), data));
        }
        members
    };
    let hostile: Vec<(String, Vec<u8>)> = text
        .into_iter()
        .map(|(n, d)| {
            if n.ends_with("release.MF") {
                (
                    n,
                    String::from_utf8(d)
                        .unwrap()
                        .replace("version: 7", "version: ../../escaped")
                        .into_bytes(),
                )
            } else {
                (n, d)
            }
        })
        .collect();
    let refs: Vec<(&str, &[u8], u32)> = hostile
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), 0o644))
        .collect();
    let versioned = tmp.path().join("versioned.tgz");
    std::fs::write(&versioned, tar_of(&refs, true)).unwrap();
    let out = tmp.path().join("deep/er/out");
    let err = fails(
        fissile(&work)
            .arg("export")
            .arg(&versioned)
            .arg("-o")
            .arg(&out),
    );
    assert!(
        err.contains("release version") && err.contains("../../escaped"),
        "{err}"
    );
    assert!(!tmp
        .path()
        .join("deep/escaped-ubuntu-jammy-1.200.tgz")
        .exists());
    std::fs::remove_dir_all(work.join("packages")).ok();

    // Nothing of a refused release reached the store, but the one refused for its version.
    let index = std::fs::read_to_string(work.join("oci/index.json")).unwrap_or_default();
    assert_eq!(index.matches("\"pkg-").count(), 1, "{index}");
    assert!(index.contains("\"pkg-fine-"), "{index}");
}

/// The busybox base's unpacked rootfs, copied, made to look like a stemcell: os-release and
/// stemcell_version as bosh-agent reads them.
fn stemcell_like_rootfs(f: &Fixture, version: &str) -> PathBuf {
    let list = stdout(fissile(&f.work).args(["base", "list"]));
    let digest = list
        .lines()
        .find(|l| l.starts_with("busybox "))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let rootfs = f.dir.join(format!("rootfs-{version}"));
    succeed(
        Command::new("cp")
            .arg("-a")
            .arg(f.work.join("rootfs").join(digest))
            .arg(&rootfs),
    );
    std::fs::create_dir_all(rootfs.join("usr/lib")).unwrap();
    let _ = std::fs::remove_file(rootfs.join("etc/os-release"));
    std::fs::write(
        rootfs.join("usr/lib/os-release"),
        "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_CODENAME=jammy\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", rootfs.join("etc/os-release")).unwrap();
    std::fs::create_dir_all(rootfs.join("var/vcap/bosh/etc")).unwrap();
    std::fs::write(
        rootfs.join("var/vcap/bosh/etc/stemcell_version"),
        format!("{version}\n"),
    )
    .unwrap();
    rootfs
}

#[test]
fn a_base_is_the_stemcell_its_rootfs_says_and_imports_stand_in_by_the_directors_rule() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let demo = demo(&f.dir);
    // Without a stemcell anywhere, export says which flag to pass.
    let err = fails(
        fissile(&f.work)
            .arg("export")
            .arg(&demo.tarball)
            .args(["--base", "busybox", "-o"])
            .arg(f.dir.join("none")),
    );
    assert!(err.contains("--stemcell OS/VERSION"), "{err}");

    let rootfs = stemcell_like_rootfs(&f, "1.329");
    succeed(
        fissile(&f.work)
            .args(["-q", "base", "build", "--tag", "jammy", "--from"])
            .arg(format!("rootfs:{}", rootfs.display())),
    );
    let list = stdout(fissile(&f.work).args(["base", "list"]));
    let jammy = list.lines().find(|l| l.starts_with("jammy ")).unwrap();
    assert!(jammy.contains("ubuntu-jammy/1.329"), "{list}");
    assert!(
        list.lines()
            .filter(|l| l.contains("ubuntu-jammy/1.329"))
            .count()
            >= 2,
        "the compilation base inherits it: {list}"
    );
    let path = export(
        &f.work,
        &[
            demo.tarball.as_os_str(),
            os("--base"),
            os("jammy"),
            os("-o"),
            f.dir.join("out").as_os_str(),
        ],
    );
    assert!(path.ends_with("demo-1.10-ubuntu-jammy-1.329.tgz"));

    // That compiled release, imported into a work dir with a base of the same OS and major
    // version, stands in for the compiles there; a base of another major version compiles.
    let other = f.dir.join("other");
    succeed(fissile(&other).args(["-q", "base", "build", "--from", "busybox"]));
    let newer = stemcell_like_rootfs(&f, "1.400");
    succeed(
        fissile(&other)
            .args(["-q", "base", "build", "--tag", "jammy-1.400", "--from"])
            .arg(format!("rootfs:{}", newer.display())),
    );
    let two = stemcell_like_rootfs(&f, "2.1");
    succeed(
        fissile(&other)
            .args(["-q", "base", "build", "--tag", "jammy-2", "--from"])
            .arg(format!("rootfs:{}", two.display())),
    );
    succeed(fissile(&other).arg("compile").arg(&path));
    let statuses = |base: &str| -> BTreeMap<String, String> {
        let s = f.dir.join(format!("{base}.json"));
        succeed(
            fissile(&other)
                .arg("compile")
                .arg(&demo.tarball)
                .args(["--base", base, "--summary"])
                .arg(&s),
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&s).unwrap()).unwrap();
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert!(statuses("jammy-1.400").values().all(|s| s == "imported"));
    assert!(statuses("jammy-2").values().all(|s| s == "compiled"));
    assert!(statuses("busybox").values().all(|s| s == "compiled"));
    // The export on the 1.400 base says 1.400, with the imported files.
    let reexport = export(
        &other,
        &[
            demo.tarball.as_os_str(),
            os("--base"),
            os("jammy-1.400"),
            os("-o"),
            f.dir.join("out-1.400").as_os_str(),
        ],
    );
    assert!(reexport.ends_with("demo-1.10-ubuntu-jammy-1.400.tgz"));
    let a = common_bosh_reader::read(&path, Some(&demo.tarball), EPOCH);
    let b = common_bosh_reader::read(&reexport, Some(&demo.tarball), EPOCH);
    assert_eq!(a["packages"], b["packages"]);
    assert_eq!(
        b["manifest"]["compiled_packages"][0]["stemcell"],
        "ubuntu-jammy/1.400"
    );
}

#[test]
fn a_stemcell_tarball_of_the_debian_base_becomes_a_base_whose_identity_export_uses() {
    if !root_or_skip() {
        return;
    }
    let Some(debian) = common_debian::debian_work_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A package with real gcc, compiled on the default Debian base (built on first use).
    let rel = tmp.path().join("hello");
    std::fs::create_dir_all(rel.join("config")).unwrap();
    std::fs::write(rel.join("config/final.yml"), "name: hello\n").unwrap();
    std::fs::create_dir_all(rel.join("packages/hello")).unwrap();
    std::fs::write(
        rel.join("packages/hello/spec"),
        "name: hello\nfiles:\n- hello/*\n",
    )
    .unwrap();
    std::fs::write(
        rel.join("packages/hello/packaging"),
        "set -e\nmkdir -p $BOSH_INSTALL_TARGET/bin\ngcc -O2 -o $BOSH_INSTALL_TARGET/bin/hello hello/hello.c\n",
    )
    .unwrap();
    std::fs::create_dir_all(rel.join("src/hello")).unwrap();
    std::fs::write(
        rel.join("src/hello/hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hello from a stemcell\");return 0;}\n",
    )
    .unwrap();
    succeed(fissile(&debian).arg("compile").arg(&rel));

    // The Debian base's rootfs, with the file bosh stemcells carry, as a stemcell tarball.
    let list = stdout(fissile(&debian).args(["base", "list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("debian-") && l.split_whitespace().nth(1) == Some("base"))
        .unwrap_or_else(|| panic!("no Debian base in {list}"));
    let name = line.split_whitespace().next().unwrap();
    let digest = line
        .split_whitespace()
        .last()
        .unwrap()
        .trim_start_matches("sha256:");
    succeed(fissile(&debian).args(["run", "--base", name, "--", "/bin/true"]));
    let rootfs = debian.join("rootfs").join(digest);
    assert!(rootfs.join("etc").is_dir(), "{}", rootfs.display());
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(extra.join("var/vcap/bosh/etc")).unwrap();
    std::fs::write(extra.join("var/vcap/bosh/etc/stemcell_version"), "1.329\n").unwrap();
    let stemcell_dir = tmp.path().join("stemcell");
    std::fs::create_dir_all(&stemcell_dir).unwrap();
    let image_tar = tmp.path().join("image.tar");
    succeed(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&image_tar)
            .arg("."),
    );
    succeed(
        Command::new("tar")
            .arg("-C")
            .arg(&extra)
            .arg("-rf")
            .arg(&image_tar)
            .arg("./var/vcap/bosh/etc/stemcell_version"),
    );
    succeed(Command::new("gzip").arg("-1").arg(&image_tar));
    std::fs::rename(tmp.path().join("image.tar.gz"), stemcell_dir.join("image")).unwrap();
    std::fs::write(
        stemcell_dir.join("stemcell.MF"),
        "---\nname: bosh-warden-boshlite-ubuntu-jammy-go_agent\nversion: '1.329'\nbosh_protocol: '1'\noperating_system: ubuntu-jammy\nstemcell_formats:\n- warden-tar\ncloud_properties: {}\n",
    )
    .unwrap();
    let stemcell = tmp
        .path()
        .join("bosh-warden-boshlite-ubuntu-jammy-go_agent-1.329.tgz");
    succeed(
        Command::new("tar")
            .arg("-C")
            .arg(&stemcell_dir)
            .arg("-czf")
            .arg(&stemcell)
            .args(["stemcell.MF", "image"]),
    );

    let work = tmp.path().join("work");
    let built = stdout(
        fissile(&work)
            .args(["-q", "base", "build", "--tag", "jammy", "--from"])
            .arg(format!("stemcell:{}", stemcell.display())),
    );
    assert!(built.starts_with("fissile-cbase-"), "{built}");
    let list = stdout(fissile(&work).args(["base", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("jammy ") && l.contains("ubuntu-jammy/1.329")),
        "stemcell.MF's identity, not the rootfs's debian-bookworm: {list}"
    );
    let path = export(
        &work,
        &[
            rel.as_os_str(),
            os("--base"),
            os("jammy"),
            os("-o"),
            tmp.path().join("out").as_os_str(),
        ],
    );
    assert!(
        path.ends_with("hello-0+dev-ubuntu-jammy-1.329.tgz"),
        "{}",
        path.display()
    );
    let read = common_bosh_reader::read(&path, None, EPOCH);
    assert_eq!(
        read["manifest"]["compiled_packages"][0]["stemcell"],
        "ubuntu-jammy/1.329"
    );
    let entries = &read["packages"]["hello"]["entries"];
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "./bin/hello" && e[2] == 0o755),
        "{entries}"
    );
    // The binary runs on the stemcell base it was compiled on.
    let out = stdout(
        fissile(&work)
            .args(["run", "--base", "jammy", "--mount"])
            .arg(format!(
                "{}:/var/vcap/packages/hello:ro",
                installed(&work, "hello").display()
            ))
            .args(["--", "/var/vcap/packages/hello/bin/hello"]),
    );
    assert_eq!(out, "hello from a stemcell\n");
}

/// The published dir of the one compiled `name` in a work dir.
fn installed(work: &Path, name: &str) -> PathBuf {
    let index = std::fs::read_to_string(work.join("oci/index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let key = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .find_map(|r| r.strip_prefix(&format!("pkg-{name}-")))
        .unwrap()
        .to_string();
    work.join("packages").join(key)
}

#[test]
fn a_source_directory_exports_with_the_job_and_license_archives_bosh_would_make() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let rel = f.dir.join("src-release");
    let write = |path: &str, content: &str, mode: u32| {
        common::write(&rel.join(path), content.as_bytes(), mode);
    };
    write("config/final.yml", "name: srcrel\n", 0o644);
    write(
        "packages/tool/spec",
        "name: tool\nfiles:\n- tool/**/*\n",
        0o644,
    );
    write(
        "packages/tool/packaging",
        "cp tool/run.sh $BOSH_INSTALL_TARGET/run\n",
        0o644,
    );
    write("src/tool/run.sh", "#!/bin/sh\necho run\n", 0o755);
    let spec = "---\nname: web\ntemplates:\n  ctl.erb: bin/ctl\n  config.yml.erb: config/config.yml\npackages:\n- tool\n";
    write("jobs/web/spec", spec, 0o644);
    write("jobs/web/monit", "check process web\n", 0o644);
    write(
        "jobs/web/templates/ctl.erb",
        "#!/bin/bash\nexec web\n",
        0o755,
    );
    write(
        "jobs/web/templates/config.yml.erb",
        "port: <%= p('port') %>\n",
        0o644,
    );
    write("LICENSE", "MIT\n", 0o644);
    write("NOTICE", "Copyright srcrel\n", 0o644);

    let out = f.dir.join("out");
    let path = export(
        &f.work,
        &[
            rel.as_os_str(),
            os("--base"),
            os("busybox"),
            os("--stemcell"),
            os("ubuntu-jammy/1.329"),
            os("-o"),
            out.as_os_str(),
        ],
    );
    assert!(
        path.ends_with("srcrel-0+dev-ubuntu-jammy-1.329.tgz"),
        "{}",
        path.display()
    );
    let read = common_bosh_reader::read(&path, None, EPOCH);
    assert_eq!(
        read["names"],
        serde_json::json!([
            "./release.MF",
            "./LICENSE",
            "./NOTICE",
            "./license.tgz",
            "./jobs",
            "./jobs/web.tgz",
            "./compiled_packages",
            "./compiled_packages/tool.tgz"
        ])
    );
    // Fingerprints as bosh-cli computes them (release/job/dir_reader.go: the spec as job.MF,
    // monit, the templates, each with its mode; the license files without), spelled out here.
    let chunk = |rel: &str, content: &str, mode: &str| {
        format!("{rel}{}{mode}", sha1_hex(content.as_bytes()))
    };
    let job_fp = sha1_hex(
        format!(
            "v2{}{}{}{}",
            chunk("job.MF", spec, "100644"),
            chunk("monit", "check process web\n", "100644"),
            chunk(
                "templates/config.yml.erb",
                "port: <%= p('port') %>\n",
                "100644"
            ),
            chunk("templates/ctl.erb", "#!/bin/bash\nexec web\n", "100755"),
        )
        .as_bytes(),
    );
    let job = &read["manifest"]["jobs"][0];
    assert_eq!(job["name"], "web");
    assert_eq!(job["fingerprint"], job_fp.as_str());
    assert_eq!(job["version"], job_fp.as_str());
    assert_eq!(job["packages"], serde_json::json!(["tool"]));
    let license_fp = sha1_hex(
        format!(
            "v2{}{}",
            chunk("LICENSE", "MIT\n", ""),
            chunk("NOTICE", "Copyright srcrel\n", "")
        )
        .as_bytes(),
    );
    assert_eq!(
        read["manifest"]["license"]["fingerprint"],
        license_fp.as_str()
    );

    // The job archive holds what bosh puts in one, modes by the exec bit.
    let job_tgz = f.dir.join("web.tgz");
    std::fs::write(
        &job_tgz,
        run(Command::new("tar")
            .arg("-xzOf")
            .arg(&path)
            .arg("./jobs/web.tgz"))
        .stdout,
    )
    .unwrap();
    let listing = stdout(Command::new("tar").arg("-tvzf").arg(&job_tgz));
    let lines: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            (
                l.split_whitespace().next().unwrap(),
                l.split_whitespace().last().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("drwxr-xr-x", "./"),
            ("-rw-r--r--", "./job.MF"),
            ("-rw-r--r--", "./monit"),
            ("drwxr-xr-x", "./templates/"),
            ("-rw-r--r--", "./templates/config.yml.erb"),
            ("-rwxr-xr-x", "./templates/ctl.erb"),
        ]
    );
    let job_mf = run(Command::new("tar")
        .arg("-xzOf")
        .arg(&job_tgz)
        .arg("./job.MF"))
    .stdout;
    assert_eq!(job_mf, spec.as_bytes(), "job.MF is the spec");

    // Determinism holds for made archives too: another work dir, the same bytes.
    let other = f.dir.join("other");
    succeed(fissile(&other).args(["-q", "base", "build", "--from", "busybox"]));
    let again = export(
        &other,
        &[
            rel.as_os_str(),
            os("--base"),
            os("busybox"),
            os("--stemcell"),
            os("ubuntu-jammy/1.329"),
            os("-o"),
            f.dir.join("out2").as_os_str(),
        ],
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // A job whose template is missing still compiles, but cannot be exported.
    std::fs::remove_file(rel.join("jobs/web/templates/ctl.erb")).unwrap();
    let compiled = run(fissile(&f.work)
        .arg("compile")
        .arg(&rel)
        .args(["--base", "busybox"]));
    assert!(compiled.status.success());
    assert!(String::from_utf8_lossy(&compiled.stderr).contains("lists template \"ctl.erb\""));
    let err = fails(
        fissile(&f.work)
            .arg("export")
            .arg(&rel)
            .args([
                "--base",
                "busybox",
                "--stemcell",
                "ubuntu-jammy/1.329",
                "-o",
            ])
            .arg(f.dir.join("out3")),
    );
    assert!(err.contains("job \"web\" cannot be archived"), "{err}");
}

#[test]
fn a_dev_release_exports_with_its_job_archives_from_the_bosh_cache() {
    if !root_or_skip() {
        return;
    }
    let f = fixture();
    let packages = vec![
        common::ArchivePackage::new("base", &[]),
        common::ArchivePackage::new("app", &["base"]),
    ];
    let jobs = vec![common::ArchiveJob::new("web", &["app"])];
    let (release, cache) = common::dev_release(&f.dir, "devrel", &[("0+dev.1", &packages)], &jobs);
    let path = export(
        &f.work,
        &[
            release.as_os_str(),
            os("--bosh-cache"),
            cache.as_os_str(),
            os("--base"),
            os("busybox"),
            os("--stemcell"),
            os("ubuntu-jammy/1.329"),
            os("-o"),
            f.dir.join("out").as_os_str(),
        ],
    );
    assert!(
        path.ends_with("devrel-0+dev.1-ubuntu-jammy-1.329.tgz"),
        "{}",
        path.display()
    );
    let read = common_bosh_reader::read(&path, None, EPOCH);
    assert_eq!(
        read["manifest"]["jobs"][0]["sha1"],
        sha1_hex(&jobs[0].archive)
    );
    let copied = run(Command::new("tar")
        .arg("-xzOf")
        .arg(&path)
        .arg("./jobs/web.tgz"))
    .stdout;
    assert_eq!(
        copied, jobs[0].archive,
        "copied byte for byte from the bosh cache"
    );
    let deps: Vec<(&str, &serde_json::Value)> = read["manifest"]["compiled_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), &p["dependencies"]))
        .collect();
    assert_eq!(
        deps,
        [
            ("base", &serde_json::json!([])),
            ("app", &serde_json::json!(["base"]))
        ]
    );
}
