//! Walking tar entries with a budget on the metadata the tar crate buffers, and pumping entry
//! data in bounded chunks.

use std::cell::Cell;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use super::compression::{sniff, Sniffed};
use super::error::human_bytes;
use super::ExtractError;

// The tar crate buffers GNU long names and pax records in memory, sized by a header we don't
// trust, so the bytes it may read while looking for the next entry are capped.
pub(super) const METADATA_BUDGET: u64 = 16 << 20;

#[derive(Debug)]
pub(super) struct MetadataTooLarge;

impl std::fmt::Display for MetadataTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "extension headers (long names or pax records) exceed {}",
            human_bytes(METADATA_BUDGET)
        )
    }
}

impl std::error::Error for MetadataTooLarge {}

/// Passes reads through, failing once the metadata budget (when armed) is spent.
pub(super) struct Metered<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.budget.get() {
            let n64 = n as u64;
            if n64 > left {
                return Err(io::Error::other(MetadataTooLarge));
            }
            self.budget.set(Some(left - n64));
        }
        Ok(n)
    }
}

/// Read failures of the archive stream: data problems are reported as corruption, anything else
/// (e.g. EIO) as a plain read error.
pub(super) fn read_error(archive: &Path, e: io::Error) -> ExtractError {
    use io::ErrorKind::{InvalidData, InvalidInput, Other, UnexpectedEof};
    let archive = archive.to_owned();
    let ours = e
        .get_ref()
        .is_some_and(|inner| inner.is::<MetadataTooLarge>());
    if ours || matches!(e.kind(), UnexpectedEof | InvalidData | InvalidInput | Other) {
        ExtractError::Corrupt {
            archive,
            detail: e.to_string(),
        }
    } else {
        ExtractError::Read { archive, source: e }
    }
}

pub(super) fn truncated(archive: &Path, entry: &str, got: u64, want: u64) -> ExtractError {
    ExtractError::Corrupt {
        archive: archive.to_owned(),
        detail: format!("entry {entry:?} ends after {got} of its {want} bytes"),
    }
}

/// Walks the tar entries of a (possibly gzip-compressed) stream, keeping the metadata budget armed
/// only while the tar crate is parsing headers.
pub(super) struct TarWalk<R: Read> {
    pub(super) archive: tar::Archive<Metered<Sniffed<R>>>,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> TarWalk<R> {
    pub(super) fn new(reader: R, archive_name: &Path) -> Result<Self, ExtractError> {
        let sniffed = sniff(reader).map_err(|e| read_error(archive_name, e))?;
        let budget = Rc::new(Cell::new(None));
        Ok(TarWalk {
            archive: tar::Archive::new(Metered {
                inner: sniffed,
                budget: budget.clone(),
            }),
            budget,
        })
    }
}

/// Calls `f` for every entry until it returns false. `f` must consume the entry's data itself:
/// otherwise the tar crate would skip it while the metadata budget is armed.
pub(super) fn walk<R: Read>(
    walk: &mut TarWalk<R>,
    archive_name: &Path,
    mut f: impl FnMut(&mut tar::Entry<'_, Metered<Sniffed<R>>>) -> Result<bool, ExtractError>,
) -> Result<(), ExtractError> {
    let budget = walk.budget.clone();
    let mut entries = walk
        .archive
        .entries()
        .map_err(|e| read_error(archive_name, e))?;
    loop {
        budget.set(Some(METADATA_BUDGET));
        let next = entries.next();
        budget.set(None);
        let mut entry = match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(read_error(archive_name, e)),
            Some(Ok(entry)) => entry,
        };
        if !f(&mut entry)? {
            return Ok(());
        }
    }
}

/// Feeds the rest of an entry's data to `on_chunk` in bounded pieces, returning how many bytes
/// there were (fewer than the header said means the archive was cut short).
pub(super) fn pump(
    entry: &mut impl Read,
    buf: &mut [u8],
    mut on_chunk: impl FnMut(&[u8]) -> Result<(), ExtractError>,
    archive: &Path,
) -> Result<u64, ExtractError> {
    let mut total = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(archive, e)),
        };
        total += n as u64;
        on_chunk(&buf[..n])?;
    }
}
