//! What kind of failure an error is, so a CI system can tell a broken runner from a broken
//! release by the exit code alone: bad input (a release, a manifest, a flag: fix the input) or
//! the host and its environment (no space, a tool missing, a sandbox that cannot start: fix the
//! runner). Every library error type is classified here, variant by variant, in one place.

use std::error::Error;
use std::io::ErrorKind;

use crate::base::BaseError;
use crate::cache::CollectError;
use crate::compile::scheduler::GraphError;
use crate::compile::shell::ShellError;
use crate::compile::StageError;
use crate::compile::{CompileError, ImportError};
use crate::export::ExportError;
use crate::extract::ExtractError;
use crate::image::ImageError;
use crate::oci::OciError;
use crate::plan::role_manifest::RoleManifestError;
use crate::plan::{LoadPlanError, PlanError};
use crate::registry::RegistryError;
use crate::release::digest::DigestError;
use crate::release::ReleaseError;
use crate::sandbox::SandboxError;
use crate::workdir::WorkDirError;

/// The kinds of failure the exit code tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad usage or bad input: the message names the file and the problem (exit 2).
    Input,
    /// The host or the environment failed: no space, a missing tool, a sandbox that cannot
    /// start, an unwritable work dir, an unreachable registry (exit 125).
    Environment,
    /// A package failed to compile (exit 1).
    PackageFailed,
    /// The run was interrupted (exit 130).
    Interrupted,
}

impl ErrorClass {
    /// The exit code of the contract.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::PackageFailed => 1,
            ErrorClass::Input => 2,
            ErrorClass::Environment => 125,
            ErrorClass::Interrupted => 130,
        }
    }
}

/// The class of an error chain: the outermost error that says decides (a wrapper knows more
/// than its cause: an unreadable *release* is bad input even though an i/o error is under it);
/// a wrapper that only forwards (`#[error(transparent)]`, whose `source()` skips the error it
/// wraps) asks the error it wraps. An error nothing here knows is bad input, unless an i/o
/// error under it says otherwise.
pub fn classify(error: &(dyn Error + 'static)) -> ErrorClass {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(class) = class_of(e) {
            return class;
        }
        current = e.source();
    }
    ErrorClass::Input
}

fn class_of(e: &(dyn Error + 'static)) -> Option<ErrorClass> {
    use ErrorClass::*;
    // A boxed source is the box itself to `downcast_ref`: look inside.
    if let Some(boxed) = e.downcast_ref::<Box<BaseError>>() {
        return Some(classify(boxed.as_ref()));
    }
    if let Some(e) = e.downcast_ref::<SandboxError>() {
        return Some(match e {
            SandboxError::Interrupted { .. } => Interrupted,
            _ => Environment,
        });
    }
    if let Some(e) = e.downcast_ref::<WorkDirError>() {
        return Some(match e {
            WorkDirError::Io { .. } => Environment,
            // `--no-wait` documents exit 2 for a busy work dir.
            WorkDirError::Busy { .. } | WorkDirError::NoDefault => Input,
        });
    }
    if let Some(e) = e.downcast_ref::<BaseError>() {
        return match e {
            BaseError::Oci(inner) => Some(classify(inner)),
            BaseError::Extract(inner) => Some(classify(inner)),
            BaseError::Registry(inner) => Some(classify(inner)),
            BaseError::Interrupted { .. } => Some(Interrupted),
            BaseError::Normalize(_) => Some(Environment),
            BaseError::DefaultBase { source, .. } => Some(classify(source.as_ref())),
            BaseError::Build(_) | BaseError::Sandbox(_) | BaseError::Io { .. } => Some(Environment),
            BaseError::NoBash { .. }
            | BaseError::PrerequisitesFailed { .. }
            | BaseError::UnknownBase { .. }
            | BaseError::Invalid { .. }
            | BaseError::NoStore { .. } => Some(Input),
        };
    }
    if e.is::<rootfs_builder::BuildError>()
        || e.is::<CollectError>()
        || e.is::<crate::rootless::check::NotReady>()
        || e.is::<crate::rootless::TreeError>()
    {
        return Some(Environment);
    }
    if let Some(e) = e.downcast_ref::<OciError>() {
        return match e {
            OciError::Io { .. } => Some(Environment),
            OciError::Extract(inner) => Some(classify(inner)),
            OciError::TreeHelper(_) => Some(Environment),
            OciError::Invalid { .. }
            | OciError::DigestMismatch { .. }
            | OciError::UnsupportedDigest { .. }
            | OciError::UnknownRef { .. } => Some(Input),
        };
    }
    if let Some(e) = e.downcast_ref::<ExtractError>() {
        return Some(match e {
            // Writing the extracted tree failed: the disk, not the archive.
            ExtractError::Write { .. } => Environment,
            _ => Input,
        });
    }
    if let Some(e) = e.downcast_ref::<CompileError>() {
        return match e {
            CompileError::Io { .. } => Some(Environment),
            CompileError::Graph(_) | CompileError::Import { .. } | CompileError::NoBase { .. } => {
                Some(Input)
            }
            CompileError::Oci(inner) => Some(classify(inner)),
            CompileError::Stage(inner) => Some(classify(inner)),
        };
    }
    if let Some(e) = e.downcast_ref::<RegistryError>() {
        return Some(match e {
            RegistryError::Interrupted => Interrupted,
            e if e.is_environment() => Environment,
            _ => Input,
        });
    }
    if let Some(e) = e.downcast_ref::<ImageError>() {
        return Some(match e {
            ImageError::Oci(inner) => classify(inner),
            ImageError::Extract(inner) => classify(inner),
            ImageError::Release(inner) => classify(inner),
            ImageError::Registry(inner) => classify(inner),
            ImageError::Interrupted => Interrupted,
            ImageError::Io { .. } => Environment,
            ImageError::MissingPackage { .. }
            | ImageError::PackageConflict { .. }
            | ImageError::JobConflict { .. }
            | ImageError::UnknownBase { .. }
            | ImageError::Invalid { .. } => Input,
        });
    }
    if let Some(e) = e.downcast_ref::<ExportError>() {
        return match e {
            ExportError::Io { .. } => Some(Environment),
            ExportError::Store(inner) => Some(classify(inner)),
            ExportError::Digest(inner) => Some(classify(inner)),
            ExportError::Stage(inner) => Some(classify(inner)),
            ExportError::Layer { .. }
            | ExportError::NotCompiled { .. }
            | ExportError::NoStemcell { .. }
            | ExportError::NoJobArchive { .. }
            | ExportError::Version(_)
            | ExportError::Exists { .. } => Some(Input),
        };
    }
    if let Some(e) = e.downcast_ref::<ImportError>() {
        return match e {
            ImportError::Publish { .. } => Some(Environment),
            ImportError::Extract(inner) => Some(classify(inner)),
            ImportError::Stage(inner) => Some(classify(inner)),
            ImportError::Store(inner) => Some(classify(inner)),
            ImportError::Missing(_) => Some(Input),
        };
    }
    if let Some(e) = e.downcast_ref::<StageError>() {
        return match e {
            StageError::Io { .. } => Some(Environment),
            StageError::Unavailable { .. } => Some(Input),
            StageError::Extract(inner) => Some(classify(inner)),
        };
    }
    if let Some(e) = e.downcast_ref::<ShellError>() {
        return match e {
            ShellError::Dependency { .. } => Some(PackageFailed),
            ShellError::Compiled { .. } => Some(Input),
            ShellError::Io { .. } => Some(Environment),
            ShellError::Compile(inner) => Some(classify(inner)),
            ShellError::Stage(inner) => Some(classify(inner)),
        };
    }
    if e.is::<LoadPlanError>()
        || e.is::<ReleaseError>()
        || e.is::<PlanError>()
        || e.is::<RoleManifestError>()
        || e.is::<DigestError>()
        || e.is::<GraphError>()
        || e.is::<serde_json::Error>()
    {
        return Some(Input);
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return Some(match e.kind() {
            ErrorKind::NotFound
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidData
            | ErrorKind::UnexpectedEof
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory => Input,
            _ => Environment,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn io(kind: ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "x")
    }

    #[test]
    fn the_outermost_error_that_knows_decides() {
        // An unwritable work dir is the runner's problem.
        let wd = WorkDirError::Io {
            path: PathBuf::from("/w"),
            source: io(ErrorKind::PermissionDenied),
        };
        assert_eq!(classify(&wd), ErrorClass::Environment);
        // A release that cannot be read is the input's, whatever the i/o error under it.
        let release = LoadPlanError::Release {
            path: PathBuf::from("r.tgz"),
            source: ReleaseError::Io {
                path: PathBuf::from("r.tgz"),
                source: io(ErrorKind::PermissionDenied),
            },
        };
        assert_eq!(classify(&release), ErrorClass::Input);
        // A missing mmdebstrap under a base build is the host's.
        let build = BaseError::DefaultBase {
            suite: "bookworm".into(),
            tag: "debian-bookworm".into(),
            source: Box::new(BaseError::Build(rootfs_builder::BuildError::MissingTool {
                tool: "mmdebstrap".into(),
                hint: "install it".into(),
            })),
        };
        assert_eq!(classify(&build), ErrorClass::Environment);
        assert_eq!(
            classify(&io(ErrorKind::StorageFull)),
            ErrorClass::Environment
        );
        assert_eq!(classify(&io(ErrorKind::NotFound)), ErrorClass::Input);
        let stopped = SandboxError::Interrupted {
            container_id: "c".into(),
            signal: 15,
        };
        assert_eq!(classify(&stopped), ErrorClass::Interrupted);
        assert_eq!(ErrorClass::Environment.exit_code(), 125);
    }
}
