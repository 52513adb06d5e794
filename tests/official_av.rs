//! Audio with video, as AWS's kvssink takes them: H.264 on the video pad and AAC, G.711 or
//! Opus on an `audio_%u` request pad, linked with `name=sink ... ! sink.` in gst-launch-1.0
//! (the line of the official README with only the plugin path changed) or requested by name
//! from a Python application. Each run persists every fragment with video as track 1 and audio
//! as track 2, and reads back (kvssrc ! matroskademux) as every video frame and the audio.

mod common;

use std::path::Path;
use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const FRAMES: usize = 90;
/// 141 buffers of 1024 samples at 48 kHz: 3 s, as long as the video.
const AUDIO_BUFFERS: usize = 141;

fn video(live: bool) -> String {
    format!(
        "videotestsrc is-live={live} num-buffers={FRAMES} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc bframes=0 key-int-max=45 bitrate=500 tune=zerolatency \
         ! video/x-h264,stream-format=avc,alignment=au"
    )
}

/// 3 s of audio at `rate`, encoded.
fn audio(live: bool, rate: u32, encoder: &str) -> String {
    format!(
        "audiotestsrc is-live={live} num-buffers={AUDIO_BUFFERS} samplesperbuffer={} \
         ! audio/x-raw,rate={rate} ! audioconvert ! {encoder} ! queue",
        1024 * rate / 48_000
    )
}

/// What one stream read back through kvssrc holds, decoded: (video frames, audio frames).
fn read_back(server: &Server, stream: &str, audio_decoder: &str) -> (usize, usize) {
    use gst::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let pipeline = gst::parse::launch(&format!(
        "kvssrc name=src stream-name={stream} start-selector=earliest end-timestamp={now} \
         ! matroskademux name=d \
         d.video_0 ! queue ! h264parse ! avdec_h264 ! fakesink name=v signal-handoffs=true \
         d.audio_0 ! queue ! {audio_decoder} ! fakesink name=a signal-handoffs=true"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap();
    src.set_property("aws-region", "us-east-1");
    src.set_property("control-plane-uri", server.url());
    src.set_property("access-key", DEMO_ACCESS_KEY);
    src.set_property("secret-key", DEMO_SECRET_KEY);
    let count = |name: &str| {
        let n = Arc::new(AtomicUsize::new(0));
        let counter = n.clone();
        pipeline
            .by_name(name)
            .unwrap()
            .connect("handoff", false, move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                None
            });
        n
    };
    let (video, audio) = (count("v"), count("a"));
    let run = run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
    (video.load(Ordering::Relaxed), audio.load(Ordering::Relaxed))
}

/// Checks what kvs-local stored of `stream`: everything persisted, two tracks, video first.
fn check_stored(server: &Server, stream: &str, run: &HostRun) {
    run.assert_all_persisted();
    let fragments = server.fragments(stream);
    assert!(fragments.len() >= 2, "{fragments:?}");
    assert!(fragments.iter().all(|f| f.key_frame));
    let headers = server.stream_headers(stream);
    assert_eq!(headers.len(), 1, "one session");
    assert_eq!(
        header_tracks(&headers[0]),
        [(1, 1), (2, 2)],
        "video is track 1 and audio track 2"
    );
}

/// `audio_frames`: how many frames the encoder makes of the 3 s.
fn streams_audio_and_video(
    rate: u32,
    encoder: &str,
    decoder: &str,
    audio_frames: usize,
    stream: &str,
) {
    let live = true;
    init();
    let server = server();
    // The official README's line: video into kvssink, audio linked with `sink.`.
    let line = format!(
        "{} ! kvssink name=sink stream-name={stream} {} ! sink.",
        video(live),
        audio(live, rate, encoder)
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    check_stored(&server, stream, &run);
    let (video, audio) = read_back(&server, stream, decoder);
    assert_eq!(video, FRAMES);
    // Audio before the first key frame cannot be in a fragment: at most a frame or two.
    assert!(
        (audio_frames - 3..=audio_frames + 1).contains(&audio),
        "{audio} audio frames read back, of {audio_frames}"
    );
}

#[test]
fn aac_and_h264_linked_with_sink_dot() {
    streams_audio_and_video(
        48_000,
        "avenc_aac",
        "aacparse ! avdec_aac",
        AUDIO_BUFFERS,
        "aac",
    );
}

#[test]
fn g711_alaw_and_h264() {
    streams_audio_and_video(8_000, "alawenc", "alawdec", AUDIO_BUFFERS, "alaw");
}

#[test]
fn opus_and_h264() {
    // Opus frames are 20 ms.
    streams_audio_and_video(48_000, "opusenc", "opusdec", 150, "opus");
}

/// Not live, as fast as the machine goes: the faster stream waits for the other, so the
/// frames are stored in time order.
#[test]
fn a_recording_faster_than_real_time_is_interleaved_in_time_order() {
    init();
    let server = server();
    let stream = "fast";
    let line = format!(
        "{} ! kvssink name=sink stream-name={stream} streaming-type=offline \
         file-start-time=1700000000 {} ! sink.",
        video(false),
        audio(false, 48_000, "avenc_aac")
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    check_stored(&server, stream, &run);
    for fragment in server.fragments(stream) {
        let times = block_times(&fragment.bytes);
        assert!(
            times.iter().map(|t| t.1).is_sorted(),
            "blocks out of time order: {times:?}"
        );
        assert!(times.iter().any(|t| t.0 == 2), "audio in every fragment");
    }
    let (video, audio) = read_back(&server, stream, "aacparse ! avdec_aac");
    assert_eq!(video, FRAMES);
    assert!(audio >= AUDIO_BUFFERS - 3, "{audio} audio frames read back");
}

/// Not live, with x264enc's default look-ahead: its first frame comes out only after it has
/// read 4 s of video, while the G.711 audio (20 s, encoded at once) is read on, 20 s ahead of
/// the first video key frame. A live stream's audio is held 10 s for it; a recording's is held
/// as memory allows (10 minutes of audio): all of it is stored.
#[test]
fn a_recordings_audio_is_kept_while_an_encoder_holds_its_first_frame() {
    init();
    let server = server();
    let stream = "lookahead";
    let line = format!(
        "videotestsrc num-buffers=200 \
         ! video/x-raw,format=I420,width=160,height=120,framerate=10/1 \
         ! x264enc bframes=0 key-int-max=20 ! video/x-h264,stream-format=avc,alignment=au \
         ! kvssink name=sink stream-name={stream} file-start-time=1700000000 \
         audiotestsrc num-buffers=160 samplesperbuffer=1000 ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! sink."
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    check_stored(&server, stream, &run);
    let out = run.output();
    assert!(
        !out.contains("is dropped") && !out.contains("not sent"),
        "{out}"
    );
    let (video, audio) = read_back(&server, stream, "alawdec");
    assert_eq!(video, 200);
    assert!(audio >= 158, "{audio} audio frames read back, of 160");
}

/// A Python application asks for `video_%u` and `audio_%u` by name, as AWS's samples do.
#[test]
fn request_pads_by_name_from_python() {
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/request_pads.py"))
        .arg("named");
    let run = run_host(cmd, TIMEOUT);
    assert!(
        run.stdout.contains("pads: video_0 audio_0"),
        "{}",
        run.output()
    );
    check_stored(&server, "named", &run);
    let (video, audio) = read_back(&server, "named", "aacparse ! avdec_aac");
    assert_eq!(video, FRAMES);
    assert!(audio >= AUDIO_BUFFERS - 3, "{audio} audio frames read back");
}

/// Audio alone, or audio beside Matroska (which carries its own audio), is refused with a
/// clear error rather than streaming nothing.
#[test]
fn audio_without_elementary_video_is_a_clear_error() {
    init();
    let server = server();
    let alone = gst_launch(
        &server,
        &format!(
            "kvssink name=sink stream-name=alone {} ! sink.",
            audio(true, 48_000, "avenc_aac")
        ),
        TIMEOUT,
    );
    assert!(!alone.status.success());
    assert!(
        alone
            .stderr
            .contains("stream alone: kvssink needs a video stream with its audio"),
        "{}",
        alone.output()
    );
    // What the error advises streams.
    let muxed = gst_launch(
        &server,
        &format!(
            "{} ! matroskamux ! kvssink stream-name=alonemuxed",
            audio(true, 48_000, "avenc_aac")
        ),
        TIMEOUT,
    );
    assert!(alone.stderr.contains("! avenc_aac ! matroskamux ! kvssink"));
    muxed.assert_all_persisted();
    assert!(!server.fragments("alonemuxed").is_empty());
    let matroska = gst_launch(
        &server,
        &format!(
            "{} ! matroskamux ! kvssink name=sink stream-name=mkv {} ! sink.",
            video(true),
            audio(true, 48_000, "avenc_aac")
        ),
        TIMEOUT,
    );
    assert!(!matroska.status.success());
    assert_eq!(
        matroska
            .stderr
            .matches("stream mkv: Matroska input carries its own audio")
            .count(),
        1,
        "said once, naming the stream: {}",
        matroska.output()
    );
}

/// An application that releases `video_0` mid-stream (its branch blocked and removed) while
/// audio goes on: the video stream ends there, and the stream ends without hanging, with
/// what was sent persisted. Before, EOS never completed.
#[test]
fn releasing_the_video_pad_mid_stream_ends_the_stream() {
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/request_pads.py"))
        .args(["released", "--release-video-after", "2"]);
    let run = run_host(cmd, TIMEOUT);
    assert_eq!(run.status.code(), Some(0), "{}", run.output());
    assert!(run.stdout.contains("released-video"), "{}", run.output());
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    assert!(server.fragment_count("released") >= 1);
}
