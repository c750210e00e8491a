//! YAML reading for BOSH files: duplicate keys resolve last-wins (as Ruby and go-yaml v2 did when
//! these files were written) and `!binary` scalars decode to text, and errors name the file.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(thiserror::Error, Debug)]
pub enum YamlError {
    #[error("{path}: malformed YAML: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parses YAML text; `path` is named in errors (it may be a member inside an archive).
pub fn parse<T: DeserializeOwned>(text: &[u8], path: &Path) -> Result<T, YamlError> {
    let malformed = |message: String| YamlError::Malformed {
        path: path.to_path_buf(),
        message,
    };
    let text = std::str::from_utf8(text).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
        // go-yaml v2 (YAML 1.1) writes strings such as `commit_hash: 2e46642` unquoted; YAML 1.2
        // reads them as an infinite float, which must not fail the whole file.
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::AsString,
    };
    // An empty document means "no keys", which every BOSH file we read accepts.
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| malformed(e.to_string()))
}

pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let bytes = fs_err::read(path).map_err(|source| YamlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct M {
        name: String,
        #[serde(default)]
        sha1: Option<String>,
    }

    #[test]
    fn hex_strings_that_look_like_huge_floats_stay_strings() {
        #[derive(Deserialize, Debug)]
        struct C {
            name: String,
            commit_hash: String,
        }
        // A real bpm-release manifest (1.4.3) has exactly this.
        let c: C = parse(b"name: bpm\ncommit_hash: 2e46642\n", Path::new("r.MF")).unwrap();
        assert_eq!(
            (c.name.as_str(), c.commit_hash.as_str()),
            ("bpm", "2e46642")
        );
        let m: M = parse(b"name: x\nsha1: 2e46642\nextra: 1e999\n", Path::new("r.MF")).unwrap();
        assert_eq!(m.sha1.as_deref(), Some("2e46642"));
    }

    #[test]
    fn last_duplicate_wins_and_binary_decodes() {
        let m: M = parse(
            b"name: a\nname: b\nsha1: !binary |-\n  YWJj\n",
            Path::new("r.MF"),
        )
        .unwrap();
        assert_eq!(m.name, "b");
        assert_eq!(m.sha1.as_deref(), Some("abc"));
    }

    #[test]
    fn errors_name_the_file() {
        let err = parse::<M>(b"name: [unclosed\n", Path::new("rel/release.MF")).unwrap_err();
        assert!(err.to_string().contains("rel/release.MF"), "{err}");
    }
}
