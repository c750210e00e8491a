//! Safe extraction of untrusted tarballs.
//!
//! BOSH releases, jobs and packages arrive as tarballs we did not build, so this module treats every
//! archive as hostile: it owns gzip and zstd detection, path normalization, the checks that keep
//! every write inside the destination (no absolute paths, no `..`, no escaping or traversed
//! symlinks, no special files), resource limits against archive bombs, and the all-or-nothing
//! placement of the result. Callers get either a complete destination directory or an
//! [`ExtractError`] that names the archive and the offending entry, never a half-filled directory.
//!
//! [`TreeBuilder`] applies several tar streams in order, with OCI whiteouts (image layers);
//! [`extract_archive`] is the one-layer case of it.
//!
//! The `tar` crate is used only to parse headers; every file-system write happens here so that
//! each one goes through the checks above.

mod compression;
mod entry_path;
mod error;
mod member;
mod tar_head;
mod tar_walk;
mod tree;
mod whiteout;
mod writer;

use fs_err::File;
use std::io::{self, Read};
use std::path::Path;

use tree::check_dest_absent;

pub use compression::{decompressing_reader, open_archive};
pub use entry_path::normalize_entry_path;
pub use error::ExtractError;
pub use member::read_member;
pub use tar_head::{check_tar_head, TAR_HEAD_BYTES};
pub use tree::TreeBuilder;

/// Limits for extracting untrusted archives.
#[derive(Clone, Debug)]
pub struct ExtractLimits {
    /// Upper bound on the sum of all entry sizes (declared and actually written).
    pub max_unpacked_bytes: u64,
    /// Upper bound on the number of entries in the archive.
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    /// Generous enough for any real release (64 GiB, 10 million entries) while still stopping a bomb
    /// before it fills the disk.
    fn default() -> Self {
        ExtractLimits {
            max_unpacked_bytes: 64 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// What an extraction produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries created (files, directories, symlinks, hard links); skipped root and pax global
    /// headers are not counted.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Extracts `archive` into `dest`, which must not exist yet. Everything is written into a
/// temporary sibling directory (same parent, named `.dest-name.partial-<random>`) and renamed to
/// `dest` only on success; on any error the temp dir is removed, so `dest` never exists
/// half-filled. Gzip and zstd compression are detected by magic bytes.
pub fn extract_archive(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    // Checked before opening so that a busy destination is reported even for unreadable archives.
    check_dest_absent(archive, dest)?;
    let file = File::open(archive).map_err(|source| ExtractError::Open {
        archive: archive.to_owned(),
        source,
    })?;
    extract_reader(io::BufReader::new(file), archive, dest, limits)
}

/// Same as [`extract_archive`], from a reader yielding a plain, gzip- or zstd-compressed tar stream
/// (detected by magic bytes); `archive_name` is only used in messages. This is a [`TreeBuilder`]
/// with a single layer and no whiteouts.
pub fn extract_reader(
    reader: impl Read,
    archive_name: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let mut tree = TreeBuilder::labelled(archive_name, dest, limits)?;
    tree.apply(reader, archive_name, false)?;
    tree.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use entry_path::lexically_escapes;
    use error::human_bytes;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use writer::Extractor;

    fn ok(raw: &str) -> PathBuf {
        normalize_entry_path(raw.as_bytes()).unwrap()
    }

    #[test]
    fn strips_dot_prefixes_and_empty_components() {
        assert_eq!(ok("job.MF"), PathBuf::from("job.MF"));
        assert_eq!(ok("./job.MF"), PathBuf::from("job.MF"));
        assert_eq!(ok("././job.MF"), PathBuf::from("job.MF"));
        assert_eq!(ok(".//a//./b/"), PathBuf::from("a/b"));
        assert_eq!(ok("a/./b/."), PathBuf::from("a/b"));
    }

    #[test]
    fn root_normalizes_to_empty() {
        assert_eq!(ok("."), PathBuf::new());
        assert_eq!(ok("./"), PathBuf::new());
        assert_eq!(ok(".//./"), PathBuf::new());
    }

    #[test]
    fn dotted_names_are_not_parent_components() {
        assert_eq!(ok("..foo"), PathBuf::from("..foo"));
        assert_eq!(ok("a/...b/c.."), PathBuf::from("a/...b/c.."));
        assert_eq!(ok(".hidden"), PathBuf::from(".hidden"));
    }

    #[test]
    fn rejects_hostile_names() {
        for (raw, why) in [
            (&b""[..], "empty"),
            (b"/etc/passwd", "absolute"),
            (b"//etc", "absolute"),
            (b"../x", ".."),
            (b"a/../../x", ".."),
            (b"a/..", ".."),
            (b"./..", ".."),
            (b"a\0b", "NUL"),
        ] {
            let err = normalize_entry_path(raw).unwrap_err();
            assert!(err.contains(why), "{raw:?}: {err}");
        }
    }

    #[test]
    fn non_utf8_names_survive() {
        let p = normalize_entry_path(b"caf\xe9/x").unwrap();
        assert_eq!(p.as_os_str().as_bytes(), b"caf\xe9/x");
    }

    #[test]
    fn lexical_escape() {
        assert!(lexically_escapes(Path::new("a"), b".."));
        assert!(lexically_escapes(Path::new("a/b"), b"../../x"));
        assert!(!lexically_escapes(Path::new("a/b"), b"../x"));
        assert!(!lexically_escapes(Path::new("a/b"), b"c/../../d"));
        assert!(lexically_escapes(Path::new("a/b"), b"/etc"));
        assert!(!lexically_escapes(Path::new("a"), b"."));
    }

    #[test]
    fn forget_drops_exactly_a_subtree() {
        let tmp = tempfile::tempdir().unwrap();
        let mut x = Extractor::new(
            tmp.path(),
            tmp.path(),
            tmp.path(),
            &ExtractLimits::default(),
        );
        let all = [
            "a",
            "a-b",
            "a.b",
            "a/b",
            "a/b-x",
            "a/b.d",
            "a/b/c",
            "a/b/c/d",
            "a/ba",
            "a/b\u{e9}",
            "b",
        ];
        x.files = all.iter().map(PathBuf::from).collect();
        x.dirs = x.files.clone();
        x.forget(Path::new("a/b"));
        let left: Vec<_> = x.files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            left,
            // Component-wise order: "a/..." sorts before "a-b".
            [
                "a",
                "a/b-x",
                "a/b.d",
                "a/ba",
                "a/b\u{e9}",
                "a-b",
                "a.b",
                "b"
            ]
        );
        assert_eq!(x.dirs, x.files);
    }

    #[test]
    fn tree_builder_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<TreeBuilder>();
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(10), "10 bytes");
        assert_eq!(human_bytes(10 << 20), "10485760 bytes (10.0 MiB)");
    }
}
