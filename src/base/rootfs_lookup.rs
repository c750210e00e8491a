//! Looking a path up inside a rootfs the way the container will see it.

use std::path::{Path, PathBuf};

/// Whether `rel` exists inside `root`, following symlinks as if `root` were `/` (an absolute
/// link such as `/bin -> /usr/bin` must not be resolved against the host).
pub fn exists_in_rootfs(root: &Path, rel: &str) -> bool {
    let mut current = PathBuf::new();
    let mut pending: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let candidate = current.join(&component);
        let Ok(meta) = fs_err::symlink_metadata(root.join(&candidate)) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let Ok(target) = fs_err::read_link(root.join(&candidate)) else {
                return false;
            };
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                current = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else {
            current = candidate;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_lookup_follows_links_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/bash"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/bin", r.join("bin")).unwrap();
        assert!(exists_in_rootfs(r, "bin/bash"));
        assert!(!exists_in_rootfs(r, "bin/zsh"));
        std::os::unix::fs::symlink("/etc/passwd", r.join("escape")).unwrap();
        assert!(
            !exists_in_rootfs(r, "escape"),
            "absolute links resolve inside the root, not on the host"
        );
    }
}
