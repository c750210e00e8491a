//! BOSH digest strings (`40-hex` sha1, `sha256:HEX`, `sha512:HEX`, or several joined with `;`) and
//! streaming verification of files against them.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

/// A hash algorithm BOSH records digests with, weakest first so `Ord` ranks strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// One digest: algorithm plus lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl fmt::Display for Digest {
    /// Formats the way bosh writes it: bare hex for sha1, `algo:hex` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.algorithm {
            Algorithm::Sha1 => f.write_str(&self.hex),
            other => write!(f, "{}:{}", other.name(), self.hex),
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum DigestError {
    #[error("invalid digest string {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    #[error("{path}: digest mismatch: expected {expected}, found {actual}")]
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("failed to read {path} for its digest")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A digest string as recorded by BOSH: one or more digests of the same content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiDigest {
    digests: Vec<Digest>,
}

impl MultiDigest {
    pub fn parse(value: &str) -> Result<MultiDigest, DigestError> {
        let invalid = |reason: &str| DigestError::Invalid {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mut digests: Vec<Digest> = Vec::new();
        for part in value.trim().split(';') {
            let part = part.trim();
            let (algorithm, hex) = match part.split_once(':') {
                None => (Algorithm::Sha1, part),
                Some(("sha1", hex)) => (Algorithm::Sha1, hex),
                Some(("sha256", hex)) => (Algorithm::Sha256, hex),
                Some(("sha512", hex)) => (Algorithm::Sha512, hex),
                Some((other, _)) => {
                    return Err(invalid(&format!("unknown algorithm {other:?}")));
                }
            };
            if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(&format!(
                    "{} digest must be {} hex characters",
                    algorithm.name(),
                    algorithm.hex_len()
                )));
            }
            if digests.iter().any(|d| d.algorithm == algorithm) {
                return Err(invalid(&format!("{} given twice", algorithm.name())));
            }
            digests.push(Digest {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            });
        }
        if digests.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(MultiDigest { digests })
    }

    /// The digest worth checking: bosh verifies only the strongest one too.
    pub fn strongest(&self) -> &Digest {
        self.digests
            .iter()
            .max_by_key(|d| d.algorithm)
            .expect("parse guarantees at least one digest")
    }

    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }

    /// Streams `path` through the strongest algorithm and compares.
    pub fn verify_file(&self, path: &Path) -> Result<(), DigestError> {
        let expected = self.strongest();
        let file = fs_err::File::open(path).map_err(|source| DigestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let actual =
            digest_reader(expected.algorithm, file).map_err(|source| DigestError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        self.check(path, &actual)
    }

    /// Compares an already computed digest (of the strongest algorithm) against this one.
    pub fn check(&self, path: &Path, actual: &Digest) -> Result<(), DigestError> {
        let expected = self.strongest();
        if expected == actual {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        }
    }
}

impl fmt::Display for MultiDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.digests.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// An incremental hasher for any of the algorithms.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha1(h) => (Algorithm::Sha1, hex::encode(h.finalize())),
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// Hashes a stream in 256 KiB reads, never holding more than that in memory.
pub fn digest_reader(algorithm: Algorithm, reader: impl Read) -> std::io::Result<Digest> {
    Ok(digest_reader_keeping_head(algorithm, reader, 0)?.0)
}

/// [`digest_reader`], also keeping a copy of the stream's first `head` bytes (to check what
/// kind of file it is without reading it twice).
pub fn digest_reader_keeping_head(
    algorithm: Algorithm,
    mut reader: impl Read,
    head: usize,
) -> std::io::Result<(Digest, Vec<u8>)> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 256 * 1024];
    let mut kept = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        let room = head.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
    }
    Ok((hasher.finish(), kept))
}

pub fn digest_bytes(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_each_form_and_picks_the_strongest() {
        let d = MultiDigest::parse(ABC_SHA1).unwrap();
        assert_eq!(d.strongest().algorithm, Algorithm::Sha1);
        let d = MultiDigest::parse(&format!("{ABC_SHA1};sha256:{ABC_SHA256}")).unwrap();
        assert_eq!(d.strongest().algorithm, Algorithm::Sha256);
        assert_eq!(d.to_string(), format!("{ABC_SHA1};sha256:{ABC_SHA256}"));
        let d = MultiDigest::parse(&format!("sha256:{ABC_SHA256};sha1:{ABC_SHA1}")).unwrap();
        assert_eq!(d.strongest().hex, ABC_SHA256);
    }

    #[test]
    fn rejects_malformed_strings() {
        for bad in [
            "",
            "abc",
            "md5:900150983cd24fb0d6963f7d28e17f72",
            &format!("sha256:{ABC_SHA1}"),
            &format!("{ABC_SHA1};{ABC_SHA1}"),
            "zz993e364706816aba3e25717850c26c9cd0d89d",
        ] {
            assert!(
                MultiDigest::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn checks_the_strongest_digest_only() {
        // The sha1 half is deliberately wrong: bosh trusts the strongest digest.
        let wrong_sha1 = "0".repeat(40);
        let d = MultiDigest::parse(&format!("{wrong_sha1};sha256:{ABC_SHA256}")).unwrap();
        let actual = digest_bytes(Algorithm::Sha256, b"abc");
        d.check(Path::new("x"), &actual).unwrap();
        let d = MultiDigest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        let err = d.check(Path::new("pkg.tgz"), &actual).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pkg.tgz") && msg.contains(ABC_SHA256), "{msg}");
    }

    #[test]
    fn known_vectors() {
        assert_eq!(digest_bytes(Algorithm::Sha1, b"abc").hex, ABC_SHA1);
        assert_eq!(
            digest_bytes(Algorithm::Sha256, b"abc").to_string(),
            format!("sha256:{ABC_SHA256}")
        );
    }
}
