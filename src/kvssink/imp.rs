//! The kvssink element: splits the Matroska byte stream into fragments and hands them to the
//! [`Uploader`], turning what the uploader reports into bus messages, warnings and errors.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::es;
use super::exit;
use super::metadata;
use super::official;
use super::settings::{self, Settings, StreamingType};
use crate::about;
use crate::esmux::{EsMuxer, Written};
use crate::mkv;
use crate::producer::{self, InputError, Notice, Producer};
use crate::store::{AckLevel, StoreLimits};
use crate::uploader::{self, ConnectionState, Event, FatalError, Uploader};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvssink",
        gst::DebugColorFlags::empty(),
        Some("Amazon Kinesis Video Streams sink"),
    )
});

struct Started {
    producer: Producer,
    stream_name: String,
    streaming_type: StreamingType,
    /// `use-original-pts`: the buffers' timestamps are epoch times.
    use_original_pts: bool,
    /// Realtime or offline was decided (at the first buffer, when upstream's liveness is
    /// known).
    mode_decided: bool,
    /// The end-of-stream account was given (at EOS, or at stop).
    accounted: bool,
    /// The wait for the last acks at EOS was cut short (the application stopped the pipeline,
    /// or flushed, while it went on): the input is finished, and the stop that follows waits
    /// and accounts, as a stop without EOS does, until `stop-stream-timeout` after the wait
    /// began (this instant), as AWS's element, whose stop waits for the wait at EOS.
    eos_wait_cut: Option<std::time::Instant>,
    /// ... and the input had broken off at that EOS (said then).
    eos_input_broken: bool,
    /// Frames came that could not begin a fragment (before the first key frame), told with
    /// how many: a stream that ends without a fragment did not end "before any frame".
    frames_before_key_frame: bool,
    /// Matroska input has come; and a flush has cut it since (it cannot be followed).
    matroska_seen: bool,
    matroska_torn: bool,
    /// The `kvs-add-metadata` events sent before the start and applied at it: applied again
    /// if properties set in READY make the element start again before any data.
    kept_metadata: Vec<gst::Event>,
    /// Audio too far from the last video key frame (video stalled): said, and counted
    /// until video is back.
    told_audio_too_far: bool,
    /// Frames without a PTS were given their DTS, and the user was told (once).
    told_dts_as_pts: bool,
    audio_too_far: u64,
    notices: Vec<Notice>,
    /// Its entry among the streams a process's exit would cut short (dropped with it).
    _at_exit: exit::Registration,
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started(Box<Started>),
}

/// An endpoint down for hours is retried once a second: its first attempts are each a
/// warning, then one a minute says it goes on, and a new reason is told at once.
#[derive(Default)]
struct ReconnectWarnings {
    /// When the last one was posted, and its reason (without its numbers).
    last: Option<(std::time::Instant, String)>,
    /// Attempts since, not told.
    untold: u32,
    /// When the first warning of this incident was posted, and how many attempts failed:
    /// the first PERSISTED ack after it says the service is back.
    since: Option<(std::time::Instant, u32)>,
}

/// What kind of reason a failed attempt had: a change of kind is told at once, not the
/// words of a lost connection, which vary from attempt to attempt (reset, broken pipe, EOF).
fn reason_kind(reason: &str) -> String {
    const KINDS: [(&str, &[&str]); 3] = [
        ("throttled", &["throttled"]),
        ("stale", &["no acknowledgement"]),
        (
            "connection",
            &["cannot reach", "connection lost", "closed the connection"],
        ),
    ];
    for (kind, words) in KINDS {
        if words.iter().any(|w| reason.contains(w)) {
            return kind.to_owned();
        }
    }
    // Otherwise the reason itself, whatever its numbers (durations, ports, attempts).
    reason.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Attempts of one outage that each get a warning; after them, one a minute.
const RECONNECT_WARNINGS: u32 = 3;
const RECONNECT_WARNING_EVERY: Duration = Duration::from_secs(60);

impl ReconnectWarnings {
    /// Whether attempt `attempt` (failed for `reason`) gets a warning; if so, how many
    /// attempts before it got none.
    fn take(&mut self, attempt: u32, reason: &str) -> Option<u32> {
        if attempt == 1 {
            // A new incident: the attempt count starts again only after progress (a
            // PERSISTED ack), not because a connection was accepted and dropped again.
            *self = ReconnectWarnings::default();
        }
        let kind = reason_kind(reason);
        let due = match &self.last {
            Some((at, last)) => {
                attempt <= RECONNECT_WARNINGS
                    || *last != kind
                    || at.elapsed() >= RECONNECT_WARNING_EVERY
            }
            None => true,
        };
        let since = self.since.get_or_insert((std::time::Instant::now(), 0));
        since.1 = since.1.max(attempt);
        if !due {
            self.untold += 1;
            return None;
        }
        self.last = Some((std::time::Instant::now(), kind));
        Some(std::mem::take(&mut self.untold))
    }

    /// A fragment was persisted: if reconnects were told, how long ago the first was and how
    /// many attempts failed (once per incident).
    fn recovered(&mut self) -> Option<(Duration, u32)> {
        let (at, attempts) = self.since.take()?;
        Some((at.elapsed(), attempts))
    }
}

/// Drops from the full store during one outage: the first few each get a warning, then one a
/// minute with what was dropped since (every drop has its `kvs-fragments-dropped` message).
#[derive(Default)]
struct DropWarnings {
    told: u32,
    last: Option<std::time::Instant>,
    /// Fragments and bytes dropped since the last warning, not told.
    untold: (u64, u64),
}

impl DropWarnings {
    /// Whether a drop of `fragments` (`bytes`) gets a warning; if so, the totals it tells.
    fn take(&mut self, fragments: u64, bytes: u64) -> Option<(u64, u64)> {
        self.untold.0 += fragments;
        self.untold.1 += bytes;
        let due = self.told < RECONNECT_WARNINGS
            || self
                .last
                .is_none_or(|at| at.elapsed() >= RECONNECT_WARNING_EVERY);
        if !due {
            return None;
        }
        self.told += 1;
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.untold))
    }
}

#[derive(Default)]
pub struct KvsSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// The running uploader, reachable from `unlock()` without the state lock.
    uploader: Mutex<Option<Arc<Uploader>>>,
    /// Counters of the last run, kept for `stats` after stop.
    last_stats: Mutex<uploader::Stats>,
    /// The reconnect warnings of the current outage (the `kvs-connection` message of every
    /// attempt is posted regardless).
    reconnect_warnings: Mutex<ReconnectWarnings>,
    drop_warnings: Mutex<DropWarnings>,
    /// With H.264 or H.265 caps (AWS's kvssink input), and an audio pad: makes Matroska of
    /// the frames.
    es: Mutex<EsMuxer>,
    /// The video input's caps are Matroska.
    matroska_input: std::sync::atomic::AtomicBool,
    /// The `audio_%u` request pad and its stream.
    audio: Mutex<AudioInput>,
    /// Signalled when either stream moves on or ends: the video EOS waits for the audio's,
    /// and a stream faster than real time waits for the other.
    progress: Condvar,
    /// The `video_%u` request pad, which hands everything to the `sink` pad.
    video_proxy: Mutex<Option<gst::Pad>>,
    /// Paused after playing; and played again since, so that the next bytes place a live
    /// stream's time anew. Kept apart from `state`, which a render waiting for the service
    /// (offline pacing, back-pressure) holds: a state change must not wait for it.
    paused_after_playing: std::sync::atomic::AtomicBool,
    resumed_after_pause: std::sync::atomic::AtomicBool,
    /// At the last resume: the epoch time (ms) of running time 0 by the new base time, and
    /// the running time (ns) at which the pause began.
    resume_epoch: Mutex<Option<(u64, u64)>>,
    /// The pipeline's bus and the handler that sees `gst-launch-1.0 -e` interrupted.
    interrupt_watch: Mutex<Option<(gst::Bus, glib::SignalHandlerId)>>,
    /// A fatal error's account (`failed`) was posted with it: the stream's only summary.
    failed_account_posted: std::sync::atomic::AtomicBool,
    /// Whether the element has started, and the `kvs-add-metadata` events sent before it did,
    /// kept for its start (one lock: an event is either kept or applied).
    metadata_before_start: Mutex<(bool, Vec<gst::Event>)>,
    /// The error for caps kvssink refuses (Matroska input beside an audio pad, H.264 without
    /// its codec data) was posted (once, not per caps).
    told_matroska_with_audio: std::sync::atomic::AtomicBool,
    /// A property was set since `start` took the settings (at NULL to READY): set in READY,
    /// it must hold for the run that READY to PAUSED begins.
    settings_changed: std::sync::atomic::AtomicBool,
    /// A flushing seek on elementary streams: the next frame places the new segment.
    seeked: std::sync::atomic::AtomicBool,
    /// What ending the stream without a word cut short was told ([`KvsSink::cut_short`]):
    /// once, by `dispose` or at the process's exit, whichever comes first.
    told_cut_short: std::sync::atomic::AtomicBool,
    /// This element's entry in the process's streams in use, while started.
    in_use: Mutex<Option<String>>,
    /// The stream-name of the run started last: what messages name, whatever the property
    /// has been set to since (a new value is for the next start).
    running_stream: Mutex<Option<String>>,
}

/// Why a stream was cut short without a word, and what to do instead: the end of the
/// message of the process's exit and of the element's destruction while streaming.
const CUT_SHORT: &str = "without EOS and without the pipeline set to NULL: send EOS and wait \
                         for it on the bus, or set the pipeline to NULL, first";

/// A video frame's presentation time: its PTS, else its DTS (h264parse dates the frames of a
/// raw .h264 file by DTS alone; without B-frames the two are the same).
fn presentation_time(buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    buffer.pts().or(buffer.dts())
}

/// Adds `delta` to the count of kvssinks of this process streaming to `key` (a stream name
/// and where it is); returns the count.
fn streams_in_use(key: &str, delta: i64) -> i64 {
    static IN_USE: LazyLock<Mutex<std::collections::HashMap<String, i64>>> =
        LazyLock::new(Default::default);
    let mut map = lock(&IN_USE);
    let n = map.entry(key.to_owned()).or_default();
    *n += delta;
    let now = *n;
    if now <= 0 {
        map.remove(key);
    }
    now
}

#[derive(Default)]
struct AudioInput {
    pad: Option<gst::Pad>,
    segment: gst::FormattedSegment<gst::ClockTime>,
    eos: bool,
    flushing: bool,
    /// Frames without a timestamp were dropped (said once).
    untimed_said: bool,
    /// The video stream ended: audio no longer waits for it.
    video_eos: bool,
    /// The stream was finished at the video's EOS: audio after it has nowhere to go.
    finished: bool,
    /// The video pad is flushing (`unlock()`): a waiting video frame gives up.
    video_flushing: bool,
    /// When each stream last brought a frame: a stream waits only for one that is coming.
    last_video: Option<std::time::Instant>,
    last_audio: Option<std::time::Instant>,
    /// Whether the audio's upstream is live (asked once).
    audio_live: Option<bool>,
}

/// How long the video's EOS waits for the audio stream's EOS.
const AUDIO_EOS_WAIT: Duration = Duration::from_secs(2);
/// A stream running ahead of the other (faster than real time: a file) waits for it while
/// the other has brought a frame within this time; a stream silent for longer is not waited
/// for (the muxer then writes the other alone, after `esmux::MAX_WAIT_MS`).
const SILENT_STREAM: Duration = Duration::from_secs(1);
/// The queue span at which the faster stream starts waiting (ms).
const AHEAD_MS: u64 = crate::esmux::MAX_WAIT_MS / 2;

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

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(official::signals);
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // Values are not logged: some are secrets.
        gst::debug!(CAT, imp = self, "setting property {}", pspec.name());
        settings::set(&mut lock(&self.settings), value, pspec);
        self.settings_changed.store(true, Ordering::Release);
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

    /// The last reference dropped while streaming, the pipeline never set to NULL: as
    /// Python's interpreter does at its exit with a pipeline left PLAYING. No one reads the
    /// bus now; standard error is told what is lost, as at the process's exit ([`exit`]).
    fn dispose(&self) {
        if let Some(message) = self.cut_short(&format!(
            "kvssink was destroyed while streaming (its last reference dropped, as Python's \
             interpreter does as it exits), {CUT_SHORT}"
        )) {
            exit::tell(&message);
        }
    }
}

impl GstObjectImpl for KvsSink {}

impl ElementImpl for KvsSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams sink",
                "Sink/Network",
                "Streams video (matroskamux output, or H.264/H.265 with audio on request pads) \
                 into Amazon Kinesis Video Streams with PutMedia, posting every acknowledgement \
                 on the bus",
                "kvssink contributors",
            )
        });
        Some(&*METADATA)
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused
            && lock(&self.audio).pad.is_some()
            && !self.video_pad().is_linked()
        {
            self.negotiation_error(
                "kvssink needs a video stream with its audio: link H.264 or H.265 video to it. \
                 For audio alone, mux it into Matroska first: ... ! avenc_aac ! matroskamux \
                 ! kvssink (fragments of matroskamux's clusters, about every half second)",
            );
            return Err(gst::StateChangeError);
        }
        if transition == gst::StateChange::ReadyToPaused
            && (self.accounted() || self.settings_changed.load(Ordering::Acquire))
        {
            // Playing again after a stop, or properties set in READY (GstBaseSink took the
            // settings going to READY): a new stream with a new uploader, with them.
            if !self.accounted() {
                // Nothing was streamed: the metadata kept for the start is kept for this one.
                let kept = match &mut *lock(&self.state) {
                    State::Started(started) => std::mem::take(&mut started.kept_metadata),
                    State::Stopped => Vec::new(),
                };
                lock(&self.metadata_before_start).1.extend(kept);
            }
            let _ = BaseSinkImpl::stop(self);
            BaseSinkImpl::start(self).map_err(|e| {
                self.post_error_message(e);
                gst::StateChangeError
            })?;
        }
        if transition == gst::StateChange::ReadyToPaused && self.obj().max_lateness() != -1 {
            // GstBaseSink drops buffers later than max-lateness (with sync=true) before
            // render sees them: frames lost, matroskamux's header even. kvssink loses nothing.
            self.obj().set_max_lateness(-1);
            let stream = self.stream_name();
            gst::element_imp_warning!(
                self,
                gst::CoreError::Clock,
                (
                    "{}",
                    about(
                        &stream,
                        "max-lateness is ignored (set to -1): kvssink sends every buffer, late \
                         or not"
                    )
                )
            );
        }
        let mut resumed = false;
        match transition {
            gst::StateChange::PlayingToPaused => {
                self.paused_after_playing.store(true, Ordering::Release);
                if let Some(uploader) = &*lock(&self.uploader) {
                    uploader.set_paused(true);
                }
            }
            gst::StateChange::PausedToPlaying
                if self.paused_after_playing.swap(false, Ordering::AcqRel) =>
            {
                // A live source's running time stood still while paused: the fragments after
                // the pause are dated by the new base time, not a pause's length too early.
                // The pipeline has set it; the running time now is where the pause began.
                // The pause began at the element's start time (running time stood still
                // there); the running time read now is a little later.
                let start = self.obj().start_time().map(gst::ClockTime::nseconds);
                *lock(&self.resume_epoch) = self
                    .clock_epoch()
                    .map(|(epoch, running)| (epoch, start.unwrap_or(running)));
                self.resumed_after_pause.store(true, Ordering::Release);
                if let Some(uploader) = &*lock(&self.uploader) {
                    uploader.set_paused(false);
                }
                resumed = true;
            }
            _ => {}
        }
        // The streaming thread, let go by the parent's change, may take `resumed_after_pause`
        // before this thread looks at it again: hence `resumed`.
        let success = self.parent_change_state(transition)?;
        if resumed && self.upstream_latency().0 {
            // The fragment open at the pause would otherwise take in the frames after it, up
            // to the next key frame, dated a pause's length too early: the new session starts
            // at a key frame asked for now.
            self.request_key_unit();
        }
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
            let mut caps = [
                "video/x-matroska",
                "audio/x-matroska",
                "video/webm",
                "audio/webm",
            ]
            .into_iter()
            .map(gst::Structure::new_empty)
            .collect::<gst::Caps>();
            // What AWS's kvssink takes: H.264 and H.265 access units with their codec data.
            caps.merge(es::video_caps());
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink template"),
                // AWS's kvssink's request pads: `video_%u` stands in for `sink` (for
                // applications that request it by name), `audio_%u` adds the audio track.
                gst::PadTemplate::new(
                    "video_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &caps,
                )
                .expect("valid video template"),
                gst::PadTemplate::new(
                    "audio_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &es::audio_caps(),
                )
                .expect("valid audio template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        match templ.name_template() {
            "audio_%u" => self.request_audio_pad(templ),
            "video_%u" => self.request_video_pad(templ),
            _ => None,
        }
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let is_audio = {
            let mut audio = lock(&self.audio);
            let is_audio = audio.pad.as_ref() == Some(pad);
            if is_audio {
                audio.pad = None;
                audio.eos = true;
            }
            is_audio
        };
        if is_audio {
            self.progress.notify_all();
            self.end_audio();
        } else {
            let released = {
                let mut proxy = lock(&self.video_proxy);
                let released = proxy.as_ref() == Some(pad);
                if released {
                    *proxy = None;
                }
                released
            };
            if released && matches!(&*lock(&self.state), State::Started(_)) {
                // The video stream ends here, as at an EOS of its own: the stream ends when
                // the audio does. Sent from a thread of its own: the video's EOS waits for
                // the audio's, and the application releasing the pad must not.
                let sink = self.obj().sink_pad().clone();
                let _ = std::thread::Builder::new()
                    .name("kvssink-video-end".into())
                    .spawn(move || sink.send_event(gst::event::Eos::new()));
            }
        }
        let _ = pad.set_active(false);
        let _ = self.obj().remove_pad(pad);
    }

    fn send_event(&self, event: gst::Event) -> bool {
        // AWS's kvssink is a plain element, whose gst_element_send_event() hands a downstream
        // event to its sink pad; BaseSink's would drop it.
        if metadata::is_add_metadata(&event) {
            let mut before_start = lock(&self.metadata_before_start);
            if !before_start.0 {
                // Not started (the sink pad takes no event): kept for the start, so that an
                // item given while the application sets things up is not lost.
                gst::info!(CAT, imp = self, "kvs-add-metadata kept for the start");
                before_start.1.push(event);
                return true;
            }
            drop(before_start);
            return self.obj().sink_pad().send_event(event);
        }
        if event.type_() == gst::EventType::Eos {
            // An application ending the stream this way (AWS's samples do): every input
            // ends, the audio's too (the video's EOS waits for it). A streaming thread held
            // for room (a recording, during an outage) lets go first: the EOS waits for it.
            if let Some(uploader) = &*lock(&self.uploader) {
                uploader.end_soon();
            }
            let audio = lock(&self.audio).pad.clone();
            let mut sent = self.obj().sink_pad().send_event(event.clone());
            if let Some(pad) = audio {
                sent &= pad.send_event(event);
            }
            return sent;
        }
        self.parent_send_event(event)
    }
}

impl BaseSinkImpl for KvsSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.paused_after_playing.store(false, Ordering::Release);
        self.resumed_after_pause.store(false, Ordering::Release);
        self.failed_account_posted.store(false, Ordering::Release);
        self.told_cut_short.store(false, Ordering::Release);
        self.told_matroska_with_audio
            .store(false, Ordering::Release);
        let mut settings = {
            let settings = lock(&self.settings);
            self.settings_changed.store(false, Ordering::Release);
            settings.clone()
        };
        // The official properties mapped onto ours; those without effect here say so once.
        let official = official::apply(&mut settings);
        let stream = settings.stream_name.clone();
        if stream.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("kvssink needs a stream-name")
            ));
        }
        crate::endpoint::check(&settings.location()).map_err(|e| {
            gst::error_msg!(gst::ResourceError::Settings, ("{}", about(&stream, e)))
        })?;
        let (credentials, ignored) = settings
            .credential_sources()
            .and_then(|sources| crate::credentials::provider(&sources))
            .map_err(|e| {
                gst::error_msg!(gst::ResourceError::Settings, ("{}", about(&stream, e)))
            })?;
        for message in settings
            .credential_warnings()
            .into_iter()
            .chain(ignored)
            .chain(official)
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("{}", about(&stream, message))
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
            max_latency: settings.official.max_latency(),
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
            dump_dir: uploader::dump_dir_from_env(),
        };
        gst::info!(CAT, imp = self, "starting: stream {}", config.stream_name);
        let weak = self.obj().downgrade();
        let events: uploader::EventSink = Arc::new(move |event| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_uploader_event(event);
            }
        });
        let (producer, mut notices) = Producer::start(
            crate::runtime::RUNTIME.handle(),
            producer::Config {
                uploader: config,
                fragment_duration_ns: u64::from(settings.fragment_duration) * 1_000_000,
                file_start_ms: settings.file_start_ms(),
                spool: settings.spool_dir.as_ref().map(|dir| {
                    (
                        std::path::PathBuf::from(dir),
                        u64::from(settings.spool_size) * 1024 * 1024,
                    )
                }),
            },
            credentials,
            events,
        );
        *lock(&self.uploader) = Some(producer.uploader().clone());
        self.watch_for_interrupt(producer.uploader().clone());
        let key = format!("{stream}\u{0}{:?}", settings.location());
        if streams_in_use(&key, 1) > 1 {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Busy,
                (
                    "{}",
                    about(
                        &stream,
                        "another kvssink in this process streams to this stream: the service \
                         takes one PutMedia connection per stream, so they take it from each \
                         other in turn (a duplicate or refused fragment at each turn). Give \
                         each kvssink its own stream-name"
                    )
                )
            );
        }
        *lock(&self.in_use) = Some(key);
        *lock(&self.running_stream) = Some(stream.clone());
        lock(&self.es).set_fragmentation(es::fragmentation(&settings));
        let mut started = Box::new(Started {
            producer,
            stream_name: stream,
            streaming_type: settings.streaming_type,
            use_original_pts: settings.official.value("use-original-pts")
                == Some(super::official::Value::Bool(true)),
            mode_decided: false,
            accounted: false,
            eos_wait_cut: None,
            eos_input_broken: false,
            frames_before_key_frame: false,
            matroska_seen: false,
            matroska_torn: false,
            told_audio_too_far: false,
            told_dts_as_pts: false,
            audio_too_far: 0,
            notices: Vec::with_capacity(8),
            kept_metadata: Vec::new(),
            _at_exit: exit::register({
                let weak = self.obj().downgrade();
                Box::new(move || {
                    weak.upgrade()?.imp().cut_short(&format!(
                        "the process exited while kvssink was streaming, {CUT_SHORT}"
                    ))
                })
            }),
        });
        self.tell(&mut started, &mut notices);
        *lock(&self.state) = State::Started(started);
        let kept = {
            let mut before_start = lock(&self.metadata_before_start);
            before_start.0 = true;
            std::mem::take(&mut before_start.1)
        };
        for event in &kept {
            self.add_metadata(event);
        }
        if let State::Started(started) = &mut *lock(&self.state) {
            started.kept_metadata = kept;
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        lock(&self.metadata_before_start).0 = false;
        if let Some((bus, handler)) = lock(&self.interrupt_watch).take() {
            bus.disconnect(handler);
            bus.disable_sync_message_emission();
        }
        if let Some(key) = lock(&self.in_use).take() {
            streams_in_use(&key, -1);
        }
        // The backlog was drained going from PAUSED to READY (change_state).
        *lock(&self.state) = State::Stopped;
        {
            // The next run starts with a header of its own.
            // The audio input before the muxer, as wait_for_the_other() takes them.
            let mut audio = lock(&self.audio);
            let mut es = lock(&self.es);
            es.reset(true);
            audio.video_eos = false;
            audio.finished = false;
            audio.last_video = None;
            audio.last_audio = None;
            audio.audio_live = None;
            if audio.pad.is_some() {
                audio.eos = false;
                es.link_audio();
            }
        }
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
        self.wait_for_the_other(false)?;
        let mut state = lock(&self.state);
        let State::Started(started) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        if started.producer.uploader().fatal().is_some() {
            // Already posted as an error message.
            return Err(gst::FlowError::Error);
        }
        if started.accounted {
            // Data after an EOS that ended the upload. GstBaseSink refuses it after an EOS it
            // handled, but not after one refused with an error (a loss: no host may take the
            // run for a success), and the finished upload must not be fed (a flush starts
            // the next one).
            return Err(gst::FlowError::Eos);
        }
        let mapped = buffer.clone().into_mapped_buffer_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::ResourceError::Read, ("cannot map buffer"));
            gst::FlowError::Error
        })?;
        if !started.mode_decided {
            started.mode_decided = true;
            let offline = match started.streaming_type {
                StreamingType::Offline => true,
                StreamingType::Realtime | StreamingType::NearRealtime => false,
                StreamingType::Auto => !self.upstream_latency().0,
            };
            gst::info!(
                CAT,
                imp = self,
                "{}",
                if offline {
                    "offline: a recording, sent with its own time"
                } else {
                    "realtime: a live source"
                }
            );
            started.producer.set_offline(offline);
            if offline {
                // For a recording whose stream has neither a date nor a Duration of its own.
                let duration = self
                    .video_pad()
                    .peer_query_duration::<gst::ClockTime>()
                    .map(gst::ClockTime::nseconds);
                started.producer.set_upstream_duration(duration);
                // For elementary streams (kvssink muxes them itself), the recording's date
                // comes from upstream's tags: qtdemux's MP4 creation time, matroskademux's
                // DateUTC.
                started.producer.set_upstream_date(self.upstream_date_ms());
            }
            self.take_buffer_epoch(started, buffer, offline);
            if !offline && self.upstream_latency().0 {
                self.take_live_epoch(started);
            }
        }
        let data = Bytes::from_owner(mapped);
        let mut es = lock(&self.es);
        if !es.has_video() {
            drop(es);
            if started.matroska_torn {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "{}",
                        about(
                            &started.stream_name,
                            "a flush (a flushing seek, or a flush to stream again after EOS) \
                             cut matroskamux's output: its byte stream cannot be followed \
                             across a flush. Give kvssink H.264/H.265 instead (h264parse ! \
                             kvssink), which starts a new session after a flush"
                        )
                    )
                );
                return Err(gst::FlowError::Error);
            }
            if !std::mem::replace(&mut started.matroska_seen, true)
                && !lock(&self.es).fragmentation().key_frame
            {
                self.format_warning(&started.stream_name, es::MATROSKA_KEY_FRAME_FRAGMENTATION);
            }
            self.push_matroska(started, data)?;
            return Ok(gst::FlowSuccess::Ok);
        }
        // Elementary stream: the frame becomes Matroska first.
        let segment = self.obj().segment();
        let segment = segment.downcast_ref::<gst::ClockTime>();
        if buffer.pts().is_none()
            && buffer.dts().is_some()
            && !std::mem::replace(&mut started.told_dts_as_pts, true)
        {
            self.format_warning(
                &started.stream_name,
                "the frames come without a presentation time (h264parse gives none for a raw \
                 .h264 file): their decoding times are used, which is right for a stream \
                 without B-frames",
            );
        }
        let running = segment.and_then(|s| s.to_running_time(presentation_time(buffer)));
        let decoded = segment.and_then(|s| s.to_running_time(buffer.dts()));
        if self.seeked.swap(false, Ordering::AcqRel) {
            // Where in the recording running time 0 now is (offline times follow it).
            let position = segment.and_then(|s| {
                s.to_stream_time(s.position_from_running_time(gst::ClockTime::ZERO)?)
            });
            started
                .producer
                .seeked_to(position.map_or(0, gst::ClockTime::mseconds));
            // Live, running time 0 is now the seek's time.
            if started.mode_decided && !started.producer.offline() && self.upstream_latency().0 {
                self.take_live_epoch(started);
            }
        }
        let Some(running) = running else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "{}",
                    about(
                        &started.stream_name,
                        "a frame without a timestamp (neither PTS nor DTS)"
                    )
                )
            );
            return Err(gst::FlowError::Error);
        };
        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let mut pieces = Vec::with_capacity(4);
        let written = es.push_video(
            running.mseconds(),
            decoded.map(|d| d.mseconds()),
            key,
            data,
            &mut pieces,
        );
        drop(es);
        self.stream_moved(false);
        self.write_muxed(started, written, pieces)
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let s = caps
            .structure(0)
            .ok_or_else(|| gst::loggable_error!(CAT, "empty caps"))?;
        let track = match es::video_track(s) {
            Ok(track) => track,
            Err(e) => {
                // Upstream sees only not-negotiated: the reason goes on the bus, once (caps
                // are offered again and again).
                if !self.told_matroska_with_audio.swap(true, Ordering::AcqRel) {
                    self.negotiation_error(&format!("kvssink cannot take these caps: {e}"));
                }
                return Err(gst::loggable_error!(CAT, "{}", e));
            }
        };
        self.matroska_input
            .store(track.is_none(), std::sync::atomic::Ordering::Relaxed);
        if track.is_none() && lock(&self.audio).pad.is_some() {
            // Said once: upstream offers the same caps again and again.
            if !self.told_matroska_with_audio.swap(true, Ordering::AcqRel) {
                self.negotiation_error(
                    "Matroska input carries its own audio: link audio to matroskamux, or give \
                     kvssink H.264/H.265 video (e.g. through h264parse) with the audio pad",
                );
            }
            return Err(gst::loggable_error!(
                CAT,
                "Matroska video with an audio pad"
            ));
        }
        // The same stream (a repeated caps event) keeps the open cluster; new codec data
        // mid-stream means a new header, so a new PutMedia session.
        lock(&self.es).set_video(track);
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        if metadata::is_add_metadata(&event) {
            // False (to the application's send_event) when the item is not taken.
            return self.add_metadata(&event);
        }
        match event.view() {
            gst::EventView::Eos(_) => {
                self.wait_for_audio_eos();
                lock(&self.audio).finished = true;
                if !self.drain_at_eos() {
                    return false;
                }
            }
            gst::EventView::FlushStop(_) => {
                let mut input = lock(&self.audio);
                input.video_eos = false;
                input.finished = false;
                drop(input);
                let (drained, torn) = match &*lock(&self.state) {
                    State::Started(s) => (s.accounted || s.eos_wait_cut.is_some(), s.matroska_seen),
                    State::Stopped => (false, false),
                };
                if drained {
                    // More data after EOS and a flush (AWS's intermittent-streaming sample
                    // stops with EOS, flushes, and plays again): a new upload, as at a start.
                    // A flush that cut the wait for the last acks short: that wait first.
                    if let State::Started(started) = &mut *lock(&self.state)
                        && !started.accounted
                    {
                        self.drain_at_stop(started);
                    }
                    gst::info!(CAT, imp = self, "flushed after EOS: streaming again");
                    if let Err(e) = self.stop().and_then(|()| self.start()) {
                        self.post_error_message(e);
                        return false;
                    }
                }
                if torn && let State::Started(s) = &mut *lock(&self.state) {
                    // Matroska bytes after a flush continue a stream cut in the middle.
                    s.matroska_torn = true;
                }
                // A flushing seek restarts running time: elementary streams begin a new
                // header, so a new session whose timecodes start again, at its first key
                // frame. (Matroska input brings its own header, or refuses the seek.)
                let mut es = lock(&self.es);
                if es.has_video() {
                    es.reset(true);
                    self.seeked.store(true, Ordering::Release);
                }
            }
            _ => {}
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
        lock(&self.audio).video_flushing = true;
        self.progress.notify_all();
        if let Some(uploader) = &*lock(&self.uploader) {
            uploader.set_flushing(true);
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        lock(&self.audio).video_flushing = false;
        if let Some(uploader) = &*lock(&self.uploader) {
            uploader.set_flushing(false);
        }
        Ok(())
    }
}

impl KvsSink {
    /// Gives the producer what the elementary-stream muxer wrote, and says what it dropped.
    fn write_muxed(
        &self,
        started: &mut Started,
        written: Written,
        pieces: Vec<Bytes>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        for piece in pieces {
            self.push_matroska(started, piece)?;
        }
        for text in es::video_drop_warnings(&written) {
            self.format_warning(&started.stream_name, text);
        }
        if written.video_before_first_key.is_some() || written.audio_before_video.is_some() {
            started.frames_before_key_frame = true;
        }
        if let Some(d) = written.video_too_far {
            // Not all of the stream: the account says so.
            started
                .producer
                .uploader()
                .count_skipped(crate::uploader::Skipped {
                    frames: u64::from(d.frames),
                    bytes: d.bytes,
                    ms: d.ms,
                });
        }
        if written.video_before_key_frame > 0 {
            gst::debug!(
                CAT,
                imp = self,
                "dropped {} frames before the first key frame",
                written.video_before_key_frame
            );
            self.request_key_unit();
        }
        // Audio with no fragment to go in (before the first video key frame): said once, with
        // how much, live or not.
        if written.audio_hold_full || written.audio_before_video.is_some() {
            let hold_ms = lock(&self.es).audio_hold_ms();
            for text in es::drop_warnings(&written, hold_ms) {
                self.format_warning(&started.stream_name, text);
            }
        }
        if written.audio_before_key_frame > 0 {
            gst::debug!(
                CAT,
                imp = self,
                "dropped {} audio frames before the first video key frame",
                written.audio_before_key_frame
            );
        }
        if written.audio_too_far > 0 {
            started.audio_too_far += u64::from(written.audio_too_far);
            if !std::mem::replace(&mut started.told_audio_too_far, true) {
                self.format_warning(
                    &started.stream_name,
                    "video stopped while audio goes on: audio more than 32.7 s after \
                     the last video key frame is not sent (a fragment begins at a \
                     video key frame); it is sent again once video comes back",
                );
            }
        } else if written.frames > 0 && started.told_audio_too_far {
            started.told_audio_too_far = false;
            self.format_warning(
                &started.stream_name,
                format_args!(
                    "video is back: {} audio frames were not sent while it was away",
                    std::mem::take(&mut started.audio_too_far)
                ),
            );
        }
        if written.audio_given_up {
            self.format_warning(
                &started.stream_name,
                format!(
                    "the audio pad is linked but no audio came within {} ms of video: \
                     streaming video alone; audio joins (in a new session) when it comes",
                    crate::esmux::MAX_WAIT_MS
                ),
            );
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn request_audio_pad(&self, templ: &gst::PadTemplate) -> Option<gst::Pad> {
        let mut audio = lock(&self.audio);
        if audio.pad.is_some() {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Pad,
                ("kvssink takes one audio stream: a second audio pad was refused")
            );
            return None;
        }
        let pad = gst::Pad::builder_from_template(templ)
            .name("audio_0")
            .chain_function(|_pad, parent, buffer| {
                KvsSink::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.audio_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                KvsSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.audio_event(pad, event),
                )
            })
            .build();
        *audio = AudioInput {
            pad: Some(pad.clone()),
            ..AudioInput::default()
        };
        drop(audio);
        lock(&self.es).link_audio();
        if self.obj().add_pad(&pad).is_err() {
            lock(&self.audio).pad = None;
            return None;
        }
        Some(pad)
    }

    /// `video_%u`: for applications that ask for AWS's pad by name. Everything it receives
    /// goes to the `sink` pad, which must then stay unlinked.
    fn request_video_pad(&self, templ: &gst::PadTemplate) -> Option<gst::Pad> {
        let mut proxy = lock(&self.video_proxy);
        if proxy.is_some() || self.obj().sink_pad().is_linked() {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Pad,
                ("kvssink takes one video stream: a second video pad was refused")
            );
            return None;
        }
        let pad = gst::Pad::builder_from_template(templ)
            .name("video_0")
            .chain_function(|_pad, parent, buffer| {
                KvsSink::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.obj().sink_pad().chain(buffer),
                )
            })
            .event_function(|_pad, parent, event| {
                KvsSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.obj().sink_pad().send_event(event),
                )
            })
            .query_function(|_pad, parent, query| {
                KvsSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.obj().sink_pad().query(query),
                )
            })
            .build();
        *proxy = Some(pad.clone());
        drop(proxy);
        if self.obj().add_pad(&pad).is_err() {
            *lock(&self.video_proxy) = None;
            return None;
        }
        Some(pad)
    }

    fn audio_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let running = {
            let mut audio = lock(&self.audio);
            if audio.flushing {
                return Err(gst::FlowError::Flushing);
            }
            let running = audio.segment.to_running_time(buffer.pts());
            if running.is_none() && !audio.untimed_said {
                audio.untimed_said = true;
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("audio frames without a timestamp (or outside the segment) are dropped")
                );
            }
            running
        };
        let Some(running) = running else {
            return Ok(gst::FlowSuccess::Ok);
        };
        self.learn_audio_liveness();
        self.wait_for_the_other(true)?;
        let mut state = lock(&self.state);
        let State::Started(started) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        if started.producer.uploader().fatal().is_some() || started.producer.input_failed() {
            return Err(gst::FlowError::Error);
        }
        if started.accounted {
            // After the video's EOS ended the upload (see `render`).
            return Err(gst::FlowError::Eos);
        }
        let data = Bytes::from_owner(buffer.into_mapped_buffer_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::ResourceError::Read, ("cannot map buffer"));
            gst::FlowError::Error
        })?);
        let mut pieces = Vec::with_capacity(4);
        let written = lock(&self.es).push_audio(running.mseconds(), data, &mut pieces);
        self.stream_moved(true);
        self.write_muxed(started, written, pieces)
    }

    fn audio_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Caps(c) => {
                let Some(s) = c.caps().structure(0) else {
                    return false;
                };
                match es::audio_track(s) {
                    Ok(track) => {
                        gst::info!(CAT, imp = self, "audio: {:?}", track.codec_id);
                        if lock(&self.es).set_audio(track) {
                            // Audio joins at the next key frame, with a new header.
                            self.request_key_unit();
                        }
                        true
                    }
                    Err(e) => {
                        gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{}", e));
                        false
                    }
                }
            }
            EventView::Segment(seg) => match seg.segment().downcast_ref::<gst::ClockTime>() {
                Some(segment) => {
                    lock(&self.audio).segment = segment.clone();
                    true
                }
                None => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ("the audio stream's segment is not in time")
                    );
                    false
                }
            },
            EventView::Eos(_) => {
                lock(&self.audio).eos = true;
                self.progress.notify_all();
                self.end_audio();
                true
            }
            EventView::FlushStart(_) => {
                lock(&self.audio).flushing = true;
                self.progress.notify_all();
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStop(_) => {
                let mut audio = lock(&self.audio);
                audio.flushing = false;
                audio.eos = false;
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// The audio stream ended or its pad went away: what it sent is written, and video no
    /// longer waits for it.
    fn end_audio(&self) {
        let mut state = lock(&self.state);
        let mut pieces = Vec::new();
        let written = lock(&self.es).end_audio(&mut pieces);
        if let State::Started(started) = &mut *state {
            let _ = self.write_muxed(started, written, pieces);
        }
    }

    /// What the first buffer says of the epoch time of running time 0, for elementary
    /// streams (Matroska input keeps its cluster times): its PTS itself with
    /// `use-original-pts`, else (offline) its reference timestamp meta.
    fn take_buffer_epoch(&self, started: &mut Started, buffer: &gst::BufferRef, offline: bool) {
        if !started.use_original_pts && !offline {
            return;
        }
        if !lock(&self.es).has_video() {
            if started.use_original_pts {
                self.format_warning(
                    &started.stream_name,
                    "use-original-pts has no effect on Matroska input: its own \
                     cluster times are sent",
                );
            }
            return;
        }
        let segment = self.obj().segment();
        let Some((pts, running)) = segment.downcast_ref::<gst::ClockTime>().and_then(|s| {
            let pts = presentation_time(buffer)?;
            Some((pts, s.to_running_time(pts)?))
        }) else {
            return;
        };
        // In whole milliseconds each, as the timecodes (the running time's) are: the first
        // frame's producer time is then its epoch time's millisecond.
        let at_zero = |epoch: gst::ClockTime| epoch.mseconds().checked_sub(running.mseconds());
        if started.use_original_pts {
            if let Some(ms) = at_zero(pts) {
                started.producer.set_original_pts(ms);
            }
            return;
        }
        // NTP time counts from 1900, the Unix epoch from 1970.
        const NTP_TO_UNIX_NS: u64 = 2_208_988_800 * 1_000_000_000;
        let reference =
            buffer
                .iter_meta::<gst::ReferenceTimestampMeta>()
                .find_map(
                    |meta| match meta.reference().structure(0)?.name().as_str() {
                        "timestamp/x-unix" => Some(meta.timestamp()),
                        "timestamp/x-ntp" => meta
                            .timestamp()
                            .checked_sub(gst::ClockTime::from_nseconds(NTP_TO_UNIX_NS)),
                        _ => None,
                    },
                );
        if let Some(ms) = reference.and_then(at_zero) {
            started.producer.set_reference_timestamp(ms);
        }
    }

    /// `gst-launch-1.0 -e` interrupted (Ctrl-C, or systemd's `KillSignal=SIGINT`) sends EOS
    /// to the pipeline's sources, from its main loop, and that waits for each source's
    /// streaming thread: a recording's, held for room in the store while the service is out
    /// of reach, would keep it waiting until the service came back. Its interrupt message is
    /// seen as it is posted, and the streaming thread let go.
    fn watch_for_interrupt(&self, uploader: std::sync::Arc<crate::uploader::Uploader>) {
        // The top-level pipeline's bus: a bin gives its children a bus of its own.
        let mut top: gst::Object = self.obj().clone().upcast();
        while let Some(parent) = top.parent() {
            top = parent;
        }
        let Some(bus) = top.downcast::<gst::Element>().ok().and_then(|e| e.bus()) else {
            return;
        };
        bus.enable_sync_message_emission();
        let handler = bus.connect_sync_message(Some("application"), move |_, message| {
            if message
                .structure()
                .is_some_and(|s| s.name() == "GstLaunchInterrupt")
            {
                uploader.end_soon();
            }
        });
        if let Some((bus, handler)) = lock(&self.interrupt_watch).replace((bus, handler)) {
            bus.disconnect(handler);
            bus.disable_sync_message_emission();
        }
    }

    /// Live input, whose timecodes are running times (matroskamux's cluster timecodes and
    /// elementary streams alike): the epoch time of running time 0, by the pipeline's clock
    /// now.
    fn take_live_epoch(&self, started: &mut Started) {
        if let Some((ms, _)) = self.clock_epoch() {
            started.producer.set_live_epoch(ms);
        }
    }

    /// The epoch time (ms) of running time 0 by the pipeline's clock, and the running time
    /// now (ns).
    fn clock_epoch(&self) -> Option<(u64, u64)> {
        let obj = self.obj();
        let running = obj.clock()?.time().checked_sub(obj.base_time()?)?;
        let wall = crate::uploader::now_ms();
        Some((wall.checked_sub(running.mseconds())?, running.nseconds()))
    }

    /// The `datetime` tag of the video pad's sticky tag events (the recording's date, to the
    /// second at least), in ms since the epoch.
    fn upstream_date_ms(&self) -> Option<u64> {
        let pad = self.video_pad();
        (0..)
            .map_while(|i| pad.sticky_event::<gst::event::Tag>(i))
            .find_map(|tag| {
                let date = tag.tag().get::<gst::tags::DateTime>()?.get();
                if !date.has_time() {
                    // A day alone would place the recording hours off.
                    return None;
                }
                let date = date.to_g_date_time().ok()?;
                let us = date.to_unix() * 1_000_000 + i64::from(date.microsecond());
                u64::try_from(us / 1000).ok()
            })
    }

    /// Whether the audio's upstream is live, asked of it once (not under the lock: the
    /// query goes upstream).
    fn learn_audio_liveness(&self) {
        let pad = {
            let audio = lock(&self.audio);
            if audio.audio_live.is_some() {
                return;
            }
            audio.pad.clone()
        };
        let Some(pad) = pad else {
            return;
        };
        let mut q = gst::query::Latency::new();
        let live = pad.peer_query(&mut q) && q.result().0;
        lock(&self.audio).audio_live = Some(live);
        // A recording's audio, read on while an encoder holds its first video frames for
        // its look-ahead, may run far ahead of the first video key frame: it is held in
        // memory for it (waiting would stall a demuxer that feeds both pads from one thread).
        lock(&self.es).set_recording(!live);
    }

    /// A frame of one stream (audio or video) reached the muxer.
    fn stream_moved(&self, audio: bool) {
        let mut input = lock(&self.audio);
        if input.pad.is_none() {
            // One stream: nobody waits for it (and a wake-up per frame is a system call).
            return;
        }
        let now = Some(std::time::Instant::now());
        if audio {
            input.last_audio = now;
        } else {
            input.last_video = now;
        }
        drop(input);
        self.progress.notify_all();
    }

    /// With audio and video, a stream that runs ahead of the other (a recording read faster
    /// than real time) waits for it, as long as the other keeps coming: the frames then go
    /// out in time order.
    fn wait_for_the_other(&self, audio: bool) -> Result<(), gst::FlowError> {
        let mut input = lock(&self.audio);
        if input.pad.is_none() {
            return Ok(());
        }
        loop {
            if audio && input.finished {
                return Err(gst::FlowError::Eos);
            }
            if !audio && input.video_flushing {
                return Err(gst::FlowError::Flushing);
            }
            if input.flushing || input.eos || input.video_eos {
                return Ok(());
            }
            let other = if audio {
                input.last_video
            } else {
                input.last_audio
            };
            let Some(other) = other.filter(|t| t.elapsed() < SILENT_STREAM) else {
                return Ok(());
            };
            let ahead = {
                let es = lock(&self.es);
                if audio {
                    es.audio_ahead_ms()
                } else if es.audio_running() {
                    es.video_ahead_ms()
                } else {
                    0
                }
            };
            if ahead < AHEAD_MS {
                return Ok(());
            }
            input = self
                .progress
                .wait_timeout(input, SILENT_STREAM.saturating_sub(other.elapsed()))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// At the video's EOS, gives a linked audio stream a moment to end as well, so that its
    /// last frames are in the stream.
    fn wait_for_audio_eos(&self) {
        let deadline = std::time::Instant::now() + AUDIO_EOS_WAIT;
        let mut audio = lock(&self.audio);
        audio.video_eos = true;
        drop(audio);
        self.progress.notify_all();
        let mut audio = lock(&self.audio);
        while let Some(pad) = audio.pad.clone() {
            if audio.eos || audio.flushing || !pad.is_linked() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                gst::debug!(
                    CAT,
                    imp = self,
                    "the audio stream did not end with the video"
                );
                return;
            }
            audio = self
                .progress
                .wait_timeout(audio, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Gives the producer the next bytes of the Matroska stream.
    fn push_matroska(&self, started: &mut Started, data: Bytes) -> Result<(), gst::FlowError> {
        if self.resumed_after_pause.load(Ordering::Relaxed)
            && self.resumed_after_pause.swap(false, Ordering::AcqRel)
        {
            // Running times are capture times only from a live source.
            let epoch = lock(&self.resume_epoch)
                .take()
                .filter(|_| self.upstream_latency().0);
            started.producer.resumed_after_pause(epoch);
        }
        let mut notices = std::mem::take(&mut started.notices);
        let result = started.producer.push(data, &mut notices);
        self.tell(started, &mut notices);
        started.notices = notices;
        result.map_err(|e| self.input_error(&started.stream_name, &e))
    }

    /// A `kvs-add-metadata` event: its item goes to the producer (true), or a warning says
    /// why not.
    fn add_metadata(&self, event: &gst::EventRef) -> bool {
        let mut state = lock(&self.state);
        let State::Started(started) = &mut *state else {
            return false;
        };
        let stream = started.stream_name.as_str();
        let s = event.structure().expect("checked by is_add_metadata");
        let item = match metadata::parse(s) {
            Ok(item) => item,
            Err(why) => {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Event,
                    (
                        "{}",
                        about(stream, format!("kvs-add-metadata event ignored: {why}"))
                    )
                );
                return false;
            }
        };
        let producer = &mut started.producer;
        match producer.add_metadata(&item.name, &item.value, item.persistent) {
            Ok(added) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "fragment metadata {:?} = {:?} (persistent: {}): {added:?}, from the \
                     fragment {}",
                    item.name,
                    item.value,
                    item.persistent,
                    producer
                        .open_fragment_timecode()
                        .map_or("to come".to_owned(), |tc| format!("at timecode {tc}"))
                );
                true
            }
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Event,
                    ("{}", about(stream, format!("kvs-add-metadata: {e}")))
                );
                false
            }
        }
    }

    /// Turns what the producer noticed into log lines, warnings and upstream events.
    fn tell(&self, started: &mut Started, notices: &mut Vec<Notice>) {
        let stream = started.stream_name.as_str();
        for notice in notices.drain(..) {
            match &notice {
                Notice::Header { .. } => {
                    gst::info!(CAT, imp = self, "{}", notice);
                    let (live, latency) = self.upstream_latency();
                    started.producer.set_live(live);
                    started.producer.set_upstream_latency(latency);
                }
                Notice::Playback(_) => gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("{}", about(stream, &notice))
                ),
                Notice::SpoolRecovered {
                    torn_bytes: 0,
                    damaged_bytes: 0,
                    ..
                } => {
                    // gst-launch-1.0 prints an INFO message's debug text alone.
                    let text = about(stream, &notice);
                    gst::element_imp_info!(
                        self,
                        gst::ResourceError::Read,
                        ("{}", text),
                        ["{}", text]
                    );
                }
                Notice::SpoolRecovered { .. }
                | Notice::SpoolFailed(_)
                | Notice::SpoolWriteFailed { .. }
                | Notice::SpoolReadFailed(_) => self.write_warning(stream, &notice),
                Notice::SpoolExposed(_) => gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenReadWrite,
                    ("{}", about(stream, &notice))
                ),
                Notice::SpoolSlow { .. } => {
                    // Behind a queue, upstream's thread does not wait for the disk.
                    let queued = self
                        .video_pad()
                        .peer()
                        .and_then(|peer| peer.parent_element())
                        .and_then(|upstream| upstream.factory())
                        .is_some_and(|f| {
                            matches!(f.name().as_str(), "queue" | "queue2" | "multiqueue")
                        });
                    if self.upstream_latency().0 && !queued {
                        gst::element_imp_warning!(
                            self,
                            gst::ResourceError::Write,
                            ("{}", about(stream, &notice))
                        );
                    } else {
                        gst::info!(CAT, imp = self, "{}", notice);
                    }
                }
                Notice::SpoolDiskSmall { .. } => gst::element_imp_warning!(
                    self,
                    gst::ResourceError::NoSpaceLeft,
                    ("{}", about(stream, &notice))
                ),
                Notice::SpoolDropped {
                    fragments, bytes, ..
                } => {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NoSpaceLeft,
                        ("{}", about(stream, &notice))
                    );
                    let s = gst::Structure::builder("kvs-fragments-dropped")
                        .field("fragments", *fragments)
                        .field("bytes", *bytes)
                        .field("from", "spool")
                        .build();
                    self.post_element_message(s);
                }
                Notice::FragmentCut { .. } => gst::element_imp_warning!(
                    self,
                    gst::StreamError::Encode,
                    ("{}", about(stream, &notice))
                ),
                Notice::BrokeOff { .. } | Notice::TimeWentBack { .. } => gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("{}", about(stream, &notice))
                ),
                Notice::StartTime {
                    producer_start_ms,
                    first_ms,
                    source,
                } => {
                    gst::info!(CAT, imp = self, "{}", notice);
                    let s = gst::Structure::builder("kvs-stream-start")
                        .field("stream-name", stream)
                        .field("producer-start-time", *producer_start_ms)
                        .field("first-fragment-time", *first_ms)
                        .field("source", source.as_str())
                        .field("message", notice.to_string())
                        .build();
                    self.post_element_message(s);
                }
                Notice::FragmentStarted { .. }
                | Notice::FragmentEnded { .. }
                | Notice::FragmentWithoutFrames { .. }
                | Notice::Skipped { .. } => gst::debug!(CAT, imp = self, "{}", notice),
                Notice::SkippingMidStream { .. } => {
                    gst::info!(CAT, imp = self, "{}", notice);
                    self.request_key_unit();
                }
                Notice::SkippedToKeyFrame { .. } => self.format_warning(stream, &notice),
                Notice::KeyUnitDue { .. } => {
                    gst::debug!(CAT, imp = self, "{}", notice);
                    self.request_key_unit();
                }
                Notice::ClockStepped { .. } => gst::element_imp_warning!(
                    self,
                    gst::CoreError::Clock,
                    ("{}", about(stream, &notice))
                ),
                Notice::LiveOffClock { .. } => gst::element_imp_warning!(
                    self,
                    gst::CoreError::Clock,
                    ("{}", about(stream, &notice))
                ),
                Notice::DatedTooEarly { .. } => gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("{}", about(stream, &notice))
                ),
                Notice::SkippingToKeyFrame { .. } => {
                    // Told with how much at the key frame (SkippedAtStart).
                    gst::info!(CAT, imp = self, "{}", notice);
                    self.request_key_unit();
                }
                Notice::SkippedAtStart { .. } => {
                    self.format_warning(stream, &notice);
                    started.frames_before_key_frame = true;
                }
            }
        }
    }

    /// A warning about the stream's input (GstStreamError::Format), naming the stream.
    /// Inputs kvssink cannot take together: an error naming the stream.
    fn negotiation_error(&self, what: &str) {
        let stream = self.stream_name();
        gst::element_imp_error!(
            self,
            gst::CoreError::Negotiation,
            ("{}", about(&stream, what))
        );
    }

    /// The stream messages name: the running one's, else the property's.
    fn stream_name(&self) -> String {
        lock(&self.running_stream)
            .clone()
            .unwrap_or_else(|| lock(&self.settings).stream_name.clone())
    }

    /// A warning about sending to the service (GstResourceError::Write), naming the stream.
    fn write_warning(&self, stream: &str, what: impl std::fmt::Display) {
        gst::element_imp_warning!(self, gst::ResourceError::Write, ("{}", about(stream, what)));
    }

    fn format_warning(&self, stream: &str, what: impl std::fmt::Display) {
        gst::element_imp_warning!(self, gst::StreamError::Format, ("{}", about(stream, what)));
    }

    fn request_key_unit(&self) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.video_pad().push_event(event);
    }

    /// The pad video comes in on: `sink`, or the `video_%u` pad that stands in for it.
    fn video_pad(&self) -> gst::Pad {
        match &*lock(&self.video_proxy) {
            Some(pad) => pad.clone(),
            None => self.obj().sink_pad().clone(),
        }
    }

    /// Posts the error for input the producer cannot take.
    fn input_error(&self, stream: &str, error: &InputError) -> gst::FlowError {
        match error {
            // Said when it happened.
            InputError::AlreadyFailed => gst::FlowError::Error,
            InputError::Matroska(e) => self.matroska_error(stream, e),
        }
    }

    fn matroska_error(&self, stream: &str, error: &mkv::MkvError) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::StreamError::Format,
            ("{}", about(stream, error)),
            ["kvssink takes the output of matroskamux (streamable=true)"]
        );
        gst::FlowError::Error
    }

    /// Whether upstream is live, and its minimum latency (ns). Asked of the peer directly:
    /// BaseSink's own latency query skips upstream when, as here, the sink does not sync.
    fn upstream_latency(&self) -> (bool, u64) {
        let mut q = gst::query::Latency::new();
        if !self.video_pad().peer_query(&mut q) {
            return (false, 0);
        }
        let (live, min, _) = q.result();
        (live, if live { min.nseconds() } else { 0 })
    }

    fn accounted(&self) -> bool {
        matches!(&*lock(&self.state), State::Started(started) if started.accounted)
    }

    /// At EOS: ends the last fragment and waits (bounded by `stop-stream-timeout`) until the
    /// service has persisted everything. Returns false (after posting an error) when a
    /// fragment was lost or the input broke off, so that no host calls the run a success.
    fn drain_at_eos(&self) -> bool {
        let timeout = lock(&self.settings).stop_stream_timeout();
        let begun = std::time::Instant::now();
        let (uploader, stream, input_error) = {
            let mut state = lock(&self.state);
            let State::Started(started) = &mut *state else {
                return true;
            };
            if started.producer.input_failed() {
                // The EOS a source sends after our error: the application is stopping the
                // pipeline, and the drain happens then.
                return false;
            }
            if started.accounted {
                // Another EOS after the one that ended the upload with a loss (a queue
                // before kvssink sends one when kvssink refuses its data): told already.
                return false;
            }
            let Ok(input_error) = self.finish_input(started) else {
                return false;
            };
            // Said before the wait (the spool's part of it too): it may be long, and a host
            // (gst-launch-1.0 -e) shows nothing meanwhile.
            self.tell_eos_wait(started, timeout);
            self.drain_spool(started, begun);
            started.accounted = true;
            (
                started.producer.uploader().clone(),
                started.stream_name.clone(),
                input_error,
            )
        };
        let input_error = match input_error {
            Some(mkv::MkvError::Truncated { offset }) if uploader.ending() => {
                // The application ended the stream (Ctrl-C with gst-launch-1.0 -e) where a
                // file read happened to be: its doing, as a stop without EOS is.
                self.format_warning(
                    &stream,
                    format_args!(
                        "the application ended the stream inside a Matroska element (at \
                         byte {offset}), before the end of its input: the fragments before \
                         the cut are sent, the cut one with its whole frames"
                    ),
                );
                None
            }
            e => e,
        };
        gst::info!(
            CAT,
            imp = self,
            "EOS: waiting up to {:?} for the last acks",
            timeout
        );
        let mut summary = uploader.finish_and_account_by(|| self.stop_deadline(begun));
        if summary.outcome == uploader::Outcome::Cancelled {
            // The application stopped the pipeline (or flushed) while the wait went on: the
            // stop that follows waits for the rest, bounded as a stop without EOS, and
            // accounts for it. Abandoning it at once lost fragments without a word.
            gst::info!(CAT, imp = self, "the wait for the last acks was cut short");
            if let State::Started(started) = &mut *lock(&self.state) {
                started.accounted = false;
                started.eos_wait_cut = Some(begun);
                started.eos_input_broken = input_error.is_some();
            }
            if let Some(e) = &input_error {
                let _ = self.matroska_error(&stream, e);
            }
            return input_error.is_none();
        }
        if let State::Started(started) = &mut *lock(&self.state) {
            summary = summary.with_spool(&started.producer.spool_account());
        }
        if input_error.is_some() {
            // The input broke off: the stream failed, whatever was persisted of it (as at a
            // stop, and as for any other bad input).
            summary = summary.failed();
        }
        if !(summary.outcome == uploader::Outcome::Failed
            && self.failed_account_posted.load(Ordering::Acquire))
        {
            self.post_summary(&stream, &summary);
        }
        let frames_came = matches!(&*lock(&self.state),
            State::Started(started) if started.frames_before_key_frame);
        if summary.stats.fragments_produced == 0 && input_error.is_none() && !frames_came {
            // All persisted, of nothing: what was meant to go up was lost before kvssink,
            // unless the application ended the stream first.
            let what = if uploader.ending() {
                "the application ended the stream before a whole frame reached kvssink: \
                 nothing was uploaded"
            } else {
                "the stream ended before any frame reached kvssink: nothing was uploaded (if \
                 frames were sent: matroskamux drops frames without a timestamp; give appsrc \
                 format=time and do-timestamp=true, or set each buffer's PTS)"
            };
            gst::element_imp_warning!(self, gst::StreamError::Failed, ("{}", about(&stream, what)));
        }
        // Said after the wait: an error makes applications stop the pipeline, so the
        // account goes to the application first.
        if let Some(e) = &input_error {
            self.let_the_summary_through();
            let _ = self.matroska_error(&stream, e);
        }
        match summary.outcome {
            // The error itself was posted when it happened.
            uploader::Outcome::Failed => false,
            _ => match summary.loss_message(&stream) {
                Some(message) => {
                    self.let_the_summary_through();
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

    /// Ends the input at EOS or stop: the last fragment is closed. `Ok(Some(e))` when the
    /// input broke off inside an element (the whole part is kept; the caller says so), `Err`
    /// when nothing can be sent (an error was posted).
    fn finish_input(&self, started: &mut Started) -> Result<Option<mkv::MkvError>, ()> {
        let mut pieces = Vec::new();
        let written = lock(&self.es).flush(&mut pieces);
        if self.write_muxed(started, written, pieces).is_err() {
            return Err(());
        }
        let mut notices = std::mem::take(&mut started.notices);
        let result = started.producer.end_input(&mut notices);
        self.tell(started, &mut notices);
        started.notices = notices;
        result.map_err(|e| {
            let _ = self.input_error(&started.stream_name, &e);
        })
    }

    /// Going to READY without EOS (Ctrl-C, an application stopping its pipeline, an
    /// error): as AWS's element does, ends the open fragment and waits, bounded by
    /// `stop-stream-timeout`, for what is unacknowledged; then says how many fragments were
    /// abandoned, if any.
    fn drain_at_stop(&self, started: &mut Started) {
        let stream = started.stream_name.clone();
        let uploader = started.producer.uploader().clone();
        if crate::runtime::on_runtime_thread()
            && uploader.fatal().is_none()
            && uploader.unacknowledged() > 0
        {
            gst::element_imp_warning!(
                self,
                gst::CoreError::StateChange,
                (
                    "{}",
                    about(
                        &stream,
                        "the pipeline was stopped from a handler of kvssink's fragment-ack \
                         signal, which runs on the thread that reads the acks: the last acks \
                         cannot be waited for there. Stop it from another thread (post a \
                         message, or g_idle_add / GLib.idle_add, and set the state from the \
                         main loop)"
                    )
                )
            );
        }
        let summary = if uploader.fatal().is_some() {
            uploader.finish_and_account(Duration::ZERO)
        } else if let Some(begun) = started.eos_wait_cut {
            // The input was finished at EOS; the wait for its acks was cut short.
            uploader.set_flushing(false);
            gst::info!(
                CAT,
                imp = self,
                "stopped while waiting for the last acks after EOS: waiting on, until \
                 stop-stream-timeout after EOS"
            );
            uploader.finish_and_account_by(|| self.stop_deadline(begun))
        } else {
            match self.finish_input(started) {
                Err(()) => return,
                // A stop without EOS cuts the input wherever it was (a file upload stopped
                // with Ctrl-C): the element it broke off is the stop's doing, not the
                // input's; its whole frames are kept.
                Ok(Some(e)) if !started.producer.input_failed() => {
                    gst::info!(CAT, imp = self, "stopped inside an element: {e}");
                }
                Ok(_) => {}
            }
            // unlock() set it to stop the streaming thread, which has stopped by now.
            uploader.set_flushing(false);
            let timeout = self.stop_wait();
            let begun = std::time::Instant::now();
            self.drain_spool(started, begun);
            gst::info!(
                CAT,
                imp = self,
                "stopping without EOS: waiting up to {:?} for the last acks",
                timeout
            );
            uploader.finish_and_account_by(|| self.stop_deadline(begun))
        };
        let mut summary = summary.with_spool(&started.producer.spool_account());
        if started.producer.input_failed() || started.eos_input_broken {
            // Its input's error ended it, whatever was persisted.
            summary = summary.failed();
        }
        started.accounted = true;
        if uploader.fatal().is_some() && self.failed_account_posted.load(Ordering::Acquire) {
            // Posted with the error.
            return;
        }
        self.post_summary(&stream, &summary);
        if let Some(message) = summary.loss_message(&stream) {
            let how = if started.eos_wait_cut.is_some() {
                "stopped while waiting for the last acks after EOS"
            } else {
                "stopped without EOS"
            };
            if uploader.fatal().is_none() {
                // An error, as at EOS: gst-launch-1.0, stopping (Ctrl-C without -e), prints
                // errors but no longer warnings, and its exit status says the run failed.
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    ("{message} ({how})"),
                    ["outcome {}", summary.outcome.as_str()]
                );
                return;
            }
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Write,
                ("{message} ({how})"),
                ["outcome {}", summary.outcome.as_str()]
            );
        }
    }

    /// What ending the stream now, without a word (the process exits, or the element is
    /// destroyed, `how`), would lose of it (see [`exit`]); `None` when nothing (stopped, or
    /// accounted at EOS). It cannot wait: the streaming thread may hold the state (held for
    /// room, or waiting for the last acks), and then only the uploader's part is told,
    /// without the spool's.
    fn cut_short(&self, how: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        let summary = loop {
            match self.state.try_lock() {
                Ok(mut state) => match &mut *state {
                    State::Started(started) if !started.accounted => {
                        let producer = &mut started.producer;
                        let spool = uploader::SpoolAccount {
                            open_lost: producer.open_unhanded().into(),
                            ..producer.spool_account()
                        };
                        break producer.uploader().account_now().with_spool(&spool);
                    }
                    _ => return None,
                },
                Err(std::sync::TryLockError::Poisoned(_)) => return None,
                Err(std::sync::TryLockError::WouldBlock)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    break lock(&self.uploader).clone()?.account_now();
                }
            }
        };
        let message = summary.loss_message(&self.stream_name())?;
        if self.told_cut_short.swap(true, Ordering::AcqRel) {
            return None;
        }
        let message = format!("{message} ({how})");
        gst::error!(CAT, imp = self, "{message}");
        Some(message)
    }

    /// When a wait for the last acks that began at `begun` ends: `stop-stream-timeout` as it
    /// is now (an application may shorten it while the wait goes on).
    fn stop_deadline(&self, begun: std::time::Instant) -> std::time::Instant {
        begun + self.stop_wait()
    }

    /// How long a stop waits for the last acks: `stop-stream-timeout`, but not at all when
    /// the stop runs on the thread that reads the acks (an application's `fragment-ack`
    /// handler stopping its pipeline): waiting there for acks only that thread can read
    /// would hold every stream of the process for the whole timeout, and still lose them.
    fn stop_wait(&self) -> Duration {
        if crate::runtime::on_runtime_thread() {
            Duration::ZERO
        } else {
            lock(&self.settings).stop_stream_timeout()
        }
    }

    /// Hands what waits in the spool to the uploader, until `deadline`.
    /// At EOS, when the service cannot be reached: a warning that the wait for it begins,
    /// how many fragments it is for (in memory and in the spool) and how long it may take.
    fn tell_eos_wait(&self, started: &Started, timeout: Duration) {
        let now = started.producer.uploader().stats();
        let fragments = now.backlog.fragments + started.producer.spool_backlog() as u64;
        if (now.unreachable || now.failing) && fragments > 0 && !timeout.is_zero() {
            let stream = &started.stream_name;
            self.write_warning(
                stream,
                format_args!(
                    "at EOS {fragments} fragment{} not acknowledged and the service \
                     cannot be reached now ({}): waiting up to {} s (stop-stream-timeout) \
                     for it, then the account",
                    if fragments == 1 { " is" } else { "s are" },
                    now.last_error.as_deref().map_or("no answer", |e| e
                        .strip_prefix(about(stream, "").as_str())
                        .unwrap_or(e)),
                    timeout.as_secs()
                ),
            );
        }
    }

    /// Hands the spool's backlog to the uploader until `stop-stream-timeout` after `begun`
    /// (read again as it waits).
    fn drain_spool(&self, started: &mut Started, begun: std::time::Instant) {
        let mut notices = std::mem::take(&mut started.notices);
        started
            .producer
            .drain_spool(|| self.stop_deadline(begun), &mut notices);
        self.tell(started, &mut notices);
        started.notices = notices;
    }

    /// `gst-launch-1.0` quits when an error reaches its bus's sync handler, dropping what its
    /// main loop had not dispatched yet: the summary posted just before the error at EOS was
    /// often never printed (`-m`). Gives the application's bus watch up to a quarter of a
    /// second to take the messages already posted before the error follows them.
    fn let_the_summary_through(&self) {
        let mut top: gst::Object = self.obj().clone().upcast();
        while let Some(parent) = top.parent() {
            top = parent;
        }
        let Some(bus) = top.downcast_ref::<gst::Element>().and_then(|e| e.bus()) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(250);
        while bus.have_pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
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
            .field("fragments-dropped", summary.dropped)
            .field("fragments-rejected", stats.fragments_rejected)
            .field("fragments-pending", summary.pending)
            .field("fragments-spooled", summary.kept)
            .field("fragments-lost", summary.lost)
            .field("fragments-received-only", stats.fragments_received_only)
            .field("loss-reasons", summary.reasons.join("; "))
            .field("bytes-sent", stats.bytes_sent)
            .build();
        self.post_element_message(s);
    }

    /// At a fatal error (on the runtime's thread): posts the stream's account (`failed`)
    /// before the error, as the summary always comes, and returns what the error adds about
    /// the loss. The spool's part is counted when the streaming thread does not hold the
    /// state (it never waits for this thread while holding it: a fatal error wakes it).
    fn post_failed_account(&self, error: &FatalError) -> String {
        let Some(uploader) = lock(&self.uploader).clone() else {
            return String::new();
        };
        let mut summary = uploader.account_failed(error);
        let mut stream = self.stream_name();
        if let Ok(mut state) = self.state.try_lock()
            && let State::Started(started) = &mut *state
        {
            summary = summary.with_spool(&started.producer.spool_account());
            stream.clone_from(&started.stream_name);
        }
        self.post_summary(&stream, &summary);
        self.failed_account_posted.store(true, Ordering::Release);
        // gst-launch-1.0 quits at the error: the summary must be dispatched first.
        self.let_the_summary_through();
        if summary.lost == 0 {
            return String::new();
        }
        // The error says why already: the reasons leave out their copy of it.
        let reasons: Vec<&str> = summary
            .reasons
            .iter()
            .map(|r| match r.find(" (abandoned): ") {
                Some(at) => &r[..at + " (abandoned)".len()],
                None => r.as_str(),
            })
            .collect();
        format!(
            ". {} of {} fragments were not persisted ({})",
            summary.lost,
            summary.stats.fragments_produced,
            reasons.join("; ")
        )
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
            Event::Ack {
                ack,
                producer_time_ms,
            } => {
                gst::log!(CAT, imp = self, "ack {:?}", ack);
                if ack.event_type == crate::ack::AckEventType::Persisted
                    && let Some((took, attempts)) = lock(&self.reconnect_warnings).recovered()
                {
                    // The outage is over: said, and the next one's drops are told anew.
                    *lock(&self.drop_warnings) = DropWarnings::default();
                    let text = about(
                        &self.stream_name(),
                        format_args!(
                            "the service persists fragments again, {:.1} s after the first \
                             failed attempt ({attempts} attempt{} failed)",
                            took.as_secs_f64(),
                            if attempts == 1 { "" } else { "s" }
                        ),
                    );
                    // gst-launch-1.0 prints an INFO message's debug text alone.
                    gst::element_imp_info!(
                        self,
                        gst::ResourceError::Write,
                        ("{}", text),
                        ["{}", text]
                    );
                }
                let mut s = gst::Structure::builder("kvs-ack")
                    .field("event-type", ack.event_type.as_str())
                    .build();
                if let Some(tc) = ack.fragment_timecode {
                    s.set("fragment-timecode", tc);
                }
                if let Some(ms) = producer_time_ms {
                    s.set("producer-timestamp", ms);
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
                // AWS's signal, for applications written for its element.
                let mut official = official::FragmentAck::new(&ack, producer_time_ms);
                let pointer: glib::Pointer = (&mut official as *mut official::FragmentAck).cast();
                self.obj()
                    .emit_by_name::<()>(official::FRAGMENT_ACK, &[&pointer]);
            }
            Event::State { state, backlog } => {
                gst::info!(CAT, imp = self, "connection: {:?}", state);
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
                    // (A connection accepted is no sign that an outage is over: a service that
                    // answers but does not acknowledge accepts one after another.)
                    ConnectionState::Streaming => s.set("state", "streaming"),
                    ConnectionState::Reconnecting {
                        attempt,
                        delay,
                        reason,
                    } => {
                        let told = lock(&self.reconnect_warnings).take(attempt, &reason);
                        let stream = self.stream_name();
                        // The warning names the stream once, though the reason may too.
                        let line = format!(
                            "reconnecting in {} ms (attempt {}): {}",
                            delay.as_millis(),
                            attempt,
                            reason
                                .strip_prefix(about(&stream, "").as_str())
                                .unwrap_or(&reason)
                        );
                        match told {
                            Some(0) => self.write_warning(&stream, &line),
                            Some(untold) => self.write_warning(
                                &stream,
                                format_args!(
                                    "still {line} ({untold} attempts since the last \
                                     warning, each in a kvs-connection message)"
                                ),
                            ),
                            None => gst::debug!(CAT, imp = self, "{}", line),
                        }
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
            Event::FallingBehind { behind, max } => {
                self.write_warning(
                    &self.stream_name(),
                    format_args!(
                        "falling behind: the fragments not yet acknowledged span {:.1} \
                         s, more than max-latency ({} s); the uplink is slower than \
                         the stream. At buffer-duration new fragments are dropped: \
                         lower the bitrate or check the network",
                        behind.as_secs_f64(),
                        max.as_secs()
                    ),
                );
            }
            Event::Dropped(evicted) | Event::DroppedNewest(evicted) => {
                let newest = matches!(event, Event::DroppedNewest(_));
                // Once per fragment through an outage of hours: limited as reconnects are.
                let told = lock(&self.drop_warnings).take(evicted.fragments, evicted.bytes);
                if let Some((fragments, bytes)) = told {
                    let what = if newest {
                        let (what, were) = match fragments {
                            1 => ("a new fragment".to_owned(), "was"),
                            n => (format!("{n} new fragments"), "were"),
                        };
                        format!(
                            "fragments are not acknowledged as fast as the stream makes them \
                             (an uplink slower than the stream, or a service that stopped \
                             acknowledging) and the fragment store is full (storage-size / \
                             buffer-duration): {what} ({bytes} bytes) {were} dropped unsent, so \
                             that the stream stays live and the pipeline is never held; lower \
                             the bitrate or check the network"
                        )
                    } else {
                        let oldest = match fragments {
                            1 => "the oldest fragment".to_owned(),
                            n => format!("the {n} oldest fragments"),
                        };
                        format!(
                            "the fragment store is full (storage-size / buffer-duration): \
                             dropped {oldest} ({bytes} bytes) that {} not acknowledged",
                            if fragments == 1 { "was" } else { "were" }
                        )
                    };
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NoSpaceLeft,
                        (
                            "{}",
                            about(
                                &self.stream_name(),
                                format_args!(
                                    "{what}{}",
                                    if fragments > evicted.fragments {
                                        " since the last warning (each drop has its \
                                         kvs-fragments-dropped message)"
                                    } else {
                                        ""
                                    }
                                )
                            )
                        )
                    );
                }
                let mut s = gst::Structure::builder("kvs-fragments-dropped")
                    .field("fragments", evicted.fragments)
                    .field("bytes", evicted.bytes)
                    .build();
                if newest {
                    s.set("from", "input");
                }
                self.post_element_message(s);
            }
            Event::BackPressure { held, backlog } => {
                // A file upload waits for the service by design; a live source falls behind.
                let live = self.upstream_latency().0;
                let stream = self.stream_name();
                if live {
                    self.write_warning(
                        &stream,
                        format_args!(
                            "the uplink is slower than the stream: the pipeline has \
                             been held {} ms waiting for the service ({} fragments, {} \
                             bytes not yet acknowledged) and is falling behind real \
                             time; lower the bitrate or check the network (stats: \
                             backpressure-time)",
                            held.as_millis(),
                            backlog.fragments,
                            backlog.bytes
                        ),
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
                self.video_pad().push_event(event);
            }
            Event::Fatal(error) => {
                // The one place a fatal uploader error becomes a GStreamer error.
                let domain = match &error {
                    FatalError::Auth { .. } => gst::ResourceError::NotAuthorized,
                    FatalError::Stream { .. } => gst::ResourceError::NotFound,
                    FatalError::Setup { .. } => gst::ResourceError::Settings,
                    FatalError::Service { .. } => gst::ResourceError::Write,
                };
                let lost = self.post_failed_account(&error);
                // AWS's signal: the status is the code of the error that follows.
                self.obj().emit_by_name::<()>(
                    official::STREAM_ERROR,
                    &[&(glib::error::ErrorDomain::code(domain) as u64)],
                );
                gst::element_imp_error!(self, domain, ("{}{}", error, lost));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_at_its_first_attempts_at_a_new_reason_and_once_a_minute() {
        let mut w = ReconnectWarnings::default();
        let down = "cannot reach http://127.0.0.1:1: connection refused";
        assert_eq!(w.take(1, down), Some(0));
        assert_eq!(w.take(2, down), Some(0));
        assert_eq!(w.take(3, down), Some(0));
        assert_eq!(w.take(4, down), None);
        assert_eq!(w.take(5, down), None);
        // The words of a lost connection vary: not another reason.
        assert_eq!(
            w.take(6, "cannot reach PutMedia: connection lost: Broken pipe"),
            None
        );
        assert_eq!(w.take(6, "the service closed the connection"), None);
        // Another reason is told at once, with the attempts not told before it.
        assert_eq!(w.take(6, "throttled by the service"), Some(4));
        assert_eq!(w.take(7, "throttled by the service"), None);
        // A minute after the last warning, the next attempt is told.
        let (_, reason) = w.last.take().unwrap();
        let a_minute_ago = std::time::Instant::now()
            .checked_sub(RECONNECT_WARNING_EVERY)
            .unwrap();
        w.last = Some((a_minute_ago, reason));
        assert_eq!(w.take(8, "throttled by the service"), Some(1));
        assert_eq!(w.take(9, "throttled by the service"), None);
    }

    #[test]
    fn drops_through_an_outage_warn_at_first_then_once_a_minute_with_what_was_untold() {
        let mut w = DropWarnings::default();
        assert_eq!(w.take(1, 100), Some((1, 100)));
        assert_eq!(w.take(1, 100), Some((1, 100)));
        assert_eq!(w.take(2, 200), Some((2, 200)));
        assert_eq!(w.take(1, 100), None);
        assert_eq!(w.take(1, 150), None);
        w.last = std::time::Instant::now().checked_sub(RECONNECT_WARNING_EVERY);
        assert_eq!(w.take(1, 50), Some((3, 300)));
        assert_eq!(w.take(1, 50), None);
    }
}
