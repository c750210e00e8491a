//! Building or importing a base: an OS tree from any source, normalised and stored as one
//! deterministic layer, its owners as the tree's writer saw them (a rootless build records what
//! a root build records).

use std::path::Path;

use oci_spec::image::Descriptor;

use super::{io, BaseError, BaseSource, KIND_ANNOTATION};
use crate::cancel::CancelToken;
use crate::extract::{self, ExtractLimits};
use crate::oci::store::{annotations, OciStore};
use crate::oci::{self, Compression, ImageSpec, LayerOptions, Owners};
use crate::rootless::{self, IdMaps, MapRange, Reach};
use crate::sandbox::HostContext;
use crate::workdir::WorkDir;

/// Builds (or imports) a base and stores it under `tag`; returns its manifest descriptor. A
/// cancelled `cancel` stops a bootstrap at once and anything else at its next step, with
/// [`BaseError::Interrupted`]; the staging dir is removed either way.
pub fn build_base(
    wd: &WorkDir,
    store: &OciStore,
    source: &BaseSource,
    packages: &[String],
    tag: &str,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(&str),
) -> Result<Descriptor, BaseError> {
    let step = || {
        if cancel.is_cancelled() {
            Err(BaseError::Interrupted {
                tag: tag.to_string(),
            })
        } else {
            Ok(())
        }
    };
    let descriptor = match source {
        BaseSource::Oci { layout, reference } => {
            if layout.is_file() {
                oci::import::import_oci_archive(store, layout, reference.as_deref(), tag)?
            } else {
                oci::import::import_oci_layout(store, layout, reference.as_deref(), tag)?
            }
        }
        BaseSource::DockerArchive(archive) => {
            oci::import::import_docker_archive(store, archive, Some(tag))?.1
        }
        // The user's own tree: as the user's sandboxes would see it (its files are root's).
        BaseSource::Rootfs(path) if path.is_dir() => {
            layer_image(store, path, &[], user_tree(), Reach::HereFirst)?
        }
        BaseSource::Rootfs(path) => {
            let staging = Staging::new(wd)?;
            let tree = staging.path().join("rootfs");
            progress(&format!("unpacking {}", path.display()));
            let mut builder = extract::TreeBuilder::new(&tree, &ExtractLimits::default())?;
            // A rootfs's absolute links point into itself once it is a container's root.
            builder.allow_escaping_symlinks(true);
            builder.apply(
                std::io::BufReader::new(fs_err::File::open(path).map_err(io(path))?),
                path,
                false,
            )?;
            builder.finish()?;
            // Unpacked by this process, so its own (owners are not kept when unpacking).
            rootfs_builder::normalize::normalize(&tree)?;
            layer_image(store, &tree, &[], user_tree(), Reach::HereFirst)?
        }
        BaseSource::Busybox => {
            let staging = Staging::new(wd)?;
            let tree = staging.path().join("rootfs");
            fs_err::create_dir_all(&tree).map_err(io(&tree))?;
            rootfs_builder::busybox::build(&tree, true)?;
            layer_image(store, &tree, &[], user_tree(), Reach::HereFirst)?
        }
        BaseSource::Debian { suite } => {
            let staging = Staging::new(wd)?;
            let tree = staging.path().join("rootfs");
            let options = rootfs_builder::debian::DebianOptions {
                suite: suite.clone(),
                mirror: None,
                packages: packages.to_vec(),
                apt_options: Vec::new(),
                hold_open: wd.held_lock(),
            };
            let stop = || cancel.is_cancelled();
            let written_by = rootfs_builder::debian::build(&options, &tree, progress, &stop)
                .map_err(|e| match e {
                    rootfs_builder::BuildError::Interrupted { .. } => BaseError::Interrupted {
                        tag: tag.to_string(),
                    },
                    e => e.into(),
                })?;
            step()?;
            progress("normalising the rootfs");
            rootless::normalize(&tree)?;
            step()?;
            progress("packing the rootfs into a layer");
            layer_image(
                store,
                &tree,
                &[],
                bootstrap_owners(written_by),
                Reach::Helper,
            )?
        }
        BaseSource::Stemcell(path) => super::stemcell::import_stemcell(wd, store, path, progress)?,
        BaseSource::Registry(reference) => {
            // podman's credentials and TLS defaults; `fissile-oci base build` calls
            // `pull_base` itself, with the command line's settings and a progress display.
            progress(&format!("pulling docker://{reference}"));
            let client = crate::registry::Client::new(Default::default())?;
            return super::pull_base(store, &client, reference, tag, &crate::registry::NoReporter);
        }
    };
    step()?;
    let mut named = super::stemcell::record_identity(store, descriptor)?;
    let mut notes = annotations(&named);
    notes.insert(KIND_ANNOTATION.into(), "base".into());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(tag, &named)?;
    Ok(named)
}

/// How the owners of a tree this process wrote (or its sandboxes, rootless) map: the user is
/// root, its subordinate ids the other users. The identity as root.
pub(super) fn user_tree() -> Owners {
    Owners::as_written_by(rootless::sandbox_maps(&HostContext::detect()))
}

/// How the owners of a Debian bootstrap map.
fn bootstrap_owners(written_by: rootfs_builder::debian::Bootstrapped) -> Owners {
    use rootfs_builder::debian::Bootstrapped;
    match written_by {
        Bootstrapped::AsRoot => Owners::as_written_by(IdMaps::identity()),
        Bootstrapped::Unshared { uids, gids } => Owners::as_written_by(IdMaps {
            uids: vec![MapRange::new(0, uids.0, uids.1)],
            gids: vec![MapRange::new(0, gids.0, gids.1)],
        }),
    }
}

/// One gzip layer of `tree` with its owners (a rootfs has non-root files), as an image.
pub(super) fn layer_image(
    store: &OciStore,
    tree: &Path,
    base: &[(Descriptor, String)],
    owners: Owners,
    reach: Reach,
) -> Result<Descriptor, BaseError> {
    let layer = rootless::write_layer(
        store,
        tree,
        &LayerOptions {
            compression: Compression::Gzip,
            owners,
            mtime: crate::clock::source_date_epoch(),
            ..LayerOptions::default()
        },
        reach,
    )?;
    Ok(oci::write_image(
        store,
        &ImageSpec {
            base: base.to_vec(),
            layers: vec![layer],
            ..ImageSpec::default()
        },
    )?)
}

/// Staging dirs are `WORK/runs/base-*`.
const STAGING_PREFIX: &str = "base-";

/// A scratch dir under `WORK/runs/`, removed when dropped.
pub(super) struct Staging(tempfile::TempDir);

impl Staging {
    pub(super) fn new(wd: &WorkDir) -> Result<Staging, BaseError> {
        let runs = wd.runs();
        fs_err::create_dir_all(&runs).map_err(io(&runs))?;
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&runs)
            .map_err(io(&runs))?;
        Ok(Staging(dir))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Bootstrapped trees hold read-only dirs, and rootless, files of subordinate ids:
        // TempDir's own removal would give up on them. What cannot be removed here is left to
        // `cache gc`, which removes run dirs no live process owns (`runs/base-*` have no owner
        // file: the work-dir lock says no build is using one).
        let _ = crate::workdir::remove_tree(self.0.path());
    }
}
