//! Loopback stand-ins for the endpoints credentials come from: EC2 instance metadata, the
//! ECS/EKS container endpoint, STS web identity and the AWS IoT credentials provider (mutual
//! TLS, with a throwaway CA made at test time).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request as the stand-in saw it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's certificate (DER), over mutual TLS.
    pub client_cert: Option<Vec<u8>>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the stand-in answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A tiny HTTP/1.1 server on loopback, one thread per connection, `Connection: close`.
pub struct Standin {
    addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Standin {
    /// Plain HTTP.
    pub fn http(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Standin {
        Self::start(None, Arc::new(handler))
    }

    /// HTTPS with `config` (e.g. one that requires client certificates).
    pub fn https(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Standin {
        Self::start(Some(config), Arc::new(handler))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let standin = Standin {
            addr,
            tls: tls.is_some(),
            requests: requests.clone(),
            stop: stop.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                let requests = requests.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let mut tls = rustls::StreamOwned::new(conn, stream);
                            let mut client_cert = None;
                            if tls.conn.complete_io(&mut tls.sock).is_ok() {
                                client_cert = tls
                                    .conn
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| c.to_vec());
                            }
                            serve(&mut tls, &handler, &requests, client_cert);
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                        None => {
                            let mut stream = stream;
                            serve(&mut stream, &handler, &requests, None);
                        }
                    }
                });
            }
        });
        standin
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port` (or https).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    stream: &mut (impl Read + Write),
    handler: &Handler,
    requests: &Mutex<Vec<Request>>,
    client_cert: Option<Vec<u8>>,
) {
    let Some(mut request) = read_request(stream) else {
        return;
    };
    request.client_cert = client_cert;
    requests.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let mut head = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
        client_cert: None,
    })
}

/// A key pair handed out by a stand-in.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key: String,
    pub secret_key: String,
    pub token: String,
    pub expires: SystemTime,
}

impl Issued {
    pub fn new(name: &str, expires: SystemTime) -> Issued {
        Issued {
            access_key: format!("ASIA{}", name.to_uppercase()),
            secret_key: format!("secret-of-{name}-never-logged"),
            token: format!("token-of-{name}-never-logged"),
            expires,
        }
    }

    /// The key pair kvs-local must accept (expiring when these do).
    pub fn key_pair(&self) -> kvs_local::KeyPair {
        kvs_local::KeyPair::new(&self.access_key, &self.secret_key)
            .with_session_token(&self.token)
            .with_expiry(self.expires)
    }

    /// The expiry in ISO 8601.
    pub fn expiration(&self) -> String {
        iso8601(self.expires)
    }

    /// The JSON the instance-metadata and container endpoints answer.
    pub fn metadata_json(&self) -> String {
        format!(
            r#"{{"Code":"Success","LastUpdated":"2024-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}"}}"#,
            self.access_key,
            self.secret_key,
            self.token,
            self.expiration()
        )
    }

    /// The JSON the AWS IoT credentials provider answers.
    pub fn iot_json(&self) -> String {
        format!(
            r#"{{"credentials":{{"accessKeyId":"{}","secretAccessKey":"{}","sessionToken":"{}","expiration":"{}"}}}}"#,
            self.access_key,
            self.secret_key,
            self.token,
            self.expiration()
        )
    }

    /// STS's AssumeRoleWithWebIdentity answer.
    pub fn sts_xml(&self) -> String {
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:video:camera</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/kvs-camera/camera</Arn>
      <AssumedRoleId>AROAEXAMPLE:camera</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{}</AccessKeyId>
      <SecretAccessKey>{}</SecretAccessKey>
      <SessionToken>{}</SessionToken>
      <Expiration>{}</Expiration>
    </Credentials>
    <Provider>oidc.eks.example</Provider>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
            self.access_key,
            self.secret_key,
            self.token,
            self.expiration()
        )
    }
}

/// `2030-01-02T03:04:05Z`.
pub fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An EC2 instance-metadata stand-in (IMDSv2: a token first) handing out `issue()` for role
/// `kvs-camera-role`.
pub fn imds(issue: impl Fn() -> Issued + Send + Sync + 'static) -> Standin {
    const TOKEN: &str = "imds-session-token";
    Standin::http(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") => {
            Reply::ok(TOKEN).header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        }
        _ if r.header("x-aws-ec2-metadata-token") != Some(TOKEN) => Reply::status(401, ""),
        ("GET", "/latest/meta-data/iam/security-credentials/") => Reply::ok("kvs-camera-role"),
        ("GET", "/latest/meta-data/iam/security-credentials/kvs-camera-role") => {
            Reply::ok(issue().metadata_json())
        }
        _ => Reply::status(404, ""),
    })
}

/// An ECS/EKS container-credentials stand-in at `/creds`, checking the authorization token
/// when one is given.
pub fn container(
    authorization: Option<&'static str>,
    issue: impl Fn() -> Issued + Send + Sync + 'static,
) -> Standin {
    Standin::http(move |r| {
        if r.path != "/creds" {
            return Reply::status(404, "");
        }
        if let Some(expected) = authorization
            && r.header("authorization") != Some(expected)
        {
            return Reply::status(401, r#"{"message":"bad token"}"#);
        }
        Reply::ok(issue().metadata_json())
    })
}

/// Throwaway PKI: a CA, a server certificate for 127.0.0.1/localhost and client certificates,
/// written as PEM files in a directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second client certificate from the same CA (a renewed device certificate).
    pub renewed_cert: PathBuf,
    pub renewed_key: PathBuf,
    /// A client certificate from another CA, which the server refuses.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    server_config: Arc<rustls::ServerConfig>,
    open_server_config: Arc<rustls::ServerConfig>,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let new_ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let leaf =
            |names: Vec<String>, usage: ExtendedKeyUsagePurpose, issuer: &Issuer<KeyPair>| {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(names).unwrap();
                params
                    .distinguished_name
                    .push(DnType::CommonName, "kvssink test");
                params.extended_key_usages = vec![usage];
                let cert = params.signed_by(&key, issuer).unwrap();
                (cert, key)
            };
        let (ca_cert, ca) = new_ca("kvssink test CA");
        let (_, stranger_ca) = new_ca("someone else's CA");
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        );
        let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let (renewed_cert, renewed_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let (stranger_cert, stranger_key) =
            leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &stranger_ca);

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_path = write("ca.pem", ca_cert.pem());
        let client_cert_path = write("client.pem", client_cert.pem());
        let client_key_path = write("client.key", client_key.serialize_pem());
        let renewed_cert_path = write("renewed.pem", renewed_cert.pem());
        let renewed_key_path = write("renewed.key", renewed_key.serialize_pem());
        let stranger_cert_path = write("stranger.pem", stranger_cert.pem());
        let stranger_key_path = write("stranger.key", stranger_key.serialize_pem());

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        let open_server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        Pki {
            dir,
            ca: ca_path,
            client_cert: client_cert_path,
            client_key: client_key_path,
            renewed_cert: renewed_cert_path,
            renewed_key: renewed_key_path,
            stranger_cert: stranger_cert_path,
            stranger_key: stranger_key_path,
            server_config: Arc::new(server_config),
            open_server_config: Arc::new(open_server_config),
        }
    }

    /// A server configuration that requires a client certificate from this CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// A server configuration (for 127.0.0.1 and localhost) that asks for no client
    /// certificate: an HTTPS endpoint.
    pub fn open_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.open_server_config.clone()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An AWS IoT credentials-provider stand-in over mutual TLS, for role alias `kvs-role-alias`.
pub fn iot(pki: &Pki, issue: impl Fn() -> Issued + Send + Sync + 'static) -> Standin {
    Standin::https(pki.server_config(), move |r| {
        if r.path != "/role-aliases/kvs-role-alias/credentials" {
            return Reply::status(404, r#"{"message":"Role alias does not exist"}"#);
        }
        if r.header("x-amzn-iot-thingname").is_none() {
            return Reply::status(400, r#"{"message":"missing thing name"}"#);
        }
        Reply::ok(issue().iot_json())
    })
}

/// A thread running a tokio runtime that serves `listener` with `serve`, one task per
/// connection, until the test ends.
pub fn spawn_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let serve = Arc::new(serve);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream));
            }
        });
    });
    rx.recv().unwrap()
}

/// A TLS terminator at 127.0.0.1 (certificate from `pki`'s CA) forwarding to `backend`, once
/// that is set.
pub fn tls_terminator(pki: &Pki, backend: Arc<std::sync::OnceLock<SocketAddr>>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.open_server_config());
    spawn_server(move |stream| {
        let acceptor = acceptor.clone();
        let backend = backend.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let Some(backend) = backend.get() else {
                return;
            };
            let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        }
    })
}

/// A TLS terminator at 127.0.0.1 forwarding to `backend` (once set) whose certificate can be changed while it runs:
/// `rotate` makes it present `next`'s certificate from then on and closes every connection
/// it holds, as a server whose certificate was renewed and which restarted does.
pub struct RotatingTerminator {
    pub addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    closed: tokio::sync::watch::Sender<u64>,
    /// Handshakes completed with the certificate `rotate` put in place.
    after_rotation: Arc<std::sync::atomic::AtomicUsize>,
    rotated: Arc<std::sync::atomic::AtomicBool>,
}

impl RotatingTerminator {
    pub fn new(pki: &Pki, backend: Arc<std::sync::OnceLock<SocketAddr>>) -> RotatingTerminator {
        use std::sync::atomic::Ordering;
        let config = Arc::new(Mutex::new(pki.open_server_config()));
        let (closed, _) = tokio::sync::watch::channel(0u64);
        let after_rotation = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = {
            let (config, closed) = (config.clone(), closed.clone());
            let (after_rotation, rotated) = (after_rotation.clone(), rotated.clone());
            spawn_server(move |stream| {
                let mut close = closed.subscribe();
                let rotated_when_accepted = rotated.load(Ordering::SeqCst);
                let acceptor = tokio_rustls::TlsAcceptor::from(config.lock().unwrap().clone());
                let (after_rotation, backend) = (after_rotation.clone(), backend.clone());
                async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if rotated_when_accepted {
                        after_rotation.fetch_add(1, Ordering::SeqCst);
                    }
                    let Some(backend) = backend.get() else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {}
                        _ = close.changed() => {}
                    }
                }
            })
        };
        RotatingTerminator {
            addr,
            config,
            closed,
            after_rotation,
            rotated,
        }
    }

    /// Replaces `ca_file` by `next`'s CA (by rename, as certificate managers do), then
    /// [`rotate`](Self::rotate)s to `next`'s certificate.
    pub fn rotate_with_ca_file(&self, next: &Pki, ca_file: &Path) {
        replace_file(&next.ca, ca_file);
        self.rotate(next);
    }

    /// Fails unless a TLS connection was made with the certificate `rotate` put in place.
    pub fn assert_used_after_rotation(&self) {
        assert!(
            self.after_rotation.load(Ordering::SeqCst) >= 1,
            "no connection was made with the new certificate"
        );
    }

    pub fn rotate(&self, next: &Pki) {
        use std::sync::atomic::Ordering;
        *self.config.lock().unwrap() = next.open_server_config();
        self.rotated.store(true, Ordering::SeqCst);
        self.closed.send_modify(|n| *n += 1);
    }
}

/// Replaces `to` by a copy of `from` written beside it and renamed over it, as certificate
/// managers replace certificates and keys.
pub fn replace_file(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}
