//! Compilation bases: a base plus one layer, what the prerequisites script changed, run in a
//! sandbox on the base and committed from the overlay's upper dir.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;
use sha2::Digest as _;

use super::build::Staging;
use super::{
    exists_in_rootfs, io, BaseError, BASE_DIGEST_ANNOTATION, CREATED_ANNOTATION, KIND_ANNOTATION,
    SCRIPT_ANNOTATION, VERSION_ANNOTATION,
};
use crate::cancel::CancelToken;
use crate::oci::store::{annotations, sha256_hex, OciStore};
use crate::oci::{self, image, unpack, Compression, ImageSpec, LayerOptions, Owners};
use crate::rootless::{self, Reach};
use crate::sandbox::{HostContext, Network, Outcome, RootfsSpec, Sandbox, SandboxSpec};
use crate::workdir::WorkDir;

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
    /// Stops the prerequisites script's sandbox.
    pub cancel: &'a CancelToken,
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
    let log = wd.compilation_base_log(&name);
    fs_err::create_dir_all(wd.logs()).map_err(io(wd.logs()))?;
    let _ = fs_err::remove_file(&log);
    let mut spec = SandboxSpec::new(
        RootfsSpec::Overlay {
            lower: vec![rootfs.clone()],
            scratch: scratch.clone(),
        },
        vec!["/bin/bash".into(), "-c".into(), request.script.to_string()],
    );
    spec.network = request.network;
    spec.timeout = request.timeout;
    let capped = crate::sandbox::Output::CappedFile {
        path: log.clone(),
        head: crate::sandbox::LOG_KEEP_BYTES,
        tail: crate::sandbox::LOG_KEEP_BYTES,
    };
    spec.stdout = capped.clone();
    spec.stderr = capped;
    spec.stdin = crate::sandbox::Input::Null;
    progress("running the prerequisites script in a sandbox");
    let outcome: Outcome = sandbox.run(&spec, request.cancel)?;
    if !outcome.success() {
        return Err(BaseError::PrerequisitesFailed {
            base: request.base_name.to_string(),
            outcome: outcome.status.to_string(),
            log,
        });
    }
    progress("committing the prerequisites layer");
    let upper = crate::sandbox::rootfs::upper_dir(&scratch);
    // What the script wrote, its owners as the sandbox saw them; rootless, read where the
    // sandbox's subordinate ids are mapped (apt, for one, leaves files only they may read).
    let layer = rootless::write_layer(
        store,
        &upper,
        &LayerOptions {
            compression: Compression::Gzip,
            owners: Owners::as_written_by(rootless::sandbox_maps(&HostContext::detect())),
            overlay_upper: true,
            mtime: crate::clock::source_date_epoch(),
            ..LayerOptions::default()
        },
        Reach::Helper,
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
    // The compilation base is the stemcell its base is: export writes it into releases.
    if let Some(stemcell) = super::stemcell_of(request.base) {
        notes.extend(super::stemcell::stemcell_annotations(&stemcell));
    }
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
    notes.insert(CREATED_ANNOTATION.to_string(), crate::clock::now_rfc3339());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(&name, &named)?;
    Ok((name, named))
}
