//! Fragment store: fragments are kept, in order, from their first byte until the ack
//! that releases them (PERSISTED, or RECEIVED per [`AckLevel`]), so that they can be
//! replayed after a reconnect.
//!
//! The store is bounded by bytes and by duration. When a bound is exceeded, whole oldest
//! fragments are dropped (never part of one, never the open one) and counted. The open
//! fragment is never evicted, so the store may exceed `max_bytes` by at most the size of
//! the fragment being received (the element bounds fragments separately, e.g. KVS's
//! 50 MB). Operations on the hot path (`append`, an in-order `ack`) are O(1) amortised;
//! releasing a fragment drops its buffers at once.

use bytes::Bytes;
use std::collections::VecDeque;

/// Bounds of the store. Use `u64::MAX` for "unbounded".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Total bytes of the stored fragments.
    pub max_bytes: u64,
    /// Span from the start of the oldest fragment to the end of the newest (or the start
    /// of the open one), in nanoseconds.
    pub max_duration_ns: u64,
}

impl StoreLimits {
    /// Whether fragments of `bytes` spanning `duration_ns` fill the store.
    pub fn full(&self, bytes: u64, duration_ns: u64) -> bool {
        bytes > self.max_bytes || duration_ns >= self.max_duration_ns
    }
}

/// Which ack releases a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckLevel {
    /// RECEIVED: the service has the whole fragment (enough when the stream keeps no data).
    Received,
    /// PERSISTED: the fragment is durably stored.
    Persisted,
}

/// A stored fragment: one cluster's bytes, as received from the splitter.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Monotonic sequence number, unique for the life of the store.
    pub seq: u64,
    /// Raw cluster timecode: what acks echo as `FragmentTimecode`.
    pub timecode: u64,
    /// Start, in nanoseconds (any clock; used for duration accounting).
    pub start_ns: u64,
    /// The fragment's bytes, in order.
    pub chunks: Vec<Bytes>,
    /// Sum of the chunk lengths.
    pub size: u64,
    /// All its bytes have been appended (`finish` was called).
    pub complete: bool,
    /// End, in nanoseconds (equals `start_ns` until complete).
    pub end_ns: u64,
    /// Set by [`FragmentStore::truncate_open`]: chunks from this index on were shortened or
    /// removed, so a connection that had sent past it sent bytes that are no longer part of
    /// the fragment.
    pub cut_at_chunk: Option<usize>,
    /// The chunk holding the fragment's metadata (its Tags), appended when it ended.
    pub metadata_chunk: Option<usize>,
    /// Ended without a frame after a connection may have sent its first bytes
    /// ([`FragmentStore::void_open`]): it has no bytes, is never acknowledged and is not
    /// counted anywhere; it stays only so that such a connection sees it was cut short
    /// (`cut_at_chunk`), until a later fragment is released.
    pub void: bool,
}

/// Fragments dropped to stay within the limits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Number of whole fragments dropped.
    pub fragments: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What the store holds now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Unreleased fragments (the open one included).
    pub fragments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// From the start of the oldest to the end of the newest (or the start of the open
    /// one), in nanoseconds.
    pub duration_ns: u64,
}

/// Counters over the life of the store (not reset by [`FragmentStore::clear`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Fragments opened with `begin`.
    pub stored_fragments: u64,
    /// Bytes appended.
    pub stored_bytes: u64,
    /// Fragments evicted because the store was full, and those never stored
    /// ([`FragmentStore::drop_unstored`]).
    pub dropped_fragments: u64,
    /// Of `dropped_fragments`, those never stored (so never sent).
    pub dropped_unsent_fragments: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Fragments released by an ack.
    pub released_fragments: u64,
    /// Their bytes.
    pub released_bytes: u64,
    /// Fragments removed by `discard`.
    pub discarded_fragments: u64,
    /// Their bytes.
    pub discarded_bytes: u64,
    /// Bytes passed to `append` while no fragment was open (ignored).
    pub orphan_bytes: u64,
    /// Fragments that ended without a frame and were taken back (`remove_open`,
    /// `void_open`): not in `stored_fragments`.
    pub frameless_fragments: u64,
}

/// Bounded, ordered store of unacknowledged fragments.
/// The service acknowledges a fragment only once the next one begins (it cannot tell the
/// fragment has ended before): a store holding this many fragments always takes the next,
/// whatever `storage-size` says, and keeps them, or nothing would ever be released.
pub const ALWAYS_ROOM_AFTER: u64 = 1;

/// How many dropped fragments are remembered for a late PERSISTED ack.
const DROPPED_KEPT: usize = 1024;

#[derive(Debug)]
pub struct FragmentStore {
    limits: StoreLimits,
    release_on: AckLevel,
    /// Never drops a fragment (the spool, or a recording's back-pressure, bounds memory).
    keep_everything: bool,
    /// Drops nothing for now: the stream is stopping, and what still comes in (the buffer the
    /// streaming thread held when the stop released it) must not push out a fragment that
    /// may yet be acknowledged.
    stopping: bool,
    /// Whether a full store drops its oldest fragments (the uploader allows it during an
    /// outage, when no connection is in the middle of one); else it holds more than its
    /// limits until acks make room.
    may_drop: bool,
    /// Timecodes and sizes of the fragments dropped last, so that one the service persists
    /// after all (it had been sent) is counted persisted, not dropped.
    dropped_recently: VecDeque<(u64, u64)>,
    frags: VecDeque<Fragment>,
    /// Of `frags`, the void ones (see [`Fragment::void`]).
    voids: usize,
    /// The back fragment is open (receiving bytes).
    open: bool,
    bytes: u64,
    next_seq: u64,
    stats: StoreStats,
}

impl FragmentStore {
    /// An empty store; fragments are released by acks of level `release_on`.
    pub fn new(limits: StoreLimits, release_on: AckLevel) -> Self {
        FragmentStore {
            limits,
            release_on,
            keep_everything: false,
            stopping: false,
            may_drop: true,
            dropped_recently: VecDeque::new(),
            frags: VecDeque::new(),
            voids: 0,
            open: false,
            bytes: 0,
            next_seq: 0,
            stats: StoreStats::default(),
        }
    }

    /// The ack level that releases fragments.
    pub fn release_on(&self) -> AckLevel {
        self.release_on
    }

    /// Opens a fragment (closing the previous open one, if any, at `start_ns`), then
    /// evicts oldest whole fragments while over the duration or byte limit.
    pub fn begin(&mut self, timecode: u64, start_ns: u64) -> Evicted {
        if self.open {
            self.finish(start_ns);
        }
        self.frags.push_back(Fragment {
            seq: self.next_seq,
            timecode,
            start_ns,
            chunks: Vec::new(),
            size: 0,
            complete: false,
            end_ns: start_ns,
            cut_at_chunk: None,
            metadata_chunk: None,
            void: false,
        });
        self.next_seq += 1;
        self.open = true;
        self.stats.stored_fragments += 1;
        self.evict()
    }

    /// Appends bytes to the open fragment (ignored, and counted as orphan bytes, if none is
    /// open), then evicts oldest whole fragments while over the byte limit.
    pub fn append(&mut self, data: Bytes) -> Evicted {
        let len = data.len() as u64;
        let Some(f) = self.frags.back_mut().filter(|_| self.open) else {
            self.stats.orphan_bytes += len;
            return Evicted::default();
        };
        f.size += len;
        f.chunks.push(data);
        self.bytes += len;
        self.stats.stored_bytes += len;
        if self.bytes > self.limits.max_bytes {
            self.evict()
        } else {
            Evicted::default()
        }
    }

    /// Appends the open fragment's metadata (its Tags, after its cluster), marked as such.
    pub fn append_metadata(&mut self, tags: Bytes) -> Evicted {
        let at = self
            .frags
            .back()
            .filter(|_| self.open)
            .map(|f| f.chunks.len());
        let evicted = self.append(tags);
        if let Some(f) = self.frags.back_mut().filter(|_| self.open) {
            f.metadata_chunk = at;
        }
        evicted
    }

    /// Closes the open fragment (no-op if none).
    pub fn finish(&mut self, end_ns: u64) {
        if self.open
            && let Some(f) = self.frags.back_mut()
        {
            f.complete = true;
            f.end_ns = end_ns.max(f.start_ns);
            self.open = false;
        }
    }

    /// Shortens the open fragment to its first `keep` bytes (the rest was an incomplete or
    /// invalid element). Returns the bytes removed.
    pub fn truncate_open(&mut self, keep: u64) -> u64 {
        let Some(f) = self.frags.back_mut().filter(|_| self.open) else {
            return 0;
        };
        if f.size <= keep {
            return 0;
        }
        let mut total = 0u64;
        let mut cut = None;
        for (i, chunk) in f.chunks.iter_mut().enumerate() {
            let len = chunk.len() as u64;
            if total + len > keep {
                *chunk = chunk.slice(..(keep - total) as usize);
                cut = Some(i);
                break;
            }
            total += len;
        }
        let Some(i) = cut else { return 0 };
        let keep_chunks = if f.chunks[i].is_empty() { i } else { i + 1 };
        f.chunks.truncate(keep_chunks);
        let removed = f.size - keep;
        f.size = keep;
        f.cut_at_chunk = Some(i);
        self.bytes -= removed;
        removed
    }

    /// The open fragment ended without a frame before any of its bytes could be sent: it is
    /// removed, and not counted as stored. Returns its bytes.
    pub fn remove_open(&mut self) -> u64 {
        if !self.open {
            return 0;
        }
        let Some(f) = self.frags.pop_back() else {
            return 0;
        };
        self.open = false;
        self.bytes -= f.size;
        self.stats.stored_fragments -= 1;
        self.stats.frameless_fragments += 1;
        f.size
    }

    /// The open fragment ended without a frame after a connection may have sent its first
    /// bytes: it is emptied (a connection that sent some sees it was cut short, as after
    /// [`FragmentStore::truncate_open`]) and made void: never sent nor acknowledged, left
    /// out of the backlog and the counts, and forgotten once a later fragment is released.
    /// Returns the bytes removed.
    pub fn void_open(&mut self) -> u64 {
        if !self.open {
            return 0;
        }
        let Some(f) = self.frags.back_mut() else {
            return 0;
        };
        let removed = f.size;
        if !f.chunks.is_empty() {
            f.cut_at_chunk = Some(0);
        }
        f.chunks.clear();
        f.size = 0;
        f.metadata_chunk = None;
        f.void = true;
        f.complete = true;
        self.open = false;
        self.voids += 1;
        self.bytes -= removed;
        self.stats.stored_fragments -= 1;
        self.stats.frameless_fragments += 1;
        removed
    }

    /// An ack of `level` for `timecode`: when `level` is the release level, removes and
    /// returns the oldest unreleased fragment with that timecode (timecodes may repeat
    /// after an upstream restart). Other levels, and unknown timecodes, return `None`.
    /// Releasing the open fragment is allowed; its remaining bytes are then ignored.
    pub fn ack(&mut self, level: AckLevel, timecode: u64) -> Option<Fragment> {
        if level != self.release_on {
            return None;
        }
        let f = self.remove(timecode)?;
        self.stats.released_fragments += 1;
        self.stats.released_bytes += f.size;
        Some(f)
    }

    /// Drops the oldest unreleased fragment with `timecode` (e.g. after an ERROR ack of
    /// class `BadFragment`: it will never succeed) and returns it.
    pub fn discard(&mut self, timecode: u64) -> Option<Fragment> {
        let f = self.remove(timecode)?;
        self.stats.discarded_fragments += 1;
        self.stats.discarded_bytes += f.size;
        Some(f)
    }

    /// Unreleased fragments in order (complete ones, then the open one), for replay.
    pub fn pending(&self) -> impl DoubleEndedIterator<Item = &Fragment> {
        self.frags.iter()
    }

    /// The first unreleased fragment whose sequence number is `seq` or later (O(log n)).
    pub fn first_from(&self, seq: u64) -> Option<&Fragment> {
        let i = self.frags.partition_point(|f| f.seq < seq);
        self.frags.get(i)
    }

    /// Gives back the room a long backlog left in the fragment queue.
    pub fn shrink(&mut self) {
        self.frags.shrink_to(self.frags.len().max(16));
    }

    /// Sequence number of the fragment begun last, whether it is still open, closed or
    /// already released (an open fragment may be released by its ack before it ends).
    pub fn last_begun(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// The open fragment, if any.
    pub fn open_fragment(&self) -> Option<&Fragment> {
        self.frags.back().filter(|_| self.open)
    }

    /// What the store holds now (void fragments are not counted).
    pub fn backlog(&self) -> Backlog {
        Backlog {
            fragments: (self.frags.len() - self.voids) as u64,
            bytes: self.bytes,
            duration_ns: self.duration(),
        }
    }

    /// Counters over the life of the store.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Drops every fragment (the open one too) without counting them as dropped; the
    /// bytes of a fragment that was open are then ignored until the next `begin`.
    pub fn clear(&mut self) {
        self.frags.clear();
        self.voids = 0;
        self.open = false;
        self.bytes = 0;
    }

    fn duration(&self) -> u64 {
        let mut frags = self.frags.iter().filter(|f| !f.void);
        match (frags.next(), frags.next_back()) {
            (Some(first), None) => first.end_ns.saturating_sub(first.start_ns),
            (Some(first), Some(last)) => last.end_ns.saturating_sub(first.start_ns),
            _ => 0,
        }
    }

    fn remove(&mut self, timecode: u64) -> Option<Fragment> {
        let i = self
            .frags
            .iter()
            .position(|f| f.timecode == timecode && !f.void)?;
        if self.open && i + 1 == self.frags.len() {
            self.open = false;
        }
        let f = self.frags.remove(i)?;
        self.bytes -= f.size;
        if self.voids > 0 {
            // A connection got past the void fragments before this one (or was replaced).
            self.frags.retain(|v| !(v.void && v.seq < f.seq));
            self.voids = self.frags.iter().filter(|v| v.void).count();
        }
        Some(f)
    }

    /// Whether the store never drops a fragment, whatever its limits.
    pub fn set_keep_everything(&mut self, keep: bool) {
        self.keep_everything = keep;
    }

    /// While the stream stops, the store drops nothing (see `stopping`).
    pub fn set_stopping(&mut self, stopping: bool) {
        self.stopping = stopping;
    }

    /// Whether a full store may drop its oldest fragments now (see `may_drop`).
    pub fn set_may_drop(&mut self, may_drop: bool) {
        self.may_drop = may_drop;
    }

    /// A fragment of `bytes` that was produced but never stored (a live stream's newest,
    /// while the store was full): counted as produced and dropped.
    pub fn drop_unstored(&mut self, bytes: u64) {
        self.stats.stored_fragments += 1;
        self.stats.dropped_fragments += 1;
        self.stats.dropped_unsent_fragments += 1;
        self.stats.dropped_bytes += bytes;
    }

    /// From the start of the oldest fragment kept to `ns` (0 when none is kept).
    pub fn span_to(&self, ns: u64) -> u64 {
        self.frags
            .iter()
            .find(|f| !f.void)
            .map_or(0, |f| ns.saturating_sub(f.start_ns))
    }

    /// The service persisted the fragment at `timecode` after the store dropped it (it had
    /// been sent before): it is no longer counted as dropped. Whether it was.
    pub fn persisted_after_drop(&mut self, timecode: u64) -> bool {
        let Some(i) = self
            .dropped_recently
            .iter()
            .position(|&(t, _)| t == timecode)
        else {
            return false;
        };
        let (_, size) = self.dropped_recently.remove(i).expect("found");
        self.stats.dropped_fragments -= 1;
        self.stats.dropped_bytes -= size;
        true
    }

    /// Drops oldest fragments while over a limit: never the open one, nor the one before it
    /// (see [`ALWAYS_ROOM_AFTER`]).
    fn evict(&mut self) -> Evicted {
        let mut ev = Evicted::default();
        if self.keep_everything || self.stopping || !self.may_drop {
            return ev;
        }
        let keep = usize::from(self.open) + ALWAYS_ROOM_AFTER as usize;
        while self.frags.len() - self.voids > keep
            && (self.bytes > self.limits.max_bytes || self.duration() > self.limits.max_duration_ns)
        {
            // The oldest that is not void (a void one may be what a connection is on).
            let i = self.frags.iter().position(|f| !f.void).expect("non-empty");
            let f = self.frags.remove(i).expect("non-empty");
            self.bytes -= f.size;
            ev.fragments += 1;
            ev.bytes += f.size;
            if self.dropped_recently.len() >= DROPPED_KEPT {
                self.dropped_recently.pop_front();
            }
            self.dropped_recently.push_back((f.timecode, f.size));
        }
        self.stats.dropped_fragments += ev.fragments;
        self.stats.dropped_bytes += ev.bytes;
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn store(max_bytes: u64, max_ms: u64) -> FragmentStore {
        let max_duration_ns = max_ms.saturating_mul(MS);
        FragmentStore::new(
            StoreLimits {
                max_bytes,
                max_duration_ns,
            },
            AckLevel::Persisted,
        )
    }

    fn add(s: &mut FragmentStore, tc: u64, chunks: &[usize]) -> Evicted {
        let mut ev = s.begin(tc, tc * MS);
        for &n in chunks {
            let e = s.append(Bytes::from(vec![tc as u8; n]));
            ev.fragments += e.fragments;
            ev.bytes += e.bytes;
        }
        s.finish((tc + 1000) * MS);
        ev
    }

    #[test]
    fn first_from_skips_released_fragments() {
        let mut s = store(u64::MAX, u64::MAX);
        for tc in [0, 1000, 2000, 3000] {
            add(&mut s, tc, &[4]);
        }
        assert!(s.ack(AckLevel::Persisted, 1000).is_some());
        assert_eq!(s.first_from(0).map(|f| f.seq), Some(0));
        assert_eq!(
            s.first_from(1).map(|f| f.seq),
            Some(2),
            "seq 1 was released"
        );
        assert_eq!(s.first_from(3).map(|f| f.timecode), Some(3000));
        assert!(s.first_from(4).is_none());
    }

    #[test]
    fn keeps_until_the_release_ack() {
        let mut s = store(u64::MAX, u64::MAX);
        add(&mut s, 0, &[10, 20]);
        add(&mut s, 1000, &[5]);
        assert_eq!(
            s.backlog(),
            Backlog {
                fragments: 2,
                bytes: 35,
                duration_ns: 2000 * MS
            }
        );
        assert!(
            s.ack(AckLevel::Received, 0).is_none(),
            "RECEIVED does not release in Persisted mode"
        );
        assert!(s.ack(AckLevel::Persisted, 12345).is_none());
        let f = s.ack(AckLevel::Persisted, 0).unwrap();
        assert_eq!(
            (f.seq, f.size, f.chunks.len(), f.complete),
            (0, 30, 2, true)
        );
        assert_eq!(s.backlog().bytes, 5);
        assert_eq!(s.stats().released_fragments, 1);
        assert_eq!(s.stats().released_bytes, 30);
        let mut r = FragmentStore::new(
            StoreLimits {
                max_bytes: 100,
                max_duration_ns: u64::MAX,
            },
            AckLevel::Received,
        );
        add(&mut r, 7, &[1]);
        assert!(r.ack(AckLevel::Persisted, 7).is_none());
        assert!(r.ack(AckLevel::Received, 7).is_some());
        assert_eq!(r.backlog(), Backlog::default());
    }

    #[test]
    fn drops_nothing_unless_allowed_and_a_dropped_fragment_persisted_is_not_lost() {
        let mut s = store(u64::MAX, 1500);
        s.set_may_drop(false);
        // A jump in time stretches the store past its duration: nothing goes while a
        // connection may be in the middle of the oldest fragments.
        for tc in [0, 1000, 20_000] {
            assert_eq!(add(&mut s, tc, &[10]), Evicted::default());
        }
        assert_eq!(s.backlog().fragments, 3);
        s.set_may_drop(true);
        let ev = add(&mut s, 21_000, &[10]);
        assert_eq!(ev.fragments, 2);
        assert_eq!(s.stats().dropped_fragments, 2);
        // The first had been sent: the service persists it after all.
        assert!(s.ack(AckLevel::Persisted, 0).is_none());
        assert!(s.persisted_after_drop(0));
        assert!(!s.persisted_after_drop(0));
        assert_eq!(s.stats().dropped_fragments, 1);
        assert_eq!(s.stats().dropped_bytes, 10);
        // The span to a new fragment counts the time of those dropped between.
        assert_eq!(s.span_to(30_000 * MS), 10_000 * MS);
        // A live stream's fragment never stored counts as produced and dropped.
        s.drop_unstored(70);
        assert_eq!(s.stats().stored_fragments, 5);
        assert_eq!(s.stats().dropped_fragments, 2);
        assert_eq!(s.stats().dropped_bytes, 80);
        assert_eq!(s.stats().dropped_unsent_fragments, 1);
    }

    #[test]
    fn evicts_whole_oldest_fragments_by_bytes() {
        let mut s = store(100, u64::MAX);
        assert_eq!(add(&mut s, 0, &[30, 10]), Evicted::default());
        assert_eq!(add(&mut s, 1000, &[40]), Evicted::default());
        // The third fragment pushes the total to 110: the first (40 bytes) goes, whole.
        let ev = add(&mut s, 2000, &[15, 15]);
        assert_eq!(
            ev,
            Evicted {
                fragments: 1,
                bytes: 40
            }
        );
        let tcs: Vec<_> = s.pending().map(|f| f.timecode).collect();
        assert_eq!(tcs, [1000, 2000]);
        // An open fragment larger than the limit is kept, and so is the one before it (the
        // service acknowledges it only now that the next has begun); everything older goes.
        s.begin(3000, 3000 * MS);
        let ev = s.append(Bytes::from(vec![0; 150]));
        assert_eq!(
            ev,
            Evicted {
                fragments: 1,
                bytes: 40
            }
        );
        assert_eq!(
            s.pending().map(|f| f.timecode).collect::<Vec<_>>(),
            [2000, 3000]
        );
        assert_eq!(s.open_fragment().unwrap().size, 150);
        assert_eq!(s.stats().dropped_fragments, 2);
        assert_eq!(s.stats().dropped_bytes, 80);
        // A store that keeps everything (a spool, a recording) drops nothing.
        s.set_keep_everything(true);
        assert_eq!(add(&mut s, 4000, &[500]), Evicted::default());
        assert_eq!(s.backlog().fragments, 3);
    }

    #[test]
    fn a_stopping_store_drops_nothing_then_evicts_again() {
        let mut s = store(100, u64::MAX);
        add(&mut s, 0, &[60]);
        s.set_stopping(true);
        assert_eq!(add(&mut s, 1000, &[60]), Evicted::default());
        assert_eq!(add(&mut s, 2000, &[60]), Evicted::default());
        assert_eq!(s.backlog().fragments, 3);
        assert_eq!(s.stats().dropped_fragments, 0);
        s.set_stopping(false);
        assert_eq!(add(&mut s, 3000, &[10]).fragments, 2);
    }

    #[test]
    fn evicts_by_duration() {
        let mut s = store(u64::MAX, 2500);
        add(&mut s, 0, &[1]);
        add(&mut s, 1000, &[1]);
        assert_eq!(s.backlog().duration_ns, 2000 * MS);
        // Opening a fragment at 3000 ms makes the span 0..3000: the first one goes.
        let ev = s.begin(3000, 3000 * MS);
        assert_eq!(ev.fragments, 1);
        assert_eq!(s.pending().next().unwrap().timecode, 1000);
        assert_eq!(s.backlog().duration_ns, 2000 * MS);
    }

    #[test]
    fn repeated_timecodes_release_the_oldest() {
        let mut s = store(u64::MAX, u64::MAX);
        add(&mut s, 0, &[1]);
        add(&mut s, 1000, &[1]);
        add(&mut s, 0, &[2]); // upstream restarted
        assert_eq!(s.ack(AckLevel::Persisted, 0).unwrap().seq, 0);
        assert_eq!(s.ack(AckLevel::Persisted, 0).unwrap().seq, 2);
        assert_eq!(s.pending().map(|f| f.seq).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn discard_and_open_fragment() {
        let mut s = store(u64::MAX, u64::MAX);
        add(&mut s, 0, &[4]);
        s.begin(1000, 1000 * MS);
        s.append(Bytes::from_static(b"abc"));
        assert_eq!(
            s.pending().map(|f| f.complete).collect::<Vec<_>>(),
            [true, false]
        );
        // An ERROR ack for the fragment in flight: it goes, the rest of its bytes are ignored.
        let f = s.discard(1000).unwrap();
        assert_eq!((f.size, f.complete), (3, false));
        assert!(s.append(Bytes::from_static(b"def")) == Evicted::default());
        assert_eq!(s.stats().orphan_bytes, 3);
        assert_eq!(s.backlog().bytes, 4);
        assert_eq!(s.stats().discarded_fragments, 1);
        // begin() closes a still-open fragment.
        s.begin(2000, 2000 * MS);
        s.begin(3000, 3000 * MS);
        let v: Vec<_> = s.pending().map(|f| (f.timecode, f.complete)).collect();
        assert_eq!(v, [(0, true), (2000, true), (3000, false)]);
        s.clear();
        assert_eq!(s.backlog(), Backlog::default());
        assert_eq!(s.begin(4000, 0), Evicted::default());
        assert_eq!(s.pending().next().unwrap().seq, 4);
    }

    #[test]
    fn released_bytes_are_freed() {
        let mut s = store(u64::MAX, u64::MAX);
        let data = Bytes::from(vec![0u8; 1000]);
        s.begin(0, 0);
        s.append(data.clone());
        s.finish(1);
        assert!(!data.is_unique());
        drop(s.ack(AckLevel::Persisted, 0));
        assert!(
            data.is_unique(),
            "the store keeps no reference after release"
        );
    }

    #[test]
    fn truncating_the_open_fragment_keeps_whole_chunks_and_slices_the_last() {
        let mut s = store(u64::MAX, u64::MAX);
        s.begin(0, 0);
        for n in [10, 20, 30] {
            s.append(Bytes::from(vec![1u8; n]));
        }
        assert_eq!(s.truncate_open(100), 0, "nothing past 60 bytes");
        assert_eq!(s.truncate_open(35), 25);
        let f = s.open_fragment().unwrap();
        assert_eq!(
            f.chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            [10, 20, 5]
        );
        assert_eq!((f.size, f.cut_at_chunk), (35, Some(2)));
        assert_eq!(s.backlog().bytes, 35);
        // At a chunk boundary the chunk goes entirely.
        assert_eq!(s.truncate_open(30), 5);
        let f = s.open_fragment().unwrap();
        assert_eq!(f.chunks.len(), 2);
        assert_eq!(f.cut_at_chunk, Some(2));
        s.finish(0);
        assert_eq!(s.truncate_open(1), 0, "only the open fragment is cut");
    }

    #[test]
    fn the_fragment_begun_last_is_known_after_its_ack_released_it_while_open() {
        let mut s = store(u64::MAX, u64::MAX);
        assert_eq!(s.last_begun(), None);
        s.begin(0, 0);
        s.begin(1000, 1);
        s.append(Bytes::from_static(b"x"));
        assert!(s.ack(AckLevel::Persisted, 1000).is_some());
        assert!(s.open_fragment().is_none());
        assert_eq!(s.last_begun(), Some(1));
    }
}
