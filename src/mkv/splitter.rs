//! The [`Splitter`] state machine.
//!
//! The sink's own Matroska parser, kept separate on purpose from kvs-local's checker
//! (`kvs_local::mkv`), the oracle it is tested against: the two share only the `kvs-format`
//! vocabulary (IDs, vint codec, writer, tables), never parsing or validation logic.

use super::ebml::{self, ElementHeader, MAX_HEADER_LEN};
use super::renumber::TrackMap;
use super::*;
use bytes::BytesMut;
use kvs_format::matroska::DEFAULT_TIMECODE_SCALE;

mod cluster;
mod header;

/// Where the parser stands between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// At an element boundary, reading the next element header (possibly partial).
    Head,
    /// Passing cluster bytes through up to `end`.
    Skip { end: u64 },
    /// Reading the cluster Timecode value (cluster bytes).
    Value { end: u64 },
    /// Reading a block header: track vint, int16 timecode, flags (cluster bytes).
    /// `elem` is where the block element starts, `start` where its body does.
    BlockHead {
        end: u64,
        simple: bool,
        start: u64,
        elem: u64,
    },
    /// Passing over cluster bytes that are left out (AWS shape) up to `end`.
    Drop { end: u64 },
    /// Copying a whole element into memory.
    Hold { end: u64, id: u32, dest: Dest },
}

/// Where a held element goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// The EBML header (into the header buffer).
    EbmlHeader,
    /// A Segment child before the first Cluster (into the header buffer).
    Header,
    /// A Segment-level element after the header; `in_cluster`: it interrupted an
    /// unknown-size cluster, which ends once the element is parsed.
    Interstitial { in_cluster: bool },
}

/// Bytes of memory the rewritten pieces are copied to at a time.
const ARENA: usize = 4096;

/// Every byte value, for one-byte pieces that cost no allocation.
static BYTE_VALUES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// Position in the top-level structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    ExpectEbml,
    ExpectSegment,
    InSegment,
}

/// The open cluster.
#[derive(Debug)]
struct Cluster {
    start: u64,
    end: Option<u64>,
    summary: FragmentSummary,
    has_timecode: bool,
    started: bool,
    /// End of the open BlockGroup.
    group_end: Option<u64>,
    /// The open BlockGroup has a ReferenceBlock.
    group_ref: bool,
    /// The open BlockGroup holds the block that decides `FragmentStart`.
    group_decides: bool,
    /// Stream offset of the cluster child being read (a BlockGroup as a whole): the
    /// cluster's bytes before it are whole elements.
    child_start: u64,
    /// Cut at a limit: no more of its bytes are emitted.
    cut: bool,
    /// It holds a video key frame (one at the same time after it went backwards).
    key_seen: bool,
    /// The output time (TimecodeScale units) of the input's block time 0 in this cluster:
    /// its Timecode plus the splitter's `shift`, as it was when the cluster began.
    base: i64,
    /// Re-timed: a fragment that goes on with the rest of an input cluster whose key frame
    /// went back ([`Event::TimeWentBack`]). Its block headers are held until read whole and
    /// sent rewritten (block time relative to `summary.timecode`, not the input's).
    retimed: bool,
    /// Bytes emitted minus bytes of the input, over the cluster before `child_start`: what
    /// the rewritten head (AWS shape) changed; 0 otherwise.
    delta: i64,
}

/// Streaming splitter of a Matroska byte stream into header and fragments.
///
/// See the [module documentation](super) for the rules it enforces.
pub struct Splitter {
    limits: Limits,
    st: St,
    failed: Option<MkvError>,
    /// Stream offset of the first byte of the buffer being pushed.
    base: u64,
    /// Still checking the first bytes of the stream.
    sniffing: bool,
    /// Partial element header (bytes also kept as slices in `carry`).
    scratch: [u8; 16],
    sl: usize,
    carry: Vec<Bytes>,
    /// Small value being read (Timecode, block header).
    vbuf: [u8; 16],
    vl: usize,
    top: Top,
    segment_end: Option<u64>,
    header_done: bool,
    header_buf: Vec<u8>,
    hold_buf: Vec<u8>,
    /// Offset of the held element's body in its buffer.
    body_start: usize,
    doc_type: String,
    timecode_scale: u64,
    /// Info's DateUTC (ns since 2001-01-01) and Duration (timecode units), when present.
    date_utc: Option<i64>,
    duration: Option<f64>,
    /// `Limits::max_fragment_span_ns` in the stream's timecode units (set with the header).
    max_span_ticks: i64,
    tracks: Vec<TrackInfo>,
    have_tracks: bool,
    video_track: Option<u64>,
    header: Option<StreamHeader>,
    cluster: Option<Cluster>,
    prev_timecode: Option<u64>,
    /// The last video key frame's time (TimecodeScale units).
    prev_key_time: Option<i64>,
    /// AWS shape: how much later than the input's times everything is sent (units), after
    /// time went back (see [`Event::TimeWentBack`]); 0 until then, and after a new header.
    shift: u64,
    /// The latest block time of the clusters ended so far (units, as sent).
    prev_last_time: Option<i64>,
    /// The latest video block time so far (units, as sent; `i64::MIN` before the first).
    video_max: i64,
    /// The typical spacing of blocks in the last cluster with two or more (units, at least
    /// 1): where the first frame after a jump back is placed after the last one.
    spacing: i64,
    /// Index in the current buffer where not-yet-emitted cluster bytes begin.
    run: Option<usize>,
    /// Cluster bytes held until `FragmentStart`.
    prefix: Vec<Bytes>,
    /// Emit what AWS's producer would send: see [`Splitter::aws_shape`].
    aws_shape: bool,
    /// Renumbering of the current header's tracks (AWS shape).
    track_map: Option<TrackMap>,
    renumbered: Vec<(u64, u64)>,
    /// Where small copied pieces (rewritten cluster heads and block headers, coalesced
    /// cluster prefixes) are carved from.
    arena: BytesMut,
}

impl Splitter {
    /// A splitter expecting the start of a stream (an EBML header).
    pub fn new(limits: Limits) -> Self {
        Splitter {
            limits,
            st: St::Head,
            failed: None,
            base: 0,
            sniffing: true,
            scratch: [0; 16],
            sl: 0,
            carry: Vec::with_capacity(MAX_HEADER_LEN),
            vbuf: [0; 16],
            vl: 0,
            top: Top::ExpectEbml,
            segment_end: None,
            header_done: false,
            header_buf: Vec::new(),
            hold_buf: Vec::new(),
            body_start: 0,
            doc_type: String::new(),
            timecode_scale: DEFAULT_TIMECODE_SCALE,
            date_utc: None,
            duration: None,
            max_span_ticks: i64::MAX,
            tracks: Vec::new(),
            have_tracks: false,
            video_track: None,
            header: None,
            cluster: None,
            prev_timecode: None,
            prev_key_time: None,
            shift: 0,
            prev_last_time: None,
            video_max: i64::MIN,
            spacing: 1,
            run: None,
            prefix: Vec::new(),
            aws_shape: false,
            track_map: None,
            renumbered: Vec::new(),
            arena: BytesMut::new(),
        }
    }

    /// With `true`, what the splitter emits is what kvssink sends, in the shape AWS's producer
    /// sends it: each Cluster starts with AWS's head, and the tracks are renumbered so that
    /// video is track 1 and audio track 2 (see the [module documentation](super)). The stream
    /// header's other parts are left to [`normalize_header`](super::normalize_header). With
    /// `false` (the default), every byte is emitted as it came.
    pub fn aws_shape(mut self, on: bool) -> Self {
        self.aws_shape = on;
        self
    }

    /// Feeds the next bytes, cut anywhere. Events are appended to `out`.
    ///
    /// On error, events produced before the faulty element are in `out`, and the splitter
    /// is poisoned (returns the same error) until [`Splitter::reset`].
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(&data, out);
        if r.is_err() {
            self.flush_whole(&data, out);
        }
        self.base += data.len() as u64;
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// End of stream. An open unknown-size cluster ends normally (`FragmentEnd`).
    ///
    /// If the stream stops inside an element: when the open cluster's `FragmentStart` was
    /// already emitted, its `FragmentEnd` (with the figures so far) is emitted first, then
    /// `Err(Truncated)` is returned; a cluster that had not started is dropped silently
    /// (none of its bytes was emitted). A known-size Segment cut short is tolerated.
    ///
    /// Afterwards the splitter expects a new stream (EBML header); [`Splitter::header`]
    /// keeps returning the last header.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if let Some(e) = self.failed.take() {
            self.restart_stream();
            return Err(e);
        }
        let r = self.finish_inner(out);
        self.restart_stream();
        r
    }

    /// The last complete stream header, if any.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Running figures of the open cluster (size so far, block times).
    pub fn current_fragment(&self) -> Option<&FragmentSummary> {
        self.cluster.as_ref().map(|c| &c.summary)
    }

    /// Of the open cluster's bytes emitted so far, those that form whole elements: the
    /// place to end it when the stream breaks off or turns invalid inside it.
    pub fn whole_size(&self) -> Option<u64> {
        self.cluster.as_ref().map(|c| {
            (c.child_start - c.start)
                .saturating_add_signed(c.delta)
                .min(c.summary.size)
        })
    }

    /// Whether the bytes pushed so far end between two elements (not inside an element's
    /// header or body): what was emitted can go out now, nothing of it waits for its end.
    pub fn at_element_boundary(&self) -> bool {
        matches!(self.st, St::Head) && self.sl == 0
    }

    /// Total bytes pushed so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.base
    }

    /// Forgets the current stream (and any error): the next bytes must start with an EBML
    /// header. Nothing is emitted for a cluster left open. `header()` is kept.
    pub fn reset(&mut self) {
        self.failed = None;
        self.restart_stream();
    }

    /// Bytes of the open cluster held back until its `FragmentStart`.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.prefix.iter().map(Bytes::len).sum()
    }

    fn restart_stream(&mut self) {
        self.st = St::Head;
        self.sniffing = true;
        self.sl = 0;
        self.carry.clear();
        self.vl = 0;
        self.top = Top::ExpectEbml;
        self.segment_end = None;
        self.header_done = false;
        self.header_buf.clear();
        self.hold_buf.clear();
        self.cluster = None;
        self.forget_times();
        self.run = None;
        self.prefix.clear();
    }

    /// A new stream (header): its times are compared with nothing before them.
    fn forget_times(&mut self) {
        self.prev_timecode = None;
        self.prev_key_time = None;
        self.shift = 0;
        self.prev_last_time = None;
        self.video_max = i64::MIN;
        self.spacing = 1;
    }

    fn finish_inner(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        let offset = self.base;
        if self.sniffing {
            return match self.sl {
                0 => Ok(()),
                n if EBML_MAGIC.starts_with(&self.scratch[..n]) => {
                    Err(MkvError::Truncated { offset })
                }
                n => Err(MkvError::NotMatroska {
                    found: describe_magic(&self.scratch[..n]),
                }),
            };
        }
        let mid_element = self.sl > 0
            || self.st != St::Head
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| c.end.is_some() || c.group_end.is_some());
        if !mid_element {
            if self.cluster.is_some() {
                self.end_cluster(false, &Bytes::new(), 0, out)?;
            }
            return Ok(());
        }
        // Between two children of the cluster (a known-size one cut short), everything
        // emitted is whole, the child just read included.
        let between_children = self.st == St::Head
            && self.sl == 0
            && self.cluster.as_ref().is_some_and(|c| c.group_end.is_none());
        let whole = if between_children {
            self.cluster.as_ref().map(|c| c.summary.size)
        } else {
            self.whole_size()
        };
        if let Some(mut c) = self.cluster.take()
            && c.started
        {
            // A cut cluster ended at the cut; what follows was never emitted.
            c.summary.whole_size = if c.cut {
                c.summary.size
            } else {
                whole.unwrap_or(0)
            };
            out.push(Event::FragmentEnd(c.summary));
        }
        Err(MkvError::Truncated { offset })
    }

    fn push_inner(&mut self, data: &Bytes, out: &mut Vec<Event>) -> Result<(), MkvError> {
        let len = data.len();
        let mut pos = 0usize;
        loop {
            let off = self.base + pos as u64;
            match self.st {
                St::Head => {
                    if self.sl == 0 && self.at_boundary(off, data, pos, out)? {
                        continue;
                    }
                    if pos == len {
                        break;
                    }
                    if self.sl == 0
                        && let Some(c) = &mut self.cluster
                        && c.group_end.is_none()
                    {
                        c.child_start = off;
                    }
                    if self.sniffing && !self.sniff(data, &mut pos)? {
                        continue;
                    }
                    let (h, from_data) = if self.sl == 0 {
                        match ebml::read_header(&data[pos..]) {
                            Err(_) => return Err(MkvError::InvalidVint { offset: off }),
                            Ok(Some(h)) => (h, h.len),
                            Ok(None) => {
                                self.flush_run(data, pos, out);
                                self.stash(data, &mut pos);
                                continue;
                            }
                        }
                    } else {
                        let sl = self.sl;
                        let take = (MAX_HEADER_LEN - sl).min(len - pos);
                        self.scratch[sl..sl + take].copy_from_slice(&data[pos..pos + take]);
                        let hdr_off = off - sl as u64;
                        match ebml::read_header(&self.scratch[..sl + take]) {
                            Err(_) => return Err(MkvError::InvalidVint { offset: hdr_off }),
                            Ok(Some(h)) => (h, h.len - sl),
                            Ok(None) => {
                                self.stash(data, &mut pos);
                                continue;
                            }
                        }
                    };
                    self.on_header(h, from_data, data, &mut pos, out)?;
                }
                St::Skip { end } => {
                    if off == end {
                        self.st = St::Head;
                        continue;
                    }
                    if pos == len {
                        break;
                    }
                    let n = (end - off).min((len - pos) as u64) as usize;
                    self.take_cluster(pos);
                    pos += n;
                }
                St::Value { end } => {
                    if off == end {
                        self.st = St::Head;
                        self.on_timecode(out)?;
                        if self.aws_shape {
                            self.write_cluster_head(end, out);
                        }
                        continue;
                    }
                    if pos == len {
                        break;
                    }
                    let n = (end - off).min((len - pos) as u64) as usize;
                    self.vbuf[self.vl..self.vl + n].copy_from_slice(&data[pos..pos + n]);
                    self.vl += n;
                    if !self.aws_shape {
                        self.take_cluster(pos);
                    }
                    pos += n;
                }
                St::Drop { end } => {
                    if off == end {
                        self.st = St::Head;
                        self.left_out(end, 0);
                        continue;
                    }
                    if pos == len {
                        break;
                    }
                    pos += (end - off).min((len - pos) as u64) as usize;
                }
                St::BlockHead {
                    end,
                    simple,
                    start,
                    elem,
                } => {
                    let need = match self.vl {
                        0 => 1,
                        _ => match ebml::vint_len(self.vbuf[0]) {
                            Some(l) => l + 3,
                            None => return Err(MkvError::InvalidVint { offset: start }),
                        },
                    };
                    if self.vl == need && self.vl > 1 {
                        self.st = St::Skip { end };
                        self.on_block_header(simple, start, elem, end, data, pos, out)?;
                        continue;
                    }
                    if off == end {
                        let id = if simple { ID_SIMPLE_BLOCK } else { ID_BLOCK };
                        let context = "block shorter than its header";
                        return Err(MkvError::UnexpectedElement {
                            id,
                            offset: start,
                            context,
                        });
                    }
                    if pos == len {
                        break;
                    }
                    let mut n = ((need - self.vl) as u64)
                        .min(end - off)
                        .min((len - pos) as u64);
                    // Renumbering: stop at the end of the track number, to rewrite its last
                    // byte (`need` is 1 until the first byte, which gives the length).
                    let mut in_track = false;
                    if self.track_map.is_some() {
                        let track_len = match self.vl {
                            0 => 1,
                            _ => ebml::vint_len(self.vbuf[0]).unwrap_or(0),
                        };
                        if self.vl < track_len {
                            n = n.min((track_len - self.vl) as u64);
                            in_track = true;
                        }
                    }
                    let n = n as usize;
                    self.vbuf[self.vl..self.vl + n].copy_from_slice(&data[pos..pos + n]);
                    self.vl += n;
                    // A re-timed cluster's block header goes out rewritten once read.
                    if !self.cluster.as_ref().is_some_and(|c| c.retimed) {
                        self.take_cluster(pos);
                    }
                    if in_track && ebml::vint_len(self.vbuf[0]) == Some(self.vl) {
                        self.renumber_block(data, pos + n - 1, simple, end, out);
                    }
                    pos += n;
                }
                St::Hold { end, id, dest } => {
                    if off == end {
                        self.st = St::Head;
                        self.on_held(id, dest, data, pos, out)?;
                        continue;
                    }
                    if pos == len {
                        break;
                    }
                    let n = (end - off).min((len - pos) as u64) as usize;
                    let chunk = &data[pos..pos + n];
                    match dest {
                        Dest::Interstitial { .. } => self.hold_buf.extend_from_slice(chunk),
                        _ => self.header_buf.extend_from_slice(chunk),
                    }
                    pos += n;
                }
            }
        }
        self.flush_run(data, len, out);
        Ok(())
    }

    /// Checks the first bytes of the stream. Returns `false` when it stashed them to wait
    /// for more.
    fn sniff(&mut self, data: &Bytes, pos: &mut usize) -> Result<bool, MkvError> {
        let mut buf = [0u8; 8];
        let n0 = self.sl.min(8);
        buf[..n0].copy_from_slice(&self.scratch[..n0]);
        let extra = (8 - n0).min(data.len() - *pos);
        buf[n0..n0 + extra].copy_from_slice(&data[*pos..*pos + extra]);
        let n = n0 + extra;
        let m = n.min(4);
        if buf[..m] != EBML_MAGIC[..m] {
            if n >= 8 {
                return Err(MkvError::NotMatroska {
                    found: describe_magic(&buf[..n]),
                });
            }
        } else if n >= 4 {
            self.sniffing = false;
            return Ok(true);
        }
        self.stash(data, pos);
        Ok(false)
    }

    /// Keeps the rest of the buffer (the start of an element header) for the next push.
    fn stash(&mut self, data: &Bytes, pos: &mut usize) {
        let n = data.len() - *pos;
        debug_assert!(self.sl + n <= MAX_HEADER_LEN);
        self.scratch[self.sl..self.sl + n].copy_from_slice(&data[*pos..]);
        self.sl += n;
        self.carry.push(data.slice(*pos..));
        *pos = data.len();
    }

    /// Handles the ends of known-size containers at `off`; `true` if something ended.
    fn at_boundary(
        &mut self,
        off: u64,
        data: &Bytes,
        pos: usize,
        out: &mut Vec<Event>,
    ) -> Result<bool, MkvError> {
        if let Some(c) = &mut self.cluster {
            if let Some(ge) = c.group_end {
                if ge != off {
                    return Ok(false);
                }
                c.group_end = None;
                if c.group_decides && !c.started {
                    let key = !c.group_ref;
                    self.start_fragment(key, true, data, pos, out);
                }
                return Ok(true);
            }
            if c.end == Some(off) {
                self.end_cluster(false, data, pos, out)?;
                return Ok(true);
            }
        }
        if self.top == Top::InSegment && self.segment_end == Some(off) {
            if self.cluster.is_some() {
                self.end_cluster(false, data, pos, out)?;
            }
            self.top = Top::ExpectEbml;
            self.segment_end = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// Dispatches a complete element header. `from_data` of its bytes are at
    /// `data[*pos..]`, the others (if any) are in `scratch`/`carry`.
    fn on_header(
        &mut self,
        h: ElementHeader,
        from_data: usize,
        data: &Bytes,
        pos: &mut usize,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let start = self.base + *pos as u64 + from_data as u64 - h.len as u64;
        let body = start + h.len as u64;
        let end = h.size.map(|s| body.saturating_add(s));
        let unexpected = |context| MkvError::UnexpectedElement {
            id: h.id,
            offset: start,
            context,
        };
        let too_large = |size, limit| MkvError::ElementTooLarge {
            id: h.id,
            size,
            limit,
            offset: start,
        };

        if self.cluster.is_some() {
            return self.on_cluster_child(h, from_data, data, pos, out);
        }

        match self.top {
            Top::InSegment => match h.id {
                ID_CLUSTER => {
                    self.check_in_segment(end, start, h.id)?;
                    if !self.header_done {
                        self.complete_header(out)?;
                    }
                    self.cluster = Some(Cluster {
                        start,
                        end,
                        summary: FragmentSummary::default(),
                        has_timecode: false,
                        started: false,
                        group_end: None,
                        group_ref: false,
                        group_decides: false,
                        child_start: start,
                        cut: false,
                        key_seen: false,
                        base: 0,
                        retimed: false,
                        delta: 0,
                    });
                    if self.aws_shape {
                        // Rebuilt once the Timecode is known.
                        self.skip_header(from_data, data, pos, out);
                        self.left_out(body, 0);
                    } else {
                        self.attach_cluster(from_data, pos, out);
                    }
                    Ok(())
                }
                ID_EBML => {
                    // Upstream restarted: a new stream header follows.
                    self.top = Top::ExpectEbml;
                    self.segment_end = None;
                    self.on_header(h, from_data, data, pos, out)
                }
                ID_SEGMENT => Err(unexpected("a Segment inside a Segment")),
                // Frames belong in a Cluster: these follow a Cluster whose start is missing
                // (a buffer of matroskamux's dropped), and would be taken for header.
                ID_SIMPLE_BLOCK | ID_BLOCK_GROUP | ID_BLOCK | ID_TIMECODE => Err(unexpected(
                    "a frame outside a Cluster (the start of its Cluster is missing)",
                )),
                _ => {
                    let size = h
                        .size
                        .ok_or_else(|| unexpected("unknown size outside a Cluster"))?;
                    self.check_in_segment(end, start, h.id)?;
                    let total = size.saturating_add(h.len as u64);
                    if self.header_done {
                        let limit = self.limits.max_element_size;
                        if total > limit {
                            return Err(too_large(size, limit));
                        }
                        self.begin_hold(
                            h,
                            from_data,
                            data,
                            pos,
                            Dest::Interstitial { in_cluster: false },
                            out,
                        );
                    } else {
                        let limit = self.limits.max_header_size;
                        if total.saturating_add(self.header_buf.len() as u64) > limit {
                            return Err(too_large(size, limit));
                        }
                        self.begin_hold(h, from_data, data, pos, Dest::Header, out);
                    }
                    Ok(())
                }
            },
            Top::ExpectEbml | Top::ExpectSegment => match h.id {
                ID_EBML => {
                    let size = h
                        .size
                        .ok_or_else(|| unexpected("EBML header with unknown size"))?;
                    let limit = self.limits.max_header_size;
                    if size.saturating_add(h.len as u64) > limit {
                        return Err(too_large(size, limit));
                    }
                    self.header_buf.clear();
                    self.header_done = false;
                    self.doc_type = "matroska".into();
                    self.timecode_scale = DEFAULT_TIMECODE_SCALE;
                    self.date_utc = None;
                    self.duration = None;
                    self.tracks.clear();
                    self.have_tracks = false;
                    self.track_map = None;
                    self.renumbered.clear();
                    self.forget_times();
                    self.begin_hold(h, from_data, data, pos, Dest::EbmlHeader, out);
                    Ok(())
                }
                ID_SEGMENT if self.top == Top::ExpectSegment => {
                    self.copy_header_bytes(h, from_data, data, pos, false);
                    self.top = Top::InSegment;
                    self.segment_end = end;
                    Ok(())
                }
                _ if self.top == Top::ExpectSegment => {
                    Err(unexpected("expected a Segment after the EBML header"))
                }
                _ => Err(unexpected(
                    "expected an EBML header (start of a new stream)",
                )),
            },
        }
    }

    fn check_in_segment(&self, end: Option<u64>, start: u64, id: u32) -> Result<(), MkvError> {
        match (self.segment_end, end) {
            (Some(s), Some(e)) if e > s => Err(MkvError::UnexpectedElement {
                id,
                offset: start,
                context: "element extends past the end of the Segment",
            }),
            _ => Ok(()),
        }
    }

    /// Copies the element header into the header or hold buffer and enters `Hold`.
    fn begin_hold(
        &mut self,
        h: ElementHeader,
        from_data: usize,
        data: &Bytes,
        pos: &mut usize,
        dest: Dest,
        out: &mut Vec<Event>,
    ) {
        let end = self.base + (*pos + from_data) as u64 + h.size.unwrap_or(0);
        self.flush_run(data, *pos, out);
        let hold = matches!(dest, Dest::Interstitial { .. });
        self.copy_header_bytes(h, from_data, data, pos, hold);
        self.st = St::Hold {
            end,
            id: h.id,
            dest,
        };
    }

    /// Copies the element header bytes to a buffer and consumes them.
    fn copy_header_bytes(
        &mut self,
        h: ElementHeader,
        from_data: usize,
        data: &Bytes,
        pos: &mut usize,
        hold: bool,
    ) {
        let buf = if hold {
            self.hold_buf.clear();
            &mut self.hold_buf
        } else {
            &mut self.header_buf
        };
        if self.sl > 0 {
            buf.extend_from_slice(&self.scratch[..h.len]);
        } else {
            buf.extend_from_slice(&data[*pos..*pos + h.len]);
        }
        self.body_start = buf.len();
        self.sl = 0;
        self.carry.clear();
        *pos += from_data;
    }

    /// Attributes the element header bytes to the open cluster and consumes them.
    fn attach_cluster(&mut self, from_data: usize, pos: &mut usize, out: &mut Vec<Event>) {
        if self.sl > 0 {
            self.sl = 0;
            let carry = std::mem::take(&mut self.carry);
            for piece in &carry {
                self.emit_cluster(piece.clone(), out);
            }
            self.carry = carry;
            self.carry.clear();
        }
        self.take_cluster(*pos);
        *pos += from_data;
    }

    /// Consumes an element header without emitting it (AWS shape: a part of the cluster's
    /// head that is rebuilt or left out).
    pub(super) fn skip_header(
        &mut self,
        from_data: usize,
        data: &Bytes,
        pos: &mut usize,
        out: &mut Vec<Event>,
    ) {
        self.flush_run(data, *pos, out);
        self.sl = 0;
        self.carry.clear();
        *pos += from_data;
    }

    /// The open cluster's bytes up to `end` are whole; those from `child_start` were left out,
    /// and `added` bytes were emitted in their place.
    fn left_out(&mut self, end: u64, added: usize) {
        if let Some(c) = &mut self.cluster {
            c.delta += added as i64 - (end - c.child_start) as i64;
            c.child_start = end;
        }
    }

    /// AWS shape: the cluster's Timecode (ending at `end`) was read, so AWS's cluster head
    /// goes out in place of the input's.
    fn write_cluster_head(&mut self, end: u64, out: &mut Vec<Event>) {
        let Some(c) = &self.cluster else { return };
        let head = kvs_format::kvs::cluster_head(c.summary.timecode);
        self.left_out(end, head.len());
        let piece = self.small_piece(&head);
        self.emit_cluster(piece, out);
    }

    /// Renumbering: the track number of a block (a SimpleBlock when `simple`; ending at
    /// stream offset `end`) ends at `data[at]`, and goes out renumbered.
    ///
    /// When a SimpleBlock's whole header (ID, size, track, time, flags) starts what this
    /// buffer emits and ends in it (matroskamux gives each block header a buffer of its own),
    /// that header goes out as one small copied piece in place of the slice it would have
    /// been. Otherwise the renumbered byte is a piece of its own (a static one: no
    /// allocation) between slices of the input. Frames are never copied.
    fn renumber_block(
        &mut self,
        data: &Bytes,
        at: usize,
        simple: bool,
        end: u64,
        out: &mut Vec<Event>,
    ) {
        let Some(map) = &self.track_map else { return };
        // A SimpleBlock is the cluster child being read.
        let elem = match &self.cluster {
            Some(c) if simple => c.child_start,
            _ => u64::MAX,
        };
        let Ok(Some((old, len))) = ebml::read_vint(&self.vbuf[..self.vl]) else {
            return;
        };
        let Some(new) = map.changed(old) else { return };
        // Numbers up to 126 lie in the last byte alone (with the marker bit in a 1-byte vint).
        let byte = if len == 1 { 0x80 | new } else { new };
        self.vbuf[len - 1] = byte;
        if self.cluster.as_ref().is_some_and(|c| c.retimed) {
            // Sent whole, rewritten, once read (see `on_block_header`).
            return;
        }
        // The time (2 bytes) and flags follow the track number.
        let head_end = at + 4;
        if let Some(run) = self.run
            && elem.checked_sub(self.base) == Some(run as u64)
            && head_end <= data.len()
            && self.base + head_end as u64 <= end
        {
            self.arena_room(head_end - run);
            let from = self.arena.len();
            self.arena.extend_from_slice(&data[run..head_end]);
            self.arena[from + at - run] = byte;
            let piece = self.arena.split().freeze();
            self.emit_cluster(piece, out);
            // The rest of the header is read on, not emitted again.
            self.run = Some(head_end);
            return;
        }
        self.flush_run(data, at, out);
        let b = usize::from(byte);
        self.emit_cluster(Bytes::from_static(&BYTE_VALUES[b..=b]), out);
    }

    /// A copy of a few rewritten bytes, carved from a shared block of memory (one allocation
    /// per [`ARENA`] bytes, not one per piece).
    fn small_piece(&mut self, bytes: &[u8]) -> Bytes {
        self.arena_room(bytes.len());
        self.arena.extend_from_slice(bytes);
        self.arena.split().freeze()
    }

    /// Makes room for `n` more bytes in the arena (a new block when the current one is full:
    /// the pieces already carved from it keep it alive).
    pub(super) fn arena_room(&mut self, n: usize) {
        if self.arena.capacity() - self.arena.len() < n {
            self.arena = BytesMut::with_capacity(ARENA.max(n));
        }
    }

    #[inline]
    fn take_cluster(&mut self, pos: usize) {
        if self.run.is_none() {
            self.run = Some(pos);
        }
    }

    #[inline]
    fn flush_run(&mut self, data: &Bytes, pos: usize, out: &mut Vec<Event>) {
        if let Some(start) = self.run.take()
            && pos > start
        {
            self.emit_cluster(data.slice(start..pos), out);
        }
    }

    /// After an error: emits the open cluster's bytes of this buffer up to the element that
    /// was being read, so that everything whole before the bad input can still be sent.
    fn flush_whole(&mut self, data: &Bytes, out: &mut Vec<Event>) {
        let Some(start) = self.run.take() else { return };
        let Some(c) = &self.cluster else { return };
        let end = c
            .child_start
            .saturating_sub(self.base)
            .min(data.len() as u64) as usize;
        if end > start {
            self.emit_cluster(data.slice(start..end), out);
        }
    }

    /// Cuts the open, started cluster before the child being read: emits this buffer's
    /// bytes up to it, then `FragmentCut` (whose `whole_size` says where the cluster ends
    /// when the child began in an earlier buffer); later bytes of the cluster are only
    /// counted.
    #[cold]
    #[inline(never)]
    pub(super) fn cut_cluster(&mut self, data: &Bytes, out: &mut Vec<Event>) {
        let Some(c) = &self.cluster else { return };
        let end = c
            .child_start
            .saturating_sub(self.base)
            .min(data.len() as u64) as usize;
        if let Some(start) = self.run {
            if end > start {
                self.emit_cluster(data.slice(start..end), out);
            }
            self.run = Some(end.max(start));
        }
        let whole = self.whole_size().unwrap_or(0);
        if let Some(c) = &mut self.cluster {
            c.cut = true;
            c.summary.whole_size = whole;
            out.push(Event::FragmentCut(c.summary.clone()));
        }
    }

    #[inline]
    fn emit_cluster(&mut self, bytes: Bytes, out: &mut Vec<Event>) {
        if let Some(c) = &mut self.cluster {
            if c.cut {
                c.summary.cut_bytes += bytes.len() as u64;
                return;
            }
            c.summary.size += bytes.len() as u64;
            if c.started {
                out.push(Event::FragmentData(bytes));
            } else {
                self.prefix.push(bytes);
                // Bound what is held back: a cluster whose first video block does not show
                // up within `max_block_size` bytes starts as a non-key-frame fragment.
                if c.has_timecode && c.summary.size > self.limits.max_block_size {
                    self.start_flushed(false, false, out);
                }
            }
        }
    }
}
