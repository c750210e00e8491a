//! Sandboxes: one command in a fresh libcontainer (youki) container, isolated, limited, and
//! cleaned up on every exit path.
//!
//! - `types`: the [`SandboxSpec`] (what to run, where, with which limits) and [`Outcome`].
//! - `runtime_spec`: the pure function to an OCI runtime spec ([`build_runtime_spec`]), with
//!   `mounts`, `security` (capabilities, masked paths, the seccomp profile, which `seccomp`
//!   compiles) and `rootfs` (the overlay, mounted inside the container); `host` holds the host
//!   facts it depends on ([`HostContext`]).
//! - `client`: [`LibcontainerSandbox`], the caller's side, safe from any thread; it starts
//!   `helper`, a single-threaded process per container (`fissile-oci __sandbox-helper`), or,
//!   for a single-threaded caller that exits afterwards (`fissile-oci run`), does the helper's
//!   work in its own process. That work drives libcontainer through `container` and `process`,
//!   makes the network namespace (`netns`, in a `side_job` alongside the rest of the set-up)
//!   and, on cgroup v1 hosts, the container's cgroups (`cgroup_v1`), enters a user namespace of
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
mod mounts;
mod netns;
mod process;
pub(crate) mod rootfs;
mod runtime_spec;
mod seccomp;
mod security;
mod side_job;
mod state;
mod types;
pub(crate) mod userns;

use crate::cancel::CancelToken;
pub use client::{LibcontainerSandbox, SandboxProcess, HELPER_SUBCOMMAND};
pub use error::SandboxError;
pub use helper::helper_main;
pub use host::{in_path, parse_subid, CgroupSupport, HostContext, IdRange};
pub use runtime_spec::{
    build_runtime_spec, inherit_network_namespace, rootless_id_maps, SpecError,
};
pub use security::seccomp_profile;
pub use state::default_runtime_root;
pub use types::{
    BindMount, ExitStatus, Input, Network, Outcome, Output, RootfsSpec, SandboxSpec,
    DEFAULT_HOSTNAME, DEFAULT_PATH, DEFAULT_PIDS_LIMIT, LOG_KEEP_BYTES,
};

/// Runs one sandboxed command to its end: the one seam between the orchestration (compiles,
/// compilation bases, shells) and libcontainer, so the orchestration can be tested with a fake.
pub trait Sandbox: Send + Sync {
    /// Runs `spec` to its end. When `cancel` fires, the sandbox is killed and removed and the
    /// run ends with an error ([`SandboxError::Interrupted`] for the real one).
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError>;
}
