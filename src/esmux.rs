//! Elementary streams in: H.264 or H.265 access units, and optionally one audio stream (AAC,
//! G.711 A-law/µ-law or Opus), the input of AWS's kvssink, made into the Matroska stream KVS
//! takes, which then goes the same way as matroskamux output. Free of GStreamer.
//!
//! The header has the shape AWS's producer sends: an EBML header with its default fields,
//! a Segment and Clusters of unknown size (short form), Info with a 1 ms TimecodeScale, the
//! video track as number 1 and the audio track as number 2 (the service's HLS, DASH and
//! GetClip require it). A video key frame starts a Cluster (a fragment) as [`Fragmentation`]
//! says: every key frame (AWS's `key-frame-fragmentation=true`), or the first key frame
//! `fragment-duration` after the cluster's start (`false`); never two within
//! [`MIN_FRAGMENT_MS`] (the service takes at most 5 fragments a second). Every frame is a
//! SimpleBlock whose payload is the frame as it came, not copied.
//!
//! With two streams, frames are written in time order: each waits until the other stream has
//! reached its time, or has been silent for [`MAX_WAIT_MS`] of the waiting stream's time, or
//! has ended. Audio waits longer for video: [`MAX_WAIT_MS`] beyond the video's own delay (how
//! far audio had got ahead when a video frame came: an encoder's lookahead, x264enc's 1.5 s),
//! and, until a fragment that can take it has begun, for the video key frame that begins one
//! (at most [`MAX_AUDIO_HOLD_MS`]). Audio before that key frame cannot be sent; how much was
//! dropped is reported once ([`Written::audio_before_video`]). A single stream is written as
//! it comes.

use std::collections::VecDeque;

use bytes::Bytes;
use kvs_format::ebml::{Writer, write_id, write_vint};
use kvs_format::ids::*;
use kvs_format::matroska::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};

/// The video track: codec and what the Matroska header says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// `V_MPEG4/ISO/AVC` or `V_MPEGH/ISO/HEVC`.
    pub codec_id: &'static str,
    /// avcC or hvcC (the caps' codec_data); empty in Annex B form, where it is built from
    /// the stream's parameter sets.
    pub codec_private: Bytes,
    pub width: u32,
    pub height: u32,
    /// H.264 or H.265 in Annex B form (`stream-format=byte-stream`): each access unit is
    /// made length-prefixed (a copy), the form Matroska holds.
    pub annexb: bool,
}

/// The audio track: codec and what the Matroska header says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioTrack {
    /// `A_AAC`, `A_MS/ACM` (G.711) or `A_OPUS`.
    pub codec_id: &'static str,
    /// AudioSpecificConfig, WAVEFORMATEX or OpusHead.
    pub codec_private: Bytes,
    pub rate: u32,
    pub channels: u32,
    /// Bits per sample, for PCM-like codecs.
    pub bit_depth: Option<u32>,
    /// Opus's pre-skip (ns).
    pub codec_delay_ns: Option<u64>,
}

pub use kvs_format::matroska::{
    CODEC_AAC, CODEC_ACM, CODEC_H264, CODEC_H265, CODEC_OPUS, WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW,
};

pub const VIDEO_TRACK: u8 = 1;
pub const AUDIO_TRACK: u8 = 2;

/// How long (in the waiting stream's own time) a frame waits for the other stream before it
/// is written without it. Audio waits this long beyond the video's measured delay.
pub const MAX_WAIT_MS: u64 = 1000;

/// The most audio (ms of its own time) held while no fragment can take it (before the first
/// video key frame, or the one a new header waits for), and the longest audio waits for video
/// however late video has been: beyond it, the oldest audio is dropped (and said), so memory
/// stays bounded when video never comes.
pub const MAX_AUDIO_HOLD_MS: u64 = 10_000;

/// The most audio frames held, whatever their times say (Opus at 2.5 ms a frame: 10 s).
pub const MAX_AUDIO_HOLD_FRAMES: usize = 4096;

/// For a recording (audio read faster than real time, ahead of an encoder's first video
/// frame), the hold while no fragment can take audio is bounded by memory alone: this much
/// audio (ms)...
pub const RECORDING_AUDIO_HOLD_MS: u64 = 600_000;
/// ... in at most this many frames (G.711 at 1,000 samples a frame and AAC at 1,024: 10
/// minutes, a few MB).
pub const RECORDING_AUDIO_HOLD_FRAMES: usize = 65_536;

/// The shortest fragment: Kinesis Video Streams takes at most 5 fragments a second per
/// stream, so a key frame within this of the cluster's start does not begin a new one.
pub const MIN_FRAGMENT_MS: u64 = 200;

/// Where clusters (fragments) begin: AWS's `key-frame-fragmentation` and `fragment-duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragmentation {
    /// A cluster at every video key frame (at least [`MIN_FRAGMENT_MS`] apart); else at the
    /// first key frame `duration_ms` or more after the cluster's start.
    pub key_frame: bool,
    /// `fragment-duration` (ms).
    pub duration_ms: u64,
}

impl Default for Fragmentation {
    fn default() -> Self {
        Fragmentation {
            key_frame: true,
            duration_ms: 2000,
        }
    }
}

impl Fragmentation {
    /// How long after a cluster's start a key frame may begin the next one.
    pub fn min_cluster_ms(&self) -> u64 {
        if self.key_frame {
            MIN_FRAGMENT_MS
        } else {
            self.duration_ms.max(MIN_FRAGMENT_MS)
        }
    }
}

/// The WAVEFORMATEX of G.711 (8-bit samples): CodecPrivate of an `A_MS/ACM` track.
pub fn g711_codec_private(format_tag: u16, rate: u32, channels: u16) -> Bytes {
    let mut w = Vec::with_capacity(18);
    w.extend_from_slice(&format_tag.to_le_bytes());
    w.extend_from_slice(&channels.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * u32::from(channels)).to_le_bytes()); // bytes per second
    w.extend_from_slice(&channels.to_le_bytes()); // block align
    w.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    w.extend_from_slice(&0u16.to_le_bytes()); // no extra bytes
    Bytes::from(w)
}

/// An OpusHead (RFC 7845) for mapping family 0 (one or two channels), when upstream's caps
/// carry none.
pub fn opus_head(rate: u32, channels: u8, pre_skip: u16) -> Bytes {
    let mut w = Vec::with_capacity(19);
    w.extend_from_slice(b"OpusHead");
    w.push(1);
    w.push(channels);
    w.extend_from_slice(&pre_skip.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&0i16.to_le_bytes());
    w.push(0);
    Bytes::from(w)
}

/// Opus's pre-skip (in 48 kHz samples) as written in an OpusHead.
pub fn opus_pre_skip(head: &[u8]) -> Option<u16> {
    (head.len() >= 12 && head.starts_with(b"OpusHead"))
        .then(|| u16::from_le_bytes([head[10], head[11]]))
}

/// What the muxer did with the frames it had, for the element to say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Frames written.
    pub frames: u32,
    /// Video frames before the first key frame: they cannot start a fragment, dropped.
    pub video_before_key_frame: u32,
    /// A run of video frames dropped before the stream's first key frame (or the first
    /// after a new session) ended: given once, when the key frame begins a fragment (or at
    /// the end, if none did).
    pub video_before_first_key: Option<VideoDropped>,
    /// A run of video frames further than a block can reach (32.7 s) from their cluster's
    /// key frame (a group of pictures that long), dropped until the next key frame: given
    /// once, when it begins a fragment (or at the end).
    pub video_too_far: Option<VideoDropped>,
    /// Audio frames before the first fragment, dropped.
    pub audio_before_key_frame: u32,
    /// The audio stream's caps never came while video waited: the header went out without
    /// an audio track.
    pub audio_given_up: bool,
    /// Audio frames further than a block can reach (32.7 s) from the last video key frame
    /// (video stalled while audio went on), dropped.
    pub audio_too_far: u32,
    /// Audio that came before the video key frame that began the first fragment able to
    /// take it (the stream's first, or the one a new header waited for) was dropped: the
    /// whole of it, given once, when that fragment begins (or at the end, if none did).
    pub audio_before_video: Option<AudioDropped>,
    /// No fragment could take audio for [`MAX_AUDIO_HOLD_MS`] (video has not come, or
    /// brings no key frame): from now on the oldest audio is dropped. Set once until a
    /// fragment takes audio again.
    pub audio_hold_full: bool,
}

/// Audio dropped because no fragment could take it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AudioDropped {
    /// Frames dropped.
    pub frames: u32,
    /// How much audio (ms): from the first frame dropped to the key frame that began the
    /// fragment, or to the last frame dropped.
    pub ms: u64,
    /// The key frame that began the fragment (ms), if one did.
    pub key_frame_ms: Option<u64>,
    /// Some of it was dropped because video did not come within [`MAX_AUDIO_HOLD_MS`].
    pub held_too_long: bool,
}

/// Video frames dropped in a row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VideoDropped {
    pub frames: u32,
    pub bytes: u64,
    /// From the first frame dropped to the key frame that ended the run (or to the last
    /// frame dropped).
    pub ms: u64,
    /// The key frame that ended the run (ms), if one did.
    pub key_frame_ms: Option<u64>,
}

/// Video being dropped: before a key frame, or too far from the last one.
#[derive(Debug, Clone, Copy)]
struct VideoRun {
    too_far: bool,
    frames: u32,
    bytes: u64,
    first_ms: u64,
    last_ms: u64,
}

/// Audio being dropped until a fragment can take it.
#[derive(Debug, Clone, Copy)]
struct Dropping {
    frames: u32,
    first_ms: u64,
    last_ms: u64,
    held_too_long: bool,
}

#[derive(Debug)]
struct Frame {
    /// Decoding order time (ms): DTS for video when it has one, else PTS.
    order: u64,
    pts: u64,
    key: bool,
    data: Bytes,
    /// A key frame whose in-band parameter sets (Annex B) differ from the stream's so far:
    /// its codec private, for a new header before it.
    new_private: Option<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audio {
    /// No audio stream linked.
    Absent,
    /// Linked: frames of the two streams are interleaved.
    Linked,
    /// Ended (EOS, released, or given up on): video does not wait.
    Ended,
}

/// Makes Matroska out of one video elementary stream and at most one audio stream.
#[derive(Debug)]
pub struct EsMuxer {
    video: Option<VideoTrack>,
    /// The avcC or hvcC of an Annex B stream, from its first parameter sets.
    annexb_private: Option<Bytes>,
    /// The codec private of the last Annex B parameter sets seen (queued frames may still
    /// be written with the one before).
    annexb_latest: Option<Bytes>,
    audio_track: Option<AudioTrack>,
    audio: Audio,
    header_sent: bool,
    /// The header sent has the audio track.
    header_audio: bool,
    /// A new header is due at the next video key frame (audio joined or changed).
    header_at_key_frame: bool,
    /// The open cluster's timecode (ms).
    cluster_ms: Option<u64>,
    video_q: VecDeque<Frame>,
    audio_q: VecDeque<Frame>,
    /// Where clusters begin.
    fragmentation: Fragmentation,
    /// The latest audio time pushed (ms): how far audio has got when a video frame comes.
    audio_reached: Option<u64>,
    /// The video's delay behind audio (ms): the most audio had got ahead of a video frame
    /// when it came (an encoder's lookahead), at most [`MAX_AUDIO_HOLD_MS`].
    video_lag_ms: u64,
    /// Audio dropped since the last fragment that took audio began (said when the next
    /// one begins).
    dropping: Option<Dropping>,
    /// Video being dropped (said when the next key frame begins a fragment).
    video_dropping: Option<VideoRun>,
    /// The most audio (ms, frames) held while no fragment can take it.
    audio_hold: (u64, usize),
}

impl Default for EsMuxer {
    fn default() -> Self {
        EsMuxer::new()
    }
}

impl EsMuxer {
    /// A muxer with no stream yet: video comes with [`EsMuxer::set_video`].
    pub fn new() -> EsMuxer {
        EsMuxer {
            video: None,
            annexb_private: None,
            annexb_latest: None,
            audio_track: None,
            audio: Audio::Absent,
            header_sent: false,
            header_audio: false,
            header_at_key_frame: false,
            cluster_ms: None,
            video_q: VecDeque::new(),
            audio_q: VecDeque::new(),
            fragmentation: Fragmentation::default(),
            audio_reached: None,
            video_lag_ms: 0,
            dropping: None,
            video_dropping: None,
            audio_hold: (MAX_AUDIO_HOLD_MS, MAX_AUDIO_HOLD_FRAMES),
        }
    }

    /// Where clusters (fragments) begin, from now on.
    pub fn set_fragmentation(&mut self, fragmentation: Fragmentation) {
        self.fragmentation = fragmentation;
    }

    /// Where clusters (fragments) begin.
    pub fn fragmentation(&self) -> Fragmentation {
        self.fragmentation
    }

    /// Audio is read faster than real time (a recording): while no fragment can take it, it
    /// is held up to [`RECORDING_AUDIO_HOLD_MS`], not [`MAX_AUDIO_HOLD_MS`].
    pub fn set_recording(&mut self, recording: bool) {
        self.audio_hold = if recording {
            (RECORDING_AUDIO_HOLD_MS, RECORDING_AUDIO_HOLD_FRAMES)
        } else {
            (MAX_AUDIO_HOLD_MS, MAX_AUDIO_HOLD_FRAMES)
        };
    }

    /// How long (ms of audio) audio is held while no fragment can take it.
    pub fn audio_hold_ms(&self) -> u64 {
        self.audio_hold.0
    }

    /// How long (ms of audio) audio waits for video once a fragment can take it: a recording's
    /// as long as it is held (its video comes, however far behind), a live stream's as long
    /// as video has been late and a second more.
    pub fn audio_wait_ms(&self) -> u64 {
        if self.audio_hold.0 > MAX_AUDIO_HOLD_MS {
            return self.audio_hold.0;
        }
        (MAX_WAIT_MS + self.video_lag_ms).min(MAX_AUDIO_HOLD_MS)
    }

    /// Whether the video input is an elementary stream (else it is Matroska, and this muxer
    /// is not used for it).
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Sets (or clears: Matroska input) the video track. New codec data mid-stream means a
    /// new header, so a new PutMedia session, from the next key frame.
    pub fn set_video(&mut self, track: Option<VideoTrack>) {
        if self.video != track {
            self.video = track;
            self.annexb_private = None;
            self.annexb_latest = None;
            self.header_sent = false;
        }
    }

    /// An audio stream was linked: from now on video waits for it.
    pub fn link_audio(&mut self) {
        self.audio = Audio::Linked;
    }

    /// The audio stream's format. A new one after the header means a new header, at the next
    /// video key frame: true when it waits for one (ask upstream for it).
    pub fn set_audio(&mut self, track: AudioTrack) -> bool {
        if self.audio_track.as_ref() != Some(&track) {
            if self.header_sent {
                // Video goes on under the header sent until its next key frame, where the
                // new header (with this audio) begins; audio waits for it.
                self.header_audio = false;
                self.header_at_key_frame = true;
            }
            self.audio_track = Some(track);
        }
        self.audio = Audio::Linked;
        self.header_at_key_frame
    }

    /// The audio stream ended (EOS or its pad released): what it sent is written, and video
    /// no longer waits for it.
    pub fn end_audio(&mut self, out: &mut Vec<Bytes>) -> Written {
        self.audio = Audio::Ended;
        self.drain(out, false)
    }

    /// Whether the audio stream is linked and has not ended.
    pub fn audio_running(&self) -> bool {
        self.audio == Audio::Linked
    }

    /// How far (ms of its own time) queued video runs ahead of audio: a producer faster than
    /// real time waits before it reaches [`MAX_WAIT_MS`], when audio keeps coming.
    pub fn video_ahead_ms(&self) -> u64 {
        Self::span(&self.video_q)
    }

    /// How far (ms) queued audio runs ahead of video.
    pub fn audio_ahead_ms(&self) -> u64 {
        Self::span(&self.audio_q)
    }

    /// Forgets queued frames and the open cluster (a flush, or a stop): the next frames
    /// start with a key frame, and after a stop with a header.
    pub fn reset(&mut self, new_session: bool) {
        self.video_q.clear();
        self.audio_q.clear();
        self.cluster_ms = None;
        // Running time starts again; the video's delay stays what it was measured to be.
        self.audio_reached = None;
        self.dropping = None;
        self.video_dropping = None;
        if new_session {
            self.header_sent = false;
            self.header_at_key_frame = false;
        }
    }

    /// One video access unit: presented at `pts_ms`, decoded at `dts_ms` (if known).
    /// Writes whatever can be written into `out`: the header before the first frame, a new
    /// Cluster at each key frame, SimpleBlock headers followed by the frames themselves.
    pub fn push_video(
        &mut self,
        pts_ms: u64,
        dts_ms: Option<u64>,
        key: bool,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) -> Written {
        let (mut key, mut frame) = (key, frame);
        let mut new_private = None;
        if let Some(video) = self.video.as_ref().filter(|v| v.annexb) {
            let codec = if video.codec_id == CODEC_H265 {
                crate::annexb::Codec::H265
            } else {
                crate::annexb::Codec::H264
            };
            let converted = crate::annexb::to_length_prefixed(&frame, codec);
            let private = converted.codec_private(codec);
            if self.annexb_private.is_none() {
                self.annexb_private = private.clone();
                self.annexb_latest = private;
            } else if key && private.is_some() && private != self.annexb_latest {
                // New parameter sets in band (a resolution change the caps do not show, as
                // from rtph264depay): a new header from this key frame.
                self.annexb_latest = private.clone();
                new_private = private;
            }
            // A fragment cannot start before the decoder's configuration is known.
            key &= self.annexb_private.is_some();
            frame = converted.frame;
        }
        let order = dts_ms.unwrap_or(pts_ms);
        if let Some(reached) = self.audio_reached {
            // Audio this far ahead had to wait for this frame: audio waits as long from now on.
            let lag = reached.saturating_sub(order).min(MAX_AUDIO_HOLD_MS);
            self.video_lag_ms = self.video_lag_ms.max(lag);
        }
        self.video_q.push_back(Frame {
            order,
            pts: pts_ms,
            key,
            data: frame,
            new_private,
        });
        self.drain(out, false)
    }

    /// One audio frame presented at `pts_ms`.
    pub fn push_audio(&mut self, pts_ms: u64, frame: Bytes, out: &mut Vec<Bytes>) -> Written {
        self.audio_reached = Some(self.audio_reached.map_or(pts_ms, |r| r.max(pts_ms)));
        self.audio_q.push_back(Frame {
            order: pts_ms,
            pts: pts_ms,
            key: true,
            data: frame,
            new_private: None,
        });
        self.drain(out, false)
    }

    /// Writes every queued frame (end of stream); audio dropped and not yet reported is.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) -> Written {
        let mut written = self.drain(out, true);
        self.end_video_run(None, &mut written);
        if let Some(d) = self.dropping.take() {
            written.audio_before_video = Some(AudioDropped {
                frames: d.frames,
                ms: d.last_ms.saturating_sub(d.first_ms),
                key_frame_ms: None,
                held_too_long: d.held_too_long,
            });
        }
        written
    }

    /// The run of video frames being dropped ends (at the key frame `key_ms` that begins a
    /// fragment, or at the end): given in `written`.
    fn end_video_run(&mut self, key_ms: Option<u64>, written: &mut Written) {
        let Some(run) = self.video_dropping.take() else {
            return;
        };
        let dropped = VideoDropped {
            frames: run.frames,
            bytes: run.bytes,
            ms: key_ms.unwrap_or(run.last_ms).saturating_sub(run.first_ms),
            key_frame_ms: key_ms,
        };
        if run.too_far {
            written.video_too_far = Some(dropped);
        } else {
            written.video_before_first_key = Some(dropped);
        }
    }

    /// A video frame is dropped (`too_far`: from its key frame; else before one).
    fn drop_video(&mut self, f: &Frame, too_far: bool, written: &mut Written) {
        if self.video_dropping.is_some_and(|r| r.too_far != too_far) {
            self.end_video_run(None, written);
        }
        let run = self.video_dropping.get_or_insert(VideoRun {
            too_far,
            frames: 0,
            bytes: 0,
            first_ms: f.pts,
            last_ms: f.pts,
        });
        run.frames += 1;
        run.bytes += f.data.len() as u64;
        run.first_ms = run.first_ms.min(f.pts);
        run.last_ms = run.last_ms.max(f.pts);
    }

    /// Whether a fragment that takes audio is open.
    fn audio_has_a_fragment(&self) -> bool {
        self.cluster_ms.is_some() && self.header_audio
    }

    fn span(q: &VecDeque<Frame>) -> u64 {
        match (q.front(), q.back()) {
            (Some(a), Some(b)) => b.order.saturating_sub(a.order),
            _ => 0,
        }
    }

    /// Writes queued frames in time order while the order is certain (or `all`).
    fn drain(&mut self, out: &mut Vec<Bytes>, all: bool) -> Written {
        let mut written = Written::default();
        loop {
            let waiting_for_audio = self.audio == Audio::Linked;
            let next_video = match (self.video_q.front(), self.audio_q.front()) {
                (None, None) => break,
                (Some(v), Some(a)) => v.order <= a.order,
                (Some(_), None) => {
                    if !all && waiting_for_audio && Self::span(&self.video_q) < MAX_WAIT_MS {
                        break;
                    }
                    true
                }
                (None, Some(_)) => {
                    // Audio waits for video, which always exists.
                    if !all {
                        let span = Self::span(&self.audio_q);
                        if self.audio_has_a_fragment() {
                            // As long as video has been late, and a second more.
                            if span < self.audio_wait_ms() {
                                break;
                            }
                        } else if span < self.audio_hold.0 && self.audio_q.len() < self.audio_hold.1
                        {
                            // No fragment can take audio yet: it waits for the key frame
                            // that begins one, as long as memory allows.
                            break;
                        } else if let Some(d) = self.dropping.as_mut()
                            && !d.held_too_long
                        {
                            d.held_too_long = true;
                            written.audio_hold_full = true;
                        } else if self.dropping.is_none() {
                            written.audio_hold_full = true;
                            self.dropping = Some(Dropping {
                                frames: 0,
                                first_ms: self.audio_q.front().map_or(0, |f| f.pts),
                                last_ms: 0,
                                held_too_long: true,
                            });
                        }
                    }
                    false
                }
            };
            if next_video {
                if !self.header_sent
                    && self.video_q.front().is_some_and(|f| f.key)
                    && self.audio == Audio::Linked
                    && self.audio_track.is_none()
                {
                    // The audio format is not known yet: the header waits for it, as long
                    // as video may wait.
                    if !all && Self::span(&self.video_q) < MAX_WAIT_MS {
                        break;
                    }
                    self.audio = Audio::Ended;
                    written.audio_given_up = true;
                }
                let f = self.video_q.pop_front().expect("checked");
                self.write_video(f, out, &mut written);
            } else {
                let f = self.audio_q.pop_front().expect("checked");
                self.write_audio(f, out, &mut written);
            }
        }
        written
    }

    fn write_video(&mut self, f: Frame, out: &mut Vec<Bytes>, written: &mut Written) {
        if f.key && self.video.is_some() {
            if let Some(private) = f.new_private.clone() {
                self.annexb_private = Some(private);
                self.header_sent = false;
            }
            if std::mem::take(&mut self.header_at_key_frame) {
                self.header_sent = false;
            }
            let header_was_sent = self.header_sent;
            if !self.header_sent {
                self.header_sent = true;
                self.header_audio = self.audio_track.is_some() && self.audio != Audio::Absent;
                out.push(Bytes::from(self.header()));
            }
            let since = self.cluster_ms.map(|start| f.pts as i64 - start as i64);
            let new_cluster = !header_was_sent
                || since.is_none_or(|since| {
                    // Timecodes going back, far enough from the cluster's start, or further
                    // than a block reaches.
                    since < 0
                        || since as u64 >= self.fragmentation.min_cluster_ms()
                        || since > i64::from(i16::MAX)
                });
            if new_cluster {
                self.end_video_run(Some(f.pts), written);
                out.push(Bytes::copy_from_slice(&kvs_format::kvs::cluster_head(
                    f.pts,
                )));
                self.cluster_ms = Some(f.pts);
                if self.header_audio
                    && let Some(d) = self.dropping.take()
                {
                    written.audio_before_video = Some(AudioDropped {
                        frames: d.frames,
                        ms: f.pts.max(d.last_ms).saturating_sub(d.first_ms),
                        key_frame_ms: Some(f.pts),
                        held_too_long: d.held_too_long,
                    });
                }
            }
        } else if !self.header_sent {
            self.cluster_ms = None;
        }
        let Some(cluster_ms) = self.cluster_ms else {
            written.video_before_key_frame += 1;
            self.drop_video(&f, false, written);
            return;
        };
        if i16::try_from(f.pts as i64 - cluster_ms as i64).is_err() {
            // A group of pictures longer than a block reaches (the fragment was cut at the
            // service's 10 s long before): dropped until the next key frame.
            self.drop_video(&f, true, written);
            return;
        }
        Self::block(out, VIDEO_TRACK, cluster_ms, f);
        written.frames += 1;
    }

    fn write_audio(&mut self, f: Frame, out: &mut Vec<Bytes>, written: &mut Written) {
        let Some(cluster_ms) = self.cluster_ms.filter(|_| self.header_audio) else {
            written.audio_before_key_frame += 1;
            let d = self.dropping.get_or_insert(Dropping {
                frames: 0,
                first_ms: f.pts,
                last_ms: f.pts,
                held_too_long: false,
            });
            if d.frames == 0 {
                d.first_ms = f.pts;
            }
            d.frames += 1;
            d.last_ms = d.last_ms.max(f.pts);
            return;
        };
        if i16::try_from(f.pts as i64 - cluster_ms as i64).is_err() {
            // Video stalled: audio cannot belong to its last key frame's cluster any more.
            written.audio_too_far += 1;
            return;
        }
        Self::block(out, AUDIO_TRACK, cluster_ms, f);
        written.frames += 1;
    }

    /// A SimpleBlock header, then the frame itself (within a block's reach of its cluster:
    /// the callers drop frames further away).
    fn block(out: &mut Vec<Bytes>, track: u8, cluster_ms: u64, f: Frame) {
        let relative = f.pts as i64 - cluster_ms as i64;
        let relative =
            i16::try_from(relative).unwrap_or(if relative < 0 { i16::MIN } else { i16::MAX });
        let mut block = Vec::with_capacity(16);
        write_id(&mut block, ID_SIMPLE_BLOCK);
        write_vint(&mut block, f.data.len() as u64 + 4);
        block.push(0x80 | track);
        block.extend_from_slice(&relative.to_be_bytes());
        block.push(if f.key { 0x80 } else { 0 });
        out.push(Bytes::from(block));
        out.push(f.data);
    }

    /// The stream header: EBML header, Segment, Info, Tracks.
    pub fn header(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.master(ID_EBML, |w| {
            w.uint(ID_EBML_VERSION, 1)
                .uint(ID_EBML_READ_VERSION, 1)
                .uint(ID_EBML_MAX_ID_LENGTH, 4)
                .uint(ID_EBML_MAX_SIZE_LENGTH, 8)
                .string(ID_DOC_TYPE, "matroska")
                .uint(ID_DOC_TYPE_VERSION, 4)
                .uint(ID_DOC_TYPE_READ_VERSION, 2);
        });
        let mut out = w.finish();
        // Segment of unknown size, in the short (one byte) form.
        write_id(&mut out, ID_SEGMENT);
        out.push(0xFF);
        let audio = self
            .audio_track
            .as_ref()
            .filter(|_| self.audio != Audio::Absent);
        let mut w = Writer::new();
        w.master(ID_INFO, |w| {
            w.uint(ID_TIMECODE_SCALE, 1_000_000)
                .string(ID_MUXING_APP, "kvssink")
                .string(ID_WRITING_APP, "kvssink");
        })
        .master(ID_TRACKS, |w| {
            if let Some(t) = &self.video {
                w.master(ID_TRACK_ENTRY, |w| {
                    w.uint(ID_TRACK_NUMBER, VIDEO_TRACK.into())
                        .uint(ID_TRACK_UID, VIDEO_TRACK.into())
                        .uint(ID_TRACK_TYPE, TRACK_TYPE_VIDEO)
                        .string(ID_CODEC_ID, t.codec_id)
                        .element(
                            ID_CODEC_PRIVATE,
                            self.annexb_private.as_ref().unwrap_or(&t.codec_private),
                        )
                        .master(ID_VIDEO, |w| {
                            w.uint(ID_PIXEL_WIDTH, t.width.into())
                                .uint(ID_PIXEL_HEIGHT, t.height.into());
                        });
                });
            }
            if let Some(a) = audio {
                w.master(ID_TRACK_ENTRY, |w| {
                    w.uint(ID_TRACK_NUMBER, AUDIO_TRACK.into())
                        .uint(ID_TRACK_UID, AUDIO_TRACK.into())
                        .uint(ID_TRACK_TYPE, TRACK_TYPE_AUDIO)
                        .string(ID_CODEC_ID, a.codec_id);
                    if !a.codec_private.is_empty() {
                        w.element(ID_CODEC_PRIVATE, &a.codec_private);
                    }
                    if let Some(delay) = a.codec_delay_ns {
                        w.uint(ID_CODEC_DELAY, delay);
                    }
                    w.master(ID_AUDIO, |w| {
                        w.float(ID_SAMPLING_FREQUENCY, a.rate.into())
                            .uint(ID_CHANNELS, a.channels.into());
                        if let Some(bits) = a.bit_depth {
                            w.uint(ID_BIT_DEPTH, bits.into());
                        }
                    });
                });
            }
        });
        out.extend(w.finish());
        out
    }
}

/// The codec of an H.264 or H.265 caps structure name, if it is one.
pub fn codec_for(caps_name: &str) -> Option<&'static str> {
    match caps_name {
        "video/x-h264" => Some(CODEC_H264),
        "video/x-h265" => Some(CODEC_H265),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::{Event, Splitter};
    use kvs_format::ebml::{read_header, read_uint};

    fn track() -> VideoTrack {
        VideoTrack {
            codec_id: CODEC_H264,
            codec_private: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
            width: 320,
            height: 240,
            annexb: false,
        }
    }

    fn aac() -> AudioTrack {
        AudioTrack {
            codec_id: CODEC_AAC,
            codec_private: Bytes::from_static(&[0x11, 0x90]),
            rate: 48000,
            channels: 2,
            bit_depth: None,
            codec_delay_ns: None,
        }
    }

    fn video_muxer() -> EsMuxer {
        let mut mux = EsMuxer::new();
        mux.set_video(Some(track()));
        mux
    }

    /// A muxer with H.264 video and AAC audio linked.
    fn av_muxer() -> EsMuxer {
        let mut mux = video_muxer();
        mux.link_audio();
        mux.set_audio(aac());
        mux
    }

    /// (track, absolute ms, key) of every SimpleBlock, and the track numbers and types of
    /// every header, in stream order.
    #[derive(Debug, Default)]
    struct Parsed {
        headers: Vec<Vec<(u64, u64, String)>>,
        blocks: Vec<(u8, i64, bool)>,
    }

    impl Parsed {
        /// The absolute times (ms) of `track`'s blocks, in stream order.
        fn times(&self, track: u8) -> Vec<i64> {
            self.blocks
                .iter()
                .filter(|b| b.0 == track)
                .map(|b| b.1)
                .collect()
        }
    }

    fn parse(pieces: &[Bytes]) -> Parsed {
        let all: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut parsed = Parsed::default();
        let mut at = 0;
        let mut cluster = 0i64;
        while at < all.len() {
            let h = read_header(&all[at..]).unwrap().unwrap();
            let body = at + h.len;
            match h.id {
                // Unknown-size masters: step inside.
                ID_SEGMENT | ID_CLUSTER => at = body,
                ID_TIMECODE => {
                    cluster =
                        read_uint(&all[body..body + h.size.unwrap() as usize]).unwrap() as i64;
                    at = body + h.size.unwrap() as usize;
                }
                ID_SIMPLE_BLOCK => {
                    let b = &all[body..];
                    let rel = i16::from_be_bytes([b[1], b[2]]) as i64;
                    parsed
                        .blocks
                        .push((b[0] & 0x7F, cluster + rel, b[3] & 0x80 != 0));
                    at = body + h.size.unwrap() as usize;
                }
                ID_TRACKS => {
                    let mut tracks = Vec::new();
                    let end = body + h.size.unwrap() as usize;
                    let mut t = body;
                    while t < end {
                        let e = read_header(&all[t..]).unwrap().unwrap();
                        let (mut number, mut kind, mut codec) = (0, 0, String::new());
                        let mut c = t + e.len;
                        let entry_end = c + e.size.unwrap() as usize;
                        while c < entry_end {
                            let f = read_header(&all[c..]).unwrap().unwrap();
                            let v = &all[c + f.len..c + f.len + f.size.unwrap() as usize];
                            match f.id {
                                ID_TRACK_NUMBER => number = read_uint(v).unwrap(),
                                ID_TRACK_TYPE => kind = read_uint(v).unwrap(),
                                ID_CODEC_ID => codec = String::from_utf8(v.to_vec()).unwrap(),
                                _ => {}
                            }
                            c += f.len + f.size.unwrap() as usize;
                        }
                        tracks.push((number, kind, codec));
                        t = entry_end;
                    }
                    parsed.headers.push(tracks);
                    at = end;
                }
                _ => at = body + h.size.unwrap() as usize,
            }
        }
        parsed
    }

    #[test]
    fn frames_become_clusters_at_key_frames_that_the_splitter_reads_back() {
        let mut mux = video_muxer();
        let mut out = Vec::new();
        let w = mux.push_video(0, None, false, Bytes::from_static(b"early"), &mut out);
        assert_eq!(w.video_before_key_frame, 1);
        assert!(out.is_empty());
        let frames = [
            (100, true),
            (133, false),
            (166, false),
            (2100, true),
            (2133, false),
        ];
        for (pts, key) in frames {
            let payload = Bytes::from(vec![pts as u8; 50]);
            let w = mux.push_video(pts, None, key, payload.clone(), &mut out);
            assert_eq!(w.frames, 1, "a lone video stream is written at once");
            assert_eq!(out.last(), Some(&payload), "the frame is not copied");
        }
        let mut splitter = Splitter::new(Default::default());
        let mut events = Vec::new();
        for piece in out {
            splitter.push(piece, &mut events).unwrap();
        }
        splitter.finish(&mut events).unwrap();
        let header = events.iter().find_map(|e| match e {
            Event::Header(h) => Some(h.clone()),
            _ => None,
        });
        let header = header.expect("a header");
        assert_eq!(header.tracks.len(), 1);
        assert_eq!(header.tracks[0].number, 1);
        assert_eq!(header.tracks[0].codec_id, CODEC_H264);
        assert_eq!(
            &header.tracks[0].codec_private[..],
            &track().codec_private[..]
        );
        assert_eq!(header.date_utc_ms, None);
        let starts: Vec<(u64, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::FragmentStart(s) => Some((s.timecode, s.key_frame)),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [(100, true), (2100, true)]);
        let blocks: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::FragmentEnd(s) => Some(s.blocks),
                _ => None,
            })
            .collect();
        assert_eq!(blocks, [3, 2]);
    }

    #[test]
    fn a_frame_too_far_from_its_key_frame_is_dropped_until_the_next_key_frame() {
        let mut mux = video_muxer();
        let mut out = Vec::new();
        mux.push_video(0, None, true, Bytes::from_static(b"k"), &mut out);
        let written = out.len();
        for t in [32_000, 32_767] {
            assert_eq!(
                mux.push_video(t, None, false, Bytes::from_static(b"d"), &mut out)
                    .frames,
                1
            );
        }
        // A block reaches 32767 ms from its cluster: these are dropped, and said once.
        for t in [32_800, 40_000, 59_960] {
            let w = mux.push_video(t, None, false, Bytes::from_static(b"dd"), &mut out);
            assert_eq!((w.frames, w.video_too_far), (0, None));
        }
        assert_eq!(
            out.len(),
            written + 4,
            "two frames, each a block header and the frame"
        );
        let w = mux.push_video(60_000, None, true, Bytes::from_static(b"K"), &mut out);
        assert_eq!(w.frames, 1);
        assert_eq!(
            w.video_too_far,
            Some(VideoDropped {
                frames: 3,
                bytes: 6,
                ms: 60_000 - 32_800,
                key_frame_ms: Some(60_000),
            })
        );
        // And a key frame further than a block reaches begins a cluster, whatever the
        // fragmentation asks.
        mux.set_fragmentation(Fragmentation {
            key_frame: false,
            duration_ms: 60_000,
        });
        let w = mux.push_video(100_000, None, true, Bytes::from_static(b"K"), &mut out);
        assert_eq!(w.frames, 1);
        let w = mux.push_video(100_040, None, false, Bytes::from_static(b"d"), &mut out);
        assert_eq!(w.frames, 1);
        let w = mux.push_video(140_000, None, false, Bytes::from_static(b"d"), &mut out);
        assert_eq!(w.frames, 0);
        let w = mux.flush(&mut out);
        assert_eq!(
            w.video_too_far,
            Some(VideoDropped {
                frames: 1,
                bytes: 1,
                ms: 0,
                key_frame_ms: None,
            })
        );
        let times: Vec<i64> = parse(&out).blocks.iter().map(|b| b.1).collect();
        assert_eq!(times, [0, 32_000, 32_767, 60_000, 100_000, 100_040]);
    }

    #[test]
    fn audio_and_video_are_interleaved_in_time_order_with_video_as_track_1() {
        let mut mux = video_muxer();
        mux.link_audio();
        let mut out = Vec::new();
        // Audio arrives 150 ms behind video, and its caps after the first video frames.
        let video: Vec<(u64, bool)> = (0..60).map(|i| (100 + i * 33, i % 30 == 0)).collect();
        let audio: Vec<u64> = (0..95).map(|i| 90 + i * 21).collect();
        let (mut v, mut a) = (0, 0);
        let mut written = 0;
        while v < video.len() || a < audio.len() {
            let video_due = video.get(v).map(|f| f.0);
            let audio_due = audio.get(a).map(|t| t + 150);
            if video_due.is_some() && (audio_due.is_none() || video_due <= audio_due) {
                let (pts, key) = video[v];
                let w = mux.push_video(pts, None, key, Bytes::from(vec![1; 10]), &mut out);
                written += w.frames;
                assert!(!w.audio_given_up);
                v += 1;
                if v == 3 {
                    mux.set_audio(aac());
                }
            } else {
                let w = mux.push_audio(audio[a], Bytes::from(vec![2; 6]), &mut out);
                written += w.frames + w.audio_before_key_frame;
                a += 1;
            }
        }
        written += mux.end_audio(&mut out).frames;
        written += mux.flush(&mut out).frames;
        let parsed = parse(&out);
        assert_eq!(
            parsed.headers,
            [vec![
                (1, TRACK_TYPE_VIDEO, CODEC_H264.to_owned()),
                (2, TRACK_TYPE_AUDIO, CODEC_AAC.to_owned())
            ]]
        );
        // The audio frame at 90 ms precedes the first key frame (100 ms): dropped.
        assert_eq!(written as usize, parsed.blocks.len() + 1);
        assert_eq!(parsed.blocks.len(), 60 + 94);
        let times: Vec<i64> = parsed.blocks.iter().map(|b| b.1).collect();
        assert!(times.is_sorted(), "blocks in time order: {times:?}");
        assert_eq!(parsed.blocks[0], (1, 100, true));
        let audio_blocks = parsed.blocks.iter().filter(|b| b.0 == 2).count();
        assert_eq!(audio_blocks, 94);
        assert!(parsed.blocks.iter().filter(|b| b.0 == 2).all(|b| b.2));
    }

    #[test]
    fn video_waits_for_the_audio_caps_at_most_max_wait_then_goes_alone() {
        let mut mux = video_muxer();
        mux.link_audio();
        let mut out = Vec::new();
        let mut given_up = false;
        let mut t = 0;
        while !given_up {
            let w = mux.push_video(t, None, t == 0, Bytes::from_static(b"v"), &mut out);
            given_up = w.audio_given_up;
            if !given_up {
                assert!(out.is_empty(), "nothing before the audio format is known");
            }
            t += 40;
        }
        assert!(t - 40 >= MAX_WAIT_MS);
        assert_eq!(
            parse(&out).headers,
            [vec![(1, TRACK_TYPE_VIDEO, CODEC_H264.to_owned())]]
        );
        // The audio format comes at last: a new header (new session) at the next key frame,
        // with the audio track; audio before it is not written under the old header, video
        // before it is (nothing of it is lost).
        out.clear();
        mux.set_audio(aac());
        mux.push_audio(t, Bytes::from_static(b"a"), &mut out);
        mux.push_video(t, None, false, Bytes::from_static(b"v"), &mut out);
        mux.push_video(t + 40, None, true, Bytes::from_static(b"k"), &mut out);
        mux.push_audio(t + 40, Bytes::from_static(b"a"), &mut out);
        mux.flush(&mut out);
        let parsed = parse(&out);
        assert_eq!(parsed.headers.len(), 1);
        assert_eq!(parsed.headers[0].len(), 2);
        assert_eq!(
            parsed.blocks,
            [
                (1, t as i64, false),
                (1, (t + 40) as i64, true),
                (2, (t + 40) as i64, true)
            ]
        );
    }

    #[test]
    fn a_stalled_video_stream_holds_audio_for_at_most_max_wait() {
        let mut mux = video_muxer();
        mux.set_audio(aac());
        let mut out = Vec::new();
        mux.push_video(0, None, true, Bytes::from_static(b"k"), &mut out);
        let mut t = 0;
        let mut frames = 0;
        loop {
            let w = mux.push_audio(t, Bytes::from_static(b"a"), &mut out);
            // The video frame goes out with the first audio frame, which then waits.
            frames += w.frames;
            if frames > 1 {
                break;
            }
            t += 20;
            assert!(t <= MAX_WAIT_MS + 40, "audio held too long");
        }
        assert!(t >= MAX_WAIT_MS);
    }

    #[test]
    fn g711_and_opus_codec_private() {
        let w = g711_codec_private(WAVE_FORMAT_MULAW, 8000, 1);
        assert_eq!(
            &w[..],
            &[
                7, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x40, 0x1f, 0, 0, 1, 0, 8, 0, 0, 0
            ]
        );
        let head = opus_head(48000, 2, 312);
        assert_eq!(head.len(), 19);
        assert_eq!(opus_pre_skip(&head), Some(312));
        assert_eq!(opus_pre_skip(b"nothing"), None);
    }

    #[test]
    fn new_parameter_sets_in_band_start_a_new_header() {
        // Annex B with the same caps all along (as rtph264depay gives): the second SPS is a
        // resolution change that only the stream shows.
        let mut mux = EsMuxer::new();
        mux.set_video(Some(VideoTrack {
            annexb: true,
            ..track()
        }));
        let sps1: &[u8] = &[0x67, 0x64, 0, 0x1f, 0xaa];
        let sps2: &[u8] = &[0x67, 0x64, 0, 0x28, 0xbb];
        let pps: &[u8] = &[0x68, 0xee, 0x3c, 0x80];
        let au = |nals: &[&[u8]]| -> Bytes {
            let mut v = Vec::new();
            for nal in nals {
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(nal);
            }
            Bytes::from(v)
        };
        let (idr, delta): (&[u8], &[u8]) = (&[0x65, 0x88, 1], &[0x41, 0x9a, 2]);
        let mut out = Vec::new();
        let frames = [
            (0, true, au(&[sps1, pps, idr])),
            (33, false, au(&[delta])),
            // The same parameter sets again: no new header.
            (66, true, au(&[sps1, pps, idr])),
            (100, true, au(&[sps2, pps, idr])),
            (133, false, au(&[delta])),
        ];
        for (t, key, frame) in frames {
            mux.push_video(t, None, key, frame, &mut out);
        }
        let headers: Vec<&Bytes> = out
            .iter()
            .filter(|p| p.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]))
            .collect();
        let holds = |h: &Bytes, sps: &[u8]| h.windows(sps.len()).any(|w| w == sps);
        assert_eq!(headers.len(), 2);
        assert!(holds(headers[0], sps1) && !holds(headers[0], sps2));
        assert!(holds(headers[1], sps2));
        // Every frame is written, the second header before the frame that changed.
        let parsed = parse(&out);
        assert_eq!(parsed.headers.len(), 2);
        assert_eq!(parsed.blocks.len(), 5);
    }

    #[test]
    fn audio_joining_after_the_header_starts_a_new_one_at_the_next_key_frame() {
        // Video alone for 40 frames, then audio links: video goes on under its header (no
        // frame dropped) until its next key frame, where the header with audio begins.
        let mut mux = video_muxer();
        let mut out = Vec::new();
        let (mut video_written, mut audio_dropped) = (0, 0);
        for i in 0..40u64 {
            let w = mux.push_video(
                i * 33,
                None,
                i % 30 == 0,
                Bytes::from(vec![1; 10]),
                &mut out,
            );
            video_written += w.frames;
        }
        mux.link_audio();
        assert!(mux.set_audio(aac()), "a new header waits for a key frame");
        let mut audio_t = 40 * 33;
        for i in 40..90u64 {
            let t = i * 33;
            while audio_t < t {
                let w = mux.push_audio(audio_t, Bytes::from(vec![2; 6]), &mut out);
                audio_dropped += w.audio_before_key_frame;
                video_written += w.frames;
                audio_t += 21;
            }
            let w = mux.push_video(t, None, i % 30 == 0, Bytes::from(vec![1; 10]), &mut out);
            assert_eq!(w.video_before_key_frame, 0, "no video dropped at {t}");
            audio_dropped += w.audio_before_key_frame;
            video_written += w.frames;
        }
        mux.end_audio(&mut out);
        mux.flush(&mut out);
        let parsed = parse(&out);
        assert_eq!(parsed.headers.len(), 2);
        assert_eq!(parsed.headers[0].len(), 1);
        assert_eq!(parsed.headers[1].len(), 2);
        let video = parsed.times(1);
        assert_eq!(video.len(), 90, "every video frame written");
        // Audio before the key frame at 1980 ms has no header to go under.
        let audio = parsed.times(2);
        assert!(audio.first().is_some_and(|&t| t >= 1980), "{audio:?}");
        assert!(audio_dropped > 0);
        let _ = video_written;
    }

    #[test]
    fn audio_far_from_a_stalled_video_is_dropped_not_an_error() {
        // Video stops after its first key frame for 40 s while audio goes on, then comes back.
        let mut mux = av_muxer();
        let mut out = Vec::new();
        let mut too_far = 0;
        mux.push_video(0, None, true, Bytes::from(vec![1; 10]), &mut out);
        for i in 1..2000u64 {
            let w = mux.push_audio(i * 20, Bytes::from(vec![2; 6]), &mut out);
            too_far += w.audio_too_far;
        }
        too_far += mux
            .push_video(40_000, None, true, Bytes::from(vec![1; 10]), &mut out)
            .audio_too_far;
        mux.push_audio(40_010, Bytes::from(vec![2; 6]), &mut out);
        let rest = mux.flush(&mut out);
        too_far += rest.audio_too_far;
        // Blocks reach 32767 ms past their cluster's key frame at 0.
        assert_eq!(
            too_far as u64,
            (1..2000u64).filter(|i| i * 20 > 32_767).count() as u64
        );
        let parsed = parse(&out);
        let audio = parsed.times(2);
        assert_eq!(
            audio.last(),
            Some(&40_010),
            "audio is sent again once video is back"
        );
    }

    #[test]
    fn audio_waits_for_a_late_first_video_frame_and_only_what_precedes_it_is_dropped() {
        // An encoder 1.5 s behind (x264enc's lookahead): audio from 0 ms comes 1.5 s before
        // the first video frame (key, at 10 ms).
        let mut mux = av_muxer();
        let mut out = Vec::new();
        let mut dropped = Written::default();
        let mut said = Vec::new();
        let (mut a, mut v) = (0u64, 0u64);
        // Wall time in ms: audio frame i (21 ms each) comes at i*21, video frame j at 10 +
        // j*33 + 1500.
        for wall in 0..6000u64 {
            while a * 21 <= wall && a < 250 {
                let w = mux.push_audio(a * 21, Bytes::from(vec![2; 6]), &mut out);
                dropped.audio_before_key_frame += w.audio_before_key_frame;
                said.extend(w.audio_before_video);
                assert!(!w.audio_hold_full);
                a += 1;
            }
            while 10 + v * 33 + 1500 <= wall && v < 150 {
                let w = mux.push_video(
                    10 + v * 33,
                    None,
                    v % 45 == 0,
                    Bytes::from(vec![1; 10]),
                    &mut out,
                );
                dropped.audio_before_key_frame += w.audio_before_key_frame;
                said.extend(w.audio_before_video);
                v += 1;
            }
        }
        let w = mux.end_audio(&mut out);
        said.extend(w.audio_before_video);
        let w = mux.flush(&mut out);
        said.extend(w.audio_before_video);
        let parsed = parse(&out);
        let audio = parsed.times(2);
        // Only the frame at 0 ms precedes the key frame at 10 ms.
        assert_eq!(audio.len(), 249, "{audio:?}");
        assert_eq!(audio.first(), Some(&21));
        assert_eq!(dropped.audio_before_key_frame, 1);
        assert_eq!(
            said,
            [AudioDropped {
                frames: 1,
                ms: 10,
                key_frame_ms: Some(10),
                held_too_long: false
            }]
        );
        // Audio waited for the late video, in time order.
        let times: Vec<i64> = parsed.blocks.iter().map(|b| b.1).collect();
        assert!(times.is_sorted(), "{times:?}");
        assert!(mux.audio_wait_ms() >= MAX_WAIT_MS + 1400);
    }

    #[test]
    fn audio_without_video_is_held_at_most_max_hold_then_dropped_and_said() {
        let mut mux = av_muxer();
        let mut out = Vec::new();
        let mut full = 0;
        let mut said = Vec::new();
        let mut dropped = 0;
        for i in 0..1000u64 {
            let w = mux.push_audio(i * 20, Bytes::from(vec![2; 6]), &mut out);
            full += u32::from(w.audio_hold_full);
            dropped += w.audio_before_key_frame;
            said.extend(w.audio_before_video);
            assert!(mux.audio_ahead_ms() <= MAX_AUDIO_HOLD_MS, "memory bounded");
        }
        assert_eq!(full, 1, "said once");
        assert_eq!(dropped, 1000 - (MAX_AUDIO_HOLD_MS / 20) as u32);
        assert!(said.is_empty(), "the whole is said when video comes");
        // Video comes at last, at 19 s: what precedes it is dropped, the rest sent.
        let w = mux.push_video(19_000, None, true, Bytes::from(vec![1; 10]), &mut out);
        let d = w.audio_before_video.expect("said");
        assert_eq!(d.frames, 950);
        assert_eq!(d.ms, 19_000);
        assert!(d.held_too_long);
        mux.flush(&mut out);
        let audio = parse(&out).blocks.iter().filter(|b| b.0 == 2).count();
        assert_eq!(audio, 50);
    }

    /// A recording: 20 s of audio read before the first video frame (an encoder's look-ahead)
    /// is held, not dropped at 10 s, and goes out in time order with the video.
    #[test]
    fn a_recordings_audio_is_held_for_its_video_as_memory_allows() {
        let mut mux = av_muxer();
        mux.set_recording(true);
        let mut out = Vec::new();
        for i in 0..1000u64 {
            let w = mux.push_audio(i * 20, Bytes::from(vec![2; 6]), &mut out);
            assert!(!w.audio_hold_full && w.audio_before_key_frame == 0);
        }
        for v in 0..200u64 {
            let w = mux.push_video(
                v * 100,
                None,
                v % 10 == 0,
                Bytes::from(vec![1; 10]),
                &mut out,
            );
            assert!(w.audio_before_video.is_none());
        }
        mux.flush(&mut out);
        let parsed = parse(&out);
        assert_eq!(parsed.times(2).len(), 1000);
        let times: Vec<i64> = parsed.blocks.iter().map(|b| b.1).collect();
        assert!(times.is_sorted(), "{times:?}");
    }

    /// Cluster start times of `frames` (pts, key) under `fragmentation`.
    fn cluster_starts(fragmentation: Fragmentation, frames: &[(u64, bool)]) -> Vec<i64> {
        let mut mux = video_muxer();
        mux.set_fragmentation(fragmentation);
        let mut out = Vec::new();
        for &(pts, key) in frames {
            mux.push_video(pts, None, key, Bytes::from(vec![1; 10]), &mut out);
        }
        let parsed = parse(&out);
        assert_eq!(parsed.blocks.len(), frames.len(), "every frame written");
        let mut starts = Vec::new();
        let mut at = 0;
        let all: Vec<u8> = out.iter().flat_map(|p| p.iter().copied()).collect();
        while let Some(i) = all[at..]
            .windows(4)
            .position(|w| w == [0x1f, 0x43, 0xb6, 0x75])
        {
            let h = at + i + 5;
            let t = read_header(&all[h..]).unwrap().unwrap();
            starts.push(
                read_uint(&all[h + t.len..h + t.len + t.size.unwrap() as usize]).unwrap() as i64,
            );
            at = h;
        }
        starts
    }

    #[test]
    fn key_frame_fragmentation_false_cuts_at_the_first_key_frame_after_fragment_duration() {
        // A key frame every 5 frames at 30 fps (167 ms).
        let frames: Vec<(u64, bool)> = (0..150u64).map(|i| (i * 100 / 3, i % 5 == 0)).collect();
        let starts = cluster_starts(
            Fragmentation {
                key_frame: false,
                duration_ms: 2000,
            },
            &frames,
        );
        assert_eq!(starts, [0, 2000, 4000]);
        let starts = cluster_starts(
            Fragmentation {
                key_frame: false,
                duration_ms: 1900,
            },
            &frames,
        );
        assert_eq!(starts, [0, 2000, 4000]);
    }

    #[test]
    fn a_key_frame_within_200_ms_of_the_cluster_start_does_not_begin_one() {
        let frames: Vec<(u64, bool)> = (0..150u64).map(|i| (i * 100 / 3, i % 5 == 0)).collect();
        let starts = cluster_starts(Fragmentation::default(), &frames);
        assert_eq!(starts.len(), 15, "{starts:?}");
        assert!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] >= MIN_FRAGMENT_MS as i64)
        );
        // A GOP of 10 frames (333 ms): every key frame.
        let frames: Vec<(u64, bool)> = (0..150u64).map(|i| (i * 100 / 3, i % 10 == 0)).collect();
        assert_eq!(cluster_starts(Fragmentation::default(), &frames).len(), 15);
    }
}
