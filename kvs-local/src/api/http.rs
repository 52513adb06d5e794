//! HTTP helpers: response bodies and AWS-shaped error responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::{Notify, mpsc};

/// The response body type of every handler.
pub type RespBody = BoxBody<Bytes, Infallible>;

/// A full body.
pub fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed()
}

/// An AWS error to answer with.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `__type` and `x-amzn-ErrorType`.
    pub error_type: String,
    /// Message.
    pub message: String,
    /// Use lower-case `message` (SigV4 failures do).
    pub lower_case_message: bool,
}

impl ApiError {
    /// An error with a `Message` field.
    pub fn new(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type: error_type.into(),
            message: message.into(),
            lower_case_message: false,
        }
    }

    /// 400 InvalidArgumentException.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgumentException", message)
    }

    /// 404 ResourceNotFoundException.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "ResourceNotFoundException", message)
    }

    /// The HTTP response.
    pub fn response(&self, request_id: &str) -> Response<RespBody> {
        let key = if self.lower_case_message {
            "message"
        } else {
            "Message"
        };
        let body = serde_json::json!({ "__type": self.error_type, key: self.message });
        let mut r = json_response(self.status, &body, request_id);
        if let Ok(v) = HeaderValue::from_str(&self.error_type) {
            r.headers_mut().insert("x-amzn-errortype", v);
        }
        r
    }
}

/// A JSON response with the request id header.
pub fn json_response(
    status: u16,
    body: &impl serde::Serialize,
    request_id: &str,
) -> Response<RespBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    json_bytes_response(status, bytes, request_id)
}

/// A response with an already serialized JSON body.
pub fn json_bytes_response(status: u16, bytes: Vec<u8>, request_id: &str) -> Response<RespBody> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// Counts frames handed to hyper, so that a session can wait until its acks
/// have left for the socket.
#[derive(Default)]
pub struct Delivery {
    /// Frames taken by hyper (or dropped on purpose).
    pub done: AtomicU64,
    /// Woken on every increment.
    pub notify: Notify,
}

impl Delivery {
    /// Marks one frame as delivered.
    pub fn mark(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Waits until at least `n` frames are delivered.
    pub async fn wait_for(&self, n: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// A streaming response body fed through a channel.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    delivery: Arc<Delivery>,
}

impl ChannelBody {
    /// A body and the sender feeding it.
    pub fn new(capacity: usize, delivery: Arc<Delivery>) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx, delivery })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.delivery.mark();
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
