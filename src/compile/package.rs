//! One package compile: its sandbox (the BOSH compile contract), and turning a successful
//! output dir into a published package dir and an OCI image in the store, or a stored image
//! back into a published dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::Descriptor;

use crate::oci::{self, Compression, ImageSpec, LayerOptions, OciError, OciStore};
use crate::sandbox::{
    BindMount, CopyOnWriteMount, Input, Network, Output, RootfsSpec, SandboxSpec, ScratchSpace,
    DEFAULT_PATH, LOG_KEEP_BYTES,
};

pub const PACKAGES_DIR: &str = "/var/vcap/packages";
pub const SOURCE_DIR: &str = "/var/vcap/source";

pub const NAME_ANNOTATION: &str = "org.cloudfoundry.bosh.package.name";
pub const FINGERPRINT_ANNOTATION: &str = "org.cloudfoundry.bosh.package.fingerprint";
pub const DEPENDENCIES_ANNOTATION: &str = "org.cloudfoundry.bosh.package.dependencies";
pub const CACHE_KEY_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.cache-key";
pub const BASE_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.compilation-base";
/// Imported packages: the stemcell the compiled release was for (`os/version`), the key under
/// which they may stand in for a compile, and the recorded digest of the archive they came from.
pub const STEMCELL_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.stemcell";
pub const REUSE_KEY_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.reuse-key";
pub const ARCHIVE_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.compiled-package.sha1";

/// Everything a package compile needs, resolved.
#[derive(Clone, Debug)]
pub struct CompileInput {
    pub name: String,
    pub fingerprint: String,
    pub key: String,
    /// The unpacked compilation base (overlay lower dir).
    pub base_rootfs: PathBuf,
    /// Staged sources, shown writable at `/var/vcap/source/<name>` but never written: what the
    /// packaging script writes there (its whole build tree, usually) goes to the scratch space.
    pub source_dir: PathBuf,
    /// Empty dir mounted read-write at `/var/vcap/packages/<name>`.
    pub install_dir: PathBuf,
    /// The sandbox's scratch dir (its overlays' changes, when they are on disk).
    pub scratch: PathBuf,
    /// Where the changes go: the package's build tree on a tmpfs, or on disk under `scratch`.
    pub scratch_space: ScratchSpace,
    /// Direct dependencies: name and published dir, mounted read-only.
    pub dependencies: Vec<(String, PathBuf)>,
    pub bash: String,
    pub log: PathBuf,
    pub network: Network,
    pub timeout: Option<Duration>,
    pub memory_limit: Option<i64>,
    pub source_date_epoch: u64,
}

/// The sandbox of a compile, as data: `bash -x ./packaging` in `/var/vcap/source/<pkg>`, as
/// bosh runs it, with the BOSH environment.
pub fn sandbox_spec(input: &CompileInput) -> SandboxSpec {
    let source = format!("{SOURCE_DIR}/{}", input.name);
    let install = format!("{PACKAGES_DIR}/{}", input.name);
    let mut spec = SandboxSpec::new(
        RootfsSpec::Overlay {
            lower: vec![input.base_rootfs.clone()],
            scratch: input.scratch.clone(),
        },
        vec![input.bash.clone(), "-x".into(), "./packaging".into()],
    );
    spec.cwd = PathBuf::from(&source);
    spec.scratch_space = input.scratch_space;
    // The staged sources need no second copy: the script builds in an overlay over them.
    spec.cow_mounts.push(CopyOnWriteMount {
        source: input.source_dir.clone(),
        destination: PathBuf::from(&source),
    });
    for (dep, dir) in &input.dependencies {
        spec.mounts.push(BindMount {
            source: dir.clone(),
            destination: PathBuf::from(format!("{PACKAGES_DIR}/{dep}")),
            readonly: true,
        });
    }
    spec.mounts.push(BindMount {
        source: input.install_dir.clone(),
        destination: PathBuf::from(&install),
        readonly: false,
    });
    spec.env = vec![
        ("BOSH_COMPILE_TARGET".into(), source),
        ("BOSH_INSTALL_TARGET".into(), install),
        ("BOSH_PACKAGE_NAME".into(), input.name.clone()),
        ("BOSH_PACKAGE_VERSION".into(), input.fingerprint.clone()),
        ("BOSH_PACKAGES_DIR".into(), PACKAGES_DIR.into()),
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "SOURCE_DATE_EPOCH".into(),
            input.source_date_epoch.to_string(),
        ),
    ];
    spec.network = input.network;
    spec.timeout = input.timeout;
    spec.memory_limit = input.memory_limit;
    spec.stdin = Input::Null;
    let log = Output::CappedFile {
        path: input.log.clone(),
        head: LOG_KEEP_BYTES,
        tail: LOG_KEEP_BYTES,
    };
    spec.stdout = log.clone();
    spec.stderr = log;
    spec
}

/// A compiled package's image: its manifest (with annotations, ready to be named in the
/// index) and its one layer's digest (for reports, without reading the manifest back).
pub struct PackageImage {
    pub manifest: Descriptor,
    pub layer_digest: String,
    /// The digest of the uncompressed layer.
    pub diff_id: String,
}

/// Writes a published package dir as the package's image (config and manifest); naming it in
/// the index is the caller's, so that several can be named in one index update.
pub fn write_package_image(
    store: &OciStore,
    input: &CompileInput,
    published: &Path,
    dependencies: &[String],
    base_digest: &str,
) -> Result<PackageImage, OciError> {
    let mut notes = package_annotations(&input.name, &input.fingerprint, &input.key, dependencies);
    notes.insert(BASE_ANNOTATION.to_string(), base_digest.to_string());
    write_tree_image(
        store,
        &input.name,
        published,
        input.source_date_epoch,
        notes,
    )
}

/// The annotations every package image has.
pub fn package_annotations(
    name: &str,
    fingerprint: &str,
    key: &str,
    dependencies: &[String],
) -> BTreeMap<String, String> {
    let mut notes = BTreeMap::new();
    notes.insert(NAME_ANNOTATION.to_string(), name.to_string());
    notes.insert(FINGERPRINT_ANNOTATION.to_string(), fingerprint.to_string());
    notes.insert(DEPENDENCIES_ANNOTATION.to_string(), dependencies.join(","));
    notes.insert(CACHE_KEY_ANNOTATION.to_string(), key.to_string());
    notes
}

/// Writes an install dir as a package image: one deterministic layer with the files under
/// `var/vcap/packages/<name>/`, and `notes` on the manifest and on its index entry.
pub fn write_tree_image(
    store: &OciStore,
    name: &str,
    tree: &Path,
    mtime: u64,
    notes: BTreeMap<String, String>,
) -> Result<PackageImage, OciError> {
    // Owners are all 0:0, so only reading matters: a package is mostly the user's own files,
    // and the tree helper (rootless) is started only for one that holds files it may not read.
    let layer = crate::rootless::write_layer(
        store,
        tree,
        &LayerOptions {
            compression: Compression::Gzip,
            prefix: Some(format!("var/vcap/packages/{name}")),
            mtime,
            ..LayerOptions::default()
        },
        crate::rootless::Reach::HereFirst,
    )?;
    let layer_digest = layer.descriptor.digest().to_string();
    let diff_id = layer.diff_id.to_string();
    let manifest = oci::write_image(
        store,
        &ImageSpec {
            layers: vec![layer],
            annotations: notes.clone(),
            ..ImageSpec::default()
        },
    )?;
    let mut named = manifest;
    named.set_annotations(Some(notes.into_iter().collect()));
    Ok(PackageImage {
        manifest: named,
        layer_digest,
        diff_id,
    })
}

/// Moves a finished install dir to its published place; when another run published the same
/// key first, theirs is kept (same inputs, same result) and ours dropped.
pub fn publish_dir(install_dir: &Path, published: &Path) -> std::io::Result<()> {
    if let Some(parent) = published.parent() {
        fs_err::create_dir_all(parent)?;
    }
    match fs_err::rename(install_dir, published) {
        Ok(()) => Ok(()),
        Err(_) if published.is_dir() => {
            let _ = crate::workdir::remove_tree(install_dir);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Restores `WORK/packages/<key>` from the store (after a `cache gc` or on a fresh work dir
/// with an imported store): the layer holds `var/vcap/packages/<name>/…`.
pub fn restore_from_store(
    store: &OciStore,
    manifest: &Descriptor,
    name: &str,
    published: &Path,
) -> Result<(), OciError> {
    let parent = published.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(parent).map_err(OciError::io(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(parent)
        .map_err(OciError::io(parent))?;
    let tree = tmp.path().join("tree");
    oci::unpack::unpack_to(store, manifest, &tree)?;
    let inner = tree.join("var/vcap/packages").join(name);
    if !inner.is_dir() {
        return Err(OciError::invalid(
            published,
            format!("the stored image has no var/vcap/packages/{name}"),
        ));
    }
    match fs_err::rename(&inner, published) {
        Ok(()) => Ok(()),
        Err(_) if published.is_dir() => Ok(()),
        Err(e) => Err(OciError::io(published)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_sandbox_follows_the_bosh_contract() {
        let input = CompileInput {
            name: "app".into(),
            fingerprint: "f".repeat(40),
            key: "k".into(),
            base_rootfs: "/w/rootfs/b".into(),
            source_dir: "/w/runs/r/app/source".into(),
            install_dir: "/w/runs/r/app/install".into(),
            scratch: "/w/runs/r/app/sandbox".into(),
            scratch_space: ScratchSpace::Tmpfs { size: 1 << 30 },
            dependencies: vec![("lib".into(), "/w/packages/k1".into())],
            bash: "/bin/bash".into(),
            log: "/w/logs/app.log".into(),
            network: Network::None,
            timeout: None,
            memory_limit: None,
            source_date_epoch: 0,
        };
        let spec = sandbox_spec(&input);
        assert_eq!(spec.args, vec!["/bin/bash", "-x", "./packaging"]);
        assert_eq!(spec.cwd, Path::new("/var/vcap/source/app"));
        let mount = |dst: &str| {
            spec.mounts
                .iter()
                .find(|m| m.destination == Path::new(dst))
                .unwrap()
        };
        assert_eq!(
            spec.cow_mounts,
            [CopyOnWriteMount {
                source: "/w/runs/r/app/source".into(),
                destination: "/var/vcap/source/app".into(),
            }],
            "the sources are shown writable, never written"
        );
        assert_eq!(spec.scratch_space, ScratchSpace::Tmpfs { size: 1 << 30 });
        assert!(mount("/var/vcap/packages/lib").readonly);
        assert_eq!(
            mount("/var/vcap/packages/lib").source,
            Path::new("/w/packages/k1")
        );
        assert!(!mount("/var/vcap/packages/app").readonly);
        let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["BOSH_INSTALL_TARGET"], "/var/vcap/packages/app");
        assert_eq!(env["BOSH_COMPILE_TARGET"], "/var/vcap/source/app");
        assert_eq!(env["BOSH_PACKAGE_VERSION"], "f".repeat(40));
        assert_eq!(env["BOSH_PACKAGES_DIR"], "/var/vcap/packages");
        assert_eq!(spec.network, Network::None);
        assert_eq!(spec.stdin, Input::Null);
    }
}
