//! Server configuration and credentials.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Access key id of the demo key pair accepted when no key is configured.
pub const DEMO_ACCESS_KEY: &str = "KVSLOCALDEMOACCESSKEY";
/// Secret access key of the demo key pair accepted when no key is configured.
pub const DEMO_SECRET_KEY: &str = "kvs-local-demo-secret-key";

/// One accepted credential: an access key id, its secret, and optionally the
/// session token that must accompany it and the time the token expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    /// Access key id (the `Credential=` prefix of the Authorization header).
    pub access_key: String,
    /// Secret access key used to derive the signing key.
    pub secret_key: String,
    /// When set, requests must carry this value in `x-amz-security-token`.
    pub session_token: Option<String>,
    /// When set, requests after this instant fail with `ExpiredTokenException`.
    pub expires_at: Option<SystemTime>,
}

impl KeyPair {
    /// A key pair without session token or expiry.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        KeyPair {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: None,
            expires_at: None,
        }
    }

    /// The documented demo key pair ([`DEMO_ACCESS_KEY`], [`DEMO_SECRET_KEY`]).
    pub fn demo() -> Self {
        KeyPair::new(DEMO_ACCESS_KEY, DEMO_SECRET_KEY)
    }

    /// Adds a session token that requests must present.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Sets the instant after which the credential counts as expired.
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Parses `AKID:SECRET` or `AKID:SECRET:TOKEN`.
    pub fn parse(spec: &str) -> Result<KeyPair, String> {
        let mut parts = spec.splitn(3, ':');
        let access = parts.next().unwrap_or_default().trim();
        let secret = parts.next().unwrap_or_default().trim();
        let token = parts.next().map(str::trim).filter(|t| !t.is_empty());
        if access.is_empty() || secret.is_empty() {
            return Err(format!(
                "invalid key {spec:?}: expected ACCESS_KEY:SECRET or ACCESS_KEY:SECRET:TOKEN"
            ));
        }
        let mut kp = KeyPair::new(access, secret);
        kp.session_token = token.map(str::to_owned);
        Ok(kp)
    }

    /// Parses a comma-separated list such as the `KVS_LOCAL_KEYS` variable.
    pub fn parse_list(list: &str) -> Result<Vec<KeyPair>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(KeyPair::parse)
            .collect()
    }
}

/// Configuration of a [`crate::Server`].
#[derive(Clone, Debug)]
pub struct Config {
    /// TCP port; 0 picks a free port.
    pub port: u16,
    /// Address to bind (default 127.0.0.1).
    pub bind: IpAddr,
    /// Directory for durable storage; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Accepted credentials. Empty means: only the demo key pair.
    pub keys: Vec<KeyPair>,
    /// When set, only this region is accepted in the credential scope.
    pub region: Option<String>,
    /// How often an `IDLE` ack is sent while no PutMedia data arrives.
    pub idle_ack_interval: Duration,
    /// After this long without PutMedia data the response is ended.
    pub idle_timeout: Duration,
    /// How long a stream stays `CREATING` after CreateStream. Default 0:
    /// ACTIVE at once, so that clients that PutMedia right after
    /// CreateStream (AWS's C producer) succeed, as they do against the service.
    pub creating_delay: Duration,
    /// Largest accepted fragment (cluster) in bytes; larger ones get ERROR 4001.
    pub max_fragment_size: u64,
    /// Longest accepted fragment duration; longer ones get ERROR 4002.
    pub max_fragment_duration: Duration,
    /// Largest accepted clock skew of `X-Amz-Date`.
    pub max_clock_skew: Duration,
    /// Producer timestamps further than this in the future get ERROR 4007.
    pub max_future_timestamp: Duration,
    /// Whether each fragment must start (first block of the first video track)
    /// with a key frame; violations get ERROR 4006 for that fragment.
    pub require_key_frame: bool,
    /// Whether every header track needs a frame in every fragment (ERROR 4011).
    /// Off by default: audio may legitimately lag behind video in a cluster.
    pub require_all_tracks: bool,
    /// How long GetMedia keeps following a stream once it has caught up.
    pub get_media_follow: Duration,
    /// Discard PutMedia bodies instead of storing them (`--discard-media`), for measuring a
    /// producer rather than the server: requests are authenticated and checked as usual and
    /// every fragment is acked (BUFFERING, RECEIVED, PERSISTED, with fragment numbers), but
    /// the body is only scanned for the stream header and cluster boundaries
    /// ([`crate::mkv::Parser::boundaries_only`]): no fragment is stored, and none of the
    /// per-fragment rules (size, duration, key frame, track, timecode order, producer
    /// timestamp) is checked. Malformed Matroska still ends the session with ERROR 4006.
    /// The report lists each fragment with outcome `discarded`.
    pub discard_media: bool,
    /// Record the arrival of every PutMedia body chunk in the report (`--record-body-reads`):
    /// [`crate::report::SessionRecord::reads`].
    pub record_body_reads: bool,
    /// Print a line per request/rejection to stderr.
    pub log: bool,
    /// What GetDataEndpoint answers (`--public-url`), when clients reach this endpoint at
    /// another address than its own: through a TLS terminator, a proxy or a port mapping.
    /// `None`: `http://` and the address the request reached.
    pub public_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            data_dir: None,
            keys: Vec::new(),
            region: None,
            idle_ack_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            creating_delay: Duration::ZERO,
            max_fragment_size: kvs_format::kvs::MAX_FRAGMENT_SIZE,
            max_fragment_duration: kvs_format::kvs::MAX_FRAGMENT_DURATION,
            max_clock_skew: Duration::from_secs(5 * 60),
            max_future_timestamp: Duration::from_secs(10 * 60),
            require_key_frame: true,
            require_all_tracks: false,
            get_media_follow: Duration::from_secs(2),
            discard_media: false,
            record_body_reads: false,
            log: std::env::var("KVS_LOCAL_LOG")
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false),
            public_url: None,
        }
    }
}

impl Config {
    /// The key pairs actually accepted (the demo pair when none are configured).
    pub fn effective_keys(&self) -> Vec<KeyPair> {
        if self.keys.is_empty() {
            vec![KeyPair::demo()]
        } else {
            self.keys.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keys() {
        let k = KeyPair::parse("AK:SK").unwrap();
        assert_eq!(k, KeyPair::new("AK", "SK"));
        let k = KeyPair::parse("AK:SK:TOK").unwrap();
        assert_eq!(k.session_token.as_deref(), Some("TOK"));
        assert!(KeyPair::parse("AK").is_err());
        assert!(KeyPair::parse(":SK").is_err());
        let l = KeyPair::parse_list("A:B, C:D:E,").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].access_key, "C");
    }

    #[test]
    fn demo_when_empty() {
        let c = Config::default();
        assert_eq!(c.effective_keys(), vec![KeyPair::demo()]);
    }
}
