//! One compiled package as BOSH carries it, `compiled_packages/<name>.tgz`: the install dir at
//! the tar root (`./`, `./bin/x`, ..., what `tar -czf X -C /var/vcap/packages/<name> .` gives),
//! streamed from the package's layer in the store (verified as it is read) into a temp file,
//! hashed on the way out.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::gzip::GzipPipe;
use super::tar::TarWriter;
use super::ExportError;
use crate::extract;
use crate::oci::OciStore;
use crate::release::digest::{Algorithm, Digest, Hasher};

/// gzip's default, what `tar -czf` and bosh use.
pub const PACKAGE_GZIP_LEVEL: u32 = 6;

/// A written compiled package: where, and its digest.
pub struct WrittenPackage {
    pub path: PathBuf,
    pub digest: Digest,
}

/// Writes package `name`'s layer (files under `var/vcap/packages/<name>/`) as its compiled
/// package archive at `dest`.
pub fn write_compiled_package(
    store: &OciStore,
    layer: &Descriptor,
    name: &str,
    dest: &Path,
    algorithm: Algorithm,
    mtime: u64,
) -> Result<WrittenPackage, ExportError> {
    let blob = store.blob_path(layer.digest())?;
    let fail = |detail: String| ExportError::Layer {
        package: name.to_string(),
        blob: blob.clone(),
        detail,
    };
    let reader = extract::decompressing_reader(std::io::BufReader::with_capacity(
        256 * 1024,
        store.open_blob(layer)?,
    ))
    .map_err(|e| fail(e.to_string()))?;
    let file = fs_err::File::create(dest).map_err(ExportError::io(dest))?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(256 * 1024, file),
        hasher: Hasher::new(algorithm),
    };
    let gzip = GzipPipe::new(hashing, PACKAGE_GZIP_LEVEL).map_err(ExportError::io(dest))?;
    let mut tar = TarWriter::new(gzip, mtime);
    let prefix = format!("var/vcap/packages/{name}/");
    let mut archive = tar::Archive::new(reader);
    let mut found_root = false;
    for entry in archive.entries().map_err(|e| fail(e.to_string()))? {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw).map_err(|_| fail("a name is not UTF-8".into()))?;
        let Some(rest) = inside(&path, &prefix) else {
            // The parents of the package dir (`var/`, `var/vcap/`, ...): not part of it.
            let parent = format!("{}/", path.trim_end_matches('/'));
            if prefix.starts_with(&parent) && kind.is_dir() {
                continue;
            }
            return Err(fail(format!("entry {path:?} is outside {prefix}")));
        };
        let name_in_tgz = format!("./{rest}");
        let mode = entry
            .header()
            .mode()
            .map_err(|e| fail(format!("{path}: {e}")))?;
        let io = |e: std::io::Error| fail(format!("{path}: {e}"));
        match kind {
            tar::EntryType::Directory => {
                found_root |= rest.is_empty();
                let dir = if rest.is_empty() || rest.ends_with('/') {
                    name_in_tgz
                } else {
                    format!("{name_in_tgz}/")
                };
                tar.dir(&dir, mode).map_err(io)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                tar.file(&name_in_tgz, mode, size, &mut entry).map_err(io)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail(format!("{path}: a link without a target")))?;
                tar.symlink(&name_in_tgz, &target, mode).map_err(io)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail(format!("{path}: a link without a target")))?;
                let target = String::from_utf8_lossy(&target).into_owned();
                let target = inside(&target, &prefix).ok_or_else(|| {
                    fail(format!(
                        "{path}: hard link to {target:?}, outside the package"
                    ))
                })?;
                tar.hardlink(&name_in_tgz, format!("./{target}").as_bytes(), mode)
                    .map_err(io)?;
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let header = entry.header();
                let device = match (header.device_major(), header.device_minor()) {
                    (Ok(Some(major)), Ok(Some(minor))) => Some((major, minor)),
                    _ => None,
                };
                tar.special(kind, &name_in_tgz, mode, device).map_err(io)?;
            }
            other => return Err(fail(format!("{path}: unexpected entry type {other:?}"))),
        }
    }
    if !found_root {
        return Err(fail(format!("the layer has no {prefix}")));
    }
    // Reading to the end is what checks the blob's digest.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| fail(e.to_string()))?;
    let hashing = tar
        .finish()
        .and_then(GzipPipe::finish)
        .map_err(ExportError::io(dest))?;
    let digest = hashing.hasher.finish();
    let mut file = hashing
        .inner
        .into_inner()
        .map_err(|e| ExportError::io(dest)(e.into_error()))?;
    file.flush().map_err(ExportError::io(dest))?;
    Ok(WrittenPackage {
        path: dest.to_path_buf(),
        digest,
    })
}

/// The part of `path` under `prefix` (`""` for the package dir itself), if it is there.
fn inside<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if path == prefix.trim_end_matches('/') {
        return Some("");
    }
    path.strip_prefix(prefix)
}

/// Passes bytes through, hashing them.
pub(super) struct HashingWriter<W: Write> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
