//! Base images and compilation bases.
//!
//! A *base* is an OS tree as an image in the store (from Debian, a rootfs, an OCI layout, a
//! `docker save` archive, or busybox). A *compilation base* is a base plus one layer: what the
//! prerequisites script changed, run in a sandbox on the base and committed from the overlay's
//! upper dir. Its name is derived from the base's digest, the script's hash and the fissile-oci
//! version (like fissile's BaseImageName), so a new base, script or version never reuses a
//! stale one.

mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use sha2::Digest as _;

pub use source::BaseSource;

use crate::extract::{self, ExtractLimits};
use crate::oci::store::{annotations, sha256_hex, OciStore};
use crate::oci::{self, image, unpack, Compression, ImageSpec, LayerOptions, OciError};
use crate::sandbox::{Network, Outcome, RootfsSpec, Sandbox, SandboxSpec};
use crate::workdir::WorkDir;

pub const KIND_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.kind";
pub const BASE_DIGEST_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.base.digest";
pub const SCRIPT_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.prerequisites.sha256";
pub const VERSION_ANNOTATION: &str = "org.cloudfoundry.fissile-oci.version";
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// Makes sure a base can compile BOSH packages: the /var/vcap tree exists, and what packaging
/// scripts usually call is there (a note, not a failure: a busybox base is fine for scripts
/// that only copy files).
pub const DEFAULT_PREREQUISITES: &str = r#"set -e
mkdir -p /var/vcap/packages /var/vcap/source /var/vcap/data /var/vcap/sys/log /var/vcap/sys/run /var/vcap/jobs
missing=""
for tool in cc make tar gzip patch; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "note: this base has no$missing; packages whose packaging scripts need them will fail"
fi
"#;

#[derive(thiserror::Error, Debug)]
pub enum BaseError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    #[error(transparent)]
    Build(#[from] rootfs_builder::BuildError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("base {name:?} has no bash (looked for /bin/bash and /usr/bin/bash): BOSH packaging scripts run under bash; build the base from a source that has it (debian:SUITE) or add it to the rootfs")]
    NoBash { name: String },
    #[error(
        "the prerequisites script failed on base {base:?} ({outcome}); its output is in {log}"
    )]
    PrerequisitesFailed {
        base: String,
        outcome: String,
        log: PathBuf,
    },
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BaseError {
    let path = path.into();
    move |source| BaseError::Io { path, source }
}

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
                std::io::BufReader::new(std::fs::File::open(path).map_err(io(path))?),
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
            std::fs::create_dir_all(&tree).map_err(io(&tree))?;
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
    };
    let mut named = descriptor;
    let mut notes = annotations(&named);
    notes.insert(KIND_ANNOTATION.into(), "base".into());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(tag, &named)?;
    Ok(named)
}

/// One gzip layer of `tree` with owners kept (a rootfs has non-root files), as an image.
fn layer_image(
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
            mtime: oci::layer::source_date_epoch(),
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
struct Staging(tempfile::TempDir);

impl Staging {
    fn new(wd: &WorkDir) -> Result<Staging, BaseError> {
        let runs = wd.runs();
        std::fs::create_dir_all(&runs).map_err(io(&runs))?;
        let dir = tempfile::Builder::new()
            .prefix("base-")
            .tempdir_in(&runs)
            .map_err(io(&runs))?;
        Ok(Staging(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Bootstrapped trees hold read-only dirs; TempDir's own removal would give up on them.
        let _ = crate::workdir::remove_tree(self.0.path());
    }
}

/// The compilation base's name for a base and a script.
pub fn compilation_base_name(base: &Descriptor, script: &str) -> Result<String, BaseError> {
    let base_hex = sha256_hex(base.digest())?;
    let script_hex = hex::encode(sha2::Sha256::digest(script.as_bytes()));
    Ok(format!(
        "fissile-cbase-{}-{}-v{}",
        &base_hex[..12],
        &script_hex[..12],
        env!("CARGO_PKG_VERSION")
    ))
}

/// Whether a stored image is a compilation base (used as is) rather than a base.
pub fn is_compilation_base(descriptor: &Descriptor) -> bool {
    annotations(descriptor)
        .get(KIND_ANNOTATION)
        .map(String::as_str)
        == Some("compilation-base")
}

/// Settings of a compilation-base build.
pub struct CompilationBaseRequest<'a> {
    pub base_name: &'a str,
    pub base: &'a Descriptor,
    pub script: &'a str,
    pub network: Network,
    pub timeout: Option<std::time::Duration>,
}

/// Returns the compilation base for `request`, building it if the store does not have it.
pub fn ensure_compilation_base(
    wd: &WorkDir,
    store: &OciStore,
    sandbox: &dyn Sandbox,
    request: &CompilationBaseRequest<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<(String, Descriptor), BaseError> {
    let name = compilation_base_name(request.base, request.script)?;
    if let Some(existing) = store.resolve(&name)? {
        return Ok((name, existing));
    }
    progress(&format!("unpacking base {}", request.base_name));
    let rootfs = unpack::unpack_image(store, request.base, &wd.rootfs())?;
    if !exists_in_rootfs(&rootfs, "bin/bash") && !exists_in_rootfs(&rootfs, "usr/bin/bash") {
        return Err(BaseError::NoBash {
            name: request.base_name.to_string(),
        });
    }
    let staging = Staging::new(wd)?;
    let scratch = staging.path().join("sandbox");
    let log = wd.logs().join(format!("{name}.log"));
    std::fs::create_dir_all(wd.logs()).map_err(io(wd.logs()))?;
    let _ = std::fs::remove_file(&log);
    let mut spec = SandboxSpec::new(
        RootfsSpec::Overlay {
            lower: vec![rootfs.clone()],
            scratch: scratch.clone(),
        },
        vec!["/bin/bash".into(), "-c".into(), request.script.to_string()],
    );
    spec.network = request.network;
    spec.timeout = request.timeout;
    spec.stdout = crate::sandbox::Output::File(log.clone());
    spec.stderr = crate::sandbox::Output::File(log.clone());
    spec.stdin = crate::sandbox::Input::Null;
    progress("running the prerequisites script in a sandbox");
    let outcome: Outcome = sandbox.run(&spec)?;
    if !outcome.success() {
        return Err(BaseError::PrerequisitesFailed {
            base: request.base_name.to_string(),
            outcome: outcome.status.to_string(),
            log,
        });
    }
    progress("committing the prerequisites layer");
    let upper = crate::sandbox::rootfs::upper_dir(&scratch);
    let layer = oci::write_layer(
        store,
        &upper,
        &LayerOptions {
            compression: Compression::Gzip,
            keep_owners: true,
            overlay_upper: true,
            mtime: oci::layer::source_date_epoch(),
            ..LayerOptions::default()
        },
    )?;
    let base_manifest = image::read_manifest(store, request.base)?;
    let base_config = image::read_config(store, &base_manifest)?;
    let base_layers: Vec<(Descriptor, String)> = base_manifest
        .layers()
        .iter()
        .cloned()
        .zip(base_config.rootfs().diff_ids().iter().cloned())
        .collect();
    let mut notes = BTreeMap::new();
    notes.insert(KIND_ANNOTATION.to_string(), "compilation-base".to_string());
    notes.insert(
        BASE_DIGEST_ANNOTATION.to_string(),
        request.base.digest().to_string(),
    );
    notes.insert(
        SCRIPT_ANNOTATION.to_string(),
        hex::encode(sha2::Sha256::digest(request.script.as_bytes())),
    );
    notes.insert(
        VERSION_ANNOTATION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    let manifest = oci::write_image(
        store,
        &ImageSpec {
            base: base_layers,
            layers: vec![layer],
            annotations: notes.clone(),
            ..ImageSpec::default()
        },
    )?;
    let mut named = manifest;
    notes.insert(CREATED_ANNOTATION.to_string(), now_rfc3339());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(&name, &named)?;
    Ok((name, named))
}

/// Whether `rel` exists inside `root`, following symlinks as if `root` were `/` (an absolute
/// link such as `/bin -> /usr/bin` must not be resolved against the host).
pub fn exists_in_rootfs(root: &Path, rel: &str) -> bool {
    let mut current = PathBuf::new();
    let mut pending: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let candidate = current.join(&component);
        let Ok(meta) = std::fs::symlink_metadata(root.join(&candidate)) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let Ok(target) = std::fs::read_link(root.join(&candidate)) else {
                return false;
            };
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                current = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else {
            current = candidate;
        }
    }
    true
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs, 'T') + "Z"
}

/// `YYYY-MM-DD<sep>HH:MM:SS` in UTC for a Unix time.
pub fn format_utc(secs: u64, separator: char) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one timestamp.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Bases and compilation bases in the store, with their kind.
pub fn list(store: &OciStore) -> Result<Vec<(String, String, Descriptor)>, BaseError> {
    let mut out = Vec::new();
    for entry in store.refs()? {
        let notes = annotations(&entry.descriptor);
        if let Some(kind) = notes
            .get(KIND_ANNOTATION)
            .filter(|k| k.as_str() == "base" || k.as_str() == "compilation-base")
        {
            out.push((entry.name, kind.clone(), entry.descriptor));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_lookup_follows_links_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/bash"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/bin", r.join("bin")).unwrap();
        assert!(exists_in_rootfs(r, "bin/bash"));
        assert!(!exists_in_rootfs(r, "bin/zsh"));
        std::os::unix::fs::symlink("/etc/passwd", r.join("escape")).unwrap();
        assert!(
            !exists_in_rootfs(r, "escape"),
            "absolute links resolve inside the root, not on the host"
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
        assert_eq!(format_utc(1_700_000_000, ' '), "2023-11-14 22:13:20");
    }
}
