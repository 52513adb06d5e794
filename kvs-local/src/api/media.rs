//! Reading back: GetMedia, ListFragments and GetMediaForFragmentList.
//!
//! Media responses are `video/webm` streams in which every fragment is a
//! self-contained MKV chunk, as the service sends them: the stream header
//! the fragment was sent with, a Tags element with
//! `AWS_KINESISVIDEO_FRAGMENT_NUMBER`, `_SERVER_TIMESTAMP` and
//! `_PRODUCER_TIMESTAMP`, the cluster bytes as received, the fragment's metadata
//! (if it has any) as a Tags element after the cluster, as the service returns it,
//! and a Tags element with `AWS_KINESISVIDEO_MILLIS_BEHIND_NOW` and
//! `AWS_KINESISVIDEO_CONTINUATION_TOKEN` (GetMedia only).

use super::context::{ConnCtl, Shared, store_err};
use super::http::{ApiError, ChannelBody, Delivery, RespBody, full, json_response};
use super::operation::{
    FragmentSelector, GetClipInput, GetMediaForFragmentListInput, GetMediaInput,
    ListFragmentsInput, Page,
};
use super::validate::Checks;
use crate::model::records::{FragMeta, StoredFragment};
use crate::util::{epoch_seconds_json, epoch_seconds_plain, now_ms};
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use kvs_format::matroska::tags_with_targets;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `NoDataRetentionException` for a stream that retains nothing: `what` (GetClip, HLS) reads
/// what it retains.
pub(super) fn needs_retention(shared: &Shared, name: &str, what: &str) -> Result<(), ApiError> {
    let retention = shared
        .store
        .describe(name)
        .map_or(0, |s| s.meta.data_retention_hours);
    if retention > 0 {
        return Ok(());
    }
    Err(ApiError::new(
        400,
        "NoDataRetentionException",
        format!(
            "stream {name} retains no data (DataRetentionInHours is 0); {what} needs a stream \
             created with a retention (kvssink's retention-period, CreateStream's \
             DataRetentionInHours) or one raised with UpdateDataRetention"
        ),
    ))
}

/// Epoch seconds (as sent, possibly fractional) to ms.
pub(super) fn timestamp_ms(v: Option<f64>, k: &str) -> Result<Option<u64>, ApiError> {
    match v {
        None => Ok(None),
        Some(f) if f >= 0.0 && f.is_finite() => Ok(Some((f * 1000.0).round() as u64)),
        Some(_) => Err(ApiError::invalid_argument(format!(
            "{k} must be epoch seconds"
        ))),
    }
}

/// A `FragmentSelector`: fragments whose producer (or server) timestamp is in a range, ends
/// included.
pub(super) struct TimeRange {
    pub(super) producer: bool,
    pub(super) from: u64,
    pub(super) to: u64,
}

/// Whether a selector (`field`, e.g. `FragmentSelectorType`) of `value` selects by producer
/// timestamps (else by server timestamps).
pub(super) fn by_producer_time(value: Option<&str>, field: &str) -> Result<bool, ApiError> {
    match value {
        Some("PRODUCER_TIMESTAMP") => Ok(true),
        Some("SERVER_TIMESTAMP") => Ok(false),
        other => Err(ApiError::invalid_argument(format!(
            "{field} must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP, not {other:?}"
        ))),
    }
}

impl TimeRange {
    pub(super) fn of(sel: FragmentSelector) -> Result<TimeRange, ApiError> {
        let producer = by_producer_time(
            sel.fragment_selector_type.as_deref(),
            "FragmentSelectorType",
        )?;
        let range = sel.timestamp_range;
        let from = timestamp_ms(
            range.as_ref().and_then(|r| r.start_timestamp),
            "StartTimestamp",
        )?;
        let to = timestamp_ms(range.as_ref().and_then(|r| r.end_timestamp), "EndTimestamp")?;
        match (from, to) {
            (Some(from), Some(to)) => Ok(TimeRange { producer, from, to }),
            _ => Err(ApiError::invalid_argument(
                "TimestampRange needs StartTimestamp and EndTimestamp",
            )),
        }
    }

    pub(super) fn holds(&self, m: &FragMeta) -> bool {
        let t = if self.producer {
            m.producer_timestamp_ms
        } else {
            m.server_timestamp_ms
        };
        (self.from..=self.to).contains(&t)
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

/// `ListFragments` (paging, timestamp range).
pub(crate) fn list_fragments(
    shared: &Shared,
    name: &str,
    r: ListFragmentsInput,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    Checks::new()
        .integer("maxResults", r.max_results.as_ref(), 1, 1000)
        .finish()?;
    let page = Page::new(r.max_results.as_ref(), r.next_token.as_deref(), 1000)?;
    let range = match r.fragment_selector {
        None => None,
        Some(sel) => Some(TimeRange::of(sel)?),
    };
    let in_range = |m: &FragMeta| range.as_ref().is_none_or(|r| r.holds(m));
    let all: Vec<FragMeta> = shared
        .store
        .fragment_metas(name)
        .into_iter()
        .map(|(m, _)| m)
        .filter(in_range)
        .collect();
    let fragments: Vec<FragmentOut> = all
        .iter()
        .skip(page.start)
        .take(page.max)
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
        fragments,
        next: page.next_token(all.len()),
    };
    Ok(json_response(200, &out, rid))
}

/// One fragment as a self-contained MKV chunk.
pub(crate) fn fragment_chunk(header: &Bytes, f: &StoredFragment, trailer: bool) -> Vec<Bytes> {
    let lead = tags_with_targets(&[
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
    if !f.metadata.is_empty() {
        let items: Vec<(&str, &str)> = f
            .metadata
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        out.push(Bytes::from(tags_with_targets(&items)));
    }
    if trailer {
        let behind = now_ms().saturating_sub(f.server_timestamp_ms).to_string();
        out.push(Bytes::from(tags_with_targets(&[
            ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", &behind),
            ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", &f.number),
        ])));
    }
    out
}

/// A media response: `video/webm` (MKV fragments), or `video/mp4` for a clip.
fn media_response(body: RespBody, rid: &str) -> Response<RespBody> {
    typed_response(body, "video/webm", rid)
}

pub(super) fn typed_response(
    body: RespBody,
    content_type: &'static str,
    rid: &str,
) -> Response<RespBody> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// `GetMediaForFragmentList`: the fragments in the order asked for.
pub(crate) fn fragment_list(
    shared: &Shared,
    name: &str,
    r: GetMediaForFragmentListInput,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let wanted = r
        .fragments
        .filter(|f| (1..=1000).contains(&f.len()))
        .ok_or_else(|| {
            ApiError::invalid_argument("Fragments must list 1 to 1000 fragment numbers")
        })?;
    let found = shared
        .store
        .fragments_where(name, |_, m| wanted.contains(&m.number))
        .map_err(|e| store_err(e, name))?;
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
    Ok(media_response(full(out), rid))
}

/// Longest range of a clip: the service's 24 hours.
const MAX_CLIP_RANGE_MS: u64 = 24 * 3600 * 1000;

/// `GetClip`: the fragments whose producer (or server) timestamp is in the range, as one MP4
/// file (the first 200 of them, and at most 100 MB), or the service's errors.
pub(crate) fn get_clip(
    shared: &Shared,
    name: &str,
    r: GetClipInput,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let sel = r
        .clip_fragment_selector
        .ok_or_else(|| ApiError::invalid_argument("ClipFragmentSelector is required"))?;
    let range = TimeRange::of(sel)?;
    if range.to <= range.from {
        return Err(ApiError::invalid_argument(
            "EndTimestamp must be later than StartTimestamp",
        ));
    }
    if range.to - range.from > MAX_CLIP_RANGE_MS {
        return Err(ApiError::invalid_argument(
            "the TimestampRange of a clip must be no longer than 24 hours",
        ));
    }
    needs_retention(shared, name, "GetClip")?;
    let metas = shared.store.fragment_metas(name);
    let chosen = crate::clip::clip_limit(
        metas
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| range.holds(m))
            .map(|(i, (m, _))| (i, m.size)),
    );
    if chosen.is_empty() {
        return Err(ApiError::not_found(
            "No fragments found in the stream for the clip request.",
        ));
    }
    let fragments = shared
        .store
        .fragments_where(name, |i, _| chosen.binary_search(&i).is_ok())
        .map_err(|e| store_err(e, name))?;
    let headers = shared.store.headers(name);
    let pieces = crate::clip::clip(&headers, &fragments)
        .map_err(|e| ApiError::new(400, e.error_type(), e.message()))?;
    Ok(typed_response(
        full(Bytes::from(pieces.concat())),
        "video/mp4",
        rid,
    ))
}

/// `GetMedia`: what is stored from the selector on, then the stream as it
/// grows until no fragment arrived for `get_media_follow`.
pub(crate) fn get_media(
    shared: &Arc<Shared>,
    ctl: &Arc<ConnCtl>,
    name: &str,
    r: GetMediaInput,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let sel = r
        .start_selector
        .ok_or_else(|| ApiError::invalid_argument("StartSelector is required"))?;
    let kind = sel.start_selector_type.as_deref().unwrap_or("");
    let metas = shared.store.fragment_metas(name);
    let after_number = |n: &str| metas.iter().position(|(m, _)| m.number == n).map(|i| i + 1);
    let start = match kind {
        "NOW" => metas.len(),
        "EARLIEST" => 0,
        "FRAGMENT_NUMBER" | "CONTINUATION_TOKEN" => {
            let (key, n) = if kind == "FRAGMENT_NUMBER" {
                ("AfterFragmentNumber", &sel.after_fragment_number)
            } else {
                ("ContinuationToken", &sel.continuation_token)
            };
            let n = n
                .as_deref()
                .ok_or_else(|| ApiError::invalid_argument(format!("{key} is required")))?;
            after_number(n).ok_or_else(|| {
                ApiError::invalid_argument(format!("{key} {n} does not name a fragment"))
            })?
        }
        "PRODUCER_TIMESTAMP" | "SERVER_TIMESTAMP" => {
            let t = timestamp_ms(sel.start_timestamp, "StartTimestamp")?
                .ok_or_else(|| ApiError::invalid_argument("StartTimestamp is required"))?;
            let producer = kind == "PRODUCER_TIMESTAMP";
            // As the service: from the fragment that contains the time (its first block at
            // or before it, its last at or after it), else the first one after it.
            metas
                .iter()
                .position(|(m, _)| {
                    let ts = if producer {
                        m.producer_timestamp_ms
                    } else {
                        m.server_timestamp_ms
                    };
                    ts.saturating_add(m.duration_ms) >= t
                })
                .unwrap_or(metas.len())
        }
        other => {
            return Err(ApiError::invalid_argument(format!(
                "invalid StartSelectorType {other:?}"
            )));
        }
    };
    // the first fragments are read before answering: one that cannot be read is a 500
    let first = read_batch(shared, name, start).map_err(|e| store_err(e, name))?;
    let delivery = Arc::new(Delivery::default());
    let (tx, body) = ChannelBody::new(4, delivery);
    tokio::spawn(follow(
        shared.clone(),
        ctl.clone(),
        name.to_string(),
        start,
        first,
        tx,
    ));
    Ok(media_response(body.boxed(), rid))
}

/// A few stored fragments from index `next` on (bounded memory for long
/// streams on disk).
fn read_batch(
    shared: &Shared,
    name: &str,
    next: usize,
) -> Result<Vec<StoredFragment>, crate::model::records::StoreError> {
    shared
        .store
        .fragments_where(name, |i, _| i >= next && i < next + 8)
}

/// Sends stored fragments from index `next` (`first` are the first of them,
/// already read), then keeps following the stream until no new fragment
/// arrived for `get_media_follow`. A fragment that cannot be read once the
/// response has started drops the connection, so the client sees a broken
/// response rather than one that ends cleanly without that fragment.
async fn follow(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    name: String,
    mut next: usize,
    first: Vec<StoredFragment>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut changes = shared.store.subscribe();
    let follow = shared.config.get_media_follow;
    let mut first = Some(first);
    loop {
        changes.borrow_and_update();
        let frags = match first.take() {
            Some(f) => f,
            None => match read_batch(&shared, &name, next) {
                Ok(f) => f,
                Err(e) => {
                    shared.log(format_args!(
                        "GetMedia stream={name}: {e}; dropping the connection"
                    ));
                    ctl.kill.notify_one();
                    return;
                }
            },
        };
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
