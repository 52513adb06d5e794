use super::*;
use kvs_format::build::*;
use kvs_format::ebml::{Writer, write_vint};

/// Feeds `data` in chunks of `step` bytes; returns events and final result.
fn run(data: &[u8], step: usize, max: u64) -> (Vec<Event>, Result<(), MkvError>) {
    let mut p = Parser::new(max);
    let mut out = Vec::new();
    for c in data.chunks(step.max(1)) {
        if let Err(e) = p.push(Bytes::copy_from_slice(c), &mut out) {
            return (out, Err(e));
        }
    }
    let r = p.finish(&mut out);
    (out, r)
}

fn summary(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .map(|e| match e {
            Event::Header(h) => format!("H{}", h.tracks.len()),
            Event::ClusterStart { seq } => format!("S{seq}"),
            Event::ClusterTimecode { timecode, .. } => format!("T{timecode}"),
            Event::Block {
                track,
                timecode,
                key,
                ..
            } => {
                format!("B{track}:{timecode}{}", if *key { "k" } else { "" })
            }
            Event::ClusterTooLarge { seq } => format!("L{seq}"),
            Event::ClusterEnd {
                seq,
                bytes,
                before_tags,
                ..
            } => {
                let len = bytes.as_ref().map(|b| b.len()).unwrap_or(0);
                format!("E{seq}:{len}{}", if *before_tags { "t" } else { "" })
            }
            Event::Tags(items) => {
                let items: Vec<String> = items.iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!("M{}", items.join(","))
            }
            Event::EndOfFragmentTag => "EOF".into(),
        })
        .collect()
}

fn two_clusters() -> (Vec<u8>, usize, usize, usize) {
    let mut d = simple_header();
    let hl = d.len();
    let c1 = simple_cluster(0, 3, 33, 100);
    let c2 = simple_cluster(100, 2, 33, 50);
    d.extend(&c1);
    d.extend(&c2);
    (d, hl, c1.len(), c2.len())
}

#[test]
fn parses_in_any_chunking() {
    let (d, hl, l1, l2) = two_clusters();
    let expect = vec![
        "H1".to_string(),
        "S1".into(),
        "T0".into(),
        "B1:0k".into(),
        "B1:33".into(),
        "B1:66".into(),
        format!("E1:{l1}"),
        "S2".into(),
        "T100".into(),
        "B1:0k".into(),
        "B1:33".into(),
        format!("E2:{l2}"),
    ];
    for step in [1, 2, 3, 7, 13, 64, 4096] {
        let (ev, r) = run(&d, step, 1 << 20);
        r.unwrap();
        assert_eq!(summary(&ev), expect, "step {step}");
        let Event::Header(h) = &ev[0] else { panic!() };
        assert_eq!(h.bytes.len(), hl);
        assert_eq!(&h.bytes[..], &d[..hl]);
        let Event::ClusterEnd { bytes: Some(b), .. } = &ev[6] else {
            panic!()
        };
        assert_eq!(
            &b.to_bytes()[..],
            &d[hl..hl + l1],
            "cluster bytes byte-for-byte"
        );
    }
}

#[test]
fn sized_clusters_and_block_groups() {
    let mut d = simple_header();
    d.extend(cluster_sized(
        5,
        &[
            block_group(1, 0, true, b"abc"),
            block_group(1, 10, false, b"def"),
            element(ID_VOID, &[0; 4]),
        ],
    ));
    d.extend(end_of_fragment_tags());
    let (ev, r) = run(&d, 5, 1 << 20);
    r.unwrap();
    let s = summary(&ev);
    assert_eq!(&s[..5], &["H1", "S1", "T5", "B1:0k", "B1:10"]);
    assert!(s[5].starts_with("E1:"));
    assert_eq!(s[6], "EOF");
}

#[test]
fn matroskamux_layout_and_eof_tag_ends_unknown_cluster() {
    // Tags + Void + SeekHead before Info, PrevSize inside the cluster.
    let mut d = ebml_header("webm");
    d.extend(segment_unknown_size());
    d.extend(tags(&[("ENCODER", "x")]));
    d.extend(element(ID_VOID, &[0; 10]));
    d.extend(element(ID_SEEK_HEAD, &[]));
    d.extend(info(1_000_000));
    d.extend(tracks(&[Track {
        number: 1,
        track_type: 1,
        codec_id: "V_MPEG4/ISO/AVC",
    }]));
    d.extend(cluster_start(0));
    d.extend(uint(0xAB, 0)); // PrevSize
    d.extend(simple_block(1, 0, true, b"x"));
    d.extend(end_of_fragment_tags());
    let (ev, r) = run(&d, 3, 1 << 20);
    r.unwrap();
    let s = summary(&ev);
    assert_eq!(&s[..4], &["H1", "S1", "T0", "B1:0k"]);
    assert!(s[4].starts_with("E1:") && s[4] != "E1:0", "{s:?}");
    assert_eq!(summary(&ev).last().unwrap(), "EOF");
}

#[test]
fn header_restart_mid_stream() {
    let (mut d, _, _, _) = two_clusters();
    let (d2, _, _, _) = two_clusters();
    d.extend(d2);
    let (ev, r) = run(&d, 10, 1 << 20);
    r.unwrap();
    let headers = ev.iter().filter(|e| matches!(e, Event::Header(_))).count();
    let ends = ev
        .iter()
        .filter(|e| matches!(e, Event::ClusterEnd { bytes: Some(_), .. }))
        .count();
    assert_eq!((headers, ends), (2, 4));
}

#[test]
fn too_large_cluster_is_discarded_and_parsing_continues() {
    let mut d = simple_header();
    d.extend(simple_cluster(0, 10, 10, 1000)); // ~10 KB
    d.extend(simple_cluster(200, 1, 10, 10));
    let (ev, r) = run(&d, 100, 5000);
    r.unwrap();
    let s = summary(&ev);
    assert!(s.contains(&"L1".to_string()), "{s:?}");
    assert!(s.contains(&"E1:0".to_string()), "{s:?}");
    assert!(
        s.iter().any(|x| x.starts_with("E2:") && x != "E2:0"),
        "{s:?}"
    );
}

#[test]
fn huge_declared_block_is_bounded() {
    let mut d = simple_header();
    d.extend(cluster_start(0));
    // SimpleBlock declaring 100 GB
    d.push(0xA3);
    write_vint(&mut d, 100 * 1024 * 1024 * 1024);
    d.extend([0x81, 0, 0, 0x80]);
    let mut p = Parser::new(50 << 20);
    let mut out = Vec::new();
    p.push(Bytes::from(d), &mut out).unwrap();
    assert!(matches!(out.last(), Some(Event::ClusterTooLarge { .. })));
    // keep feeding: memory stays bounded
    let chunk = Bytes::from(vec![0u8; 1 << 20]);
    for _ in 0..100 {
        p.push(chunk.clone(), &mut out).unwrap();
        assert!(p.retained() <= 2 << 20, "retained {}", p.retained());
    }
    assert!(matches!(p.finish(&mut out), Err(MkvError::Truncated(_))));
}

#[test]
fn garbage_and_truncation() {
    // JPEG bytes
    let (_, r) = run(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], 1, 1 << 20);
    assert!(matches!(r, Err(MkvError::Invalid(_))), "{r:?}");
    // text
    let (_, r) = run(b"hello world, this is not mkv", 4, 1 << 20);
    assert!(r.is_err());
    // zero bytes
    let (_, r) = run(&[0u8; 64], 8, 1 << 20);
    assert!(matches!(r, Err(MkvError::Invalid(_))));
    // truncated inside a block
    let (d, _, _, _) = two_clusters();
    let (_, r) = run(&d[..d.len() - 5], 7, 1 << 20);
    assert!(matches!(r, Err(MkvError::Truncated(_))), "{r:?}");
    // wrong doc type
    let mut d = ebml_header("avi");
    d.extend(segment_unknown_size());
    let (_, r) = run(&d, 3, 1 << 20);
    assert!(matches!(r, Err(MkvError::Invalid(m)) if m.contains("DocType")));
    // cluster before tracks
    let mut d = ebml_header("matroska");
    d.extend(segment_unknown_size());
    d.extend(info(1_000_000));
    d.extend(simple_cluster(0, 1, 1, 1));
    let (_, r) = run(&d, 3, 1 << 20);
    assert!(matches!(r, Err(MkvError::Invalid(m)) if m.contains("Tracks")));
    // child overrunning its parent
    let mut d = simple_header();
    let mut c = cluster_sized(0, &[simple_block(1, 0, true, b"abcdef")]);
    let n = c.len();
    c[n - 11] = 0x80 | 60; // enlarge the block's size past the cluster
    d.extend(c);
    let (_, r) = run(&d, 3, 1 << 20);
    assert!(r.is_err());
    // block before Timecode
    let mut d = simple_header();
    d.extend(Writer::new().unknown_size(ID_CLUSTER).finish());
    d.extend(simple_block(1, 0, true, b"a"));
    let (_, r) = run(&d, 3, 1 << 20);
    assert!(matches!(r, Err(MkvError::Invalid(m)) if m.contains("Timecode")));
}

#[test]
fn fuzz_never_panics() {
    // deterministic pseudo-random corruption of a valid stream
    let (d, _, _, _) = two_clusters();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut m = d.clone();
        for _ in 0..(rnd() % 4 + 1) {
            let i = (rnd() as usize) % m.len();
            m[i] = rnd() as u8;
        }
        let cut = (rnd() as usize) % (m.len() + 1);
        let step = (rnd() % 50 + 1) as usize;
        let _ = run(&m[..cut], step, 4096);
    }
}

#[test]
fn large_clusters_are_zero_copy_pieces() {
    let mut d = simple_header();
    let c = simple_cluster(0, 40, 10, 10_000); // 400 kB over 7 chunks
    d.extend(&c);
    d.extend(end_of_fragment_tags());
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    for chunk in d.chunks(65536) {
        p.push(Bytes::copy_from_slice(chunk), &mut out).unwrap();
    }
    p.finish(&mut out).unwrap();
    let pieces = out
        .iter()
        .find_map(|e| match e {
            Event::ClusterEnd { bytes, .. } => bytes.clone(),
            _ => None,
        })
        .unwrap();
    assert!(pieces.iter().count() > 1);
    assert_eq!(pieces.len(), c.len());
    assert_eq!(&pieces.to_bytes()[..], &c[..]);
}

#[test]
fn boundaries_only_finds_header_and_clusters_without_blocks() {
    let (mut d, hl, l1, l2) = two_clusters();
    d.extend(block_group_cluster());
    let l3 = block_group_cluster().len();
    let expect = vec![
        "H1".to_string(),
        "S1".into(),
        "T0".into(),
        "E1:0".into(),
        "S2".into(),
        "T100".into(),
        "E2:0".into(),
        "S3".into(),
        "T200".into(),
        "E3:0".into(),
    ];
    for step in [1, 2, 3, 7, 13, 64, 4096] {
        let mut p = Parser::boundaries_only();
        let mut ev = Vec::new();
        for c in d.chunks(step) {
            p.push(Bytes::copy_from_slice(c), &mut ev).unwrap();
        }
        p.finish(&mut ev).unwrap();
        assert_eq!(summary(&ev), expect, "step {step}");
        let Event::Header(h) = &ev[0] else { panic!() };
        assert_eq!(&h.bytes[..], &d[..hl]);
        let lens: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ClusterEnd {
                    bytes: None, len, ..
                } => Some(*len),
                _ => None,
            })
            .collect();
        assert_eq!(lens, [l1 as u64, l2 as u64, l3 as u64], "step {step}");
        assert_eq!(p.position(), d.len() as u64);
    }
}

/// A sized cluster at timecode 200 with two BlockGroups.
fn block_group_cluster() -> Vec<u8> {
    cluster_sized(
        200,
        &[
            block_group(1, 0, true, &[1; 30]),
            block_group(1, 33, false, &[2; 30]),
        ],
    )
}

#[test]
fn boundaries_only_keeps_no_cluster_bytes() {
    let mut d = simple_header();
    let c = simple_cluster(0, 40, 10, 10_000); // 400 kB over 7 chunks
    d.extend(&c);
    let c2 = simple_cluster(400, 40, 10, 10_000);
    d.extend(&c2);
    let mut p = Parser::boundaries_only();
    let mut out = Vec::new();
    for chunk in d.chunks(65536) {
        p.push(Bytes::copy_from_slice(chunk), &mut out).unwrap();
        // at most the bytes of one element header or block it is in the middle of
        assert!(p.retained() < 16, "{} bytes retained", p.retained());
    }
    p.finish(&mut out).unwrap();
    let ends: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Event::ClusterEnd { bytes, len, .. } => Some((bytes.is_none(), *len)),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [(true, c.len() as u64), (true, c2.len() as u64)]);
    assert!(!out.iter().any(|e| matches!(e, Event::Block { .. })));
}

#[test]
fn boundaries_only_still_rejects_broken_structure() {
    let (mut d, hl, _, _) = two_clusters();
    // a reserved element ID where the first block should start
    d.insert(hl + cluster_start(0).len(), 0xFF);
    let mut p = Parser::boundaries_only();
    let mut out = Vec::new();
    let r = p
        .push(Bytes::from(d), &mut out)
        .and_then(|()| p.finish(&mut out));
    assert!(matches!(r, Err(MkvError::Invalid(_))), "{r:?}");
    // a body cut in the last block
    let (d, _, _, _) = two_clusters();
    let mut p = Parser::boundaries_only();
    let r = p
        .push(Bytes::copy_from_slice(&d[..d.len() - 10]), &mut out)
        .and_then(|()| p.finish(&mut out));
    assert!(matches!(r, Err(MkvError::Truncated(_))), "{r:?}");
}

#[test]
fn tags_after_a_cluster_are_its_metadata() {
    use kvs_format::kvs::{END_OF_FRAGMENT_TAG, end_of_fragment_tags, fragment_metadata_tags};
    use kvs_format::matroska::tags;
    let mut d = simple_header();
    // Tags before the first cluster belong to the stream header.
    d.extend(tags(&[("title", "x")]));
    let c1 = simple_cluster(0, 1, 10, 10);
    d.extend(&c1);
    d.extend(fragment_metadata_tags(&[("motion", "true"), ("lat", "")]));
    let c2 = simple_cluster(100, 1, 10, 10);
    d.extend(&c2);
    // Metadata and the end-of-fragment tag in one Tags element: the metadata first.
    d.extend(tags(&[("a", "1"), (END_OF_FRAGMENT_TAG, "")]));
    d.extend(end_of_fragment_tags());
    for step in [1, 7, d.len()] {
        let (ev, r) = run(&d, step, 1 << 20);
        r.unwrap();
        let got: Vec<String> = summary(&ev)
            .into_iter()
            .filter(|e| !e.starts_with('B') && !e.starts_with('T'))
            .collect();
        assert_eq!(
            got,
            [
                "H1",
                "S1",
                &format!("E1:{}t", c1.len()),
                "Mmotion=true",
                "Mlat=",
                "S2",
                &format!("E2:{}t", c2.len()),
                "Ma=1",
                "EOF",
                "EOF"
            ],
            "step {step}"
        );
    }
}
