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

use crate::matroska::{cluster_head_with_timecode, cluster_timecode};

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
}

/// A Cluster put on the timeline by [`Timeline::place_cluster`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// When the Cluster moves: the bytes that replace its first `.1` bytes.
    pub head: Option<(Vec<u8>, usize)>,
    /// Set when this Cluster starts a new shift: by how much its timecodes move, ns.
    pub moved_ns: Option<i128>,
}

impl Timeline {
    /// A timeline whose origin the first placed Cluster sets.
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// The producer time (ms since the epoch) of the read's timestamp 0, once a Cluster
    /// with a producer timestamp set it: a frame was produced at this plus its timestamp.
    pub fn origin_ms(&self) -> Option<u64> {
        self.origin_ns
            .map(|ns| u64::try_from(ns.div_euclid(1_000_000)).unwrap_or(0))
    }

    /// The timecode (in `scale` ns units) for a Cluster at `timecode` produced at
    /// `producer_ms` (ms since the epoch; without it, the current shift holds), and the new
    /// shift when this Cluster starts one.
    pub fn place(
        &mut self,
        timecode: u64,
        scale: u64,
        producer_ms: Option<u64>,
    ) -> (u64, Option<i128>) {
        let scale = i128::from(scale.max(1));
        let timecode_ns = i128::from(timecode) * scale;
        let mut moved_ns = None;
        if let Some(ms) = producer_ms {
            let producer_ns = i128::from(ms) * 1_000_000;
            let origin = *self.origin_ns.get_or_insert(producer_ns - timecode_ns);
            let wanted = producer_ns - origin;
            if (wanted - (timecode_ns + self.shift_ns)).abs() > TOLERANCE_NS {
                self.shift_ns = wanted - timecode_ns;
                moved_ns = Some(self.shift_ns);
            }
        }
        if self.shift_ns == 0 {
            return (timecode, moved_ns);
        }
        let units = (timecode_ns + self.shift_ns + scale / 2)
            .div_euclid(scale)
            .max(0);
        (u64::try_from(units).unwrap_or(u64::MAX >> 8), moved_ns)
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
        let (value, moved_ns) = self.place(found.value, scale, producer_ms);
        let head = (value != found.value).then(|| {
            (
                cluster_head_with_timecode(cluster, &found, value),
                found.head_len,
            )
        });
        Placed { head, moved_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn one_recording_is_left_as_it_was() {
        let mut t = Timeline::new();
        assert_eq!(t.origin_ms(), None);
        // A read that starts an hour into a session keeps its timecodes.
        assert_eq!(
            t.place(3_600_000, MS, Some(1_700_003_600_000)),
            (3_600_000, None)
        );
        assert_eq!(
            t.place(3_602_000, MS, Some(1_700_003_602_000)),
            (3_602_000, None)
        );
        // Producer timestamps are whole ms: a finer scale stays within the tolerance.
        let mut t = Timeline::new();
        assert_eq!(t.place(0, 100_000, Some(1_700_000_000_000)), (0, None));
        assert_eq!(
            t.place(20_004, 100_000, Some(1_700_000_002_000)),
            (20_004, None)
        );
    }

    #[test]
    fn a_later_recording_goes_on_from_the_real_gap() {
        let mut t = Timeline::new();
        t.place(0, MS, Some(1_700_000_000_000));
        t.place(2_000, MS, Some(1_700_000_002_000));
        // The camera restarted 10 s after the first recording began: timecodes from 0 again.
        assert_eq!(
            t.place(0, MS, Some(1_700_000_010_000)),
            (10_000, Some(10_000_000_000))
        );
        assert_eq!(t.place(2_000, MS, Some(1_700_000_012_000)), (12_000, None));
        assert_eq!(t.origin_ms(), Some(1_700_000_000_000));
        // Without a producer timestamp the current shift holds.
        assert_eq!(t.place(3_000, MS, None), (13_000, None));
        // Another restart, with another TimecodeScale (100 µs units).
        assert_eq!(
            t.place(0, 100_000, Some(1_700_000_020_500)),
            (205_000, Some(20_500_000_000))
        );
    }

    #[test]
    fn a_producer_timestamp_before_the_first_never_gives_a_negative_timecode() {
        let mut t = Timeline::new();
        t.place(0, MS, Some(1_700_000_010_000));
        assert_eq!(
            t.place(0, MS, Some(1_700_000_000_000)),
            (0, Some(-10_000_000_000))
        );
    }

    #[test]
    fn a_moved_cluster_gets_a_new_head() {
        use crate::build::simple_cluster;
        let mut t = Timeline::new();
        let first = simple_cluster(0, 3, 33, 10);
        assert_eq!(
            t.place_cluster(&first, MS, Some(1_700_000_000_000)),
            Placed::default()
        );
        let later = simple_cluster(0, 3, 33, 10);
        let placed = t.place_cluster(&later, MS, Some(1_700_000_005_000));
        assert_eq!(placed.moved_ns, Some(5_000_000_000));
        let (head, replaced) = placed.head.expect("a new head");
        let moved = [&head[..], &later[replaced..]].concat();
        assert_eq!(cluster_timecode(&moved).unwrap().value, 5_000);
        assert_eq!(
            t.place_cluster(b"not a cluster", MS, Some(1)),
            Placed::default()
        );
    }
}
