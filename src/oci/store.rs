//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`) as a durable,
//! crash-safe store: blobs are streamed into a temp file while hashed, fsynced and renamed to
//! their digest; `index.json` is rewritten atomically under a lock. A crash at any instant leaves
//! only complete blobs, an old or new `index.json`, and stray temp files that `gc` removes.

use fs_err::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageIndexBuilder, MediaType};
use sha2::Digest as _;

use super::OciError;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

#[derive(Clone, Debug)]
pub struct OciStore {
    root: PathBuf,
}

/// A named reference in `index.json`.
#[derive(Clone, Debug)]
pub struct RefEntry {
    pub name: String,
    pub descriptor: Descriptor,
}

impl OciStore {
    /// Opens the layout at `root`, creating an empty one if there is none.
    pub fn open_or_create(root: &Path) -> Result<OciStore, OciError> {
        let store = OciStore {
            root: root.to_path_buf(),
        };
        let blobs = store.blobs_dir();
        fs_err::create_dir_all(&blobs).map_err(OciError::io(&blobs))?;
        if !root.join("oci-layout").exists() {
            write_atomic(&root.join("oci-layout"), LAYOUT.as_bytes())?;
        }
        if !root.join("index.json").exists() {
            let _guard = store.index_lock()?;
            if !root.join("index.json").exists() {
                store.write_index(&empty_index())?;
            }
        }
        Ok(store)
    }

    /// Opens an existing layout (written by us or any OCI tool) without changing it.
    pub fn open(root: &Path) -> Result<OciStore, OciError> {
        let layout = root.join("oci-layout");
        let text = fs_err::read_to_string(&layout).map_err(OciError::io(&layout))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| OciError::invalid(&layout, e))?;
        if value
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(OciError::invalid(&layout, "no imageLayoutVersion"));
        }
        Ok(OciStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf, OciError> {
        let hex = sha256_hex(digest)?;
        Ok(self.blobs_dir().join(hex))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// A writer for a new blob; [`BlobWriter::finish`] makes it durable under its digest.
    pub fn blob_writer(&self) -> Result<BlobWriter, OciError> {
        let dir = self.blobs_dir();
        let file = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(OciError::io(&dir))?;
        Ok(BlobWriter {
            dir,
            file: std::io::BufWriter::with_capacity(256 * 1024, file),
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }

    /// Stores `bytes` (a manifest, config or index) and describes it.
    pub fn put_bytes(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, OciError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(OciError::io(&self.blobs_dir()))?;
        let (digest, size) = w.finish()?;
        Ok(Descriptor::new(media_type, size, digest))
    }

    /// Stores a value as canonical JSON (keys sorted, no whitespace), so equal values give equal
    /// digests whatever the map types inside iterate like.
    pub fn put_json(
        &self,
        media_type: MediaType,
        value: &impl serde::Serialize,
    ) -> Result<Descriptor, OciError> {
        self.put_bytes(media_type, &canonical_json(value)?)
    }

    /// Opens a blob for reading; the reader fails at its end if the content does not match the
    /// descriptor's digest or size, so a corrupt blob is never silently served.
    pub fn open_blob(&self, descriptor: &Descriptor) -> Result<VerifyingReader<File>, OciError> {
        let path = self.blob_path(descriptor.digest())?;
        let file = File::open(&path).map_err(OciError::io(&path))?;
        Ok(VerifyingReader {
            inner: file,
            path,
            expected_hex: sha256_hex(descriptor.digest())?.to_string(),
            expected_size: descriptor.size(),
            hasher: sha2::Sha256::new(),
            size: 0,
            done: false,
        })
    }

    /// Reads a small blob whole, verified; refuses blobs over `max` bytes.
    pub fn read_blob(&self, descriptor: &Descriptor, max: u64) -> Result<Vec<u8>, OciError> {
        let path = self.blob_path(descriptor.digest())?;
        if descriptor.size() > max {
            return Err(OciError::invalid(
                &path,
                format!(
                    "blob is {} bytes, more than the {max} expected",
                    descriptor.size()
                ),
            ));
        }
        let mut out = Vec::with_capacity(descriptor.size() as usize);
        self.open_blob(descriptor)?
            .read_to_end(&mut out)
            .map_err(|e| OciError::from_read(&path, e))?;
        Ok(out)
    }

    /// Hashes a blob file whole and compares it with its name.
    pub fn verify_blob_file(&self, path: &Path) -> Result<u64, OciError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let mut file = File::open(path).map_err(OciError::io(path))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(OciError::io(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let found = hex::encode(hasher.finalize());
        if found != name {
            return Err(OciError::DigestMismatch {
                path: path.to_path_buf(),
                expected: format!("sha256:{name}"),
                found: format!("sha256:{found}"),
            });
        }
        Ok(size)
    }

    pub fn index(&self) -> Result<ImageIndex, OciError> {
        let path = self.root.join("index.json");
        let bytes = fs_err::read(&path).map_err(OciError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| OciError::invalid(&path, e))
    }

    pub fn refs(&self) -> Result<Vec<RefEntry>, OciError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(REF_NAME)?.clone();
                Some(RefEntry {
                    name,
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, OciError> {
        Ok(self
            .refs()?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.descriptor))
    }

    /// Points `name` at `descriptor` (replacing what it pointed at), atomically.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), OciError> {
        let mut d = descriptor.clone();
        let mut annotations = d.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_string(), name.to_string());
        d.set_annotations(Some(annotations));
        self.update_index(|manifests| {
            manifests.retain(|m| ref_name(m) != Some(name));
            manifests.push(d);
        })
    }

    /// Points several refs at once: one rewrite of `index.json` for the whole batch.
    pub fn set_refs(&self, entries: &[(String, Descriptor)]) -> Result<(), OciError> {
        if entries.is_empty() {
            return Ok(());
        }
        let named: Vec<Descriptor> = entries
            .iter()
            .map(|(name, descriptor)| {
                let mut d = descriptor.clone();
                let mut annotations = d.annotations().clone().unwrap_or_default();
                annotations.insert(REF_NAME.to_string(), name.clone());
                d.set_annotations(Some(annotations));
                d
            })
            .collect();
        self.update_index(|manifests| {
            manifests.retain(|m| {
                !entries
                    .iter()
                    .any(|(name, _)| ref_name(m) == Some(name.as_str()))
            });
            manifests.extend(named);
        })
    }

    /// All refs by name, read once (for callers that look up many).
    pub fn ref_map(&self) -> Result<std::collections::HashMap<String, Descriptor>, OciError> {
        Ok(self
            .refs()?
            .into_iter()
            .map(|r| (r.name, r.descriptor))
            .collect())
    }

    /// Removes `name`; returns whether it existed.
    pub fn remove_ref(&self, name: &str) -> Result<bool, OciError> {
        let mut found = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| ref_name(m) != Some(name));
            found = manifests.len() != before;
        })?;
        Ok(found)
    }

    /// Removes every ref in `names` in one rewrite of `index.json`; returns how many existed.
    pub fn remove_refs(&self, names: &[String]) -> Result<usize, OciError> {
        let mut removed = 0;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| !ref_name(m).is_some_and(|n| names.iter().any(|x| x == n)));
            removed = before - manifests.len();
        })?;
        Ok(removed)
    }

    /// Read-modify-write of index.json under an flock, so concurrent writers (threads or
    /// processes) never lose each other's refs. Entries are kept sorted by ref name.
    fn update_index(&self, change: impl FnOnce(&mut Vec<Descriptor>)) -> Result<(), OciError> {
        let _guard = self.index_lock()?;
        let index = self.index()?;
        let mut manifests = index.manifests().clone();
        change(&mut manifests);
        manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
        let mut index = index;
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), OciError> {
        write_atomic(&self.root.join("index.json"), &canonical_json(index)?)
    }

    fn index_lock(&self) -> Result<File, OciError> {
        let path = self.root.join(".index.lock");
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(OciError::io(&path))?;
        crate::workdir::flock(&file, true).map_err(OciError::io(&path))?;
        Ok(file)
    }
}

pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an index with all required fields")
}

/// The hex part of a sha256 digest; other algorithms are refused (we only write sha256, and a
/// digest string is a file name here, so it must be plain hex).
pub fn sha256_hex(digest: &Digest) -> Result<&str, OciError> {
    let s = digest.as_ref();
    match s.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(hex)
        }
        _ => Err(OciError::UnsupportedDigest {
            digest: s.to_string(),
        }),
    }
}

pub fn sha256_digest(hex: &str) -> Digest {
    Digest::from_str(&format!("sha256:{hex}")).expect("64 lowercase hex digits form a valid digest")
}

pub fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>, OciError> {
    // serde_json::Value keeps object keys in a BTreeMap: serialising through it sorts them.
    let value =
        serde_json::to_value(value).map_err(|e| OciError::invalid(Path::new("<json>"), e))?;
    serde_json::to_vec(&value).map_err(|e| OciError::invalid(Path::new("<json>"), e))
}

/// Writes `path` so that readers see the old or the new content, never a mix, even after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(OciError::io(dir))?;
    tmp.write_all(bytes).map_err(OciError::io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(OciError::io(tmp.path()))?;
    tmp.persist(path).map_err(|e| OciError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), OciError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(OciError::io(dir))
}

/// Streams a new blob into a temp file in the blobs dir, hashing as it goes.
pub struct BlobWriter {
    dir: PathBuf,
    file: std::io::BufWriter<tempfile::NamedTempFile>,
    hasher: sha2::Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Makes the blob durable at `blobs/sha256/<digest>`; an existing blob with that digest is
    /// kept (same content by definition) and the temp file dropped.
    pub fn finish(self) -> Result<(Digest, u64), OciError> {
        let hex = hex::encode(self.hasher.finalize());
        let dest = self.dir.join(&hex);
        let file = self.file.into_inner().map_err(|e| OciError::Io {
            path: self.dir.clone(),
            source: e.into_error(),
        })?;
        if !dest.exists() {
            file.as_file()
                .sync_all()
                .map_err(OciError::io(file.path()))?;
            file.persist(&dest).map_err(|e| OciError::Io {
                path: dest.clone(),
                source: e.error,
            })?;
            sync_dir(&self.dir)?;
        }
        Ok((sha256_digest(&hex), self.size))
    }
}

/// Passes a blob's bytes through, and turns its end into an error if they were not the bytes
/// the descriptor promised.
pub struct VerifyingReader<R> {
    inner: R,
    path: PathBuf,
    expected_hex: String,
    expected_size: u64,
    hasher: sha2::Sha256,
    size: u64,
    done: bool,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.size > self.expected_size {
            return Err(self.mismatch(format!(
                "blob is longer than its descriptor's {} bytes",
                self.expected_size
            )));
        }
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let found = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if self.size != self.expected_size || found != self.expected_hex {
                return Err(self.mismatch(format!(
                    "blob content is sha256:{found} ({} bytes), not sha256:{} ({} bytes)",
                    self.size, self.expected_hex, self.expected_size
                )));
            }
        }
        Ok(n)
    }
}

impl<R> VerifyingReader<R> {
    fn mismatch(&self, what: String) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", self.path.display()),
        )
    }
}

/// Annotations as a sorted map, for stable output.
pub fn annotations(d: &Descriptor) -> std::collections::BTreeMap<String, String> {
    d.annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}
