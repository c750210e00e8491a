//! Whole images between the store and a registry. A push sends what the repository lacks
//! (HEAD first, then a mount from a repository known to hold the blob, else an upload), several
//! blobs at once, and the manifest last: a tag never names an image whose blobs are not all
//! there. A pull verifies every blob on its way into the store and stores the manifest last;
//! the caller names it. A failure leaves no partial blob and no ref behind.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::client::{Client, Manifest, MAX_MANIFEST};
use super::reference::{Reference, Repository};
use super::RegistryError;
use crate::oci::image::host_arch;
use crate::oci::OciStore;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a blob is, for the display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    Config,
    Layer,
}

/// How a blob got where it had to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Sent to the registry.
    Uploaded,
    /// The repository had it already.
    Existed,
    /// The registry linked it from another repository.
    Mounted { from: String },
    /// Fetched into the store.
    Downloaded,
    /// The store had it already.
    Stored,
}

/// Told about each blob of a transfer, from several threads.
pub trait Reporter: Sync {
    fn start(&self, _digest: &str, _size: u64, _kind: BlobKind) {}
    fn advance(&self, _digest: &str, _done: u64) {}
    fn finish(&self, _digest: &str, _outcome: &BlobOutcome) {}
}

/// A reporter that says nothing.
pub struct NoReporter;
impl Reporter for NoReporter {}

/// What a push did.
#[derive(Clone, Debug, Default)]
pub struct PushReport {
    /// The manifest's digest as stored by the registry.
    pub digest: String,
    pub uploaded: usize,
    pub existed: usize,
    pub mounted: usize,
    pub bytes_uploaded: u64,
}

/// Pushes the image (manifest or index) `manifest` of `store` to `destination` (its tag, or by
/// digest without one).
pub fn push_image(
    client: &Client,
    store: &OciStore,
    manifest: &Descriptor,
    destination: &Reference,
    reporter: &dyn Reporter,
) -> Result<PushReport, RegistryError> {
    let repository = &destination.repository;
    let mut report = PushReport::default();
    let bytes = store.read_blob(manifest, MAX_MANIFEST)?;
    let media_type = manifest.media_type().to_string();
    if is_index(&media_type) {
        let index: ImageIndex = parse(store, manifest, &bytes)?;
        for child in index.manifests() {
            let child_report = push_manifest_blobs(client, store, child, repository, reporter)?;
            add(&mut report, &child_report);
            let child_bytes = store.read_blob(child, MAX_MANIFEST)?;
            client.put_manifest(
                repository,
                child.digest().as_ref(),
                child.media_type().as_ref(),
                &child_bytes,
            )?;
        }
    } else {
        let blobs = push_manifest_blobs(client, store, manifest, repository, reporter)?;
        add(&mut report, &blobs);
    }
    let reference = destination
        .tag
        .clone()
        .unwrap_or_else(|| manifest.digest().to_string());
    report.digest = client.put_manifest(repository, &reference, &media_type, &bytes)?;
    Ok(report)
}

fn add(total: &mut PushReport, part: &PushReport) {
    total.uploaded += part.uploaded;
    total.existed += part.existed;
    total.mounted += part.mounted;
    total.bytes_uploaded += part.bytes_uploaded;
}

/// The config and layers of one manifest, sent where missing.
fn push_manifest_blobs(
    client: &Client,
    store: &OciStore,
    manifest: &Descriptor,
    repository: &Repository,
    reporter: &dyn Reporter,
) -> Result<PushReport, RegistryError> {
    let bytes = store.read_blob(manifest, MAX_MANIFEST)?;
    let parsed: ImageManifest = parse(store, manifest, &bytes)?;
    let mut blobs: Vec<(Descriptor, BlobKind)> = vec![(parsed.config().clone(), BlobKind::Config)];
    for layer in parsed.layers() {
        if !blobs.iter().any(|(d, _)| d.digest() == layer.digest()) {
            blobs.push((layer.clone(), BlobKind::Layer));
        }
    }
    let outcomes = in_parallel(&blobs, client.options.parallel, |(blob, kind)| {
        client.check_cancel()?;
        push_blob(client, store, blob, *kind, repository, reporter)
    })?;
    let mut report = PushReport::default();
    for ((blob, _), outcome) in blobs.iter().zip(&outcomes) {
        match outcome {
            BlobOutcome::Uploaded => {
                report.uploaded += 1;
                report.bytes_uploaded += blob.size();
            }
            BlobOutcome::Mounted { .. } => report.mounted += 1,
            _ => report.existed += 1,
        }
    }
    client
        .locations
        .record(repository, blobs.iter().map(|(d, _)| d.digest().as_ref()));
    Ok(report)
}

fn push_blob(
    client: &Client,
    store: &OciStore,
    blob: &Descriptor,
    kind: BlobKind,
    repository: &Repository,
    reporter: &dyn Reporter,
) -> Result<BlobOutcome, RegistryError> {
    let digest = blob.digest().as_ref();
    reporter.start(digest, blob.size(), kind);
    let outcome = if client.blob_exists(repository, digest)?.is_some() {
        BlobOutcome::Existed
    } else {
        let path = store.blob_path(blob.digest())?;
        let on_disk = fs_err::metadata(&path)
            .map_err(crate::oci::OciError::io(&path))?
            .len();
        if on_disk != blob.size() {
            return Err(RegistryError::Store(crate::oci::OciError::invalid(
                &path,
                format!(
                    "{on_disk} bytes, but the image says {}: run `fissile-oci cache verify`",
                    blob.size()
                ),
            )));
        }
        let mut location = None;
        let mut mounted = None;
        for from in client
            .locations
            .candidates(digest, &repository.registry, repository)
        {
            // A mount the registry cannot do (the source is gone, or not ours to read) opens
            // an ordinary upload, which is what we would do next anyway.
            match client.mount_blob(repository, digest, &from) {
                Ok(None) => {
                    mounted = Some(from.name.clone());
                    break;
                }
                Ok(Some(upload)) => {
                    location = Some(upload);
                    break;
                }
                Err(RegistryError::Denied { .. }) | Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match mounted {
            Some(from) => BlobOutcome::Mounted { from },
            None => {
                client.push_blob(
                    repository,
                    digest,
                    blob.size(),
                    &path,
                    location,
                    &mut |done| reporter.advance(digest, done),
                )?;
                BlobOutcome::Uploaded
            }
        }
    };
    reporter.finish(digest, &outcome);
    Ok(outcome)
}

/// An image brought into the store: its manifest (for this host's platform), not yet named.
#[derive(Clone, Debug)]
pub struct PulledImage {
    pub manifest: Descriptor,
    /// The source with the digest it resolved to.
    pub reference: Reference,
}

/// Pulls `source` into `store`: for an index, the manifest for this host's platform.
pub fn pull_image(
    client: &Client,
    store: &OciStore,
    source: &Reference,
    reporter: &dyn Reporter,
) -> Result<PulledImage, RegistryError> {
    let repository = &source.repository;
    let mut manifest = client.get_manifest(repository, source.manifest_reference())?;
    if is_index(&manifest.media_type) {
        let index: ImageIndex = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| unsupported(repository, format!("the image index is not valid: {e}")))?;
        let chosen = pick_platform(&index).ok_or_else(|| {
            let offered: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| m.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            unsupported(
                repository,
                format!(
                    "{source} has no image for linux/{}; it offers: {}",
                    host_arch(),
                    offered.join(", ")
                ),
            )
        })?;
        manifest = client.get_manifest(repository, chosen.digest().as_ref())?;
    }
    if manifest.media_type.contains("distribution.manifest.v1")
        || serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            .ok()
            .and_then(|v| v.get("schemaVersion")?.as_u64())
            == Some(1)
    {
        return Err(unsupported(
            repository,
            format!("{source} is a schema 1 manifest, which is not supported: push it again with a current tool"),
        ));
    }
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| unsupported(repository, format!("{source}: not an image manifest: {e}")))?;
    let mut blobs: Vec<(Descriptor, BlobKind)> = vec![(parsed.config().clone(), BlobKind::Config)];
    for layer in parsed.layers() {
        let foreign = layer.media_type().to_string().contains("foreign");
        if foreign {
            return Err(unsupported(
                repository,
                format!(
                    "{source} has a foreign (non-distributable) layer {}",
                    layer.digest()
                ),
            ));
        }
        if !blobs.iter().any(|(d, _)| d.digest() == layer.digest()) {
            blobs.push((layer.clone(), BlobKind::Layer));
        }
    }
    in_parallel(&blobs, client.options.parallel, |(blob, kind)| {
        client.check_cancel()?;
        pull_blob(client, store, repository, blob, *kind, reporter)
    })?;
    let stored = store.put_bytes(media_type(&manifest), &manifest.bytes)?;
    client
        .locations
        .record(repository, blobs.iter().map(|(d, _)| d.digest().as_ref()));
    let mut reference = source.clone();
    reference.digest = Some(manifest.digest.clone());
    Ok(PulledImage {
        manifest: stored,
        reference,
    })
}

fn pull_blob(
    client: &Client,
    store: &OciStore,
    repository: &Repository,
    blob: &Descriptor,
    kind: BlobKind,
    reporter: &dyn Reporter,
) -> Result<(), RegistryError> {
    let digest = blob.digest().as_ref();
    reporter.start(digest, blob.size(), kind);
    if store.has_blob(blob.digest()) {
        reporter.finish(digest, &BlobOutcome::Stored);
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    client.pull_blob(repository, digest, blob.size(), &mut writer, &mut |done| {
        reporter.advance(digest, done)
    })?;
    writer
        .flush()
        .map_err(crate::oci::OciError::io(store.blobs_dir()))?;
    let (stored, _) = writer.finish()?;
    debug_assert_eq!(stored.as_ref(), digest, "pull_blob verified the content");
    reporter.finish(digest, &BlobOutcome::Downloaded);
    Ok(())
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

fn media_type(manifest: &Manifest) -> MediaType {
    match manifest.media_type.as_str() {
        "application/vnd.oci.image.manifest.v1+json" => MediaType::ImageManifest,
        other => MediaType::Other(other.to_string()),
    }
}

/// The entry for linux on this host's architecture.
fn pick_platform(index: &ImageIndex) -> Option<Descriptor> {
    let arch = host_arch();
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.architecture() == arch && p.os().to_string() == "linux")
        })
        .cloned()
}

fn parse<T: serde::de::DeserializeOwned>(
    store: &OciStore,
    descriptor: &Descriptor,
    bytes: &[u8],
) -> Result<T, RegistryError> {
    let path = store.blob_path(descriptor.digest())?;
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Store(crate::oci::OciError::invalid(
            &path,
            format!("not an image manifest or index: {e}"),
        ))
    })
}

fn unsupported(repository: &Repository, message: String) -> RegistryError {
    RegistryError::Unsupported {
        registry: repository.registry.clone(),
        message,
    }
}

/// Runs `work` on every item with up to `workers` threads; the first error stops the others
/// from taking more items and is returned.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> Result<R, RegistryError> + Sync,
) -> Result<Vec<R>, RegistryError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                match work(item) {
                    Ok(r) => results.lock().expect("results lock")[i] = Some(r),
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        first_error.lock().expect("error lock").get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every item done when none failed"))
        .collect())
}
