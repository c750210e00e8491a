//! Sandboxes: one command in a fresh libcontainer (youki) container, isolated, limited, and
//! cleaned up on every exit path.
//!
//! - `types`: the [`SandboxSpec`] (what to run, where, with which limits) and [`Outcome`].
//! - `runtime_spec`: the pure function to an OCI runtime spec ([`build_runtime_spec`]), with
//!   `mounts`, `security` (capabilities, masked paths, the seccomp profile, which `seccomp`
//!   compiles) and `rootfs` (the overlay, mounted inside the container); `host` holds the host
//!   facts it depends on ([`HostContext`]).
//! - `client`: [`LibcontainerSandbox`], the caller's side, safe from any thread; its `zygote`
//!   (`fissile-oci __sandbox-zygote`, one per sandbox object) forks `helper`, a single-threaded
//!   process per container, or, for a single-threaded caller that exits afterwards
//!   (`fissile-oci run`), does the helper's work in its own process. That work drives
//!   libcontainer through `container` and `process`, makes the network namespace (`netns`), a
//!   private mount namespace (`mount_ns`) with the run's tmpfs when its changes go to memory
//!   (`scratch`) and, on cgroup v1 hosts, the container's cgroups (`cgroup_v1`; on v2
//!   libcontainer's manager applies the limits of the runtime spec), enters a user namespace of
//!   its own when rootless (`userns`), and keeps `state` on disk so a later run can clean up
//!   after a crashed one. `error` is how a run fails, as the caller sees it ([`SandboxError`]).
//!
//! The [`Sandbox`] trait is the one seam between the orchestration (compiles, compilation bases,
//! shells) and libcontainer: [`LibcontainerSandbox`] is the real one, and the orchestration
//! tests (`tests/orchestration.rs`) run against a recording fake.

mod cgroup_v1;
mod client;
mod container;
mod error;
mod helper;
mod host;
mod log_relay;
mod mount_ns;
mod mounts;
mod netns;
mod process;
pub(crate) mod rootfs;
mod runtime_spec;
mod scratch;
mod seccomp;
mod security;
mod state;
mod types;
pub(crate) mod userns;
mod zygote;

use crate::cancel::CancelToken;
pub use client::{LibcontainerSandbox, SandboxProcess, Stopper, ZYGOTE_SUBCOMMAND};
pub use error::SandboxError;
pub use host::{
    in_path, parse_subid, v2_device_rules_problem, CgroupSupport, HostContext, IdRange,
    V2_DEVICE_RULES_FIX,
};
pub use runtime_spec::{
    build_runtime_spec, inherit_network_namespace, rootless_id_maps, SpecError,
};
pub use security::seccomp_profile;
pub use state::{check_private, default_runtime_root};
pub use types::{
    BindMount, CopyOnWriteMount, ExitStatus, Input, Network, Outcome, Output, RootfsSpec,
    SandboxSpec, ScratchReport, ScratchSpace, DEFAULT_HOSTNAME, DEFAULT_PATH, DEFAULT_PIDS_LIMIT,
    LOG_KEEP_BYTES,
};
pub use zygote::zygote_main;

/// Runs one sandboxed command to its end: the one seam between the orchestration (compiles,
/// compilation bases, shells) and libcontainer, so the orchestration can be tested with a fake.
pub trait Sandbox: Send + Sync {
    /// Runs `spec` to its end. When `cancel` fires, the sandbox is killed and removed and the
    /// run ends with an error ([`SandboxError::Interrupted`] for the real one).
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError>;
}
