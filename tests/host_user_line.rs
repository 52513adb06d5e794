//! The user's own launch line, as typed: no parser, no `streamable=true`, x264enc at its
//! defaults (B-frames, lookahead, a key frame every 250 frames), run in `gst-launch-1.0` with
//! `videotestsrc is-live=true` in place of the camera.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The tracks of the first stream header kvs-local stored for `stream` (the splitter reports
/// a header once the first cluster follows it).
fn stored_tracks(server: &Server, stream: &str) -> Vec<gstkvs::mkv::TrackInfo> {
    let mut bytes = server.stream_headers(stream)[0].to_vec();
    bytes.extend_from_slice(&server.fragments(stream)[0].bytes);
    let mut splitter = gstkvs::mkv::Splitter::new(gstkvs::mkv::Limits::default());
    let mut events = Vec::new();
    splitter.push(bytes.into(), &mut events).unwrap();
    events
        .into_iter()
        .find_map(|e| match e {
            gstkvs::mkv::Event::Header(h) => Some(h.tracks),
            _ => None,
        })
        .expect("a stream header with tracks")
}

fn gst_launch_with_debug(server: &Server, line: &str, debug: &str) -> HostRun {
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.env("GST_DEBUG", debug)
        .env("GST_DEBUG_NO_COLOR", "1")
        .args(["-m", "-e"])
        .args(split_launch(line));
    run_host(cmd, TIMEOUT)
}

#[test]
fn the_users_own_line_streams_short_fragments_with_video_on_track_one() {
    init();
    let server = server();
    // 15 s of live video at 30 fps.
    let line = "videotestsrc is-live=true num-buffers=450 ! x264enc ! matroskamux \
                ! kvssink stream-name=cam1 aws-region=eu-west-1";
    let run = gst_launch_with_debug(&server, line, "matroskamux:2");
    run.assert_success();
    // kvssink answers matroskamux's SEEKING query: no guessing.
    assert!(
        !run.stderr.contains("did not handle seeking query"),
        "{}",
        run.stderr
    );
    // videotestsrc ! x264enc negotiates Y444: the console cannot play that, and kvssink
    // says so with the fix.
    let output = run.output();
    assert!(
        output.contains("High 4:4:4") && output.contains("format=I420"),
        "{output}"
    );
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    let fragments = server.fragments("cam1");
    assert_eq!(
        summary.get::<u64>("fragments-produced").unwrap(),
        fragments.len() as u64
    );
    assert!(fragments.len() >= 4, "{} fragments", fragments.len());
    let durations: Vec<u64> = fragments.iter().map(|f| f.duration_ms).collect();
    assert!(
        durations.iter().all(|d| *d <= 5000),
        "fragments longer than 5 s: {durations:?}"
    );
    let tracks = stored_tracks(&server, "cam1");
    assert_eq!(tracks[0].number, 1);
    assert_eq!(tracks[0].track_type, gstkvs::mkv::TRACK_TYPE_VIDEO);
}

/// Runs `encoder` (and its parser, with a key frame interval of 10 s or more unless asked) live
/// for 10 s into kvssink at its defaults and checks every
/// fragment was persisted and stayed near `fragment-duration`.
fn encoder_keeps_fragments_short(stream: &str, encoder: &str) {
    init();
    let server = server();
    let line = format!(
        "videotestsrc is-live=true num-buffers=300 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! {encoder} ! matroskamux ! kvssink stream-name={stream}"
    );
    let run = gst_launch_with_debug(&server, &line, "");
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    let durations: Vec<u64> = server
        .fragments(stream)
        .iter()
        .map(|f| f.duration_ms)
        .collect();
    assert!(durations.len() >= 3, "{durations:?}");
    assert!(
        durations.iter().all(|d| *d <= 5000),
        "fragments longer than 5 s: {durations:?}"
    );
}

#[test]
fn openh264enc_with_a_10_s_gop_keeps_fragments_short() {
    encoder_keeps_fragments_short("openh264", "openh264enc gop-size=300 ! h264parse");
}

#[test]
fn x265enc_keeps_fragments_short() {
    encoder_keeps_fragments_short("x265", "x265enc speed-preset=ultrafast ! h265parse");
}

/// The audio branch linked first: matroskamux makes it track 1, and kvssink sends the stream
/// with video as track 1 (what the service's playback needs), saying so in its log, with no
/// warning left to give (`tests/track_order.rs` checks the frames and the read-back).
#[test]
fn audio_linked_before_video_is_renumbered() {
    init();
    let server = server();
    let line = "matroskamux name=mux ! kvssink stream-name=av \
                audiotestsrc is-live=true num-buffers=150 ! avenc_aac ! aacparse ! mux. \
                videotestsrc is-live=true num-buffers=90 \
                ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
                ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! mux.";
    let run = gst_launch_with_debug(&server, line, "kvssink:4");
    run.assert_success();
    let tracks: Vec<_> = stored_tracks(&server, "av")
        .iter()
        .map(|t| (t.number, t.track_type))
        .collect();
    use gstkvs::mkv::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};
    assert_eq!(tracks, [(1, TRACK_TYPE_VIDEO), (2, TRACK_TYPE_AUDIO)]);
    let output = run.output();
    assert!(
        output.contains("track 2 is sent as track 1; track 1 is sent as track 2"),
        "the launch line no longer puts audio first, or the log does not say\n{output}"
    );
    assert!(!output.contains("the video is track"), "{output}");
    assert!(!output.contains("High 4:4:4"), "I420 is pinned");
}
