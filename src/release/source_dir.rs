//! Release source directories: `packages/<n>/{spec,packaging,pre_packaging,spec.lock}`,
//! `jobs/<n>/{spec,monit,templates/}`, `LICENSE*` and `NOTICE*`, sources under `src/` and
//! `blobs/` (plus `config/blobs.yml` for blobs not downloaded). Package, job and license
//! contents and fingerprints are worked out as `bosh create-release` does (bosh-cli
//! `release/pkg/dir_reader.go`, `release/job/dir_reader.go`, `release/license/dir_reader.go`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use rayon::prelude::*;

use super::fingerprint::{self, Chunk, ChunkMode, Era};
use super::manifest::{BlobEntry, JobSpec, PackageSpec, PackageSpecLock, ReleaseManifest};
use super::{
    dev, index, validate_name, version, ArchiveLocation, Job, License, Package, PackageSource,
    Release, ReleaseError, ReleaseKind, SourceFile,
};
use crate::release::digest::{Algorithm, MultiDigest};

pub fn load(path: &Path) -> Result<Release, ReleaseError> {
    let name = release_name(path);
    let trees = SourceTrees::scan(path)?;
    let default_era = recorded_release_era(path, &name)?;
    let package_dirs = subdirs(&path.join("packages"))?;
    let packages = package_dirs
        .par_iter()
        .map(|dir| load_package(path, dir, &trees, default_era))
        .collect::<Result<Vec<Package>, ReleaseError>>()?;
    let mut warnings = Vec::new();
    let jobs = subdirs(&path.join("jobs"))?
        .iter()
        .filter(|dir| dir.join("spec").is_file())
        .map(|dir| load_job(path, dir, default_era, &mut warnings))
        .collect::<Result<Vec<Job>, ReleaseError>>()?;
    let license = load_license(path, default_era)?;
    let version = latest_final_version(path, &name)?
        .map(|v| format!("{v}+dev"))
        .unwrap_or_else(|| "0+dev".to_string());
    Ok(Release {
        name,
        version,
        kind: ReleaseKind::Source,
        path: path.to_path_buf(),
        packages,
        jobs,
        stemcell: None,
        license,
        commit_hash: None,
        uncommitted_changes: None,
        warnings,
    })
}

fn release_name(path: &Path) -> String {
    dev::release_name(path).unwrap_or_else(|_| {
        let canonical = fs_err::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "release".to_string())
    })
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, ReleaseError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for entry in fs_err::read_dir(dir).map_err(ReleaseError::io(dir))? {
        let entry = entry.map_err(ReleaseError::io(dir))?;
        if entry
            .file_type()
            .map_err(ReleaseError::io(entry.path()))?
            .is_dir()
        {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// A job: its spec, and what `bosh create-release` would archive and fingerprint. A job whose
/// files are not all there is still a job (compiles do not need it); it has no files, and a
/// warning says why, which `export` repeats when it needs them.
fn load_job(
    release: &Path,
    dir: &Path,
    default_era: Era,
    warnings: &mut Vec<String>,
) -> Result<Job, ReleaseError> {
    let spec_path = dir.join("spec");
    let spec: JobSpec = crate::release::yaml::read(&spec_path)?;
    let name = if spec.name.is_empty() {
        dir.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    } else {
        spec.name.clone()
    };
    validate_name(&spec_path, "job", &name)?;
    for p in &spec.packages {
        validate_name(&spec_path, "package", p)?;
    }
    let (fingerprint, files) = match job_files(release, dir, &name, &spec, default_era) {
        Ok((fingerprint, files)) => (Some(fingerprint), files),
        Err(problem) => {
            warnings.push(problem);
            (None, Vec::new())
        }
    };
    Ok(Job {
        name,
        fingerprint,
        packages: spec.packages,
        archive: None,
        files,
    })
}

/// The job's archive files, as bosh-cli's `release/job/dir_reader.go` collects them: the spec
/// as `job.MF`, `monit` and `properties_schema.json` when there, each template of the spec
/// under `templates/`; fingerprinted with their modes.
fn job_files(
    release: &Path,
    dir: &Path,
    name: &str,
    spec: &JobSpec,
    default_era: Era,
) -> Result<(String, Vec<SourceFile>), String> {
    let spec_path = dir.join("spec");
    let mut files = vec![("job.MF".to_string(), spec_path.clone())];
    for optional in ["monit", "properties_schema.json"] {
        if fs_err::metadata(dir.join(optional)).is_ok() {
            files.push((optional.to_string(), dir.join(optional)));
        }
    }
    for template in spec.templates.keys() {
        if template.starts_with('/') || template.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!(
                "{}: job {name:?}: template {template:?} is not a path under templates/",
                spec_path.display()
            ));
        }
        let file = dir.join("templates").join(template);
        if fs_err::metadata(&file).is_err() {
            return Err(format!(
                "{}: missing: job {name:?} lists template {template:?}",
                file.display()
            ));
        }
        files.push((format!("templates/{template}"), file));
    }
    let chunks = files
        .iter()
        .map(|(relative, file)| {
            Chunk::from_disk(relative.clone(), file, false)
                .map_err(|e| format!("{}: {e}", file.display()))
        })
        .collect::<Result<Vec<Chunk>, String>>()?;
    let index = Path::new("jobs").join(name);
    let era =
        recorded_era(release, &index, &chunks, &[], default_era).map_err(|e| e.to_string())?;
    let fingerprint = fingerprint::fingerprint(era, &chunks, &[])
        .map_err(|file| format!("{}: no digest for {file}", spec_path.display()))?;
    Ok((
        fingerprint,
        files
            .into_iter()
            .map(|(relative_path, disk)| SourceFile {
                relative_path,
                disk_path: Some(disk),
            })
            .collect(),
    ))
}

/// `LICENSE*` and `NOTICE*` at the top of the release, fingerprinted without modes; `None`
/// when there are none.
fn load_license(release: &Path, default_era: Era) -> Result<Option<License>, ReleaseError> {
    let mut files = Vec::new();
    for entry in fs_err::read_dir(release).map_err(ReleaseError::io(release))? {
        let entry = entry.map_err(ReleaseError::io(release))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("LICENSE") || name.starts_with("NOTICE"))
            && fs_err::metadata(entry.path()).is_ok_and(|m| m.is_file())
        {
            files.push((name, entry.path()));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    files.sort();
    let chunks = files
        .iter()
        .map(|(name, file)| {
            Chunk::from_disk(name.clone(), file, true).map_err(ReleaseError::io(file))
        })
        .collect::<Result<Vec<Chunk>, ReleaseError>>()?;
    let era = recorded_era(release, Path::new("license"), &chunks, &[], default_era)?;
    let fingerprint = fingerprint::fingerprint(era, &chunks, &[])
        .map_err(|file| ReleaseError::invalid(release, format!("no digest for {file}")))?;
    Ok(Some(License {
        version: Some(fingerprint.clone()),
        fingerprint: Some(fingerprint),
        sha1: None,
        archive: None,
        files: files
            .into_iter()
            .map(|(name, file)| (name, ArchiveLocation::File(file)))
            .collect(),
    }))
}

fn load_package(
    release: &Path,
    dir: &Path,
    trees: &SourceTrees,
    default_era: Era,
) -> Result<Package, ReleaseError> {
    let lock_path = dir.join("spec.lock");
    if lock_path.is_file() {
        // A locked package keeps its recorded fingerprint; bosh does not look at its files.
        let lock: PackageSpecLock = crate::release::yaml::read(&lock_path)?;
        validate_name(&lock_path, "package", &lock.name)?;
        if Era::of(&lock.fingerprint).is_none() {
            return Err(ReleaseError::invalid(
                &lock_path,
                format!(
                    "fingerprint {:?} is not 40 or 64 hex characters",
                    lock.fingerprint
                ),
            ));
        }
        return Ok(Package {
            name: lock.name,
            fingerprint: lock.fingerprint,
            sha1: None,
            dependencies: lock.dependencies,
            source: PackageSource::Files(Vec::new()),
        });
    }
    let spec_path = dir.join("spec");
    let spec: PackageSpec = crate::release::yaml::read(&spec_path)?;
    validate_name(&spec_path, "package", &spec.name)?;
    for dep in &spec.dependencies {
        validate_name(&spec_path, "package", dep)?;
    }

    let mut chunks = Vec::new();
    let mut files = Vec::new();
    let packaging = dir.join("packaging");
    // bosh checks existence with stat: a dangling `packaging` link is missing, a dangling
    // `pre_packaging` link is ignored.
    if fs_err::metadata(&packaging).is_err() {
        return Err(ReleaseError::invalid(
            &packaging,
            format!("missing: package {:?} needs a packaging script", spec.name),
        ));
    }
    for script in ["packaging", "pre_packaging"] {
        let script_path = dir.join(script);
        if fs_err::metadata(&script_path).is_ok() {
            chunks.push(
                Chunk::from_disk(script.to_string(), &script_path, true)
                    .map_err(ReleaseError::io(&script_path))?,
            );
            files.push(SourceFile {
                relative_path: script.to_string(),
                disk_path: Some(script_path),
            });
        }
    }

    let selected = trees.select(&spec, &spec_path)?;
    for special in ["packaging", "pre_packaging"] {
        if selected.contains_key(special) {
            return Err(ReleaseError::invalid(
                &spec_path,
                format!(
                    "package {:?} must not include its {special} file through `files`",
                    spec.name
                ),
            ));
        }
    }
    for (relative, entry) in &selected {
        let chunk = match entry {
            TreeEntry::Disk(disk) => {
                Chunk::from_disk(relative.clone(), disk, false).map_err(ReleaseError::io(disk))?
            }
            TreeEntry::RecordedBlob(digest) => recorded_blob_chunk(relative, digest),
        };
        chunks.push(chunk);
        files.push(SourceFile {
            relative_path: relative.clone(),
            disk_path: match entry {
                TreeEntry::Disk(disk) => Some(disk.clone()),
                TreeEntry::RecordedBlob(_) => None,
            },
        });
    }

    let index = Path::new("packages").join(&spec.name);
    let era = recorded_era(release, &index, &chunks, &spec.dependencies, default_era)?;
    let fingerprint = fingerprint::fingerprint(era, &chunks, &spec.dependencies).map_err(|file| {
        ReleaseError::invalid(
            &spec_path,
            format!("blob {file:?} is not in blobs/ and config/blobs.yml has no {era:?} digest for it; run `bosh sync-blobs`"),
        )
    })?;
    Ok(Package {
        name: spec.name,
        fingerprint,
        sha1: None,
        dependencies: spec.dependencies,
        source: PackageSource::Files(files),
    })
}

fn recorded_blob_chunk(relative: &str, digest: &MultiDigest) -> Chunk {
    let find = |a: Algorithm| digest.digests().iter().find(|d| d.algorithm == a).cloned();
    Chunk {
        relative_path: relative.to_string(),
        // bosh writes downloaded blobs without exec bits.
        mode: ChunkMode::Regular { executable: false },
        sha1: find(Algorithm::Sha1),
        sha256: find(Algorithm::Sha256),
    }
}

/// The era of a package, job or license (its builds index under `.final_builds/` and
/// `.dev_builds/`: `packages/<name>`, `jobs/<name>`, `license`): the one whose fingerprint bosh
/// already recorded for it, else the era of the release's latest recorded build, else sha1 (the
/// bosh CLI's default).
fn recorded_era(
    release: &Path,
    index_dir: &Path,
    chunks: &[Chunk],
    deps: &[String],
    default_era: Era,
) -> Result<Era, ReleaseError> {
    let mut recorded = HashSet::new();
    for builds in [".final_builds", ".dev_builds"] {
        let idx = index::read(&release.join(builds).join(index_dir).join("index.yml"))?;
        recorded.extend(idx.builds.keys().cloned());
        recorded.extend(index::versions(&idx));
    }
    if recorded.is_empty() {
        return Ok(default_era);
    }
    // A package unchanged across a sha1 -> sha256 switch has both fingerprints recorded:
    // the release's current era wins, as `bosh create-release` would compute it.
    let eras = match default_era {
        Era::Sha1 => [Era::Sha1, Era::Sha256],
        Era::Sha256 => [Era::Sha256, Era::Sha1],
    };
    for era in eras {
        if let Ok(fp) = fingerprint::fingerprint(era, chunks, deps) {
            if recorded.contains(&fp) {
                return Ok(era);
            }
        }
    }
    Ok(default_era)
}

fn recorded_release_era(path: &Path, name: &str) -> Result<Era, ReleaseError> {
    for dir in ["releases", "dev_releases"] {
        let releases = path.join(dir).join(name);
        let versions = index::versions(&index::read(&releases.join("index.yml"))?);
        if let Some(latest) = version::latest(versions.iter().map(String::as_str)) {
            let manifest_path = releases.join(format!("{name}-{latest}.yml"));
            if manifest_path.is_file() {
                let manifest: ReleaseManifest = crate::release::yaml::read(&manifest_path)?;
                if let Some(era) = manifest
                    .packages
                    .iter()
                    .filter_map(|p| p.fingerprint())
                    .find_map(Era::of)
                {
                    return Ok(era);
                }
            }
        }
    }
    Ok(Era::Sha1)
}

fn latest_final_version(path: &Path, name: &str) -> Result<Option<String>, ReleaseError> {
    let versions = index::versions(&index::read(
        &path.join("releases").join(name).join("index.yml"),
    )?);
    Ok(version::latest(versions.iter().map(String::as_str)).map(str::to_string))
}

enum TreeEntry {
    Disk(PathBuf),
    /// A blob listed in config/blobs.yml that is not downloaded: only its digest is known.
    RecordedBlob(MultiDigest),
}

/// Every non-directory entry under `src/` and `blobs/`, by '/'-separated relative path.
struct SourceTrees {
    src: BTreeMap<String, PathBuf>,
    blobs: BTreeMap<String, TreeEntryTemplate>,
}

enum TreeEntryTemplate {
    Disk(PathBuf),
    Recorded(MultiDigest),
}

impl SourceTrees {
    fn scan(release: &Path) -> Result<SourceTrees, ReleaseError> {
        let src = list_tree(&release.join("src"))?;
        let mut blobs: BTreeMap<String, TreeEntryTemplate> = list_tree(&release.join("blobs"))?
            .into_iter()
            .map(|(k, v)| (k, TreeEntryTemplate::Disk(v)))
            .collect();
        let blobs_yml = release.join("config").join("blobs.yml");
        if blobs_yml.is_file() {
            let recorded: BTreeMap<String, BlobEntry> = crate::release::yaml::read(&blobs_yml)?;
            for (blob_path, entry) in recorded {
                if blobs.contains_key(&blob_path) {
                    continue;
                }
                let Some(sha) = entry.sha else { continue };
                let digest = MultiDigest::parse(&sha).map_err(|e| {
                    ReleaseError::invalid(&blobs_yml, format!("blob {blob_path:?}: {e}"))
                })?;
                blobs.insert(blob_path, TreeEntryTemplate::Recorded(digest));
            }
        }
        Ok(SourceTrees { src, blobs })
    }

    /// The files a spec selects: `files` globs over src/ then blobs/ (src wins), minus
    /// `excluded_files`; a glob matching nothing is an error, as in bosh.
    fn select(
        &self,
        spec: &PackageSpec,
        spec_path: &Path,
    ) -> Result<BTreeMap<String, TreeEntry>, ReleaseError> {
        let mut selected = BTreeMap::new();
        for pattern in &spec.files {
            let matcher = compile_glob(pattern, spec_path)?;
            let mut found = false;
            for (rel, disk) in &self.src {
                if matcher.is_match(rel) {
                    found = true;
                    selected
                        .entry(rel.clone())
                        .or_insert_with(|| TreeEntry::Disk(disk.clone()));
                }
            }
            for (rel, blob) in &self.blobs {
                if matcher.is_match(rel) {
                    found = true;
                    selected.entry(rel.clone()).or_insert_with(|| match blob {
                        TreeEntryTemplate::Disk(p) => TreeEntry::Disk(p.clone()),
                        TreeEntryTemplate::Recorded(d) => TreeEntry::RecordedBlob(d.clone()),
                    });
                }
            }
            if !found {
                return Err(ReleaseError::NoFilesForPattern {
                    path: spec_path.to_path_buf(),
                    package: spec.name.clone(),
                    pattern: pattern.clone(),
                });
            }
        }
        for pattern in &spec.excluded_files {
            let matcher = compile_glob(pattern, spec_path)?;
            selected.retain(|rel, _| !matcher.is_match(rel));
        }
        Ok(selected)
    }
}

/// Lists files and symlinks without following symlinks: bosh skips files reached through a
/// symlinked directory, and keeps a symlink itself as a `symlink` chunk.
fn list_tree(root: &Path) -> Result<BTreeMap<String, PathBuf>, ReleaseError> {
    let mut out = BTreeMap::new();
    if !root.is_dir() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            ReleaseError::Io {
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
            }
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under its root");
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.insert(rel, entry.path().to_path_buf());
    }
    Ok(out)
}

/// Globs as bosh's doublestar reads them after `filepath.Join` cleaned them: `*` stays within a
/// path component but matches dotfiles, `**` spans directories, `{a,b}` alternates.
fn compile_glob(pattern: &str, spec_path: &Path) -> Result<GlobMatcher, ReleaseError> {
    let bad = |why: String| {
        ReleaseError::invalid(spec_path, format!("bad files pattern {pattern:?}: {why}"))
    };
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(pattern).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(c) => parts.push(c.to_string_lossy().into_owned()),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(bad("it points outside src/ and blobs/".into()));
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(bad("it is absolute".into())),
        }
    }
    if parts.is_empty() {
        return Err(bad("it is empty".into()));
    }
    GlobBuilder::new(&parts.join("/"))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics_follow_doublestar() {
        let p = Path::new("spec");
        let m = |pat: &str, path: &str| compile_glob(pat, p).unwrap().is_match(path);
        assert!(m("foo/*", "foo/.hidden"));
        assert!(!m("foo/*", "foo/a/b"));
        assert!(m("foo/**/*", "foo/a/b/c"));
        assert!(m("foo/**/*", "foo/a"));
        assert!(m("./foo/{a,b}.c", "foo/b.c"));
        assert!(m("foo/../bar/*", "bar/x"));
        assert!(compile_glob("../x", p).is_err());
        assert!(compile_glob("/etc/*", p).is_err());
    }
}
