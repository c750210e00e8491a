//! Rootless runs and the trees they leave. A sandbox run by an unprivileged user writes files as
//! the user's subordinate ids (`/etc/subuid`: uid 1000 inside is 100999 outside), and so does
//! mmdebstrap's unshare mode; the bare user can neither read nor remove many of them. Every
//! piece of work on such a tree (normalising a bootstrap, writing it as a layer, removing
//! scratch dirs and the cache) therefore either runs in this process, when it is root or the
//! tree turns out to be readable, or in the tree helper ([`tree`]), a process in a user
//! namespace where the user's own id and whole subordinate range are mapped.
//!
//! Layers record owners as the namespace that wrote the tree saw them ([`idmap`],
//! [`crate::oci::layer::Owners`]), so a rootless build gives the bytes a root build gives.
//! [`check`] says up front, with the fix, what a rootless host lacks.
//!
//! As root nothing here starts a process or costs a system call: [`tree_helper`] is `None`.

pub mod check;
mod idmap;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use idmap::{IdMaps, MapRange, OwnerTranslation, Unmapped};
pub use tree::{
    helper_maps, tree_helper_main, TreeError, TreeHelper, TreeJob, TREE_HELPER_SUBCOMMAND,
};

use crate::oci::{Layer, LayerOptions, OciError, OciStore};
use crate::sandbox::HostContext;

static HELPER_EXE: OnceLock<PathBuf> = OnceLock::new();
static HELPER: OnceLock<TreeHelper> = OnceLock::new();

/// Makes the tree helper start from `exe` instead of `/proc/self/exe`: for programs that are
/// not the fissile-oci binary themselves (the integration tests). Only a call before the first
/// job counts.
pub fn set_helper_exe(exe: PathBuf) {
    let _ = HELPER_EXE.set(exe);
}

/// The tree helper this process uses (one for the whole process, started on its first job), or
/// `None` when it needs none: root reaches every file itself (so does the helper, once in its
/// namespace, and a sandbox helper in its own).
pub fn tree_helper() -> Option<&'static TreeHelper> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    Some(HELPER.get_or_init(|| {
        TreeHelper::new(
            HELPER_EXE
                .get()
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/proc/self/exe")),
        )
    }))
}

/// The id map of the sandboxes this process starts (see `sandbox::rootless_id_maps`): what
/// they write, a layer records through it. The identity as root.
pub fn sandbox_maps(host: &HostContext) -> IdMaps {
    if host.is_root() {
        return IdMaps::identity();
    }
    let (uids, gids) = crate::sandbox::rootless_id_maps(host);
    let ranges = |maps: Vec<oci_spec::runtime::LinuxIdMapping>| -> Vec<MapRange> {
        maps.iter()
            .map(|m| MapRange::new(m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    IdMaps {
        uids: ranges(uids),
        gids: ranges(gids),
    }
}

/// Where a tree is read first when it becomes a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// In this process, and in the tree helper only if that meets a file or directory it may
    /// not read: for trees the user mostly owns (compiled packages), where a helper per
    /// package would only cost time.
    HereFirst,
    /// In the tree helper straight away (rootless): for trees subordinate ids own through and
    /// through (bootstraps, prerequisites layers).
    Helper,
}

/// Writes `tree` as a layer: in this process as root; rootless, where `reach` says.
pub fn write_layer(
    store: &OciStore,
    tree: &Path,
    options: &LayerOptions,
    reach: Reach,
) -> Result<Layer, OciError> {
    let Some(helper) = tree_helper() else {
        return crate::oci::write_layer(store, tree, options);
    };
    if reach == Reach::HereFirst {
        match crate::oci::write_layer(store, tree, options) {
            Err(OciError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied => {}
            done => return done,
        }
    }
    helper
        .write_layer(store, tree, options)
        .map_err(|e| OciError::TreeHelper(Box::new(e)))
}

/// Normalises a bootstrapped tree (`rootfs_builder::normalize`): in this process as root, in
/// the tree helper otherwise (a bootstrap's files belong to subordinate ids).
pub fn normalize(tree: &Path) -> Result<(), NormalizeError> {
    match tree_helper() {
        None => Ok(rootfs_builder::normalize::normalize(tree)?),
        Some(helper) => Ok(helper.normalize(tree)?),
    }
}

#[derive(thiserror::Error, Debug)]
pub enum NormalizeError {
    #[error(transparent)]
    Build(#[from] rootfs_builder::BuildError),
    #[error(transparent)]
    Helper(#[from] TreeError),
}
