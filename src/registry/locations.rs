//! Which repositories are known to hold which blobs, so that a push can ask the registry to
//! mount a blob from another repository instead of uploading it again (as containers/image's
//! blob info cache does). Learned from every push and pull; kept in a small JSON file, rewritten
//! atomically; a lost or unreadable file only costs uploads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::reference::Repository;

/// Repositories remembered per blob; the oldest are forgotten first.
const PER_BLOB: usize = 8;
/// Blobs remembered in all; the file stays small.
const BLOBS: usize = 20_000;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Known {
    /// digest -> "registry/name", most recent last.
    blobs: BTreeMap<String, Vec<String>>,
    /// Insertion order, to forget the oldest blobs.
    order: Vec<String>,
}

pub struct BlobLocations {
    path: Option<PathBuf>,
    known: Mutex<Known>,
}

impl BlobLocations {
    /// Reads `path` (nothing is remembered without one).
    pub fn load(path: Option<&Path>) -> BlobLocations {
        let known = path
            .and_then(|p| fs_err::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        BlobLocations {
            path: path.map(Path::to_path_buf),
            known: Mutex::new(known),
        }
    }

    /// Repositories of `registry` other than `except` known to hold `digest`, newest first.
    pub fn candidates(&self, digest: &str, registry: &str, except: &Repository) -> Vec<Repository> {
        let known = self.known.lock().expect("locations lock");
        let Some(places) = known.blobs.get(digest) else {
            return Vec::new();
        };
        places
            .iter()
            .rev()
            .filter_map(|place| {
                let (reg, name) = place.split_once('/')?;
                (reg == registry && name != except.name).then(|| Repository {
                    registry: reg.to_string(),
                    name: name.to_string(),
                })
            })
            .collect()
    }

    /// Remembers that `repository` holds these blobs, and saves.
    pub fn record<'a>(&self, repository: &Repository, digests: impl IntoIterator<Item = &'a str>) {
        let place = repository.to_string();
        let mut known = self.known.lock().expect("locations lock");
        for digest in digests {
            let places = known.blobs.entry(digest.to_string()).or_default();
            let is_new = places.is_empty();
            places.retain(|p| p != &place);
            places.push(place.clone());
            if places.len() > PER_BLOB {
                places.remove(0);
            }
            if is_new {
                known.order.push(digest.to_string());
            }
        }
        while known.order.len() > BLOBS {
            let oldest = known.order.remove(0);
            known.blobs.remove(&oldest);
        }
        // Keep `order` and `blobs` in step even if the file was edited by hand.
        let present: BTreeSet<String> = known.blobs.keys().cloned().collect();
        known.order.retain(|d| present.contains(d));
        if let Some(path) = &self.path {
            if let Ok(bytes) = serde_json::to_vec(&*known) {
                if let Some(dir) = path.parent() {
                    let _ = fs_err::create_dir_all(dir);
                }
                // Best effort: the record only saves uploads.
                let _ = crate::oci::store::write_atomic(path, &bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_loads_and_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob-locations.json");
        let repo = |name: &str| Repository {
            registry: "r:5000".into(),
            name: name.into(),
        };
        let locations = BlobLocations::load(Some(&path));
        locations.record(&repo("a"), ["sha256:1", "sha256:2"]);
        locations.record(&repo("b"), ["sha256:1"]);
        let again = BlobLocations::load(Some(&path));
        assert_eq!(
            again.candidates("sha256:1", "r:5000", &repo("c")),
            vec![repo("b"), repo("a")]
        );
        assert_eq!(
            again.candidates("sha256:1", "r:5000", &repo("b")),
            vec![repo("a")]
        );
        assert!(again
            .candidates("sha256:1", "other:1", &repo("c"))
            .is_empty());
        for i in 0..PER_BLOB + 2 {
            again.record(&repo(&format!("x{i}")), ["sha256:2"]);
        }
        assert_eq!(
            again.candidates("sha256:2", "r:5000", &repo("c")).len(),
            PER_BLOB
        );
    }
}
