//! The shared cache as a compile run uses it: which packages it has (one parallel sweep of
//! `HEAD`s before the run), pulling one into the store and its published dir (verified three
//! ways: the blobs by digest, the manifest and config against the unit, the unpacked layer
//! against its `diff_id`), and pushing what the run compiled from a pool of threads, off the
//! critical path.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use oci_spec::image::{Descriptor, MediaType};
use sha2::Digest as _;

use super::key::package_ref;
use super::package::{package_annotations, BASE_ANNOTATION};
use super::units::Unit;
use crate::extract::{ExtractLimits, TreeBuilder};
use crate::oci::store::OciStore;
use crate::oci::{self, ImageSpec, Layer, OciError};
use crate::shared_cache::{
    package_tag, DependencyKey, PackageConfig, SharedCache, SharedCacheError,
};

/// `HEAD`s in flight during the sweep.
const SWEEP_THREADS: usize = 8;
/// Pushes in flight.
pub(super) const PUSH_THREADS: usize = 4;

/// What the cache must say of a unit: its name, key, fingerprint, base and dependencies (the
/// `diff_id` is the cache's to tell).
pub(super) fn expected_config(units: &[Unit], index: usize, base_digest: &str) -> PackageConfig {
    let unit = &units[index];
    let mut dependencies: Vec<DependencyKey> = unit
        .dependencies
        .iter()
        .map(|&d| DependencyKey {
            name: units[d].name.clone(),
            cache_key: units[d].key.clone(),
        })
        .collect();
    dependencies.sort();
    PackageConfig {
        name: unit.name.clone(),
        fingerprint: unit.fingerprint.clone(),
        cache_key: unit.key.clone(),
        compilation_base: base_digest.to_string(),
        dependencies,
        diff_id: String::new(),
    }
}

/// The annotations of a package's image, in the store and in the cache.
pub(super) fn annotations(
    units: &[Unit],
    index: usize,
    base_digest: &str,
) -> BTreeMap<String, String> {
    let unit = &units[index];
    let mut notes = package_annotations(
        &unit.name,
        &unit.fingerprint,
        &unit.key,
        &unit.dependency_names(units),
    );
    notes.insert(BASE_ANNOTATION.to_string(), base_digest.to_string());
    notes
}

/// What the cache has of the units of `which`: the reference to pull each by (the tag, or
/// the digest a lookup found), or `None`. One listing of the repository's tags answers for
/// all when the registry gives one ([`SharedCache::listing`]); otherwise lookups,
/// `SWEEP_THREADS` at a time, in waves: a unit only once every dependency of it in `which`
/// was found, since a package cannot be in the cache without them (a fleet's first run asks
/// about its leaves only, not about every package). A failure of the registry as a whole
/// stops the sweep (the cache is off from then on); it is the cache's to report.
pub(super) fn sweep(
    cache: &SharedCache,
    units: &[Unit],
    which: &[usize],
) -> Result<Vec<Option<String>>, SharedCacheError> {
    let mut found: Vec<Option<String>> = vec![None; units.len()];
    if let Some((_, listed)) = cache.listing(true) {
        for &i in which {
            let tag = package_tag(&units[i].name, &units[i].key);
            if listed.contains(&tag) {
                found[i] = Some(tag);
            }
        }
        return Ok(found);
    }
    let asked: std::collections::HashSet<usize> = which.iter().copied().collect();
    let mut decided: std::collections::HashSet<usize> = std::collections::HashSet::new();
    loop {
        let mut wave = Vec::new();
        for &i in which {
            if decided.contains(&i) {
                continue;
            }
            let deps = units[i].dependencies.iter().filter(|d| asked.contains(d));
            let mut ready = true;
            let mut missing = false;
            for &d in deps {
                if !decided.contains(&d) {
                    ready = false;
                } else if found[d].is_none() {
                    missing = true;
                }
            }
            if missing {
                decided.insert(i);
            } else if ready {
                wave.push(i);
            }
        }
        if wave.is_empty() {
            return Ok(found);
        }
        let hits = sweep_wave(cache, units, &wave)?;
        for (i, hit) in wave.into_iter().zip(hits) {
            found[i] = hit.map(|d| d.digest().to_string());
            decided.insert(i);
        }
    }
}

/// One wave of lookups, `SWEEP_THREADS` at a time: what each of `wave` has in the cache.
fn sweep_wave(
    cache: &SharedCache,
    units: &[Unit],
    wave: &[usize],
) -> Result<Vec<Option<Descriptor>>, SharedCacheError> {
    let found: Mutex<Vec<Option<Descriptor>>> = Mutex::new(vec![None; wave.len()]);
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<SharedCacheError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..SWEEP_THREADS.min(wave.len()) {
            scope.spawn(|| loop {
                if !cache.usable() || failure.lock().expect("failure lock").is_some() {
                    return;
                }
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = wave.get(n) else {
                    return;
                };
                match cache.lookup(&package_tag(&units[i].name, &units[i].key)) {
                    Ok(hit) => found.lock().expect("found lock")[n] = hit,
                    Err(e) if e.is_outage() || e.is_interrupted() => {
                        failure.lock().expect("failure lock").get_or_insert(e);
                    }
                    // One odd answer costs that package's lookup only.
                    Err(e) => {
                        cache.failed(&e, false);
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(e) => Err(e),
        None => Ok(found.into_inner().expect("found lock")),
    }
}

/// A package pulled into the store: its image written (not yet named) and its files
/// published for dependants.
pub(super) struct PulledUnit {
    pub manifest: Descriptor,
    pub layer_digest: String,
}

/// Pulls unit `index` from the cache (by `reference`, the digest a lookup found, or else by its
/// tag), unpacks it into its
/// published dir and writes its image, the same image a compile here would have written.
/// Nothing of a package that fails a check is kept: not its blob (checked before it is
/// stored), not its files.
pub(super) fn pull_unit(
    cache: &SharedCache,
    store: &OciStore,
    units: &[Unit],
    index: usize,
    base_digest: &str,
    reference: Option<&str>,
    limits: &ExtractLimits,
) -> Result<PulledUnit, SharedCacheError> {
    let unit = &units[index];
    let tag = package_tag(&unit.name, &unit.key);
    let expected = expected_config(units, index, base_digest);
    let fetched = cache.fetch_package(store, &tag, reference.unwrap_or(&tag), &expected)?;
    let layer = Descriptor::new(
        MediaType::ImageLayerGzip,
        fetched.layer.size(),
        fetched.layer.digest().clone(),
    );
    let invalid = |message: String| SharedCacheError::Invalid {
        reference: format!("{}:{tag}", cache.repository()),
        message,
    };
    let store_error = |source: OciError| SharedCacheError::Store {
        repository: cache.repository().to_string(),
        what: format!("pulling {tag}"),
        source: Box::new(source),
    };
    let (diff_id, uncompressed_size) = unpack_layer(
        store,
        &layer,
        &unit.name,
        &unit.published,
        &fetched.config.diff_id,
        limits,
    )
    .map_err(|e| match e {
        UnpackError::Store(e) => store_error(e),
        UnpackError::Invalid(message) => invalid(message),
    })?;
    let notes = annotations(units, index, base_digest);
    let manifest = oci::write_image(
        store,
        &ImageSpec {
            layers: vec![Layer {
                descriptor: layer.clone(),
                diff_id: crate::oci::store::sha256_digest(
                    diff_id.strip_prefix("sha256:").unwrap_or(&diff_id),
                ),
                uncompressed_size,
            }],
            annotations: notes.clone(),
            ..ImageSpec::default()
        },
    )
    .map_err(store_error)?;
    let mut named = manifest;
    named.set_annotations(Some(notes.into_iter().collect()));
    Ok(PulledUnit {
        manifest: named,
        layer_digest: layer.digest().to_string(),
    })
}

enum UnpackError {
    Store(OciError),
    Invalid(String),
}

/// Unpacks a package layer (`var/vcap/packages/<name>/…`) into `published`, as any untrusted
/// archive (only what is under that dir, links that may point anywhere as in the sandbox, where
/// `/var/vcap/packages/<dep>/…` means a dependency), hashing the uncompressed stream on the
/// way: unless it is `diff_id`, nothing is published. When another run on this work dir
/// published the same key first (same key, same package), the layer is only hashed.
fn unpack_layer(
    store: &OciStore,
    layer: &Descriptor,
    name: &str,
    published: &Path,
    diff_id: &str,
    limits: &ExtractLimits,
) -> Result<(String, u64), UnpackError> {
    let store_error = |e: OciError| UnpackError::Store(e);
    let blob_path = store.blob_path(layer.digest()).map_err(store_error)?;
    let blob = store.open_blob(layer).map_err(store_error)?;
    let mut hashing = Hashing {
        inner: flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(256 * 1024, blob)),
        hasher: sha2::Sha256::new(),
        size: 0,
    };
    let unpackable = |e: crate::extract::ExtractError| {
        UnpackError::Invalid(format!("its layer cannot be unpacked: {e}"))
    };
    let builder = match TreeBuilder::new(published, limits) {
        Err(crate::extract::ExtractError::DestinationExists { .. }) if published.is_dir() => None,
        Err(e) => return Err(unpackable(e)),
        Ok(mut builder) => {
            builder
                .only_under(&Path::new("var/vcap/packages").join(name))
                .allow_escaping_symlinks(true);
            builder
                .apply(&mut hashing, &blob_path, false)
                .map_err(unpackable)?;
            Some(builder)
        }
    };
    // The rest of the stream (tar's end blocks, or all of it) counts for the digest.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| UnpackError::Invalid(format!("its layer cannot be read: {e}")))?;
    let found = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    if found != diff_id {
        return Err(UnpackError::Invalid(format!(
            "its layer unpacks to {found}, but its manifest says {diff_id}"
        )));
    }
    if let Some(builder) = builder {
        if !builder.found_under() {
            return Err(UnpackError::Invalid(format!(
                "its layer has no var/vcap/packages/{name}"
            )));
        }
        match builder.finish() {
            Ok(_) => {}
            Err(crate::extract::ExtractError::DestinationExists { .. }) if published.is_dir() => {}
            Err(e) => return Err(unpackable(e)),
        }
    }
    Ok((found, hashing.size))
}

struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Something to push.
pub(super) enum Push {
    /// A package compiled here (or found in this work dir and missing from the cache).
    Package {
        name: String,
        manifest: Descriptor,
        config: PackageConfig,
        annotations: BTreeMap<String, String>,
    },
    /// The compilation base, under the tag the fleet finds it by.
    Base { manifest: Descriptor, tag: String },
}

/// What the pushes did.
#[derive(Debug, Default)]
pub struct PushReport {
    pub pushed: usize,
    /// (what, why) for every push that failed.
    pub failed: Vec<(String, String)>,
}

/// Pushes everything sent on `queue` until every sender is gone, `PUSH_THREADS` at a time.
/// A failure is the cache's to report (and may turn pushes off); the rest goes on.
pub(super) fn push_all(
    cache: &SharedCache,
    store: &OciStore,
    queue: mpsc::Receiver<Push>,
    pending: &AtomicUsize,
) -> PushReport {
    let queue = Mutex::new(queue);
    let report = Mutex::new(PushReport::default());
    std::thread::scope(|scope| {
        for _ in 0..PUSH_THREADS {
            scope.spawn(|| loop {
                let item = match queue.lock().expect("push queue").recv() {
                    Ok(item) => item,
                    Err(_) => return,
                };
                let (what, result) = if !cache.pushes() {
                    pending.fetch_sub(1, Ordering::SeqCst);
                    continue;
                } else {
                    match &item {
                        Push::Package {
                            name,
                            manifest,
                            config,
                            annotations,
                        } => (
                            package_ref(name, &config.cache_key),
                            cache.push_package(store, manifest, config, annotations),
                        ),
                        Push::Base { manifest, tag } => (
                            format!("compilation base {tag}"),
                            cache.push_base(store, manifest, tag),
                        ),
                    }
                };
                let mut report = report.lock().expect("push report");
                match result {
                    Ok(()) => report.pushed += 1,
                    Err(e) => {
                        report.failed.push((what, e.to_string()));
                        drop(report);
                        cache.failed(&e, true);
                    }
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    report.into_inner().expect("push report")
}
