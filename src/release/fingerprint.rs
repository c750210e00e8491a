//! BOSH v2 package fingerprints, computed exactly as the bosh CLI's fingerprinter does
//! (cloudfoundry/bosh-cli `release/resource/fingerprint.go`):
//!
//! `digest("v2" + chunk(file)... + deps.sorted().join(","))`, files sorted bytewise by relative path
//! (`packaging` included), each chunk `relpath + digest + mode`, where the mode is `100755` if any
//! exec bit is set, `100644` otherwise, `symlink` for a symlink (whose digest is over its target
//! string), and empty for `packaging`/`pre_packaging`. The dependency chunk is only added when
//! there are dependencies.
//!
//! Two eras exist: bosh-cli with sha1 digests writes bare 40-hex digests everywhere; with sha256
//! each chunk digest is `sha256:HEX` and the fingerprint is the bare 64-hex.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::release::digest::{self, Algorithm, Digest, Hasher};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    Sha1,
    Sha256,
}

impl Era {
    /// The era a recorded fingerprint belongs to, by its length.
    pub fn of(fingerprint: &str) -> Option<Era> {
        match fingerprint.len() {
            40 => Some(Era::Sha1),
            64 => Some(Era::Sha256),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Era::Sha1 => Algorithm::Sha1,
            Era::Sha256 => Algorithm::Sha256,
        }
    }
}

/// What a file contributes as its mode suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkMode {
    /// `packaging` and `pre_packaging`: no mode at all.
    Script,
    Regular {
        executable: bool,
    },
    Symlink,
}

impl ChunkMode {
    fn suffix(self) -> &'static str {
        match self {
            ChunkMode::Script => "",
            ChunkMode::Regular { executable: true } => "100755",
            ChunkMode::Regular { executable: false } => "100644",
            ChunkMode::Symlink => "symlink",
        }
    }
}

/// One file's contribution, with its digest in whichever eras are known.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub relative_path: String,
    pub mode: ChunkMode,
    pub sha1: Option<Digest>,
    pub sha256: Option<Digest>,
}

impl Chunk {
    /// Hashes a file (or a symlink's target string) for both eras in one read.
    pub fn from_disk(relative_path: String, path: &Path, script: bool) -> std::io::Result<Chunk> {
        let meta = fs_err::symlink_metadata(path)?;
        let (mode, (sha1, sha256)) = if meta.file_type().is_symlink() {
            let target = fs_err::read_link(path)?;
            let target = target.as_os_str().as_encoded_bytes();
            (ChunkMode::Symlink, hash_both(target)?)
        } else {
            let executable = meta.permissions().mode() & 0o111 != 0;
            (
                ChunkMode::Regular { executable },
                hash_both(fs_err::File::open(path)?)?,
            )
        };
        let mode = if script { ChunkMode::Script } else { mode };
        Ok(Chunk {
            relative_path,
            mode,
            sha1: Some(sha1),
            sha256: Some(sha256),
        })
    }

    fn digest(&self, era: Era) -> Option<&Digest> {
        match era {
            Era::Sha1 => self.sha1.as_ref(),
            Era::Sha256 => self.sha256.as_ref(),
        }
    }
}

fn hash_both(mut reader: impl Read) -> std::io::Result<(Digest, Digest)> {
    let mut sha1 = Hasher::new(Algorithm::Sha1);
    let mut sha256 = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha1.update(&buf[..n]);
        sha256.update(&buf[..n]);
    }
    Ok((sha1.finish(), sha256.finish()))
}

/// Computes the fingerprint, or names the first file whose digest is unknown in this era.
pub fn fingerprint(era: Era, chunks: &[Chunk], dependencies: &[String]) -> Result<String, String> {
    let mut sorted: Vec<&Chunk> = chunks.iter().collect();
    sorted.sort_by(|a, b| a.relative_path.as_bytes().cmp(b.relative_path.as_bytes()));
    let mut text = String::from("v2");
    for chunk in sorted {
        let digest = chunk
            .digest(era)
            .ok_or_else(|| chunk.relative_path.clone())?;
        text.push_str(&chunk.relative_path);
        text.push_str(&digest.to_string());
        text.push_str(chunk.mode.suffix());
    }
    if !dependencies.is_empty() {
        let mut deps: Vec<&String> = dependencies.iter().collect();
        deps.sort();
        text.push_str(
            &deps
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(digest::digest_bytes(era.algorithm(), text.as_bytes()).hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(path: &str, content: &[u8], mode: ChunkMode) -> Chunk {
        Chunk {
            relative_path: path.to_string(),
            mode,
            sha1: Some(digest::digest_bytes(Algorithm::Sha1, content)),
            sha256: Some(digest::digest_bytes(Algorithm::Sha256, content)),
        }
    }

    /// The chunk text is spelled out by hand here, independently of the implementation.
    #[test]
    fn matches_a_hand_built_chunk_string_in_both_eras() {
        let chunks = vec![
            chunk("packaging", b"make\n", ChunkMode::Script),
            chunk(
                "b/run.sh",
                b"#!/bin/sh\n",
                ChunkMode::Regular { executable: true },
            ),
            chunk("a.txt", b"hello", ChunkMode::Regular { executable: false }),
            chunk("link", b"a.txt", ChunkMode::Symlink),
        ];
        let deps = vec!["zlib".to_string(), "openssl".to_string()];
        let s1 = |c: &[u8]| digest::digest_bytes(Algorithm::Sha1, c).hex;
        let expected_text = format!(
            "v2a.txt{}100644b/run.sh{}100755link{}symlinkpackaging{}openssl,zlib",
            s1(b"hello"),
            s1(b"#!/bin/sh\n"),
            s1(b"a.txt"),
            s1(b"make\n")
        );
        assert_eq!(
            fingerprint(Era::Sha1, &chunks, &deps).unwrap(),
            digest::digest_bytes(Algorithm::Sha1, expected_text.as_bytes()).hex
        );
        let s2 = |c: &[u8]| format!("sha256:{}", digest::digest_bytes(Algorithm::Sha256, c).hex);
        let expected_text = format!(
            "v2a.txt{}100644b/run.sh{}100755link{}symlinkpackaging{}openssl,zlib",
            s2(b"hello"),
            s2(b"#!/bin/sh\n"),
            s2(b"a.txt"),
            s2(b"make\n")
        );
        let fp = fingerprint(Era::Sha256, &chunks, &deps).unwrap();
        assert_eq!(
            fp,
            digest::digest_bytes(Algorithm::Sha256, expected_text.as_bytes()).hex
        );
        assert_eq!(fp.len(), 64);
    }

    #[test]
    fn no_dependency_chunk_without_dependencies() {
        let chunks = vec![chunk("packaging", b"x", ChunkMode::Script)];
        let text = format!(
            "v2packaging{}",
            digest::digest_bytes(Algorithm::Sha1, b"x").hex
        );
        assert_eq!(
            fingerprint(Era::Sha1, &chunks, &[]).unwrap(),
            digest::digest_bytes(Algorithm::Sha1, text.as_bytes()).hex
        );
    }

    #[test]
    fn unknown_digest_names_the_file() {
        let mut c = chunk("blob.tgz", b"x", ChunkMode::Regular { executable: false });
        c.sha256 = None;
        assert_eq!(fingerprint(Era::Sha256, &[c], &[]).unwrap_err(), "blob.tgz");
    }
}
