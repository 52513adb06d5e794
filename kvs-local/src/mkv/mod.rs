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
//!
//! This parser is kvs-local's own, separate on purpose from the sink's splitter
//! (`gstkvs::mkv`): kvs-local is the oracle the sink is tested against and must not inherit
//! the splitter's bugs. The two share only the vocabulary of the `kvs-format` crate (element
//! IDs, the vint codec, the element writer, the end-of-fragment tag, the error table, the
//! test stream builder), never the parsing or validation logic.

mod ebml;

use bytes::{Bytes, BytesMut};
pub use ebml::*;
use ebml::{HeaderParse, invalid, parse_header, parse_tracks, read_tags};
use kvs_format::ids::*;
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
    /// The cluster ended. `bytes` is `None` when it was discarded (or not kept: see
    /// [`Parser::boundaries_only`]).
    ClusterEnd {
        /// Cluster sequence number.
        seq: u64,
        /// Raw cluster bytes (element header included).
        bytes: Option<Pieces>,
        /// Length of the cluster in bytes (element header included), kept or not.
        len: u64,
        /// The cluster (of unknown size) was ended by a Tags element: what follows it up to
        /// the next cluster may be its fragment's metadata ([`Event::Tags`]).
        before_tags: bool,
    },
    /// The SimpleTags of a Tags element after the stream header, other than
    /// `AWS_KINESISVIDEO_END_OF_FRAGMENT`: (TagName, TagString) pairs, fragment metadata of
    /// the cluster before them. Sent before [`Event::EndOfFragmentTag`] for the same element.
    Tags(Vec<(String, String)>),
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
            | ID_SEEK_HEAD
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
    /// Only find the header and cluster boundaries: keep no cluster bytes, skip blocks.
    boundaries_only: bool,
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
            boundaries_only: false,
        }
    }

    /// A parser that only finds the stream header and where clusters start and end, at the
    /// least cost per byte: cluster bytes are not kept (every [`Event::ClusterEnd`] has
    /// `bytes: None`, and received chunks are released as soon as they are passed), blocks
    /// are skipped unread (no [`Event::Block`]), and there is no cluster size limit (no
    /// [`Event::ClusterTooLarge`]). The stream header, cluster Timecodes and Tags are still
    /// read, and the element structure is still checked, as finding boundaries needs it.
    pub fn boundaries_only() -> Self {
        Parser {
            boundaries_only: true,
            ..Parser::new(u64::MAX)
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
                    out.push(Event::ClusterEnd {
                        seq: c.seq,
                        bytes,
                        len: self.pos - c.start,
                        before_tags: false,
                    });
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
}

mod elements;

#[cfg(test)]
mod tests;
