//! Stream header handling: EBML header, Info, Tracks, held Segment-level elements.

use super::*;

impl Splitter {
    pub(super) fn on_held(
        &mut self,
        id: u32,
        dest: Dest,
        data: &Bytes,
        pos: usize,
        out: &mut Vec<Event>,
    ) -> Result<(), MkvError> {
        match dest {
            Dest::EbmlHeader => {
                let body = &self.header_buf[self.body_start..];
                for child in ebml::children(body) {
                    let Ok((cid, b)) = child else { break };
                    if cid == ID_DOC_TYPE {
                        self.doc_type = ebml::read_string(b);
                    }
                }
                if self.doc_type != "matroska" && self.doc_type != "webm" {
                    return Err(MkvError::DocType(self.doc_type.clone()));
                }
                self.top = Top::ExpectSegment;
            }
            Dest::Header => match id {
                ID_INFO => self.parse_info(),
                ID_TRACKS => self.parse_tracks()?,
                _ => {}
            },
            Dest::Interstitial { in_cluster } => {
                let eof =
                    id == ID_TAGS && tags_have_end_of_fragment(&self.hold_buf[self.body_start..]);
                if in_cluster {
                    self.end_cluster(eof, data, pos, out)?;
                }
                let bytes = Bytes::from(std::mem::take(&mut self.hold_buf));
                out.push(Event::Interstitial(bytes));
            }
        }
        Ok(())
    }

    pub(super) fn parse_info(&mut self) {
        let body = &self.header_buf[self.body_start..];
        self.timecode_scale = kvs_format::matroska::info_timecode_scale(body);
        for (id, b) in ebml::children(body).map_while(Result::ok) {
            match id {
                ID_DATE_UTC => self.date_utc = kvs_format::ebml::read_int(b),
                ID_DURATION => {
                    self.duration = kvs_format::ebml::read_float(b).filter(|d| d.is_finite())
                }
                _ => {}
            }
        }
    }

    pub(super) fn parse_tracks(&mut self) -> Result<(), MkvError> {
        let body = &self.header_buf[self.body_start..];
        let mut tracks = Vec::new();
        for (id, entry) in ebml::children(body).map_while(Result::ok) {
            if id != ID_TRACK_ENTRY {
                continue;
            }
            let mut t = TrackInfo {
                number: 0,
                track_type: 0,
                codec_id: String::new(),
                codec_private: Bytes::new(),
            };
            for (cid, b) in ebml::children(entry).map_while(Result::ok) {
                match cid {
                    ID_TRACK_NUMBER => t.number = ebml::read_uint(b).unwrap_or(0),
                    ID_TRACK_TYPE => t.track_type = ebml::read_uint(b).unwrap_or(0),
                    ID_CODEC_ID => t.codec_id = ebml::read_string(b),
                    ID_CODEC_PRIVATE => t.codec_private = Bytes::copy_from_slice(b),
                    _ => {}
                }
            }
            tracks.push(t);
        }
        if tracks.len() > MAX_TRACKS {
            return Err(MkvError::TooManyTracks(tracks.len()));
        }
        self.track_map = None;
        self.renumbered.clear();
        if self.aws_shape
            && let Ok(Some(map)) = super::renumber::plan(&tracks)
        {
            let body = &mut self.header_buf[self.body_start..];
            let rewritten = super::renumber::rewrite_tracks(body, &map);
            body.copy_from_slice(&rewritten);
            for t in &mut tracks {
                let new = map.apply(t.number);
                if new != t.number {
                    self.renumbered.push((t.number, new));
                    t.number = new;
                }
            }
            tracks.sort_by_key(|t| t.number);
            self.renumbered.sort_by_key(|&(_, new)| new);
            self.track_map = Some(map);
        }
        self.have_tracks = !tracks.is_empty();
        self.tracks = tracks;
        Ok(())
    }

    pub(super) fn complete_header(&mut self, out: &mut Vec<Event>) -> Result<(), MkvError> {
        if !self.have_tracks {
            return Err(MkvError::MissingTracks);
        }
        let header = StreamHeader {
            bytes: Bytes::copy_from_slice(&self.header_buf),
            doc_type: self.doc_type.clone(),
            timecode_scale: self.timecode_scale,
            date_utc_ms: self.date_utc.and_then(|ns| {
                u64::try_from(MATROSKA_EPOCH_MS as i64 + ns.div_euclid(1_000_000)).ok()
            }),
            duration_ns: self
                .duration
                .filter(|d| *d > 0.0)
                .map(|d| (d * self.timecode_scale as f64) as u64),
            tracks: self.tracks.clone(),
            renumbered: self.renumbered.clone(),
        };
        self.video_track = self
            .tracks
            .iter()
            .find(|t| t.track_type == TRACK_TYPE_VIDEO)
            .map(|t| t.number);
        self.max_span_ticks = i64::try_from(self.limits.max_fragment_span_ns / self.timecode_scale)
            .unwrap_or(i64::MAX);
        self.header_buf.clear();
        self.header_done = true;
        self.forget_times();
        self.header = Some(header.clone());
        out.push(Event::Header(Box::new(header)));
        Ok(())
    }
}
