//! The checked writer behind [`super::TreeBuilder`]: every entry of every stream goes through the
//! checks that keep writes inside the tree being built, and what it knows about the tree so far
//! (files, real directories, symbolic links) is kept to spare system calls.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs_err::os::unix::fs::OpenOptionsExt;
use fs_err::OpenOptions;

use super::entry_path::{
    lexically_escapes, lossy, normalize, resolves_outside, special_kind, PathProblem,
};
use super::tar_walk::{pump, truncated, walk, TarWalk};
use super::{ExtractError, ExtractLimits, ExtractStats};
use tar::EntryType;

/// Names starting with this are OCI whiteouts (when whiteouts are honoured).
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The whiteout that makes its directory opaque.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// The checked writer behind [`TreeBuilder`], with what it knows about the tree so far.
pub(super) struct Extractor {
    /// The archive being applied, named in errors; before the first one, the builder's label.
    /// Shared so that a copy is cheap while `self` is borrowed mutably.
    pub(super) archive: Arc<Path>,
    /// The temporary directory being filled.
    pub(super) root: PathBuf,
    /// Where `root` will end up; used to name paths in messages.
    pub(super) dest: PathBuf,
    pub(super) limits: ExtractLimits,
    /// Whether the current layer's whiteouts are honoured.
    pub(super) whiteouts: bool,
    /// Whether symbolic links may point outside the tree (see
    /// [`TreeBuilder::allow_escaping_symlinks`]).
    pub(super) escaping_symlinks: bool,
    /// Totals across all layers.
    pub(super) stats: ExtractStats,
    pub(super) seen_entries: u64,
    pub(super) declared: u64,
    pub(super) written: u64,
    // The sets below are ordered because paths order component by component, so a subtree is one
    // contiguous range (see `forget`).
    /// Regular files currently in the tree: the only valid hard-link targets.
    pub(super) files: BTreeSet<PathBuf>,
    /// Paths known to be real directories (not symlinks), to spare an lstat per ancestor.
    pub(super) dirs: BTreeSet<PathBuf>,
    /// Symlinks currently in the tree, checked once each layer is complete.
    pub(super) symlinks: BTreeSet<PathBuf>,
    /// With whiteouts: the paths the current layer wrote and their ancestors, which its whiteouts
    /// must keep.
    pub(super) layer: HashSet<PathBuf>,
    pub(super) root_mode: Option<u32>,
    pub(super) buf: Vec<u8>,
    /// See [`TreeBuilder::only_under`]: the prefix, and whether any entry was at or under it.
    pub(super) under: Option<(PathBuf, bool)>,
}

impl Extractor {
    pub(super) fn new(label: &Path, root: &Path, dest: &Path, limits: &ExtractLimits) -> Extractor {
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
            under: None,
        }
    }

    /// Applies one tar stream to the tree.
    pub(super) fn apply(
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

    pub(super) fn write_err(&self, rel: &Path, source: io::Error) -> ExtractError {
        ExtractError::Write {
            archive: self.archive.to_path_buf(),
            path: self.dest.join(rel),
            source,
        }
    }

    pub(super) fn too_large(&self, entry: &str) -> ExtractError {
        ExtractError::TooLarge {
            archive: self.archive.to_path_buf(),
            entry: entry.to_owned(),
            limit: self.limits.max_unpacked_bytes,
        }
    }

    pub(super) fn through_symlink(&self, entry: &str, link: &Path) -> ExtractError {
        ExtractError::ThroughSymlink {
            archive: self.archive.to_path_buf(),
            entry: entry.to_owned(),
            link: link.to_string_lossy().into_owned(),
        }
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
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
        let rel = match &mut self.under {
            None => rel,
            Some((prefix, found)) => match rel.strip_prefix(&*prefix) {
                Ok(inner) => {
                    *found = true;
                    inner.to_path_buf()
                }
                // A directory on the way to the prefix: not part of the tree.
                Err(_) if is_dir && prefix.starts_with(&rel) => {
                    return self.skip_data(entry, &name, size);
                }
                Err(_) => {
                    return Err(ExtractError::InvalidPath {
                        archive: self.archive.to_path_buf(),
                        entry: name,
                        reason: format!("it is not under {}", prefix.display()),
                    })
                }
            },
        };
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

    /// Consumes an entry's data without writing it, still counting it against the limits.
    pub(super) fn skip_data(
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

    pub(super) fn count_written(&mut self, n: usize, name: &str) -> Result<(), ExtractError> {
        self.written = self.written.saturating_add(n as u64);
        if self.written > self.limits.max_unpacked_bytes {
            return Err(self.too_large(name));
        }
        Ok(())
    }

    /// Makes sure every ancestor of `rel` is a real directory, creating missing ones, and refuses
    /// to go through a symlink: that is the one way a later entry could land outside the tree.
    pub(super) fn ensure_parents(&mut self, rel: &Path, name: &str) -> Result<(), ExtractError> {
        match rel.parent() {
            Some(parent) => self.real_dirs(parent, rel, name, true).map(drop),
            None => Ok(()),
        }
    }

    /// Checks that `dir` (the parent of the entry `rel`) is reached through real directories only,
    /// refusing a symlink on the way, whichever layer it came from. A missing component is
    /// created if `create`, otherwise the answer is false; so is a component that is not a
    /// directory, which is an error if `create`.
    pub(super) fn real_dirs(
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
            match fs_err::symlink_metadata(&full) {
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
    pub(super) fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<bool, ExtractError> {
        let full = self.root.join(rel);
        let removed = match fs_err::symlink_metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => Err(e),
            Ok(md) if md.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs_err::remove_dir_all(&full)
            }
            Ok(_) => fs_err::remove_file(&full),
        };
        removed.map_err(|e| self.write_err(rel, e))?;
        self.forget(rel);
        Ok(false)
    }

    /// Drops `rel` and everything beneath it from the bookkeeping.
    pub(super) fn forget(&mut self, rel: &Path) {
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

    pub(super) fn create_dir(
        &mut self,
        rel: &Path,
        name: &str,
        mode: u32,
    ) -> Result<(), ExtractError> {
        self.ensure_parents(rel, name)?;
        let full = self.root.join(rel);
        if !self.clear(rel, true)? {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&full)
                .map_err(|e| self.write_err(rel, e))?;
        }
        // `full` was just verified or created as a real directory, so this chmod can't follow a link.
        fs_err::set_permissions(&full, fs::Permissions::from_mode(mode))
            .map_err(|e| self.write_err(rel, e))?;
        self.dirs.insert(rel.to_owned());
        Ok(())
    }

    pub(super) fn write_file(
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

    pub(super) fn create_symlink(
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
        fs_err::os::unix::fs::symlink(OsStr::from_bytes(target), self.root.join(rel))
            .map_err(|e| self.write_err(rel, e))?;
        self.symlinks.insert(rel.to_owned());
        Ok(())
    }

    pub(super) fn create_hardlink(
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
            Ok(t) => match &self.under {
                None => t,
                Some((prefix, _)) => match t.strip_prefix(prefix) {
                    Ok(inner) => inner.to_path_buf(),
                    Err(_) => return Err(escape()),
                },
            },
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
            fs_err::hard_link(self.root.join(&target_rel), self.root.join(rel))
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
    pub(super) fn check_symlinks(&self) -> Result<(), ExtractError> {
        for rel in &self.symlinks {
            let target =
                fs_err::read_link(self.root.join(rel)).map_err(|e| self.write_err(rel, e))?;
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

pub(super) fn dir_mode(mode: u32) -> u32 {
    // u+rwx so that we (and the cleanup of a failed extraction) can always fill and remove it.
    (mode & 0o777) | 0o700
}

pub(super) fn link_target<R: Read>(
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
