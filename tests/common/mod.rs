//! Builders for the BOSH releases the tests need, generated on the fly in temp dirs: source
//! directories, final release tarballs (gzip or plain, with or without `./`), extracted tarballs
//! and dev releases with a bosh cache.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

pub fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn fissile() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("fissile-oci").unwrap();
    // Keep the developer's real bosh cache out of the tests.
    cmd.env("HOME", "/nonexistent-home")
        .env_remove("BOSH_CACHE_DIR");
    cmd
}

/// A package for archive-based releases: its archive bytes and what the manifest says of it.
#[derive(Clone)]
pub struct ArchivePackage {
    pub name: String,
    pub fingerprint: String,
    pub dependencies: Vec<String>,
    pub archive: Vec<u8>,
    /// The digest string written to the manifest; defaults to the archive's sha1.
    pub sha1: Option<String>,
}

impl ArchivePackage {
    pub fn new(name: &str, deps: &[&str]) -> ArchivePackage {
        let archive = tgz(
            &[
                ("packaging", format!("echo {name}\n").as_bytes(), 0o644),
                (&format!("{name}/src.c"), b"int x;\n", 0o644),
            ],
            true,
        );
        ArchivePackage {
            name: name.to_string(),
            fingerprint: sha1_hex(name.as_bytes()),
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
            archive,
            sha1: None,
        }
    }

    pub fn digest_string(&self) -> String {
        self.sha1.clone().unwrap_or_else(|| sha1_hex(&self.archive))
    }
}

#[derive(Clone)]
pub struct ArchiveJob {
    pub name: String,
    pub packages: Vec<String>,
    pub archive: Vec<u8>,
}

impl ArchiveJob {
    pub fn new(name: &str, packages: &[&str]) -> ArchiveJob {
        let mf = format!(
            "---\nname: {name}\ntemplates: {{}}\npackages:\n{}",
            packages
                .iter()
                .map(|p| format!("- {p}\n"))
                .collect::<String>()
        );
        ArchiveJob {
            name: name.to_string(),
            packages: packages.iter().map(|s| s.to_string()).collect(),
            archive: tgz(
                &[("job.MF", mf.as_bytes(), 0o644), ("monit", b"", 0o644)],
                true,
            ),
        }
    }
}

/// A tar (gzip-compressed when `gzip`) of regular files, entries prefixed with `./` like bosh's.
pub fn tar_bytes(files: &[(&str, &[u8], u32)], gzip: bool, dot_prefix: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        let path = if dot_prefix {
            format!("./{name}")
        } else {
            name.to_string()
        };
        builder.append_data(&mut header, path, *content).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).unwrap();
        enc.finish().unwrap()
    } else {
        tar
    }
}

pub fn tgz(files: &[(&str, &[u8], u32)], dot_prefix: bool) -> Vec<u8> {
    tar_bytes(files, true, dot_prefix)
}

pub fn release_manifest(
    name: &str,
    version: &str,
    packages: &[ArchivePackage],
    jobs: &[ArchiveJob],
) -> String {
    let mut s = format!("---\nname: {name}\nversion: '{version}'\ncommit_hash: abcdef\nuncommitted_changes: false\npackages:\n");
    for p in packages {
        s.push_str(&format!(
            "- name: {}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {}\n  dependencies: [{}]\n",
            p.name,
            p.digest_string(),
            p.dependencies.join(", "),
            fp = p.fingerprint
        ));
    }
    s.push_str("jobs:\n");
    for j in jobs {
        let fp = sha1_hex(j.name.as_bytes());
        s.push_str(&format!(
            "- name: {}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {}\n",
            j.name,
            sha1_hex(&j.archive)
        ));
    }
    s
}

/// Writes a final release tarball and returns its path.
pub fn final_tarball(
    dir: &Path,
    name: &str,
    packages: &[ArchivePackage],
    jobs: &[ArchiveJob],
    gzip: bool,
    dot_prefix: bool,
) -> PathBuf {
    let manifest = release_manifest(name, "1.2", packages, jobs);
    let mut files: Vec<(String, Vec<u8>)> = vec![("release.MF".into(), manifest.into_bytes())];
    for p in packages {
        files.push((format!("packages/{}.tgz", p.name), p.archive.clone()));
    }
    for j in jobs {
        files.push((format!("jobs/{}.tgz", j.name), j.archive.clone()));
    }
    let refs: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice(), 0o644))
        .collect();
    let path = dir.join(format!("{name}-1.2.tgz"));
    std::fs::write(&path, tar_bytes(&refs, gzip, dot_prefix)).unwrap();
    path
}

/// Writes the same release as an extracted tarball directory.
pub fn extracted_release(
    dir: &Path,
    name: &str,
    packages: &[ArchivePackage],
    jobs: &[ArchiveJob],
) -> PathBuf {
    let root = dir.join(format!("{name}-extracted"));
    write(
        &root.join("release.MF"),
        release_manifest(name, "1.2", packages, jobs).as_bytes(),
        0o644,
    );
    for p in packages {
        write(
            &root.join("packages").join(format!("{}.tgz", p.name)),
            &p.archive,
            0o644,
        );
    }
    for j in jobs {
        write(
            &root.join("jobs").join(format!("{}.tgz", j.name)),
            &j.archive,
            0o644,
        );
    }
    root
}

/// Writes a dev release directory (versions `0+dev.1` .. `0+dev.N`, newest has `packages`)
/// and its bosh cache; returns (release dir, cache dir).
pub fn dev_release(
    dir: &Path,
    name: &str,
    versions: &[(&str, &[ArchivePackage])],
    jobs: &[ArchiveJob],
) -> (PathBuf, PathBuf) {
    let root = dir.join(format!("{name}-dev"));
    let cache = dir.join("bosh-cache");
    write(
        &root.join("config/dev.yml"),
        format!("dev_name: {name}\n").as_bytes(),
        0o644,
    );
    write(
        &root.join("config/final.yml"),
        b"name: something-else\n",
        0o644,
    );
    let mut index = String::from("---\nbuilds:\n");
    for (i, (version, packages)) in versions.iter().enumerate() {
        index.push_str(&format!("  uuid-{i}:\n    version: {version}\n"));
        write(
            &root.join(format!("dev_releases/{name}/{name}-{version}.yml")),
            release_manifest(name, version, packages, jobs).as_bytes(),
            0o644,
        );
        for p in packages.iter() {
            write(&cache.join(p.digest_string()), &p.archive, 0o644);
        }
    }
    index.push_str("format-version: '2'\n");
    write(
        &root.join(format!("dev_releases/{name}/index.yml")),
        index.as_bytes(),
        0o644,
    );
    for j in jobs {
        write(&cache.join(sha1_hex(&j.archive)), &j.archive, 0o644);
    }
    (root, cache)
}

/// Runs `inspect --json` and parses the output, asserting success.
pub fn inspect_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = fissile()
        .arg("inspect")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs inspect expecting exit 2; returns stderr.
pub fn inspect_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = fissile().arg("inspect").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {stderr}",
        out.status.code()
    );
    stderr
}
