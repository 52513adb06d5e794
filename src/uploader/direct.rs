//! The PutMedia connection, driven from two threads: the runtime's task, and the element's
//! streaming thread, which writes what it has just appended itself.
//!
//! A frame handed to another thread costs a wake-up of that thread (an `eventfd` write and a
//! context switch on each side) and its bytes are copied into the socket by a core that did
//! not write them. So the connection (hyper's HTTP/1.1 state machine over our socket) sits in
//! a [`Conn`], and the streaming thread, after showing new bytes to the body, polls it itself
//! ([`Conn::poll_here`]) with the waker of the task that owns it: the body yields the bytes,
//! the connection writes them, and whatever the poll leaves waiting (a full socket, an ack
//! on its way) wakes the task as if the task had polled. When the task is polling at that
//! moment, the streaming thread only wakes it, so that it polls once more.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use http_body::Frame;
use hyper::client::conn::http1::Connection;
use hyper_util::rt::TokioIo;

use super::connection::{BodyChunk, BodyCursor, Next};
use super::transport::Stream;

type Http1 = Connection<TokioIo<Stream>, PutMediaBody>;

/// A PutMedia connection that either the runtime's task or the streaming thread polls.
pub(super) struct Conn {
    state: Mutex<State>,
    /// The owning task, for a wake-up when the streaming thread cannot poll.
    task: AtomicWaker,
}

struct State {
    conn: Option<Pin<Box<Http1>>>,
    /// What the connection ended with, when a poll other than the task's ended it.
    result: Option<hyper::Result<()>>,
    /// The owning task's waker, which every poll uses.
    waker: Option<Waker>,
}

impl Conn {
    pub(super) fn new(conn: Http1) -> Arc<Conn> {
        Arc::new(Conn {
            state: Mutex::new(State {
                conn: Some(Box::pin(conn)),
                result: None,
                waker: None,
            }),
            task: AtomicWaker::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drives the connection until it ends; run by the task that owns it.
    pub(super) fn drive(self: &Arc<Self>) -> impl Future<Output = hyper::Result<()>> + use<> {
        let conn = self.clone();
        std::future::poll_fn(move |cx| {
            conn.task.register(cx.waker());
            let mut state = conn.lock();
            if let Some(result) = state.result.take() {
                return Poll::Ready(result);
            }
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            let Some(http) = state.conn.as_mut() else {
                return Poll::Pending;
            };
            let poll = http.as_mut().poll(cx);
            if poll.is_ready() {
                state.conn = None;
            }
            poll
        })
    }

    /// Wakes the owning task, which polls the connection.
    pub(super) fn wake_task(&self) {
        self.task.wake();
    }

    /// Polls the connection on the calling thread (new data for the body), with the owning
    /// task's waker; or, when the task is polling it right now or has not yet, wakes the task.
    /// Never blocks: the socket is non-blocking and the lock is only tried.
    pub(super) fn poll_here(&self) {
        let Ok(mut state) = self.state.try_lock() else {
            self.task.wake();
            return;
        };
        let Some(waker) = state.waker.clone() else {
            drop(state);
            self.task.wake();
            return;
        };
        let Some(http) = state.conn.as_mut() else {
            return;
        };
        if let Poll::Ready(result) = http.as_mut().poll(&mut Context::from_waker(&waker)) {
            state.conn = None;
            state.result = Some(result);
            drop(state);
            waker.wake();
        }
    }
}

/// The body of a PutMedia request: the store, through a [`BodyCursor`].
pub(super) struct PutMediaBody {
    cursor: BodyCursor,
    /// The last data (or the start): `idle_timeout` after it, the open fragment ends
    /// (`END_OF_FRAGMENT`).
    quiet_since: tokio::time::Instant,
    /// Fires at `quiet_since + idle_timeout` or earlier: moved on only when it fires, so that
    /// a frame costs no timer work (a timer per wait cost an allocation, a registration and a
    /// cancellation per frame).
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl PutMediaBody {
    /// In the runtime's context (the timer).
    pub(super) fn new(cursor: BodyCursor) -> Self {
        let quiet_since = tokio::time::Instant::now();
        let idle = Box::pin(tokio::time::sleep_until(
            quiet_since + cursor.idle_timeout(),
        ));
        PutMediaBody {
            cursor,
            quiet_since,
            idle,
        }
    }
}

impl http_body::Body for PutMediaBody {
    type Data = BodyChunk;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<BodyChunk>, std::io::Error>>> {
        let this = self.get_mut();
        let mut registered = false;
        loop {
            match this.cursor.next() {
                Next::Data(chunk) => {
                    this.quiet_since = tokio::time::Instant::now();
                    for part in chunk.parts() {
                        this.cursor.dump(part);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Next::End => return Poll::Ready(None),
                Next::Abort(reason) => {
                    // Breaks the request off without the final chunk: the service drops
                    // the fragment in flight, which the next connection sends again.
                    return Poll::Ready(Some(Err(std::io::Error::other(reason))));
                }
                Next::Hold => {
                    // Neither data nor the idle end: woken by the ack that releases the
                    // fragment waited for. Asked once more after registering, for an ack
                    // that came in between.
                    if !registered {
                        this.cursor.wake_at_release(cx.waker());
                        registered = true;
                        continue;
                    }
                    return Poll::Pending;
                }
                Next::Wait => {
                    // New data comes with a poll from the streaming thread (`Conn::poll_here`).
                    if this.idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = tokio::time::Instant::now();
                    let deadline = this.quiet_since + this.cursor.idle_timeout();
                    if now < deadline {
                        // Data came since it was set: wait for the rest of the period.
                        this.idle.as_mut().reset(deadline);
                        continue;
                    }
                    // Idle: end the open fragment, once; then wait another period.
                    this.quiet_since = now;
                    this.idle.as_mut().reset(now + this.cursor.idle_timeout());
                    if let Some(tag) = this.cursor.end_idle_fragment() {
                        this.cursor.dump(&tag);
                        return Poll::Ready(Some(Ok(Frame::data(BodyChunk::from(tag)))));
                    }
                }
            }
        }
    }
}
