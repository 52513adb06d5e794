//! Splitter unit tests: synthetic streams built with `kvs_format::build`, every kind of cut,
//! errors, fuzzing. No GStreamer here: the tests on real `matroskamux` output are in
//! `tests/matroskamux_output.rs`.

use super::ebml::{read_header, vint_len};
use super::*;
use kvs_format::build::{self, AVC, Track, ebml_header, info, segment_unknown_size};
use kvs_format::ebml::Writer;

mod harness;
use harness::*;

mod aws_shape;

// ---------------------------------------------------------------- stream builder

/// A deterministic block payload.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn simple_block(track: u64, rel: i16, key: bool, payload_len: usize) -> Vec<u8> {
    build::simple_block(track, rel, key, &payload(payload_len, rel as u8))
}

/// A BlockGroup; `reference`: with a ReferenceBlock (a delta frame).
fn block_group(track: u64, rel: i16, reference: bool, payload_len: usize) -> Vec<u8> {
    build::block_group(track, rel, !reference, &payload(payload_len, 7))
}

/// A cluster with a PrevSize after its Timecode, like matroskamux's.
fn cluster(timecode: u64, known: bool, children: &[Vec<u8>]) -> Vec<u8> {
    let mut kids = vec![build::uint(ID_PREV_SIZE, 1234)];
    kids.extend_from_slice(children);
    if known {
        build::cluster_sized(timecode, &kids)
    } else {
        build::cluster(timecode, &kids)
    }
}

fn tags(name: &str) -> Vec<u8> {
    build::tags(&[(name, "x")])
}

/// The start of a stream up to its Tracks, as matroskamux writes it (Tags first).
fn header_av() -> Vec<u8> {
    let mut h = ebml_header("matroska");
    h.extend(segment_unknown_size());
    h.extend(tags("ENCODER"));
    h.extend(info(1_000_000));
    h.extend(build::tracks(&[
        Track::video(1, AVC),
        Track::audio(2, "A_AAC"),
    ]));
    h
}

/// The blocks of each cluster of [`stream_av`]: 2 s, key frame first, audio interleaved.
fn av_blocks() -> Vec<Vec<u8>> {
    let mut kids = Vec::new();
    for f in 0..10i16 {
        kids.push(simple_block(1, f * 200, f == 0, 500 + f as usize * 37));
        kids.push(simple_block(2, f * 200 + 10, true, 90));
    }
    kids
}

/// Header + `n` clusters (with PrevSize) of [`av_blocks`], of unknown or known size.
fn stream_av(n: u64, known: bool) -> (Vec<u8>, Vec<u8>) {
    let header = header_av();
    let mut s = header.clone();
    for i in 0..n {
        s.extend(cluster(i * 2000, known, &av_blocks()));
    }
    (header, s)
}

// ---------------------------------------------------------------- running

/// The cuts `matroskamux` produces: each element header and block header (plus the
/// small elements) in one buffer, each block payload in another.
fn muxer_cuts(data: &[u8], header_len: usize) -> Vec<usize> {
    let mut cuts = vec![header_len];
    let mut p = header_len;
    while p < data.len() {
        let h = read_header(&data[p..]).unwrap().unwrap();
        match h.id {
            ID_CLUSTER => {
                p += h.len;
                cuts.push(p);
            }
            ID_SIMPLE_BLOCK => {
                let track_len = vint_len(data[p + h.len]).unwrap();
                p += h.len + track_len + 3;
                cuts.push(p);
                p += h.size.unwrap() as usize - track_len - 3;
                cuts.push(p);
            }
            _ => {
                p += h.len + h.size.unwrap() as usize;
                cuts.push(p);
            }
        }
    }
    cuts
}

// ---------------------------------------------------------------- tests

#[test]
fn splits_header_and_fragments() {
    let (header, s) = stream_av(3, false);
    let (events, r) = run(&s);
    r.unwrap();
    let n = normalize(&events);
    let N::Header(bytes, doc, scale, tr) = &n[0] else {
        panic!("{n:?}")
    };
    assert_eq!(bytes, &header);
    assert_eq!((doc.as_str(), *scale), ("matroska", 1_000_000));
    assert_eq!(tr.len(), 2);
    assert_eq!(
        (tr[0].number, tr[0].track_type, tr[0].codec_id.as_str()),
        (1, 1, AVC)
    );
    assert_eq!(tr[1].codec_id, "A_AAC");
    assert_eq!(n.len(), 1 + 3 * 3);
    let mut rebuilt = bytes.clone();
    let mut off = header.len();
    for i in 0..3 {
        let N::Start(st) = &n[1 + 3 * i] else {
            panic!()
        };
        let N::Data(d) = &n[2 + 3 * i] else { panic!() };
        let N::End(sum) = &n[3 + 3 * i] else { panic!() };
        assert_eq!(
            *st,
            FragmentStart {
                timecode: i as u64 * 2000,
                key_frame: true,
                video: true
            }
        );
        assert_eq!(&d[..4], &[0x1F, 0x43, 0xB6, 0x75]);
        assert_eq!(sum.size, d.len() as u64);
        assert_eq!(sum.blocks, 20);
        assert_eq!(sum.first_block_time, i as i64 * 2000);
        assert_eq!(sum.last_block_time, i as i64 * 2000 + 1810);
        assert!(sum.key_frame && !sum.end_of_fragment_tag);
        assert_eq!(&s[off..off + d.len()], &d[..]);
        off += d.len();
        rebuilt.extend_from_slice(d);
    }
    assert_eq!(rebuilt, s);
}

#[test]
fn any_cut_gives_the_same_events() {
    for known in [false, true] {
        let (header, s) = stream_av(3, known);
        let (reference, r) = run(&s);
        r.unwrap();
        let reference = normalize(&reference);
        assert_eq!(fragments(&reference), 3);
        let mut rng = Rng(0x1234_5678 + known as u64);
        let mut cut_sets = vec![
            every(1, s.len()),
            every(2, s.len()),
            every(7, s.len()),
            every(13, s.len()),
        ];
        cut_sets.push(muxer_cuts(&s, header.len()));
        cut_sets.push(every(65536, s.len()));
        for _ in 0..50 {
            let gap = 1 + rng.below(300);
            cut_sets.push(rng.cuts(s.len(), gap));
        }
        for cuts in cut_sets {
            let (ev, r) = run_cuts(&s, &cuts, Limits::default());
            r.unwrap();
            assert_eq!(
                normalize(&ev),
                reference,
                "cuts {:?}",
                &cuts[..cuts.len().min(20)]
            );
        }
    }
}

#[test]
fn muxer_cuts_are_zero_copy_and_start_before_data() {
    let (header, s) = stream_av(2, false);
    let cuts = muxer_cuts(&s, header.len());
    let mut sp = Splitter::new(Limits::default());
    let mut out = Vec::new();
    let mut last = 0;
    let mut zero_copy = 0;
    for c in cuts.into_iter().chain([s.len()]) {
        let buf = Bytes::copy_from_slice(&s[last..c]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let before = out.len();
        sp.push(buf, &mut out).unwrap();
        for e in &out[before..] {
            if let Event::FragmentData(d) = e
                && range.contains(&(d.as_ptr() as usize))
            {
                zero_copy += d.len();
            }
        }
        last = c;
        if let Some(f) = sp.current_fragment() {
            assert!(f.size > 0 && f.size < s.len() as u64);
        }
    }
    sp.finish(&mut out).unwrap();
    // Everything but the held cluster prefixes is a slice of the input.
    let data: usize = out
        .iter()
        .map(|e| {
            if let Event::FragmentData(d) = e {
                d.len()
            } else {
                0
            }
        })
        .sum();
    assert!(zero_copy > data - 200, "{zero_copy} of {data}");
    // The cluster prefix is coalesced into a single small piece right after FragmentStart.
    let i = out
        .iter()
        .position(|e| matches!(e, Event::FragmentStart(_)))
        .unwrap();
    let Event::FragmentData(first) = &out[i + 1] else {
        panic!()
    };
    assert!(
        first.starts_with(&[0x1F, 0x43, 0xB6, 0x75]) && first.len() < 64,
        "{first:?}"
    );
    assert_eq!(sp.bytes_consumed(), s.len() as u64);
}

#[test]
fn fragment_start_waits_for_the_video_block() {
    let mut s = header_av();
    // Audio first, then a delta video frame: not a key-frame fragment.
    s.extend(cluster(
        0,
        false,
        &[simple_block(2, 0, true, 50), simple_block(1, 5, false, 50)],
    ));
    s.extend(cluster(
        100,
        false,
        &[simple_block(2, 0, true, 50), simple_block(1, 5, true, 50)],
    ));
    // Only audio: the cluster ends without a video block.
    s.extend(cluster(200, true, &[simple_block(2, 0, true, 50)]));
    let (ev, r) = run(&s);
    r.unwrap();
    let starts: Vec<_> = ev
        .iter()
        .filter_map(|e| {
            if let Event::FragmentStart(f) = e {
                Some(f.key_frame)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(starts, [false, true, false]);
    // The held audio block is emitted after FragmentStart, in order.
    let n = normalize(&ev);
    let N::Data(d) = &n[2] else { panic!() };
    assert_eq!(d, &s[header_av().len()..header_av().len() + d.len()]);
}

#[test]
fn a_cluster_of_audio_before_the_video_says_it_has_no_video() {
    // matroskamux with audio that starts before the video: the first cluster is audio only.
    let mut s = header_av();
    s.extend(cluster(0, true, &[simple_block(2, 0, true, 50)]));
    s.extend(cluster(
        20,
        true,
        &[simple_block(1, 0, true, 500), simple_block(2, 1, true, 50)],
    ));
    let (ev, r) = run(&s);
    r.unwrap();
    let starts: Vec<_> = normalize(&ev)
        .into_iter()
        .filter_map(|n| match n {
            N::Start(s) => Some((s.key_frame, s.video)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [(false, false), (true, true)]);
}

#[test]
fn held_prefix_is_bounded() {
    // A video stream whose cluster carries only audio: without a video block, the cluster
    // starts (as a non-key-frame fragment) once max_block_size bytes are held.
    let limits = Limits {
        max_block_size: 10_000,
        ..Limits::default()
    };
    let mut s = header_av();
    let audio: Vec<_> = (0..100).map(|i| simple_block(2, i, true, 500)).collect();
    s.extend(cluster(0, false, &audio));
    for cuts in [vec![], every(600, s.len())] {
        let (ev, r) = run_cuts(&s, &cuts, limits);
        r.unwrap();
        let n = normalize(&ev);
        assert_eq!(n.len(), 4, "{n:?}");
        assert_eq!(
            n[1],
            N::Start(FragmentStart {
                timecode: 0,
                key_frame: false,
                video: false
            })
        );
        let N::Data(d) = &n[2] else { panic!() };
        assert_eq!(d, &s[header_av().len()..]);
    }
    let mut sp = Splitter::new(limits);
    let mut out = Vec::new();
    for piece in s.chunks(600) {
        sp.push(Bytes::copy_from_slice(piece), &mut out).unwrap();
        assert!(sp.held_bytes() <= 10_000 + 600);
    }
}

#[test]
fn block_groups_and_reference_blocks() {
    let mut s = header_av();
    s.extend(cluster(
        0,
        false,
        &[block_group(1, 0, false, 300), block_group(1, 33, true, 200)],
    ));
    s.extend(cluster(66, true, &[block_group(1, 0, true, 300)]));
    s.extend(cluster(
        99,
        false,
        &[block_group(2, 0, false, 30), simple_block(1, 0, true, 40)],
    ));
    for cuts in [vec![], every(1, s.len()), every(5, s.len())] {
        let (ev, r) = run_cuts(&s, &cuts, Limits::default());
        r.unwrap();
        let n = normalize(&ev);
        let starts: Vec<_> = n
            .iter()
            .filter_map(|e| {
                if let N::Start(f) = e {
                    Some(f.key_frame)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(starts, [true, false, true]);
        let ends: Vec<_> = n
            .iter()
            .filter_map(|e| {
                if let N::End(f) = e {
                    Some(f.blocks)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(ends, [2, 1, 2]);
    }
}

#[test]
fn no_video_track_means_key_frame() {
    let mut s = ebml_header("webm");
    s.extend(segment_unknown_size());
    s.extend(info(1_000_000));
    s.extend(build::tracks(&[Track::audio(1, "A_OPUS")]));
    s.extend(cluster(0, false, &[simple_block(1, 0, false, 20)]));
    s.extend(cluster(20, false, &[]));
    let (ev, r) = run(&s);
    r.unwrap();
    let n = normalize(&ev);
    assert!(matches!(&n[0], N::Header(_, d, _, _) if d == "webm"));
    assert_eq!(
        n[1],
        N::Start(FragmentStart {
            timecode: 0,
            key_frame: true,
            video: false
        })
    );
    assert_eq!(
        n[4],
        N::Start(FragmentStart {
            timecode: 20,
            key_frame: true,
            video: false
        })
    );
    let N::End(empty) = &n[6] else {
        panic!("{n:?}")
    };
    assert_eq!(
        (empty.blocks, empty.first_block_time, empty.last_block_time),
        (0, 20, 20)
    );
}

#[test]
fn end_of_fragment_tags() {
    let mut s = header_av();
    s.extend(cluster(0, false, &[simple_block(1, 0, true, 100)]));
    s.extend(super::end_of_fragment_tags().to_vec());
    s.extend(cluster(100, false, &[simple_block(1, 0, true, 100)]));
    s.extend(tags("OTHER"));
    s.extend(cluster(200, true, &[simple_block(1, 0, true, 100)]));
    s.extend(super::end_of_fragment_tags().to_vec()); // no fragment open: just interstitial
    let v = build::element(ID_VOID, &[0; 10]);
    s.extend(&v);
    s.extend(cluster(300, false, &[simple_block(1, 0, true, 100)]));
    for cuts in [vec![], every(1, s.len()), every(3, s.len())] {
        let (ev, r) = run_cuts(&s, &cuts, Limits::default());
        r.unwrap();
        let kinds: Vec<String> = normalize(&ev)
            .iter()
            .map(|e| match e {
                N::Header(..) => "H".into(),
                N::Start(_) => "S".into(),
                N::Data(_) => "D".into(),
                N::Cut(_) => "C".into(),
                N::End(f) => format!("E{}", f.end_of_fragment_tag as u8),
                N::Inter(b) => format!("I{}", b.len()),
                N::Back(..) => "B".into(),
            })
            .collect();
        let eof = super::end_of_fragment_tags().len();
        let other = tags("OTHER").len();
        let expected = format!(
            "H S D E1 I{eof} S D E0 I{other} S D E0 I{eof} I{} S D E0",
            v.len()
        );
        assert_eq!(kinds.join(" "), expected);
    }
    assert!(tags_have_end_of_fragment(
        &super::end_of_fragment_tags()[4 + 1..]
    ));
}

#[test]
fn restart_emits_a_new_header() {
    let (_, mut s) = stream_av(2, false);
    let (h2, s2) = stream_av(2, false); // timecodes start again at 0
    s.extend(&s2);
    let (ev, r) = run_cuts(&s, &every(1000, s.len()), Limits::default());
    r.unwrap();
    let n = normalize(&ev);
    let headers: Vec<usize> = n
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, N::Header(..)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(headers, [0, 7]);
    assert!(
        matches!(&n[6], N::End(_)),
        "open fragment ended before the new header"
    );
    assert!(matches!(&n[7], N::Header(b, ..) if *b == h2));
    assert_eq!(fragments(&n), 4);
}

#[test]
fn timecode_rules() {
    let mut s = header_av();
    s.extend(cluster(1000, false, &[simple_block(1, 0, true, 10)]));
    s.extend(cluster(1000, false, &[simple_block(1, 0, true, 10)])); // equal: allowed
    s.extend(cluster(999, false, &[simple_block(1, 0, true, 10)]));
    let (ev, r) = run(&s);
    assert_eq!(
        r,
        Err(MkvError::TimecodeBackwards {
            previous: 1000,
            current: 999
        })
    );
    // Refused before any byte of the bad cluster went out.
    assert_eq!(fragments(&normalize(&ev)), 2);
    assert!(matches!(ev.last(), Some(Event::FragmentEnd(_))));
    // Negative relative timecodes (B-frames) are fine.
    let mut s = header_av();
    s.extend(cluster(
        1000,
        false,
        &[
            simple_block(1, 0, true, 10),
            simple_block(1, -66, false, 10),
        ],
    ));
    let (ev, r) = run(&s);
    r.unwrap();
    let N::End(f) = &normalize(&ev)[3] else {
        panic!()
    };
    assert_eq!((f.first_block_time, f.last_block_time), (934, 1000));
}

/// Without AWS shape (which kvssink uses, see `aws_shape::time_going_back_is_sent_on_after_the_last_frame`),
/// time going backwards inside a cluster (matroskamux writes the blocks on, before the
/// cluster's Timecode; kvssink's muxing keeps a key frame too close to the cluster's start
/// in it) is refused at the key frame, before any byte of it goes out.
#[test]
fn a_key_frame_going_back_in_time_is_refused() {
    for (back, current) in [(-3000i16, 1000i64), (-1000, 3000)] {
        let mut s = header_av();
        s.extend(cluster(3000, false, &[simple_block(1, 0, true, 10)]));
        s.extend(cluster(
            4000,
            false,
            &[
                simple_block(1, 0, true, 10),
                simple_block(1, 33, false, 10),
                simple_block(1, back, true, 10),
            ],
        ));
        let (ev, r) = run(&s);
        let previous = 4000;
        assert_eq!(r, Err(MkvError::KeyFrameBackwards { previous, current }));
        let n = normalize(&ev);
        // The first cluster ended; the second begun, the bad key frame not in it.
        assert_eq!(fragments(&n), 1);
        assert_eq!(n.iter().filter(|e| matches!(e, N::Start(_))).count(), 2);
        let data: Vec<u8> = n
            .iter()
            .filter_map(|e| match e {
                N::Data(d) => Some(&d[..]),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        let bad = simple_block(1, back, true, 10);
        assert!(!data.windows(bad.len()).any(|w| w == &bad[..]));
    }
    // The same time in one cluster is refused; two clusters may begin at the same time.
    let mut s = header_av();
    s.extend(cluster(
        4000,
        false,
        &[simple_block(1, 0, true, 10), simple_block(1, 0, true, 10)],
    ));
    let (_, r) = run(&s);
    assert_eq!(
        r,
        Err(MkvError::KeyFrameBackwards {
            previous: 4000,
            current: 4000
        })
    );
}

#[test]
fn structural_errors() {
    let head = |tr: &[Track]| {
        let mut s = ebml_header("matroska");
        s.extend(segment_unknown_size());
        s.extend(info(1_000_000));
        s.extend(build::tracks(tr));
        s
    };
    let mut s = head(&[Track::video(1, AVC)]);
    s.extend(cluster(
        0,
        false,
        &[simple_block(1, 0, true, 10), simple_block(5, 0, true, 10)],
    ));
    assert!(matches!(
        run(&s).1,
        Err(MkvError::UnknownTrack { track: 5, .. })
    ));

    let mut s = head(&[
        Track::video(1, AVC),
        Track::audio(2, "A_AAC"),
        Track::audio(3, "A_AAC"),
        Track::audio(4, "A_AAC"),
    ]);
    s.extend(cluster(0, false, &[]));
    assert_eq!(run(&s).1, Err(MkvError::TooManyTracks(4)));

    let mut s = ebml_header("matroska");
    s.extend(segment_unknown_size());
    s.extend(info(1_000_000));
    s.extend(cluster(0, false, &[]));
    assert_eq!(run(&s).1, Err(MkvError::MissingTracks));

    let s = ebml_header("mp4");
    let e = run(&s).1.unwrap_err();
    assert_eq!(e, MkvError::DocType("mp4".into()));
    assert!(e.to_string().contains("\"mp4\""), "{e}");

    let mut s = head(&[Track::video(1, AVC)]);
    s.extend([0x1F, 0x43, 0xB6, 0x75, 0x00]); // size with a 0x00 lead byte
    assert!(matches!(run(&s).1, Err(MkvError::InvalidVint { .. })));

    // Block before Timecode.
    let mut s = head(&[Track::video(1, AVC)]);
    s.extend(Writer::new().unknown_size(ID_CLUSTER).finish());
    s.extend(simple_block(1, 0, true, 10));
    assert!(matches!(
        run(&s).1,
        Err(MkvError::UnexpectedElement {
            id: ID_SIMPLE_BLOCK,
            context: "block before the Cluster Timecode",
            ..
        })
    ));

    // Child overrunning a known-size cluster.
    let mut s = head(&[Track::video(1, AVC)]);
    let mut c = cluster(0, true, &[simple_block(1, 0, true, 10)]);
    c[4] -= 2; // shrink the cluster's declared size
    s.extend(c);
    assert!(matches!(run(&s).1, Err(MkvError::UnexpectedElement { .. })));

    // Frames before the first Cluster (matroskamux's buffer with the Cluster's start was
    // dropped, by a pad probe): not stream header.
    let mut s = head(&[Track::video(1, AVC)]);
    s.extend(simple_block(1, 0, true, 10));
    s.extend(cluster(33, false, &[simple_block(1, 0, true, 10)]));
    assert!(matches!(
        run(&s).1,
        Err(MkvError::UnexpectedElement {
            id: ID_SIMPLE_BLOCK,
            context: "a frame outside a Cluster (the start of its Cluster is missing)",
            ..
        })
    ));
    // ... or between known-size Clusters.
    let mut s = head(&[Track::video(1, AVC)]);
    s.extend(cluster(0, true, &[simple_block(1, 0, true, 10)]));
    s.extend(block_group(1, 33, true, 10));
    assert!(matches!(
        run(&s).1,
        Err(MkvError::UnexpectedElement {
            id: ID_BLOCK_GROUP,
            ..
        })
    ));

    // Data after the Segment header that is not an element of the Segment.
    let s = [ebml_header("matroska"), vec![0xA3, 0x81, 0x00]].concat();
    assert!(matches!(
        run(&s).1,
        Err(MkvError::UnexpectedElement { id: 0xA3, .. })
    ));
}

#[test]
fn not_matroska_says_what_it_is() {
    let cases: [(&[u8], &str); 6] = [
        (
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'],
            "JPEG",
        ),
        (&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0], "PNG"),
        (&[0, 0, 0, 1, 0x67, 0x42, 0, 0x1E, 0x95], "Annex B"),
        (b"GET / HTTP/1.1\r\n", "text"),
        (
            &[
                0, 0, 0, 0x18, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm',
            ],
            "MP4",
        ),
        (&[0x12, 0x34], "unrecognised"),
    ];
    for (data, word) in cases {
        for cuts in [vec![], every(1, data.len())] {
            let (ev, r) = run_cuts(data, &cuts, Limits::default());
            assert!(ev.is_empty());
            let e = r.unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, MkvError::NotMatroska { .. }), "{msg}");
            assert!(
                msg.contains(word) && msg.contains("not a Matroska stream"),
                "{msg}"
            );
        }
    }
    let msg = run(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 0x4A, 0x46])
        .1
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "not a Matroska stream: the data starts with a JPEG image (FF D8 FF E0 00 10 4A 46); kvssink needs matroskamux output"
    );
    // A stream cut inside the EBML magic is truncated, not foreign; empty is fine.
    assert_eq!(run(&[0x1A, 0x45]).1, Err(MkvError::Truncated { offset: 2 }));
    assert_eq!(run(&[]).1, Ok(()));
}

#[test]
fn huge_declared_sizes_do_not_allocate() {
    let limits = Limits::default();
    // A 100 GB SimpleBlock: refused by max_block_size, before reading it.
    let s = Writer::from(header_av())
        .unknown_size(ID_CLUSTER)
        .uint(ID_TIMECODE, 0)
        .header(ID_SIMPLE_BLOCK, 100 << 30)
        .finish();
    let e = run(&s).1.unwrap_err();
    assert!(
        matches!(e, MkvError::ElementTooLarge { id: ID_SIMPLE_BLOCK, size, .. } if size == 100 << 30)
    );
    // A 100 GB known-size Cluster is counted through, not held: stream 32 MB of it.
    let s = Writer::from(header_av())
        .header(ID_CLUSTER, 100 << 30)
        .uint(ID_TIMECODE, 0)
        .finish();
    let mut sp = Splitter::new(limits);
    let mut out = Vec::new();
    sp.push(Bytes::from(s), &mut out).unwrap();
    let key = Bytes::from(simple_block(1, 0, true, (1 << 20) - 16));
    let chunk = Bytes::from(simple_block(1, 0, false, (1 << 20) - 16));
    for i in 0..32 {
        let chunk = if i == 0 { key.clone() } else { chunk.clone() };
        sp.push(chunk, &mut out).unwrap();
        out.retain(|e| !matches!(e, Event::FragmentData(_)));
    }
    assert!(sp.current_fragment().unwrap().size > 31 << 20);
    assert_eq!(sp.current_fragment().unwrap().blocks, 32);
    // Truncated: the started fragment is ended first.
    out.clear();
    assert!(matches!(
        sp.finish(&mut out),
        Err(MkvError::Truncated { .. })
    ));
    assert!(matches!(out.as_slice(), [Event::FragmentEnd(f)] if f.blocks == 32));
    // Header children and interstitials are bounded too.
    let mut s = ebml_header("matroska");
    s.extend(segment_unknown_size());
    let s = Writer::from(s).header(ID_VOID, 100 << 30).finish();
    assert!(matches!(
        run(&s).1,
        Err(MkvError::ElementTooLarge { id: ID_VOID, .. })
    ));
    let (_, s) = stream_av(1, false);
    let s = Writer::from(s).header(ID_CUES, 17 << 20).finish();
    assert!(
        matches!(run(&s).1, Err(MkvError::ElementTooLarge { id: ID_CUES, limit, .. }) if limit == 16 << 20)
    );
}

#[test]
fn finish_and_truncation() {
    let (_, s) = stream_av(2, false);
    // Truncated inside the first cluster before its FragmentStart: nothing of it emitted.
    let cut = header_av().len() + 20;
    let (ev, r) = run(&s[..cut]);
    assert_eq!(r, Err(MkvError::Truncated { offset: cut as u64 }));
    assert_eq!(normalize(&ev).len(), 1); // header only
    // Truncated mid-block after the start: FragmentEnd, then the error.
    let (ev, r) = run(&s[..s.len() - 5]);
    assert!(matches!(r, Err(MkvError::Truncated { .. })));
    assert!(matches!(ev.last(), Some(Event::FragmentEnd(_))));
    assert_eq!(fragments(&normalize(&ev)), 2);
    // After finish the splitter takes a new stream.
    let mut sp = Splitter::new(Limits::default());
    let mut out = Vec::new();
    sp.push(Bytes::from(s.clone()), &mut out).unwrap();
    assert!(sp.current_fragment().is_some());
    sp.finish(&mut out).unwrap();
    assert!(sp.current_fragment().is_none());
    sp.push(Bytes::from(s.clone()), &mut out).unwrap();
    sp.finish(&mut out).unwrap();
    assert_eq!(fragments(&normalize(&out)), 4);
    // Errors poison until reset.
    let mut sp = Splitter::new(Limits::default());
    assert!(
        sp.push(Bytes::from_static(b"hello, world"), &mut out)
            .is_err()
    );
    assert!(sp.push(Bytes::from(s.clone()), &mut out).is_err());
    sp.reset();
    sp.push(Bytes::from(s), &mut out).unwrap();
}

#[test]
fn known_size_segment() {
    let mut body = Vec::new();
    body.extend(info(1_000_000));
    body.extend(build::tracks(&[Track::video(1, AVC)]));
    body.extend(cluster(0, false, &[simple_block(1, 0, true, 100)]));
    body.extend(cluster(40, false, &[simple_block(1, 0, true, 100)]));
    let mut s = Writer::from(ebml_header("matroska"))
        .header(ID_SEGMENT, body.len() as u64)
        .bytes(&body)
        .finish();
    let one = s.clone();
    s.extend(&one); // a second complete stream
    let (ev, r) = run_cuts(&s, &every(9, s.len()), Limits::default());
    r.unwrap();
    let n = normalize(&ev);
    assert_eq!(fragments(&n), 4);
    assert_eq!(n.iter().filter(|e| matches!(e, N::Header(..))).count(), 2);
}

#[test]
fn random_input_never_panics_and_is_cut_independent() {
    let (header, valid) = stream_av(3, false);
    let (_, known) = stream_av(2, true);
    let mut rng = Rng(42);
    let small = Limits {
        max_header_size: 4096,
        max_element_size: 4096,
        max_block_size: 1 << 16,
        ..Limits::default()
    };
    for round in 0..1500 {
        let mut data = match round % 3 {
            0 => valid.clone(),
            1 => known.clone(),
            _ => (0..rng.below(3000)).map(|_| rng.next() as u8).collect(),
        };
        if round % 3 != 2 {
            for _ in 0..1 + rng.below(4) {
                let i =
                    header.len().saturating_sub(100) + rng.below(data.len() - header.len() + 100);
                data[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                data.truncate(rng.below(data.len()));
            }
        }
        let limits = if round % 5 == 0 {
            small
        } else {
            Limits::default()
        };
        let (ev_a, ra) = run_cuts(&data, &[], limits);
        let gap = 1 + rng.below(64);
        let cuts = rng.cuts(data.len(), gap);
        let (ev_b, rb) = run_cuts(&data, &cuts, limits);
        assert_eq!(ra, rb, "round {round}");
        let (na, nb) = (normalize(&ev_a), normalize(&ev_b));
        if ra.is_ok() {
            assert_eq!(na, nb, "round {round}");
        } else {
            // Data emitted before the error depends on the cuts; the rest must agree.
            let strip = |n: &[N]| {
                n.iter()
                    .filter(|e| !matches!(e, N::Data(_)))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            let (sa, sb) = (strip(&na), strip(&nb));
            assert_eq!(sa, sb, "round {round}");
        }
    }
}

#[test]
fn whole_size_marks_where_the_open_cluster_stops_being_whole() {
    let (_, s) = stream_av(2, false);
    // The last cluster as emitted when the stream is complete.
    let (ev, r) = run(&s);
    r.unwrap();
    let Some(Event::FragmentEnd(complete)) = ev.last() else {
        panic!("no FragmentEnd")
    };
    assert_eq!(complete.whole_size, complete.size);
    let last_block = simple_block(2, 9 * 200 + 10, true, 90).len();
    for cut in [1, 5, last_block - 1] {
        // Truncated inside the last block: whole up to that block, at any buffer cut.
        for step in [7, 100, s.len()] {
            let data = &s[..s.len() - cut];
            let mut sp = Splitter::new(Limits::default());
            let mut out = Vec::new();
            for chunk in data.chunks(step) {
                sp.push(Bytes::copy_from_slice(chunk), &mut out).unwrap();
            }
            let _ = sp.finish(&mut out);
            let Some(Event::FragmentEnd(end)) = out.last() else {
                panic!("no FragmentEnd")
            };
            assert_eq!(
                end.whole_size,
                complete.size - last_block as u64,
                "cut {cut} step {step}"
            );
        }
    }
    // Garbage inside the open cluster: whole up to the garbage.
    let mut bad = s.clone();
    bad.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF]);
    let mut sp = Splitter::new(Limits::default());
    let mut out = Vec::new();
    assert!(sp.push(Bytes::from(bad), &mut out).is_err());
    assert_eq!(sp.whole_size(), Some(complete.size));
}

#[test]
fn a_cluster_past_the_span_limit_is_cut_before_the_block_that_crosses_it() {
    // One cluster with a video block every second for 12 s; the limit is 10 s of span.
    let mut s = header_av();
    let blocks: Vec<Vec<u8>> = (0..12i16)
        .map(|i| simple_block(1, i * 1000, i == 0, 300))
        .collect();
    let cut_at: usize = cluster(0, false, &blocks[..11]).len();
    s.extend(cluster(0, false, &blocks));
    s.extend(cluster(12_000, false, &[simple_block(1, 0, true, 300)]));
    let limits = Limits {
        max_fragment_span_ns: 10_000_000_000,
        ..Limits::default()
    };
    let mut rng = Rng(7);
    for round in 0..200 {
        let cuts = if round == 0 {
            vec![]
        } else {
            rng.cuts(s.len(), 700)
        };
        let (events, r) = run_cuts(&s, &cuts, limits);
        r.unwrap();
        let mut data = Vec::new();
        let mut cut = None;
        let mut ends = Vec::new();
        for e in &events {
            match e {
                Event::FragmentStart(_) if !ends.is_empty() => break,
                Event::FragmentData(b) => data.extend_from_slice(b),
                Event::FragmentCut(summary) => cut = Some(summary.clone()),
                Event::FragmentEnd(summary) => ends.push(summary.clone()),
                _ => {}
            }
        }
        let cut = cut.expect("the first cluster is cut");
        // Everything up to the 11th block (10 s of span) is kept whole; the cut point may
        // lie before the end of what was emitted when a block header straddled buffers.
        assert_eq!(cut.whole_size as usize, cut_at, "round {round}");
        assert!(data.len() >= cut_at);
        assert_eq!(&data[..cut_at], &s[header_av().len()..][..cut_at]);
        assert!(ends[0].cut_bytes > 0);
    }
    // Without the limit nothing is cut.
    let (events, _) = run(&s);
    assert!(!events.iter().any(|e| matches!(e, Event::FragmentCut(_))));
}

#[test]
fn at_element_boundary_is_false_only_inside_an_element() {
    let (header, s) = stream_av(2, false);
    let cuts = muxer_cuts(&s, header.len());
    let mut sp = Splitter::new(Limits::default());
    let mut out = Vec::new();
    let mut last = 0;
    let (mut inside, mut between) = (0, 0);
    for c in cuts.into_iter().chain([s.len()]) {
        sp.push(Bytes::copy_from_slice(&s[last..c]), &mut out)
            .unwrap();
        // matroskamux's block header buffer ends inside its SimpleBlock; every other cut
        // ends between elements.
        let block_header = read_header(&s[last..]).ok().flatten().is_some_and(|h| {
            h.id == ID_SIMPLE_BLOCK && c < last + h.len + h.size.unwrap() as usize
        });
        assert_eq!(sp.at_element_boundary(), !block_header, "cut at {c}");
        if block_header {
            inside += 1;
        } else {
            between += 1;
        }
        last = c;
    }
    assert!(inside >= 40 && between >= 40, "{inside} {between}");
    // A buffer ending inside an element header is not at a boundary either.
    let mut sp = Splitter::new(Limits::default());
    sp.push(Bytes::copy_from_slice(&s[..header.len() + 1]), &mut out)
        .unwrap();
    assert!(!sp.at_element_boundary());
}
