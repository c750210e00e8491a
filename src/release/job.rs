//! Job archives: only their `job.MF` matters to us (which packages the job needs).

use std::io::Read;
use std::path::Path;

use super::manifest::JobSpec;
use super::ReleaseError;
use crate::extract;

/// A `job.MF` larger than this is not a job manifest.
const MAX_JOB_MF: u64 = 16 * 1024 * 1024;

/// Reads `job.MF` from a (gzip or plain) job archive stream; `archive_name` is used in messages.
pub fn read_job_manifest(
    reader: impl Read + Send + 'static,
    archive_name: &Path,
) -> Result<JobSpec, ReleaseError> {
    let reader = extract::decompressing_reader(reader).map_err(ReleaseError::io(archive_name))?;
    let bytes = extract::read_member(reader, archive_name, "job.MF", MAX_JOB_MF)?
        .ok_or_else(|| ReleaseError::invalid(archive_name, "job archive has no job.MF"))?;
    let spec: JobSpec = crate::release::yaml::parse(&bytes, &archive_name.join("job.MF"))?;
    for package in &spec.packages {
        super::validate_name(archive_name, "package", package)?;
    }
    Ok(spec)
}
