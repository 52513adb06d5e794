//! The uploader's shared state and its transitions. The streaming thread, the driver and the
//! connections change it only through the methods here, each named for what happened.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::about;
use crate::ack::{Ack, AckEventType, ErrorClass, classify, error_advice, error_name};
use crate::metadata::Snapshot;
use crate::store::{AckLevel, FragmentStore};

use super::{FatalError, HeaderGen, Stats};

/// What only the uploader can count; the rest of [`Stats`] comes from the store.
#[derive(Debug, Default)]
struct Counters {
    bytes_sent: u64,
    fragments_sent: u64,
    fragments_resent: u64,
    fragments_received: u64,
    fragments_persisted: u64,
    fragments_rejected: u64,
    rejected_reasons: BTreeMap<String, u64>,
    fragments_cut: u64,
    bytes_cut: u64,
    /// Bytes removed from fragments (a broken-off frame, late bytes after an idle tag).
    bytes_not_sent: u64,
    /// Fragments ended after an idle period that then got more frames (not sent), those
    /// frames' bytes, and the last such fragment (counted once).
    fragments_late: u64,
    bytes_late: u64,
    last_late: Option<u64>,
    bytes_persisted: u64,
    connections: u64,
    reconnects: u64,
    backpressure: Duration,
    errors: u64,
    last_error: Option<String>,
    /// With `fragment-acks=false`: timecodes of fragments released at RECEIVED whose
    /// PERSISTED has not come (the newest `RECEIVED_ONLY_KEPT`), and how many more.
    received_only: std::collections::VecDeque<u64>,
    received_only_more: u64,
}

/// Fragments released at RECEIVED whose PERSISTED is still looked for.
const RECEIVED_ONLY_KEPT: usize = 1024;

/// What an ack means for the connection it came on.
#[derive(Debug, Default)]
pub(crate) struct AckOutcome {
    /// The fragment (or the stream) was rejected: say so.
    pub warning: Option<String>,
    /// The session cannot go on: reconnect (retriable) or stop (fatal).
    pub end: Option<AckEnd>,
}

#[derive(Debug)]
pub(crate) enum AckEnd {
    Retry(String),
    Fatal(FatalError),
}

/// Freed memory is given back to the system once the store, after holding at least this
/// much, is down to a quarter of it.
const TRIM_AFTER_PEAK: u64 = 16 << 20;

/// A place in the store: fragments before `seq` whole, the first `chunks` chunks of `seq`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visible {
    pub seq: u64,
    pub chunks: usize,
}

impl Visible {
    /// How many chunks of fragment `seq` (holding `len`) may be sent.
    pub fn chunks_of(self, seq: u64, len: usize) -> usize {
        match seq.cmp(&self.seq) {
            std::cmp::Ordering::Less => len,
            std::cmp::Ordering::Equal => self.chunks.min(len),
            std::cmp::Ordering::Greater => 0,
        }
    }
}

/// A fragment a connection ended after an idle period, with the metadata it wrote before
/// the tag: the fragment's end writes the same ([`crate::uploader::Uploader::end_fragment_with`]).
pub(crate) struct IdleEnded {
    pub seq: u64,
    pub timecode: u64,
    pub metadata: Option<Snapshot>,
}

pub(crate) struct Inner {
    pub store: FragmentStore,
    pub headers: VecDeque<HeaderGen>,
    /// No more data will come (EOS).
    pub eos: bool,
    /// The streaming thread must not wait (flushing / shutting down).
    pub flushing: bool,
    /// The application is ending the stream (an EOS is on its way): upstream is not held
    /// for room any more, since its EOS cannot come while it is.
    pub ending: bool,
    /// The pipeline is paused: data is not missing, so the open fragment must not be ended
    /// as idle (an encoder's look-ahead still holds its last frames).
    pub paused: bool,
    /// A connection attempt failed and none has streamed since: the store may drop fragments.
    pub outage: bool,
    /// The last failed attempt did not reach the service (a transport error).
    last_unreached: bool,
    /// The streaming thread is held for room in the store: data is not missing, so the open
    /// fragment must not be ended as idle.
    pub held: bool,
    /// Hold upstream even during an outage instead of dropping fragments (a recording, which
    /// can wait).
    pub keep_everything: bool,
    /// A spool takes what memory has no room for: appends never wait.
    pub spooled: bool,
    /// A live stream was told it is falling behind (`max_latency`), and has not caught up.
    pub behind_told: bool,
    fatal: Option<FatalError>,
    /// Sequence number of the open or next fragment.
    pub next_seq: u64,
    /// Highest fragment sequence number that has gone out on any connection.
    pub max_seq_sent: Option<u64>,
    /// How far connections may read the store: what the streaming thread has shown them
    /// ([`Inner::publish`]); bytes after it are the start of an element still arriving.
    pub visible: Visible,
    /// Upstream is live; `false` for a file upload, which is held once a few fragments are
    /// unacknowledged (see `Uploader::wait_for_room`).
    pub live: bool,
    /// The metadata the open fragment carries if a connection ends it after an idle period.
    pub open_metadata: Option<Snapshot>,
    /// The open fragment a connection ended after an idle period.
    pub idle_ended: Option<IdleEnded>,
    /// A connection holds back breaking off a cut fragment until the fragments it sent
    /// before it are acknowledged: woken when an ack releases one.
    pub cut_waiting: Option<std::task::Waker>,
    /// The most bytes the store held since memory was last given back to the system.
    trim_peak: u64,
    /// Memory was given back at a quarter of a large peak: once more at a quarter of that.
    trim_again: bool,
    counters: Counters,
}

impl Inner {
    pub fn new(store: FragmentStore) -> Inner {
        Inner {
            store,
            headers: VecDeque::new(),
            eos: false,
            flushing: false,
            ending: false,
            paused: false,
            outage: false,
            last_unreached: false,
            held: false,
            keep_everything: false,
            spooled: false,
            behind_told: false,
            fatal: None,
            next_seq: 0,
            max_seq_sent: None,
            visible: Visible::default(),
            live: true,
            open_metadata: None,
            idle_ended: None,
            cut_waiting: None,
            trim_peak: 0,
            trim_again: false,
            counters: Counters::default(),
        }
    }

    /// Notes how much the store holds; after an ack: whether it shrank enough since its peak
    /// (a backlog replayed after an outage) that freed memory should go back to the system.
    /// That is once at a quarter of a peak of at least [`TRIM_AFTER_PEAK`], and once more at
    /// a quarter of that, as the backlog goes.
    pub fn note_store_size(&mut self) -> bool {
        let bytes = self.store.backlog().bytes;
        self.trim_peak = self.trim_peak.max(bytes);
        let big = self.trim_peak >= TRIM_AFTER_PEAK;
        if (big || self.trim_again) && bytes <= self.trim_peak / 4 {
            self.trim_again = big;
            self.trim_peak = bytes;
            self.store.shrink();
            return true;
        }
        false
    }

    /// Everything in the store so far may be sent.
    pub fn publish(&mut self) {
        self.visible = match self.store.pending().next_back() {
            Some(f) => Visible {
                seq: f.seq,
                chunks: f.chunks.len(),
            },
            None => Visible {
                seq: self.next_seq,
                chunks: 0,
            },
        };
    }

    /// The counters: the uploader's own, and the store's for what it holds and dropped.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let store = self.store.stats();
        Stats {
            bytes_sent: c.bytes_sent,
            fragments_produced: store.stored_fragments,
            fragments_sent: c.fragments_sent,
            fragments_resent: c.fragments_resent,
            fragments_received: c.fragments_received,
            fragments_persisted: c.fragments_persisted,
            fragments_dropped: store.dropped_fragments,
            fragments_dropped_unsent: store.dropped_unsent_fragments,
            fragments_rejected: c.fragments_rejected,
            fragments_cut: c.fragments_cut,
            bytes_cut: c.bytes_cut,
            fragments_late: c.fragments_late,
            bytes_late: c.bytes_late,
            bytes_dropped: store.dropped_bytes + c.bytes_not_sent,
            bytes_persisted: c.bytes_persisted,
            rejected_reasons: c.rejected_reasons.clone(),
            connections: c.connections,
            reconnects: c.reconnects,
            backpressure: c.backpressure,
            errors: c.errors,
            last_error: c.last_error.clone(),
            fragments_received_only: c.received_only.len() as u64 + c.received_only_more,
            unreachable: self.outage && self.last_unreached,
            failing: self.outage,
            backlog: self.store.backlog(),
        }
    }

    pub fn fatal(&self) -> Option<&FatalError> {
        self.fatal.as_ref()
    }

    /// The stream failed; false if it had already.
    pub fn on_fatal(&mut self, error: &FatalError) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        self.counters.last_error = Some(error.to_string());
        self.fatal = Some(error.clone());
        true
    }

    /// Fragments persisted so far.
    pub fn fragments_persisted(&self) -> u64 {
        self.counters.fragments_persisted
    }

    /// Whether a PutMedia connection has been answered since the element started: until then
    /// it is at start, and gives up on an endpoint it cannot reach.
    pub fn ever_connected(&self) -> bool {
        self.counters.connections > 0
    }

    /// The service cannot be reached (the last attempt failed before it answered): no
    /// connection is in the middle of the oldest fragments, and none of them can be
    /// acknowledged now.
    pub fn unreachable(&self) -> bool {
        self.outage && self.last_unreached
    }

    /// A PutMedia connection was answered: the service is reachable again.
    pub fn on_connected(&mut self) {
        self.outage = false;
        self.counters.connections += 1;
    }

    /// An attempt failed; the next one waits. From now on a full store drops its oldest
    /// fragments instead of holding upstream back.
    pub fn on_attempt_failed(&mut self, reason: &str, unreached: bool) {
        self.outage = true;
        self.last_unreached = unreached;
        self.counters.reconnects += 1;
        self.counters.last_error = Some(reason.to_owned());
    }

    /// Bytes went out on a connection.
    pub fn on_sent(&mut self, bytes: usize) {
        self.counters.bytes_sent += bytes as u64;
    }

    /// Fragments started going out on a connection: `resent` of them for the second time.
    pub fn on_fragments_started(&mut self, started: u64, resent: u64) {
        self.counters.fragments_sent += started - resent;
        self.counters.fragments_resent += resent;
    }

    /// A fragment that had begun to go out turned out to hold no whole frame (the input
    /// ended inside its first): it is no fragment, and not counted as one sent.
    pub fn on_frameless_started(&mut self) {
        self.counters.fragments_sent = self.counters.fragments_sent.saturating_sub(1);
    }

    /// Bytes removed from a fragment before they were sent.
    pub fn on_not_sent(&mut self, bytes: u64) {
        self.counters.bytes_not_sent += bytes;
    }

    /// `bytes` were appended when no fragment was open in the store: when that is the
    /// fragment a connection ended after an idle period (its PERSISTED ack released it),
    /// they are its late frames ([`Inner::on_late`]); returns its timecode if they are the
    /// first.
    pub fn on_orphan(&mut self, bytes: u64) -> Option<u64> {
        let (seq, timecode) = self.idle_ended.as_ref().map(|i| (i.seq, i.timecode))?;
        if Some(seq) != self.store.last_begun() {
            return None;
        }
        self.on_late(seq, bytes).then_some(timecode)
    }

    /// Frames (`bytes`) came for fragment `seq` after it was ended as idle: not sent, lost.
    /// Whether they are the first such frames of that fragment.
    pub fn on_late(&mut self, seq: u64, bytes: u64) -> bool {
        let c = &mut self.counters;
        c.bytes_not_sent += bytes;
        c.bytes_late += bytes;
        let first = c.last_late.replace(seq) != Some(seq);
        c.fragments_late += u64::from(first);
        first
    }

    /// A fragment was ended at the service's limits; `bytes` of it (so far) will not be sent.
    pub fn on_cut(&mut self, bytes: u64) {
        self.counters.fragments_cut += 1;
        self.counters.bytes_cut += bytes;
    }

    /// More bytes of a cut fragment that will not be sent.
    pub fn on_cut_bytes(&mut self, bytes: u64) {
        self.counters.bytes_cut += bytes;
    }

    /// The streaming thread was held this long for room in the store.
    pub fn on_held(&mut self, held: Duration) {
        self.counters.backpressure += held;
    }

    /// Applies an ack of stream `stream`: fragments are released, rejected fragments dropped.
    pub fn on_ack(&mut self, ack: &Ack, release_on: AckLevel, stream: &str) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        match (ack.event_type, ack.fragment_timecode) {
            (AckEventType::Received, Some(tc)) => {
                self.counters.fragments_received += 1;
                if release_on == AckLevel::Received
                    && self.store.ack(AckLevel::Received, tc).is_some()
                {
                    let c = &mut self.counters;
                    c.received_only.push_back(tc);
                    if c.received_only.len() > RECEIVED_ONLY_KEPT {
                        c.received_only.pop_front();
                        c.received_only_more += 1;
                    }
                }
            }
            (AckEventType::Persisted, Some(tc)) => {
                self.counters.fragments_persisted += 1;
                let c = &mut self.counters;
                if let Some(i) = c.received_only.iter().position(|&t| t == tc) {
                    c.received_only.remove(i);
                }
                if let Some(fragment) = self.store.ack(AckLevel::Persisted, tc) {
                    self.counters.bytes_persisted += fragment.size;
                } else {
                    // Dropped from the full store after it was sent: persisted, not lost.
                    self.store.persisted_after_drop(tc);
                }
            }
            (AckEventType::Error, tc) => {
                let id = ack.error_id.unwrap_or(0);
                let name = ack
                    .error_code
                    .clone()
                    .or_else(|| error_name(id).map(str::to_owned))
                    .unwrap_or_else(|| format!("error {id}"));
                self.counters.errors += 1;
                let message = about(
                    stream,
                    format_args!(
                        "Kinesis Video Streams rejected {} with {name} ({id}): {}",
                        tc.map_or_else(
                            || "the stream".to_owned(),
                            |t| format!("the fragment at timecode {t} ms")
                        ),
                        error_advice(id)
                    ),
                );
                self.counters.last_error = Some(message.clone());
                match classify(id) {
                    ErrorClass::Retriable => outcome.end = Some(AckEnd::Retry(message)),
                    ErrorClass::BadFragment => {
                        // Sending it again would fail again: drop it. With a timecode the
                        // session goes on; without one the stream is in doubt, so restart it.
                        let tc = tc.or_else(|| self.store.pending().next().map(|f| f.timecode));
                        if tc.and_then(|t| self.store.discard(t)).is_some() {
                            self.counters.fragments_rejected += 1;
                            *self.counters.rejected_reasons.entry(name).or_default() += 1;
                        }
                        if ack.fragment_timecode.is_none() {
                            outcome.end = Some(AckEnd::Retry(message.clone()));
                        }
                        outcome.warning = Some(message);
                    }
                    ErrorClass::Fatal => {
                        outcome.end = Some(AckEnd::Fatal(FatalError::Service {
                            message,
                            kind: Some(name),
                        }))
                    }
                }
            }
            _ => {}
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreLimits;
    use bytes::Bytes;

    fn inner() -> Inner {
        Inner::new(FragmentStore::new(
            StoreLimits {
                max_bytes: u64::MAX,
                max_duration_ns: u64::MAX,
            },
            AckLevel::Persisted,
        ))
    }

    #[test]
    fn only_what_was_published_is_visible() {
        let mut inner = inner();
        inner.store.begin(0, 0);
        inner.next_seq += 1;
        inner.store.append(Bytes::from_static(b"cluster"));
        inner.store.append(Bytes::from_static(b"block header"));
        assert_eq!(inner.visible.chunks_of(0, 2), 0, "nothing published yet");
        inner.publish();
        assert_eq!(inner.visible.chunks_of(0, 2), 2);
        inner.store.append(Bytes::from_static(b"frame"));
        assert_eq!(
            inner.visible.chunks_of(0, 3),
            2,
            "the frame is not shown yet"
        );
        inner.store.begin(1000, 1);
        inner.next_seq += 1;
        assert_eq!(inner.visible.chunks_of(1, 0), 0);
        inner.publish();
        assert_eq!(
            inner.visible.chunks_of(0, 3),
            3,
            "an older fragment is whole"
        );
        assert_eq!(inner.visible, Visible { seq: 1, chunks: 0 });
        // Everything released: the next fragment is not shown before it is published.
        inner.store.ack(AckLevel::Persisted, 0);
        inner.store.ack(AckLevel::Persisted, 1000);
        inner.publish();
        assert_eq!(inner.visible, Visible { seq: 2, chunks: 0 });
    }

    #[test]
    fn memory_is_given_back_once_a_large_backlog_is_mostly_released() {
        let mut inner = inner();
        for tc in 0..8u64 {
            inner.store.begin(tc, tc);
            inner.store.append(Bytes::from(vec![0u8; 4 << 20]));
            inner.store.finish(tc);
            assert!(!inner.note_store_size());
        }
        for tc in 0..5u64 {
            inner.store.ack(AckLevel::Persisted, tc);
            assert!(!inner.note_store_size(), "still {tc} of 8 released");
        }
        inner.store.ack(AckLevel::Persisted, 5);
        assert!(inner.note_store_size(), "down to a quarter of 32 MiB");
        inner.store.begin(8, 8);
        inner.store.append(Bytes::from(vec![0u8; 1 << 20]));
        assert!(!inner.note_store_size(), "9 MiB");
        inner.store.ack(AckLevel::Persisted, 6);
        assert!(!inner.note_store_size(), "5 MiB");
        inner.store.ack(AckLevel::Persisted, 7);
        assert!(inner.note_store_size(), "1 MiB: a quarter of 9");
        inner.store.ack(AckLevel::Persisted, 8);
        assert!(!inner.note_store_size(), "twice per peak");
        // A small store never trims.
        let mut small = self::inner();
        small.store.begin(0, 0);
        small.store.append(Bytes::from(vec![0u8; 1 << 20]));
        small.note_store_size();
        small.store.ack(AckLevel::Persisted, 0);
        assert!(!small.note_store_size());
    }
}
