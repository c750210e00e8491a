//! `index.yml` files of a release directory: which versions of a release or package exist.

use std::path::Path;

use super::manifest::BuildIndex;
use super::ReleaseError;

/// Reads an index; a missing file is an empty index.
pub fn read(path: &Path) -> Result<BuildIndex, ReleaseError> {
    if !path.exists() {
        return Ok(BuildIndex::default());
    }
    Ok(crate::release::yaml::read(path)?)
}

/// The versions an index records (for release indexes, `version`; package indexes are keyed by
/// fingerprint and record it as `version` too).
pub fn versions(index: &BuildIndex) -> Vec<String> {
    index
        .builds
        .iter()
        .map(|(key, entry)| entry.version.clone().unwrap_or_else(|| key.clone()))
        .collect()
}
