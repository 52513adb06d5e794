//! One timeline across a stream's recordings.
//!
//! A stream holds what its producers sent, session after session, and each PutMedia session's
//! Cluster timecodes start again from its own start (`x-amzn-fragment-timecode-type:
//! RELATIVE`): a camera that restarted gives a stream whose timecodes go back to 0 at each
//! restart, which a demuxer passes on as timestamps that jump back. The service's producer
//! timestamp says when each fragment was produced, so a reader can put every Cluster where
//! it belongs: [`Timeline`] keeps the first Cluster's timecode, and moves a later one's when
//! it is not where its producer timestamp says it is (by more than [`TOLERANCE_NS`]). Within
//! one session nothing moves; after a restart the timecodes go on from the real gap.
//!
//! A recording dated before what was already passed on (uploaded after the live data it
//! precedes: GetMedia returns fragments in the order they arrived) cannot go where its
//! producer timestamp puts it without timestamps that jump back. It starts a new timeline
//! instead: its first Cluster goes one frame after the last frame passed on, and the origin
//! (the producer time of timestamp 0) moves so that origin + timestamp is still when each of
//! its frames was produced. [`Placed::new_origin`] says when that happens.

use crate::matroska::{cluster_block_timecodes, cluster_head_with_timecode, cluster_timecode};

/// How far a Cluster's timecode may be from its producer timestamp's place before it is
/// moved: producer timestamps are whole milliseconds, timecodes are in TimecodeScale units.
pub const TOLERANCE_NS: i128 = 2_000_000;

/// Where a read's Clusters go, from the first one on.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Producer time of the read's timecode 0, ns since the epoch.
    origin_ns: Option<i128>,
    /// What is added to the timecodes of the current session, ns.
    shift_ns: i128,
    /// The last frame passed on (ns on the timeline) and the interval between frames there.
    passed: Option<(i128, i128)>,
}

/// Where a Cluster goes, as [`Timeline::place`] says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The Cluster's timecode on the timeline, in its TimecodeScale units.
    pub timecode: u64,
    /// Set when this Cluster starts a new shift: by how much its timecodes move, ns.
    pub moved_ns: Option<i128>,
    /// Set when this Cluster starts a new timeline: the new origin, ms since the epoch.
    pub new_origin: Option<u64>,
}

/// A Cluster put on the timeline by [`Timeline::place_cluster`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// When the Cluster moves: the bytes that replace its first `.1` bytes.
    pub head: Option<(Vec<u8>, usize)>,
    /// Set when this Cluster starts a new shift: by how much its timecodes move, ns.
    pub moved_ns: Option<i128>,
    /// Set when this Cluster starts a new timeline (it is dated before what was passed on):
    /// the producer time (ms since the epoch) of timestamp 0 from this Cluster on, and the
    /// Cluster's timestamp (ns) from which it holds.
    pub new_origin: Option<(u64, u64)>,
    /// The Cluster's timestamp on the timeline (ns), when it has a Timecode.
    pub start_ns: Option<u64>,
    /// ... and its last frame's (the latest of its blocks').
    pub end_ns: Option<u64>,
}

impl Timeline {
    /// A timeline whose origin the first placed Cluster sets.
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// The producer time (ms since the epoch) of timestamp 0 of the current timeline, once
    /// a Cluster with a producer timestamp set it: a frame on it was produced at this plus its
    /// timestamp.
    pub fn origin_ms(&self) -> Option<u64> {
        self.origin_ns
            .map(|ns| u64::try_from(ns.div_euclid(1_000_000)).unwrap_or(0))
    }

    /// Where a Cluster at `timecode` (in `scale` ns units) produced at `producer_ms` (ms
    /// since the epoch; without it, the current shift holds) goes.
    pub fn place(&mut self, timecode: u64, scale: u64, producer_ms: Option<u64>) -> Placement {
        let scale = i128::from(scale.max(1));
        let timecode_ns = i128::from(timecode) * scale;
        let mut placement = Placement::default();
        if let Some(ms) = producer_ms {
            let producer_ns = i128::from(ms) * 1_000_000;
            let origin = *self.origin_ns.get_or_insert(producer_ns - timecode_ns);
            let wanted = producer_ns - origin;
            if (wanted - (timecode_ns + self.shift_ns)).abs() > TOLERANCE_NS {
                match self.passed {
                    Some((last, step)) if wanted <= last => {
                        // Dated before what was passed on: a new timeline, one frame on.
                        let start = (last + step.max(1) + scale - 1).div_euclid(scale) * scale;
                        let new_origin = producer_ns - start;
                        self.origin_ns = Some(new_origin);
                        self.shift_ns = start - timecode_ns;
                        placement.new_origin =
                            Some(u64::try_from(new_origin.div_euclid(1_000_000)).unwrap_or(0));
                    }
                    _ => self.shift_ns = wanted - timecode_ns,
                }
                placement.moved_ns = Some(self.shift_ns);
            }
        }
        placement.timecode = if self.shift_ns == 0 {
            timecode
        } else {
            let units = (timecode_ns + self.shift_ns + scale / 2)
                .div_euclid(scale)
                .max(0);
            u64::try_from(units).unwrap_or(u64::MAX >> 8)
        };
        placement
    }

    /// Records that frames up to `last_ns` (on the timeline), `step_ns` apart, were passed
    /// on: a later recording dated at or before `last_ns` starts a new timeline after it.
    pub fn passed(&mut self, last_ns: i128, step_ns: i128) {
        let later = self.passed.is_none_or(|(last, _)| last_ns >= last);
        if later {
            self.passed = Some((last_ns, step_ns));
        }
    }

    /// [`place`](Self::place) for `cluster`, the bytes of a Cluster from its ID on. A
    /// Cluster whose timecode cannot be read or rewritten (see
    /// [`cluster_timecode`]) stays as it is.
    pub fn place_cluster(
        &mut self,
        cluster: &[u8],
        scale: u64,
        producer_ms: Option<u64>,
    ) -> Placed {
        let Some(found) = cluster_timecode(cluster) else {
            return Placed::default();
        };
        let placement = self.place(found.value, scale, producer_ms);
        let value = placement.timecode;
        // The Cluster's frames, for where a recording dated before them would go.
        let mut blocks = cluster_block_timecodes(cluster);
        blocks.sort_unstable();
        let unit = i128::from(scale.max(1));
        let start_ns = i128::from(value) * unit;
        let end_ns = start_ns + blocks.last().map_or(0, |&last| i128::from(last) * unit);
        if !blocks.is_empty() {
            let step = blocks
                .windows(2)
                .map(|w| i128::from(w[1]) - i128::from(w[0]))
                .filter(|d| *d > 0)
                .min()
                .unwrap_or(1);
            self.passed(end_ns, step * unit);
        }
        let new_origin = placement
            .new_origin
            .map(|ms| (ms, u64::try_from(start_ns).unwrap_or(0)));
        let head = (value != found.value).then(|| {
            (
                cluster_head_with_timecode(cluster, &found, value),
                found.head_len,
            )
        });
        Placed {
            head,
            moved_ns: placement.moved_ns,
            new_origin,
            start_ns: u64::try_from(start_ns).ok(),
            end_ns: u64::try_from(end_ns).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// [`Timeline::place`] as (timecode, moved_ns).
    fn place(
        t: &mut Timeline,
        timecode: u64,
        scale: u64,
        producer_ms: Option<u64>,
    ) -> (u64, Option<i128>) {
        let p = t.place(timecode, scale, producer_ms);
        (p.timecode, p.moved_ns)
    }

    #[test]
    fn one_recording_is_left_as_it_was() {
        let mut t = Timeline::new();
        assert_eq!(t.origin_ms(), None);
        // A read that starts an hour into a session keeps its timecodes.
        assert_eq!(
            place(&mut t, 3_600_000, MS, Some(1_700_003_600_000)),
            (3_600_000, None)
        );
        assert_eq!(
            place(&mut t, 3_602_000, MS, Some(1_700_003_602_000)),
            (3_602_000, None)
        );
        // Producer timestamps are whole ms: a finer scale stays within the tolerance.
        let mut t = Timeline::new();
        assert_eq!(
            place(&mut t, 0, 100_000, Some(1_700_000_000_000)),
            (0, None)
        );
        assert_eq!(
            place(&mut t, 20_004, 100_000, Some(1_700_000_002_000)),
            (20_004, None)
        );
    }

    #[test]
    fn a_later_recording_goes_on_from_the_real_gap() {
        let mut t = Timeline::new();
        place(&mut t, 0, MS, Some(1_700_000_000_000));
        place(&mut t, 2_000, MS, Some(1_700_000_002_000));
        // The camera restarted 10 s after the first recording began: timecodes from 0 again.
        assert_eq!(
            place(&mut t, 0, MS, Some(1_700_000_010_000)),
            (10_000, Some(10_000_000_000))
        );
        assert_eq!(
            place(&mut t, 2_000, MS, Some(1_700_000_012_000)),
            (12_000, None)
        );
        assert_eq!(t.origin_ms(), Some(1_700_000_000_000));
        // Without a producer timestamp the current shift holds.
        assert_eq!(place(&mut t, 3_000, MS, None), (13_000, None));
        // Another restart, with another TimecodeScale (100 µs units).
        assert_eq!(
            place(&mut t, 0, 100_000, Some(1_700_000_020_500)),
            (205_000, Some(20_500_000_000))
        );
    }

    #[test]
    fn a_recording_dated_before_what_was_passed_starts_a_new_timeline() {
        let mut t = Timeline::new();
        // Live data from 1_700_000_010_000, passed on up to its frame at 1 966 ms.
        place(&mut t, 0, MS, Some(1_700_000_010_000));
        t.passed(1_966 * 1_000_000, 33_000_000);
        // Then a recording dated 10 s before it: one frame on, with a new origin.
        let p = t.place(0, MS, Some(1_700_000_000_000));
        assert_eq!(p.timecode, 1_999);
        assert_eq!(p.new_origin, Some(1_700_000_000_000 - 1_999));
        assert_eq!(t.origin_ms(), p.new_origin);
        // Its next fragment, 2 s on, is on that timeline: nothing moves.
        assert_eq!(
            t.place(2_000, MS, Some(1_700_000_002_000)),
            Placement {
                timecode: 3_999,
                moved_ns: None,
                new_origin: None
            }
        );
        t.passed(5_965 * 1_000_000, 33_000_000);
        // A recording dated between the two (after the first's start, before what was passed
        // on) starts another; one dated after it goes where its producer time puts it.
        let p = t.place(0, MS, Some(1_700_000_003_000));
        assert_eq!(
            (p.timecode, p.new_origin),
            (5_998, Some(1_700_000_003_000 - 5_998))
        );
        t.passed(6_000 * 1_000_000, 33_000_000);
        let p = t.place(0, MS, Some(1_700_000_003_000 - 5_998 + 60_000));
        assert_eq!((p.timecode, p.new_origin), (60_000, None));
    }

    #[test]
    fn a_cluster_s_frames_are_what_was_passed() {
        use crate::build::simple_cluster;
        let mut t = Timeline::new();
        // 3 frames 33 ms apart from timecode 0: the last at 66 ms.
        t.place_cluster(&simple_cluster(0, 3, 33, 10), MS, Some(1_700_000_010_000));
        let placed = t.place_cluster(&simple_cluster(0, 3, 33, 10), MS, Some(1_700_000_000_000));
        assert_eq!(
            placed.new_origin,
            Some((1_700_000_000_000 - 99, 99_000_000))
        );
    }

    #[test]
    fn a_moved_cluster_gets_a_new_head() {
        use crate::build::simple_cluster;
        let mut t = Timeline::new();
        let first = simple_cluster(0, 3, 33, 10);
        assert_eq!(
            t.place_cluster(&first, MS, Some(1_700_000_000_000)),
            Placed {
                start_ns: Some(0),
                end_ns: Some(66_000_000),
                ..Placed::default()
            }
        );
        let later = simple_cluster(0, 3, 33, 10);
        let placed = t.place_cluster(&later, MS, Some(1_700_000_005_000));
        assert_eq!(placed.moved_ns, Some(5_000_000_000));
        assert_eq!(placed.start_ns, Some(5_000_000_000));
        assert_eq!(placed.end_ns, Some(5_066_000_000));
        let (head, replaced) = placed.head.expect("a new head");
        let moved = [&head[..], &later[replaced..]].concat();
        assert_eq!(cluster_timecode(&moved).unwrap().value, 5_000);
        assert_eq!(
            t.place_cluster(b"not a cluster", MS, Some(1)),
            Placed::default()
        );
    }
}
