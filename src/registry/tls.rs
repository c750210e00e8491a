//! TLS as skopeo and podman set it up: the system's roots (`rustls-native-certs`: the
//! distribution's bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus a certificate directory: `*.crt`
//! files are more CAs to trust, a `NAME.cert` with its `NAME.key` is a client certificate.
//! `--cert-dir DIR` is used for every registry; without it the per-registry directories
//! `/etc/containers/certs.d/HOST[:PORT]`, `/etc/docker/certs.d/HOST[:PORT]` and
//! `${XDG_CONFIG_HOME:-~/.config}/containers/certs.d/HOST[:PORT]` are read when they exist.
//! `--tls-verify=false` accepts any certificate and lets a registry answer in plain http.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::RegistryError;

/// The TLS primitives: *ring*, which builds with a C compiler alone (aws-lc-rs needs more of the
/// host). rustls deprecated it for lacking post-quantum key exchange; registries negotiate the
/// classical groups it has.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The system's trusted roots, read once per process (hundreds of files on some systems).
fn system_roots() -> &'static Vec<Certificate<'static>> {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        // Unreadable entries are skipped, as every TLS client does; a host with no roots at
        // all fails its handshakes with "unknown issuer", which names the fix.
        rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect()
    })
}

/// The certificate directories that apply to `host` (`host[:port]`).
pub fn cert_dirs(explicit: Option<&Path>, host: &str) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_path_buf()];
    }
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let mut dirs = vec![
        PathBuf::from("/etc/containers/certs.d").join(host),
        PathBuf::from("/etc/docker/certs.d").join(host),
    ];
    if let Some(home) = config_home {
        dirs.push(home.join("containers/certs.d").join(host));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// The TLS configuration for one registry.
pub fn config(verify: bool, dirs: &[PathBuf]) -> Result<TlsConfig, RegistryError> {
    let mut roots: Vec<Certificate<'static>> = system_roots().clone();
    let mut client: Option<ClientCert> = None;
    for dir in dirs {
        let (cas, cert) = read_cert_dir(dir)?;
        roots.extend(cas);
        if cert.is_some() {
            client = cert;
        }
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client)
        .disable_verification(!verify)
        .build())
}

fn bad(path: &Path, message: impl Into<String>) -> RegistryError {
    RegistryError::CertDir {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `*.crt` are CAs; `NAME.cert` + `NAME.key` is a client certificate (the last pair wins).
fn read_cert_dir(
    dir: &Path,
) -> Result<(Vec<Certificate<'static>>, Option<ClientCert>), RegistryError> {
    let entries = fs_err::read_dir(dir).map_err(|e| bad(dir, e.to_string()))?;
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in entries {
        names.push(entry.map_err(|e| bad(dir, e.to_string()))?.path());
    }
    names.sort();
    let mut cas = Vec::new();
    let mut client = None;
    for path in &names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let found = certificates(path)?;
                if found.is_empty() {
                    return Err(bad(path, "no PEM certificate in this file"));
                }
                cas.extend(found);
            }
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.is_file() {
                    return Err(bad(
                        path,
                        format!("client certificate without its key {}", key.display()),
                    ));
                }
                client = Some(client_cert(path, &key)?);
            }
            Some("key") if !path.with_extension("cert").is_file() => {
                return Err(bad(
                    path,
                    "client key without its certificate (NAME.cert next to NAME.key)",
                ));
            }
            _ => {}
        }
    }
    Ok((cas, client))
}

fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let pem = fs_err::read(path).map_err(|e| bad(path, e.to_string()))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(cert) = item.map_err(|e| bad(path, e.to_string()))? {
            out.push(cert);
        }
    }
    Ok(out)
}

/// A client certificate and its key, checked to belong together: the TLS library would panic
/// on a mismatched pair at the first handshake.
fn client_cert(cert_path: &Path, key_path: &Path) -> Result<ClientCert, RegistryError> {
    let chain = certificates(cert_path)?;
    if chain.is_empty() {
        return Err(bad(cert_path, "no PEM certificate in this file"));
    }
    let key_pem = fs_err::read(key_path).map_err(|e| bad(key_path, e.to_string()))?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| bad(key_path, e.to_string()))?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|e| bad(key_path, e.to_string()))?;
    let chain_der: Vec<rustls::pki_types::CertificateDer<'static>> = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
        .collect();
    rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert_path, e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain_der, key_der)
        .map_err(|e| {
            bad(
                cert_path,
                format!("does not go with {}: {e}", key_path.display()),
            )
        })?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// The TLS error inside a transport error, if that is what it is.
pub fn tls_error(error: &ureq::Error) -> Option<String> {
    let io = match error {
        ureq::Error::Rustls(e) => return Some(describe(e)),
        ureq::Error::Tls(e) => return Some((*e).to_string()),
        ureq::Error::Io(io) => io,
        _ => return None,
    };
    let inner = io.get_ref()?;
    inner.downcast_ref::<rustls::Error>().map(describe)
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "the certificate is not signed by a trusted CA (unknown issuer)".into()
        }
        other => other.to_string(),
    }
}

/// Whether a TLS failure means the peer does not speak TLS at all (a plain http registry).
pub fn is_not_tls(error: &ureq::Error) -> bool {
    let io = match error {
        ureq::Error::Io(io) => io,
        ureq::Error::Rustls(e) => return matches!(e, rustls::Error::InvalidMessage(_)),
        _ => return false,
    };
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lonely_key_or_an_empty_crt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.key"), "x").unwrap();
        let err = read_cert_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("client.key") && err.contains(".cert"), "{err}");
        std::fs::remove_file(dir.path().join("client.key")).unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let err = read_cert_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    #[test]
    fn the_explicit_dir_is_the_only_one() {
        assert_eq!(
            cert_dirs(Some(Path::new("/x")), "h:1"),
            vec![PathBuf::from("/x")]
        );
    }
}
