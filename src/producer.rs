//! The producer: a Matroska byte stream in, KVS fragments out, free of GStreamer.
//!
//! It owns the decisions between the two halves: the [`Splitter`] cuts the stream at clusters,
//! the producer checks each fragment (key frame first, the service's limits), fixes the
//! producer start time and the media type from the first header, asks for key frames in time
//! for `fragment-duration`, and hands fragments to the [`Uploader`]. Data goes one way: bytes
//! in through [`Producer::push`], [`Notice`]s out for the host (the element turns them into
//! log lines, warnings and upstream events), fragments down to the uploader. Fragment
//! metadata comes in through [`Producer::add_metadata`] and goes out after its fragment's
//! cluster ([`crate::metadata`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use kvs_format::kvs;

use crate::ack::{Ack, AckEventType, ErrorClass, classify};
use crate::metadata::{Added, FragmentMetadata, MetadataError, Snapshot};
use crate::mkv::{self, MkvError, Splitter, StreamHeader, TrackInfo};
use crate::spool::{Spool, SpoolDropped, SpooledFragment, SpooledHeader};
use crate::store::AckLevel;
use crate::uploader::{self, EventSink, Summary, Uploader};

/// A stream this far ahead of the wall clock is read from a file, not watched live: its bytes
/// go out in batches (fewer wake-ups of the connection, fewer writes).
const AHEAD: Duration = Duration::from_secs(1);
/// Offline, a fragment whose frames come this far ahead of the wall clock since it began was
/// released at once (held until its producer time): its bytes go out in batches too.
const FRAGMENT_AHEAD: Duration = Duration::from_millis(200);

/// What the producer needs beyond the uploader's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub uploader: uploader::Config,
    /// Fragments should last about this long: a key frame is asked for in time (ns).
    pub fragment_duration_ns: u64,
    /// For a recording: when its timecode 0 happened, in ms since the epoch
    /// (`file-start-time`).
    pub file_start_ms: Option<u64>,
    /// Keep fragments on disk here until acknowledged (`spool-dir`), up to this many bytes.
    pub spool: Option<(std::path::PathBuf, u64)>,
}

/// The service's pace for one stream: fragments per second and bytes per second.
pub const MAX_FRAGMENTS_PER_SECOND: usize = 5;
pub const MAX_BYTES_PER_SECOND: f64 = 12.5e6;
/// Offline pacing holds upstream once it is this far ahead of its data rate, and then for
/// all of it (a hold for each buffer's share cost a sleep and a wake-up per frame); an upload
/// further behind than this gets no credit for it.
const PACE_SLACK: Duration = Duration::from_millis(25);
/// A live stream's first fragment after a pause starts a new session when it would otherwise
/// be dated this much (ms) earlier than it happens: shorter pauses keep the session.
const RESUME_LAG_MS: u64 = 1_000;
/// A live fragment dated this far (ms) ahead of the clock is told: its input's timestamps
/// jumped, or the pipeline's clock runs fast.
const LIVE_OFF_AHEAD_TOLD_MS: u64 = 5_000;
/// Live input's running times date its frames by the pipeline's clock when the first
/// fragment is at most this far (ms) behind the clock (the encoder's and the muxer's
/// latency)...
const LIVE_EPOCH_BEHIND_MS: u64 = 60_000;
/// ... and at most this far ahead of it. Other timecodes are not this pipeline's running
/// times (a stream muxed elsewhere): the first fragment is dated now.
const LIVE_EPOCH_AHEAD_MS: u64 = 1_000;

/// A live stream follows this machine's clock when it is set (stepped) by this much (ms) or
/// more while streaming; NTP's gradual corrections move both clocks alike.
const CLOCK_STEP_MS: u64 = 2_000;
/// 2000-01-01T00:00:00Z in ms since the epoch: a stream dated before it has wrong times.
const YEAR_2000_MS: u64 = 946_684_800_000;
/// A fragment held this far (or more) ahead of the clock for its producer time is told.
const HELD_AHEAD_TOLD_MS: u64 = 5_000;

/// The data rate an offline upload is paced to. Kept within `PACE_SLACK` of its line either
/// way, no second carries more than this rate over 1.05 s: the service's limit.
const PACED_BYTES_PER_SECOND: f64 = MAX_BYTES_PER_SECOND / 1.05;

/// Where the producer time of a stream's first fragment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSource {
    /// Live: the first fragment happens now.
    Live,
    /// A recording, started at `file-start-time`.
    FileStartTime,
    /// A recording, started at the Matroska DateUTC its muxer wrote.
    RecordingDate,
    /// The buffers' timestamps are epoch times (`use-original-pts`, as AWS's element takes
    /// them).
    OriginalPts,
    /// A recording whose first buffer carries a reference timestamp meta with its epoch
    /// (`timestamp/x-unix`) or NTP (`timestamp/x-ntp`) time.
    ReferenceTimestamp,
    /// A recording, started at the date upstream tells in its `datetime` tag (qtdemux takes
    /// an MP4's creation time, matroskademux a Matroska DateUTC).
    DatetimeTag,
    /// A recording of known duration that ends now.
    NowMinusDuration,
    /// A recording of unknown start and duration: it starts now and is sent no faster than
    /// real time, so that no fragment lies in the future.
    NowPaced,
    /// Live, playing again after a pause: running time stood still while the clock did not,
    /// so the first fragment after the pause happens now (a new session).
    Resumed,
    /// Live: this machine's clock was set forward while streaming (NTP setting a clock that
    /// was behind, or a suspend): the fragments from then on are dated by it (a new session).
    ClockStepped,
}

impl StartSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StartSource::Live => "live",
            StartSource::FileStartTime => "file-start-time",
            StartSource::RecordingDate => "recording-date",
            StartSource::OriginalPts => "original-pts",
            StartSource::ReferenceTimestamp => "reference-timestamp",
            StartSource::DatetimeTag => "datetime-tag",
            StartSource::NowMinusDuration => "now-minus-duration",
            StartSource::NowPaced => "now-paced",
            StartSource::Resumed => "resumed",
            StartSource::ClockStepped => "clock-stepped",
        }
    }
}

impl fmt::Display for StartSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartSource::Live => "the clock (live source)",
            StartSource::FileStartTime => "file-start-time",
            StartSource::RecordingDate => "the recording's own date (Matroska DateUTC)",
            StartSource::OriginalPts => "the buffers' timestamps, epoch times (use-original-pts)",
            StartSource::ReferenceTimestamp => {
                "the first buffer's reference timestamp (its epoch or NTP time)"
            }
            StartSource::DatetimeTag => {
                "the recording's own date, from upstream's datetime tag (an MP4's creation \
                 time, a Matroska DateUTC)"
            }
            StartSource::NowMinusDuration => {
                "now minus the recording's duration (the stream carries no recording date, or \
                 only the date it was muxed again in this pipeline; set file-start-time to keep \
                 its real time)"
            }
            StartSource::NowPaced => {
                "now, sending no faster than real time (the input is not live and has \
                 neither a date nor a duration: a file without them, or frames from an appsrc \
                 without is-live=true; set file-start-time to keep a recording's real time and \
                 upload it at full speed)"
            }
            StartSource::Resumed => {
                "the clock, as the pipeline plays again after a pause (the fragments after it \
                 keep their real time, not the running time that stood still)"
            }
            StartSource::ClockStepped => {
                "this machine's clock, set forward while streaming (the fragments from now on \
                 are dated by it)"
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
        /// Tracks renumbered for playback (video 1, audio 2): (number in the input, sent).
        renumbered: Vec<(u64, u64)>,
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
    /// Upstream's time went back: the fragments from `timecode` on are sent `shift_ms`
    /// later than their timestamps, after the last frame sent (a warning).
    TimeWentBack { timecode: u64, shift_ms: u64 },
    /// Top-level elements between clusters were skipped (debug log).
    Skipped { bytes: usize },
    /// The spool held fragments of an earlier run that the service never acknowledged: they
    /// are sent first (info; a warning when a torn last record was cut off).
    SpoolRecovered {
        fragments: u64,
        bytes: u64,
        torn_bytes: u64,
        damaged_bytes: u64,
    },
    /// The spool (or its disk) was full: its oldest fragments that the uploader did not
    /// hold were dropped (a warning).
    SpoolDropped {
        fragments: u64,
        bytes: u64,
        disk_full: bool,
    },
    /// The spool cannot be opened or written (a warning): memory only from now on.
    SpoolFailed(String),
    /// A fragment could not be written to the spool (a warning, told again only when the
    /// error changes): sent from memory, or `lost` when older fragments wait on disk.
    SpoolWriteFailed { error: String, lost: bool },
    /// A spooled fragment could not be read back: it is lost (a warning).
    SpoolReadFailed(String),
    /// `spool-size` is more than the disk had free when the spool opened (a warning).
    SpoolDiskSmall { free: u64, size: u64 },
    /// The streaming thread waited `ms` (at least [`SLOW_SPOOL_WRITE`]) for a fragment's
    /// write to the spool, still under way when the next one ended (a warning, once a run,
    /// when upstream is live and has no queue to wait in).
    SpoolSlow { ms: u64 },
    /// Other users can change the spool's directory (a warning, once at the start).
    SpoolExposed(String),
    /// The producer time of the stream's first fragment was fixed (a message for the user):
    /// `producer_start_ms` is timecode 0's, `first_ms` the first fragment's.
    StartTime {
        producer_start_ms: u64,
        first_ms: u64,
        source: StartSource,
    },
    /// The open fragment nears `fragment-duration`: ask upstream for a key frame now.
    KeyUnitDue { duration_ns: u64, lead_ns: u64 },
    /// This machine's clock was set this far (ms, negative: back) while a live stream ran
    /// (a warning). Forward, the stream follows it (a new start follows); back, it keeps its
    /// times, so that no fragment is dated before one already sent.
    /// A live fragment is dated this far (ms) ahead of the clock (positive) or behind it: the
    /// input's timestamps jumped, or its clock runs at another rate (a warning).
    LiveOffClock { off_ms: i64 },
    ClockStepped {
        step_ms: i64,
        /// A forward step that took this machine's clock this far (ms) ahead of the
        /// service's (measured from its answers): not followed.
        away_ms: Option<u64>,
    },
    /// The first fragment of a stream is dated before 2000: its times are likely wrong (a
    /// warning).
    DatedTooEarly { first_ms: u64, source: StartSource },
    /// The stream's first cluster with video does not start with a key frame (matroskamux
    /// started inside a group of pictures, e.g. on a branch added to a running pipeline):
    /// clusters are skipped until one does (info; a key unit is requested).
    SkippingToKeyFrame { timecode: u64 },
    /// What was skipped before the stream's first key frame (see
    /// [`Notice::SkippingToKeyFrame`]), or only audio that came before the video (a
    /// warning): `frames` blocks of any track over `ms`; `key_frame` is the timecode of the
    /// cluster that begins with one, if one came.
    SkippedAtStart {
        frames: u64,
        ms: u64,
        video: bool,
        key_frame: Option<u64>,
    },
    /// A cluster after the stream's first does not start with a key frame (the rest of a
    /// group of pictures longer than the service's 10 s, after a fragment cut there; or
    /// matroskamux clusters shorter than the encoder's key frame interval): it is skipped
    /// whole, as are the next ones until one does (debug log; a key unit is requested).
    /// [`Notice::SkippedToKeyFrame`] follows when they end.
    SkippingMidStream { timecode: u64 },
    /// Clusters skipped mid-stream (see [`Notice::SkippingMidStream`]) until a key frame
    /// began one again, or the stream ended (a warning). The account counts them.
    SkippedToKeyFrame {
        timecode: u64,
        clusters: u64,
        frames: u64,
        ms: u64,
        bytes: u64,
        /// They followed a fragment cut at the service's limits.
        after_cut: bool,
        /// Where the key frame that ended the run is (timecode), if one did.
        key_frame: Option<u64>,
    },
    /// A fragment ended without a whole frame (a stop while it was held for its time, or a
    /// cluster without blocks): the service refuses such a fragment, so it is not sent, nor
    /// counted (debug log).
    FragmentWithoutFrames { timecode: u64 },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Header {
                size,
                doc_type,
                tracks,
                renumbered,
            } => {
                write!(
                    f,
                    "stream header: {size} bytes, doc type {doc_type}, tracks {tracks:?}"
                )?;
                for (from, to) in renumbered {
                    write!(f, "; track {from} is sent as track {to}")?;
                }
                if !renumbered.is_empty() {
                    f.write_str(" (the service's playback needs video as track 1, audio as 2)")?;
                }
                Ok(())
            }
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
            } if *span_ms < kvs::MAX_FRAGMENT_DURATION.as_millis() as u64 * 9 / 10
                && *size < kvs::MAX_FRAGMENT_SIZE * 9 / 10 =>
            {
                write!(
                    f,
                    "the fragment at timecode {timecode} ({span_ms} ms, {size} bytes so far) was \
                 ended where the frames' time jumped past the service's 10 s for a fragment (a \
                 source that stalled, or frames lost upstream): its frames until the next video \
                 key frame are not sent"
                )
            }
            Notice::FragmentCut {
                timecode,
                span_ms,
                size,
            } => write!(
                f,
                "the fragment at timecode {timecode} reached the service's limits (10 s, 50 MB) \
                 at {span_ms} ms and {size} bytes: it was ended there so the service keeps it, \
                 and its frames until the next video key frame are not sent. Make the encoder \
                 emit key frames more often (x264enc key-int-max, e.g. 2 s of frames); with \
                 audio, video that stops while audio goes on does the same"
            ),
            Notice::BrokeOff { timecode, not_sent } => write!(
                f,
                "the stream broke off inside a frame of fragment {timecode}: its last \
                 {not_sent} bytes were not sent; the whole frames before them were"
            ),
            Notice::TimeWentBack { timecode, shift_ms } => write!(
                f,
                "upstream timestamps went back (a restarted source, or timestamps not from the \
                 pipeline's clock?): Kinesis Video Streams needs increasing times, so from \
                 timecode {timecode} on the frames are sent {}.{:03} s later than their \
                 timestamps, right after the last frame sent; none is dropped",
                shift_ms / 1000,
                shift_ms % 1000
            ),
            Notice::SpoolRecovered {
                fragments,
                bytes,
                torn_bytes,
                damaged_bytes,
            } => {
                let (what, they) = match fragments {
                    1 => ("1 fragment".to_owned(), "it is"),
                    n => (format!("{n} fragments"), "they are"),
                };
                write!(
                    f,
                    "the spool holds {what} ({bytes} bytes) of an earlier run that the service \
                     never acknowledged: {they} sent first, with {} own time (the summary \
                     counts {} among the fragments produced)",
                    if *fragments == 1 { "its" } else { "their" },
                    if *fragments == 1 { "it" } else { "them" }
                )?;
                if *torn_bytes > 0 {
                    write!(
                        f,
                        "; the last {torn_bytes} bytes were a fragment cut short by a crash and \
                         were discarded"
                    )?;
                }
                if *damaged_bytes > 0 {
                    write!(
                        f,
                        "; {damaged_bytes} bytes of it were damaged on disk and skipped: what \
                         they held is lost"
                    )?;
                }
                Ok(())
            }
            Notice::SpoolDropped {
                fragments,
                bytes,
                disk_full,
            } => write!(
                f,
                "{}: dropped its {fragments} oldest fragments ({bytes} bytes) that the \
                 service had not acknowledged",
                if *disk_full {
                    "the spool's disk is full"
                } else {
                    "the spool is full (spool-size)"
                }
            ),
            Notice::SpoolWriteFailed { error, lost } => write!(
                f,
                "cannot write a fragment to the spool (spool-dir): {error}; {} (told again \
                 when this changes)",
                if *lost {
                    "it is lost: older fragments wait on disk, and it cannot be sent before them"
                } else {
                    "it is sent from memory, without a copy on disk"
                }
            ),
            Notice::SpoolReadFailed(e) => write!(
                f,
                "cannot read a fragment back from the spool (spool-dir): {e}; it is lost"
            ),
            Notice::SpoolExposed(why) => f.write_str(why),
            Notice::SpoolSlow { ms } => write!(
                f,
                "the spool's disk (spool-dir) is slower than the stream: a fragment was not \
                 written yet when the next one ended, and the streaming thread, which is \
                 upstream's, waited {ms} ms for it; a live source (a camera) may drop frames \
                 meanwhile. Use a faster disk, or put a queue before kvssink to ride out slow \
                 moments (queue max-size-time=3000000000 max-size-bytes=0 max-size-buffers=0)"
            ),
            Notice::SpoolDiskSmall { free, size } => write!(
                f,
                "spool-size is {} MB but the disk of spool-dir had {} MB free: once it is full, \
                 the spool's oldest fragments are dropped",
                size >> 20,
                free >> 20
            ),
            Notice::SpoolFailed(e) => write!(
                f,
                "cannot write the spool (spool-dir): {e}; fragments are kept in memory only"
            ),
            Notice::StartTime {
                producer_start_ms,
                first_ms,
                source,
            } => write!(
                f,
                "the first fragment is dated {} ({first_ms} ms since the epoch; timecode 0 at \
                 {producer_start_ms} ms), from {source}",
                iso8601_ms(*first_ms)
            ),
            Notice::LiveOffClock { off_ms } if *off_ms > 0 => write!(
                f,
                "a live fragment is dated {:.1} s ahead of this machine's clock: the input's \
                 timestamps jumped forward, or the pipeline's clock runs faster than this \
                 machine's. Its fragments keep that date (none may be dated before one \
                 already sent); start the stream again to date it by the clock",
                *off_ms as f64 / 1000.0
            ),
            Notice::LiveOffClock { off_ms } => write!(
                f,
                "a live fragment is dated {:.1} s behind this machine's clock: the input's \
                 timestamps jumped back, the pipeline's clock runs slower than this machine's, \
                 or the input reaches kvssink that late",
                off_ms.unsigned_abs() as f64 / 1000.0
            ),
            Notice::ClockStepped {
                step_ms,
                away_ms: Some(away),
            } => write!(
                f,
                "this machine's clock was set {:.1} s forward while streaming, to {:.1} s \
                 ahead of the service's clock (as its answers tell it): the step is not \
                 followed, and the fragments keep the times they had. Correct this machine's \
                 clock (NTP)",
                *step_ms as f64 / 1000.0,
                *away as f64 / 1000.0
            ),
            Notice::ClockStepped { step_ms, .. } if *step_ms > 0 => write!(
                f,
                "this machine's clock was set {:.1} s forward while streaming (NTP setting a \
                 clock that was behind, or a suspend): the fragments from now on are dated by \
                 it, in a new session",
                *step_ms as f64 / 1000.0
            ),
            Notice::ClockStepped { step_ms, .. } => write!(
                f,
                "this machine's clock was set {:.1} s back while streaming: the fragments keep \
                 the times they had, that much ahead of the clock now, so that none is dated \
                 before one already sent. Start the stream again to date it by the clock",
                step_ms.unsigned_abs() as f64 / 1000.0
            ),
            Notice::SkippingToKeyFrame { timecode } => write!(
                f,
                "the stream begins inside a group of pictures (its first cluster, at timecode \
                 {timecode}, does not start with a key frame): clusters are skipped until one \
                 does, and a key unit is requested"
            ),
            Notice::SkippedAtStart {
                frames,
                ms,
                video,
                key_frame,
            } => {
                let until = match key_frame {
                    Some(tc) => format!("the stream begins at the key frame at timecode {tc}"),
                    None => "no video key frame came before the end".to_owned(),
                };
                if *video {
                    write!(
                        f,
                        "the stream begins inside a group of pictures: its first {frames} \
                         frames ({ms} ms) came before a video key frame and are not sent, as a Kinesis Video Streams fragment begins with one (they \
                         cannot be decoded without it); {until}"
                    )
                } else {
                    write!(
                        f,
                        "{frames} audio frames ({ms} ms of audio) came before the first video \
                         frame and are not sent: a Kinesis Video Streams fragment begins at a \
                         video key frame; {until}"
                    )
                }
            }
            Notice::SkippingMidStream { timecode } => write!(
                f,
                "the cluster at timecode {timecode} does not start with a key frame: it is \
                 skipped, as are those after it until one does; a key unit is requested"
            ),
            Notice::SkippedToKeyFrame {
                timecode,
                clusters,
                frames,
                ms,
                bytes,
                after_cut,
                key_frame,
            } => {
                write!(
                    f,
                    "{clusters} {} from timecode {timecode} did not start with a key frame, \
                     which Kinesis Video Streams needs every fragment to start with: {} \
                     {frames} frames ({ms} ms, {bytes} bytes) were not sent",
                    if *clusters == 1 {
                        "cluster"
                    } else {
                        "clusters"
                    },
                    if *clusters == 1 { "its" } else { "their" },
                )?;
                match key_frame {
                    Some(tc) => write!(f, "; the stream goes on at the key frame at {tc}")?,
                    None => f.write_str("; no key frame came before the end")?,
                }
                if *after_cut {
                    f.write_str(
                        ". They are the rest of a group of pictures longer than the service's \
                         10 s (matroskamux starts a cluster every 32.7 s however long the group \
                         is): make the encoder emit key frames more often (x264enc \
                         key-int-max, e.g. 2 s of frames)",
                    )
                } else {
                    f.write_str(
                        ". Do not set matroskamux max-cluster-duration below the encoder's key \
                         frame interval, or make key frames more frequent",
                    )
                }
            }
            Notice::FragmentWithoutFrames { timecode } => write!(
                f,
                "fragment {timecode} ended without a whole frame: not sent (the service refuses \
                 a fragment without frames)"
            ),
            Notice::DatedTooEarly { first_ms, source } => write!(
                f,
                "its first fragment is dated {first_ms} ms since the epoch, before the year \
                 2000, from {source}: check those times (a live stream is dated by this \
                 machine's clock; use-original-pts takes the buffers' timestamps as \
                 nanoseconds since the epoch; file-start-time is in seconds)"
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
/// `ms` since the epoch as an ISO 8601 UTC time with milliseconds (`2026-12-04T02:35:00.123Z`).
fn iso8601_ms(ms: u64) -> String {
    let seconds = aws_smithy_types::DateTime::from_secs((ms / 1000) as i64);
    match seconds.fmt(aws_smithy_types::date_time::Format::DateTime) {
        Ok(text) => text.replace('Z', &format!(".{:03}Z", ms % 1000)),
        Err(_) => format!("{ms} ms"),
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InputError {
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
    /// The current stream's header: a new session starts with it when a live pipeline plays
    /// again after a pause.
    last_header: Option<StreamHeader>,
    /// Live and playing again after a pause: the next fragment may start a new session.
    resumed: bool,
    /// At the last resume, by the pipeline's clock: the epoch time (ms) of running time 0,
    /// and the running time (ns) at which the pause began.
    resume_epoch: Option<(u64, u64)>,
    /// Live: this machine's clock and the monotonic clock when the current start was
    /// placed; they part when the clock is set (a step), which the dates then follow.
    wall_anchor: Option<(u64, Instant)>,
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
    /// When this producer started (ms since the epoch): a Matroska date from then on was
    /// written by a muxer in this pipeline, not by the recording's.
    started_ms: u64,
    /// The recording's duration as upstream tells it (a duration query), for a header
    /// without one (a muxer in this pipeline writes none while streaming).
    upstream_duration_ns: Option<u64>,
    /// The recording's date as upstream tells it (a `datetime` tag, ms since the epoch), for
    /// a stream that carries none (kvssink muxes elementary streams itself).
    upstream_date_ms: Option<u64>,
    /// The epoch time (ms) of running time 0 as the buffers tell it, and how.
    buffer_epoch: Option<(u64, StartSource)>,
    /// Offline, after a flushing seek: where in the recording (ms) running time 0 now is.
    seek_position_ms: u64,
    /// Live elementary streams: the epoch time (ms) of running time 0 by the pipeline's
    /// clock, until a pause or a step of the clock makes it stale.
    live_epoch_ms: Option<u64>,
    /// Producer time (ms since the epoch) of timecode 0 in the current header's stream.
    producer_start_ms: u64,
    /// Send no fragment before its producer time (a recording of unknown start).
    real_time: bool,
    /// A fragment was held for its producer time ahead of the clock, and the application told.
    told_held_ahead: bool,
    /// Live: the fragments are dated this far (ms) from the clock, told; untold again once
    /// they are back within half of it.
    told_live_off: bool,
    /// When the last fragments began (offline pacing).
    recent_starts: VecDeque<Instant>,
    /// Bytes sent since `paced_since` (offline pacing).
    paced_bytes: u64,
    paced_since: Option<Instant>,
    spool: Option<SpoolMode>,
    /// The open fragment goes to the uploader as it arrives (always, without a spool).
    passthrough: bool,
    /// Wall clock and block time (raw units) of the first block.
    pace_origin: Option<(Instant, i64)>,
    /// When the open fragment began (after any hold for its producer time).
    fragment_began: Option<Instant>,
    events: Vec<mkv::Event>,
    /// Fragment metadata for the open fragment (or the next one), written when it ends.
    metadata: FragmentMetadata,
    /// The open cluster was cut at the service's limits: its metadata went before the
    /// end-of-fragment tag, and its end writes none.
    metadata_written: bool,
    /// The stream began inside a group of pictures: its clusters are skipped until one
    /// starts with a key frame. Also set while `skip_run` is.
    skipping: bool,
    /// Clusters skipped (not starting with a key frame), until one does.
    skip_run: Option<SkipRun>,
    /// The last fragment was cut at the service's limits.
    last_cut: bool,
    /// The open fragment is held back from the connection until its first frame is whole
    /// ([`Uploader::hold_back_open`]).
    held_back: bool,
}

/// Clusters skipped mid-stream: see [`Notice::SkippedToKeyFrame`].
#[derive(Debug, Clone, Copy)]
struct SkipRun {
    timecode: u64,
    clusters: u64,
    frames: u64,
    bytes: u64,
    last_block_time: i64,
    after_cut: bool,
    /// Before the first key frame of a stream header: nothing of it was sent yet, and what
    /// is skipped could not have been decoded (told, not counted as lost).
    at_start: bool,
    /// A skipped cluster had a block of the video track (else only audio came so far).
    video: bool,
}

/// A wait this long for a fragment's write to the spool (with its fsync) is told
/// ([`Notice::SpoolSlow`]): a camera's driver keeps a few frames, about this long.
pub const SLOW_SPOOL_WRITE: std::time::Duration = std::time::Duration::from_millis(200);

/// The spool's state shared with the ack handler (runtime threads).
struct SpoolShared {
    spool: Spool,
    /// Spooled fragment ids by producer time (ms), oldest first, until acknowledged (two
    /// fragments can have one time: a recording uploaded twice).
    by_time: HashMap<u64, VecDeque<u64>>,
    /// Producer times acknowledged before their fragment was spooled (an idle fragment,
    /// ended by a tag, can be acknowledged before its cluster is complete here).
    early: HashSet<u64>,
    /// The newest time given to `by_time`: an ack for a time not after it is not early
    /// (a PERSISTED after the RECEIVED that released its fragment, with `fragment-acks`
    /// off).
    newest: Option<u64>,
}

impl SpoolShared {
    /// The spooled fragment `f` waits for its ack (or had it already). On the blocking pool:
    /// an early ack writes the fragment's done record.
    fn expect(&mut self, f: &SpooledFragment) {
        let start_ms = self
            .spool
            .header(f.header_id)
            .map_or(0, |h| h.producer_start_ms);
        let t = start_ms.saturating_add(f.timecode);
        self.newest = self.newest.max(Some(t));
        if self.early.remove(&t) {
            let _ = self.spool.mark_done(f.id);
        } else {
            self.by_time.entry(t).or_default().push_back(f.id);
        }
    }

    fn done(&mut self, producer_time_ms: u64) {
        let t = producer_time_ms;
        let id = self.by_time.get_mut(&t).and_then(|ids| ids.pop_front());
        if self.by_time.get(&t).is_some_and(|ids| ids.is_empty()) {
            self.by_time.remove(&t);
        }
        match id {
            Some(id) => {
                // Done either way; a done record that cannot be written means a duplicate
                // after a crash, not a loss.
                let _ = self.spool.mark_done(id);
            }
            None if self.newest.is_none_or(|n| t > n) => {
                self.early.insert(t);
            }
            None => {}
        }
    }
}

/// The spool, and the acks that release its fragments. Every write to the spool's disk runs on
/// the runtime's blocking pool: a fragment's (its header first if new, then its fsync) and the
/// done records of acknowledged fragments. A slow card (hundreds of milliseconds for a write)
/// then holds neither the streaming thread, which is upstream's, nor the runtime's thread,
/// which every stream's connection shares. The ack handler queues an ack and makes sure a job
/// will apply it. Fragments are read back from the spool there too: the streaming thread never
/// takes the spool's lock while it streams (a job may hold it through a slow write).
struct SpoolLink {
    spool: Mutex<SpoolShared>,
    acked: Mutex<Vec<u64>>,
    /// A job that will apply the queued acks is on its way.
    applying: AtomicBool,
    /// Where every job runs: the runtime's blocking pool, off the streaming thread.
    runtime: tokio::runtime::Handle,
}

impl SpoolLink {
    fn new(spool: SpoolShared, runtime: tokio::runtime::Handle) -> SpoolLink {
        SpoolLink {
            spool: Mutex::new(spool),
            acked: Mutex::new(Vec::new()),
            applying: AtomicBool::new(false),
            runtime,
        }
    }

    /// The spool as it is: the acks still queued are not applied (that writes to the disk).
    #[cfg(test)]
    fn lock(&self) -> MutexGuard<'_, SpoolShared> {
        lock(&self.spool)
    }

    /// The spool with the acks queued so far applied (their done records written): for the
    /// blocking pool's jobs, and for the end-of-stream account.
    fn lock_applied(&self) -> MutexGuard<'_, SpoolShared> {
        let mut spool = lock(&self.spool);
        // Acks queued from here on are applied by a job of their own.
        self.applying.store(false, Ordering::Release);
        let acked = std::mem::take(&mut *lock(&self.acked));
        for t in acked {
            spool.done(t);
        }
        spool
    }

    /// From the ack handler: the fragment of producer time `t` is done. Applied on the
    /// blocking pool.
    fn acked(self: &Arc<Self>, t: u64) {
        lock(&self.acked).push(t);
        if !self.applying.swap(true, Ordering::AcqRel) {
            let link = self.clone();
            self.runtime
                .spawn_blocking(move || drop(link.lock_applied()));
        }
    }
}

impl Drop for SpoolLink {
    fn drop(&mut self) {
        let acked = std::mem::take(self.acked.get_mut().unwrap_or_else(|e| e.into_inner()));
        let spool = self.spool.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in acked {
            spool.done(t);
        }
    }
}

/// Which header the uploader has: one in the spool, or the live stream's while it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKey {
    Spooled(u64),
    Live(u64),
}

/// The live stream's header, kept in memory; in the spool once written there.
struct LiveHeader {
    spooled: Option<u64>,
    /// Told apart from the next live header while neither is spooled.
    seq: u64,
    bytes: Bytes,
    producer_start_ms: u64,
    media_type: String,
}

impl LiveHeader {
    fn key(&self) -> HeaderKey {
        self.spooled
            .map_or(HeaderKey::Live(self.seq), HeaderKey::Spooled)
    }
}

/// A fragment being received, kept whole for the spool.
struct OpenFragment {
    timecode: u64,
    start_ns: u64,
    chunks: Vec<Bytes>,
    /// Also handed to the uploader as it arrives (no spooled backlog, room in memory).
    passthrough: bool,
}

/// Spool mode: every fragment goes to disk when it ends (written on the runtime's blocking
/// pool, one at a time, its outcome applied on the streaming thread by the next fragment's
/// end at the latest); fragments go to the uploader as they arrive while memory has room and
/// nothing older waits on disk (or is being written), else from disk, in order, once there is
/// room (read back on the blocking pool too, one at a time).
struct SpoolMode {
    shared: Arc<SpoolLink>,
    /// Spooled fragments not yet handed to the uploader, oldest first (the first one may be
    /// being read back: `reading`).
    backlog: VecDeque<SpooledFragment>,
    /// The live stream's header, and the header the uploader has.
    live: Option<LiveHeader>,
    uploader_header: Option<HeaderKey>,
    open: Option<OpenFragment>,
    /// Largest fragment so far: memory must have room for two more to pass one through.
    largest: u64,
    /// Fragments of this run have ids from here (lower ones are an earlier run's).
    first_run_id: u64,
    counts: SpoolCounts,
    /// The last failed write to the spool, and whether its fragment was lost: told again
    /// only when this changes or after a write succeeds.
    write_error: Option<(String, bool)>,
    /// Live headers so far.
    header_seq: u64,
    /// A slow write was told ([`Notice::SpoolSlow`]).
    told_slow: bool,
    /// The last fragment's write, until its outcome is applied ([`Producer::settle_spool`]).
    writing: Option<Writing>,
    /// The backlog's first fragment being read back off the streaming thread, until it is
    /// handed to the uploader ([`Producer::take_read`]).
    reading: Option<(u64, std::sync::mpsc::Receiver<ReadBack>)>,
}

/// A spooled fragment read back: its bytes and its header, or why not.
enum ReadBack {
    Read(Bytes, Option<SpooledHeader>),
    /// Acknowledged meanwhile (sent before a restart), or dropped.
    Gone,
    Failed(std::io::Error),
}

/// A fragment being written to the spool off the streaming thread, and what applying its
/// outcome needs.
struct Writing {
    passthrough: bool,
    timecode: u64,
    start_ns: u64,
    end_ns: u64,
    size: u64,
    done: std::sync::mpsc::Receiver<Written>,
}

/// How a fragment's write to the spool went: its record (waiting for its ack), or the error
/// (with its chunks, to be sent from memory instead); the live header's id if the write put it
/// in the spool first; what the spool dropped to make room.
struct Written {
    header_written: Option<u64>,
    appended: std::io::Result<SpooledFragment>,
    dropped: SpoolDropped,
    chunks: Vec<Bytes>,
}

/// The header a fragment is written under: in the spool already, or the live one, which its
/// write puts there first.
enum SpoolHeader {
    Spooled(u64),
    Live {
        producer_start_ms: u64,
        media_type: String,
        bytes: Bytes,
    },
}

impl SpoolMode {
    /// The header the next fragment is written under: the live one, and whether it is in the
    /// spool yet.
    fn header_for_write(&self) -> Option<SpoolHeader> {
        let live = self.live.as_ref()?;
        Some(match live.spooled {
            Some(id) => SpoolHeader::Spooled(id),
            None => SpoolHeader::Live {
                producer_start_ms: live.producer_start_ms,
                media_type: live.media_type.clone(),
                bytes: live.bytes.clone(),
            },
        })
    }

    /// The live header was written to the spool as `id`.
    fn live_header_spooled(&mut self, id: u64) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.spooled.is_none() {
            if self.uploader_header == Some(live.key()) {
                self.uploader_header = Some(HeaderKey::Spooled(id));
            }
            live.spooled = Some(id);
        }
    }

    /// Gives the uploader the live header if it has another one.
    fn give_live_header(&mut self, uploader: &Uploader) {
        let Some(live) = &self.live else {
            return;
        };
        if self.uploader_header != Some(live.key()) {
            uploader.push_header(
                live.bytes.clone(),
                live.producer_start_ms,
                live.media_type.clone(),
            );
            self.uploader_header = Some(live.key());
        }
    }

    /// Counts and tells what the spool dropped; the backlog forgets it.
    fn count_dropped(&mut self, dropped: &SpoolDropped, notices: &mut Vec<Notice>) {
        if dropped.fragments() == 0 {
            return;
        }
        self.counts
            .count_dropped(self.first_run_id, Some(&self.backlog), dropped, notices);
        self.backlog
            .retain(|f| !dropped.each.iter().any(|&(id, _)| id == f.id));
    }
}

/// What the spool did with the fragments it was given, for the end-of-stream account.
#[derive(Debug, Default)]
struct SpoolCounts {
    /// Fragments of this run that did not go to the uploader as they arrived.
    spooled: u64,
    /// ... of those, handed to it later (from disk, or from memory when the disk failed).
    handed: u64,
    /// Dropped from the spool before they were handed to the uploader, and whether the
    /// disk was full.
    dropped: u64,
    dropped_disk_full: bool,
    /// Neither written to the spool nor sent from memory (older fragments waited on disk),
    /// or not read back from it.
    unwritten: u64,
    /// Fragments of an earlier run dropped or not read back (produced, and lost).
    earlier_run_lost: u64,
}

impl SpoolCounts {
    /// Counts and tells what the spool dropped: those already handed to the uploader (not
    /// in `backlog`, when it is given) are not lost (they are in memory, only no longer on
    /// disk).
    fn count_dropped(
        &mut self,
        first_run_id: u64,
        backlog: Option<&VecDeque<SpooledFragment>>,
        dropped: &SpoolDropped,
        notices: &mut Vec<Notice>,
    ) {
        let (mut fragments, mut bytes) = (0, 0);
        for &(id, len) in &dropped.each {
            if backlog.is_some_and(|b| !b.iter().any(|f| f.id == id)) {
                continue;
            }
            fragments += 1;
            bytes += len;
            self.dropped += 1;
            if id < first_run_id {
                self.earlier_run_lost += 1;
            }
        }
        self.dropped_disk_full |= dropped.disk_full;
        if fragments > 0 {
            notices.push(Notice::SpoolDropped {
                fragments,
                bytes,
                disk_full: dropped.disk_full,
            });
        }
    }
}

impl Producer {
    /// Starts the uploader on `runtime` (it never blocks on the network).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: Config,
        credentials: SharedCredentialsProvider,
        events: EventSink,
    ) -> (Producer, Vec<Notice>) {
        let media_type = config.uploader.media_type.clone();
        let mut notices = Vec::new();
        let spool = config.spool.as_ref().and_then(|(dir, max)| {
            match Spool::open(dir, &config.uploader.stream_name, *max) {
                Ok((mut spool, recovered)) => {
                    if recovered.fragments > 0
                        || recovered.torn_bytes > 0
                        || recovered.damaged_bytes > 0
                    {
                        notices.push(Notice::SpoolRecovered {
                            fragments: recovered.fragments,
                            bytes: recovered.bytes,
                            torn_bytes: recovered.torn_bytes,
                            damaged_bytes: recovered.damaged_bytes,
                        });
                    }
                    notices.extend(recovered.warnings.into_iter().map(Notice::SpoolExposed));
                    let backlog: VecDeque<SpooledFragment> = spool.pending().cloned().collect();
                    let first_run_id = backlog.back().map_or(0, |f| f.id + 1);
                    // An earlier run's fragments dropped to begin on a full disk.
                    let mut counts = SpoolCounts::default();
                    counts.count_dropped(u64::MAX, None, &spool.take_dropped(), &mut notices);
                    let size = *max;
                    if let Some(free) = spool.disk_free_at_open().filter(|&free| free < size) {
                        notices.push(Notice::SpoolDiskSmall { free, size });
                    }
                    let shared = Arc::new(SpoolLink::new(
                        SpoolShared {
                            spool,
                            by_time: HashMap::new(),
                            early: HashSet::new(),
                            newest: None,
                        },
                        runtime.clone(),
                    ));
                    Some(SpoolMode {
                        shared,
                        backlog,
                        live: None,
                        uploader_header: None,
                        open: None,
                        largest: 0,
                        first_run_id,
                        counts,
                        write_error: None,
                        header_seq: 0,
                        told_slow: false,
                        writing: None,
                        reading: None,
                    })
                }
                Err(e) => {
                    notices.push(Notice::SpoolFailed(format!("{}: {e}", dir.display())));
                    None
                }
            }
        });
        let events = match &spool {
            Some(mode) => {
                // Acknowledged fragments leave the spool.
                let shared = mode.shared.clone();
                let release_on = config.uploader.release_on;
                let events: EventSink = Arc::new(move |event: uploader::Event| {
                    if let uploader::Event::Ack {
                        ack,
                        producer_time_ms: Some(t),
                    } = &event
                        && ack_releases(ack, release_on)
                    {
                        shared.acked(*t);
                    }
                    events(event)
                });
                events
            }
            None => events,
        };
        let uploader = Arc::new(Uploader::start(
            runtime,
            config.uploader,
            credentials,
            events,
        ));
        if spool.is_some() {
            // The spool takes what memory cannot: the store never drops nor waits.
            uploader.set_spooled(true);
        }
        let mut producer = Producer {
            splitter: Splitter::new(mkv::Limits {
                max_fragment_span_ns: kvs::MAX_FRAGMENT_DURATION.as_nanos() as u64,
                max_fragment_bytes: kvs::MAX_FRAGMENT_SIZE,
                ..mkv::Limits::default()
            })
            .aws_shape(true),
            uploader,
            pending_header: None,
            last_header: None,
            resumed: false,
            resume_epoch: None,
            wall_anchor: None,
            timecode_scale: 1_000_000,
            media_type,
            fragment_duration_ns: config.fragment_duration_ns,
            key_unit_requested_at: None,
            key_unit_lead_ns: 0,
            input_failed: false,
            offline: false,
            file_start_ms: config.file_start_ms,
            started_ms: uploader::now_ms(),
            upstream_duration_ns: None,
            upstream_date_ms: None,
            buffer_epoch: None,
            seek_position_ms: 0,
            live_epoch_ms: None,
            producer_start_ms: 0,
            real_time: false,
            told_held_ahead: false,
            told_live_off: false,
            recent_starts: VecDeque::new(),
            paced_bytes: 0,
            paced_since: None,
            spool,
            passthrough: true,
            pace_origin: None,
            fragment_began: None,
            events: Vec::with_capacity(8),
            metadata: FragmentMetadata::default(),
            metadata_written: false,
            skipping: false,
            skip_run: None,
            last_cut: false,
            held_back: false,
        };
        // Fragments left from an earlier run go first.
        producer.feed(false, &mut notices);
        (producer, notices)
    }

    /// A recording (not live): producer timestamps from the recording's own time, sent as
    /// fast as the service allows, nothing ever dropped (upstream waits instead). Set before
    /// the first bytes.
    pub fn offline(&self) -> bool {
        self.offline
    }

    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
        self.uploader.set_keep_everything(offline);
    }

    /// Live, timecodes that are running times (matroskamux's, and kvssink's own for
    /// elementary streams): running time 0 was at `epoch_ms` by the pipeline's clock.
    /// Streams are then dated when their frames were captured, not when they reach kvssink
    /// (after the encoder's latency, or after waiting for the audio's format).
    pub fn set_live_epoch(&mut self, epoch_ms: u64) {
        self.live_epoch_ms = Some(epoch_ms);
    }

    /// A flushing seek: running time starts again at `position_ms` of the recording (its
    /// stream time). Offline, the next header's times are the recording's from there; live
    /// streams are dated by the clock and ignore it.
    pub fn seeked_to(&mut self, position_ms: u64) {
        self.seek_position_ms = position_ms;
    }

    /// The recording's duration as upstream knows it (e.g. `matroskademux ! ... !
    /// matroskamux`, whose output carries no Duration), for a recording without a date.
    pub fn set_upstream_duration(&mut self, duration_ns: Option<u64>) {
        self.upstream_duration_ns = duration_ns.filter(|&ns| ns > 0);
    }

    /// The recording's date as upstream tells it (ms since the epoch of its first frame: a
    /// `datetime` tag from `qtdemux` or `matroskademux`), used when the stream has no date of
    /// its own.
    pub fn set_upstream_date(&mut self, date_ms: Option<u64>) {
        self.upstream_date_ms = date_ms;
    }

    /// The buffers' timestamps are epoch times (`use-original-pts`): running time 0 is at
    /// `epoch_ms`. Taken live or offline, and before `file-start-time`, as AWS's element
    /// takes it.
    pub fn set_original_pts(&mut self, epoch_ms: u64) {
        self.buffer_epoch = Some((epoch_ms, StartSource::OriginalPts));
    }

    /// The first buffer's reference timestamp meta puts running time 0 at `epoch_ms`: a
    /// recording's time, when it has no date of its own or `file-start-time`.
    pub fn set_reference_timestamp(&mut self, epoch_ms: u64) {
        if self.buffer_epoch.is_none() {
            self.buffer_epoch = Some((epoch_ms, StartSource::ReferenceTimestamp));
        }
    }

    /// The producer time of timecode 0 for a new header, and where it came from.
    fn start_time(&self, header: &StreamHeader, first_start_ns: u64) -> (u64, StartSource) {
        let now = uploader::now_ms();
        let first_ms = first_start_ns / 1_000_000;
        // `use-original-pts` says what the buffers' times are: as AWS's element, it is taken
        // live or offline, before `file-start-time`.
        if let Some((ms, StartSource::OriginalPts)) = self.buffer_epoch {
            return (ms, StartSource::OriginalPts);
        }
        if !self.offline {
            let start = self
                .live_epoch_ms
                .filter(|&epoch| {
                    let first = epoch.saturating_add(first_ms);
                    first <= now.saturating_add(LIVE_EPOCH_AHEAD_MS)
                        && first.saturating_add(LIVE_EPOCH_BEHIND_MS) >= now
                })
                .unwrap_or_else(|| now.saturating_sub(first_ms));
            return (start, StartSource::Live);
        }
        // A date at or after this producer's start is when a muxer in this pipeline began
        // (a recording demuxed and muxed again), not when the recording was made. A date is
        // the time of the recording's first frame (matroskamux writes when it started, and
        // a segment of splitmuxsink starts at the running time the one before ended): timecode
        // 0 was that much earlier.
        let recorded = |date: Option<u64>| {
            date.filter(|&ms| ms <= now && ms < self.started_ms)
                .map(|ms| ms.saturating_sub(first_ms))
        };
        if let Some(ms) = self.file_start_ms {
            (ms, StartSource::FileStartTime)
        } else if let Some(ms) = recorded(header.date_utc_ms) {
            (ms, StartSource::RecordingDate)
        } else if let Some((ms, StartSource::ReferenceTimestamp)) = self.buffer_epoch {
            (ms, StartSource::ReferenceTimestamp)
        } else if let Some(ms) = recorded(self.upstream_date_ms) {
            (ms, StartSource::DatetimeTag)
        } else if let Some(ns) = header.duration_ns.or(self.upstream_duration_ns) {
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
                self.uploader
                    .hold_for_service(Duration::from_secs(1) - since);
            }
        }
        self.recent_starts.push_back(Instant::now());
        let at = self.producer_start_ms.saturating_add(start_ns / 1_000_000);
        let now = uploader::now_ms();
        if at > now && (self.real_time || at - now < 3_600_000) {
            // A fragment from the future would be refused; an hour or more ahead is a wrong
            // file-start-time, which the service's answer will name.
            if !self.real_time && at - now > HELD_AHEAD_TOLD_MS && !self.told_held_ahead {
                // Said now, not after the wait (the application would see nothing meanwhile).
                self.told_held_ahead = true;
                self.uploader.warn(format_args!(
                    "fragment dated {at} ms since the epoch is {:.1} s ahead of this machine's \
                     clock: held until then, as the service refuses fragments from the future. \
                     Check file-start-time, use-original-pts or this machine's clock",
                    (at - now) as f64 / 1000.0
                ));
            }
            self.uploader
                .hold_unless_ending(Duration::from_millis(at - now));
        }
    }

    /// Offline: holds upstream to the service's data rate.
    fn pace_bytes(&mut self, len: usize) {
        if !self.offline {
            return;
        }
        let since = *self.paced_since.get_or_insert_with(Instant::now);
        self.paced_bytes += len as u64;
        let due = Duration::from_secs_f64(self.paced_bytes as f64 / PACED_BYTES_PER_SECOND);
        let elapsed = since.elapsed();
        if due > elapsed + PACE_SLACK {
            self.uploader.hold_for_service(due - elapsed);
        } else if elapsed.saturating_sub(due) > PACE_SLACK {
            // Slower than the limit (waiting for the service or upstream): no burst credit.
            self.paced_since = Some(Instant::now());
            self.paced_bytes = len as u64;
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

    /// Adds fragment metadata (the `kvs-add-metadata` event): it goes with the fragment open
    /// now, or the first one when none is open yet; a persistent item goes with every fragment
    /// from then on, until removed by an empty value. See [`crate::metadata`].
    pub fn add_metadata(
        &mut self,
        name: &str,
        value: &str,
        persistent: bool,
    ) -> Result<Added, MetadataError> {
        let added = self.metadata.add(name, value, persistent)?;
        self.uploader.set_open_metadata(self.metadata.snapshot());
        Ok(added)
    }

    /// Cluster timecode of the fragment open now, which metadata added now goes with.
    pub fn open_fragment_timecode(&self) -> Option<u64> {
        self.splitter.current_fragment().map(|f| f.timecode)
    }

    /// Takes the next bytes of the Matroska stream. On invalid input, every complete
    /// fragment and the whole frames of the open one are kept and sent; nothing after.
    pub fn push(&mut self, data: Bytes, notices: &mut Vec<Notice>) -> Result<(), InputError> {
        if self.input_failed {
            return Err(InputError::AlreadyFailed);
        }
        self.feed(false, notices);
        let mut events = std::mem::take(&mut self.events);
        let result = self.splitter.push(data, &mut events);
        // matroskamux pushes a block's header and its frame as two buffers: the connection
        // is woken once the element is whole, so both go out in one write.
        let whole = self.splitter.at_element_boundary();
        self.apply_then_wake(&mut events, notices, whole);
        self.events = events;
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
        self.apply_then_wake(&mut events, notices, true);
        self.events = events;
        self.end_skip_run(None, notices);
        // The last fragment on disk before anything is accounted.
        self.settle_spool(true, notices);
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
    ) {
        self.apply(events, notices);
        if self.held_back
            && self
                .splitter
                .current_fragment()
                .is_some_and(|c| c.frame_end > 0 && c.size >= c.frame_end)
        {
            // Its first frame is whole: the fragment may go out.
            self.release_held_back();
        }
        let batch = self.ahead_of_real_time() || self.fragment_ahead();
        self.uploader.wake(whole, batch);
    }

    fn release_held_back(&mut self) {
        if std::mem::take(&mut self.held_back) {
            self.uploader.hold_back_open(false);
        }
    }

    /// Clusters were skipped mid-stream until now: they are told and counted; `key_frame`
    /// is the timecode of the cluster that begins with one, if one does.
    fn end_skip_run(&mut self, key_frame: Option<u64>, notices: &mut Vec<Notice>) {
        let Some(run) = self.skip_run.take() else {
            return;
        };
        self.skipping = false;
        let end = key_frame.map_or(run.last_block_time, |tc| tc as i64);
        let ms = self.ns(end - run.timecode as i64) / 1_000_000;
        if run.at_start {
            notices.push(Notice::SkippedAtStart {
                frames: run.frames,
                ms,
                video: run.video,
                key_frame,
            });
            return;
        }
        self.uploader.count_skipped(uploader::Skipped {
            frames: run.frames,
            bytes: run.bytes,
            ms,
        });
        notices.push(Notice::SkippedToKeyFrame {
            timecode: run.timecode,
            clusters: run.clusters,
            frames: run.frames,
            ms,
            bytes: run.bytes,
            after_cut: run.after_cut,
            key_frame,
        });
    }

    fn apply(&mut self, events: &mut Vec<mkv::Event>, notices: &mut Vec<Notice>) {
        for event in events.drain(..) {
            match event {
                mkv::Event::Header(header) => {
                    notices.push(Notice::Header {
                        size: header.bytes.len(),
                        doc_type: header.doc_type.clone(),
                        tracks: header.tracks.clone(),
                        renumbered: header.renumbered.clone(),
                    });
                    notices.extend(
                        crate::playback::problems(&header.tracks)
                            .into_iter()
                            .map(Notice::Playback),
                    );
                    self.end_skip_run(None, notices);
                    self.timecode_scale = header.timecode_scale;
                    self.pending_header = Some(*header);
                }
                mkv::Event::FragmentStart(start) => {
                    if !start.key_frame {
                        if self.pending_header.is_none() {
                            // Mid-stream: the rest of a group of pictures (after a cut at the
                            // service's limits, or clusters shorter than it). Skipped whole
                            // and counted until a cluster starts with a key frame.
                            if self.skip_run.is_none() {
                                self.skip_run = Some(SkipRun {
                                    timecode: start.timecode,
                                    clusters: 0,
                                    frames: 0,
                                    bytes: 0,
                                    last_block_time: start.timecode as i64,
                                    after_cut: self.last_cut,
                                    at_start: false,
                                    video: true,
                                });
                                notices.push(Notice::SkippingMidStream {
                                    timecode: start.timecode,
                                });
                            }
                            self.skipping = true;
                            continue;
                        }
                        // Nothing of this stream sent yet: what comes before its first key
                        // frame cannot be decoded anyway (audio before the video would have
                        // no fragment to begin). Told with how much when the key frame comes.
                        let run = self.skip_run.get_or_insert(SkipRun {
                            timecode: start.timecode,
                            clusters: 0,
                            frames: 0,
                            bytes: 0,
                            last_block_time: start.timecode as i64,
                            after_cut: false,
                            at_start: true,
                            video: false,
                        });
                        if start.video && !std::mem::replace(&mut run.video, true) {
                            notices.push(Notice::SkippingToKeyFrame {
                                timecode: start.timecode,
                            });
                        }
                        self.skipping = true;
                        continue;
                    }
                    self.end_skip_run(Some(start.timecode), notices);
                    self.skipping = false;
                    self.last_cut = false;
                    let start_ns = self.ns(start.timecode as i64);
                    if let Some(header) = self.pending_header.take() {
                        self.start_stream(header, start_ns, notices);
                    } else if std::mem::take(&mut self.resumed) {
                        self.restart_after_pause(start_ns, notices);
                    } else {
                        self.follow_clock_step(start_ns, notices);
                    }
                    self.check_live_date(start_ns, notices);
                    notices.push(Notice::FragmentStarted {
                        timecode: start.timecode,
                    });
                    self.begin(start.timecode, start_ns);
                }
                mkv::Event::FragmentData(_) if self.skipping => {}
                mkv::Event::FragmentCut(_) if self.skipping => {}
                mkv::Event::FragmentEnd(summary) if self.skipping => {
                    if let Some(run) = &mut self.skip_run {
                        run.clusters += 1;
                        run.frames += summary.blocks;
                        run.bytes += summary.size + summary.cut_bytes;
                        run.last_block_time = run.last_block_time.max(summary.last_block_time);
                    }
                }
                mkv::Event::FragmentData(bytes) => {
                    if self.take_for_spool(&bytes) {
                        self.pace_bytes(bytes.len());
                        self.uploader.append(bytes)
                    }
                }
                mkv::Event::FragmentCut(summary) => {
                    let span = (summary.last_block_time - summary.first_block_time).max(0);
                    let end_ns = self.ns(summary.last_block_time);
                    // The fragment's metadata goes before the tag that ends it.
                    let tags = self.metadata.take_for_fragment();
                    self.metadata_written = true;
                    self.last_cut = true;
                    self.release_held_back();
                    if self.passthrough {
                        self.uploader
                            .cut_fragment(summary.whole_size, tags.clone(), end_ns);
                        self.uploader.set_open_metadata(self.metadata.snapshot());
                    }
                    self.spool_close(Some(summary.whole_size), tags, true, end_ns, notices);
                    notices.push(Notice::FragmentCut {
                        timecode: summary.timecode,
                        span_ms: self.ns(span) / 1_000_000,
                        size: summary.whole_size,
                    });
                }
                mkv::Event::FragmentEnd(summary) if !summary.has_frame() => {
                    // Refused by the service ("fragment without frames"): never sent, not
                    // counted; its metadata goes with the next fragment.
                    notices.push(Notice::FragmentWithoutFrames {
                        timecode: summary.timecode,
                    });
                    self.held_back = false;
                    self.metadata_written = false;
                    self.key_unit_requested_at = None;
                    if self.passthrough {
                        self.uploader.drop_frameless();
                        self.uploader.set_open_metadata(self.metadata.snapshot());
                    }
                    if let Some(mode) = &mut self.spool {
                        mode.open = None;
                    }
                }
                mkv::Event::FragmentEnd(summary) => {
                    self.release_held_back();
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
                    // (A cluster that goes on re-timed: what is past `whole_size` is sent
                    // again in the next fragment.)
                    let broke_off = summary.whole_size < summary.size && !summary.continued;
                    let keep = (summary.whole_size < summary.size).then_some(summary.whole_size);
                    // The fragment's metadata follows its cluster (a cut one's went already;
                    // after an idle period the connection wrote it before the tag that ended
                    // the fragment, and items added since go with the next one).
                    let written = std::mem::take(&mut self.metadata_written);
                    let metadata = &mut self.metadata;
                    let mut choose = |idle: Option<Option<Snapshot>>| match idle {
                        Some(Some(sent)) => {
                            metadata.spend_up_to(sent.serial);
                            Some(sent.tags)
                        }
                        Some(None) => None,
                        None if written => None,
                        None => metadata.take_for_fragment(),
                    };
                    let tags = if self.passthrough {
                        let (tags, not_sent) =
                            self.uploader.end_fragment_with(keep, end_ns, choose);
                        // (The application ending the stream inside a frame is said once, by
                        // the element.)
                        if broke_off && not_sent > 0 && !self.uploader.ending() {
                            notices.push(Notice::BrokeOff {
                                timecode: summary.timecode,
                                not_sent,
                            });
                        }
                        tags
                    } else {
                        if broke_off && summary.size > summary.whole_size && !self.uploader.ending()
                        {
                            notices.push(Notice::BrokeOff {
                                timecode: summary.timecode,
                                not_sent: summary.size - summary.whole_size,
                            });
                        }
                        choose(None)
                    };
                    self.uploader.set_open_metadata(self.metadata.snapshot());
                    if !self.passthrough && self.spool.is_none() {
                        self.uploader.drop_unadmitted(summary.size);
                    }
                    self.spool_close(keep, tags, false, end_ns, notices);
                }
                mkv::Event::Interstitial(bytes) => {
                    notices.push(Notice::Skipped { bytes: bytes.len() })
                }
                mkv::Event::TimeWentBack { timecode, shift } => {
                    notices.push(Notice::TimeWentBack {
                        timecode,
                        shift_ms: self.ns(i64::try_from(shift).unwrap_or(i64::MAX)) / 1_000_000,
                    })
                }
            }
        }
    }

    /// A new stream header meets its first fragment: the producer time of timecode 0 is
    /// fixed, and the header goes to the uploader (or, with a spool, to the spool first).
    fn start_stream(&mut self, header: StreamHeader, start_ns: u64, notices: &mut Vec<Notice>) {
        let (mut producer_start_ms, source) = self.start_time(&header, start_ns);
        if self.offline && source != StartSource::NowPaced {
            producer_start_ms = producer_start_ms.saturating_add(self.seek_position_ms);
        }
        let first_ms = producer_start_ms.saturating_add(start_ns / 1_000_000);
        if first_ms < YEAR_2000_MS {
            notices.push(Notice::DatedTooEarly { first_ms, source });
        }
        self.start_stream_at(header, producer_start_ms, first_ms, source, notices);
    }

    /// A live pipeline plays again after a pause (PAUSED to PLAYING): its running time stood
    /// still, so without a new start the fragments after the pause would be dated the pause's
    /// length too early. `epoch` is, by the pipeline's clock, the epoch time (ms) of running
    /// time 0 from now on and the running time (ns) at which the pause began, when known.
    /// Call before the first bytes after the pause.
    pub fn resumed_after_pause(&mut self, epoch: Option<(u64, u64)>) {
        let original_pts = matches!(self.buffer_epoch, Some((_, StartSource::OriginalPts)));
        self.resumed = !self.offline && !original_pts && self.last_header.is_some();
        self.resume_epoch = epoch.filter(|_| self.resumed);
        // Running time stood still while paused.
        self.live_epoch_ms = epoch.map(|(ms, _)| ms);
    }

    /// A fragment after a pause. One that began before the pause (it was in the encoder, or
    /// its first frame's capture began before the pause) keeps its date, and the next is
    /// looked at. The first that began after it is dated by
    /// the pipeline's clock (or, without one, as happening now); when that is later than
    /// the current dates by more than `RESUME_LAG_MS`, the stream starts again there, with
    /// its header, in a new session. Never earlier than before.
    fn restart_after_pause(&mut self, start_ns: u64, notices: &mut Vec<Notice>) {
        let Some(header) = self.last_header.clone() else {
            return;
        };
        let start_ms = match self.resume_epoch {
            Some((_, paused_ns)) if start_ns < paused_ns => {
                self.resumed = true;
                return;
            }
            Some((epoch_ms, _)) => epoch_ms,
            None => uploader::now_ms().saturating_sub(start_ns / 1_000_000),
        };
        self.resume_epoch = None;
        if start_ms > self.producer_start_ms.saturating_add(RESUME_LAG_MS) {
            let first_ms = start_ms.saturating_add(start_ns / 1_000_000);
            self.start_stream_at(header, start_ms, first_ms, StartSource::Resumed, notices);
        }
    }

    /// Live: when this machine's clock was set by `CLOCK_STEP_MS` or more since the start was
    /// placed (it moved that much more or less than the monotonic clock), a forward step is
    /// followed (the stream starts again, dated that much later) and a step back is told.
    fn follow_clock_step(&mut self, start_ns: u64, notices: &mut Vec<Notice>) {
        let Some((wall_ms, at)) = self.wall_anchor else {
            return;
        };
        let now = uploader::now_ms();
        let step_ms = now as i64 - wall_ms as i64 - at.elapsed().as_millis() as i64;
        if step_ms.unsigned_abs() < CLOCK_STEP_MS {
            return;
        }
        self.wall_anchor = Some((now, Instant::now()));
        // A forward step that leaves this machine's clock ahead of the service's (a wrong
        // time set, not a clock that was behind put right) is not followed: the service
        // would refuse every fragment dated by it as in the future.
        let away_ms = crate::sigv4::CLOCK
            .measured_skew()
            .filter(|skew| step_ms > 0 && skew.0 <= -(CLOCK_STEP_MS as i64))
            .map(|skew| skew.0.unsigned_abs());
        notices.push(Notice::ClockStepped { step_ms, away_ms });
        if away_ms.is_some() {
            return;
        }
        self.live_epoch_ms = None;
        if step_ms > 0
            && let Some(header) = self.last_header.clone()
        {
            let start_ms = self.producer_start_ms.saturating_add(step_ms as u64);
            let first_ms = start_ms.saturating_add(start_ns / 1_000_000);
            self.start_stream_at(
                header,
                start_ms,
                first_ms,
                StartSource::ClockStepped,
                notices,
            );
        }
    }

    /// Live: a fragment dated more than `LIVE_EPOCH_AHEAD_MS` ahead of the clock, or more
    /// than `LIVE_EPOCH_BEHIND_MS` behind it (its frames' capture, after the encoder's
    /// latency), is told once, until the dates come back within half of that.
    fn check_live_date(&mut self, start_ns: u64, notices: &mut Vec<Notice>) {
        // Not before the first fragment begun after a pause: those before it are dated
        // when their frames were captured, before the pause.
        if self.wall_anchor.is_none() || self.resumed {
            return;
        }
        let dated = self.producer_start_ms.saturating_add(start_ns / 1_000_000) as i64;
        let off_ms = dated - uploader::now_ms() as i64;
        let (ahead, behind) = (LIVE_OFF_AHEAD_TOLD_MS as i64, LIVE_EPOCH_BEHIND_MS as i64);
        if off_ms > ahead || off_ms < -behind {
            if !std::mem::replace(&mut self.told_live_off, true) {
                notices.push(Notice::LiveOffClock { off_ms });
            }
        } else if off_ms < ahead / 2 && off_ms > -behind / 2 {
            self.told_live_off = false;
        }
    }

    fn start_stream_at(
        &mut self,
        header: StreamHeader,
        producer_start_ms: u64,
        first_ms: u64,
        source: StartSource,
        notices: &mut Vec<Notice>,
    ) {
        self.last_header = Some(header.clone());
        self.wall_anchor = matches!(
            source,
            StartSource::Live | StartSource::Resumed | StartSource::ClockStepped
        )
        .then(|| (uploader::now_ms(), Instant::now()));
        self.producer_start_ms = producer_start_ms;
        self.real_time = source == StartSource::NowPaced;
        notices.push(Notice::StartTime {
            producer_start_ms,
            first_ms,
            source,
        });
        let media_type = self.media_type.clone().unwrap_or_else(|| {
            let tracks: Vec<(&str, &[u8])> = header
                .tracks
                .iter()
                .map(|t| (t.codec_id.as_str(), &t.codec_private[..]))
                .collect();
            uploader::media_type_for(&tracks)
        });
        // Sent in the shape AWS's producer sends (the splitter renumbered the tracks and
        // rewrites the cluster heads; the frames are untouched).
        let bytes = mkv::normalize_header(&header.bytes).unwrap_or_else(|| header.bytes.clone());
        // The last fragment's write is applied under the header it was written with.
        self.settle_spool(true, notices);
        if let Some(mode) = &mut self.spool {
            // Kept in memory; written to the spool with the first fragment's write, off the
            // streaming thread (or, if that fails, with the next one's).
            mode.header_seq += 1;
            mode.live = Some(LiveHeader {
                spooled: None,
                seq: mode.header_seq,
                bytes,
                producer_start_ms,
                media_type,
            });
            return;
        }
        self.uploader
            .push_header(bytes, producer_start_ms, media_type);
    }

    /// A fragment begins. With a spool, it also goes to the uploader as it arrives only when
    /// nothing older waits on disk and memory has room for it.
    fn begin(&mut self, timecode: u64, start_ns: u64) {
        if let Some(mode) = &mut self.spool {
            let room = (2 * mode.largest).max(1 << 20);
            // Not while the last fragment, which waits for the spool, is being written.
            self.passthrough = mode.backlog.is_empty()
                && mode.writing.as_ref().is_none_or(|w| w.passthrough)
                && self.uploader.has_room(room, 2 * self.fragment_duration_ns);
            if self.passthrough {
                mode.give_live_header(&self.uploader);
            }
            mode.open = Some(OpenFragment {
                timecode,
                start_ns,
                chunks: Vec::new(),
                passthrough: self.passthrough,
            });
        } else {
            // A live stream whose uplink cannot keep up drops new fragments whole rather than
            // hold its source (see `Uploader::admits_fragment`); counted when it ends.
            self.passthrough = self.uploader.admits_fragment(start_ns);
        }
        if self.passthrough {
            self.pace_fragment(start_ns);
            self.uploader.begin_fragment(timecode, start_ns, 0);
            // Shown to the connection once its first frame is whole (see apply_then_wake).
            self.held_back = true;
            self.uploader.hold_back_open(true);
        }
        self.fragment_began = Some(Instant::now());
    }

    /// Keeps `bytes` of the open fragment for the spool; whether they also go to the
    /// uploader now.
    fn take_for_spool(&mut self, bytes: &Bytes) -> bool {
        if let Some(open) = self.spool.as_mut().and_then(|m| m.open.as_mut()) {
            open.chunks.push(bytes.clone());
        }
        self.passthrough
    }

    /// The open fragment ended: it is written to the spool (its first `keep` bytes, its
    /// metadata `tags`, and an END_OF_FRAGMENT tag after a cut), one append and one fsync.
    fn spool_close(
        &mut self,
        keep: Option<u64>,
        tags: Option<Bytes>,
        eof_tag: bool,
        end_ns: u64,
        notices: &mut Vec<Notice>,
    ) {
        let Some(mode) = &mut self.spool else {
            return;
        };
        let Some(mut open) = mode.open.take() else {
            return;
        };
        if let Some(keep) = keep {
            truncate_chunks(&mut open.chunks, keep);
        }
        open.chunks.extend(tags);
        if eof_tag {
            open.chunks.push(crate::mkv::end_of_fragment_tags());
        }
        let size: u64 = open.chunks.iter().map(|c| c.len() as u64).sum();
        mode.largest = mode.largest.max(size);
        let Some(header) = mode.header_for_write() else {
            return;
        };
        if !open.passthrough {
            mode.counts.spooled += 1;
        }
        // The last fragment's write first: it had this one's length to be done. A wait here
        // holds upstream (a camera's driver keeps a few frames): told once.
        let began = Instant::now();
        self.settle_spool(true, notices);
        let waited = began.elapsed();
        let Some(mode) = &mut self.spool else {
            return;
        };
        if waited >= SLOW_SPOOL_WRITE && !std::mem::replace(&mut mode.told_slow, true) {
            notices.push(Notice::SpoolSlow {
                ms: waited.as_millis() as u64,
            });
        }
        // Written (and made durable) off the streaming thread, which is upstream's: a camera
        // does not wait for a slow card. Applied at the next fragment's end, or sooner. The
        // live header goes first if it is not in the spool yet.
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let link = mode.shared.clone();
        let (timecode, span, chunks) = (open.timecode, (open.start_ns, end_ns), open.chunks);
        mode.shared.runtime.spawn_blocking(move || {
            let mut shared = link.lock_applied();
            let (header, header_written) = match header {
                SpoolHeader::Spooled(id) => (Ok(id), None),
                SpoolHeader::Live {
                    producer_start_ms,
                    media_type,
                    bytes,
                } => {
                    let written =
                        shared
                            .spool
                            .append_header(producer_start_ms, &media_type, &bytes);
                    let id = written.as_ref().ok().copied();
                    (written, id)
                }
            };
            // What the spool dropped to make room, whether the append then succeeded or not.
            let (appended, dropped) = match header
                .and_then(|id| shared.spool.append_fragment(id, timecode, span, &chunks))
            {
                Ok((fragment, dropped)) => {
                    shared.expect(&fragment);
                    (Ok(fragment), dropped)
                }
                Err(e) => (Err(e), shared.spool.take_dropped()),
            };
            drop(shared);
            let _ = tx.send(Written {
                header_written,
                appended,
                dropped,
                chunks,
            });
        });
        mode.writing = Some(Writing {
            passthrough: open.passthrough,
            timecode,
            start_ns: span.0,
            end_ns,
            size,
            done,
        });
    }

    /// Applies the outcome of the last fragment's write to the spool: its record waits for
    /// its ack (and, if it did not go to the uploader as it came, for room there), what the
    /// spool dropped is told, a failed write is told and the fragment sent from memory if
    /// nothing older waits on disk (else lost). Waits for the write when `wait`; otherwise
    /// returns false if it is not done yet.
    fn settle_spool(&mut self, wait: bool, notices: &mut Vec<Notice>) -> bool {
        let Some(mode) = &mut self.spool else {
            return true;
        };
        let Some(writing) = mode.writing.take() else {
            return true;
        };
        let written = if wait {
            writing.done.recv().ok()
        } else {
            match writing.done.try_recv() {
                Ok(written) => Some(written),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    mode.writing = Some(writing);
                    return false;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        let Written {
            header_written,
            appended,
            dropped,
            chunks,
        } = written.unwrap_or_else(|| Written {
            header_written: None,
            appended: Err(std::io::Error::other("the spool's writer stopped")),
            dropped: SpoolDropped::default(),
            chunks: Vec::new(),
        });
        if let Some(id) = header_written {
            mode.live_header_spooled(id);
        }
        mode.count_dropped(&dropped, notices);
        match appended {
            Ok(fragment) => {
                mode.write_error = None;
                if !writing.passthrough {
                    mode.backlog.push_back(fragment);
                }
            }
            Err(e) => {
                // Not on disk: sent from memory if nothing older waits there.
                let lost = !writing.passthrough && (!mode.backlog.is_empty() || chunks.is_empty());
                let told = (e.to_string(), lost);
                if mode.write_error.as_ref() != Some(&told) {
                    notices.push(Notice::SpoolWriteFailed {
                        error: told.0.clone(),
                        lost,
                    });
                    mode.write_error = Some(told);
                }
                if lost {
                    mode.counts.unwritten += 1;
                } else if !writing.passthrough {
                    mode.counts.handed += 1;
                    mode.give_live_header(&self.uploader);
                    self.uploader
                        .begin_fragment(writing.timecode, writing.start_ns, writing.size);
                    for chunk in chunks {
                        self.uploader.append(chunk);
                    }
                    self.uploader.end_fragment(writing.end_ns);
                    self.uploader.wake(true, false);
                }
            }
        }
        true
    }

    /// Hands spooled fragments to the uploader, oldest first, while memory has room. Each is
    /// read back on the blocking pool (the streaming thread does not wait for the disk) and
    /// handed over by a later call, or by this one when it may `wait`.
    fn feed(&mut self, wait: bool, notices: &mut Vec<Notice>) {
        // Not while a fragment is being written: the writer holds the spool.
        if !self.settle_spool(wait, notices) {
            return;
        }
        while self.take_read(wait, notices) {
            let Some(mode) = &mut self.spool else {
                return;
            };
            let Some(front) = mode.backlog.front() else {
                return;
            };
            let duration = front.end_ns.saturating_sub(front.start_ns);
            if !self.uploader.has_room(front.len, duration) {
                return;
            }
            let (id, fragment) = (front.id, front.clone());
            let (tx, done) = std::sync::mpsc::sync_channel(1);
            let link = mode.shared.clone();
            mode.shared.runtime.spawn_blocking(move || {
                let mut shared = link.lock_applied();
                let read = if shared.spool.get(fragment.id).is_none() {
                    ReadBack::Gone
                } else {
                    match shared.spool.read(&fragment) {
                        Ok(bytes) => {
                            // Its ack takes it out of the spool (an earlier run's fragments
                            // too).
                            shared.expect(&fragment);
                            let header = shared.spool.header(fragment.header_id).cloned();
                            ReadBack::Read(bytes, header)
                        }
                        Err(e) => {
                            // Lost, and told; not left on disk to be counted as kept.
                            let _ = shared.spool.mark_done(fragment.id);
                            ReadBack::Failed(e)
                        }
                    }
                };
                drop(shared);
                let _ = tx.send(read);
            });
            mode.reading = Some((id, done));
        }
    }

    /// Hands the fragment read back from the spool to the uploader once the read is done
    /// (waiting for it when `wait`); false while it is not.
    fn take_read(&mut self, wait: bool, notices: &mut Vec<Notice>) -> bool {
        let Some(mode) = &mut self.spool else {
            return true;
        };
        let Some((id, reading)) = mode.reading.take() else {
            return true;
        };
        let read = if wait {
            reading.recv().ok()
        } else {
            match reading.try_recv() {
                Ok(read) => Some(read),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    mode.reading = Some((id, reading));
                    return false;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        // Read from the backlog's front, unless the spool dropped it meanwhile (counted then).
        if mode.backlog.front().is_none_or(|f| f.id != id) {
            return true;
        }
        let Some(fragment) = mode.backlog.pop_front() else {
            return true;
        };
        let read = read.unwrap_or_else(|| {
            ReadBack::Failed(std::io::Error::other("the spool's reader stopped"))
        });
        match read {
            ReadBack::Gone => {}
            ReadBack::Failed(e) => {
                notices.push(Notice::SpoolReadFailed(e.to_string()));
                mode.counts.unwritten += 1;
                if fragment.id < mode.first_run_id {
                    mode.counts.earlier_run_lost += 1;
                }
            }
            ReadBack::Read(bytes, header) => {
                if fragment.id >= mode.first_run_id {
                    mode.counts.handed += 1;
                }
                let key = HeaderKey::Spooled(fragment.header_id);
                if mode.uploader_header != Some(key)
                    && let Some(h) = header
                {
                    self.uploader
                        .push_header(h.bytes, h.producer_start_ms, h.media_type);
                    mode.uploader_header = Some(key);
                }
                self.uploader
                    .begin_fragment(fragment.timecode, fragment.start_ns, fragment.len);
                self.uploader.append(bytes);
                self.uploader.end_fragment(fragment.end_ns);
                // Whole fragments: the connection may take them now.
                self.uploader.wake(true, false);
            }
        }
        true
    }

    /// At the end: hands what waits on disk to the uploader until `deadline()` (read again
    /// as it waits: `stop-stream-timeout` set meanwhile counts) or until the upload is cut
    /// short.
    pub fn drain_spool(&mut self, deadline: impl Fn() -> Instant, notices: &mut Vec<Notice>) {
        self.settle_spool(true, notices);
        loop {
            self.feed(true, notices);
            let waiting = self.spool.as_ref().is_some_and(|m| !m.backlog.is_empty());
            let left = deadline().saturating_duration_since(Instant::now());
            if !waiting
                || left.is_zero()
                || !self.uploader.hold(left.min(Duration::from_millis(100)))
            {
                return;
            }
        }
    }

    /// With a spool, whether the open fragment has frames that went neither to the uploader
    /// (not passed through: older fragments waited on disk, or memory had no room) nor yet to
    /// disk (only whole fragments go there): what ending the process now loses of the stream
    /// beyond what the uploader and the spool hold.
    pub fn open_unhanded(&self) -> bool {
        self.spool.as_ref().is_some_and(|m| {
            m.open
                .as_ref()
                .is_some_and(|open| !open.passthrough && !open.chunks.is_empty())
        })
    }

    /// Spooled fragments not handed to the uploader yet (it has no room for them).
    pub fn spool_backlog(&self) -> usize {
        self.spool.as_ref().map_or(0, |m| m.backlog.len())
    }

    /// The spool's part of the end-of-stream account.
    pub fn spool_account(&mut self) -> uploader::SpoolAccount {
        // A write still under way (a stop from another thread, an exit): its outcome first.
        // What it would tell is not told now.
        self.settle_spool(true, &mut Vec::new());
        let Some(m) = &self.spool else {
            return uploader::SpoolAccount::default();
        };
        let shared = m.shared.lock_applied();
        let kept_in_flight = shared
            .spool
            .pending()
            .filter(|f| !m.backlog.iter().any(|b| b.id == f.id))
            .count() as u64;
        let c = &m.counts;
        uploader::SpoolAccount {
            kept: shared.spool.pending().count() as u64,
            kept_in_flight,
            dropped: c.dropped,
            dropped_disk_full: c.dropped_disk_full,
            unwritten: c.unwritten,
            not_handed: c.spooled.saturating_sub(c.handed) + c.earlier_run_lost,
            open_lost: 0,
        }
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

    /// Offline, whether the open fragment's frames come more than [`FRAGMENT_AHEAD`] ahead of
    /// the wall clock since it began: a recording of unknown start, released a fragment at a
    /// time (`pace_fragment` holds each until its producer time), whose frames then arrive at
    /// once. Never for a live stream: a burst after a network hiccup must not wait for the end
    /// of its fragment.
    fn fragment_ahead(&self) -> bool {
        if !self.offline {
            return false;
        }
        let (Some(current), Some(began)) = (self.splitter.current_fragment(), self.fragment_began)
        else {
            return false;
        };
        let media_ns = self.ns(current.last_block_time - current.timecode as i64);
        media_ns > (began.elapsed() + FRAGMENT_AHEAD).as_nanos() as u64
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
            // Metadata an idle end already sent stays with the fragment (for a replay).
            self.uploader
                .end_fragment_with(Some(whole), end_ns, |idle| idle.flatten().map(|m| m.tags));
        }
        self.uploader.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an ack ends a fragment's life: it was stored (at the level that releases it from
/// memory) or refused for good.
fn ack_releases(ack: &Ack, release_on: AckLevel) -> bool {
    match ack.event_type {
        AckEventType::Persisted => true,
        AckEventType::Received => release_on == AckLevel::Received,
        AckEventType::Error => ack
            .error_id
            .is_some_and(|id| classify(id) == ErrorClass::BadFragment),
        _ => false,
    }
}

/// Keeps the first `keep` bytes of `chunks`.
fn truncate_chunks(chunks: &mut Vec<Bytes>, keep: u64) {
    let mut left = keep;
    let mut n = 0;
    for c in chunks.iter_mut() {
        if left == 0 {
            break;
        }
        if (c.len() as u64) > left {
            c.truncate(left as usize);
        }
        left -= c.len() as u64;
        n += 1;
    }
    chunks.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragment cut short of the service's limits was cut where the frames' time jumped
    /// past them: the advice about key frames would be wrong.
    #[test]
    fn a_cut_at_a_jump_in_time_is_not_blamed_on_key_frames() {
        let cut = |span_ms, size| {
            Notice::FragmentCut {
                timecode: 0,
                span_ms,
                size,
            }
            .to_string()
        };
        assert!(cut(0, 80_000).contains("the frames' time jumped"));
        assert!(!cut(0, 80_000).contains("key-int-max"));
        assert!(cut(10_000, 80_000).contains("x264enc key-int-max"));
        assert!(cut(2_000, 50 << 20).contains("x264enc key-int-max"));
    }

    /// An ack is applied (its done record written) on the blocking pool, never by the thread
    /// it comes on, nor by one that only reads the spool: one that comes while the spool is
    /// held (a fragment being written) is applied once it is let go.
    #[test]
    fn an_ack_is_applied_on_the_blocking_pool_once_the_spool_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), "s", 1 << 30).unwrap();
        let h = spool
            .append_header(1_000, "v", &Bytes::from_static(b"H"))
            .unwrap();
        let (f, _) = spool
            .append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"fragment")])
            .unwrap();
        let mut shared = SpoolShared {
            spool,
            by_time: HashMap::new(),
            early: HashSet::new(),
            newest: None,
        };
        shared.expect(&f);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let link = Arc::new(SpoolLink::new(shared, runtime.handle().clone()));
        let held = link.lock();
        // The runtime's thread: returns at once, the spool still held.
        std::thread::scope(|s| s.spawn(|| link.acked(1_000)).join().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(held.spool.get(f.id).is_some(), "applied while held");
        drop(held);
        let applied = |id: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while link.lock().spool.get(id).is_some() {
                assert!(Instant::now() < deadline, "not applied when let go");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        applied(f.id);

        // A fragment acknowledged before it was spooled (an idle fragment) is released as
        // its write registers it.
        let mut guard = link.lock();
        guard.done(3_000);
        let (g, _) = guard
            .spool
            .append_fragment(h, 2_000, (2, 3), &[Bytes::from_static(b"idle")])
            .unwrap();
        guard.expect(&g);
        assert!(
            guard.spool.get(g.id).is_none(),
            "the early ack is forgotten"
        );
        drop(guard);

        // An ack for a time not yet spooled (an idle fragment acknowledged early) is kept
        // for it; one for a time already done is not (PERSISTED after RECEIVED).
        let mut guard = link.lock();
        guard.done(5_000);
        assert!(guard.early.contains(&5_000));
        guard.done(1_000);
        assert!(!guard.early.contains(&1_000));
    }
}
