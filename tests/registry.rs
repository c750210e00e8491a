//! The registry client against a real registry (distribution 2.8, started per test on
//! 127.0.0.1): pushes that send only what is missing, chunked and resumed uploads, mounts,
//! pulls verified byte for byte, TLS with a CA of our own, htpasswd credentials, and the
//! failures a user meets (wrong password, unknown CA, a registry that dies or corrupts data).

#![allow(clippy::disallowed_methods)]

mod common_registry;
mod common_skip;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common_registry::{Damage, Options, Proxy, Registry, PASSWORD, USER};
use fissile_oci::oci::{self, Compression, ImageSpec, LayerOptions, OciStore};
use fissile_oci::registry::credentials::AuthFiles;
use fissile_oci::registry::{
    pull_image, push_image, BlobKind, BlobOutcome, Client, ClientOptions, NoReporter, Reference,
    RegistryError, Reporter,
};
use oci_spec::image::Descriptor;

/// A store with one image of `layers` layers of `size` pseudo-random bytes each.
fn image(dir: &Path, layers: usize, size: usize) -> (OciStore, Descriptor) {
    let store = OciStore::open_or_create(&dir.join("store")).unwrap();
    let mut written = Vec::new();
    for i in 0..layers {
        let tree = dir.join(format!("tree{i}"));
        std::fs::create_dir_all(&tree).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
        let data: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(tree.join(format!("data{i}")), data).unwrap();
        written.push(
            oci::write_layer(
                &store,
                &tree,
                &LayerOptions {
                    compression: Compression::Gzip,
                    gzip_level: 1,
                    ..LayerOptions::default()
                },
            )
            .unwrap(),
        );
    }
    let manifest = oci::write_image(
        &store,
        &ImageSpec {
            layers: written,
            ..ImageSpec::default()
        },
    )
    .unwrap();
    (store, manifest)
}

fn plain_client() -> Client {
    Client::new(ClientOptions {
        tls_verify: false,
        backoff: Duration::from_millis(100),
        ..ClientOptions::default()
    })
    .unwrap()
    .with_auth_files(AuthFiles::from_paths(&[]))
}

fn reference(host: &str, repo: &str) -> Reference {
    Reference::parse(&format!("{host}/{repo}")).unwrap()
}

fn blob_files(store: &OciStore) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(store.blobs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Records what each blob went through.
#[derive(Default)]
struct Recorder {
    outcomes: Mutex<Vec<(String, BlobOutcome)>>,
}

impl Reporter for Recorder {
    fn finish(&self, digest: &str, outcome: &BlobOutcome) {
        self.outcomes
            .lock()
            .unwrap()
            .push((digest.to_string(), outcome.clone()));
    }
}

fn skopeo_inspect(registry: &Registry, reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(registry.skopeo_flags())
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_push_sends_only_what_is_missing_and_a_pull_brings_the_same_image_back() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 3, 3 << 20);
    let client = plain_client();
    let destination = reference(&registry.host(), "team/app:1.0");

    let report = push_image(&client, &store, &manifest, &destination, &NoReporter).unwrap();
    assert_eq!(report.digest, manifest.digest().to_string());
    assert_eq!((report.uploaded, report.existed), (4, 0));
    let uploads = registry.blob_uploads();
    assert!(uploads >= 4, "{:?}", registry.requests());
    let inspected = skopeo_inspect(&registry, &format!("{}/team/app:1.0", registry.host()));
    assert_eq!(inspected["Digest"], manifest.digest().to_string());
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 3);

    // Again: every blob is there already; only the manifest is written.
    let recorder = Recorder::default();
    let again = push_image(&client, &store, &manifest, &destination, &recorder).unwrap();
    assert_eq!((again.uploaded, again.existed), (0, 4));
    assert_eq!(registry.blob_uploads(), uploads, "the second push uploaded");
    assert!(recorder
        .outcomes
        .lock()
        .unwrap()
        .iter()
        .all(|(_, o)| *o == BlobOutcome::Existed));

    // Resolved without a download: the pushed digest, or nothing for a tag that is not there.
    let resolved = client
        .resolve(&destination.repository, "1.0")
        .unwrap()
        .unwrap();
    assert_eq!(resolved.digest(), manifest.digest());
    assert_eq!(resolved.size(), manifest.size());
    assert!(client
        .resolve(&destination.repository, "nope")
        .unwrap()
        .is_none());

    // Back into an empty store, by tag, then by digest.
    let other = OciStore::open_or_create(&dir.path().join("other")).unwrap();
    let pulled = pull_image(&client, &other, &destination, &NoReporter).unwrap();
    assert_eq!(pulled.manifest.digest(), manifest.digest());
    assert_eq!(
        pulled.reference.digest.as_deref(),
        Some(manifest.digest().as_ref())
    );
    assert!(fissile_oci::oci::gc::verify(&other)
        .unwrap()
        .problems
        .is_empty());
    assert_eq!(blob_files(&other).len(), blob_files(&store).len());
    let by_digest = Reference::parse(&format!(
        "{}/team/app@{}",
        registry.host(),
        manifest.digest()
    ))
    .unwrap();
    let recorder = Recorder::default();
    pull_image(&client, &other, &by_digest, &recorder).unwrap();
    assert!(recorder
        .outcomes
        .lock()
        .unwrap()
        .iter()
        .all(|(_, o)| *o == BlobOutcome::Stored));
}

/// Pushes a 6 MiB layer in 2 MiB chunks through a proxy that damages the traffic; returns the
/// registry's requests, after checking that what it holds is the very image.
fn push_through(damage: Damage) -> Vec<(String, String, u16)> {
    let registry = Registry::start(Options::default());
    let proxy = Proxy::start(registry.port, damage);
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 6 << 20);
    let client = Client::new(ClientOptions {
        tls_verify: false,
        chunk_size: 2 << 20,
        backoff: Duration::from_millis(100),
        ..ClientOptions::default()
    })
    .unwrap()
    .with_auth_files(AuthFiles::from_paths(&[]));
    let destination = reference(&proxy.host(), "chunked/app:1");
    let report = push_image(&client, &store, &manifest, &destination, &NoReporter)
        .unwrap_or_else(|e| panic!("{e}: {:#?}", registry.requests()));
    assert_eq!(report.uploaded, 2);
    assert_eq!(
        proxy.damaged.load(Ordering::SeqCst),
        1,
        "the damage was done"
    );
    let other = OciStore::open_or_create(&dir.path().join("other")).unwrap();
    let direct = reference(&registry.host(), "chunked/app:1");
    let pulled = pull_image(&plain_client(), &other, &direct, &NoReporter).unwrap();
    assert_eq!(pulled.manifest.digest(), manifest.digest());
    registry.requests()
}

fn patches(requests: &[(String, String, u16)]) -> usize {
    requests.iter().filter(|(m, _, _)| m == "PATCH").count()
}

#[test]
fn an_upload_resumes_where_the_registry_says_it_stopped() {
    if !common_registry::available() {
        return;
    }
    // A chunk is refused with 503 before the registry sees it: asked, the registry says how
    // much it has, and the upload goes on from there without sending anything twice.
    let requests = push_through(Damage::RefuseSecondChunk);
    assert!(
        requests
            .iter()
            .any(|(m, uri, s)| m == "GET" && uri.contains("/blobs/uploads/") && *s == 204),
        "the upload's status was asked: {requests:?}"
    );
    // The layer (6 MiB and a little: four chunks); the config, small, goes up in one body.
    assert_eq!(patches(&requests), 4, "{requests:?}");
}

#[test]
fn an_upload_the_registry_lost_starts_again() {
    if !common_registry::available() {
        return;
    }
    // Cut in the middle of a chunk: distribution drops the whole upload (its upload state is
    // bound to the offset it last confirmed, so asking for the status gets 404), and the blob
    // is sent again in a new upload.
    let requests = push_through(Damage::CutUploadOnceAfter(1_500_000));
    assert!(
        requests
            .iter()
            .any(|(m, uri, s)| m == "GET" && uri.contains("/blobs/uploads/") && *s == 404),
        "{requests:?}"
    );
    // More than the layer's four chunks (the small config goes up in one body).
    assert!(patches(&requests) > 4, "{requests:?}");
}

#[test]
fn a_blob_known_in_another_repository_is_mounted_not_uploaded() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 2, 1 << 20);
    let client = Client::new(ClientOptions {
        tls_verify: false,
        blob_locations: Some(dir.path().join("blob-locations.json")),
        ..ClientOptions::default()
    })
    .unwrap()
    .with_auth_files(AuthFiles::from_paths(&[]));
    push_image(
        &client,
        &store,
        &manifest,
        &reference(&registry.host(), "first/app:1"),
        &NoReporter,
    )
    .unwrap();
    let uploads = registry.blob_uploads();
    // A new client reads what the first one learned.
    let client = Client::new(ClientOptions {
        tls_verify: false,
        blob_locations: Some(dir.path().join("blob-locations.json")),
        ..ClientOptions::default()
    })
    .unwrap()
    .with_auth_files(AuthFiles::from_paths(&[]));
    let report = push_image(
        &client,
        &store,
        &manifest,
        &reference(&registry.host(), "second/app:1"),
        &NoReporter,
    )
    .unwrap();
    assert_eq!((report.mounted, report.uploaded), (3, 0));
    assert_eq!(registry.blob_uploads(), uploads);
    let mounts = registry
        .requests()
        .iter()
        .filter(|(m, uri, s)| m == "POST" && uri.contains("mount=") && *s == 201)
        .count();
    assert_eq!(mounts, 3);
}

#[test]
fn tls_and_htpasswd_credentials_as_podman_keeps_them() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options {
        tls: true,
        htpasswd: true,
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 1 << 20);
    let destination = reference(&registry.host(), "secure/app:1");
    let client = |verify: bool, cert_dir: Option<PathBuf>, auth: Option<PathBuf>| {
        Client::new(ClientOptions {
            tls_verify: verify,
            cert_dir,
            backoff: Duration::from_millis(50),
            ..ClientOptions::default()
        })
        .unwrap()
        .with_auth_files(AuthFiles::from_paths(auth.as_slice()))
    };
    let good = registry.auth_file("good.json", USER, PASSWORD);
    let bad = registry.auth_file("bad.json", USER, "wrong");

    // The CA is trusted through the certificate directory, the password through the file.
    let report = push_image(
        &client(true, registry.cert_dir.clone(), Some(good.clone())),
        &store,
        &manifest,
        &destination,
        &NoReporter,
    )
    .unwrap();
    assert_eq!(report.uploaded, 2);
    assert_eq!(
        skopeo_inspect(&registry, &destination.to_string())["Digest"],
        manifest.digest().to_string()
    );

    // An unknown CA: a TLS error that names the fix, and an environment failure.
    let err = push_image(
        &client(true, None, Some(good.clone())),
        &store,
        &manifest,
        &destination,
        &NoReporter,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(err.is_environment());
    let text = err.to_string();
    assert!(
        text.contains("unknown issuer") && text.contains("--cert-dir"),
        "{text}"
    );

    // Not verifying works too (the registry still speaks TLS).
    client(false, None, Some(good.clone()))
        .get_manifest(&destination.repository, "1")
        .unwrap();

    // A wrong password, and none at all: the user's to fix.
    let err = push_image(
        &client(true, registry.cert_dir.clone(), Some(bad.clone())),
        &store,
        &manifest,
        &destination,
        &NoReporter,
    )
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    assert!(!err.is_environment());
    assert!(err.to_string().contains("bad.json"), "{err}");
    let err = client(true, registry.cert_dir.clone(), None)
        .get_manifest(&destination.repository, "1")
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsMissing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("podman login"), "{err}");
}

#[test]
fn a_corrupted_blob_is_refused_and_leaves_nothing_in_the_store() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 2, 1 << 20);
    let client = plain_client();
    push_image(
        &client,
        &store,
        &manifest,
        &reference(&registry.host(), "corrupt/app:1"),
        &NoReporter,
    )
    .unwrap();
    let proxy = Proxy::start(registry.port, Damage::FlipBlobByte);
    let target = OciStore::open_or_create(&dir.path().join("target")).unwrap();
    let before = blob_files(&target);
    let err = pull_image(
        &client,
        &target,
        &reference(&proxy.host(), "corrupt/app:1"),
        &NoReporter,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.is_environment());
    assert!(proxy.damaged.load(Ordering::SeqCst) >= 1);
    // Only blobs that came through whole may be there; no temp file, no manifest.
    let after = blob_files(&target);
    for file in &after {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with(".tmp-"), "temp file left: {name}");
        target.verify_blob_file(file).unwrap();
    }
    assert!(!after
        .iter()
        .any(|f| f.ends_with(fissile_oci::oci::store::sha256_hex(manifest.digest()).unwrap())));
    assert!(before.is_empty());
}

#[test]
fn a_registry_killed_mid_push_is_an_environment_failure_and_no_tag_appears() {
    if !common_registry::available() {
        return;
    }
    let mut registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 24 << 20);
    let client = Client::new(ClientOptions {
        tls_verify: false,
        retries: 2,
        chunk_size: 4 << 20,
        backoff: Duration::from_millis(100),
        ..ClientOptions::default()
    })
    .unwrap()
    .with_auth_files(AuthFiles::from_paths(&[]));

    /// Kills the registry (by PID) once some of the layer is on its way.
    struct Killer {
        pid: u32,
        done: AtomicBool,
    }
    impl Reporter for Killer {
        fn start(&self, _: &str, _: u64, _: BlobKind) {}
        fn advance(&self, _: &str, done: u64) {
            if done > (6 << 20) && !self.done.swap(true, Ordering::SeqCst) {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
            }
        }
    }
    let killer = Killer {
        pid: registry.pid().unwrap(),
        done: AtomicBool::new(false),
    };
    let destination = reference(&registry.host(), "killed/app:1");
    let err = push_image(&client, &store, &manifest, &destination, &killer).unwrap_err();
    assert!(killer.done.load(Ordering::SeqCst));
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.is_environment());
    assert!(err.to_string().contains("attempts"), "{err}");
    // Back up on the same storage: the tag was never written.
    registry.kill();
    registry.restart();
    let err = plain_client()
        .get_manifest(&destination.repository, "1")
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[test]
fn bearer_tokens_from_a_token_service_for_passwords_and_refresh_tokens() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options {
        token: true,
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 1 << 20);
    let destination = reference(&registry.host(), "bearer/app:1");
    let client = |auth: Option<PathBuf>| {
        Client::new(ClientOptions {
            tls_verify: false,
            backoff: Duration::from_millis(50),
            ..ClientOptions::default()
        })
        .unwrap()
        .with_auth_files(AuthFiles::from_paths(auth.as_slice()))
    };

    // A password, sent to the token service (never to the registry): a token for the scopes.
    let good = registry.auth_file("good.json", USER, PASSWORD);
    let report = push_image(
        &client(Some(good.clone())),
        &store,
        &manifest,
        &destination,
        &NoReporter,
    )
    .unwrap();
    assert_eq!(report.uploaded, 2);
    let asked = registry
        .tokens
        .as_ref()
        .unwrap()
        .asked
        .lock()
        .unwrap()
        .clone();
    assert!(
        asked.contains(&"repository:bearer/app:pull,push".to_string()),
        "{asked:?}"
    );
    assert_eq!(
        skopeo_inspect(&registry, &destination.to_string())["Digest"],
        manifest.digest().to_string()
    );

    // A refresh token (docker's identitytoken), exchanged with a POST.
    let refresh = dir.path().join("refresh.json");
    std::fs::write(
        &refresh,
        serde_json::json!({"auths": {registry.host(): {"identitytoken": common_registry::REFRESH_TOKEN}}})
            .to_string(),
    )
    .unwrap();
    let other = OciStore::open_or_create(&dir.path().join("other")).unwrap();
    let pulled = pull_image(&client(Some(refresh)), &other, &destination, &NoReporter).unwrap();
    assert_eq!(pulled.manifest.digest(), manifest.digest());

    // A wrong password: the token service says no.
    let bad = registry.auth_file("bad.json", USER, "nope");
    let err = client(Some(bad))
        .get_manifest(&destination.repository, "1")
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );

    // Nothing: an anonymous token that grants nothing, and a message that says to log in.
    let err = client(None)
        .get_manifest(&destination.repository, "1")
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsMissing { .. }),
        "{err}"
    );
}

#[test]
fn docker_schema2_images_and_multi_platform_indexes_are_pulled_for_this_host() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 1 << 20);
    store.set_ref("img", &manifest).unwrap();
    let client = plain_client();

    // skopeo converts it to docker's schema 2 on the way: pulled as it is, same digest.
    let docker = format!("{}/docker/app:1", registry.host());
    let out = Command::new("skopeo")
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:img", store.root().display()))
        .arg(format!("docker://{docker}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = skopeo_inspect(&registry, &docker)["Digest"].clone();
    let target = OciStore::open_or_create(&dir.path().join("docker")).unwrap();
    let pulled = pull_image(
        &client,
        &target,
        &Reference::parse(&docker).unwrap(),
        &NoReporter,
    )
    .unwrap();
    assert_eq!(
        pulled.manifest.digest().to_string(),
        digest.as_str().unwrap()
    );
    assert_eq!(
        pulled.manifest.media_type().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(fissile_oci::oci::gc::verify(&target)
        .unwrap()
        .problems
        .is_empty());

    // An index listing another platform first: the entry for this host is the one pulled, and
    // the index itself, pushed as such, comes back as the platform's manifest.
    let host = fissile_oci::oci::image::host_arch();
    let other = if host == oci_spec::image::Arch::Amd64 {
        oci_spec::image::Arch::ARM64
    } else {
        oci_spec::image::Arch::Amd64
    };
    let entry = |arch: oci_spec::image::Arch| {
        let mut d = manifest.clone();
        d.set_annotations(None);
        d.set_platform(Some(
            oci_spec::image::PlatformBuilder::default()
                .architecture(arch)
                .os(oci_spec::image::Os::Linux)
                .build()
                .unwrap(),
        ));
        d
    };
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageIndex)
        .manifests(vec![entry(other), entry(host)])
        .build()
        .unwrap();
    let index_descriptor = store
        .put_json(oci_spec::image::MediaType::ImageIndex, &index)
        .unwrap();
    let multi = reference(&registry.host(), "multi/app:1");
    let report = push_image(&client, &store, &index_descriptor, &multi, &NoReporter).unwrap();
    assert_eq!(report.digest, index_descriptor.digest().to_string());
    let target = OciStore::open_or_create(&dir.path().join("multi")).unwrap();
    let pulled = pull_image(&client, &target, &multi, &NoReporter).unwrap();
    assert_eq!(pulled.manifest.digest(), manifest.digest());
}

/// Pushes an image whose blobs were just made, as the shared cache pushes a package: each blob
/// sent at once with `Client::push_blob` (no `HEAD` first), then the manifest. Returns how many
/// blobs went up.
fn push_new(
    client: &Client,
    store: &OciStore,
    manifest: &Descriptor,
    destination: &Reference,
) -> usize {
    let parsed = oci::image::read_manifest(store, manifest).unwrap();
    let blobs: Vec<&Descriptor> = std::iter::once(parsed.config())
        .chain(parsed.layers())
        .collect();
    for blob in &blobs {
        let path = store.blob_path(blob.digest()).unwrap();
        client
            .push_blob(
                &destination.repository,
                blob.digest().as_ref(),
                blob.size(),
                &path,
                None,
                &mut |_| {},
            )
            .unwrap();
    }
    let bytes = std::fs::read(store.blob_path(manifest.digest()).unwrap()).unwrap();
    client
        .put_manifest(
            &destination.repository,
            destination.tag.as_deref().unwrap(),
            manifest.media_type().as_ref(),
            &bytes,
        )
        .unwrap();
    blobs.len()
}

#[test]
fn small_new_blobs_go_up_in_one_body_and_a_registry_that_answers_202_gets_a_put() {
    if !common_registry::available() {
        return;
    }
    // distribution 2.x does not commit a blob sent with its POST (the OCI spec makes that
    // optional): it answers 202 with an upload, which one PUT with the body commits. No HEAD
    // first (the blobs were just made), no PATCH; the client then stops sending the body with
    // its POSTs.
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(&dir.path().join("a"), 1, 200_000);
    let client = plain_client();
    let destination = reference(&registry.host(), "mono/app:1");
    assert_eq!(push_new(&client, &store, &manifest, &destination), 2);
    let requests = registry.requests();
    let blob_requests = |requests: &[(String, String, u16)]| {
        requests
            .iter()
            .filter(|(_, uri, _)| uri.contains("/blobs/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let first = blob_requests(&requests);
    assert!(
        first.iter().all(|(m, _, _)| m == "POST" || m == "PUT"),
        "only POST and PUT: {first:?}"
    );
    assert!(
        first
            .iter()
            .any(|(m, uri, s)| m == "POST" && uri.contains("digest=") && *s == 202),
        "{first:?}"
    );
    let puts: Vec<_> = first.iter().filter(|(m, _, _)| m == "PUT").collect();
    assert_eq!(puts.len(), 2, "{first:?}");
    assert!(puts
        .iter()
        .all(|(_, uri, s)| uri.contains("digest=") && *s == 201));

    // New blobs: the POSTs are empty now (no `digest=`).
    let (other_store, other) = image(&dir.path().join("b"), 1, 300_000);
    push_new(
        &client,
        &other_store,
        &other,
        &reference(&registry.host(), "mono/app:2"),
    );
    let second = blob_requests(&registry.requests()[requests.len()..]);
    assert!(
        second
            .iter()
            .any(|(m, uri, s)| m == "POST" && !uri.contains("digest=") && *s == 202),
        "{second:?}"
    );
    assert!(
        !second
            .iter()
            .any(|(m, uri, _)| m == "POST" && uri.contains("digest=")),
        "{second:?}"
    );
    assert!(!second.iter().any(|(m, _, _)| m == "PATCH" || m == "HEAD"));

    // Both images come back whole, every digest checked by the pull.
    for (tag, digest) in [("1", manifest.digest()), ("2", other.digest())] {
        let fresh = OciStore::open_or_create(&dir.path().join(format!("pull{tag}"))).unwrap();
        let pulled = pull_image(
            &plain_client(),
            &fresh,
            &reference(&registry.host(), &format!("mono/app:{tag}")),
            &NoReporter,
        )
        .unwrap();
        assert_eq!(pulled.manifest.digest(), digest);
    }
}

#[test]
fn tags_are_listed_in_one_request_while_there_are_few() {
    if !common_registry::available() {
        return;
    }
    let registry = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = image(dir.path(), 1, 1024);
    let client = plain_client();
    let repository = reference(&registry.host(), "team/listed").repository;
    // Nobody pushed there yet: no tags, not an error.
    assert_eq!(client.list_tags(&repository, 10).unwrap(), Some(Vec::new()));
    for tag in ["a", "b", "c"] {
        let destination = reference(&registry.host(), &format!("team/listed:{tag}"));
        push_image(&client, &store, &manifest, &destination, &NoReporter).unwrap();
    }
    let mut tags = client.list_tags(&repository, 10).unwrap().unwrap();
    tags.sort();
    assert_eq!(tags, ["a", "b", "c"]);
    // More tags than the caller wants to read at a time: no listing, whether the registry
    // pages the list (a Link header) or ignores `n` and sends them all.
    assert_eq!(client.list_tags(&repository, 2).unwrap(), None);
}
