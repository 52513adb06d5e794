//! Matroska values and the Tags element builder.

use crate::ebml::Writer;
use crate::ids::*;

/// TrackType of a video track.
pub const TRACK_TYPE_VIDEO: u64 = 1;
/// TrackType of an audio track.
pub const TRACK_TYPE_AUDIO: u64 = 2;

/// CodecID of H.264 (CodecPrivate: the avcC record).
pub const CODEC_H264: &str = "V_MPEG4/ISO/AVC";
/// CodecID of H.265 (CodecPrivate: the hvcC record).
pub const CODEC_H265: &str = "V_MPEGH/ISO/HEVC";
/// CodecID of AAC (CodecPrivate: the AudioSpecificConfig).
pub const CODEC_AAC: &str = "A_AAC";
/// CodecID of Opus (CodecPrivate: the OpusHead).
pub const CODEC_OPUS: &str = "A_OPUS";
/// CodecID of the Microsoft ACM mapping, used for G.711 A-law and µ-law (CodecPrivate: a
/// WAVEFORMATEX), as AWS's producer and matroskamux write them.
pub const CODEC_ACM: &str = "A_MS/ACM";
/// WAVEFORMATEX format tag (the first two bytes, little-endian, of an `A_MS/ACM` track's
/// CodecPrivate) of G.711 A-law.
pub const WAVE_FORMAT_ALAW: u16 = 6;
/// WAVEFORMATEX format tag of G.711 µ-law.
pub const WAVE_FORMAT_MULAW: u16 = 7;

/// A Tags element holding one Tag with one SimpleTag (TagName, TagString) per
/// `(name, value)`, without Targets, as the Kinesis Video Streams producer writes its tags
/// (they apply to the whole Segment).
pub fn tags(simple: &[(&str, &str)]) -> Vec<u8> {
    write_tags(false, simple)
}

/// Like [`tags`], with an empty Targets element first in the Tag (the form the Matroska
/// specification makes mandatory, as kvs-local's GetMedia writes it).
pub fn tags_with_targets(simple: &[(&str, &str)]) -> Vec<u8> {
    write_tags(true, simple)
}

fn write_tags(targets: bool, simple: &[(&str, &str)]) -> Vec<u8> {
    Writer::new()
        .master(ID_TAGS, |w| {
            w.master(ID_TAG, |w| {
                if targets {
                    w.element(ID_TARGETS, &[]);
                }
                for (name, value) in simple {
                    w.master(ID_SIMPLE_TAG, |w| {
                        w.string(ID_TAG_NAME, name).string(ID_TAG_STRING, value);
                    });
                }
            });
        })
        .finish()
}

/// TimecodeScale when Info has none: one timecode unit is a millisecond.
pub const DEFAULT_TIMECODE_SCALE: u64 = 1_000_000;

/// The TimecodeScale an Info element's body gives (the default when it has none, or 0,
/// which is meaningless).
pub fn info_timecode_scale(mut info: &[u8]) -> u64 {
    use crate::ebml::{read_header, read_uint};
    while let Ok(Some(h)) = read_header(info) {
        let Some(size) = h.size else { break };
        let end = (h.len + size as usize).min(info.len());
        if h.id == ID_TIMECODE_SCALE {
            return read_uint(&info[h.len..end])
                .filter(|&v| v > 0)
                .unwrap_or(DEFAULT_TIMECODE_SCALE);
        }
        info = &info[end..];
    }
    DEFAULT_TIMECODE_SCALE
}

/// The TimecodeScale of a stream header (EBML header, Segment, its Info).
pub fn header_timecode_scale(mut header: &[u8]) -> u64 {
    use crate::ebml::read_header;
    while let Ok(Some(h)) = read_header(header) {
        match (h.id, h.size) {
            (ID_SEGMENT, _) => header = &header[h.len..],
            (ID_INFO, Some(size)) => {
                let end = (h.len + size as usize).min(header.len());
                return info_timecode_scale(&header[h.len..end]);
            }
            (_, Some(size)) => header = &header[(h.len + size as usize).min(header.len())..],
            (_, None) => break,
        }
    }
    DEFAULT_TIMECODE_SCALE
}

/// Whether two stream headers describe the same tracks, so that the clusters sent after
/// one can follow the other in one Segment: the same elements with the same values, but
/// for what a muxer makes new at every run or that points into its own file (SegmentUID,
/// TrackUID, DateUTC, Duration, SeekHead, Void, CRC-32, header Tags). A producer that
/// restarted sends such a header.
pub fn same_tracks(a: &[u8], b: &[u8]) -> bool {
    fn leaves(mut buf: &[u8], out: &mut Vec<(u32, Vec<u8>)>) {
        use crate::ebml::read_header;
        while let Ok(Some(h)) = read_header(buf) {
            let end = h
                .size
                .map_or(buf.len(), |s| (h.len + s as usize).min(buf.len()));
            let body = &buf[h.len..end];
            match h.id {
                ID_SEGMENT_UID | ID_TRACK_UID | ID_DATE_UTC | ID_DURATION | ID_SEEK_HEAD
                | ID_VOID | ID_CRC_32 | ID_TAGS => {}
                ID_EBML | ID_SEGMENT | ID_INFO | ID_TRACKS | ID_TRACK_ENTRY | ID_VIDEO
                | ID_AUDIO => {
                    out.push((h.id, Vec::new()));
                    leaves(body, out);
                }
                id => out.push((id, body.to_vec())),
            }
            buf = &buf[end..];
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    leaves(a, &mut x);
    leaves(b, &mut y);
    x == y
}

/// The CodecID of each TrackEntry of a stream header, in order.
pub fn header_codecs(header: &[u8]) -> Vec<String> {
    fn walk(mut buf: &[u8], out: &mut Vec<String>) {
        use crate::ebml::{read_header, read_string};
        while let Ok(Some(h)) = read_header(buf) {
            let end = h
                .size
                .map_or(buf.len(), |s| (h.len + s as usize).min(buf.len()));
            match h.id {
                ID_SEGMENT | ID_TRACKS | ID_TRACK_ENTRY => walk(&buf[h.len..end], out),
                ID_CODEC_ID => out.push(read_string(&buf[h.len..end])),
                _ => {}
            }
            buf = &buf[end..];
        }
    }
    let mut out = Vec::new();
    walk(header, &mut out);
    out
}

/// Where a Cluster's Timecode lies, as [`cluster_timecode`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTimecode {
    /// The Timecode, in TimecodeScale units.
    pub value: u64,
    /// Length of the Cluster's ID and size.
    head: usize,
    /// Where the Timecode element starts, and its body.
    element_at: usize,
    body_at: usize,
    /// Bytes from the Cluster's ID to the end of its Timecode element: what
    /// [`cluster_head_with_timecode`] replaces.
    pub head_len: usize,
}

/// The Timecode of the Cluster whose ID starts `cluster`. `None` when `cluster` does not
/// start with one, its Timecode is not among its children before the first block, or the
/// Cluster carries a CRC-32 (which a new Timecode would break).
pub fn cluster_timecode(cluster: &[u8]) -> Option<ClusterTimecode> {
    use crate::ebml::{read_header, read_uint};
    let head = read_header(cluster).ok()??;
    if head.id != ID_CLUSTER {
        return None;
    }
    let mut at = head.len;
    loop {
        let child = read_header(cluster.get(at..)?).ok()??;
        let end = at + child.len + usize::try_from(child.size?).ok()?;
        match child.id {
            ID_TIMECODE => {
                return Some(ClusterTimecode {
                    value: read_uint(cluster.get(at + child.len..end)?)?,
                    head: head.len,
                    element_at: at,
                    body_at: at + child.len,
                    head_len: end,
                });
            }
            ID_CRC_32 | ID_SIMPLE_BLOCK | ID_BLOCK_GROUP => return None,
            _ => at = end,
        }
    }
}

/// The relative timecodes (in TimecodeScale units) of the blocks of the Cluster whose ID
/// starts `cluster`, in the order they come: SimpleBlocks and the Blocks of BlockGroups, up to
/// the end of a Cluster of known size, or (unknown size) to the first element that is not one
/// of its children. Empty when `cluster` does not start with a Cluster.
pub fn cluster_block_timecodes(cluster: &[u8]) -> Vec<i16> {
    use crate::ebml::{read_header, read_vint};
    let mut out = Vec::new();
    let Ok(Some(head)) = read_header(cluster) else {
        return out;
    };
    if head.id != ID_CLUSTER {
        return out;
    }
    let end = head
        .size
        .and_then(|size| usize::try_from(size).ok())
        .map_or(cluster.len(), |size| (head.len + size).min(cluster.len()));
    let block_timecode = |body: &[u8]| {
        let (_, n) = read_vint(body).ok()??;
        let bytes = body.get(n..n + 2)?;
        Some(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let mut at = head.len;
    while let Ok(Some(child)) = read_header(&cluster[at.min(end)..end]) {
        let Some(size) = child.size.and_then(|s| usize::try_from(s).ok()) else {
            break;
        };
        let body = &cluster[(at + child.len).min(end)..(at + child.len + size).min(end)];
        match child.id {
            ID_SIMPLE_BLOCK => out.extend(block_timecode(body)),
            ID_BLOCK_GROUP => {
                let mut rest = body;
                while let Ok(Some(c)) = read_header(rest) {
                    let Some(size) = c.size.and_then(|s| usize::try_from(s).ok()) else {
                        break;
                    };
                    let inner = &rest[c.len.min(rest.len())..(c.len + size).min(rest.len())];
                    if c.id == ID_BLOCK {
                        out.extend(block_timecode(inner));
                    }
                    rest = &rest[(c.len + size).min(rest.len())..];
                }
            }
            ID_TIMECODE | ID_CRC_32 | ID_VOID | ID_POSITION | ID_PREV_SIZE => {}
            _ => break,
        }
        at += child.len + size;
    }
    out
}

/// The bytes that replace the first `found.head_len` bytes of `cluster` (as
/// [`cluster_timecode`] found them) to give it the Timecode `value`, all else unchanged. The
/// Timecode keeps its width when `value` fits in it, and the Cluster's size is then unchanged;
/// otherwise it takes 8 bytes and a Cluster of known size grows by as many.
pub fn cluster_head_with_timecode(cluster: &[u8], found: &ClusterTimecode, value: u64) -> Vec<u8> {
    use crate::ebml::{read_size, write_id, write_vint, write_vint_len};
    let old = found.head_len - found.body_at;
    let width = if old == 8 || (old < 8 && value >> (8 * old) == 0) {
        old
    } else {
        8
    };
    let mut out = Vec::with_capacity(found.head_len + 8);
    write_id(&mut out, ID_CLUSTER);
    let size_field = &cluster[4..found.head];
    match read_size(size_field) {
        Ok(Some((Some(size), _))) if width > old => {
            let size = size + (width - old) as u64;
            if size < (1u64 << (7 * size_field.len())) - 1 {
                write_vint_len(&mut out, size, size_field.len());
            } else {
                write_vint(&mut out, size);
            }
        }
        _ => out.extend_from_slice(size_field),
    }
    out.extend_from_slice(&cluster[found.head..found.element_at]);
    write_id(&mut out, ID_TIMECODE);
    write_vint(&mut out, width as u64);
    out.extend_from_slice(&value.to_be_bytes()[8 - width..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cluster` with its Timecode replaced by `value`, as a reader would splice it.
    fn retimed(cluster: &[u8], value: u64) -> Vec<u8> {
        let found = cluster_timecode(cluster).expect("a Cluster with a Timecode");
        let mut out = cluster_head_with_timecode(cluster, &found, value);
        out.extend_from_slice(&cluster[found.head_len..]);
        out
    }

    #[test]
    fn a_cluster_timecode_is_replaced_in_place_when_it_fits() {
        use crate::build::{cluster, cluster_sized, simple_block};
        let blocks = [
            simple_block(1, 0, true, b"key"),
            simple_block(1, 33, false, b"delta"),
        ];
        for c in [cluster(5, &blocks), cluster_sized(5, &blocks)] {
            assert_eq!(cluster_timecode(&c).unwrap().value, 5);
            let r = retimed(&c, 200);
            assert_eq!(r.len(), c.len(), "same width, same size");
            assert_eq!(cluster_timecode(&r).unwrap().value, 200);
            assert_eq!(r[r.len() - 20..], c[c.len() - 20..]);
        }
        // AWS's producer writes 8 bytes and Position 0 after them: both kept.
        let mut aws = crate::kvs::cluster_head(7).to_vec();
        aws.extend(simple_block(1, 0, true, b"key"));
        let r = retimed(&aws, 1 << 40);
        assert_eq!(r.len(), aws.len());
        assert_eq!(cluster_timecode(&r).unwrap().value, 1 << 40);
        assert_eq!(r[15..], aws[15..]);
    }

    #[test]
    fn a_timecode_that_outgrows_its_width_grows_a_sized_cluster() {
        use crate::build::{cluster, cluster_sized, simple_block};
        use crate::ebml::read_header;
        let blocks = [simple_block(1, 0, true, b"key")];
        let sized = cluster_sized(3, &blocks);
        let r = retimed(&sized, 1_700_000_000_000);
        assert_eq!(r.len(), sized.len() + 7);
        let head = read_header(&r).unwrap().unwrap();
        assert_eq!(
            head.len + head.size.unwrap() as usize,
            r.len(),
            "the size covers the body"
        );
        assert_eq!(cluster_timecode(&r).unwrap().value, 1_700_000_000_000);
        let unknown = cluster(3, &blocks);
        let r = retimed(&unknown, 1 << 20);
        assert_eq!(read_header(&r).unwrap().unwrap().size, None);
        assert_eq!(cluster_timecode(&r).unwrap().value, 1 << 20);
    }

    #[test]
    fn headers_of_two_muxer_runs_have_the_same_tracks() {
        use crate::build::{self, Track};
        use crate::ebml::Writer;
        let run = |uid: u8, width: u64| {
            let mut h = build::ebml_header("matroska");
            h.extend(build::segment_unknown_size());
            h.extend(
                Writer::new()
                    .master(ID_INFO, |w| {
                        w.element(ID_SEGMENT_UID, &[uid; 16])
                            .uint(ID_TIMECODE_SCALE, 1_000_000)
                            .element(ID_DATE_UTC, &[uid; 8]);
                    })
                    .finish(),
            );
            h.extend(
                Writer::new()
                    .master(ID_TRACKS, |w| {
                        w.master(ID_TRACK_ENTRY, |w| {
                            w.uint(ID_TRACK_NUMBER, 1)
                                .uint(ID_TRACK_UID, u64::from(uid))
                                .string(ID_CODEC_ID, CODEC_H264)
                                .master(ID_VIDEO, |w| {
                                    w.uint(ID_PIXEL_WIDTH, width);
                                });
                        });
                    })
                    .finish(),
            );
            h
        };
        assert!(same_tracks(&run(1, 320), &run(2, 320)));
        assert!(
            !same_tracks(&run(1, 320), &run(1, 640)),
            "another resolution"
        );
        assert!(!same_tracks(
            &build::header_with_tracks(&[Track::video(1, build::AVC)]),
            &build::header_with_tracks(&[Track::video(2, build::AVC)])
        ));
    }

    #[test]
    fn the_codecs_of_a_header() {
        use crate::build::{self, Track};
        let header =
            build::header_with_tracks(&[Track::video(1, build::AVC), Track::audio(2, CODEC_AAC)]);
        assert_eq!(header_codecs(&header), [CODEC_H264, CODEC_AAC]);
        assert!(header_codecs(&build::ebml_header("matroska")).is_empty());
    }

    #[test]
    fn the_timecode_scale_of_a_header() {
        use crate::build;
        let mut header = build::ebml_header("matroska");
        header.extend(build::segment_unknown_size());
        header.extend(build::info(100_000));
        assert_eq!(header_timecode_scale(&header), 100_000);
        assert_eq!(header_timecode_scale(&build::simple_header()), 1_000_000);
        assert_eq!(
            header_timecode_scale(&build::ebml_header("webm")),
            DEFAULT_TIMECODE_SCALE
        );
        assert_eq!(info_timecode_scale(&[]), DEFAULT_TIMECODE_SCALE);
    }

    #[test]
    fn a_cluster_without_a_timecode_before_its_blocks_or_with_a_crc_is_left_alone() {
        use crate::ebml::Writer;
        let late = Writer::new()
            .master(ID_CLUSTER, |w| {
                w.element(ID_SIMPLE_BLOCK, &[0x81, 0, 0, 0x80])
                    .uint(ID_TIMECODE, 1);
            })
            .finish();
        assert_eq!(cluster_timecode(&late), None);
        let crc = Writer::new()
            .master(ID_CLUSTER, |w| {
                w.element(ID_CRC_32, &[0; 4]).uint(ID_TIMECODE, 1);
            })
            .finish();
        assert_eq!(cluster_timecode(&crc), None);
        assert_eq!(cluster_timecode(&crate::build::tracks(&[])), None);
    }

    #[test]
    fn tags_layout() {
        let t = tags(&[("A", "b")]);
        // Tags(Tag(SimpleTag(TagName "A", TagString "b")))
        assert_eq!(
            t,
            [
                &[
                    0x12, 0x54, 0xC3, 0x67, 0x8E, 0x73, 0x73, 0x8B, 0x67, 0xC8, 0x88
                ][..],
                &[0x45, 0xA3, 0x81, b'A', 0x44, 0x87, 0x81, b'b'],
            ]
            .concat()
        );
        let t = tags_with_targets(&[("A", "b")]);
        assert_eq!(&t[4..11], &[0x91, 0x73, 0x73, 0x8E, 0x63, 0xC0, 0x80]);
        assert_eq!(tags(&[]).len(), 4 + 1 + 2 + 1);
    }
}
