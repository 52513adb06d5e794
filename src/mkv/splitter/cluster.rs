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
                    elem: start,
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
        if matches!(st, St::BlockHead { .. }) && self.cluster.as_ref().is_some_and(|c| c.retimed) {
            // Sent rewritten once its header is read (see `on_block_header`).
            self.skip_header(from_data, data, pos, out);
        } else {
            self.attach_cluster(from_data, pos, out);
        }
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
        self.ended(&c.summary);
        out.push(Event::FragmentEnd(c.summary));
        Ok(())
    }

    /// Remembers the times of a cluster that ends (or a fragment a jump back ended).
    fn ended(&mut self, summary: &FragmentSummary) {
        self.prev_timecode = Some(summary.timecode);
        if summary.blocks > 0 {
            self.prev_last_time = Some(
                self.prev_last_time
                    .map_or(summary.last_block_time, |t| t.max(summary.last_block_time)),
            );
        }
        if summary.blocks > 1 {
            let span = summary.last_block_time - summary.first_block_time;
            self.spacing = (span / (summary.blocks as i64 - 1)).max(1);
        }
    }

    /// Time went back to `t` (units, as it would be sent) from `from`: from here on everything
    /// is sent shifted, so that `t` comes one block spacing after the latest time sent (and
    /// after `from`), told in [`Event::TimeWentBack`] with `fragment` (the time of the
    /// fragment that follows, before the shift). Returns the shift.
    fn shift_after_last(&mut self, from: i64, t: i64, fragment: i64, out: &mut Vec<Event>) -> i64 {
        let last = self.prev_last_time.unwrap_or(from).max(from);
        let shift = last.saturating_add(self.spacing).saturating_sub(t).max(0);
        self.shift = self.shift.saturating_add(shift as u64);
        out.push(Event::TimeWentBack {
            timecode: fragment.saturating_add(shift) as u64,
            shift: shift as u64,
        });
        shift
    }

    pub(super) fn on_timecode(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        let input = ebml::read_uint(&self.vbuf[..self.vl]).unwrap_or(0);
        if self.cluster.as_ref().is_none_or(|c| c.has_timecode) {
            return Ok(());
        }
        let mut tc = input.saturating_add(self.shift);
        if let Some(prev) = self.prev_timecode
            && tc < prev
        {
            if !self.aws_shape {
                return Err(MkvError::TimecodeBackwards {
                    previous: i64::try_from(prev).unwrap_or(i64::MAX),
                    current: i64::try_from(tc).unwrap_or(i64::MAX),
                });
            }
            let at = i64::try_from(tc).unwrap_or(i64::MAX);
            let from = i64::try_from(prev).unwrap_or(i64::MAX);
            tc += self.shift_after_last(from, at, at, out) as u64;
        }
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        c.has_timecode = true;
        c.summary.timecode = tc;
        let t = i64::try_from(tc).unwrap_or(i64::MAX);
        c.base = t;
        c.summary.first_block_time = t;
        c.summary.last_block_time = t;
        Ok(())
    }

    /// A block's header (track, time, flags) was read; `elem` is where the block starts,
    /// `start` its body, `end` its end.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_block_header(
        &mut self,
        simple: bool,
        start: u64,
        elem: u64,
        end: u64,
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
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let mut t = c.base.saturating_add(i64::from(rel));
        if simple && flags & 0x80 != 0 && video == Some(track) {
            // Two clusters may begin at the same time (as the service allows); two key
            // frames in one cannot.
            let back = self
                .prev_key_time
                .filter(|&previous| t < previous || (t == previous && c.key_seen));
            if let Some(previous) = back
                && !self.aws_shape
            {
                return Err(MkvError::KeyFrameBackwards {
                    previous,
                    current: t,
                });
            }
            // In AWS shape, also a key frame before a video frame already sent: time went
            // back by less than a group of pictures (the frames between are sent as they
            // came, in the fragment they belong to).
            let behind = self.aws_shape && (back.is_some() || t < self.video_max);
            if behind {
                // (The previous key frame is a video frame sent: `video_max` is past it.)
                let from = self.video_max;
                t = if c.started {
                    // Inside a cluster (matroskamux writes on into the cluster it has open,
                    // at negative block times): the rest of it goes on in fragments of
                    // their own, re-timed.
                    self.split_at_key(Some(from), t, elem, end, data, out)
                } else {
                    self.shift_unstarted(from, t, out)
                };
            } else if c.retimed && c.summary.blocks > 0 {
                // Each group of pictures of a re-timed cluster is a fragment of its own.
                t = self.split_at_key(None, t, elem, end, data, out);
            }
            self.prev_key_time = Some(t);
            if let Some(c) = &mut self.cluster {
                c.key_seen = true;
            }
        }
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if c.started && !c.cut && c.summary.blocks > 0 {
            let first = c.summary.first_block_time.min(t);
            let last = c.summary.last_block_time.max(t);
            if last.saturating_sub(first) > self.max_span_ticks {
                self.cut_cluster(data, out);
            }
        }
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if c.retimed {
            let sent = t - c.summary.timecode as i64;
            match i16::try_from(sent) {
                Ok(sent) => self.emit_block_head(simple, elem, start, end, sent, out),
                Err(_) => {
                    // Too far from the fragment's start for a block time: cut there (the
                    // rest of the group of pictures is counted as cut, not sent).
                    if !c.cut {
                        self.cut_cluster(data, out);
                    }
                    self.emit_block_head(simple, elem, start, end, 0, out);
                }
            }
        }
        if video == Some(track) {
            self.video_max = self.video_max.max(t);
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

    /// A video key frame (the SimpleBlock at `elem`, ending at `end`, at time `t`) begins a
    /// fragment of its own: the open cluster's fragment ends before it, and a re-timed one
    /// begins. `back_from`: the key frame went back from there, and from now on times are
    /// sent shifted (see [`Event::TimeWentBack`]). Returns the key frame's time as sent.
    #[cold]
    #[inline(never)]
    fn split_at_key(
        &mut self,
        back_from: Option<i64>,
        t: i64,
        elem: u64,
        end: u64,
        data: &Bytes,
        out: &mut Vec<Event>,
    ) -> i64 {
        // This buffer's bytes before the block belong to the fragment that ends; those of
        // the block's header emitted already (from an earlier buffer) are past its
        // `whole_size`, and the header goes out again, rewritten, in the next one.
        if let Some(run) = self.run.take() {
            let before = elem.saturating_sub(self.base).min(data.len() as u64) as usize;
            if before > run {
                self.emit_cluster(data.slice(run..before), out);
            }
        }
        let whole = self.whole_size().unwrap_or(0);
        let Some(mut ended) = self.cluster.take() else {
            return t;
        };
        if !ended.cut {
            ended.summary.whole_size = whole;
        } else {
            ended.summary.whole_size = ended.summary.size;
        }
        ended.summary.continued = ended.summary.whole_size < ended.summary.size;
        self.ended(&ended.summary);
        out.push(Event::FragmentEnd(ended.summary.clone()));
        let (mut t, mut base) = (t, ended.base);
        if let Some(previous) = back_from {
            let from = previous.max(ended.summary.timecode as i64);
            let shift = self.shift_after_last(from, t, t, out);
            base = base.saturating_add(shift);
            t = t.saturating_add(shift);
        }
        let head = kvs_format::kvs::cluster_head(t as u64);
        self.cluster = Some(Cluster {
            start: elem,
            end: ended.end,
            summary: FragmentSummary {
                timecode: t as u64,
                first_block_time: t,
                last_block_time: t,
                key_frame: true,
                // Where the key frame ends in what is sent (the header is rewritten to the
                // same length).
                frame_end: (end - elem) + head.len() as u64,
                ..FragmentSummary::default()
            },
            has_timecode: true,
            started: true,
            group_end: None,
            group_ref: false,
            group_decides: false,
            child_start: elem,
            cut: false,
            key_seen: false,
            base,
            retimed: true,
            delta: head.len() as i64,
        });
        out.push(Event::FragmentStart(FragmentStart {
            timecode: t as u64,
            key_frame: true,
            video: true,
        }));
        let piece = self.small_piece(&head);
        self.emit_cluster(piece, out);
        t
    }

    /// A video key frame at `t` went back before `from` (a frame already sent) in a cluster
    /// whose fragment has not started: the whole cluster is sent shifted (its head, still
    /// held, rewritten), after the last frame sent. Returns the key frame's time as sent.
    #[cold]
    #[inline(never)]
    fn shift_unstarted(&mut self, from: i64, t: i64, out: &mut Vec<Event>) -> i64 {
        let Some(timecode) = self.cluster.as_ref().map(|c| c.summary.timecode as i64) else {
            return t;
        };
        let shift = self.shift_after_last(from, t, timecode, out);
        let Some(c) = &mut self.cluster else {
            return t;
        };
        c.summary.timecode = c.summary.timecode.saturating_add(shift as u64);
        c.base = c.base.saturating_add(shift);
        c.summary.first_block_time = c.summary.first_block_time.saturating_add(shift);
        c.summary.last_block_time = c.summary.last_block_time.saturating_add(shift);
        let timecode = c.summary.timecode;
        // AWS shape: the held bytes begin with the cluster's head (what came before its
        // Timecode is left out), rewritten at the same length.
        let head = kvs_format::kvs::cluster_head(timecode);
        if self.prefix.first().is_some_and(|p| p.len() == head.len()) {
            self.prefix[0] = self.small_piece(&head);
        }
        t.saturating_add(shift)
    }

    /// A re-timed cluster's block header, read whole (in `vbuf`), goes out with its time
    /// rewritten to `time` (relative to the fragment's Timecode): the element's ID and size
    /// (of the input's width, so that sizes stay as they were), then track, time and flags.
    fn emit_block_head(
        &mut self,
        simple: bool,
        elem: u64,
        body: u64,
        end: u64,
        time: i16,
        out: &mut Vec<Event>,
    ) {
        let id = if simple { ID_SIMPLE_BLOCK } else { ID_BLOCK };
        let mut head = Vec::with_capacity(MAX_HEADER_LEN + self.vl);
        kvs_format::ebml::write_id(&mut head, id);
        let size_len = (body - elem) as usize - head.len();
        kvs_format::ebml::write_vint_len(&mut head, end - body, size_len);
        let track_len = self.vl - 3;
        head.extend_from_slice(&self.vbuf[..track_len]);
        head.extend_from_slice(&time.to_be_bytes());
        head.push(self.vbuf[track_len + 2]);
        let piece = self.small_piece(&head);
        self.emit_cluster(piece, out);
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
