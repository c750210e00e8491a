//! Unpacked images: a manifest's layers applied in order (whiteouts honoured, every blob
//! verified, every entry checked like any untrusted archive) into `WORK/rootfs/<digest>/`. The
//! tree is built under a temp name and renamed when complete, so a directory with the final name
//! is always whole; concurrent unpackers of the same image both succeed.

use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::image::read_manifest;
use super::store::{sha256_hex, OciStore};
use super::OciError;
use crate::extract::{ExtractError, ExtractLimits, TreeBuilder};

/// Returns `rootfs_dir/<manifest hex>`, unpacking the image there first if needed.
pub fn unpack_image(
    store: &OciStore,
    manifest: &Descriptor,
    rootfs_dir: &Path,
) -> Result<PathBuf, OciError> {
    let dest = rootfs_dir.join(sha256_hex(manifest.digest())?);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs_err::create_dir_all(rootfs_dir).map_err(OciError::io(rootfs_dir))?;
    match unpack_to(store, manifest, &dest) {
        Ok(()) => Ok(dest),
        // Someone else finished the same image first: theirs is as good as ours.
        Err(OciError::Extract(ExtractError::DestinationExists { .. })) if dest.is_dir() => Ok(dest),
        Err(e) => Err(e),
    }
}

/// Applies the image's layers into `dest`, which must not exist.
pub fn unpack_to(store: &OciStore, manifest: &Descriptor, dest: &Path) -> Result<(), OciError> {
    let m = read_manifest(store, manifest)?;
    let mut builder = TreeBuilder::new(dest, &ExtractLimits::default())?;
    // Root filesystems are full of absolute links (`/etc/alternatives/…`) that only mean
    // something inside the container; nothing is ever written through a link while unpacking.
    builder.allow_escaping_symlinks(true);
    for layer in m.layers() {
        let path = store.blob_path(layer.digest())?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, store.open_blob(layer)?);
        builder.apply(&mut reader, &path, true)?;
        // The digest is checked when the blob's last byte is read: make sure it is.
        std::io::copy(&mut reader, &mut std::io::sink())
            .map_err(|e| OciError::from_read(&path, e))?;
    }
    builder.finish()?;
    Ok(())
}
