//! The stream header kvssink sends, in the shape AWS's producer sends it: an EBML header with
//! its default fields, no trailing NULs in DocType, a Segment of unknown size in the short
//! form, Info without DateUTC, no header Tags, SeekHead or Void (the first point to positions
//! that no longer exist once the header is rewritten). Everything else (Info's other fields,
//! Tracks) is kept byte for byte: the tracks' renumbering and the clusters' heads are the
//! splitter's ([`Splitter::aws_shape`](super::Splitter::aws_shape)), whose header this takes.
//! The header is sent once per session, so this costs nothing per frame.

use bytes::Bytes;
use kvs_format::ebml::{Writer, read_header, read_string, read_uint, write_id};

use super::{
    ID_DATE_UTC, ID_DOC_TYPE, ID_DOC_TYPE_READ_VERSION, ID_DOC_TYPE_VERSION, ID_EBML, ID_INFO,
    ID_SEEK_HEAD, ID_SEGMENT, ID_TAGS, ID_VOID,
};

/// An element as it lies in a buffer: its ID, its body, and all its bytes.
struct Raw<'a> {
    id: u32,
    body: &'a [u8],
    all: &'a [u8],
}

/// The elements of known size in `buf`, in order; stops at anything else.
fn elements(mut buf: &[u8]) -> Vec<Raw<'_>> {
    let mut out = Vec::new();
    while let Ok(Some(h)) = read_header(buf) {
        let Some(size) = h.size else { break };
        let end = h.len + size as usize;
        if end > buf.len() {
            break;
        }
        out.push(Raw {
            id: h.id,
            body: &buf[h.len..end],
            all: &buf[..end],
        });
        buf = &buf[end..];
    }
    out
}

/// The normalised header, or `None` when `header` is not the expected EBML header + Segment
/// + its children (then it is sent as it came).
pub fn normalize_header(header: &[u8]) -> Option<Bytes> {
    let ebml = elements(header).into_iter().next()?;
    if ebml.id != ID_EBML {
        return None;
    }
    let (mut doc_type, mut version, mut read_version) = ("matroska".to_owned(), 4, 2);
    for child in elements(ebml.body) {
        match child.id {
            ID_DOC_TYPE => doc_type = read_string(child.body),
            ID_DOC_TYPE_VERSION => version = read_uint(child.body).unwrap_or(4),
            ID_DOC_TYPE_READ_VERSION => read_version = read_uint(child.body).unwrap_or(2),
            _ => {}
        }
    }
    let rest = &header[ebml.all.len()..];
    let segment = read_header(rest).ok()??;
    if segment.id != ID_SEGMENT {
        return None;
    }
    let children = &rest[segment.len..];
    let kept = elements(children);
    if kept.iter().map(|c| c.all.len()).sum::<usize>() != children.len() {
        // Something this does not understand: leave the header alone.
        return None;
    }
    let mut out = Writer::new()
        .master(ID_EBML, |w| {
            w.uint(kvs_format::ids::ID_EBML_VERSION, 1)
                .uint(kvs_format::ids::ID_EBML_READ_VERSION, 1)
                .uint(kvs_format::ids::ID_EBML_MAX_ID_LENGTH, 4)
                .uint(kvs_format::ids::ID_EBML_MAX_SIZE_LENGTH, 8)
                .string(ID_DOC_TYPE, &doc_type)
                .uint(ID_DOC_TYPE_VERSION, version)
                .uint(ID_DOC_TYPE_READ_VERSION, read_version);
        })
        .finish();
    write_id(&mut out, ID_SEGMENT);
    out.push(0xFF);
    for child in kept {
        match child.id {
            ID_TAGS | ID_SEEK_HEAD | ID_VOID => {}
            ID_INFO => {
                let mut w = Writer::new();
                w.master(ID_INFO, |w| {
                    for field in elements(child.body) {
                        if field.id != ID_DATE_UTC {
                            w.bytes(field.all);
                        }
                    }
                });
                out.extend(w.finish());
            }
            _ => out.extend_from_slice(child.all),
        }
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::{Event, ID_TRACKS, Splitter};

    /// A matroskamux-shaped header: 8-byte sizes, DocType with a NUL, DateUTC, Tags.
    fn matroskamux_like() -> Vec<u8> {
        let mut doc = b"matroska".to_vec();
        doc.push(0);
        let mut out = Writer::new()
            .master_size_len(ID_EBML, 8, |w| {
                w.element(ID_DOC_TYPE, &doc)
                    .uint(ID_DOC_TYPE_VERSION, 4)
                    .uint(ID_DOC_TYPE_READ_VERSION, 2);
            })
            .finish();
        write_id(&mut out, ID_SEGMENT);
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.extend(
            Writer::new()
                .master_size_len(ID_INFO, 8, |w| {
                    w.uint(kvs_format::ids::ID_TIMECODE_SCALE, 1_000_000)
                        .element(ID_DATE_UTC, &[0, 0, 0, 0, 0, 0, 0, 1])
                        .string(kvs_format::ids::ID_MUXING_APP, "GStreamer");
                })
                .finish(),
        );
        out.extend(kvs_format::build::tracks(&[
            kvs_format::build::Track::video(1, "V_MPEG4/ISO/AVC"),
        ]));
        out.extend(
            Writer::new()
                .master(ID_TAGS, |w| {
                    w.bytes(&[]);
                })
                .finish(),
        );
        out
    }

    #[test]
    fn the_header_takes_the_shape_aws_s_producer_sends() {
        let original = matroskamux_like();
        let header = normalize_header(&original).unwrap();
        let top = elements(&header);
        assert_eq!(top[0].id, ID_EBML);
        let fields: Vec<u32> = elements(top[0].body).iter().map(|f| f.id).collect();
        assert_eq!(fields.len(), 7, "every EBML header field");
        let doc = elements(top[0].body)
            .into_iter()
            .find(|f| f.id == ID_DOC_TYPE)
            .unwrap();
        assert_eq!(doc.body, b"matroska", "no trailing NUL");
        let rest = &header[top[0].all.len()..];
        assert_eq!(
            &rest[..5],
            &[0x18, 0x53, 0x80, 0x67, 0xFF],
            "short unknown size"
        );
        let children = elements(&rest[5..]);
        let ids: Vec<u32> = children.iter().map(|c| c.id).collect();
        assert_eq!(ids, [ID_INFO, ID_TRACKS], "no Tags");
        assert!(
            elements(children[0].body)
                .iter()
                .all(|f| f.id != ID_DATE_UTC)
        );
        // Tracks byte for byte.
        let tracks =
            kvs_format::build::tracks(&[kvs_format::build::Track::video(1, "V_MPEG4/ISO/AVC")]);
        assert_eq!(children[1].all, &tracks[..]);
        // And the splitter reads it as the same stream.
        let mut s = Splitter::new(Default::default());
        let mut events = Vec::new();
        let mut stream = header.to_vec();
        stream.extend(kvs_format::build::simple_cluster(0, 2, 33, 10));
        s.push(Bytes::from(stream), &mut events).unwrap();
        let h = events
            .iter()
            .find_map(|e| match e {
                Event::Header(h) => Some(h),
                _ => None,
            })
            .unwrap();
        assert_eq!(h.tracks[0].codec_id, "V_MPEG4/ISO/AVC");
        assert_eq!(h.doc_type, "matroska");
    }

    #[test]
    fn what_it_does_not_understand_is_left_alone() {
        assert!(normalize_header(b"not matroska").is_none());
        let mut truncated = matroskamux_like();
        truncated.truncate(truncated.len() - 3);
        assert!(normalize_header(&truncated).is_none());
    }
}
