//! The JSON report of everything the server saw.

use crate::util::now_ms;
use serde::Serialize;
use std::sync::Mutex;

/// Caps that keep the report bounded on long runs.
const MAX_REQUESTS: usize = 100_000;
const MAX_SESSION_ITEMS: usize = 100_000;

/// Everything the server saw: requests and PutMedia sessions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Every request (admin API excluded), in arrival order.
    pub requests: Vec<RequestRecord>,
    /// Every PutMedia session that got a 200.
    pub sessions: Vec<SessionRecord>,
    /// Records dropped because of the size caps.
    pub dropped_records: u64,
}

/// Authentication outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthVerdict {
    /// Signature valid.
    Accepted,
    /// Rejected (see `auth_reason`).
    Rejected,
    /// Not checked (unknown route).
    NotChecked,
}

/// One HTTP request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// Sequential id.
    pub id: u64,
    /// Arrival time (ms since epoch).
    pub time_ms: u64,
    /// Peer address.
    pub remote: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Operation name (e.g. `PutMedia`, `DescribeStream`).
    pub operation: String,
    /// Stream concerned, when known.
    pub stream: Option<String>,
    /// Access key id used, when parsed.
    pub access_key: Option<String>,
    /// Authentication verdict.
    pub auth: AuthVerdict,
    /// Why auth was rejected, or notes on how it matched.
    pub auth_reason: Option<String>,
    /// HTTP status answered.
    pub status: u16,
    /// AWS error type answered, if any.
    pub error_type: Option<String>,
    /// Error message answered, if any.
    pub error_message: Option<String>,
}

/// One fragment seen in a PutMedia session.
#[derive(Clone, Debug, Serialize)]
pub struct FragmentRecord {
    /// 0-based index in the session.
    pub index: u64,
    /// Cluster timecode as sent.
    pub timecode: Option<u64>,
    /// Fragment number assigned.
    pub number: Option<String>,
    /// Size in bytes (as far as received).
    pub size: u64,
    /// Whether the first frame (of the first video track) was a key frame.
    pub key_frame: bool,
    /// SHA-256 of the cluster bytes (stored fragments only; filled in when
    /// the report is produced).
    pub sha256: Option<String>,
    /// `persisted`, `discarded` (acked PERSISTED but not stored:
    /// [`crate::Config::discard_media`]) or `error <id> <code>: <detail>`.
    pub outcome: String,
}

/// One PutMedia session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionRecord {
    /// Sequential session id.
    pub id: u64,
    /// The request record it belongs to.
    pub request_id: u64,
    /// Stream name.
    pub stream: String,
    /// Start (ms since epoch).
    pub started_ms: u64,
    /// End (ms since epoch).
    pub ended_ms: Option<u64>,
    /// Body bytes received.
    pub bytes: u64,
    /// Fragments seen.
    pub fragments: Vec<FragmentRecord>,
    /// Acks sent (JSON lines).
    pub acks: Vec<String>,
    /// Why the session ended.
    pub end_reason: Option<String>,
    /// With [`crate::Config::record_body_reads`]: every body chunk as it reached the session,
    /// in order (the first 100,000). Empty otherwise, and then left out of the JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<BodyRead>,
}

/// The arrival of one PutMedia body chunk (chunked transfer framing excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BodyRead {
    /// When the session got the chunk, on the monotonic clock ([`crate::monotonic_ns`],
    /// `CLOCK_MONOTONIC` in ns): comparable with other processes' readings of that clock.
    pub monotonic_ns: u64,
    /// Body bytes received so far, this chunk included.
    pub bytes: u64,
}

/// Thread-safe report builder.
#[derive(Default)]
pub(crate) struct Recorder {
    inner: Mutex<Report>,
}

impl Recorder {
    fn with<R>(&self, f: impl FnOnce(&mut Report) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a request; returns its id.
    pub fn request(&self, mut r: RequestRecord) -> u64 {
        self.with(|rep| {
            r.id = rep.requests.last().map(|l| l.id + 1).unwrap_or(1);
            let id = r.id;
            if rep.requests.len() >= MAX_REQUESTS {
                rep.requests.remove(0);
                rep.dropped_records += 1;
            }
            rep.requests.push(r);
            id
        })
    }

    /// Starts a session record; returns its id.
    pub fn start_session(&self, request_id: u64, stream: &str) -> u64 {
        self.with(|rep| {
            let id = rep.sessions.len() as u64 + 1;
            rep.sessions.push(SessionRecord {
                id,
                request_id,
                stream: stream.into(),
                started_ms: now_ms(),
                ended_ms: None,
                bytes: 0,
                fragments: Vec::new(),
                acks: Vec::new(),
                end_reason: None,
                reads: Vec::new(),
            });
            id
        })
    }

    /// Updates a session record.
    pub fn session(&self, id: u64, f: impl FnOnce(&mut SessionRecord)) {
        self.with(|rep| {
            if let Some(s) = rep.sessions.get_mut(id as usize - 1) {
                f(s);
                if s.acks.len() > MAX_SESSION_ITEMS {
                    s.acks.remove(0);
                    rep.dropped_records += 1;
                }
                if s.fragments.len() > MAX_SESSION_ITEMS {
                    s.fragments.remove(0);
                    rep.dropped_records += 1;
                }
                if s.reads.len() > MAX_SESSION_ITEMS {
                    s.reads.pop();
                    rep.dropped_records += 1;
                }
            }
        })
    }

    /// A copy of the report.
    pub fn snapshot(&self) -> Report {
        self.with(|r| r.clone())
    }
}
