//! One timeline for a read that spans recordings.
//!
//! A stream holds what its producers sent, session after session, and each session's Cluster
//! timecodes start again from its own start (`x-amzn-fragment-timecode-type: RELATIVE`): a
//! camera that restarted gives a stream whose timecodes go back to 0 at each restart, which a
//! demuxer passes on as timestamps that jump back. The service's tags say when each fragment
//! was produced (its producer timestamp, absolute), so a reader can put every fragment where
//! it belongs: [`Timeline::place`] keeps the first fragment's timecode, and moves a later
//! fragment's when it is not where its producer timestamp says it is (by more than
//! [`TOLERANCE_NS`]). Within one session nothing moves, so a read of one recording is what it
//! always was; after a restart the timestamps go on from the real gap. Free of GStreamer.

use bytes::Bytes;
use kvs_format::matroska::{cluster_head_with_timecode, cluster_timecode};

use super::fragments::Fragment;

/// How far a fragment's timecode may be from its producer timestamp's place before it is
/// moved: producer timestamps are whole milliseconds, timecodes are in TimecodeScale units.
pub const TOLERANCE_NS: i128 = 2_000_000;

/// Where the read's fragments go, from the first one on.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Producer time of the read's timecode 0, ns since the epoch.
    origin_ns: Option<i128>,
    /// What is added to the timecodes of the current session, ns.
    shift_ns: i128,
}

/// A fragment put on the timeline.
#[derive(Debug)]
pub struct Placed {
    /// The fragment's bytes, in pieces (a moved fragment's Cluster head is a new piece; the
    /// rest are slices of the fragment).
    pub pieces: Vec<Bytes>,
    /// Set when this fragment starts a new shift: by how much its timecodes moved, ns.
    pub moved_ns: Option<i128>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// `fragment`'s bytes with its Cluster's timecode where its producer timestamp puts it.
    /// A fragment without a Cluster, a readable timecode or a producer timestamp takes the
    /// current shift.
    pub fn place(&mut self, fragment: &Fragment) -> Placed {
        let whole = |moved_ns| Placed {
            pieces: vec![fragment.bytes.clone()],
            moved_ns,
        };
        let Some(at) = fragment.cluster_at else {
            return whole(None);
        };
        let Some(found) = cluster_timecode(&fragment.bytes[at..]) else {
            return whole(None);
        };
        let scale = i128::from(fragment.timecode_scale);
        let timecode_ns = i128::from(found.value) * scale;
        let mut moved_ns = None;
        if let Some(ms) = fragment.tags.producer_ms {
            let producer_ns = i128::from(ms) * 1_000_000;
            let origin = *self.origin_ns.get_or_insert(producer_ns - timecode_ns);
            let wanted = producer_ns - origin;
            if (wanted - (timecode_ns + self.shift_ns)).abs() > TOLERANCE_NS {
                self.shift_ns = wanted - timecode_ns;
                moved_ns = Some(self.shift_ns);
            }
        }
        if self.shift_ns == 0 {
            return whole(moved_ns);
        }
        let units = (timecode_ns + self.shift_ns + scale / 2)
            .div_euclid(scale)
            .max(0);
        let value = u64::try_from(units).unwrap_or(u64::MAX >> 8);
        if value == found.value {
            return whole(moved_ns);
        }
        let head = cluster_head_with_timecode(&fragment.bytes[at..], &found, value);
        Placed {
            pieces: vec![
                fragment.bytes.slice(..at),
                Bytes::from(head),
                fragment.bytes.slice(at + found.head_len..),
            ],
            moved_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::getmedia::fragments::{FragmentTags, Splitter};
    use kvs_format::build;
    use kvs_format::kvs::get_media_tags as tag;
    use kvs_format::matroska::tags_with_targets;

    /// A GetMedia chunk: header (TimecodeScale `scale`), the fragment's tags, a Cluster at
    /// `timecode` of three frames 33 ms apart, the continuation token.
    fn chunk(scale: u64, timecode: u64, producer_ms: u64) -> Fragment {
        let mut out = build::ebml_header("matroska");
        out.extend(build::segment_unknown_size());
        out.extend(build::info(scale));
        out.extend(build::tracks(&[build::Track::video(1, build::AVC)]));
        let producer = format!("{}.{:03}", producer_ms / 1000, producer_ms % 1000);
        out.extend(tags_with_targets(&[
            (tag::FRAGMENT_NUMBER, "1"),
            (tag::PRODUCER_TIMESTAMP, &producer),
        ]));
        out.extend(build::simple_cluster(timecode, 3, 33, 10));
        out.extend(tags_with_targets(&[(tag::CONTINUATION_TOKEN, "1")]));
        let mut s = Splitter::new();
        s.push(&out);
        s.next_fragment().unwrap().expect("a whole fragment")
    }

    fn timecode_of(placed: &Placed) -> u64 {
        let bytes: Vec<u8> = placed.pieces.concat();
        let mut s = Splitter::new();
        s.push(&bytes);
        let f = s.next_fragment().unwrap().expect("still a whole fragment");
        assert_eq!(f.bytes.len(), bytes.len(), "nothing after it");
        cluster_timecode(&f.bytes[f.cluster_at.unwrap()..])
            .unwrap()
            .value
    }

    #[test]
    fn one_recording_is_left_as_it_was() {
        let mut t = Timeline::new();
        // A read that starts an hour into a session keeps its timecodes.
        for (tc, producer) in [
            (3_600_000, 1_700_003_600_000),
            (3_602_000, 1_700_003_602_000),
        ] {
            let f = chunk(1_000_000, tc, producer);
            let placed = t.place(&f);
            assert_eq!(placed.pieces, vec![f.bytes.clone()]);
            assert_eq!(placed.moved_ns, None);
        }
    }

    #[test]
    fn a_later_recording_goes_on_from_the_real_gap() {
        let mut t = Timeline::new();
        t.place(&chunk(1_000_000, 0, 1_700_000_000_000));
        t.place(&chunk(1_000_000, 2_000, 1_700_000_002_000));
        // The camera restarted 10 s after the first recording began: timecodes from 0 again.
        let placed = t.place(&chunk(1_000_000, 0, 1_700_000_010_000));
        assert_eq!(placed.moved_ns, Some(10_000_000_000));
        assert_eq!(timecode_of(&placed), 10_000);
        let placed = t.place(&chunk(1_000_000, 2_000, 1_700_000_012_000));
        assert_eq!(placed.moved_ns, None, "the same session keeps its shift");
        assert_eq!(timecode_of(&placed), 12_000);
        // Another restart, with another TimecodeScale (100 µs units).
        let placed = t.place(&chunk(100_000, 0, 1_700_000_020_500));
        assert_eq!(placed.moved_ns, Some(20_500_000_000));
        assert_eq!(timecode_of(&placed), 205_000);
    }

    #[test]
    fn a_producer_timestamp_before_the_first_never_gives_a_negative_timecode() {
        let mut t = Timeline::new();
        t.place(&chunk(1_000_000, 0, 1_700_000_010_000));
        let placed = t.place(&chunk(1_000_000, 0, 1_700_000_000_000));
        assert_eq!(placed.moved_ns, Some(-10_000_000_000));
        assert_eq!(timecode_of(&placed), 0);
    }

    #[test]
    fn without_a_producer_timestamp_the_current_shift_holds() {
        let mut t = Timeline::new();
        t.place(&chunk(1_000_000, 0, 1_700_000_000_000));
        t.place(&chunk(1_000_000, 0, 1_700_000_030_000));
        let mut f = chunk(1_000_000, 1_000, 0);
        f.tags = FragmentTags::default();
        let placed = t.place(&f);
        assert_eq!(placed.moved_ns, None);
        assert_eq!(timecode_of(&placed), 31_000);
    }
}
