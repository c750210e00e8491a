//! The job and license archives of a release source directory, made as `bosh create-release`
//! makes them (bosh-cli `release/resource/archive.go`): the files under their archive paths,
//! links followed, modes 0755 when the file is executable and 0644 otherwise, directories
//! 0755, `./`-prefixed; here with fixed owner, mtime and gzip level, so the same files give
//! the same archive.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::gzip::GzipPipe;
use super::package::{HashingWriter, PACKAGE_GZIP_LEVEL};
use super::tar::TarWriter;
use super::ExportError;
use crate::release::digest::{Algorithm, Digest, Hasher};
use crate::release::SourceFile;

/// Writes the archive of `files` to `dest`; returns its digest.
pub fn build_archive(
    files: &[SourceFile],
    dest: &Path,
    algorithm: Algorithm,
    mtime: u64,
) -> Result<Digest, ExportError> {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.relative_path.as_bytes().cmp(b.relative_path.as_bytes()));
    let file = fs_err::File::create(dest).map_err(ExportError::io(dest))?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: Hasher::new(algorithm),
    };
    let gzip = GzipPipe::new(hashing, PACKAGE_GZIP_LEVEL).map_err(ExportError::io(dest))?;
    let mut tar = TarWriter::new(gzip, mtime);
    tar.dir("./", 0o755).map_err(ExportError::io(dest))?;
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for file in sorted {
        let Some(disk) = &file.disk_path else {
            return Err(ExportError::io(dest)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no file on disk", file.relative_path),
            )));
        };
        let parts: Vec<&str> = file.relative_path.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if dirs.insert(dir.clone()) {
                tar.dir(&format!("./{dir}/"), 0o755)
                    .map_err(ExportError::io(dest))?;
            }
        }
        // Links are followed, as bosh does for job and license files.
        let opened = fs_err::File::open(disk).map_err(ExportError::io(disk))?;
        let meta = opened.metadata().map_err(ExportError::io(disk))?;
        let mode = if meta.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        };
        tar.file(
            &format!("./{}", file.relative_path),
            mode,
            meta.len(),
            std::io::BufReader::new(opened),
        )
        .map_err(ExportError::io(disk))?;
    }
    let hashing = tar
        .finish()
        .and_then(GzipPipe::finish)
        .map_err(ExportError::io(dest))?;
    let digest = hashing.hasher.finish();
    hashing
        .inner
        .into_inner()
        .map_err(|e| ExportError::io(dest)(e.into_error()))?
        .flush()
        .map_err(ExportError::io(dest))?;
    Ok(digest)
}
