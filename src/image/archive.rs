//! Images out of the store into files: another OCI layout, an `oci-archive` (a tar of a layout)
//! or a `docker save` archive (`manifest.json`, configs, uncompressed `layer.tar`s, which
//! `docker load` and `podman load` read). Archives are written to a temp file next to the
//! destination and renamed when complete, with entries in a fixed order, owned by 0:0, dated
//! `SOURCE_DATE_EPOCH`: a failure leaves no half-written archive, and the same images give the
//! same bytes.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use sha2::Digest as _;

use super::ImageError;
use crate::cancel::CancelToken;
use crate::oci::gc::walk_references;
use crate::oci::image::{read_config, read_manifest};
use crate::oci::store::{canonical_json, sha256_hex, REF_NAME};
use crate::oci::{OciError, OciStore};

/// Copies `images` (name, manifest) with every blob they need into the layout at `dir`
/// (created if needed), and names them there. Blobs are hard-linked when the layout is on the
/// same file system (they are immutable), copied otherwise.
pub fn write_layout(
    store: &OciStore,
    images: &[(String, Descriptor)],
    dir: &Path,
    cancel: &CancelToken,
) -> Result<(), ImageError> {
    if dir.is_dir()
        && !dir.join("oci-layout").exists()
        && fs_err::read_dir(dir)
            .map_err(OciError::io(dir))?
            .next()
            .is_some()
    {
        return Err(ImageError::Invalid {
            what: dir.display().to_string(),
            message: "exists and is not an OCI image layout (no oci-layout file): choose an empty or new directory".into(),
        });
    }
    let layout = OciStore::open_or_create(dir)?;
    for (_, manifest) in images {
        for blob in blobs_of(store, manifest)? {
            if cancel.is_cancelled() {
                return Err(ImageError::Interrupted);
            }
            copy_blob(store, &layout, &blob)?;
        }
    }
    let named: Vec<(String, Descriptor)> = images
        .iter()
        .map(|(name, d)| (name.clone(), plain(d)))
        .collect();
    layout.set_refs(&named)?;
    Ok(())
}

/// A tar of an OCI layout holding `images`.
pub fn write_oci_archive(
    store: &OciStore,
    images: &[(String, Descriptor)],
    file: &Path,
    mtime: u64,
    cancel: &CancelToken,
) -> Result<(), ImageError> {
    let mut blobs: Vec<Descriptor> = Vec::new();
    for (_, manifest) in images {
        for blob in blobs_of(store, manifest)? {
            if !blobs.iter().any(|b| b.digest() == blob.digest()) {
                blobs.push(blob);
            }
        }
    }
    blobs.sort_by(|a, b| a.digest().as_ref().cmp(b.digest().as_ref()));
    let mut named: Vec<Descriptor> = images
        .iter()
        .map(|(name, d)| {
            let mut d = plain(d);
            d.set_annotations(Some([(REF_NAME.to_string(), name.clone())].into()));
            d
        })
        .collect();
    named.sort_by(|a, b| ref_of(a).cmp(ref_of(b)));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(named)
        .build()
        .map_err(|e| ImageError::Invalid {
            what: file.display().to_string(),
            message: e.to_string(),
        })?;
    let mut tar = ArchiveWriter::create(file, mtime, cancel)?;
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.bytes("index.json", &canonical_json(&index)?)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    for blob in &blobs {
        let path = store.blob_path(blob.digest())?;
        let name = format!("blobs/sha256/{}", sha256_hex(blob.digest())?);
        let reader = store.open_blob(blob)?;
        tar.stream(&name, blob.size(), reader, &path)?;
    }
    tar.finish()
}

#[derive(serde::Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A `docker save` archive of `images` (docker reference `NAME:TAG`, manifest). Layers are
/// stored uncompressed as `docker save` writes them, each once; each is checked against its
/// config's `diff_id` before it is written.
pub fn write_docker_archive(
    store: &OciStore,
    images: &[(String, Descriptor)],
    file: &Path,
    mtime: u64,
    cancel: &CancelToken,
) -> Result<(), ImageError> {
    let mut entries = Vec::new();
    let mut configs: Vec<(String, Descriptor)> = Vec::new();
    let mut layers: Vec<(String, Descriptor)> = Vec::new();
    for (name, descriptor) in images {
        let manifest = read_manifest(store, descriptor)?;
        let config = read_config(store, &manifest)?;
        let config_name = format!("{}.json", sha256_hex(manifest.config().digest())?);
        if !configs.iter().any(|(n, _)| n == &config_name) {
            configs.push((config_name.clone(), manifest.config().clone()));
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::Invalid {
                what: name.clone(),
                message: "its config and manifest disagree on the number of layers".into(),
            });
        }
        let mut layer_names = Vec::new();
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
            let layer_name = format!("{hex}/layer.tar");
            if !layers.iter().any(|(n, _)| n == &layer_name) {
                layers.push((layer_name.clone(), layer.clone()));
            }
            layer_names.push(layer_name);
        }
        entries.push(DockerManifestEntry {
            config: config_name,
            repo_tags: vec![name.clone()],
            layers: layer_names,
        });
    }
    let mut tar = ArchiveWriter::create(file, mtime, cancel)?;
    for (name, descriptor) in &configs {
        let path = store.blob_path(descriptor.digest())?;
        tar.stream(name, descriptor.size(), store.open_blob(descriptor)?, &path)?;
    }
    for (name, layer) in &layers {
        let path = store.blob_path(layer.digest())?;
        let expected = name.trim_end_matches("/layer.tar");
        tar.dir(expected)?;
        // One pass: decompressed into the archive, its size patched into the header after,
        // its digest checked against the config's diff_id.
        let found = tar.stream_unsized(name, uncompressed(store, layer, &path)?, &path)?;
        if found != expected {
            return Err(ImageError::Oci(OciError::DigestMismatch {
                path,
                expected: format!("uncompressed sha256:{expected}"),
                found: format!("sha256:{found}"),
            }));
        }
    }
    let manifest = serde_json::to_vec(&entries).map_err(|e| ImageError::Invalid {
        what: "manifest.json".into(),
        message: e.to_string(),
    })?;
    tar.bytes("manifest.json", &manifest)?;
    tar.finish()
}

fn uncompressed(
    store: &OciStore,
    layer: &Descriptor,
    path: &Path,
) -> Result<Box<dyn Read + Send>, ImageError> {
    let blob = std::io::BufReader::with_capacity(256 * 1024, store.open_blob(layer)?);
    Ok(crate::extract::decompressing_reader(blob).map_err(OciError::io(path))?)
}

/// Every blob an image needs: its manifest, config and layers (and children of an index).
fn blobs_of(store: &OciStore, manifest: &Descriptor) -> Result<Vec<Descriptor>, ImageError> {
    let mut out = Vec::new();
    walk_references(store, manifest, &mut |d| {
        out.push(plain(d));
        Ok(())
    })?;
    Ok(out)
}

fn copy_blob(from: &OciStore, to: &OciStore, blob: &Descriptor) -> Result<(), ImageError> {
    if to.has_blob(blob.digest()) {
        return Ok(());
    }
    let source = from.blob_path(blob.digest())?;
    let target = to.blob_path(blob.digest())?;
    if fs_err::hard_link(&source, &target).is_ok() {
        return Ok(());
    }
    let mut reader = from.open_blob(blob)?;
    let mut writer = to.blob_writer()?;
    std::io::copy(&mut reader, &mut writer).map_err(|e| OciError::from_read(&source, e))?;
    writer.finish()?;
    Ok(())
}

/// A descriptor without the store's own annotations (ref names, kinds).
fn plain(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    d.set_annotations(None);
    d
}

fn ref_of(d: &Descriptor) -> &str {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
        .unwrap_or_default()
}

/// A deterministic tar written to a temp file beside its destination, renamed into place by
/// `finish` (and removed if dropped before).
struct ArchiveWriter {
    file: PathBuf,
    mtime: u64,
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    /// Bytes written so far (the offset of the next header).
    offset: u64,
    dirs: BTreeSet<String>,
    cancel: CancelToken,
}

impl ArchiveWriter {
    fn create(file: &Path, mtime: u64, cancel: &CancelToken) -> Result<ArchiveWriter, ImageError> {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if file.is_dir() {
            return Err(ImageError::Invalid {
                what: file.display().to_string(),
                message: "is a directory; an archive destination is a file".into(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".fissile-oci-archive-")
            .tempfile_in(&dir)
            .map_err(|source| ImageError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(ArchiveWriter {
            file: file.to_path_buf(),
            mtime,
            out: std::io::BufWriter::with_capacity(1 << 20, tmp),
            offset: 0,
            dirs: BTreeSet::new(),
            cancel: cancel.clone(),
        })
    }

    fn io(&self, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: self.file.clone(),
            source,
        }
    }

    fn header(
        &self,
        name: &str,
        size: u64,
        mode: u32,
        kind: tar::EntryType,
    ) -> Result<tar::Header, ImageError> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(|e| self.io(e))?;
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        header.set_cksum();
        Ok(header)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(bytes).map_err(|e| self.io(e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Zeros up to the next 512-byte block.
    fn pad(&mut self) -> Result<(), ImageError> {
        let rest = (512 - self.offset % 512) % 512;
        self.put(&vec![0u8; rest as usize])
    }

    fn dir(&mut self, name: &str) -> Result<(), ImageError> {
        if !self.dirs.insert(name.to_string()) {
            return Ok(());
        }
        let header = self.header(&format!("{name}/"), 0, 0o755, tar::EntryType::Directory)?;
        self.put(header.as_bytes())
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ImageError> {
        let header = self.header(name, data.len() as u64, 0o644, tar::EntryType::Regular)?;
        self.put(header.as_bytes())?;
        self.put(data)?;
        self.pad()
    }

    /// Copies `reader` into the archive; returns the bytes and their sha256. A failing reader
    /// (a corrupt blob) fails the archive.
    fn copy(&mut self, reader: &mut dyn Read, source: &Path) -> Result<(u64, String), ImageError> {
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                return Err(ImageError::Interrupted);
            }
            let n = reader
                .read(&mut buf)
                .map_err(|e| ImageError::Oci(OciError::from_read(source, e)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            self.put(&buf[..n])?;
            size += n as u64;
        }
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// An entry of exactly `size` bytes from `reader`, read to its end (so that a verifying
    /// reader checks its digest).
    fn stream(
        &mut self,
        name: &str,
        size: u64,
        mut reader: impl Read,
        source: &Path,
    ) -> Result<(), ImageError> {
        let header = self.header(name, size, 0o644, tar::EntryType::Regular)?;
        self.put(header.as_bytes())?;
        let (written, _) = self.copy(&mut reader, source)?;
        if written != size {
            return Err(ImageError::Oci(OciError::invalid(
                source,
                format!("{written} bytes, not the {size} expected"),
            )));
        }
        self.pad()
    }

    /// An entry whose size is known only once `reader` is read: its header is written again,
    /// with the size, once the data is in. Returns the data's sha256.
    fn stream_unsized(
        &mut self,
        name: &str,
        mut reader: impl Read,
        source: &Path,
    ) -> Result<String, ImageError> {
        let at = self.offset;
        let placeholder = self.header(name, 0, 0o644, tar::EntryType::Regular)?;
        self.put(placeholder.as_bytes())?;
        let (size, digest) = self.copy(&mut reader, source)?;
        self.pad()?;
        let header = self.header(name, size, 0o644, tar::EntryType::Regular)?;
        self.out.flush().map_err(|e| self.io(e))?;
        let file = self.out.get_mut().as_file_mut();
        let patched = file
            .seek(SeekFrom::Start(at))
            .and_then(|_| file.write_all(header.as_bytes()))
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()));
        patched.map_err(|e| self.io(e))?;
        Ok(digest)
    }

    fn finish(mut self) -> Result<(), ImageError> {
        // The end of a tar: two zero blocks.
        self.put(&[0u8; 1024])?;
        let file = self.file.clone();
        let io = |source| ImageError::Io {
            path: file.clone(),
            source,
        };
        let tmp = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        // Archives are for others to read: the usual mode, not the temp file's 0600.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&file).map_err(|e| io(e.error))?;
        Ok(())
    }
}
