//! Fault injection.
//!
//! Faults are injected with [`crate::Server::inject`] or `POST
//! /__kvs-local/faults` (JSON, the serde form of [`Fault`], e.g.
//! `{"type":"close_after_fragments","fragments":3,"stream":"cam1"}`), and
//! cleared with [`crate::Server::clear_faults`] or `DELETE /__kvs-local/faults`.
//! Every fault takes an optional `stream` scope (absent = every stream).

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

fn one() -> u32 {
    1
}
fn put_media() -> String {
    "PutMedia".into()
}
fn status_500() -> u16 {
    500
}

/// A fault to inject.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fault {
    /// Close the next `sessions` PutMedia connections abruptly after `bytes`
    /// body bytes (acks produced by those bytes may or may not arrive).
    CloseAfterBytes {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Body bytes to accept before closing.
        bytes: u64,
        /// How many sessions this applies to (default 1).
        #[serde(default = "one")]
        sessions: u32,
    },
    /// Close the next `sessions` PutMedia connections abruptly once
    /// `fragments` fragments were stored and their acks handed to the
    /// connection.
    CloseAfterFragments {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Fragments to accept before closing.
        fragments: u64,
        /// How many sessions this applies to (default 1).
        #[serde(default = "one")]
        sessions: u32,
    },
    /// Answer the next `count` requests of `operation` (default `PutMedia`,
    /// `*` = any) with HTTP `status` (default 500, `__type`
    /// `InternalFailure` unless `error_type` is given).
    FailRequests {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Operation name (e.g. `PutMedia`, `DescribeStream`, `*`).
        #[serde(default = "put_media")]
        operation: String,
        /// Number of requests.
        #[serde(default = "one")]
        count: u32,
        /// HTTP status.
        #[serde(default = "status_500")]
        status: u16,
        /// `__type` of the error body.
        #[serde(default)]
        error_type: Option<String>,
    },
    /// Answer the next `count` requests of `operation` (default `PutMedia`)
    /// with 400 `ClientLimitExceededException`.
    Throttle {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Operation name (e.g. `PutMedia`, `*`).
        #[serde(default = "put_media")]
        operation: String,
        /// Number of requests.
        #[serde(default = "one")]
        count: u32,
    },
    /// Answer one fragment with an ERROR ack instead of storing it: the
    /// fragment with 0-based index `fragment` within its session, or the
    /// first one with cluster timecode `timecode`. One-shot.
    ErrorAck {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// 0-based fragment index within a session.
        #[serde(default)]
        fragment: Option<u64>,
        /// Cluster timecode.
        #[serde(default)]
        timecode: Option<u64>,
        /// ErrorId to send (ErrorCode follows from the table).
        error_id: u32,
    },
    /// Delay every ack by `delay_ms` (until cleared).
    DelayAcks {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// Send no acks at all (until cleared); data is still stored.
    StopAcks {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
    },
    /// Reject the credentials of the next `count` requests (403,
    /// `error_type` default `UnrecognizedClientException`).
    RejectCredentials {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Number of requests.
        #[serde(default = "one")]
        count: u32,
        /// `__type` of the error (e.g. `ExpiredTokenException`).
        #[serde(default)]
        error_type: Option<String>,
    },
    /// End PutMedia sessions older than `after_ms` with ERROR 4003
    /// MAX_CONNECTION_DURATION_REACHED (until cleared; applies to live
    /// sessions too).
    MaxConnectionDuration {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
        /// Maximum session age in milliseconds.
        after_ms: u64,
    },
    /// Answer PutMedia errors (injected or not) by closing the connection at once, without
    /// reading what the client is still sending, as a strict server or proxy may (until
    /// cleared). By default kvs-local keeps reading and discarding the body for a moment
    /// after an error answer, so that the client gets the answer.
    AbruptErrors {
        /// Stream scope.
        #[serde(default)]
        stream: Option<String>,
    },
}

impl Fault {
    fn stream(&self) -> Option<&str> {
        match self {
            Fault::CloseAfterBytes { stream, .. }
            | Fault::CloseAfterFragments { stream, .. }
            | Fault::FailRequests { stream, .. }
            | Fault::Throttle { stream, .. }
            | Fault::ErrorAck { stream, .. }
            | Fault::DelayAcks { stream, .. }
            | Fault::StopAcks { stream }
            | Fault::AbruptErrors { stream }
            | Fault::RejectCredentials { stream, .. }
            | Fault::MaxConnectionDuration { stream, .. } => stream.as_deref(),
        }
    }

    fn applies(&self, stream: Option<&str>) -> bool {
        match self.stream() {
            None => true,
            Some(s) => stream == Some(s),
        }
    }
}

/// An HTTP error to answer with instead of serving a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedError {
    /// HTTP status.
    pub status: u16,
    /// `__type`.
    pub error_type: String,
}

/// Session-level faults claimed when a PutMedia session starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionFaults {
    /// Close after this many body bytes.
    pub close_after_bytes: Option<u64>,
    /// Close after this many stored fragments.
    pub close_after_fragments: Option<u64>,
}

/// How acks are currently to be delivered.
#[derive(Clone, Copy, Debug, Default)]
pub struct AckPolicy {
    /// Delay before each ack is written.
    pub delay: Duration,
    /// Drop acks.
    pub stop: bool,
}

/// The registry of active faults.
pub struct Faults {
    list: Mutex<Vec<Fault>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            list: Mutex::new(Vec::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

fn op_matches(pattern: &str, op: &str) -> bool {
    pattern == "*" || pattern.eq_ignore_ascii_case(op)
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Fault>) -> R) -> R {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut l)
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adds a fault.
    pub fn inject(&self, f: Fault) {
        self.with(|l| l.push(f));
        self.notify();
    }

    /// Removes all faults.
    pub fn clear(&self) {
        self.with(Vec::clear);
        self.notify();
    }

    /// The active faults.
    pub fn list(&self) -> Vec<Fault> {
        self.with(|l| l.clone())
    }

    /// Notified whenever faults change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Consumes one `FailRequests`/`Throttle` matching the request.
    pub fn take_request_failure(&self, op: &str, stream: Option<&str>) -> Option<InjectedError> {
        self.with(|l| {
            let i = l.iter().position(|f| {
                f.applies(stream)
                    && matches!(f, Fault::FailRequests { operation, .. } | Fault::Throttle { operation, .. }
                        if op_matches(operation, op))
            })?;
            let (err, left) = match &mut l[i] {
                Fault::FailRequests {
                    count,
                    status,
                    error_type,
                    ..
                } => {
                    *count = count.saturating_sub(1);
                    let t = error_type.clone().unwrap_or_else(|| {
                        if *status >= 500 {
                            "InternalFailure".into()
                        } else {
                            "ClientLimitExceededException".into()
                        }
                    });
                    (
                        InjectedError {
                            status: *status,
                            error_type: t,
                        },
                        *count,
                    )
                }
                Fault::Throttle { count, .. } => {
                    *count = count.saturating_sub(1);
                    (
                        InjectedError {
                            status: 400,
                            error_type: "ClientLimitExceededException".into(),
                        },
                        *count,
                    )
                }
                _ => unreachable!(),
            };
            if left == 0 {
                l.remove(i);
            }
            Some(err)
        })
    }

    /// Consumes one `RejectCredentials` matching the request; returns the
    /// error type to answer with.
    pub fn take_reject_credentials(&self, stream: Option<&str>) -> Option<String> {
        self.with(|l| {
            let i = l
                .iter()
                .position(|f| f.applies(stream) && matches!(f, Fault::RejectCredentials { .. }))?;
            let Fault::RejectCredentials {
                count, error_type, ..
            } = &mut l[i]
            else {
                unreachable!()
            };
            *count = count.saturating_sub(1);
            let t = error_type
                .clone()
                .unwrap_or_else(|| "UnrecognizedClientException".into());
            if *count == 0 {
                l.remove(i);
            }
            Some(t)
        })
    }

    /// Claims the close-after faults for a new session.
    pub fn claim_session(&self, stream: &str) -> SessionFaults {
        let mut out = SessionFaults::default();
        self.with(|l| {
            l.retain_mut(|f| {
                if !f.applies(Some(stream)) {
                    return true;
                }
                match f {
                    Fault::CloseAfterBytes {
                        bytes, sessions, ..
                    } if out.close_after_bytes.is_none() => {
                        out.close_after_bytes = Some(*bytes);
                        *sessions = sessions.saturating_sub(1);
                        *sessions > 0
                    }
                    Fault::CloseAfterFragments {
                        fragments,
                        sessions,
                        ..
                    } if out.close_after_fragments.is_none() => {
                        out.close_after_fragments = Some(*fragments);
                        *sessions = sessions.saturating_sub(1);
                        *sessions > 0
                    }
                    _ => true,
                }
            })
        });
        out
    }

    /// Consumes an `ErrorAck` for this fragment, returning its ErrorId.
    pub fn take_error_ack(&self, stream: &str, index: u64, timecode: u64) -> Option<u32> {
        self.with(|l| {
            let i = l.iter().position(|f| {
                f.applies(Some(stream))
                    && matches!(f, Fault::ErrorAck { fragment, timecode: tc, .. }
                        if fragment.is_some_and(|k| k == index) || tc.is_some_and(|t| t == timecode))
            })?;
            let Fault::ErrorAck { error_id, .. } = l.remove(i) else {
                unreachable!()
            };
            Some(error_id)
        })
    }

    /// The current ack policy for a stream.
    pub fn ack_policy(&self, stream: &str) -> AckPolicy {
        self.with(|l| {
            let mut p = AckPolicy::default();
            for f in l.iter().filter(|f| f.applies(Some(stream))) {
                match f {
                    Fault::DelayAcks { delay_ms, .. } => {
                        p.delay = p.delay.max(Duration::from_millis(*delay_ms))
                    }
                    Fault::StopAcks { .. } => p.stop = true,
                    _ => {}
                }
            }
            p
        })
    }

    /// Whether an `AbruptErrors` fault applies to a stream.
    pub fn abrupt_errors(&self, stream: Option<&str>) -> bool {
        self.with(|l| {
            l.iter()
                .any(|f| f.applies(stream) && matches!(f, Fault::AbruptErrors { .. }))
        })
    }

    /// The shortest `MaxConnectionDuration` applying to a stream.
    pub fn max_connection_duration(&self, stream: &str) -> Option<Duration> {
        self.with(|l| {
            l.iter()
                .filter(|f| f.applies(Some(stream)))
                .filter_map(|f| match f {
                    Fault::MaxConnectionDuration { after_ms, .. } => {
                        Some(Duration::from_millis(*after_ms))
                    }
                    _ => None,
                })
                .min()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms() {
        let f: Fault =
            serde_json::from_str(r#"{"type":"close_after_fragments","fragments":3}"#).unwrap();
        assert_eq!(
            f,
            Fault::CloseAfterFragments {
                stream: None,
                fragments: 3,
                sessions: 1
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"type":"throttle","stream":"a","count":2}"#).unwrap();
        assert!(matches!(f, Fault::Throttle { count: 2, .. }));
        assert!(serde_json::from_str::<Fault>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn counting_and_scope() {
        let r = Faults::default();
        r.inject(Fault::Throttle {
            stream: Some("a".into()),
            operation: "PutMedia".into(),
            count: 2,
        });
        assert_eq!(r.take_request_failure("PutMedia", Some("b")), None);
        assert_eq!(r.take_request_failure("DescribeStream", Some("a")), None);
        assert!(r.take_request_failure("PutMedia", Some("a")).is_some());
        assert!(r.take_request_failure("PutMedia", Some("a")).is_some());
        assert_eq!(r.take_request_failure("PutMedia", Some("a")), None);
        r.inject(Fault::ErrorAck {
            stream: None,
            fragment: Some(2),
            timecode: None,
            error_id: 5000,
        });
        assert_eq!(r.take_error_ack("x", 1, 0), None);
        assert_eq!(r.take_error_ack("x", 2, 0), Some(5000));
        assert_eq!(r.take_error_ack("x", 2, 0), None);
        r.inject(Fault::CloseAfterBytes {
            stream: None,
            bytes: 10,
            sessions: 1,
        });
        assert_eq!(r.claim_session("x").close_after_bytes, Some(10));
        assert_eq!(r.claim_session("x").close_after_bytes, None);
        r.inject(Fault::DelayAcks {
            stream: None,
            delay_ms: 5,
        });
        assert_eq!(r.ack_policy("x").delay, Duration::from_millis(5));
        r.clear();
        assert_eq!(r.ack_policy("x").delay, Duration::ZERO);
    }
}
