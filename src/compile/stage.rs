//! Staging a package's sources for its compile: its archive extracted safely (or, for a
//! source-directory release, its files copied) into a private dir that becomes
//! `/var/vcap/source/<pkg>` inside the sandbox.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::extract::{self, ExtractLimits};
use crate::release::digest::MultiDigest;
use crate::release::{Package, PackageSource};

#[derive(thiserror::Error, Debug)]
pub enum StageError {
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("package {package:?}: {message}")]
    Unavailable { package: String, message: String },
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StageError {
    let path = path.into();
    move |source| StageError::Io { path, source }
}

/// Copies the package archives that live inside release tarballs out to `dir` in one pass per
/// tarball (reading a gzip stream once instead of once per package), checking each against its
/// recorded digest again. Returns, per `packages/<name>.tgz` member, the file written.
pub fn materialize_tarball_members(
    tarball: &Path,
    wanted: &HashMap<String, Option<MultiDigest>>,
    dir: &Path,
) -> Result<HashMap<String, PathBuf>, StageError> {
    fs_err::create_dir_all(dir).map_err(io(dir))?;
    let mut out = HashMap::new();
    let mut archive = tar::Archive::new(extract::open_archive(tarball)?);
    for entry in archive.entries().map_err(io(tarball))? {
        let mut entry = entry.map_err(io(tarball))?;
        let Ok(name) = extract::normalize_entry_path(&entry.path_bytes()) else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        let Some(expected) = wanted.get(&name) else {
            continue;
        };
        let file_name = name.replace('/', "_");
        let dest = dir.join(&file_name);
        let mut file = fs_err::File::create(&dest).map_err(io(&dest))?;
        let algorithm = expected.as_ref().map(|d| d.strongest().algorithm);
        let mut hasher = algorithm.map(crate::release::digest::Hasher::new);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(io(tarball))?;
            if n == 0 {
                break;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            std::io::Write::write_all(&mut file, &buf[..n]).map_err(io(&dest))?;
        }
        if let (Some(expected), Some(h)) = (expected, hasher) {
            let member = PathBuf::from(format!("{}:{name}", tarball.display()));
            expected
                .check(&member, &h.finish())
                .map_err(|e| StageError::Unavailable {
                    package: name.clone(),
                    message: format!("{e} (the tarball changed since it was verified?)"),
                })?;
        }
        out.insert(name, dest);
    }
    Ok(out)
}

/// For each package whose archive lives inside a release tarball, copies it out under `dir`
/// (one pass per tarball) and returns where, by the caller's key.
pub fn materialize_packages<'a, K: Eq + std::hash::Hash>(
    packages: impl IntoIterator<Item = (K, &'a Package)>,
    dir: &Path,
) -> Result<HashMap<K, PathBuf>, StageError> {
    let mut by_tarball: HashMap<PathBuf, Vec<(K, String, Option<MultiDigest>)>> = HashMap::new();
    for (key, package) in packages {
        if let PackageSource::TarballMember { tarball, member } = &package.source {
            let digest = package
                .sha1
                .as_deref()
                .and_then(|s| MultiDigest::parse(s).ok());
            by_tarball
                .entry(tarball.clone())
                .or_default()
                .push((key, member.clone(), digest));
        }
    }
    let mut out = HashMap::new();
    for (n, (tarball, members)) in by_tarball.into_iter().enumerate() {
        let wanted: HashMap<String, Option<MultiDigest>> = members
            .iter()
            .map(|(_, m, d)| (m.clone(), d.clone()))
            .collect();
        let files =
            materialize_tarball_members(&tarball, &wanted, &dir.join(format!("archives-{n}")))?;
        for (key, member, _) in members {
            if let Some(f) = files.get(&member) {
                out.insert(key, f.clone());
            }
        }
    }
    Ok(out)
}

/// Puts the package's sources into `dest` (which must not exist).
pub fn stage_sources(
    package: &Package,
    archive_override: Option<&Path>,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<(), StageError> {
    let archive = archive_override.or(match &package.source {
        PackageSource::Archive(path) => Some(path.as_path()),
        _ => None,
    });
    if let Some(archive) = archive {
        extract::extract_archive(archive, dest, limits)?;
        return Ok(());
    }
    match &package.source {
        PackageSource::Archive(_) => unreachable!("handled above"),
        PackageSource::TarballMember { tarball, member } => Err(StageError::Unavailable {
            package: package.name.clone(),
            message: format!(
                "{member} of {} was not materialized before staging",
                tarball.display()
            ),
        }),
        PackageSource::Files(files) => {
            if files.is_empty() {
                return Err(StageError::Unavailable {
                    package: package.name.clone(),
                    message: "it is locked by spec.lock, and compiling locked packages from their .final_builds archive is not supported yet".into(),
                });
            }
            copy_files(package, files, dest)
        }
    }
}

fn copy_files(
    package: &Package,
    files: &[crate::release::SourceFile],
    dest: &Path,
) -> Result<(), StageError> {
    let partial = dest.with_extension("partial");
    let _ = fs_err::remove_dir_all(&partial);
    fs_err::create_dir_all(&partial).map_err(io(&partial))?;
    for file in files {
        let Some(from) = &file.disk_path else {
            return Err(StageError::Unavailable {
                package: package.name.clone(),
                message: format!("blob {:?} is not downloaded (only listed in config/blobs.yml); run `bosh sync-blobs`", file.relative_path),
            });
        };
        let to = partial.join(&file.relative_path);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent).map_err(io(parent))?;
        }
        let meta = fs_err::symlink_metadata(from).map_err(io(from))?;
        if meta.file_type().is_symlink() {
            let target = fs_err::read_link(from).map_err(io(from))?;
            fs_err::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
        } else {
            // fs::copy keeps the permission bits, which packaging scripts rely on (exec bits).
            fs_err::copy(from, &to).map_err(io(&to))?;
        }
    }
    fs_err::rename(&partial, dest).map_err(io(dest))
}
