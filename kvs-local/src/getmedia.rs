//! Reading back: GetMedia, ListFragments and GetMediaForFragmentList.
//!
//! Media responses are `video/webm` streams in which every fragment is a
//! self-contained MKV chunk, as the service sends them: the stream header
//! the fragment was sent with, a Tags element with
//! `AWS_KINESISVIDEO_FRAGMENT_NUMBER`, `_SERVER_TIMESTAMP` and
//! `_PRODUCER_TIMESTAMP`, the cluster bytes as received, and a Tags element
//! with `AWS_KINESISVIDEO_MILLIS_BEHIND_NOW` and
//! `AWS_KINESISVIDEO_CONTINUATION_TOKEN` (GetMedia only).

use crate::control::{authenticate, read_body, resolve, stream_hint};
use crate::http::{ApiError, ChannelBody, Delivery, RespBody};
use crate::mkvbuild::tags;
use crate::server::{ConnCtl, Shared, new_record, record_error};
use crate::store::{FragMeta, StoredFragment};
use crate::util::{epoch_seconds_json, epoch_seconds_plain, now_ms};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Handles the archived-media operations.
pub async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    op: &'static str,
    req: Request<Incoming>,
    rid: String,
) -> Response<RespBody> {
    let mut rec = new_record(&req, &ctl, op);
    let (parts, body) = req.into_parts();
    let result = async {
        let body = read_body(Request::from_parts(parts.clone(), body), 1 << 20).await?;
        let v: Result<Value, ApiError> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                400,
                "SerializationException",
                format!("Malformed JSON: {e}"),
            )
        });
        let hint = v.as_ref().ok().and_then(|v| stream_hint(&shared, v));
        rec.stream = hint.clone();
        authenticate(&shared, &parts, &body, op, hint.as_deref(), &mut rec)?;
        let v = v?;
        let name = resolve(&shared, &v)?;
        match op {
            "ListFragments" => list_fragments(&shared, &name, &v, &rid),
            "GetMediaForFragmentList" => fragment_list(&shared, &name, &v, &rid),
            _ => get_media(&shared, &name, &v, &rid),
        }
    }
    .await;
    let resp = match result {
        Ok(r) => {
            rec.status = r.status().as_u16();
            r
        }
        Err(e) => {
            record_error(&mut rec, &e);
            e.response(&rid)
        }
    };
    shared.log(format_args!(
        "{op} stream={} -> {}",
        rec.stream.as_deref().unwrap_or("-"),
        rec.status
    ));
    shared.recorder.request(rec);
    resp
}

fn timestamp_ms(v: &Value, k: &str) -> Result<Option<u64>, ApiError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| Some((f * 1000.0).round() as u64))
            .ok_or_else(|| ApiError::invalid_argument(format!("{k} must be epoch seconds"))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FragmentOut {
    fragment_number: String,
    fragment_size_in_bytes: u64,
    producer_timestamp: Box<serde_json::value::RawValue>,
    server_timestamp: Box<serde_json::value::RawValue>,
    fragment_length_in_milliseconds: u64,
}

fn list_fragments(
    shared: &Shared,
    name: &str,
    v: &Value,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let max = v
        .get("MaxResults")
        .and_then(Value::as_u64)
        .unwrap_or(1000)
        .clamp(1, 1000) as usize;
    let start: usize = match v.get("NextToken").and_then(Value::as_str) {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid_argument("invalid NextToken"))?,
        None => 0,
    };
    let (producer, from, to) = match v.get("FragmentSelector") {
        None | Some(Value::Null) => (true, None, None),
        Some(sel) => {
            let producer = match sel.get("FragmentSelectorType").and_then(Value::as_str) {
                Some("PRODUCER_TIMESTAMP") => true,
                Some("SERVER_TIMESTAMP") => false,
                other => {
                    return Err(ApiError::invalid_argument(format!(
                        "FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP, not {other:?}"
                    )));
                }
            };
            let range = sel.get("TimestampRange").cloned().unwrap_or(Value::Null);
            let from = timestamp_ms(&range, "StartTimestamp")?;
            let to = timestamp_ms(&range, "EndTimestamp")?;
            if from.is_none() || to.is_none() {
                return Err(ApiError::invalid_argument(
                    "TimestampRange needs StartTimestamp and EndTimestamp",
                ));
            }
            (producer, from, to)
        }
    };
    let in_range = |m: &FragMeta| {
        let t = if producer {
            m.producer_timestamp_ms
        } else {
            m.server_timestamp_ms
        };
        from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e)
    };
    let all: Vec<FragMeta> = shared
        .store
        .fragment_metas(name)
        .into_iter()
        .map(|(m, _)| m)
        .filter(in_range)
        .collect();
    let page: Vec<FragmentOut> = all
        .iter()
        .skip(start)
        .take(max)
        .map(|m| FragmentOut {
            fragment_number: m.number.clone(),
            fragment_size_in_bytes: m.size,
            producer_timestamp: epoch_seconds_json(m.producer_timestamp_ms),
            server_timestamp: epoch_seconds_json(m.server_timestamp_ms),
            fragment_length_in_milliseconds: m.duration_ms,
        })
        .collect();
    #[derive(Serialize)]
    struct Out {
        #[serde(rename = "Fragments")]
        fragments: Vec<FragmentOut>,
        #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    let out = Out {
        fragments: page,
        next: (start + max < all.len()).then(|| (start + max).to_string()),
    };
    Ok(crate::http::json_response(200, &out, rid))
}

/// One fragment as a self-contained MKV chunk.
pub fn fragment_chunk(header: &Bytes, f: &StoredFragment, trailer: bool) -> Vec<Bytes> {
    let lead = tags(&[
        ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &f.number),
        (
            "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
            &epoch_seconds_plain(f.server_timestamp_ms),
        ),
        (
            "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
            &epoch_seconds_plain(f.producer_timestamp_ms),
        ),
    ]);
    let mut out = vec![header.clone(), Bytes::from(lead), f.bytes.clone()];
    if trailer {
        let behind = now_ms().saturating_sub(f.server_timestamp_ms).to_string();
        out.push(Bytes::from(tags(&[
            ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", &behind),
            ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", &f.number),
        ])));
    }
    out
}

fn media_response(body: RespBody, rid: &str) -> Response<RespBody> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("video/webm"));
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

fn fragment_list(
    shared: &Shared,
    name: &str,
    v: &Value,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let wanted: Vec<String> = match v.get("Fragments") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 1000 => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid_argument("Fragments must be strings"))?,
        _ => {
            return Err(ApiError::invalid_argument(
                "Fragments must list 1 to 1000 fragment numbers",
            ));
        }
    };
    let found = shared
        .store
        .fragments_where(name, |_, m| wanted.contains(&m.number));
    if let Some(missing) = wanted
        .iter()
        .find(|w| !found.iter().any(|f| f.number == **w))
    {
        return Err(ApiError::not_found(format!(
            "Fragment {missing} not found in stream {name}"
        )));
    }
    let headers = shared.store.headers(name);
    let mut out = Vec::new();
    for w in &wanted {
        let f = found.iter().find(|f| f.number == *w).expect("checked");
        let Some(header) = headers.get(f.header_index) else {
            continue; // stream replaced meanwhile
        };
        for b in fragment_chunk(header, f, false) {
            out.extend_from_slice(&b);
        }
    }
    Ok(media_response(crate::http::full(out), rid))
}

fn get_media(
    shared: &Arc<Shared>,
    name: &str,
    v: &Value,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let sel = v
        .get("StartSelector")
        .ok_or_else(|| ApiError::invalid_argument("StartSelector is required"))?;
    let kind = sel
        .get("StartSelectorType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let metas = shared.store.fragment_metas(name);
    let after_number = |n: &str| metas.iter().position(|(m, _)| m.number == n).map(|i| i + 1);
    let start = match kind {
        "NOW" => metas.len(),
        "EARLIEST" => 0,
        "FRAGMENT_NUMBER" | "CONTINUATION_TOKEN" => {
            let key = if kind == "FRAGMENT_NUMBER" {
                "AfterFragmentNumber"
            } else {
                "ContinuationToken"
            };
            let n = sel
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid_argument(format!("{key} is required")))?;
            after_number(n).ok_or_else(|| {
                ApiError::invalid_argument(format!("{key} {n} does not name a fragment"))
            })?
        }
        "PRODUCER_TIMESTAMP" | "SERVER_TIMESTAMP" => {
            let t = timestamp_ms(sel, "StartTimestamp")?
                .ok_or_else(|| ApiError::invalid_argument("StartTimestamp is required"))?;
            let producer = kind == "PRODUCER_TIMESTAMP";
            metas
                .iter()
                .position(|(m, _)| {
                    let ts = if producer {
                        m.producer_timestamp_ms
                    } else {
                        m.server_timestamp_ms
                    };
                    ts >= t
                })
                .unwrap_or(metas.len())
        }
        other => {
            return Err(ApiError::invalid_argument(format!(
                "invalid StartSelectorType {other:?}"
            )));
        }
    };
    let delivery = Arc::new(Delivery::default());
    let (tx, body) = ChannelBody::new(4, delivery);
    tokio::spawn(follow(shared.clone(), name.to_string(), start, tx));
    Ok(media_response(body.boxed(), rid))
}

/// Sends stored fragments from index `next`, then keeps following the
/// stream until no new fragment arrived for `get_media_follow`.
async fn follow(shared: Arc<Shared>, name: String, mut next: usize, tx: mpsc::Sender<Bytes>) {
    let mut changes = shared.store.subscribe();
    let follow = shared.config.get_media_follow;
    loop {
        changes.borrow_and_update();
        // a few at a time: bounded memory for long streams on disk
        let frags = shared
            .store
            .fragments_where(&name, |i, _| i >= next && i < next + 8);
        if frags.is_empty() {
            if shared.store.describe(&name).is_none() {
                return;
            }
            match tokio::time::timeout(follow, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return,
            }
        }
        let headers = shared.store.headers(&name);
        for f in &frags {
            let Some(header) = headers.get(f.header_index) else {
                return; // stream replaced meanwhile
            };
            for b in fragment_chunk(header, f, true) {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
        next += frags.len();
    }
}
