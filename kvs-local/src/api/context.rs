//! What every handler shares: the server state, the connection a request
//! came on, authentication, body reading, request records, and resolving
//! the stream a request names.

use super::http::ApiError;
use super::operation::StreamRef;
use super::validate::{Checks, RESOURCE_ARN};
use crate::auth::sigv4::{self, Verified, Verifier};
use crate::config::Config;
use crate::faults::Faults;
use crate::model::records::StoreError;
use crate::model::store::Store;
use crate::report::{AuthVerdict, Recorder, Report, RequestRecord};
use crate::util::{Logger, now_ms};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};

/// State shared by every connection.
pub(crate) struct Shared {
    /// Configuration.
    pub(crate) config: Config,
    /// Signature verifier.
    pub(crate) verifier: Verifier,
    /// Streams and fragments.
    pub(crate) store: Store,
    /// Injected faults.
    pub(crate) faults: Faults,
    /// The report.
    pub(crate) recorder: Recorder,
    /// Logger.
    pub(crate) log: Logger,
    /// Base URL (`http://host:port`).
    pub(crate) base_url: String,
    /// Session id counter.
    pub(crate) session_ids: AtomicU64,
    /// Bumped to close every live connection.
    pub(crate) epoch: watch::Sender<u64>,
    /// `true` while the listener should be down.
    pub(crate) paused: watch::Sender<bool>,
    /// `true` to stop the server.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Whether the listener is currently bound (for pause/resume waits).
    pub(crate) listening: (Mutex<bool>, Condvar),
    /// Cache of fragment digests for the report.
    pub(crate) digests: Mutex<HashMap<String, String>>,
}

impl Shared {
    /// Logs a line when logging is enabled.
    pub(crate) fn log(&self, msg: std::fmt::Arguments<'_>) {
        self.log.log(msg);
    }

    /// Records whether the listener is bound and wakes waiters.
    pub(crate) fn set_listening(&self, v: bool) {
        *self.listening.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
        self.listening.1.notify_all();
    }

    /// Waits (blocking) until the listener state is `v`.
    pub(crate) fn wait_listening(&self, v: bool, timeout: Duration) -> bool {
        let guard = self.listening.0.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .listening
            .1
            .wait_timeout_while(guard, timeout, |cur| *cur != v)
            .unwrap_or_else(|e| e.into_inner());
        *g == v
    }

    /// The report, with SHA-256 digests of stored fragments filled in.
    pub(crate) fn report(&self) -> Report {
        let mut rep = self.recorder.snapshot();
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing: HashMap<String, BTreeSet<String>> = HashMap::new();
        for s in &rep.sessions {
            for f in &s.fragments {
                if let Some(n) = &f.number
                    && f.outcome == "persisted"
                    && !digests.contains_key(n)
                {
                    missing
                        .entry(s.stream.clone())
                        .or_default()
                        .insert(n.clone());
                }
            }
        }
        for (stream, numbers) in missing {
            let store = &self.store;
            let frags = store
                .fragments_where(&stream, |_, m| numbers.contains(&m.number))
                .or_else(|e| {
                    // one unreadable fragment: the others still get their digest
                    self.log(format_args!("report: {e}"));
                    Ok::<_, StoreError>(
                        numbers
                            .iter()
                            .filter_map(|n| {
                                store.fragments_where(&stream, |_, m| m.number == *n).ok()
                            })
                            .flatten()
                            .collect(),
                    )
                })
                .unwrap_or_default();
            for f in frags {
                digests.insert(f.number.clone(), hex::encode(Sha256::digest(&f.bytes)));
            }
        }
        for s in &mut rep.sessions {
            for f in &mut s.fragments {
                if let Some(n) = &f.number {
                    f.sha256 = digests.get(n).cloned();
                }
            }
        }
        rep
    }

    /// Verifies credentials (with credential/request faults) and fills the
    /// record's auth fields.
    pub(crate) fn check_auth(
        &self,
        req: &sigv4::Request<'_>,
        op: &str,
        stream: Option<&str>,
        rec: &mut RequestRecord,
    ) -> Result<Verified, ApiError> {
        if let Some(t) = self.faults.take_reject_credentials(stream) {
            rec.auth = AuthVerdict::Rejected;
            rec.auth_reason = Some(format!("rejected by injected fault ({t})"));
            self.log(format_args!("{op}: credentials rejected by injected fault"));
            let msg = if t == "ExpiredTokenException" {
                "The security token included in the request is expired"
            } else {
                "The security token included in the request is invalid."
            };
            let mut e = ApiError::new(403, &t, msg);
            e.lower_case_message = true;
            return Err(e);
        }
        let v = match self.verifier.verify(req, SystemTime::now()) {
            Ok(v) => v,
            Err(r) => {
                rec.auth = AuthVerdict::Rejected;
                rec.auth_reason = Some(r.reason.clone());
                self.log(format_args!(
                    "{op} stream={} rejected: {} ({})",
                    stream.unwrap_or("-"),
                    r.error_type,
                    r.reason
                ));
                let mut e = ApiError::new(r.status, r.error_type, r.message);
                e.lower_case_message = true;
                return Err(e);
            }
        };
        rec.auth = AuthVerdict::Accepted;
        rec.access_key = Some(v.access_key.clone());
        rec.auth_reason = v.note.clone();
        if let Some(inj) = self.faults.take_request_failure(op, stream) {
            self.log(format_args!("{op}: answering with injected {}", inj.status));
            return Err(ApiError::new(
                inj.status,
                &inj.error_type,
                format!("Injected fault: {}", inj.error_type),
            ));
        }
        Ok(v)
    }

    /// The stream a request names, for fault scoping and the report (the
    /// ARN itself when no stream has it).
    pub(crate) fn stream_hint(&self, r: &StreamRef) -> Option<String> {
        if let Some(n) = &r.stream_name {
            return Some(n.clone());
        }
        let arn = r.stream_arn.as_deref()?;
        self.store
            .name_for_arn(arn)
            .or_else(|| Some(arn.to_string()))
    }

    /// Resolves `StreamName` xor `StreamARN` to an existing stream name.
    pub(crate) fn resolve(&self, r: &StreamRef) -> Result<String, ApiError> {
        match (&r.stream_name, &r.stream_arn) {
            (Some(_), Some(_)) => Err(ApiError::invalid_argument(
                "Specify either StreamName or StreamARN, not both.",
            )),
            (None, None) => Err(ApiError::invalid_argument(
                "Either StreamName or StreamARN must be specified.",
            )),
            (Some(n), None) => {
                validate_name(n)?;
                self.store
                    .describe(n)
                    .map(|_| n.clone())
                    .ok_or_else(|| not_found(n))
            }
            (None, Some(a)) => {
                Checks::new()
                    .string("streamARN", Some(a), &RESOURCE_ARN)
                    .finish()?;
                self.store.name_for_arn(a).ok_or_else(|| not_found(a))
            }
        }
    }
}

/// Per-connection control.
pub(crate) struct ConnCtl {
    /// Notified to drop the connection abruptly.
    pub(crate) kill: Notify,
    /// Peer address.
    pub(crate) remote: SocketAddr,
    /// The address the connection reached (this server's side).
    pub(crate) local: SocketAddr,
}

/// A request record with the common fields filled in.
pub(crate) fn new_record(req: &Request<Incoming>, ctl: &ConnCtl, operation: &str) -> RequestRecord {
    RequestRecord {
        id: 0,
        time_ms: now_ms(),
        remote: ctl.remote.to_string(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        operation: operation.into(),
        stream: None,
        access_key: None,
        auth: AuthVerdict::NotChecked,
        auth_reason: None,
        status: 0,
        error_type: None,
        error_message: None,
    }
}

/// Fills the outcome of an error into a record.
pub(crate) fn record_error(rec: &mut RequestRecord, e: &ApiError) {
    rec.status = e.status;
    rec.error_type = Some(e.error_type.clone());
    rec.error_message = Some(e.message.clone());
}

/// How long a JSON request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body up to `limit` bytes (within [`BODY_TIMEOUT`]).
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(ApiError::invalid_argument(format!(
            "cannot read request body: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            408,
            "RequestTimeoutException",
            "request body not received in time",
        )),
    }
}

/// Validates a stream name the way the service does.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    super::validate::Checks::new()
        .string("streamName", Some(name), &super::validate::STREAM_NAME)
        .finish()
}

/// 404 for a stream that does not exist.
pub(crate) fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested stream is not found or not active: {name}"
    ))
}

/// The AWS error for a store error about stream `name`.
pub(crate) fn store_err(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::NotFound => not_found(name),
        StoreError::InUse => ApiError::new(
            400,
            "ResourceInUseException",
            format!("The stream {name} already exists."),
        ),
        StoreError::VersionMismatch => ApiError::new(
            400,
            "VersionMismatchException",
            "The stream version you specified is not the latest version.",
        ),
        StoreError::Io(e) => ApiError::new(500, "InternalFailure", format!("storage error: {e}")),
    }
}
