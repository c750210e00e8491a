//! Assembling one compiled release tarball: the compiled packages written first into a staging
//! dir next to the output (their digests go into `release.MF`, which comes first), the job and
//! license archives copied out of their release (checked against their digests again), then the
//! tarball streamed into a temp file and renamed into place.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::gzip::GzipPipe;
use super::manifest::{CompiledEntry, ReleaseManifest};
use super::package::{write_compiled_package, WrittenPackage};
use super::source_archive::build_archive;
use super::tar::TarWriter;
use super::{fingerprint_era, ExportError, ExportOptions, ReleaseExport};
use crate::oci::OciStore;
use crate::release::digest::MultiDigest;
use crate::release::{ArchiveLocation, JobArchive, SourceFile};

/// The outer tarball holds compressed archives, which no level shrinks; the fastest level
/// keeps the bytes fixed and the time small.
pub const OUTER_GZIP_LEVEL: u32 = 1;

const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// Writes `export` into `options.out_dir`; returns its path. `progress` hears of each step.
pub fn write_release(
    store: &OciStore,
    export: &ReleaseExport<'_>,
    options: &ExportOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ExportError> {
    let out_dir = &options.out_dir;
    fs_err::create_dir_all(out_dir).map_err(ExportError::io(out_dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".fissile-oci-export-")
        .tempdir_in(out_dir)
        .map_err(ExportError::io(out_dir))?;
    let release = export.release;

    // The compiled packages, each hashed as it is written.
    let mut written: Vec<(usize, WrittenPackage)> = Vec::new();
    for (i, p) in export.packages.iter().enumerate() {
        progress(&format!(
            "{}: compiled package {}",
            release.name, p.package.name
        ));
        let dest = staging.path().join(format!("package-{i}.tgz"));
        written.push((
            i,
            write_compiled_package(
                store,
                &p.layer,
                &p.package.name,
                &dest,
                p.algorithm,
                options.mtime,
            )?,
        ));
    }

    // Job and license archives: copied out of their release, or made from a source directory.
    let mut wanted: Vec<(String, &ArchiveLocation, Option<MultiDigest>)> = Vec::new();
    let mut built: Vec<(String, PathBuf)> = Vec::new();
    let mut jobs: Vec<(&str, JobArchive)> = Vec::new();
    for job in &export.jobs {
        let member = format!("jobs/{}.tgz", job.name);
        match &job.archive {
            Some(archive) => {
                let digest = MultiDigest::parse(&archive.sha1)?;
                wanted.push((member, &archive.location, Some(digest)));
                jobs.push((&job.name, archive.clone()));
            }
            None => {
                progress(&format!("{}: job {}", release.name, job.name));
                let fingerprint = job.fingerprint.clone().expect("checked by plan_exports");
                let dest = staging.path().join(format!("job-{}.tgz", job.name));
                let algorithm = options.digest.unwrap_or(fingerprint_era(&fingerprint));
                let digest = build_archive(&job.files, &dest, algorithm, options.mtime)?;
                jobs.push((
                    &job.name,
                    JobArchive {
                        location: ArchiveLocation::File(dest.clone()),
                        version: Some(fingerprint.clone()),
                        fingerprint: Some(fingerprint),
                        sha1: digest.to_string(),
                        packages: Some(job.packages.clone()),
                    },
                ));
                built.push((member, dest));
            }
        }
    }
    let mut license = release.license.clone();
    if let Some(license) = &mut license {
        if let Some(location) = &release.license.as_ref().and_then(|l| l.archive.as_ref()) {
            let digest = license
                .sha1
                .as_deref()
                .map(MultiDigest::parse)
                .transpose()?;
            wanted.push(("license.tgz".to_string(), location, digest));
        } else if license.sha1.is_none() && !license.files.is_empty() {
            // A source directory's LICENSE* and NOTICE*: license.tgz is made of them.
            let files: Vec<SourceFile> = license
                .files
                .iter()
                .filter_map(|(name, location)| match location {
                    ArchiveLocation::File(path) => Some(SourceFile {
                        relative_path: name.clone(),
                        disk_path: Some(path.clone()),
                    }),
                    ArchiveLocation::TarballMember { .. } => None,
                })
                .collect();
            let fingerprint = license.fingerprint.clone().unwrap_or_default();
            let dest = staging.path().join("license.tgz");
            let algorithm = options.digest.unwrap_or(fingerprint_era(&fingerprint));
            let digest = build_archive(&files, &dest, algorithm, options.mtime)?;
            license.sha1 = Some(digest.to_string());
            built.push(("license.tgz".to_string(), dest));
        }
    }
    if let Some(l) = &release.license {
        for (name, location) in &l.files {
            wanted.push((name.clone(), location, None));
        }
    }
    let mut copied = copy_out(&wanted, &staging.path().join("archives"))?;
    copied.extend(built);

    let manifest = ReleaseManifest {
        name: &release.name,
        version: &release.version,
        commit_hash: release.commit_hash.as_deref(),
        uncommitted_changes: release.uncommitted_changes.as_deref(),
        jobs: jobs
            .iter()
            .map(|(name, archive)| (*name, archive))
            .collect(),
        packages: written
            .iter()
            .map(|(i, w)| {
                let p = &export.packages[*i];
                CompiledEntry {
                    name: &p.package.name,
                    fingerprint: &p.package.fingerprint,
                    sha1: w.digest.to_string(),
                    dependencies: &p.package.dependencies,
                }
            })
            .collect(),
        stemcell: &export.stemcell,
        license: license.as_ref(),
    }
    .to_yaml();

    // The tarball: release.MF, license files, license.tgz, jobs/, compiled_packages/.
    progress(&format!("{}: writing {}", release.name, export.file_name()));
    let partial = staging.path().join("release.tgz");
    let file = fs_err::File::create(&partial).map_err(ExportError::io(&partial))?;
    let gzip = GzipPipe::new(
        std::io::BufWriter::with_capacity(256 * 1024, file),
        OUTER_GZIP_LEVEL,
    )
    .map_err(ExportError::io(&partial))?;
    let mut tar = TarWriter::new(gzip, options.mtime);
    let io = ExportError::io(&partial);
    let result = (|| -> std::io::Result<()> {
        tar.file(
            "./release.MF",
            FILE_MODE,
            manifest.len() as u64,
            manifest.as_bytes(),
        )?;
        let mut license_files: Vec<&String> = copied
            .keys()
            .filter(|n| !n.contains('/') && *n != "license.tgz")
            .collect();
        license_files.sort();
        for name in license_files {
            append_file(&mut tar, &format!("./{name}"), &copied[name])?;
        }
        if let Some(path) = copied.get("license.tgz") {
            append_file(&mut tar, "./license.tgz", path)?;
        }
        let mut jobs: Vec<&str> = export.jobs.iter().map(|j| j.name.as_str()).collect();
        jobs.sort();
        if !jobs.is_empty() {
            tar.dir("./jobs/", DIR_MODE)?;
        }
        for name in jobs {
            let member = format!("jobs/{name}.tgz");
            append_file(&mut tar, &format!("./{member}"), &copied[&member])?;
        }
        tar.dir("./compiled_packages/", DIR_MODE)?;
        let mut packages: Vec<(&str, &Path)> = written
            .iter()
            .map(|(i, w)| (export.packages[*i].package.name.as_str(), w.path.as_path()))
            .collect();
        packages.sort();
        for (name, path) in packages {
            append_file(&mut tar, &format!("./compiled_packages/{name}.tgz"), path)?;
        }
        Ok(())
    })();
    result.map_err(ExportError::io(&partial))?;
    let buffered = tar.finish().and_then(GzipPipe::finish).map_err(io)?;
    let file = buffered
        .into_inner()
        .map_err(|e| ExportError::io(&partial)(e.into_error()))?;
    file.sync_all().map_err(ExportError::io(&partial))?;
    drop(file);

    let dest = out_dir.join(export.file_name());
    place(&partial, &dest)?;
    Ok(dest)
}

/// Appends a file of the staging dir as a regular-file entry.
fn append_file<W: Write>(tar: &mut TarWriter<W>, name: &str, path: &Path) -> std::io::Result<()> {
    let file = fs_err::File::open(path)?;
    let size = file.metadata()?.len();
    tar.file(name, FILE_MODE, size, std::io::BufReader::new(file))
}

/// Copies the wanted archives into `dir` (members of a tarball in one pass per tarball),
/// checking each against its digest; returns the copies by their name in the release.
fn copy_out(
    wanted: &[(String, &ArchiveLocation, Option<MultiDigest>)],
    dir: &Path,
) -> Result<HashMap<String, PathBuf>, ExportError> {
    fs_err::create_dir_all(dir).map_err(ExportError::io(dir))?;
    let mut copies = HashMap::new();
    let mut by_tarball: HashMap<&Path, HashMap<String, (String, Option<MultiDigest>)>> =
        HashMap::new();
    for (i, (name, location, digest)) in wanted.iter().enumerate() {
        match location {
            ArchiveLocation::File(path) => {
                if let Some(digest) = digest {
                    digest.verify_file(path)?;
                }
                let copy = dir.join(format!("file-{i}"));
                fs_err::copy(path, &copy).map_err(ExportError::io(&copy))?;
                copies.insert(name.clone(), copy);
            }
            ArchiveLocation::TarballMember { tarball, member } => {
                by_tarball
                    .entry(tarball.as_path())
                    .or_default()
                    .insert(member.clone(), (name.clone(), digest.clone()));
            }
        }
    }
    for (n, (tarball, members)) in by_tarball.into_iter().enumerate() {
        let digests: HashMap<String, Option<MultiDigest>> = members
            .iter()
            .map(|(member, (_, digest))| (member.clone(), digest.clone()))
            .collect();
        let files = crate::compile::materialize_tarball_members(
            tarball,
            &digests,
            &dir.join(format!("tarball-{n}")),
        )?;
        for (member, (name, _)) in members {
            let file = files.get(&member).ok_or_else(|| ExportError::Io {
                path: tarball.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{member} is no longer in the tarball"),
                ),
            })?;
            copies.insert(name, file.clone());
        }
    }
    Ok(copies)
}

/// Renames the finished tarball to `dest` unless a file is there: the same bytes are fine (a
/// rerun), different ones an error.
fn place(partial: &Path, dest: &Path) -> Result<(), ExportError> {
    match fs_err::hard_link(partial, dest) {
        Ok(()) => {
            let _ = fs_err::remove_file(partial);
            if let Some(dir) = dest.parent() {
                fs_err::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(ExportError::io(dir))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if same_content(partial, dest).map_err(ExportError::io(dest))? {
                Ok(())
            } else {
                Err(ExportError::Exists {
                    path: dest.to_path_buf(),
                })
            }
        }
        Err(e) => Err(ExportError::io(dest)(e)),
    }
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (fs_err::File::open(a)?, fs_err::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
