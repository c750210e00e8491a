//! Deterministic layers: a directory becomes a tar stream with entries in a fixed order, fixed
//! times, and owners either 0:0 or as the user namespace that wrote the tree saw them (so a
//! rootless build records what a root build does), hashed (diff_id) and compressed and hashed
//! again (blob digest) in one pass, straight into the store. The same tree gives byte-identical
//! blobs on any machine.
//!
//! Compression runs on its own thread, fed through a small bounded channel, so walking, reading
//! and tar-framing overlap with gzip/zstd on a second core.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::store::{sha256_digest, BlobWriter, OciStore};
use super::{xattr, OciError};
use crate::rootless::{IdMaps, OwnerTranslation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
            Compression::None => MediaType::ImageLayer,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?}: use gzip, zstd or none")),
        }
    }
}

/// Which owners a layer's entries record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owners {
    /// Every entry 0:0 (compiled packages: BOSH installs them as root, whoever compiled them).
    #[default]
    Root,
    /// Each entry's owner as the user namespace that wrote the tree saw it, so that a tree
    /// written rootless records what the same tree written as root does (a rootfs needs its
    /// owners). `writer` is that namespace's id map, `reader` the map of the namespace this
    /// layer is written from; both are relative to the orchestrating process, whose own
    /// namespace is the identity. Root builds are identity/identity: owners as they are.
    AsWritten { writer: IdMaps, reader: IdMaps },
}

impl Owners {
    /// Owners as the namespace with map `writer` saw them, read from this process's namespace.
    pub fn as_written_by(writer: IdMaps) -> Owners {
        Owners::AsWritten {
            writer,
            reader: IdMaps::identity(),
        }
    }

    /// The same owners, for a tree read from a namespace with map `reader` instead.
    pub fn read_from(self, reader: IdMaps) -> Owners {
        match self {
            Owners::Root => Owners::Root,
            Owners::AsWritten { writer, .. } => Owners::AsWritten { writer, reader },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Put the tree under this path inside the layer (e.g. `var/vcap/packages/<name>`).
    pub prefix: Option<String>,
    /// Every entry's mtime: `SOURCE_DATE_EPOCH`, default 0.
    pub mtime: u64,
    /// Keep extended attributes as PAX `SCHILY.xattr.*` records (overlay's own are never kept).
    pub keep_xattrs: bool,
    /// Which owners entries record.
    pub owners: Owners,
    /// The tree is an overlayfs upper dir: 0/0 character devices become `.wh.NAME` and opaque
    /// directories get `.wh..wh..opq`.
    pub overlay_upper: bool,
    pub gzip_level: u32,
    pub zstd_level: i32,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            prefix: None,
            mtime: crate::clock::source_date_epoch(),
            keep_xattrs: false,
            owners: Owners::Root,
            overlay_upper: false,
            gzip_level: 6,
            zstd_level: 3,
        }
    }
}

/// A layer blob in the store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Layer {
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Writes `dir` as a layer into `store`.
pub fn write_layer(
    store: &OciStore,
    dir: &Path,
    options: &LayerOptions,
) -> Result<Layer, OciError> {
    let meta = fs_err::symlink_metadata(dir).map_err(OciError::io(dir))?;
    if !meta.is_dir() {
        return Err(OciError::invalid(dir, "not a directory"));
    }
    let blob = store.blob_writer()?;
    let blobs_dir = store.blobs_dir();
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    let compression = options.compression;
    let (gzip_level, zstd_level) = (options.gzip_level, options.zstd_level);
    let compressor = std::thread::Builder::new()
        .name("layer-compress".into())
        .spawn(move || compress(rx, blob, compression, gzip_level, zstd_level))
        .map_err(OciError::io(&blobs_dir))?;

    let hashing = HashingSender::new(tx);
    let mut walker = Walker {
        builder: tar::Builder::new(std::io::BufWriter::with_capacity(CHUNK, hashing)),
        options,
        owners: match &options.owners {
            Owners::Root => None,
            Owners::AsWritten { writer, reader } => {
                Some(OwnerTranslation::new(reader.clone(), writer.clone()))
            }
        },
        hardlinks: HashMap::new(),
    };
    walker.builder.mode(tar::HeaderMode::Deterministic);
    let walked = walker.write_tree(dir);
    let finished = walked.and_then(|()| {
        let buffered = walker.builder.into_inner().map_err(OciError::io(dir))?;
        buffered
            .into_inner()
            .map_err(|e| OciError::io(dir)(e.into_error()))
    });
    // Dropping the sender on error ends the compressor, which then drops its temp blob.
    let (diff_hex, uncompressed_size) = match finished {
        Ok(hashing) => hashing.finish(),
        Err(e) => {
            let _ = compressor.join();
            return Err(e);
        }
    };
    let (digest, size) = compressor
        .join()
        .map_err(|_| OciError::invalid(&blobs_dir, "layer compression thread panicked"))??;
    Ok(Layer {
        descriptor: Descriptor::new(options.compression.media_type(), size, digest),
        diff_id: sha256_digest(&diff_hex),
        uncompressed_size,
    })
}

const CHUNK: usize = 256 * 1024;

fn compress(
    rx: mpsc::Receiver<Vec<u8>>,
    blob: BlobWriter,
    compression: Compression,
    gzip_level: u32,
    zstd_level: i32,
) -> Result<(Digest, u64), OciError> {
    let io = |e: std::io::Error| OciError::Io {
        path: PathBuf::from("<layer blob>"),
        source: e,
    };
    let blob = match compression {
        Compression::Gzip => super::pgzip::compress(rx, blob, gzip_level).map_err(io)?,
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(blob, zstd_level).map_err(io)?;
            for chunk in rx {
                enc.write_all(&chunk).map_err(io)?;
            }
            enc.finish().map_err(io)?
        }
        Compression::None => {
            let mut blob = blob;
            for chunk in rx {
                blob.write_all(&chunk).map_err(io)?;
            }
            blob
        }
    };
    blob.finish()
}

/// Hashes the uncompressed stream and hands it to the compressor thread in chunks.
struct HashingSender {
    tx: mpsc::SyncSender<Vec<u8>>,
    hasher: sha2::Sha256,
    size: u64,
}

impl HashingSender {
    fn new(tx: mpsc::SyncSender<Vec<u8>>) -> Self {
        HashingSender {
            tx,
            hasher: sha2::Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.size)
    }
}

impl Write for HashingSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        self.tx.send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "layer compressor stopped")
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Walker<'a, W: Write> {
    builder: tar::Builder<W>,
    options: &'a LayerOptions,
    /// `None`: every entry is 0:0.
    owners: Option<OwnerTranslation>,
    /// (dev, inode) of multiply-linked files already written -> their path in the layer.
    hardlinks: HashMap<(u64, u64), String>,
}

impl<W: Write> Walker<'_, W> {
    fn write_tree(&mut self, dir: &Path) -> Result<(), OciError> {
        let prefix = self
            .options
            .prefix
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty());
        let base = match prefix {
            Some(prefix) => {
                let parts: Vec<&str> = prefix.split('/').collect();
                for i in 1..parts.len() {
                    self.dir_entry(&parts[..i].join("/"), 0o755, None, dir)?;
                }
                let meta = fs_err::symlink_metadata(dir).map_err(OciError::io(dir))?;
                self.dir_entry(prefix, meta.mode(), Some(&meta), dir)?;
                format!("{prefix}/")
            }
            None => String::new(),
        };
        self.write_children(dir, &base)
    }

    fn write_children(&mut self, dir: &Path, base: &str) -> Result<(), OciError> {
        let mut names: Vec<std::ffi::OsString> = fs_err::read_dir(dir)
            .map_err(OciError::io(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(OciError::io(dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        if self.options.overlay_upper && xattr::is_overlay_opaque(dir).map_err(OciError::io(dir))? {
            self.empty_file(&format!("{base}.wh..wh..opq"))?;
        }
        for name in names {
            let path = dir.join(&name);
            let name = name
                .to_str()
                .ok_or_else(|| OciError::invalid(&path, "file name is not UTF-8"))?;
            let archive_path = format!("{base}{name}");
            let meta = fs_err::symlink_metadata(&path).map_err(OciError::io(&path))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.dir_entry(&archive_path, meta.mode(), Some(&meta), &path)?;
                self.write_children(&path, &format!("{archive_path}/"))?;
            } else if ft.is_symlink() {
                let target = fs_err::read_link(&path).map_err(OciError::io(&path))?;
                let mut header =
                    self.header(tar::EntryType::Symlink, meta.mode(), Some(&meta), &path)?;
                self.xattrs(&path)?;
                self.builder
                    .append_link(&mut header, &archive_path, &target)
                    .map_err(OciError::io(&path))?;
            } else if ft.is_char_device() && meta.rdev() == 0 && self.options.overlay_upper {
                self.empty_file(&format!("{base}.wh.{name}"))?;
            } else if ft.is_file() {
                self.file_entry(&path, &archive_path, &meta)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut header = self.header(kind, meta.mode(), Some(&meta), &path)?;
                let rdev = meta.rdev();
                header
                    .set_device_major(libc::major(rdev))
                    .map_err(OciError::io(&path))?;
                header
                    .set_device_minor(libc::minor(rdev))
                    .map_err(OciError::io(&path))?;
                self.builder
                    .append_data(&mut header, &archive_path, std::io::empty())
                    .map_err(OciError::io(&path))?;
            }
            // Sockets cannot be archived meaningfully; like tar, leave them out.
        }
        Ok(())
    }

    fn file_entry(
        &mut self,
        path: &Path,
        archive_path: &str,
        meta: &std::fs::Metadata,
    ) -> Result<(), OciError> {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.hardlinks.get(&key) {
                let first = first.clone();
                let mut header =
                    self.header(tar::EntryType::Link, meta.mode(), Some(meta), path)?;
                self.builder
                    .append_link(&mut header, archive_path, &first)
                    .map_err(OciError::io(path))?;
                return Ok(());
            }
            self.hardlinks.insert(key, archive_path.to_string());
        }
        let mut header = self.header(tar::EntryType::Regular, meta.mode(), Some(meta), path)?;
        header.set_size(meta.len());
        self.xattrs(path)?;
        let file = fs_err::File::open(path).map_err(OciError::io(path))?;
        // A file that changes size while we read it would corrupt the stream: read exactly len.
        let reader = std::io::Read::take(file, meta.len());
        self.builder
            .append_data(
                &mut header,
                archive_path,
                FixedLength::new(reader, meta.len(), path),
            )
            .map_err(OciError::io(path))
    }

    fn dir_entry(
        &mut self,
        archive_path: &str,
        mode: u32,
        meta: Option<&std::fs::Metadata>,
        path: &Path,
    ) -> Result<(), OciError> {
        let mut header = self.header(tar::EntryType::Directory, mode, meta, path)?;
        self.builder
            .append_data(&mut header, format!("{archive_path}/"), std::io::empty())
            .map_err(OciError::io(archive_path))
    }

    fn empty_file(&mut self, archive_path: &str) -> Result<(), OciError> {
        let mut header = self.header(
            tar::EntryType::Regular,
            0o644,
            None,
            Path::new(archive_path),
        )?;
        header.set_size(0);
        self.builder
            .append_data(&mut header, archive_path, std::io::empty())
            .map_err(OciError::io(archive_path))
    }

    /// `path` (on disk) is named in errors.
    fn header(
        &self,
        kind: tar::EntryType,
        mode: u32,
        meta: Option<&std::fs::Metadata>,
        path: &Path,
    ) -> Result<tar::Header, OciError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode & 0o7777);
        header.set_mtime(self.options.mtime);
        let (uid, gid) = match (meta, &self.owners) {
            (Some(m), Some(owners)) => owners
                .owner(m.uid(), m.gid())
                .map_err(|unmapped| OciError::invalid(path, unmapped))?,
            _ => (0, 0),
        };
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_size(0);
        Ok(header)
    }

    fn xattrs(&mut self, path: &Path) -> Result<(), OciError> {
        if !self.options.keep_xattrs {
            return Ok(());
        }
        let attrs: Vec<(String, Vec<u8>)> = xattr::list(path)
            .map_err(OciError::io(path))?
            .into_iter()
            .filter(|(name, _)| {
                !name.starts_with("trusted.overlay.") && !name.starts_with("user.overlay.")
            })
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value))
            .collect();
        if attrs.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(attrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(OciError::io(path))
    }
}

/// Yields exactly `len` bytes: a file that shrank while being read is an error rather than a
/// silently shifted tar stream.
struct FixedLength<'a, R> {
    inner: R,
    remaining: u64,
    path: &'a Path,
}

impl<'a, R> FixedLength<'a, R> {
    fn new(inner: R, len: u64, path: &'a Path) -> Self {
        FixedLength {
            inner,
            remaining: len,
            path,
        }
    }
}

impl<R: std::io::Read> std::io::Read for FixedLength<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was being archived", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
