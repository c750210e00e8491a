//! The pure function from a [`SandboxSpec`] and a [`HostContext`] to the OCI runtime spec that
//! libcontainer runs. No I/O: tested as data.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};

use super::host::{CgroupSupport, HostContext};
use super::mounts;
use super::rootfs;
use super::security;
use super::types::{Network, RootfsSpec, SandboxSpec};

#[derive(thiserror::Error, Debug)]
pub enum SpecError {
    #[error("no command given")]
    NoCommand,
    #[error("a terminal (tty) is not supported yet")]
    TtyUnsupported,
    #[error("{what} must be an absolute path: {path}")]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("overlay needs at least one lower dir")]
    NoLowerDir,
    #[error("copy-on-write mounts need an overlay rootfs (their changes live in its scratch dir)")]
    CowWithoutOverlay,
    #[error("{path}: overlay paths must not contain ':' or ','")]
    OverlayPath { path: PathBuf },
    #[error("uid/gid {uid}:{gid} is not mapped in the rootless user namespace (only 0 is, unless /etc/subuid and /etc/subgid give ranges and newuidmap is installed)")]
    UnmappedId { uid: u32, gid: u32 },
    #[error("failed to build the runtime spec")]
    Build(#[from] oci_spec::OciSpecError),
}

/// The cgroup of a container. Always set and unique: an empty path would mean the caller's own
/// cgroup, which `delete(true)` then kills along with the caller.
pub fn cgroups_path(container_id: &str) -> PathBuf {
    PathBuf::from(format!("/fissile-oci/{container_id}"))
}

/// Builds the runtime spec for one run. Resource limits are in it only where libcontainer
/// enforces them (cgroup v2); on v1 the helper does (see `cgroup_v1`), and where cgroups are
/// unavailable the caller tells the user they are skipped.
pub fn build_runtime_spec(
    spec: &SandboxSpec,
    host: &HostContext,
    container_id: &str,
) -> Result<Spec, SpecError> {
    validate(spec)?;
    let rootless = !host.is_root();

    let (root_path, readonly) = match &spec.rootfs {
        RootfsSpec::Overlay { scratch, .. } => (rootfs::merged_dir(scratch), false),
        RootfsSpec::Plain { dir, readonly } => (dir.clone(), *readonly),
    };
    let root = RootBuilder::default()
        .path(root_path)
        .readonly(readonly)
        .build()?;

    let (uid_maps, gid_maps) = rootless_id_maps(host);
    if rootless && !(is_mapped(spec.uid, &uid_maps) && is_mapped(spec.gid, &gid_maps)) {
        return Err(SpecError::UnmappedId {
            uid: spec.uid,
            gid: spec.gid,
        });
    }
    let user = UserBuilder::default().uid(spec.uid).gid(spec.gid).build()?;
    let mut process = ProcessBuilder::default()
        .terminal(spec.tty)
        .user(user)
        .args(spec.args.clone())
        .env(spec.env_strings())
        .cwd(spec.cwd.clone())
        .capabilities(security::capabilities())
        .no_new_privileges(true)
        .build()?;
    // No rlimits: the defaults (RLIMIT_NOFILE 1024) would be wrong for builds, and asking for
    // more than the caller's hard limits makes container creation fail (as podman does here).
    process.set_rlimits(None);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ];
    if spec.network == Network::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    // Rootless, the helper has already moved into a user namespace of its own (see `userns`):
    // the container shares it rather than asking libcontainer for one.
    let namespaces: Vec<LinuxNamespace> = namespaces
        .into_iter()
        .map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        })
        .collect();

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(cgroups_path(container_id))
        .masked_paths(strings(&security::MASKED_PATHS))
        .readonly_paths(strings(&security::READONLY_PATHS))
        .build()?;
    linux.set_resources(match host.cgroups {
        CgroupSupport::V2 => Some(resources(spec, host)?),
        CgroupSupport::V1 | CgroupSupport::Unavailable { .. } => None,
    });

    let mut result = Spec::default();
    result
        .set_version("1.0.2".to_string())
        .set_hostname(Some(spec.hostname.clone()))
        .set_root(Some(root))
        .set_process(Some(process))
        .set_mounts(Some(mounts::mounts(spec, host)?))
        .set_annotations(None)
        .set_linux(Some(linux));
    Ok(result)
}

/// Makes the container stay in its creator's network namespace instead of creating one: the
/// helper has just made that namespace for it (see `netns`).
pub fn inherit_network_namespace(spec: &mut Spec) {
    if let Some(namespaces) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
    }
}

fn validate(spec: &SandboxSpec) -> Result<(), SpecError> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    if spec.tty {
        return Err(SpecError::TtyUnsupported);
    }
    let absolute = |what: &'static str, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(SpecError::RelativePath {
                what,
                path: path.to_path_buf(),
            })
        }
    };
    absolute("the working directory", &spec.cwd)?;
    for mount in &spec.mounts {
        absolute("a mount source", &mount.source)?;
        absolute("a mount destination", &mount.destination)?;
    }
    for mount in &spec.cow_mounts {
        absolute("a mount destination", &mount.destination)?;
    }
    match &spec.rootfs {
        RootfsSpec::Plain { dir, .. } => {
            if !spec.cow_mounts.is_empty() {
                return Err(SpecError::CowWithoutOverlay);
            }
            absolute("the rootfs", dir)
        }
        RootfsSpec::Overlay { lower, scratch } => {
            if lower.is_empty() {
                return Err(SpecError::NoLowerDir);
            }
            let sources = spec.cow_mounts.iter().map(|m| &m.source);
            for path in lower.iter().chain([scratch]).chain(sources) {
                absolute("an overlay dir", path)?;
                if path.to_string_lossy().contains([':', ',']) {
                    return Err(SpecError::OverlayPath { path: path.clone() });
                }
            }
            Ok(())
        }
    }
}

/// The id maps of the rootless user namespace: the caller is root inside; with subordinate
/// ranges (and the setuid helpers to write them), ids 1..=65535 inside map to them so that
/// `chown` in a build works.
pub fn rootless_id_maps(host: &HostContext) -> (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>) {
    let map = |container_id: u32, host_id: u32, size: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(container_id)
            .host_id(host_id)
            .size(size)
            .build()
            .expect("all id mapping fields are set")
    };
    let mut uids = vec![map(0, host.euid, 1)];
    let mut gids = vec![map(0, host.egid, 1)];
    if let Some((subuid, subgid)) = host.subordinate_ranges() {
        uids.push(map(1, subuid.start, subuid.count));
        gids.push(map(1, subgid.start, subgid.count));
    }
    (uids, gids)
}

fn is_mapped(id: u32, maps: &[LinuxIdMapping]) -> bool {
    maps.iter()
        .any(|m| id >= m.container_id() && id - m.container_id() < m.size())
}

/// The limits libcontainer's cgroup v2 manager applies: the device rules (a BPF program, with
/// libcgroups' `cgroupsv2_devices`), `pids.max`, and `memory.max`. The spec's swap is memory
/// plus swap set to the limit where the host accounts swap (no swap on top, as the helper's own
/// cgroups do on v1), but libcgroups 0.7 skips the resulting `memory.swap.max` of 0: on a v2
/// host with swap, swap is not capped (tests/cgroup_v2.rs, README).
fn resources(spec: &SandboxSpec, host: &HostContext) -> Result<LinuxResources, SpecError> {
    let mut builder = LinuxResourcesBuilder::default().devices(security::device_rules());
    if let Some(limit) = spec.pids_limit {
        builder = builder.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if let Some(limit) = spec.memory_limit {
        let mut memory = LinuxMemoryBuilder::default().limit(limit);
        if host.cgroup_swap {
            memory = memory.swap(limit);
        }
        builder = builder.memory(memory.build()?);
    }
    Ok(builder.build()?)
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
