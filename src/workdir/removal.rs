//! Removing a file or directory tree of ours that may hold directories without write (or even
//! read) permission: compiled outputs often have read-only dirs, and overlayfs leaves mode-000
//! dirs in its work dir. Rootless, a tree may also hold files of the user's subordinate ids
//! (what its sandboxes and mmdebstrap wrote), which only the tree helper can remove.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Removes `path`: a file or symlink itself (a symlink is never followed), a directory with
/// everything in it. Where a plain removal fails, every directory in the tree is given mode
/// 0700 first, each before it is read, so this works for a non-root owner too; and when that
/// fails too and this process is not root, the tree helper removes what is left, in a user
/// namespace where the user's subordinate ids are mapped. A missing `path` is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match remove_here(path) {
        Ok(()) => Ok(()),
        Err(here) => match crate::rootless::tree_helper() {
            None => Err(here),
            Some(helper) => helper.remove(&[path.to_path_buf()]).map_err(|there| {
                io::Error::new(
                    here.kind(),
                    format!("{here}; and in the tree helper: {there}"),
                )
            }),
        },
    }
}

/// Removes `path` in this process only.
fn remove_here(path: &Path) -> io::Result<()> {
    let meta = match fs_err::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !meta.is_dir() {
        return fs_err::remove_file(path);
    }
    if fs_err::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path);
    fs_err::remove_dir_all(path)
}

/// Gives `dir` and every directory under it mode 0700, each before it is read. Symlinks are
/// not followed (a `DirEntry`'s file type is the link's own).
fn open_up(dir: &Path) {
    let _ = fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs_err::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A dir with mode 0755 that a symlink in a removed tree points to.
    fn outside_dir(tmp: &Path) -> std::path::PathBuf {
        let outside = tmp.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        outside
    }

    #[test]
    fn removes_a_tree_with_locked_dirs_and_leaves_symlink_targets_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = outside_dir(tmp.path());
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        for dir in ["a/b", "a"] {
            std::fs::set_permissions(tree.join(dir), std::fs::Permissions::from_mode(0o000))
                .unwrap();
        }
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(mode(&outside), 0o755);
    }

    #[test]
    fn a_symlink_or_file_is_removed_itself_and_a_missing_path_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = outside_dir(tmp.path());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(mode(&outside), 0o755);
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }
}
