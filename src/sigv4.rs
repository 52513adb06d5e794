//! SigV4 signing of Kinesis Video Streams requests with `aws-sigv4`.
//!
//! Control-plane calls sign the hash of their JSON body; PutMedia signs its live, endless body as
//! `UNSIGNED-PAYLOAD` and sends `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as AWS advises for
//! streaming uploads.
//!
//! Clock skew is corrected as the AWS SDKs do (aws-sdk-rust's `ServiceClockSkewInterceptor`):
//! the service's clock is measured from the `Date` header of every control-plane answer (or,
//! for an answer without one, from the server time AWS writes in a "Signature expired" message),
//! and requests are signed at this machine's time plus that skew. A signature error is put down
//! to the clock when the skew is over [`SKEW_THRESHOLD`].

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use http::{HeaderName, HeaderValue};

/// The SigV4 signing name of every Kinesis Video Streams API.
pub const SERVICE: &str = "kinesisvideo";

/// What the signature covers of the body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A body known in full (control plane): its SHA-256 is signed.
    Bytes(&'a [u8]),
    /// A live streaming body (PutMedia): signed as `UNSIGNED-PAYLOAD`.
    Unsigned,
}

/// Signing failed (bad URL or header values; never the credentials themselves).
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not sign the request: {0}")]
pub struct SignError(String);

/// Signs `request` in place for `region`, adding `Authorization`, `X-Amz-Date`,
/// `x-amz-content-sha256` and, with temporary credentials, `X-Amz-Security-Token`. `time` is
/// this machine's clock: the skew measured by [`CLOCK`] is added to it.
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    sign_request_at(
        request,
        credentials,
        region,
        payload,
        CLOCK.skew().apply(time),
    )
}

/// Like [`sign_request`], signing at exactly `time` (no skew correction).
pub fn sign_request_at(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    let method = request.method().clone();
    let url = request.url().clone();
    sign_headers(
        method.as_str(),
        url.as_str(),
        request.headers_mut(),
        credentials,
        region,
        payload,
        time,
    )
}

/// Like [`sign_request`], for a request in parts (PutMedia's own connection): `headers` get
/// the signature.
pub fn sign_parts(
    method: &http::Method,
    url: &url::Url,
    headers: &mut http::HeaderMap,
    credentials: &Credentials,
    region: &str,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    sign_headers(
        method.as_str(),
        url.as_str(),
        headers,
        credentials,
        region,
        payload,
        CLOCK.skew().apply(time),
    )
}

fn sign_headers(
    method: &str,
    url: &str,
    request_headers: &mut http::HeaderMap,
    credentials: &Credentials,
    region: &str,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();

    let headers = request_headers
        .iter()
        .map(|(name, value)| {
            value
                .to_str()
                .map(|v| (name.as_str(), v))
                .map_err(|_| SignError(format!("header {name} is not ASCII")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = match payload {
        Payload::Bytes(bytes) => SignableBody::Bytes(bytes),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let signable = SignableRequest::new(method, url, headers.into_iter(), body)
        .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let (new_headers, _) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_static(header.name());
        let mut value =
            HeaderValue::from_str(header.value()).map_err(|e| SignError(e.to_string()))?;
        value.set_sensitive(header.sensitive());
        request_headers.insert(name, value);
    }
    Ok(())
}

/// Below this skew, a signature error is a signature error, not the clock's fault; above it, a
/// request refused with one of [`SKEW_ERROR_CODES`] is signed again with the service's time
/// (the AWS SDKs' threshold: 4 minutes, the service allowing 5).
pub const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// A round trip longer than this tells nothing reliable about the service's clock.
const MAX_TRUSTED_ROUND_TRIP: Duration = Duration::from_secs(15 * 60);

/// Errors that a wrong clock causes (the AWS SDKs' list: aws-sdk-rust, and `RequestExpired`,
/// `RequestInTheFuture` from the Java SDK's).
pub const SKEW_ERROR_CODES: &[&str] = &[
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestTimeTooSkewed",
    "RequestExpired",
    "RequestInTheFuture",
    "AccessDeniedException",
];

/// How far the service's clock is ahead of this machine's (negative: behind), in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skew(pub i64);

impl Skew {
    /// Its size, whichever way.
    pub fn magnitude(self) -> Duration {
        Duration::from_millis(self.0.unsigned_abs())
    }

    /// Whether a signature error with this skew is put down to the clock.
    pub fn is_significant(self) -> bool {
        self.magnitude() > SKEW_THRESHOLD
    }

    /// This machine's `time` as the service's clock reads it.
    pub fn apply(self, time: SystemTime) -> SystemTime {
        let shift = self.magnitude();
        if self.0 >= 0 {
            time.checked_add(shift)
        } else {
            time.checked_sub(shift)
        }
        .unwrap_or(time)
    }
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = (self.magnitude().as_millis() + 500) / 1000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let way = if self.0 > 0 { "behind" } else { "ahead of" };
        f.write_str("the clock of this machine is ")?;
        if h > 0 {
            write!(f, "{h} h {m} min ")?;
        } else if m > 0 {
            write!(f, "{m} min ")?;
        }
        write!(f, "{s} s {way} the service's")
    }
}

/// The skew between this machine's clock and the service's, as last measured, and kept true
/// when this machine's clock is set (stepped) after the measurement: the service's time goes
/// on with the boot clock, which no setting moves.
#[derive(Debug, Default)]
pub struct Clock {
    measured: Mutex<Option<Measured>>,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    skew_ms: i64,
    /// This machine's clock and the boot clock when it was measured (ms).
    wall_ms: i64,
    boot_ms: i64,
}

impl Measured {
    /// The skew when this machine's clock reads `wall_ms` and the boot clock `boot_ms`: a
    /// setting of the clock since the measurement moved it that much against the service's.
    fn skew_at(self, wall_ms: i64, boot_ms: i64) -> Skew {
        let step = (wall_ms - self.wall_ms) - (boot_ms - self.boot_ms);
        if step.abs() < STEP_TOLERANCE_MS {
            Skew(self.skew_ms)
        } else {
            Skew(self.skew_ms - step)
        }
    }
}

/// Moves of this machine's clock against the boot clock smaller than this (ms) are the
/// grain of reading the two, or NTP's gradual corrections: not a setting of the clock.
const STEP_TOLERANCE_MS: i64 = 1_000;

/// The skew of this process's requests: one machine clock, and every AWS endpoint keeps the
/// same time, so one measurement serves the control plane and PutMedia alike.
pub static CLOCK: Clock = Clock::new();

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `CLOCK_BOOTTIME` (ms): monotonic, and it goes on during a suspend, as the service's time
/// does.
// `time_t` and `c_long` are `i64` here, `i32` on some 32-bit targets (cameras).
#[allow(clippy::unnecessary_cast)]
fn boot_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as i64 * 1000 + ts.tv_nsec as i64 / 1_000_000
}

impl Clock {
    pub const fn new() -> Clock {
        Clock {
            measured: Mutex::new(None),
        }
    }

    pub fn skew(&self) -> Skew {
        match *self.measured.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(m) => m.skew_at(wall_ms(), boot_ms()),
            None => Skew(0),
        }
    }

    /// The skew, if the service's clock was ever measured.
    pub fn measured_skew(&self) -> Option<Skew> {
        self.measured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|m| m.skew_at(wall_ms(), boot_ms()))
    }

    /// This machine's time now, corrected for the skew.
    pub fn now(&self) -> SystemTime {
        self.skew().apply(SystemTime::now())
    }

    /// Records the skew that a service `server` time implies for a request sent at `sent` and
    /// answered at `received` (local times): the service is taken to have read its clock half
    /// way through, as NTP does. A round trip too long to be trusted is ignored. Returns the
    /// skew now in use.
    pub fn observe(&self, server: SystemTime, sent: SystemTime, received: SystemTime) -> Skew {
        let Ok(round_trip) = received.duration_since(sent) else {
            return self.skew();
        };
        if round_trip > MAX_TRUSTED_ROUND_TRIP {
            return self.skew();
        }
        let midpoint = sent + round_trip / 2;
        let ms = match server.duration_since(midpoint) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        *self.measured.lock().unwrap_or_else(|e| e.into_inner()) = Some(Measured {
            skew_ms: ms,
            wall_ms: wall_ms(),
            boot_ms: boot_ms(),
        });
        Skew(ms)
    }

    /// Records the skew from an HTTP `Date` header (RFC 7231 format), unless the answer came
    /// from a cache (`Age`): see [`Clock::observe`].
    pub fn observe_date_header(
        &self,
        date: Option<&str>,
        age: bool,
        sent: SystemTime,
        received: SystemTime,
    ) -> Option<Skew> {
        if age {
            return None;
        }
        let server = DateTime::from_str(date?.trim(), Format::HttpDate).ok()?;
        let server = SystemTime::try_from(server).ok()?;
        Some(self.observe(server, sent, received))
    }
}

/// The service's time in a SigV4 time error, which AWS words as `Signature expired: <X-Amz-Date>
/// is now earlier than <limit> (<server time> - 5 min.)` or `Signature not yet current: ... is
/// still later than <limit> (<server time> + 5 min.)`.
pub fn server_time_in_message(message: &str) -> Option<SystemTime> {
    let (_, tail) = message.rsplit_once('(')?;
    let stamp = tail.split([' ', ')']).next()?;
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let time = DateTime::from_str(&iso, Format::DateTime).ok()?;
    SystemTime::try_from(time).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn request(body: &'static str) -> reqwest::Request {
        let client = reqwest::Client::new();
        client
            .post("https://kinesisvideo.eu-west-1.amazonaws.com/describeStream")
            .header("content-type", "application/json")
            .body(body)
            .build()
            .unwrap()
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn signs_hashed_body_with_scope_and_checksum_header() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let mut req = request("{}");
        sign_request_at(&mut req, &creds, "eu-west-1", Payload::Bytes(b"{}"), at()).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/kinesisvideo/aws4_request"
            ),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date"));
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            // SHA-256 of "{}"
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(req.headers()["x-amz-date"], "20231114T221320Z");
    }

    #[test]
    fn streaming_body_is_unsigned_and_token_is_added() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("tok".into()), None, "test");
        let mut req = request("");
        sign_request_at(&mut req, &creds, "us-east-1", Payload::Unsigned, at()).unwrap();
        assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(req.headers()["x-amz-security-token"], "tok");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
    }

    #[test]
    fn signature_depends_on_secret_and_body() {
        let sig = |secret: &str, body: &'static str| {
            let creds = Credentials::new("AKIDEXAMPLE", secret, None, None, "test");
            let mut req = request(body);
            sign_request_at(
                &mut req,
                &creds,
                "eu-west-1",
                Payload::Bytes(body.as_bytes()),
                at(),
            )
            .unwrap();
            req.headers()["authorization"].to_str().unwrap().to_owned()
        };
        assert_eq!(sig("a", "{}"), sig("a", "{}"));
        assert_ne!(sig("a", "{}"), sig("b", "{}"));
        assert_ne!(sig("a", "{}"), sig("a", "{ }"));
    }

    #[test]
    fn skew_from_the_date_header_corrects_the_signing_time() {
        let clock = Clock::new();
        let sent = at();
        let received = sent + Duration::from_secs(2);
        // The service answers 7 minutes ahead of this machine.
        let date = aws_smithy_types::DateTime::from(sent + Duration::from_secs(7 * 60 + 1))
            .fmt(Format::HttpDate)
            .unwrap();
        let skew = clock
            .observe_date_header(Some(&date), false, sent, received)
            .unwrap();
        assert_eq!(skew, Skew(420_000));
        assert!(skew.is_significant());
        assert_eq!(clock.skew(), skew);
        assert_eq!(skew.apply(sent), sent + Duration::from_secs(420));
        assert_eq!(
            skew.to_string(),
            "the clock of this machine is 7 min 0 s behind the service's"
        );
        assert_eq!(
            Skew(-3_723_400).to_string(),
            "the clock of this machine is 1 h 2 min 3 s ahead of the service's"
        );
        assert!(!Skew(-239_000).is_significant());

        let mut req = request("{}");
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        sign_request_at(
            &mut req,
            &creds,
            "eu-west-1",
            Payload::Bytes(b"{}"),
            clock.skew().apply(at()),
        )
        .unwrap();
        assert_eq!(req.headers()["x-amz-date"], "20231114T222020Z");

        // A cached answer, an unreadable date or a slow round trip tell nothing.
        let other = Clock::new();
        assert_eq!(
            other.observe_date_header(Some(&date), true, sent, received),
            None
        );
        assert_eq!(
            other.observe_date_header(Some("yesterday"), false, sent, received),
            None
        );
        other.observe(
            sent + Duration::from_secs(3600),
            sent,
            sent + Duration::from_secs(3600),
        );
        assert_eq!(other.skew(), Skew(0));
    }

    #[test]
    fn a_clock_set_after_the_measurement_keeps_the_service_time() {
        // Measured an hour behind the service, at boot clock 50 s.
        let m = Measured {
            skew_ms: 3_600_000,
            wall_ms: 1_000_000,
            boot_ms: 50_000,
        };
        // 10 s later, untouched (and with half a second of reading grain): the same skew.
        assert_eq!(m.skew_at(1_010_000, 60_000), Skew(3_600_000));
        assert_eq!(m.skew_at(1_010_500, 60_000), Skew(3_600_000));
        // NTP set the clock an hour forward: it now agrees with the service.
        assert_eq!(m.skew_at(4_610_000, 60_000), Skew(0));
        // Set two minutes back instead: two more minutes behind.
        assert_eq!(m.skew_at(890_000, 60_000), Skew(3_720_000));
        // Monotonic and steady, the boot clock moves on with the wall clock.
        let (w0, b0) = (wall_ms(), boot_ms());
        std::thread::sleep(Duration::from_millis(20));
        let (w1, b1) = (wall_ms(), boot_ms());
        assert!(((w1 - w0) - (b1 - b0)).abs() < 10 && b1 - b0 >= 20);
    }

    #[test]
    fn server_time_from_aws_skew_messages() {
        let expired = "Signature expired: 20231114T222820Z is now earlier than \
                       20231114T220820Z (20231114T221320Z - 5 min.)";
        assert_eq!(server_time_in_message(expired), Some(at()));
        let future = "Signature not yet current: 20231114T222820Z is still later than \
                      20231114T221820Z (20231114T221320Z + 5 min.)";
        assert_eq!(server_time_in_message(future), Some(at()));
        assert_eq!(
            server_time_in_message("The request signature we calculated does not match"),
            None
        );
        assert_eq!(server_time_in_message("(x)"), None);
    }
}
