//! A builder of synthetic Matroska streams, for the unit tests of both crates, the
//! integration tests and the benchmarks.
//!
//! Each function returns the bytes of one piece, to be concatenated in stream order:
//!
//! ```
//! use kvs_format::build::*;
//! let mut stream = header_with_tracks(&[Track::video(1, AVC), Track::audio(2, "A_AAC")]);
//! stream.extend(cluster(0, &[
//!     simple_block(1, 0, true, &[0; 100]),
//!     simple_block(2, 10, true, &[0; 20]),
//! ]));
//! stream.extend(end_of_fragment_tags());
//! ```
//!
//! The layout follows `matroskamux streamable=true`: an EBML header with an 8-byte size and a
//! NUL-terminated DocType, a Segment and Clusters of unknown size, Info and Tracks before the
//! first Cluster. Pieces that break the rules on purpose are written with
//! [`Writer`] (e.g. [`Writer::header`] to
//! declare a size that is not there).

use crate::ebml::{Writer, write_vint};
use crate::ids::*;
use crate::matroska::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};

pub use crate::kvs::end_of_fragment_tags;
pub use crate::matroska::tags;

/// CodecID of H.264 video.
pub const AVC: &str = crate::matroska::CODEC_H264;
/// The CodecPrivate of every built track: placeholder bytes, not a real codec record.
pub const CODEC_PRIVATE: [u8; 4] = [1, 2, 3, 4];
/// The MuxingApp of [`info`].
pub const MUXING_APP: &str = "kvs-format test builder";

/// One element with the given body (shorthand for [`Writer::element`]).
pub fn element(id: u32, body: &[u8]) -> Vec<u8> {
    Writer::new().element(id, body).finish()
}

/// One unsigned-integer element (shorthand for [`Writer::uint`]).
pub fn uint(id: u32, value: u64) -> Vec<u8> {
    Writer::new().uint(id, value).finish()
}

/// The EBML header as matroskamux writes it: an 8-byte size, DocType with a trailing NUL,
/// DocTypeVersion and DocTypeReadVersion 2.
pub fn ebml_header(doc_type: &str) -> Vec<u8> {
    let mut doc = doc_type.as_bytes().to_vec();
    doc.push(0);
    Writer::new()
        .master_size_len(ID_EBML, 8, |w| {
            w.element(ID_DOC_TYPE, &doc)
                .uint(ID_DOC_TYPE_VERSION, 2)
                .uint(ID_DOC_TYPE_READ_VERSION, 2);
        })
        .finish()
}

/// The header of a Segment of unknown size.
pub fn segment_unknown_size() -> Vec<u8> {
    Writer::new().unknown_size(ID_SEGMENT).finish()
}

/// Info with the given TimecodeScale and a MuxingApp ([`MUXING_APP`]).
pub fn info(timecode_scale: u64) -> Vec<u8> {
    Writer::new()
        .master(ID_INFO, |w| {
            w.uint(ID_TIMECODE_SCALE, timecode_scale)
                .string(ID_MUXING_APP, MUXING_APP);
        })
        .finish()
}

/// A track for [`tracks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track<'a> {
    /// TrackNumber.
    pub number: u64,
    /// TrackType (1 video, 2 audio).
    pub track_type: u64,
    /// CodecID.
    pub codec_id: &'a str,
}

impl<'a> Track<'a> {
    /// A video track.
    pub const fn video(number: u64, codec_id: &'a str) -> Track<'a> {
        Track {
            number,
            track_type: TRACK_TYPE_VIDEO,
            codec_id,
        }
    }

    /// An audio track.
    pub const fn audio(number: u64, codec_id: &'a str) -> Track<'a> {
        Track {
            number,
            track_type: TRACK_TYPE_AUDIO,
            codec_id,
        }
    }
}

/// A Tracks element: one TrackEntry (TrackNumber, TrackType, CodecID, CodecPrivate
/// [`CODEC_PRIVATE`]) per track.
pub fn tracks(list: &[Track<'_>]) -> Vec<u8> {
    Writer::new()
        .master(ID_TRACKS, |w| {
            for t in list {
                w.master(ID_TRACK_ENTRY, |w| {
                    w.uint(ID_TRACK_NUMBER, t.number)
                        .uint(ID_TRACK_TYPE, t.track_type)
                        .string(ID_CODEC_ID, t.codec_id)
                        .element(ID_CODEC_PRIVATE, &CODEC_PRIVATE);
                });
            }
        })
        .finish()
}

/// A stream header: EBML header (`matroska`), Segment of unknown size, Info with a 1 ms
/// TimecodeScale, Tracks.
pub fn header_with_tracks(list: &[Track<'_>]) -> Vec<u8> {
    let mut out = ebml_header("matroska");
    out.extend(segment_unknown_size());
    out.extend(info(1_000_000));
    out.extend(tracks(list));
    out
}

/// A stream header with one H.264 video track, number 1.
pub fn simple_header() -> Vec<u8> {
    header_with_tracks(&[Track::video(1, AVC)])
}

/// A block body: track number (vint), relative timecode, flags, payload.
fn block_body(track: u64, rel_timecode: i16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 4);
    write_vint(&mut body, track);
    body.extend_from_slice(&rel_timecode.to_be_bytes());
    body.push(flags);
    body.extend_from_slice(payload);
    body
}

/// A SimpleBlock; `key` sets the key-frame flag (0x80).
pub fn simple_block(track: u64, rel_timecode: i16, key: bool, payload: &[u8]) -> Vec<u8> {
    let flags = if key { 0x80 } else { 0 };
    element(
        ID_SIMPLE_BLOCK,
        &block_body(track, rel_timecode, flags, payload),
    )
}

/// A BlockGroup: a Block, a BlockDuration of 33, and for a delta frame (`!key`) a
/// ReferenceBlock one frame (33) back.
pub fn block_group(track: u64, rel_timecode: i16, key: bool, payload: &[u8]) -> Vec<u8> {
    Writer::new()
        .master(ID_BLOCK_GROUP, |w| {
            w.element(ID_BLOCK, &block_body(track, rel_timecode, 0, payload))
                .uint(ID_BLOCK_DURATION, 33);
            if !key {
                w.int(ID_REFERENCE_BLOCK, -33);
            }
        })
        .finish()
}

/// The start of a Cluster of unknown size: its header and Timecode; blocks follow.
pub fn cluster_start(timecode: u64) -> Vec<u8> {
    Writer::new()
        .unknown_size(ID_CLUSTER)
        .uint(ID_TIMECODE, timecode)
        .finish()
}

/// A Cluster of unknown size: Timecode, then `children` (blocks, or anything else).
pub fn cluster(timecode: u64, children: &[Vec<u8>]) -> Vec<u8> {
    let mut out = cluster_start(timecode);
    for c in children {
        out.extend_from_slice(c);
    }
    out
}

/// A Cluster of known size: Timecode, then `children`.
pub fn cluster_sized(timecode: u64, children: &[Vec<u8>]) -> Vec<u8> {
    Writer::new()
        .master(ID_CLUSTER, |w| {
            w.uint(ID_TIMECODE, timecode);
            for c in children {
                w.bytes(c);
            }
        })
        .finish()
}

/// A Cluster of unknown size with `frames` SimpleBlocks on track 1, `frame_ms` apart, the
/// first a key frame, each with `payload_len` bytes of `0x5A`.
pub fn simple_cluster(timecode: u64, frames: usize, frame_ms: i16, payload_len: usize) -> Vec<u8> {
    let payload = vec![0x5Au8; payload_len];
    let mut out = cluster_start(timecode);
    for i in 0..frames {
        out.extend(simple_block(1, i as i16 * frame_ms, i == 0, &payload));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebml::{read_header, read_string, read_uint, read_vint};
    use crate::kvs::END_OF_FRAGMENT_TAG;

    /// Splits `data` into (id, size, body) at one level; an unknown size has an empty body
    /// (its children follow at the same level).
    fn level(data: &[u8]) -> Vec<(u32, Option<u64>, &[u8])> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < data.len() {
            let h = read_header(&data[p..]).unwrap().unwrap();
            let body_len = h.size.unwrap_or(0) as usize;
            out.push((h.id, h.size, &data[p + h.len..p + h.len + body_len]));
            p += h.len + body_len;
        }
        out
    }

    fn ids(data: &[u8]) -> Vec<u32> {
        level(data).iter().map(|e| e.0).collect()
    }

    #[test]
    fn header_round_trip() {
        let h = header_with_tracks(&[Track::video(1, AVC), Track::audio(2, "A_AAC")]);
        let top = level(&h);
        assert_eq!(
            ids(&h),
            [ID_EBML, ID_SEGMENT, ID_INFO, ID_TRACKS],
            "{top:02X?}"
        );
        // EBML header: 8-byte size, NUL-terminated DocType.
        assert_eq!(&h[4..12], &[0x01, 0, 0, 0, 0, 0, 0, 0x14]);
        let ebml = level(top[0].2);
        assert_eq!(ebml[0].0, ID_DOC_TYPE);
        assert_eq!(ebml[0].2, b"matroska\0");
        assert_eq!(read_string(ebml[0].2), "matroska");
        assert_eq!(top[1].1, None, "Segment of unknown size");
        let info = level(top[2].2);
        assert_eq!(
            (info[0].0, read_uint(info[0].2)),
            (ID_TIMECODE_SCALE, Some(1_000_000))
        );
        let entries = level(top[3].2);
        assert_eq!(entries.len(), 2);
        let second = level(entries[1].2);
        assert_eq!(
            second.iter().map(|e| e.0).collect::<Vec<_>>(),
            [
                ID_TRACK_NUMBER,
                ID_TRACK_TYPE,
                ID_CODEC_ID,
                ID_CODEC_PRIVATE
            ]
        );
        assert_eq!(read_uint(second[0].2), Some(2));
        assert_eq!(read_uint(second[1].2), Some(TRACK_TYPE_AUDIO));
        assert_eq!(read_string(second[2].2), "A_AAC");
        assert_eq!(second[3].2, CODEC_PRIVATE);
        assert_eq!(
            simple_header(),
            header_with_tracks(&[Track {
                number: 1,
                track_type: 1,
                codec_id: AVC
            }])
        );
    }

    #[test]
    fn clusters_and_blocks_round_trip() {
        let blocks = [
            simple_block(1, 0, true, b"key"),
            simple_block(2, -5, false, b"x"),
            block_group(1, 33, false, b"delta"),
        ];
        let unknown = cluster(2000, &blocks);
        let top = level(&unknown);
        assert_eq!(top[0].0, ID_CLUSTER);
        assert_eq!(top[0].1, None);
        assert_eq!(unknown, [cluster_start(2000), blocks.concat()].concat());
        let sized = cluster_sized(2000, &blocks);
        let c = level(&sized);
        assert_eq!(c.len(), 1);
        let kids = level(c[0].2);
        assert_eq!(
            kids.iter().map(|e| e.0).collect::<Vec<_>>(),
            [
                ID_TIMECODE,
                ID_SIMPLE_BLOCK,
                ID_SIMPLE_BLOCK,
                ID_BLOCK_GROUP
            ]
        );
        assert_eq!(read_uint(kids[0].2), Some(2000));
        // SimpleBlock: track vint, int16 time, flags, payload.
        assert_eq!(kids[1].2, [0x81, 0, 0, 0x80, b'k', b'e', b'y']);
        assert_eq!(kids[2].2, [0x82, 0xFF, 0xFB, 0x00, b'x']);
        let group = level(kids[3].2);
        assert_eq!(
            group.iter().map(|e| e.0).collect::<Vec<_>>(),
            [ID_BLOCK, ID_BLOCK_DURATION, ID_REFERENCE_BLOCK]
        );
        assert_eq!(read_vint(group[0].2), Ok(Some((1, 1))));
        assert_eq!(group[2].2, [0xDF]);
        assert_eq!(ids(&block_group(1, 0, true, b"k"))[..], [ID_BLOCK_GROUP]);
        assert_eq!(level(level(&block_group(1, 0, true, b"k"))[0].2).len(), 2);
        // simple_cluster: a key frame first, then delta frames.
        let s = simple_cluster(0, 3, 33, 10);
        let blocks: Vec<_> = level(&s).into_iter().skip(2).collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].2[3], 0x80);
        assert_eq!(&blocks[2].2[..4], &[0x81, 0, 66, 0]);
    }

    #[test]
    fn tags_and_end_of_fragment() {
        let eof = end_of_fragment_tags();
        let t = level(&eof);
        assert_eq!(t[0].0, ID_TAGS);
        let simple = level(level(level(t[0].2)[0].2)[0].2);
        assert_eq!(read_string(simple[0].2), END_OF_FRAGMENT_TAG);
        assert_eq!(simple[1], (ID_TAG_STRING, Some(0), &[][..]));
        assert_eq!(ids(&element(ID_VOID, &[0; 3])), [ID_VOID]);
        assert_eq!(uint(ID_PREV_SIZE, 1234), [0xAB, 0x82, 0x04, 0xD2]);
    }
}
