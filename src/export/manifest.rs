//! The `release.MF` of a compiled release, written as bosh's own writers lay it out: `name`,
//! `version`, `commit_hash`, `uncommitted_changes`, `jobs` (as the source release listed them),
//! `compiled_packages` and `license`; no `packages`. Scalars are plain where no YAML reader (Go's
//! yaml v2/v3, Ruby's Psych, PyYAML) could take them for anything but a string, else
//! double-quoted: `version: "1.10"` must not become the number 1.1.

use std::fmt::Write as _;

use crate::release::{JobArchive, License, Stemcell};

/// One `compiled_packages[]` entry.
pub struct CompiledEntry<'a> {
    pub name: &'a str,
    pub fingerprint: &'a str,
    pub sha1: String,
    pub dependencies: &'a [String],
}

pub struct ReleaseManifest<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub commit_hash: Option<&'a str>,
    pub uncommitted_changes: Option<&'a str>,
    pub jobs: Vec<(&'a str, &'a JobArchive)>,
    pub packages: Vec<CompiledEntry<'a>>,
    pub stemcell: &'a Stemcell,
    pub license: Option<&'a License>,
}

impl ReleaseManifest<'_> {
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("---\n");
        line(&mut out, "", "name", self.name);
        line(&mut out, "", "version", self.version);
        if let Some(hash) = self.commit_hash {
            line(&mut out, "", "commit_hash", hash);
        }
        if let Some(changes) = self.uncommitted_changes {
            match changes.trim() {
                // A boolean as bosh writes it; anything else survives as the text it was.
                "true" | "false" => {
                    let _ = writeln!(out, "uncommitted_changes: {}", changes.trim());
                }
                other => line(&mut out, "", "uncommitted_changes", other),
            }
        }
        if self.jobs.is_empty() {
            out.push_str("jobs: []\n");
        } else {
            out.push_str("jobs:\n");
            for (name, job) in &self.jobs {
                line(&mut out, "- ", "name", name);
                if let Some(v) = &job.version {
                    line(&mut out, "  ", "version", v);
                }
                if let Some(f) = &job.fingerprint {
                    line(&mut out, "  ", "fingerprint", f);
                }
                line(&mut out, "  ", "sha1", &job.sha1);
                if let Some(packages) = &job.packages {
                    list(&mut out, "  ", "packages", packages);
                }
            }
        }
        out.push_str("compiled_packages:\n");
        let stemcell = self.stemcell.to_string();
        for p in &self.packages {
            line(&mut out, "- ", "name", p.name);
            line(&mut out, "  ", "version", p.fingerprint);
            line(&mut out, "  ", "fingerprint", p.fingerprint);
            line(&mut out, "  ", "sha1", &p.sha1);
            line(&mut out, "  ", "stemcell", &stemcell);
            list(&mut out, "  ", "dependencies", p.dependencies);
        }
        if let Some(license) = self.license {
            if license.version.is_some() || license.fingerprint.is_some() || license.sha1.is_some()
            {
                out.push_str("license:\n");
                for (key, value) in [
                    ("version", &license.version),
                    ("fingerprint", &license.fingerprint),
                    ("sha1", &license.sha1),
                ] {
                    if let Some(value) = value {
                        line(&mut out, "  ", key, value);
                    }
                }
            }
        }
        out
    }
}

fn line(out: &mut String, indent: &str, key: &str, value: &str) {
    let _ = writeln!(out, "{indent}{key}: {}", scalar(value));
}

fn list(out: &mut String, indent: &str, key: &str, values: &[String]) {
    if values.is_empty() {
        let _ = writeln!(out, "{indent}{key}: []");
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for v in values {
        let _ = writeln!(out, "{indent}- {}", scalar(v));
    }
}

/// A string as a YAML scalar: plain when it is unmistakably a string in YAML 1.1 and 1.2 (starts
/// with a letter, only name-like characters, not a boolean or null word), else a double-quoted
/// string with JSON escapes, which YAML's double-quoted style accepts.
pub fn scalar(value: &str) -> String {
    const WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let plain = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+/".contains(&b) || b == b':')
        && !value.ends_with(':')
        && !WORDS.contains(&value.to_ascii_lowercase().as_str());
    if plain {
        value.to_string()
    } else {
        serde_json::to_string(value).expect("a string always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_could_be_read_as_anything_else_are_quoted() {
        assert_eq!(scalar("golang-1.21"), "golang-1.21");
        assert_eq!(scalar("sha256:abc"), "sha256:abc");
        assert_eq!(scalar("ubuntu-jammy/1.329"), "ubuntu-jammy/1.329");
        for quoted in [
            "1.10", "2e46642", "yes", "No", "null", "", "a b", "x:", "~", "0+dev",
        ] {
            assert!(scalar(quoted).starts_with('"'), "{quoted:?}");
        }
        assert_eq!(scalar("say \"hi\"\n"), r#""say \"hi\"\n""#);
    }
}
