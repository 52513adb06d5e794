//! Timing of the elementary-stream muxer in real pipelines (gst-launch-1.0 with the built
//! plugin, into kvs-local): audio beside a video encoder with a long delay (x264enc's
//! defaults) is kept from the first video key frame on, audio that truly comes before it is
//! dropped with a warning, and fragments follow `key-frame-fragmentation` and
//! `fragment-duration` (never more than 5 a second, the service's limit).

mod common;

use std::process::Command;
use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `gst-launch-1.0 -m -e -v LINE`: `-v` prints every buffer an `identity silent=false`
/// passes (its `last-message`), which is how the test knows what entered kvssink.
fn gst_launch_verbose(server: &Server, line: &str) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd: Command = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e", "-v"]).args(split_launch(line));
    run_host(cmd, TIMEOUT)
}

/// The PTS (ms) of every buffer the identity named `name` passed, from `-v` output.
fn passed_pts_ms(run: &HostRun, name: &str) -> Vec<f64> {
    let tag = format!("GstIdentity:{name}: last-message = chain");
    run.stdout
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" pts: ")?;
            let t = rest.split([',', ' ']).next()?;
            clock_ms(t)
        })
        .collect()
}

/// `0:00:01.234567890` in ms.
fn clock_ms(t: &str) -> Option<f64> {
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3600.0 + m * 60.0 + s) * 1000.0)
}

/// Every block stored for `stream`, in stream order.
fn stored_blocks(server: &Server, stream: &str) -> Vec<(u8, i64)> {
    server
        .fragments(stream)
        .iter()
        .flat_map(|f| block_times(&f.bytes))
        .collect()
}

/// The GStreamer warnings gst-launch-1.0 printed.
fn warnings(run: &HostRun) -> Vec<String> {
    run.output()
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("(warning)"))
        .map(str::to_owned)
        .collect()
}

/// x264enc with its defaults holds frames back about 1.5 s (its lookahead), the audio a
/// few ms: audio comes long before the video of its time. Every audio frame from the first
/// video frame's time on is stored, and the few before it are dropped with a warning.
#[test]
fn audio_beside_a_slow_encoder_is_kept_from_the_first_video_frame_on() {
    init();
    let server = server();
    let stream = "lat1";
    let line = format!(
        "videotestsrc is-live=true num-buffers=150 ! video/x-raw,format=I420,framerate=30/1 \
         ! x264enc key-int-max=45 ! h264parse ! kvssink name=sink stream-name={stream} \
         audiotestsrc is-live=true num-buffers=215 ! audioconvert ! avenc_aac ! queue \
         ! identity name=audio_in silent=false ! sink."
    );
    let run = gst_launch_verbose(&server, &line);
    run.assert_all_persisted();
    let entered = passed_pts_ms(&run, "audio_in");
    assert!(
        entered.len() >= 200,
        "{} audio frames entered",
        entered.len()
    );
    let blocks = stored_blocks(&server, stream);
    let first_video = blocks.iter().find(|b| b.0 == 1).expect("video stored").1;
    let audio: Vec<i64> = blocks.iter().filter(|b| b.0 == 2).map(|b| b.1).collect();
    // Timecodes are whole ms of running time.
    let expected = entered
        .iter()
        .filter(|&&t| t.floor() as i64 >= first_video)
        .count();
    assert!(
        audio.len() >= expected,
        "{} audio frames stored of {expected} from the first video frame ({first_video} ms) \
         on; {} entered; the first stored at {:?} ms",
        audio.len(),
        entered.len(),
        audio.first()
    );
    eprintln!(
        "{} audio frames entered, {} stored from {:?} ms; video from {first_video} ms; {:?}",
        entered.len(),
        audio.len(),
        audio.first(),
        warnings(&run)
    );
    assert!(audio.is_sorted(), "audio out of time order: {audio:?}");
    let before = entered.len() - expected;
    if before > 0 {
        let said: Vec<String> = warnings(&run)
            .into_iter()
            .filter(|w| w.contains("before the first video key frame"))
            .collect();
        assert!(
            !said.is_empty(),
            "the dropped audio is said: {}",
            run.output()
        );
    }
}

/// Audio that truly begins before the video (the camera's first frame is 1.5 s into the
/// stream: frames from 1.5 s, played at the clock's pace): what precedes the first key frame
/// cannot be in a fragment; it is dropped, and said once, with how many frames and how long.
#[test]
fn audio_before_the_first_video_key_frame_is_dropped_with_a_warning() {
    init();
    let server = server();
    let stream = "early-audio";
    let line = format!(
        "videotestsrc num-buffers=90 timestamp-offset=1500000000 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! identity sync=true ! x264enc tune=zerolatency key-int-max=30 ! h264parse \
         ! kvssink name=sink stream-name={stream} streaming-type=realtime \
         audiotestsrc is-live=true num-buffers=200 ! audioconvert ! avenc_aac ! queue ! sink."
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    run.assert_all_persisted();
    let said: Vec<String> = warnings(&run)
        .into_iter()
        .filter(|w| w.contains("before the first video key frame"))
        .collect();
    let blocks = stored_blocks(&server, stream);
    let first_video = blocks.iter().find(|b| b.0 == 1).expect("video").1;
    assert!(
        first_video >= 1400,
        "video starts at {first_video} ms: {blocks:?}"
    );
    // Once (gst-launch-1.0 prints a warning twice: as a message with -m, and its text).
    let messages: Vec<&String> = said.iter().filter(|w| w.contains("(warning)")).collect();
    assert!(
        !said.is_empty() && messages.len() <= 1,
        "one warning: {said:#?}\n{}",
        run.output()
    );
    let text = &said[0];
    eprintln!("{text}");
    assert!(
        text.contains("audio frames") && text.contains(" ms"),
        "how many frames, how many ms: {text}"
    );
}

/// Fragment start times (ms) of `stream`.
fn fragment_starts(server: &Server, stream: &str) -> Vec<u64> {
    server
        .fragments(stream)
        .iter()
        .map(|f| f.timecode)
        .collect()
}

fn short_gop(stream: &str, props: &str) -> String {
    format!(
        "videotestsrc is-live=true num-buffers=150 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=5 ! h264parse \
         ! video/x-h264,stream-format=avc,alignment=au \
         ! kvssink stream-name={stream} {props}"
    )
}

/// AWS's `key-frame-fragmentation=false`: a fragment begins at the first key frame at least
/// `fragment-duration` after the fragment's start, however short the GOP.
#[test]
fn key_frame_fragmentation_false_makes_fragments_of_fragment_duration() {
    init();
    let server = server();
    let stream = "kff";
    let run = gst_launch(
        &server,
        &short_gop(
            stream,
            "key-frame-fragmentation=false fragment-duration=2000",
        ),
        TIMEOUT,
    );
    run.assert_all_persisted();
    let starts = fragment_starts(&server, stream);
    // 5 s: fragments at 0, 2 and 4 s.
    assert!((2..=4).contains(&starts.len()), "fragments at {starts:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (2000..2000 + 200).contains(&gap),
            "fragments at {starts:?}: {gap} ms apart"
        );
    }
    assert!(
        !run.output()
            .contains("key-frame-fragmentation=false has no effect"),
        "no warning that it has no effect: {}",
        run.output()
    );
}

/// The default (a fragment per key frame) with a GOP of 5 frames (167 ms): never two
/// fragments less than 200 ms apart, the service's 5 fragments a second.
#[test]
fn a_tiny_gop_never_makes_more_than_5_fragments_a_second() {
    init();
    let server = server();
    let stream = "tiny-gop";
    let run = gst_launch(&server, &short_gop(stream, ""), TIMEOUT);
    run.assert_all_persisted();
    let starts = fragment_starts(&server, stream);
    assert!(starts.len() >= 10, "fragments at {starts:?}");
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 200,
            "fragments at {starts:?}: {} ms apart",
            pair[1] - pair[0]
        );
    }
    // Every video frame is stored.
    let video = stored_blocks(&server, stream)
        .iter()
        .filter(|b| b.0 == 1)
        .count();
    assert_eq!(video, 150);
}

/// Matroska input keeps matroskamux's clusters: `key-frame-fragmentation=false` says once
/// that it has no effect there.
#[test]
fn key_frame_fragmentation_false_on_matroska_input_says_it_has_no_effect() {
    init();
    let server = server();
    let line = format!(
        "{} stream-name=kff-mkv key-frame-fragmentation=false",
        live_line(2)
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    run.assert_all_persisted();
    let said: Vec<String> = warnings(&run)
        .into_iter()
        .filter(|w| w.contains("key-frame-fragmentation=false has no effect on Matroska input"))
        .collect();
    assert_eq!(said.len(), 1, "{}", run.output());
}
