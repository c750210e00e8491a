//! Bringing images in from outside, for air-gapped hosts: an OCI layout directory, an
//! `oci-archive` (a tar of one), or a `docker save` archive. Every blob is verified on the way in
//! and copied into the store; the image is then named with a ref.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifestBuilder, MediaType};
use sha2::Digest as _;

use super::image::{host_arch, MAX_JSON_BLOB};
use super::store::{ref_name, OciStore};
use super::OciError;
use crate::extract::{self, ExtractLimits};

/// Copies the image `reference` (or the only image) of the layout at `source` into `store` under
/// `name`; returns the manifest descriptor.
pub fn import_oci_layout(
    store: &OciStore,
    source: &Path,
    reference: Option<&str>,
    name: &str,
) -> Result<Descriptor, OciError> {
    let src = OciStore::open(source)?;
    let index = src.index()?;
    let candidates: Vec<&Descriptor> = match reference {
        Some(r) => index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) == Some(r))
            .collect(),
        None => index.manifests().iter().collect(),
    };
    let chosen = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let known: Vec<&str> = index.manifests().iter().filter_map(ref_name).collect();
            return Err(OciError::invalid(
                source,
                format!(
                    "no image {:?} in this layout; refs: {}",
                    reference.unwrap_or(""),
                    known.join(", ")
                ),
            ));
        }
        _ => {
            return Err(OciError::invalid(
                source,
                "several images in this layout: name one with oci:PATH:REF",
            ))
        }
    };
    let manifest = pick_platform(&src, &chosen, source)?;
    copy_image(&src, store, &manifest)?;
    let mut named = manifest.clone();
    named.set_annotations(None);
    store.set_ref(name, &named)?;
    Ok(named)
}

/// An index (multi-platform image) resolves to its manifest for this host's architecture.
fn pick_platform(src: &OciStore, d: &Descriptor, source: &Path) -> Result<Descriptor, OciError> {
    if *d.media_type() != MediaType::ImageIndex {
        return Ok(d.clone());
    }
    let bytes = src.read_blob(d, MAX_JSON_BLOB)?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| OciError::invalid(source, e))?;
    let arch = host_arch();
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_none_or(|p| *p.architecture() == arch)
        })
        .cloned()
        .ok_or_else(|| {
            OciError::invalid(
                source,
                format!("the image index has no manifest for {arch}"),
            )
        })
}

fn copy_image(src: &OciStore, dst: &OciStore, manifest: &Descriptor) -> Result<(), OciError> {
    copy_blob(src, dst, manifest)?;
    let m = super::image::read_manifest(src, manifest)?;
    copy_blob(src, dst, m.config())?;
    for layer in m.layers() {
        copy_blob(src, dst, layer)?;
    }
    Ok(())
}

fn copy_blob(src: &OciStore, dst: &OciStore, d: &Descriptor) -> Result<(), OciError> {
    if dst.has_blob(d.digest()) {
        return Ok(());
    }
    let path = src.blob_path(d.digest())?;
    let mut reader = src.open_blob(d)?;
    let mut writer = dst.blob_writer()?;
    std::io::copy(&mut reader, &mut writer).map_err(|e| OciError::from_read(&path, e))?;
    let (digest, _) = writer.finish()?;
    if digest != *d.digest() {
        return Err(OciError::DigestMismatch {
            path,
            expected: d.digest().to_string(),
            found: digest.to_string(),
        });
    }
    Ok(())
}

/// An `oci-archive:` tarball: unpacked safely next to the store, then imported as a layout.
pub fn import_oci_archive(
    store: &OciStore,
    archive: &Path,
    reference: Option<&str>,
    name: &str,
) -> Result<Descriptor, OciError> {
    let tmp = unpack_next_to(store, archive)?;
    import_oci_layout(store, &tmp.path().join("layout"), reference, name)
}

fn unpack_next_to(store: &OciStore, archive: &Path) -> Result<tempfile::TempDir, OciError> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-import-")
        .tempdir_in(store.root())
        .map_err(OciError::io(store.root()))?;
    extract::extract_archive(
        archive,
        &tmp.path().join("layout"),
        &ExtractLimits::default(),
    )?;
    Ok(tmp)
}

#[derive(serde::Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A `docker save` archive (`manifest.json` + config + layer tars). Layers are stored as they
/// are (plain, gzip or zstd, by magic bytes); their uncompressed digests must match the config's
/// `rootfs.diff_ids`. `name` defaults to the archive's first RepoTag.
pub fn import_docker_archive(
    store: &OciStore,
    archive: &Path,
    name: Option<&str>,
) -> Result<(String, Descriptor), OciError> {
    let tmp = unpack_next_to(store, archive)?;
    let root = tmp.path().join("layout");
    let manifest_path = root.join("manifest.json");
    let bytes = fs_err::read(&manifest_path)
        .map_err(|_| OciError::invalid(archive, "no manifest.json: not a docker save archive"))?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| OciError::invalid(archive, format!("manifest.json: {e}")))?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(OciError::invalid(archive, "manifest.json lists no image")),
        _ => {
            return Err(OciError::invalid(
                archive,
                "manifest.json lists several images; save one image per archive",
            ))
        }
    };
    let inside = |rel: &str| -> Result<PathBuf, OciError> {
        let p = extract::normalize_entry_path(rel.as_bytes())
            .map_err(|e| OciError::invalid(archive, format!("{rel:?}: {e}")))?;
        Ok(root.join(p))
    };
    let config_path = inside(&entry.config)?;
    let config_bytes = fs_err::read(&config_path).map_err(OciError::io(&config_path))?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| OciError::invalid(&config_path, format!("image config: {e}")))?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        return Err(OciError::invalid(
            &config_path,
            format!(
                "config lists {} diff_ids for {} layers",
                diff_ids.len(),
                entry.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (rel, want) in entry.layers.iter().zip(&diff_ids) {
        let path = inside(rel)?;
        let (descriptor, diff_id) = store_layer_file(store, &path)?;
        if &diff_id != want {
            return Err(OciError::DigestMismatch {
                path,
                expected: want.clone(),
                found: diff_id,
            });
        }
        layers.push(descriptor);
    }
    let config_descriptor = store.put_bytes(MediaType::ImageConfig, &config_bytes)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(layers)
        .build()
        .map_err(|e| OciError::invalid(archive, e))?;
    let descriptor = store.put_json(MediaType::ImageManifest, &manifest)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => entry
            .repo_tags
            .as_ref()
            .and_then(|t| t.first().cloned())
            .ok_or_else(|| {
                OciError::invalid(archive, "the image has no RepoTags; give it a name")
            })?,
    };
    store.set_ref(&name, &descriptor)?;
    Ok((name, descriptor))
}

/// Stores a layer file as it is and returns its descriptor and uncompressed digest.
fn store_layer_file(store: &OciStore, path: &Path) -> Result<(Descriptor, String), OciError> {
    let mut magic = [0u8; 4];
    let n = fs_err::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(OciError::io(path))?;
    let media_type = match &magic[..n] {
        [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
        [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
        _ => MediaType::ImageLayer,
    };
    let mut writer = store.blob_writer()?;
    let mut file = fs_err::File::open(path).map_err(OciError::io(path))?;
    std::io::copy(&mut file, &mut writer).map_err(OciError::io(path))?;
    let (digest, size) = writer.finish()?;
    let reader =
        extract::decompressing_reader(fs_err::File::open(path).map_err(OciError::io(path))?)
            .map_err(OciError::io(path))?;
    let diff_id = sha256_stream(reader).map_err(OciError::io(path))?;
    Ok((Descriptor::new(media_type, size, digest), diff_id))
}

fn sha256_stream(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
