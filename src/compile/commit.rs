//! The committer: one thread that writes each compiled package's layer and image into the store
//! while the next packages compile (dependants already use the published dir, so the commit is
//! off the critical path), and names the images of pulled packages. Whatever finished meanwhile
//! is named in one index update; then each package's key lock is let go, and what was compiled
//! goes to the pushers when the run pushes to a shared cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use oci_spec::image::Descriptor;

use super::job::ToStore;
use super::key::package_ref;
use super::outcome::PackageError;
use super::package::write_package_image;
use super::remote::{annotations, expected_config, Push};
use super::units::Unit;
use crate::oci::OciStore;
use crate::workdir::NameLock;

/// Per unit: the digest of its committed layer, or why the commit failed.
pub(super) type CommitResults = HashMap<usize, Result<String, PackageError>>;

/// Commits until every sender is gone. With `pushes`, every compiled package, once named, is
/// sent there (`pending` counts what is on its way).
pub(super) fn commit_all(
    store: &OciStore,
    base_digest: &str,
    units: &[Unit],
    commits: mpsc::Receiver<ToStore>,
    pushes: Option<mpsc::Sender<Push>>,
    pending: &AtomicUsize,
) -> CommitResults {
    let mut results = CommitResults::new();
    while let Ok(first) = commits.recv() {
        let batch: Vec<ToStore> = std::iter::once(first).chain(commits.try_iter()).collect();
        // (unit, ref, image, compiled here: its layer's diff_id)
        let mut named: Vec<(usize, String, Descriptor, Option<String>)> = Vec::new();
        let mut locks: Vec<NameLock> = Vec::new();
        for item in batch {
            match item {
                ToStore::Compiled(commit) => {
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
                            Some(image.diff_id),
                        ));
                        image.layer_digest
                    })
                    .map_err(PackageError::Store);
                    results.insert(commit.unit, result);
                    locks.extend(commit.lock);
                }
                ToStore::Pulled {
                    unit,
                    manifest,
                    lock,
                } => {
                    let u = &units[unit];
                    named.push((unit, package_ref(&u.name, &u.key), manifest, None));
                    locks.extend(lock);
                }
            }
        }
        let refs: Vec<(String, Descriptor)> = named
            .iter()
            .map(|(_, n, d, _)| (n.clone(), d.clone()))
            .collect();
        if let Err(e) = store.set_refs(&refs) {
            let e = Arc::new(e);
            for (i, _, _, _) in &named {
                results.insert(*i, Err(PackageError::Name(e.clone())));
            }
            named.clear();
        }
        // Named: another run waiting for one of these keys finds it in the store now.
        drop(locks);
        if let Some(pushes) = &pushes {
            send_pushes(pushes, named, units, base_digest, pending);
        }
    }
    results
}

/// Hands the packages compiled here (those with a `diff_id`) of a named batch to the pushers.
fn send_pushes(
    pushes: &mpsc::Sender<Push>,
    named: Vec<(usize, String, Descriptor, Option<String>)>,
    units: &[Unit],
    base_digest: &str,
    pending: &AtomicUsize,
) {
    for (i, _, manifest, diff_id) in named {
        let Some(diff_id) = diff_id else {
            continue;
        };
        let mut config = expected_config(units, i, base_digest);
        config.diff_id = diff_id;
        pending.fetch_add(1, Ordering::SeqCst);
        let sent = pushes.send(Push::Package {
            name: units[i].name.clone(),
            manifest,
            config,
            annotations: annotations(units, i, base_digest),
        });
        if sent.is_err() {
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
