//! Runnable images of compiled releases.
//!
//! - [`build_image`] (`assemble`) writes one image into the store: the [`RuntimeBase`]'s layers
//!   (`runtime_base`), one layer per compiled package (the very blob of its store image), and a
//!   release layer with the `release.MF`s and the jobs (`release_layer`); a full config and the
//!   standard annotations, reproducible from the inputs and `SOURCE_DATE_EPOCH`.
//! - [`Destination`] (`destination`) parses where images go, in skopeo's transport syntax;
//!   `archive` writes them to another OCI layout, an `oci-archive` or a `docker save` archive
//!   ([`write_layout`], [`write_oci_archive`], [`write_docker_archive`]); pushes go through
//!   [`crate::registry::push_image`].

mod archive;
mod assemble;
mod destination;
mod release_layer;
mod runtime_base;

use std::path::PathBuf;

pub use archive::{write_docker_archive, write_layout, write_oci_archive};
pub use assemble::{
    build_image, package_fingerprint_label, release_version_label, ImageRequest, BASE_DIGEST,
    BASE_NAME, CREATED, LABEL_INSTANCE_GROUP, LABEL_JOBS, LABEL_RELEASES, TITLE, VERSION,
};
pub use destination::{default_name, docker_archive_name, Destination};
pub use runtime_base::{RuntimeBase, ORIGIN_ANNOTATION};

/// The kind annotation of an image's ref in the work dir's store.
pub const KIND: &str = "image";

#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Extract(#[from] crate::extract::ExtractError),
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("package {package} has no compiled image {reference} in the store: compile it first")]
    MissingPackage { package: String, reference: String },
    #[error("two packages named {package} ({first} and {second}) would share /var/vcap/packages/{package} in one image: build separate images (--only-releases, or instance groups with -m)")]
    PackageConflict {
        package: String,
        first: String,
        second: String,
    },
    #[error("releases {first} and {second} both have a job {job}, which would share /var/vcap/jobs-src/{job} in one image: build separate images (--only-releases, or instance groups with -m)")]
    JobConflict {
        job: String,
        first: String,
        second: String,
    },
    #[error("no image {name:?} in the store to use as the runtime base; bases: {known}")]
    UnknownBase { name: String, known: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{}: i/o error", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
