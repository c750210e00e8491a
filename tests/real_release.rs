//! A real-world release end to end (slow: a few minutes; runs in CI): `scripts/real-release.sh`
//! builds a BOSH release from upstream tarballs fetched through Debian source packages, `compile`
//! builds its 11 packages on the default Debian compilation base, then the programs it produced
//! run in a sandbox with the compiled packages mounted at /var/vcap/packages, against their
//! dependencies and not the base's libraries; and `export` writes them as a compiled release
//! that the independent reader accepts.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common_bosh_reader;
mod common_cli;
mod common_debian;
mod common_skip;

use common_cli::{fissile, succeed};

/// Release package -> the shared libraries it installs (sonames other packages link).
const LIBRARIES: &[(&str, &[&str])] = &[
    ("zlib", &["libz.so.1"]),
    ("bzip2", &["libbz2.so.1.0"]),
    ("xz", &["liblzma.so.5"]),
    ("ncurses", &["libncurses.so.6"]),
    ("readline", &["libreadline.so.8"]),
    ("expat", &["libexpat.so.1"]),
    ("pcre2", &["libpcre2-8.so.0"]),
    ("nettle", &["libnettle.so.8"]),
    ("libxml2", &["libxml2.so.2"]),
    ("libarchive", &["libarchive.so.13"]),
];

/// Runs `cmd`, asserting success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(cmd).stdout).into_owned()
}

fn root_or_skip() -> bool {
    common_cli::root_or_skip(
        "the real release needs root (apt-get source, and compile sandboxes as root); the sandbox suite covers rootless mode",
    )
}

/// The compiled packages and what mounts them where bosh would.
struct Compiled {
    work: PathBuf,
    base: String,
    keys: BTreeMap<String, String>,
}

impl Compiled {
    /// Runs a bash script in a sandbox on the compilation base with every compiled package
    /// mounted read-only at /var/vcap/packages/<name>; asserts success and returns stdout.
    fn sh(&self, what: &str, script: &str) -> String {
        let mut cmd = fissile(&self.work);
        cmd.args([
            "run",
            "--base",
            &self.base,
            "--timeout",
            "120",
            "--cwd",
            "/tmp",
        ]);
        for (name, key) in &self.keys {
            let dir = self.work.join("packages").join(key);
            cmd.arg("--mount")
                .arg(format!("{}:/var/vcap/packages/{name}:ro", dir.display()));
        }
        cmd.args(["--", "/bin/bash", "-c"])
            .arg(format!("set -euo pipefail\nP=/var/vcap/packages\n{script}"));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{what}: the sandbox exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts that `binary` (under /var/vcap/packages) loads each library of `packages` from
    /// that package's dir, and no library at all from elsewhere except the C library's own.
    fn assert_links(&self, binary: &str, packages: &[&str]) {
        let ldd = self.sh(&format!("ldd {binary}"), &format!("ldd \"$P/{binary}\""));
        let resolved: BTreeMap<&str, &str> = ldd
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once(" => ")?;
                Some((name, rest.split(" (").next().unwrap_or(rest).trim()))
            })
            .collect();
        assert!(!ldd.contains("not found"), "{binary}:\n{ldd}");
        for package in packages {
            let sonames = LIBRARIES
                .iter()
                .find(|(p, _)| p == package)
                .unwrap_or_else(|| panic!("no libraries known for {package}"))
                .1;
            for soname in sonames {
                let expected = format!("/var/vcap/packages/{package}/lib/{soname}");
                assert_eq!(
                    resolved.get(soname).copied(),
                    Some(expected.as_str()),
                    "{binary} must load {soname} from the {package} package:\n{ldd}"
                );
            }
        }
        for (soname, path) in &resolved {
            let from_libc = ["libc.so.", "libm.so.", "libdl.so.", "libpthread.so."]
                .iter()
                .any(|p| soname.starts_with(p));
            assert!(
                path.starts_with("/var/vcap/packages/") || from_libc,
                "{binary} loads {soname} from the base ({path}), not from a compiled package:\n{ldd}"
            );
        }
    }
}

#[test]
fn the_real_world_release_compiles_and_its_programs_run_against_their_dependencies() {
    if !root_or_skip() {
        return;
    }
    let Some(work) = common_debian::debian_work_dir() else {
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let release = tmp.join("real-release");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/real-release.sh");

    // Generated twice: the second run changes nothing (same fingerprints). With $FISSILE_OCI
    // the script also checks the fingerprints against the committed ones.
    let generate = || {
        let out = Command::new("bash")
            .arg(&script)
            .arg(&release)
            .env("FISSILE_OCI", env!("CARGO_BIN_EXE_fissile-oci"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed ({:?}):\n{}",
            script.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        ok(fissile(&work).arg("inspect").arg("--json").arg(&release))
    };
    let first = generate();
    assert_eq!(first, generate(), "the script is idempotent");
    let inspect: serde_json::Value = serde_json::from_str(&first).unwrap();
    let packages = inspect["releases"][0]["packages"].as_array().unwrap();
    assert_eq!(inspect["releases"][0]["name"], "real-world");
    let mut names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bzip2",
            "expat",
            "libarchive",
            "libxml2",
            "lua",
            "ncurses",
            "nettle",
            "pcre2",
            "readline",
            "xz",
            "zlib"
        ]
    );
    let deps = |name: &str| -> Vec<String> {
        let p = packages.iter().find(|p| p["name"] == name).unwrap();
        let mut d: Vec<String> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        deps("libarchive"),
        ["bzip2", "libxml2", "nettle", "xz", "zlib"]
    );
    assert_eq!(deps("lua"), ["ncurses", "readline"]);
    // The same tarballs (sources.lock) and definitions give the same release on every machine.
    let fingerprints: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["fingerprint"].as_str().unwrap(),
            )
        })
        .collect();
    let committed_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/real-release/fingerprints");
    let committed_text = std::fs::read_to_string(&committed_path).unwrap();
    let committed: BTreeMap<&str, &str> = committed_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    assert_eq!(
        fingerprints,
        committed,
        "the real-world release's fingerprints (left) differ from {}",
        committed_path.display()
    );
    let blobs = std::fs::read_to_string(release.join("config/blobs.yml")).unwrap();
    assert_eq!(blobs.matches("  sha: sha256:").count(), packages.len());

    let summary_path = tmp.join("real-release-summary.json");
    let started = std::time::Instant::now();
    ok(fissile(&work)
        .arg("compile")
        .arg(&release)
        .arg("--summary")
        .arg(&summary_path));
    eprintln!(
        "real-world release compiled (or found cached) in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    let mut keys = BTreeMap::new();
    for p in summary["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let status = p["status"].as_str().unwrap();
        assert!(
            status == "compiled" || status == "cached",
            "{name}: {status}\n{summary}"
        );
        keys.insert(name, p["cache_key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys.len(), packages.len());
    let base = ok(fissile(&work).args(["base", "name"])).trim().to_string();

    // From the warm cache, the compiled release a director would take, as bosh reads it.
    let out = tmp.join("real-release-compiled");
    let _ = std::fs::remove_dir_all(&out);
    let exported = ok(fissile(&work)
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("export")
        .arg(&release)
        .args(["--stemcell", "ubuntu-jammy/1.329", "-o"])
        .arg(&out));
    let tarball = PathBuf::from(exported.trim());
    assert!(
        tarball.ends_with("real-world-0+dev-ubuntu-jammy-1.329.tgz"),
        "{exported}"
    );
    let read = common_bosh_reader::read(&tarball, None, 0);
    let compiled = read["manifest"]["compiled_packages"].as_array().unwrap();
    assert_eq!(compiled.len(), packages.len());
    for p in compiled {
        let name = p["name"].as_str().unwrap();
        let mut listed: Vec<String> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, deps(name), "{name}");
        assert_eq!(p["fingerprint"], fingerprints[name]);
    }
    let lua = &read["packages"]["lua"]["entries"];
    assert!(
        lua.as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "./bin/lua" && e[1] == "file" && e[2] == 0o755),
        "{lua}"
    );

    let c = Compiled { work, base, keys };

    // Every program loads its libraries from the packages it depends on.
    c.assert_links("lua/bin/lua", &["readline", "ncurses"]);
    c.assert_links("readline/lib/libreadline.so.8", &["ncurses"]);
    c.assert_links("xz/bin/xz", &["xz"]);
    c.assert_links(
        "libarchive/bin/bsdtar",
        &["libarchive", "zlib", "bzip2", "xz", "libxml2", "nettle"],
    );
    c.assert_links("libxml2/bin/xmllint", &["libxml2", "zlib", "xz"]);
    c.assert_links("pcre2/bin/pcre2grep", &["pcre2", "zlib", "bzip2"]);
    c.assert_links("expat/bin/xmlwf", &["expat"]);

    // Lua (plain make, against readline and ncurses).
    let out = c.sh(
        "lua",
        r#"$P/lua/bin/lua -e 'print(_VERSION, ("%.3f"):format(math.pi), string.rep("ab", 3), 6 * 7)'"#,
    );
    assert_eq!(out, "Lua 5.4\t3.142\tababab\t42\n");

    // xz (autotools): a round trip, checked by size and content.
    let out = c.sh(
        "xz round trip",
        r#"seq 1 50000 > n.txt
cp n.txt orig.txt
$P/xz/bin/xz -9 n.txt
test ! -e n.txt
$P/xz/bin/xz -t n.txt.xz
[ "$(stat -c %s n.txt.xz)" -lt "$(stat -c %s orig.txt)" ]
$P/xz/bin/xz -d n.txt.xz
cmp n.txt orig.txt
tail -n 1 n.txt
$P/xz/bin/xz --version | head -n 1"#,
    );
    assert!(
        out.starts_with("50000\nxz (XZ Utils) 5."),
        "xz round trip: {out}"
    );

    // libarchive's bsdtar: tar.xz, tar.bz2, tar.gz and xar (libxml2 and nettle) archives,
    // listed, extracted and checked by the other packages' tools.
    let out = c.sh(
        "bsdtar",
        r#"mkdir -p tree/sub
echo alpha > tree/a.txt
seq 1 1000 > tree/sub/numbers.txt
for fmt in tar.xz tar.bz2 tar.gz; do
  $P/libarchive/bin/bsdtar -caf "t.$fmt" tree
  $P/libarchive/bin/bsdtar -tf "t.$fmt" | sort | tr '\n' ' '
  echo "($fmt)"
  mkdir "x-$fmt" && $P/libarchive/bin/bsdtar -xf "t.$fmt" -C "x-$fmt"
  diff -r tree "x-$fmt/tree"
done
$P/xz/bin/xz -t t.tar.xz
$P/bzip2/bin/bzip2 -t t.tar.bz2
$P/libarchive/bin/bsdtar --format xar -cf t.xar tree
$P/libarchive/bin/bsdtar -xOf t.xar tree/a.txt
$P/libarchive/bin/bsdtar --version"#,
    );
    let listing = "tree/ tree/a.txt tree/sub/ tree/sub/numbers.txt";
    for fmt in ["tar.xz", "tar.bz2", "tar.gz"] {
        assert!(
            out.contains(&format!("{listing} ({fmt})")),
            "bsdtar {fmt}: {out}"
        );
    }
    assert!(out.contains("\nalpha\nbsdtar 3."), "bsdtar xar: {out}");
    for lib in ["zlib/", "liblzma/", "bz2lib/"] {
        assert!(out.contains(lib), "bsdtar is built with {lib}: {out}");
    }

    // libxml2's xmllint: XPath, a document read through liblzma, a malformed one refused.
    let out = c.sh(
        "xmllint",
        r#"printf '<doc><item n="7">seven</item><item n="8">eight</item></doc>\n' > d.xml
$P/libxml2/bin/xmllint --xpath 'string(/doc/item[@n="8"])' d.xml
$P/xz/bin/xz -k d.xml
$P/libxml2/bin/xmllint --xpath 'count(/doc/item)' d.xml.xz
printf '<doc><item>\n' > bad.xml
if $P/libxml2/bin/xmllint --noout bad.xml 2>/dev/null; then echo accepted; else echo refused; fi"#,
    );
    assert_eq!(out, "eight\n2\nrefused\n");

    // expat's xmlwf (CMake).
    let out = c.sh(
        "xmlwf",
        r#"printf '<a><b/></a>\n' > good.xml
printf '<a><b></a>\n' > bad.xml
$P/expat/bin/xmlwf good.xml
$P/expat/bin/xmlwf bad.xml || true"#,
    );
    assert!(out.starts_with("bad.xml:1:"), "xmlwf: {out}");
    assert!(out.contains("mismatched tag"), "xmlwf: {out}");

    // pcre2grep (CMake): searching compressed files through zlib and bzip2.
    let out = c.sh(
        "pcre2grep",
        r#"printf 'one\ntwenty-two\nthree hundred\n' > w.txt
gzip -k w.txt
$P/bzip2/bin/bzip2 -k w.txt
$P/pcre2/bin/pcre2grep -o '\bt\w+-\w+' w.txt.gz
$P/pcre2/bin/pcre2grep -c '^(?:one|three)\b' w.txt.bz2"#,
    );
    assert_eq!(out, "twenty-two\n2\n");
}
