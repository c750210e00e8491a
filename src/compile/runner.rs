//! How a compile reaches a sandbox: one blocking run that a [`CancelToken`] can stop. The real
//! implementation drives [`LibcontainerSandbox`]; tests of the orchestration can use a fake.

use crate::compile::scheduler::CancelToken;
use crate::sandbox::{LibcontainerSandbox, Outcome, SandboxError, SandboxSpec};

pub trait CompileSandbox: Sync {
    /// Runs `spec` to its end; when `cancel` fires, the sandbox is killed and removed and an
    /// error returned.
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError>;
}

impl CompileSandbox for LibcontainerSandbox {
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError> {
        let process = self.spawn(spec)?;
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        // The helper kills and deletes its container on SIGTERM; it is our child and is not
        // reaped before `wait` returns, so its pid cannot have been reused when this fires.
        let callback = cancel.on_cancel(move || {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        });
        let result = process.wait();
        if let Some(id) = callback {
            cancel.remove_callback(id);
        }
        result
    }
}
