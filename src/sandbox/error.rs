//! Errors of a sandbox run as the caller sees them.

use std::path::PathBuf;

#[derive(thiserror::Error, Debug)]
pub enum SandboxError {
    #[error("/proc is not mounted: the sandbox zygote is started through /proc/self/exe")]
    NoProc,
    /// See [`super::v2_device_rules_problem`].
    #[error("{problem}; fix: {}", super::host::V2_DEVICE_RULES_FIX)]
    DeviceRules { problem: String },
    #[error("failed to start a sandbox helper through the zygote {exe}")]
    SpawnHelper {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to the sandbox helper (pid {pid})")]
    HelperIo {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox helper (pid {pid}) ended without an answer ({status})")]
    HelperDied { pid: u32, status: String },
    #[error("sandbox {container_id}: {stage} failed: {message}")]
    Failed {
        container_id: String,
        stage: String,
        message: String,
    },
    #[error("a sandbox can run in the calling process only when it has no other thread ({threads} running)")]
    NotSingleThreaded { threads: usize },
    #[error("sandbox {container_id} was stopped by signal {signal}; it was killed and removed")]
    Interrupted { container_id: String, signal: i32 },
}

impl SandboxError {
    /// For a `Failed` error: the stage that failed (e.g. "creating the container").
    pub fn stage(&self) -> Option<&str> {
        match self {
            SandboxError::Failed { stage, .. } => Some(stage),
            _ => None,
        }
    }
}
