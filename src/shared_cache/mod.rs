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

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::{Descriptor, ImageManifest, MediaType};

use crate::oci::store::canonical_json;
use crate::oci::{OciError, OciStore};
use crate::registry::{Client, Reference, RegistryError, Repository};

pub use artifact::{base_tag, package_tag, DependencyKey, PackageConfig};

/// The most tags a repository may have for one listing to stand in for a lookup per tag
/// (about 100 bytes each in the answer).
pub const MAX_LISTED: usize = 5000;
/// How often a run lists the repository's tags while it waits for another shard's packages,
/// at the most and at the least: a listing costs one request however many keys it answers
/// for, and a hop from shard to shard waits half an interval on average.
pub const LIST_FIRST: Duration = Duration::from_millis(100);
pub const LIST_MAX: Duration = Duration::from_secs(1);

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

    /// The registry has no such manifest or blob.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SharedCacheError::Registry { source, .. } if matches!(**source, RegistryError::NotFound { .. }))
    }

    /// The run was interrupted while the cache was in use.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SharedCacheError::Registry { source, .. } if matches!(**source, RegistryError::Interrupted))
    }
}

/// Where notices go (thread-safe: pushes and pulls run on worker threads).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// A package pulled into the store, not yet named: its layer (verified against its digest),
/// and what its manifest says of it (the `diff_id` to check once unpacked).
#[derive(Clone, Debug)]
pub struct FetchedPackage {
    pub layer: Descriptor,
    pub config: PackageConfig,
}

/// The shared cache of one run.
pub struct SharedCache {
    client: Client,
    repository: Repository,
    mode: CacheMode,
    required: bool,
    state: Mutex<State>,
    notify: Notify,
    /// Whether the repository has the config every package shares.
    config_there: Mutex<bool>,
    listing: Mutex<Listing>,
}

/// The repository's tags as last listed.
#[derive(Default)]
struct Listing {
    tags: Option<Arc<HashSet<String>>>,
    at: Option<Instant>,
    interval: Duration,
    generation: u64,
    /// Listing is no help here (too many tags, or refused).
    off: bool,
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
            config_there: Mutex::new(false),
            listing: Mutex::new(Listing::default()),
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

    /// Pulls the package `expected` describes from `reference` (its tag, or the digest a
    /// lookup found under it): the manifest is checked against what was asked for, and the
    /// layer is streamed into `store`, verified against its digest (a corrupt one is never
    /// kept). The caller unpacks it, checks the `diff_id`, and names the image.
    pub fn fetch_package(
        &self,
        store: &OciStore,
        tag: &str,
        reference: &str,
        expected: &PackageConfig,
    ) -> Result<FetchedPackage, SharedCacheError> {
        let shown = format!("{}:{tag}", self.repository);
        let invalid = |message: String| SharedCacheError::Invalid {
            reference: shown.clone(),
            message,
        };
        let manifest = self
            .client
            .get_manifest(&self.repository, reference)
            .map_err(self.registry_error(format!("pulling {tag}")))?;
        let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| invalid(format!("not an image manifest: {e}")))?;
        let (layer, config) = artifact::read_manifest(&parsed).map_err(invalid)?;
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
        Ok(FetchedPackage { layer, config })
    }

    /// Pushes the package whose image in `store` is `local` (one layer) as the artifact for
    /// `config`, with `annotations`: the layer (just made here, so sent without asking whether
    /// the registry has it), then the manifest under its tag. The config every package shares
    /// goes first, once per run.
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
        self.ensure_config(store)?;
        let path = store
            .blob_path(layer.digest())
            .map_err(self.store_error(what.clone()))?;
        self.client
            .push_blob(
                &self.repository,
                layer.digest().as_ref(),
                layer.size(),
                &path,
                None,
                &mut |_| {},
            )
            .map_err(self.registry_error(what.clone()))?;
        let json = artifact::manifest_json(layer, config, annotations).map_err(|e| {
            SharedCacheError::Invalid {
                reference: format!("{}:{tag}", self.repository),
                message: format!("its manifest cannot be written: {e}"),
            }
        })?;
        let bytes = canonical_json(&json).map_err(self.store_error(what.clone()))?;
        self.client
            .put_manifest(
                &self.repository,
                &tag,
                MediaType::ImageManifest.to_string().as_str(),
                &bytes,
            )
            .map_err(self.registry_error(what))?;
        Ok(())
    }

    /// Makes sure the repository has the config every package artifact shares: asked once
    /// per run, sent if missing.
    fn ensure_config(&self, store: &OciStore) -> Result<(), SharedCacheError> {
        let mut there = self.config_there.lock().unwrap_or_else(|p| p.into_inner());
        if *there {
            return Ok(());
        }
        let what = "pushing the package config";
        let descriptor = store
            .put_bytes(
                MediaType::Other(artifact::CONFIG_MEDIA_TYPE.into()),
                artifact::CONFIG,
            )
            .map_err(self.store_error(what))?;
        let digest = descriptor.digest().to_string();
        if self
            .client
            .blob_exists(&self.repository, &digest)
            .map_err(self.registry_error(what))?
            .is_none()
        {
            let path = store
                .blob_path(descriptor.digest())
                .map_err(self.store_error(what))?;
            self.client
                .push_blob(
                    &self.repository,
                    &digest,
                    descriptor.size(),
                    &path,
                    None,
                    &mut |_| {},
                )
                .map_err(self.registry_error(what))?;
        }
        *there = true;
        Ok(())
    }

    /// The repository's tags, with the listing's generation (it grows with every new
    /// listing). Listed again now when `fresh`; otherwise when the last listing is older than
    /// the listing interval: [`LIST_FIRST`] after a listing that had new tags (the fleet is
    /// pushing, more will come), half as long again after each that had none, up to
    /// [`LIST_MAX`]. One caller lists while the others wait for its answer: a run asks once
    /// per interval however many jobs wait. `None` when a listing is no help here: the
    /// repository has more than [`MAX_LISTED`] tags, or the registry refuses to list them;
    /// then callers look tags up one by one.
    pub fn listing(&self, fresh: bool) -> Option<(u64, Arc<HashSet<String>>)> {
        if !self.usable() {
            return None;
        }
        let mut listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if listing.off {
            return None;
        }
        if let (Some(at), Some(tags), false) = (listing.at, &listing.tags, fresh) {
            if at.elapsed() < listing.interval {
                return Some((listing.generation, tags.clone()));
            }
        }
        let asked = Instant::now();
        match self.client.list_tags(&self.repository, MAX_LISTED) {
            Ok(Some(tags)) => {
                let tags = Arc::new(tags.into_iter().collect::<HashSet<String>>());
                let grew = listing
                    .tags
                    .as_ref()
                    .is_none_or(|old| tags.iter().any(|t| !old.contains(t)));
                listing.interval = if grew {
                    LIST_FIRST
                } else {
                    listing.interval.mul_f64(1.5).clamp(LIST_FIRST, LIST_MAX)
                };
                listing.tags = Some(tags.clone());
                listing.at = Some(asked);
                listing.generation += 1;
                Some((listing.generation, tags))
            }
            // Too many tags, or no listing (some registries want more than pull rights for
            // it): per-tag lookups from now on, whose failures are reported where they happen.
            Ok(None) | Err(_) => {
                listing.off = true;
                None
            }
        }
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
