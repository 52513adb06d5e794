//! Minimal Matroska writer: used for GetMedia tags, and by tests and the
//! benchmark to build synthetic streams byte by byte.

use crate::mkv::*;

/// Encodes an element ID (marker bits are part of the ID).
pub fn encode_id(id: u32, out: &mut Vec<u8>) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Encodes a size as the shortest vint (never the reserved all-ones value).
pub fn encode_size(size: u64, out: &mut Vec<u8>) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let v = size | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// The 8-byte "unknown size" marker.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// A complete element.
pub fn element(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    encode_id(id, &mut out);
    encode_size(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// An element header with the unknown-size marker.
pub fn unknown_size_header(id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_id(id, &mut out);
    out.extend_from_slice(&UNKNOWN_SIZE);
    out
}

/// An unsigned-integer element.
pub fn uint(id: u32, v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    element(id, &bytes[skip..])
}

/// The EBML header with the given DocType (as matroskamux writes it: no
/// EBMLVersion/EBMLReadVersion).
pub fn ebml_header(doc_type: &str) -> Vec<u8> {
    element(ID_EBML, &element(ID_DOCTYPE, doc_type.as_bytes()))
}

/// Info with a TimecodeScale.
pub fn info(timecode_scale: u64) -> Vec<u8> {
    element(ID_INFO, &uint(ID_TIMECODE_SCALE, timecode_scale))
}

/// A track description for [`tracks`].
#[derive(Clone, Debug)]
pub struct Track<'a> {
    /// TrackNumber.
    pub number: u64,
    /// TrackType (1 video, 2 audio).
    pub track_type: u64,
    /// CodecID.
    pub codec_id: &'a str,
}

/// A Tracks element.
pub fn tracks(list: &[Track<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for t in list {
        let mut e = uint(ID_TRACK_NUMBER, t.number);
        e.extend(uint(ID_TRACK_TYPE, t.track_type));
        e.extend(element(ID_CODEC_ID, t.codec_id.as_bytes()));
        e.extend(element(ID_CODEC_PRIVATE, &[1, 2, 3]));
        body.extend(element(ID_TRACK_ENTRY, &e));
    }
    element(ID_TRACKS, &body)
}

/// A stream header: EBML header, Segment of unknown size, Info, Tracks with
/// one H.264 video track (number 1).
pub fn simple_header() -> Vec<u8> {
    header_with_tracks(&[Track {
        number: 1,
        track_type: 1,
        codec_id: "V_MPEG4/ISO/AVC",
    }])
}

/// A stream header with the given tracks and TimecodeScale 1 ms.
pub fn header_with_tracks(list: &[Track<'_>]) -> Vec<u8> {
    let mut out = ebml_header("matroska");
    out.extend(unknown_size_header(ID_SEGMENT));
    out.extend(info(1_000_000));
    out.extend(tracks(list));
    out
}

/// A SimpleBlock element.
pub fn simple_block(track: u64, rel_timecode: i16, key: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 4);
    encode_size(track, &mut body);
    body.extend_from_slice(&rel_timecode.to_be_bytes());
    body.push(if key { 0x80 } else { 0 });
    body.extend_from_slice(payload);
    element(ID_SIMPLE_BLOCK, &body)
}

/// A BlockGroup with a Block, and a ReferenceBlock when not a key frame.
pub fn block_group(track: u64, rel_timecode: i16, key: bool, payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    encode_size(track, &mut block);
    block.extend_from_slice(&rel_timecode.to_be_bytes());
    block.push(0);
    block.extend_from_slice(payload);
    let mut body = element(ID_BLOCK, &block);
    if !key {
        body.extend(uint(ID_REFERENCE_BLOCK, 1));
    }
    element(ID_BLOCK_GROUP, &body)
}

/// A cluster of unknown size: header and Timecode; append blocks after it.
pub fn cluster_start(timecode: u64) -> Vec<u8> {
    let mut out = unknown_size_header(ID_CLUSTER);
    out.extend(uint(ID_TIMECODE, timecode));
    out
}

/// A sized cluster with the given blocks.
pub fn cluster_sized(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = uint(ID_TIMECODE, timecode);
    for b in blocks {
        body.extend_from_slice(b);
    }
    element(ID_CLUSTER, &body)
}

/// A Tags element with one Tag holding the given SimpleTags.
pub fn tags(simple: &[(&str, &str)]) -> Vec<u8> {
    let mut tag = element(ID_TAG_TARGETS, &[]);
    for (name, value) in simple {
        let mut st = element(ID_TAG_NAME, name.as_bytes());
        st.extend(element(ID_TAG_STRING, value.as_bytes()));
        tag.extend(element(ID_SIMPLE_TAG, &st));
    }
    element(ID_TAGS, &element(ID_TAG, &tag))
}

/// The `AWS_KINESISVIDEO_END_OF_FRAGMENT` Tags element AWS's producer sends.
pub fn end_of_fragment_tags() -> Vec<u8> {
    tags(&[(END_OF_FRAGMENT_TAG, "")])
}

/// Targets (inside Tag).
pub const ID_TAG_TARGETS: u32 = 0x63C0;

/// A simple unknown-size cluster with `frames` SimpleBlocks on track 1, the
/// first a key frame, `frame_ms` apart, each with `payload_len` bytes.
pub fn simple_cluster(timecode: u64, frames: usize, frame_ms: i16, payload_len: usize) -> Vec<u8> {
    let mut out = cluster_start(timecode);
    let payload = vec![0x5Au8; payload_len];
    for i in 0..frames {
        out.extend(simple_block(1, i as i16 * frame_ms, i == 0, &payload));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let mut v = Vec::new();
        encode_size(0, &mut v);
        assert_eq!(v, [0x80]);
        v.clear();
        encode_size(126, &mut v);
        assert_eq!(v, [0xFE]);
        v.clear();
        encode_size(127, &mut v); // 0xFF would be "unknown"
        assert_eq!(v, [0x40, 0x7F]);
        v.clear();
        encode_id(ID_CLUSTER, &mut v);
        assert_eq!(v, [0x1F, 0x43, 0xB6, 0x75]);
        assert_eq!(decode_vint(&[0x40, 0x7F]).unwrap(), Some((Some(127), 2)));
        assert_eq!(decode_vint(&UNKNOWN_SIZE).unwrap(), Some((None, 8)));
        assert_eq!(decode_vint(&[0xFF]).unwrap(), Some((None, 1)));
    }
}
