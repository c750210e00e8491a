//! Reading one member of an archive into memory (a manifest, a spec) without extracting.

use std::io::Read;
use std::path::Path;

use super::entry_path::{lossy, normalize, special_kind};
use super::tar_walk::{pump, read_error, truncated, walk, TarWalk};
use super::ExtractError;
use tar::EntryType;

/// Reads one regular-file member by its normalized path (e.g. "job.MF" matches "job.MF" and
/// "./job.MF") fully into memory, at most `max_bytes`; Ok(None) if absent. The stream may be plain
/// or gzip-compressed. The first matching entry wins: reading stops there rather than scanning a
/// possibly huge archive for duplicates.
pub fn read_member(
    reader: impl Read,
    archive_name: &Path,
    member: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, ExtractError> {
    let wanted =
        normalize(member.as_bytes()).map_err(|p| p.into_error(archive_name, member.to_owned()))?;
    let mut tw = TarWalk::new(reader, archive_name)?;
    let mut found = None;
    let mut buf = vec![0u8; 64 * 1024];
    walk(&mut tw, archive_name, |entry| {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let size = entry.size();
        let name = lossy(&raw);
        // Hostile names can't match a normalized member; they are just skipped.
        let matches = normalize(&raw).is_ok_and(|p| p == wanted)
            && !matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader);
        if !matches {
            let got = pump(entry, &mut buf, |_| Ok(()), archive_name)?;
            if got < size {
                return Err(truncated(archive_name, &name, got, size));
            }
            return Ok(true);
        }
        let is_file =
            matches!(kind, EntryType::Regular | EntryType::Continuous) && !raw.ends_with(b"/");
        if !is_file {
            let kind = match kind {
                EntryType::Directory | EntryType::Regular => "directory".to_owned(),
                EntryType::Symlink => "symbolic link".to_owned(),
                EntryType::Link => "hard link".to_owned(),
                other => special_kind(other),
            };
            return Err(ExtractError::NotRegularFile {
                archive: archive_name.to_owned(),
                entry: name,
                kind,
            });
        }
        let too_large = || ExtractError::MemberTooLarge {
            archive: archive_name.to_owned(),
            entry: name.clone(),
            limit: max_bytes,
        };
        if size > max_bytes {
            return Err(too_large());
        }
        // The header size is trusted only as an upper bound on the allocation.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        entry
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| read_error(archive_name, e))?;
        if data.len() as u64 > max_bytes {
            return Err(too_large());
        }
        if (data.len() as u64) < size {
            return Err(truncated(archive_name, &name, data.len() as u64, size));
        }
        found = Some(data);
        Ok(false)
    })?;
    Ok(found)
}
