//! A tar stream written entry by entry with the exact names given (`./bin/x`, which the tar
//! crate's builder would shorten to `bin/x`) and fixed metadata: owner 0:0, no user or group
//! names, one mtime. GNU headers, with `././@LongLink` records for names over 100 bytes, as GNU
//! tar writes them; every reader (GNU tar, Go's archive/tar, Python's tarfile) reads them.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

pub struct TarWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, mtime: u64) -> TarWriter<W> {
        TarWriter { out, mtime }
    }

    /// A directory; `name` ends with `/`.
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        self.header(tar::EntryType::Directory, name, None, mode, 0, None)
    }

    /// A regular file of exactly `size` bytes read from `data`; a reader that ends early or
    /// has more is an error, not a shifted stream.
    pub fn file(&mut self, name: &str, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        self.header(tar::EntryType::Regular, name, None, mode, size, None)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: {copied} bytes where {size} were announced"),
            ));
        }
        self.pad(size)
    }

    pub fn symlink(&mut self, name: &str, target: &[u8], mode: u32) -> io::Result<()> {
        self.header(tar::EntryType::Symlink, name, Some(target), mode, 0, None)
    }

    /// A hard link to `target`, an entry written before.
    pub fn hardlink(&mut self, name: &str, target: &[u8], mode: u32) -> io::Result<()> {
        self.header(tar::EntryType::Link, name, Some(target), mode, 0, None)
    }

    /// A FIFO or device node, as tar(1) would carry it.
    pub fn special(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        mode: u32,
        device: Option<(u32, u32)>,
    ) -> io::Result<()> {
        self.header(kind, name, None, mode, 0, device)
    }

    /// The end-of-archive blocks; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: Option<&[u8]>,
        mode: u32,
        size: u64,
        device: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let name = name.as_bytes();
        if name.len() > 100 {
            self.long_record(tar::EntryType::GNULongName, name)?;
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            self.long_record(tar::EntryType::GNULongLink, link)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_size(size);
        if let Some((major, minor)) = device {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        let gnu = header.as_gnu_mut().expect("a GNU header");
        copy_truncated(&mut gnu.name, name);
        if let Some(link) = link {
            copy_truncated(&mut gnu.linkname, link);
        }
        header.set_cksum();
        self.out.write_all(header.as_bytes())
    }

    /// A GNU long name (or long link) record: the full name, NUL-terminated, as the data of a
    /// pseudo-entry that the next header's truncated field stands for.
    fn long_record(&mut self, kind: tar::EntryType, value: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let size = value.len() as u64 + 1;
        header.set_size(size);
        copy_truncated(
            &mut header.as_gnu_mut().expect("a GNU header").name,
            b"././@LongLink",
        );
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(value)?;
        self.out.write_all(&[0])?;
        self.pad(size)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..rest])
    }
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_exactly_and_long_ones_survive() {
        let long = format!("./{}/file", "d".repeat(150));
        let mut w = TarWriter::new(Vec::new(), 1_700_000_000);
        w.dir("./", 0o755).unwrap();
        w.file("./bin/x", 0o755, 3, &b"abc"[..]).unwrap();
        w.symlink("./link", b"bin/x", 0o777).unwrap();
        w.file(&long, 0o644, 0, &b""[..]).unwrap();
        w.hardlink("./again", long.as_bytes(), 0o644).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        type Seen = (Vec<u8>, tar::EntryType, Option<Vec<u8>>, u64, u32);
        let entries: Vec<Seen> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                (
                    e.path_bytes().into_owned(),
                    h.entry_type(),
                    e.link_name_bytes().map(|l| l.into_owned()),
                    h.mtime().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries[0].0, b"./");
        assert_eq!(entries[1].0, b"./bin/x");
        assert_eq!(entries[1].4, 0o755);
        assert_eq!(entries[1].3, 1_700_000_000);
        assert_eq!(entries[2].2.as_deref(), Some(&b"bin/x"[..]));
        assert_eq!(entries[3].0, long.as_bytes());
        assert_eq!(entries[4].1, tar::EntryType::Link);
        assert_eq!(entries[4].2.as_deref(), Some(long.as_bytes()));
    }

    #[test]
    fn a_short_reader_is_an_error() {
        let mut w = TarWriter::new(Vec::new(), 0);
        assert!(w.file("./x", 0o644, 10, &b"abc"[..]).is_err());
    }
}
