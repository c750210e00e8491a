//! Skipped tests, seen and counted. A test that cannot run here (no root, a tool missing, the
//! Debian tests switched off) calls [`skip`] and returns; a test that ran but had to leave a part
//! out calls [`skip_part`] and goes on. Each writes one line to the real stderr:
//!
//! ```text
//! fissile-oci-test skipped: BINARY::TEST: REASON
//! fissile-oci-test skipped part: BINARY::TEST: REASON
//! ```
//!
//! `scripts/test.sh` lists these lines and counts them in its closing line: libtest reports a
//! skipped test as `ok`, so without them a skip would read as a pass. Write every skip through
//! here: the line is the contract with the script.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsFd;

/// The start of every skip line; `scripts/test.sh` greps for it.
pub const PREFIX: &str = "fissile-oci-test skipped";

/// The whole test is skipped: says why, and the caller returns right after.
#[track_caller]
pub fn skip(reason: &str) {
    report("", reason, std::panic::Location::caller());
}

/// Part of the test is skipped, the rest ran: says which part and why, and the test goes on.
#[track_caller]
pub fn skip_part(reason: &str) {
    report(" part", reason, std::panic::Location::caller());
}

fn report(kind: &str, reason: &str, caller: &std::panic::Location) {
    let line = format!("{PREFIX}{kind}: {}: {reason}\n", test_name(caller));
    // Not `eprintln!`: the harness captures it, and shows captured output only for failures.
    // A duplicate of fd 2 is the process's real stderr; one write keeps the line whole when
    // tests run in parallel.
    let written = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|mut stderr| stderr.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot report a skip on stderr ({e}): {line}");
    }
}

/// `BINARY::TEST`: libtest runs each test on a thread named after it (`module::test`); a thread
/// the test started has another name, and the caller's location stands in for it.
fn test_name(caller: &std::panic::Location) -> String {
    let binary = env!("CARGO_CRATE_NAME");
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => format!("{binary}::{}:{}", caller.file(), caller.line()),
    }
}
