//! The parser's per-element handlers (a child module of `mkv`).

use super::*;

impl Parser {
    pub(super) fn on_element(
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
                    if id == ID_TAGS
                        && let Some(Event::ClusterEnd { before_tags, .. }) = out.last_mut()
                    {
                        *before_tags = true;
                    }
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
                    discard: self.boundaries_only,
                    timecode_seen: false,
                });
                if !self.boundaries_only {
                    self.capture = Capture::Cluster(start);
                }
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
                if self.boundaries_only {
                    self.state = State::Skip(end);
                } else {
                    self.block_prefix_state(id, body, end)?;
                }
            }
            ID_BLOCK_GROUP => {
                if !tc_seen {
                    return invalid(format!(
                        "BlockGroup before cluster Timecode (cluster {seq})"
                    ));
                }
                if self.boundaries_only {
                    self.state = State::Skip(end);
                } else {
                    self.group = GroupState::default();
                    self.stack.push(Master { id, end: Some(end) });
                }
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

    pub(super) fn on_read(
        &mut self,
        id: u32,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        match id {
            ID_EBML => {
                let mut doc_type = "matroska".to_string();
                for child in children(data) {
                    let (cid, body) = child?;
                    if cid == ID_DOC_TYPE {
                        doc_type = kvs_format::ebml::read_string(body);
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
            ID_TAGS => {
                let (eof, items) = read_tags(data)?;
                if !items.is_empty() && self.header.emitted {
                    out.push(Event::Tags(items));
                }
                if eof {
                    out.push(Event::EndOfFragmentTag);
                }
            }
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

    pub(super) fn on_block_prefix(
        &mut self,
        id: u32,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let (track, tl) = match kvs_format::ebml::read_size(data) {
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
