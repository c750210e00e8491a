//! The plan's packages as units of a compile run: each with its cache key (which covers its
//! dependencies' keys, so the whole transitive closure), where it is published, its log, and
//! whether the store already has it.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::key::{cache_key, package_ref};
use super::package::restore_from_store;
use crate::oci::{image, OciStore};
use crate::plan::Plan;
use crate::workdir::WorkDir;

/// Everything known about one plan node during the run.
pub(super) struct Unit {
    pub name: String,
    pub release: String,
    pub fingerprint: String,
    pub key: String,
    pub dependencies: Vec<usize>,
    /// `WORK/packages/<key>`: the compiled files, mounted by dependants.
    pub published: PathBuf,
    pub log: PathBuf,
    /// When the store has it: the digest of its layer.
    pub cached: Option<String>,
    /// (release, package) staged for this unit.
    pub member: (usize, usize),
}

impl Unit {
    /// The direct dependencies' names, in the plan's order.
    pub fn dependency_names(&self, units: &[Unit]) -> Vec<String> {
        self.dependencies
            .iter()
            .map(|&d| units[d].name.clone())
            .collect()
    }
}

/// One unit per plan node, in the plan's (topological) order, so each dependency's key is known
/// before its dependants'.
pub(super) fn units(plan: &Plan, wd: &WorkDir, base_digest: &str) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        let deps: Vec<(String, String)> = node
            .dependencies
            .iter()
            .map(|&d| (units[d].name.clone(), units[d].key.clone()))
            .collect();
        let key = cache_key(&node.name, &node.fingerprint, base_digest, &deps);
        let (rid, _) = node.members[0];
        units.push(Unit {
            name: node.name.clone(),
            release: plan.releases[rid].name.clone(),
            fingerprint: node.fingerprint.clone(),
            published: wd.packages().join(&key),
            log: wd.package_log(&node.name, &key),
            key,
            dependencies: node.dependencies.clone(),
            cached: None,
            member: node.members[0],
        });
    }
    units
}

/// Marks the units the store already has. One read of the index for all lookups: a no-op run
/// over hundreds of packages must not parse index.json once per package.
pub(super) fn find_cached(
    units: &mut [Unit],
    store: &OciStore,
) -> Result<(), crate::oci::OciError> {
    let refs = store.ref_map()?;
    for unit in units {
        unit.cached = cached(unit, store, &refs);
    }
    Ok(())
}

/// A package is cached when its image is in the store (manifest readable, layer present with
/// the right size) and its published dir exists, or can be restored from the image.
fn cached(unit: &Unit, store: &OciStore, refs: &HashMap<String, Descriptor>) -> Option<String> {
    let descriptor = refs.get(&package_ref(&unit.name, &unit.key))?.clone();
    let manifest = image::read_manifest(store, &descriptor).ok()?;
    for layer in manifest.layers() {
        let path = store.blob_path(layer.digest()).ok()?;
        if fs_err::metadata(path).ok()?.len() != layer.size() {
            return None;
        }
    }
    if !unit.published.is_dir() {
        restore_from_store(store, &descriptor, &unit.name, &unit.published).ok()?;
    }
    manifest.layers().last().map(|l| l.digest().to_string())
}
