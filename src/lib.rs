//! fissile-oci: compile BOSH release packages into OCI image layers without a container daemon.
//!
//! The data flow is `release` (read and verify releases) -> `plan` (the package graph) -> later
//! stages that compile in sandboxes and store results in an OCI layout.

pub mod base;
pub mod compile;
pub mod digest;
pub mod extract;
pub mod oci;
pub mod plan;
pub mod release;
pub mod role_manifest;
pub mod sandbox;
pub mod tree_removal;
pub mod workdir;
pub mod yaml;
