//! EBML and Matroska element IDs.
//!
//! Naming scheme: `ID_` followed by the element's name in the Matroska specification, in
//! SCREAMING_SNAKE_CASE with a word break at each capital of the specification's CamelCase
//! name and acronyms kept whole: `DocType` → [`ID_DOC_TYPE`], `SeekHead` → [`ID_SEEK_HEAD`],
//! `CodecID` → [`ID_CODEC_ID`], `EBMLMaxIDLength` → [`ID_EBML_MAX_ID_LENGTH`]. The names are
//! those of the specification before RFC 9559 renamed "Timecode" to "Timestamp"
//! (`TimecodeScale`, Cluster `Timecode`), because Kinesis Video Streams and matroskamux still
//! use those words (`FragmentTimecode`).
//!
//! An ID keeps its length-marker bits, as the specification writes it: the EBML header is
//! `0x1A45DFA3`, a SimpleBlock `0xA3`. Its length in bytes is given by its first byte (see
//! [`crate::ebml::read_id`]).

/// EBML header (top level).
pub const ID_EBML: u32 = 0x1A45DFA3;
/// EBMLVersion (inside the EBML header).
pub const ID_EBML_VERSION: u32 = 0x4286;
/// EBMLReadVersion (inside the EBML header).
pub const ID_EBML_READ_VERSION: u32 = 0x42F7;
/// EBMLMaxIDLength (inside the EBML header).
pub const ID_EBML_MAX_ID_LENGTH: u32 = 0x42F2;
/// EBMLMaxSizeLength (inside the EBML header).
pub const ID_EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
/// DocType (inside the EBML header): `matroska` or `webm`.
pub const ID_DOC_TYPE: u32 = 0x4282;
/// DocTypeVersion (inside the EBML header).
pub const ID_DOC_TYPE_VERSION: u32 = 0x4287;
/// DocTypeReadVersion (inside the EBML header).
pub const ID_DOC_TYPE_READ_VERSION: u32 = 0x4285;
/// Void: padding, allowed anywhere.
pub const ID_VOID: u32 = 0xEC;
/// CRC-32: the checksum of its parent's other children, allowed first in any master.
pub const ID_CRC_32: u32 = 0xBF;

/// Segment (top level; matroskamux streamable=true writes it with an unknown size).
pub const ID_SEGMENT: u32 = 0x18538067;
/// SeekHead (Segment child).
pub const ID_SEEK_HEAD: u32 = 0x114D9B74;
/// Info (Segment child).
pub const ID_INFO: u32 = 0x1549A966;
/// TimecodeScale (inside Info): nanoseconds per timecode unit, 1 000 000 by default.
pub const ID_TIMECODE_SCALE: u32 = 0x2AD7B1;
/// MuxingApp (inside Info).
pub const ID_MUXING_APP: u32 = 0x4D80;
/// WritingApp (inside Info).
pub const ID_WRITING_APP: u32 = 0x5741;
/// DateUTC (inside Info): when timecode 0 happened, signed nanoseconds since
/// 2001-01-01T00:00:00 UTC.
pub const ID_DATE_UTC: u32 = 0x4461;
/// Duration (inside Info): the Segment's duration in timecode units, a float.
pub const ID_DURATION: u32 = 0x4489;
/// SegmentUID (inside Info): 16 random bytes, new with every muxer run.
pub const ID_SEGMENT_UID: u32 = 0x73A4;
/// Tracks (Segment child).
pub const ID_TRACKS: u32 = 0x1654AE6B;
/// TrackUID (inside TrackEntry).
pub const ID_TRACK_UID: u32 = 0x73C5;
/// Video (inside TrackEntry): the video settings.
pub const ID_VIDEO: u32 = 0xE0;
/// PixelWidth (inside Video).
pub const ID_PIXEL_WIDTH: u32 = 0xB0;
/// PixelHeight (inside Video).
pub const ID_PIXEL_HEIGHT: u32 = 0xBA;
/// Audio (inside TrackEntry): the audio settings.
pub const ID_AUDIO: u32 = 0xE1;
/// SamplingFrequency (inside Audio, a float, Hz).
pub const ID_SAMPLING_FREQUENCY: u32 = 0xB5;
/// Channels (inside Audio).
pub const ID_CHANNELS: u32 = 0x9F;
/// BitDepth (inside Audio).
pub const ID_BIT_DEPTH: u32 = 0x6264;
/// CodecDelay (inside TrackEntry, ns): Opus's pre-skip.
pub const ID_CODEC_DELAY: u32 = 0x56AA;
/// SeekPreRoll (inside TrackEntry, ns).
pub const ID_SEEK_PRE_ROLL: u32 = 0x56BB;
/// TrackEntry (inside Tracks).
pub const ID_TRACK_ENTRY: u32 = 0xAE;
/// TrackNumber (inside TrackEntry): the number blocks refer to.
pub const ID_TRACK_NUMBER: u32 = 0xD7;
/// TrackType (inside TrackEntry): see [`crate::matroska::TRACK_TYPE_VIDEO`].
pub const ID_TRACK_TYPE: u32 = 0x83;
/// CodecID (inside TrackEntry), e.g. `V_MPEG4/ISO/AVC`.
pub const ID_CODEC_ID: u32 = 0x86;
/// CodecPrivate (inside TrackEntry), e.g. the avcC record.
pub const ID_CODEC_PRIVATE: u32 = 0x63A2;

/// Cluster (Segment child): one Kinesis Video Streams fragment.
pub const ID_CLUSTER: u32 = 0x1F43B675;
/// Timecode (inside Cluster): the cluster's time, in TimecodeScale units.
pub const ID_TIMECODE: u32 = 0xE7;
/// Position (inside Cluster).
pub const ID_POSITION: u32 = 0xA7;
/// PrevSize (inside Cluster).
pub const ID_PREV_SIZE: u32 = 0xAB;
/// SimpleBlock (inside Cluster): track vint, int16 relative time, flags (0x80: key frame).
pub const ID_SIMPLE_BLOCK: u32 = 0xA3;
/// BlockGroup (inside Cluster).
pub const ID_BLOCK_GROUP: u32 = 0xA0;
/// Block (inside BlockGroup): laid out as a SimpleBlock, without the key-frame flag.
pub const ID_BLOCK: u32 = 0xA1;
/// BlockDuration (inside BlockGroup).
pub const ID_BLOCK_DURATION: u32 = 0x9B;
/// ReferenceBlock (inside BlockGroup): its presence makes the block a delta frame.
pub const ID_REFERENCE_BLOCK: u32 = 0xFB;

/// Cues (Segment child).
pub const ID_CUES: u32 = 0x1C53BB6B;
/// Chapters (Segment child).
pub const ID_CHAPTERS: u32 = 0x1043A770;
/// Attachments (Segment child).
pub const ID_ATTACHMENTS: u32 = 0x1941A469;
/// Tags (Segment child).
pub const ID_TAGS: u32 = 0x1254C367;
/// Tag (inside Tags).
pub const ID_TAG: u32 = 0x7373;
/// Targets (inside Tag): what the Tag applies to; empty means the whole Segment.
pub const ID_TARGETS: u32 = 0x63C0;
/// SimpleTag (inside Tag, or nested in another SimpleTag).
pub const ID_SIMPLE_TAG: u32 = 0x67C8;
/// TagName (inside SimpleTag).
pub const ID_TAG_NAME: u32 = 0x45A3;
/// TagString (inside SimpleTag).
pub const ID_TAG_STRING: u32 = 0x4487;
