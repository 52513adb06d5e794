//! Cuts a GetMedia response body into whole fragments and reads each fragment's tags.
//!
//! A GetMedia body is a sequence of self-contained MKV chunks, one per fragment: an EBML
//! header, a Segment (of unknown size) with the stream's Info and Tracks, a Tags element with
//! the fragment number and timestamps, the Cluster, and a Tags element with the continuation
//! token. A fragment is complete when its continuation token has been read, or when the next
//! EBML header begins; nothing of a fragment is handed on before that, so that a connection
//! lost in the middle of one never leaves half a fragment downstream.

use bytes::{Bytes, BytesMut};
use kvs_format::ebml;
use kvs_format::ids::*;
use kvs_format::kvs::get_media_tags as tag;
use kvs_format::matroska::{DEFAULT_TIMECODE_SCALE, info_timecode_scale};
use kvs_format::timeline::{Placed, Timeline};

/// What the service's tags say about one fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FragmentTags {
    pub number: Option<String>,
    /// Producer timestamp, ms since the epoch.
    pub producer_ms: Option<u64>,
    /// Server timestamp, ms since the epoch.
    pub server_ms: Option<u64>,
    pub millis_behind_now: Option<u64>,
    pub continuation_token: Option<String>,
    pub error_code: Option<String>,
    pub error_id: Option<String>,
    /// The fragment's metadata (the producer's `kvs-add-metadata` items): its Tags' other
    /// SimpleTags, name and value, in the order they come.
    pub metadata: Vec<(String, String)>,
}

impl FragmentTags {
    fn set(&mut self, name: &str, value: String) {
        let ms = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .map(|s| (s * 1000.0).round() as u64)
        };
        match name {
            tag::FRAGMENT_NUMBER => self.number = Some(value),
            tag::PRODUCER_TIMESTAMP => self.producer_ms = ms(&value),
            tag::SERVER_TIMESTAMP => self.server_ms = ms(&value),
            tag::MILLIS_BEHIND_NOW => self.millis_behind_now = value.trim().parse().ok(),
            tag::CONTINUATION_TOKEN => self.continuation_token = Some(value),
            tag::ERROR_CODE => self.error_code = Some(value),
            tag::ERROR_ID => self.error_id = Some(value),
            _ => {}
        }
    }
}

/// One whole fragment as the service sent it.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Every byte of the fragment's chunk, its stream header included.
    pub bytes: Bytes,
    /// Length of the stream header at the start of `bytes` (EBML header, Segment header, and
    /// the Segment's elements before the first fragment Tags or Cluster).
    pub header_len: usize,
    /// Whether the chunk holds a Cluster (a chunk with only an error has none).
    pub has_cluster: bool,
    /// Where the Cluster starts in `bytes`.
    pub cluster_at: Option<usize>,
    /// The TimecodeScale of the chunk's Info (nanoseconds per Cluster timecode unit).
    pub timecode_scale: u64,
    /// Where the chunk's Tags elements lie in `bytes` (the service's and the metadata).
    pub tags_at: Vec<std::ops::Range<usize>>,
    pub tags: FragmentTags,
    /// When its last byte was read from the response: a consumer that takes it later (held
    /// by its own pipeline) knows how long it waited.
    pub received: std::time::Instant,
}

impl Fragment {
    /// The fragment's bytes for a demuxer, in pieces (slices of `bytes`, and a moved
    /// Cluster's new head): from its stream header on, or after it with `skip_header`; without
    /// its Tags (what they say is in [`FragmentTags`]: passed on, the demuxer's tag list would
    /// grow with every fragment); its Cluster put on `timeline` (see
    /// [`kvs_format::timeline`]).
    pub fn placed(&self, timeline: &mut Timeline, skip_header: bool) -> (Vec<Bytes>, Placed) {
        // What is left out or replaced: (from, to, replacement).
        let mut cuts: Vec<(usize, usize, Option<Bytes>)> = self
            .tags_at
            .iter()
            .map(|r| (r.start, r.end, None))
            .collect();
        let mut placed = Placed::default();
        if let Some(at) = self.cluster_at {
            placed = timeline.place_cluster(
                &self.bytes[at..],
                self.timecode_scale,
                self.tags.producer_ms,
            );
            if let Some((head, replaced)) = placed.head.take() {
                cuts.push((at, at + replaced, Some(Bytes::from(head))));
            }
        }
        cuts.sort_by_key(|c| c.0);
        let mut pieces = Vec::new();
        let mut from = if skip_header { self.header_len } else { 0 };
        for (start, end, replacement) in cuts {
            if start > from {
                pieces.push(self.bytes.slice(from..start));
            }
            pieces.extend(replacement);
            from = from.max(end);
        }
        if from < self.bytes.len() {
            pieces.push(self.bytes.slice(from..));
        }
        (pieces, placed)
    }
}

/// The body is not the MKV GetMedia sends.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unexpected GetMedia data at byte {offset}: {what}")]
pub struct SplitError {
    pub offset: u64,
    pub what: String,
}

/// Accumulates body bytes and hands out whole fragments.
#[derive(Debug, Default)]
pub struct Splitter {
    /// The current fragment's bytes, from its EBML header on.
    buf: BytesMut,
    /// Where the next element header starts in `buf` (may lie beyond its end while a skipped
    /// element's body is still arriving).
    pos: usize,
    header_len: Option<usize>,
    has_cluster: bool,
    cluster_at: Option<usize>,
    timecode_scale: Option<u64>,
    tags_at: Vec<std::ops::Range<usize>>,
    tags: FragmentTags,
    /// Body bytes handed out as fragments so far (for error offsets).
    consumed: u64,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Appends body bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet part of a complete fragment.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete fragment, if the bytes pushed so far hold one.
    pub fn next_fragment(&mut self) -> Result<Option<Fragment>, SplitError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let header = ebml::read_header(&self.buf[self.pos..]).map_err(|e| self.error(e))?;
            let Some(header) = header else {
                return Ok(None);
            };
            match header.id {
                ID_EBML if self.pos > 0 => {
                    // The previous fragment ended without its continuation token.
                    let at = self.pos;
                    return Ok(Some(self.cut(at)));
                }
                ID_SEGMENT | ID_CLUSTER => {
                    if header.id == ID_CLUSTER {
                        self.has_cluster = true;
                        self.header_len.get_or_insert(self.pos);
                        self.cluster_at.get_or_insert(self.pos);
                    }
                    self.pos += header.len;
                }
                ID_INFO if header.size.is_some() => {
                    let end = self.pos + header.len + header.size.unwrap_or(0) as usize;
                    if self.buf.len() < end {
                        return Ok(None);
                    }
                    self.timecode_scale =
                        Some(info_timecode_scale(&self.buf[self.pos + header.len..end]));
                    self.pos = end;
                }
                ID_TAGS => {
                    let size = header
                        .size
                        .ok_or_else(|| self.error("Tags of unknown size"))?;
                    let end = self.pos + header.len + size as usize;
                    if self.buf.len() < end {
                        return Ok(None);
                    }
                    let mut found = FragmentTags::default();
                    let kvs = read_simple_tags(&self.buf[self.pos + header.len..end], &mut found);
                    if kvs {
                        self.header_len.get_or_insert(self.pos);
                    }
                    // Tags in the stream header are the recording's, passed on with it.
                    if self.header_len.is_some() {
                        merge(&mut self.tags, found);
                        self.tags_at.push(self.pos..end);
                    }
                    self.pos = end;
                    if self.tags.continuation_token.is_some() && self.has_cluster
                        || self.tags.error_code.is_some()
                    {
                        return Ok(Some(self.cut(end)));
                    }
                }
                _ => {
                    let size = header.size.ok_or_else(|| {
                        self.error(format!("element {:#x} of unknown size", header.id))
                    })?;
                    self.pos += header.len + size as usize;
                }
            }
        }
    }

    fn cut(&mut self, at: usize) -> Fragment {
        let bytes = self.buf.split_to(at).freeze();
        self.pos -= at;
        self.consumed += at as u64;
        Fragment {
            header_len: self.header_len.take().unwrap_or(bytes.len()),
            has_cluster: std::mem::take(&mut self.has_cluster),
            cluster_at: self.cluster_at.take(),
            timecode_scale: self.timecode_scale.take().unwrap_or(DEFAULT_TIMECODE_SCALE),
            tags_at: std::mem::take(&mut self.tags_at),
            tags: std::mem::take(&mut self.tags),
            bytes,
            received: std::time::Instant::now(),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> SplitError {
        SplitError {
            offset: self.consumed + self.pos as u64,
            what: what.to_string(),
        }
    }
}

fn merge(into: &mut FragmentTags, mut from: FragmentTags) {
    into.metadata.append(&mut from.metadata);
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f; } )* };
    }
    take!(
        number,
        producer_ms,
        server_ms,
        millis_behind_now,
        continuation_token,
        error_code,
        error_id
    );
}

/// Reads the SimpleTags of a Tags body into `tags`; whether any was a Kinesis Video one.
fn read_simple_tags(mut body: &[u8], tags: &mut FragmentTags) -> bool {
    let mut kvs = false;
    while let Ok(Some(h)) = ebml::read_header(body) {
        let Some(size) = h.size else { break };
        let end = (h.len + size as usize).min(body.len());
        let inner = &body[h.len..end];
        match h.id {
            ID_TAG => kvs |= read_simple_tags(inner, tags),
            ID_SIMPLE_TAG => {
                let (mut name, mut value) = (String::new(), String::new());
                let mut rest = inner;
                while let Ok(Some(c)) = ebml::read_header(rest) {
                    let Some(size) = c.size else { break };
                    let end = (c.len + size as usize).min(rest.len());
                    match c.id {
                        ID_TAG_NAME => name = ebml::read_string(&rest[c.len..end]),
                        ID_TAG_STRING => value = ebml::read_string(&rest[c.len..end]),
                        _ => {}
                    }
                    rest = &rest[end..];
                }
                if name.starts_with("AWS_KINESISVIDEO_") {
                    kvs = true;
                    tags.set(&name, value);
                } else if !name.is_empty() {
                    tags.metadata.push((name, value));
                }
            }
            _ => {}
        }
        body = &body[end..];
    }
    kvs
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_format::build;
    use kvs_format::matroska::tags_with_targets;

    fn chunk(number: &str, producer: &str, token: bool) -> Vec<u8> {
        let mut out = build::simple_header();
        out.extend(tags_with_targets(&[
            (tag::FRAGMENT_NUMBER, number),
            (tag::SERVER_TIMESTAMP, "1700000001.5"),
            (tag::PRODUCER_TIMESTAMP, producer),
        ]));
        out.extend(build::simple_cluster(0, 3, 33, 10));
        if token {
            out.extend(tags_with_targets(&[
                (tag::MILLIS_BEHIND_NOW, "12"),
                (tag::CONTINUATION_TOKEN, number),
            ]));
        }
        out
    }

    #[test]
    fn fragments_byte_by_byte_and_whole() {
        let mut body = chunk("91", "1700000000.25", true);
        body.extend(chunk("92", "1700000001", true));
        for step in [1, 7, body.len()] {
            let mut s = Splitter::new();
            let mut got = Vec::new();
            for piece in body.chunks(step) {
                s.push(piece);
                while let Some(f) = s.next_fragment().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 2, "step {step}");
            assert_eq!(s.pending(), 0);
            let f = &got[0];
            assert_eq!(f.tags.number.as_deref(), Some("91"));
            assert_eq!(f.tags.producer_ms, Some(1_700_000_000_250));
            assert_eq!(f.tags.server_ms, Some(1_700_000_001_500));
            assert_eq!(f.tags.continuation_token.as_deref(), Some("91"));
            assert_eq!(f.tags.millis_behind_now, Some(12));
            assert!(f.has_cluster);
            assert_eq!(f.header_len, build::simple_header().len());
            let total: usize = got.iter().map(|f| f.bytes.len()).sum();
            assert_eq!(total, body.len());
        }
    }

    #[test]
    fn a_fragment_without_its_token_ends_at_the_next_header() {
        let mut body = chunk("1", "1700000000", false);
        let first = body.len();
        body.extend(chunk("2", "1700000001", false));
        let mut s = Splitter::new();
        s.push(&body);
        let f = s.next_fragment().unwrap().unwrap();
        assert_eq!(f.bytes.len(), first);
        assert_eq!(f.tags.continuation_token, None);
        // The last one is held: it may not be whole.
        assert!(s.next_fragment().unwrap().is_none());
        assert_eq!(s.pending(), body.len() - first);
    }

    /// A GetMedia chunk whose header's TimecodeScale is `scale`, its Cluster at `timecode`.
    fn scaled_chunk(scale: u64, timecode: u64, producer: &str) -> Vec<u8> {
        let mut out = build::ebml_header("matroska");
        out.extend(build::segment_unknown_size());
        out.extend(build::info(scale));
        out.extend(build::tracks(&[build::Track::video(1, build::AVC)]));
        out.extend(tags_with_targets(&[(tag::PRODUCER_TIMESTAMP, producer)]));
        out.extend(build::simple_cluster(timecode, 3, 33, 10));
        out.extend(tags_with_targets(&[(tag::CONTINUATION_TOKEN, producer)]));
        out
    }

    /// A chunk as `scaled_chunk` makes it, without its Tags.
    fn untagged(scale: u64, timecode: u64) -> Vec<u8> {
        let mut out = build::ebml_header("matroska");
        out.extend(build::segment_unknown_size());
        out.extend(build::info(scale));
        out.extend(build::tracks(&[build::Track::video(1, build::AVC)]));
        out.extend(build::simple_cluster(timecode, 3, 33, 10));
        out
    }

    #[test]
    fn a_fragment_of_a_later_recording_is_placed_whole() {
        use kvs_format::matroska::{cluster_block_timecodes, cluster_timecode};
        let mut body = scaled_chunk(100_000, 0, "1700000000");
        body.extend(scaled_chunk(100_000, 0, "1700000004.5"));
        let mut s = Splitter::new();
        s.push(&body);
        let mut timeline = Timeline::new();
        let first = s.next_fragment().unwrap().unwrap();
        assert_eq!(first.timecode_scale, 100_000);
        let (pieces, placed) = first.placed(&mut timeline, false);
        assert_eq!(placed.moved_ns, None);
        assert_eq!(pieces.concat(), untagged(100_000, 0));
        let later = s.next_fragment().unwrap().unwrap();
        let (pieces, placed) = later.placed(&mut timeline, false);
        assert_eq!(placed.moved_ns, Some(4_500_000_000));
        // Put together, the pieces are the fragment without its Tags, its Cluster 4.5 s on.
        let whole = pieces.concat();
        let at = later.cluster_at.unwrap() - later.tags_at[0].len();
        assert_eq!(whole[..at], untagged(100_000, 0)[..at]);
        let cluster = &whole[at..];
        assert_eq!(cluster_timecode(cluster).unwrap().value, 45_000);
        assert_eq!(
            cluster_block_timecodes(cluster),
            cluster_block_timecodes(&build::simple_cluster(0, 3, 33, 10))
        );
        assert!(cluster.ends_with(&[0x5A; 10]));
        // Without its stream header, the Cluster alone.
        let (pieces, _) = later.placed(&mut Timeline::new(), true);
        assert_eq!(pieces.concat(), build::simple_cluster(0, 3, 33, 10));
    }

    #[test]
    fn metadata_is_read_and_no_tags_are_passed_on() {
        let mut body = build::simple_header();
        body.extend(tags_with_targets(&[
            (tag::FRAGMENT_NUMBER, "7"),
            (tag::PRODUCER_TIMESTAMP, "1700000000"),
        ]));
        body.extend(build::simple_cluster(0, 3, 33, 10));
        body.extend(tags_with_targets(&[("camera", "door"), ("motion", "1")]));
        body.extend(tags_with_targets(&[(tag::CONTINUATION_TOKEN, "7")]));
        let mut s = Splitter::new();
        s.push(&body);
        let f = s.next_fragment().unwrap().unwrap();
        assert_eq!(
            f.tags.metadata,
            [
                ("camera".to_owned(), "door".to_owned()),
                ("motion".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(f.tags.continuation_token.as_deref(), Some("7"));
        let (pieces, _) = f.placed(&mut Timeline::new(), false);
        let mut expected = build::simple_header();
        expected.extend(build::simple_cluster(0, 3, 33, 10));
        assert_eq!(pieces.concat(), expected);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = Splitter::new();
        s.push(&[
            0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        s.push(&[0x81, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(s.next_fragment().is_err());
    }
}
