//! PutMedia: request checks, the streaming ack response, and the ingest
//! session that parses the body incrementally and stores fragments.

use super::context::{ConnCtl, Shared, new_record, record_error, validate_name};
use super::http::{ApiError, ChannelBody, Delivery, RespBody};
use crate::auth::sigv4::{self, Payload};
use crate::faults::SessionFaults;
use crate::mkv::{Event, MkvError, Parser, StreamHeader};
use crate::model::records::{FragMeta, StoreError};
use crate::model::store::{SessionHandle, SessionState};
use crate::report::{FragmentRecord, RequestRecord};
use crate::util::{error_code_name, now_ms};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

/// A body frame polled before the session started.
type FirstFrame = Option<Option<Result<Frame<Bytes>, hyper::Error>>>;

/// The producer start timestamp in ms, or why it is unusable.
type StartTs = Result<u64, String>;

struct Prepared {
    name: String,
    relative: bool,
    start_ts: StartTs,
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_start_ts(v: Option<&str>) -> StartTs {
    let v = v.ok_or("x-amzn-producer-start-timestamp missing")?;
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok((s * 1000.0).round() as u64),
        _ => Err(format!("invalid x-amzn-producer-start-timestamp {v:?}")),
    }
}

fn prepare(
    shared: &Shared,
    parts: &http::request::Parts,
    rec: &mut RequestRecord,
) -> Result<Prepared, ApiError> {
    let name_h = header(parts, "x-amzn-stream-name");
    let arn_h = header(parts, "x-amzn-stream-arn");
    let hint = name_h
        .map(str::to_string)
        .or_else(|| arn_h.and_then(|a| shared.store.name_for_arn(a)));
    rec.stream = hint.clone().or(arn_h.map(str::to_string));
    let req = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        payload: Payload::Streaming,
    };
    shared.check_auth(&req, "PutMedia", hint.as_deref(), rec)?;
    let name = match (name_h, arn_h) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_argument(
                "Specify either x-amzn-stream-name or x-amzn-stream-arn, not both.",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid_argument(
                "Either x-amzn-stream-name or x-amzn-stream-arn must be specified.",
            ));
        }
        (Some(n), None) => {
            validate_name(n)?;
            n.to_string()
        }
        (None, Some(a)) => hint.ok_or_else(|| {
            ApiError::not_found(format!("The requested stream is not found: {a}"))
        })?,
    };
    let relative = match header(parts, "x-amzn-fragment-timecode-type") {
        Some("RELATIVE") => true,
        Some("ABSOLUTE") => false,
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, got '{other}'"
            )));
        }
        None => {
            return Err(ApiError::invalid_argument(
                "the x-amzn-fragment-timecode-type header is missing: it must be ABSOLUTE or \
                 RELATIVE",
            ));
        }
    };
    let start_ts = parse_start_ts(header(parts, "x-amzn-producer-start-timestamp"));
    if shared.store.describe(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "The requested stream is not found or not active: {name}"
        )));
    }
    Ok(Prepared {
        name,
        relative,
        start_ts,
    })
}

/// How long an error answer keeps reading what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// After an error answer, keeps reading (and discarding) the body the client is still
/// streaming for a moment, as a real front end does, before the connection closes: closing
/// with unread data resets the connection, and the client could lose the answer and see only
/// a broken pipe.
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let drain = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// Handles `POST /putMedia`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
    rid: String,
) -> Response<RespBody> {
    let mut rec = new_record(&req, &ctl, "PutMedia");
    let (parts, mut body) = req.into_parts();
    let p = match prepare(&shared, &parts, &mut rec) {
        Ok(p) => p,
        Err(e) => {
            record_error(&mut rec, &e);
            shared.log(format_args!(
                "PutMedia stream={} -> {} {}: {}",
                rec.stream.as_deref().unwrap_or("-"),
                e.status,
                e.error_type,
                e.message
            ));
            let abrupt = shared.faults.abrupt_errors(rec.stream.as_deref());
            shared.recorder.request(rec);
            if !abrupt {
                linger(body);
            }
            return e.response(&rid);
        }
    };
    rec.status = 200;
    let request_id = shared.recorder.request(rec);
    let sid = shared.session_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let Some((handle, state)) = shared.store.begin_session(&p.name, sid) else {
        if !shared.faults.abrupt_errors(Some(&p.name)) {
            linger(body);
        }
        return ApiError::not_found(format!("The requested stream is not found: {}", p.name))
            .response(&rid);
    };
    let report_id = shared.recorder.start_session(request_id, &p.name);
    shared.log(format_args!(
        "PutMedia stream={} session {sid} started ({})",
        p.name,
        if p.relative { "RELATIVE" } else { "ABSOLUTE" }
    ));
    let delivery = Arc::new(Delivery::default());
    let (body_tx, resp_body) = ChannelBody::new(16, delivery.clone());
    let (ack_tx, ack_rx) = mpsc::channel(1024);
    tokio::spawn(forward_acks(
        shared.clone(),
        p.name.clone(),
        report_id,
        ack_rx,
        body_tx,
        delivery.clone(),
    ));
    let session = Session {
        sfaults: shared.faults.claim_session(&p.name),
        parser: if shared.config.discard_media {
            Parser::boundaries_only()
        } else {
            Parser::new(shared.config.max_fragment_size)
        },
        shared: shared.clone(),
        ctl,
        handle,
        report_id,
        events: Vec::new(),
        header: None,
        relative: p.relative,
        start_ts: p.start_ts,
        acks: ack_tx,
        queued: 0,
        delivery,
        frag: None,
        ended: None,
        prev_start_ns: None,
        index: 0,
        bytes: 0,
        stored: 0,
        started: Instant::now(),
        last_data: Instant::now(),
        arena: Default::default(),
    };
    // With `Expect: 100-continue`, poll the body once and yield before
    // answering, so that hyper writes `100 Continue` ahead of the 200 head
    // (it only sends it while no response has been written).
    let mut first = None;
    if parts
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut body).poll_frame(cx) {
                std::task::Poll::Ready(f) => Some(f),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        tokio::task::yield_now().await;
    }
    tokio::spawn(session.run(body, state, first));
    let mut resp = Response::new(http_body_util::BodyExt::boxed(resp_body));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn forward_acks(
    shared: Arc<Shared>,
    stream: String,
    report_id: u64,
    mut rx: mpsc::Receiver<(Instant, Bytes)>,
    tx: mpsc::Sender<Bytes>,
    delivery: Arc<Delivery>,
) {
    while let Some((at, ack)) = rx.recv().await {
        let policy = shared.faults.ack_policy(&stream);
        if policy.stop {
            delivery.mark();
            continue;
        }
        if !policy.delay.is_zero() {
            sleep_until((at + policy.delay).into()).await;
        }
        let text = String::from_utf8_lossy(ack.trim_ascii_end()).into_owned();
        shared.recorder.session(report_id, |s| s.acks.push(text));
        if tx.send(ack).await.is_err() {
            break;
        }
    }
}

/// Builds one ack line.
fn ack_json(event: &str, tc: Option<u64>, number: Option<&str>, error: Option<u32>) -> Bytes {
    let mut s = String::with_capacity(128);
    let _ = write!(s, "{{\"EventType\":\"{event}\"");
    if let Some(t) = tc {
        let _ = write!(s, ",\"FragmentTimecode\":{t}");
    }
    if let Some(n) = number {
        let _ = write!(s, ",\"FragmentNumber\":\"{n}\"");
    }
    if let Some(id) = error {
        let _ = write!(
            s,
            ",\"ErrorId\":{id},\"ErrorCode\":\"{}\"",
            error_code_name(id)
        );
    }
    s.push_str("}\n");
    Bytes::from(s)
}

struct Frag {
    seq: u64,
    index: u64,
    timecode: Option<u64>,
    number: Option<(u128, String)>,
    producer_ms: u64,
    first_checked: bool,
    key_frame: bool,
    min_tc: i64,
    max_tc: i64,
    any_block: bool,
    tracks_seen: Vec<u64>,
    error: bool,
    /// Fragment metadata: the SimpleTags of the Tags elements after the cluster.
    metadata: Vec<(String, String)>,
}

/// A cluster ended by a Tags element: it completes once the Tags after it are read (at the
/// next element that is not Tags, or the end of the body), with them as its metadata.
struct Ended {
    seq: u64,
    bytes: Option<crate::mkv::Pieces>,
    len: u64,
}

enum Flow {
    Continue,
    End(String),
    Kill(String),
}

struct Session {
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    handle: SessionHandle,
    report_id: u64,
    parser: Parser,
    events: Vec<Event>,
    header: Option<(Arc<StreamHeader>, String)>,
    relative: bool,
    start_ts: StartTs,
    acks: mpsc::Sender<(Instant, Bytes)>,
    queued: u64,
    delivery: Arc<Delivery>,
    frag: Option<Frag>,
    ended: Option<Ended>,
    prev_start_ns: Option<u128>,
    index: u64,
    bytes: u64,
    /// Fragments stored (with `discard_media`: acked).
    stored: u64,
    sfaults: SessionFaults,
    started: Instant,
    last_data: Instant,
    arena: crate::model::arena::Arena,
}

mod session;
