//! Whole-store checks and cleanup: `verify` hashes every blob and checks that every ref's
//! manifest, config and layers are present and intact; `gc` deletes what no ref reaches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use super::image::{read_manifest, MAX_JSON_BLOB};
use super::store::{sha256_hex, OciStore, TEMP_PREFIX};
use super::OciError;

/// What `verify` found wrong; empty means the store is sound.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<String>,
}

pub fn verify(store: &OciStore) -> Result<VerifyReport, OciError> {
    let mut report = VerifyReport::default();
    let dir = store.blobs_dir();
    let mut bad_blobs = HashSet::new();
    for (path, name) in blob_files(&dir)? {
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        match store.verify_blob_file(&path) {
            Ok(size) => {
                report.blobs_checked += 1;
                report.bytes_checked += size;
            }
            Err(e) => {
                report.problems.push(e.to_string());
                bad_blobs.insert(name);
            }
        }
    }
    for entry in store.refs()? {
        let mut problems = Vec::new();
        walk_references(store, &entry.descriptor, &mut |d| {
            let hex = sha256_hex(d.digest())?.to_string();
            let path = dir.join(&hex);
            match fs_err::metadata(&path) {
                Err(_) => problems.push(format!(
                    "{}: missing (needed by ref {:?})",
                    path.display(),
                    entry.name
                )),
                Ok(m) if m.len() != d.size() => problems.push(format!(
                    "{}: {} bytes, but ref {:?} says {}",
                    path.display(),
                    m.len(),
                    entry.name,
                    d.size()
                )),
                Ok(_) if bad_blobs.contains(&hex) => problems.push(format!(
                    "{}: corrupt (needed by ref {:?})",
                    path.display(),
                    entry.name
                )),
                Ok(_) => {}
            }
            Ok(())
        })
        .unwrap_or_else(|e| problems.push(format!("ref {:?}: {e}", entry.name)));
        report.problems.extend(problems);
    }
    Ok(report)
}

/// Calls `visit` for `root` and every blob it references (index -> manifests -> config, layers).
/// Manifests and indexes are read (and so verified) on the way.
pub fn walk_references(
    store: &OciStore,
    root: &Descriptor,
    visit: &mut dyn FnMut(&Descriptor) -> Result<(), OciError>,
) -> Result<(), OciError> {
    visit(root)?;
    match root.media_type() {
        MediaType::ImageIndex => {
            let bytes = store.read_blob(root, MAX_JSON_BLOB)?;
            let path = store.blob_path(root.digest())?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| OciError::invalid(&path, e))?;
            for m in index.manifests() {
                walk_references(store, m, visit)?;
            }
        }
        MediaType::ImageManifest | MediaType::Other(_) => {
            let manifest = read_manifest(store, root)?;
            visit(manifest.config())?;
            for layer in manifest.layers() {
                visit(layer)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub dirs_removed: Vec<PathBuf>,
}

/// Removes unreferenced blobs and leftover temp files, and every entry of each `unpacked_dirs`
/// directory whose name is not in `keep_dirs`. The caller holds the work-dir lock.
pub fn gc(
    store: &OciStore,
    unpacked_dirs: &[(&Path, HashSet<String>)],
) -> Result<GcReport, OciError> {
    let mut reachable = HashSet::new();
    for entry in store.refs()? {
        walk_references(store, &entry.descriptor, &mut |d| {
            reachable.insert(sha256_hex(d.digest())?.to_string());
            Ok(())
        })?;
    }
    let mut report = GcReport::default();
    for (path, name) in blob_files(&store.blobs_dir())? {
        if reachable.contains(&name) {
            continue;
        }
        let size = fs_err::symlink_metadata(&path)
            .map(|m| m.len())
            .unwrap_or(0);
        fs_err::remove_file(&path).map_err(OciError::io(&path))?;
        report.blobs_removed += 1;
        report.bytes_freed += size;
    }
    for (dir, keep) in unpacked_dirs {
        if !dir.is_dir() {
            continue;
        }
        for entry in fs_err::read_dir(dir).map_err(OciError::io(*dir))? {
            let entry = entry.map_err(OciError::io(*dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            crate::workdir::remove_tree(&path).map_err(OciError::io(&path))?;
            report.dirs_removed.push(path);
        }
    }
    Ok(report)
}

fn blob_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, OciError> {
    let mut out = Vec::new();
    for entry in fs_err::read_dir(dir).map_err(OciError::io(dir))? {
        let entry = entry.map_err(OciError::io(dir))?;
        out.push((
            entry.path(),
            entry.file_name().to_string_lossy().into_owned(),
        ));
    }
    out.sort();
    Ok(out)
}
