//! The producer: a Matroska byte stream in, KVS fragments out, free of GStreamer.
//!
//! It owns the decisions between the two halves: the [`Splitter`] cuts the stream at clusters,
//! the producer checks each fragment (key frame first, the service's limits), fixes the
//! producer start time and the media type from the first header, asks for key frames in time
//! for `fragment-duration`, and hands fragments to the [`Uploader`]. Data goes one way: bytes
//! in through [`Producer::push`], [`Notice`]s out for the host (the element turns them into
//! log lines, warnings and upstream events), fragments down to the uploader.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use kvs_format::kvs;

use crate::mkv::{self, MkvError, Splitter, StreamHeader, TrackInfo};
use crate::uploader::{self, EventSink, Summary, Uploader};

/// What the producer needs beyond the uploader's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub uploader: uploader::Config,
    /// Fragments should last about this long: a key frame is asked for in time (ns).
    pub fragment_duration_ns: u64,
    /// For a recording: when its timecode 0 happened, in ms since the epoch
    /// (`file-start-time`).
    pub file_start_ms: Option<u64>,
}

/// The service's pace for one stream: fragments per second and bytes per second.
const MAX_FRAGMENTS_PER_SECOND: usize = 5;
const MAX_BYTES_PER_SECOND: f64 = 12.5e6;

/// Where the producer time of a stream's first fragment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSource {
    /// Live: the first fragment happens now.
    Live,
    /// A recording, started at `file-start-time`.
    FileStartTime,
    /// A recording, started at the Matroska DateUTC its muxer wrote.
    RecordingDate,
    /// A recording of known duration that ends now.
    NowMinusDuration,
    /// A recording of unknown start and duration: it starts now and is sent no faster than
    /// real time, so that no fragment lies in the future.
    NowPaced,
}

impl StartSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StartSource::Live => "live",
            StartSource::FileStartTime => "file-start-time",
            StartSource::RecordingDate => "recording-date",
            StartSource::NowMinusDuration => "now-minus-duration",
            StartSource::NowPaced => "now-paced",
        }
    }
}

impl fmt::Display for StartSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartSource::Live => "now (live source)",
            StartSource::FileStartTime => "file-start-time",
            StartSource::RecordingDate => "the recording's own date (Matroska DateUTC)",
            StartSource::NowMinusDuration => {
                "now minus the recording's duration (the file has no date; set file-start-time \
                 to keep its real time)"
            }
            StartSource::NowPaced => {
                "now, sending no faster than real time (the file has neither a date nor a \
                 duration; set file-start-time to keep its real time and upload at full speed)"
            }
        })
    }
}

/// Something the host should know about the stream; see each variant for what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A stream header was read (debug log). The host may now tell the encoder's latency
    /// ([`Producer::set_upstream_latency`]).
    Header {
        size: usize,
        doc_type: String,
        tracks: Vec<TrackInfo>,
    },
    /// The stream is accepted but not every player can play it (a warning).
    Playback(String),
    /// A fragment began (debug log).
    FragmentStarted { timecode: u64 },
    /// A fragment ended (debug log).
    FragmentEnded {
        timecode: u64,
        size: u64,
        blocks: u64,
    },
    /// A fragment reached the service's limits and was ended there (a warning).
    FragmentCut {
        timecode: u64,
        span_ms: u64,
        size: u64,
    },
    /// The input broke off inside a frame: the fragment ends before it (a warning).
    BrokeOff { timecode: u64, not_sent: u64 },
    /// Top-level elements between clusters were skipped (debug log).
    Skipped { bytes: usize },
    /// The producer time of the stream's first fragment was fixed (a message for the user).
    StartTime {
        producer_start_ms: u64,
        source: StartSource,
    },
    /// The open fragment nears `fragment-duration`: ask upstream for a key frame now.
    KeyUnitDue { duration_ns: u64, lead_ns: u64 },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Header {
                size,
                doc_type,
                tracks,
            } => write!(
                f,
                "stream header: {size} bytes, doc type {doc_type}, tracks {tracks:?}"
            ),
            Notice::Playback(problem) => f.write_str(problem),
            Notice::FragmentStarted { timecode } => write!(f, "fragment {timecode} starts"),
            Notice::FragmentEnded {
                timecode,
                size,
                blocks,
            } => write!(f, "fragment {timecode} ends: {size} bytes, {blocks} blocks"),
            Notice::FragmentCut {
                timecode,
                span_ms,
                size,
            } => write!(
                f,
                "the fragment at timecode {timecode} reached the service's limits (10 s, 50 MB) \
                 at {span_ms} ms and {size} bytes: it was ended there so the service keeps it, \
                 and its frames until the next key frame are not sent. Make the encoder emit key \
                 frames more often (x264enc key-int-max, e.g. 2 s of frames)"
            ),
            Notice::BrokeOff { timecode, not_sent } => write!(
                f,
                "the stream broke off inside a frame of fragment {timecode}: its last \
                 {not_sent} bytes were not sent; the whole frames before them were"
            ),
            Notice::StartTime {
                producer_start_ms,
                source,
            } => write!(
                f,
                "producer timestamps start at {producer_start_ms} ms since the epoch, from \
                 {source}"
            ),
            Notice::Skipped { bytes } => write!(
                f,
                "skipping {bytes} bytes of top-level elements between clusters"
            ),
            Notice::KeyUnitDue {
                duration_ns,
                lead_ns,
            } => write!(
                f,
                "fragment at {duration_ns} ns: requesting a key unit ({lead_ns} ns ahead for the \
                 encoder)"
            ),
        }
    }
}

/// Input the producer cannot take. What came before it is kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InputError {
    #[error(
        "the cluster at timecode {timecode} does not start with a key frame; Kinesis Video \
         Streams needs every fragment to start with one. Do not set matroskamux \
         max-cluster-duration below the encoder's key frame interval"
    )]
    NoKeyFrame { timecode: u64 },
    /// Not Matroska, or Matroska that breaks off or goes back in time.
    #[error(transparent)]
    Matroska(#[from] MkvError),
    /// Input after one of the above: the stream already ended there.
    #[error("the input already failed; nothing after it is taken")]
    AlreadyFailed,
}

/// The splitter and the uploader of one stream.
pub struct Producer {
    splitter: Splitter,
    uploader: Arc<Uploader>,
    /// Header waiting for its first fragment, which fixes the producer start time.
    pending_header: Option<StreamHeader>,
    timecode_scale: u64,
    /// Configured media type; derived from each header's tracks when `None`.
    media_type: Option<String>,
    fragment_duration_ns: u64,
    /// When a key unit was asked for the open fragment: its duration then (ns).
    key_unit_requested_at: Option<u64>,
    /// How long before `fragment-duration` to ask for a key unit: the encoder's delay in
    /// answering, measured on the last requested fragment (first from upstream's latency).
    key_unit_lead_ns: u64,
    /// Invalid input ended the stream.
    input_failed: bool,
    /// A recording rather than a live source: its own time, sent at the service's pace,
    /// nothing dropped.
    offline: bool,
    file_start_ms: Option<u64>,
    /// Producer time (ms since the epoch) of timecode 0 in the current header's stream.
    producer_start_ms: u64,
    /// Send no fragment before its producer time (a recording of unknown start).
    real_time: bool,
    /// When the last fragments began (offline pacing).
    recent_starts: std::collections::VecDeque<Instant>,
    /// Bytes sent since `paced_since` (offline pacing).
    paced_bytes: u64,
    paced_since: Option<Instant>,
    events: Vec<mkv::Event>,
}

impl Producer {
    /// Starts the uploader on `runtime` (it never blocks on the network).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: Config,
        credentials: SharedCredentialsProvider,
        events: EventSink,
    ) -> Producer {
        let media_type = config.uploader.media_type.clone();
        let uploader = Arc::new(Uploader::start(
            runtime,
            config.uploader,
            credentials,
            events,
        ));
        Producer {
            splitter: Splitter::new(mkv::Limits {
                max_fragment_span_ns: kvs::MAX_FRAGMENT_DURATION.as_nanos() as u64,
                max_fragment_bytes: kvs::MAX_FRAGMENT_SIZE,
                ..mkv::Limits::default()
            }),
            uploader,
            pending_header: None,
            timecode_scale: 1_000_000,
            media_type,
            fragment_duration_ns: config.fragment_duration_ns,
            key_unit_requested_at: None,
            key_unit_lead_ns: 0,
            input_failed: false,
            offline: false,
            file_start_ms: config.file_start_ms,
            producer_start_ms: 0,
            real_time: false,
            recent_starts: std::collections::VecDeque::new(),
            paced_bytes: 0,
            paced_since: None,
            events: Vec::with_capacity(8),
        }
    }

    /// A recording (not live): producer timestamps from the recording's own time, sent as
    /// fast as the service allows, nothing ever dropped (upstream waits instead). Set before
    /// the first bytes.
    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
        self.uploader.set_keep_everything(offline);
    }

    /// The producer time of timecode 0 for a new header, and where it came from.
    fn start_time(&self, header: &StreamHeader, first_start_ns: u64) -> (u64, StartSource) {
        let now = uploader::now_ms();
        let first_ms = first_start_ns / 1_000_000;
        if !self.offline {
            return (now.saturating_sub(first_ms), StartSource::Live);
        }
        if let Some(ms) = self.file_start_ms {
            (ms, StartSource::FileStartTime)
        } else if let Some(ms) = header.date_utc_ms.filter(|&ms| ms <= now) {
            (ms, StartSource::RecordingDate)
        } else if let Some(ns) = header.duration_ns {
            (
                now.saturating_sub(ns / 1_000_000),
                StartSource::NowMinusDuration,
            )
        } else {
            (now.saturating_sub(first_ms), StartSource::NowPaced)
        }
    }

    /// Offline: waits before a fragment that would break the service's rules (more than 5
    /// fragments a second, or a producer time in the future).
    fn pace_fragment(&mut self, start_ns: u64) {
        if !self.offline {
            return;
        }
        if self.recent_starts.len() == MAX_FRAGMENTS_PER_SECOND
            && let Some(oldest) = self.recent_starts.pop_front()
        {
            let since = oldest.elapsed();
            if since < Duration::from_secs(1) {
                self.uploader.hold(Duration::from_secs(1) - since);
            }
        }
        self.recent_starts.push_back(Instant::now());
        let at = self.producer_start_ms.saturating_add(start_ns / 1_000_000);
        let now = uploader::now_ms();
        if at > now && (self.real_time || at - now < 3_600_000) {
            // A fragment from the future would be refused; an hour or more ahead is a wrong
            // file-start-time, which the service's answer will name.
            self.uploader.hold(Duration::from_millis(at - now));
        }
    }

    /// Offline: holds upstream to the service's data rate.
    fn pace_bytes(&mut self, len: usize) {
        if !self.offline {
            return;
        }
        let since = *self.paced_since.get_or_insert_with(Instant::now);
        self.paced_bytes += len as u64;
        let due = Duration::from_secs_f64(self.paced_bytes as f64 / MAX_BYTES_PER_SECOND);
        let elapsed = since.elapsed();
        if due > elapsed {
            self.uploader.hold(due - elapsed);
        } else if elapsed - due > Duration::from_secs(1) {
            // Slower than the limit (waiting for the service): no burst credit.
            self.paced_since = Some(Instant::now());
            self.paced_bytes = 0;
        }
    }

    /// The uploader, for what the host does from other threads (flushing, stats).
    pub fn uploader(&self) -> &Arc<Uploader> {
        &self.uploader
    }

    /// Upstream's latency (ns): a key frame is asked for that much before it is due, until
    /// the encoder's real delay has been measured.
    pub fn set_upstream_latency(&mut self, latency_ns: u64) {
        self.key_unit_lead_ns = latency_ns.min(self.fragment_duration_ns / 2);
    }

    /// Invalid input ended the stream (the error was returned by [`Producer::push`]).
    pub fn input_failed(&self) -> bool {
        self.input_failed
    }

    /// Takes the next bytes of the Matroska stream. On invalid input, every complete
    /// fragment and the whole frames of the open one are kept and sent; nothing after.
    pub fn push(&mut self, data: Bytes, notices: &mut Vec<Notice>) -> Result<(), InputError> {
        if self.input_failed {
            return Err(InputError::AlreadyFailed);
        }
        let mut events = std::mem::take(&mut self.events);
        let result = self.splitter.push(data, &mut events);
        let handled = self.apply(&mut events, notices);
        self.events = events;
        if let Err(e) = handled {
            // A fragment the service would refuse (no key frame first): the stream ends
            // before it; everything complete is sent.
            self.uploader.finish();
            self.input_failed = true;
            return Err(e);
        }
        if let Err(e) = result {
            self.end_before_bad_input();
            self.input_failed = true;
            return Err(e.into());
        }
        self.key_unit_when_due(notices);
        Ok(())
    }

    /// No more input: the last fragment is closed. `Ok(Some(e))` when the input broke off
    /// inside an element (its whole part is kept).
    pub fn end_input(&mut self, notices: &mut Vec<Notice>) -> Result<Option<MkvError>, InputError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.splitter.finish(&mut events);
        let handled = self.apply(&mut events, notices);
        self.events = events;
        handled?;
        Ok(result.err())
    }

    /// Ends the upload and waits, up to `timeout`, for the service to persist everything;
    /// then accounts for every fragment produced.
    pub fn finish(&self, timeout: Duration) -> Summary {
        self.uploader.finish_and_account(timeout)
    }

    fn apply(
        &mut self,
        events: &mut Vec<mkv::Event>,
        notices: &mut Vec<Notice>,
    ) -> Result<(), InputError> {
        for event in events.drain(..) {
            match event {
                mkv::Event::Header(header) => {
                    notices.push(Notice::Header {
                        size: header.bytes.len(),
                        doc_type: header.doc_type.clone(),
                        tracks: header.tracks.clone(),
                    });
                    notices.extend(
                        crate::playback::problems(&header.tracks)
                            .into_iter()
                            .map(Notice::Playback),
                    );
                    self.timecode_scale = header.timecode_scale;
                    self.pending_header = Some(header);
                }
                mkv::Event::FragmentStart(start) => {
                    if !start.key_frame {
                        return Err(InputError::NoKeyFrame {
                            timecode: start.timecode,
                        });
                    }
                    let start_ns = self.ns(start.timecode as i64);
                    if let Some(header) = self.pending_header.take() {
                        let (producer_start_ms, source) = self.start_time(&header, start_ns);
                        self.producer_start_ms = producer_start_ms;
                        self.real_time = source == StartSource::NowPaced;
                        notices.push(Notice::StartTime {
                            producer_start_ms,
                            source,
                        });
                        let media_type = self.media_type.clone().unwrap_or_else(|| {
                            let ids: Vec<&str> =
                                header.tracks.iter().map(|t| t.codec_id.as_str()).collect();
                            uploader::media_type_for(&ids)
                        });
                        self.uploader
                            .push_header(header.bytes, producer_start_ms, media_type);
                    }
                    notices.push(Notice::FragmentStarted {
                        timecode: start.timecode,
                    });
                    self.pace_fragment(start_ns);
                    self.uploader.begin_fragment(start.timecode, start_ns, 0);
                }
                mkv::Event::FragmentData(bytes) => {
                    self.pace_bytes(bytes.len());
                    self.uploader.append(bytes)
                }
                mkv::Event::FragmentCut(summary) => {
                    let span = (summary.last_block_time - summary.first_block_time).max(0);
                    self.uploader
                        .cut_fragment(summary.whole_size, self.ns(summary.last_block_time));
                    notices.push(Notice::FragmentCut {
                        timecode: summary.timecode,
                        span_ms: self.ns(span) / 1_000_000,
                        size: summary.whole_size,
                    });
                }
                mkv::Event::FragmentEnd(summary) => {
                    let end_ns = self.ns(summary.last_block_time);
                    if let Some(at) = self.key_unit_requested_at.take() {
                        // The encoder answered this much later than asked: ask that much
                        // earlier next time (at most half a fragment early).
                        let duration = self.ns(summary.last_block_time - summary.timecode as i64);
                        self.key_unit_lead_ns = duration
                            .saturating_sub(at)
                            .min(self.fragment_duration_ns / 2);
                    }
                    notices.push(Notice::FragmentEnded {
                        timecode: summary.timecode,
                        size: summary.size,
                        blocks: summary.blocks,
                    });
                    if summary.cut_bytes > 0 {
                        self.uploader.count_cut_bytes(summary.cut_bytes);
                    }
                    if summary.whole_size < summary.size {
                        let not_sent = self.uploader.end_fragment_at(summary.whole_size, end_ns);
                        notices.push(Notice::BrokeOff {
                            timecode: summary.timecode,
                            not_sent,
                        });
                    } else {
                        self.uploader.end_fragment(end_ns);
                    }
                }
                mkv::Event::Interstitial(bytes) => {
                    notices.push(Notice::Skipped { bytes: bytes.len() })
                }
            }
        }
        Ok(())
    }

    /// Raw Matroska time units to nanoseconds (negative times count as 0).
    fn ns(&self, units: i64) -> u64 {
        (units.max(0) as u64).saturating_mul(self.timecode_scale)
    }

    /// Asks for a key frame when the open fragment nears `fragment-duration`, early by the
    /// encoder's delay. (A fragment that grows past the service's limits anyway is cut by
    /// the splitter: `FragmentCut`.)
    fn key_unit_when_due(&mut self, notices: &mut Vec<Notice>) {
        let Some(current) = self.splitter.current_fragment() else {
            return;
        };
        let duration_ns = self.ns(current.last_block_time - current.timecode as i64);
        let ask_at = self
            .fragment_duration_ns
            .saturating_sub(self.key_unit_lead_ns);
        if duration_ns >= ask_at && self.key_unit_requested_at.is_none() {
            self.key_unit_requested_at = Some(duration_ns);
            notices.push(Notice::KeyUnitDue {
                duration_ns,
                lead_ns: self.key_unit_lead_ns,
            });
        }
    }

    /// Input that is not valid Matroska ends the stream, but what came before it is kept:
    /// the open fragment ends at its last whole element and everything complete is sent.
    fn end_before_bad_input(&mut self) {
        if let (Some(whole), Some(current)) =
            (self.splitter.whole_size(), self.splitter.current_fragment())
        {
            let end_ns = self.ns(current.last_block_time);
            self.uploader.end_fragment_at(whole, end_ns);
        }
        self.uploader.finish();
    }
}
