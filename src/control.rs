//! Kinesis Video Streams control plane: DescribeStream, CreateStream, TagStream and
//! GetDataEndpoint, signed with SigV4. GStreamer-free.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::sigv4::{self, Payload};

/// An error from a Kinesis Video Streams API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The service answered with an error status.
    #[error("{kind} (HTTP {status}): {message}")]
    Service {
        status: u16,
        /// The AWS error name, e.g. `ResourceNotFoundException`.
        kind: String,
        message: String,
    },
    /// The request did not reach the service or no answer came back. `url` is the endpoint's
    /// origin, and the proxy the request went through if any ([`ApiError::via`]).
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The TLS handshake with the endpoint failed for a reason that names what to change
    /// (its certificate is not trusted, or it does not speak TLS).
    #[error("cannot reach {url}: {reason}; {}", problem.advice())]
    Tls {
        url: String,
        reason: String,
        problem: TlsProblem,
    },
    /// The proxy in the way could not be reached or used, or answered in the service's
    /// place.
    #[error(transparent)]
    Proxy(Box<ProxyError>),
    /// The answer could not be understood.
    #[error("unexpected answer from the service: {0}")]
    Decode(String),
    /// The request could not be signed.
    #[error(transparent)]
    Sign(#[from] sigv4::SignError),
}

/// Why a TLS handshake failed, when it says what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate's issuer is not trusted here.
    UnknownIssuer,
    /// The certificate is not for the host name in the URL.
    WrongName,
    /// The certificate has expired or is not valid yet.
    Dates,
    /// The certificate is a CA's (basic constraints CA:TRUE) presented as the server's own.
    CaAsServer,
    /// The certificate is refused for another reason (revoked, badly signed...).
    Certificate,
    /// What answered is not TLS: a plain-HTTP server, most likely.
    NotTls,
}

impl TlsProblem {
    /// The problem a TLS error (anywhere in `error`'s chain) is, if it is one of these.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
        use rustls::CertificateError as C;
        match in_chain::<rustls::Error>(error)? {
            rustls::Error::InvalidCertificate(c) => Some(match c {
                C::UnknownIssuer => TlsProblem::UnknownIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::WrongName,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsProblem::Dates,
                // webpki's error, which rustls passes on as `Other`.
                C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    TlsProblem::CaAsServer
                }
                _ => TlsProblem::Certificate,
            }),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                Some(TlsProblem::NotTls)
            }
            _ => None,
        }
    }

    /// What to do about it.
    pub fn advice(self) -> &'static str {
        match self {
            TlsProblem::UnknownIssuer => {
                "the endpoint's certificate is not issued by a CA trusted here: give that CA's \
                 certificate in ca-file (PEM), or in SSL_CERT_FILE or SSL_CERT_DIR"
            }
            TlsProblem::WrongName => {
                "the endpoint's certificate is not for the host name in the URL: use a name it \
                 was issued for"
            }
            TlsProblem::Dates => {
                "the endpoint's certificate has expired or is not valid yet, or this machine's \
                 clock is wrong"
            }
            TlsProblem::CaAsServer => {
                "the endpoint presents a CA certificate (basic constraints CA:TRUE) as its own, \
                 which TLS refuses even when it is trusted (a self-signed certificate from \
                 `openssl req -x509` is one by default): give the server a certificate with \
                 CA:FALSE (`-addext basicConstraints=critical,CA:FALSE`), or one signed by a CA \
                 given in ca-file"
            }
            TlsProblem::Certificate => "the endpoint's certificate is refused",
            TlsProblem::NotTls => {
                "what answered does not speak TLS: if the endpoint is plain HTTP, its URL \
                 starts with http://, not https://"
            }
        }
    }
}

/// The first error of type `T` in `error`'s chain, looking inside `io::Error`s too (whose
/// `source` skips the error they wrap).
fn in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What a proxy did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProblem {
    /// It could not be reached: refused, not resolved, timed out.
    Unreachable,
    /// It asks for a user name and password (HTTP 407), or refused the ones sent.
    Auth,
    /// It could not reach the endpoint (HTTP 502, 503 or 504 of its own, a tunnel it could
    /// not open).
    Gateway,
    /// It refused the request or the tunnel (another status, e.g. its rules' 403).
    Refused,
    /// It cannot be used: not a URL, or a kind kvssink does not go through.
    Unusable,
}

/// A proxy in the way of a request to `url`.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub proxy: crate::endpoint::Proxy,
    /// The endpoint's origin.
    pub url: String,
    pub problem: ProxyProblem,
    pub reason: String,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ProxyError {
            proxy,
            url,
            problem,
            reason,
        } = self;
        let from = proxy.from;
        match problem {
            ProxyProblem::Unreachable => {
                write!(f, "cannot reach {proxy} for {url}: {reason}")
            }
            ProxyProblem::Gateway => write!(
                f,
                "cannot reach {url} through {proxy}: the proxy could not ({reason})"
            ),
            ProxyProblem::Auth if proxy.has_credentials() => write!(
                f,
                "{proxy} refused the user name and password given in {from} for {url} \
                 ({reason}): check them (special characters percent-encoded, e.g. @ as %40)"
            ),
            ProxyProblem::Auth => write!(
                f,
                "{proxy} asks for a user name and password for {url} ({reason}): give them in \
                 {from}, as http://USER:PASSWORD@{}/ (special characters percent-encoded)",
                proxy.host_port()
            ),
            ProxyProblem::Refused => write!(
                f,
                "{proxy} refused the way to {url} ({reason}): its rules may not allow it (many \
                 proxies open tunnels to port 443 only); ask its administrator, or let this \
                 endpoint's host go around it in no_proxy"
            ),
            ProxyProblem::Unusable => write!(
                f,
                "{proxy}, used for {url}, {reason}: give an http:// proxy in {from}, or let \
                 this endpoint's host go around it in no_proxy"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The error name given to an answer without one: `HTTP` and its status, e.g. `HTTP404`.
const FOREIGN_KIND: &str = "HTTP";

/// Error names that mean "too many requests, slow down": Kinesis Video Streams' own and the
/// ones the AWS SDKs treat as throttling.
pub const THROTTLING_ERRORS: &[&str] = &[
    "ClientLimitExceededException",
    "ConnectionLimitExceededException",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
];

impl ApiError {
    /// Whether trying again later may succeed (network trouble, throttling, service errors).
    pub fn is_retriable(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Tls { .. } => true,
            ApiError::Proxy(e) => {
                matches!(e.problem, ProxyProblem::Unreachable | ProxyProblem::Gateway)
            }
            ApiError::Service { status, kind, .. } => {
                *status >= 500 || self.is_throttling() || kind == "InvalidEndpointException"
            }
            ApiError::Decode(_) | ApiError::Sign(_) => false,
        }
    }

    /// Whether the request did not reach the service: the network, the endpoint, TLS or the
    /// proxy in the way (an outage, to the element, while it once worked).
    pub fn is_unreached(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Tls { .. } => true,
            ApiError::Proxy(e) => {
                matches!(e.problem, ProxyProblem::Unreachable | ProxyProblem::Gateway)
            }
            _ => false,
        }
    }

    /// Whether trying again cannot help until something here is changed: a certificate not
    /// trusted, an endpoint that does not speak TLS, a proxy that refuses, asks for a password
    /// or cannot be used. At start, the element gives up at once.
    pub fn needs_a_change(&self) -> bool {
        match self {
            ApiError::Tls { .. } => true,
            ApiError::Proxy(e) => {
                !matches!(e.problem, ProxyProblem::Unreachable | ProxyProblem::Gateway)
            }
            _ => false,
        }
    }

    /// Whether a proxy refused or asked for its user name and password (HTTP 407).
    pub fn is_proxy_auth(&self) -> bool {
        matches!(self, ApiError::Proxy(e) if e.problem == ProxyProblem::Auth)
    }

    /// The origin of `url`, and the proxy the request goes through if any: `http://host:port`
    /// or `http://host:port through the proxy 10.0.0.1:3128 (from http_proxy)`.
    pub fn via(url: &Url, proxy: Option<&crate::endpoint::Proxy>) -> String {
        let origin = url.origin().ascii_serialization();
        match proxy {
            Some(proxy) => format!("{origin} through {proxy}"),
            None => origin,
        }
    }

    /// A request to `url` that failed on its way (`cause`, told as `reason`), through `proxy`
    /// if any: a TLS problem that says what to change, else a transport error naming the
    /// proxy.
    pub(crate) fn unreached(
        url: &Url,
        proxy: Option<&crate::endpoint::Proxy>,
        cause: Option<&(dyn std::error::Error + 'static)>,
        reason: String,
    ) -> Self {
        let url = Self::via(url, proxy);
        match cause.and_then(TlsProblem::of) {
            Some(problem) => ApiError::Tls {
                url,
                reason,
                problem,
            },
            None => ApiError::Transport { url, reason },
        }
    }

    /// The proxy's `problem` with a request to `url`.
    pub(crate) fn proxy(
        proxy: &crate::endpoint::Proxy,
        url: &Url,
        problem: ProxyProblem,
        reason: String,
    ) -> Self {
        ApiError::Proxy(Box::new(ProxyError {
            proxy: proxy.clone(),
            url: url.origin().ascii_serialization(),
            problem,
            reason,
        }))
    }

    /// An error answer to a request to `url`, as the proxy it went through may have given it:
    /// requests to `http://` URLs are handed to the proxy whole (not tunnelled), and a 407, or
    /// a 502, 503 or 504 without an AWS error name, is the proxy's own.
    pub fn through_proxy_of(self, url: &Url) -> Self {
        let ApiError::Service { status, .. } = &self else {
            return self;
        };
        let problem = match status {
            407 => ProxyProblem::Auth,
            502..=504 => ProxyProblem::Gateway,
            _ => return self,
        };
        if !self.is_foreign() || url.scheme() != "http" {
            return self;
        }
        let Some(proxy) = crate::endpoint::proxy_for(url) else {
            return self;
        };
        let reason = http::StatusCode::from_u16(*status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map_or_else(
                || format!("HTTP {status}"),
                |r| format!("HTTP {status} {r}"),
            );
        Self::proxy(&proxy, url, problem, reason)
    }

    /// Whether an error answer carries no AWS error name (an HTML page, a proxy's or another
    /// server's answer): what answered is not Kinesis Video Streams.
    pub fn is_foreign(&self) -> bool {
        matches!(self, ApiError::Service { kind, .. } if kind.starts_with(FOREIGN_KIND))
    }

    /// What to say of a [`foreign`](ApiError::is_foreign) answer, with the control plane used
    /// and where it came from.
    pub fn foreign_advice(control_plane: &str, from: &str) -> String {
        let mut advice = format!(
            "the answer is not one of Kinesis Video Streams (no AWS error in it): check the \
             endpoint; the control plane is {control_plane} (from {from})"
        );
        // A request to an http:// URL is handed to the proxy, which may answer itself.
        if let Ok(url) = Url::parse(control_plane)
            && url.scheme() == "http"
            && let Some(proxy) = crate::endpoint::proxy_for(&url)
        {
            advice.push_str(&format!(
                ", reached through {proxy}, which may have answered in its place"
            ));
        }
        advice
    }

    /// Whether the service answered that it is getting too many requests (HTTP 429 or a
    /// throttling error such as `ClientLimitExceededException`).
    pub fn is_throttling(&self) -> bool {
        matches!(self, ApiError::Service { status, kind, .. }
            if *status == 429 || THROTTLING_ERRORS.contains(&kind.as_str()))
    }

    /// When the service refused the signature because of this machine's clock, records the
    /// skew so that the next requests are signed with the service's time, and returns it.
    ///
    /// As the AWS SDKs decide: an error of [`sigv4::SKEW_ERROR_CODES`] while the clock is more
    /// than [`sigv4::SKEW_THRESHOLD`] off the service's, as measured from the `Date` header of
    /// the control plane's answers; or a "Signature expired" / "Signature not yet current"
    /// message, whose server time gives the skew (PutMedia answers are read without headers).
    pub fn correct_clock(&self) -> Option<sigv4::Skew> {
        let ApiError::Service { kind, message, .. } = self else {
            return None;
        };
        if !sigv4::SKEW_ERROR_CODES.contains(&kind.as_str()) {
            return None;
        }
        if let Some(server) = sigv4::server_time_in_message(message) {
            let now = SystemTime::now();
            return Some(sigv4::CLOCK.observe(server, now, now));
        }
        let skew = sigv4::CLOCK.skew();
        skew.is_significant().then_some(skew)
    }

    /// Whether this is a signature error that the clock explains (as [`ApiError::correct_clock`]
    /// says, without recording anything).
    pub fn is_clock_skew(&self) -> bool {
        match self {
            ApiError::Service { kind, message, .. }
                if sigv4::SKEW_ERROR_CODES.contains(&kind.as_str()) =>
            {
                sigv4::server_time_in_message(message).is_some()
                    || sigv4::CLOCK.skew().is_significant()
            }
            _ => false,
        }
    }

    /// Whether the service refused the credentials or the caller's rights.
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Service { status, kind, .. }
            if *status == 401 || *status == 403 || kind.contains("NotAuthorized")
                || kind.contains("AccessDenied") || kind.contains("Signature")
                || kind.contains("UnrecognizedClient") || kind.contains("ExpiredToken"))
    }

    /// The AWS error name, if the service answered.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ApiError::Service { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Builds the error from a failed response's status, headers and body.
    pub fn from_response(status: u16, error_type_header: Option<&str>, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "__type")]
            kind: Option<String>,
            #[serde(rename = "Message", alias = "message")]
            message: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let kind = error_type_header
            .map(str::to_owned)
            .or_else(|| parsed.as_ref().and_then(|b| b.kind.clone()))
            .map(|k| {
                // Both "ResourceNotFoundException:http://..." and "prefix#Name" occur.
                let k = k.split(':').next().unwrap_or(&k);
                k.rsplit('#').next().unwrap_or(k).to_owned()
            })
            .unwrap_or_else(|| format!("{FOREIGN_KIND}{status}"));
        let message = parsed
            .and_then(|b| b.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        ApiError::Service {
            status,
            kind,
            message: without_session_token(&message),
        }
    }

    /// This error with the secret key and session token of `credentials` (the request's)
    /// replaced by `<redacted>` wherever the service's (or a gateway's) message repeats them,
    /// in whatever form it quotes the request.
    pub fn without_secrets_of(self, credentials: &aws_credential_types::Credentials) -> Self {
        match self {
            ApiError::Service {
                status,
                kind,
                mut message,
            } => {
                let secrets = [
                    Some(credentials.secret_access_key()),
                    credentials.session_token(),
                ];
                for secret in secrets.into_iter().flatten().filter(|s| s.len() >= 8) {
                    message = message.replace(secret, crate::credentials::REDACTED);
                }
                ApiError::Service {
                    status,
                    kind,
                    message,
                }
            }
            other => other,
        }
    }

    /// A request of reqwest's client to `url` that failed: what is in the way (a proxy, TLS)
    /// is named.
    pub(crate) fn transport(url: &Url, err: &reqwest::Error) -> Self {
        let reason = crate::credentials::error_text(err);
        let proxy = crate::endpoint::proxy_for(url);
        if let Some(proxy) = &proxy
            && TlsProblem::of(err).is_none()
        {
            if let Some(unusable) = proxy.unusable(false) {
                return Self::proxy(proxy, url, ProxyProblem::Unusable, unusable);
            }
            // hyper-util's tunnel (CONNECT, for https:// URLs) says how the proxy answered.
            if reason.contains("tunnel error: proxy authorization required") {
                return Self::proxy(proxy, url, ProxyProblem::Auth, "HTTP 407".to_owned());
            }
            if reason.contains("tunnel error: unsuccessful") {
                return Self::proxy(proxy, url, ProxyProblem::Gateway, reason);
            }
            // Otherwise connecting means connecting to the proxy.
            if err.is_connect() {
                return Self::proxy(proxy, url, ProxyProblem::Unreachable, reason);
            }
        }
        Self::unreached(url, proxy.as_ref(), Some(err), reason)
    }
}

/// The service's message with every session token value replaced by `<redacted>`: AWS's
/// signature errors repeat the canonical request they expected, whose signed
/// `x-amz-security-token` header carries the token, and the message goes on to warnings, bus
/// messages, the summary and the debug log.
fn without_session_token(message: &str) -> String {
    const NAME: &str = "x-amz-security-token";
    let lower = message.to_ascii_lowercase();
    let mut out = String::with_capacity(message.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find(NAME).map(|i| from + i + NAME.len()) {
        // `name:value`, `name=value`, `name: value` (a header), `"name": "value"` (JSON).
        let rest = &message[at..];
        let after_key = rest.len() - rest.trim_start_matches(['"', '\'']).len();
        let spaced = &rest[after_key..];
        let before_sep = spaced.len() - spaced.trim_start().len();
        let Some(sep) = spaced[before_sep..]
            .chars()
            .next()
            .filter(|c| matches!(c, ':' | '='))
        else {
            out.push_str(&message[from..at]);
            from = at;
            continue;
        };
        let after_sep = &spaced[before_sep + sep.len_utf8()..];
        let value_at = message.len() - after_sep.trim_start().trim_start_matches(['"', '\'']).len();
        let value_len = message[value_at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '&' | ',' | ';' | '<'))
            .unwrap_or(message.len() - value_at);
        out.push_str(&message[from..value_at]);
        if value_len > 0 {
            out.push_str(crate::credentials::REDACTED);
        }
        from = value_at + value_len;
    }
    out.push_str(&message[from..]);
    out
}

/// The control-plane endpoint for `region`, in the partition the region belongs to.
pub fn default_control_plane_url(region: &str) -> String {
    crate::endpoint::control_plane_url(region, false, false)
}

/// What DescribeStream says about a stream.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StreamInfo {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    pub status: Option<String>,
    pub media_type: Option<String>,
    pub data_retention_in_hours: Option<u64>,
}

/// Parameters of CreateStream.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateStream<'a> {
    pub stream_name: &'a str,
    pub data_retention_in_hours: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// How to build the HTTP client every Kinesis Video Streams call goes through.
pub struct ClientOptions<'a> {
    pub connect_timeout: Duration,
    /// How long sent data may stay unacknowledged by the peer's TCP before the connection is
    /// given up (TCP_USER_TIMEOUT).
    pub tcp_user_timeout: Duration,
    pub user_agent: &'a str,
    /// Extra CA certificates to trust (PEM).
    pub ca_file: Option<&'a std::path::Path>,
}

/// What makes two clients the same: their options (the CA file's version aside, which
/// [`PerFileVersion`](crate::credentials::http::PerFileVersion) keeps).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_timeout: Duration,
    tcp_user_timeout: Duration,
    user_agent: String,
    ca_file: Option<std::path::PathBuf>,
}

/// The HTTP/1.1 client for the control plane and the media APIs (PutMedia, GetMedia).
///
/// Clients with the same options are one client, shared by every kvssink and kvssrc in the
/// process: building one sets up TLS (the root certificates), which cost more than the rest
/// of a stream's start, and a thousand streams need not hold a thousand copies. It is built
/// again when the CA file changes.
pub fn http_client(options: &ClientOptions<'_>) -> Result<reqwest::Client, String> {
    static CLIENTS: once_cell::sync::Lazy<
        crate::credentials::http::PerFileVersion<ClientKey, reqwest::Client>,
    > = once_cell::sync::Lazy::new(Default::default);
    let key = ClientKey {
        connect_timeout: options.connect_timeout,
        tcp_user_timeout: options.tcp_user_timeout,
        user_agent: options.user_agent.to_owned(),
        ca_file: options.ca_file.map(std::path::Path::to_owned),
    };
    CLIENTS.get_or_build(key, &[options.ca_file], || build_http_client(options))
}

fn build_http_client(options: &ClientOptions<'_>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .tcp_user_timeout(options.tcp_user_timeout)
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(2)
        // A signed request is valid for its host only, and reqwest would carry the session
        // token (not Authorization) to wherever a redirect points, https to http included.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(options.user_agent.to_owned());
    // PutMedia's TLS settings: one set of roots for every request, loaded at the first
    // HTTPS handshake (never, against a plain-HTTP endpoint).
    let tls = crate::uploader::tls_config(options.ca_file)?;
    builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(&tls));
    // The proxy each request goes through, as PutMedia's connection decides it.
    builder = builder.proxy(reqwest::Proxy::custom(|url| {
        crate::endpoint::proxy_for(url).and_then(|p| p.url().cloned())
    }));
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {e}"))
}

/// A signed client for one region's control plane.
#[derive(Clone)]
pub struct ControlPlane {
    client: reqwest::Client,
    base: Url,
    region: String,
    /// Measures the service's clock from every answer and corrects the signing time.
    clock: &'static sigv4::Clock,
}

impl ControlPlane {
    /// A client for `base` (e.g. `https://kinesisvideo.eu-west-1.amazonaws.com`), which must
    /// be an `http` or `https` URL with a host. The operations' names are joined below its
    /// path, whether or not it ends in `/` ([`crate::endpoint::parse_url`]).
    pub fn new(client: reqwest::Client, base: &str, region: &str) -> Result<Self, ApiError> {
        let base = crate::endpoint::parse_url(base).map_err(ApiError::Decode)?;
        Ok(ControlPlane {
            client,
            base,
            region: region.to_owned(),
            clock: &sigv4::CLOCK,
        })
    }

    /// The same control plane through another client (the one for the CA file as it is now).
    pub fn with_client(&self, client: reqwest::Client) -> Self {
        ControlPlane {
            client,
            ..self.clone()
        }
    }

    /// The control-plane base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        credentials: &Credentials,
        operation: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let url = self
            .base
            .join(operation)
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        if let Some(proxy) = crate::endpoint::proxy_for(&url)
            && let Some(unusable) = proxy.unusable(false)
        {
            return Err(ApiError::proxy(
                &proxy,
                &url,
                ProxyProblem::Unusable,
                unusable,
            ));
        }
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let mut request = self
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body.clone())
            .build()
            .map_err(|e| ApiError::transport(&url, &e))?;
        let sent = SystemTime::now();
        sigv4::sign_request_at(
            &mut request,
            credentials,
            &self.region,
            Payload::Bytes(&body),
            self.clock.skew().apply(sent),
        )?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| ApiError::transport(&url, &e))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        self.clock.observe_date_header(
            header("date"),
            header("age").is_some(),
            sent,
            SystemTime::now(),
        );
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let location = header("location").map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::transport(&url, &e))?;
        if (300..400).contains(&status) {
            let to = location.as_deref().map(crate::endpoint::without_userinfo);
            return Err(ApiError::Service {
                status,
                kind: format!("{FOREIGN_KIND}{status}"),
                message: format!(
                    "{} redirects to {}: a signed request holds for its own host only, so \
                     kvssink does not follow redirects. Set control-plane-uri to the endpoint \
                     itself",
                    crate::endpoint::without_userinfo(url.as_str()),
                    to.as_deref().unwrap_or("another place")
                ),
            }
            .through_proxy_of(&url));
        }
        if !(200..300).contains(&status) {
            return Err(
                ApiError::from_response(status, error_type.as_deref(), &bytes)
                    .without_secrets_of(credentials)
                    .through_proxy_of(&url),
            );
        }
        let bytes = if bytes.is_empty() { &b"{}"[..] } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(format!("{operation}: {e}")))
    }

    /// DescribeStream; `Ok(None)` when the stream does not exist.
    pub async fn describe_stream(
        &self,
        credentials: &Credentials,
        stream: &str,
        timeout: Duration,
    ) -> Result<Option<StreamInfo>, ApiError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "StreamInfo")]
            info: StreamInfo,
        }
        let body = serde_json::json!({ "StreamName": stream });
        match self
            .call::<Out>(credentials, "describeStream", &body, timeout)
            .await
        {
            Ok(out) => Ok(Some(out.info)),
            Err(e) if e.kind() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// CreateStream; returns the new stream's ARN.
    pub async fn create_stream(
        &self,
        credentials: &Credentials,
        params: &CreateStream<'_>,
        timeout: Duration,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "StreamARN")]
            arn: String,
        }
        let body = serde_json::to_value(params).map_err(|e| ApiError::Decode(e.to_string()))?;
        Ok(self
            .call::<Out>(credentials, "createStream", &body, timeout)
            .await?
            .arn)
    }

    /// TagStream.
    pub async fn tag_stream(
        &self,
        credentials: &Credentials,
        stream: &str,
        tags: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({ "StreamName": stream, "Tags": tags });
        self.call::<serde_json::Value>(credentials, "tagStream", &body, timeout)
            .await
            .map(|_| ())
    }

    /// GetDataEndpoint for `api` (e.g. `PUT_MEDIA`): the base URL of the data plane, ending in
    /// `/` so that operation paths join onto it. A missing stream is the service's
    /// ResourceNotFoundException.
    pub async fn get_data_endpoint(
        &self,
        credentials: &Credentials,
        stream: &str,
        api: &str,
        timeout: Duration,
    ) -> Result<Url, ApiError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "DataEndpoint")]
            endpoint: String,
        }
        let body = serde_json::json!({ "StreamName": stream, "APIName": api });
        let endpoint = self
            .call::<Out>(credentials, "getDataEndpoint", &body, timeout)
            .await?
            .endpoint;
        let mut url = Url::parse(&endpoint).map_err(|e| {
            let shown = crate::endpoint::without_userinfo(&endpoint);
            ApiError::Decode(format!("GetDataEndpoint returned {shown:?}: {e}"))
        })?;
        // AWS puts no user name or password in it; one would not be sent, nor printed.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        crate::endpoint::with_trailing_slash(&mut url);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for webpki's error of that name (what rustls shows of it is its Debug).
    #[derive(Debug)]
    struct CaUsedAsEndEntity;

    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CA used as end entity")
        }
    }

    impl std::error::Error for CaUsedAsEndEntity {}

    #[test]
    fn a_session_token_in_the_service_message_is_redacted() {
        // AWS's signature error repeats the canonical request it expected, token included.
        let body = br#"{"message":"The request signature we calculated does not match the signature you provided.\n\nThe Canonical String for this request should have been\n'POST\n/describeStream\n\nhost:kinesisvideo.us-east-1.amazonaws.com\nx-amz-date:20261203T000000Z\nX-Amz-Security-Token:IQoJb3JpZ2luX2VjEJr//TOKEN+abc=\n\nhost;x-amz-date;x-amz-security-token\n0123'\n\nAlso ?X-Amz-Security-Token=IQoJTOKEN2&X-Amz-Date=1"}"#;
        let e = ApiError::from_response(403, Some("InvalidSignatureException"), body);
        let text = e.to_string();
        assert!(!text.contains("TOKEN"), "{text}");
        assert!(text.contains("X-Amz-Security-Token:<redacted>\n"), "{text}");
        assert!(
            text.contains("?X-Amz-Security-Token=<redacted>&X-Amz-Date=1"),
            "{text}"
        );
        // The signed header names stay: they say the token was signed.
        assert!(
            text.contains("host;x-amz-date;x-amz-security-token\n0123"),
            "{text}"
        );
        assert!(text.starts_with("InvalidSignatureException (HTTP 403): The request signature"));
    }

    #[test]
    fn a_session_token_quoted_as_a_header_or_in_json_is_redacted_too() {
        // A gateway's page or JSON echoing the request's headers.
        for body in [
            &b"<pre>x-amz-security-token: IQoJTOKEN3 </pre>"[..],
            br#"{"headers":{"x-amz-security-token": "IQoJTOKEN4"}}"#,
            b"X-Amz-Security-Token =IQoJTOKEN5\n",
        ] {
            let text = ApiError::from_response(502, None, body).to_string();
            assert!(!text.contains("TOKEN"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        // Any other form: the values sent are replaced wherever they appear.
        let credentials = aws_credential_types::Credentials::new(
            "ASIAEXAMPLE",
            "wJalrSECRETKEYEXAMPLE",
            Some("IQoJTOKEN6abcdef".to_owned()),
            None,
            "test",
        );
        let e = ApiError::from_response(
            400,
            None,
            b"echo: token IQoJTOKEN6abcdef, key wJalrSECRETKEYEXAMPLE",
        )
        .without_secrets_of(&credentials);
        let text = e.to_string();
        assert!(
            !text.contains("TOKEN6") && !text.contains("SECRETKEY"),
            "{text}"
        );
    }

    #[test]
    fn error_name_from_header_or_body() {
        let e = ApiError::from_response(
            404,
            None,
            br#"{"__type":"ResourceNotFoundException","Message":"Stream x not found"}"#,
        );
        assert_eq!(e.kind(), Some("ResourceNotFoundException"));
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("Stream x not found"));

        let e = ApiError::from_response(
            403,
            Some("InvalidSignatureException:http://internal.amazon.com/coral/"),
            br#"{"message":"The request signature we calculated does not match"}"#,
        );
        assert_eq!(e.kind(), Some("InvalidSignatureException"));
        assert!(e.is_auth());
        assert!(e.to_string().contains("does not match"));

        let e = ApiError::from_response(400, None, br#"{"__type":"ClientLimitExceededException"}"#);
        assert!(e.is_retriable());
        let e = ApiError::from_response(503, None, b"<html>busy</html>");
        assert!(e.is_retriable());
        assert_eq!(e.kind(), Some("HTTP503"));
    }

    #[test]
    fn throttling_and_clock_errors_are_recognised() {
        for (status, kind) in [
            (400, "ClientLimitExceededException"),
            (400, "ConnectionLimitExceededException"),
            (400, "ThrottlingException"),
            (429, "HTTP429"),
        ] {
            let e = ApiError::from_response(status, Some(kind), b"{}");
            assert!(
                e.is_throttling() && e.is_retriable() && !e.is_auth(),
                "{kind}"
            );
        }
        let e = ApiError::from_response(400, Some("AccountStreamLimitExceededException"), b"{}");
        assert!(!e.is_throttling() && !e.is_retriable());

        let expired = ApiError::from_response(
            403,
            Some("InvalidSignatureException"),
            br#"{"message":"Signature expired: 20231114T220320Z is now earlier than 20231114T220820Z (20231114T221320Z - 5 min.)"}"#,
        );
        assert!(expired.is_auth() && expired.is_clock_skew());
        // Without the service's time, a signature error is the clock's only when the measured
        // skew says so (not in these tests, which never skew the process's clock).
        let mismatch = ApiError::from_response(
            403,
            Some("InvalidSignatureException"),
            br#"{"message":"The request signature we calculated does not match"}"#,
        );
        assert!(!mismatch.is_clock_skew());
        let unknown = ApiError::from_response(403, Some("UnrecognizedClientException"), b"{}");
        assert!(!unknown.is_clock_skew() && unknown.correct_clock().is_none());
    }

    #[test]
    fn tls_errors_that_say_what_to_change_are_told_apart() {
        use rustls::{CertificateError, InvalidMessage};
        // As tokio-rustls gives them: inside an io::Error, whose `source` skips them.
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        for (error, problem) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Some(TlsProblem::UnknownIssuer),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                Some(TlsProblem::WrongName),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                Some(TlsProblem::Dates),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Revoked),
                Some(TlsProblem::Certificate),
            ),
            (
                rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType),
                Some(TlsProblem::NotTls),
            ),
            (
                // webpki's CaUsedAsEndEntity, as rustls passes it on.
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    std::sync::Arc::new(CaUsedAsEndEntity),
                ))),
                Some(TlsProblem::CaAsServer),
            ),
            (rustls::Error::General("something else".into()), None),
        ] {
            assert_eq!(TlsProblem::of(&io(error.clone())), problem, "{error}");
            assert_eq!(TlsProblem::of(&error), problem, "{error}");
        }
        assert_eq!(TlsProblem::of(&std::io::Error::other("refused")), None);

        let url = Url::parse("https://kvs.example.com:8443/putMedia").unwrap();
        let cause = io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let e = ApiError::unreached(&url, None, Some(&cause), "TLS handshake failed".into());
        assert!(e.is_unreached() && e.is_retriable() && e.needs_a_change());
        assert!(
            e.to_string().starts_with(
                "cannot reach https://kvs.example.com:8443: TLS handshake failed; the \
                 endpoint's certificate is not issued by a CA trusted here: give that CA's \
                 certificate in ca-file"
            ),
            "{e}"
        );
        let e = ApiError::unreached(&url, None, None, "connection refused".into());
        assert!(matches!(e, ApiError::Transport { .. }));
        assert!(e.is_unreached() && e.is_retriable() && !e.needs_a_change());
    }

    #[test]
    fn what_a_proxy_did_decides_whether_to_try_again() {
        let proxy = crate::endpoint::tests_support::proxy("http://user:Secret1@10.0.0.1:3128");
        let url = Url::parse("http://127.0.0.1:4711/describeStream").unwrap();
        for (problem, unreached, retriable) in [
            (ProxyProblem::Unreachable, true, true),
            (ProxyProblem::Gateway, true, true),
            (ProxyProblem::Auth, false, false),
            (ProxyProblem::Refused, false, false),
            (ProxyProblem::Unusable, false, false),
        ] {
            let e = ApiError::proxy(&proxy, &url, problem, "HTTP 407".into());
            assert_eq!(e.is_unreached(), unreached, "{problem:?}");
            assert_eq!(e.is_retriable(), retriable, "{problem:?}");
            assert_eq!(e.needs_a_change(), !unreached, "{problem:?}");
            assert_eq!(e.is_proxy_auth(), problem == ProxyProblem::Auth);
            assert!(!e.is_auth() && !e.is_foreign() && e.kind().is_none());
            let text = e.to_string();
            assert!(
                text.contains("the proxy 10.0.0.1:3128 (from http_proxy)"),
                "{text}"
            );
            assert!(text.contains("http://127.0.0.1:4711"), "{text}");
            assert!(!text.contains("Secret1"), "{text}");
        }
    }

    #[test]
    fn partition_endpoints() {
        assert_eq!(
            default_control_plane_url("eu-west-1"),
            "https://kinesisvideo.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            default_control_plane_url("cn-north-1"),
            "https://kinesisvideo.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn create_stream_body_has_aws_field_names() {
        let mut tags = BTreeMap::new();
        tags.insert("site".to_owned(), "lab".to_owned());
        let body = serde_json::to_value(CreateStream {
            stream_name: "cam1",
            data_retention_in_hours: 2,
            media_type: Some("video/h264"),
            device_name: None,
            kms_key_id: None,
            tags,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"StreamName":"cam1","DataRetentionInHours":2,
                "MediaType":"video/h264","Tags":{"site":"lab"}})
        );
    }
}
