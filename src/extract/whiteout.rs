//! OCI whiteouts, applied by the same checked writer as every other entry: `.wh.NAME` removes
//! what earlier layers left at NAME, `.wh..wh..opq` what they left in its directory, and what
//! the current layer wrote is kept either way.

use std::ffi::OsStr;
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::writer::{Extractor, OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::ExtractError;

impl Extractor {
    /// Records that the current layer wrote `rel` (and so, implicitly, its ancestors), for its
    /// whiteouts to keep.
    pub(super) fn mark_layer(&mut self, rel: &Path) {
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
    pub(super) fn whiteout(
        &mut self,
        rel: &Path,
        name: &str,
        base: &[u8],
    ) -> Result<(), ExtractError> {
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
    pub(super) fn remove_earlier(&mut self, rel: &Path) -> Result<(), ExtractError> {
        if !self.layer.contains(rel) {
            self.clear(rel, false)?;
            return Ok(());
        }
        match fs_err::symlink_metadata(self.root.join(rel)) {
            Ok(md) if md.is_dir() => self.remove_earlier_children(rel),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.write_err(rel, e)),
        }
    }

    /// [`Extractor::remove_earlier`] for every child of `dir`, a real directory of the tree.
    pub(super) fn remove_earlier_children(&mut self, dir: &Path) -> Result<(), ExtractError> {
        // Names first: recursing with the directory open would hold a descriptor per level.
        let names = fs_err::read_dir(self.root.join(dir))
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
}
