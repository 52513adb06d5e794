//! Streaming Matroska (EBML) splitter.
//!
//! [`Splitter`] takes `matroskamux` output in buffers cut anywhere and turns it into
//! [`Event`]s: the stream header (everything before the first Cluster), then one fragment
//! per Cluster (start, data, end) and the Segment-level elements found between clusters.
//! It never allocates according to a declared size: block payloads are passed through as
//! slices of the input (`Bytes::slice`), and the only elements held in memory (header
//! children, Tags and other Segment-level elements) are bounded by [`Limits`].
//!
//! Decisions worth knowing:
//! * Fragment ordering: a cluster whose Timecode is *strictly lower* than the previous
//!   cluster's Timecode is refused ([`MkvError::TimecodeBackwards`]); equal timecodes are
//!   allowed. Block times are not compared across clusters: with B-frames, Matroska block
//!   times are presentation times and are legitimately non-monotonic. The check restarts
//!   after a new stream header.
//! * A video key frame (SimpleBlock) earlier than the previous one, or at its time in the
//!   same cluster, is refused ([`MkvError::KeyFrameBackwards`]): time went backwards within
//!   a cluster (matroskamux keeps writing blocks before the cluster's Timecode) or by less
//!   than a cluster. Other blocks are not compared (B-frames). The check restarts after a
//!   new stream header.
//! * In AWS shape (what kvssink sends) neither is refused: time that goes back (either of
//!   those, or a video key frame earlier than a video frame already sent) is sent on after
//!   the last frame sent ([`Event::TimeWentBack`]). A cluster that goes back is sent with its
//!   Timecode moved; a key frame that goes back inside a cluster ends the fragment there,
//!   and the rest of the cluster goes out in fragments of their own, one per key frame,
//!   their block headers rewritten.
//! * A cluster without Timecode, an unknown-size
//!   element other than Segment/Cluster, or a child overrunning its parent are
//!   [`MkvError::UnexpectedElement`].
//! * In an unknown-size cluster, any Segment-level ID (or an EBML header) ends the
//!   cluster. A `Tags` element there is parsed first, so that its
//!   `AWS_KINESISVIDEO_END_OF_FRAGMENT` flag can be set on the `FragmentEnd` that precedes
//!   the `Interstitial`. In a known-size cluster every child is part of the cluster.
//! * A cluster's bytes are held back (as slices) until its `FragmentStart`; if its first
//!   video block has not appeared after `Limits::max_block_size` bytes, the fragment starts
//!   anyway with `key_frame: false`, so that memory stays bounded.
//! * `finish()` in the middle of an element: a fragment that already started gets its
//!   `FragmentEnd`, then `Err(Truncated)` is returned (see [`Splitter::finish`]).
//! * Errors poison the splitter: later `push` calls return the same error until
//!   [`Splitter::reset`] is called.
//!
//! * In AWS shape ([`Splitter::aws_shape`], what the producer sends) the splitter also rewrites
//!   what it emits into the shape AWS's producer sends, at no cost per frame: every Cluster
//!   starts with the head AWS writes ([`kvs_format::kvs::cluster_head`]: unknown size in the
//!   one-byte form, Timecode, Position 0) in place of the input's (the Cluster header,
//!   Timecode, PrevSize, Position, CRC-32 and anything before the Timecode are left out); and
//!   tracks are renumbered so that video is track 1 and audio track 2 when they are not
//!   ([`renumber`]). Frames stay slices of the input, byte for byte; sizes in
//!   [`FragmentSummary`] count what is emitted. Segment-level elements inside a known-size
//!   cluster are refused there (the rewritten cluster has an unknown size, which they would
//!   end).
//!
//! This parser and kvs-local's PutMedia checker (`kvs_local::mkv`) are separate on purpose:
//! kvs-local is the oracle the sink is tested against, and must not inherit the splitter's
//! bugs. They share only the vocabulary of the `kvs-format` crate (element IDs, the vint
//! codec, the element writer, the end-of-fragment tag, the error table, the test stream
//! builder), never the parsing or validation logic; the element IDs are re-exported here.

pub mod ebml;
mod normalize;
pub mod renumber;
pub use normalize::normalize_header;

use bytes::Bytes;

pub use kvs_format::ids::*;

/// Matroska dates count from 2001-01-01T00:00:00 UTC: that instant in Unix milliseconds.
pub const MATROSKA_EPOCH_MS: u64 = 978_307_200_000;
pub use kvs_format::kvs::{END_OF_FRAGMENT_TAG, MAX_TRACKS};
pub use kvs_format::matroska::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};

const EBML_MAGIC: [u8; 4] = ID_EBML.to_be_bytes();
/// Prefix pieces up to this total are coalesced into one `FragmentData`.
const PREFIX_COALESCE: u64 = 4096;

/// One entry of the Tracks element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// TrackNumber, as used in blocks.
    pub number: u64,
    /// TrackType: 1 video, 2 audio (0 if absent).
    pub track_type: u64,
    /// CodecID, e.g. `V_MPEG4/ISO/AVC`, `A_AAC` (empty if absent).
    pub codec_id: String,
    /// CodecPrivate (e.g. the avcC record), empty if absent.
    pub codec_private: Bytes,
}

/// The stream header: what must be sent before the first fragment of every session.
#[derive(Debug, Clone)]
pub struct StreamHeader {
    /// EBML header + Segment element header + every Segment child before the first
    /// Cluster, verbatim.
    pub bytes: Bytes,
    /// `"matroska"` or `"webm"`.
    pub doc_type: String,
    /// Nanoseconds per timecode unit (default 1 000 000).
    pub timecode_scale: u64,
    /// Info's DateUTC as milliseconds since the Unix epoch: when timecode 0 happened (the
    /// muxer's clock when it started, for matroskamux).
    pub date_utc_ms: Option<u64>,
    /// Info's Duration in nanoseconds (a recorded file; a live muxer writes none).
    pub duration_ns: Option<u64>,
    /// The tracks, in header order.
    pub tracks: Vec<TrackInfo>,
    /// Tracks the splitter renumbered (in AWS shape), as (number in the input, number sent),
    /// in the order of the new numbers; empty when none was.
    pub renumbered: Vec<(u64, u64)>,
}

/// A cluster (fragment) is about to start; none of its bytes has been emitted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentStart {
    /// Cluster Timecode, raw units (see [`StreamHeader::timecode_scale`]).
    pub timecode: u64,
    /// The first block of the first video track in this cluster is a key frame. `true`
    /// when the stream has no video track; `false` when the cluster ended without a
    /// block of that track.
    pub key_frame: bool,
    /// `key_frame` was decided on a block of the first video track; `false` when the cluster
    /// has none (audio before the video, or a stream without video) or none within the
    /// bytes held back.
    pub video: bool,
}

/// Figures of a cluster, running while it is open, final in `FragmentEnd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FragmentSummary {
    /// Cluster Timecode, raw units.
    pub timecode: u64,
    /// Earliest absolute block time (cluster timecode + relative), raw units; equals
    /// `timecode` while the cluster has no block.
    pub first_block_time: i64,
    /// Latest (maximum) absolute block time, raw units; `timecode` without blocks.
    pub last_block_time: i64,
    /// Bytes of the cluster emitted so far, its ID and size included.
    pub size: u64,
    /// Number of blocks (SimpleBlocks and BlockGroups) seen.
    pub blocks: u64,
    /// Same as [`FragmentStart::key_frame`] (valid once the fragment started).
    pub key_frame: bool,
    /// The cluster was closed by an `AWS_KINESISVIDEO_END_OF_FRAGMENT` tag.
    pub end_of_fragment_tag: bool,
    /// Bytes of the cluster not emitted because it was cut at a limit
    /// ([`Event::FragmentCut`]).
    pub cut_bytes: u64,
    /// Of `size`, the bytes that form whole elements. Smaller than `size` only in the
    /// `FragmentEnd` of a cluster cut in the middle of an element (a truncated stream):
    /// the bytes past it are an incomplete frame that must not be sent.
    pub whole_size: u64,
    /// Of `size`, the bytes up to the end of the cluster's first block (SimpleBlock or
    /// BlockGroup, any track); 0 while it has none. The fragment holds a whole frame once
    /// this many bytes are emitted, and in `FragmentEnd` when `whole_size` reaches it: a
    /// fragment without one is refused by the service (see [`FragmentSummary::has_frame`]).
    pub frame_end: u64,
    /// In `FragmentEnd`: the input cluster goes on in the next fragment, re-timed (AWS
    /// shape, see [`Event::TimeWentBack`]). Bytes past `whole_size` are the start of the
    /// block that begins the next fragment, sent again there: not a loss.
    pub continued: bool,
}

impl FragmentSummary {
    /// In `FragmentEnd` (or `FragmentCut`): the fragment holds at least one whole frame.
    pub fn has_frame(&self) -> bool {
        self.frame_end > 0 && self.whole_size >= self.frame_end
    }
}

/// Output of the splitter, in stream order.
#[derive(Debug)]
pub enum Event {
    /// Complete stream header; at start and after every new EBML header (upstream
    /// restarted its muxer; the open fragment is ended first). Emitted when the first
    /// Cluster begins. Boxed: the events of every buffer stay small to move.
    Header(Box<StreamHeader>),
    /// Emitted once the cluster's Timecode and its first video block header (first block
    /// of any track without video) are known, before any of the cluster's bytes.
    FragmentStart(FragmentStart),
    /// Cluster bytes in order; the first one after `FragmentStart` begins with the Cluster
    /// ID. Slices of the pushed buffers, except small copied pieces: a coalesced
    /// cluster prefix and, in AWS shape, rewritten cluster heads and block headers (a
    /// renumbered track byte may also be a static piece of its own).
    FragmentData(Bytes),
    /// The next block would take the open cluster past [`Limits::max_fragment_span_ns`] or
    /// [`Limits::max_fragment_bytes`]: every byte emitted so far forms whole elements, and
    /// none of the cluster's later bytes will be (they are counted in `cut_bytes`). The
    /// figures are those of the cluster up to the cut.
    FragmentCut(FragmentSummary),
    /// The cluster ended.
    FragmentEnd(FragmentSummary),
    /// A Segment-level element other than Cluster after the header (Tags, Cues, Void,
    /// SeekHead...), verbatim.
    Interstitial(Bytes),
    /// AWS shape: upstream's time went back (a cluster Timecode lower than the one before,
    /// or a video key frame not later than the one before). From here every time is sent
    /// `shift` units later than the input says, so that the next fragment (whose `timecode`
    /// this is) follows the last frame sent; emitted before its `FragmentStart`. A cluster
    /// whose key frame went back is ended before it, and the rest of the cluster goes on
    /// in fragments of their own, one per key frame, with rewritten block times.
    TimeWentBack {
        /// The timecode of the fragment that follows (units of the header's TimecodeScale).
        timecode: u64,
        /// How much later than upstream's times everything from here is sent (units).
        shift: u64,
    },
}

/// Why the splitter refused the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MkvError {
    /// The data does not start with an EBML header.
    #[error(
        "not a Matroska stream: the data starts with {found}; kvssink needs matroskamux output"
    )]
    NotMatroska {
        /// What the first bytes look like, with their hex dump.
        found: String,
    },
    /// Malformed element ID or size.
    #[error("invalid Matroska data at byte {offset}: malformed EBML element ID or size")]
    InvalidVint {
        /// Stream offset of the element header.
        offset: u64,
    },
    /// An element is larger than the configured limit.
    #[error(
        "Matroska element 0x{id:X} at byte {offset} is {size} bytes, over the limit of {limit} bytes"
    )]
    ElementTooLarge {
        /// Element ID.
        id: u32,
        /// Declared size.
        size: u64,
        /// The limit that applies.
        limit: u64,
        /// Stream offset of the element.
        offset: u64,
    },
    /// An element that cannot appear here.
    #[error("unexpected Matroska element 0x{id:X} at byte {offset}: {context}")]
    UnexpectedElement {
        /// Element ID.
        id: u32,
        /// Stream offset of the element.
        offset: u64,
        /// What was wrong.
        context: &'static str,
    },
    /// The EBML DocType is neither `matroska` nor `webm`.
    #[error("unsupported EBML DocType \"{0}\": kvssink needs \"matroska\" or \"webm\"")]
    DocType(String),
    /// No (or empty) Tracks element before the first Cluster.
    #[error("the Matroska header has no Tracks element before the first Cluster")]
    MissingTracks,
    /// More tracks than Kinesis Video Streams accepts.
    #[error("the stream has {0} tracks; Kinesis Video Streams accepts at most 3")]
    TooManyTracks(usize),
    /// A block refers to a track that is not in Tracks.
    #[error("a block at byte {offset} belongs to track {track}, which is not declared in Tracks")]
    UnknownTrack {
        /// The block's track number.
        track: u64,
        /// Stream offset of the block header.
        offset: u64,
    },
    /// A cluster's Timecode is lower than the previous cluster's.
    #[error(
        "cluster timecode {current} is lower than the previous cluster's {previous}: Kinesis Video \
         Streams needs increasing fragment timecodes (did upstream timestamps go backwards?)"
    )]
    TimecodeBackwards {
        /// Previous cluster Timecode.
        previous: i64,
        /// This cluster's Timecode.
        current: i64,
    },
    /// A video key frame is not later than the one before it (upstream timestamps went
    /// backwards, by as much as a group of pictures or more).
    #[error(
        "a video key frame at timecode {current} is not later than the one before it, at \
         {previous}: upstream timestamps went backwards, and Kinesis Video Streams needs \
         increasing times"
    )]
    KeyFrameBackwards {
        /// The previous key frame's time.
        previous: i64,
        /// This key frame's time.
        current: i64,
    },
    /// The stream ended inside an element.
    #[error("the stream ended in the middle of a Matroska element (at byte {offset})")]
    Truncated {
        /// Stream offset of the end.
        offset: u64,
    },
}

/// Bounds on what the splitter holds or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total size of the stream header (EBML header .. first Cluster).
    pub max_header_size: u64,
    /// Size of a Segment-level element held whole after the header (Tags, Cues, ...).
    pub max_element_size: u64,
    /// Size of any element inside a Cluster (blocks are counted through, not held).
    pub max_block_size: u64,
    /// A cluster whose block times would span more than this (ns, as a consumer with the
    /// header's TimecodeScale measures it) is cut before the block that would do it: see
    /// [`Event::FragmentCut`]. `u64::MAX`: no limit.
    pub max_fragment_span_ns: u64,
    /// Likewise for a cluster that would grow past this many bytes.
    pub max_fragment_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_size: 1 << 20,
            max_element_size: 16 << 20,
            max_block_size: 64 << 20,
            max_fragment_span_ns: u64::MAX,
            max_fragment_bytes: u64::MAX,
        }
    }
}

mod splitter;
pub use splitter::Splitter;

/// The `Tags` element carrying the `AWS_KINESISVIDEO_END_OF_FRAGMENT` SimpleTag, which closes
/// the open fragment on the service side (what AWS's producer sends on EOS), as `Bytes`; built
/// by [`kvs_format::kvs::end_of_fragment_tags`].
pub fn end_of_fragment_tags() -> Bytes {
    Bytes::from(kvs_format::kvs::end_of_fragment_tags())
}

/// Whether a Tags element body carries a SimpleTag named `AWS_KINESISVIDEO_END_OF_FRAGMENT`
/// (nested SimpleTags included). Malformed parts are ignored.
pub fn tags_have_end_of_fragment(tags_body: &[u8]) -> bool {
    fn simple_tag(body: &[u8], depth: u32) -> bool {
        ebml::children(body)
            .map_while(Result::ok)
            .any(|(id, b)| match id {
                ID_TAG_NAME => ebml::read_string(b) == END_OF_FRAGMENT_TAG,
                ID_SIMPLE_TAG if depth < 8 => simple_tag(b, depth + 1),
                _ => false,
            })
    }
    ebml::children(tags_body)
        .map_while(Result::ok)
        .filter(|(id, _)| *id == ID_TAG)
        .any(|(_, tag)| {
            ebml::children(tag)
                .map_while(Result::ok)
                .any(|(id, b)| id == ID_SIMPLE_TAG && simple_tag(b, 0))
        })
}

/// Describes what the first bytes of a non-Matroska stream look like.
fn describe_magic(b: &[u8]) -> String {
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02X}")).collect();
    let hex = hex.join(" ");
    let kind = if b.starts_with(&[0xFF, 0xD8]) {
        "a JPEG image".to_string()
    } else if b.starts_with(&[0x89, b'P', b'N', b'G']) {
        "a PNG image".to_string()
    } else if b.starts_with(b"GIF8") {
        "a GIF image".to_string()
    } else if b.starts_with(&[0, 0, 0, 1]) || b.starts_with(&[0, 0, 1]) {
        "an H.264/H.265 Annex B start code (raw video, not muxed)".to_string()
    } else if b.len() >= 8 && &b[4..8] == b"ftyp" {
        "an MP4/QuickTime file".to_string()
    } else if b.starts_with(b"OggS") {
        "an Ogg stream".to_string()
    } else if b.starts_with(b"RIFF") {
        "a RIFF (WAV/AVI) file".to_string()
    } else if b.starts_with(b"FLV") {
        "an FLV stream".to_string()
    } else if b.starts_with(b"ID3") {
        "an MP3 file (ID3 tag)".to_string()
    } else if !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace())
    {
        format!("text {:?}", String::from_utf8_lossy(b))
    } else if b.first() == Some(&0x47) {
        "an MPEG transport stream (sync byte 0x47)".to_string()
    } else {
        "unrecognised data".to_string()
    };
    format!("{kind} ({hex})")
}

#[cfg(test)]
mod tests;
