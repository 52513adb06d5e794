//! The socket of a PutMedia connection: TCP (through an HTTP proxy's CONNECT where the
//! environment names one, as reqwest does for the other requests) and TLS for `https`.
//!
//! PutMedia has a connection of its own, not one from reqwest's pool, because the element's
//! streaming thread writes frames to it itself (`super::direct`). That thread belongs to the
//! host application, whose SIGPIPE disposition is the default in `gst-launch-1.0` and most C
//! programs: every write here is a `sendmsg` with `MSG_NOSIGNAL`, so a peer that closed the
//! connection gives `EPIPE`, never a signal that kills the host.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

use crate::control::ApiError;

/// A TCP stream whose writes never raise SIGPIPE.
pub(super) struct Tcp(TcpStream);

/// At most this many slices per `sendmsg` (Linux's `IOV_MAX` is 1024).
const MAX_IOV: usize = 64;

fn send_nosignal(fd: i32, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(MAX_IOV)];
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the header points at `bufs`,
    // which outlive the call, and the kernel only reads them.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

impl Tcp {
    fn poll_send(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let fd = self.0.as_raw_fd();
            match self
                .0
                .try_io(Interest::WRITABLE, || send_nosignal(fd, bufs))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // shutdown(2) raises no signal.
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A PutMedia connection's socket: plain for `http`, TLS for `https`.
pub(super) enum Stream {
    Plain(Tcp),
    Tls(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to open a connection.
pub(super) struct Options<'a> {
    pub connect_timeout: Duration,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged.
    pub tcp_user_timeout: Duration,
    pub ca_file: Option<&'a std::path::Path>,
    pub user_agent: &'a str,
}

/// Opens a connection to `url`'s host, within `connect_timeout`.
pub(super) async fn connect(url: &Url, options: &Options<'_>) -> Result<Stream, ApiError> {
    // The same decision as for every other request (`crate::endpoint::proxy_for`).
    let proxy = crate::endpoint::proxy_for(url);
    let fail = |reason: String| ApiError::unreached(url, proxy.as_ref(), None, reason);
    let host = url
        .host_str()
        .ok_or_else(|| fail("the endpoint has no host".to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| fail("the endpoint has no port".to_owned()))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(fail(format!("unsupported scheme {other}"))),
    };
    let open = async {
        let tcp = match &proxy {
            Some(proxy) => tunnel(proxy, url, &host, port, options.user_agent).await?,
            None => tcp_connect(&host, port).await.map_err(fail)?,
        };
        tune(&tcp, options.tcp_user_timeout);
        let tcp = Tcp(tcp);
        if !tls {
            return Ok(Stream::Plain(tcp));
        }
        let config = tls_config(options.ca_file).map_err(fail)?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| fail(format!("{host} is not a valid TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let reason = format!(
                    "TLS handshake failed: {}",
                    crate::credentials::error_text(&e)
                );
                ApiError::unreached(url, proxy.as_ref(), Some(&e), reason)
            })?;
        Ok(Stream::Tls(Box::new(tls)))
    };
    match tokio::time::timeout(options.connect_timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(fail(format!(
            "no connection within the connection timeout ({:?})",
            options.connect_timeout
        ))),
    }
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| format!("{host} resolves to no address")))
}

fn tune(tcp: &TcpStream, user_timeout: Duration) {
    // Frames go out as they come: no Nagle delay behind a frame's last segment.
    let _ = tcp.set_nodelay(true);
    let ms = libc::c_uint::try_from(user_timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: setsockopt on an open socket with a pointer to a local of the right size.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
    }
}

/// A TCP connection to `host:port` (of `url`) through `proxy`'s CONNECT.
///
/// An `http://` endpoint is tunnelled too, not handed to the proxy request by request as
/// curl does: PutMedia's body never ends, and a proxy that reads a request's body whole
/// before it sends it on (nginx's default) would never send it.
async fn tunnel(
    proxy: &crate::endpoint::Proxy,
    url: &Url,
    host: &str,
    port: u16,
    user_agent: &str,
) -> Result<TcpStream, ApiError> {
    use crate::control::ProxyProblem;
    let fail = |problem, reason: String| ApiError::proxy(proxy, url, problem, reason);
    if let Some(unusable) = proxy.unusable(true) {
        return Err(fail(ProxyProblem::Unusable, unusable));
    }
    let mut tcp = tcp_connect(proxy.host(), proxy.port())
        .await
        .map_err(|e| fail(ProxyProblem::Unreachable, e))?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {user_agent}\r\n");
    if let Some(auth) = proxy.basic_auth() {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| fail(ProxyProblem::Unreachable, e.to_string()))?;
    // The answer's head, read byte by byte: nothing after it may be taken from the tunnel.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(fail(
                ProxyProblem::Refused,
                "its answer's head is too long".to_owned(),
            ));
        }
        let byte = tcp.read_u8().await.map_err(|e| {
            fail(
                ProxyProblem::Gateway,
                format!("it closed the connection without answering the CONNECT: {e}"),
            )
        })?;
        head.push(byte);
    }
    let status_line =
        String::from_utf8_lossy(&head[..head.iter().position(|b| *b == b'\r').unwrap_or(0)])
            .into_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    let problem = match status {
        s if s.starts_with('2') => return Ok(tcp),
        "407" => ProxyProblem::Auth,
        "502" | "503" | "504" => ProxyProblem::Gateway,
        _ => ProxyProblem::Refused,
    };
    Err(fail(
        problem,
        format!("it answered the CONNECT with {status_line}"),
    ))
}

/// The TLS settings of every HTTPS request (PutMedia's connection, and reqwest's clients for
/// the other APIs): the platform's roots plus `ca_file`'s, the default crypto provider; built
/// once per version of the CA file, so a file replaced while the process runs is read again.
/// The roots themselves are loaded at the first handshake ([`LazyVerifier`]).
pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use crate::credentials::http::PerFileVersion;
    type Configs = PerFileVersion<Option<std::path::PathBuf>, Arc<rustls::ClientConfig>>;
    static CONFIGS: once_cell::sync::Lazy<Configs> = once_cell::sync::Lazy::new(Default::default);
    CONFIGS.get_or_build(ca_file.map(std::path::Path::to_owned), &[ca_file], || {
        build_tls_config(ca_file)
    })
}

fn build_tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    // The user's file is read now: what is wrong with it is said at start.
    let extra: Vec<CertificateDer<'static>> = match ca_file {
        Some(path) => crate::credentials::http::load_pem_roots_der(path)?,
        None => Vec::new(),
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = LazyVerifier {
        extra,
        provider: provider.clone(),
        built: std::sync::OnceLock::new(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up HTTPS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The platform's verifier, built at the first handshake that needs it: reading and parsing
/// the system's root certificates costs more than the rest of a stream's start, and a process
/// that only speaks plain HTTP (to kvs-local) never needs them.
#[derive(Debug)]
struct LazyVerifier {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    built: std::sync::OnceLock<Result<rustls_platform_verifier::Verifier, String>>,
}

impl LazyVerifier {
    fn get(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.built
            .get_or_init(|| {
                let provider = self.provider.clone();
                if self.extra.is_empty() {
                    rustls_platform_verifier::Verifier::new(provider)
                } else {
                    rustls_platform_verifier::Verifier::new_with_extra_roots(
                        self.extra.iter().cloned(),
                        provider,
                    )
                }
                .map_err(|e| format!("cannot set up HTTPS: {e}"))
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls13_signature(message, cert, dss)
    }

    /// The provider's schemes, as the platform's verifier answers, without building it.
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "KVSSINK_TRANSPORT_SIGPIPE_CHILD";

    /// The system's roots are read at the first certificate check, not when a client is
    /// built nor when a handshake offers its schemes; then once.
    #[test]
    fn the_roots_are_loaded_at_the_first_certificate_check() {
        use rustls::client::danger::ServerCertVerifier;
        let verifier = LazyVerifier {
            extra: Vec::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            built: std::sync::OnceLock::new(),
        };
        assert!(!verifier.supported_verify_schemes().is_empty());
        assert!(verifier.built.get().is_none());
        let name = ServerName::try_from("example.com").unwrap();
        let not_a_certificate = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let now = rustls::pki_types::UnixTime::now();
        assert!(
            verifier
                .verify_server_cert(&not_a_certificate, &[], &name, &[], now)
                .is_err()
        );
        assert!(verifier.built.get().is_some_and(|v| v.is_ok()));
    }

    /// The streaming thread is the host's, with SIGPIPE at its default action (it kills):
    /// writes to a connection the peer closed must fail, not kill. Checked in a copy of this
    /// test binary with SIGPIPE set back to its default (Rust's test harness ignores it).
    #[test]
    fn a_write_to_a_closed_connection_fails_and_raises_no_sigpipe() {
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: only this child process's disposition changes.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let error = runtime.block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let client = TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap();
                // The peer closes: its FIN, then a RST for the next data we send, then EPIPE.
                drop(listener.accept().unwrap());
                let mut tcp = Tcp(client);
                for _ in 0..200 {
                    if let Err(e) = tcp.write_all(b"a frame").await {
                        return e;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("writes to a closed connection kept succeeding");
            });
            assert!(
                matches!(
                    error.raw_os_error(),
                    Some(libc::EPIPE) | Some(libc::ECONNRESET)
                ),
                "{error}"
            );
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "uploader::transport::tests::a_write_to_a_closed_connection_fails_and_raises_no_sigpipe",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the child writing to a closed connection ended with {status:?} (13: SIGPIPE)"
        );
    }
}
