//! Package and job names become path components (`/var/vcap/packages/<name>`, store refs), so a
//! hostile release must not be able to smuggle separators or `..` through them.

use std::path::Path;

use super::ReleaseError;

pub fn validate_name(path: &Path, what: &'static str, name: &str) -> Result<(), ReleaseError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative directory name")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains whitespace or control characters")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ReleaseError::BadName {
            path: path.to_path_buf(),
            what,
            name: name.to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bosh_names_and_rejects_path_tricks() {
        let p = Path::new("r");
        for ok in ["golang-1.21-linux", "ruby_3.2", "a", "libyaml+x"] {
            validate_name(p, "package", ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\nb", "a\\b"] {
            assert!(validate_name(p, "package", bad).is_err(), "{bad:?}");
        }
    }
}
