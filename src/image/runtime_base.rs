//! The image a runnable image starts from: by default the base the packages were compiled on,
//! without the layer the prerequisites script added to make it a compilation base (that layer
//! serves compiles), or any image of the store named with `--runtime-base`.

use oci_spec::image::{Descriptor, ImageConfiguration, MediaType};

use super::ImageError;
use crate::base::{BASE_DIGEST_ANNOTATION, KIND_ANNOTATION};
use crate::oci::image::{read_config, read_manifest};
use crate::oci::store::{annotations, OciStore};

/// Where a base came from, when it was pulled from a registry (`docker://HOST/REPO@DIGEST`).
pub const ORIGIN_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.origin";

/// A runtime base: its layers and its config.
#[derive(Clone, Debug)]
pub struct RuntimeBase {
    /// For `org.opencontainers.image.base.name`: where it came from, else its name in the store.
    pub name: String,
    /// Its manifest's digest (for `org.opencontainers.image.base.digest`).
    pub digest: String,
    /// (layer, diff_id), bottom first.
    pub layers: Vec<(Descriptor, String)>,
    pub config: ImageConfiguration,
}

impl RuntimeBase {
    /// The image named `name` in the store, whole.
    pub fn named(store: &OciStore, name: &str) -> Result<RuntimeBase, ImageError> {
        let descriptor = match store.resolve(name)? {
            Some(d) => d,
            None => {
                let known: Vec<String> = store
                    .refs()?
                    .into_iter()
                    .filter(|r| {
                        annotations(&r.descriptor)
                            .get(KIND_ANNOTATION)
                            .is_some_and(|k| k == "base" || k == "compilation-base")
                    })
                    .map(|r| r.name)
                    .collect();
                return Err(ImageError::UnknownBase {
                    name: name.to_string(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        };
        let origin = annotations(&descriptor).get(ORIGIN_ANNOTATION).cloned();
        Self::from_manifest(
            store,
            &descriptor,
            origin.unwrap_or_else(|| name.to_string()),
            0,
        )
    }

    /// The base the compilation base `compilation_base` was made from: its layers but the last.
    pub fn of_compilation_base(
        store: &OciStore,
        compilation_base: &Descriptor,
    ) -> Result<RuntimeBase, ImageError> {
        let notes = annotations(compilation_base);
        // The base's own manifest, when the store still has it, brings its name and config.
        if let Some(base_digest) = notes.get(BASE_DIGEST_ANNOTATION) {
            let named = store
                .refs()?
                .into_iter()
                .find(|r| r.descriptor.digest().as_ref() == base_digest);
            if let Some(entry) = named {
                let origin = annotations(&entry.descriptor)
                    .get(ORIGIN_ANNOTATION)
                    .cloned();
                let base =
                    Self::from_manifest(store, &entry.descriptor, origin.unwrap_or(entry.name), 0)?;
                let cbase = read_manifest(store, compilation_base)?;
                let expected = cbase.layers().len().saturating_sub(1);
                if base.layers.len() == expected
                    && base
                        .layers
                        .iter()
                        .zip(cbase.layers())
                        .all(|((a, _), b)| a.digest() == b.digest())
                {
                    return Ok(base);
                }
            }
        }
        // Otherwise the compilation base itself, minus its prerequisites layer.
        let digest = notes
            .get(BASE_DIGEST_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| compilation_base.digest().to_string());
        let mut base = Self::from_manifest(store, compilation_base, digest.clone(), 1)?;
        base.digest = digest;
        Ok(base)
    }

    /// An image of the store without its top `drop_top` layers.
    fn from_manifest(
        store: &OciStore,
        descriptor: &Descriptor,
        name: String,
        drop_top: usize,
    ) -> Result<RuntimeBase, ImageError> {
        if *descriptor.media_type() == MediaType::ImageIndex {
            return Err(ImageError::Invalid {
                what: name,
                message: "is an image index, not one image".into(),
            });
        }
        let manifest = read_manifest(store, descriptor)?;
        let mut config = read_config(store, &manifest)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::Invalid {
                what: name,
                message: format!(
                    "its config lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            });
        }
        let keep = manifest.layers().len().saturating_sub(drop_top);
        let layers: Vec<(Descriptor, String)> = manifest
            .layers()
            .iter()
            .cloned()
            .zip(diff_ids)
            .take(keep)
            .collect();
        // History entries beyond the kept layers describe what was dropped.
        if drop_top > 0 {
            if let Some(history) = config.history().clone() {
                let mut seen = 0;
                let kept: Vec<_> = history
                    .into_iter()
                    .take_while(|h| {
                        if h.empty_layer().unwrap_or(false) {
                            return true;
                        }
                        seen += 1;
                        seen <= keep
                    })
                    .collect();
                config.set_history(Some(kept));
            }
        }
        Ok(RuntimeBase {
            name,
            digest: descriptor.digest().to_string(),
            layers,
            config,
        })
    }
}
