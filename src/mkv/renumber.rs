//! Track numbers as the service's playback needs them: video track 1, audio track 2 (HLS,
//! DASH and GetClip read those numbers; PutMedia stores anything). matroskamux numbers its
//! tracks in the order its pads were requested, so a launch line that names the audio branch
//! first gives audio track 1 and video track 2.
//!
//! The splitter in AWS shape renumbers such a stream on the way, in place: the TrackNumber of
//! each TrackEntry (same length; the entries then in the new order, TrackUIDs kept), and the
//! track number of every block, whose last byte alone changes. That byte is a piece of its
//! own (a static one-byte `Bytes`), so frames stay slices of the input, byte for byte.
//! Renumbering needs track numbers of at most 126 (one byte in every block) and a single
//! video track; [`plan`] says why it cannot be done otherwise.

use super::ebml::{read_header, read_uint};
use super::{ID_TRACK_ENTRY, ID_TRACK_NUMBER, TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO, TrackInfo};

/// The largest track number that is renumbered: a one-byte vint holds 1..=126 (127 is the
/// reserved all-ones pattern).
pub const MAX_RENUMBERED: u64 = 126;

/// Old track number → new one, for the numbers 1..=[`MAX_RENUMBERED`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TrackMap([u8; MAX_RENUMBERED as usize + 1]);

impl TrackMap {
    /// The new number of track `old`, when it changes.
    #[inline]
    pub fn changed(&self, old: u64) -> Option<u8> {
        let new = *self.0.get(old as usize)?;
        (u64::from(new) != old).then_some(new)
    }

    /// The new number of track `old` (itself when it does not change).
    pub fn apply(&self, old: u64) -> u64 {
        self.changed(old).map_or(old, u64::from)
    }
}

impl std::fmt::Debug for TrackMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let changes: Vec<_> = (0..=MAX_RENUMBERED)
            .filter_map(|old| Some((old, self.changed(old)?)))
            .collect();
        write!(f, "TrackMap{changes:?}")
    }
}

/// Why a stream's tracks cannot be renumbered in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrenumberable {
    /// More than one video track: which one plays is the launch line's choice.
    #[error("it has {0} video tracks, and which one should be track 1 is the launch line's choice")]
    VideoTracks(usize),
    /// A number a block could not hold in one byte.
    #[error("track number {0} is above {MAX_RENUMBERED}, which blocks cannot hold in one byte")]
    TooLarge(u64),
    /// Two TrackEntries with the same number.
    #[error("two tracks have the number {0}")]
    Duplicate(u64),
    /// A TrackEntry without a TrackNumber (or number 0).
    #[error("a track has no TrackNumber")]
    Missing,
}

/// The renumbering the playback needs: the video track first, then the audio tracks, then
/// any other, each kind in header order, numbered from 1. `Ok(None)` when the tracks have
/// those numbers already (nothing to do, whatever else is odd about them).
pub fn plan(tracks: &[TrackInfo]) -> Result<Option<TrackMap>, Unrenumberable> {
    let rank = |t: &TrackInfo| match t.track_type {
        TRACK_TYPE_VIDEO => 0,
        TRACK_TYPE_AUDIO => 1,
        _ => 2,
    };
    let mut order: Vec<&TrackInfo> = tracks.iter().collect();
    order.sort_by_key(|t| rank(t)); // stable: header order within each kind
    if order.iter().zip(1..).all(|(t, n)| t.number == n) {
        return Ok(None);
    }
    let videos = tracks
        .iter()
        .filter(|t| t.track_type == TRACK_TYPE_VIDEO)
        .count();
    if videos > 1 {
        return Err(Unrenumberable::VideoTracks(videos));
    }
    let mut map = TrackMap([0; MAX_RENUMBERED as usize + 1]);
    for (i, slot) in map.0.iter_mut().enumerate() {
        *slot = i as u8;
    }
    let mut seen = [false; MAX_RENUMBERED as usize + 1];
    for (t, new) in order.iter().zip(1u8..) {
        match t.number {
            0 => return Err(Unrenumberable::Missing),
            n if n > MAX_RENUMBERED => return Err(Unrenumberable::TooLarge(n)),
            n if seen[n as usize] => return Err(Unrenumberable::Duplicate(n)),
            n => {
                seen[n as usize] = true;
                map.0[n as usize] = new;
            }
        }
    }
    Ok(Some(map))
}

/// The body of a Tracks element with `map` applied, as long as `body`: each TrackEntry's
/// TrackNumber rewritten in place (the same number of bytes), the entries in the order of
/// their new numbers (in the slots the entries held, other children left where they were).
/// Anything after a malformed child is kept as it is.
pub fn rewrite_tracks(body: &[u8], map: &TrackMap) -> Vec<u8> {
    let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut slots: Vec<Option<std::ops::Range<usize>>> = Vec::new();
    let mut p = 0;
    while let Some((id, head, end)) = child(body, p) {
        if id == ID_TRACK_ENTRY {
            let mut entry = body[p..end].to_vec();
            let number = renumber_entry(&mut entry[head..], map);
            entries.push((number, entry));
            slots.push(None);
        } else {
            slots.push(Some(p..end));
        }
        p = end;
    }
    entries.sort_by_key(|(number, _)| *number);
    let mut entries = entries.into_iter();
    let mut out = Vec::with_capacity(body.len());
    for slot in slots {
        match slot {
            Some(range) => out.extend_from_slice(&body[range]),
            None => out.extend(entries.next().map(|(_, e)| e).unwrap_or_default()),
        }
    }
    out.extend_from_slice(&body[p..]);
    debug_assert_eq!(out.len(), body.len());
    out
}

/// Rewrites the TrackNumber of a TrackEntry body in place; returns the entry's (new) number.
fn renumber_entry(entry: &mut [u8], map: &TrackMap) -> u64 {
    let mut number = 0;
    let mut p = 0;
    while let Some((id, head, end)) = child(entry, p) {
        if id == ID_TRACK_NUMBER {
            let value = &mut entry[p + head..end];
            let old = read_uint(value).unwrap_or(0);
            number = map.apply(old);
            if number != old {
                // Fits: the new number is at most 3, the old one took at least one byte.
                let be = number.to_be_bytes();
                let n = value.len();
                value.copy_from_slice(&be[8 - n..]);
            }
        }
        p = end;
    }
    number
}

/// The child of known size at `p`: its ID, header length, and end.
fn child(buf: &[u8], p: usize) -> Option<(u32, usize, usize)> {
    let h = read_header(buf.get(p..)?).ok()??;
    let end = p
        .checked_add(h.len)?
        .checked_add(usize::try_from(h.size?).ok()?)?;
    (end <= buf.len()).then_some((h.id, h.len, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kvs_format::build::{self, AVC, Track};

    fn track(number: u64, track_type: u64) -> TrackInfo {
        TrackInfo {
            number,
            track_type,
            codec_id: String::new(),
            codec_private: Bytes::new(),
        }
    }

    const V: u64 = TRACK_TYPE_VIDEO;
    const A: u64 = TRACK_TYPE_AUDIO;

    #[test]
    fn video_first_then_audio() {
        // Already right: nothing to do.
        for ok in [
            vec![track(1, V)],
            vec![track(1, V), track(2, A)],
            vec![track(1, A)],
            vec![track(1, V), track(2, A), track(3, 17)],
            vec![track(2, A), track(1, V)],
        ] {
            assert_eq!(plan(&ok), Ok(None), "{ok:?}");
        }
        // matroskamux with the audio pad requested first.
        let map = plan(&[track(1, A), track(2, V)]).unwrap().unwrap();
        assert_eq!((map.apply(1), map.apply(2), map.apply(3)), (2, 1, 3));
        assert_eq!(map.changed(3), None);
        // Any numbers in one byte; audio before other kinds.
        let map = plan(&[track(9, 17), track(5, A), track(7, V)])
            .unwrap()
            .unwrap();
        assert_eq!((map.apply(7), map.apply(5), map.apply(9)), (1, 2, 3));
        let map = plan(&[track(2, A)]).unwrap().unwrap();
        assert_eq!(map.apply(2), 1);
        assert_eq!(
            format!("{:?}", plan(&[track(1, A), track(2, V)]).unwrap().unwrap()),
            "TrackMap[(1, 2), (2, 1)]"
        );
    }

    #[test]
    fn what_cannot_be_renumbered_in_place_says_why() {
        assert_eq!(
            plan(&[track(1, A), track(2, V), track(3, V)]),
            Err(Unrenumberable::VideoTracks(2))
        );
        assert_eq!(
            plan(&[track(1, A), track(200, V)]),
            Err(Unrenumberable::TooLarge(200))
        );
        assert_eq!(
            plan(&[track(127, V), track(2, A)]),
            Err(Unrenumberable::TooLarge(127))
        );
        assert_eq!(
            plan(&[track(2, A), track(2, V)]),
            Err(Unrenumberable::Duplicate(2))
        );
        assert_eq!(
            plan(&[track(0, A), track(1, V)]),
            Err(Unrenumberable::Missing)
        );
        let e = Unrenumberable::TooLarge(200).to_string();
        assert!(e.contains("200") && e.contains("126"), "{e}");
    }

    /// The body of a Tracks element built by `kvs_format::build`.
    fn tracks_body(list: &[Track<'_>]) -> Vec<u8> {
        let all = build::tracks(list);
        let h = read_header(&all).unwrap().unwrap();
        all[h.len..].to_vec()
    }

    #[test]
    fn the_header_is_rewritten_in_place_entries_in_their_new_order() {
        let body = tracks_body(&[Track::audio(1, "A_AAC"), Track::video(2, AVC)]);
        let map = plan(&[track(1, A), track(2, V)]).unwrap().unwrap();
        let out = rewrite_tracks(&body, &map);
        assert_eq!(
            out,
            tracks_body(&[Track::video(1, AVC), Track::audio(2, "A_AAC")])
        );
        // A TrackNumber in two bytes stays two bytes; other children stay in their slots.
        let mut body = kvs_format::ebml::Writer::new()
            .element(kvs_format::ids::ID_VOID, &[0; 3])
            .master(ID_TRACK_ENTRY, |w| {
                w.element(ID_TRACK_NUMBER, &[0, 1])
                    .uint(kvs_format::ids::ID_TRACK_TYPE, A);
            })
            .master(ID_TRACK_ENTRY, |w| {
                w.uint(ID_TRACK_NUMBER, 2)
                    .uint(kvs_format::ids::ID_TRACK_TYPE, V);
            })
            .finish();
        body.extend_from_slice(&[0x42]); // a torn child at the end: kept
        let out = rewrite_tracks(&body, &map);
        assert_eq!(out.len(), body.len());
        let expected = kvs_format::ebml::Writer::new()
            .element(kvs_format::ids::ID_VOID, &[0; 3])
            .master(ID_TRACK_ENTRY, |w| {
                w.uint(ID_TRACK_NUMBER, 1)
                    .uint(kvs_format::ids::ID_TRACK_TYPE, V);
            })
            .master(ID_TRACK_ENTRY, |w| {
                w.element(ID_TRACK_NUMBER, &[0, 2])
                    .uint(kvs_format::ids::ID_TRACK_TYPE, A);
            })
            .bytes(&[0x42])
            .finish();
        assert_eq!(out, expected);
    }
}
