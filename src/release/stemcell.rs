//! Stemcell identities as BOSH writes them (`ubuntu-jammy/1.329`), and the director's rule for
//! which compiled packages a stemcell may use: the same OS and the same first version component
//! (`1.329` serves `1.400`; `3312.12` does not serve `3363.1`).

use std::cmp::Ordering;
use std::fmt;

/// An operating system and a stemcell version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stemcell {
    pub os: String,
    pub version: String,
}

impl Stemcell {
    /// Parses `os/version`, the form of a compiled package's `stemcell` field and of
    /// `--stemcell`. The reason is a sentence fragment for the caller's message.
    pub fn parse(value: &str) -> Result<Stemcell, String> {
        let value = value.trim();
        let Some((os, version)) = value.split_once('/') else {
            return Err(format!(
                "{value:?} is not <os>/<version> (e.g. ubuntu-jammy/1.329)"
            ));
        };
        Stemcell::new(os, version).map_err(|reason| format!("{value:?}: {reason}"))
    }

    /// A stemcell from its two parts, checked: both end up in file names and store refs.
    pub fn new(os: &str, version: &str) -> Result<Stemcell, String> {
        let (os, version) = (os.trim(), version.trim());
        for (what, part) in [("os", os), ("version", version)] {
            if part.is_empty() {
                return Err(format!("the {what} is empty"));
            }
            if !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            {
                return Err(format!(
                    "the {what} {part:?} may hold only letters, digits, '.', '_', '+' and '-'"
                ));
            }
            if part.len() > 100 {
                return Err(format!("the {what} is longer than 100 bytes"));
            }
        }
        if version.starts_with('.') || os.starts_with('.') {
            return Err("a part starts with '.'".into());
        }
        Ok(Stemcell {
            os: os.to_string(),
            version: version.to_string(),
        })
    }

    /// The first component of the version: `1` of `1.329`.
    pub fn major(&self) -> &str {
        self.version.split('.').next().unwrap_or(&self.version)
    }

    /// Whether packages compiled for `self` may run on `other`, by the director's rule.
    pub fn serves(&self, other: &Stemcell) -> bool {
        self.os == other.os && self.major() == other.major()
    }

    /// `os-version`, as compiled release file names carry it.
    pub fn file_suffix(&self) -> String {
        format!("{}-{}", self.os, self.version)
    }

    /// Orders versions as the director picks the newest compiled package.
    pub fn compare_versions(&self, other: &Stemcell) -> Ordering {
        super::version::compare(&self.version, &other.version)
    }
}

impl fmt::Display for Stemcell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.version)
    }
}

/// The stemcell a root filesystem is, read as bosh-agent reads it: the OS is `<ID>-<VERSION_CODENAME>`
/// from `/etc/os-release`, the version the content of `/var/vcap/bosh/etc/stemcell_version`.
/// `None` when either is missing.
pub fn from_os_release(os_release: &str, stemcell_version: &str) -> Option<Stemcell> {
    let mut id = None;
    let mut codename = None;
    for line in os_release.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => id = Some(value),
            "VERSION_CODENAME" => codename = Some(value),
            _ => {}
        }
    }
    let (id, codename) = (id?, codename?);
    if id.is_empty() || codename.is_empty() {
        return None;
    }
    Stemcell::new(&format!("{id}-{codename}"), stemcell_version).ok()
}

fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_the_directors_rule() {
        let a = Stemcell::parse("ubuntu-jammy/1.329").unwrap();
        assert_eq!(
            (a.os.as_str(), a.version.as_str()),
            ("ubuntu-jammy", "1.329")
        );
        assert_eq!(a.major(), "1");
        assert!(a.serves(&Stemcell::parse("ubuntu-jammy/1.400").unwrap()));
        assert!(!a.serves(&Stemcell::parse("ubuntu-jammy/2.1").unwrap()));
        assert!(!a.serves(&Stemcell::parse("ubuntu-noble/1.329").unwrap()));
        let old = Stemcell::parse("ubuntu-trusty/3312.12").unwrap();
        assert!(!old.serves(&Stemcell::parse("ubuntu-trusty/3363.1").unwrap()));
        assert_eq!(a.file_suffix(), "ubuntu-jammy-1.329");
        assert_eq!(a.to_string(), "ubuntu-jammy/1.329");
        assert_eq!(
            a.compare_versions(&Stemcell::parse("ubuntu-jammy/1.40").unwrap()),
            Ordering::Greater
        );
        for bad in [
            "ubuntu-jammy",
            "/1.2",
            "ubuntu/",
            "a b/1",
            "ubuntu/../x",
            "u/1/2",
        ] {
            assert!(Stemcell::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_the_slug_as_bosh_agent_does() {
        let os_release = "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nVERSION_CODENAME=jammy";
        let s = from_os_release(os_release, "1.329\n").unwrap();
        assert_eq!(s.to_string(), "ubuntu-jammy/1.329");
        let quoted = "ID=\"debian\"\nVERSION_CODENAME='bookworm'\n";
        assert_eq!(
            from_os_release(quoted, "0.1").unwrap().os,
            "debian-bookworm"
        );
        assert!(from_os_release("ID=alpine\n", "1").is_none());
        assert!(from_os_release(os_release, "  \n").is_none());
    }
}
