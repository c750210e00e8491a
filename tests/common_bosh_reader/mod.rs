//! An independent reader of BOSH compiled release tarballs, written with Python's `tarfile`,
//! `hashlib` and PyYAML (Debian's python3-yaml), sharing no code with fissile-oci: it checks
//! the format rules a director relies on and returns what it read as JSON for the test to
//! compare.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Reads `compiled` (and compares its jobs and license with `source`, a release tarball, when
/// given). Every entry of both the tarball and its compiled packages must be `./`-prefixed,
/// owned by 0:0 with mtime `mtime`; `release.MF` first; every `sha1` (any algorithm, `;`-joined)
/// must be the digest of its member. Returns `{"names", "manifest", "packages": {name:
/// {"entries": [[name, type, mode, link, size]], "files": {name: text}}}}`.
pub fn read(compiled: &Path, source: Option<&Path>, mtime: u64) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(READER)
        .arg(compiled)
        .arg(source.map(|p| p.as_os_str()).unwrap_or("-".as_ref()))
        .arg(mtime.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (scripts/lib.sh installs it with python3-yaml)");
    assert!(
        out.status.success(),
        "the independent reader refused {}:\n{}",
        compiled.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

const READER: &str = r#"
import hashlib, io, json, sys, tarfile
import yaml

compiled, source, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])

def fail(msg):
    sys.exit(f"{compiled}: {msg}")

def check_digest(what, data, recorded):
    for part in str(recorded).split(";"):
        algo, _, hexd = part.strip().rpartition(":")
        algo = algo or "sha1"
        if hashlib.new(algo, data).hexdigest() != hexd:
            fail(f"{what}: {algo} is {hashlib.new(algo, data).hexdigest()}, release.MF says {hexd}")

def check_entry(where, m):
    if not (m.name == "." or m.name.startswith("./")):
        fail(f"{where}: entry {m.name!r} is not ./-prefixed")
    if (m.uid, m.gid) != (0, 0):
        fail(f"{where}: entry {m.name!r} is owned by {m.uid}:{m.gid}")
    if m.mtime != mtime:
        fail(f"{where}: entry {m.name!r} has mtime {m.mtime}, not {mtime}")

def members_of(path):
    out = {}
    with tarfile.open(path, "r:*") as t:
        for m in t.getmembers():
            if m.isfile():
                name = m.name[2:] if m.name.startswith("./") else m.name
                out[name] = t.extractfile(m).read()
    return out

src = members_of(source) if source != "-" else None
result = {"names": [], "packages": {}}
with tarfile.open(compiled, "r:gz") as t:
    members = t.getmembers()
    result["names"] = [m.name for m in members]
    if not members or members[0].name != "./release.MF":
        fail(f"the first entry is {members[0].name if members else None!r}, not ./release.MF")
    for m in members:
        check_entry("tarball", m)
    data = {m.name: t.extractfile(m).read() for m in members if m.isfile()}
    manifest = yaml.safe_load(data["./release.MF"])
    result["manifest"] = manifest
    if manifest.get("packages"):
        fail("release.MF of a compiled release lists packages")
    for p in manifest["compiled_packages"]:
        member = f"./compiled_packages/{p['name']}.tgz"
        if member not in data:
            fail(f"{member} is missing")
        check_digest(member, data[member], p["sha1"])
        entries, files = [], {}
        with tarfile.open(fileobj=io.BytesIO(data[member]), mode="r:gz") as inner:
            for i, m in enumerate(inner.getmembers()):
                check_entry(member, m)
                if i == 0 and (m.name not in ("./", ".") or not m.isdir()):
                    fail(f"{member}: the first entry is {m.name!r}, not the ./ directory")
                kind = "dir" if m.isdir() else "file" if m.isfile() else "symlink" if m.issym() else "hardlink" if m.islnk() else "other"
                entries.append([m.name, kind, m.mode, m.linkname, m.size])
                if m.isfile():
                    try:
                        files[m.name] = inner.extractfile(m).read().decode()
                    except UnicodeDecodeError:
                        files[m.name] = None
        result["packages"][p["name"]] = {"entries": entries, "files": files}
    for j in manifest.get("jobs") or []:
        member = f"./jobs/{j['name']}.tgz"
        if member not in data:
            fail(f"{member} is missing")
        check_digest(member, data[member], j["sha1"])
        if src is not None and src.get(f"jobs/{j['name']}.tgz") != data[member]:
            fail(f"{member} differs from the source release's")
    if manifest.get("license"):
        if "./license.tgz" in data:
            check_digest("./license.tgz", data["./license.tgz"], manifest["license"]["sha1"])
    if src is not None:
        for name, content in src.items():
            if name == "license.tgz" or name.startswith(("LICENSE", "NOTICE")):
                if data.get("./" + name) != content:
                    fail(f"./{name} differs from the source release's")
print(json.dumps(result))
"#;
