//! Serde shapes of the YAML files BOSH writes, tolerant of what real releases contain: numbers
//! where strings are expected, `null` lists, unknown keys.

use serde::{Deserialize, Deserializer};

/// `release.MF` of a tarball, and `dev_releases/<name>/<name>-<version>.yml`.
#[derive(Deserialize, Debug, Default)]
pub struct ReleaseManifest {
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "scalar_string")]
    pub version: String,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub commit_hash: Option<String>,
    /// As written (`false`, `true`); kept as text so any spelling survives a round trip.
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub uncommitted_changes: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub packages: Vec<PackageEntry>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub compiled_packages: Vec<CompiledPackageEntry>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jobs: Vec<JobEntry>,
    #[serde(default)]
    pub license: Option<LicenseEntry>,
}

#[derive(Deserialize, Debug)]
pub struct PackageEntry {
    #[serde(deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub sha1: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
}

impl PackageEntry {
    /// bosh writes `version` = fingerprint; old manifests have only one of them.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref().or(self.version.as_deref())
    }
}

/// A `compiled_packages[]` entry of a compiled release.
#[derive(Deserialize, Debug)]
pub struct CompiledPackageEntry {
    #[serde(deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub sha1: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub stemcell: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
}

impl CompiledPackageEntry {
    /// As for source packages: `version` is the fingerprint when `fingerprint` is absent.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref().or(self.version.as_deref())
    }
}

#[derive(Deserialize, Debug)]
pub struct JobEntry {
    #[serde(deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub sha1: Option<String>,
    /// The job's packages, which newer bosh CLIs also write into release.MF.
    #[serde(default)]
    pub packages: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
pub struct LicenseEntry {
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub sha1: Option<String>,
}

/// `job.MF` inside a job archive, or `jobs/<n>/spec` in a source directory.
#[derive(Deserialize, Debug, Default)]
pub struct JobSpec {
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub packages: Vec<String>,
    /// `source: destination` of each template under `templates/`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub templates: std::collections::BTreeMap<String, Option<String>>,
}

/// `packages/<n>/spec` in a source directory.
#[derive(Deserialize, Debug, Default)]
pub struct PackageSpec {
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub excluded_files: Vec<String>,
}

/// `packages/<n>/spec.lock`: a package whose fingerprint is pinned.
#[derive(Deserialize, Debug, Default)]
pub struct PackageSpecLock {
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default, deserialize_with = "scalar_string")]
    pub fingerprint: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
}

/// `index.yml` of `dev_releases/<name>/`, `releases/<name>/`, `.dev_builds/…`, `.final_builds/…`.
#[derive(Deserialize, Debug, Default)]
pub struct BuildIndex {
    #[serde(default, deserialize_with = "null_as_default")]
    pub builds: std::collections::BTreeMap<String, BuildEntry>,
}

#[derive(Deserialize, Debug)]
pub struct BuildEntry {
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
}

/// `config/final.yml` and `config/dev.yml`.
#[derive(Deserialize, Debug, Default)]
pub struct ReleaseConfig {
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub final_name: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub dev_name: Option<String>,
}

/// One entry of `config/blobs.yml`.
#[derive(Deserialize, Debug)]
pub struct BlobEntry {
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub sha: Option<String>,
}

/// A scalar of any YAML type read as the text it was written as (`version: 1` is "1").
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_scalar_string(d)?.unwrap_or_default())
}

fn opt_scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    // serde-saphyr hands a String target the scalar's source text, so `1.10` stays "1.10" and
    // an all-digit sha1 is not turned into a number.
    Option::<String>::deserialize(d)
}

/// `key:` with no value, `key: ~` and a missing key all mean "none" in BOSH files.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::yaml::parse;
    use std::path::Path;

    #[test]
    fn tolerates_real_world_release_mf_variants() {
        let text = b"---
name: r
version: 12
version: 1.10
commit_hash: abc
uncommitted_changes: false
packages:
- name: a
  version: aaaa
  fingerprint: aaaa
  sha1: !binary |-
    YWJj
  dependencies:
- name: b
  version: bbbb
  sha1: bb
  dependencies: [a]
- name: c
  fingerprint: cccc
  sha1: 1111111111111111111111111111111111111111
jobs: ~
license:
  version: x
  sha1: ll
";
        let m: ReleaseManifest = parse(text, Path::new("release.MF")).unwrap();
        assert_eq!(m.name, "r");
        assert_eq!(m.version, "1.10");
        assert_eq!(m.packages.len(), 3);
        assert_eq!(m.packages[0].sha1.as_deref(), Some("abc"));
        assert!(m.packages[0].dependencies.is_empty());
        assert_eq!(m.packages[1].dependencies, vec!["a"]);
        assert_eq!(m.packages[1].fingerprint(), Some("bbbb"));
        assert_eq!(m.packages[2].fingerprint(), Some("cccc"));
        assert_eq!(
            m.packages[2].sha1.as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert!(m.jobs.is_empty());
        assert_eq!(m.license.unwrap().sha1.as_deref(), Some("ll"));
    }
}
