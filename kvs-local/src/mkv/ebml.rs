//! The checker's EBML reading: element headers (with the checker's own rules on top of the
//! `kvs-format` vint codec), buffered element iteration, and the small elements the server
//! reads in full. The element IDs and the codec come from `kvs_format`.

use bytes::{Bytes, BytesMut};
use kvs_format::ebml::{is_reserved_id, read_id, read_size};
use kvs_format::ids::*;
use kvs_format::kvs::END_OF_FRAGMENT_TAG;

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

/// One entry of the Tracks element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// TrackNumber.
    pub number: u64,
    /// TrackType (1 video, 2 audio, ...).
    pub track_type: u64,
    /// CodecID.
    pub codec_id: String,
    /// CodecPrivate (empty when absent).
    pub codec_private: Vec<u8>,
    /// Video PixelWidth and PixelHeight (0 when absent).
    pub pixel_size: (u64, u64),
    /// Audio SamplingFrequency in Hz, rounded (0 when absent), and Channels (1 when absent).
    pub audio: (u64, u64),
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

/// Decodes an element header: a reserved ID, an ID longer than 4 bytes or a size longer
/// than 8 bytes is invalid; any element may declare an unknown size here (the parser
/// decides where that is allowed).
pub(crate) fn parse_header(b: &[u8]) -> HeaderParse {
    let (id, il) = match read_id(b) {
        Err(_) => return HeaderParse::Invalid(format!("invalid element ID byte 0x{:02X}", b[0])),
        Ok(None) => return HeaderParse::Incomplete,
        Ok(Some((id, len))) if is_reserved_id(id, len) => {
            return HeaderParse::Invalid(format!("reserved element ID 0x{id:X}"));
        }
        Ok(Some(x)) => x,
    };
    match read_size(&b[il..]) {
        Err(_) => HeaderParse::Invalid("invalid size (vint longer than 8 bytes)".into()),
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

/// Big-endian unsigned integer of up to 8 bytes; longer is invalid.
pub fn read_uint(b: &[u8]) -> Result<u64, MkvError> {
    kvs_format::ebml::read_uint(b)
        .map_or_else(|| invalid("unsigned integer longer than 8 bytes"), Ok)
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
            codec_private: Vec::new(),
            pixel_size: (0, 0),
            audio: (0, 1),
        };
        for c in children(body) {
            let (cid, cb) = c?;
            match cid {
                ID_TRACK_NUMBER => t.number = read_uint(cb)?,
                ID_TRACK_TYPE => t.track_type = read_uint(cb)?,
                ID_CODEC_ID => t.codec_id = kvs_format::ebml::read_string(cb),
                ID_CODEC_PRIVATE => t.codec_private = cb.to_vec(),
                ID_VIDEO => {
                    for v in children(cb) {
                        let (vid, vb) = v?;
                        match vid {
                            ID_PIXEL_WIDTH => t.pixel_size.0 = read_uint(vb)?,
                            ID_PIXEL_HEIGHT => t.pixel_size.1 = read_uint(vb)?,
                            _ => {}
                        }
                    }
                }
                ID_AUDIO => {
                    for a in children(cb) {
                        let (aid, ab) = a?;
                        match aid {
                            ID_SAMPLING_FREQUENCY => {
                                let hz = kvs_format::ebml::read_float(ab).unwrap_or(0.0);
                                t.audio.0 = if hz.is_finite() && hz > 0.0 {
                                    hz.round() as u64
                                } else {
                                    0
                                };
                            }
                            ID_CHANNELS => t.audio.1 = read_uint(ab)?.max(1),
                            _ => {}
                        }
                    }
                }
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

/// The TimecodeScale and the tracks of a stored stream header (EBML header, Segment, Info,
/// Tracks...: what PutMedia's parser kept before the first Cluster).
pub fn header_tracks(mut header: &[u8]) -> Result<(u64, Vec<TrackInfo>), MkvError> {
    let mut scale = kvs_format::matroska::DEFAULT_TIMECODE_SCALE;
    let mut tracks = None;
    while !header.is_empty() {
        let (id, size, len) = match parse_header(header) {
            HeaderParse::Ok { id, size, len } => (id, size, len),
            HeaderParse::Incomplete => return invalid("truncated stream header"),
            HeaderParse::Invalid(e) => return invalid(e),
        };
        if id == ID_SEGMENT {
            header = &header[len..];
            continue;
        }
        let Some(end) = size
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| s.checked_add(len))
            .filter(|end| *end <= header.len())
        else {
            return invalid(format!("element 0x{id:X} exceeds the stream header"));
        };
        match id {
            ID_INFO => scale = kvs_format::matroska::info_timecode_scale(&header[len..end]),
            ID_TRACKS => tracks = Some(parse_tracks(&header[len..end])?),
            _ => {}
        }
        header = &header[end..];
    }
    Ok((scale, tracks.unwrap_or_default()))
}

/// A frame of a Cluster, as [`cluster_frames`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// TrackNumber.
    pub track: u64,
    /// Timecode relative to the Cluster's (TimecodeScale units).
    pub timecode: i16,
    /// Key frame (SimpleBlock flag 0x80; a Block without ReferenceBlock).
    pub key: bool,
    /// Where the frame's data lies in the Cluster's bytes.
    pub data: std::ops::Range<usize>,
}

/// The Timecode and the frames, in order, of the Cluster whose bytes (from its ID on) are
/// `cluster`: SimpleBlocks and the Blocks of BlockGroups, up to the end of a Cluster of known
/// size, or (unknown size) to the end of `cluster`. A laced block is refused: a frame of it
/// cannot be told from the next without decoding the lacing, which PutMedia's producers do
/// not use.
pub fn cluster_frames(cluster: &[u8]) -> Result<(u64, Vec<Frame>), MkvError> {
    let (id, size, len) = match parse_header(cluster) {
        HeaderParse::Ok { id, size, len } => (id, size, len),
        HeaderParse::Incomplete => return invalid("truncated Cluster"),
        HeaderParse::Invalid(e) => return invalid(e),
    };
    if id != ID_CLUSTER {
        return invalid(format!("element 0x{id:X} where a Cluster was expected"));
    }
    let end = match size.map(usize::try_from) {
        None => cluster.len(),
        Some(Ok(s)) if s <= cluster.len() - len => len + s,
        Some(_) => return invalid("Cluster exceeds its bytes"),
    };
    // where `body`, a slice of `cluster`, starts in it
    let offset = |body: &[u8]| body.as_ptr() as usize - cluster.as_ptr() as usize;
    let block = |body: &[u8], key: Option<bool>| -> Result<Frame, MkvError> {
        let at = offset(body);
        let Ok(Some((track, n))) = kvs_format::ebml::read_vint(body) else {
            return invalid("block without a track number");
        };
        let Some(head) = body.get(n..n + 3) else {
            return invalid("truncated block header");
        };
        if head[2] & 0x06 != 0 {
            return invalid(format!("laced block of track {track}"));
        }
        Ok(Frame {
            track,
            timecode: i16::from_be_bytes([head[0], head[1]]),
            key: key.unwrap_or(head[2] & 0x80 != 0),
            data: at + n + 3..at + body.len(),
        })
    };
    let mut timecode = None;
    let mut frames = Vec::new();
    for child in children(&cluster[len..end]) {
        let (cid, body) = child?;
        match cid {
            ID_TIMECODE => timecode = Some(read_uint(body)?),
            ID_SIMPLE_BLOCK => frames.push(block(body, None)?),
            ID_BLOCK_GROUP => {
                let mut found = None;
                let mut referenced = false;
                for g in children(body) {
                    let (gid, gb) = g?;
                    match gid {
                        ID_BLOCK => found = Some(gb),
                        ID_REFERENCE_BLOCK => referenced = true,
                        _ => {}
                    }
                }
                if let Some(gb) = found {
                    frames.push(block(gb, Some(!referenced))?);
                }
            }
            _ => {}
        }
    }
    let Some(timecode) = timecode else {
        return invalid("Cluster without a Timecode");
    };
    Ok((timecode, frames))
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

/// What a Tags element holds: whether a SimpleTag (nested ones included) is
/// `AWS_KINESISVIDEO_END_OF_FRAGMENT`, and the (TagName, TagString) of every other SimpleTag
/// directly in a Tag, in order: fragment metadata.
pub(crate) fn read_tags(data: &[u8]) -> Result<(bool, Vec<(String, String)>), MkvError> {
    let mut eof = false;
    let mut items = Vec::new();
    for tag in children(data) {
        let (id, body) = tag?;
        if id != ID_TAG {
            continue;
        }
        for c in children(body) {
            let (cid, cb) = c?;
            if cid != ID_SIMPLE_TAG {
                continue;
            }
            if simple_tag_is_eof(cb)? {
                eof = true;
                continue;
            }
            let (mut name, mut value) = (None, String::new());
            for f in children(cb) {
                let (fid, fb) = f?;
                match fid {
                    ID_TAG_NAME => name = Some(kvs_format::ebml::read_string(fb)),
                    ID_TAG_STRING => value = kvs_format::ebml::read_string(fb),
                    _ => {}
                }
            }
            if let Some(name) = name {
                items.push((name, value));
            }
        }
    }
    Ok((eof, items))
}
