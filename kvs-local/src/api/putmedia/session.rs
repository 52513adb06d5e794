//! The PutMedia ingest session (a child module of `putmedia`).

use super::*;
use crate::report::BodyRead;
use crate::util::monotonic_ns;
use kvs_format::kvs::{MAX_FRAGMENT_METADATA, MAX_TRACKS, RESERVED_METADATA_PREFIX};
use sha2::{Digest, Sha256};

impl Session {
    /// Runs the session until the body ends, an error ends it, the idle
    /// timeout passes, or a fault closes it.
    pub(super) async fn run(mut self, mut body: Incoming, state: SessionState, first: FirstFrame) {
        let flow = if state != SessionState::Ok {
            self.ack(ack_json("ERROR", None, None, Some(4008))).await;
            Flow::End(format!("stream {} is not ACTIVE", self.handle.name))
        } else {
            match first {
                Some(frame) => match self.on_frame(frame).await {
                    Flow::Continue => self.ingest(&mut body).await,
                    other => other,
                },
                None => self.ingest(&mut body).await,
            }
        };
        // A fragment whose metadata was being read is complete now.
        let _ = self.complete_ended().await;
        let (reason, kill) = match flow {
            Flow::End(r) => (r, false),
            Flow::Kill(r) => (r, true),
            Flow::Continue => ("ended".to_string(), false),
        };
        self.shared.log(format_args!(
            "PutMedia stream={} session ended after {} bytes, {} fragments {}: {reason}",
            self.handle.name,
            self.bytes,
            self.stored,
            if self.shared.config.discard_media {
                "acked (discarded)"
            } else {
                "stored"
            }
        ));
        let bytes = self.bytes;
        self.shared.recorder.session(self.report_id, |s| {
            s.bytes = bytes;
            s.ended_ms = Some(now_ms());
            s.end_reason = Some(reason);
        });
        if kill {
            self.ctl.kill.notify_one();
        }
        // dropping `self.acks` lets the forwarder finish the response
    }

    async fn ingest(&mut self, body: &mut Incoming) -> Flow {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let mut faults_rx = shared.faults.subscribe();
        let mut idle = tokio::time::interval_at(
            (Instant::now() + cfg.idle_ack_interval).into(),
            cfg.idle_ack_interval,
        );
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let max_age = shared.faults.max_connection_duration(&self.handle.name);
            let deadline = max_age.map(|d| self.started + d);
            tokio::select! {
                frame = body.frame() => match self.on_frame(frame).await {
                    Flow::Continue => {}
                    other => return other,
                },
                _ = idle.tick() => {
                    let quiet = self.last_data.elapsed();
                    if quiet >= cfg.idle_timeout {
                        return Flow::End(format!("no data for {:?} (idle timeout)", cfg.idle_timeout));
                    }
                    if quiet + Duration::from_millis(5) >= cfg.idle_ack_interval {
                        self.ack(ack_json("IDLE", None, None, None)).await;
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    self.ack(ack_json("ERROR", None, None, Some(4003))).await;
                    return Flow::End("MAX_CONNECTION_DURATION_REACHED (fault)".into());
                }
                _ = faults_rx.changed() => {}
            }
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Frame<Bytes>, hyper::Error>>) -> Flow {
        match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => {
                    self.last_data = Instant::now();
                    self.on_data(data).await
                }
                Err(_) => Flow::Continue, // trailers
            },
            Some(Err(e)) => Flow::End(format!("request body error: {e}")),
            None => self.on_end().await,
        }
    }

    async fn ack(&mut self, b: Bytes) {
        self.queued += 1;
        if self.acks.send((Instant::now(), b)).await.is_err() {
            // response gone; the delivery counter must still advance
            self.delivery.mark();
        }
    }

    async fn on_data(&mut self, mut chunk: Bytes) -> Flow {
        let mut kill_after = false;
        if let Some(limit) = self.sfaults.close_after_bytes {
            let left = limit.saturating_sub(self.bytes) as usize;
            if chunk.len() >= left {
                chunk.truncate(left);
                kill_after = true;
            }
        }
        self.bytes += chunk.len() as u64;
        if self.shared.config.record_body_reads {
            let read = BodyRead {
                monotonic_ns: monotonic_ns(),
                bytes: self.bytes,
            };
            self.shared
                .recorder
                .session(self.report_id, |s| s.reads.push(read));
        }
        let r = self.parser.push(chunk, &mut self.events);
        let flow = self.process_events().await;
        if !matches!(flow, Flow::Continue) {
            return flow;
        }
        if let Err(e) = r {
            return self.fatal_mkv(e).await;
        }
        if kill_after {
            return Flow::Kill(format!(
                "closed abruptly after {} body bytes (fault)",
                self.bytes
            ));
        }
        Flow::Continue
    }

    async fn on_end(&mut self) -> Flow {
        let r = self.parser.finish(&mut self.events);
        let flow = self.process_events().await;
        if !matches!(flow, Flow::Continue) {
            return flow;
        }
        match r {
            Ok(()) => Flow::End("request body complete".into()),
            Err(e) => self.fatal_mkv(e).await,
        }
    }

    async fn fatal_mkv(&mut self, e: MkvError) -> Flow {
        // The fragment before the bad element is whole.
        let _ = self.complete_ended().await;
        let (tc, num) = match &self.frag {
            Some(f) => (f.timecode, f.number.as_ref().map(|n| n.1.clone())),
            None => (None, None),
        };
        if let Some(f) = self.frag.take() {
            self.record_fragment(&f, 0, format!("error 4006 INVALID_MKV_DATA: {e}"));
        }
        self.ack(ack_json("ERROR", tc, num.as_deref(), Some(4006)))
            .await;
        Flow::End(format!("{e}"))
    }

    async fn process_events(&mut self) -> Flow {
        let mut events = std::mem::take(&mut self.events);
        let mut flow = Flow::Continue;
        for ev in events.drain(..) {
            flow = self.on_event(ev).await;
            if !matches!(flow, Flow::Continue) {
                break;
            }
        }
        self.events = events;
        flow
    }

    fn record_fragment(&self, f: &Frag, size: u64, outcome: String) {
        let rec = FragmentRecord {
            index: f.index,
            timecode: f.timecode,
            number: f.number.as_ref().map(|n| n.1.clone()),
            size,
            key_frame: f.key_frame,
            sha256: None,
            outcome,
        };
        self.shared
            .recorder
            .session(self.report_id, |s| s.fragments.push(rec));
    }

    /// Rejects the fragment in flight with an ERROR ack; the session goes on.
    async fn frag_error(&mut self, id: u32, detail: String) {
        let Some(f) = self.frag.as_mut() else { return };
        if f.error {
            return;
        }
        f.error = true;
        let seq = f.seq;
        let (tc, num) = (f.timecode, f.number.as_ref().map(|n| n.1.clone()));
        self.parser.discard(seq);
        self.shared.log(format_args!(
            "PutMedia stream={} fragment tc={tc:?}: ERROR {id} {}: {detail}",
            self.handle.name,
            error_code_name(id)
        ));
        if let Some(f) = self.frag.as_ref() {
            self.record_fragment(
                f,
                0,
                format!("error {id} {}: {detail}", error_code_name(id)),
            );
        }
        self.ack(ack_json("ERROR", tc, num.as_deref(), Some(id)))
            .await;
    }

    async fn on_event(&mut self, ev: Event) -> Flow {
        if self.ended.is_some() && !matches!(ev, Event::Tags(_)) {
            let flow = self.complete_ended().await;
            if !matches!(flow, Flow::Continue) || matches!(ev, Event::EndOfFragmentTag) {
                return flow;
            }
        }
        match ev {
            Event::Header(h) => {
                if h.tracks.len() > MAX_TRACKS {
                    self.ack(ack_json("ERROR", None, None, Some(4012))).await;
                    return Flow::End(format!(
                        "{} tracks in header (max {MAX_TRACKS})",
                        h.tracks.len()
                    ));
                }
                if h.tracks.is_empty() {
                    self.ack(ack_json("ERROR", None, None, Some(4006))).await;
                    return Flow::End("no tracks in header".into());
                }
                let digest = hex::encode(Sha256::digest(&h.bytes));
                self.header = Some((h, digest));
            }
            Event::ClusterStart { seq } => {
                match self.shared.store.session_state(&self.handle) {
                    SessionState::Ok => {}
                    SessionState::Deleted | SessionState::NotActive => {
                        self.ack(ack_json("ERROR", None, None, Some(4008))).await;
                        return Flow::End("stream deleted or not active".into());
                    }
                    SessionState::Superseded => {
                        return Flow::End("superseded by a newer PutMedia connection".into());
                    }
                }
                self.frag = Some(Frag {
                    seq,
                    index: self.index,
                    timecode: None,
                    number: None,
                    producer_ms: 0,
                    first_checked: false,
                    key_frame: false,
                    min_tc: i64::MAX,
                    max_tc: i64::MIN,
                    any_block: false,
                    tracks_seen: Vec::new(),
                    error: false,
                    metadata: Vec::new(),
                });
                self.index += 1;
            }
            Event::ClusterTimecode { seq, timecode } => {
                return self.on_timecode(seq, timecode).await;
            }
            Event::Block {
                seq,
                track,
                timecode,
                key,
            } => self.on_block(seq, track, timecode, key).await,
            Event::ClusterTooLarge { seq } => {
                if self.frag.as_ref().is_some_and(|f| f.seq == seq) {
                    let max = self.shared.config.max_fragment_size;
                    self.frag_error(4001, format!("fragment larger than {max} bytes"))
                        .await;
                }
            }
            Event::ClusterEnd {
                seq,
                bytes,
                len,
                before_tags,
            } => {
                if before_tags && self.frag.as_ref().is_some_and(|f| f.seq == seq) {
                    // Its metadata may follow.
                    self.ended = Some(Ended { seq, bytes, len });
                    return Flow::Continue;
                }
                return self.cluster_end(seq, bytes, len).await;
            }
            Event::Tags(items) => match self.frag.as_mut().filter(|_| self.ended.is_some()) {
                Some(f) => f.metadata.extend(items),
                None => self.shared.log(format_args!(
                    "PutMedia stream={}: Tags after no cluster ignored: {items:?}",
                    self.handle.name
                )),
            },
            Event::EndOfFragmentTag => {}
        }
        Flow::Continue
    }

    async fn cluster_end(&mut self, seq: u64, bytes: Option<crate::mkv::Pieces>, len: u64) -> Flow {
        if self.shared.config.discard_media {
            self.on_cluster_discarded(seq, len).await
        } else {
            self.on_cluster_end(seq, bytes).await
        }
    }

    /// Completes the cluster whose metadata was being read, if any.
    async fn complete_ended(&mut self) -> Flow {
        match self.ended.take() {
            Some(e) => self.cluster_end(e.seq, e.bytes, e.len).await,
            None => Flow::Continue,
        }
    }

    async fn on_timecode(&mut self, seq: u64, timecode: u64) -> Flow {
        let Some(number) = self.shared.store.next_number(&self.handle) else {
            self.ack(ack_json("ERROR", Some(timecode), None, Some(4008)))
                .await;
            return Flow::End("stream deleted".into());
        };
        let scale = self
            .header
            .as_ref()
            .map(|h| h.0.timecode_scale)
            .unwrap_or(1_000_000);
        let tc_ns = timecode as u128 * scale as u128;
        let Some(f) = self.frag.as_mut().filter(|f| f.seq == seq) else {
            return Flow::Continue;
        };
        f.timecode = Some(timecode);
        let num = number.1.clone();
        f.number = Some(number);
        let producer = if self.relative {
            self.start_ts
                .clone()
                .map(|s| s.saturating_add((tc_ns / 1_000_000).min(u64::MAX as u128) as u64))
        } else {
            Ok((tc_ns / 1_000_000).min(u64::MAX as u128) as u64)
        };
        self.ack(ack_json("BUFFERING", Some(timecode), Some(&num), None))
            .await;
        if self.shared.config.discard_media {
            return Flow::Continue;
        }
        let max_future = self.shared.config.max_future_timestamp.as_millis() as u64;
        match producer {
            Err(why) => self.frag_error(4007, why).await,
            Ok(p) if p > now_ms().saturating_add(max_future) => {
                self.frag_error(4007, format!("producer timestamp {p} ms is in the future"))
                    .await
            }
            Ok(p) => {
                if let Some(f) = self.frag.as_mut() {
                    f.producer_ms = p;
                }
                if let Some(prev) = self.prev_start_ns.filter(|prev| tc_ns < *prev) {
                    self.frag_error(
                        4004,
                        format!(
                            "timecode {tc_ns} ns is lower than the previous fragment's {prev} ns"
                        ),
                    )
                    .await;
                } else {
                    self.prev_start_ns = Some(tc_ns);
                }
            }
        }
        Flow::Continue
    }

    async fn on_block(&mut self, seq: u64, track: u64, rel: i16, key: bool) {
        let Some((h, _)) = self.header.as_ref() else {
            return;
        };
        let h = h.clone();
        let cfg = &self.shared.config;
        let (require_key, max_dur) = (cfg.require_key_frame, cfg.max_fragment_duration);
        let Some(f) = self.frag.as_mut().filter(|f| f.seq == seq && !f.error) else {
            return;
        };
        if !h.tracks.iter().any(|t| t.number == track) {
            return self
                .frag_error(
                    4010,
                    format!("block for track {track}, which is not in Tracks"),
                )
                .await;
        }
        let video = h
            .tracks
            .iter()
            .find(|t| t.track_type == 1)
            .map(|t| t.number);
        if !f.first_checked && video.is_none_or(|v| v == track) {
            f.first_checked = true;
            f.key_frame = key;
            if !key && require_key && video.is_some() {
                return self
                    .frag_error(4006, "fragment does not start with a key frame".into())
                    .await;
            }
        }
        let tc = f.timecode.unwrap_or(0) as i64 + rel as i64;
        f.any_block = true;
        f.min_tc = f.min_tc.min(tc);
        f.max_tc = f.max_tc.max(tc);
        if !f.tracks_seen.contains(&track) {
            f.tracks_seen.push(track);
        }
        let span_ns = (f.max_tc - f.min_tc) as u128 * h.timecode_scale as u128;
        if span_ns > max_dur.as_nanos() {
            self.frag_error(
                4002,
                format!(
                    "fragment spans {} ms (max {} ms)",
                    span_ns / 1_000_000,
                    max_dur.as_millis()
                ),
            )
            .await;
        }
    }

    async fn on_cluster_end(&mut self, seq: u64, bytes: Option<crate::mkv::Pieces>) -> Flow {
        if self.frag.as_ref().is_none_or(|f| f.seq != seq) {
            return Flow::Continue;
        }
        if self.frag.as_ref().is_some_and(|f| f.error) {
            self.frag = None;
            return Flow::Continue;
        }
        let Some(bytes) = bytes else {
            self.frag_error(4001, "fragment too large".into()).await;
            self.frag = None;
            return Flow::Continue;
        };
        let f = self.frag.as_ref().expect("checked");
        let (header, digest) = self.header.clone().expect("header before clusters");
        let user_metadata = f
            .metadata
            .iter()
            .filter(|(name, _)| !name.starts_with(RESERVED_METADATA_PREFIX))
            .count();
        let problem = if f.timecode.is_none() {
            Some((4006, "cluster without Timecode".to_string()))
        } else if user_metadata > MAX_FRAGMENT_METADATA {
            Some((
                4009,
                format!("{user_metadata} metadata items (at most {MAX_FRAGMENT_METADATA})"),
            ))
        } else if !f.any_block {
            Some((4006, "fragment without frames".to_string()))
        } else if self.shared.config.require_all_tracks {
            header
                .tracks
                .iter()
                .find(|t| !f.tracks_seen.contains(&t.number))
                .map(|t| (4011, format!("no frame for track {} in fragment", t.number)))
        } else {
            None
        };
        let tc = f.timecode.unwrap_or(0);
        let injected = self
            .shared
            .faults
            .take_error_ack(&self.handle.name, f.index, tc)
            .map(|id| (id, "injected fault".to_string()));
        if let Some((id, why)) = problem.or(injected) {
            self.frag_error(id, why).await;
            self.frag = None;
            return Flow::Continue;
        }
        let f = self.frag.take().expect("checked");
        let (counter, number) = f.number.clone().expect("number with timecode");
        self.ack(ack_json("RECEIVED", Some(tc), Some(&number), None))
            .await;
        let duration_ms =
            ((f.max_tc - f.min_tc) as u128 * header.timecode_scale as u128 / 1_000_000) as u64;
        let meta = FragMeta {
            number: number.clone(),
            timecode: tc,
            producer_timestamp_ms: f.producer_ms,
            server_timestamp_ms: now_ms(),
            duration_ms,
            key_frame: f.key_frame,
            header_digest: digest,
            size: bytes.len() as u64,
            metadata: f.metadata.clone(),
        };
        let size = bytes.len() as u64;
        let result = if self.shared.config.data_dir.is_some() {
            let shared = self.shared.clone();
            let handle = self.handle.clone();
            let hb = header.bytes.clone();
            tokio::task::spawn_blocking(move || {
                shared.store.append(&handle, counter, meta, &hb, bytes)
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))))
        } else {
            // in memory: one copy into the session's arena, so that the
            // receive buffers are released and recycled
            let stored = crate::mkv::Pieces::from(self.arena.store(&bytes));
            drop(bytes);
            self.shared
                .store
                .append(&self.handle, counter, meta, &header.bytes, stored)
        };
        match result {
            Ok(()) => {
                self.ack(ack_json("PERSISTED", Some(tc), Some(&number), None))
                    .await;
                self.record_fragment(&f, size, "persisted".into());
                self.stored += 1;
            }
            Err(StoreError::NotFound) => {
                self.record_fragment(&f, size, "error 4008 STREAM_NOT_ACTIVE".into());
                self.ack(ack_json("ERROR", Some(tc), Some(&number), Some(4008)))
                    .await;
                return Flow::End("stream deleted while streaming".into());
            }
            Err(e) => {
                self.record_fragment(&f, size, format!("error 5001 ARCHIVAL_ERROR: {e}"));
                self.ack(ack_json("ERROR", Some(tc), Some(&number), Some(5001)))
                    .await;
            }
        }
        self.after_fragment().await
    }

    /// With [`crate::Config::discard_media`]: a cluster has ended; acks it as received and
    /// persisted without storing it (or checking anything but its Timecode).
    async fn on_cluster_discarded(&mut self, seq: u64, len: u64) -> Flow {
        let Some(f) = self.frag.take_if(|f| f.seq == seq) else {
            return Flow::Continue;
        };
        if f.error {
            return Flow::Continue;
        }
        let (Some(tc), Some((_, number))) = (f.timecode, f.number.clone()) else {
            self.frag = Some(f);
            self.frag_error(4006, "cluster without Timecode".into())
                .await;
            self.frag = None;
            return Flow::Continue;
        };
        if let Some(id) = self
            .shared
            .faults
            .take_error_ack(&self.handle.name, f.index, tc)
        {
            self.frag = Some(f);
            self.frag_error(id, "injected fault".into()).await;
            self.frag = None;
            return Flow::Continue;
        }
        self.ack(ack_json("RECEIVED", Some(tc), Some(&number), None))
            .await;
        self.ack(ack_json("PERSISTED", Some(tc), Some(&number), None))
            .await;
        self.record_fragment(&f, len, "discarded".into());
        self.stored += 1;
        self.after_fragment().await
    }

    /// After a fragment was acked: the `close_after_fragments` fault.
    async fn after_fragment(&mut self) -> Flow {
        if self
            .sfaults
            .close_after_fragments
            .is_some_and(|n| self.stored >= n)
        {
            let queued = self.queued;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.delivery.wait_for(queued)).await;
            // let hyper write the last frames out before the socket goes
            tokio::task::yield_now().await;
            return Flow::Kill(format!(
                "closed abruptly after {} fragments (fault)",
                self.stored
            ));
        }
        Flow::Continue
    }
}
