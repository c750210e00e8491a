//! Running the `fissile-oci` binary from the CLI-level tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `fissile-oci --work-dir WORK`, with no standard input (as in CI).
pub fn fissile(work: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fissile-oci"));
    cmd.arg("--work-dir").arg(work).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` and asserts that it succeeded, showing its status and both outputs otherwise.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// True as root; otherwise reports the test skipped, saying why (the caller returns).
pub fn root_or_skip(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    crate::common_skip::skip(why);
    false
}
