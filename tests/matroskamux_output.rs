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
    let Some(aac) = ["avenc_aac", "voaacenc", "fdkaacenc"]
        .into_iter()
        .find(|e| gst_element_exists(e))
    else {
        panic!("no AAC encoder (gstreamer1.0-libav): run scripts/setup.sh");
    };
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
