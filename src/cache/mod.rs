//! The work dir seen as a cache: what it holds (each image of the store with its kind, size and
//! last use), how big it is on disk, and how it is kept within bounds (`cache gc`: what crashed
//! runs left, what no image needs, and, under a size or age policy, the least recently used
//! images).
//!
//! - [`LastUse`]: when each image was last used, recorded by every compile.
//! - `usage`: the work dir's size as a CI cache quota counts it.
//! - `eviction`: which images a policy evicts (a pure function, tested as data).
//! - `collect`: the sweep itself ([`collect`]).

mod collect;
mod eviction;
mod usage;

use std::collections::{BTreeMap, HashMap, HashSet};

use oci_spec::image::Descriptor;

pub use collect::{collect, CollectError, CollectReport};
pub use eviction::{Policy, Victim};
pub use usage::disk_usage;

use crate::base::{BASE_DIGEST_ANNOTATION, KIND_ANNOTATION};
use crate::compile::{BASE_ANNOTATION, CACHE_KEY_ANNOTATION, NAME_ANNOTATION};
use crate::oci::gc::walk_references;
use crate::oci::store::{annotations, sha256_hex};
use crate::oci::{OciError, OciStore};
use crate::workdir::{LastUse, WorkDir};

/// What an image of the store is to the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A compiled (or imported) package: `WORK/packages/<key>` is its unpacked copy.
    Package { key: String, name: String },
    /// A compilation base, used by the packages compiled on it (by manifest digest).
    CompilationBase,
    /// A base, used by the compilation bases made of it.
    Base,
    /// Anything else (an image written by `fissile-oci image`): never evicted by a policy.
    Other,
}

impl EntryKind {
    pub fn label(&self) -> &'static str {
        match self {
            EntryKind::Package { .. } => "package",
            EntryKind::CompilationBase => "compilation-base",
            EntryKind::Base => "base",
            EntryKind::Other => "image",
        }
    }
}

/// One image of the store.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub descriptor: Descriptor,
    /// The manifest digest of what it was built on: a package's compilation base, a
    /// compilation base's base.
    pub built_on: Option<String>,
    /// Bytes of the blobs only this image reaches (shared layers count once, for the image
    /// lowest in the chain base <- compilation base <- package).
    pub blob_bytes: u64,
    /// Unix time of its last use in milliseconds, if recorded.
    pub last_use: Option<u64>,
}

/// Every image of the store, as the cache sees it.
pub fn inventory(wd: &WorkDir, store: &OciStore) -> Result<Vec<Entry>, OciError> {
    let uses = LastUse::load(wd);
    let refs = store.refs()?;
    let mut entries: Vec<Entry> = refs
        .into_iter()
        .map(|r| {
            let notes = annotations(&r.descriptor);
            let (kind, built_on) = match notes.get(KIND_ANNOTATION).map(String::as_str) {
                Some("base") => (EntryKind::Base, None),
                Some("compilation-base") => (
                    EntryKind::CompilationBase,
                    notes.get(BASE_DIGEST_ANNOTATION).cloned(),
                ),
                _ => match (notes.get(CACHE_KEY_ANNOTATION), notes.get(NAME_ANNOTATION)) {
                    (Some(key), Some(name)) => (
                        EntryKind::Package {
                            key: key.clone(),
                            name: name.clone(),
                        },
                        notes.get(BASE_ANNOTATION).cloned(),
                    ),
                    _ => (EntryKind::Other, None),
                },
            };
            Entry {
                last_use: uses.get(&r.name),
                name: r.name,
                kind,
                descriptor: r.descriptor,
                built_on,
                blob_bytes: 0,
            }
        })
        .collect();
    // Each blob counts for one image: bases first, so shared base layers are theirs.
    let rank = |kind: &EntryKind| match kind {
        EntryKind::Base => 0,
        EntryKind::CompilationBase => 1,
        EntryKind::Package { .. } => 2,
        EntryKind::Other => 3,
    };
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (rank(&entries[i].kind), entries[i].name.clone()));
    let mut counted = HashSet::new();
    for i in order {
        let mut bytes = 0;
        walk_references(store, &entries[i].descriptor, &mut |d| {
            if counted.insert(sha256_hex(d.digest())?.to_string()) {
                bytes += d.size();
            }
            Ok(())
        })?;
        entries[i].blob_bytes = bytes;
    }
    Ok(entries)
}

/// The names still used by something else in `entries`: compilation bases with packages on
/// them, bases with compilation bases made of them.
pub fn in_use(entries: &[Entry]) -> HashSet<String> {
    let by_digest: HashMap<String, &str> = entries
        .iter()
        .map(|e| (e.descriptor.digest().to_string(), e.name.as_str()))
        .collect();
    entries
        .iter()
        .filter_map(|e| by_digest.get(e.built_on.as_deref()?))
        .map(|n| n.to_string())
        .collect()
}

/// Sizes of the unpacked copies: `WORK/packages/<key>` per package, `WORK/rootfs/<hex>` per
/// base or compilation base, by image name.
pub fn unpacked_sizes(wd: &WorkDir, entries: &[Entry]) -> BTreeMap<String, u64> {
    entries
        .iter()
        .map(|e| {
            let dir = match &e.kind {
                EntryKind::Package { key, .. } => Some(wd.packages().join(key)),
                EntryKind::Base | EntryKind::CompilationBase => sha256_hex(e.descriptor.digest())
                    .ok()
                    .map(|hex| wd.rootfs().join(hex)),
                EntryKind::Other => None,
            };
            let bytes = dir.map(|d| disk_usage(&d)).unwrap_or(0);
            (e.name.clone(), bytes)
        })
        .collect()
}
