//! One PutMedia connection: a signed streaming request whose body reads the fragment store,
//! and the ack stream that comes back on the same connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use bytes::Bytes;
use smallvec::SmallVec;
use url::Url;

use super::direct::{Conn, PutMediaBody};
use super::dump::Dump;
use super::state::AckEnd;
use super::{Event, FatalError, Shared};
use crate::about;
use crate::ack::{Ack, AckParser};
use crate::ack::{AckEventType, ErrorClass, classify};
use crate::control::ApiError;
use crate::sigv4::{self, Payload};

/// Chunks smaller than this (block headers, cluster starts, frames) are copied together;
/// larger ones go out as they are, without a copy.
const COPY_LIMIT: usize = 16 * 1024;
/// A run of copied chunks stops growing at this size.
const COALESCE_LIMIT: usize = 64 * 1024;
/// An HTTP chunk takes what is ready up to this size (a file upload's batch; a live stream's
/// chunk is what one frame brought: its block header and the frame)...
const CHUNK_LIMIT: usize = 256 * 1024;
/// ... and up to this many pieces, so that it goes out in one vectored write (hyper's takes
/// up to 64, the chunk's size line and end among them).
const CHUNK_PIECES: usize = 32;

/// How a connection that did not fail ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// End of stream reached and every fragment acknowledged.
    Finished,
    /// The service closed the response (or the body ended for a new header or a session
    /// renewal); continue with a new connection.
    Closed { acked: bool },
}

/// Why a connection failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request failed or the service answered with an error status.
    Api(ApiError),
    /// No ack arrived for `connection-staleness` while data was outstanding.
    Stale,
    /// An ERROR ack the service says is worth retrying (4003, 5xxx).
    RetriableAck(String),
    Fatal(FatalError),
}

/// Opens one PutMedia connection and runs it until it ends.
pub(super) async fn run(
    shared: &Arc<Shared>,
    endpoint: &Url,
    region: &str,
    credentials: &Credentials,
) -> Result<End, Failure> {
    let config = &shared.config;
    // The session ends at a fragment boundary after rotation-period, or before the
    // credentials it is signed with expire (the service ends it then), whichever comes first;
    // judged by the service's time, as the credentials' expiry is.
    let max_age = crate::credentials::usable_for(credentials, sigv4::CLOCK.now())
        .map_or(config.max_session_duration, |d| {
            d.min(config.max_session_duration)
        });
    let url = endpoint
        .join("putMedia")
        .map_err(|e| Failure::Api(ApiError::Decode(e.to_string())))?;
    let proxy = crate::endpoint::proxy_for(&url);
    let transport_error =
        |reason: String| Failure::Api(ApiError::unreached(&url, proxy.as_ref(), None, reason));

    let stream = super::transport::connect(
        &url,
        &super::transport::Options {
            connect_timeout: config.connection_timeout,
            // A slow link is the element's to judge, by connection-staleness.
            tcp_user_timeout: config.connection_staleness,
            ca_file: config.ca_file.as_deref(),
            user_agent: &config.user_agent,
        },
    )
    .await
    .map_err(Failure::Api)?;
    let (mut sender, http) = hyper::client::conn::http1::Builder::new()
        .writev(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| transport_error(crate::credentials::error_text(&e)))?;

    let body = BodyCursor::new(shared.clone(), max_age);
    let producer_start_ms = body.producer_start_ms;
    let mut request = http::Request::post(url.as_str())
        .header(http::header::HOST, host_header(&url))
        .header("x-amzn-stream-name", &config.stream_name)
        .header("x-amzn-fragment-timecode-type", "RELATIVE")
        .header(
            "x-amzn-producer-start-timestamp",
            format!(
                "{}.{:03}",
                producer_start_ms / 1000,
                producer_start_ms % 1000
            ),
        )
        .header("x-amzn-fragment-acknowledgment-required", "1")
        .header(http::header::USER_AGENT, &config.user_agent)
        .header(http::header::ACCEPT, "*/*")
        .body(PutMediaBody::new(body))
        .map_err(|e| transport_error(e.to_string()))?;
    let (mut parts, body) = request.into_parts();
    sigv4::sign_parts(
        &parts.method,
        &url,
        &mut parts.headers,
        credentials,
        region,
        Payload::Unsigned,
        SystemTime::now(),
    )
    .map_err(|e| Failure::Api(e.into()))?;
    // Over HTTP/1.1 the request line carries the path only.
    parts.uri = url[url::Position::BeforePath..]
        .parse()
        .map_err(|e: http::uri::InvalidUri| transport_error(e.to_string()))?;
    request = http::Request::from_parts(parts, body);

    let conn = Conn::new(http);
    // The streaming thread polls it from now on, until this function returns or is
    // cancelled (the connection holds the body, which holds `shared`: not left behind).
    let _installed = Installed::new(shared, conn.clone());
    let exchange = async {
        let response =
            tokio::time::timeout(config.connection_timeout, sender.send_request(request))
                .await
                .map_err(|_| {
                    transport_error(format!(
                        "no answer within the connection timeout ({:?})",
                        config.connection_timeout
                    ))
                })?
                .map_err(|e| transport_error(crate::credentials::error_text(&e)))?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.into_body();
        if status != 200 {
            let mut text = Vec::new();
            while let Some(Ok(frame)) = next_frame(&mut body).await {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
                if text.len() > 64 * 1024 {
                    break;
                }
            }
            return Err(Failure::Api(
                ApiError::from_response(status, kind.as_deref(), &text)
                    .without_secrets_of(credentials),
            ));
        }
        shared.lock().on_connected();
        shared.emit_state(super::ConnectionState::Streaming);
        let result = read_acks(shared, &mut body, producer_start_ms).await;
        shared.changed.notify_all();
        result
    };
    let drive = conn.drive();
    tokio::pin!(exchange, drive);
    let mut driven = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            // An error of the connection is the exchange's too (its response or acks end).
            _ = &mut drive, if !driven => driven = true,
        }
    }
}

/// A connection the streaming thread may poll, while this lives.
struct Installed<'a>(&'a Shared);

impl<'a> Installed<'a> {
    fn new(shared: &'a Shared, conn: Arc<Conn>) -> Self {
        *shared.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        Installed(shared)
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let conn = self.0.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(conn);
    }
}

/// The `Host` header of `url`: its host, and its port unless the scheme's own.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

async fn next_frame(
    body: &mut hyper::body::Incoming,
) -> Option<Result<http_body::Frame<Bytes>, hyper::Error>> {
    use http_body::Body as _;
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// Reads the session's acks; `producer_start_ms` is the session's
/// `x-amzn-producer-start-timestamp`, which makes each fragment's producer time.
async fn read_acks(
    shared: &Arc<Shared>,
    body: &mut hyper::body::Incoming,
    producer_start_ms: u64,
) -> Result<End, Failure> {
    let staleness = Duration::from_millis(shared.staleness_ms.load(Ordering::Relaxed));
    let mut parser = AckParser::new();
    let mut acks = Vec::new();
    let mut acked = false;
    loop {
        let chunk = match tokio::time::timeout(staleness, next_frame(body)).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue,
            },
            Ok(None) => {
                let inner = shared.lock();
                let finished = inner.eos && inner.store.backlog().fragments == 0;
                return Ok(if finished {
                    End::Finished
                } else {
                    End::Closed { acked }
                });
            }
            Ok(Some(Err(e))) => {
                return Err(Failure::Api(ApiError::Transport {
                    url: String::from("PutMedia"),
                    reason: format!("connection lost: {}", crate::credentials::error_text(&e)),
                }));
            }
            Err(_) => {
                if shared.lock().store.backlog().fragments > 0 {
                    return Err(Failure::Stale);
                }
                continue;
            }
        };
        parser.push(&chunk, &mut acks);
        for ack in acks.drain(..) {
            match ack {
                Ok(ack) => {
                    acked = true;
                    handle_ack(shared, ack, producer_start_ms)?;
                }
                Err(e) => shared.emit(Event::Warning(about(
                    &shared.config.stream_name,
                    format_args!("unreadable acknowledgement from the service: {e}"),
                ))),
            }
        }
    }
}

/// Applies one ack to the store and the counters, and tells the element.
fn handle_ack(shared: &Arc<Shared>, ack: Ack, producer_start_ms: u64) -> Result<(), Failure> {
    // Told first, so the application sees the last PERSISTED before the EOS it releases.
    // Fragment timecodes are milliseconds (matroskamux's TimecodeScale).
    // An ERROR for a bad fragment without a timecode concerns the oldest fragment not
    // acknowledged, which the store then drops (`Inner::on_ack`): named by its time, so
    // that the spool drops it too.
    let timecode = ack.fragment_timecode.or_else(|| {
        let bad = ack.event_type == AckEventType::Error
            && ack
                .error_id
                .is_some_and(|id| classify(id) == ErrorClass::BadFragment);
        bad.then(|| shared.lock().store.pending().next().map(|f| f.timecode))
            .flatten()
    });
    let producer_time_ms = timecode.map(|tc| producer_start_ms.saturating_add(tc));
    shared.emit(Event::Ack {
        ack: ack.clone(),
        producer_time_ms,
    });
    let (outcome, released, trim, cut_waiting) = {
        let mut inner = shared.lock();
        let before = inner.store.backlog().fragments;
        let outcome = inner.on_ack(&ack, shared.config.release_on, &shared.config.stream_name);
        let released = inner.store.backlog().fragments < before;
        let cut_waiting = if released {
            inner.cut_waiting.take()
        } else {
            None
        };
        (outcome, released, inner.note_store_size(), cut_waiting)
    };
    if let Some(waker) = cut_waiting {
        waker.wake();
    }
    if released {
        // The streaming thread may be waiting for room, or for the last acks at EOS;
        // BUFFERING and RECEIVED acks (mostly) release nothing and wake nobody.
        shared.changed.notify_all();
    }
    if trim {
        give_back_memory();
    }
    if let Some(warning) = outcome.warning {
        shared.emit(Event::Warning(warning));
    }
    match outcome.end {
        Some(AckEnd::Retry(message)) => Err(Failure::RetriableAck(message)),
        Some(AckEnd::Fatal(error)) => Err(Failure::Fatal(error)),
        None => Ok(()),
    }
}

/// A backlog was released: the allocator gives the pages of its freed frames back to the
/// system (glibc keeps free memory below the top of its heaps otherwise, and the process
/// would stay at its peak after an outage).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl BodyCursor {
    /// With `KVS_DEBUG_DUMP_DATA_FILE_DIR`: `bytes` go to this session's file too.
    pub(super) fn dump(&mut self, bytes: &[u8]) {
        let Some(dump) = &mut self.dump else {
            return;
        };
        let shared = &self.shared;
        let written = dump.write(bytes, || {
            shared
                .dumped_sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        if let Err(e) = written {
            shared.emit(Event::Warning(about(&shared.config.stream_name, e)));
        }
    }

    /// After an idle period: ends the open fragment, fully sent so far, with an
    /// END_OF_FRAGMENT tag, once.
    pub(super) fn end_idle_fragment(&mut self) -> Option<Bytes> {
        let mut inner = self.shared.lock();
        if inner.held || inner.paused {
            // No data because kvssink itself holds upstream back (back-pressure), or the
            // pipeline is paused with the fragment's last frames still in the encoder.
            return None;
        }
        let fragment = inner.store.first_from(self.seq)?;
        if fragment.seq != self.seq
            || !self.started
            || fragment.complete
            || self.chunk < fragment.chunks.len()
            || self.tagged == Some(fragment.seq)
        {
            return None;
        }
        let (timecode, seq) = (fragment.timecode, fragment.seq);
        self.tagged = Some(seq);
        // The fragment's metadata goes before the tag that ends it; its end writes the same
        // (`Uploader::end_fragment_with`), which this connection then skips.
        let metadata = inner.open_metadata.clone();
        let end = crate::mkv::end_of_fragment_tags();
        let tag = match &metadata {
            Some(m) => Bytes::from([&m.tags[..], &end[..]].concat()),
            None => end,
        };
        inner.idle_ended = Some(super::state::IdleEnded {
            seq,
            timecode,
            metadata,
        });
        inner.on_sent(tag.len());
        drop(inner);
        self.shared.emit(Event::IdleFragmentEnded { timecode });
        Some(tag)
    }
}

pub(super) enum Next {
    Data(BodyChunk),
    Wait,
    End,
    /// The connection sent bytes that are no longer part of the fragment: break it off.
    Abort(String),
    /// It will have to be broken off, but the service has yet to acknowledge fragments this
    /// connection sent before: their acks first (else the next connection sends them again).
    Hold,
}

/// Where a connection's body is in the store: the stream header first, then every pending
/// fragment from the oldest, then live data as it arrives.
pub(super) struct BodyCursor {
    shared: Arc<Shared>,
    header: Option<Bytes>,
    /// First fragment of the header generation this session sends.
    gen_first_seq: u64,
    producer_start_ms: u64,
    seq: u64,
    chunk: usize,
    /// Whether the fragment at `seq` has started going out on this connection.
    started: bool,
    /// Fragments this connection has started sending.
    fragments_started: u64,
    /// The first fragment this connection sends.
    first_seq: u64,
    /// Fragment ended early with an END_OF_FRAGMENT tag after an idle period.
    tagged: Option<u64>,
    /// The fragment's `cut_at_chunk` when this connection started sending it.
    cut_seen: Option<usize>,
    opened: Instant,
    /// Renew the session at the first fragment boundary after this long.
    max_age: std::time::Duration,
    /// The chunks gathered for the next write (kept for its capacity).
    parts: Vec<Bytes>,
    /// The file this session's body also goes to (`KVS_DEBUG_DUMP_DATA_FILE_DIR`).
    dump: Option<Dump>,
}

impl BodyCursor {
    /// Wakes `waker` when an ack releases a fragment (see [`Next::Hold`]).
    pub(super) fn wake_at_release(&self, waker: &std::task::Waker) {
        self.shared.lock().cut_waiting = Some(waker.clone());
    }

    pub(super) fn idle_timeout(&self) -> std::time::Duration {
        self.shared.config.idle_fragment_timeout
    }

    fn new(shared: Arc<Shared>, max_age: std::time::Duration) -> Self {
        let inner = shared.lock();
        let seq = inner
            .store
            .pending()
            .next()
            .map_or(inner.next_seq, |f| f.seq);
        let header = inner
            .headers
            .iter()
            .rev()
            .find(|h| h.first_seq <= seq)
            .or(inner.headers.front())
            .cloned()
            .expect("the driver opens a connection only once a header is known");
        drop(inner);
        let config = &shared.config;
        let dump = config
            .dump_dir
            .as_deref()
            .map(|dir| Dump::new(dir, &config.stream_name));
        BodyCursor {
            shared,
            gen_first_seq: header.first_seq,
            producer_start_ms: header.producer_start_ms,
            header: Some(header.bytes),
            seq,
            chunk: 0,
            started: false,
            fragments_started: 0,
            first_seq: seq,
            tagged: None,
            cut_seen: None,
            opened: Instant::now(),
            max_age,
            parts: Vec::new(),
            dump,
        }
    }

    pub(super) fn next(&mut self) -> Next {
        let max_age = self.max_age;
        let mut inner = self.shared.lock();
        if inner.fatal().is_some() {
            return Next::End;
        }
        let mut gather = Gather::new(&mut self.parts);
        if let Some(header) = self.header.take() {
            // The stream header goes out with the start of the first fragment.
            gather.take(&header);
        }
        let mut newly_started = 0;
        let mut replayed = 0;
        let mut late = None;
        let mut max_started = None;
        let mut end = false;
        loop {
            let Some(fragment) = inner.store.first_from(self.seq) else {
                end = inner.eos;
                break;
            };
            if fragment.seq > inner.visible.seq {
                // Not shown yet: the streaming thread is still appending its first element.
                break;
            }
            let visible = inner.visible.chunks_of(fragment.seq, fragment.chunks.len());
            if fragment.seq == self.seq
                && self.started
                && fragment.cut_at_chunk != self.cut_seen
                && fragment.cut_at_chunk.is_some_and(|k| self.chunk > k)
            {
                let unacknowledged = inner
                    .store
                    .pending()
                    .next()
                    .is_some_and(|f| f.seq >= self.first_seq && f.seq < fragment.seq);
                if unacknowledged {
                    return Next::Hold;
                }
                return Next::Abort(format!(
                    "fragment {} was cut short after part of it was sent",
                    fragment.timecode
                ));
            }
            if fragment.seq != self.seq || !self.started {
                // A new fragment: the place to end for a new header or a session renewal.
                let new_header = inner
                    .headers
                    .iter()
                    .any(|h| h.first_seq > self.gen_first_seq && h.first_seq <= fragment.seq);
                let renew = self.fragments_started > 0 && self.opened.elapsed() >= max_age;
                if new_header || renew {
                    end = true;
                    break;
                }
                if fragment.seq != self.seq {
                    self.seq = fragment.seq;
                    self.chunk = 0;
                }
                self.started = true;
                self.cut_seen = fragment.cut_at_chunk;
                self.fragments_started += 1;
                newly_started += 1;
                max_started = Some(fragment.seq);
                if inner.max_seq_sent.is_some_and(|m| fragment.seq <= m) {
                    replayed += 1;
                }
            }
            if self.tagged == Some(fragment.seq) && self.chunk < fragment.chunks.len() {
                // The service already closed this fragment: its late bytes cannot follow the
                // tag as part of it. Its metadata went before the tag.
                let late_bytes: u64 = fragment.chunks[self.chunk..]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| fragment.metadata_chunk != Some(self.chunk + i))
                    .map(|(_, c)| c.len() as u64)
                    .sum();
                self.chunk = fragment.chunks.len();
                if late_bytes > 0 {
                    let before = late.map_or(0, |(_, _, b)| b);
                    late = Some((fragment.seq, fragment.timecode, before + late_bytes));
                }
                continue;
            }
            if self.chunk < visible {
                let chunk = &fragment.chunks[self.chunk];
                if !gather.take(chunk) {
                    break;
                }
                self.chunk += 1;
                if gather.full() {
                    break;
                }
            } else if self.chunk < fragment.chunks.len() {
                // The rest is an element still arriving.
                break;
            } else if fragment.complete {
                self.seq += 1;
                self.chunk = 0;
                self.started = false;
            } else {
                break;
            }
        }
        if let Some((seq, timecode, bytes)) = late
            && inner.on_late(seq, bytes)
        {
            drop(inner);
            self.shared.emit(super::late_frames(
                &self.shared.config.stream_name,
                timecode,
            ));
            inner = self.shared.lock();
        }
        inner.on_fragments_started(newly_started, replayed);
        if let Some(seq) = max_started {
            inner.max_seq_sent = Some(inner.max_seq_sent.map_or(seq, |m| m.max(seq)));
        }
        match gather.finish() {
            Some(bytes) => {
                inner.on_sent(bytes.len());
                Next::Data(bytes)
            }
            None if end => Next::End,
            None => Next::Wait,
        }
    }
}

/// One HTTP chunk of the body: the store's chunks in order, large ones as they are and runs of
/// small ones copied together, written with one vectored write.
#[derive(Debug, Default)]
pub(super) struct BodyChunk {
    /// None empty; the first `sent` of them are written.
    pieces: SmallVec<[Bytes; 2]>,
    sent: usize,
    remaining: usize,
}

impl BodyChunk {
    pub(super) fn len(&self) -> usize {
        self.remaining
    }

    /// Its bytes not yet written, in order.
    pub(super) fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces[self.sent..].iter().map(|p| &p[..])
    }

    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.remaining += piece.len();
            self.pieces.push(piece);
        }
    }
}

impl From<Bytes> for BodyChunk {
    fn from(piece: Bytes) -> Self {
        let mut chunk = BodyChunk::default();
        chunk.push(piece);
        chunk
    }
}

impl bytes::Buf for BodyChunk {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.get(self.sent).map_or(&[], |p| &p[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.remaining,
            "advance past the end of a body chunk"
        );
        self.remaining -= cnt;
        while cnt > 0 {
            let piece = &mut self.pieces[self.sent];
            if cnt < piece.len() {
                piece.advance(cnt);
                return;
            }
            cnt -= piece.len();
            // Written: its memory can go (the store keeps the fragment until acknowledged).
            *piece = Bytes::new();
            self.sent += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.pieces[self.sent..]) {
            *slot = std::io::IoSlice::new(piece);
            n += 1;
        }
        n
    }
}

/// Collects what is ready into one HTTP chunk (one write), up to [`CHUNK_LIMIT`] bytes and
/// [`CHUNK_PIECES`] pieces: chunks of [`COPY_LIMIT`] or more as they are, without a copy;
/// runs of smaller ones (block headers, cluster starts, small frames) copied together, up to
/// [`COALESCE_LIMIT`] bytes a run.
struct Gather<'a> {
    /// The run of small chunks not copied yet.
    run: &'a mut Vec<Bytes>,
    run_len: usize,
    chunk: BodyChunk,
}

impl<'a> Gather<'a> {
    fn new(run: &'a mut Vec<Bytes>) -> Self {
        run.clear();
        Gather {
            run,
            run_len: 0,
            chunk: BodyChunk::default(),
        }
    }

    /// Bytes taken so far.
    fn len(&self) -> usize {
        self.chunk.remaining + self.run_len
    }

    /// Takes `chunk` unless it would make the HTTP chunk too large.
    fn take(&mut self, chunk: &Bytes) -> bool {
        let len = self.len();
        if len > 0 && len + chunk.len() > CHUNK_LIMIT {
            return false;
        }
        let small = chunk.len() < COPY_LIMIT;
        let run_ends = !small || self.run_len + chunk.len() > COALESCE_LIMIT;
        // The pieces once it is taken: those made, the run that ends here, and this one (or
        // the run it begins or goes on with).
        let pieces = self.chunk.pieces.len() + usize::from(run_ends && !self.run.is_empty()) + 1;
        if pieces > CHUNK_PIECES {
            return false;
        }
        if run_ends {
            self.end_run();
        }
        if small {
            self.run_len += chunk.len();
            self.run.push(chunk.clone());
        } else {
            self.chunk.push(chunk.clone());
        }
        true
    }

    fn full(&self) -> bool {
        self.len() >= CHUNK_LIMIT || self.chunk.pieces.len() + 1 >= CHUNK_PIECES
    }

    /// The run of small chunks becomes one piece: copied, unless it is one chunk.
    fn end_run(&mut self) {
        let piece = match &mut self.run[..] {
            [] => return,
            [one] => std::mem::take(one),
            run => {
                let mut buf = Vec::with_capacity(self.run_len);
                for part in run.iter() {
                    buf.extend_from_slice(part);
                }
                Bytes::from(buf)
            }
        };
        self.run.clear();
        self.run_len = 0;
        self.chunk.push(piece);
    }

    fn finish(mut self) -> Option<BodyChunk> {
        self.end_run();
        (self.chunk.remaining > 0).then_some(self.chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a `Buf` yields, through `chunks_vectored` (as a vectored write takes them)
    /// and advancing by `step`.
    fn written(mut chunk: BodyChunk, step: usize) -> Vec<u8> {
        use bytes::Buf;
        let mut out = Vec::new();
        while chunk.has_remaining() {
            let mut slices = [std::io::IoSlice::new(&[]); 4];
            let n = chunk.chunks_vectored(&mut slices);
            assert!(n > 0);
            let all: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(
                all.len(),
                chunk.remaining(),
                "every part is in the vectored write"
            );
            let take = step.min(chunk.remaining());
            out.extend_from_slice(&all[..take]);
            chunk.advance(take);
        }
        out
    }

    /// Gathers `chunks` into one body chunk: its pieces' lengths, and how many were taken.
    fn gather(chunks: &[Bytes]) -> (BodyChunk, usize) {
        let mut run = Vec::new();
        let mut g = Gather::new(&mut run);
        let mut taken = 0;
        for c in chunks {
            if g.full() || !g.take(c) {
                break;
            }
            taken += 1;
        }
        (g.finish().unwrap(), taken)
    }

    fn lens(chunk: &BodyChunk) -> Vec<usize> {
        chunk.parts().map(<[u8]>::len).collect()
    }

    #[test]
    fn gather_passes_large_chunks_through_and_merges_small_ones() {
        let big = Bytes::from(vec![1u8; COPY_LIMIT]);
        let (out, _) = gather(std::slice::from_ref(&big));
        assert_eq!(
            out.parts().next().unwrap().as_ptr(),
            big.as_ptr(),
            "not copied"
        );

        // A block header and its frame are one HTTP chunk, the frame not copied; small chunks
        // around large ones are copied together.
        let header = |b: &'static [u8]| Bytes::from_static(b);
        let chunks = [header(b"abc"), header(b"defg"), big.clone(), header(b"h")];
        let (out, taken) = gather(&chunks);
        assert_eq!(taken, 4);
        assert_eq!(lens(&out), [7, COPY_LIMIT, 1]);
        assert_eq!(out.parts().nth(1).unwrap().as_ptr(), big.as_ptr());
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        for step in [1, 5, 7, 8, COPY_LIMIT, usize::MAX] {
            assert_eq!(written(gather(&chunks).0, step), expected, "step {step}");
        }

        // Small frames: runs of up to COALESCE_LIMIT copied bytes.
        let small = Bytes::from(vec![2u8; COPY_LIMIT - 1]);
        let (out, _) = gather(&vec![small.clone(); 8]);
        let runs = lens(&out);
        assert!(
            runs.len() >= 2 && runs.iter().all(|&l| l <= COALESCE_LIMIT),
            "{runs:?}"
        );
        assert_eq!(runs.iter().sum::<usize>(), 8 * small.len());

        // A file's batch: pairs of header and frame up to CHUNK_LIMIT bytes and CHUNK_PIECES
        // pieces; what is left goes in the next chunk.
        let pairs: Vec<Bytes> = (0..100)
            .flat_map(|_| [header(b"header!!"), big.clone()])
            .collect();
        let (out, taken) = gather(&pairs);
        assert!(taken < pairs.len() && taken > 10, "took {taken}");
        assert!(out.len() <= CHUNK_LIMIT, "{} bytes", out.len());
        assert!(lens(&out).len() <= CHUNK_PIECES);

        // A chunk larger than the limit still goes, alone.
        let huge = Bytes::from(vec![3u8; CHUNK_LIMIT + 1]);
        let (out, taken) = gather(&[huge.clone(), header(b"x")]);
        assert_eq!((taken, out.len()), (1, huge.len()));

        let mut run = Vec::new();
        assert!(Gather::new(&mut run).finish().is_none(), "nothing to send");
    }
}
