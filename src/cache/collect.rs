//! `cache gc`: what crashed runs left under `runs/`, then (under a policy) the least recently
//! used images, then everything no image reaches any more: blobs, unpacked packages and bases,
//! logs. The caller holds the work-dir lock, so no compile is using what goes.

use std::collections::HashSet;
use std::path::PathBuf;

use super::eviction::{choose, Candidate, Policy, Victim};
use super::{in_use, inventory, unpacked_sizes, usage::disk_usage, EntryKind};
use crate::oci::store::sha256_hex;
use crate::oci::{gc, OciError, OciStore};
use crate::workdir::{abandoned_run_dirs, remove_tree, LastUse, WorkDir};

#[derive(thiserror::Error, Debug)]
pub enum CollectError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("cannot remove {}", .path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a collection did.
#[derive(Debug, Default)]
pub struct CollectReport {
    /// Run dirs of processes that are gone.
    pub runs_removed: Vec<PathBuf>,
    /// Images the policy evicted, in the order it chose them.
    pub evicted: Vec<Victim>,
    pub blobs_removed: u64,
    pub dirs_removed: usize,
    pub logs_removed: usize,
    /// The work dir's size before and after.
    pub usage_before: u64,
    pub usage_after: u64,
}

/// Collects the work dir. The caller holds its lock.
pub fn collect(wd: &WorkDir, policy: &Policy) -> Result<CollectReport, CollectError> {
    let mut report = CollectReport {
        usage_before: disk_usage(wd.root()),
        ..CollectReport::default()
    };
    for dir in abandoned_run_dirs(wd).map_err(|source| CollectError::Read {
        path: wd.runs(),
        source,
    })? {
        remove_tree(&dir).map_err(|source| CollectError::Remove {
            path: dir.clone(),
            source,
        })?;
        report.runs_removed.push(dir);
    }
    if wd.oci().join("oci-layout").exists() {
        let store = OciStore::open(&wd.oci())?;
        sweep(wd, &store, &mut report)?;
        if !policy.is_empty() {
            evict(wd, &store, policy, &mut report)?;
        }
        let present: HashSet<String> = store.refs()?.into_iter().map(|r| r.name).collect();
        let mut uses = LastUse::load(wd);
        uses.retain(|name| present.contains(name));
        // Best effort: the record only orders evictions.
        let _ = uses.save(wd);
    }
    report.usage_after = disk_usage(wd.root());
    Ok(report)
}

/// Rounds of eviction: a compilation base can only go once no package is built on it, and a
/// base once no compilation base is made of it, so each round may free the next layer down.
fn evict(
    wd: &WorkDir,
    store: &OciStore,
    policy: &Policy,
    report: &mut CollectReport,
) -> Result<(), CollectError> {
    let now = crate::clock::now_millis();
    loop {
        let entries = inventory(wd, store)?;
        // An image with no recorded use (made before uses were recorded) counts as used now:
        // its age starts at the first collection that sees it.
        let mut uses = LastUse::load(wd);
        let unknown: Vec<&str> = entries
            .iter()
            .filter(|e| e.last_use.is_none())
            .map(|e| e.name.as_str())
            .collect();
        if !unknown.is_empty() {
            uses.record(unknown, now);
            let _ = uses.save(wd);
        }
        let busy = in_use(&entries);
        let unpacked = unpacked_sizes(wd, &entries);
        let candidates: Vec<Candidate> = entries
            .iter()
            .filter(|e| e.kind != EntryKind::Other && !busy.contains(&e.name))
            .map(|e| Candidate {
                name: e.name.clone(),
                last_use: e.last_use.unwrap_or(now),
                bytes: e.blob_bytes
                    + unpacked.get(&e.name).copied().unwrap_or(0)
                    + log_path(wd, e)
                        .and_then(|p| fs_err::metadata(p).ok())
                        .map_or(0, |m| m.len()),
            })
            .collect();
        let victims = choose(&candidates, disk_usage(wd.root()), policy, now);
        if victims.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = victims.iter().map(|v| v.name.clone()).collect();
        store.remove_refs(&names)?;
        report.evicted.extend(victims);
        sweep(wd, store, report)?;
    }
}

/// Removes what no image reaches: blobs, unpacked packages and bases, logs.
fn sweep(wd: &WorkDir, store: &OciStore, report: &mut CollectReport) -> Result<(), CollectError> {
    let entries = inventory(wd, store)?;
    let rootfs_keep: HashSet<String> = entries
        .iter()
        .filter_map(|e| sha256_hex(e.descriptor.digest()).ok().map(str::to_string))
        .collect();
    let package_keep: HashSet<String> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Package { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let rootfs = wd.rootfs();
    let packages = wd.packages();
    let swept = gc::gc(
        store,
        &[
            (rootfs.as_path(), rootfs_keep),
            (packages.as_path(), package_keep),
        ],
    )?;
    report.blobs_removed += swept.blobs_removed;
    report.dirs_removed += swept.dirs_removed.len();

    let logs_keep: HashSet<PathBuf> = entries.iter().filter_map(|e| log_path(wd, e)).collect();
    let logs = wd.logs();
    let listing = match fs_err::read_dir(&logs) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CollectError::Read { path: logs, source }),
    };
    for entry in listing.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") && !logs_keep.contains(&path) {
            fs_err::remove_file(&path).map_err(|source| CollectError::Remove {
                path: path.clone(),
                source,
            })?;
            report.logs_removed += 1;
        }
    }
    Ok(())
}

/// The log an image's build left: `logs/<package>-<key prefix>.log` for a package (as the
/// compiler names it), `logs/<name>.log` for a compilation base's prerequisites script.
fn log_path(wd: &WorkDir, entry: &super::Entry) -> Option<PathBuf> {
    match &entry.kind {
        EntryKind::Package { key, name } => Some(wd.package_log(name, key)),
        EntryKind::CompilationBase => Some(wd.compilation_base_log(&entry.name)),
        EntryKind::Base | EntryKind::Other => None,
    }
}
