//! matroskamux numbers its tracks in the order its pads were requested: with the audio branch
//! first in the launch line, audio is track 1 and video track 2, and the service's HLS, DASH
//! and GetClip (which need video as track 1) cannot play the stream. kvssink renumbers it on
//! the way. Run in `gst-launch-1.0` as users run it: every fragment persists, kvs-local holds
//! video as track 1 and audio as track 2 with the frames byte for byte, and the stream reads
//! back (`kvssrc ! matroskademux`) as every video and audio frame.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;
use kvs_format::ebml::{read_header, read_vint};
use kvs_format::ids::{ID_BLOCK, ID_BLOCK_GROUP, ID_SIMPLE_BLOCK};

const TIMEOUT: Duration = Duration::from_secs(120);
const VIDEO_FRAMES: usize = 90;

/// The track number of every block of a cluster as kvssink sends it (AWS's head: 18 bytes).
fn block_tracks(cluster: &[u8]) -> Vec<u64> {
    fn track(block: &[u8]) -> u64 {
        read_vint(block).unwrap().unwrap().0
    }
    let mut tracks = Vec::new();
    let mut p = kvs_format::kvs::CLUSTER_HEAD_LEN;
    while p < cluster.len() {
        let h = read_header(&cluster[p..]).unwrap().unwrap();
        let body = &cluster[p + h.len..p + h.len + h.size.unwrap() as usize];
        match h.id {
            ID_SIMPLE_BLOCK => tracks.push(track(body)),
            ID_BLOCK_GROUP => {
                let g = read_header(body).unwrap().unwrap();
                assert_eq!(g.id, ID_BLOCK, "a Block first in its group");
                tracks.push(track(&body[g.len..]));
            }
            _ => {}
        }
        p += h.len + body.len();
    }
    tracks
}

/// (number, type) of each track of a stream header.
fn header_tracks(header: &[u8]) -> Vec<(u64, u64)> {
    let mut bytes = header.to_vec();
    // A cluster start makes the splitter emit the header.
    bytes.extend(kvs_format::build::cluster_start(0));
    let mut splitter = gstkvs::mkv::Splitter::new(Default::default());
    let mut events = Vec::new();
    splitter.push(bytes.into(), &mut events).unwrap();
    events
        .iter()
        .find_map(|e| match e {
            gstkvs::mkv::Event::Header(h) => {
                Some(h.tracks.iter().map(|t| (t.number, t.track_type)).collect())
            }
            _ => None,
        })
        .expect("a stream header")
}

#[test]
fn audio_first_matroskamux_is_stored_with_video_as_track_one() {
    init();
    let server = server();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    // The audio pad is requested first: audio is track 1 in what matroskamux writes. A tee
    // keeps a copy of every byte kvssink was given.
    let line = format!(
        "audiotestsrc is-live=true num-buffers=130 samplesperbuffer=1024 \
         ! audio/x-raw,rate=44100 ! avenc_aac ! aacparse ! queue ! mux.audio_0 \
         videotestsrc is-live=true num-buffers={VIDEO_FRAMES} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse ! queue \
         ! mux.video_0 \
         matroskamux name=mux streamable=true ! tee name=t \
         ! queue ! kvssink stream-name=audiofirst \
         t. ! queue ! filesink location={}",
        copy.display()
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{}",
        run.output()
    );
    assert!(
        !run.output().contains("need video as track 1"),
        "no playback warning: the tracks were renumbered\n{}",
        run.output()
    );

    // What matroskamux wrote: audio track 1, video track 2.
    let input = std::fs::read(&copy).unwrap();
    let mut raw = gstkvs::mkv::Splitter::new(Default::default());
    let mut events = Vec::new();
    raw.push(input.clone().into(), &mut events).unwrap();
    let gstkvs::mkv::Event::Header(raw_header) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(header_tracks(&raw_header.bytes), [(1, 2), (2, 1)]);

    // What kvs-local stored: every fragment, video track 1 and audio track 2, and exactly
    // what the tests' model of the renumbering says (frames byte for byte).
    let (header, clusters) = split_bytes(input);
    let stored = server.fragments("audiofirst");
    assert_eq!(stored.len(), clusters.len());
    assert!(stored.len() >= 3, "{} fragments", stored.len());
    assert!(stored.iter().all(|f| f.key_frame));
    let headers = server.stream_headers("audiofirst");
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0], header);
    assert_eq!(header_tracks(&headers[0]), [(1, 1), (2, 2)]);
    for (i, (f, c)) in stored.iter().zip(&clusters).enumerate() {
        assert!(f.bytes == c, "fragment {i} is not what kvssink should send");
    }
    let tracks: Vec<u64> = stored.iter().flat_map(|f| block_tracks(&f.bytes)).collect();
    let video = tracks.iter().filter(|&&t| t == 1).count();
    let audio = tracks.iter().filter(|&&t| t == 2).count();
    assert_eq!(video, VIDEO_FRAMES);
    assert!(audio >= 120, "{audio} audio frames");
    assert_eq!(video + audio, tracks.len(), "no other track");
    assert_eq!(
        server
            .stream("audiofirst")
            .unwrap()
            .meta
            .media_type
            .as_deref(),
        Some("video/h264,audio/aac"),
        "the media type names the video first"
    );

    // Read back: every video frame decodes (raw I420 frames into one file), every audio frame
    // comes out (as ADTS frames into another).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (video_out, audio_out) = (dir.path().join("video.yuv"), dir.path().join("audio.aac"));
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(split_launch(&format!(
        "kvssrc stream-name=audiofirst start-selector=earliest end-timestamp={now} \
         ! matroskademux name=d \
         d.video_0 ! queue ! h264parse ! avdec_h264 ! video/x-raw,format=I420 \
         ! filesink location={} \
         d.audio_0 ! queue ! aacparse ! audio/mpeg,stream-format=adts ! filesink location={}",
        video_out.display(),
        audio_out.display()
    )));
    let read = run_host(cmd, TIMEOUT);
    read.assert_success();
    let frame_size = 320 * 240 * 3 / 2;
    assert_eq!(
        std::fs::read(&video_out).unwrap().len(),
        VIDEO_FRAMES * frame_size,
        "{}",
        read.output()
    );
    assert_eq!(
        adts_frames(&std::fs::read(&audio_out).unwrap()),
        audio,
        "{}",
        read.output()
    );
}

/// The number of ADTS frames in `data`, which must hold nothing else.
fn adts_frames(data: &[u8]) -> usize {
    let mut p = 0;
    let mut n = 0;
    while p < data.len() {
        let h = &data[p..p + 7];
        assert!(h[0] == 0xFF && h[1] & 0xF0 == 0xF0, "ADTS sync at {p}");
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        p += len;
        n += 1;
    }
    assert_eq!(p, data.len());
    n
}
