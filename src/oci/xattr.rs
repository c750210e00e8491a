//! Extended attributes of a path, not following symlinks (std has no API for them).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Names and values of `path`'s xattrs; an unsupported filesystem has none.
pub fn list(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer pointer and length describe a live, writable allocation.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(value) = get(&c, name)? {
            out.push((String::from_utf8_lossy(name).into_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn get(c: &CString, name: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let cname =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut value = vec![0u8; 256];
    loop {
        // SAFETY: as above; both strings are NUL-terminated CStrings.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 0 {
            value.truncate(n as usize);
            return Ok(Some(value));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Whether overlayfs marked this upper directory opaque (root: `trusted.`, in a user namespace
/// with `userxattr`: `user.`).
pub fn is_overlay_opaque(path: &Path) -> std::io::Result<bool> {
    Ok(list(path)?.iter().any(|(name, value)| {
        (name == "trusted.overlay.opaque" || name == "user.overlay.opaque")
            && value.as_slice() == b"y"
    }))
}
