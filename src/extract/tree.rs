//! [`TreeBuilder`]: a tree built from tar streams in a staging dir next to its destination, and
//! renamed into place only when complete.

use std::ffi::OsString;
use std::fs::{self};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::writer::Extractor;
use super::{ExtractError, ExtractLimits, ExtractStats};

/// Builds a directory tree from one or more tar streams applied in order (OCI layers), in a temp
/// sibling of `dest`, renamed to `dest` by `finish` (all-or-nothing, `dest` must not exist).
///
/// Every layer goes through the same checks as [`super::extract_archive`], against the tree as earlier
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
    pub(super) fn labelled(
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
        fs_err::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
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
    /// container's root, not the host's. Off by default, like [`super::extract_archive`], which refuses
    /// such links. Either way no entry is ever written through a symbolic link, so the tree is
    /// still built only inside the staging directory; but whoever reads it on the host must not
    /// follow its links. When off, the whole tree is re-checked after each layer, so turning it
    /// off after a layer that used it makes the next layer fail.
    pub fn allow_escaping_symlinks(&mut self, allow: bool) -> &mut Self {
        self.x.escaping_symlinks = allow;
        self
    }

    /// Builds the tree from what the layers hold under `prefix` (a relative path, e.g.
    /// `var/vcap/packages/nginx`), as its root: the directories on the way to `prefix` are
    /// skipped, and any other entry outside it is refused with [`ExtractError::InvalidPath`].
    /// A hard link must point under `prefix` too. One directory is created for a package,
    /// not one per component of the prefix, and none is left to remove.
    pub fn only_under(&mut self, prefix: &Path) -> &mut Self {
        self.x.under = Some((prefix.to_path_buf(), false));
        self
    }

    /// With [`only_under`](TreeBuilder::only_under): whether any entry so far was at or under
    /// the prefix (a layer without it built an empty tree).
    pub fn found_under(&self) -> bool {
        self.x.under.as_ref().is_some_and(|(_, found)| *found)
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
        fs_err::set_permissions(tmp.path(), fs::Permissions::from_mode(root_mode))
            .map_err(write_err)?;
        check_dest_absent(&x.archive, &x.dest)?;
        let kept = tmp.keep();
        if let Err(e) = fs_err::rename(&kept, &x.dest) {
            // Best effort: the tree is complete but unwanted; its name marks it as partial anyway.
            let _ = fs_err::remove_dir_all(&kept);
            return Err(write_err(e));
        }
        Ok(x.stats)
    }
}

pub(super) fn check_dest_absent(archive: &Path, dest: &Path) -> Result<(), ExtractError> {
    match fs_err::symlink_metadata(dest) {
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
