//! The admin API under `/__kvs-local/` (unauthenticated, not recorded):
//! faults, the report, streams, health.

use super::context::Shared;
use super::http::{ApiError, RespBody, full, json_response};
use crate::faults::Fault;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;

/// Answers `/__kvs-local/<rest>`.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    rest: &str,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let rid = crate::util::request_id();
    let method = req.method().clone();
    match (method.as_str(), rest) {
        ("GET", "report") => json_response(200, &shared.report(), &rid),
        ("GET", "faults") => json_response(200, &shared.faults.list(), &rid),
        ("DELETE", "faults") => {
            shared.faults.clear();
            json_response(200, &serde_json::json!({"cleared": true}), &rid)
        }
        ("POST", "faults") => {
            let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return ApiError::invalid_argument(format!("cannot read body: {e}"))
                        .response(&rid);
                }
            };
            // a single fault or a list of faults
            let parsed: Result<Vec<Fault>, _> = serde_json::from_slice::<Fault>(&body)
                .map(|f| vec![f])
                .or_else(|_| serde_json::from_slice::<Vec<Fault>>(&body));
            match parsed {
                Ok(list) => {
                    for f in &list {
                        shared.log(format_args!("fault injected: {f:?}"));
                        shared.faults.inject(f.clone());
                    }
                    json_response(200, &serde_json::json!({"injected": list.len()}), &rid)
                }
                Err(e) => {
                    ApiError::invalid_argument(format!("invalid fault JSON: {e}")).response(&rid)
                }
            }
        }
        ("GET", "streams") => json_response(200, &shared.store.list(), &rid),
        ("GET", "health") => {
            let mut r = Response::new(full("ok\n"));
            r.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/plain"));
            r
        }
        _ => ApiError::new(
            404,
            "UnknownOperationException",
            format!("no admin route {method} /__kvs-local/{rest}"),
        )
        .response(&rid),
    }
}
