//! What a compiled package is in the shared cache: one OCI 1.0 image manifest per cache key,
//! tagged with a name derived from the key. Registries that know nothing of artifacts
//! (distribution 2.x) store it, since only its config's media type is custom; `artifactType`
//! says what it is to those that do. Its one layer is the very blob of the package's image in
//! the store; its config is a small JSON document with what the key covers and the layer's
//! `diff_id`, so a runner that pulls it rebuilds the same local image byte for byte.
//!
//! ```json
//! {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!  "artifactType": "application/vnd.cloudfoundry.fissile-oci.package.v1",
//!  "config": {"mediaType": "application/vnd.cloudfoundry.fissile-oci.package.config.v1+json", …},
//!  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", …}],
//!  "annotations": {"org.cloudfoundry.bosh.package.name": "…", "…cache-key": "…", …}}
//! ```

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// What the manifest is, for registries and tools that read `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.cloudfoundry.fissile-oci.package.v1";
/// The config's media type: no image config, so no engine mistakes it for a runnable image.
pub const CONFIG_MEDIA_TYPE: &str =
    "application/vnd.cloudfoundry.fissile-oci.package.config.v1+json";
/// The one layer: the package's files under `var/vcap/packages/<name>/`, as in the store.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Longest tag registries accept (distribution's reference grammar).
pub const MAX_TAG: usize = 128;

/// The config of a package in the shared cache: what its key covers, and how to check its
/// layer once unpacked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageConfig {
    pub name: String,
    pub fingerprint: String,
    pub cache_key: String,
    /// The compilation base's manifest digest.
    pub compilation_base: String,
    /// Direct dependencies: name and cache key, sorted by name.
    pub dependencies: Vec<DependencyKey>,
    /// The digest of the uncompressed layer (the store's image config has it too).
    pub diff_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DependencyKey {
    pub name: String,
    pub cache_key: String,
}

/// `pkg-<name>-<key>`: the package's name for people, its whole key for uniqueness. Characters
/// a tag cannot have become `_`, and a name too long for 128 characters is cut, never the key.
pub fn package_tag(name: &str, key: &str) -> String {
    let fixed = "pkg-".len() + 1 + key.len();
    format!(
        "pkg-{}-{}",
        tag_safe(name, MAX_TAG.saturating_sub(fixed)),
        tag_safe(key, key.len())
    )
}

/// `cbase-<base>-<16 hex>`: the compilation base a compile asked for (`--base`, or the
/// default base's name), for the prerequisites script and the fissile-oci version given, which
/// the hash covers. Every runner that asks for the same finds the same tag, whatever bytes its
/// own base has: the first to push it pins the fleet's base.
pub fn base_tag(base: &str, script: &str, version: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in ["fissile-oci/cbase/1", base, script, version] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    let hash = hex::encode(h.finalize());
    let fixed = "cbase-".len() + 1 + 16;
    format!("cbase-{}-{}", tag_safe(base, MAX_TAG - fixed), &hash[..16])
}

/// `s` with every character a tag cannot hold replaced by `_`, at most `max` bytes.
fn tag_safe(s: &str, max: usize) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
                b as char
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// The artifact manifest for a package whose layer is `layer` and config `config` (a blob
/// already stored as `config_descriptor`), with the package's annotations.
pub fn manifest_json(
    config_descriptor: &Descriptor,
    layer: &Descriptor,
    annotations: &BTreeMap<String, String>,
) -> serde_json::Value {
    let descriptor = |d: &Descriptor, media_type: &str| serde_json::json!({"mediaType": media_type, "digest": d.digest().to_string(), "size": d.size()});
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(config_descriptor, CONFIG_MEDIA_TYPE),
        "layers": [descriptor(layer, LAYER_MEDIA_TYPE)],
        "annotations": annotations,
    })
}

/// Checks that `manifest` is a package artifact for `key`: the artifact and config media
/// types, one gzip layer, and the key in its annotations. Returns its config and layer.
pub fn check_manifest(
    manifest: &ImageManifest,
    key_annotation: &str,
    key: &str,
) -> Result<(Descriptor, Descriptor), String> {
    let artifact = manifest.artifact_type().as_ref().map(|m| m.to_string());
    if artifact.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "not a fissile-oci package (artifactType {artifact:?}, expected {ARTIFACT_TYPE})"
        ));
    }
    let config = manifest.config();
    if config.media_type() != &MediaType::Other(CONFIG_MEDIA_TYPE.to_string()) {
        return Err(format!(
            "config media type {}, expected {CONFIG_MEDIA_TYPE}",
            config.media_type()
        ));
    }
    let [layer] = manifest.layers().as_slice() else {
        return Err(format!(
            "{} layers, expected exactly one",
            manifest.layers().len()
        ));
    };
    if layer.media_type() != &MediaType::ImageLayerGzip {
        return Err(format!(
            "layer media type {}, expected {LAYER_MEDIA_TYPE}",
            layer.media_type()
        ));
    }
    let found = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(key_annotation));
    if found.map(String::as_str) != Some(key) {
        return Err(format!(
            "it is for cache key {}, not {key}",
            found.map(String::as_str).unwrap_or("(none)")
        ));
    }
    Ok((config.clone(), layer.clone()))
}

/// Checks that a pulled config describes the package asked for.
pub fn check_config(config: &PackageConfig, expected: &PackageConfig) -> Result<(), String> {
    let mismatch = |field: &str, found: &str, wanted: &str| {
        Err(format!(
            "its config has {field} {found:?}, expected {wanted:?}"
        ))
    };
    if config.name != expected.name {
        return mismatch("name", &config.name, &expected.name);
    }
    if config.cache_key != expected.cache_key {
        return mismatch("cache_key", &config.cache_key, &expected.cache_key);
    }
    if config.fingerprint != expected.fingerprint {
        return mismatch("fingerprint", &config.fingerprint, &expected.fingerprint);
    }
    if config.compilation_base != expected.compilation_base {
        return mismatch(
            "compilation_base",
            &config.compilation_base,
            &expected.compilation_base,
        );
    }
    if config.dependencies != expected.dependencies {
        return Err(format!(
            "its config has other dependencies ({:?}) than expected ({:?})",
            config.dependencies, expected.dependencies
        ));
    }
    if !config.diff_id.starts_with("sha256:") || config.diff_id.len() != 71 {
        return Err(format!(
            "its config's diff_id {:?} is not a sha256 digest",
            config.diff_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::reference::valid_tag;

    #[test]
    fn tags_are_valid_readable_and_keep_the_whole_key() {
        let key = "a".repeat(64);
        assert_eq!(package_tag("nginx", &key), format!("pkg-nginx-{key}"));
        let long = "x".repeat(200);
        let tag = package_tag(&long, &key);
        assert_eq!(tag.len(), MAX_TAG);
        assert!(tag.ends_with(&format!("-{key}")), "{tag}");
        assert!(valid_tag(&tag));
        let odd = package_tag("libé+x", &key);
        assert!(valid_tag(&odd), "{odd}");
        assert!(odd.starts_with("pkg-lib__"), "{odd}");

        let base = base_tag("debian-bookworm", "script", "0.1.0");
        assert!(base.starts_with("cbase-debian-bookworm-"), "{base}");
        assert!(valid_tag(&base));
        assert_ne!(base, base_tag("debian-bookworm", "other", "0.1.0"));
        assert_ne!(base, base_tag("debian-bookworm", "script", "0.2.0"));
        assert_ne!(base, base_tag("debian-trixie", "script", "0.1.0"));
        let long_base = base_tag(&"b/".repeat(100), "s", "v");
        assert!(
            long_base.len() <= MAX_TAG && valid_tag(&long_base),
            "{long_base}"
        );
    }
}
