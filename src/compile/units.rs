//! The plan's packages as units of a compile run: each with its key (which covers its
//! dependencies' keys, so the whole transitive closure), where it is published, its log, where
//! its files come from, and whether the store already has it.
//!
//! A package of a compiled release is imported under its import key. A source package is
//! compiled under its cache key, unless the store has it already, or an imported package (in
//! the store, or in this run's compiled releases) stands in for it by the director's rule:
//! then its key is that import's key, so whatever depends on it is keyed by what it really used.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::key::{cache_key, import_key, package_ref, reuse_key};
use super::package::{
    restore_from_store, CACHE_KEY_ANNOTATION, REUSE_KEY_ANNOTATION, STEMCELL_ANNOTATION,
};
use crate::oci::store::annotations;
use crate::oci::{image, OciStore};
use crate::plan::Plan;
use crate::release::Stemcell;
use crate::workdir::WorkDir;

/// Where a unit's files come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Compiled in a sandbox (by this run, or found in the store under its cache key).
    Compile,
    /// A compiled release's package, imported from its archive.
    Import,
    /// A source package an imported package stands in for.
    Reuse,
}

/// Everything known about one plan node during the run.
pub(super) struct Unit {
    pub name: String,
    pub release: String,
    pub fingerprint: String,
    pub key: String,
    pub origin: Origin,
    /// The director's rule as a key, when there is a stemcell to apply it with.
    pub reuse_key: Option<String>,
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

/// The compilation base as the keys see it: its manifest digest, and its stemcell identity
/// (which decides what imported packages may stand in for compiles).
#[derive(Clone, Copy, Debug)]
pub(super) struct BaseIdentity<'a> {
    pub digest: &'a str,
    pub stemcell: Option<&'a Stemcell>,
}

/// An imported package that could stand in for a source package.
struct Candidate {
    stemcell: Stemcell,
    key: String,
}

/// One unit per plan node, in the plan's (topological) order. Compiled releases' packages are
/// keyed first, so that any source package can find them; each source package after its
/// dependencies, whose final keys its own covers. `base` is `None` only for plans with nothing
/// to compile.
pub(super) fn units(
    plan: &Plan,
    wd: &WorkDir,
    refs: &HashMap<String, Descriptor>,
    base: Option<BaseIdentity<'_>>,
) -> Vec<Unit> {
    let mut slots: Vec<Option<Unit>> = (0..plan.nodes.len()).map(|_| None).collect();
    let mut candidates = stored_candidates(refs);
    let new_unit = |id: usize, key: String, origin: Origin, reuse_key: Option<String>| {
        let node = &plan.nodes[id];
        let (rid, _) = node.members[0];
        Unit {
            name: node.name.clone(),
            release: plan.releases[rid].name.clone(),
            fingerprint: node.fingerprint.clone(),
            published: wd.packages().join(&key),
            log: wd.package_log(&node.name, &key),
            key,
            origin,
            reuse_key,
            dependencies: node.dependencies.clone(),
            cached: None,
            member: node.members[0],
        }
    };
    let deps_of = |slots: &[Option<Unit>], id: usize, pick: fn(&Unit) -> Option<&String>| {
        plan.nodes[id]
            .dependencies
            .iter()
            .map(|&d| {
                let unit = slots[d].as_ref().expect("dependencies come first");
                pick(unit).map(|k| (unit.name.clone(), k.clone()))
            })
            .collect::<Option<Vec<(String, String)>>>()
    };

    for (id, node) in plan.nodes.iter().enumerate() {
        let Some(stemcell) = &node.compiled_for else {
            continue;
        };
        let (rid, pid) = node.members[0];
        let archive = plan.releases[rid].packages[pid]
            .sha1
            .clone()
            .unwrap_or_default();
        let keys = deps_of(&slots, id, |u| Some(&u.key)).expect("import keys are known");
        let key = import_key(&node.name, &node.fingerprint, stemcell, &archive, &keys);
        let reuse_deps = deps_of(&slots, id, |u| u.reuse_key.as_ref()).unwrap_or_default();
        let reuse = reuse_key(&node.name, &node.fingerprint, stemcell, &reuse_deps);
        candidates
            .entry(reuse.clone())
            .or_default()
            .push(Candidate {
                stemcell: stemcell.clone(),
                key: key.clone(),
            });
        slots[id] = Some(new_unit(id, key, Origin::Import, Some(reuse)));
    }

    for (id, node) in plan.nodes.iter().enumerate() {
        if node.is_compiled() {
            continue;
        }
        let base = base.expect("a plan with packages to compile has a compilation base");
        let keys = deps_of(&slots, id, |u| Some(&u.key)).expect("keys are known");
        let key = cache_key(&node.name, &node.fingerprint, base.digest, &keys);
        let reuse = base.stemcell.and_then(|stemcell| {
            let deps = deps_of(&slots, id, |u| u.reuse_key.as_ref())?;
            Some(reuse_key(&node.name, &node.fingerprint, stemcell, &deps))
        });
        let compiled_here = refs.contains_key(&package_ref(&node.name, &key));
        let stand_in = match (&reuse, base.stemcell) {
            (Some(reuse), Some(stemcell)) if !compiled_here => candidates
                .get(reuse)
                .and_then(|found| best_candidate(found, stemcell)),
            _ => None,
        };
        slots[id] = Some(match stand_in {
            Some(import) => new_unit(id, import, Origin::Reuse, reuse),
            None => new_unit(id, key, Origin::Compile, reuse),
        });
    }
    slots
        .into_iter()
        .map(|u| u.expect("every node has a unit"))
        .collect()
}

/// Imported packages in the store, by reuse key.
fn stored_candidates(refs: &HashMap<String, Descriptor>) -> HashMap<String, Vec<Candidate>> {
    let mut out: HashMap<String, Vec<Candidate>> = HashMap::new();
    for descriptor in refs.values() {
        let notes = annotations(descriptor);
        let (Some(reuse), Some(stemcell), Some(key)) = (
            notes.get(REUSE_KEY_ANNOTATION),
            notes.get(STEMCELL_ANNOTATION),
            notes.get(CACHE_KEY_ANNOTATION),
        ) else {
            continue;
        };
        let Ok(stemcell) = Stemcell::parse(stemcell) else {
            continue;
        };
        out.entry(reuse.clone()).or_default().push(Candidate {
            stemcell,
            key: key.clone(),
        });
    }
    out
}

/// The director's choice: a package compiled for exactly this stemcell, else the newest one
/// compiled for the same OS and major version; ties by key, so the choice is stable.
fn best_candidate(found: &[Candidate], stemcell: &Stemcell) -> Option<String> {
    found
        .iter()
        .filter(|c| c.stemcell.serves(stemcell))
        .max_by(|a, b| {
            (a.stemcell == *stemcell)
                .cmp(&(b.stemcell == *stemcell))
                .then_with(|| a.stemcell.compare_versions(&b.stemcell))
                .then_with(|| b.key.cmp(&a.key))
        })
        .map(|c| c.key.clone())
}

/// Marks the units the store already has (and restores their published dirs when missing).
/// A reused unit whose import is in this run is found later, once imported.
pub(super) fn find_cached(
    units: &mut [Unit],
    store: &OciStore,
    refs: &HashMap<String, Descriptor>,
) {
    for unit in units {
        unit.cached = cached(unit, store, refs);
    }
}

/// A package is cached when its image is in the store (manifest readable, layer present with
/// the right size) and its published dir exists, or can be restored from the image.
pub(super) fn cached(
    unit: &Unit,
    store: &OciStore,
    refs: &HashMap<String, Descriptor>,
) -> Option<String> {
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
