//! SIGINT and SIGTERM during a compile: the first cancels the run (running sandboxes are killed
//! and removed, the report is still written), a second exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fissile_oci::cancel::CancelToken;

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // A second ^C: the user means it.
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT/SIGTERM cancel the run: the handler only sets a flag (all it may do); a watcher
/// thread turns it into a cancellation, which kills the running sandboxes.
pub fn install(token: CancelToken) -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe {
            let _ = nix::sys::signal::sigaction(signal, &action);
        }
    }
    let flag = seen.clone();
    std::thread::spawn(move || loop {
        if SIGNALLED.load(Ordering::SeqCst) {
            flag.store(true, Ordering::SeqCst);
            token.cancel();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });
    seen
}
