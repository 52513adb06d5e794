//! GetMedia, ListFragments and GetMediaForFragmentList (placeholder).

use crate::http::{ApiError, RespBody};
use crate::server::{ConnCtl, Shared};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

/// Handles the archived-media operations.
pub async fn handle(
    _shared: Arc<Shared>,
    _ctl: Arc<ConnCtl>,
    op: &'static str,
    _req: Request<Incoming>,
    rid: String,
) -> Response<RespBody> {
    ApiError::new(404, "UnknownOperationException", format!("{op} not implemented yet")).response(&rid)
}
