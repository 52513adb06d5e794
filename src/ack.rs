//! PutMedia acknowledgement stream: parser, error classification and advice (the `ErrorId`
//! names are `kvs_format::kvs::ERROR_CODES`).
//!
//! The service answers a PutMedia request with a stream of JSON objects, normally one per
//! line, e.g. `{"EventType":"PERSISTED","FragmentTimecode":12000,"FragmentNumber":"9134..."}`.
//! [`AckParser`] scans balanced `{…}` objects (respecting JSON strings and escapes)
//! whatever separates them — newlines, `\r\n`, nothing, several per chunk, objects split
//! across chunks at any byte — and decodes each one with `serde_json`. Unknown fields are
//! ignored; bytes outside objects are ignored.

use serde::Deserialize;

/// Largest ack object accepted; a larger one is reported ([`AckError::TooLarge`]) and
/// skipped up to its closing brace.
pub const MAX_ACK_SIZE: usize = 64 * 1024;

/// `EventType` of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckEventType {
    /// The first bytes of a fragment arrived.
    Buffering,
    /// The whole fragment arrived.
    Received,
    /// The fragment is durably stored.
    Persisted,
    /// An error (with `ErrorId`/`ErrorCode`).
    Error,
    /// The session is open but no data is arriving.
    Idle,
}

impl AckEventType {
    /// The wire name, e.g. `"BUFFERING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckEventType::Buffering => "BUFFERING",
            AckEventType::Received => "RECEIVED",
            AckEventType::Persisted => "PERSISTED",
            AckEventType::Error => "ERROR",
            AckEventType::Idle => "IDLE",
        }
    }

    /// Parses a wire name (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [
            AckEventType::Buffering,
            AckEventType::Received,
            AckEventType::Persisted,
            AckEventType::Error,
            AckEventType::Idle,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for AckEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// What happened.
    pub event_type: AckEventType,
    /// Cluster timecode of the fragment, as sent (absent on IDLE and some ERRORs).
    pub fragment_timecode: Option<u64>,
    /// Service-assigned fragment number (a long decimal string).
    pub fragment_number: Option<String>,
    /// `ErrorId` of an ERROR ack, e.g. 4006.
    pub error_id: Option<u32>,
    /// `ErrorCode` of an ERROR ack, e.g. `INVALID_MKV_DATA`.
    pub error_code: Option<String>,
}

/// An object of the ack stream that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Not valid JSON, or a field of the wrong type, or no `EventType`.
    #[error("malformed PutMedia ack ({reason}): {snippet}")]
    Malformed {
        /// What serde_json said.
        reason: String,
        /// The beginning of the object (at most 200 bytes, lossy UTF-8).
        snippet: String,
    },
    /// `EventType` is not one of the known five.
    #[error("PutMedia ack with unknown EventType {0:?}")]
    UnknownEventType(String),
    /// An object larger than [`MAX_ACK_SIZE`]; it was skipped.
    #[error("PutMedia ack object larger than {limit} bytes; skipped")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Incremental scanner and decoder of the ack stream.
#[derive(Debug, Default)]
pub struct AckParser {
    buf: Vec<u8>,
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Skipping the rest of an oversized object.
    skipping: bool,
}

impl AckParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the response body; each complete object yields one result.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Result<Ack, AckError>>) {
        let mut i = 0;
        while i < data.len() {
            if self.depth == 0 {
                // Between objects: find the next opening brace.
                match data[i..].iter().position(|&b| b == b'{') {
                    Some(p) => {
                        i += p;
                        self.buf.clear();
                    }
                    None => return,
                }
            }
            // Inside an object: scan to its end or to the end of the chunk.
            let start = i;
            let mut closed = false;
            while i < data.len() {
                let b = data[i];
                i += 1;
                if self.in_string {
                    if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => self.in_string = true,
                    b'{' => self.depth += 1,
                    b'}' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            closed = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if !self.skipping {
                if self.buf.len() + (i - start) > MAX_ACK_SIZE {
                    self.skipping = true;
                    self.buf = Vec::new();
                    out.push(Err(AckError::TooLarge {
                        limit: MAX_ACK_SIZE,
                    }));
                } else {
                    self.buf.extend_from_slice(&data[start..i]);
                }
            }
            if closed {
                if !self.skipping {
                    out.push(decode(&self.buf));
                }
                self.skipping = false;
                self.buf.clear();
            }
        }
    }

    /// Bytes of an incomplete object held (for diagnostics).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Decodes one JSON object.
pub fn decode(object: &[u8]) -> Result<Ack, AckError> {
    let raw: RawAck<'_> = serde_json::from_slice(object).map_err(|e| AckError::Malformed {
        reason: e.to_string(),
        snippet: String::from_utf8_lossy(&object[..object.len().min(200)]).into_owned(),
    })?;
    let Some(et) = raw.event_type else {
        return Err(AckError::Malformed {
            reason: "no EventType".into(),
            snippet: String::from_utf8_lossy(&object[..object.len().min(200)]).into_owned(),
        });
    };
    let event_type =
        AckEventType::parse(&et).ok_or_else(|| AckError::UnknownEventType(et.into_owned()))?;
    Ok(Ack {
        event_type,
        fragment_timecode: raw.fragment_timecode.map(|v| v.0),
        fragment_number: raw.fragment_number.map(|v| v.0),
        error_id: raw.error_id.and_then(|v| u32::try_from(v.0).ok()),
        error_code: raw.error_code.map(|c| c.into_owned()),
    })
}

#[derive(Deserialize)]
struct RawAck<'a> {
    #[serde(rename = "EventType", borrow, default)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "FragmentTimecode", default)]
    fragment_timecode: Option<LenientU64>,
    #[serde(rename = "FragmentNumber", default)]
    fragment_number: Option<LenientString>,
    #[serde(rename = "ErrorId", default)]
    error_id: Option<LenientU64>,
    #[serde(rename = "ErrorCode", borrow, default)]
    error_code: Option<std::borrow::Cow<'a, str>>,
}

/// A number that may also arrive as a decimal string.
struct LenientU64(u64);

impl<'de> Deserialize<'de> for LenientU64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LenientU64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LenientU64, E> {
                Ok(LenientU64(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LenientU64, E> {
                u64::try_from(v)
                    .map(LenientU64)
                    .map_err(|_| E::custom("negative number"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LenientU64, E> {
                v.trim().parse().map(LenientU64).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string that may also arrive as a number (fragment numbers are long decimals).
struct LenientString(String);

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LenientString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LenientString, E> {
                Ok(LenientString(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LenientString, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<LenientString, E> {
                Ok(LenientString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// What an ERROR ack means for the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient: reconnect (new PutMedia session) and resend from the unacknowledged
    /// fragments. 4000 (STREAM_READ_ERROR: the service failed reading the connection),
    /// 4003, 5000, 5001, and unknown ids outside 4000–4599.
    Retriable,
    /// This fragment is bad and will fail again if resent unchanged: drop it and go on.
    /// 4001, 4002, 4004–4007, 4009–4012, and unknown ids in 4000–4499.
    BadFragment,
    /// The stream cannot take data (deleted, inactive, KMS key problem): stop. 4008,
    /// 4500–4599.
    Fatal,
}

/// Name of a PutMedia `ErrorId`, e.g. 4006 → `INVALID_MKV_DATA`: the table of the
/// `kvs-format` crate, shared with kvs-local.
pub use kvs_format::kvs::error_name;

/// Classifies a PutMedia `ErrorId` (see [`ErrorClass`]).
pub fn classify(id: u32) -> ErrorClass {
    match id {
        4000 | 4003 | 5000 | 5001 => ErrorClass::Retriable,
        4008 | 4500..=4599 => ErrorClass::Fatal,
        4001..=4499 => ErrorClass::BadFragment,
        _ => ErrorClass::Retriable,
    }
}

/// Advice for the known `ErrorId`s.
const ADVICE: &[(u32, &str)] = &[
    (
        4000,
        "the service could not read the upload (network trouble?); kvssink reconnects and resends",
    ),
    (
        4001,
        "a fragment is over 50 MB: lower the bitrate or make key frames more frequent (x264enc key-int-max) so clusters are smaller",
    ),
    (
        4002,
        "fragments are longer than 10 s: set the encoder's key-int-max (x264enc) so a key frame comes at least every few seconds",
    ),
    (
        4003,
        "the PutMedia session reached its maximum duration; kvssink opens a new one (nothing to do)",
    ),
    (
        4004,
        "fragment timecodes went backwards: check upstream timestamps (a restarted source, or a live source without do-timestamp=true)",
    ),
    (
        4005,
        "the stream has more than 3 tracks: mux at most three tracks (e.g. one video and one audio)",
    ),
    (
        4006,
        "the service rejected the Matroska data: feed kvssink from matroskamux streamable=true (not JPEG, raw H.264 or another container)",
    ),
    (
        4007,
        "its producer timestamp is too far in the future or the past for the service: for a recording, check file-start-time (seconds since the epoch, or milliseconds) and the recording's own date (kvs-stream-start says which was used); live, this machine's clock",
    ),
    (
        4008,
        "the stream is not active (deleted or still being created): check the stream name and its status in the console",
    ),
    (
        4009,
        "too many fragment metadata tags: at most 10 per fragment",
    ),
    (
        4010,
        "a frame's track number is not in the header: the stream header and the clusters come from different muxers",
    ),
    (
        4011,
        "a fragment has no frame for one of the header's tracks: every track needs a frame in every fragment",
    ),
    (
        4012,
        "the stream has more than 3 tracks: mux at most three tracks (e.g. one video and one audio)",
    ),
    (
        4500,
        "access to the stream's KMS key was denied: allow kms:GenerateDataKey to these credentials",
    ),
    (
        4501,
        "the stream's KMS key is disabled: enable it or change the stream's key",
    ),
    (
        4502,
        "the stream's KMS key failed validation: check its key policy",
    ),
    (
        4503,
        "the stream's KMS key is unavailable: retry later or check KMS in this region",
    ),
    (
        4504,
        "the stream's KMS key cannot be used for encryption: use a symmetric encryption key",
    ),
    (
        4505,
        "the stream's KMS key is in an invalid state (pending deletion?): restore or replace it",
    ),
    (
        4506,
        "the stream's KMS key was not found: check the key ID/ARN configured on the stream",
    ),
    (
        4507,
        "the stream was deleted: create it again or use another stream name",
    ),
    (5000, "internal service error; kvssink retries"),
    (
        5001,
        "the service failed to persist the fragment; kvssink retries",
    ),
];

/// One line telling the user what to do about a PutMedia `ErrorId`.
pub fn error_advice(id: u32) -> &'static str {
    if let Some((_, advice)) = ADVICE.iter().find(|(i, _)| *i == id) {
        return advice;
    }
    match classify(id) {
        ErrorClass::BadFragment => "unknown fragment error: this fragment is dropped",
        ErrorClass::Fatal => {
            "unknown error about the stream's KMS key: check the key configured on the stream"
        }
        ErrorClass::Retriable => "unknown service error; kvssink retries",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERSISTED: &str = r#"{"EventType":"PERSISTED","FragmentTimecode":12000,"FragmentNumber":"91343852333181432392682062607743920146264860302"}"#;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Result<Ack, AckError>> {
        let mut p = AckParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out);
        }
        out
    }

    #[test]
    fn decodes_the_documented_examples() {
        let out = parse_all(&[PERSISTED.as_bytes()]);
        assert_eq!(
            out,
            [Ok(Ack {
                event_type: AckEventType::Persisted,
                fragment_timecode: Some(12000),
                fragment_number: Some("91343852333181432392682062607743920146264860302".into()),
                error_id: None,
                error_code: None,
            })]
        );
        let out =
            parse_all(&[br#"{"EventType":"ERROR","ErrorCode":"INVALID_MKV_DATA","ErrorId":4006}"#]);
        let ack = out[0].as_ref().unwrap();
        assert_eq!(ack.event_type, AckEventType::Error);
        assert_eq!(
            (ack.error_id, ack.error_code.as_deref()),
            (Some(4006), Some("INVALID_MKV_DATA"))
        );
        assert_eq!(ack.fragment_timecode, None);
        let out = parse_all(&[b"{\"EventType\":\"IDLE\"}\n"]);
        assert_eq!(out[0].as_ref().unwrap().event_type, AckEventType::Idle);
    }

    #[test]
    fn any_separator_and_any_split() {
        let objects = [
            PERSISTED.to_string(),
            r#"{"EventType":"BUFFERING","FragmentTimecode":14000,"FragmentNumber":"1"}"#.into(),
            r#"{"EventType":"RECEIVED","FragmentTimecode":14000,"FragmentNumber":"1","Extra":{"a":"}{\"\\"}}"#.into(),
            r#"{ "EventType" : "ERROR", "ErrorId": 5000, "ErrorCode": "INTERNAL_ERROR" }"#.into(),
        ];
        let expected: Vec<_> = objects.iter().map(|o| decode(o.as_bytes())).collect();
        assert!(expected.iter().all(Result::is_ok));
        for sep in ["", "\n", "\r\n", "\n\n", " ,\t"] {
            let stream = format!("{}{sep}", objects.join(sep));
            let bytes = stream.as_bytes();
            for chunk in [1, 2, 3, 7, 50, bytes.len()] {
                let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
                assert_eq!(parse_all(&chunks), expected, "sep {sep:?} chunk {chunk}");
            }
            // Every single split point.
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_all(&[&bytes[..cut], &bytes[cut..]]),
                    expected,
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn errors_and_resync() {
        let big = format!(
            r#"{{"EventType":"IDLE","Pad":"{}"}}"#,
            "x".repeat(MAX_ACK_SIZE)
        );
        let stream = format!(
            "{{\"EventType\":\"WHATEVER\"}}\n{{not json}}\n{{\"FragmentTimecode\":1}}\n{big}\n{PERSISTED}\n{{\"EventType\":\"ERROR\",\"ErrorId\":\"4002\"}}"
        );
        for chunk in [1, 1000, stream.len()] {
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(chunk).collect();
            let out = parse_all(&chunks);
            assert_eq!(out.len(), 6, "chunk {chunk}");
            assert_eq!(out[0], Err(AckError::UnknownEventType("WHATEVER".into())));
            assert!(matches!(&out[1], Err(AckError::Malformed { .. })));
            assert!(
                matches!(&out[2], Err(AckError::Malformed { reason, .. }) if reason == "no EventType")
            );
            assert_eq!(
                out[3],
                Err(AckError::TooLarge {
                    limit: MAX_ACK_SIZE
                })
            );
            assert_eq!(out[4].as_ref().unwrap().fragment_timecode, Some(12000));
            assert_eq!(out[5].as_ref().unwrap().error_id, Some(4002));
        }
        let msg = AckError::UnknownEventType("X".into()).to_string();
        assert!(msg.contains("unknown EventType"), "{msg}");
    }

    #[test]
    fn lenient_field_types() {
        let a =
            decode(br#"{"EventType":"persisted","FragmentTimecode":"77","FragmentNumber":123}"#)
                .unwrap();
        assert_eq!(a.event_type, AckEventType::Persisted);
        assert_eq!(
            (a.fragment_timecode, a.fragment_number.as_deref()),
            (Some(77), Some("123"))
        );
        assert!(decode(br#"{"EventType":"ERROR","ErrorId":-1}"#).is_err());
    }

    #[test]
    fn error_table() {
        assert_eq!(
            error_name(4004),
            Some("FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS")
        );
        assert_eq!(error_name(4012), Some("MORE_THAN_ALLOWED_TRACKS_FOUND"));
        assert_eq!(error_name(4506), Some("KMS_KEY_NOT_FOUND"));
        assert_eq!(error_name(4999), None);
        for id in [4000, 4003, 5000, 5001] {
            assert_eq!(classify(id), ErrorClass::Retriable, "{id}");
        }
        for id in [4001, 4002, 4004, 4005, 4006, 4007, 4009, 4010, 4011, 4012] {
            assert_eq!(classify(id), ErrorClass::BadFragment, "{id}");
        }
        for id in [4008, 4500, 4501, 4502, 4503, 4504, 4505, 4506, 4507] {
            assert_eq!(classify(id), ErrorClass::Fatal, "{id}");
        }
        assert_eq!(classify(5999), ErrorClass::Retriable);
        assert!(error_advice(4002).contains("key-int-max"));
        for id in (4000..=4012).chain(4500..=4507).chain([5000, 5001]) {
            assert!(error_name(id).is_some(), "{id}");
            assert!(!error_advice(id).starts_with("unknown"), "{id}");
        }
        assert_eq!(AckEventType::Buffering.as_str(), "BUFFERING");
        assert_eq!(
            AckEventType::parse("RECEIVED"),
            Some(AckEventType::Received)
        );
    }
}
