//! The stemcell a base is, recorded as two annotations of its manifest (and of its index entry,
//! where `base list` reads them): from a stemcell tarball's `stemcell.MF`, else from the root
//! filesystem as bosh-agent reads it (`<ID>-<VERSION_CODENAME>` of `/etc/os-release`, the
//! content of `/var/vcap/bosh/etc/stemcell_version`), else none. The root filesystem is read
//! from the image's layers, whiteouts and links honoured, without unpacking it. A compilation
//! base inherits its base's.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::Deserialize;

use super::build::{layer_image, user_tree, Staging};
use super::BaseError;
use crate::extract::{self, ExtractLimits};
use crate::oci::image::read_manifest;
use crate::oci::store::annotations;
use crate::oci::OciStore;
use crate::release::{stemcell, Stemcell};
use crate::rootless::Reach;
use crate::workdir::WorkDir;

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
    // The new manifest is an OCI one, whatever its source's type was: content and descriptor
    // must agree.
    manifest.set_media_type(Some(MediaType::ImageManifest));
    Ok(store.put_json(MediaType::ImageManifest, &manifest)?)
}

/// A base from a BOSH stemcell tarball: its root filesystem normalised into one layer, with
/// the identity of its `stemcell.MF`.
pub fn import_stemcell(
    wd: &WorkDir,
    store: &OciStore,
    path: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Descriptor, BaseError> {
    let tarball = StemcellTarball::open(path)?;
    progress(&format!(
        "unpacking stemcell {} ({})",
        tarball.name.as_deref().unwrap_or("unnamed"),
        tarball.stemcell
    ));
    let staging = Staging::new(wd)?;
    let tree = staging.path().join("rootfs");
    tarball.unpack_image(&tree)?;
    rootfs_builder::normalize::normalize(&tree)?;
    progress("packing the rootfs into a layer");
    // Unpacked by this process, so its own (owners are not kept when unpacking).
    let image = layer_image(store, &tree, &[], user_tree(), Reach::HereFirst)?;
    annotate_manifest(store, &image, &tarball.stemcell)
}

/// Makes sure a new base records its stemcell: one its manifest has already, else the one its
/// root filesystem says it is; the descriptor returned carries it as annotations too.
pub fn record_identity(store: &OciStore, descriptor: Descriptor) -> Result<Descriptor, BaseError> {
    let manifest = read_manifest(store, &descriptor)?;
    let notes = manifest.annotations().clone().unwrap_or_default();
    let recorded = match (
        notes.get(STEMCELL_OS_ANNOTATION),
        notes.get(STEMCELL_VERSION_ANNOTATION),
    ) {
        (Some(os), Some(version)) => Stemcell::new(os, version).ok(),
        _ => None,
    };
    let (mut descriptor, stemcell) = match recorded {
        Some(stemcell) => (descriptor, stemcell),
        None => match identity_in_layers(store, &manifest)? {
            Some(stemcell) => (annotate_manifest(store, &descriptor, &stemcell)?, stemcell),
            None => return Ok(descriptor),
        },
    };
    let mut notes = descriptor.annotations().clone().unwrap_or_default();
    notes.extend(stemcell_annotations(&stemcell));
    descriptor.set_annotations(Some(notes));
    Ok(descriptor)
}

/// The files bosh-agent reads, and the one `/etc/os-release` usually links to.
const IDENTITY_FILES: [&str; 3] = [
    "etc/os-release",
    "usr/lib/os-release",
    "var/vcap/bosh/etc/stemcell_version",
];

enum Found {
    Content(Vec<u8>),
    Link(String),
}

/// Reads the identity files out of the image's layers, later layers winning, whiteouts
/// deleting.
fn identity_in_layers(
    store: &OciStore,
    manifest: &ImageManifest,
) -> Result<Option<Stemcell>, BaseError> {
    let mut found: HashMap<&'static str, Found> = HashMap::new();
    for layer in manifest.layers() {
        let blob = store.blob_path(layer.digest())?;
        let corrupt = |e: std::io::Error| invalid(&blob, format!("unreadable layer: {e}"));
        let reader = extract::decompressing_reader(std::io::BufReader::with_capacity(
            256 * 1024,
            store.open_blob(layer)?,
        ))
        .map_err(corrupt)?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let Ok(path) = extract::normalize_entry_path(&entry.path_bytes()) else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if base == ".wh..wh..opq" {
                found.retain(|f, _| !f.starts_with(&format!("{dir}/")));
                continue;
            }
            if let Some(deleted) = base.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    deleted.to_string()
                } else {
                    format!("{dir}/{deleted}")
                };
                found.retain(|f, _| *f != gone && !f.starts_with(&format!("{gone}/")));
                continue;
            }
            // A directory replaced by anything else hides what was under it.
            if !entry.header().entry_type().is_dir() {
                found.retain(|f, _| !f.starts_with(&format!("{path}/")));
            }
            let Some(&wanted) = IDENTITY_FILES.iter().find(|f| **f == path) else {
                continue;
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut content = Vec::new();
                    (&mut entry)
                        .take(64 * 1024)
                        .read_to_end(&mut content)
                        .map_err(corrupt)?;
                    found.insert(wanted, Found::Content(content));
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    found.insert(wanted, Found::Link(resolve_link(dir, &target)));
                }
                _ => {
                    found.remove(wanted);
                }
            }
        }
        // Reading to the end is what checks the blob's digest.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    }
    let content = |start: &str| -> Option<String> {
        let mut path = start.to_string();
        for _ in 0..IDENTITY_FILES.len() + 1 {
            match found.get(path.as_str())? {
                Found::Content(bytes) => return Some(String::from_utf8_lossy(bytes).into_owned()),
                Found::Link(target) => path = target.clone(),
            }
        }
        None
    };
    Ok(content("etc/os-release")
        .zip(content("var/vcap/bosh/etc/stemcell_version"))
        .and_then(|(os_release, version)| stemcell::from_os_release(&os_release, &version)))
}

/// A symlink's target as a path from the root: absolute targets from `/`, relative ones from
/// the link's directory, `..` never above the root.
fn resolve_link(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_from_the_root() {
        assert_eq!(
            resolve_link("etc", "../usr/lib/os-release"),
            "usr/lib/os-release"
        );
        assert_eq!(
            resolve_link("etc", "/usr/lib/os-release"),
            "usr/lib/os-release"
        );
        assert_eq!(resolve_link("etc", "../../../x"), "x");
    }
}
