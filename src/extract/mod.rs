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

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

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

fn human_bytes(n: u64) -> String {
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

/// Opens a tarball that may be gzip-compressed (magic 1f 8b), zstd-compressed (magic 28 b5 2f fd)
/// or a plain tar; detect by magic bytes, not by file name.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read + Send>, ExtractError> {
    let file = File::open(path).map_err(|source| ExtractError::Open {
        archive: path.to_owned(),
        source,
    })?;
    decompressing_reader(io::BufReader::new(file)).map_err(|source| ExtractError::Read {
        archive: path.to_owned(),
        source,
    })
}

/// Same as [`open_archive`], over any reader (peeks the first 4 bytes, then chains them back).
pub fn decompressing_reader<R: Read + Send + 'static>(r: R) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(sniff(r)?))
}

type Rechained<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Either the reader itself or a decoder over it; generic so that borrowed, non-`Send` readers can
/// be sniffed too.
enum Sniffed<R: Read> {
    Plain(Rechained<R>),
    // Multi-member, like gzip(1): concatenated .gz files are one stream.
    Gzip(Box<MultiGzDecoder<Rechained<R>>>),
    // Concatenated frames are one stream too. The decoder refuses frames whose window exceeds
    // zstd's default limit (128 MiB), which bounds its memory whatever the header claims.
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Rechained<R>>>>),
}

impl<R: Read> Read for Sniffed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sniffed::Plain(r) => r.read(buf),
            Sniffed::Gzip(r) => r.read(buf),
            Sniffed::Zstd(r) => r.read(buf),
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn sniff<R: Read>(mut r: R) -> io::Result<Sniffed<R>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &magic[..got];
    let chained = io::Cursor::new(head.to_vec()).chain(r);
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Sniffed::Gzip(Box::new(MultiGzDecoder::new(chained))))
    } else if head == ZSTD_MAGIC {
        Ok(Sniffed::Zstd(Box::new(zstd::stream::read::Decoder::new(
            chained,
        )?)))
    } else {
        Ok(Sniffed::Plain(chained))
    }
}

/// Why a raw entry path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathProblem {
    Empty,
    Nul,
    Absolute,
    Parent,
}

impl PathProblem {
    fn describe(self) -> &'static str {
        match self {
            PathProblem::Empty => "the name is empty",
            PathProblem::Nul => "the name contains a NUL byte",
            PathProblem::Absolute => "the path is absolute",
            PathProblem::Parent => "the path has a \"..\" component",
        }
    }

    fn into_error(self, archive: &Path, entry: String) -> ExtractError {
        let archive = archive.to_owned();
        match self {
            PathProblem::Absolute => ExtractError::AbsolutePath { archive, entry },
            PathProblem::Parent => ExtractError::ParentComponent { archive, entry },
            PathProblem::Empty | PathProblem::Nul => ExtractError::InvalidPath {
                archive,
                entry,
                reason: self.describe().to_owned(),
            },
        }
    }
}

fn normalize(raw: &[u8]) -> Result<PathBuf, PathProblem> {
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    if raw[0] == b'/' {
        return Err(PathProblem::Absolute);
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(PathProblem::Parent),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Normalizes an entry path: strips leading "./" (and repeated "./" or "/" anywhere), rejects
/// absolute paths, `..` components, empty names and NUL bytes; returns a relative PathBuf.
///
/// A name that denotes the archive root ("." or "./") normalizes to an empty `PathBuf`; callers
/// decide what the root means to them (extraction skips it).
pub fn normalize_entry_path(raw: &[u8]) -> Result<PathBuf, String> {
    normalize(raw).map_err(|p| p.describe().to_owned())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn special_kind(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        EntryType::GNULongName | EntryType::GNULongLink => "stray GNU long-name header".to_owned(),
        other => format!("entry of unsupported type {:?}", other.as_byte() as char),
    }
}

// The tar crate buffers GNU long names and pax records in memory, sized by a header we don't
// trust, so the bytes it may read while looking for the next entry are capped.
const METADATA_BUDGET: u64 = 16 << 20;

#[derive(Debug)]
struct MetadataTooLarge;

impl std::fmt::Display for MetadataTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "extension headers (long names or pax records) exceed {}",
            human_bytes(METADATA_BUDGET)
        )
    }
}

impl std::error::Error for MetadataTooLarge {}

/// Passes reads through, failing once the metadata budget (when armed) is spent.
struct Metered<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.budget.get() {
            let n64 = n as u64;
            if n64 > left {
                return Err(io::Error::other(MetadataTooLarge));
            }
            self.budget.set(Some(left - n64));
        }
        Ok(n)
    }
}

/// Read failures of the archive stream: data problems are reported as corruption, anything else
/// (e.g. EIO) as a plain read error.
fn read_error(archive: &Path, e: io::Error) -> ExtractError {
    use io::ErrorKind::{InvalidData, InvalidInput, Other, UnexpectedEof};
    let archive = archive.to_owned();
    let ours = e
        .get_ref()
        .is_some_and(|inner| inner.is::<MetadataTooLarge>());
    if ours || matches!(e.kind(), UnexpectedEof | InvalidData | InvalidInput | Other) {
        ExtractError::Corrupt {
            archive,
            detail: e.to_string(),
        }
    } else {
        ExtractError::Read { archive, source: e }
    }
}

fn truncated(archive: &Path, entry: &str, got: u64, want: u64) -> ExtractError {
    ExtractError::Corrupt {
        archive: archive.to_owned(),
        detail: format!("entry {entry:?} ends after {got} of its {want} bytes"),
    }
}

/// Walks the tar entries of a (possibly gzip-compressed) stream, keeping the metadata budget armed
/// only while the tar crate is parsing headers.
struct TarWalk<R: Read> {
    archive: tar::Archive<Metered<Sniffed<R>>>,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> TarWalk<R> {
    fn new(reader: R, archive_name: &Path) -> Result<Self, ExtractError> {
        let sniffed = sniff(reader).map_err(|e| read_error(archive_name, e))?;
        let budget = Rc::new(Cell::new(None));
        Ok(TarWalk {
            archive: tar::Archive::new(Metered {
                inner: sniffed,
                budget: budget.clone(),
            }),
            budget,
        })
    }
}

/// Calls `f` for every entry until it returns false. `f` must consume the entry's data itself:
/// otherwise the tar crate would skip it while the metadata budget is armed.
fn walk<R: Read>(
    walk: &mut TarWalk<R>,
    archive_name: &Path,
    mut f: impl FnMut(&mut tar::Entry<'_, Metered<Sniffed<R>>>) -> Result<bool, ExtractError>,
) -> Result<(), ExtractError> {
    let budget = walk.budget.clone();
    let mut entries = walk
        .archive
        .entries()
        .map_err(|e| read_error(archive_name, e))?;
    loop {
        budget.set(Some(METADATA_BUDGET));
        let next = entries.next();
        budget.set(None);
        let mut entry = match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(read_error(archive_name, e)),
            Some(Ok(entry)) => entry,
        };
        if !f(&mut entry)? {
            return Ok(());
        }
    }
}

/// Feeds the rest of an entry's data to `on_chunk` in bounded pieces, returning how many bytes
/// there were (fewer than the header said means the archive was cut short).
fn pump(
    entry: &mut impl Read,
    buf: &mut [u8],
    mut on_chunk: impl FnMut(&[u8]) -> Result<(), ExtractError>,
    archive: &Path,
) -> Result<u64, ExtractError> {
    let mut total = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(archive, e)),
        };
        total += n as u64;
        on_chunk(&buf[..n])?;
    }
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

/// Builds a directory tree from one or more tar streams applied in order (OCI layers), in a temp
/// sibling of `dest`, renamed to `dest` by `finish` (all-or-nothing, `dest` must not exist).
///
/// Every layer goes through the same checks as [`extract_archive`], against the tree as earlier
/// layers left it: a symbolic link from an earlier layer is never written through, a hard link may
/// point to any regular file currently in the tree, and the limits count all layers together.
/// Symbolic links must stay inside the tree unless
/// [`allow_escaping_symlinks`](TreeBuilder::allow_escaping_symlinks) says otherwise. Ownership and
/// timestamps are not kept; modes are, without setuid, setgid and sticky bits (directories always
/// get u+rwx).
///
/// Dropping the builder, which is what happens on any error, removes the partial tree. After a
/// failed [`apply`](TreeBuilder::apply) the tree is a mix of layers: further calls fail with
/// [`ExtractError::Abandoned`].
pub struct TreeBuilder {
    /// Dropping it removes the partial tree.
    tmp: tempfile::TempDir,
    x: Extractor,
    /// Set while a layer is being applied, and left set if that fails.
    broken: bool,
}

impl TreeBuilder {
    /// Creates the staging directory next to `dest`, creating `dest`'s parents as needed. Errors
    /// that happen before any layer is applied name `dest` as the archive.
    pub fn new(dest: &Path, limits: &ExtractLimits) -> Result<TreeBuilder, ExtractError> {
        Self::labelled(dest, dest, limits)
    }

    /// Same as [`TreeBuilder::new`], naming `label` as the archive in errors until a layer is
    /// applied.
    fn labelled(
        label: &Path,
        dest: &Path,
        limits: &ExtractLimits,
    ) -> Result<TreeBuilder, ExtractError> {
        check_dest_absent(label, dest)?;
        let write_err = |path: &Path, source| ExtractError::Write {
            archive: label.to_owned(),
            path: path.to_owned(),
            source,
        };
        let name = dest.file_name().ok_or_else(|| {
            write_err(
                dest,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the destination path has no final component",
                ),
            )
        })?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".partial-");
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(parent)
            .map_err(|e| write_err(parent, e))?;
        Ok(TreeBuilder {
            x: Extractor::new(label, tmp.path(), dest, limits),
            tmp,
            broken: false,
        })
    }

    /// Lets symbolic links point anywhere, absolute or above the root, as a container's root file
    /// system needs (`usr/bin/awk -> /etc/alternatives/awk`): there they resolve against the
    /// container's root, not the host's. Off by default, like [`extract_archive`], which refuses
    /// such links. Either way no entry is ever written through a symbolic link, so the tree is
    /// still built only inside the staging directory; but whoever reads it on the host must not
    /// follow its links. When off, the whole tree is re-checked after each layer, so turning it
    /// off after a layer that used it makes the next layer fail.
    pub fn allow_escaping_symlinks(&mut self, allow: bool) -> &mut Self {
        self.x.escaping_symlinks = allow;
        self
    }

    /// Where the tree is being built (for tests / callers that want to inspect); not `dest`.
    pub fn staging_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Applies one tar stream. `reader` may be gzip, zstd (magic 28 b5 2f fd) or plain: detected by
    /// magic. Returns what this layer created; `archive_name` is only used in messages.
    ///
    /// Later layers replace what earlier ones left at the same path, like tar: a directory entry
    /// over a directory only updates its mode, anything else first removes what is there (a whole
    /// directory tree included, as container runtimes do; a symbolic link is removed, never
    /// followed).
    ///
    /// With `whiteouts: true`, OCI whiteouts are honoured. An entry `DIR/.wh.NAME` removes
    /// `DIR/NAME` (recursively) as earlier layers left it, and `DIR/.wh..wh..opq` removes every
    /// child of `DIR` that earlier layers left; what this layer writes is kept either way,
    /// whether it comes before or after the whiteout in the stream. `DIR` must be reached through
    /// real directories: a symbolic link on the way is refused with
    /// [`ExtractError::ThroughSymlink`], and a `DIR` that doesn't exist leaves nothing to remove.
    /// Whiteout entries themselves are never written. With `whiteouts: false` names starting with
    /// `.wh.` are ordinary files.
    pub fn apply(
        &mut self,
        reader: impl Read,
        archive_name: &Path,
        whiteouts: bool,
    ) -> Result<ExtractStats, ExtractError> {
        if self.broken {
            return Err(ExtractError::Abandoned {
                archive: archive_name.to_owned(),
            });
        }
        self.broken = true;
        let before = self.x.stats;
        self.x.apply(reader, archive_name, whiteouts)?;
        self.broken = false;
        Ok(ExtractStats {
            entries: self.x.stats.entries - before.entries,
            bytes: self.x.stats.bytes - before.bytes,
        })
    }

    /// Renames the finished tree to `dest` and returns the totals of all layers; the limits are
    /// across all layers too. Errors name the last archive applied.
    pub fn finish(self) -> Result<ExtractStats, ExtractError> {
        let TreeBuilder { tmp, x, broken } = self;
        if broken {
            return Err(ExtractError::Abandoned {
                archive: x.archive.to_path_buf(),
            });
        }
        let write_err = |source| ExtractError::Write {
            archive: x.archive.to_path_buf(),
            path: x.dest.clone(),
            source,
        };
        let root_mode = x.root_mode.unwrap_or(0o755);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(root_mode))
            .map_err(write_err)?;
        check_dest_absent(&x.archive, &x.dest)?;
        let kept = tmp.keep();
        if let Err(e) = fs::rename(&kept, &x.dest) {
            // Best effort: the tree is complete but unwanted; its name marks it as partial anyway.
            let _ = fs::remove_dir_all(&kept);
            return Err(write_err(e));
        }
        Ok(x.stats)
    }
}

fn check_dest_absent(archive: &Path, dest: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => Err(ExtractError::DestinationExists {
            archive: archive.to_owned(),
            dest: dest.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ExtractError::Write {
            archive: archive.to_owned(),
            path: dest.to_owned(),
            source,
        }),
    }
}

/// Names starting with this are OCI whiteouts (when whiteouts are honoured).
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The whiteout that makes its directory opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// The checked writer behind [`TreeBuilder`], with what it knows about the tree so far.
struct Extractor {
    /// The archive being applied, named in errors; before the first one, the builder's label.
    /// Shared so that a copy is cheap while `self` is borrowed mutably.
    archive: Arc<Path>,
    /// The temporary directory being filled.
    root: PathBuf,
    /// Where `root` will end up; used to name paths in messages.
    dest: PathBuf,
    limits: ExtractLimits,
    /// Whether the current layer's whiteouts are honoured.
    whiteouts: bool,
    /// Whether symbolic links may point outside the tree (see
    /// [`TreeBuilder::allow_escaping_symlinks`]).
    escaping_symlinks: bool,
    /// Totals across all layers.
    stats: ExtractStats,
    seen_entries: u64,
    declared: u64,
    written: u64,
    // The sets below are ordered because paths order component by component, so a subtree is one
    // contiguous range (see `forget`).
    /// Regular files currently in the tree: the only valid hard-link targets.
    files: BTreeSet<PathBuf>,
    /// Paths known to be real directories (not symlinks), to spare an lstat per ancestor.
    dirs: BTreeSet<PathBuf>,
    /// Symlinks currently in the tree, checked once each layer is complete.
    symlinks: BTreeSet<PathBuf>,
    /// With whiteouts: the paths the current layer wrote and their ancestors, which its whiteouts
    /// must keep.
    layer: HashSet<PathBuf>,
    root_mode: Option<u32>,
    buf: Vec<u8>,
}

impl Extractor {
    fn new(label: &Path, root: &Path, dest: &Path, limits: &ExtractLimits) -> Extractor {
        Extractor {
            archive: label.into(),
            root: root.to_owned(),
            dest: dest.to_owned(),
            limits: limits.clone(),
            whiteouts: false,
            escaping_symlinks: false,
            stats: ExtractStats::default(),
            seen_entries: 0,
            declared: 0,
            written: 0,
            files: BTreeSet::new(),
            dirs: BTreeSet::new(),
            symlinks: BTreeSet::new(),
            layer: HashSet::new(),
            root_mode: None,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Applies one tar stream to the tree.
    fn apply(
        &mut self,
        reader: impl Read,
        archive_name: &Path,
        whiteouts: bool,
    ) -> Result<(), ExtractError> {
        self.archive = archive_name.into();
        self.whiteouts = whiteouts;
        self.layer.clear();
        let mut tw = TarWalk::new(reader, archive_name)?;
        walk(&mut tw, archive_name, |entry| {
            self.entry(entry).map(|()| true)
        })?;

        // The tar end marker comes before the compression trailer; reading on verifies its
        // checksum. The padding is counted so that a stream of trailing zeros can't keep us busy
        // forever.
        let mut rest = tw.archive.into_inner();
        let mut buf = std::mem::take(&mut self.buf);
        let res = pump(
            &mut rest,
            &mut buf,
            |chunk| self.count_written(chunk.len(), "(data after the end of the tar stream)"),
            archive_name,
        );
        self.buf = buf;
        res?;

        if !self.escaping_symlinks {
            self.check_symlinks()?;
        }
        self.layer = HashSet::new();
        Ok(())
    }

    fn write_err(&self, rel: &Path, source: io::Error) -> ExtractError {
        ExtractError::Write {
            archive: self.archive.to_path_buf(),
            path: self.dest.join(rel),
            source,
        }
    }

    fn too_large(&self, entry: &str) -> ExtractError {
        ExtractError::TooLarge {
            archive: self.archive.to_path_buf(),
            entry: entry.to_owned(),
            limit: self.limits.max_unpacked_bytes,
        }
    }

    fn through_symlink(&self, entry: &str, link: &Path) -> ExtractError {
        ExtractError::ThroughSymlink {
            archive: self.archive.to_path_buf(),
            entry: entry.to_owned(),
            link: link.to_string_lossy().into_owned(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        self.seen_entries += 1;
        if self.seen_entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                archive: self.archive.to_path_buf(),
                limit: self.limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let name = lossy(&raw);
        let kind = entry.header().entry_type();
        let size = entry.size();
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.limits.max_unpacked_bytes {
            return Err(self.too_large(&name));
        }

        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            // Pax records that describe no entry (global ones such as git's commit id) hold
            // nothing we extract.
            return self.skip_data(entry, &name, size);
        }

        let rel = normalize(&raw).map_err(|p| p.into_error(&self.archive, name.clone()))?;
        // Old tar writers mark directories only by a trailing slash.
        let is_dir = kind == EntryType::Directory
            || (matches!(kind, EntryType::Regular) && raw.ends_with(b"/") && size == 0);
        let mode = || {
            entry.header().mode().map_err(|e| ExtractError::Corrupt {
                archive: self.archive.to_path_buf(),
                detail: format!("entry {name:?} has an unreadable mode: {e}"),
            })
        };

        if rel.as_os_str().is_empty() {
            if !is_dir {
                return Err(ExtractError::InvalidPath {
                    archive: self.archive.to_path_buf(),
                    entry: name,
                    reason: "it names the destination itself but is not a directory".to_owned(),
                });
            }
            self.root_mode = Some(dir_mode(mode()?));
            return self.skip_data(entry, &name, size);
        }

        if self.whiteouts {
            let base = rel.file_name().map_or(&b""[..], OsStr::as_bytes);
            if base.starts_with(WHITEOUT_PREFIX) {
                // Whatever its type: a whiteout is never written.
                self.whiteout(&rel, &name, base)?;
                return self.skip_data(entry, &name, size);
            }
        }

        if is_dir {
            let mode = dir_mode(mode()?);
            self.create_dir(&rel, &name, mode)?;
            self.skip_data(entry, &name, size)?;
        } else {
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let mode = mode()? & 0o777;
                    self.write_file(entry, &rel, &name, size, mode)?;
                }
                EntryType::Symlink => {
                    let target = link_target(entry, &self.archive, &name)?;
                    self.create_symlink(&rel, &name, &target)?;
                    self.skip_data(entry, &name, size)?;
                }
                EntryType::Link => {
                    let target = link_target(entry, &self.archive, &name)?;
                    self.create_hardlink(&rel, &name, &target)?;
                    self.skip_data(entry, &name, size)?;
                }
                other => {
                    return Err(ExtractError::SpecialFile {
                        archive: self.archive.to_path_buf(),
                        entry: name,
                        kind: special_kind(other),
                    })
                }
            }
        }
        self.mark_layer(&rel);
        self.stats.entries += 1;
        Ok(())
    }

    /// Records that the current layer wrote `rel` (and so, implicitly, its ancestors), for its
    /// whiteouts to keep.
    fn mark_layer(&mut self, rel: &Path) {
        if !self.whiteouts {
            return;
        }
        let mut cur = Some(rel);
        // An ancestor already recorded has all of its own ancestors recorded too.
        while let Some(p) = cur.filter(|p| !p.as_os_str().is_empty()) {
            if !self.layer.insert(p.to_owned()) {
                break;
            }
            cur = p.parent();
        }
    }

    /// Applies the whiteout entry `rel`, whose last component is `base` (starting with `.wh.`):
    /// `DIR/.wh..wh..opq` removes what earlier layers left in `DIR`, `DIR/.wh.NAME` what they left
    /// at `DIR/NAME`.
    fn whiteout(&mut self, rel: &Path, name: &str, base: &[u8]) -> Result<(), ExtractError> {
        let dir = rel.parent().unwrap_or(Path::new(""));
        let opaque = base == OPAQUE_MARKER;
        let hidden = &base[WHITEOUT_PREFIX.len()..];
        if !opaque && matches!(hidden, b"" | b"." | b"..") {
            return Err(ExtractError::InvalidPath {
                archive: self.archive.to_path_buf(),
                entry: name.to_owned(),
                reason: "it is a whiteout that names no file".to_owned(),
            });
        }
        if !self.real_dirs(dir, rel, name, false)? {
            // Nothing there, so nothing to hide.
            return Ok(());
        }
        if opaque {
            self.remove_earlier_children(dir)
        } else {
            self.remove_earlier(&dir.join(OsStr::from_bytes(hidden)))
        }
    }

    /// Removes what earlier layers left at `rel`, keeping what the current layer wrote: a path it
    /// wrote (or wrote beneath) stays, and if that is a directory its contents are sifted the same
    /// way.
    fn remove_earlier(&mut self, rel: &Path) -> Result<(), ExtractError> {
        if !self.layer.contains(rel) {
            self.clear(rel, false)?;
            return Ok(());
        }
        match fs::symlink_metadata(self.root.join(rel)) {
            Ok(md) if md.is_dir() => self.remove_earlier_children(rel),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.write_err(rel, e)),
        }
    }

    /// [`Extractor::remove_earlier`] for every child of `dir`, a real directory of the tree.
    fn remove_earlier_children(&mut self, dir: &Path) -> Result<(), ExtractError> {
        // Names first: recursing with the directory open would hold a descriptor per level.
        let names = fs::read_dir(self.root.join(dir))
            .and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|e| self.write_err(dir, e))?;
        for child in names {
            self.remove_earlier(&dir.join(child))?;
        }
        Ok(())
    }

    /// Consumes an entry's data without writing it, still counting it against the limits.
    fn skip_data(
        &mut self,
        entry: &mut impl Read,
        name: &str,
        size: u64,
    ) -> Result<(), ExtractError> {
        let mut buf = std::mem::take(&mut self.buf);
        let archive = Arc::clone(&self.archive);
        let res = pump(
            entry,
            &mut buf,
            |chunk| self.count_written(chunk.len(), name),
            &archive,
        );
        self.buf = buf;
        let got = res?;
        if got < size {
            return Err(truncated(&self.archive, name, got, size));
        }
        Ok(())
    }

    fn count_written(&mut self, n: usize, name: &str) -> Result<(), ExtractError> {
        self.written = self.written.saturating_add(n as u64);
        if self.written > self.limits.max_unpacked_bytes {
            return Err(self.too_large(name));
        }
        Ok(())
    }

    /// Makes sure every ancestor of `rel` is a real directory, creating missing ones, and refuses
    /// to go through a symlink: that is the one way a later entry could land outside the tree.
    fn ensure_parents(&mut self, rel: &Path, name: &str) -> Result<(), ExtractError> {
        match rel.parent() {
            Some(parent) => self.real_dirs(parent, rel, name, true).map(drop),
            None => Ok(()),
        }
    }

    /// Checks that `dir` (the parent of the entry `rel`) is reached through real directories only,
    /// refusing a symlink on the way, whichever layer it came from. A missing component is
    /// created if `create`, otherwise the answer is false; so is a component that is not a
    /// directory, which is an error if `create`.
    fn real_dirs(
        &mut self,
        dir: &Path,
        rel: &Path,
        name: &str,
        create: bool,
    ) -> Result<bool, ExtractError> {
        let mut cur = PathBuf::new();
        for comp in dir.components() {
            cur.push(comp);
            if self.dirs.contains(&cur) {
                continue;
            }
            let full = self.root.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(self.through_symlink(name, &cur))
                }
                Ok(md) if md.is_dir() => {}
                Ok(_) if !create => return Ok(false),
                Ok(_) => {
                    return Err(self.write_err(
                        rel,
                        io::Error::new(
                            io::ErrorKind::NotADirectory,
                            format!("{} is not a directory", cur.display()),
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&full)
                        .map_err(|e| self.write_err(&cur, e))?;
                }
                Err(e) => return Err(self.write_err(&cur, e)),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(true)
    }

    /// Clears `rel` for a new entry, like tar does for duplicates: a directory is kept if
    /// `keep_dir`, anything else is removed, a directory with all its contents. Uses lstat, unlink
    /// and `remove_dir_all` (which doesn't follow symlinks either) so that an existing symlink is
    /// removed rather than followed. Returns true if a directory was kept.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<bool, ExtractError> {
        let full = self.root.join(rel);
        let removed = match fs::symlink_metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => Err(e),
            Ok(md) if md.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(&full)
            }
            Ok(_) => fs::remove_file(&full),
        };
        removed.map_err(|e| self.write_err(rel, e))?;
        self.forget(rel);
        Ok(false)
    }

    /// Drops `rel` and everything beneath it from the bookkeeping.
    fn forget(&mut self, rel: &Path) {
        for set in [&mut self.files, &mut self.dirs, &mut self.symlinks] {
            let doomed: Vec<PathBuf> = set
                .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
                .take_while(|p| p.starts_with(rel))
                .cloned()
                .collect();
            for p in &doomed {
                set.remove(p);
            }
        }
    }

    fn create_dir(&mut self, rel: &Path, name: &str, mode: u32) -> Result<(), ExtractError> {
        self.ensure_parents(rel, name)?;
        let full = self.root.join(rel);
        if !self.clear(rel, true)? {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&full)
                .map_err(|e| self.write_err(rel, e))?;
        }
        // `full` was just verified or created as a real directory, so this chmod can't follow a link.
        fs::set_permissions(&full, fs::Permissions::from_mode(mode))
            .map_err(|e| self.write_err(rel, e))?;
        self.dirs.insert(rel.to_owned());
        Ok(())
    }

    fn write_file(
        &mut self,
        entry: &mut impl Read,
        rel: &Path,
        name: &str,
        size: u64,
        mode: u32,
    ) -> Result<(), ExtractError> {
        self.ensure_parents(rel, name)?;
        self.clear(rel, false)?;
        let full = self.root.join(rel);
        // create_new means O_CREAT|O_EXCL, which never follows a symlink at the final component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|e| self.write_err(rel, e))?;
        let mut buf = std::mem::take(&mut self.buf);
        let archive = Arc::clone(&self.archive);
        let res = pump(
            entry,
            &mut buf,
            |chunk| {
                self.count_written(chunk.len(), name)?;
                file.write_all(chunk).map_err(|e| self.write_err(rel, e))
            },
            &archive,
        );
        self.buf = buf;
        let got = res?;
        if got < size {
            return Err(truncated(&self.archive, name, got, size));
        }
        // Through the handle, not the path: the mode lands on the file we wrote.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| self.write_err(rel, e))?;
        self.stats.bytes += got;
        self.files.insert(rel.to_owned());
        Ok(())
    }

    fn create_symlink(
        &mut self,
        rel: &Path,
        name: &str,
        target: &[u8],
    ) -> Result<(), ExtractError> {
        if target.is_empty() || target.contains(&0) {
            return Err(ExtractError::InvalidPath {
                archive: self.archive.to_path_buf(),
                entry: name.to_owned(),
                reason: "the symbolic link target is empty or contains a NUL byte".to_owned(),
            });
        }
        if !self.escaping_symlinks && lexically_escapes(rel, target) {
            return Err(ExtractError::LinkEscape {
                archive: self.archive.to_path_buf(),
                entry: name.to_owned(),
                kind: "symbolic link",
                target: lossy(target),
            });
        }
        self.ensure_parents(rel, name)?;
        self.clear(rel, false)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.root.join(rel))
            .map_err(|e| self.write_err(rel, e))?;
        self.symlinks.insert(rel.to_owned());
        Ok(())
    }

    fn create_hardlink(
        &mut self,
        rel: &Path,
        name: &str,
        target: &[u8],
    ) -> Result<(), ExtractError> {
        let escape = || ExtractError::LinkEscape {
            archive: self.archive.to_path_buf(),
            entry: name.to_owned(),
            kind: "hard link",
            target: lossy(target),
        };
        let target_rel = match normalize(target) {
            Ok(t) => t,
            Err(PathProblem::Absolute | PathProblem::Parent) => return Err(escape()),
            Err(p) => {
                return Err(ExtractError::InvalidPath {
                    archive: self.archive.to_path_buf(),
                    entry: name.to_owned(),
                    reason: format!("hard link target: {}", p.describe()),
                })
            }
        };
        if target_rel == rel {
            if self.files.contains(&target_rel) {
                // A link to itself: the file is already there.
                return Ok(());
            }
        } else if self.files.contains(&target_rel) && !target_rel.starts_with(rel) {
            self.ensure_parents(rel, name)?;
            self.clear(rel, false)?;
            // link(2) does not follow a symlink at the source, and `files` only holds regular
            // files currently in the tree, reached through real directories.
            fs::hard_link(self.root.join(&target_rel), self.root.join(rel))
                .map_err(|e| self.write_err(rel, e))?;
            self.files.insert(rel.to_owned());
            return Ok(());
        }
        // Missing, not a regular file, or inside the directory the link would replace.
        Err(ExtractError::HardlinkTarget {
            archive: self.archive.to_path_buf(),
            entry: name.to_owned(),
            target: lossy(target),
        })
    }

    /// Each symlink passed the lexical check when created, but links can point through other
    /// links (`a -> .`, `b -> a/..`), and a later layer can turn a directory into a link, so the
    /// tree is resolved the way the kernel would once each layer is complete.
    fn check_symlinks(&self) -> Result<(), ExtractError> {
        for rel in &self.symlinks {
            let target = fs::read_link(self.root.join(rel)).map_err(|e| self.write_err(rel, e))?;
            if resolves_outside(&self.root, rel).map_err(|e| self.write_err(rel, e))? {
                return Err(ExtractError::LinkEscape {
                    archive: self.archive.to_path_buf(),
                    entry: rel.to_string_lossy().into_owned(),
                    kind: "symbolic link",
                    target: lossy(target.as_os_str().as_bytes()),
                });
            }
        }
        Ok(())
    }
}

fn dir_mode(mode: u32) -> u32 {
    // u+rwx so that we (and the cleanup of a failed extraction) can always fill and remove it.
    (mode & 0o777) | 0o700
}

fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    archive: &Path,
    name: &str,
) -> Result<Vec<u8>, ExtractError> {
    entry
        .link_name_bytes()
        .map(|t| t.into_owned())
        .ok_or_else(|| ExtractError::InvalidPath {
            archive: archive.to_owned(),
            entry: name.to_owned(),
            reason: "the link has no target".to_owned(),
        })
}

/// Whether `target`, read relative to the directory holding the link at `link_rel`, leaves the
/// tree without following any other link.
fn lexically_escapes(link_rel: &Path, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = link_rel.parent().map_or(0, |p| p.components().count());
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

/// Same as the kernel's hop limit: a chain longer than this can't be followed by anyone.
const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves the symlink at `link_rel` inside `root`, following links found on the way, and reports
/// whether resolution ever climbs above `root` or reaches an absolute path. Missing components are
/// taken lexically, which errs on the side of refusing.
fn resolves_outside(root: &Path, link_rel: &Path) -> io::Result<bool> {
    let mut stack: Vec<OsString> = link_rel
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let mut hops = 0;
    // Start by "arriving" at the link itself.
    let mut at_link = true;
    loop {
        if at_link {
            at_link = false;
            let here: PathBuf = root.join(stack.iter().collect::<PathBuf>());
            let md = match fs::symlink_metadata(&here) {
                Ok(md) => Some(md),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => None,
                Err(e) => return Err(e),
            };
            if md.is_some_and(|m| m.file_type().is_symlink()) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Ok(false);
                }
                let target = fs::read_link(&here)?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.first() == Some(&b'/') {
                    return Ok(true);
                }
                stack.pop();
                for comp in bytes.split(|b| *b == b'/').rev() {
                    pending.push_front(OsStr::from_bytes(comp).to_owned());
                }
            }
        }
        let Some(comp) = pending.pop_front() else {
            return Ok(false);
        };
        match comp.as_bytes() {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return Ok(true);
                }
            }
            _ => {
                stack.push(comp);
                at_link = true;
            }
        }
    }
}

/// Reads one regular-file member by its normalized path (e.g. "job.MF" matches "job.MF" and
/// "./job.MF") fully into memory, at most `max_bytes`; Ok(None) if absent. The stream may be plain
/// or gzip-compressed. The first matching entry wins: reading stops there rather than scanning a
/// possibly huge archive for duplicates.
pub fn read_member(
    reader: impl Read,
    archive_name: &Path,
    member: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, ExtractError> {
    let wanted =
        normalize(member.as_bytes()).map_err(|p| p.into_error(archive_name, member.to_owned()))?;
    let mut tw = TarWalk::new(reader, archive_name)?;
    let mut found = None;
    let mut buf = vec![0u8; 64 * 1024];
    walk(&mut tw, archive_name, |entry| {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let size = entry.size();
        let name = lossy(&raw);
        // Hostile names can't match a normalized member; they are just skipped.
        let matches = normalize(&raw).is_ok_and(|p| p == wanted)
            && !matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader);
        if !matches {
            let got = pump(entry, &mut buf, |_| Ok(()), archive_name)?;
            if got < size {
                return Err(truncated(archive_name, &name, got, size));
            }
            return Ok(true);
        }
        let is_file =
            matches!(kind, EntryType::Regular | EntryType::Continuous) && !raw.ends_with(b"/");
        if !is_file {
            let kind = match kind {
                EntryType::Directory | EntryType::Regular => "directory".to_owned(),
                EntryType::Symlink => "symbolic link".to_owned(),
                EntryType::Link => "hard link".to_owned(),
                other => special_kind(other),
            };
            return Err(ExtractError::NotRegularFile {
                archive: archive_name.to_owned(),
                entry: name,
                kind,
            });
        }
        let too_large = || ExtractError::MemberTooLarge {
            archive: archive_name.to_owned(),
            entry: name.clone(),
            limit: max_bytes,
        };
        if size > max_bytes {
            return Err(too_large());
        }
        // The header size is trusted only as an upper bound on the allocation.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        entry
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| read_error(archive_name, e))?;
        if data.len() as u64 > max_bytes {
            return Err(too_large());
        }
        if (data.len() as u64) < size {
            return Err(truncated(archive_name, &name, data.len() as u64, size));
        }
        found = Some(data);
        Ok(false)
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

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
