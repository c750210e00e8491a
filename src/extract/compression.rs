//! Compression is told by magic bytes (gzip, zstd, or none), never by file name.

use fs_err::File;
use std::io::{self, Read};
use std::path::Path;

use super::ExtractError;
use flate2::read::MultiGzDecoder;

/// Opens a tarball that may be gzip-compressed (magic 1f 8b), zstd-compressed (magic 28 b5 2f fd)
/// or a plain tar; detect by magic bytes, not by file name.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read + Send>, ExtractError> {
    let file = File::open(path).map_err(|source| ExtractError::Open {
        archive: path.to_owned(),
        source,
    })?;
    decompressing_reader(io::BufReader::new(file)).map_err(|source| ExtractError::Read {
        archive: path.to_owned(),
        source,
    })
}

/// Same as [`open_archive`], over any reader (peeks the first 4 bytes, then chains them back).
pub fn decompressing_reader<R: Read + Send + 'static>(r: R) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(sniff(r)?))
}

pub(super) type Rechained<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Either the reader itself or a decoder over it; generic so that borrowed, non-`Send` readers can
/// be sniffed too.
pub(super) enum Sniffed<R: Read> {
    Plain(Rechained<R>),
    // Multi-member, like gzip(1): concatenated .gz files are one stream.
    Gzip(Box<MultiGzDecoder<Rechained<R>>>),
    // Concatenated frames are one stream too. The decoder refuses frames whose window exceeds
    // zstd's default limit (128 MiB), which bounds its memory whatever the header claims.
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Rechained<R>>>>),
}

impl<R: Read> Read for Sniffed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sniffed::Plain(r) => r.read(buf),
            Sniffed::Gzip(r) => r.read(buf),
            Sniffed::Zstd(r) => r.read(buf),
        }
    }
}

pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
pub(super) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

pub(super) fn sniff<R: Read>(mut r: R) -> io::Result<Sniffed<R>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &magic[..got];
    let chained = io::Cursor::new(head.to_vec()).chain(r);
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Sniffed::Gzip(Box::new(MultiGzDecoder::new(chained))))
    } else if head == ZSTD_MAGIC {
        Ok(Sniffed::Zstd(Box::new(zstd::stream::read::Decoder::new(
            chained,
        )?)))
    } else {
        Ok(Sniffed::Plain(chained))
    }
}
