//! Entry paths as untrusted input: normalised to relative paths with no `..`, and symbolic
//! link targets checked against the tree they would leave.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ExtractError;
use tar::EntryType;

/// Why a raw entry path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathProblem {
    Empty,
    Nul,
    Absolute,
    Parent,
}

impl PathProblem {
    pub(super) fn describe(self) -> &'static str {
        match self {
            PathProblem::Empty => "the name is empty",
            PathProblem::Nul => "the name contains a NUL byte",
            PathProblem::Absolute => "the path is absolute",
            PathProblem::Parent => "the path has a \"..\" component",
        }
    }

    pub(super) fn into_error(self, archive: &Path, entry: String) -> ExtractError {
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

pub(super) fn normalize(raw: &[u8]) -> Result<PathBuf, PathProblem> {
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

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) fn special_kind(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        EntryType::GNULongName | EntryType::GNULongLink => "stray GNU long-name header".to_owned(),
        other => format!("entry of unsupported type {:?}", other.as_byte() as char),
    }
}

/// Whether `target`, read relative to the directory holding the link at `link_rel`, leaves the
/// tree without following any other link.
pub(super) fn lexically_escapes(link_rel: &Path, target: &[u8]) -> bool {
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
pub(super) const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves the symlink at `link_rel` inside `root`, following links found on the way, and reports
/// whether resolution ever climbs above `root` or reaches an absolute path. Missing components are
/// taken lexically, which errs on the side of refusing.
pub(super) fn resolves_outside(root: &Path, link_rel: &Path) -> io::Result<bool> {
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
            let md = match fs_err::symlink_metadata(&here) {
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
                let target = fs_err::read_link(&here)?;
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
