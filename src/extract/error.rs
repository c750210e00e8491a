//! [`ExtractError`]: every way reading or extracting an archive can fail, naming the archive
//! and the entry to blame.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading or extracting an archive. Every variant names the
/// archive, and the entry when one is to blame.
#[derive(thiserror::Error, Debug)]
pub enum ExtractError {
    #[error("{}: cannot open the archive", .archive.display())]
    Open {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot read the archive", .archive.display())]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: entry {entry:?} has an absolute path; refusing to extract it", .archive.display())]
    AbsolutePath { archive: PathBuf, entry: String },
    #[error("{}: entry {entry:?} has a \"..\" path component; refusing to extract it", .archive.display())]
    ParentComponent { archive: PathBuf, entry: String },
    #[error("{}: entry {entry:?} has an invalid path ({reason}); refusing to extract it", .archive.display())]
    InvalidPath {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error(
        "{}: entry {entry:?} is a {kind} to {target:?}, which points outside the destination; refusing to extract it",
        .archive.display()
    )]
    LinkEscape {
        archive: PathBuf,
        entry: String,
        /// "symbolic link" or "hard link".
        kind: &'static str,
        target: String,
    },
    #[error(
        "{}: entry {entry:?} would be written through the symbolic link {link:?} extracted earlier; refusing to extract it",
        .archive.display()
    )]
    ThroughSymlink {
        archive: PathBuf,
        entry: String,
        link: String,
    },
    #[error(
        "{}: entry {entry:?} is a hard link to {target:?}, which is not an earlier regular file in the archive",
        .archive.display()
    )]
    HardlinkTarget {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error(
        "{}: entry {entry:?} is a {kind}; only regular files, directories, symbolic links and hard links can be extracted",
        .archive.display()
    )]
    SpecialFile {
        archive: PathBuf,
        entry: String,
        kind: String,
    },
    #[error(
        "{}: entry {entry:?} takes the unpacked size past the limit of {}; if the archive is trusted, raise the limit with --max-unpacked-size",
        .archive.display(), human_bytes(*.limit)
    )]
    TooLarge {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error(
        "{}: the archive has more than {limit} entries, the limit that guards against archive bombs; refusing to extract it",
        .archive.display()
    )]
    TooManyEntries { archive: PathBuf, limit: u64 },
    #[error("{}: member {entry:?} is larger than the {} allowed for it", .archive.display(), human_bytes(*.limit))]
    MemberTooLarge {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("{}: member {entry:?} is a {kind}, not a regular file", .archive.display())]
    NotRegularFile {
        archive: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{}: the archive is truncated or corrupt: {detail}", .archive.display())]
    Corrupt { archive: PathBuf, detail: String },
    #[error("{}: cannot extract into {}: it already exists", .archive.display(), .dest.display())]
    DestinationExists { archive: PathBuf, dest: PathBuf },
    #[error(
        "{}: an earlier archive failed to apply, so the tree is incomplete; start a new one",
        .archive.display()
    )]
    Abandoned { archive: PathBuf },
    #[error("{}: cannot write {}", .archive.display(), .path.display())]
    Write {
        archive: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    /// The archive the error is about.
    pub fn archive(&self) -> &Path {
        match self {
            ExtractError::Open { archive, .. }
            | ExtractError::Read { archive, .. }
            | ExtractError::AbsolutePath { archive, .. }
            | ExtractError::ParentComponent { archive, .. }
            | ExtractError::InvalidPath { archive, .. }
            | ExtractError::LinkEscape { archive, .. }
            | ExtractError::ThroughSymlink { archive, .. }
            | ExtractError::HardlinkTarget { archive, .. }
            | ExtractError::SpecialFile { archive, .. }
            | ExtractError::TooLarge { archive, .. }
            | ExtractError::TooManyEntries { archive, .. }
            | ExtractError::MemberTooLarge { archive, .. }
            | ExtractError::NotRegularFile { archive, .. }
            | ExtractError::Corrupt { archive, .. }
            | ExtractError::DestinationExists { archive, .. }
            | ExtractError::Abandoned { archive }
            | ExtractError::Write { archive, .. } => archive,
        }
    }
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{n} bytes ({:.1} {unit})", n as f64 / size as f64);
        }
    }
    format!("{n} bytes")
}
