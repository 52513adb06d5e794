//! The API handlers: control plane, PutMedia, the reading-back operations
//! and the admin API, with what they share (context, HTTP helpers, typed
//! operations).

mod admin;
pub(crate) mod context;
mod control;
mod hls;
pub(crate) mod http;
mod images;
mod media;
pub(crate) mod operation;
mod putmedia;
mod validate;

use crate::auth::sigv4::{self, Payload};
use context::{ConnCtl, Shared, new_record, read_body, record_error};
use http::{ApiError, RespBody, json_bytes_response};
use hyper::body::Incoming;
use operation::{ApiRequest, Operation};
use std::sync::Arc;

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 1 << 20;

/// Answers one request: the admin API, an operation, or 404.
pub(crate) async fn route(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: ::http::Request<Incoming>,
) -> ::http::Response<RespBody> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/__kvs-local/") {
        return admin::handle(&shared, rest, req).await;
    }
    let rid = crate::util::request_id();
    if let Some(rest) = path
        .strip_prefix("/hls/v1/")
        .or_else(|| path.strip_prefix("/dash/v1/"))
        && req.method() == ::http::Method::GET
    {
        return hls::handle(&shared, &ctl, rest, req, &rid);
    }
    let op = Operation::from_path(&path);
    match op {
        Some(Operation::PutMedia) if req.method() == ::http::Method::POST => {
            putmedia::handle(shared, ctl, req, rid).await
        }
        Some(op) if req.method() == ::http::Method::POST => {
            handle_json(shared, ctl, op, req, rid).await
        }
        _ => {
            let mut rec = new_record(&req, &ctl, "Unknown");
            let e = ApiError::new(
                404,
                "UnknownOperationException",
                match unserved(&path) {
                    Some(what) => format!(
                        "kvs-local does not serve {what}: it stands in for video streams only \
                         (streams, their tags and retention, PutMedia and reading them back)"
                    ),
                    None => format!("No operation at {} {path}", req.method()),
                },
            );
            record_error(&mut rec, &e);
            shared.log(format_args!(
                "{} {path} -> 404 unknown operation",
                req.method()
            ));
            shared.recorder.request(rec);
            e.response(&rid)
        }
    }
}

/// An operation with a JSON body: read, parse, authenticate, dispatch,
/// record.
async fn handle_json(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    op: Operation,
    req: ::http::Request<Incoming>,
    rid: String,
) -> ::http::Response<RespBody> {
    let mut rec = new_record(&req, &ctl, op.name());
    let (parts, body) = req.into_parts();
    let result = async {
        let body = read_body(body, MAX_JSON_BODY).await?;
        let parsed = ApiRequest::parse(op, &body);
        let hint = shared.stream_hint(&ApiRequest::stream_ref(&parsed, &body));
        rec.stream = hint.clone();
        let signed = sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            payload: Payload::Body(&body),
        };
        let who = shared.check_auth(&signed, op.name(), hint.as_deref(), &mut rec)?;
        match parsed? {
            // Decoding video blocks: off the server's async threads.
            ApiRequest::GetImages(r) => {
                let name = shared.resolve(&r.stream)?;
                let (shared, rid) = (shared.clone(), rid.clone());
                tokio::task::spawn_blocking(move || images::get_images(&shared, &name, r, &rid))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ApiError::new(
                            500,
                            "InternalFailure",
                            format!("GetImages: {e}"),
                        ))
                    })
            }
            parsed => dispatch(&shared, parsed, &who, &ctl, &rid),
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
        "{} stream={} -> {}{}",
        op.name(),
        rec.stream.as_deref().unwrap_or("-"),
        rec.status,
        rec.error_type
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default()
    ));
    shared.recorder.request(rec);
    resp
}

/// Each operation, in one place.
fn dispatch(
    shared: &Arc<Shared>,
    req: ApiRequest,
    who: &sigv4::Verified,
    ctl: &Arc<ConnCtl>,
    rid: &str,
) -> Result<::http::Response<RespBody>, ApiError> {
    use ApiRequest as R;
    let json = match req {
        R::CreateStream(r) => control::create_stream(shared, r, who),
        R::DescribeStream(r) => control::describe_stream(shared, &r),
        R::ListStreams(r) => control::list_streams(shared, r),
        R::DeleteStream(r) => control::delete_stream(shared, r),
        R::GetDataEndpoint(r) => control::get_data_endpoint(shared, r, ctl),
        R::TagStream(r) => control::tag_stream(shared, r),
        R::UntagStream(r) => control::untag_stream(shared, r),
        R::ListTagsForStream(r) => control::list_tags_for_stream(shared, &r),
        R::UpdateDataRetention(r) => control::update_data_retention(shared, r),
        R::UpdateStream(r) => control::update_stream(shared, r),
        R::GetMedia(r) => {
            let name = shared.resolve(&r.stream)?;
            return media::get_media(shared, ctl, &name, r, rid);
        }
        R::ListFragments(r) => {
            let name = shared.resolve(&r.stream)?;
            return media::list_fragments(shared, &name, r, rid);
        }
        R::GetMediaForFragmentList(r) => {
            let name = shared.resolve(&r.stream)?;
            return media::fragment_list(shared, &name, r, rid);
        }
        R::GetClip(r) => {
            let name = shared.resolve(&r.stream)?;
            return media::get_clip(shared, &name, r, rid);
        }
        R::GetHLSStreamingSessionURL(r) => {
            let name = shared.resolve(&r.stream)?;
            hls::session_url(shared, &name, r, ctl)
        }
        R::GetImages(_) => unreachable!("answered by handle_json"),
        R::GetDASHStreamingSessionURL(r) => {
            let name = shared.resolve(&r.stream)?;
            hls::dash_session_url(shared, &name, r, ctl)
        }
    };
    Ok(json_bytes_response(200, json?, rid))
}

/// The service's operations kvs-local does not serve (signaling channels and the stream
/// configurations it has no use for), by path (botocore's service models):
/// what they are, for the error that says so.
fn unserved(path: &str) -> Option<&'static str> {
    Some(match path {
        "/createSignalingChannel"
        | "/deleteSignalingChannel"
        | "/describeSignalingChannel"
        | "/getSignalingChannelEndpoint"
        | "/listSignalingChannels"
        | "/updateSignalingChannel" => "signaling channels (WebRTC)",
        "/TagResource" | "/UntagResource" | "/ListTagsForResource" => {
            "TagResource, UntagResource and ListTagsForResource (tags of signaling channels; a \
             stream's tags are TagStream, UntagStream and ListTagsForStream)"
        }
        "/describeImageGenerationConfiguration" | "/updateImageGenerationConfiguration" => {
            "image generation configurations"
        }
        "/describeNotificationConfiguration" | "/updateNotificationConfiguration" => {
            "notification configurations"
        }
        _ => return None,
    })
}
