//! Cluster handling: children, blocks, fragment start and end.

use super::*;

impl Splitter {
    /// An element header inside the open cluster (or BlockGroup).
    pub(super) fn on_cluster_child(
        &mut self,
        h: ElementHeader,
        from_data: usize,
        data: &Bytes,
        pos: &mut usize,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let start = self.base + *pos as u64 + from_data as u64 - h.len as u64;
        let body = start + h.len as u64;
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
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let (cluster_end, group_end, started, has_timecode) =
            (c.end, c.group_end, c.started, c.has_timecode);

        if group_end.is_none() && cluster_end.is_none() && is_segment_level(h.id) {
            if h.id != ID_TAGS {
                self.end_cluster(false, data, *pos, out)?;
                return self.on_header(h, from_data, data, pos, out);
            }
            // Tags: parse it before ending the cluster (end-of-fragment flag).
            let size = h.size.ok_or_else(|| unexpected("Tags with unknown size"))?;
            self.check_in_segment(Some(body.saturating_add(size)), start, h.id)?;
            let limit = self.limits.max_element_size;
            if size.saturating_add(h.len as u64) > limit {
                return Err(too_large(size, limit));
            }
            self.begin_hold(
                h,
                from_data,
                data,
                pos,
                Dest::Interstitial { in_cluster: true },
                out,
            );
            return Ok(());
        }
        if cluster_end.is_some() && matches!(h.id, ID_EBML | ID_SEGMENT | ID_CLUSTER) {
            return Err(unexpected("inside a known-size Cluster"));
        }
        if self.aws_shape && cluster_end.is_some() && group_end.is_none() && is_segment_level(h.id)
        {
            // Sent in a cluster of unknown size, it would end the cluster there.
            return Err(unexpected(
                "a Segment-level element inside a known-size Cluster",
            ));
        }
        let size = h
            .size
            .ok_or_else(|| unexpected("unknown size inside a Cluster"))?;
        let end = body.saturating_add(size);
        if group_end.or(cluster_end).is_some_and(|p| end > p) {
            return Err(unexpected("element extends past the end of its parent"));
        }
        self.check_in_segment(Some(end), start, h.id)?;
        if size > self.limits.max_block_size {
            return Err(too_large(size, self.limits.max_block_size));
        }
        let in_group = group_end.is_some();
        if !in_group
            && matches!(h.id, ID_SIMPLE_BLOCK | ID_BLOCK_GROUP)
            && (end - c.start).saturating_add_signed(c.delta) > self.limits.max_fragment_bytes
            && started
            && !c.cut
        {
            self.cut_cluster(data, out);
        }
        if self.aws_shape
            && !in_group
            && h.id != ID_SIMPLE_BLOCK
            && let Some(st) = left_out(h.id, has_timecode, size, end).map_err(unexpected)?
        {
            self.vl = 0;
            self.st = st;
            self.skip_header(from_data, data, pos, out);
            return Ok(());
        }
        if !in_group
            && matches!(h.id, ID_SIMPLE_BLOCK | ID_BLOCK_GROUP)
            && let Some(c) = &mut self.cluster
            && c.summary.frame_end == 0
            && !c.cut
        {
            // Where the first frame ends in what is emitted (what was rewritten or left out
            // before it is in `delta`).
            c.summary.frame_end = (end - c.start).saturating_add_signed(c.delta).max(1);
        }
        let st = match (h.id, in_group) {
            (ID_TIMECODE, false) if !started => {
                if size > 8 {
                    return Err(unexpected("Timecode longer than 8 bytes"));
                }
                self.vl = 0;
                St::Value { end }
            }
            (ID_SIMPLE_BLOCK, false) | (ID_BLOCK, true) => {
                if !has_timecode {
                    return Err(unexpected("block before the Cluster Timecode"));
                }
                self.vl = 0;
                St::BlockHead {
                    end,
                    simple: !in_group,
                    start: body,
                }
            }
            (ID_BLOCK_GROUP, false) => {
                if let Some(c) = &mut self.cluster {
                    c.group_end = Some(end);
                    c.group_ref = false;
                    c.group_decides = false;
                }
                St::Head
            }
            (ID_REFERENCE_BLOCK, true) => {
                if let Some(c) = &mut self.cluster {
                    c.group_ref = true;
                }
                St::Skip { end }
            }
            _ => St::Skip { end },
        };
        self.st = st;
        self.attach_cluster(from_data, pos, out);
        Ok(())
    }

    /// Emits `FragmentStart` and the held prefix (cluster bytes up to `pos`).
    pub(super) fn start_fragment(
        &mut self,
        key_frame: bool,
        video: bool,
        data: &Bytes,
        pos: usize,
        out: &mut Vec<Event>,
    ) {
        self.flush_run(data, pos, out);
        self.start_flushed(key_frame, video, out);
    }

    /// `start_fragment` once the run has been flushed; no-op if already started.
    pub(super) fn start_flushed(&mut self, key_frame: bool, video: bool, out: &mut Vec<Event>) {
        let Some(c) = &mut self.cluster else { return };
        if c.started {
            return;
        }
        c.started = true;
        c.summary.key_frame = key_frame;
        out.push(Event::FragmentStart(FragmentStart {
            timecode: c.summary.timecode,
            key_frame,
            video,
        }));
        let size = c.summary.size;
        if self.prefix.len() > 1 && size <= PREFIX_COALESCE {
            self.arena_room(size as usize);
            for p in &self.prefix {
                self.arena.extend_from_slice(p);
            }
            out.push(Event::FragmentData(self.arena.split().freeze()));
        } else {
            out.extend(self.prefix.iter().cloned().map(Event::FragmentData));
        }
        self.prefix.clear();
    }

    pub(super) fn end_cluster(
        &mut self,
        eof_tag: bool,
        data: &Bytes,
        pos: usize,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        self.flush_run(data, pos, out);
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if !c.started {
            if !c.has_timecode {
                return Err(MkvError::UnexpectedElement {
                    id: ID_CLUSTER,
                    offset: c.start,
                    context: "Cluster without a Timecode",
                });
            }
            let key = self.video_track.is_none();
            self.start_fragment(key, false, data, pos, out);
        }
        let mut c = self.cluster.take().expect("open cluster");
        c.summary.end_of_fragment_tag = eof_tag;
        c.summary.whole_size = c.summary.size;
        self.prev_timecode = Some(c.summary.timecode);
        out.push(Event::FragmentEnd(c.summary));
        Ok(())
    }

    pub(super) fn on_timecode(&mut self) -> Result<(), MkvError> {
        let tc = ebml::read_uint(&self.vbuf[..self.vl]).unwrap_or(0);
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        if c.has_timecode {
            return Ok(());
        }
        if let Some(prev) = self.prev_timecode
            && tc < prev
        {
            return Err(MkvError::TimecodeBackwards {
                previous: i64::try_from(prev).unwrap_or(i64::MAX),
                current: i64::try_from(tc).unwrap_or(i64::MAX),
            });
        }
        c.has_timecode = true;
        c.summary.timecode = tc;
        let t = i64::try_from(tc).unwrap_or(i64::MAX);
        c.summary.first_block_time = t;
        c.summary.last_block_time = t;
        Ok(())
    }

    pub(super) fn on_block_header(
        &mut self,
        simple: bool,
        start: u64,
        data: &Bytes,
        pos: usize,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        let (track, l) = match ebml::read_vint(&self.vbuf[..self.vl]) {
            Ok(Some(v)) => v,
            _ => return Err(MkvError::InvalidVint { offset: start }),
        };
        let rel = i16::from_be_bytes([self.vbuf[l], self.vbuf[l + 1]]);
        let flags = self.vbuf[l + 2];
        if !self.tracks.iter().any(|t| t.number == track) {
            return Err(MkvError::UnknownTrack {
                track,
                offset: start,
            });
        }
        let video = self.video_track;
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        let t = i64::try_from(c.summary.timecode)
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(rel));
        if simple && flags & 0x80 != 0 && video == Some(track) {
            // Two clusters may begin at the same time (as the service allows); two key
            // frames in one cannot.
            if let Some(previous) = self.prev_key_time
                && (t < previous || (t == previous && c.key_seen))
            {
                return Err(MkvError::KeyFrameBackwards {
                    previous,
                    current: t,
                });
            }
            self.prev_key_time = Some(t);
            c.key_seen = true;
        }
        if c.started && !c.cut && c.summary.blocks > 0 {
            let first = c.summary.first_block_time.min(t);
            let last = c.summary.last_block_time.max(t);
            if last.saturating_sub(first) > self.max_span_ticks {
                self.cut_cluster(data, out);
            }
        }
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        if c.summary.blocks == 0 {
            c.summary.first_block_time = t;
            c.summary.last_block_time = t;
        } else {
            c.summary.first_block_time = c.summary.first_block_time.min(t);
            c.summary.last_block_time = c.summary.last_block_time.max(t);
        }
        c.summary.blocks += 1;
        if c.started {
            return Ok(());
        }
        match video {
            None => self.start_fragment(true, false, data, pos, out),
            Some(v) if v == track => {
                if simple {
                    self.start_fragment(flags & 0x80 != 0, true, data, pos, out);
                } else {
                    c.group_decides = true;
                }
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// AWS shape: how a cluster child other than a SimpleBlock is read when it is left out of
/// what is sent (the cluster's head is rebuilt from its Timecode: what else the input has
/// there is left out, as are PrevSize, Position and CRC-32, wrong once rewritten); `None`
/// when it is sent.
#[inline(never)]
fn left_out(id: u32, has_timecode: bool, size: u64, end: u64) -> Result<Option<St>, &'static str> {
    Ok(match id {
        ID_TIMECODE if !has_timecode => {
            if size > 8 {
                return Err("Timecode longer than 8 bytes");
            }
            Some(St::Value { end })
        }
        ID_BLOCK_GROUP if !has_timecode => return Err("block before the Cluster Timecode"),
        ID_BLOCK_GROUP => None,
        ID_TIMECODE | ID_PREV_SIZE | ID_POSITION | ID_CRC_32 => Some(St::Drop { end }),
        _ if !has_timecode => Some(St::Drop { end }),
        _ => None,
    })
}

/// IDs that end an unknown-size Cluster.
fn is_segment_level(id: u32) -> bool {
    matches!(
        id,
        ID_CLUSTER
            | ID_TAGS
            | ID_CUES
            | ID_SEEK_HEAD
            | ID_INFO
            | ID_TRACKS
            | ID_CHAPTERS
            | ID_ATTACHMENTS
            | ID_EBML
            | ID_SEGMENT
    )
}
