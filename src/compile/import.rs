//! Packages of compiled releases into the store: each archive (verified when its release was
//! loaded, and again as it is copied out of a tarball) is extracted safely, stored as a package
//! image like a compiled one (files under `var/vcap/packages/<name>/`, annotated with its
//! stemcell, reuse key and archive digest) and published for dependants. Then every source
//! package that an import stands in for is published from the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::image::Descriptor;

use super::compiler::{io, CompileError, CompileOptions};
use super::key::package_ref;
use super::outcome::Progress;
use super::package::{
    package_annotations, publish_dir, write_tree_image, ARCHIVE_ANNOTATION, REUSE_KEY_ANNOTATION,
    STEMCELL_ANNOTATION,
};
use super::report::PackageReport;
use super::stage::{materialize_packages, StageError};
use super::status::PackageStatus;
use super::units::{cached, Origin, Unit};
use crate::extract::{self, ExtractLimits};
use crate::oci::{OciError, OciStore};
use crate::plan::Plan;
use crate::release::PackageSource;

/// Why a compiled package could not be imported: its archive is bad input (exit 2), or the
/// store failed.
#[derive(thiserror::Error, Debug)]
pub enum ImportError {
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("storing it failed: {0}")]
    Store(#[from] OciError),
    #[error("cannot publish {}: {source}", .path.display())]
    Publish {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Missing(String),
}

/// Imports what the store does not have yet, then resolves every imported and reused unit;
/// reports them as `imported`.
pub(super) fn import_all(
    plan: &Plan,
    units: &mut [Unit],
    store: &OciStore,
    run_dir: &Path,
    options: &CompileOptions,
    reports: &mut [Option<PackageReport>],
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), CompileError> {
    let todo: Vec<usize> = (0..units.len())
        .filter(|&i| units[i].origin == Origin::Import && units[i].cached.is_none())
        .collect();
    let mut seconds: HashMap<usize, f64> = HashMap::new();
    if !todo.is_empty() {
        let dir = run_dir.join("imports");
        fs_err::create_dir_all(&dir).map_err(io(&dir))?;
        let archives = materialize_packages(
            todo.iter().map(|&i| (i, package_of(plan, &units[i]))),
            &dir,
        )
        // Copying a member out checks its digest again: a release that changed on disk.
        ?;
        let mut named: Vec<(String, Descriptor)> = Vec::new();
        for &i in &todo {
            let started = Instant::now();
            let unit = &units[i];
            let package = package_of(plan, unit);
            let (archive, label) = match (&package.source, archives.get(&i)) {
                (PackageSource::TarballMember { tarball, member }, Some(file)) => (
                    file.clone(),
                    PathBuf::from(format!("{}:{member}", tarball.display())),
                ),
                (PackageSource::Archive(file), _) => (file.clone(), file.clone()),
                _ => {
                    return Err(import_error(
                        plan,
                        unit,
                        ImportError::Missing("its archive was not found in the release".into()),
                    ))
                }
            };
            let image = import_one(
                plan,
                units,
                i,
                (&archive, &label),
                store,
                &dir,
                (&options.limits, options.source_date_epoch),
            )
            .map_err(|e| import_error(plan, &units[i], e))?;
            named.push(image);
            seconds.insert(i, started.elapsed().as_secs_f64());
        }
        store.set_refs(&named)?;
    }

    let refs = store.ref_map()?;
    for (i, unit) in units.iter_mut().enumerate() {
        if unit.origin == Origin::Compile {
            continue;
        }
        if unit.cached.is_none() {
            unit.cached = cached(unit, store, &refs);
        }
        let Some(layer) = unit.cached.clone() else {
            return Err(import_error(
                plan,
                unit,
                ImportError::Missing(format!(
                    "its image {} is not in the store after the import",
                    package_ref(&unit.name, &unit.key)
                )),
            ));
        };
        let report = PackageReport {
            name: unit.name.clone(),
            release: unit.release.clone(),
            fingerprint: unit.fingerprint.clone(),
            cache_key: unit.key.clone(),
            status: PackageStatus::Imported,
            seconds: seconds.get(&i).copied().unwrap_or(0.0),
            layer_digest: Some(layer),
            log: None,
            error: None,
            dependencies: Vec::new(),
        };
        progress(Progress::Finished { report: &report });
        reports[i] = Some(report);
    }
    Ok(())
}

fn package_of<'a>(plan: &'a Plan, unit: &Unit) -> &'a crate::release::Package {
    let (rid, pid) = unit.member;
    &plan.releases[rid].packages[pid]
}

fn import_error(plan: &Plan, unit: &Unit, source: ImportError) -> CompileError {
    let (rid, _) = unit.member;
    CompileError::Import {
        release: plan.releases[rid].path.clone(),
        package: unit.name.clone(),
        source: Box::new(source),
    }
}

/// Extracts one archive (its file, and its name in messages) into a staging dir, stores it
/// and publishes it; returns its ref.
fn import_one(
    plan: &Plan,
    units: &[Unit],
    index: usize,
    (archive, label): (&Path, &Path),
    store: &OciStore,
    dir: &Path,
    (limits, mtime): (&ExtractLimits, u64),
) -> Result<(String, Descriptor), ImportError> {
    let unit = &units[index];
    let stemcell = plan.nodes[index]
        .compiled_for
        .as_ref()
        .expect("imported units are compiled packages");
    let staging = tempfile::Builder::new()
        .prefix(&format!("{}-", unit.name))
        .tempdir_in(dir)
        .map_err(|source| ImportError::Publish {
            path: dir.to_path_buf(),
            source,
        })?;
    let tree = staging.path().join("tree");
    let file = fs_err::File::open(archive).map_err(|source| ImportError::Publish {
        path: archive.to_path_buf(),
        source,
    })?;
    extract::extract_reader(std::io::BufReader::new(file), label, &tree, limits)?;
    let mut notes = package_annotations(
        &unit.name,
        &unit.fingerprint,
        &unit.key,
        &unit.dependency_names(units),
    );
    notes.insert(STEMCELL_ANNOTATION.to_string(), stemcell.to_string());
    if let Some(reuse) = &unit.reuse_key {
        notes.insert(REUSE_KEY_ANNOTATION.to_string(), reuse.clone());
    }
    let recorded = package_of(plan, unit).sha1.clone().unwrap_or_default();
    notes.insert(ARCHIVE_ANNOTATION.to_string(), recorded);
    let image = write_tree_image(store, &unit.name, &tree, mtime, notes)?;
    publish_dir(&tree, &unit.published).map_err(|source| ImportError::Publish {
        path: unit.published.clone(),
        source,
    })?;
    let _ = crate::workdir::remove_tree(staging.path());
    Ok((package_ref(&unit.name, &unit.key), image.manifest))
}
