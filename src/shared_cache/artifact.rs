//! What a compiled package is in the shared cache: one OCI 1.0 image manifest per cache key,
//! tagged with a name derived from the key. Registries that know nothing of artifacts
//! (distribution 2.x) store it, since only its config's media type is custom; `artifactType`
//! says what it is to those that do. Its one layer is the very blob of the package's image in
//! the store. What the key covers and the layer's `diff_id` (so a runner that pulls it rebuilds
//! the same local image byte for byte, and checks the unpacked layer) are in one annotation,
//! [`PACKAGE_ANNOTATION`], next to the package's annotations for people and tools. The config
//! is the same small document for every package: a registry holds it once, a push sends a
//! layer and a manifest, and a pull fetches a manifest and a layer (a config per package cost
//! two more requests per push and one per pull, on the path a waiting shard waits on).
//!
//! ```json
//! {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!  "artifactType": "application/vnd.cloudfoundry.fissile-oci.package.v2",
//!  "config": {"mediaType": "application/vnd.cloudfoundry.fissile-oci.package.config.v2+json", …},
//!  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", …}],
//!  "annotations": {"org.cloudfoundry.fissile-oci.package": "{\"name\": …, \"diff_id\": …}",
//!                  "org.cloudfoundry.bosh.package.name": "…", …}}
//! ```

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// What the manifest is, for registries and tools that read `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.cloudfoundry.fissile-oci.package.v2";
/// The config's media type: no image config, so no engine mistakes it for a runnable image.
pub const CONFIG_MEDIA_TYPE: &str =
    "application/vnd.cloudfoundry.fissile-oci.package.config.v2+json";
/// The config of every package artifact.
pub const CONFIG: &[u8] =
    br#"{"about":"a BOSH package compiled by fissile-oci: the manifest's annotations say which"}"#;
/// The annotation with the package's [`PackageConfig`], as canonical JSON.
pub const PACKAGE_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.package";
/// The one layer: the package's files under `var/vcap/packages/<name>/`, as in the store.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Longest tag registries accept (distribution's reference grammar).
pub const MAX_TAG: usize = 128;

/// What a package in the shared cache is: what its key covers, and how to check its layer once
/// unpacked ([`PACKAGE_ANNOTATION`]).
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

/// The descriptor of [`CONFIG`].
pub fn config_descriptor() -> Descriptor {
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(CONFIG)));
    Descriptor::new(
        MediaType::Other(CONFIG_MEDIA_TYPE.to_string()),
        CONFIG.len() as u64,
        digest
            .parse::<oci_spec::image::Digest>()
            .expect("a sha256 digest"),
    )
}

/// The artifact manifest for the package `package` whose layer is `layer`, with the package's
/// `annotations` besides.
pub fn manifest_json(
    layer: &Descriptor,
    package: &PackageConfig,
    annotations: &BTreeMap<String, String>,
) -> Result<serde_json::Value, serde_json::Error> {
    let descriptor = |d: &Descriptor, media_type: &str| serde_json::json!({"mediaType": media_type, "digest": d.digest().to_string(), "size": d.size()});
    let mut annotations = annotations.clone();
    // Through a Value, whose objects are sorted maps: the same package, the same bytes.
    let package = serde_json::to_string(&serde_json::to_value(package)?)?;
    annotations.insert(PACKAGE_ANNOTATION.to_string(), package);
    Ok(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(&config_descriptor(), CONFIG_MEDIA_TYPE),
        "layers": [descriptor(layer, LAYER_MEDIA_TYPE)],
        "annotations": annotations,
    }))
}

/// Reads a package artifact: checks its artifact and config media types, the config (the one
/// every package has), its one gzip layer, and returns that layer and what the manifest says
/// the package is.
pub fn read_manifest(manifest: &ImageManifest) -> Result<(Descriptor, PackageConfig), String> {
    let artifact = manifest.artifact_type().as_ref().map(|m| m.to_string());
    if artifact.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "not a package of this fissile-oci (artifactType {artifact:?}, expected {ARTIFACT_TYPE})"
        ));
    }
    let config = manifest.config();
    let expected = config_descriptor();
    if config.media_type() != expected.media_type()
        || config.digest() != expected.digest()
        || config.size() != expected.size()
    {
        return Err(format!(
            "its config is {} {} ({} bytes), expected {} {} ({} bytes)",
            config.media_type(),
            config.digest(),
            config.size(),
            expected.media_type(),
            expected.digest(),
            expected.size()
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
    let Some(package) = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(PACKAGE_ANNOTATION))
    else {
        return Err(format!("no {PACKAGE_ANNOTATION} annotation"));
    };
    let package: PackageConfig = serde_json::from_str(package)
        .map_err(|e| format!("its {PACKAGE_ANNOTATION} annotation is not a package: {e}"))?;
    Ok((layer.clone(), package))
}

/// Checks that what a pulled manifest says (its [`PACKAGE_ANNOTATION`]) is the package asked
/// for.
pub fn check_config(config: &PackageConfig, expected: &PackageConfig) -> Result<(), String> {
    let mismatch = |field: &str, found: &str, wanted: &str| {
        Err(format!(
            "it is a package with {field} {found:?}, expected {wanted:?}"
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
            "it is a package with other dependencies ({:?}) than expected ({:?})",
            config.dependencies, expected.dependencies
        ));
    }
    if !config.diff_id.starts_with("sha256:") || config.diff_id.len() != 71 {
        return Err(format!(
            "its diff_id {:?} is not a sha256 digest",
            config.diff_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::reference::valid_tag;

    fn package() -> PackageConfig {
        PackageConfig {
            name: "app".into(),
            fingerprint: "f".repeat(40),
            cache_key: "a".repeat(64),
            compilation_base: format!("sha256:{}", "b".repeat(64)),
            dependencies: vec![DependencyKey {
                name: "lib".into(),
                cache_key: "c".repeat(64),
            }],
            diff_id: format!("sha256:{}", "d".repeat(64)),
        }
    }

    fn layer() -> Descriptor {
        Descriptor::new(
            MediaType::ImageLayerGzip,
            123,
            format!("sha256:{}", "e".repeat(64))
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
    }

    #[test]
    fn a_manifest_carries_the_package_and_reads_back() {
        let notes = BTreeMap::from([("org.example.note".to_string(), "kept".to_string())]);
        let json = manifest_json(&layer(), &package(), &notes).unwrap();
        let parsed: ImageManifest = serde_json::from_value(json.clone()).unwrap();
        let (read_layer, read_package) = read_manifest(&parsed).unwrap();
        assert_eq!(read_package, package());
        assert_eq!(read_layer.digest(), layer().digest());
        assert_eq!(json["annotations"]["org.example.note"], "kept");
        // Every package has the same config, whose digest is that of CONFIG.
        assert_eq!(
            json["config"]["digest"],
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(CONFIG)))
        );
        check_config(&read_package, &package()).unwrap();
        let mut other = package();
        other.cache_key = "9".repeat(64);
        assert!(check_config(&read_package, &other)
            .unwrap_err()
            .contains("cache_key"));
    }

    #[test]
    fn foreign_manifests_are_refused() {
        let good = manifest_json(&layer(), &package(), &BTreeMap::new()).unwrap();
        let refused = |edit: &dyn Fn(&mut serde_json::Value), why: &str| {
            let mut json = good.clone();
            edit(&mut json);
            let parsed: ImageManifest = serde_json::from_value(json).unwrap();
            let err = read_manifest(&parsed).unwrap_err();
            assert!(err.contains(why), "{err} (expected {why:?})");
        };
        refused(
            &|j| j["artifactType"] = "application/vnd.cloudfoundry.fissile-oci.package.v1".into(),
            "artifactType",
        );
        refused(
            &|j| j["config"]["digest"] = format!("sha256:{}", "0".repeat(64)).into(),
            "its config is",
        );
        refused(
            &|j| {
                let l = j["layers"][0].clone();
                j["layers"] = serde_json::json!([l.clone(), l]);
            },
            "2 layers",
        );
        refused(
            &|j| {
                j["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(PACKAGE_ANNOTATION);
            },
            "no org.cloudfoundry.fissile-oci.package",
        );
        refused(
            &|j| j["annotations"][PACKAGE_ANNOTATION] = "{not json".into(),
            "not a package",
        );
    }

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
