//! The uploader: everything between the Matroska splitter and Kinesis Video Streams, free of
//! GStreamer so it can be tested and benchmarked alone.
//!
//! The streaming thread puts stream headers and fragment bytes into a [`FragmentStore`] shared
//! with a driver task on the shared tokio runtime. The driver runs the control plane, then one
//! PutMedia connection after another; each connection's body reads the store from the first
//! fragment not yet acknowledged, header first, so a reconnect replays exactly what the service
//! has not confirmed and then continues live. Acks release fragments from the store.

mod connection;
mod direct;
mod driver;
pub(crate) use driver::START_ATTEMPT_FACTOR;
mod dump;

pub(crate) use driver::{auth_advice, backoff};
pub use dump::{ENV as DUMP_DIR_ENV, dir_from_env as dump_dir_from_env};
pub(crate) use transport::tls_config;
mod state;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;

use crate::ack::Ack;
use crate::metadata::Snapshot;
use crate::store::{ALWAYS_ROOM_AFTER, AckLevel, Backlog, Evicted, FragmentStore, StoreLimits};
pub(crate) use state::Inner;

/// Everything the uploader needs to know, read once at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub stream_name: String,
    /// Region and control-plane settings, resolved when the driver starts (the profile file
    /// may have to be read).
    pub location: crate::endpoint::Location,
    pub allow_create_stream: bool,
    pub retention_hours: u64,
    pub stream_tags: BTreeMap<String, String>,
    pub kms_key_id: Option<String>,
    /// Media type for CreateStream; derived from the Tracks when `None`.
    pub media_type: Option<String>,
    pub user_agent: String,
    /// Time allowed to connect and get the response headers of one request.
    pub connection_timeout: Duration,
    /// Reconnect when no ack arrived for this long while fragments were outstanding.
    pub connection_staleness: Duration,
    /// Renew the PutMedia session at a fragment boundary after this long.
    pub max_session_duration: Duration,
    /// When no data arrives for this long, the open fragment is ended with an
    /// `AWS_KINESISVIDEO_END_OF_FRAGMENT` tag so the service persists it.
    pub idle_fragment_timeout: Duration,
    /// A live stream whose unacknowledged fragments span more than this is told about
    /// ([`Event::FallingBehind`]), once until it catches up to half of it.
    pub max_latency: Option<Duration>,
    pub store_limits: StoreLimits,
    /// Which ack releases a fragment from the store.
    pub release_on: AckLevel,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Extra PEM CA certificates to trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// Also write every PutMedia body here, one file per session
    /// (`KVS_DEBUG_DUMP_DATA_FILE_DIR`, [`dump_dir_from_env`]).
    pub dump_dir: Option<std::path::PathBuf>,
}

/// The connection's state, as posted on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    /// Running the control plane or opening a PutMedia connection.
    Connecting { attempt: u32 },
    /// A PutMedia session is open and sending.
    Streaming,
    /// The last attempt failed; the next one starts after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Everything was sent and acknowledged after the end of the stream.
    Finished,
}

/// A failure the uploader cannot recover from. Each message names the stream, the service's
/// error and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FatalError {
    /// No credentials could be had, or the service refused them or the rights they carry.
    #[error("{message}")]
    Auth {
        message: String,
        /// The service's error name, when it answered.
        kind: Option<String>,
    },
    /// The stream does not exist and may not be created, or it is not ACTIVE.
    #[error("{message}")]
    Stream { message: String },
    /// The service refused the stream for good (an error answer or a fatal ERROR ack).
    #[error("{message}")]
    Service {
        message: String,
        /// The service's error name or ack ErrorCode.
        kind: Option<String>,
    },
    /// The settings cannot work (TLS setup, URLs).
    #[error("{message}")]
    Setup { message: String },
}

/// What the uploader tells the element, from the runtime's threads.
#[derive(Debug, Clone)]
pub enum Event {
    /// An ack from the service, as received, and the producer time (ms since the epoch) of
    /// the fragment it is about.
    Ack {
        ack: Ack,
        producer_time_ms: Option<u64>,
    },
    /// The connection's new state, and what is not yet acknowledged.
    State {
        state: ConnectionState,
        backlog: Backlog,
    },
    /// Something recoverable went wrong (a reconnect follows, a fragment was rejected...).
    Warning(String),
    /// The store was full: these oldest whole fragments were dropped.
    Dropped(Evicted),
    /// A live stream's unacknowledged fragments span `behind`, more than `max_latency`: the
    /// uplink does not keep up.
    FallingBehind { behind: Duration, max: Duration },
    /// The store was full while a live stream's uplink was slower than the stream: its
    /// newest fragment was dropped whole, unsent ([`Uploader::admits_fragment`]).
    DroppedNewest(Evicted),
    /// No data came for a while: the open fragment (this timecode) was ended with an
    /// END_OF_FRAGMENT tag; the next data must start a new cluster (ask for a key frame).
    IdleFragmentEnded { timecode: u64 },
    /// The service is slower than upstream: the streaming thread was held this long for
    /// room in the store (reported once a wait exceeds `idle_fragment_timeout`, a fragment).
    BackPressure { held: Duration, backlog: Backlog },
    /// The stream cannot continue.
    Fatal(FatalError),
    /// Something worth a line in the debug log (the resolved region, where the credentials
    /// came from). Never holds a secret.
    Info(String),
}

/// Receives [`Event`]s; called from runtime threads, must not block.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Counters behind the element's `stats` property.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub bytes_sent: u64,
    /// Fragments produced by upstream (every cluster that entered the store).
    pub fragments_produced: u64,
    /// Fragments sent for the first time.
    pub fragments_sent: u64,
    /// Fragments sent again on a new connection (they had not been acknowledged).
    pub fragments_resent: u64,
    pub fragments_received: u64,
    pub fragments_persisted: u64,
    pub fragments_dropped: u64,
    /// Of `fragments_dropped`, a live stream's new fragments dropped unsent while its uplink
    /// could not keep up (the others: the store's oldest, during an outage).
    pub fragments_dropped_unsent: u64,
    pub fragments_rejected: u64,
    /// Fragments ended early at the service's limits (10 s, 50 MB) and their bytes not sent.
    pub fragments_cut: u64,
    pub bytes_cut: u64,
    /// Fragments ended after an idle period (`kvs-idle`) that then got more frames of their
    /// group of pictures, and those frames' bytes, not sent (the encoder did not start a new
    /// key frame when asked).
    pub fragments_late: u64,
    pub bytes_late: u64,
    pub bytes_dropped: u64,
    pub bytes_persisted: u64,
    /// Why fragments were rejected: the service's error name and how many times.
    pub rejected_reasons: BTreeMap<String, u64>,
    pub connections: u64,
    pub reconnects: u64,
    /// Total time the streaming thread was held waiting for the service (back-pressure): a
    /// recording's upload (a live stream is never held).
    pub backpressure: Duration,
    pub errors: u64,
    pub last_error: Option<String>,
    /// With `fragment-acks=false`: fragments released when RECEIVED whose PERSISTED did not
    /// come (stored by the service as far as it said, not known to be persisted).
    pub fragments_received_only: u64,
    /// The service could not be reached when this was taken (its reason: `last_error`).
    pub unreachable: bool,
    /// The connection was failing when this was taken (its reason: `last_error`).
    pub failing: bool,
    pub backlog: Backlog,
}

/// Why [`Uploader::wait_persisted`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Nothing is left in the store: every fragment was acknowledged, rejected or dropped.
    AllPersisted,
    TimedOut {
        pending: usize,
    },
    Cancelled,
    Failed,
}

/// How a stream ended, as told in the `kvs-summary` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every fragment produced was persisted.
    AllPersisted,
    /// The stream ended, but some fragments were not persisted (see the reasons).
    Incomplete,
    /// Fragments were still unacknowledged when `stop-stream-timeout` ran out.
    TimedOut,
    /// The wait was cancelled ([`Uploader::set_flushing`]): nothing can be said of what was
    /// left. kvssink waits on at the stop that follows and accounts then.
    Cancelled,
    /// The stream failed with a fatal error.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AllPersisted => "all-persisted",
            Outcome::Incomplete => "incomplete",
            Outcome::TimedOut => "timed-out",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
}

/// The end-of-stream account: every fragment produced is persisted, rejected, dropped or
/// still pending (abandoned), and nothing lost is called a success.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: Outcome,
    pub stats: Stats,
    /// Fragments that were produced and will not be persisted: rejected by the service,
    /// `dropped`, or `pending` (abandoned unacknowledged).
    pub lost: u64,
    /// Dropped from the full store or from the full spool, or not written to the spool.
    pub dropped: u64,
    /// Abandoned unacknowledged (not those also kept in the spool).
    pub pending: u64,
    /// Not persisted yet but kept in the spool (`spool-dir`), sent first at the next start.
    pub kept: u64,
    /// One phrase per cause of loss, e.g. `2 rejected by the service
    /// (MAX_FRAGMENT_DURATION_REACHED)`.
    pub reasons: Vec<String>,
    /// Frames not sent because no fragment could begin with them (mid-stream, until the
    /// next key frame).
    pub skipped: Skipped,
    wait: WaitOutcome,
}

/// Frames left out mid-stream because they could not be sent before the next key frame: a
/// cluster that did not begin with a key frame (skipped whole), or video further from its
/// key frame than a Matroska block reaches (32.7 s). Not a lost fragment, but not all of the
/// stream: the outcome is `incomplete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub frames: u64,
    pub bytes: u64,
    /// How much of the stream (ms) they covered.
    pub ms: u64,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        self.frames == 0 && self.bytes == 0
    }

    pub fn add(&mut self, other: Skipped) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.ms += other.ms;
    }
}

/// The spool's part of the end-of-stream account (`spool-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolAccount {
    /// Fragments still on disk, sent first at the next start.
    pub kept: u64,
    /// Of the store's unacknowledged fragments, those also kept on disk (not lost).
    pub kept_in_flight: u64,
    /// Fragments dropped from the spool before they were handed to the uploader.
    pub dropped: u64,
    /// Some of them were dropped because the disk was full (else for `spool-size`).
    pub dropped_disk_full: bool,
    /// Fragments that could be neither written to the spool nor sent from memory.
    pub unwritten: u64,
    /// Fragments produced that never reached the uploader (kept, dropped or unwritten).
    pub not_handed: u64,
    /// A stream cut short (its process ending) inside a fragment that was going neither to
    /// the uploader as it came nor yet to disk (it would have, whole, from the spool): 1, lost
    /// and in no other count.
    pub open_lost: u64,
}

impl Summary {
    /// The stream was ended by an error (its input's): whatever was persisted, it failed.
    pub fn failed(mut self) -> Summary {
        self.outcome = Outcome::Failed;
        self.wait = WaitOutcome::Failed;
        self
    }

    /// The account again, with the spool's part: fragments on disk are not lost (nor
    /// persisted), those dropped from it or not written to it are.
    pub fn with_spool(self, spool: &SpoolAccount) -> Summary {
        Summary::build(&self.wait, self.stats, spool, self.skipped)
    }

    #[cfg(test)]
    fn new(wait: &WaitOutcome, stats: Stats) -> Summary {
        Summary::build(wait, stats, &SpoolAccount::default(), Skipped::default())
    }

    fn build(
        wait: &WaitOutcome,
        mut stats: Stats,
        spool: &SpoolAccount,
        skipped: Skipped,
    ) -> Summary {
        stats.fragments_produced += spool.not_handed + spool.open_lost;
        let pending =
            stats.backlog.fragments.saturating_sub(spool.kept_in_flight) + spool.open_lost;
        let dropped = stats.fragments_dropped + spool.dropped + spool.unwritten;
        let lost = stats.fragments_rejected + dropped + pending;
        let mut reasons = Vec::new();
        if stats.fragments_rejected > 0 {
            let names: Vec<String> = stats
                .rejected_reasons
                .iter()
                .map(|(name, n)| format!("{name} x{n}"))
                .collect();
            reasons.push(format!(
                "{} rejected by the service ({})",
                stats.fragments_rejected,
                names.join(", ")
            ));
        }
        let unsent = stats.fragments_dropped_unsent;
        if unsent > 0 {
            reasons.push(format!(
                "{unsent} dropped unsent while the uplink was slower than the live stream \
                 (storage-size / buffer-duration full)"
            ));
        }
        if stats.fragments_dropped > unsent {
            reasons.push(format!(
                "{} dropped from the full fragment store during an outage (storage-size / \
                 buffer-duration)",
                stats.fragments_dropped - unsent
            ));
        }
        if pending > 0 {
            let why = match &stats.last_error {
                Some(e) if stats.unreachable => {
                    format!(": the service could not be reached ({e})")
                }
                Some(e) if stats.failing => format!(": the connection kept failing ({e})"),
                // Refused before any connection (credentials, the stream, the settings).
                Some(e) if stats.connections == 0 => format!(
                    ": the stream did not start ({})",
                    e.lines().next().unwrap_or_default()
                ),
                _ if stats.connections == 0 => ": the service never answered".to_owned(),
                _ => String::new(),
            };
            reasons.push(format!("{pending} never acknowledged (abandoned){why}"));
        }
        if spool.kept > 0 {
            reasons.push(format!(
                "{} not sent yet, kept in the spool (spool-dir) and sent first at the next start",
                spool.kept
            ));
        }
        if spool.dropped > 0 {
            let why = if spool.dropped_disk_full {
                "the spool's disk was full"
            } else {
                "spool-size"
            };
            reasons.push(format!(
                "{} dropped from the full spool ({why}) during an outage",
                spool.dropped
            ));
        }
        if spool.unwritten > 0 {
            reasons.push(format!(
                "{} could not be written to the spool (spool-dir) while older fragments \
                 waited there, or not read back from it",
                spool.unwritten
            ));
        }
        if stats.fragments_cut > 0 {
            reasons.push(format!(
                "{} cut at the service's limits (10 s, 50 MB): {} bytes of frames after the cut \
                 were not sent",
                stats.fragments_cut, stats.bytes_cut
            ));
        }
        if stats.fragments_late > 0 {
            reasons.push(format!(
                "{} ended after no data came for fragment-duration, then got more frames of \
                 the same group of pictures: {} bytes of them were not sent (the encoder did not \
                 start a new key frame when asked)",
                match stats.fragments_late {
                    1 => "1 fragment".to_owned(),
                    n => format!("{n} fragments"),
                },
                stats.bytes_late
            ));
        }
        if !skipped.is_empty() {
            reasons.push(format!(
                "{} frames ({} ms, {} bytes) skipped until the next key frame, which a fragment \
                 must begin with",
                skipped.frames, skipped.ms, skipped.bytes
            ));
        }
        let outcome = match wait {
            WaitOutcome::Failed => Outcome::Failed,
            WaitOutcome::Cancelled => Outcome::Cancelled,
            WaitOutcome::TimedOut { .. } => Outcome::TimedOut,
            WaitOutcome::AllPersisted
                if lost > 0
                    || stats.fragments_cut > 0
                    || stats.fragments_late > 0
                    || spool.kept > 0
                    || !skipped.is_empty() =>
            {
                Outcome::Incomplete
            }
            WaitOutcome::AllPersisted => Outcome::AllPersisted,
        };
        Summary {
            outcome,
            stats,
            lost,
            dropped,
            pending,
            kept: spool.kept,
            reasons,
            skipped,
            wait: wait.clone(),
        }
    }

    /// `stream X: 3 of 10 fragments were not persisted: ...`, or `None` when nothing was
    /// lost.
    pub fn loss_message(&self, stream: &str) -> Option<String> {
        let what = if self.lost > 0 {
            format!(
                "{} of {} fragments were not persisted",
                self.lost, self.stats.fragments_produced
            )
        } else if self.stats.fragments_cut > 0
            || self.stats.fragments_late > 0
            || !self.skipped.is_empty()
            || matches!(self.outcome, Outcome::Incomplete | Outcome::TimedOut)
        {
            // Frames after a cut, or fragments still in the spool when the wait ran out.
            "not all of the stream was persisted".to_owned()
        } else {
            return None;
        };
        Some(crate::about(
            stream,
            format_args!("{what}: {}", self.reasons.join("; ")),
        ))
    }
}

/// A stream header and the fragments it applies to.
#[derive(Debug, Clone)]
pub(crate) struct HeaderGen {
    /// Sequence number of the first fragment sent with this header.
    pub first_seq: u64,
    pub bytes: Bytes,
    /// `x-amzn-producer-start-timestamp` for RELATIVE timecodes, in ms since the epoch.
    pub producer_start_ms: u64,
    /// Media type derived from the header's tracks.
    pub media_type: String,
}

pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    /// Streaming thread waits here for room in the store and for the final acks.
    pub changed: Condvar,
    /// The open PutMedia connection, which [`Shared::kick`] polls with new data.
    conn: Mutex<Option<Arc<direct::Conn>>>,
    /// Wakes the driver (header arrived, EOS).
    pub wake_driver: tokio::sync::Notify,
    pub events: EventSink,
    pub config: Config,
    /// A fatal error is being told (set before it is recorded, so it is told once).
    pub failing: std::sync::atomic::AtomicBool,
    /// Sessions whose body went to a file in `dump_dir` so far: the next file's number.
    pub dumped_sessions: AtomicU64,
    /// How long a connection may go without an ack while data is outstanding (ms):
    /// `connection-staleness`, doubled after each stale connection until one makes progress
    /// (a service slower to acknowledge than that is waited for, not reconnected to forever).
    pub staleness_ms: AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, event: Event) {
        (self.events)(event)
    }

    fn connection(&self) -> Option<Arc<direct::Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// New data (or a new state) for the connection's body: the connection is polled on the
    /// calling thread, which writes it, or its task is woken (`direct::Conn::poll_here`).
    /// Not with `inner` locked: the body takes it.
    pub fn kick(&self) {
        if let Some(conn) = self.connection() {
            conn.poll_here();
        }
    }

    /// Like [`Shared::kick`], by waking the connection's task: with `inner` locked.
    pub fn kick_later(&self) {
        if let Some(conn) = self.connection() {
            conn.wake_task();
        }
    }

    /// Tells the connection's new state, with the backlog at that moment.
    pub fn emit_state(&self, state: ConnectionState) {
        let backlog = self.lock().store.backlog();
        self.emit(Event::State { state, backlog });
    }

    /// Tells a fatal error once, then records it and wakes everyone waiting. Told first: the
    /// streaming thread refuses data once it is recorded, and the application must see this
    /// error before the source's "streaming stopped" that follows.
    pub fn fail(&self, error: FatalError) {
        if self.failing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.emit(Event::Fatal(error.clone()));
        self.lock().on_fatal(&error);
        self.changed.notify_all();
        self.kick();
    }
}

/// A file upload (upstream not live) is held while more fragments than this are
/// unacknowledged (the open one included).
const MAX_PENDING_NOT_LIVE: u64 = 4;

/// Appended bytes are shown to the connection at element boundaries, or once this many wait
/// (an element spread over many input buffers).
const WAKE_BYTES: u64 = 64 * 1024;
/// Upstream far ahead of real time (a file) wakes the connection once this many bytes wait.
const BATCH_BYTES: u64 = 256 * 1024;

/// Handle owned by the element; dropping it stops the driver.
pub struct Uploader {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
    /// Bytes appended (or fragments ended) since the connection was last woken; only the
    /// streaming thread touches it.
    unannounced: AtomicU64,
    /// The open fragment holds no whole frame yet: its bytes are not shown to the connection
    /// (see [`Uploader::hold_back_open`]).
    open_held_back: std::sync::atomic::AtomicBool,
    /// Frames skipped mid-stream, for the account.
    skipped: Mutex<Skipped>,
}

impl Uploader {
    /// Starts the driver on `runtime`: control plane first, then PutMedia connections. Never
    /// blocks on the network.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: Config,
        credentials: SharedCredentialsProvider,
        events: EventSink,
    ) -> Uploader {
        let store = FragmentStore::new(config.store_limits, config.release_on);
        let config_staleness_ms = config.connection_staleness.as_millis() as u64;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::new(store)),
            changed: Condvar::new(),
            conn: Mutex::new(None),
            wake_driver: tokio::sync::Notify::new(),
            events,
            config,
            failing: std::sync::atomic::AtomicBool::new(false),
            dumped_sessions: AtomicU64::new(0),
            staleness_ms: AtomicU64::new(config_staleness_ms),
        });
        let driver = runtime.spawn(driver::run(shared.clone(), credentials));
        Uploader {
            shared,
            driver,
            unannounced: AtomicU64::new(0),
            open_held_back: std::sync::atomic::AtomicBool::new(false),
            skipped: Mutex::new(Skipped::default()),
        }
    }

    /// A new stream header: fragments from now on are sent after it, in a new session if one
    /// with another header is open.
    pub fn push_header(&self, bytes: Bytes, producer_start_ms: u64, media_type: String) {
        {
            let mut inner = self.shared.lock();
            let first_seq = inner.next_seq;
            // A header with no fragment yet is simply replaced.
            if inner
                .headers
                .back()
                .is_some_and(|h| h.first_seq == first_seq)
            {
                inner.headers.pop_back();
            }
            inner.headers.push_back(HeaderGen {
                first_seq,
                bytes,
                producer_start_ms,
                media_type,
            });
        }
        self.shared.wake_driver.notify_one();
        self.shared.kick();
    }

    /// Opens a fragment (a Matroska cluster with this timecode, starting at `start_ns`). The
    /// connection sees it at the next [`Uploader::wake`].
    pub fn begin_fragment(&self, timecode: u64, start_ns: u64, size_hint: u64) {
        let mut inner = self.wait_for_room(size_hint);
        let evicted = inner.store.begin(timecode, start_ns);
        inner.next_seq += 1;
        let behind = self.falling_behind(&mut inner);
        self.after_store_change(inner, evicted);
        if let Some(event) = behind {
            self.shared.emit(event);
        }
    }

    /// Whether a live stream has just fallen more than `max_latency` behind (told once,
    /// again after it caught up to half of it).
    fn falling_behind(&self, inner: &mut Inner) -> Option<Event> {
        let max = self.shared.config.max_latency?;
        if !inner.live || inner.keep_everything || inner.outage {
            // A recording waits by design; an outage has its own warnings.
            return None;
        }
        let behind = Duration::from_nanos(inner.store.backlog().duration_ns);
        if behind < max / 2 {
            inner.behind_told = false;
        } else if behind > max && !std::mem::replace(&mut inner.behind_told, true) {
            return Some(Event::FallingBehind { behind, max });
        }
        None
    }

    /// Appends bytes to the open fragment. The connection sees them at the next
    /// [`Uploader::wake`].
    pub fn append(&self, data: Bytes) {
        let len = data.len() as u64;
        let mut inner = self.wait_for_room(len);
        // (No fragment open: its PERSISTED ack released it after an idle end.)
        let late = match inner.store.open_fragment() {
            Some(_) => None,
            None => inner.on_orphan(len),
        };
        let evicted = inner.store.append(data);
        inner.note_store_size();
        self.unannounced.fetch_add(len.max(1), Ordering::Relaxed);
        self.after_store_change(inner, evicted);
        if let Some(timecode) = late {
            self.shared
                .emit(late_frames(&self.shared.config.stream_name, timecode));
        }
    }

    /// Closes the open fragment. The connection sees it, and is woken, at the next
    /// [`Uploader::wake`].
    pub fn end_fragment(&self, end_ns: u64) {
        self.shared.lock().store.finish(end_ns);
        self.unannounced.fetch_add(BATCH_BYTES, Ordering::Relaxed);
    }

    /// Shows what was appended since the last wake to the connection, and wakes it, when
    /// `whole` (the bytes end between two Matroska elements) or once [`WAKE_BYTES`] wait.
    /// Called once per input buffer, so the connection wakes at most once per buffer and a
    /// block header pushed alone waits for its frame: the two go out in one write.
    ///
    /// With `batch` (upstream is far ahead of real time: a file), whole elements are shown
    /// but the connection is woken only once [`BATCH_BYTES`] wait or a fragment ended; a
    /// connection that is already sending takes them anyway, and one left waiting takes them
    /// after `idle_fragment_timeout` at the latest.
    pub fn wake(&self, whole: bool, batch: bool) {
        let pending = self.unannounced.load(Ordering::Relaxed);
        if pending == 0
            || (!whole && pending < WAKE_BYTES)
            || self.open_held_back.load(Ordering::Relaxed)
        {
            return;
        }
        if batch && pending < BATCH_BYTES {
            self.shared.lock().publish();
            return;
        }
        self.unannounced.store(0, Ordering::Relaxed);
        self.shared.lock().publish();
        self.shared.kick();
    }

    /// The open fragment reached the service's limits: it ends at its first `keep` bytes,
    /// then its metadata `tags` and an END_OF_FRAGMENT tag, so the service persists it instead
    /// of refusing it whole. Returns the bytes removed (part of a frame already appended).
    pub fn cut_fragment(&self, keep: u64, tags: Option<Bytes>, end_ns: u64) -> u64 {
        let mut inner = self.shared.lock();
        let removed = inner.store.truncate_open(keep);
        let end = crate::mkv::end_of_fragment_tags();
        let end = match tags {
            Some(tags) => Bytes::from([&tags[..], &end[..]].concat()),
            None => end,
        };
        let evicted = inner.store.append(end);
        inner.store.finish(end_ns);
        inner.on_cut(removed);
        inner.publish();
        self.after_store_change(inner, evicted);
        self.shared.kick();
        removed
    }

    /// Whether a live stream's next fragment is kept. A live source cannot wait: held, it
    /// loses frames where nothing counts them (a camera's driver, a leaky queue) and holds
    /// every other branch of a `tee` with it. So while the uplink is slower than the stream
    /// and the store is full (`storage-size`, `buffer-duration`), each new fragment is
    /// dropped whole, before any byte of it is sent, and counted; the fragments already
    /// stored go on being sent, and the stream is kept as soon as there is room again.
    /// Always true for a recording (it waits instead), during an outage (the store drops its
    /// oldest) and with a spool.
    pub fn admits_fragment(&self, start_ns: u64) -> bool {
        let limits = self.shared.config.store_limits;
        let inner = self.shared.lock();
        if !inner.live
            || inner.keep_everything
            || inner.unreachable()
            || inner.spooled
            || inner.flushing
            || inner.fatal().is_some()
        {
            return true;
        }
        let backlog = inner.store.backlog();
        // From the oldest kept to this one: the fragments dropped between count too, or
        // buffer-duration would not bound how far behind the stream is.
        let span = backlog.duration_ns.max(inner.store.span_to(start_ns));
        !limits.full(backlog.bytes, span) || backlog.fragments <= ALWAYS_ROOM_AFTER
    }

    /// A live stream's fragment of `bytes`, not admitted ([`Uploader::admits_fragment`]),
    /// ended: it counts as produced and dropped, and the element is told.
    pub fn drop_unadmitted(&self, bytes: u64) {
        self.shared.lock().store.drop_unstored(bytes);
        self.shared.emit(Event::DroppedNewest(Evicted {
            fragments: 1,
            bytes,
        }));
    }

    /// Whether a fragment of about `bytes` and `duration_ns` fits in the store now, with no
    /// waiting. A store holding one fragment always has room for the next, however large.
    pub fn has_room(&self, bytes: u64, duration_ns: u64) -> bool {
        let limits = self.shared.config.store_limits;
        let backlog = self.shared.lock().store.backlog();
        backlog.fragments <= ALWAYS_ROOM_AFTER
            || !limits.full(backlog.bytes + bytes, backlog.duration_ns + duration_ns)
    }

    /// While `held`, the open fragment's bytes are not shown to the connection (what came
    /// before it is, at the next wake): the producer holds a fragment back until its first
    /// frame is whole, so that one that ends without any (a stop while it was held for its
    /// time) is removed with nothing of it sent ([`Uploader::drop_frameless`]). Released
    /// before the streaming thread waits for room in the store.
    pub fn hold_back_open(&self, held: bool) {
        self.open_held_back.store(held, Ordering::Relaxed);
    }

    /// The open fragment ended without a frame, which the service refuses ("fragment without
    /// frames"): it is never sent and not counted as produced. If nothing of it was shown to
    /// the connection, it is removed; otherwise it is emptied, and a connection that sent its
    /// first bytes is broken off, as for a fragment cut short after they were sent
    /// ([`Uploader::end_fragment_with`]), and goes on without it. Returns the bytes removed.
    pub fn drop_frameless(&self) -> u64 {
        self.open_held_back.store(false, Ordering::Relaxed);
        let mut inner = self.shared.lock();
        let Some(open) = inner.store.open_fragment() else {
            return 0;
        };
        let seq = open.seq;
        let shown = inner.visible.chunks_of(seq, open.chunks.len()) > 0;
        if inner.idle_ended.as_ref().is_some_and(|i| i.seq == seq) {
            inner.idle_ended = None;
        }
        inner.open_metadata = None;
        if !shown {
            let removed = inner.store.remove_open();
            inner.publish();
            return removed;
        }
        if inner.max_seq_sent.is_some_and(|sent| sent >= seq) {
            inner.on_frameless_started();
        }
        let removed = inner.store.void_open();
        inner.on_not_sent(removed);
        inner.publish();
        drop(inner);
        self.shared.changed.notify_all();
        self.shared.kick();
        removed
    }

    /// Frames skipped mid-stream (until the next key frame): the account says so.
    pub fn count_skipped(&self, skipped: Skipped) {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(skipped);
    }

    fn skipped(&self) -> Skipped {
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of a cut fragment that were not sent.
    pub fn count_cut_bytes(&self, bytes: u64) {
        self.shared.lock().on_cut_bytes(bytes);
    }

    /// The store's own counters hold what was dropped; the element is told.
    fn after_store_change(&self, inner: MutexGuard<'_, Inner>, evicted: Evicted) {
        drop(inner);
        if evicted.fragments > 0 {
            self.shared.emit(Event::Dropped(evicted));
        }
    }

    /// Unless the service is out of reach (a connection attempt failed and none has streamed
    /// since), waits for it to catch up rather than dropping fragments; during an outage lets
    /// the store drop its oldest fragments. A live stream is never held: whether its next
    /// fragment is kept is decided when it begins ([`Uploader::admits_fragment`]), and the
    /// fragment it is in goes on, however full the store.
    fn wait_for_room(&self, extra: u64) -> MutexGuard<'_, Inner> {
        let limits = self.shared.config.store_limits;
        let mut inner = self.shared.lock();
        let mut held_since: Option<Instant> = None;
        let mut reported = false;
        loop {
            // Only then is no connection in the middle of the oldest fragments, nor will an
            // ack for one come. (A service that answers but fails, or does not acknowledge,
            // may have stored what it was sent: a live stream drops its new fragments then.)
            let may_drop = (inner.unreachable() && !inner.keep_everything) || inner.spooled;
            inner.store.set_may_drop(may_drop);
            let backlog = inner.store.backlog();
            // A file upload goes as fast as the service acknowledges it, a few fragments
            // ahead, rather than filling the whole store (`storage-size`) with fragments
            // queued before the connection or in the sockets' buffers.
            let full = limits.full(backlog.bytes + extra, backlog.duration_ns)
                || (!inner.live && backlog.fragments > MAX_PENDING_NOT_LIVE);
            // The open fragment's first bytes always go in (see ALWAYS_ROOM_AFTER).
            let next_not_begun = inner.store.open_fragment().is_some_and(|f| f.size == 0);
            if !full
                || backlog.fragments <= ALWAYS_ROOM_AFTER
                || next_not_begun
                || may_drop
                || (inner.live && !inner.keep_everything)
                || inner.flushing
                || inner.ending
                || inner.fatal().is_some()
            {
                break;
            }
            if !inner.held
                && (self.unannounced.swap(0, Ordering::Relaxed) > 0
                    || self.open_held_back.swap(false, Ordering::Relaxed))
            {
                // Everything appended goes out before the wait: what the service is to
                // acknowledge must not wait for more input (the fragment before the open one
                // is acknowledged once the service sees the open one begin).
                self.open_held_back.store(false, Ordering::Relaxed);
                inner.publish();
                self.shared.kick_later();
            }
            inner.held = true;
            let since = *held_since.get_or_insert_with(Instant::now);
            if !reported && since.elapsed() >= self.shared.config.idle_fragment_timeout {
                reported = true;
                drop(inner);
                self.shared.emit(Event::BackPressure {
                    held: since.elapsed(),
                    backlog,
                });
                inner = self.shared.lock();
                continue;
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(since) = held_since {
            inner.held = false;
            inner.on_held(since.elapsed());
        }
        inner
    }

    /// Whether a full store holds upstream back even while the service is out of reach
    /// (`true`: nothing is ever dropped) or drops its oldest fragments then (live).
    pub fn set_keep_everything(&self, keep: bool) {
        let mut inner = self.shared.lock();
        inner.keep_everything = keep;
        let keep = keep || inner.spooled;
        inner.store.set_keep_everything(keep);
    }

    /// A spool takes the fragments memory has no room for ([`Uploader::has_room`] says
    /// which): the store never drops, and appends never wait, not even during an outage.
    pub fn set_spooled(&self, spooled: bool) {
        let mut inner = self.shared.lock();
        inner.spooled = spooled;
        let keep = inner.keep_everything || spooled;
        inner.store.set_keep_everything(keep);
    }

    /// Holds the calling (streaming) thread for `duration`, or less if the uploader is
    /// flushing or failed. Returns false when it was cut short.
    pub fn hold(&self, duration: Duration) -> bool {
        let cut_short = self.wait_until(Instant::now() + duration, |inner| {
            (inner.flushing || inner.fatal().is_some()).then_some(())
        });
        cut_short.is_none()
    }

    /// [`Uploader::hold`], cut short as well when the application ends the stream
    /// ([`Uploader::end_soon`]): a long hold (a recording sent in real time) would keep the
    /// application's EOS waiting.
    pub fn hold_unless_ending(&self, duration: Duration) -> bool {
        let cut_short = self.wait_until(Instant::now() + duration, |inner| {
            (inner.flushing || inner.ending || inner.fatal().is_some()).then_some(())
        });
        cut_short.is_none()
    }

    /// Holds the streaming thread like [`Uploader::hold`] to keep to the service's limits
    /// (fragments and bytes per second): counted as back-pressure.
    pub fn hold_for_service(&self, duration: Duration) -> bool {
        let started = Instant::now();
        let held = self.hold(duration);
        self.shared.lock().on_held(started.elapsed());
        held
    }

    /// Waits on the shared state until `done` says something or `deadline` passes (`None`).
    fn wait_until<R>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&Inner) -> Option<R>,
    ) -> Option<R> {
        let mut inner = self.shared.lock();
        loop {
            if let Some(r) = done(&inner) {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// No more data: the open fragment is closed and the session ends once everything is sent.
    pub fn finish(&self) {
        {
            let mut inner = self.shared.lock();
            inner.eos = true;
            inner.publish();
        }
        self.shared.kick();
        self.shared.wake_driver.notify_one();
    }

    /// Blocks until every fragment is released by its ack, the timeout passes, the wait is
    /// cancelled by [`Uploader::set_flushing`] or the stream fails.
    pub fn wait_persisted(&self, timeout: Duration) -> WaitOutcome {
        let mut pending = 0;
        let outcome = self.wait_until(Instant::now() + timeout, |inner| {
            pending = inner.store.backlog().fragments as usize;
            if inner.flushing {
                Some(WaitOutcome::Cancelled)
            } else if inner.fatal().is_some() {
                Some(WaitOutcome::Failed)
            } else {
                (pending == 0).then_some(WaitOutcome::AllPersisted)
            }
        });
        outcome.unwrap_or(WaitOutcome::TimedOut { pending })
    }

    /// Fragments not yet released by their acks (the open one included).
    pub fn unacknowledged(&self) -> u64 {
        self.shared.lock().store.backlog().fragments
    }

    /// Whether upstream is live (from the latency query). Not live (a file), upstream is
    /// held once a few fragments wait to be sent; live, only when the store is full.
    pub fn set_live(&self, live: bool) {
        self.shared.lock().live = live;
    }

    /// Tells the application a warning about the stream now (from any thread).
    pub fn warn(&self, what: impl std::fmt::Display) {
        self.shared.emit(Event::Warning(crate::about(
            &self.shared.config.stream_name,
            what,
        )));
    }

    /// While set, nothing on the streaming thread waits (BaseSink `unlock`).
    /// Nor does the store drop a fragment to make room for what comes in meanwhile: a
    /// stream stopped while held by back-pressure has nothing lost for it.
    pub fn set_flushing(&self, flushing: bool) {
        let mut inner = self.shared.lock();
        inner.flushing = flushing;
        // A flush after EOS begins a new stream.
        inner.ending &= flushing;
        inner.store.set_stopping(flushing);
        drop(inner);
        self.shared.changed.notify_all();
    }

    /// The application is ending the stream: an EOS is on its way, and cannot reach kvssink
    /// while the streaming thread is held for room (a source's EOS waits for its streaming
    /// thread). From now on nothing is held: what comes before the EOS is kept in memory
    /// beyond the store's limits (a buffer or a queue's worth), and the EOS's wait for the
    /// service (`stop-stream-timeout`) bounds the rest.
    pub fn end_soon(&self) {
        self.shared.lock().ending = true;
        self.shared.changed.notify_all();
    }

    /// The pipeline is paused (or plays again): while it is, the open fragment is not ended
    /// as idle, since its last frames may still be in the encoder.
    pub fn set_paused(&self, paused: bool) {
        self.shared.lock().paused = paused;
    }

    /// Whether the application is ending the stream ([`Uploader::end_soon`]).
    pub fn ending(&self) -> bool {
        self.shared.lock().ending
    }

    /// The fatal error, if the stream failed.
    pub fn fatal(&self) -> Option<FatalError> {
        self.shared.lock().fatal().cloned()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// The account of a stream a fatal error ended, now: what was not persisted is lost.
    pub fn account_failed(&self, error: &FatalError) -> Summary {
        // Told before it is recorded (see Shared::fail): the account names it all the same.
        let mut stats = self.stats();
        stats.last_error.get_or_insert_with(|| error.to_string());
        self.summary(&WaitOutcome::Failed, stats)
    }

    /// The account as things stand, without waiting: what is not yet acknowledged (the open
    /// fragment included) counts as abandoned.
    pub fn account_now(&self) -> Summary {
        let stats = self.stats();
        let wait = match stats.backlog.fragments as usize {
            0 => WaitOutcome::AllPersisted,
            pending => WaitOutcome::TimedOut { pending },
        };
        self.summary(&wait, stats)
    }

    /// Like [`Uploader::finish_and_account`], until `deadline()`, asked again as the wait
    /// goes on (the application may shorten it: `stop-stream-timeout` set while waiting).
    pub fn finish_and_account_by(&self, deadline: impl Fn() -> Instant) -> Summary {
        self.finish();
        loop {
            let slice = deadline()
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            match self.wait_persisted(slice) {
                WaitOutcome::TimedOut { .. } if Instant::now() < deadline() => {}
                wait => return self.summary(&wait, self.stats()),
            }
        }
    }

    /// Waits like [`Uploader::wait_persisted`] and accounts for every fragment produced.
    pub fn finish_and_account(&self, timeout: Duration) -> Summary {
        self.finish();
        let wait = self.wait_persisted(timeout);
        self.summary(&wait, self.stats())
    }

    fn summary(&self, wait: &WaitOutcome, stats: Stats) -> Summary {
        Summary::build(wait, stats, &SpoolAccount::default(), self.skipped())
    }

    /// The metadata the open fragment carries if the connection ends it after an idle
    /// period (then the fragment's end writes the same: [`Uploader::end_fragment_with`]).
    pub fn set_open_metadata(&self, metadata: Option<Snapshot>) {
        self.shared.lock().open_metadata = metadata;
    }

    /// The open fragment ends. With `keep`, only its first `keep` bytes stay: what follows is
    /// an incomplete or invalid element that must not be sent; if the connection already sent
    /// bytes past that point, it is broken off and the fragment is sent again, whole, on the
    /// next one. Then its metadata, which `metadata` chooses from what the connection already
    /// sent: `None` if it did not end the fragment after an idle period, `Some(sent)` if it did
    /// (with `sent`, the Tags it wrote before the end-of-fragment tag). Decided under the
    /// store's lock, so that an idle end cannot come in between. Returns the metadata written
    /// and the bytes removed.
    pub fn end_fragment_with(
        &self,
        keep: Option<u64>,
        end_ns: u64,
        metadata: impl FnOnce(Option<Option<Snapshot>>) -> Option<Bytes>,
    ) -> (Option<Bytes>, u64) {
        let mut inner = self.shared.lock();
        // The fragment ending is the one begun last, even if its PERSISTED ack (after the
        // idle end) has already released it from the store.
        let ending = inner.store.last_begun();
        let idle = inner
            .idle_ended
            .take()
            .filter(|i| Some(i.seq) == ending)
            .map(|i| i.metadata);
        let tags = metadata(idle);
        inner.open_metadata = None;
        let removed = keep.map_or(0, |keep| inner.store.truncate_open(keep));
        let evicted = match &tags {
            Some(t) => inner.store.append_metadata(t.clone()),
            None => Evicted::default(),
        };
        inner.store.finish(end_ns);
        if keep.is_some() {
            inner.on_not_sent(removed);
            inner.publish();
            self.after_store_change(inner, evicted);
            self.shared.kick();
        } else {
            inner.note_store_size();
            self.unannounced.fetch_add(BATCH_BYTES, Ordering::Relaxed);
            self.after_store_change(inner, evicted);
        }
        (tags, removed)
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.set_flushing(true);
        self.driver.abort();
    }
}

/// The warning for frames that came for fragment `timecode` after a connection ended it
/// after an idle period: they cannot be sent (see `Stats::fragments_late`).
pub(crate) fn late_frames(stream: &str, timecode: u64) -> Event {
    Event::Warning(crate::about(
        stream,
        format_args!(
            "frames came for fragment {timecode} after it was ended because no data came for \
             fragment-duration: they are not sent (lost) until the next key frame, which the \
             encoder did not start when asked"
        ),
    ))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The Kinesis Video Streams media type for a set of tracks, each its Matroska codec id and
/// CodecPrivate (which tells G.711's A-law from µ-law).
pub fn media_type_for(tracks: &[(&str, &[u8])]) -> String {
    use kvs_format::matroska::{
        CODEC_AAC, CODEC_ACM, CODEC_H264, CODEC_H265, CODEC_OPUS, WAVE_FORMAT_MULAW,
    };
    let mut types: Vec<&str> = Vec::new();
    for (id, private) in tracks {
        let t = match *id {
            CODEC_H264 => "video/h264",
            CODEC_H265 => "video/h265",
            "V_VP8" => "video/x-vp8",
            "V_VP9" => "video/x-vp9",
            "V_AV1" => "video/av1",
            "V_MJPEG" => "video/x-motion-jpeg",
            CODEC_AAC => "audio/aac",
            CODEC_OPUS => "audio/opus",
            CODEC_ACM if private.get(..2) == Some(&WAVE_FORMAT_MULAW.to_le_bytes()[..]) => {
                "audio/mulaw"
            }
            CODEC_ACM => "audio/alaw",
            other if other.starts_with(CODEC_AAC) => "audio/aac",
            other if other.starts_with("V_") => "video/x-matroska",
            _ => "audio/x-matroska",
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if types.is_empty() {
        "video/x-matroska".to_owned()
    } else {
        types.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(media_type_for(&[("V_MPEG4/ISO/AVC", &[])]), "video/h264");
        assert_eq!(
            media_type_for(&[("V_MPEG4/ISO/AVC", &[]), ("A_AAC", &[0x11, 0x90])]),
            "video/h264,audio/aac"
        );
        assert_eq!(
            media_type_for(&[("V_MPEG4/ISO/AVC", &[]), ("A_MS/ACM", &[7, 0])]),
            "video/h264,audio/mulaw"
        );
        assert_eq!(
            media_type_for(&[("V_MPEG4/ISO/AVC", &[]), ("A_MS/ACM", &[6, 0])]),
            "video/h264,audio/alaw"
        );
        assert_eq!(media_type_for(&[]), "video/x-matroska");
    }

    #[test]
    fn a_fragment_open_when_the_process_ends_outside_memory_and_disk_is_counted_lost() {
        // 10 handed to the uploader, 3 of them unacknowledged and also on disk, 4 more on
        // disk only; the process ends inside the next, which went to neither.
        let stats = Stats {
            fragments_produced: 10,
            backlog: Backlog {
                fragments: 3,
                ..Backlog::default()
            },
            connections: 1,
            ..Stats::default()
        };
        let mut spool = SpoolAccount {
            kept: 7,
            kept_in_flight: 3,
            not_handed: 4,
            ..SpoolAccount::default()
        };
        let wait = WaitOutcome::TimedOut { pending: 3 };
        let kept = Summary::new(&wait, stats.clone()).with_spool(&spool);
        assert_eq!(
            kept.loss_message("s").unwrap(),
            "stream s: not all of the stream was persisted: 7 not sent yet, kept in the spool \
             (spool-dir) and sent first at the next start"
        );
        spool.open_lost = 1;
        let cut = Summary::new(&wait, stats).with_spool(&spool);
        assert_eq!(cut.lost, 1);
        assert_eq!(
            cut.loss_message("s").unwrap(),
            "stream s: 1 of 15 fragments were not persisted: 1 never acknowledged \
             (abandoned); 7 not sent yet, kept in the spool (spool-dir) and sent first at the \
             next start"
        );
    }

    #[test]
    fn the_summary_calls_nothing_lost_a_success() {
        let mut stats = Stats {
            fragments_produced: 10,
            ..Stats::default()
        };
        let clean = Summary::new(&WaitOutcome::AllPersisted, stats.clone());
        assert_eq!((clean.outcome, clean.lost), (Outcome::AllPersisted, 0));
        assert!(clean.loss_message("s").is_none());

        stats.fragments_rejected = 1;
        stats
            .rejected_reasons
            .insert("MAX_FRAGMENT_DURATION_REACHED".into(), 1);
        stats.fragments_dropped = 2;
        let lossy = Summary::new(&WaitOutcome::AllPersisted, stats.clone());
        assert_eq!((lossy.outcome, lossy.lost), (Outcome::Incomplete, 3));
        let message = lossy.loss_message("s").unwrap();
        assert!(message.starts_with("stream s: 3 of 10 fragments were not persisted"));
        assert!(message.contains("1 rejected by the service (MAX_FRAGMENT_DURATION_REACHED x1)"));
        assert!(message.contains("2 dropped from the full fragment store"));

        let cut_only = Summary::new(
            &WaitOutcome::AllPersisted,
            Stats {
                fragments_produced: 2,
                fragments_cut: 1,
                bytes_cut: 100,
                ..Stats::default()
            },
        );
        assert_eq!((cut_only.outcome, cut_only.lost), (Outcome::Incomplete, 0));
        assert_eq!(
            cut_only.loss_message("s").unwrap(),
            "stream s: not all of the stream was persisted: 1 cut at the service's limits \
             (10 s, 50 MB): 100 bytes of frames after the cut were not sent"
        );

        stats.backlog.fragments = 4;
        let late = Summary::new(&WaitOutcome::TimedOut { pending: 4 }, stats.clone());
        assert_eq!((late.outcome, late.lost), (Outcome::TimedOut, 7));
        assert!(
            late.reasons
                .last()
                .unwrap()
                .contains("4 never acknowledged")
        );
        // With the service out of reach at the end, the reason says so.
        stats.unreachable = true;
        stats.failing = true;
        stats.last_error = Some("cannot reach http://x: refused".into());
        let unreachable = Summary::new(&WaitOutcome::TimedOut { pending: 4 }, stats.clone());
        assert!(
            unreachable.reasons.last().unwrap().ends_with(
                "4 never acknowledged (abandoned): the service could not be reached (cannot \
                 reach http://x: refused)"
            ),
            "{:?}",
            unreachable.reasons
        );
        // Reached, but failing (no acks, closed connections): not called unreachable.
        stats.unreachable = false;
        stats.last_error = Some("no acknowledgement for 5s".into());
        let failing = Summary::new(&WaitOutcome::TimedOut { pending: 4 }, stats.clone());
        assert!(
            failing.reasons.last().unwrap().ends_with(
                "4 never acknowledged (abandoned): the connection kept failing (no \
                 acknowledgement for 5s)"
            ),
            "{:?}",
            failing.reasons
        );
        // Refused before any connection: said so, not "never answered".
        stats.failing = false;
        stats.connections = 0;
        stats.last_error = Some("InvalidSignatureException (HTTP 403): ...".into());
        let refused = Summary::new(&WaitOutcome::TimedOut { pending: 4 }, stats.clone());
        assert!(
            refused.reasons.last().unwrap().ends_with(
                "4 never acknowledged (abandoned): the stream did not start \
                 (InvalidSignatureException (HTTP 403): ...)"
            ),
            "{:?}",
            refused.reasons
        );
        // Nothing failed yet, and nothing ever answered (a connection attempt still waits).
        stats.last_error = None;
        stats.connections = 0;
        let silent = Summary::new(&WaitOutcome::TimedOut { pending: 4 }, stats);
        assert!(
            silent
                .reasons
                .last()
                .unwrap()
                .ends_with("4 never acknowledged (abandoned): the service never answered"),
            "{:?}",
            silent.reasons
        );
    }
}
