//! The splitter on real `matroskamux` output, recorded with gst-launch-1.0 (these tests run
//! GStreamer, so they are not unit tests of the GStreamer-free `gstkvs::mkv`).

mod common;

use bytes::Bytes;
use common::record::{gst_available, gst_element_exists, record_pipeline};
use gstkvs::mkv::{
    Event, FragmentStart, FragmentSummary, Limits, MkvError, Splitter, TRACK_TYPE_AUDIO,
    TRACK_TYPE_VIDEO, TrackInfo,
};
use kvs_format::build::AVC;

#[path = "../src/mkv/tests/harness.rs"]
mod harness;
use harness::*;

/// Runs a gst-launch pipeline ending in `filesink`; returns the bytes.
fn gst_record(pipeline: &str, name: &str) -> Vec<u8> {
    let dir = common::tempdir();
    record_pipeline(pipeline, &dir.path().join(name))
}

fn check_real(data: &[u8], n_tracks: usize, n_fragments: usize) {
    let (reference, r) = run(data);
    r.unwrap();
    let n = normalize(&reference);
    let N::Header(hb, doc, scale, tr) = &n[0] else {
        panic!()
    };
    assert_eq!(
        (doc.as_str(), *scale, tr.len()),
        ("matroska", 1_000_000, n_tracks)
    );
    assert_eq!(tr[0].track_type, TRACK_TYPE_VIDEO);
    assert_eq!(tr[0].codec_id, AVC);
    assert_eq!(fragments(&n), n_fragments);
    let mut rebuilt = hb.clone();
    let mut prev_tc = None;
    for e in &n[1..] {
        match e {
            N::Start(s) => {
                assert!(s.key_frame, "{s:?}");
                assert!(prev_tc.is_none_or(|p| s.timecode > p));
                prev_tc = Some(s.timecode);
            }
            N::Data(d) => rebuilt.extend_from_slice(d),
            N::End(f) => assert!(f.blocks > 0 && f.key_frame && f.size > 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rebuilt, data, "header + fragment data == file");
    let mut rng = Rng(7);
    for cuts in [
        every(1, data.len()),
        every(7, data.len()),
        every(65536, data.len()),
        rng.cuts(data.len(), 5000),
    ] {
        let (ev, r) = run_cuts(data, &cuts, Limits::default());
        r.unwrap();
        assert_eq!(normalize(&ev), n);
    }
}

#[test]
fn real_matroskamux_video() {
    // scripts/setup.sh installs GStreamer: its absence is a broken set-up, not a skip.
    assert!(
        gst_available(),
        "gst-launch-1.0 not found: run scripts/setup.sh"
    );
    let data = gst_record(
        "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240 ! x264enc key-int-max=15 \
         tune=zerolatency ! h264parse ! matroskamux streamable=true",
        "v.mkv",
    );
    check_real(&data, 1, 4);
}

#[test]
fn real_matroskamux_b_frames() {
    // scripts/setup.sh installs GStreamer: its absence is a broken set-up, not a skip.
    assert!(
        gst_available(),
        "gst-launch-1.0 not found: run scripts/setup.sh"
    );
    // B-frames: block times (PTS) are not monotonic inside a cluster.
    let data = gst_record(
        "videotestsrc num-buffers=90 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc \
         key-int-max=30 bframes=2 b-adapt=false speed-preset=ultrafast ! h264parse ! \
         matroskamux streamable=true",
        "b.mkv",
    );
    check_real(&data, 1, 3);
    let (ev, _) = run(&data);
    let ends: Vec<_> = ev
        .iter()
        .filter_map(|e| {
            if let Event::FragmentEnd(f) = e {
                Some(f.clone())
            } else {
                None
            }
        })
        .collect();
    for (i, f) in ends.iter().enumerate() {
        let t = i as i64 * 1000;
        assert_eq!(
            (f.blocks, f.first_block_time, f.last_block_time),
            (30, t, t + 967)
        );
    }
}

#[test]
fn real_matroskamux_audio_video() {
    // scripts/setup.sh installs GStreamer: its absence is a broken set-up, not a skip.
    assert!(
        gst_available(),
        "gst-launch-1.0 not found: run scripts/setup.sh"
    );
    let aac = aac_encoder();
    let data = gst_record(
        &format!(
            "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc \
             key-int-max=15 tune=zerolatency ! h264parse ! queue ! mux. \
             audiotestsrc num-buffers=87 samplesperbuffer=1024 ! audio/x-raw,rate=44100 ! {aac} ! \
             aacparse ! queue ! mux. matroskamux name=mux streamable=true"
        ),
        "av.mkv",
    );
    let (ev, r) = run(&data);
    r.unwrap();
    let n = normalize(&ev);
    let N::Header(_, _, _, tr) = &n[0] else {
        panic!()
    };
    assert_eq!(tr[1].track_type, TRACK_TYPE_AUDIO);
    assert_eq!(tr[1].codec_id, "A_AAC");
    check_real(&data, 2, fragments(&n));
    assert!(fragments(&n) >= 4, "{}", fragments(&n));
}

/// The tests' model of what kvssink sends (`tests/common/sent.rs`), on a stream built here.
#[test]
fn the_model_renumbers_and_rewrites_cluster_heads() {
    use common::sent::{playback_numbers, split};
    use kvs_format::build::{self, Track};
    use kvs_format::ids::ID_PREV_SIZE;
    assert_eq!(playback_numbers(&[(1, 2), (2, 1)]), [(2, 1), (1, 2)]);
    assert!(playback_numbers(&[(1, 1), (2, 2)]).is_empty());
    assert!(playback_numbers(&[(1, 2), (2, 1), (3, 1)]).is_empty());
    let mut input = build::header_with_tracks(&[Track::audio(1, "A_AAC"), Track::video(2, AVC)]);
    let cluster = build::cluster(
        300,
        &[
            build::uint(ID_PREV_SIZE, 77),
            build::simple_block(1, 0, true, b"audio"),
            build::block_group(2, 0, true, b"video"),
        ],
    );
    input.extend_from_slice(&cluster);
    let (header, clusters) = split(input, true);
    let expected = build::header_with_tracks(&[Track::video(1, AVC), Track::audio(2, "A_AAC")]);
    assert_eq!(header, gstkvs::mkv::normalize_header(&expected).unwrap());
    let mut sent = vec![
        0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x88, 0, 0, 0, 0, 0, 0, 1, 0x2C,
    ];
    sent.extend_from_slice(&[0xA7, 0x81, 0x00]);
    sent.extend(build::simple_block(2, 0, true, b"audio"));
    sent.extend(build::block_group(1, 0, true, b"video"));
    assert_eq!(clusters, [Bytes::from(sent)]);
}

/// AAC encoder of this machine.
fn aac_encoder() -> &'static str {
    ["avenc_aac", "voaacenc", "fdkaacenc"]
        .into_iter()
        .find(|e| gst_element_exists(e))
        .expect("no AAC encoder (gstreamer1.0-libav): run scripts/setup.sh")
}

/// matroskamux with its audio pad requested first (audio track 1, video track 2), split in
/// AWS shape: the tracks renumbered (video 1, audio 2), AWS's cluster heads, at any cut, and
/// exactly the bytes the tests' independent model says kvssink sends.
#[test]
fn real_matroskamux_audio_first_in_aws_shape() {
    assert!(
        gst_available(),
        "gst-launch-1.0 not found: run scripts/setup.sh"
    );
    let data = gst_record(
        &format!(
            "audiotestsrc num-buffers=87 samplesperbuffer=1024 ! audio/x-raw,rate=44100 ! {} \
             ! aacparse ! queue ! mux.audio_0 \
             videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc key-int-max=15 tune=zerolatency ! h264parse ! queue ! mux.video_0 \
             matroskamux name=mux streamable=true",
            aac_encoder()
        ),
        "audio-first.mkv",
    );
    // As matroskamux wrote it: audio is track 1.
    let (ev, r) = run(&data);
    r.unwrap();
    let N::Header(_, _, _, tr) = &normalize(&ev)[0] else {
        panic!()
    };
    assert_eq!(
        tr.iter()
            .map(|t| (t.number, t.track_type))
            .collect::<Vec<_>>(),
        [(1, TRACK_TYPE_AUDIO), (2, TRACK_TYPE_VIDEO)]
    );
    // In AWS shape.
    let (ev, r) = run_cuts_aws(&data, &[], Limits::default());
    r.unwrap();
    let reference = normalize(&ev);
    let Some(Event::Header(h)) = ev.first() else {
        panic!()
    };
    assert_eq!(h.renumbered, [(2, 1), (1, 2)]);
    assert_eq!(
        h.tracks
            .iter()
            .map(|t| (t.number, t.track_type))
            .collect::<Vec<_>>(),
        [(1, TRACK_TYPE_VIDEO), (2, TRACK_TYPE_AUDIO)]
    );
    let (header, clusters) = common::sent::split(data.clone(), true);
    assert_eq!(
        gstkvs::mkv::normalize_header(&h.bytes).unwrap(),
        header,
        "the header as the model renumbers it"
    );
    let mut sent = Vec::new();
    for e in &reference[1..] {
        match e {
            N::Start(s) => {
                assert!(s.key_frame, "{s:?}");
                sent.push(Vec::new());
            }
            N::Data(d) => sent.last_mut().unwrap().extend_from_slice(d),
            N::End(f) => assert_eq!(f.size as usize, sent.last().unwrap().len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(sent.len() >= 4, "{} fragments", sent.len());
    assert_eq!(sent, clusters, "each cluster as the model says it is sent");
    let mut rng = Rng(99);
    for cuts in [
        every(1, data.len()),
        every(7, data.len()),
        rng.cuts(data.len(), 5000),
    ] {
        let (ev, r) = run_cuts_aws(&data, &cuts, Limits::default());
        r.unwrap();
        assert_eq!(normalize(&ev), reference);
    }
}
