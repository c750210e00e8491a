//! Integration tests for `fissile_oci::extract`: every fixture is generated here, hostile headers
//! are written byte by byte because the tar crate's builder refuses to produce them.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fissile_oci::extract::{
    decompressing_reader, extract_archive, extract_reader, open_archive, read_member, ExtractError,
    ExtractLimits, ExtractStats,
};
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Builder, EntryType, Header};

/// A scratch area: `archive` is written next to `root`, and `dest` lives inside `root`, so an
/// escape of one or two levels lands somewhere `snapshot` sees.
struct Fixture {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        let dest = tmp.path().join("root").join("dest");
        Fixture { tmp, dest }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Every path under the scratch area, without following links.
    fn snapshot(&self) -> BTreeSet<PathBuf> {
        walkdir::WalkDir::new(self.tmp.path())
            .follow_links(false)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(self.tmp.path())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn extract(&self, archive: &Path) -> Result<ExtractStats, ExtractError> {
        extract_archive(archive, &self.dest, &ExtractLimits::default())
    }

    /// Extracts a hostile archive and checks the refusal: the expected variant, a message naming
    /// the archive and `entry`, nothing added anywhere, no destination.
    fn refuse(
        &self,
        archive: &Path,
        limits: &ExtractLimits,
        entry: Option<&str>,
        is_expected: impl Fn(&ExtractError) -> bool,
    ) -> ExtractError {
        let before = self.snapshot();
        let err = extract_archive(archive, &self.dest, limits).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(is_expected(&err), "unexpected error variant: {err:?}");
        assert!(
            msg.contains(&archive.display().to_string()),
            "message lacks the archive path: {msg}"
        );
        if let Some(entry) = entry {
            assert!(
                msg.contains(entry),
                "message lacks the entry {entry:?}: {msg}"
            );
        }
        assert!(!msg.ends_with('.'), "message ends with a period: {msg}");
        assert_eq!(err.archive(), archive);
        assert!(!self.dest.exists(), "destination exists after a failure");
        assert_eq!(
            self.snapshot(),
            before,
            "the failed extraction left files behind"
        );
        err
    }
}

fn tar_with(f: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn file(b: &mut Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

fn dir(b: &mut Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_mode(mode);
    h.set_entry_type(EntryType::Directory);
    b.append_data(&mut h, path, io::empty()).unwrap();
}

fn link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(kind);
    b.append_link(&mut h, path, target).unwrap();
}

/// A header whose name and link name are copied verbatim, bypassing the builder's checks.
fn raw_header(name: &[u8], kind: EntryType, size: u64, linkname: &[u8], mode: u32) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..linkname.len()].copy_from_slice(linkname);
    }
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn raw(b: &mut Builder<Vec<u8>>, name: &[u8], kind: EntryType, linkname: &[u8], data: &[u8]) {
    let h = raw_header(name, kind, data.len() as u64, linkname, 0o644);
    b.append(&h, data).unwrap();
}

/// One pax record, `"<len> key=value\n"`, where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    assert_eq!(rec.len(), len);
    rec
}

fn pax(b: &mut impl Write, records: &[u8], global: bool) {
    let kind = if global {
        EntryType::XGlobalHeader
    } else {
        EntryType::XHeader
    };
    let mut h = Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(records.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    b.write_all(h.as_bytes()).unwrap();
    b.write_all(records).unwrap();
    let pad = (512 - records.len() % 512) % 512;
    b.write_all(&vec![0; pad]).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

#[test]
fn absolute_path_is_refused() {
    let fx = Fixture::new();
    let victim = fx.path("victim");
    let name = victim.to_str().unwrap().to_owned();
    let archive = fx.write(
        "abs.tar",
        &tar_with(|b| raw(b, name.as_bytes(), EntryType::Regular, b"", b"pwned")),
    );
    fx.refuse(&archive, &ExtractLimits::default(), Some(&name), |e| {
        matches!(e, ExtractError::AbsolutePath { .. })
    });
    assert!(!victim.exists());
}

#[test]
fn parent_traversal_is_refused() {
    for name in ["../x", "a/../../x", "./../../x", "ok/../x"] {
        let fx = Fixture::new();
        let archive = fx.write(
            "dotdot.tar",
            &tar_with(|b| {
                file(b, "fine.txt", b"fine", 0o644);
                raw(b, name.as_bytes(), EntryType::Regular, b"", b"pwned");
            }),
        );
        fx.refuse(&archive, &ExtractLimits::default(), Some(name), |e| {
            matches!(e, ExtractError::ParentComponent { .. })
        });
    }
}

#[test]
fn symlink_to_absolute_path_is_refused() {
    let fx = Fixture::new();
    let outside = fx.path("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap().to_owned();
    let archive = fx.write(
        "abs-link.tar",
        &tar_with(|b| {
            link(b, EntryType::Symlink, "a", &target);
            file(b, "a/passwd", b"pwned", 0o644);
        }),
    );
    let err = fx.refuse(&archive, &ExtractLimits::default(), Some("\"a\""), |e| {
        matches!(
            e,
            ExtractError::LinkEscape {
                kind: "symbolic link",
                ..
            }
        )
    });
    assert!(err.to_string().contains(&target));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn symlink_with_relative_escape_is_refused() {
    for (name, target) in [
        ("a", ".."),
        ("d/e/link", "../../../x"),
        ("l", "sub/../../x"),
    ] {
        let fx = Fixture::new();
        let archive = fx.write(
            "rel-link.tar",
            &tar_with(|b| {
                link(b, EntryType::Symlink, name, target);
                file(b, &format!("{name}/passwd"), b"pwned", 0o644);
            }),
        );
        fx.refuse(&archive, &ExtractLimits::default(), Some(name), |e| {
            matches!(e, ExtractError::LinkEscape { .. })
        });
    }
}

#[test]
fn symlink_chain_that_escapes_is_refused() {
    // Each link is harmless read lexically; together `b` resolves to root/.. .
    let fx = Fixture::new();
    let archive = fx.write(
        "chain.tar",
        &tar_with(|b| {
            link(b, EntryType::Symlink, "a", ".");
            link(b, EntryType::Symlink, "b", "a/..");
        }),
    );
    fx.refuse(&archive, &ExtractLimits::default(), Some("\"b\""), |e| {
        matches!(e, ExtractError::LinkEscape { .. })
    });
}

#[test]
fn writing_through_an_extracted_symlink_is_refused() {
    let fx = Fixture::new();
    let archive = fx.write(
        "through.tar",
        &tar_with(|b| {
            dir(b, "real", 0o755);
            link(b, EntryType::Symlink, "a", "real");
            file(b, "a/passwd", b"pwned", 0o644);
        }),
    );
    let err = fx.refuse(&archive, &ExtractLimits::default(), Some("a/passwd"), |e| {
        matches!(e, ExtractError::ThroughSymlink { .. })
    });
    assert!(err.to_string().contains("\"a\""), "{err}");

    // Same through a directory entry and a hard link.
    for second in [EntryType::Directory, EntryType::Link] {
        let fx = Fixture::new();
        let archive = fx.write(
            "through2.tar",
            &tar_with(|b| {
                file(b, "f", b"x", 0o644);
                link(b, EntryType::Symlink, "a", ".");
                if second == EntryType::Directory {
                    dir(b, "a/sub", 0o755);
                } else {
                    link(b, EntryType::Link, "a/h", "f");
                }
            }),
        );
        fx.refuse(&archive, &ExtractLimits::default(), Some("a/"), |e| {
            matches!(e, ExtractError::ThroughSymlink { .. })
        });
    }
}

#[test]
fn hardlink_outside_is_refused() {
    let fx = Fixture::new();
    let victim = fx.write("victim", b"secret");
    for target in [victim.to_str().unwrap(), "../victim", "../../victim"] {
        let archive = fx.write(
            "hard.tar",
            &tar_with(|b| {
                raw(b, b"h", EntryType::Link, target.as_bytes(), b"");
            }),
        );
        let err = fx.refuse(&archive, &ExtractLimits::default(), Some("\"h\""), |e| {
            matches!(
                e,
                ExtractError::LinkEscape {
                    kind: "hard link",
                    ..
                }
            )
        });
        assert!(err.to_string().contains(target), "{err}");
    }
    assert_eq!(fs::read(&victim).unwrap(), b"secret");
}

#[test]
fn hardlink_to_missing_or_non_file_is_refused() {
    for (setup, target) in [(None, "nothing"), (Some("d"), "d"), (Some("s"), "s")] {
        let fx = Fixture::new();
        let archive = fx.write(
            "hard.tar",
            &tar_with(|b| {
                match setup {
                    Some("d") => dir(b, "d", 0o755),
                    Some("s") => link(b, EntryType::Symlink, "s", "d"),
                    _ => {}
                }
                link(b, EntryType::Link, "h", target);
            }),
        );
        fx.refuse(&archive, &ExtractLimits::default(), Some("\"h\""), |e| {
            matches!(e, ExtractError::HardlinkTarget { .. })
        });
    }
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, word) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let fx = Fixture::new();
        let archive = fx.write(
            "dev.tar",
            &tar_with(|b| {
                file(b, "ok", b"ok", 0o644);
                let mut h = Header::new_gnu();
                h.set_entry_type(kind);
                h.set_size(0);
                h.set_mode(0o644);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, "dev/null", io::empty()).unwrap();
            }),
        );
        let err = fx.refuse(&archive, &ExtractLimits::default(), Some("dev/null"), |e| {
            matches!(e, ExtractError::SpecialFile { .. })
        });
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn gzip_bomb_stops_at_the_limit() {
    const BOMB: u64 = 200 << 20;
    let fx = Fixture::new();
    let archive = fx.path("bomb.tgz");
    {
        // Compressing 200 MiB is slow in a debug build; gzip members may be concatenated, so one
        // compressed MiB of zeros is written 200 times instead. Still streaming, still a bomb.
        let mut out = io::BufWriter::new(fs::File::create(&archive).unwrap());
        let mut h = Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(BOMB);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        out.write_all(&gzip(h.as_bytes())).unwrap();
        let mib = gzip(&vec![0; 1 << 20]);
        for _ in 0..BOMB >> 20 {
            out.write_all(&mib).unwrap();
        }
        out.write_all(&gzip(&[0; 1024])).unwrap();
        out.flush().unwrap();
    }
    assert!(fs::metadata(&archive).unwrap().len() < 10 << 20);
    let limits = ExtractLimits {
        max_unpacked_bytes: 10 << 20,
        ..ExtractLimits::default()
    };
    let err = fx.refuse(
        &archive,
        &limits,
        Some("zeros"),
        |e| matches!(e, ExtractError::TooLarge { limit, .. } if *limit == 10 << 20),
    );
    assert!(err.to_string().contains("--max-unpacked-size"), "{err}");
}

#[test]
fn zeros_after_the_end_of_the_tar_stream_count_too() {
    // A run of zero blocks ends a tar stream at once; draining the rest (to check the gzip CRC)
    // must not decompress 200 MiB of padding.
    let fx = Fixture::new();
    let archive = fx.path("padding.tgz");
    {
        let mut out = io::BufWriter::new(fs::File::create(&archive).unwrap());
        out.write_all(&gzip(&tar_with(|b| file(b, "x", b"x", 0o644))))
            .unwrap();
        let mib = gzip(&vec![0; 1 << 20]);
        for _ in 0..200 {
            out.write_all(&mib).unwrap();
        }
        out.flush().unwrap();
    }
    let limits = ExtractLimits {
        max_unpacked_bytes: 10 << 20,
        ..ExtractLimits::default()
    };
    fx.refuse(&archive, &limits, Some("end of the tar stream"), |e| {
        matches!(e, ExtractError::TooLarge { .. })
    });
    // A little padding is normal.
    let small = fx.path("small-padding.tgz");
    let mut bytes = gzip(&tar_with(|b| file(b, "x", b"x", 0o644)));
    bytes.extend(gzip(&[0; 10240]));
    fs::write(&small, bytes).unwrap();
    extract_archive(&small, &fx.dest, &limits).unwrap();
}

#[test]
fn many_small_files_add_up_to_the_limit() {
    let fx = Fixture::new();
    let chunk = vec![7u8; 4096];
    let archive = fx.write(
        "sum.tar",
        &tar_with(|b| {
            for i in 0..10 {
                file(b, &format!("f{i}"), &chunk, 0o644);
            }
        }),
    );
    let limits = ExtractLimits {
        max_unpacked_bytes: 4096 * 5 + 100,
        ..ExtractLimits::default()
    };
    fx.refuse(&archive, &limits, Some("f5"), |e| {
        matches!(e, ExtractError::TooLarge { .. })
    });
}

#[test]
fn lying_size_header_is_caught() {
    // The ustar size says 0, a pax record says 20 MiB and the data follows: readers that trust the
    // ustar field would see an empty file.
    const SIZE: u64 = 20 << 20;
    let fx = Fixture::new();
    let archive = fx.path("liar.tar");
    {
        let mut out = io::BufWriter::new(fs::File::create(&archive).unwrap());
        pax(
            &mut out,
            &pax_record("size", SIZE.to_string().as_bytes()),
            false,
        );
        let h = raw_header(b"liar", EntryType::Regular, 0, b"", 0o644);
        out.write_all(h.as_bytes()).unwrap();
        io::copy(&mut io::repeat(0).take(SIZE), &mut out).unwrap();
        out.write_all(&[0; 1024]).unwrap();
        out.flush().unwrap();
    }
    let limits = ExtractLimits {
        max_unpacked_bytes: 10 << 20,
        ..ExtractLimits::default()
    };
    fx.refuse(&archive, &limits, Some("liar"), |e| {
        matches!(e, ExtractError::TooLarge { .. })
    });
}

#[test]
fn too_many_entries_are_refused() {
    let fx = Fixture::new();
    let archive = fx.write(
        "many.tar",
        &tar_with(|b| {
            for i in 0..11 {
                file(b, &format!("f{i}"), b"", 0o644);
            }
        }),
    );
    let limits = ExtractLimits {
        max_entries: 10,
        ..ExtractLimits::default()
    };
    let err = fx.refuse(&archive, &limits, None, |e| {
        matches!(e, ExtractError::TooManyEntries { limit: 10, .. })
    });
    assert!(err.to_string().contains("10 entries"), "{err}");

    // Exactly at the limit is fine.
    let limits = ExtractLimits {
        max_entries: 11,
        ..ExtractLimits::default()
    };
    assert_eq!(
        extract_archive(&archive, &fx.dest, &limits)
            .unwrap()
            .entries,
        11
    );
}

/// Bytes that don't compress, so that cutting the gzip stream in half cuts file data too.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn truncated_gzip_is_corrupt() {
    let fx = Fixture::new();
    let tgz = gzip(&tar_with(|b| {
        file(b, "a", &noise(100_000), 0o644);
        file(b, "b", &noise(100_000), 0o644);
    }));
    let archive = fx.write("cut.tgz", &tgz[..tgz.len() / 2]);
    let err = fx.refuse(&archive, &ExtractLimits::default(), None, |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");
}

#[test]
fn gzip_with_bad_trailer_is_corrupt() {
    // The tar end marker comes before the gzip CRC; the CRC must still be checked.
    let fx = Fixture::new();
    let mut tgz = gzip(&tar_with(|b| file(b, "a", b"hello", 0o644)));
    let n = tgz.len();
    tgz[n - 8] ^= 0xff;
    let archive = fx.write("crc.tgz", &tgz);
    fx.refuse(&archive, &ExtractLimits::default(), None, |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
}

#[test]
fn truncated_tar_is_corrupt() {
    let fx = Fixture::new();
    let tar = tar_with(|b| {
        file(b, "first", b"1", 0o644);
        file(b, "big", &noise(10_000), 0o644);
    });
    // Cut inside the data of "big".
    let archive = fx.write("cut.tar", &tar[..512 * 3 + 3000]);
    let err = fx.refuse(&archive, &ExtractLimits::default(), Some("big"), |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");

    // Cut inside a header.
    let archive = fx.write("cut2.tar", &tar[..512 * 2 + 100]);
    fx.refuse(&archive, &ExtractLimits::default(), None, |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
}

#[test]
fn bad_header_checksum_is_corrupt() {
    let fx = Fixture::new();
    let mut tar = tar_with(|b| file(b, "a", b"hello", 0o644));
    tar[0] = b'b';
    let archive = fx.write("cksum.tar", &tar);
    fx.refuse(&archive, &ExtractLimits::default(), None, |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
}

#[test]
fn huge_gnu_long_name_is_refused_without_buffering_it() {
    // A GNU long-name header declaring 1 GiB: the tar crate would read it all into memory.
    let fx = Fixture::new();
    let archive = fx.path("longname.tar");
    {
        let mut out = io::BufWriter::new(fs::File::create(&archive).unwrap());
        let size: u64 = 1 << 30;
        let h = raw_header(b"././@LongLink", EntryType::GNULongName, size, b"", 0o644);
        out.write_all(h.as_bytes()).unwrap();
        io::copy(&mut io::repeat(b'a').take(32 << 20), &mut out).unwrap();
        out.flush().unwrap();
    }
    fx.refuse(&archive, &ExtractLimits::default(), None, |e| {
        matches!(e, ExtractError::Corrupt { .. })
    });
}

#[test]
fn nul_in_long_name_is_refused() {
    let fx = Fixture::new();
    let archive = fx.path("nul.tar");
    {
        let mut out = fs::File::create(&archive).unwrap();
        pax(&mut out, &pax_record("path", b"a\0b"), false);
        let h = raw_header(b"placeholder", EntryType::Regular, 0, b"", 0o644);
        out.write_all(h.as_bytes()).unwrap();
        out.write_all(&[0; 1024]).unwrap();
    }
    fx.refuse(&archive, &ExtractLimits::default(), Some("a\\0b"), |e| {
        matches!(e, ExtractError::InvalidPath { .. })
    });
}

#[test]
fn existing_destination_is_refused_and_untouched() {
    let fx = Fixture::new();
    fs::create_dir(&fx.dest).unwrap();
    fs::write(fx.dest.join("keep"), b"keep").unwrap();
    let archive = fx.write("ok.tar", &tar_with(|b| file(b, "x", b"x", 0o644)));
    let err = fx.extract(&archive).unwrap_err();
    assert!(
        matches!(err, ExtractError::DestinationExists { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&archive.display().to_string()), "{msg}");
    assert!(msg.contains(&fx.dest.display().to_string()), "{msg}");
    assert_eq!(fs::read_dir(&fx.dest).unwrap().count(), 1);
    assert_eq!(fs::read_dir(fx.path("root")).unwrap().count(), 1);
}

#[test]
fn missing_archive_is_an_open_error() {
    let fx = Fixture::new();
    let missing = fx.path("missing.tgz");
    let err = fx.extract(&missing).unwrap_err();
    assert!(matches!(err, ExtractError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()));
    assert!(!fx.dest.exists());
    assert!(matches!(
        open_archive(&missing),
        Err(ExtractError::Open { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Archives that must work

#[test]
fn plain_tar_extracts() {
    let fx = Fixture::new();
    let archive = fx.write(
        "plain.tar",
        &tar_with(|b| {
            dir(b, "bin", 0o755);
            file(b, "bin/run", b"#!/bin/sh\n", 0o755);
            file(b, "deep/ly/nested/file.txt", b"nested", 0o644);
            file(b, "empty", b"", 0o600);
        }),
    );
    let stats = fx.extract(&archive).unwrap();
    assert_eq!(
        stats,
        ExtractStats {
            entries: 4,
            bytes: 16
        }
    );
    assert_eq!(fs::read(fx.dest.join("bin/run")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        fs::read(fx.dest.join("deep/ly/nested/file.txt")).unwrap(),
        b"nested"
    );
    assert_eq!(fs::read(fx.dest.join("empty")).unwrap(), b"");
    // Only dest itself in root: no leftover partial directory.
    let root: Vec<_> = fs::read_dir(fx.path("root"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(root, vec![std::ffi::OsString::from("dest")]);
}

#[test]
fn dot_prefixed_and_plain_names_both_work() {
    let fx = Fixture::new();
    let archive = fx.write(
        "mixed.tar",
        &tar_with(|b| {
            raw(b, b"./", EntryType::Directory, b"", b"");
            raw(b, b"./job.MF", EntryType::Regular, b"", b"job");
            raw(b, b"templates/ctl.erb", EntryType::Regular, b"", b"ctl");
            raw(b, b"././monit", EntryType::Regular, b"", b"monit");
            raw(b, b".//a//b", EntryType::Regular, b"", b"ab");
        }),
    );
    let stats = fx.extract(&archive).unwrap();
    assert_eq!(stats.entries, 4, "the root entry is skipped");
    assert_eq!(fs::read(fx.dest.join("job.MF")).unwrap(), b"job");
    assert_eq!(fs::read(fx.dest.join("templates/ctl.erb")).unwrap(), b"ctl");
    assert_eq!(fs::read(fx.dest.join("monit")).unwrap(), b"monit");
    assert_eq!(fs::read(fx.dest.join("a/b")).unwrap(), b"ab");
}

#[test]
fn gzip_is_detected_by_magic_not_name() {
    let fx = Fixture::new();
    let tar = tar_with(|b| file(b, "x", b"payload", 0o644));
    let disguised = fx.write("really-gzip.tar", &gzip(&tar));
    let plain = fx.write("really-plain.tgz", &tar);
    for archive in [&disguised, &plain] {
        let dest = fx.path(&format!(
            "out-{}",
            archive.file_name().unwrap().to_str().unwrap()
        ));
        extract_archive(archive, &dest, &ExtractLimits::default()).unwrap();
        assert_eq!(fs::read(dest.join("x")).unwrap(), b"payload");

        let mut all = Vec::new();
        open_archive(archive)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, tar);
    }
}

#[test]
fn zstd_is_detected_by_magic_not_name() {
    let fx = Fixture::new();
    let tar = tar_with(|b| file(b, "x", b"payload", 0o644));
    let archive = fx.write("really-zstd.tgz", &zstd(&tar));
    fx.extract(&archive).unwrap();
    assert_eq!(fs::read(fx.dest.join("x")).unwrap(), b"payload");
    let mut all = Vec::new();
    open_archive(&archive)
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, tar);

    // A damaged frame is corrupt (frames only carry a checksum if the writer asked for one), and
    // so is a cut one.
    let tar = tar_with(|b| file(b, "a", &noise(50_000), 0o644));
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&tar).unwrap();
    let mut bad = enc.finish().unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    let cut = zstd(&tar)[..n / 2].to_vec();
    for (name, bad) in [("bad.tar.zst", bad), ("cut.tar.zst", cut)] {
        let archive = fx.write(name, &bad);
        let dest = fx.path("root/bad");
        let err = extract_archive(&archive, &dest, &ExtractLimits::default()).unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
        assert!(!dest.exists());
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let fx = Fixture::new();
    let tar = tar_with(|b| file(b, "x", &noise(3000), 0o644));
    let (a, b) = tar.split_at(1000);
    let mut two = gzip(a);
    two.extend(gzip(b));
    let archive = fx.write("two.tgz", &two);
    fx.extract(&archive).unwrap();
    assert_eq!(fs::read(fx.dest.join("x")).unwrap(), noise(3000));
}

#[test]
fn decompressing_reader_handles_short_inputs() {
    // Prefixes of the gzip and zstd magic are just short plain streams.
    for input in [&b""[..], b"\x1f", b"ab", b"\x28\xb5\x2f", b"abcdefgh"] {
        let mut out = Vec::new();
        decompressing_reader(io::Cursor::new(input.to_vec()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input);
    }
    let mut out = Vec::new();
    decompressing_reader(io::Cursor::new(gzip(b"hello")))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"hello");
}

#[test]
fn extract_reader_takes_any_stream() {
    let fx = Fixture::new();
    let tgz = gzip(&tar_with(|b| file(b, "x", b"streamed", 0o644)));
    let name = Path::new("in-memory.tgz");
    extract_reader(
        io::Cursor::new(tgz),
        name,
        &fx.dest,
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(fs::read(fx.dest.join("x")).unwrap(), b"streamed");

    let dest2 = fx.path("root/dest2");
    let err = extract_reader(
        io::Cursor::new(vec![1u8; 700]),
        name,
        &dest2,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("in-memory.tgz"), "{err}");
    assert!(!dest2.exists());
}

#[test]
fn destination_parents_are_created() {
    let fx = Fixture::new();
    let archive = fx.write("ok.tar", &tar_with(|b| file(b, "x", b"x", 0o644)));
    let dest = fx.path("new/parent/dest");
    extract_archive(&archive, &dest, &ExtractLimits::default()).unwrap();
    assert_eq!(fs::read(dest.join("x")).unwrap(), b"x");
}

#[test]
fn read_member_matches_normalized_names() {
    let dotted = tar_with(|b| {
        raw(b, b"./", EntryType::Directory, b"", b"");
        raw(b, b"./templates/x", EntryType::Regular, b"", b"tmpl");
        raw(b, b"./job.MF", EntryType::Regular, b"", b"name: dotted");
    });
    let plain = tar_with(|b| {
        file(b, "templates/x", b"tmpl", 0o644);
        file(b, "job.MF", b"name: plain", 0o644);
    });
    let name = Path::new("job.tgz");
    for (tar, want) in [(&dotted, &b"name: dotted"[..]), (&plain, b"name: plain")] {
        for query in ["job.MF", "./job.MF"] {
            let got = read_member(io::Cursor::new(tar.clone()), name, query, 1024).unwrap();
            assert_eq!(got.as_deref(), Some(want), "query {query}");
            // Compressed streams work too.
            let got = read_member(io::Cursor::new(gzip(tar)), name, query, 1024).unwrap();
            assert_eq!(got.as_deref(), Some(want), "query {query}");
        }
        assert_eq!(
            read_member(io::Cursor::new(tar.clone()), name, "spec", 1024).unwrap(),
            None
        );
    }
}

#[test]
fn read_member_enforces_its_limits() {
    let name = Path::new("job.tgz");
    let tar = tar_with(|b| {
        file(b, "job.MF", &[b'x'; 100], 0o644);
        link(b, EntryType::Symlink, "spec", "job.MF");
        raw(b, b"../evil", EntryType::Regular, b"", b"evil");
        file(b, "after", b"after", 0o644);
    });
    let err = read_member(io::Cursor::new(tar.clone()), name, "job.MF", 99).unwrap_err();
    assert!(
        matches!(err, ExtractError::MemberTooLarge { limit: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("job.tgz") && err.to_string().contains("job.MF"));
    assert_eq!(
        read_member(io::Cursor::new(tar.clone()), name, "job.MF", 100)
            .unwrap()
            .map(|v| v.len()),
        Some(100)
    );

    let err = read_member(io::Cursor::new(tar.clone()), name, "spec", 100).unwrap_err();
    assert!(
        matches!(err, ExtractError::NotRegularFile { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // Hostile names elsewhere in the archive don't stop the search.
    assert_eq!(
        read_member(io::Cursor::new(tar.clone()), name, "after", 100).unwrap(),
        Some(b"after".to_vec())
    );

    let err = read_member(io::Cursor::new(tar), name, "../evil", 100).unwrap_err();
    assert!(
        matches!(err, ExtractError::ParentComponent { .. }),
        "{err:?}"
    );
}

#[test]
fn read_member_reports_truncation() {
    let tar = tar_with(|b| file(b, "job.MF", &noise(5000), 0o644));
    let err = read_member(
        io::Cursor::new(tar[..2000].to_vec()),
        Path::new("cut.tar"),
        "job.MF",
        1 << 20,
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("cut.tar"), "{err}");
}

#[test]
fn symlinks_inside_dest_are_preserved() {
    let fx = Fixture::new();
    let archive = fx.write(
        "links.tar",
        &tar_with(|b| {
            file(b, "lib/tool", b"tool", 0o755);
            link(b, EntryType::Symlink, "bin/tool", "../lib/tool");
            link(b, EntryType::Symlink, "here", ".");
            link(b, EntryType::Symlink, "dangling", "not/there");
            link(b, EntryType::Symlink, "lib/self", "../lib");
        }),
    );
    fx.extract(&archive).unwrap();
    assert_eq!(
        fs::read_link(fx.dest.join("bin/tool")).unwrap(),
        Path::new("../lib/tool")
    );
    assert_eq!(fs::read(fx.dest.join("bin/tool")).unwrap(), b"tool");
    assert_eq!(fs::read_link(fx.dest.join("here")).unwrap(), Path::new("."));
    assert_eq!(
        fs::read_link(fx.dest.join("dangling")).unwrap(),
        Path::new("not/there")
    );
    assert_eq!(
        fs::read_link(fx.dest.join("lib/self")).unwrap(),
        Path::new("../lib")
    );
}

#[test]
fn hardlinks_inside_dest_share_the_inode() {
    let fx = Fixture::new();
    let archive = fx.write(
        "hard.tar",
        &tar_with(|b| {
            file(b, "a/orig", b"shared", 0o644);
            link(b, EntryType::Link, "b/copy", "a/orig");
            link(b, EntryType::Link, "./c", "./a/orig");
        }),
    );
    let stats = fx.extract(&archive).unwrap();
    assert_eq!(stats.entries, 3);
    let orig = fs::metadata(fx.dest.join("a/orig")).unwrap();
    for other in ["b/copy", "c"] {
        let md = fs::symlink_metadata(fx.dest.join(other)).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!((md.dev(), md.ino()), (orig.dev(), orig.ino()), "{other}");
    }
    assert_eq!(orig.nlink(), 3);
}

#[test]
fn permissions_keep_exec_bits_and_drop_special_bits() {
    let fx = Fixture::new();
    let archive = fx.write(
        "modes.tar",
        &tar_with(|b| {
            file(b, "exec", b"x", 0o755);
            file(b, "plain", b"x", 0o644);
            file(b, "private", b"x", 0o600);
            file(b, "suid", b"x", 0o4755);
            file(b, "sgid", b"x", 0o2711);
            dir(b, "sticky", 0o1777);
            dir(b, "readonly", 0o555);
            file(b, "readonly/inside", b"x", 0o444);
        }),
    );
    fx.extract(&archive).unwrap();
    let d = &fx.dest;
    assert_eq!(mode_of(&d.join("exec")), 0o755);
    assert_eq!(mode_of(&d.join("plain")), 0o644);
    assert_eq!(mode_of(&d.join("private")), 0o600);
    assert_eq!(mode_of(&d.join("suid")), 0o755);
    assert_eq!(mode_of(&d.join("sgid")), 0o711);
    assert_eq!(mode_of(&d.join("sticky")), 0o777);
    assert_eq!(mode_of(&d.join("readonly")), 0o755, "dirs get u+rwx");
    assert_eq!(mode_of(&d.join("readonly/inside")), 0o444);
}

#[test]
fn directories_may_follow_their_contents() {
    let fx = Fixture::new();
    let archive = fx.write(
        "late-dir.tar",
        &tar_with(|b| {
            file(b, "d/sub/f", b"f", 0o644);
            dir(b, "d/sub", 0o750);
            dir(b, "d", 0o700);
        }),
    );
    fx.extract(&archive).unwrap();
    assert_eq!(fs::read(fx.dest.join("d/sub/f")).unwrap(), b"f");
    assert_eq!(mode_of(&fx.dest.join("d/sub")), 0o750);
    assert_eq!(mode_of(&fx.dest.join("d")), 0o700);
}

#[test]
fn later_duplicates_replace_earlier_ones_without_following_links() {
    let fx = Fixture::new();
    let archive = fx.write(
        "dups.tar",
        &tar_with(|b| {
            file(b, "target", b"original", 0o644);
            link(b, EntryType::Symlink, "a", "target");
            // Must replace the link `a`, not write into `target` through it.
            file(b, "a", b"replacement", 0o644);
            file(b, "twice", b"first", 0o644);
            file(b, "twice", b"second", 0o600);
            file(b, "becomes-link", b"file", 0o644);
            link(b, EntryType::Symlink, "becomes-link", "target");
            link(b, EntryType::Symlink, "emptydir", "target");
            dir(b, "emptydir", 0o755);
        }),
    );
    fx.extract(&archive).unwrap();
    let d = &fx.dest;
    assert_eq!(fs::read(d.join("target")).unwrap(), b"original");
    assert!(fs::symlink_metadata(d.join("a"))
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(fs::read(d.join("a")).unwrap(), b"replacement");
    assert_eq!(fs::read(d.join("twice")).unwrap(), b"second");
    assert_eq!(mode_of(&d.join("twice")), 0o600);
    assert_eq!(
        fs::read_link(d.join("becomes-link")).unwrap(),
        Path::new("target")
    );
    assert!(fs::symlink_metadata(d.join("emptydir")).unwrap().is_dir());
}

#[test]
fn a_non_directory_replaces_a_whole_directory_tree() {
    // As container runtimes do (and unlike GNU tar, which fails on a non-empty directory).
    let fx = Fixture::new();
    let archive = fx.write(
        "dir-then-file.tar",
        &tar_with(|b| {
            file(b, "d/sub/f", b"f", 0o644);
            file(b, "d/g", b"g", 0o644);
            file(b, "target", b"t", 0o644);
            link(b, EntryType::Symlink, "d", "target");
            file(b, "e/f", b"f", 0o644);
            file(b, "e", b"now a file", 0o644);
            // The old contents are gone for hard links too.
            link(b, EntryType::Link, "h", "e/f");
        }),
    );
    fx.refuse(&archive, &ExtractLimits::default(), Some("\"h\""), |e| {
        matches!(e, ExtractError::HardlinkTarget { .. })
    });
    let archive = fx.write(
        "dir-then-file.tar",
        &tar_with(|b| {
            file(b, "d/sub/f", b"f", 0o644);
            file(b, "target", b"t", 0o644);
            link(b, EntryType::Symlink, "d", "target");
            file(b, "e/f", b"f", 0o644);
            file(b, "e", b"now a file", 0o644);
            // `d` is a link now: writing below it is refused, not sent into `target`.
            file(b, "d/sub/f", b"again", 0o644);
        }),
    );
    fx.refuse(&archive, &ExtractLimits::default(), Some("d/sub/f"), |e| {
        matches!(e, ExtractError::ThroughSymlink { .. })
    });
    let archive = fx.write(
        "ok.tar",
        &tar_with(|b| {
            file(b, "d/sub/f", b"f", 0o644);
            file(b, "target", b"t", 0o644);
            link(b, EntryType::Symlink, "d", "target");
            file(b, "e/f", b"f", 0o644);
            file(b, "e", b"now a file", 0o644);
        }),
    );
    fx.extract(&archive).unwrap();
    assert_eq!(
        fs::read_link(fx.dest.join("d")).unwrap(),
        Path::new("target")
    );
    assert_eq!(fs::read(fx.dest.join("e")).unwrap(), b"now a file");
    assert_eq!(fs::read(fx.dest.join("target")).unwrap(), b"t");
}

#[test]
fn long_names_via_gnu_and_pax_work() {
    let fx = Fixture::new();
    let long_dir = "d".repeat(120);
    let gnu_name = format!("{long_dir}/{}", "f".repeat(150));
    let pax_name = format!("{long_dir}/{}", "p".repeat(150));
    let long_target = format!("{}/{}", "..", "f".repeat(150));
    let archive = fx.path("long.tar");
    {
        let mut tar = tar_with(|b| {
            file(b, &gnu_name, b"gnu", 0o644);
            link(
                b,
                EntryType::Symlink,
                &format!("{long_dir}/link-{}", "l".repeat(120)),
                &format!("{long_target}/../{}", "f".repeat(150)),
            );
        });
        // Drop the end-of-archive blocks and append a pax-named entry plus a global header.
        tar.truncate(tar.len() - 1024);
        pax(&mut tar, &pax_record("comment", b"made by git"), true);
        pax(&mut tar, &pax_record("path", pax_name.as_bytes()), false);
        let h = raw_header(b"short-placeholder", EntryType::Regular, 3, b"", 0o644);
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(b"pax");
        tar.extend_from_slice(&[0; 509]);
        tar.extend_from_slice(&[0; 1024]);
        fs::write(&archive, tar).unwrap();
    }
    let stats = fx.extract(&archive).unwrap();
    assert_eq!(stats.entries, 3, "the global pax header is not an entry");
    assert_eq!(fs::read(fx.dest.join(&gnu_name)).unwrap(), b"gnu");
    assert_eq!(fs::read(fx.dest.join(&pax_name)).unwrap(), b"pax");
    assert!(!fx.dest.join("short-placeholder").exists());
}

#[test]
fn root_entry_mode_applies_to_dest() {
    let fx = Fixture::new();
    let archive = fx.write(
        "root.tar",
        &tar_with(|b| {
            raw(b, b"./", EntryType::Directory, b"", b"");
            file(b, "x", b"x", 0o644);
        }),
    );
    fx.extract(&archive).unwrap();
    // raw() writes 0o644; directories always get u+rwx.
    assert_eq!(mode_of(&fx.dest), 0o744);

    let fx = Fixture::new();
    let archive = fx.write("noroot.tar", &tar_with(|b| file(b, "x", b"x", 0o644)));
    fx.extract(&archive).unwrap();
    assert_eq!(mode_of(&fx.dest), 0o755);
}
