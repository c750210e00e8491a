//! Integration tests for `fissile_oci::extract::TreeBuilder`: OCI-style layers applied in order,
//! with whiteouts. Every layer is generated here with the tar crate (hostile names byte by byte).

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fissile_oci::extract::{
    decompressing_reader, extract_archive, open_archive, ExtractError, ExtractLimits, ExtractStats,
    TreeBuilder,
};
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Builder, EntryType, Header};

/// A scratch area: `dest` lives in `root/`, and `outside/` is a sibling of `root/` that no layer
/// may touch; `snapshot` sees all of it.
struct Fixture {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/victim"), b"victim").unwrap();
        let dest = tmp.path().join("root").join("dest");
        Fixture { tmp, dest }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn outside(&self) -> String {
        self.path("outside").to_str().unwrap().to_owned()
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

    fn root_names(&self) -> Vec<OsString> {
        fs::read_dir(self.path("root"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    fn builder(&self, escaping_symlinks: bool) -> TreeBuilder {
        let mut b = TreeBuilder::new(&self.dest, &ExtractLimits::default()).unwrap();
        b.allow_escaping_symlinks(escaping_symlinks);
        b
    }

    fn build(&self, layers: &[Layer]) -> Result<ExtractStats, ExtractError> {
        self.build_with(layers, false, &ExtractLimits::default())
    }

    fn build_with(
        &self,
        layers: &[Layer],
        escaping_symlinks: bool,
        limits: &ExtractLimits,
    ) -> Result<ExtractStats, ExtractError> {
        let mut b = TreeBuilder::new(&self.dest, limits)?;
        b.allow_escaping_symlinks(escaping_symlinks);
        for l in layers {
            b.apply(io::Cursor::new(&l.bytes), Path::new(l.name), l.whiteouts)?;
        }
        b.finish()
    }

    /// Builds from hostile layers and checks the refusal: the expected variant, a message naming
    /// the failing layer and `entry`, nothing added or removed anywhere (`outside/` included), no
    /// destination and no staging directory left.
    fn refuse(
        &self,
        layers: &[Layer],
        escaping_symlinks: bool,
        limits: &ExtractLimits,
        failing: &str,
        entry: Option<&str>,
        is_expected: impl Fn(&ExtractError) -> bool,
    ) -> ExtractError {
        let before = self.snapshot();
        let err = self
            .build_with(layers, escaping_symlinks, limits)
            .unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(is_expected(&err), "unexpected error variant: {err:?}");
        assert!(
            msg.contains(failing),
            "message lacks the layer {failing}: {msg}"
        );
        assert_eq!(err.archive(), Path::new(failing));
        if let Some(entry) = entry {
            assert!(
                msg.contains(entry),
                "message lacks the entry {entry:?}: {msg}"
            );
        }
        assert!(!self.dest.exists(), "destination exists after a failure");
        assert!(
            self.root_names().is_empty(),
            "staging directory left behind"
        );
        assert_eq!(self.snapshot(), before, "the failed build changed files");
        assert_eq!(fs::read(self.path("outside/victim")).unwrap(), b"victim");
        err
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.dest.join(rel)).unwrap()
    }

    fn children(&self, rel: &str) -> BTreeSet<String> {
        fs::read_dir(self.dest.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// Every path in the built tree, relative to `dest`.
    fn tree(&self) -> BTreeSet<String> {
        walkdir::WalkDir::new(&self.dest)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(&self.dest).unwrap();
                rel.to_str().unwrap().to_owned()
            })
            .collect()
    }
}

struct Layer {
    name: &'static str,
    bytes: Vec<u8>,
    whiteouts: bool,
}

/// A layer with whiteouts honoured, as OCI layers are.
fn oci(name: &'static str, f: impl FnOnce(&mut Builder<Vec<u8>>)) -> Layer {
    Layer {
        name,
        bytes: tar_with(f),
        whiteouts: true,
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

/// A whiteout as image builders write them: an empty regular file.
fn wh(b: &mut Builder<Vec<u8>>, path: &str) {
    file(b, path, b"", 0o644);
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

fn symlink(b: &mut Builder<Vec<u8>>, path: &str, target: &str) {
    link(b, EntryType::Symlink, path, target);
}

/// A regular-file entry whose name is copied verbatim, bypassing the builder's checks.
fn raw(b: &mut Builder<Vec<u8>>, name: &[u8]) {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
    }
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    b.append(&h, io::empty()).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Layers that must work

#[test]
fn later_layers_add_and_overwrite() {
    let fx = Fixture::new();
    let layers = [
        oci("base.tar", |b| {
            dir(b, "etc", 0o755);
            file(b, "etc/conf", b"v1", 0o644);
            file(b, "etc/only1", b"one", 0o644);
            file(b, "bin/tool", b"tool1", 0o755);
            symlink(b, "bin/t", "tool");
        }),
        oci("top.tar", |b| {
            file(b, "etc/conf", b"v2", 0o600);
            file(b, "etc/only2", b"two", 0o644);
            file(b, "bin/tool", b"tool2", 0o700);
            symlink(b, "bin/t", "../etc/conf");
        }),
    ];
    let mut builder = fx.builder(false);
    let first = builder
        .apply(
            io::Cursor::new(&layers[0].bytes),
            Path::new("base.tar"),
            true,
        )
        .unwrap();
    assert_eq!(
        first,
        ExtractStats {
            entries: 5,
            bytes: 10
        }
    );
    assert_eq!(
        fs::read(builder.staging_dir().join("etc/conf")).unwrap(),
        b"v1"
    );
    assert!(!fx.dest.exists(), "dest appears only when finished");
    assert_eq!(builder.staging_dir().parent(), fx.dest.parent());
    let second = builder
        .apply(
            io::Cursor::new(&layers[1].bytes),
            Path::new("top.tar"),
            true,
        )
        .unwrap();
    assert_eq!(
        second,
        ExtractStats {
            entries: 4,
            bytes: 10
        }
    );
    let total = builder.finish().unwrap();
    assert_eq!(
        total,
        ExtractStats {
            entries: 9,
            bytes: 20
        }
    );

    assert_eq!(
        fx.tree(),
        set(&[
            "bin",
            "bin/t",
            "bin/tool",
            "etc",
            "etc/conf",
            "etc/only1",
            "etc/only2"
        ])
    );
    assert_eq!(fx.read("etc/conf"), b"v2");
    assert_eq!(mode_of(&fx.dest.join("etc/conf")), 0o600);
    assert_eq!(fx.read("etc/only1"), b"one");
    assert_eq!(fx.read("etc/only2"), b"two");
    assert_eq!(fx.read("bin/tool"), b"tool2");
    assert_eq!(mode_of(&fx.dest.join("bin/tool")), 0o700);
    assert_eq!(
        fs::read_link(fx.dest.join("bin/t")).unwrap(),
        Path::new("../etc/conf")
    );
    assert_eq!(fx.root_names(), vec![OsString::from("dest")]);
}

#[test]
fn whiteouts_delete_files_and_directories_of_earlier_layers() {
    let fx = Fixture::new();
    fx.build(&[
        oci("base.tar", |b| {
            file(b, "f", b"f", 0o644);
            file(b, "d/x", b"x", 0o644);
            file(b, "d/sub/y", b"y", 0o644);
            dir(b, "d/empty", 0o755);
            file(b, "keep/k", b"k", 0o644);
            file(b, "keep/gone", b"gone", 0o644);
            symlink(b, "l", "keep");
            file(b, "h", b"old h", 0o644);
        }),
        oci("top.tar", |b| {
            wh(b, ".wh.f");
            wh(b, "./.wh.d");
            wh(b, "keep/.wh.gone");
            // Removes the link, not what it points to.
            wh(b, ".wh.l");
            // Nothing to remove: fine, and nothing is created.
            wh(b, ".wh.ghost");
            wh(b, "nodir/.wh.x");
            wh(b, "keep/k/.wh.x");
            // A whiteout only hides earlier layers: what this layer writes stays, before or
            // after the whiteout.
            file(b, "new", b"new", 0o644);
            wh(b, ".wh.new");
            wh(b, ".wh.h");
            file(b, "h", b"new h", 0o644);
        }),
    ])
    .unwrap();
    assert_eq!(fx.tree(), set(&["h", "keep", "keep/k", "new"]));
    assert_eq!(fx.read("h"), b"new h");
    assert_eq!(fx.read("new"), b"new");
    assert_eq!(fx.read("keep/k"), b"k");
}

#[test]
fn whiteout_of_a_directory_keeps_what_this_layer_put_in_it() {
    let fx = Fixture::new();
    fx.build(&[
        oci("base.tar", |b| {
            file(b, "d/old", b"old", 0o644);
            file(b, "d/sub/old", b"old", 0o644);
        }),
        oci("top.tar", |b| {
            file(b, "d/sub/new", b"new", 0o644);
            wh(b, ".wh.d");
            file(b, "d/later", b"later", 0o644);
        }),
    ])
    .unwrap();
    assert_eq!(fx.tree(), set(&["d", "d/later", "d/sub", "d/sub/new"]));
}

#[test]
fn opaque_directories_drop_earlier_children() {
    let base = || {
        oci("base.tar", |b| {
            dir(b, "d", 0o755);
            file(b, "d/a", b"a", 0o644);
            file(b, "d/b", b"b", 0o644);
            file(b, "d/sub/x", b"x", 0o644);
            file(b, "other/o", b"o", 0o644);
        })
    };
    // The marker before and after what the layer adds.
    for marker_first in [true, false] {
        let fx = Fixture::new();
        fx.build(&[
            base(),
            oci("top.tar", |b| {
                if marker_first {
                    wh(b, "d/.wh..wh..opq");
                }
                file(b, "d/c", b"c", 0o644);
                if !marker_first {
                    wh(b, "d/.wh..wh..opq");
                }
            }),
        ])
        .unwrap();
        assert_eq!(
            fx.children("d"),
            set(&["c"]),
            "marker first: {marker_first}"
        );
        assert_eq!(fx.read("d/c"), b"c");
        assert_eq!(fx.read("other/o"), b"o");
    }

    // A directory the layer writes into is kept, but sifted too; the marker may come with a
    // directory entry that changes the mode.
    let fx = Fixture::new();
    fx.build(&[
        base(),
        oci("top.tar", |b| {
            dir(b, "d", 0o750);
            file(b, "d/sub/new", b"new", 0o644);
            wh(b, "d/.wh..wh..opq");
        }),
    ])
    .unwrap();
    assert_eq!(
        fx.tree(),
        set(&["d", "d/sub", "d/sub/new", "other", "other/o"])
    );
    assert_eq!(mode_of(&fx.dest.join("d")), 0o750);

    // The root itself can be opaque.
    let fx = Fixture::new();
    fx.build(&[
        base(),
        oci("top.tar", |b| {
            wh(b, ".wh..wh..opq");
            file(b, "top", b"top", 0o644);
        }),
    ])
    .unwrap();
    assert_eq!(fx.tree(), set(&["top"]));
}

#[test]
fn hardlinks_may_point_to_files_of_earlier_layers() {
    let fx = Fixture::new();
    fx.build(&[
        oci("base.tar", |b| file(b, "lib/orig", b"shared", 0o755)),
        oci("mid.tar", |b| {
            link(b, EntryType::Link, "bin/copy", "lib/orig");
            link(b, EntryType::Link, "./again", "./lib/orig");
        }),
    ])
    .unwrap();
    let orig = fs::metadata(fx.dest.join("lib/orig")).unwrap();
    for other in ["bin/copy", "again"] {
        let md = fs::symlink_metadata(fx.dest.join(other)).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!((md.dev(), md.ino()), (orig.dev(), orig.ino()), "{other}");
    }
    assert_eq!(orig.nlink(), 3);

    // A later layer replacing the original leaves the links with the old content, as a copy-up
    // would.
    let fx = Fixture::new();
    fx.build(&[
        oci("base.tar", |b| file(b, "lib/orig", b"shared", 0o755)),
        oci("mid.tar", |b| link(b, EntryType::Link, "copy", "lib/orig")),
        oci("top.tar", |b| file(b, "lib/orig", b"replaced", 0o755)),
    ])
    .unwrap();
    assert_eq!(fx.read("copy"), b"shared");
    assert_eq!(fx.read("lib/orig"), b"replaced");
}

#[test]
fn whiteouts_off_keeps_wh_names_as_plain_files() {
    let fx = Fixture::new();
    let plain = Layer {
        name: "plain.tar",
        bytes: tar_with(|b| {
            wh(b, ".wh.x");
            wh(b, "d/.wh..wh..opq");
        }),
        whiteouts: false,
    };
    fx.build(&[
        oci("base.tar", |b| {
            file(b, "x", b"x", 0o644);
            file(b, "d/y", b"y", 0o644);
        }),
        plain,
    ])
    .unwrap();
    assert_eq!(
        fx.tree(),
        set(&["x", ".wh.x", "d", "d/y", "d/.wh..wh..opq"])
    );

    // extract_archive is the same thing, one layer without whiteouts.
    let fx = Fixture::new();
    let archive = fx.path("wh.tar");
    fs::write(&archive, tar_with(|b| wh(b, ".wh.x"))).unwrap();
    extract_archive(&archive, &fx.dest, &ExtractLimits::default()).unwrap();
    assert_eq!(fx.tree(), set(&[".wh.x"]));
}

#[test]
fn gzip_zstd_and_plain_layers_all_apply() {
    let fx = Fixture::new();
    let one = tar_with(|b| file(b, "a", b"from gzip", 0o644));
    let two = tar_with(|b| {
        file(b, "b", b"from zstd", 0o644);
        wh(b, ".wh.a");
    });
    // Two zstd frames back to back are one stream.
    let (head, tail) = two.split_at(700);
    let mut two_frames = zstd(head);
    two_frames.extend(zstd(tail));
    let three = tar_with(|b| file(b, "c", b"plain", 0o644));
    fx.build(&[
        Layer {
            name: "one.tar.gz",
            bytes: gzip(&one),
            whiteouts: true,
        },
        Layer {
            name: "two.tar.zst",
            bytes: two_frames,
            whiteouts: true,
        },
        Layer {
            name: "three.tar",
            bytes: three,
            whiteouts: true,
        },
    ])
    .unwrap();
    assert_eq!(fx.tree(), set(&["b", "c"]));
    assert_eq!(fx.read("b"), b"from zstd");

    // The generic readers detect zstd by magic too, whatever the file is called.
    let disguised = fx.path("really-zstd.tar.gz");
    fs::write(&disguised, zstd(&one)).unwrap();
    let mut all = Vec::new();
    open_archive(&disguised)
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, one);
    let mut all = Vec::new();
    decompressing_reader(io::Cursor::new(zstd(b"hello")))
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, b"hello");
    let dest = fx.path("root/single");
    extract_archive(&disguised, &dest, &ExtractLimits::default()).unwrap();
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"from gzip");
}

#[test]
fn later_layers_replace_files_directories_and_symlinks() {
    let fx = Fixture::new();
    fx.build(&[
        oci("base.tar", |b| {
            file(b, "d/x/y", b"y", 0o644);
            file(b, "d/z", b"z", 0o644);
            file(b, "f", b"f", 0o644);
            dir(b, "keep", 0o755);
            file(b, "keep/k", b"k", 0o644);
            dir(b, "real", 0o755);
            symlink(b, "s", "real");
            file(b, "e", b"e", 0o644);
        }),
        oci("top.tar", |b| {
            // A non-directory over a non-empty directory removes the whole tree.
            file(b, "d", b"now a file", 0o640);
            // A directory over a file.
            dir(b, "f", 0o750);
            file(b, "f/inside", b"in f", 0o644);
            // A directory over a directory only updates its mode.
            dir(b, "keep", 0o700);
            // A directory over a symlink replaces the link; nothing lands in its target.
            dir(b, "s", 0o755);
            file(b, "s/inside", b"in s", 0o644);
            // A symlink over a file.
            symlink(b, "e", "f/inside");
        }),
    ])
    .unwrap();
    assert_eq!(
        fx.tree(),
        set(&["d", "e", "f", "f/inside", "keep", "keep/k", "real", "s", "s/inside"])
    );
    assert_eq!(fx.read("d"), b"now a file");
    assert_eq!(mode_of(&fx.dest.join("d")), 0o640);
    assert!(fs::symlink_metadata(fx.dest.join("f")).unwrap().is_dir());
    assert_eq!(mode_of(&fx.dest.join("f")), 0o750);
    assert_eq!(mode_of(&fx.dest.join("keep")), 0o700);
    assert_eq!(fx.read("keep/k"), b"k");
    assert!(fs::symlink_metadata(fx.dest.join("s")).unwrap().is_dir());
    assert_eq!(fx.children("real"), BTreeSet::new());
    assert_eq!(
        fs::read_link(fx.dest.join("e")).unwrap(),
        Path::new("f/inside")
    );
    assert_eq!(fx.read("e"), b"in f");

    // An entry below what is now a file is refused (tar and container runtimes fail there too):
    // the layer should have made the path a directory first.
    let fx = Fixture::new();
    fx.refuse(
        &[
            oci("base.tar", |b| file(b, "p/old", b"old", 0o644)),
            oci("mid.tar", |b| file(b, "p", b"file", 0o644)),
            oci("top.tar", |b| file(b, "p/new", b"new", 0o644)),
        ],
        false,
        &ExtractLimits::default(),
        "top.tar",
        Some("p/new"),
        |e| matches!(e, ExtractError::Write { .. }),
    );
}

#[test]
fn escaping_symlinks_can_be_allowed_for_root_file_systems() {
    let fx = Fixture::new();
    let outside = fx.outside();
    let mut b = fx.builder(true);
    b.apply(
        io::Cursor::new(tar_with(|b| {
            file(b, "etc/alternatives/real-awk", b"awk", 0o755);
            symlink(b, "usr/bin/awk", "/etc/alternatives/awk");
            symlink(b, "abs", &outside);
            symlink(b, "up", "../../../..");
        })),
        Path::new("rootfs.tar"),
        true,
    )
    .unwrap();
    // A later layer may replace such a link by a directory and fill it.
    b.apply(
        io::Cursor::new(tar_with(|b| {
            dir(b, "abs", 0o755);
            file(b, "abs/victim", b"mine", 0o644);
        })),
        Path::new("top.tar"),
        true,
    )
    .unwrap();
    b.finish().unwrap();
    assert_eq!(
        fs::read_link(fx.dest.join("usr/bin/awk")).unwrap(),
        Path::new("/etc/alternatives/awk")
    );
    assert_eq!(fx.read("abs/victim"), b"mine");
    assert_eq!(fs::read(fx.path("outside/victim")).unwrap(), b"victim");
}

#[test]
fn an_empty_builder_makes_an_empty_directory() {
    let fx = Fixture::new();
    let stats = fx.build(&[]).unwrap();
    assert_eq!(stats, ExtractStats::default());
    assert!(fx.tree().is_empty());
    assert_eq!(mode_of(&fx.dest), 0o755);
}

// ---------------------------------------------------------------------------------------------
// Hostile layers

#[test]
fn whiteout_through_a_symlink_is_refused() {
    // A link inside the tree: refused all the same, like writes through it.
    for entry in ["a/.wh.victim", "a/.wh..wh..opq", "a/sub/.wh.x"] {
        let fx = Fixture::new();
        let err = fx.refuse(
            &[
                oci("base.tar", |b| {
                    file(b, "real/victim", b"v", 0o644);
                    file(b, "real/sub/x", b"x", 0o644);
                    symlink(b, "a", "real");
                }),
                oci("top.tar", |b| wh(b, entry)),
            ],
            false,
            &ExtractLimits::default(),
            "top.tar",
            Some(entry),
            |e| matches!(e, ExtractError::ThroughSymlink { link, .. } if link == "a"),
        );
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    // A link to a directory outside, with escaping links allowed: `outside/victim` survives.
    for entry in ["a/.wh.victim", "a/.wh..wh..opq"] {
        let fx = Fixture::new();
        let outside = fx.outside();
        fx.refuse(
            &[
                oci("base.tar", |b| symlink(b, "a", &outside)),
                oci("top.tar", |b| wh(b, entry)),
            ],
            true,
            &ExtractLimits::default(),
            "top.tar",
            Some(entry),
            |e| matches!(e, ExtractError::ThroughSymlink { .. }),
        );
    }
}

#[test]
fn symlinks_of_earlier_layers_are_not_written_through() {
    // Strict mode, as for plain archives: the link itself is refused, in the first layer.
    let fx = Fixture::new();
    let outside = fx.outside();
    fx.refuse(
        &[
            oci("base.tar", |b| symlink(b, "a", &outside)),
            oci("top.tar", |b| file(b, "a/passwd", b"pwned", 0o644)),
        ],
        false,
        &ExtractLimits::default(),
        "base.tar",
        Some("\"a\""),
        |e| matches!(e, ExtractError::LinkEscape { .. }),
    );

    // With escaping links allowed the link is kept, and nothing is ever written through it.
    type Entry = fn(&mut Builder<Vec<u8>>);
    let attempts: [(&str, Entry); 5] = [
        ("a/passwd", |b| file(b, "a/passwd", b"pwned", 0o644)),
        ("a/sub", |b| dir(b, "a/sub", 0o755)),
        ("a/h", |b| link(b, EntryType::Link, "a/h", "f")),
        ("a/l", |b| symlink(b, "a/l", "x")),
        ("up/victim", |b| file(b, "up/victim", b"pwned", 0o644)),
    ];
    for (entry, write) in attempts {
        let fx = Fixture::new();
        let outside = fx.outside();
        let base = oci("base.tar", |b| {
            file(b, "f", b"f", 0o644);
            symlink(b, "a", &outside);
            symlink(b, "up", "../../outside");
        });
        let top = Layer {
            name: "top.tar",
            bytes: tar_with(write),
            whiteouts: true,
        };
        fx.refuse(
            &[base, top],
            true,
            &ExtractLimits::default(),
            "top.tar",
            Some(entry),
            |e| matches!(e, ExtractError::ThroughSymlink { .. }),
        );
    }
}

#[test]
fn a_later_layer_cannot_make_an_earlier_symlink_escape() {
    // `b -> a/..` is the root while `a` is a directory; making `a` a link to `.` turns `b` into
    // the root's parent.
    let fx = Fixture::new();
    fx.refuse(
        &[
            oci("base.tar", |b| {
                dir(b, "a", 0o755);
                symlink(b, "b", "a/..");
            }),
            oci("top.tar", |b| symlink(b, "a", ".")),
        ],
        false,
        &ExtractLimits::default(),
        "top.tar",
        Some("\"b\""),
        |e| matches!(e, ExtractError::LinkEscape { .. }),
    );
}

#[test]
fn whiteouts_naming_nothing_are_refused() {
    for entry in [".wh.", ".wh..", ".wh...", "d/.wh..", "d/.wh..."] {
        let fx = Fixture::new();
        fx.refuse(
            &[
                oci("base.tar", |b| file(b, "d/x", b"x", 0o644)),
                oci("top.tar", |b| raw(b, entry.as_bytes())),
            ],
            false,
            &ExtractLimits::default(),
            "top.tar",
            Some(entry),
            |e| matches!(e, ExtractError::InvalidPath { reason, .. } if reason.contains("whiteout")),
        );
    }
}

#[test]
fn hardlinks_to_removed_or_replaced_files_are_refused() {
    // Whited out earlier in the same layer.
    let fx = Fixture::new();
    fx.refuse(
        &[
            oci("base.tar", |b| file(b, "gone", b"g", 0o644)),
            oci("top.tar", |b| {
                wh(b, ".wh.gone");
                link(b, EntryType::Link, "h", "gone");
            }),
        ],
        false,
        &ExtractLimits::default(),
        "top.tar",
        Some("\"h\""),
        |e| matches!(e, ExtractError::HardlinkTarget { .. }),
    );
    // Inside the directory the link would replace.
    let fx = Fixture::new();
    fx.refuse(
        &[
            oci("base.tar", |b| file(b, "d/f", b"f", 0o644)),
            oci("top.tar", |b| link(b, EntryType::Link, "d", "d/f")),
        ],
        false,
        &ExtractLimits::default(),
        "top.tar",
        Some("\"d\""),
        |e| matches!(e, ExtractError::HardlinkTarget { .. }),
    );
}

#[test]
fn an_error_in_a_later_layer_leaves_nothing_behind() {
    let fx = Fixture::new();
    let before = fx.snapshot();
    let mut b = fx.builder(false);
    let staging = b.staging_dir().to_owned();
    b.apply(
        io::Cursor::new(tar_with(|b| file(b, "ok", b"ok", 0o644))),
        Path::new("base.tar"),
        true,
    )
    .unwrap();
    assert!(staging.join("ok").exists());
    let bad = tar_with(|b| {
        file(b, "fine", b"fine", 0o644);
        raw(b, b"../evil");
    });
    let err = b
        .apply(io::Cursor::new(&bad), Path::new("bad.tar"), true)
        .unwrap_err();
    assert!(
        matches!(err, ExtractError::ParentComponent { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("bad.tar") && msg.contains("../evil"), "{msg}");

    // The tree is half a layer now: the builder refuses to go on.
    let err = b
        .apply(
            io::Cursor::new(tar_with(|b| file(b, "more", b"m", 0o644))),
            Path::new("more.tar"),
            true,
        )
        .unwrap_err();
    assert!(matches!(err, ExtractError::Abandoned { .. }), "{err:?}");
    assert!(err.to_string().contains("more.tar"), "{err}");
    assert!(staging.exists());
    let err = b.finish().unwrap_err();
    assert!(matches!(err, ExtractError::Abandoned { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.tar"), "{err}");

    assert!(!staging.exists(), "staging directory left behind");
    assert!(!fx.dest.exists());
    assert!(!fx.path("evil").exists() && !fx.path("root/evil").exists());
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn limits_count_all_layers() {
    let fx = Fixture::new();
    let two_files = |name: &'static str| {
        oci(name, move |b| {
            file(b, &format!("{name}-1"), &[7; 1000], 0o644);
            file(b, &format!("{name}-2"), &[7; 1000], 0o644);
        })
    };
    let limits = ExtractLimits {
        max_entries: 3,
        ..ExtractLimits::default()
    };
    fx.refuse(
        &[two_files("one"), two_files("two")],
        false,
        &limits,
        "two",
        None,
        |e| matches!(e, ExtractError::TooManyEntries { limit: 3, .. }),
    );
    let limits = ExtractLimits {
        max_unpacked_bytes: 4500,
        ..ExtractLimits::default()
    };
    fx.refuse(
        &[two_files("one"), two_files("two")],
        false,
        &limits,
        "two",
        Some("two-2"),
        |e| matches!(e, ExtractError::TooLarge { limit: 4500, .. }),
    );
}

#[test]
fn corrupt_zstd_layer_is_refused() {
    let fx = Fixture::new();
    let compressed = zstd(&tar_with(|b| file(b, "a", &[1; 100_000], 0o644)));
    let cut = Layer {
        name: "cut.tar.zst",
        bytes: compressed[..compressed.len() / 2].to_vec(),
        whiteouts: true,
    };
    fx.refuse(
        &[oci("base.tar", |b| file(b, "x", b"x", 0o644)), cut],
        false,
        &ExtractLimits::default(),
        "cut.tar.zst",
        None,
        |e| matches!(e, ExtractError::Corrupt { .. }),
    );
}

#[test]
fn an_existing_destination_is_refused_up_front() {
    let fx = Fixture::new();
    fs::create_dir(&fx.dest).unwrap();
    let err = TreeBuilder::new(&fx.dest, &ExtractLimits::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, ExtractError::DestinationExists { .. }),
        "{err:?}"
    );
    assert_eq!(fx.root_names(), vec![OsString::from("dest")]);

    // Appearing while the tree is built: finish refuses, naming the last layer.
    let fx = Fixture::new();
    let mut b = fx.builder(false);
    b.apply(
        io::Cursor::new(tar_with(|b| file(b, "x", b"x", 0o644))),
        Path::new("last.tar"),
        true,
    )
    .unwrap();
    fs::create_dir(&fx.dest).unwrap();
    let err = b.finish().unwrap_err();
    assert!(
        matches!(err, ExtractError::DestinationExists { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("last.tar"), "{err}");
    assert_eq!(fx.root_names(), vec![OsString::from("dest")]);
    assert!(fs::read_dir(&fx.dest).unwrap().next().is_none());
}

#[test]
fn only_under_takes_the_prefix_as_the_root() {
    let fx = Fixture::new();
    let layer = oci("pkg.tar", |b| {
        dir(b, "var/", 0o755);
        dir(b, "var/vcap/", 0o755);
        dir(b, "var/vcap/packages/", 0o755);
        dir(b, "var/vcap/packages/app/", 0o750);
        dir(b, "var/vcap/packages/app/bin/", 0o755);
        file(b, "var/vcap/packages/app/bin/run", b"#!/bin/sh\n", 0o755);
        link(
            b,
            EntryType::Link,
            "var/vcap/packages/app/bin/again",
            "var/vcap/packages/app/bin/run",
        );
        // A dependency's file, as packages link to them; it means something in the sandbox.
        symlink(
            b,
            "var/vcap/packages/app/ruby",
            "/var/vcap/packages/ruby/bin/ruby",
        );
    });
    let mut b = fx.builder(true);
    b.only_under(Path::new("var/vcap/packages/app"));
    assert!(!b.found_under());
    b.apply(io::Cursor::new(&layer.bytes), Path::new(layer.name), false)
        .unwrap();
    assert!(b.found_under());
    b.finish().unwrap();
    assert_eq!(fs::read(fx.dest.join("bin/run")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        fs::metadata(fx.dest.join("bin/again")).unwrap().ino(),
        fs::metadata(fx.dest.join("bin/run")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(fx.dest.join("ruby")).unwrap(),
        Path::new("/var/vcap/packages/ruby/bin/ruby")
    );
    assert_eq!(
        fs::metadata(&fx.dest).unwrap().permissions().mode() & 0o777,
        0o750,
        "the prefix's own entry gives the root its mode"
    );
    assert!(!fx.dest.join("var").exists());
}

#[test]
fn only_under_refuses_what_lies_elsewhere() {
    // What applying `layer` under var/vcap/packages/app gives: whether anything was under it.
    let apply_under = |layer: &Layer| -> Result<bool, ExtractError> {
        let fx = Fixture::new();
        let mut b = fx.builder(true);
        b.only_under(Path::new("var/vcap/packages/app"));
        b.apply(io::Cursor::new(&layer.bytes), Path::new(layer.name), false)?;
        Ok(b.found_under())
    };
    let outside = oci("other.tar", |b| {
        file(b, "var/vcap/packages/app/ok", b"ok", 0o644);
        file(b, "etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644);
    });
    let sibling = oci("sibling.tar", |b| {
        file(b, "var/vcap/packages/app2/x", b"x", 0o644);
    });
    // A file where a directory on the way to the prefix should be.
    let not_a_dir = oci("file.tar", |b| file(b, "var/vcap", b"", 0o644));
    for layer in [&outside, &sibling, &not_a_dir] {
        let err = apply_under(layer).unwrap_err();
        assert!(
            matches!(err, ExtractError::InvalidPath { .. }),
            "{}: {err:?}",
            layer.name
        );
        assert!(
            err.to_string().contains("not under var/vcap/packages/app"),
            "{err}"
        );
    }
    // A hard link to a file outside the prefix.
    let link_out = oci("link.tar", |b| {
        file(b, "var/vcap/packages/app/a", b"a", 0o644);
        link(b, EntryType::Link, "var/vcap/packages/app/b", "etc/a");
    });
    let err = apply_under(&link_out).unwrap_err();
    assert!(matches!(err, ExtractError::LinkEscape { .. }), "{err:?}");
    // A layer with nothing under the prefix builds an empty tree, which the caller can tell.
    let elsewhere_dirs = oci("dirs.tar", |b| dir(b, "var/vcap/packages/", 0o755));
    assert!(!apply_under(&elsewhere_dirs).unwrap());
}
