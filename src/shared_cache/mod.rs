//! The shared cache: compiled packages and compilation bases in an OCI registry, so a fleet of
//! CI runners, each with an empty work dir, compiles every package once. The registry every CI
//! system already runs is the store; there is no server of our own.
//!
//! - Packages: one artifact manifest per cache key ([`artifact`]), tagged `pkg-<name>-<key>`,
//!   looked up before a compile ([`SharedCache::lookup`]), pulled and verified into the store
//!   ([`SharedCache::fetch_package`]), pushed after one ([`SharedCache::push_package`]).
//! - Compilation bases: every key covers the compilation base's digest, so a runner whose base
//!   has other bytes (mmdebstrap is not always reproducible) would never hit. The base a compile
//!   asks for is tagged `cbase-<base>-<hash>`; the first runner to push it pins the fleet's base,
//!   and the others pull it by digest instead of building their own (`base`).
//! - It is an optimisation: a registry that is down, slow or wrong costs a warning and a local
//!   compile, never a failed run (unless `required`). A failure of the registry as a whole
//!   ([`SharedCacheError::is_outage`]) turns the cache off for the rest of the run, so a dead
//!   registry costs one timeout, not one per package; a bad package (a corrupt blob, a foreign
//!   manifest under our tag) costs that package only.

pub mod artifact;
mod base;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, ImageManifest, MediaType};

use crate::oci::store::canonical_json;
use crate::oci::{OciError, OciStore};
use crate::registry::{push_new_image, Client, NoReporter, Reference, RegistryError, Repository};

pub use artifact::{base_tag, package_tag, DependencyKey, PackageConfig};

/// The largest config blob taken from the cache (they are a few hundred bytes).
const MAX_CONFIG: u64 = 1024 * 1024;

/// `--cache-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Pull what the cache has; never push.
    Read,
    /// Pull what it has, push what this run compiles.
    ReadWrite,
}

#[derive(thiserror::Error, Debug)]
pub enum SharedCacheError {
    #[error("shared cache {repository}: {what}: {source}")]
    Registry {
        repository: String,
        what: String,
        #[source]
        source: Box<RegistryError>,
    },
    /// What the registry holds under our tag is not what we asked for.
    #[error("shared cache {reference}: {message}")]
    Invalid { reference: String, message: String },
    /// The local store failed while a package came in or went out.
    #[error("shared cache {repository}: {what}: {source}")]
    Store {
        repository: String,
        what: String,
        #[source]
        source: Box<OciError>,
    },
    /// `--cache-required`, and the cache failed.
    #[error("the shared cache {repository} failed and --cache-required is set: {reason}")]
    Required { repository: String, reason: String },
}

impl SharedCacheError {
    /// Whether the registry as a whole failed (unreachable, TLS, credentials, server errors),
    /// rather than one package in it.
    pub fn is_outage(&self) -> bool {
        match self {
            SharedCacheError::Registry { source, .. } => !matches!(
                source.as_ref(),
                RegistryError::DigestMismatch { .. }
                    | RegistryError::NotFound { .. }
                    | RegistryError::Interrupted
                    | RegistryError::Store(_)
            ),
            SharedCacheError::Invalid { .. } | SharedCacheError::Store { .. } => false,
            SharedCacheError::Required { .. } => true,
        }
    }

    /// The run was interrupted while the cache was in use.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SharedCacheError::Registry { source, .. } if matches!(**source, RegistryError::Interrupted))
    }
}

/// Where notices go (thread-safe: pushes and pulls run on worker threads).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// A package pulled into the store, not yet named: its layer (verified against its digest),
/// and its config (the `diff_id` to check once unpacked).
#[derive(Clone, Debug)]
pub struct FetchedPackage {
    pub layer: Descriptor,
    pub config: PackageConfig,
    pub manifest_digest: String,
}

/// The shared cache of one run.
pub struct SharedCache {
    client: Client,
    repository: Repository,
    mode: CacheMode,
    required: bool,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    /// Why the cache is off for the rest of the run.
    down: Option<String>,
    /// Why pushes are off (e.g. credentials that may pull but not push).
    pushes_down: Option<String>,
    /// Every notice given, for the summary.
    warnings: Vec<String>,
}

impl SharedCache {
    /// A cache in `repository` (`HOST[:PORT]/NAME`, no tag) reached through `client`.
    pub fn new(
        client: Client,
        repository: Repository,
        mode: CacheMode,
        required: bool,
        notify: Notify,
    ) -> SharedCache {
        SharedCache {
            client,
            repository,
            mode,
            required,
            state: Mutex::new(State::default()),
            notify,
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    pub fn required(&self) -> bool {
        self.required
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether lookups and pulls are still worth trying.
    pub fn usable(&self) -> bool {
        self.state().down.is_none()
    }

    /// Whether this run pushes what it compiles.
    pub fn pushes(&self) -> bool {
        let state = self.state();
        self.mode == CacheMode::ReadWrite && state.down.is_none() && state.pushes_down.is_none()
    }

    /// Why the cache stopped being used, if it did.
    pub fn down_reason(&self) -> Option<String> {
        self.state().down.clone()
    }

    /// The notices given so far.
    pub fn warnings(&self) -> Vec<String> {
        self.state().warnings.clone()
    }

    /// A notice, shown and kept for the summary.
    pub fn warn(&self, message: &str) {
        self.state().warnings.push(message.to_string());
        (self.notify)(message);
    }

    /// Takes note of a failure while looking up or pulling (`pushing` false) or pushing. A
    /// registry that is gone turns the whole cache off, one that refuses pushes (read-only
    /// credentials, server errors on uploads) turns pushes off, each with one notice; anything
    /// else is a notice about that package. With `required`, returns the error that must fail
    /// the run.
    pub fn failed(&self, error: &SharedCacheError, pushing: bool) -> Option<SharedCacheError> {
        if error.is_interrupted() {
            return None;
        }
        let message = error_chain(error);
        let gone = matches!(error, SharedCacheError::Registry { source, .. }
            if matches!(**source, RegistryError::Unreachable { .. } | RegistryError::Tls { .. }));
        let notice = if !error.is_outage() {
            Some(if pushing {
                message.clone()
            } else {
                format!("{message}; compiling the package here instead")
            })
        } else {
            let mut state = self.state();
            if pushing && !gone {
                let first = state.pushes_down.is_none();
                state.pushes_down.get_or_insert(message.clone());
                first.then(|| {
                    format!("{message}; nothing more is pushed to the shared cache in this run")
                })
            } else {
                let first = state.down.is_none();
                state.down.get_or_insert(message.clone());
                first.then(|| {
                    format!(
                        "{message}; the shared cache is not used for the rest of this run (what is missing compiles here)"
                    )
                })
            }
        };
        if let Some(notice) = notice {
            self.warn(&notice);
        }
        self.required.then(|| SharedCacheError::Required {
            repository: self.repository.to_string(),
            reason: message,
        })
    }

    fn registry_error(
        &self,
        what: impl Into<String>,
    ) -> impl FnOnce(RegistryError) -> SharedCacheError {
        let repository = self.repository.to_string();
        let what = what.into();
        move |source| SharedCacheError::Registry {
            repository,
            what,
            source: Box::new(source),
        }
    }

    fn store_error(&self, what: impl Into<String>) -> impl FnOnce(OciError) -> SharedCacheError {
        let repository = self.repository.to_string();
        let what = what.into();
        move |source| SharedCacheError::Store {
            repository,
            what,
            source: Box::new(source),
        }
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference {
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// What the cache has under `tag` (a `HEAD`), or `None`.
    pub fn lookup(&self, tag: &str) -> Result<Option<Descriptor>, SharedCacheError> {
        self.client
            .resolve(&self.repository, tag)
            .map_err(self.registry_error(format!("looking up {tag}")))
    }

    /// Pulls the package `expected` describes from `tag` (by `digest` when a lookup found
    /// it): the manifest and the config are checked against what was asked for, and the layer
    /// is streamed into `store`, verified against its digest (a corrupt one is never kept). The
    /// caller unpacks it, checks the `diff_id`, and names the image.
    pub fn fetch_package(
        &self,
        store: &OciStore,
        tag: &str,
        digest: Option<&str>,
        expected: &PackageConfig,
        key_annotation: &str,
    ) -> Result<FetchedPackage, SharedCacheError> {
        let reference = format!("{}:{tag}", self.repository);
        let invalid = |message: String| SharedCacheError::Invalid {
            reference: reference.clone(),
            message,
        };
        let manifest = self
            .client
            .get_manifest(&self.repository, digest.unwrap_or(tag))
            .map_err(self.registry_error(format!("pulling {tag}")))?;
        let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| invalid(format!("not an image manifest: {e}")))?;
        let (config_descriptor, layer) =
            artifact::check_manifest(&parsed, key_annotation, &expected.cache_key)
                .map_err(invalid)?;
        if config_descriptor.size() > MAX_CONFIG {
            return Err(invalid(format!(
                "its config is {} bytes, more than a package config can be",
                config_descriptor.size()
            )));
        }
        let mut config_bytes = Vec::new();
        self.client
            .pull_blob(
                &self.repository,
                config_descriptor.digest().as_ref(),
                config_descriptor.size(),
                &mut config_bytes,
                &mut |_| {},
            )
            .map_err(self.registry_error(format!("pulling the config of {tag}")))?;
        let config: PackageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("its config is not a package config: {e}")))?;
        artifact::check_config(&config, expected).map_err(invalid)?;

        if !store.has_blob(layer.digest()) {
            let mut writer = store
                .blob_writer()
                .map_err(self.store_error(format!("pulling {tag}")))?;
            self.client
                .pull_blob(
                    &self.repository,
                    layer.digest().as_ref(),
                    layer.size(),
                    &mut writer,
                    &mut |_| {},
                )
                .map_err(self.registry_error(format!("pulling the layer of {tag}")))?;
            writer
                .flush()
                .map_err(OciError::io(store.blobs_dir()))
                .map_err(self.store_error(format!("pulling {tag}")))?;
            writer
                .finish()
                .map_err(self.store_error(format!("pulling {tag}")))?;
        }
        Ok(FetchedPackage {
            layer,
            config,
            manifest_digest: manifest.digest,
        })
    }

    /// Pushes the package whose image in `store` is `local` (one layer) as the artifact for
    /// `config`, with `annotations`: the layer and config where the repository lacks them, the
    /// manifest last, under its tag.
    pub fn push_package(
        &self,
        store: &OciStore,
        local: &Descriptor,
        config: &PackageConfig,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), SharedCacheError> {
        let tag = package_tag(&config.name, &config.cache_key);
        let what = format!("pushing {tag}");
        let manifest = crate::oci::image::read_manifest(store, local)
            .map_err(self.store_error(what.clone()))?;
        let Some(layer) = manifest.layers().last() else {
            return Err(SharedCacheError::Invalid {
                reference: format!("{}:{tag}", self.repository),
                message: "the package's image in the store has no layer".into(),
            });
        };
        let config_descriptor = store
            .put_json(MediaType::Other(artifact::CONFIG_MEDIA_TYPE.into()), config)
            .map_err(self.store_error(what.clone()))?;
        let json = artifact::manifest_json(&config_descriptor, layer, annotations);
        let bytes = canonical_json(&json).map_err(self.store_error(what.clone()))?;
        let manifest_descriptor = store
            .put_bytes(MediaType::ImageManifest, &bytes)
            .map_err(self.store_error(what.clone()))?;
        // Its layer and config were just made here: sent without asking whether the
        // registry has them.
        push_new_image(
            &self.client,
            store,
            &manifest_descriptor,
            &self.reference(&tag),
            &NoReporter,
        )
        .map_err(self.registry_error(what))?;
        Ok(())
    }
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
