//! Incremental, zero-copy Matroska parser for PutMedia bodies.
//!
//! The parser is fed the body chunk by chunk ([`Parser::push`]) and reports
//! [`Event`]s as soon as the bytes for them have arrived. It never waits for
//! the end of the body. Block payloads are skipped without being looked at;
//! the raw bytes of the stream header and of each cluster are kept as
//! `Bytes` slices of the received chunks and handed out when complete, so a
//! cluster costs at most one copy (when it spans several chunks).
//!
//! Memory is bounded: only the bytes of the current stream header (limited to
//! [`MAX_HEADER_SIZE`]) or of the current cluster (limited to the configured
//! maximum; beyond it the cluster is discarded while being skipped) are held.

pub use crate::ebml::*;
use crate::ebml::{HeaderParse, invalid, parse_header, parse_tracks, tags_have_end_of_fragment};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// Largest accepted stream header (EBML header + pre-cluster elements).
pub const MAX_HEADER_SIZE: u64 = 8 * 1024 * 1024;
/// Largest Info/Tracks/Tags element read into memory.
const MAX_READ_ELEMENT: u64 = 4 * 1024 * 1024;
/// Something the parser found.
#[derive(Clone, Debug)]
pub enum Event {
    /// The stream header is complete (sent just before the first cluster).
    Header(Arc<StreamHeader>),
    /// A cluster began. `seq` identifies it in later events.
    ClusterStart {
        /// Cluster sequence number within the parser.
        seq: u64,
    },
    /// The cluster's Timecode element.
    ClusterTimecode {
        /// Cluster sequence number.
        seq: u64,
        /// Raw timecode (TimecodeScale units).
        timecode: u64,
    },
    /// A SimpleBlock or Block.
    Block {
        /// Cluster sequence number.
        seq: u64,
        /// Track number.
        track: u64,
        /// Timecode relative to the cluster.
        timecode: i16,
        /// Key frame flag (SimpleBlock flag 0x80; Block without ReferenceBlock).
        key: bool,
    },
    /// The cluster exceeded the size limit; its bytes are being discarded.
    ClusterTooLarge {
        /// Cluster sequence number.
        seq: u64,
    },
    /// The cluster ended. `bytes` is `None` when it was discarded.
    ClusterEnd {
        /// Cluster sequence number.
        seq: u64,
        /// Raw cluster bytes (element header included).
        bytes: Option<Pieces>,
    },
    /// A Tags element carrying `AWS_KINESISVIDEO_END_OF_FRAGMENT`.
    EndOfFragmentTag,
}

fn is_segment_level(id: u32) -> bool {
    matches!(
        id,
        ID_CLUSTER
            | ID_INFO
            | ID_TRACKS
            | ID_TAGS
            | ID_CUES
            | ID_SEEKHEAD
            | ID_CHAPTERS
            | ID_ATTACHMENTS
            | ID_EBML
            | ID_SEGMENT
    )
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Next bytes are an element header.
    Header,
    /// Skip to the absolute offset.
    Skip(u64),
    /// Buffer the whole body [start, end) then handle it.
    Read { id: u32, start: u64, end: u64 },
    /// Buffer the first bytes [start, start+n) of a block then skip to `end`.
    Prefix {
        id: u32,
        start: u64,
        n: u64,
        end: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Master {
    id: u32,
    end: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Capture {
    None,
    Header(u64),
    Cluster(u64),
}

#[derive(Default)]
struct HeaderInfo {
    ebml_seen: bool,
    doc_type: String,
    timecode_scale: u64,
    tracks: Option<Vec<TrackInfo>>,
    info_seen: bool,
    emitted: bool,
}

struct ClusterState {
    seq: u64,
    start: u64,
    discard: bool,
    timecode_seen: bool,
}

#[derive(Default)]
struct GroupState {
    block: Option<(u64, i16)>,
    referenced: bool,
}

/// The incremental parser. See the module documentation.
pub struct Parser {
    max_cluster: u64,
    held: VecDeque<(u64, Bytes)>,
    held_end: u64,
    pos: u64,
    state: State,
    stack: Vec<Master>,
    capture: Capture,
    header: HeaderInfo,
    cluster: Option<ClusterState>,
    group: GroupState,
    seq: u64,
    failed: Option<MkvError>,
}

impl Parser {
    /// A parser that discards clusters larger than `max_cluster` bytes.
    pub fn new(max_cluster: u64) -> Self {
        Parser {
            max_cluster,
            held: VecDeque::new(),
            held_end: 0,
            pos: 0,
            state: State::Header,
            stack: Vec::new(),
            capture: Capture::None,
            header: HeaderInfo::default(),
            cluster: None,
            group: GroupState::default(),
            seq: 0,
            failed: None,
        }
    }

    /// Total bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes currently retained (header or cluster being captured).
    pub fn retained(&self) -> u64 {
        self.held_end - self.held.front().map(|(s, _)| *s).unwrap_or(self.held_end)
    }

    /// Stops capturing cluster `seq` (if it is still open); it will end with
    /// `bytes: None`.
    pub fn discard(&mut self, seq: u64) {
        if let Some(c) = self.cluster.as_mut()
            && c.seq == seq
            && !c.discard
        {
            c.discard = true;
            self.capture = Capture::None;
            self.trim();
        }
    }

    /// Feeds the next chunk of the body.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !chunk.is_empty() {
            let len = chunk.len() as u64;
            self.held.push_back((self.held_end, chunk));
            self.held_end += len;
        }
        let r = self.run(out);
        self.trim();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Signals the end of the body: closes an open unknown-size cluster, or
    /// reports truncation.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.finish_inner(out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn finish_inner(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if !matches!(self.state, State::Header) || self.held_end > self.pos {
            return Err(MkvError::Truncated(format!(
                "body ended inside an element at offset {}",
                self.pos
            )));
        }
        while let Some(m) = self.stack.last().copied() {
            if m.end.is_some_and(|e| e > self.pos) {
                return Err(MkvError::Truncated(format!(
                    "body ended inside element 0x{:X}",
                    m.id
                )));
            }
            self.close_master(out);
        }
        Ok(())
    }

    fn trim(&mut self) {
        let mut keep = self.pos;
        match self.capture {
            Capture::Header(s) | Capture::Cluster(s) => keep = keep.min(s),
            Capture::None => {}
        }
        match self.state {
            State::Read { start, .. } | State::Prefix { start, .. } => keep = keep.min(start),
            _ => {}
        }
        while let Some((s, b)) = self.held.front() {
            if s + b.len() as u64 <= keep {
                self.held.pop_front();
            } else {
                break;
            }
        }
    }

    /// Copies `buf.len()` bytes at absolute offset `at` (must be held).
    fn peek(&self, at: u64, buf: &mut [u8]) {
        let mut idx = self.held.partition_point(|(s, _)| *s <= at) - 1;
        let mut off = (at - self.held[idx].0) as usize;
        let mut filled = 0;
        while filled < buf.len() {
            let chunk = &self.held[idx].1;
            let n = (chunk.len() - off).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk[off..off + n]);
            filled += n;
            idx += 1;
            off = 0;
        }
    }

    /// The held bytes [start, end) as slices of the received chunks.
    fn capture(&self, start: u64, end: u64) -> Pieces {
        let idx = self.held.partition_point(|(s, _)| *s <= start) - 1;
        let mut out = Vec::new();
        for (s, b) in self.held.iter().skip(idx) {
            if *s >= end {
                break;
            }
            let from = start.saturating_sub(*s) as usize;
            let to = ((end - s) as usize).min(b.len());
            out.push(b.slice(from..to));
        }
        Pieces(out)
    }

    /// The held bytes [start, end) as one `Bytes` (zero-copy if in one chunk).
    fn slice(&self, start: u64, end: u64) -> Bytes {
        let idx = self.held.partition_point(|(s, _)| *s <= start) - 1;
        let (s0, first) = &self.held[idx];
        if end <= s0 + first.len() as u64 {
            return first.slice((start - s0) as usize..(end - s0) as usize);
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        for (s, b) in self.held.iter().skip(idx) {
            if *s >= end {
                break;
            }
            let from = start.saturating_sub(*s) as usize;
            let to = ((end - s) as usize).min(b.len());
            out.extend_from_slice(&b[from..to]);
        }
        out.freeze()
    }

    fn run(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        loop {
            self.check_limits(out)?;
            match self.state {
                State::Header => {
                    // close masters whose known size is used up
                    while let Some(m) = self.stack.last().copied() {
                        match m.end {
                            Some(e) if e == self.pos => self.close_master(out),
                            Some(e) if e < self.pos => {
                                return invalid(format!("element 0x{:X} overrun", m.id));
                            }
                            _ => break,
                        }
                    }
                    let avail = self.held_end - self.pos;
                    if avail == 0 {
                        return Ok(());
                    }
                    let mut buf = [0u8; 12];
                    let n = avail.min(12) as usize;
                    self.peek(self.pos, &mut buf[..n]);
                    match parse_header(&buf[..n]) {
                        HeaderParse::Incomplete => return Ok(()),
                        HeaderParse::Invalid(e) => {
                            return invalid(format!("{e} at offset {}", self.pos));
                        }
                        HeaderParse::Ok { id, size, len } => {
                            self.on_element(id, size, len as u64, out)?;
                        }
                    }
                }
                State::Skip(end) => {
                    self.pos = end.min(self.held_end);
                    if self.pos < end {
                        return Ok(());
                    }
                    self.state = State::Header;
                }
                State::Read { id, start, end } => {
                    if self.held_end < end {
                        return Ok(());
                    }
                    let mut data = vec![0u8; (end - start) as usize];
                    self.peek(start, &mut data);
                    self.pos = end;
                    self.state = State::Header;
                    self.on_read(id, &data, out)?;
                }
                State::Prefix { id, start, n, end } => {
                    if self.held_end < start + n {
                        return Ok(());
                    }
                    let mut data = [0u8; 11];
                    self.peek(start, &mut data[..n as usize]);
                    self.state = State::Skip(end);
                    self.on_block_prefix(id, &data[..n as usize], out)?;
                }
            }
        }
    }

    fn check_limits(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        match self.capture {
            Capture::Header(s) if self.pos - s > MAX_HEADER_SIZE => {
                invalid("stream header (elements before the first Cluster) too large")
            }
            Capture::Cluster(s) if self.pos - s > self.max_cluster => {
                self.too_large(out);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn too_large(&mut self, out: &mut Vec<Event>) {
        if let Some(c) = self.cluster.as_mut()
            && !c.discard
        {
            c.discard = true;
            self.capture = Capture::None;
            out.push(Event::ClusterTooLarge { seq: c.seq });
        }
    }

    fn close_master(&mut self, out: &mut Vec<Event>) {
        let Some(m) = self.stack.pop() else { return };
        match m.id {
            ID_CLUSTER => {
                if let Some(c) = self.cluster.take() {
                    let bytes = (!c.discard).then(|| self.capture(c.start, self.pos));
                    self.capture = Capture::None;
                    out.push(Event::ClusterEnd { seq: c.seq, bytes });
                }
            }
            ID_BLOCK_GROUP => {
                let g = std::mem::take(&mut self.group);
                if let (Some((track, timecode)), Some(c)) = (g.block, self.cluster.as_ref()) {
                    out.push(Event::Block {
                        seq: c.seq,
                        track,
                        timecode,
                        key: !g.referenced,
                    });
                }
            }
            ID_SEGMENT => {
                self.header = HeaderInfo::default();
                self.capture = Capture::None;
            }
            _ => {}
        }
    }

    fn on_element(
        &mut self,
        id: u32,
        size: Option<u64>,
        hlen: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let start = self.pos;
        let body = start + hlen;
        let end = size.map(|s| body.saturating_add(s));
        let parent = self.stack.last().copied();
        if let (Some(e), Some(pe)) = (end, parent.and_then(|p| p.end))
            && e > pe
        {
            return invalid(format!(
                "element 0x{id:X} at offset {start} (size {}) exceeds its parent",
                size.unwrap_or(0)
            ));
        }
        if size.is_none() && id != ID_SEGMENT && id != ID_CLUSTER {
            return invalid(format!("unknown size not allowed for element 0x{id:X}"));
        }
        match parent.map(|p| p.id) {
            None => self.top_level(id, start, body, end),
            Some(ID_SEGMENT) => self.segment_child(id, start, body, end, out),
            Some(ID_CLUSTER) => {
                if is_segment_level(id) {
                    if parent.is_some_and(|p| p.end.is_some()) {
                        return invalid(format!(
                            "segment-level element 0x{id:X} inside a sized Cluster"
                        ));
                    }
                    self.close_master(out);
                    // re-dispatch at segment level
                    return self.on_element(id, size, hlen, out);
                }
                self.cluster_child(id, body, end, out)
            }
            Some(ID_BLOCK_GROUP) => {
                let end = end.expect("sized");
                match id {
                    ID_BLOCK => self.block_prefix_state(id, body, end)?,
                    ID_REFERENCE_BLOCK => {
                        self.group.referenced = true;
                        self.state = State::Skip(end);
                    }
                    _ => self.state = State::Skip(end),
                }
                self.pos = body;
                Ok(())
            }
            Some(other) => invalid(format!("unexpected parent 0x{other:X}")),
        }
    }

    fn top_level(
        &mut self,
        id: u32,
        start: u64,
        body: u64,
        end: Option<u64>,
    ) -> Result<(), MkvError> {
        match id {
            ID_EBML => {
                let end = end.expect("sized");
                if end - body > 4096 {
                    return invalid("EBML header too large");
                }
                self.header = HeaderInfo::default();
                self.capture = Capture::Header(start);
                self.state = State::Read {
                    id,
                    start: body,
                    end,
                };
            }
            ID_SEGMENT => {
                if !self.header.ebml_seen {
                    return invalid("Segment without EBML header");
                }
                self.stack.push(Master { id, end });
            }
            ID_VOID => {
                self.state = State::Skip(end.expect("sized"));
            }
            _ => {
                return invalid(format!(
                    "expected EBML header or Segment, found element 0x{id:X} at offset {start}"
                ));
            }
        }
        self.pos = body;
        Ok(())
    }

    fn segment_child(
        &mut self,
        id: u32,
        start: u64,
        body: u64,
        end: Option<u64>,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        match id {
            ID_EBML | ID_SEGMENT => {
                let seg = self.stack.last().copied().expect("segment");
                if seg.end.is_some() {
                    return invalid(format!("element 0x{id:X} inside a sized Segment"));
                }
                self.close_master(out);
                let hlen = body - start;
                let size = end.map(|e| e - body);
                return self.on_element(id, size, hlen, out);
            }
            ID_CLUSTER => {
                if !self.header.emitted {
                    self.emit_header(start, out)?;
                }
                self.seq += 1;
                self.cluster = Some(ClusterState {
                    seq: self.seq,
                    start,
                    discard: false,
                    timecode_seen: false,
                });
                self.capture = Capture::Cluster(start);
                self.group = GroupState::default();
                out.push(Event::ClusterStart { seq: self.seq });
                if end.is_some_and(|e| e - start > self.max_cluster) {
                    self.too_large(out);
                }
                self.stack.push(Master { id, end });
            }
            ID_INFO | ID_TRACKS | ID_TAGS => {
                let end = end.expect("sized");
                let relevant = id == ID_TAGS || !self.header.emitted;
                if relevant && end - body <= MAX_READ_ELEMENT {
                    self.state = State::Read {
                        id,
                        start: body,
                        end,
                    };
                } else if id != ID_TAGS && !self.header.emitted {
                    return invalid(format!("element 0x{id:X} too large"));
                } else {
                    self.state = State::Skip(end);
                }
            }
            _ => self.state = State::Skip(end.expect("sized")),
        }
        self.pos = body;
        Ok(())
    }

    fn cluster_child(
        &mut self,
        id: u32,
        body: u64,
        end: Option<u64>,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let end = end.expect("sized");
        let (seq, cstart, tc_seen) = {
            let c = self.cluster.as_ref().expect("cluster state");
            (c.seq, c.start, c.timecode_seen)
        };
        if end - cstart > self.max_cluster {
            self.too_large(out);
        }
        match id {
            ID_TIMECODE => {
                if end - body > 8 {
                    return invalid("cluster Timecode longer than 8 bytes");
                }
                self.state = State::Read {
                    id,
                    start: body,
                    end,
                };
            }
            ID_SIMPLE_BLOCK => {
                if !tc_seen {
                    return invalid(format!(
                        "SimpleBlock before cluster Timecode (cluster {seq})"
                    ));
                }
                self.block_prefix_state(id, body, end)?;
            }
            ID_BLOCK_GROUP => {
                if !tc_seen {
                    return invalid(format!(
                        "BlockGroup before cluster Timecode (cluster {seq})"
                    ));
                }
                self.group = GroupState::default();
                self.stack.push(Master { id, end: Some(end) });
            }
            _ => self.state = State::Skip(end),
        }
        self.pos = body;
        Ok(())
    }

    fn block_prefix_state(&mut self, id: u32, body: u64, end: u64) -> Result<(), MkvError> {
        if end - body < 4 {
            return invalid("block shorter than its header");
        }
        self.state = State::Prefix {
            id,
            start: body,
            n: (end - body).min(11),
            end,
        };
        Ok(())
    }

    fn emit_header(&mut self, cluster_start: u64, out: &mut Vec<Event>) -> Result<(), MkvError> {
        let Capture::Header(hstart) = self.capture else {
            return invalid("Cluster without stream header");
        };
        if !self.header.info_seen {
            return invalid("Cluster before Info");
        }
        let Some(tracks) = self.header.tracks.clone() else {
            return invalid("Cluster before Tracks");
        };
        let header = StreamHeader {
            // a copy: the header lives as long as the stream, and must not
            // pin a whole receive buffer
            bytes: Bytes::copy_from_slice(&self.slice(hstart, cluster_start)),
            doc_type: self.header.doc_type.clone(),
            timecode_scale: self.header.timecode_scale,
            tracks,
        };
        self.header.emitted = true;
        self.capture = Capture::None;
        out.push(Event::Header(Arc::new(header)));
        Ok(())
    }

    fn on_read(&mut self, id: u32, data: &[u8], out: &mut Vec<Event>) -> Result<(), MkvError> {
        match id {
            ID_EBML => {
                let mut doc_type = "matroska".to_string();
                for child in children(data) {
                    let (cid, body) = child?;
                    if cid == ID_DOCTYPE {
                        doc_type = String::from_utf8_lossy(body)
                            .trim_end_matches('\0')
                            .to_string();
                    }
                }
                if doc_type != "matroska" && doc_type != "webm" {
                    return invalid(format!("unsupported DocType {doc_type:?}"));
                }
                self.header.ebml_seen = true;
                self.header.doc_type = doc_type;
            }
            ID_INFO => {
                let mut scale = 1_000_000;
                for child in children(data) {
                    let (cid, body) = child?;
                    if cid == ID_TIMECODE_SCALE {
                        scale = read_uint(body)?;
                    }
                }
                if scale == 0 {
                    return invalid("TimecodeScale is 0");
                }
                self.header.timecode_scale = scale;
                self.header.info_seen = true;
            }
            ID_TRACKS => self.header.tracks = Some(parse_tracks(data)?),
            ID_TAGS if tags_have_end_of_fragment(data)? => out.push(Event::EndOfFragmentTag),
            ID_TIMECODE => {
                let timecode = read_uint(data)?;
                let c = self.cluster.as_mut().expect("cluster");
                if c.timecode_seen {
                    return invalid("second Timecode in cluster");
                }
                c.timecode_seen = true;
                out.push(Event::ClusterTimecode {
                    seq: c.seq,
                    timecode,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn on_block_prefix(
        &mut self,
        id: u32,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let (track, tl) = match decode_vint(data) {
            Ok(Some((Some(t), l))) => (t, l),
            _ => return invalid("invalid block track number"),
        };
        if data.len() < tl + 3 {
            return invalid("block shorter than its header");
        }
        let timecode = i16::from_be_bytes([data[tl], data[tl + 1]]);
        let flags = data[tl + 2];
        if id == ID_BLOCK {
            self.group.block = Some((track, timecode));
        } else {
            let seq = self.cluster.as_ref().map(|c| c.seq).unwrap_or(0);
            out.push(Event::Block {
                seq,
                track,
                timecode,
                key: flags & 0x80 != 0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "mkv_tests.rs"]
mod tests;
