//! The Debian tests' shared contract: one work dir per target dir, where the first of them
//! bootstraps the Debian base (minutes, from the apt mirror) and the others reuse it; the work
//! dir's lock serialises them. `FISSILE_OCI_SKIP_DEBIAN` skips them all, saying so.

use std::path::PathBuf;

/// The shared Debian work dir, or `None` (the test reported skipped) when the Debian tests are
/// switched off.
pub fn debian_work_dir() -> Option<PathBuf> {
    if std::env::var_os("FISSILE_OCI_SKIP_DEBIAN").is_some() {
        crate::common_skip::skip("FISSILE_OCI_SKIP_DEBIAN is set");
        return None;
    }
    Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-work"))
}
