//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) started on
//! 127.0.0.1 with a config written here (its packaged one turns htpasswd on), optionally with
//! htpasswd auth and TLS from a CA made with openssl; stopped by PID. Its access log counts the
//! requests. Also a proxy that sits in front of it and damages what passes (a flipped byte in a
//! blob, a connection cut in the middle of an upload).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USER: &str = "fissile";
pub const PASSWORD: &str = "s3cret-pass";

#[derive(Clone, Copy, Default)]
pub struct Options {
    pub tls: bool,
    pub htpasswd: bool,
    /// Bearer tokens from a token service run by the test (instead of htpasswd).
    pub token: bool,
}

pub struct Registry {
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// A directory with the CA as `ca.crt` (for `--cert-dir`), when TLS is on.
    pub cert_dir: Option<PathBuf>,
    pub options: Options,
    /// The token service, with `token`.
    pub tokens: Option<TokenServer>,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

/// True when the tools are installed; otherwise the test reports itself skipped.
pub fn available() -> bool {
    for tool in ["docker-registry", "openssl", "htpasswd", "skopeo"] {
        if which(tool).is_none() {
            crate::common_skip::skip(&format!(
                "{tool} is not installed (scripts/test.sh installs it)"
            ));
            return false;
        }
    }
    true
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(options: Options) -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        let mut cert_dir = None;
        if options.tls {
            let certs = dir.join("certs");
            make_certificates(&certs);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            ));
            let trust = dir.join("trust");
            std::fs::create_dir_all(&trust).unwrap();
            std::fs::copy(certs.join("ca.crt"), trust.join("ca.crt")).unwrap();
            cert_dir = Some(trust);
        }
        if options.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .unwrap();
            assert!(out.status.success());
            let file = dir.join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: fissile-oci-test\n    path: {}\n",
                file.display()
            ));
        }
        let mut tokens = None;
        if options.token {
            let server = TokenServer::start(&dir.join("token"));
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.port,
                server.certificate.display()
            ));
            tokens = Some(server);
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut registry = Registry {
            port,
            log: dir.join("registry.log"),
            dir,
            cert_dir,
            options,
            tokens,
            child: None,
            _tmp: tmp,
        };
        registry.restart();
        registry
    }

    /// (Re)starts the registry on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it at once (SIGKILL, by PID), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An auth file (containers' auth.json) with these credentials for this registry.
    pub fn auth_file(&self, name: &str, user: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let path = self.dir.join(name);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &path,
            serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
        path
    }

    /// Every request so far: (method, uri, status), from the registry's log.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("msg=\"response completed"))
            .filter_map(|l| {
                Some((
                    field(l, "http.request.method")?,
                    field(l, "http.request.uri")?,
                    field(l, "http.response.status")?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Requests that send blob data: upload starts and chunks (mount requests excluded).
    pub fn blob_uploads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(m, uri, _)| {
                uri.contains("/blobs/uploads/")
                    && (m == "PATCH" || (m == "POST" && !uri.contains("mount=")))
            })
            .count()
    }

    /// skopeo's own flags for this registry (TLS and credentials).
    pub fn skopeo_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        match &self.cert_dir {
            Some(dir) => flags.push(format!("--cert-dir={}", dir.display())),
            None => flags.push("--tls-verify=false".into()),
        }
        if self.options.htpasswd || self.options.token {
            flags.push(format!("--creds={USER}:{PASSWORD}"));
        }
        flags
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `key=value` or `key="value"` in a logrus text line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        Some(quoted[..quoted.find('"')?].to_string())
    } else {
        Some(rest.split_whitespace().next()?.to_string())
    }
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fissile-oci test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// What a [`Proxy`] does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Flips one byte in the body of every blob download (GET .../blobs/sha256:...).
    FlipBlobByte,
    /// Cuts the connection once, after forwarding this many bytes of the first large upload
    /// body (PATCH); later requests pass.
    CutUploadOnceAfter(usize),
    /// Answers the second upload chunk (PATCH) with 503 itself, as a load balancer in front of
    /// a busy registry does; later requests pass.
    RefuseSecondChunk,
    /// Answers every tag listing (GET .../tags/list) with 403 DENIED itself.
    RefuseTagList,
}

/// A proxy on 127.0.0.1 in front of a plain http registry; stops when dropped.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// How many times the damage was done.
    pub damaged: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: u16, damage: Damage) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let damaged = Arc::new(AtomicUsize::new(0));
        let patches = Arc::new(AtomicUsize::new(0));
        let (stop2, damaged2) = (stop.clone(), damaged.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let damaged = damaged2.clone();
                        let patches = patches.clone();
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, damage, &damaged, &patches);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            port,
            stop,
            damaged,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The head of a request or response: its lines, and the length of its body.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: usize,
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(line.as_bytes());
        if first_line.is_empty() {
            first_line = line.trim().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            return Ok(Some(Head {
                raw,
                first_line,
                content_length,
            }));
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: u16,
    damage: Damage,
    damaged: &AtomicUsize,
    patches: &AtomicUsize,
) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut client_in = BufReader::new(client.try_clone()?);
    let mut client_out = client;
    let mut server_in = BufReader::new(server.try_clone()?);
    let mut server_out = server;
    while let Some(request) = read_head(&mut client_in)? {
        let mut parts = request.first_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let uri = parts.next().unwrap_or_default().to_string();
        if damage == Damage::RefuseSecondChunk
            && method == "PATCH"
            && patches.fetch_add(1, Ordering::SeqCst) == 1
        {
            let mut body = vec![0u8; request.content_length];
            client_in.read_exact(&mut body)?;
            damaged.fetch_add(1, Ordering::SeqCst);
            client_out
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        if damage == Damage::RefuseTagList && method == "GET" && uri.contains("/tags/list") {
            damaged.fetch_add(1, Ordering::SeqCst);
            let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
            client_out.write_all(
                format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )?;
            client_out.write_all(body)?;
            continue;
        }
        server_out.write_all(&request.raw)?;
        let cut = match damage {
            Damage::CutUploadOnceAfter(n)
                if method == "PATCH"
                    && request.content_length > n
                    && damaged
                        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok() =>
            {
                Some(n)
            }
            _ => None,
        };
        let mut body = vec![0u8; request.content_length];
        let mut forwarded = 0;
        while forwarded < body.len() {
            let want = (body.len() - forwarded).min(64 * 1024);
            client_in.read_exact(&mut body[forwarded..forwarded + want])?;
            let limit = cut.map_or(want, |n| want.min(n.saturating_sub(forwarded)));
            server_out.write_all(&body[forwarded..forwarded + limit])?;
            forwarded += want;
            if cut.is_some_and(|n| forwarded >= n) {
                let _ = server_out.shutdown(Shutdown::Both);
                let _ = client_out.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        let Some(response) = read_head(&mut server_in)? else {
            return Ok(());
        };
        client_out.write_all(&response.raw)?;
        if method == "HEAD" {
            continue;
        }
        let mut body = vec![0u8; response.content_length];
        server_in.read_exact(&mut body)?;
        if damage == Damage::FlipBlobByte
            && method == "GET"
            && uri.contains("/blobs/sha256:")
            && response.first_line.contains(" 200 ")
            && !body.is_empty()
        {
            let at = body.len() / 2;
            body[at] ^= 0x01;
            damaged.fetch_add(1, Ordering::SeqCst);
        }
        client_out.write_all(&body)?;
    }
    Ok(())
}

pub const TOKEN_SERVICE: &str = "fissile-test-registry";
pub const TOKEN_ISSUER: &str = "fissile-test-issuer";
/// The refresh token the token service takes in place of a password (docker's identitytoken).
pub const REFRESH_TOKEN: &str = "refresh-me";

/// A token service as registries use (Docker Hub's auth.docker.io, Harbor, GitLab): it checks
/// Basic credentials (or a refresh token, POSTed) and answers with a JWT that grants the asked
/// scopes, signed (RS256, with openssl) by a key whose certificate the registry trusts.
pub struct TokenServer {
    pub port: u16,
    pub certificate: PathBuf,
    /// Every scope asked for, in order (`repository:NAME:ACTIONS`).
    pub asked: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("openssl").current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
            "-days",
            "2",
            "-subj",
            "/CN=fissile-oci test token signer",
        ]));
        let der = Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-in", "token.crt", "-outform", "DER"])
            .output()
            .unwrap()
            .stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, asked2, key) = (stop.clone(), asked.clone(), dir.join("token.key"));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = answer_token(stream, &key, &der, &asked2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer {
            port,
            certificate: dir.join("token.crt"),
            asked,
            stop,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer_token(
    stream: TcpStream,
    key: &Path,
    certificate_der: &[u8],
    asked: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut body = vec![0u8; head.content_length];
    reader.read_exact(&mut body)?;
    let text = String::from_utf8_lossy(&head.raw).to_string();
    let target = head.first_line.split_whitespace().nth(1).unwrap_or("/");
    let query = if head.first_line.starts_with("POST") {
        String::from_utf8_lossy(&body).to_string()
    } else {
        target
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default()
    };
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let param = |k: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let basic = text.lines().find_map(|l| {
        let lower = l.to_ascii_lowercase();
        lower
            .starts_with("authorization: basic ")
            .then(|| l["authorization: basic ".len()..].trim().to_string())
    });
    let refresh = param("refresh_token").into_iter().next();
    let authenticated = match (&basic, &refresh) {
        (Some(b), _) => {
            if b != &expected {
                let reply =
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                return out.write_all(reply.as_bytes());
            }
            true
        }
        (None, Some(r)) => {
            if r != REFRESH_TOKEN {
                let reply =
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                return out.write_all(reply.as_bytes());
            }
            true
        }
        (None, None) => false,
    };
    // A POSTed form carries its scopes space-separated in one parameter.
    let scopes: Vec<String> = param("scope")
        .into_iter()
        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    asked.lock().unwrap().extend(scopes.iter().cloned());
    let access: Vec<serde_json::Value> = if authenticated {
        scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(certificate_der)]});
    let claims = serde_json::json!({"iss": TOKEN_ISSUER, "sub": if authenticated { USER } else { "" },
        "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", scopes.len()), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signer = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    signer
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = signer.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64(&signature));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    out.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}
