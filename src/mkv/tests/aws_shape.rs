//! The splitter in AWS shape: cluster heads as AWS's producer writes them, tracks renumbered
//! so that video is track 1 and audio track 2, frames untouched. The expected bytes are built
//! here from the stream builder, not derived from the splitter's output.

use super::*;

/// AWS's cluster head, written out (not taken from `kvs_format::kvs::cluster_head`).
fn head(timecode: u64) -> Vec<u8> {
    let mut h = vec![0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x88];
    h.extend_from_slice(&timecode.to_be_bytes());
    h.extend_from_slice(&[0xA7, 0x81, 0x00]);
    h
}

fn aws(data: &[u8]) -> (Vec<Event>, Result<(), MkvError>) {
    run_cuts_aws(data, &[], Limits::default())
}

/// Every way of cutting `s` worth trying: one byte at a time, in two at every offset,
/// matroskamux's cuts, and random ones.
fn cut_sets(s: &[u8], header_len: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut sets = vec![every(1, s.len()), every(7, s.len())];
    // In two at every offset of the header and the first clusters.
    sets.extend((1..s.len().min(header_len + 6000)).map(|k| vec![k]));
    sets.push(muxer_cuts(s, header_len));
    let mut rng = Rng(seed);
    for _ in 0..30 {
        let gap = 1 + rng.below(300);
        sets.push(rng.cuts(s.len(), gap));
    }
    sets
}

/// Checks that every cut gives `reference`, and that each fragment's size is what was
/// emitted for it.
fn same_at_every_cut(s: &[u8], header_len: usize, reference: &[N]) {
    for cuts in cut_sets(s, header_len, s.len() as u64) {
        let (ev, r) = run_cuts_aws(s, &cuts, Limits::default());
        r.unwrap();
        assert_eq!(
            normalize(&ev),
            reference,
            "cuts {:?}",
            &cuts[..cuts.len().min(20)]
        );
    }
    sizes_are_what_was_emitted(reference);
}

fn sizes_are_what_was_emitted(n: &[N]) {
    let mut emitted = 0;
    for e in n {
        match e {
            N::Start(_) => emitted = 0,
            N::Data(d) => emitted += d.len() as u64,
            N::End(f) => {
                assert_eq!(f.size, emitted, "{f:?}");
                assert_eq!(f.whole_size, emitted, "{f:?}");
            }
            _ => {}
        }
    }
}

/// Header, then what each fragment sends.
fn expected(header: &[u8], fragments: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let data = fragments
        .iter()
        .map(|(tc, blocks)| [head(*tc), blocks.clone()].concat())
        .collect();
    (header.to_vec(), data)
}

fn header_and_data(n: &[N]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let header = n
        .iter()
        .find_map(|e| match e {
            N::Header(b, ..) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    let data = n
        .iter()
        .filter_map(|e| match e {
            N::Data(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    (header, data)
}

#[test]
fn cluster_heads_take_aws_s_shape_and_frames_stay() {
    for known in [false, true] {
        let (header, s) = stream_av(3, known);
        let (ev, r) = aws(&s);
        r.unwrap();
        let reference = normalize(&ev);
        let blocks = av_blocks().concat();
        let want = expected(
            &header,
            &[(0, blocks.clone()), (2000, blocks.clone()), (4000, blocks)],
        );
        assert_eq!(header_and_data(&reference), want, "known size {known}");
        same_at_every_cut(&s, header.len(), &reference);
        // The same stream sent again is unchanged: the shape is a fixed point.
        let mut again = header.clone();
        for d in &want.1 {
            again.extend_from_slice(d);
        }
        let (ev, r) = aws(&again);
        r.unwrap();
        assert_eq!(header_and_data(&normalize(&ev)), want);
    }
    // Without AWS shape every byte is as it came.
    let (header, s) = stream_av(2, false);
    let (ev, _) = run(&s);
    let (h, data) = header_and_data(&normalize(&ev));
    assert_eq!([h, data.concat()].concat(), s);
    assert_eq!(header, header_av());
}

/// The header of [`header_av`] with the audio's TrackEntry first, as audio track 1, and the
/// video as track 2.
fn header_audio_first() -> Vec<u8> {
    let mut h = ebml_header("matroska");
    h.extend(segment_unknown_size());
    h.extend(tags("ENCODER"));
    h.extend(info(1_000_000));
    h.extend(build::tracks(&[
        Track::audio(1, "A_AAC"),
        Track::video(2, AVC),
    ]));
    h
}

/// A SimpleBlock whose track number takes two bytes (`0x40 0x0N`).
fn long_form_block(track: u8, rel: i16, payload_len: usize) -> Vec<u8> {
    let mut body = vec![0x40, track];
    body.extend_from_slice(&rel.to_be_bytes());
    body.push(0x80);
    body.extend(payload(payload_len, 3));
    build::element(ID_SIMPLE_BLOCK, &body)
}

/// Clusters with audio first: audio blocks, a video key frame, a video BlockGroup, a
/// long-form audio block. `swap` gives the same with the track numbers swapped.
fn audio_first_blocks(swap: bool) -> Vec<Vec<u8>> {
    let (audio, video) = if swap { (2, 1) } else { (1, 2) };
    vec![
        simple_block(audio, 0, true, 90),
        simple_block(video, 5, true, 700),
        simple_block(audio, 23, true, 90),
        block_group(video, 38, true, 400),
        long_form_block(audio as u8, 46, 80),
        simple_block(video, 71, false, 300),
    ]
}

#[test]
fn audio_first_is_renumbered_video_one_audio_two() {
    let header = header_audio_first();
    let mut s = header.clone();
    for i in 0..3 {
        s.extend(cluster(i * 100, false, &audio_first_blocks(false)));
    }
    let (ev, r) = aws(&s);
    r.unwrap();
    let Some(Event::Header(h)) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(h.renumbered, [(2, 1), (1, 2)]);
    let tracks: Vec<_> = h
        .tracks
        .iter()
        .map(|t| (t.number, t.track_type, t.codec_id.as_str()))
        .collect();
    assert_eq!(tracks, [(1, 1, AVC), (2, 2, "A_AAC")]);
    let reference = normalize(&ev);
    // The header as if the video had been linked first; the blocks' numbers swapped.
    let blocks = audio_first_blocks(true).concat();
    let want = expected(
        &header_av(),
        &[(0, blocks.clone()), (100, blocks.clone()), (200, blocks)],
    );
    assert_eq!(header_and_data(&reference), want);
    // The video decides the fragments' start (a key frame), renumbered or not.
    let starts: Vec<_> = reference
        .iter()
        .filter_map(|e| match e {
            N::Start(s) => Some(s.key_frame),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [true, true, true]);
    same_at_every_cut(&s, header.len(), &reference);
    // Without AWS shape: as it came, with the playback warning's numbers.
    let (ev, _) = run(&s);
    let Some(Event::Header(h)) = ev.first() else {
        panic!()
    };
    assert!(h.renumbered.is_empty());
    assert_eq!(h.tracks[1].number, 2);
    assert_eq!(h.tracks[1].track_type, TRACK_TYPE_VIDEO);
}

#[test]
fn renumbered_frames_are_not_copied() {
    let header = header_audio_first();
    let mut s = header.clone();
    for i in 0..3 {
        s.extend(cluster(i * 100, false, &audio_first_blocks(false)));
    }
    let cuts = muxer_cuts(&s, header.len());
    let mut sp = Splitter::new(Limits::default()).aws_shape(true);
    let mut out = Vec::new();
    let (mut last, mut sliced, mut copied) = (0, 0, 0);
    for c in cuts.into_iter().chain([s.len()]) {
        let buf = Bytes::copy_from_slice(&s[last..c]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let before = out.len();
        sp.push(buf, &mut out).unwrap();
        for e in &out[before..] {
            if let Event::FragmentData(d) = e {
                if range.contains(&(d.as_ptr() as usize)) {
                    sliced += d.len();
                } else {
                    copied += d.len();
                    // A coalesced cluster prefix; a renumbered block header, whole (the
                    // buffer it came in); or a renumbered track byte (in a BlockGroup).
                    let track_byte = d.len() == 1 && [0x81, 0x82, 0x02].contains(&d[0]);
                    let block_header = d.len() == c - last && d[0] == 0xA3 && d[..] != s[last..c];
                    assert!(
                        track_byte || block_header || d.starts_with(&head(0)[..5]),
                        "{d:02X?}"
                    );
                }
            }
        }
        last = c;
    }
    sp.finish(&mut out).unwrap();
    // Each cluster copies its held prefix (head, first audio block) and renumbered block
    // headers; every other frame is a slice of the input.
    assert!(copied < 3 * 200, "copied {copied}, sliced {sliced}");
    assert!(sliced >= 3 * (700 + 90 + 400 + 80 + 300), "sliced {sliced}");
}

#[test]
fn what_cannot_be_renumbered_in_place_is_sent_as_it_came() {
    // Two video tracks (which one is track 1 is the user's choice), or a number that a
    // block cannot hold in one byte: left alone (the producer warns).
    for tracks in [
        [
            Track::audio(1, "A_AAC"),
            Track::video(2, AVC),
            Track::video(3, AVC),
        ],
        [
            Track::audio(1, "A_AAC"),
            Track::video(200, AVC),
            Track::audio(3, "A_AAC"),
        ],
    ] {
        let mut header = ebml_header("matroska");
        header.extend(segment_unknown_size());
        header.extend(info(1_000_000));
        header.extend(build::tracks(&tracks));
        let blocks: Vec<_> = tracks
            .iter()
            .map(|t| simple_block(t.number, 0, true, 50))
            .collect();
        let mut s = header.clone();
        s.extend(cluster(0, false, &blocks));
        let (ev, r) = aws(&s);
        r.unwrap();
        let Some(Event::Header(h)) = ev.first() else {
            panic!()
        };
        assert!(h.renumbered.is_empty());
        assert_eq!(
            header_and_data(&normalize(&ev)),
            expected(&header, &[(0, blocks.concat())])
        );
    }
}

#[test]
fn head_elements_are_left_out_and_a_known_size_cluster_becomes_unknown() {
    let void = |n| build::element(ID_VOID, &vec![0; n]);
    let block = simple_block(1, 0, true, 100);
    let mut s = header_av();
    // Before the Timecode: CRC-32, Void; after: PrevSize, Position, a second Timecode, and a
    // Void that stays.
    let mut c = Writer::new()
        .unknown_size(ID_CLUSTER)
        .element(ID_CRC_32, &[1, 2, 3, 4])
        .finish();
    c.extend(void(20));
    c.extend(build::uint(ID_TIMECODE, 7));
    c.extend(build::uint(ID_PREV_SIZE, 1234));
    c.extend(build::uint(ID_POSITION, 99_000));
    c.extend(build::uint(ID_TIMECODE, 8));
    c.extend(void(3));
    c.extend(&block);
    s.extend(&c);
    s.extend(build::cluster_sized(
        40,
        &[build::uint(ID_PREV_SIZE, c.len() as u64), block.clone()],
    ));
    let (ev, r) = aws(&s);
    r.unwrap();
    let reference = normalize(&ev);
    assert_eq!(
        header_and_data(&reference),
        expected(
            &header_av(),
            &[(7, [void(3), block.clone()].concat()), (40, block.clone())]
        )
    );
    same_at_every_cut(&s, header_av().len(), &reference);
    // A Segment-level element inside a known-size cluster would end the cluster once it is
    // sent with an unknown size: refused in AWS shape (passed through otherwise).
    let mut s = header_av();
    s.extend(build::cluster_sized(0, &[block.clone(), tags("X")]));
    assert!(run(&s).1.is_ok());
    assert!(matches!(
        aws(&s).1,
        Err(MkvError::UnexpectedElement { id: ID_TAGS, .. })
    ));
    // A block before the Timecode is refused in both shapes, a BlockGroup too in AWS shape.
    for early in [simple_block(1, 0, true, 10), block_group(1, 0, false, 10)] {
        let mut s = header_av();
        s.extend(Writer::new().unknown_size(ID_CLUSTER).finish());
        s.extend(&early);
        s.extend(build::uint(ID_TIMECODE, 0));
        assert!(matches!(aws(&s).1, Err(MkvError::UnexpectedElement { .. })));
    }
}

#[test]
fn sizes_and_cuts_count_what_is_sent() {
    // A cluster whose head shrinks by 300 bytes (a Void before the Timecode): the byte limit
    // counts the bytes sent, not those of the input.
    let blocks: Vec<Vec<u8>> = (0..12i16)
        .map(|i| simple_block(1, i * 100, i == 0, 300))
        .collect();
    let mut s = header_av();
    let mut c = Writer::new().unknown_size(ID_CLUSTER).finish();
    c.extend(build::element(ID_VOID, &[0; 300]));
    c.extend(build::uint(ID_TIMECODE, 0));
    c.extend(build::uint(ID_PREV_SIZE, 1234));
    for b in &blocks {
        c.extend(b);
    }
    s.extend(&c);
    s.extend(cluster(2000, false, &[simple_block(1, 0, true, 300)]));
    let five = head(0).len() + blocks[..5].concat().len();
    let limits = Limits {
        max_fragment_bytes: five as u64,
        ..Limits::default()
    };
    for cuts in [vec![], every(1, s.len()), every(13, s.len())] {
        let (ev, r) = run_cuts_aws(&s, &cuts, limits);
        r.unwrap();
        let n = normalize(&ev);
        let Some(N::Cut(cut)) = n.iter().find(|e| matches!(e, N::Cut(_))) else {
            panic!("{n:?}")
        };
        assert_eq!(cut.whole_size as usize, five);
        assert_eq!(
            cut.blocks, 5,
            "the sixth block would have crossed the limit"
        );
        let (_, data) = header_and_data(&n);
        assert_eq!(
            &data[0][..five],
            &[head(0), blocks[..5].concat()].concat()[..]
        );
    }
    // The span limit: cut before the block that crosses 10 s, at the size sent.
    let blocks: Vec<Vec<u8>> = (0..12i16)
        .map(|i| simple_block(1, i * 1000, i == 0, 300))
        .collect();
    let mut s = header_av();
    s.extend(cluster(0, false, &blocks));
    s.extend(cluster(12_000, false, &[simple_block(1, 0, true, 300)]));
    let limits = Limits {
        max_fragment_span_ns: 10_000_000_000,
        ..Limits::default()
    };
    let eleven = head(0).len() + blocks[..11].concat().len();
    let mut rng = Rng(11);
    for round in 0..100 {
        let cuts = match round {
            0 => vec![],
            _ => rng.cuts(s.len(), 700),
        };
        let (ev, r) = run_cuts_aws(&s, &cuts, limits);
        r.unwrap();
        let n = normalize(&ev);
        let Some(N::Cut(cut)) = n.iter().find(|e| matches!(e, N::Cut(_))) else {
            panic!("{n:?}")
        };
        assert_eq!(cut.whole_size as usize, eleven, "round {round}");
    }
    // Truncated inside the last block: whole up to that block, in the bytes sent.
    let (_, s) = stream_av(2, false);
    let (ev, _) = aws(&s);
    let Some(Event::FragmentEnd(complete)) = ev.last() else {
        panic!()
    };
    assert_eq!(
        complete.size as usize,
        head(0).len() + av_blocks().concat().len()
    );
    let last_block = av_blocks().last().unwrap().len() as u64;
    for cut in [1, 5, last_block as usize - 1] {
        for step in [1, 7, 100, s.len()] {
            let data = &s[..s.len() - cut];
            let mut sp = Splitter::new(Limits::default()).aws_shape(true);
            let mut out = Vec::new();
            for chunk in data.chunks(step) {
                sp.push(Bytes::copy_from_slice(chunk), &mut out).unwrap();
            }
            assert_eq!(sp.whole_size(), Some(complete.size - last_block));
            let _ = sp.finish(&mut out);
            let Some(Event::FragmentEnd(end)) = out.last() else {
                panic!("no FragmentEnd")
            };
            assert_eq!(
                end.whole_size,
                complete.size - last_block,
                "cut {cut} step {step}"
            );
        }
    }
    // Inside the second cluster's head (12 bytes of header, 4 of Timecode): nothing of it
    // is whole yet (before its header is complete, the first cluster is still open).
    let cluster_start = header_av().len() + cluster(0, false, &av_blocks()).len();
    for end in cluster_start + 1..cluster_start + 16 {
        let mut sp = Splitter::new(Limits::default()).aws_shape(true);
        let mut out = Vec::new();
        sp.push(Bytes::copy_from_slice(&s[..end]), &mut out)
            .unwrap();
        let whole = if end >= cluster_start + 12 {
            0
        } else {
            complete.size
        };
        assert_eq!(sp.whole_size(), Some(whole), "{end}");
        let (ev, r) = run_cuts_aws(&s[..end], &[], Limits::default());
        assert!(r.is_err());
        assert_eq!(fragments(&normalize(&ev)), 1, "the first fragment only");
    }
}

#[test]
fn random_input_never_panics_and_is_cut_independent_in_aws_shape() {
    let header = header_audio_first();
    let mut valid = header.clone();
    for i in 0..3 {
        valid.extend(cluster(i * 100, i == 1, &audio_first_blocks(false)));
    }
    let mut rng = Rng(4242);
    for round in 0..1000 {
        let mut data = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let i = header.len().saturating_sub(60) + rng.below(data.len() - header.len() + 60);
            data[i] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            data.truncate(rng.below(data.len()));
        }
        let (ev_a, ra) = run_cuts_aws(&data, &[], Limits::default());
        let gap = 1 + rng.below(64);
        let cuts = rng.cuts(data.len(), gap);
        let (ev_b, rb) = run_cuts_aws(&data, &cuts, Limits::default());
        assert_eq!(ra, rb, "round {round}");
        let (na, nb) = (normalize(&ev_a), normalize(&ev_b));
        if ra.is_ok() {
            assert_eq!(na, nb, "round {round}");
            sizes_are_what_was_emitted(&na);
        } else {
            let strip = |n: &[N]| {
                n.iter()
                    .filter(|e| !matches!(e, N::Data(_)))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&na), strip(&nb), "round {round}");
        }
    }
}

/// A SimpleBlock of 60 bytes of frame whose payload depends on `seed` only (not on its time,
/// which the splitter may rewrite).
fn frame(track: u64, rel: i16, key: bool, seed: u8) -> Vec<u8> {
    build::simple_block(track, rel, key, &payload(60, seed))
}

/// A delta frame of track 1 with its track number in the long (2-byte) form.
fn long_form_delta(rel: i16) -> Vec<u8> {
    let mut body = vec![0x40, 1];
    body.extend_from_slice(&rel.to_be_bytes());
    body.push(0x00);
    body.extend(payload(60, 3));
    build::element(ID_SIMPLE_BLOCK, &body)
}

/// Like [`frame`], in a BlockGroup (a delta frame: with a ReferenceBlock).
fn grouped(track: u64, rel: i16, seed: u8) -> Vec<u8> {
    build::block_group(track, rel, false, &payload(60, seed))
}

/// Time going back is neither refused nor dropped in AWS shape: from the jump on, every time
/// is sent shifted, so that the fragment after it follows the last frame sent by one block
/// spacing. A whole cluster that goes back (kvssink's own muxing) keeps its blocks; a key
/// frame that goes back inside a cluster (matroskamux writes on into its open cluster, at
/// negative block times) ends the fragment there, and the rest of the cluster is sent in
/// fragments of its own, one per key frame, with rewritten block times. The expected bytes
/// are built here; the same at every cut, known-size clusters or not.
#[test]
fn time_going_back_is_sent_on_after_the_last_frame() {
    for known in [false, true] {
        let three = |seed: u8| {
            vec![
                frame(1, 0, true, seed),
                frame(1, 33, false, seed + 1),
                frame(1, 66, false, seed + 2),
            ]
        };
        let header = header_av();
        let mut s = header.clone();
        s.extend(cluster(1000, known, &three(10)));
        s.extend(cluster(2000, known, &three(20)));
        // A whole cluster 1566 earlier than the last frame.
        s.extend(cluster(500, known, &three(30)));
        s.extend(cluster(1500, known, &three(40)));
        // Inside one cluster: key frames at 1000 and 2000 after 4000, an audio frame, a
        // BlockGroup and a long-form track number among them.
        s.extend(cluster(
            4000,
            known,
            &[
                frame(1, 0, true, 50),
                frame(1, 33, false, 51),
                frame(1, -3000, true, 52),
                frame(2, -2990, true, 53),
                long_form_delta(-2967),
                frame(1, -2000, true, 54),
                grouped(1, -1967, 55),
            ],
        ));
        s.extend(cluster(5000, known, &three(60)));
        let (ev, r) = aws(&s);
        r.unwrap();
        let reference = normalize(&ev);
        let backs: Vec<_> = reference
            .iter()
            .filter_map(|e| match e {
                N::Back(to, shift) => Some((*to, *shift)),
                _ => None,
            })
            .collect();
        // 2066 + 33 for 500; then 1500 + 1599 = 3099, 4000 + 1599 = 5599 and 5632 after
        // it, so the key frame at 1000 (sent at 2599 until then) goes to 5632 + 33.
        assert_eq!(backs, [(2099, 1599), (5665, 5665 - 2599)]);
        let shift = 5665 - 1000;
        let want = expected(
            &header,
            &[
                (1000, three(10).concat()),
                (2000, three(20).concat()),
                (2099, three(30).concat()),
                (3099, three(40).concat()),
                (
                    5599,
                    [frame(1, 0, true, 50), frame(1, 33, false, 51)].concat(),
                ),
                (
                    1000 + shift,
                    [
                        frame(1, 0, true, 52),
                        frame(2, 10, true, 53),
                        long_form_delta(33),
                    ]
                    .concat(),
                ),
                (
                    2000 + shift,
                    [frame(1, 0, true, 54), grouped(1, 33, 55)].concat(),
                ),
                (5000 + shift, three(60).concat()),
            ],
        );
        assert_eq!(header_and_data(&reference), want, "known size {known}");
        let tcs: Vec<_> = reference
            .iter()
            .filter_map(|e| match e {
                N::End(f) => Some((f.timecode, f.first_block_time, f.last_block_time)),
                _ => None,
            })
            .collect();
        assert_eq!(
            tcs,
            [
                (1000, 1000, 1066),
                (2000, 2000, 2066),
                (2099, 2099, 2165),
                (3099, 3099, 3165),
                (5599, 5599, 5632),
                (1000 + shift, 1000 + shift as i64, 1033 + shift as i64),
                (2000 + shift, 2000 + shift as i64, 2033 + shift as i64),
                (5000 + shift, 5000 + shift as i64, 5066 + shift as i64),
            ]
        );
        same_at_every_cut(&s, header.len(), &reference);
        // Cut one byte at a time, the key frame's header went out before it was known to
        // go back: that fragment says where it ends and that the cluster goes on.
        let (ev, _) = run_cuts_aws(&s, &every(1, s.len()), Limits::default());
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::FragmentEnd(f) if f.continued && f.whole_size < f.size
        )));
    }
}

/// A key frame earlier than a video frame already sent, in a cluster whose Timecode did not
/// go back (time went back by less than a group of pictures): that cluster, its audio ahead
/// of the key frame included, is sent shifted to follow the last frame sent.
#[test]
fn a_key_frame_before_a_frame_already_sent_moves_its_cluster() {
    for known in [false, true] {
        let header = header_av();
        let mut s = header.clone();
        let first = [
            frame(1, 0, true, 1),
            frame(1, 33, false, 2),
            frame(1, 66, false, 3),
            frame(1, 100, false, 4),
        ];
        s.extend(cluster(1000, known, &first));
        // The next group of pictures 50 ms early: its key frame at 1050, before the frame
        // at 1100 (its audio at 1040 ahead of it in the cluster).
        let second = [
            frame(2, 0, true, 5),
            frame(1, 10, true, 6),
            frame(1, 43, false, 7),
        ];
        s.extend(cluster(1040, known, &second));
        s.extend(cluster(1500, known, &[frame(1, 0, true, 8)]));
        let (ev, r) = aws(&s);
        r.unwrap();
        let reference = normalize(&ev);
        // After 1100 by the first cluster's spacing (33): the key frame at 1133.
        assert!(reference.contains(&N::Back(1123, 83)), "{reference:?}");
        let want = expected(
            &header,
            &[
                (1000, first.concat()),
                (1123, second.concat()),
                (1583, frame(1, 0, true, 8)),
            ],
        );
        assert_eq!(header_and_data(&reference), want, "known size {known}");
        same_at_every_cut(&s, header.len(), &reference);
    }
}

/// A key frame going back inside a cluster of a renumbered stream (audio track 1, video
/// track 2): the re-timed blocks keep their renumbered track (video sent as 1, audio as 2).
#[test]
fn time_going_back_in_a_renumbered_stream() {
    let header = header_audio_first();
    let mut s = header.clone();
    s.extend(cluster(
        4000,
        false,
        &[
            frame(2, 0, true, 1),
            frame(1, 10, true, 2),
            frame(2, 33, false, 3),
            // Back to 1000.
            frame(2, -3000, true, 4),
            frame(1, -2990, true, 5),
            long_form_block(1, -2980, 20),
        ],
    ));
    let (ev, r) = aws(&s);
    r.unwrap();
    let reference = normalize(&ev);
    // After 4033 by the spacing of the frames before (16): 4049.
    assert!(reference.contains(&N::Back(4049, 3049)), "{reference:?}");
    // (the audio's track number in the long form, renumbered in its last byte)
    let long = long_form_block(2, 20, 20);
    let want = expected(
        &header_av(),
        &[
            (
                4000,
                [
                    frame(1, 0, true, 1),
                    frame(2, 10, true, 2),
                    frame(1, 33, false, 3),
                ]
                .concat(),
            ),
            (
                4049,
                [frame(1, 0, true, 4), frame(2, 10, true, 5), long].concat(),
            ),
        ],
    );
    assert_eq!(header_and_data(&reference), want);
    same_at_every_cut(&s, header.len(), &reference);
}

/// (track, time, key) of every block a fragment sent (as it went out: AWS's cluster head,
/// then SimpleBlocks and BlockGroups), read here, apart from the splitter.
fn sent_blocks(fragment: &[u8]) -> Vec<(u64, i64, bool)> {
    let mut out = Vec::new();
    let head = head(0).len();
    let timecode = i64::from_be_bytes(fragment[7..15].try_into().unwrap());
    let mut at = head;
    while at < fragment.len() {
        let h = read_header(&fragment[at..]).unwrap().unwrap();
        let body = at + h.len;
        let end = body + h.size.unwrap() as usize;
        let block = match h.id {
            ID_SIMPLE_BLOCK => Some((&fragment[body..end], true)),
            ID_BLOCK_GROUP => {
                let g = read_header(&fragment[body..]).unwrap().unwrap();
                assert_eq!(g.id, ID_BLOCK);
                Some((&fragment[body + g.len..], false))
            }
            _ => None,
        };
        if let Some((b, simple)) = block {
            let l = vint_len(b[0]).unwrap();
            let (track, _) = kvs_format::ebml::read_vint(b).unwrap().unwrap();
            let rel = i16::from_be_bytes([b[l], b[l + 1]]);
            out.push((
                track,
                timecode + i64::from(rel),
                simple && b[l + 2] & 0x80 != 0,
            ));
        }
        at = end;
    }
    out
}

/// Streams whose time goes back and forth at random, in clusters and inside them, with audio,
/// BlockGroups and random cuts: never an error in AWS shape, the same at every cut, nothing
/// dropped, fragment timecodes never going back, and every video key frame sent no earlier
/// than any video frame before it.
#[test]
fn random_times_going_back_are_sent_in_order_at_every_cut() {
    let mut rng = Rng(77);
    let (mut backs, mut splits) = (0, 0);
    for round in 0..300 {
        let header = header_av();
        let mut s = header.clone();
        let mut blocks_in = 0;
        let clusters = 1 + rng.below(6);
        for _ in 0..clusters {
            let tc = rng.below(20_000) as u64;
            let mut kids = Vec::new();
            for i in 0..1 + rng.below(6) {
                let video = rng.below(3) != 0;
                let rel = rng.below(8000) as i16 - 4000;
                let key = i == 0 || rng.below(3) == 0;
                let seed = rng.below(256) as u8;
                kids.push(match (video, rng.below(5)) {
                    (true, 0) if !key => grouped(1, rel, seed),
                    (true, _) => frame(1, rel, key, seed),
                    (false, _) => frame(2, rel, true, seed),
                });
                blocks_in += 1;
            }
            s.extend(cluster(tc, rng.below(2) == 0, &kids));
        }
        let (ev, r) = aws(&s);
        r.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let reference = normalize(&ev);
        let gap = 1 + rng.below(40);
        for cuts in [every(1, s.len()), rng.cuts(s.len(), gap)] {
            let (ev, r) = run_cuts_aws(&s, &cuts, Limits::default());
            r.unwrap();
            assert_eq!(normalize(&ev), reference, "round {round}");
        }
        sizes_are_what_was_emitted(&reference);
        backs += reference
            .iter()
            .filter(|e| matches!(e, N::Back(..)))
            .count();
        splits += fragments(&reference) - clusters;
        let (_, data) = header_and_data(&reference);
        let timecodes: Vec<i64> = data
            .iter()
            .map(|f| i64::from_be_bytes(f[7..15].try_into().unwrap()))
            .collect();
        assert!(
            timecodes.windows(2).all(|w| w[0] <= w[1]),
            "round {round}: {timecodes:?}"
        );
        let sent: Vec<(u64, i64, bool)> = data.iter().flat_map(|f| sent_blocks(f)).collect();
        // What the splitter skips on its own (frames before the first video key frame, as
        // the producer does; clusters that do not start with one) is not its concern here:
        // every block of the input is in a fragment.
        assert_eq!(sent.len(), blocks_in, "round {round}");
        let mut video_max = i64::MIN;
        for &(track, t, key) in &sent {
            if track == 1 {
                assert!(!key || t >= video_max, "round {round}: {sent:?}");
                video_max = video_max.max(t);
            }
        }
    }
    // The rounds went back often, inside clusters too.
    assert!(
        backs > 400 && splits > 150,
        "{backs} jumps back, {splits} clusters split"
    );
}
