//! Image configs and manifests: what turns a list of layers into something `skopeo`, `umoci` and
//! container engines can read. Written as canonical JSON with no timestamps, so the same layers
//! and annotations give the same manifest digest.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfiguration, ImageConfigurationBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use super::layer::Layer;
use super::store::OciStore;
use super::OciError;

/// The largest manifest or config we accept from a store (they are small JSON documents).
pub const MAX_JSON_BLOB: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    /// Layers of a parent image, bottom first, as (descriptor, diff_id) pairs.
    pub base: Vec<(Descriptor, String)>,
    pub layers: Vec<Layer>,
    /// Container defaults (`PATH=…` etc.).
    pub env: Vec<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The platform we run on, in OCI's words.
pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "arm" => Arch::ARM,
        "s390x" => Arch::s390x,
        "powerpc64" => Arch::PowerPC64,
        "riscv64" => Arch::RISCV64,
        other => Arch::Other(other.to_string()),
    }
}

/// Writes config and manifest blobs; returns the manifest's descriptor (for a ref).
pub fn write_image(store: &OciStore, spec: &ImageSpec) -> Result<Descriptor, OciError> {
    let mut diff_ids: Vec<String> = spec.base.iter().map(|(_, d)| d.clone()).collect();
    diff_ids.extend(spec.layers.iter().map(|l| l.diff_id.to_string()));
    let mut layer_descriptors: Vec<Descriptor> = spec.base.iter().map(|(d, _)| d.clone()).collect();
    layer_descriptors.extend(spec.layers.iter().map(|l| l.descriptor.clone()));

    let env = if spec.env.is_empty() {
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]
    } else {
        spec.env.clone()
    };
    let config = ImageConfigurationBuilder::default()
        .architecture(host_arch())
        .os(Os::Linux)
        .config(ConfigBuilder::default().env(env).build().map_err(invalid)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(invalid)?,
        )
        .build()
        .map_err(invalid)?;
    let config_descriptor = store.put_json(MediaType::ImageConfig, &config)?;

    let mut builder = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(layer_descriptors);
    if !spec.annotations.is_empty() {
        builder = builder.annotations(
            spec.annotations
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        );
    }
    let manifest = builder.build().map_err(invalid)?;
    store.put_json(MediaType::ImageManifest, &manifest)
}

fn invalid(e: impl std::fmt::Display) -> OciError {
    OciError::invalid(std::path::Path::new("<image>"), e)
}

/// Reads and verifies an image manifest.
pub fn read_manifest(store: &OciStore, descriptor: &Descriptor) -> Result<ImageManifest, OciError> {
    let bytes = store.read_blob(descriptor, MAX_JSON_BLOB)?;
    let path = store.blob_path(descriptor.digest())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OciError::invalid(&path, format!("not an image manifest: {e}")))
}

pub fn read_config(
    store: &OciStore,
    manifest: &ImageManifest,
) -> Result<ImageConfiguration, OciError> {
    let bytes = store.read_blob(manifest.config(), MAX_JSON_BLOB)?;
    let path = store.blob_path(manifest.config().digest())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OciError::invalid(&path, format!("not an image config: {e}")))
}

/// Looks up a ref, naming the known ones when it is missing.
pub fn resolve(store: &OciStore, name: &str) -> Result<Descriptor, OciError> {
    if let Some(d) = store.resolve(name)? {
        return Ok(d);
    }
    let known: Vec<String> = store.refs()?.into_iter().map(|r| r.name).collect();
    Err(OciError::UnknownRef {
        store: store.root().to_path_buf(),
        name: name.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
}
