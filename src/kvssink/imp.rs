//! The kvssink element: splits the Matroska byte stream into fragments and hands them to the
//! [`Uploader`], turning what the uploader reports into bus messages, warnings and errors.

use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::settings::{self, Settings};
use crate::mkv::{self, Splitter, StreamHeader};
use crate::store::{AckLevel, StoreLimits};
use crate::uploader::{self, ConnectionState, Event, Uploader};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvssink",
        gst::DebugColorFlags::empty(),
        Some("Amazon Kinesis Video Streams sink"),
    )
});

/// The service's limits on one fragment.
const MAX_FRAGMENT_DURATION_NS: u64 = 10_000_000_000;
const MAX_FRAGMENT_SIZE: u64 = 50 * 1024 * 1024;

struct Started {
    splitter: Splitter,
    uploader: Arc<Uploader>,
    /// Header waiting for its first fragment, which fixes the producer start time.
    pending_header: Option<StreamHeader>,
    timecode_scale: u64,
    media_type: Option<String>,
    stream_name: String,
    fragment_duration_ns: u64,
    /// When a key unit was requested for the open fragment: its duration then (ns).
    key_unit_requested_at: Option<u64>,
    /// How long before `fragment-duration` to ask for a key unit: the encoder's delay in
    /// answering, measured on the last requested fragment (first from the latency query).
    key_unit_lead_ns: u64,
    /// The end-of-stream account was given (at EOS, or at stop).
    accounted: bool,
    /// The application cancelled the wait at EOS (NULL during the drain): stop at once.
    drain_cancelled: bool,
    /// Invalid input ended the stream (the error was posted).
    input_failed: bool,
    events: Vec<mkv::Event>,
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started(Box<Started>),
}

#[derive(Default)]
pub struct KvsSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// The running uploader, reachable from `unlock()` without the state lock.
    uploader: Mutex<Option<Arc<Uploader>>>,
    /// Counters of the last run, kept for `stats` after stop.
    last_stats: Mutex<uploader::Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for KvsSink {
    const NAME: &'static str = "GstKvsSink";
    type Type = super::KvsSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for KvsSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // Values are not logged: some are secrets.
        gst::debug!(CAT, imp = self, "setting property {}", pspec.name());
        settings::set(&mut lock(&self.settings), value, pspec);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        settings::get(&lock(&self.settings), pspec)
    }

    fn constructed(&self) {
        self.parent_constructed();
        // A network sink must not wait on the clock.
        self.obj().set_sync(false);
    }
}

impl GstObjectImpl for KvsSink {}

impl ElementImpl for KvsSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams sink",
                "Sink/Network",
                "Streams Matroska (matroskamux output) into Amazon Kinesis Video Streams \
                 with PutMedia, posting every acknowledgement on the bus",
                "kvssink developers",
            )
        });
        Some(&*METADATA)
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused && self.accounted() {
            // Playing again after a stop: a new stream with a new uploader.
            let _ = BaseSinkImpl::stop(self);
            BaseSinkImpl::start(self).map_err(|e| {
                self.post_error_message(e);
                gst::StateChangeError
            })?;
        }
        let success = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            // The streaming thread has stopped. Drained here rather than in stop() (READY to
            // NULL), so that the account reaches the bus before NULL flushes it.
            if let State::Started(started) = &mut *lock(&self.state)
                && !started.accounted
            {
                self.drain_at_stop(started);
            }
        }
        Ok(success)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = [
                "video/x-matroska",
                "audio/x-matroska",
                "video/webm",
                "audio/webm",
            ]
            .into_iter()
            .map(gst::Structure::new_empty)
            .collect::<gst::Caps>();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseSinkImpl for KvsSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let stream = settings.stream_name.clone();
        if stream.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("kvssink needs a stream-name")
            ));
        }
        crate::endpoint::check(&settings.location()).map_err(|e| {
            gst::error_msg!(gst::ResourceError::Settings, ("stream {}: {}", stream, e))
        })?;
        let (credentials, ignored) = settings
            .credential_sources()
            .and_then(|sources| crate::credentials::provider(&sources))
            .map_err(|e| {
                gst::error_msg!(gst::ResourceError::Settings, ("stream {}: {}", stream, e))
            })?;
        for message in settings.credential_warnings().into_iter().chain(ignored) {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("stream {}: {}", stream, message)
            );
        }
        let config = uploader::Config {
            stream_name: stream.clone(),
            location: settings.location(),
            allow_create_stream: settings.allow_create_stream,
            retention_hours: settings.retention_period.into(),
            stream_tags: settings.tags(),
            kms_key_id: None,
            media_type: settings.content_type.clone(),
            user_agent: settings.user_agent.clone(),
            connection_timeout: Duration::from_secs(settings.connection_timeout.into()),
            connection_staleness: Duration::from_secs(settings.connection_staleness.into()),
            max_session_duration: Duration::from_secs(settings.rotation_period.into()),
            idle_fragment_timeout: Duration::from_millis(settings.fragment_duration.into()),
            store_limits: StoreLimits {
                max_bytes: u64::from(settings.storage_size) * 1024 * 1024,
                max_duration_ns: u64::from(settings.buffer_duration) * 1_000_000_000,
            },
            release_on: if settings.fragment_acks {
                AckLevel::Persisted
            } else {
                AckLevel::Received
            },
            max_backoff: Duration::from_secs(5),
            ca_file: settings.ca_file().map(Into::into),
        };
        gst::info!(CAT, imp = self, "starting: stream {}", config.stream_name);
        let weak = self.obj().downgrade();
        let events: uploader::EventSink = Arc::new(move |event| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_uploader_event(event);
            }
        });
        let uploader = Arc::new(Uploader::start(
            crate::runtime::RUNTIME.handle(),
            config,
            credentials,
            events,
        ));
        *lock(&self.uploader) = Some(uploader.clone());
        *lock(&self.state) = State::Started(Box::new(Started {
            splitter: Splitter::new(mkv::Limits {
                max_fragment_span_ns: MAX_FRAGMENT_DURATION_NS,
                max_fragment_bytes: MAX_FRAGMENT_SIZE,
                ..mkv::Limits::default()
            }),
            uploader,
            pending_header: None,
            timecode_scale: 1_000_000,
            media_type: settings.content_type,
            stream_name: stream,
            fragment_duration_ns: u64::from(settings.fragment_duration) * 1_000_000,
            key_unit_requested_at: None,
            key_unit_lead_ns: 0,
            accounted: false,
            drain_cancelled: false,
            input_failed: false,
            events: Vec::with_capacity(8),
        }));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // The backlog was drained going from PAUSED to READY (change_state).
        *lock(&self.state) = State::Stopped;
        let uploader = lock(&self.uploader).take();
        if let Some(uploader) = uploader {
            let stats = uploader.stats();
            *lock(&self.last_stats) = stats.clone();
            gst::info!(
                CAT,
                imp = self,
                "stopped: {} fragments sent, {} persisted, {} dropped",
                stats.fragments_sent,
                stats.fragments_persisted,
                stats.fragments_dropped
            );
        }
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut state = lock(&self.state);
        let State::Started(started) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        if started.uploader.fatal().is_some() {
            // Already posted as an error message.
            return Err(gst::FlowError::Error);
        }
        let mapped = buffer.clone().into_mapped_buffer_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::ResourceError::Read, ("cannot map buffer"));
            gst::FlowError::Error
        })?;
        let data = Bytes::from_owner(mapped);
        let mut events = std::mem::take(&mut started.events);
        let result = started.splitter.push(data, &mut events);
        let handled = self.handle_events(started, &mut events);
        started.events = events;
        handled?;
        if let Err(e) = result {
            self.end_before_bad_input(started);
            started.input_failed = true;
            return Err(self.matroska_error(&started.stream_name, &e));
        }
        self.request_key_unit_when_due(started);
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view()
            && !self.drain_at_eos()
        {
            return false;
        }
        self.parent_event(event)
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Seeking(q) = query.view_mut() {
            // A live upload cannot seek back: matroskamux then writes streamable output
            // without guessing.
            let none = gst::GenericFormattedValue::none_for_format(q.format());
            q.set(false, none, none);
            return true;
        }
        BaseSinkImplExt::parent_query(self, query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(uploader) = &*lock(&self.uploader) {
            uploader.set_flushing(true);
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(uploader) = &*lock(&self.uploader) {
            uploader.set_flushing(false);
        }
        Ok(())
    }
}

impl KvsSink {
    fn handle_events(
        &self,
        started: &mut Started,
        events: &mut Vec<mkv::Event>,
    ) -> Result<(), gst::FlowError> {
        for event in events.drain(..) {
            match event {
                mkv::Event::Header(header) => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "stream header: {} bytes, doc type {}, tracks {:?}",
                        header.bytes.len(),
                        header.doc_type,
                        header.tracks
                    );
                    for problem in crate::playback::problems(&header.tracks) {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Format,
                            ("stream {}: {}", started.stream_name, problem)
                        );
                    }
                    started.timecode_scale = header.timecode_scale;
                    started.key_unit_lead_ns = self
                        .upstream_latency()
                        .1
                        .min(started.fragment_duration_ns / 2);
                    started.pending_header = Some(header);
                }
                mkv::Event::FragmentStart(start) => {
                    if !start.key_frame {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            (
                                "stream {}: the cluster at timecode {} does not start with a key \
                                 frame; Kinesis Video Streams needs every fragment to start with \
                                 one. Do not set matroskamux max-cluster-duration below the \
                                 encoder's key frame interval",
                                started.stream_name,
                                start.timecode
                            )
                        );
                        return Err(gst::FlowError::Error);
                    }
                    let start_ns = start.timecode.saturating_mul(started.timecode_scale);
                    if let Some(header) = started.pending_header.take() {
                        let producer_start_ms =
                            uploader::now_ms().saturating_sub(start_ns / 1_000_000);
                        let media_type = started.media_type.clone().unwrap_or_else(|| {
                            let ids: Vec<&str> =
                                header.tracks.iter().map(|t| t.codec_id.as_str()).collect();
                            uploader::media_type_for(&ids)
                        });
                        started
                            .uploader
                            .push_header(header.bytes, producer_start_ms, media_type);
                    }
                    gst::debug!(CAT, imp = self, "fragment {} starts", start.timecode);
                    started.uploader.begin_fragment(start.timecode, start_ns, 0);
                }
                mkv::Event::FragmentData(bytes) => started.uploader.append(bytes),
                mkv::Event::FragmentCut(summary) => {
                    let span = (summary.last_block_time - summary.first_block_time).max(0);
                    let end_ns = (summary.last_block_time.max(0) as u64)
                        .saturating_mul(started.timecode_scale);
                    started.uploader.cut_fragment(summary.whole_size, end_ns);
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Encode,
                        (
                            "stream {}: the fragment at timecode {} reached the service's \
                             limits (10 s, 50 MB) at {} ms and {} bytes: it was ended there so \
                             the service keeps it, and its frames until the next key frame \
                             are not sent. Make the encoder emit key frames more often \
                             (x264enc key-int-max, e.g. 2 s of frames)",
                            started.stream_name,
                            summary.timecode,
                            (span as u64).saturating_mul(started.timecode_scale) / 1_000_000,
                            summary.whole_size
                        )
                    );
                }
                mkv::Event::FragmentEnd(summary) => {
                    let end_ns = (summary.last_block_time.max(0) as u64)
                        .saturating_mul(started.timecode_scale);
                    if let Some(at) = started.key_unit_requested_at.take() {
                        // The encoder answered this much later than asked: ask that much
                        // earlier next time (at most half a fragment early).
                        let span = (summary.last_block_time - summary.timecode as i64).max(0);
                        let duration = (span as u64).saturating_mul(started.timecode_scale);
                        started.key_unit_lead_ns = duration
                            .saturating_sub(at)
                            .min(started.fragment_duration_ns / 2);
                    }
                    gst::debug!(
                        CAT,
                        imp = self,
                        "fragment {} ends: {} bytes, {} blocks",
                        summary.timecode,
                        summary.size,
                        summary.blocks
                    );
                    if summary.cut_bytes > 0 {
                        started.uploader.count_cut_bytes(summary.cut_bytes);
                    }
                    if summary.whole_size < summary.size {
                        let cut = started.uploader.end_fragment_at(summary.whole_size, end_ns);
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Format,
                            (
                                "stream {}: the stream broke off inside a frame of fragment {}: \
                                 its last {} bytes were not sent; the whole frames before them \
                                 were",
                                started.stream_name,
                                summary.timecode,
                                cut
                            )
                        );
                    } else {
                        started.uploader.end_fragment(end_ns);
                    }
                }
                mkv::Event::Interstitial(bytes) => {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "skipping {} bytes of top-level elements between clusters",
                        bytes.len()
                    );
                }
            }
        }
        Ok(())
    }

    /// Asks upstream for a key frame when the open fragment nears `fragment-duration`, early
    /// by the encoder's delay. (A fragment that grows past the service's limits anyway is cut
    /// by the splitter: `FragmentCut`.)
    fn request_key_unit_when_due(&self, started: &mut Started) {
        let Some(current) = started.splitter.current_fragment() else {
            return;
        };
        let span = (current.last_block_time - current.timecode as i64).max(0) as u64;
        let duration_ns = span.saturating_mul(started.timecode_scale);
        let ask_at = started
            .fragment_duration_ns
            .saturating_sub(started.key_unit_lead_ns);
        if duration_ns >= ask_at && started.key_unit_requested_at.is_none() {
            started.key_unit_requested_at = Some(duration_ns);
            gst::debug!(
                CAT,
                imp = self,
                "fragment at {:?}: requesting a key unit ({:?} ahead for the encoder)",
                duration_ns,
                started.key_unit_lead_ns
            );
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            self.obj().sink_pad().push_event(event);
        }
    }

    fn matroska_error(&self, stream: &str, error: &mkv::MkvError) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::StreamError::Format,
            ("stream {}: {}", stream, error),
            ["kvssink takes the output of matroskamux (streamable=true)"]
        );
        gst::FlowError::Error
    }

    /// Whether upstream is live, and its minimum latency (ns). Asked of the peer directly:
    /// BaseSink's own latency query skips upstream when, as here, the sink does not sync.
    fn upstream_latency(&self) -> (bool, u64) {
        let mut q = gst::query::Latency::new();
        if !self.obj().sink_pad().peer_query(&mut q) {
            return (false, 0);
        }
        let (live, min, _) = q.result();
        (live, if live { min.nseconds() } else { 0 })
    }

    fn accounted(&self) -> bool {
        matches!(&*lock(&self.state), State::Started(started) if started.accounted)
    }

    /// Input that is not valid Matroska ends the stream, but what came before it is kept:
    /// the open fragment ends at its last whole element and everything complete is sent
    /// (the wait happens in `stop()`, bounded by `stop-stream-timeout`).
    fn end_before_bad_input(&self, started: &mut Started) {
        if let (Some(whole), Some(current)) = (
            started.splitter.whole_size(),
            started.splitter.current_fragment(),
        ) {
            let end_ns =
                (current.last_block_time.max(0) as u64).saturating_mul(started.timecode_scale);
            started.uploader.end_fragment_at(whole, end_ns);
        }
        started.uploader.finish();
    }

    /// At EOS: ends the last fragment and waits (bounded by `stop-stream-timeout`) until the
    /// service has persisted everything. Returns false (after posting an error) when a
    /// fragment was lost or the input broke off, so that no host calls the run a success.
    fn drain_at_eos(&self) -> bool {
        let (uploader, stream, input_error) = {
            let mut state = lock(&self.state);
            let State::Started(started) = &mut *state else {
                return true;
            };
            if started.input_failed {
                // The EOS a source sends after our error: the application is stopping the
                // pipeline, and the drain happens then.
                return false;
            }
            let Ok(input_error) = self.finish_input(started) else {
                return false;
            };
            started.accounted = true;
            (
                started.uploader.clone(),
                started.stream_name.clone(),
                input_error,
            )
        };
        let timeout = lock(&self.settings).stop_stream_timeout();
        gst::info!(
            CAT,
            imp = self,
            "EOS: waiting up to {:?} for the last acks",
            timeout
        );
        let summary = uploader.finish_and_account(timeout);
        self.post_summary(&stream, &summary);
        // Said after the wait: an error makes applications stop the pipeline.
        if let Some(e) = &input_error {
            let _ = self.matroska_error(&stream, e);
        }
        match summary.outcome {
            // The error itself was posted when it happened.
            uploader::Outcome::Failed => false,
            uploader::Outcome::Cancelled => {
                if let State::Started(started) = &mut *lock(&self.state) {
                    started.drain_cancelled = true;
                    started.accounted = false;
                }
                input_error.is_none()
            }
            _ => match summary.loss_message(&stream) {
                Some(message) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Write,
                        ("{}", message),
                        ["outcome {}", summary.outcome.as_str()]
                    );
                    false
                }
                None => input_error.is_none(),
            },
        }
    }

    /// Ends the input at EOS or stop: the splitter's last fragment is closed. `Ok(Some(e))`
    /// when the input broke off inside an element (the whole part is kept; the caller says
    /// so), `Err` when nothing can be sent (an error was posted).
    fn finish_input(&self, started: &mut Started) -> Result<Option<mkv::MkvError>, ()> {
        let mut events = std::mem::take(&mut started.events);
        let result = started.splitter.finish(&mut events);
        let handled = self.handle_events(started, &mut events);
        started.events = events;
        handled.map_err(|_| ())?;
        Ok(result.err())
    }

    /// Going to READY without EOS (Ctrl-C, an application stopping its pipeline, an
    /// error): as AWS's element does, ends the open fragment and waits, bounded by
    /// `stop-stream-timeout`, for what is unacknowledged; then says how many fragments were
    /// abandoned, if any.
    fn drain_at_stop(&self, started: &mut Started) {
        let stream = started.stream_name.clone();
        let uploader = started.uploader.clone();
        let summary = if started.drain_cancelled || uploader.fatal().is_some() {
            uploader.finish_and_account(Duration::ZERO)
        } else {
            match self.finish_input(started) {
                Err(()) => return,
                // Already said when it was found (render), or said now.
                Ok(Some(e)) if !started.input_failed => {
                    let _ = self.matroska_error(&stream, &e);
                }
                Ok(_) => {}
            }
            // unlock() set it to stop the streaming thread, which has stopped by now.
            uploader.set_flushing(false);
            let timeout = lock(&self.settings).stop_stream_timeout();
            gst::info!(
                CAT,
                imp = self,
                "stopping without EOS: waiting up to {:?} for the last acks",
                timeout
            );
            uploader.finish_and_account(timeout)
        };
        started.accounted = true;
        self.post_summary(&stream, &summary);
        if let Some(message) = summary.loss_message(&stream) {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Write,
                ("{} (stopped without EOS)", message),
                ["outcome {}", summary.outcome.as_str()]
            );
        }
    }

    fn post_summary(&self, stream: &str, summary: &uploader::Summary) {
        let stats = &summary.stats;
        let s = gst::Structure::builder("kvs-summary")
            .field("stream-name", stream)
            .field("outcome", summary.outcome.as_str())
            .field("fragments-produced", stats.fragments_produced)
            .field("fragments-sent", stats.fragments_sent)
            .field("fragments-resent", stats.fragments_resent)
            .field("fragments-persisted", stats.fragments_persisted)
            .field("fragments-dropped", stats.fragments_dropped)
            .field("fragments-rejected", stats.fragments_rejected)
            .field("fragments-pending", stats.backlog.fragments)
            .field("fragments-lost", summary.lost)
            .field("loss-reasons", summary.reasons.join("; "))
            .field("bytes-sent", stats.bytes_sent)
            .build();
        self.post_element_message(s);
    }

    fn post_element_message(&self, structure: gst::Structure) {
        let msg = gst::message::Element::builder(structure)
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
    }

    /// Called from the runtime's threads.
    fn on_uploader_event(&self, event: Event) {
        match event {
            Event::Ack(ack) => {
                gst::log!(CAT, imp = self, "ack {:?}", ack);
                let mut s = gst::Structure::builder("kvs-ack")
                    .field("event-type", ack.event_type.as_str())
                    .build();
                if let Some(tc) = ack.fragment_timecode {
                    s.set("fragment-timecode", tc);
                }
                if let Some(n) = &ack.fragment_number {
                    s.set("fragment-number", n);
                }
                if let Some(id) = ack.error_id {
                    s.set("error-id", id as i32);
                    let name = ack
                        .error_code
                        .clone()
                        .or_else(|| crate::ack::error_name(id).map(str::to_owned))
                        .unwrap_or_default();
                    s.set("error-name", name);
                }
                self.post_element_message(s);
            }
            Event::State(state) => {
                gst::info!(CAT, imp = self, "connection: {:?}", state);
                let backlog = lock(&self.uploader)
                    .as_ref()
                    .map(|u| u.stats().backlog)
                    .unwrap_or_default();
                let mut s = gst::Structure::builder("kvs-connection")
                    .field("backlog-fragments", backlog.fragments)
                    .field("backlog-bytes", backlog.bytes)
                    .field("backlog-duration", backlog.duration_ns)
                    .build();
                match state {
                    ConnectionState::Connecting { attempt } => {
                        s.set("state", "connecting");
                        s.set("attempt", attempt);
                    }
                    ConnectionState::Streaming => s.set("state", "streaming"),
                    ConnectionState::Reconnecting {
                        attempt,
                        delay,
                        reason,
                    } => {
                        gst::element_imp_warning!(
                            self,
                            gst::ResourceError::Write,
                            (
                                "reconnecting in {} ms (attempt {}): {}",
                                delay.as_millis(),
                                attempt,
                                reason
                            )
                        );
                        s.set("state", "reconnecting");
                        s.set("attempt", attempt);
                        s.set("delay", delay.as_millis() as u64);
                        s.set("reason", reason);
                    }
                    ConnectionState::Finished => s.set("state", "finished"),
                }
                self.post_element_message(s);
            }
            Event::Info(message) => gst::info!(CAT, imp = self, "{}", message),
            Event::Warning(message) => {
                gst::element_imp_warning!(self, gst::ResourceError::Write, ("{}", message));
            }
            Event::Dropped(evicted) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::NoSpaceLeft,
                    (
                        "the fragment store is full (storage-size / buffer-duration): dropped \
                         the {} oldest fragments ({} bytes) that were not acknowledged",
                        evicted.fragments,
                        evicted.bytes
                    )
                );
                let s = gst::Structure::builder("kvs-fragments-dropped")
                    .field("fragments", evicted.fragments)
                    .field("bytes", evicted.bytes)
                    .build();
                self.post_element_message(s);
            }
            Event::BackPressure { held, backlog } => {
                // A file upload waits for the service by design; a live source falls behind.
                let live = self.upstream_latency().0;
                let stream = lock(&self.settings).stream_name.clone();
                if live {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Write,
                        (
                            "stream {}: the uplink is slower than the stream: the pipeline has \
                             been held {} ms waiting for the service ({} fragments, {} bytes \
                             not yet acknowledged) and is falling behind real time; lower the \
                             bitrate or check the network (stats: backpressure-time)",
                            stream,
                            held.as_millis(),
                            backlog.fragments,
                            backlog.bytes
                        )
                    );
                } else {
                    gst::info!(
                        CAT,
                        imp = self,
                        "upstream is faster than the service: held {:?}",
                        held
                    );
                }
            }
            Event::IdleFragmentEnded { timecode } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "no data: ended fragment {} with a tag",
                    timecode
                );
                let s = gst::Structure::builder("kvs-idle")
                    .field("fragment-timecode", timecode)
                    .build();
                self.post_element_message(s);
                // The next data must open a new cluster, which starts at a key frame.
                let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(true)
                    .build();
                self.obj().sink_pad().push_event(event);
            }
            Event::Fatal(error) => {
                let kind = if error.auth {
                    gst::ResourceError::NotAuthorized
                } else {
                    gst::ResourceError::Write
                };
                gst::element_imp_error!(self, kind, ["{}", error.message]);
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        let stats = match &*lock(&self.uploader) {
            Some(uploader) => uploader.stats(),
            None => lock(&self.last_stats).clone(),
        };
        gst::Structure::builder("stats")
            .field("bytes-sent", stats.bytes_sent)
            .field("bytes-persisted", stats.bytes_persisted)
            .field("bytes-dropped", stats.bytes_dropped)
            .field("fragments-produced", stats.fragments_produced)
            .field("fragments-sent", stats.fragments_sent)
            .field("fragments-resent", stats.fragments_resent)
            .field("fragments-received", stats.fragments_received)
            .field("fragments-persisted", stats.fragments_persisted)
            .field("fragments-dropped", stats.fragments_dropped)
            .field("fragments-rejected", stats.fragments_rejected)
            // The name before fragments-resent, kept for applications that read it.
            .field("fragments-replayed", stats.fragments_resent)
            .field("connections", stats.connections)
            .field("reconnects", stats.reconnects)
            .field("backpressure-time", stats.backpressure.as_nanos() as u64)
            .field("errors", stats.errors)
            .field("backlog-fragments", stats.backlog.fragments)
            .field("backlog-bytes", stats.backlog.bytes)
            .field("backlog-duration", stats.backlog.duration_ns)
            .field("last-error", stats.last_error.unwrap_or_default())
            .build()
    }
}
