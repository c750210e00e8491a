//! One runnable image: the runtime base's layers, one layer per compiled package (the very blob
//! the store holds, so registries and nodes share it with every other image that has it), and
//! the release layer; a full config (environment, working dir, labels naming releases, packages
//! and jobs, a history entry per layer) and the standard annotations. Everything is derived
//! from the inputs and `SOURCE_DATE_EPOCH`: the same inputs give the same manifest digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use oci_spec::image::{
    ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifestBuilder, MediaType,
    RootFsBuilder,
};

use super::release_layer::write_release_layer;
use super::runtime_base::RuntimeBase;
use super::ImageError;
use crate::compile::key::package_ref;
use crate::extract::ExtractLimits;
use crate::oci::image::{read_config, read_manifest};
use crate::oci::OciStore;
use crate::plan::{NodeId, Plan, ReleaseId};

pub const LABEL_RELEASES: &str = "org.cloudfoundry.bosh.releases";
pub const LABEL_JOBS: &str = "org.cloudfoundry.bosh.jobs";
pub const LABEL_INSTANCE_GROUP: &str = "org.cloudfoundry.bosh.instance-group";
pub const LABEL_FISSILE_VERSION: &str = "org.cloudfoundry.fissile-oci.version";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const VERSION: &str = "org.opencontainers.image.version";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const WORKING_DIR: &str = "/var/vcap";

/// `org.cloudfoundry.bosh.release.<name>.version`.
pub fn release_version_label(release: &str) -> String {
    format!("org.cloudfoundry.bosh.release.{release}.version")
}

/// `org.cloudfoundry.bosh.package.<name>.fingerprint`.
pub fn package_fingerprint_label(package: &str) -> String {
    format!("org.cloudfoundry.bosh.package.{package}.fingerprint")
}

/// What one image holds.
pub struct ImageRequest<'a> {
    pub plan: &'a Plan,
    /// The cache key of every plan node, in plan order (their images are in the store).
    pub keys: &'a [String],
    /// The packages, in plan order.
    pub packages: &'a [NodeId],
    /// The jobs: (release, index in its `jobs`).
    pub jobs: &'a [(ReleaseId, usize)],
    pub base: &'a RuntimeBase,
    /// `org.opencontainers.image.title`: the image's name.
    pub title: &'a str,
    pub instance_group: Option<&'a str>,
    /// `SOURCE_DATE_EPOCH`: the `created` time and every layer entry's mtime.
    pub created: u64,
    pub limits: &'a ExtractLimits,
}

/// Writes the image into the store (release layer, config, manifest); returns its manifest.
/// `staging` is a scratch dir for the release layer that must not exist.
pub fn build_image(
    store: &OciStore,
    request: &ImageRequest<'_>,
    staging: &Path,
) -> Result<Descriptor, ImageError> {
    let plan = request.plan;
    let created = format!("{}Z", crate::clock::format_utc(request.created, 'T'));

    // The compiled packages, each its store image's one layer.
    let mut by_name: HashMap<&str, NodeId> = HashMap::new();
    let mut packages: Vec<(Descriptor, String)> = Vec::new();
    for &node in request.packages {
        let name = plan.nodes[node].name.as_str();
        if let Some(&other) = by_name.get(name) {
            return Err(ImageError::PackageConflict {
                package: name.to_string(),
                first: plan.node_label(other),
                second: plan.node_label(node),
            });
        }
        by_name.insert(name, node);
        packages.push(package_layer(store, name, &request.keys[node])?);
    }

    // The releases it draws from: those of its jobs and of its packages.
    let mut releases: BTreeSet<ReleaseId> = request.jobs.iter().map(|&(r, _)| r).collect();
    for &node in request.packages {
        releases.extend(plan.nodes[node].members.iter().map(|&(r, _)| r));
    }
    let contents: Vec<_> = releases
        .iter()
        .map(|&rid| {
            let release = &plan.releases[rid];
            let jobs = request
                .jobs
                .iter()
                .filter(|&&(r, _)| r == rid)
                .map(|&(_, j)| &release.jobs[j])
                .collect();
            (release, jobs)
        })
        .collect();
    let release_layer =
        write_release_layer(store, &contents, staging, request.created, request.limits)?;

    // Labels: what is inside, by BOSH's names.
    let version = match releases.iter().collect::<Vec<_>>().as_slice() {
        [only] => plan.releases[**only].version.clone(),
        many => many
            .iter()
            .map(|&&r| format!("{}/{}", plan.releases[r].name, plan.releases[r].version))
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut standard = BTreeMap::new();
    standard.insert(CREATED.to_string(), created.clone());
    standard.insert(BASE_NAME.to_string(), request.base.name.clone());
    standard.insert(BASE_DIGEST.to_string(), request.base.digest.clone());
    standard.insert(TITLE.to_string(), request.title.to_string());
    standard.insert(VERSION.to_string(), version);
    let mut labels: BTreeMap<String, String> = request
        .base
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(standard.clone());
    labels.insert(
        LABEL_RELEASES.to_string(),
        releases
            .iter()
            .map(|&r| format!("{}/{}", plan.releases[r].name, plan.releases[r].version))
            .collect::<Vec<_>>()
            .join(","),
    );
    for &r in &releases {
        labels.insert(
            release_version_label(&plan.releases[r].name),
            plan.releases[r].version.clone(),
        );
    }
    for &node in request.packages {
        labels.insert(
            package_fingerprint_label(&plan.nodes[node].name),
            plan.nodes[node].fingerprint.clone(),
        );
    }
    let mut job_names: Vec<&str> = request
        .jobs
        .iter()
        .map(|&(r, j)| plan.releases[r].jobs[j].name.as_str())
        .collect();
    job_names.sort();
    labels.insert(LABEL_JOBS.to_string(), job_names.join(","));
    if let Some(group) = request.instance_group {
        labels.insert(LABEL_INSTANCE_GROUP.to_string(), group.to_string());
    }
    labels.insert(
        LABEL_FISSILE_VERSION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );

    // History: the base's (or a line per base layer), then one per layer added here.
    let entry = |created_by: String| {
        HistoryBuilder::default()
            .created(created.clone())
            .created_by(created_by)
            .build()
            .map_err(invalid)
    };
    let mut history = match request.base.config.history() {
        Some(h) if non_empty(h) == request.base.layers.len() => h.clone(),
        _ => (0..request.base.layers.len())
            .map(|i| {
                entry(format!(
                    "fissile-oci: runtime base {} (layer {})",
                    request.base.name,
                    i + 1
                ))
            })
            .collect::<Result<_, _>>()?,
    };
    for &node in request.packages {
        let n = &plan.nodes[node];
        history.push(entry(format!(
            "fissile-oci: BOSH package {} (fingerprint {})",
            n.name, n.fingerprint
        ))?);
    }
    history.push(entry(format!(
        "fissile-oci: release.MF and jobs of {}",
        labels[LABEL_RELEASES]
    ))?);

    let mut diff_ids: Vec<String> = request.base.layers.iter().map(|(_, d)| d.clone()).collect();
    diff_ids.extend(packages.iter().map(|(_, d)| d.clone()));
    diff_ids.push(release_layer.diff_id.to_string());
    let mut layers: Vec<Descriptor> = request
        .base
        .layers
        .iter()
        .map(|(l, _)| oci_layer(l))
        .collect();
    layers.extend(packages.into_iter().map(|(l, _)| l));
    layers.push(release_layer.descriptor.clone());

    let base_config = request.base.config.config().clone().unwrap_or_default();
    let mut env = base_config.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let mut config_builder = ConfigBuilder::default()
        .env(env)
        .working_dir(WORKING_DIR)
        .labels(labels.into_iter().collect::<HashMap<_, _>>());
    if let Some(user) = base_config.user() {
        config_builder = config_builder.user(user.clone());
    }
    if let Some(entrypoint) = base_config.entrypoint() {
        config_builder = config_builder.entrypoint(entrypoint.clone());
    }
    if let Some(cmd) = base_config.cmd() {
        config_builder = config_builder.cmd(cmd.clone());
    }
    let config: ImageConfiguration = oci_spec::image::ImageConfigurationBuilder::default()
        .created(created)
        .architecture(request.base.config.architecture().clone())
        .os(request.base.config.os().clone())
        .config(config_builder.build().map_err(invalid)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(invalid)?,
        )
        .history(history)
        .build()
        .map_err(invalid)?;
    let config_descriptor = store.put_json(MediaType::ImageConfig, &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(layers)
        .annotations(standard.into_iter().collect::<HashMap<_, _>>())
        .build()
        .map_err(invalid)?;
    Ok(store.put_json(MediaType::ImageManifest, &manifest)?)
}

/// A compiled package's layer and diff_id, from its image in the store.
fn package_layer(
    store: &OciStore,
    name: &str,
    key: &str,
) -> Result<(Descriptor, String), ImageError> {
    let reference = package_ref(name, key);
    let descriptor = store
        .resolve(&reference)?
        .ok_or_else(|| ImageError::MissingPackage {
            package: name.to_string(),
            reference: reference.clone(),
        })?;
    let manifest = read_manifest(store, &descriptor)?;
    let config = read_config(store, &manifest)?;
    match (
        manifest.layers().as_slice(),
        config.rootfs().diff_ids().as_slice(),
    ) {
        ([layer], [diff_id]) => Ok((layer.clone(), diff_id.clone())),
        _ => Err(ImageError::Invalid {
            what: reference,
            message: "a compiled package's image has exactly one layer".into(),
        }),
    }
}

/// A base layer as an OCI manifest lists it: a base pulled from a docker registry has docker's
/// media types for the same bytes.
fn oci_layer(layer: &Descriptor) -> Descriptor {
    let media_type = match layer.media_type().to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => MediaType::ImageLayerZstd,
        _ => return layer.clone(),
    };
    let mut layer = layer.clone();
    layer.set_media_type(media_type);
    layer
}

fn non_empty(history: &[oci_spec::image::History]) -> usize {
    history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count()
}

fn invalid(e: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid {
        what: "the image config".into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn docker_layer_media_types_become_oci_ones() {
        let digest =
            oci_spec::image::Digest::from_str(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let docker = Descriptor::new(
            MediaType::Other("application/vnd.docker.image.rootfs.diff.tar.gzip".into()),
            7,
            digest.clone(),
        );
        let layer = oci_layer(&docker);
        assert_eq!(*layer.media_type(), MediaType::ImageLayerGzip);
        assert_eq!((layer.size(), layer.digest()), (7, &digest));
        let oci = Descriptor::new(MediaType::ImageLayerZstd, 7, digest);
        assert_eq!(oci_layer(&oci), oci);
    }
}
