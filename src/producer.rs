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

/// A stream this far ahead of the wall clock is read from a file, not watched live: its bytes
/// go out in batches (fewer wake-ups of the connection, fewer writes).
const AHEAD: Duration = Duration::from_secs(1);

/// What the producer needs beyond the uploader's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub uploader: uploader::Config,
    /// Fragments should last about this long: a key frame is asked for in time (ns).
    pub fragment_duration_ns: u64,
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
    /// Wall clock and block time (raw units) of the first block.
    pace_origin: Option<(Instant, i64)>,
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
            pace_origin: None,
            events: Vec::with_capacity(8),
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

    /// Whether upstream is live: a file upload (not live) is held once a few fragments wait
    /// to be sent, so it does not fill the store.
    pub fn set_live(&self, live: bool) {
        self.uploader.set_live(live);
    }

    /// Invalid input ended the stream (the error was returned by [`Producer::push`]).
    pub fn input_failed(&self) -> bool {
        self.input_failed
    }

    /// Takes the next bytes of the Matroska stream. On invalid input, every complete
    /// fragment and the whole frames of the open one are kept and sent; nothing after.
    pub fn push(&mut self, data: Bytes, notices: &mut Vec<Notice>) -> Result<(), InputError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.splitter.push(data, &mut events);
        // matroskamux pushes a block's header and its frame as two buffers: the connection
        // is woken once the element is whole, so both go out in one write.
        let whole = self.splitter.at_element_boundary();
        let handled = self.apply_then_wake(&mut events, notices, whole);
        self.events = events;
        handled?;
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
        let handled = self.apply_then_wake(&mut events, notices, true);
        self.events = events;
        handled?;
        Ok(result.err())
    }

    /// Ends the upload and waits, up to `timeout`, for the service to persist everything;
    /// then accounts for every fragment produced.
    pub fn finish(&self, timeout: Duration) -> Summary {
        self.uploader.finish_and_account(timeout)
    }

    /// Applies the events, then wakes the connection for the bytes appended (when `whole`,
    /// or once enough of them wait).
    fn apply_then_wake(
        &mut self,
        events: &mut Vec<mkv::Event>,
        notices: &mut Vec<Notice>,
        whole: bool,
    ) -> Result<(), InputError> {
        let result = self.apply(events, notices);
        let batch = self.ahead_of_real_time();
        self.uploader.wake(whole, batch);
        result
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
                        let producer_start_ms =
                            uploader::now_ms().saturating_sub(start_ns / 1_000_000);
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
                    self.uploader.begin_fragment(start.timecode, start_ns, 0);
                }
                mkv::Event::FragmentData(bytes) => self.uploader.append(bytes),
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

    /// Whether the stream runs more than [`AHEAD`] ahead of the wall clock since its first
    /// block: a file read as fast as it goes, whose bytes can go out in batches.
    fn ahead_of_real_time(&mut self) -> bool {
        let Some(current) = self.splitter.current_fragment() else {
            return false;
        };
        let media = current.last_block_time;
        let now = Instant::now();
        let (wall0, media0) = *self.pace_origin.get_or_insert((now, media));
        let media_ns = self.ns(media - media0);
        media_ns > now.duration_since(wall0).as_nanos() as u64 + AHEAD.as_nanos() as u64
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
