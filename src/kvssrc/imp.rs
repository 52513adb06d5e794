//! The kvssrc element: a PushSrc whose buffers are whole GetMedia fragments.
//!
//! The reader ([`crate::getmedia`]) runs on the shared runtime; `create` waits on its channel
//! from the streaming thread, and `unlock` ends that wait at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use bytes::Bytes;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use tokio::sync::{mpsc, watch};

use super::settings::{self, Settings, StartSelector};
use crate::about;
use crate::getmedia::fragments::FragmentTags;
use crate::getmedia::{self, Event, Fragment};
use kvs_format::matroska::{header_codecs, same_tracks};
use kvs_format::timeline::{Placed, Timeline};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvssrc",
        gst::DebugColorFlags::empty(),
        Some("Amazon Kinesis Video Streams source"),
    )
});

/// Fragments read ahead of the streaming thread, reading what is stored.
const READ_AHEAD: usize = 4;
/// ... and reading live. A live view behind by an outage (its latency grown to the outage's
/// length) holds that many seconds of fragments while its sink waits: when the reader has no
/// room for them, they stay in the socket, come late, and the latency could never come down.
const LIVE_READ_AHEAD: usize = 16;

/// What a live read's latency adds to the most a fragment's first frame was late (for the
/// service's and the network's jitter), in parts of it.
const LATENCY_HEADROOM_DIVISOR: u64 = 4;

/// A live read's latency comes down when, over this long (wall time, since it last changed),
/// every fragment's first frame came early enough for a lower one (after an outage: the view
/// catches up with live instead of staying behind by it).
const LATENCY_DECAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// ... and only by at least this much (ns): jitter does not move it.
const LATENCY_DECAY_MIN_STEP: u64 = 500_000_000;

struct Started {
    stream: String,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
    /// The stream header of the first fragment pushed; the same header (or one of the same
    /// tracks, a restarted muxer's) in front of later fragments is left out, so downstream
    /// sees one Matroska stream.
    header: Option<Bytes>,
    /// Cluster timecodes moved onto one timeline across the stream's recordings.
    timeline: Timeline,
    /// The number and continuation token of the last fragment passed on.
    last: Option<(Option<String>, Option<String>)>,
    fragments: u64,
    /// Fragments `drop-on-latency` skipped.
    skipped: u64,
    /// The first fragment's timestamp (ns), which matroskademux's segment starts at.
    first_ns: Option<u64>,
    /// How late each fragment's first frame came in the last `LATENCY_DECAY_WINDOW`, and
    /// when the latency last changed.
    lateness: std::collections::VecDeque<(std::time::Instant, gst::ClockTime)>,
    latency_set: std::time::Instant,
    /// What a bounded read asked for, in its properties' words.
    range: String,
    /// The last `kvs-connection` state posted was `streaming`: a new GetMedia after the
    /// service ended one (it does after a while) is no change to post.
    streaming: bool,
}

pub struct KvsSrc {
    settings: Mutex<Settings>,
    /// Taken by the streaming thread for as long as `create` runs.
    state: Mutex<Option<Started>>,
    /// `true` between `unlock` and `unlock_stop`: `create` returns FLUSHING.
    flushing: watch::Sender<bool>,
    /// The read's timeline origin, ms since the epoch (0: no fragment yet): the
    /// `timeline-origin` property.
    timeline_origin: AtomicU64,
    /// A live read's latency: what the LATENCY query answers (see [`KvsSrc::measure_latency`]).
    latency: Mutex<gst::ClockTime>,
}

impl Default for KvsSrc {
    fn default() -> Self {
        KvsSrc {
            settings: Mutex::default(),
            state: Mutex::default(),
            flushing: watch::Sender::new(false),
            timeline_origin: AtomicU64::new(0),
            latency: Mutex::new(gst::ClockTime::ZERO),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for KvsSrc {
    const NAME: &'static str = "GstKvsSrc";
    type Type = super::KvsSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for KvsSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        settings::set(&mut lock(&self.settings), value, pspec);
        // Whether the source is live follows the selector from the next start on (see
        // `change_state`): set while playing, it must not turn a running read into another.
        if pspec.name() == "start-selector" && self.obj().current_state() <= gst::State::Ready {
            self.apply_liveness();
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == settings::TIMELINE_ORIGIN {
            return self.timeline_origin.load(Ordering::Relaxed).to_value();
        }
        settings::get(&lock(&self.settings), pspec)
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        // The default selector, now, is a live source.
        obj.set_live(true);
        obj.set_format(gst::Format::Bytes);
    }
}

impl GstObjectImpl for KvsSrc {}

impl ElementImpl for KvsSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams source",
                "Source/Network",
                "Reads a Kinesis video stream with GetMedia, as Matroska",
                "kvssink contributors",
            )
        });
        Some(&*META)
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // GstBaseSrc decides on NO_PREROLL before its parent's change (which starts us).
        if transition == gst::StateChange::ReadyToPaused {
            self.apply_liveness();
        }
        self.parent_change_state(transition)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/x-matroska").build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("src pad template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl KvsSrc {
    /// A read from now on is live; any other selector reads what is stored, as fast as it
    /// comes.
    fn apply_liveness(&self) {
        let live = lock(&self.settings).start_selector == StartSelector::Now;
        self.obj().set_live(live);
    }
}

impl BaseSrcImpl for KvsSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.timeline_origin.store(0, Ordering::Relaxed);
        *lock(&self.latency) = gst::ClockTime::ZERO;
        let settings = lock(&self.settings).clone();
        let Some(stream) = settings.stream_name.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("kvssrc needs a stream-name")
            ));
        };
        let setting_error =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("{}", about(&stream, e)));
        crate::endpoint::check(&settings.aws.location()).map_err(setting_error)?;
        let config = settings.reader_config(&stream).map_err(setting_error)?;
        let (credentials, ignored) = settings
            .aws
            .credential_sources(&stream)
            .and_then(|sources| crate::credentials::provider(&sources))
            .map_err(setting_error)?;
        for message in settings
            .aws
            .credential_warnings()
            .into_iter()
            .chain(ignored)
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("{}", about(&stream, message))
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "starting: stream {stream}, from {:?}",
            config.start
        );
        let ahead = if self.obj().is_live() {
            LIVE_READ_AHEAD
        } else {
            READ_AHEAD
        };
        let (tx, events) = mpsc::channel(ahead);
        let task = getmedia::spawn(crate::runtime::RUNTIME.handle(), config, credentials, tx);
        *lock(&self.state) = Some(Started {
            stream,
            events,
            task,
            header: None,
            timeline: Timeline::new(),
            last: None,
            fragments: 0,
            skipped: 0,
            first_ns: None,
            lateness: std::collections::VecDeque::new(),
            latency_set: std::time::Instant::now(),
            range: settings.range(),
            streaming: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(started) = lock(&self.state).take() {
            started.task.abort();
            gst::info!(
                CAT,
                imp = self,
                "stopped after {} fragments",
                started.fragments
            );
        }
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut()
            && self.obj().is_live()
        {
            q.set(true, *lock(&self.latency), gst::ClockTime::NONE);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(true);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.send_replace(false);
        Ok(())
    }
}

impl PushSrcImpl for KvsSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut state = lock(&self.state);
        let Some(started) = state.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let mut flushing = self.flushing.subscribe();
        loop {
            let event = crate::runtime::RUNTIME.block_on(async {
                tokio::select! {
                    event = started.events.recv() => Some(event),
                    _ = flushing.wait_for(|f| *f) => None,
                }
            });
            let event = match event {
                None => return Err(gst::FlowError::Flushing),
                Some(None) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        ("{}", about(&started.stream, "the GetMedia reader stopped"))
                    );
                    return Err(gst::FlowError::Error);
                }
                Some(Some(event)) => event,
            };
            match event {
                Event::Info(text) => gst::info!(CAT, imp = self, "{text}"),
                Event::Connected(url) => {
                    gst::info!(CAT, imp = self, "reading from {url}");
                    if !std::mem::replace(&mut started.streaming, true) {
                        self.post_connection(&started.stream, "streaming", None);
                    }
                }
                Event::Reconnecting {
                    attempt,
                    delay,
                    reason,
                } => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "reconnecting in {} ms (attempt {attempt}): {reason}",
                        delay.as_millis()
                    );
                    if attempt == 1 {
                        // Once per outage; every attempt has its kvs-connection message.
                        gst::element_imp_warning!(
                            self,
                            gst::ResourceError::Read,
                            (
                                "{}",
                                crate::about(
                                    &started.stream,
                                    format_args!("{reason}; reconnecting until it answers")
                                )
                            )
                        );
                    }
                    started.streaming = false;
                    self.post_connection(
                        &started.stream,
                        "reconnecting",
                        Some((attempt, delay, &reason)),
                    );
                }
                Event::End => {
                    gst::info!(CAT, imp = self, "end-timestamp reached: EOS");
                    let s = gst::Structure::builder("kvs-end")
                        .field("stream", &started.stream)
                        .field("fragments", started.fragments)
                        .field("skipped", started.skipped)
                        .build();
                    self.post(s);
                    if started.fragments == 0 {
                        // An EOS before any header is an error in a demuxer ("got eos and didn't
                        // receive a complete header object"), and gst-launch-1.0 prints the first
                        // error as it is posted, before any warning that came earlier: so this is
                        // the error, as the service's GetClip answers an empty range.
                        gst::element_imp_error!(
                            self,
                            gst::ResourceError::NotFound,
                            (
                                "{}",
                                about(
                                    &started.stream,
                                    format_args!(
                                        "no fragment in the range read ({})",
                                        started.range
                                    )
                                )
                            )
                        );
                        return Err(gst::FlowError::Error);
                    }
                    return Err(gst::FlowError::Eos);
                }
                Event::Fatal(fatal) => {
                    let domain = if fatal.auth {
                        gst::ResourceError::NotAuthorized
                    } else if fatal.kind.as_deref() == Some("ResourceNotFoundException") {
                        gst::ResourceError::NotFound
                    } else {
                        gst::ResourceError::Read
                    };
                    gst::element_imp_error!(self, domain, ("{}", fatal));
                    return Err(gst::FlowError::Error);
                }
                Event::Fragment(fragment) => {
                    let repeats = match self.header_check(started, &fragment) {
                        Ok(repeats) => repeats,
                        Err(change) => {
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Format,
                                ("{}", about(&started.stream, &change))
                            );
                            return Err(gst::FlowError::Error);
                        }
                    };
                    let (tags, len) = (fragment.tags.clone(), fragment.bytes.len());
                    let (buffer, placed) = self.buffer(started, &fragment, repeats);
                    let origin = started.timeline.origin_ms();
                    if self.obj().is_live()
                        && let (Some(start_ns), Some(end_ns)) = (placed.start_ns, placed.end_ns)
                    {
                        // The first fragment, and one that brings a new stream header, are
                        // always passed on.
                        if repeats
                            && lock(&self.settings).drop_on_latency
                            && let Some(late) = self.too_late(started, end_ns)
                        {
                            self.skip(started, &tags, len, origin, (start_ns, end_ns), late);
                            continue;
                        }
                        self.measure_latency(started, start_ns, fragment.received);
                    }
                    started.fragments += 1;
                    started.last = Some((tags.number.clone(), tags.continuation_token.clone()));
                    if let Some(ms) = origin {
                        self.timeline_origin.store(ms, Ordering::Relaxed);
                    }
                    self.post_fragment(&started.stream, &tags, len, origin, false);
                    return Ok(CreateSuccess::NewBuffer(buffer));
                }
            }
        }
    }
}

impl KvsSrc {
    /// The fragment's bytes, without its stream header when it `repeats` the first one, its
    /// Cluster on the read's timeline (see [`kvs_format::timeline`]).
    fn buffer(
        &self,
        started: &mut Started,
        fragment: &Fragment,
        repeats: bool,
    ) -> (gst::Buffer, Placed) {
        let (pieces, placed) = fragment.placed(&mut started.timeline, repeats);
        if let Some(ns) = placed.moved_ns {
            gst::info!(
                CAT,
                imp = self,
                "fragment {:?} is from another recording: its timecodes move by {} ms",
                fragment.tags.number,
                ns / 1_000_000
            );
        }
        if let Some((origin, from)) = placed.new_origin {
            gst::info!(
                CAT,
                imp = self,
                "fragment {:?} is dated before what was passed on: a new timeline from {} ms, \
                 timeline-origin {origin}",
                fragment.tags.number,
                from / 1_000_000
            );
            let mut s = gst::Structure::builder("kvs-timeline")
                .field("stream", &started.stream)
                .field("timeline-origin", origin)
                .field("start", gst::ClockTime::from_nseconds(from))
                .build();
            if let Some(n) = &fragment.tags.number {
                s.set("fragment-number", n);
            }
            if let Some(ms) = fragment.tags.producer_ms {
                s.set("producer-timestamp", ms);
            }
            self.post(s);
        }
        if !repeats {
            if started.header.is_some() {
                gst::info!(CAT, imp = self, "the stream header changed");
            }
            started.header = Some(fragment.bytes.slice(..fragment.header_len));
        }
        let mut buffer = gst::Buffer::new();
        let b = buffer.get_mut().expect("a new buffer");
        for piece in pieces {
            b.append_memory(gst::Memory::from_slice(piece));
        }
        (buffer, placed)
    }

    /// With `drop-on-latency`: how much later than the latency allows the last frame of a
    /// fragment ending at `end_ns` (on the read's timeline) would be shown if it were passed
    /// on now, when it would be (see [`late_by`]).
    fn too_late(&self, started: &Started, end_ns: u64) -> Option<gst::ClockTime> {
        let now = self.obj().current_running_time()?;
        late_by(now, started.first_ns?, end_ns, *lock(&self.latency))
    }

    /// Skips a fragment `drop-on-latency` found `late` (its frames span `ns` on the read's
    /// timeline): says so in a QOS message, as an element that drops data for lateness does,
    /// and in its `kvs-fragment` message (`skipped`), so that its metadata is not lost.
    fn skip(
        &self,
        started: &mut Started,
        tags: &FragmentTags,
        len: usize,
        origin: Option<u64>,
        (start_ns, end_ns): (u64, u64),
        late: gst::ClockTime,
    ) {
        started.skipped += 1;
        gst::info!(
            CAT,
            imp = self,
            "skipping fragment {:?}: its last frame would be shown {} ms late",
            tags.number,
            late.mseconds()
        );
        let first = started.first_ns.unwrap_or(start_ns);
        let timestamp = gst::ClockTime::from_nseconds(start_ns);
        let qos = gst::message::Qos::builder(true)
            .running_time(gst::ClockTime::from_nseconds(
                start_ns.saturating_sub(first),
            ))
            .stream_time(timestamp)
            .timestamp(timestamp)
            .duration(gst::ClockTime::from_nseconds(
                end_ns.saturating_sub(start_ns),
            ))
            .values(late.nseconds() as i64, 1.0, 1_000_000)
            .stats(
                gst::format::Buffers::from_u64(started.fragments),
                gst::format::Buffers::from_u64(started.skipped),
            )
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(qos);
        self.post_fragment(&started.stream, tags, len, origin, true);
    }

    /// A live read's frames come a fragment at a time, the first frame of each as late as the
    /// fragment is long and more (the service persists it before GetMedia sends it). Its
    /// running time, as matroskademux gives it (its segment starts at the first fragment's
    /// timestamp), is `start_ns` less the first fragment's; by now the pipeline's running time
    /// is on: the difference is how late the frame is. The latency is the most that was, and
    /// a headroom; when it grows, a LATENCY message has the pipeline take it. It comes down
    /// when every fragment of the last `LATENCY_DECAY_WINDOW` would have been on time with
    /// `LATENCY_DECAY_MIN_STEP` less (a sink then drops what it would show late, and the view
    /// is live again).
    ///
    /// How late a fragment is counts from when it was `received`, not from now: with a large
    /// latency, a sink that syncs holds the streaming thread, and the fragments wait for it
    /// after they came; counted from now they would always look as late as the latency they
    /// caused, and it would never come down.
    fn measure_latency(&self, started: &mut Started, start_ns: u64, received: std::time::Instant) {
        let first = *started.first_ns.get_or_insert(start_ns);
        let Some(now) = self.obj().current_running_time() else {
            return;
        };
        let waited = gst::ClockTime::from_nseconds(received.elapsed().as_nanos() as u64);
        let late = now
            .saturating_sub(waited)
            .saturating_sub(gst::ClockTime::from_nseconds(
                start_ns.saturating_sub(first),
            ));
        let arrived = received;
        started.lateness.push_back((arrived, late));
        while started
            .lateness
            .front()
            .is_some_and(|(at, _)| arrived.duration_since(*at) > LATENCY_DECAY_WINDOW)
        {
            started.lateness.pop_front();
        }
        let mut latency = lock(&self.latency);
        let wanted = if late > *latency {
            gst::info!(
                CAT,
                imp = self,
                "a fragment's first frame came {} ms late",
                late.mseconds()
            );
            late + late / LATENCY_HEADROOM_DIVISOR
        } else {
            let recent = started
                .lateness
                .iter()
                .map(|(_, l)| *l)
                .max()
                .unwrap_or(late);
            let lower = recent + recent / LATENCY_HEADROOM_DIVISOR;
            if started.latency_set.elapsed() < LATENCY_DECAY_WINDOW
                || lower + gst::ClockTime::from_nseconds(LATENCY_DECAY_MIN_STEP) > *latency
            {
                return;
            }
            gst::info!(
                CAT,
                imp = self,
                "every fragment of the last {} s came at most {} ms late",
                LATENCY_DECAY_WINDOW.as_secs(),
                recent.mseconds()
            );
            lower
        };
        gst::info!(CAT, imp = self, "latency {} ms", wanted.mseconds());
        *latency = wanted;
        drop(latency);
        started.latency_set = arrived;
        let _ = self
            .obj()
            .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
    }

    /// Whether `fragment`'s stream header repeats the first one passed on (the same bytes, or
    /// the same tracks: a restarted muxer's), so that it is left out; or why the fragment
    /// cannot follow what was passed on: it starts a recording whose tracks have other codecs
    /// (or are more or fewer), which matroskademux cannot follow in one stream (it can another
    /// resolution), and where a read of the rest starts.
    fn header_check(&self, started: &Started, fragment: &Fragment) -> Result<bool, String> {
        let Some(known) = started.header.as_ref() else {
            return Ok(false);
        };
        let header = &fragment.bytes[..fragment.header_len];
        if header.is_empty() || known[..] == *header || same_tracks(known, header) {
            return Ok(true);
        }
        let (before, after) = (header_codecs(known), header_codecs(header));
        if before == after || after.is_empty() {
            return Ok(false);
        }
        let resume = match &started.last {
            Some((_, Some(token))) => {
                format!("start-selector=continuation-token continuation-token={token}")
            }
            Some((Some(number), None)) => {
                format!("start-selector=fragment-number start-fragment-number={number}")
            }
            _ => format!(
                "start-selector=producer-timestamp start-timestamp={}",
                fragment.tags.producer_ms.unwrap_or_default()
            ),
        };
        Err(format!(
            "fragment {} starts a recording with other codecs ({} before, {} now), which \
             matroskademux cannot follow in one stream; everything before it was passed on. \
             Read the rest with {resume}",
            fragment.tags.number.as_deref().unwrap_or("?"),
            before.join(" + "),
            after.join(" + ")
        ))
    }

    fn post_fragment(
        &self,
        stream: &str,
        tags: &FragmentTags,
        len: usize,
        origin: Option<u64>,
        skipped: bool,
    ) {
        gst::debug!(
            CAT,
            imp = self,
            "fragment {:?}: producer {:?} ms, {} bytes",
            tags.number,
            tags.producer_ms,
            len
        );
        let mut s = gst::Structure::builder("kvs-fragment")
            .field("stream", stream)
            .field("skipped", skipped)
            .build();
        if let Some(n) = &tags.number {
            s.set("fragment-number", n);
        }
        if let Some(ms) = tags.producer_ms {
            s.set("producer-timestamp", ms);
        }
        if let Some(ms) = tags.server_ms {
            s.set("server-timestamp", ms);
        }
        if let Some(ms) = tags.millis_behind_now {
            s.set("millis-behind-now", ms);
        }
        if let Some(t) = &tags.continuation_token {
            s.set("continuation-token", t);
        }
        if let Some(ms) = origin {
            s.set("timeline-origin", ms);
        }
        if !tags.metadata.is_empty() {
            // `metadata`: one field per name, the last value of each (a fragment may carry
            // several items of one name: the producer's non-persistent items are each one).
            let mut metadata = gst::Structure::new_empty("metadata");
            for (name, value) in &tags.metadata {
                metadata.set(name.as_str(), value);
            }
            s.set("metadata", metadata);
            // `metadata-items`: every item, in the fragment's order.
            let items = tags.metadata.iter().map(|(name, value)| {
                gst::Structure::builder("metadata-item")
                    .field("name", name)
                    .field("value", value)
                    .build()
                    .to_send_value()
            });
            s.set("metadata-items", gst::Array::from_values(items));
        }
        self.post(s);
    }

    /// A `kvs-connection` message; a reconnection's `attempt`, `delay` (ms) and `reason` as
    /// kvssink's.
    fn post_connection(
        &self,
        stream: &str,
        state: &str,
        reconnecting: Option<(u32, std::time::Duration, &str)>,
    ) {
        let mut s = gst::Structure::builder("kvs-connection")
            .field("stream", stream)
            .field("state", state)
            .build();
        if let Some((attempt, delay, reason)) = reconnecting {
            s.set("attempt", attempt);
            s.set("delay", delay.as_millis() as u64);
            s.set("reason", reason);
        }
        self.post(s);
    }

    fn post(&self, structure: gst::Structure) {
        let msg = gst::message::Element::builder(structure)
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
    }
}

/// How much later than `latency` allows a frame at `end_ns` (a timestamp on the read's
/// timeline, which matroskademux's segment starts at `first_ns`) would be shown at running
/// time `now`: `None` when it would be in time.
fn late_by(
    now: gst::ClockTime,
    first_ns: u64,
    end_ns: u64,
    latency: gst::ClockTime,
) -> Option<gst::ClockTime> {
    let shown = gst::ClockTime::from_nseconds(end_ns.saturating_sub(first_ns)) + latency;
    now.checked_sub(shown)
        .filter(|late| *late > gst::ClockTime::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_is_too_late_when_its_last_frame_would_be_shown_after_the_latency() {
        let ms = gst::ClockTime::from_mseconds;
        let (first, latency) = (5_000_000_000, ms(1_500));
        // The last frame 2 s into the read, with 1.5 s of latency, is shown at 3.5 s.
        let end = first + 2_000_000_000;
        assert_eq!(late_by(ms(3_000), first, end, latency), None);
        assert_eq!(late_by(ms(3_500), first, end, latency), None);
        assert_eq!(late_by(ms(3_600), first, end, latency), Some(ms(100)));
        // After a 4 s outage.
        assert_eq!(late_by(ms(7_500), first, end, latency), Some(ms(4_000)));
        // A larger latency takes it.
        assert_eq!(late_by(ms(7_500), first, end, ms(6_000)), None);
        // A timestamp before the first fragment's (not on this timeline) is as the first.
        assert_eq!(late_by(ms(1_000), first, 0, latency), None);
    }
}
