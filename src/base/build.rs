//! Building or importing a base: an OS tree from any source, normalised and stored as one
//! deterministic layer.

use std::path::Path;

use oci_spec::image::Descriptor;

use super::{io, BaseError, BaseSource, KIND_ANNOTATION};
use crate::extract::{self, ExtractLimits};
use crate::oci::store::{annotations, OciStore};
use crate::oci::{self, Compression, ImageSpec, LayerOptions};
use crate::workdir::WorkDir;

/// Builds (or imports) a base and stores it under `tag`; returns its manifest descriptor.
pub fn build_base(
    wd: &WorkDir,
    store: &OciStore,
    source: &BaseSource,
    packages: &[String],
    tag: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Descriptor, BaseError> {
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
        BaseSource::Rootfs(path) if path.is_dir() => layer_image(store, path, &[])?,
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
            rootfs_builder::normalize::normalize(&tree)?;
            layer_image(store, &tree, &[])?
        }
        BaseSource::Busybox => {
            let staging = Staging::new(wd)?;
            let tree = staging.path().join("rootfs");
            fs_err::create_dir_all(&tree).map_err(io(&tree))?;
            rootfs_builder::busybox::build(&tree, true)?;
            layer_image(store, &tree, &[])?
        }
        BaseSource::Debian { suite } => {
            let staging = Staging::new(wd)?;
            let tree = staging.path().join("rootfs");
            let options = rootfs_builder::debian::DebianOptions {
                suite: suite.clone(),
                mirror: None,
                packages: packages.to_vec(),
                apt_options: Vec::new(),
            };
            rootfs_builder::debian::build(&options, &tree, progress)?;
            progress("packing the rootfs into a layer");
            layer_image(store, &tree, &[])?
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
    let mut named = super::stemcell::record_identity(store, descriptor)?;
    let mut notes = annotations(&named);
    notes.insert(KIND_ANNOTATION.into(), "base".into());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(tag, &named)?;
    Ok(named)
}

/// One gzip layer of `tree` with owners kept (a rootfs has non-root files), as an image.
pub(super) fn layer_image(
    store: &OciStore,
    tree: &Path,
    base: &[(Descriptor, String)],
) -> Result<Descriptor, BaseError> {
    let layer = oci::write_layer(
        store,
        tree,
        &LayerOptions {
            compression: Compression::Gzip,
            keep_owners: true,
            mtime: crate::clock::source_date_epoch(),
            ..LayerOptions::default()
        },
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

/// A scratch dir under `WORK/runs/`, removed when dropped.
pub(super) struct Staging(tempfile::TempDir);

impl Staging {
    pub(super) fn new(wd: &WorkDir) -> Result<Staging, BaseError> {
        let runs = wd.runs();
        fs_err::create_dir_all(&runs).map_err(io(&runs))?;
        let dir = tempfile::Builder::new()
            .prefix("base-")
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
        // Bootstrapped trees hold read-only dirs; TempDir's own removal would give up on them.
        let _ = crate::workdir::remove_tree(self.0.path());
    }
}
