//! The committer: one thread that writes each compiled package's layer and image into the store
//! while the next packages compile (dependants already use the published dir, so the commit is
//! off the critical path). Whatever finished meanwhile is named in one index update.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};

use oci_spec::image::Descriptor;

use super::job::Commit;
use super::key::package_ref;
use super::outcome::PackageError;
use super::package::write_package_image;
use super::units::Unit;
use crate::oci::OciStore;

/// Per unit: the digest of its committed layer, or why the commit failed.
pub(super) type CommitResults = HashMap<usize, Result<String, PackageError>>;

/// Commits until every sender is gone.
pub(super) fn commit_all(
    store: &OciStore,
    base_digest: &str,
    units: &[Unit],
    commits: mpsc::Receiver<Commit>,
) -> CommitResults {
    let mut results = CommitResults::new();
    while let Ok(first) = commits.recv() {
        let batch: Vec<Commit> = std::iter::once(first).chain(commits.try_iter()).collect();
        let mut named: Vec<(usize, String, Descriptor)> = Vec::new();
        for commit in batch {
            let unit = &units[commit.unit];
            let result = write_package_image(
                store,
                &commit.input,
                &unit.published,
                &unit.dependency_names(units),
                base_digest,
            )
            .map(|image| {
                named.push((
                    commit.unit,
                    package_ref(&unit.name, &unit.key),
                    image.manifest,
                ));
                image.layer_digest
            })
            .map_err(PackageError::Store);
            results.insert(commit.unit, result);
        }
        let refs: Vec<(String, Descriptor)> = named
            .iter()
            .map(|(_, n, d)| (n.clone(), d.clone()))
            .collect();
        if let Err(e) = store.set_refs(&refs) {
            let e = Arc::new(e);
            for (i, _, _) in &named {
                results.insert(*i, Err(PackageError::Name(e.clone())));
            }
        }
    }
    results
}
