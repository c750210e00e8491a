//! How big a tree is, as a CI cache quota counts it: the bytes of its files (a file with several
//! hard links once), symbolic links by their own size, never followed. Unreadable parts count
//! as nothing: a quota check must not fail the run.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The apparent size of everything under `root` (0 when it does not exist).
pub fn disk_usage(root: &Path) -> u64 {
    let mut seen = HashSet::new();
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| !meta.is_dir())
        .filter(|meta| meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())))
        .map(|meta| meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_once_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(root.join("d/a"), root.join("b")).unwrap();
        let outside = tmp.path().join("big");
        std::fs::write(&outside, vec![0u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let link_len = outside.as_os_str().len() as u64;
        assert_eq!(disk_usage(&root), 1000 + link_len);
        assert_eq!(disk_usage(&tmp.path().join("missing")), 0);
    }
}
