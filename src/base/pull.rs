//! Bases from a registry (`docker://HOST/REPO[:TAG|@DIGEST]`), e.g. an internal mirror on an
//! air-gapped network: pulled into the store as they are (the same manifest digest as on the
//! registry), every blob verified, and named only once complete.

use oci_spec::image::Descriptor;

use super::{BaseError, KIND_ANNOTATION};
use crate::image::ORIGIN_ANNOTATION;
use crate::oci::store::{annotations, OciStore};
use crate::registry::{pull_image, Client, Reference, Reporter};

/// Pulls `reference` (for this host's platform) and names it `tag`; returns its manifest.
pub fn pull_base(
    store: &OciStore,
    client: &Client,
    reference: &Reference,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<Descriptor, BaseError> {
    let pulled = pull_image(client, store, reference, reporter)?;
    // A stemcell image (bosh-agent's, a mirror's) says what it is in its rootfs.
    let mut named = super::stemcell::record_identity(store, pulled.manifest)?;
    let mut notes = annotations(&named);
    notes.insert(KIND_ANNOTATION.to_string(), "base".to_string());
    notes.insert(ORIGIN_ANNOTATION.to_string(), pulled.reference.to_string());
    named.set_annotations(Some(notes.into_iter().collect()));
    store.set_ref(tag, &named)?;
    Ok(named)
}
