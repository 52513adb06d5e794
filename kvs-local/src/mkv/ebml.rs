//! EBML/Matroska primitives: element IDs, vints, buffered element
//! iteration, and the small elements the server reads in full.

use bytes::{Bytes, BytesMut};

/// EBML header element.
pub const ID_EBML: u32 = 0x1A45DFA3;
/// DocType inside the EBML header.
pub const ID_DOCTYPE: u32 = 0x4282;
/// Segment.
pub const ID_SEGMENT: u32 = 0x18538067;
/// SeekHead.
pub const ID_SEEKHEAD: u32 = 0x114D9B74;
/// Info.
pub const ID_INFO: u32 = 0x1549A966;
/// TimecodeScale inside Info.
pub const ID_TIMECODE_SCALE: u32 = 0x2AD7B1;
/// Tracks.
pub const ID_TRACKS: u32 = 0x1654AE6B;
/// TrackEntry.
pub const ID_TRACK_ENTRY: u32 = 0xAE;
/// TrackNumber.
pub const ID_TRACK_NUMBER: u32 = 0xD7;
/// TrackType.
pub const ID_TRACK_TYPE: u32 = 0x83;
/// CodecID.
pub const ID_CODEC_ID: u32 = 0x86;
/// CodecPrivate.
pub const ID_CODEC_PRIVATE: u32 = 0x63A2;
/// Cluster.
pub const ID_CLUSTER: u32 = 0x1F43B675;
/// Cluster Timecode.
pub const ID_TIMECODE: u32 = 0xE7;
/// SimpleBlock.
pub const ID_SIMPLE_BLOCK: u32 = 0xA3;
/// BlockGroup.
pub const ID_BLOCK_GROUP: u32 = 0xA0;
/// Block (inside BlockGroup).
pub const ID_BLOCK: u32 = 0xA1;
/// ReferenceBlock (inside BlockGroup; present means non-key).
pub const ID_REFERENCE_BLOCK: u32 = 0xFB;
/// Cues.
pub const ID_CUES: u32 = 0x1C53BB6B;
/// Chapters.
pub const ID_CHAPTERS: u32 = 0x1043A770;
/// Attachments.
pub const ID_ATTACHMENTS: u32 = 0x1941A469;
/// Tags.
pub const ID_TAGS: u32 = 0x1254C367;
/// Tag.
pub const ID_TAG: u32 = 0x7373;
/// SimpleTag.
pub const ID_SIMPLE_TAG: u32 = 0x67C8;
/// TagName.
pub const ID_TAG_NAME: u32 = 0x45A3;
/// TagString.
pub const ID_TAG_STRING: u32 = 0x4487;
/// Void.
pub const ID_VOID: u32 = 0xEC;

/// Raw bytes held as slices of the received chunks (no copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pieces(pub(crate) Vec<Bytes>);

impl Pieces {
    /// Total length.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    /// The slices in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter()
    }

    /// One contiguous `Bytes` (no copy when there is a single slice).
    pub fn to_bytes(&self) -> Bytes {
        match self.0.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len());
                for b in many {
                    out.extend_from_slice(b);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(b: Bytes) -> Self {
        Pieces(vec![b])
    }
}

/// Name of the SimpleTag that ends the open fragment.
pub const END_OF_FRAGMENT_TAG: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";

/// One entry of the Tracks element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// TrackNumber.
    pub number: u64,
    /// TrackType (1 video, 2 audio, ...).
    pub track_type: u64,
    /// CodecID.
    pub codec_id: String,
    /// Length of CodecPrivate (0 when absent).
    pub codec_private_len: usize,
}

/// A complete stream header: everything from the EBML header up to (not
/// including) the first Cluster.
#[derive(Clone, Debug)]
pub struct StreamHeader {
    /// Raw bytes as received.
    pub bytes: Bytes,
    /// DocType (`matroska` or `webm`).
    pub doc_type: String,
    /// Info TimecodeScale in nanoseconds.
    pub timecode_scale: u64,
    /// Track entries in order.
    pub tracks: Vec<TrackInfo>,
}

/// Why a body is not acceptable Matroska.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MkvError {
    /// The bytes violate the format.
    #[error("invalid MKV data: {0}")]
    Invalid(String),
    /// The body ended in the middle of an element.
    #[error("MKV data truncated: {0}")]
    Truncated(String),
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, MkvError> {
    Err(MkvError::Invalid(msg.into()))
}

/// Result of decoding an element header.
pub(crate) enum HeaderParse {
    Incomplete,
    Invalid(String),
    Ok {
        id: u32,
        size: Option<u64>,
        len: usize,
    },
}

/// Decodes an element ID (marker bits kept). Returns (id, length).
pub(crate) fn decode_id(b: &[u8]) -> Result<Option<(u32, usize)>, String> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return Err(format!("invalid element ID byte 0x{first:02X}"));
    }
    if b.len() < len {
        return Ok(None);
    }
    let id = b[..len].iter().fold(0u32, |a, &x| (a << 8) | x as u32);
    let all_ones = (1u32 << (7 * len)) - 1;
    if id & all_ones == all_ones || id & all_ones == 0 && len == 1 {
        return Err(format!("reserved element ID 0x{id:X}"));
    }
    Ok(Some((id, len)))
}

/// Decodes a size vint. Returns (value or None for unknown, length).
pub fn decode_vint(b: &[u8]) -> Result<Option<(Option<u64>, usize)>, String> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return Err("invalid size (vint longer than 8 bytes)".into());
    }
    if b.len() < len {
        return Ok(None);
    }
    let mut v = (first as u64) & (0xFFu64 >> len);
    for &x in &b[1..len] {
        v = (v << 8) | x as u64;
    }
    let unknown = v == (1u64 << (7 * len)) - 1;
    Ok(Some((if unknown { None } else { Some(v) }, len)))
}

pub(crate) fn parse_header(b: &[u8]) -> HeaderParse {
    let (id, il) = match decode_id(b) {
        Err(e) => return HeaderParse::Invalid(e),
        Ok(None) => return HeaderParse::Incomplete,
        Ok(Some(x)) => x,
    };
    match decode_vint(&b[il..]) {
        Err(e) => HeaderParse::Invalid(e),
        Ok(None) => HeaderParse::Incomplete,
        Ok(Some((size, sl))) => HeaderParse::Ok {
            id,
            size,
            len: il + sl,
        },
    }
}

/// Iterates over the children of a fully buffered master element.
pub fn children(mut data: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8]), MkvError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let r = match parse_header(data) {
            HeaderParse::Incomplete => invalid("truncated child element"),
            HeaderParse::Invalid(e) => invalid(e),
            HeaderParse::Ok { size: None, .. } => invalid("unknown size inside sized element"),
            HeaderParse::Ok {
                id,
                size: Some(size),
                len,
            } => {
                let end = (len as u64).saturating_add(size);
                if end > data.len() as u64 {
                    invalid(format!("element 0x{id:X} exceeds its parent"))
                } else {
                    let body = &data[len..end as usize];
                    data = &data[end as usize..];
                    Ok((id, body))
                }
            }
        };
        if r.is_err() {
            data = &[];
        }
        Some(r)
    })
}

/// Big-endian unsigned integer of up to 8 bytes.
pub fn read_uint(b: &[u8]) -> Result<u64, MkvError> {
    if b.len() > 8 {
        return invalid("unsigned integer longer than 8 bytes");
    }
    Ok(b.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
}

pub(crate) fn parse_tracks(data: &[u8]) -> Result<Vec<TrackInfo>, MkvError> {
    let mut tracks = Vec::new();
    for child in children(data) {
        let (id, body) = child?;
        if id != ID_TRACK_ENTRY {
            continue;
        }
        let mut t = TrackInfo {
            number: 0,
            track_type: 0,
            codec_id: String::new(),
            codec_private_len: 0,
        };
        for c in children(body) {
            let (cid, cb) = c?;
            match cid {
                ID_TRACK_NUMBER => t.number = read_uint(cb)?,
                ID_TRACK_TYPE => t.track_type = read_uint(cb)?,
                ID_CODEC_ID => t.codec_id = String::from_utf8_lossy(cb).to_string(),
                ID_CODEC_PRIVATE => t.codec_private_len = cb.len(),
                _ => {}
            }
        }
        if t.number == 0 {
            return invalid("TrackEntry without TrackNumber");
        }
        if tracks.iter().any(|o: &TrackInfo| o.number == t.number) {
            return invalid(format!("duplicate TrackNumber {}", t.number));
        }
        tracks.push(t);
    }
    Ok(tracks)
}

fn simple_tag_is_eof(data: &[u8]) -> Result<bool, MkvError> {
    for c in children(data) {
        let (id, body) = c?;
        if id == ID_TAG_NAME && body == END_OF_FRAGMENT_TAG.as_bytes() {
            return Ok(true);
        }
        if id == ID_SIMPLE_TAG && simple_tag_is_eof(body)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn tags_have_end_of_fragment(data: &[u8]) -> Result<bool, MkvError> {
    for tag in children(data) {
        let (id, body) = tag?;
        if id != ID_TAG {
            continue;
        }
        for c in children(body) {
            let (cid, cb) = c?;
            if cid == ID_SIMPLE_TAG && simple_tag_is_eof(cb)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
