//! Compilation bases in the shared cache. Every cache key covers the compilation base's
//! manifest digest, so the fleet must compile on one base: the first runner that compiles on a
//! base pushes it under the tag of what it asked for ([`super::base_tag`]), and every runner
//! after it pulls that one, by digest, instead of building its own. A base is an ordinary
//! image (its layers and config as in the store), so any tool can pull it too.

use std::collections::HashMap;

use oci_spec::image::Descriptor;

use super::{SharedCache, SharedCacheError};
use crate::oci::image::read_manifest;
use crate::oci::OciStore;
use crate::registry::{pull_image, push_image, NoReporter, Reference};

impl SharedCache {
    /// Pulls the compilation base `digest` (tagged `tag`) into `store`, every blob verified;
    /// returns its manifest with the manifest's own annotations (its kind, base and script),
    /// not yet named. Anything that is not a compilation base is refused.
    pub fn fetch_base(
        &self,
        store: &OciStore,
        tag: &str,
        digest: &str,
    ) -> Result<Descriptor, SharedCacheError> {
        let reference = Reference {
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: Some(digest.to_string()),
        };
        let pulled = pull_image(&self.client, store, &reference, &NoReporter)
            .map_err(self.registry_error(format!("pulling the compilation base {tag}")))?;
        let manifest = read_manifest(store, &pulled.manifest)
            .map_err(self.store_error(format!("pulling the compilation base {tag}")))?;
        let notes: HashMap<String, String> = manifest.annotations().clone().unwrap_or_default();
        if notes.get(crate::base::KIND_ANNOTATION).map(String::as_str) != Some("compilation-base") {
            return Err(SharedCacheError::Invalid {
                reference: reference.to_string(),
                message: "not a compilation base (no kind annotation saying so)".into(),
            });
        }
        let mut descriptor = pulled.manifest;
        descriptor.set_annotations(Some(notes));
        Ok(descriptor)
    }

    /// Pushes the compilation base `descriptor` of `store` under `tag`.
    pub fn push_base(
        &self,
        store: &OciStore,
        descriptor: &Descriptor,
        tag: &str,
    ) -> Result<(), SharedCacheError> {
        push_image(
            &self.client,
            store,
            descriptor,
            &self.reference(tag),
            &NoReporter,
        )
        .map_err(self.registry_error(format!("pushing the compilation base {tag}")))?;
        Ok(())
    }
}
