//! A minimal rootfs from the host's static busybox (Debian `busybox-static`), plus the host's
//! bash and the shared libraries it needs when bash is installed: BOSH packaging scripts run
//! under bash. Meant for tests and quick demos; real compiles want a Debian base.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BuildError;

const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
const BASH_CANDIDATES: &[&str] = &["/bin/bash", "/usr/bin/bash"];

/// Finds a statically linked busybox on the host.
pub fn find_static_busybox() -> Result<PathBuf, BuildError> {
    for candidate in BUSYBOX_CANDIDATES {
        let path = Path::new(candidate);
        if path.is_file() && !has_interpreter(path)? {
            return Ok(path.to_path_buf());
        }
    }
    Err(BuildError::MissingTool {
        tool: "a static busybox".into(),
        hint: "install the Debian package busybox-static".into(),
    })
}

/// Builds the rootfs into `root` (which must exist and be empty).
pub fn build(root: &Path, with_bash: bool) -> Result<(), BuildError> {
    let busybox = find_static_busybox()?;
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev",
        "var/tmp", "var/vcap",
    ] {
        let path = root.join(dir);
        fs_err::create_dir_all(&path).map_err(BuildError::io(&path))?;
    }
    for dir in ["tmp", "var/tmp"] {
        let path = root.join(dir);
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))
            .map_err(BuildError::io(&path))?;
    }
    copy_file(&busybox, &root.join("bin/busybox"))?;
    let list = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .map_err(BuildError::io(&busybox))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    applets.sort();
    for applet in applets {
        let link = root.join(applet.trim_start_matches('/'));
        if link == root.join("bin/busybox") || fs_err::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs_err::create_dir_all(parent).map_err(BuildError::io(parent))?;
        }
        fs_err::os::unix::fs::symlink("/bin/busybox", &link).map_err(BuildError::io(&link))?;
    }
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    write(root, "etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    write(root, "etc/hostname", "")?;
    if with_bash {
        if let Some(bash) = BASH_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
            install_with_libraries(bash, root, Path::new("bin/bash"))?;
        }
    }
    Ok(())
}

fn write(root: &Path, rel: &str, content: &str) -> Result<(), BuildError> {
    let path = root.join(rel);
    fs_err::write(&path, content).map_err(BuildError::io(&path))
}

/// Copies a dynamically linked program and every library `ldd` lists, at the same paths.
fn install_with_libraries(program: &Path, root: &Path, dest_rel: &Path) -> Result<(), BuildError> {
    let dest = root.join(dest_rel);
    let _ = fs_err::remove_file(&dest);
    copy_file(program, &dest)?;
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|_| BuildError::MissingTool {
            tool: "ldd".into(),
            hint: "install libc-bin".into(),
        })?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(lib) = path.filter(|p| p.starts_with('/')) {
            let target = root.join(lib.trim_start_matches('/'));
            if target.exists() {
                continue;
            }
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent).map_err(BuildError::io(parent))?;
            }
            copy_file(
                &fs_err::canonicalize(lib).map_err(BuildError::io(lib))?,
                &target,
            )?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    fs_err::copy(from, to).map_err(BuildError::io(to))?;
    let mode = fs_err::metadata(from)
        .map_err(BuildError::io(from))?
        .permissions()
        .mode()
        & 0o755;
    fs_err::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(BuildError::io(to))
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(path: &Path) -> Result<bool, BuildError> {
    let mut bytes = Vec::new();
    fs_err::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes))
        .map_err(BuildError::io(path))?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Ok(true); // not a 64-bit ELF we can vouch for
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at =
        |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            break;
        }
        if u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_runnable_tree_when_busybox_static_is_installed() {
        if find_static_busybox().is_err() {
            crate::common_skip::skip("no static busybox on this host (install busybox-static)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path(), true).unwrap();
        assert_eq!(
            std::fs::read_link(tmp.path().join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(tmp.path().join("bin/bash").is_file(), "host bash copied");
        assert!(!has_interpreter(&tmp.path().join("bin/busybox")).unwrap());
        assert!(has_interpreter(&tmp.path().join("bin/bash")).unwrap());
    }
}
