//! Scrubs what a bootstrap leaves that is specific to the host or the moment: apt lists and
//! caches, logs, machine ids, device nodes, temp files, the day of the build in `/etc/shadow`.
//! Timestamps and owners are handled by the layer writer.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::BuildError;

/// Directories whose contents are removed (the directories themselves stay).
const EMPTIED: &[&str] = &[
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/log",
    "var/tmp",
    "tmp",
    "run",
    "dev",
];

/// Files kept but emptied: systemd and dbus regenerate them on boot, and an empty machine-id is
/// the documented way to ship an image.
const TRUNCATED: &[&str] = &["etc/machine-id", "var/lib/dbus/machine-id", "etc/hostname"];

/// Shadow password files, whose third field is the day of each account's last password change:
/// the day `pwconv` ran in the bootstrap, so two bootstraps a day apart differ only there.
const SHADOW: &[&str] = &["etc/shadow", "etc/shadow-"];

pub fn normalize(root: &Path) -> Result<(), BuildError> {
    for rel in EMPTIED {
        let dir = root.join(rel);
        if !dir.is_dir()
            || fs_err::symlink_metadata(&dir)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(true)
        {
            continue;
        }
        for entry in fs_err::read_dir(&dir).map_err(BuildError::io(&dir))? {
            let path = entry.map_err(BuildError::io(&dir))?.path();
            let meta = fs_err::symlink_metadata(&path).map_err(BuildError::io(&path))?;
            if meta.is_dir() {
                fs_err::remove_dir_all(&path).map_err(BuildError::io(&path))?;
            } else {
                fs_err::remove_file(&path).map_err(BuildError::io(&path))?;
            }
        }
    }
    for rel in TRUNCATED {
        let file = root.join(rel);
        if fs_err::symlink_metadata(&file)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            fs_err::write(&file, b"").map_err(BuildError::io(&file))?;
        }
    }
    for rel in SHADOW {
        let file = root.join(rel);
        if fs_err::symlink_metadata(&file)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            let text = fs_err::read_to_string(&file).map_err(BuildError::io(&file))?;
            let undated = without_change_days(&text);
            if undated != text {
                // Rewritten in place: the file keeps its mode and owners.
                fs_err::write(&file, undated).map_err(BuildError::io(&file))?;
            }
        }
    }
    // Device nodes elsewhere cannot be unpacked unprivileged and never belong in a base.
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
    {
        let ft = entry.file_type();
        if ft.is_char_device() || ft.is_block_device() || ft.is_socket() || ft.is_fifo() {
            fs_err::remove_file(entry.path()).map_err(BuildError::io(entry.path()))?;
        }
        // Python byte-code caches embed source mtimes and differ run to run.
        if ft.is_dir() && entry.file_name() == "__pycache__" {
            fs_err::remove_dir_all(entry.path()).map_err(BuildError::io(entry.path()))?;
        }
    }
    Ok(())
}

/// `text` (a shadow file) with every day of last password change emptied. An empty field turns
/// password ageing off for the account, which is what an image's accounts (locked, `*` or `!`)
/// have anyway; a `0` instead would mean "change the password at the next login", which makes
/// PAM refuse `su` to the account.
fn without_change_days(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let mut fields: Vec<&str> = line.splitn(4, ':').collect();
            if fields.len() == 4
                && !fields[2].is_empty()
                && fields[2].bytes().all(|b| b.is_ascii_digit())
            {
                fields[2] = "";
            }
            fields.join(":")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_caches_and_truncates_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for rel in [
            "var/lib/apt/lists/deb.debian.org_InRelease",
            "var/log/apt/history.log",
            "etc/machine-id",
            "usr/lib/py/__pycache__/x.pyc",
            "etc/keep",
        ] {
            std::fs::create_dir_all(r.join(rel).parent().unwrap()).unwrap();
            std::fs::write(r.join(rel), b"host specific").unwrap();
        }
        std::fs::write(
            r.join("etc/shadow"),
            "root:*:20792:0:99999:7:::\nuser:$y$j9T$salt$hash:20793:0:99999:7:::\nodd:x\nnone:!::0:99999:7:::\n",
        )
        .unwrap();
        normalize(r).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("etc/shadow")).unwrap(),
            "root:*::0:99999:7:::\nuser:$y$j9T$salt$hash::0:99999:7:::\nodd:x\nnone:!::0:99999:7:::\n"
        );
        assert!(r.join("var/lib/apt/lists").is_dir());
        assert_eq!(
            std::fs::read_dir(r.join("var/lib/apt/lists"))
                .unwrap()
                .count(),
            0
        );
        assert!(!r.join("var/log/apt").exists());
        assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(!r.join("usr/lib/py/__pycache__").exists());
        assert_eq!(std::fs::read(r.join("etc/keep")).unwrap(), b"host specific");
    }
}
