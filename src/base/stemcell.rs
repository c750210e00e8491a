//! The stemcell a base is, recorded as two annotations of its manifest (and of its index entry,
//! where `base list` reads them): from a stemcell tarball's `stemcell.MF`, else from the root
//! filesystem as bosh-agent reads it, else none. A compilation base inherits its base's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::Deserialize;

use super::BaseError;
use crate::extract::{self, ExtractLimits};
use crate::oci::image::read_manifest;
use crate::oci::store::annotations;
use crate::oci::OciStore;
use crate::release::{stemcell, Stemcell};

pub const STEMCELL_OS_ANNOTATION: &str = "org.cloudfoundry.bosh.stemcell.os";
pub const STEMCELL_VERSION_ANNOTATION: &str = "org.cloudfoundry.bosh.stemcell.version";

/// A stemcell's manifest is small YAML; anything bigger is not one.
const MAX_STEMCELL_MF: u64 = 1 << 20;

/// The stemcell identity a stored base or compilation base records, if any.
pub fn stemcell_of(descriptor: &Descriptor) -> Option<Stemcell> {
    let notes = annotations(descriptor);
    Stemcell::new(
        notes.get(STEMCELL_OS_ANNOTATION)?,
        notes.get(STEMCELL_VERSION_ANNOTATION)?,
    )
    .ok()
}

/// The annotations recording `stemcell`.
pub fn stemcell_annotations(stemcell: &Stemcell) -> BTreeMap<String, String> {
    BTreeMap::from([
        (STEMCELL_OS_ANNOTATION.to_string(), stemcell.os.clone()),
        (
            STEMCELL_VERSION_ANNOTATION.to_string(),
            stemcell.version.clone(),
        ),
    ])
}

/// The stemcell a root filesystem is, as bosh-agent's `compile` works it out: `<ID>-<VERSION_CODENAME>`
/// of `/etc/os-release` and the content of `/var/vcap/bosh/etc/stemcell_version`, both read
/// inside `root` (links resolved as the container would). `None` without either.
pub fn from_rootfs(root: &Path) -> Option<Stemcell> {
    let os_release = read_in_rootfs(root, "etc/os-release")?;
    let version = read_in_rootfs(root, "var/vcap/bosh/etc/stemcell_version")?;
    stemcell::from_os_release(
        &String::from_utf8_lossy(&os_release),
        &String::from_utf8_lossy(&version),
    )
}

/// A small regular file of the rootfs, links followed inside it.
fn read_in_rootfs(root: &Path, rel: &str) -> Option<Vec<u8>> {
    let path = super::rootfs_lookup::resolve_in_rootfs(root, rel)?;
    let file = fs_err::File::open(&path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut out = Vec::new();
    file.take(64 * 1024).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The fields of `stemcell.MF` a base needs.
#[derive(Deserialize, Debug, Default)]
struct StemcellManifest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    operating_system: Option<String>,
}

/// A BOSH stemcell tarball, read: its identity and name from `stemcell.MF`.
pub struct StemcellTarball {
    pub path: PathBuf,
    pub stemcell: Stemcell,
    pub name: Option<String>,
}

impl StemcellTarball {
    /// Reads and checks `stemcell.MF`.
    pub fn open(path: &Path) -> Result<StemcellTarball, BaseError> {
        let bytes = extract::read_member(
            extract::open_archive(path)?,
            path,
            "stemcell.MF",
            MAX_STEMCELL_MF,
        )?
        .ok_or_else(|| invalid(path, "no stemcell.MF: not a BOSH stemcell tarball"))?;
        let member = PathBuf::from(format!("{}:stemcell.MF", path.display()));
        let manifest: StemcellManifest = crate::release::yaml::parse(&bytes, &member)
            .map_err(|e| invalid(path, e.to_string()))?;
        let field = |name: &str, value: Option<String>| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| invalid(&member, format!("field {name}: missing")))
        };
        let os = field("operating_system", manifest.operating_system)?;
        let version = field("version", manifest.version)?;
        let stemcell = Stemcell::new(&os, &version)
            .map_err(|e| invalid(&member, format!("operating_system/version: {e}")))?;
        Ok(StemcellTarball {
            path: path.to_path_buf(),
            stemcell,
            name: manifest.name,
        })
    }

    /// Extracts the root filesystem (the `image` member, a gzipped tar of it, as warden and
    /// bosh-lite stemcells carry it) into `tree`, which must not exist.
    pub fn unpack_image(&self, tree: &Path) -> Result<(), BaseError> {
        let label = PathBuf::from(format!("{}:image", self.path.display()));
        let mut builder = extract::TreeBuilder::new(tree, &ExtractLimits::default())?;
        // A rootfs's absolute links point into itself once it is a container's root.
        builder.allow_escaping_symlinks(true);
        let mut archive = tar::Archive::new(extract::open_archive(&self.path)?);
        let corrupt = |e: std::io::Error| invalid(&self.path, format!("truncated or corrupt: {e}"));
        let mut found = false;
        for entry in archive.entries().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            let name = extract::normalize_entry_path(&entry.path_bytes())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name != "image" {
                continue;
            }
            if !entry.header().entry_type().is_file() {
                return Err(invalid(&label, "is not a regular file"));
            }
            builder.apply(std::io::BufReader::new(entry), &label, false)?;
            found = true;
            break;
        }
        if !found {
            return Err(invalid(
                &self.path,
                "no image member: only stemcells that carry their root filesystem as a tarball (warden, bosh-lite) can be a base",
            ));
        }
        builder.finish()?;
        Ok(())
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> BaseError {
    BaseError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An imported image with `stemcell` recorded: the same config and layers under a manifest
/// that carries the annotations too.
pub fn annotate_manifest(
    store: &OciStore,
    descriptor: &Descriptor,
    stemcell: &Stemcell,
) -> Result<Descriptor, BaseError> {
    let mut manifest: ImageManifest = read_manifest(store, descriptor)?;
    let mut notes = manifest.annotations().clone().unwrap_or_default();
    notes.extend(stemcell_annotations(stemcell));
    manifest.set_annotations(Some(notes));
    Ok(store.put_json(MediaType::ImageManifest, &manifest)?)
}
