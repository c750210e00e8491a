//! Which compilation base a compile runs on: `--base` names a compilation base (used as is) or
//! a base (its compilation base is made on first use); without it, the default Debian base is
//! built from the host's apt mirror on first use.

use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::{
    build_base, ensure_compilation_base, exists_in_rootfs, is_compilation_base, list, BaseError,
    BaseSource, CompilationBaseRequest,
};
use crate::cancel::CancelToken;
use crate::oci::{unpack, OciStore};
use crate::sandbox::{Network, Sandbox};
use crate::workdir::WorkDir;

/// The compilation base, unpacked and ready to be a lower dir.
#[derive(Clone, Debug)]
pub struct CompilationBase {
    pub name: String,
    pub descriptor: Descriptor,
    pub rootfs: PathBuf,
    /// Path of bash inside the base.
    pub bash: String,
}

impl CompilationBase {
    /// The stemcell this base is, when it records one (see [`super::stemcell`]).
    pub fn stemcell(&self) -> Option<crate::release::Stemcell> {
        super::stemcell_of(&self.descriptor)
    }
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct BaseChoice<'a> {
    /// `--base`: a base or compilation base in the store; `None` for the default.
    pub base: Option<&'a str>,
    /// The prerequisites script that makes a compilation base of a base.
    pub script: &'a str,
    /// Network for the prerequisites script.
    pub network: Network,
    /// Stops building the default base or the compilation base.
    pub cancel: &'a CancelToken,
}

/// `debian-<host suite>`, the default base's name.
pub fn default_base_tag() -> String {
    BaseSource::Debian {
        suite: rootfs_builder::debian::host_suite().unwrap_or_else(|| "bookworm".to_string()),
    }
    .default_tag()
}

/// Finds (or builds) the compilation base for `choice` and unpacks it.
pub fn resolve_compilation_base(
    wd: &WorkDir,
    store: &OciStore,
    sandbox: &dyn Sandbox,
    choice: &BaseChoice<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<CompilationBase, BaseError> {
    let base_ref = choice
        .base
        .map(str::to_string)
        .unwrap_or_else(default_base_tag);
    let descriptor = match store.resolve(&base_ref)? {
        Some(d) => d,
        None if choice.base.is_none() => {
            let suite = rootfs_builder::debian::host_suite().unwrap_or_else(|| "bookworm".into());
            progress(&format!(
                "no default base yet: building {base_ref} from the host's apt mirror (once; a few minutes)"
            ));
            let packages: Vec<String> = rootfs_builder::DEFAULT_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect();
            build_base(
                wd,
                store,
                &BaseSource::Debian {
                    suite: suite.clone(),
                },
                &packages,
                &base_ref,
                choice.cancel,
                progress,
            )
            .map_err(|source| BaseError::DefaultBase {
                suite,
                tag: base_ref.clone(),
                source: Box::new(source),
            })?
        }
        None => {
            let known: Vec<String> = list(store)?.into_iter().map(|(n, _, _)| n).collect();
            return Err(BaseError::UnknownBase {
                name: base_ref,
                store: store.root().to_path_buf(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        }
    };
    let (name, descriptor) = if is_compilation_base(&descriptor) {
        (base_ref, descriptor)
    } else {
        ensure_compilation_base(
            wd,
            store,
            sandbox,
            &CompilationBaseRequest {
                base_name: &base_ref,
                base: &descriptor,
                script: choice.script,
                network: choice.network,
                timeout: None,
                cancel: choice.cancel,
            },
            progress,
        )?
    };
    let rootfs = unpack::unpack_image(store, &descriptor, &wd.rootfs())?;
    let bash = ["bin/bash", "usr/bin/bash"]
        .into_iter()
        .find(|path| exists_in_rootfs(&rootfs, path))
        .map(|path| format!("/{path}"))
        .ok_or_else(|| BaseError::NoBash { name: name.clone() })?;
    Ok(CompilationBase {
        name,
        descriptor,
        rootfs,
        bash,
    })
}

/// Unpacks (or reuses) the base or compilation base `reference` of the work dir's store: the same
/// tree compiles use as their lower dir.
pub fn unpack_named(wd: &WorkDir, reference: &str) -> Result<PathBuf, BaseError> {
    let store = OciStore::open(&wd.oci()).map_err(|_| BaseError::NoStore { store: wd.oci() })?;
    let descriptor = crate::oci::image::resolve(&store, reference)?;
    Ok(unpack::unpack_image(&store, &descriptor, &wd.rootfs())?)
}
