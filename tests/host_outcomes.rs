//! Lost data is never reported as success, and bad input costs no valid data: what
//! `gst-launch-1.0` (and a Python application) sees when fragments are rejected, when the
//! endpoint never answers, when the pipeline stops without EOS, and when the input is
//! truncated, turns to garbage or goes back in time.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use common::host::*;
use common::*;
use kvs_local::Fault;

const TIMEOUT: Duration = Duration::from_secs(120);

fn file_line(file: &Path, stream: &str, extra: &str) -> String {
    format!(
        "filesrc location={} ! kvssink stream-name={stream} {extra}",
        file.display()
    )
}

fn stored(server: &Server, stream: &str) -> Vec<bytes::Bytes> {
    server
        .fragments(stream)
        .into_iter()
        .map(|f| f.bytes)
        .collect()
}

/// Runs `script` in Debian's python3 (PyGObject) against `server`, as an application does.
fn python_script(server: &Server, script: &str) -> HostRun {
    let registry = tempdir();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.args(["-c", script]);
    run_host(cmd, TIMEOUT)
}

/// Writes `bytes` to a file in `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_fragment_the_service_rejects_makes_the_run_fail_and_is_named() {
    // Five clusters; the service refuses the third with INVALID_MKV_DATA.
    init();
    let dir = tempdir();
    let file = record(dir.path(), "five.mkv", 150, 30, "");
    let reject_third = || Fault::ErrorAck {
        stream: None,
        fragment: Some(2),
        timecode: None,
        error_id: 4006,
    };
    let server = server();
    server.inject(reject_third());
    let line = file_line(&file, "rejected", "");
    let run = gst_launch(&server, &line, TIMEOUT);
    assert!(!run.status.success(), "exit 0 although a fragment was lost");
    assert_eq!(run.status.signal(), None);
    assert!(
        run.output().contains("1 of 5 fragments were not persisted"),
        "{}",
        run.output()
    );
    // The same in a Python application, which reads every message.
    let server = common::server();
    server.inject(reject_third());
    let run = python_launch(&server, &["--default-sigpipe"], &line, TIMEOUT);
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    assert_eq!(summary.get::<u64>("fragments-produced").unwrap(), 5);
    assert_eq!(summary.get::<u64>("fragments-rejected").unwrap(), 1);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 1);
    let reasons = summary.get::<&str>("loss-reasons").unwrap();
    assert!(
        reasons.contains("1 rejected by the service (INVALID_MKV_DATA x1)"),
        "{reasons}"
    );
    assert_eq!(server.fragment_count("rejected"), 4);
}

#[test]
fn a_fragment_over_the_service_limit_is_cut_not_refused() {
    // One 20 s cluster (x264enc with a key frame every 600 frames), then a 5 s one. Sent
    // whole, the service would refuse the first with MAX_FRAGMENT_DURATION_REACHED and lose
    // all 20 s; kvssink ends it at 10 s instead, and says the rest was not sent.
    init();
    let dir = tempdir();
    let file = record(dir.path(), "long-gop.mkv", 750, 600, "");
    let (_, produced) = split_file(&file);
    assert_eq!(produced.len(), 2);
    let server = server();
    let line = file_line(&file, "cut", "");
    let run = gst_launch(&server, &line, TIMEOUT);
    assert!(!run.status.success(), "exit 0 although video was lost");
    assert_eq!(run.status.signal(), None);
    let output = run.output();
    assert!(
        output.contains("reached the service's limits (10 s, 50 MB)")
            && output.contains("not all of the stream was persisted")
            && output.contains("1 cut at the service's limits"),
        "{output}"
    );
    assert!(
        !output.contains("MAX_FRAGMENT_DURATION_REACHED"),
        "{output}"
    );
    let stored = server.fragments("cut");
    assert_eq!(stored.len(), 2, "both fragments persisted");
    assert!(stored[0].duration_ms <= 10_000, "{}", stored[0].duration_ms);
    assert!(stored[0].duration_ms >= 9_900, "{}", stored[0].duration_ms);
    assert!(produced[0].starts_with(&stored[0].bytes));
    assert_eq!(stored[1].bytes, produced[1]);
}

#[test]
fn eos_with_fragments_never_acknowledged_is_an_error() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "three.mkv", 90, 30, "");
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = tempdir();
    let mut cmd = host_command(
        "gst-launch-1.0",
        &format!("http://127.0.0.1:{port}"),
        registry.path(),
    );
    cmd.args(["-m", "-e"]).args(split_launch(&file_line(
        &file,
        "unreachable",
        "stop-stream-timeout=2",
    )));
    let run = run_host(cmd, TIMEOUT);
    assert!(!run.status.success(), "exit 0 although nothing was stored");
    assert_eq!(run.status.signal(), None);
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "timed-out");
    assert_eq!(summary.get::<u64>("fragments-pending").unwrap(), 3);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 3);
    assert!(
        run.output()
            .contains("3 of 3 fragments were not persisted: 3 never acknowledged"),
        "{}",
        run.output()
    );
    // And why: the endpoint the service could not be reached at.
    assert!(
        run.output().contains(&format!(
            "3 never acknowledged (abandoned): the service could not be reached (cannot reach \
             http://127.0.0.1:{port}"
        )),
        "{}",
        run.output()
    );
}

#[test]
fn a_python_app_stopping_without_eos_gets_its_backlog_persisted() {
    // The application sets its pipeline to READY/NULL after the first PERSISTED ack, while
    // acks lag 1.5 s behind: the fragments not yet acknowledged are still delivered, and the
    // account says so.
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 1500,
    });
    let line = format!(
        "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! tee name=t \
         ! queue ! kvssink stream-name=stopped stop-stream-timeout=30 \
         t. ! queue ! filesink location={}",
        copy.display()
    );
    let run = python_launch(
        &server,
        &["--default-sigpipe", "--stop-after-persisted", "1"],
        &line,
        TIMEOUT,
    );
    run.assert_success();
    let summary = run.summary();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{summary:?}"
    );
    let produced = summary.get::<u64>("fragments-produced").unwrap();
    assert!(produced >= 3, "{summary:?}");
    // Every cluster the muxer produced is stored: whole, except that the last one may end
    // at its last whole frame (the stop may come between a frame's two buffers).
    let file = std::fs::read(&copy).unwrap();
    let clusters = whole_clusters(&file);
    let stored = stored(&server, "stopped");
    assert_eq!(stored.len() as u64, produced);
    assert_eq!(stored.len(), clusters.len(), "stored {}", stored.len());
    let last = stored.len() - 1;
    assert_eq!(stored[..last], clusters[..last]);
    assert!(clusters[last].starts_with(&stored[last]));
}

#[test]
fn a_stop_while_held_by_back_pressure_drops_nothing() {
    // A 1 MB store and acks 3 s late hold the streaming thread of an upload that is not
    // live (back-pressure, no outage: a live stream is never held); the application then
    // sets NULL without EOS. The buffer the stop releases must not push an older fragment,
    // still to be acknowledged, out of the store: everything is persisted, and the account
    // says so. (`streaming-type=realtime`: not a recording, whose store never drops.)
    init();
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 3000,
    });
    let line = "videotestsrc pattern=snow \
         ! video/x-raw,format=I420,width=640,height=480,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=30 bitrate=6000 ! matroskamux \
         ! kvssink stream-name=heldstop storage-size=1 stop-stream-timeout=20 \
         streaming-type=realtime";
    let run = python_launch(
        &server,
        &["--default-sigpipe", "--stop-after-seconds", "6"],
        line,
        TIMEOUT,
    );
    let summary = run.summary();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{}",
        run.output()
    );
    assert_eq!(summary.get::<u64>("fragments-dropped").unwrap(), 0);
    assert!(
        run.named("kvs-fragments-dropped").is_empty(),
        "{}",
        run.output()
    );
    run.assert_success();
    let produced = summary.get::<u64>("fragments-produced").unwrap();
    assert!(produced >= 3, "{summary:?}");
    assert_eq!(stored(&server, "heldstop").len() as u64, produced);
}

/// The clusters of a Matroska byte stream that may end inside its last cluster, as kvssink
/// sends them.
fn whole_clusters(data: &[u8]) -> Vec<bytes::Bytes> {
    common::sent::split(data.to_vec(), false).1
}

/// Five complete clusters and `tail` after them: the five are stored exactly, the run
/// fails with an error that contains `error`.
fn bad_input_keeps_what_came_before(stream: &str, tail: &[u8], error: &str) -> HostRun {
    init();
    let dir = tempdir();
    let good = std::fs::read(record(dir.path(), "five.mkv", 150, 30, "")).unwrap();
    let (_, clusters) = split_bytes(good.clone());
    assert_eq!(clusters.len(), 5);
    let mut bytes = good;
    bytes.extend_from_slice(tail);
    let file = write(dir.path(), "bad.mkv", &bytes);
    let server = server();
    let run = gst_launch(&server, &file_line(&file, stream, ""), TIMEOUT);
    assert!(!run.status.success(), "bad input must fail the run");
    assert_eq!(run.status.signal(), None);
    assert!(run.output().contains(error), "{}", run.output());
    let stored = stored(&server, stream);
    assert!(stored.len() >= 5, "only {} of 5 stored", stored.len());
    assert_eq!(stored[..5], clusters[..]);
    // Each once: the connection broken off for the bad part waited for the acks of what it
    // had sent before, so nothing was sent again.
    let timecodes: Vec<u64> = server
        .fragments(stream)
        .iter()
        .map(|f| f.timecode)
        .collect();
    let mut distinct = timecodes.clone();
    distinct.dedup();
    assert_eq!(distinct, timecodes, "a fragment stored twice");
    run
}

#[test]
fn a_truncated_recording_keeps_its_complete_fragments() {
    // Half of a sixth cluster: the five complete ones are stored, and of the sixth what
    // forms whole frames.
    let dir = tempdir();
    let six = std::fs::read(record(dir.path(), "six.mkv", 180, 30, "")).unwrap();
    let (_, clusters) = split_bytes(six);
    let half = &clusters[5][..clusters[5].len() / 2];
    let run = bad_input_keeps_what_came_before("truncated", half, "truncated");
    assert!(
        run.output().contains("broke off inside a frame"),
        "{}",
        run.output()
    );
    // Found at EOS, after the wait for the last acks: one account, shown before the error
    // ends gst-launch, and the stream failed (not all-persisted).
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "failed",
        "{}",
        run.output()
    );
}

/// A live camera (320x240 H.264, a key frame every half second) into kvssink with `props`.
fn live_camera(props: &str) -> String {
    format!(
        "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! kvssink {props}"
    )
}

/// 4 kB of bytes that are not Matroska.
fn garbage() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A Python application that pushes frames without timestamps into appsrc: matroskamux drops
/// every one, kvssink gets a stream header and EOS. All persisted, of nothing: a warning says
/// that nothing was uploaded, and why it may be. Before, the run ended as a success in silence.
#[test]
fn frames_without_timestamps_are_not_a_silent_success() {
    init();
    let server = server();
    let run = python_launch(
        &server,
        &["--push-untimed", "30"],
        "appsrc name=in caps=video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! videoconvert ! x264enc tune=zerolatency ! h264parse ! matroskamux \
         ! kvssink stream-name=untimed",
        TIMEOUT,
    );
    run.assert_success();
    assert_eq!(
        run.summary().get::<u64>("fragments-produced").unwrap(),
        0,
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains(
            "stream untimed: the stream ended before any frame reached kvssink: nothing was \
             uploaded (if frames were sent: matroskamux drops frames without a timestamp"
        ),
        "{}",
        run.output()
    );
}

#[test]
fn garbage_after_valid_data_keeps_the_valid_fragments() {
    bad_input_keeps_what_came_before("garbage", &garbage(), "stream garbage:");
}

/// Two recordings of five clusters concatenated by hand (the second without its header, its
/// timecodes from 0 again), uploaded with `gst-launch-1.0`: time goes back at the sixth
/// cluster. Every cluster is stored, in order, the last five after the first (each as it
/// came but for its timecode); a warning says by how much, and the run succeeds. Before,
/// the run ended with an error at the sixth.
#[test]
fn a_recording_whose_time_goes_back_is_sent_whole_and_in_order() {
    init();
    let dir = tempdir();
    let good = std::fs::read(record(dir.path(), "five.mkv", 150, 30, "")).unwrap();
    let (_, clusters) = split_bytes(good.clone());
    assert_eq!(clusters.len(), 5);
    let mut bytes = good;
    for c in &clusters {
        bytes.extend_from_slice(c);
    }
    let file = write(dir.path(), "twice.mkv", &bytes);
    let server = server();
    let run = gst_launch(&server, &file_line(&file, "backwards", ""), TIMEOUT);
    run.assert_success();
    let output = run.output();
    assert_eq!(
        output
            .matches("stream backwards: upstream timestamps went back")
            .count(),
        1,
        "{output}"
    );
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{output}"
    );
    let fragments = server.fragments("backwards");
    assert_eq!(fragments.len(), 10, "{output}");
    for (i, f) in fragments.iter().enumerate() {
        let mut came = f.bytes.to_vec();
        // AWS's cluster head: the timecode is its bytes 7 to 15.
        came[7..15].copy_from_slice(&clusters[i % 5][7..15]);
        assert_eq!(came, clusters[i % 5], "fragment {i}");
    }
    let times: Vec<i64> = fragments
        .iter()
        .flat_map(|f| block_times(&f.bytes))
        .map(|(_, t)| t)
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

/// Runs `line` (kvssink's stream `stream`) in Python with the timestamps leaving each of
/// `elements` 2 s earlier from the first key frame 3 s into the run, for 7 s; checks that it
/// ended `all-persisted` with the jump told. Returns the output, how many frames left the
/// first of `elements` (the video parser), and the (track, time) of every stored block.
fn jump_back(line: &str, stream: &str, elements: &[&str]) -> (String, usize, Vec<(u8, i64)>) {
    init();
    let server = server();
    let mut flags = Vec::new();
    for element in elements {
        flags.extend(["--timestamps-back", element, "3", "2000"]);
    }
    flags.extend(["--capture-times", elements[0], "--eos-after-seconds", "7"]);
    let run = python_launch(&server, &flags, line, TIMEOUT);
    run.assert_success();
    let output = run.output();
    assert!(output.contains("timestamps-back-at="), "{output}");
    let told = format!("stream {stream}: upstream timestamps went back");
    assert!(output.contains(&told), "{output}");
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
    let made = output
        .lines()
        .filter(|l| l.starts_with("captured="))
        .count();
    let fragments = server.fragments(stream);
    let timecodes: Vec<u64> = fragments.iter().map(|f| f.timecode).collect();
    assert!(timecodes.windows(2).all(|w| w[0] < w[1]), "{timecodes:?}");
    let blocks = fragments
        .iter()
        .flat_map(|f| block_times(&f.bytes))
        .collect();
    (output, made, blocks)
}

/// A live source whose timestamps go back by 2 s at a key frame (a source that restarted,
/// its time behind), into `matroskamux`, which writes the frames on into its open cluster at
/// negative times: in a Python application, the stream goes on. The fragment ends before
/// that key frame; from it on, the frames are sent right after the last one, each group of
/// pictures a fragment. Every frame the encoder made is stored once, in order; a warning
/// says so. Before, the run ended with an error at the jump.
#[test]
fn a_live_source_whose_timestamps_go_back_goes_on_in_order() {
    let line = live_camera("stream-name=restarted");
    let (output, made, blocks) = jump_back(&line, "restarted", &["h264parse0"]);
    assert_eq!(
        output.matches("upstream timestamps went back").count(),
        1,
        "{output}"
    );
    // By 2 s, give or take the spacing of the frames it follows.
    let later: f64 = output
        .split("frames are sent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{output}"));
    assert!((1.95..=2.05).contains(&later), "{later} s: {output}");
    let times: Vec<i64> = blocks.iter().map(|b| b.1).collect();
    assert_eq!(times.len(), made, "{output}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

/// AWS's audio and video line (H.264 and AAC on kvssink's own pads) from a live camera and
/// microphone whose timestamps both go back by 2 s (a source restarted): in a Python
/// application, the stream goes on, every video frame is stored once and in order, the
/// audio goes on with it, and the fragments follow one another.
#[test]
fn live_audio_and_video_whose_timestamps_go_back_go_on_in_order() {
    let line = "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! kvssink name=sink stream-name=restarted-av \
         audiotestsrc is-live=true ! audioconvert ! avenc_aac ! aacparse ! sink.";
    let (output, made, blocks) = jump_back(line, "restarted-av", &["h264parse0", "aacparse0"]);
    let track = |n: u8| -> Vec<i64> { blocks.iter().filter(|b| b.0 == n).map(|b| b.1).collect() };
    let (video, audio) = (track(1), track(2));
    assert_eq!(video.len(), made, "{output}");
    assert!(video.windows(2).all(|w| w[0] < w[1]), "{video:?}");
    // About 6 s of AAC at 1024 samples a frame, 44.1 kHz: none lost. (Audio that went back
    // before the video's key frame did is sent as it came, in the fragment of its time.)
    assert!(audio.len() > 200, "{} audio frames: {output}", audio.len());
}

#[test]
fn a_live_pipeline_paused_and_played_again_keeps_real_time() {
    // A Python application pauses its live pipeline for 3 s (a pause button) after two
    // fragments are persisted. Running time stands still while paused; the fragments after
    // the pause are still dated when they happen, in a new session, and say so.
    init();
    let server = server();
    let line = "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! kvssink stream-name=paused";
    let run = python_launch(
        &server,
        &[
            "--pause-after-persisted",
            "2",
            "3",
            "--stop-after-persisted",
            "8",
        ],
        line,
        TIMEOUT,
    );
    run.assert_success();
    let (paused_at, playing_at) = (run.printed_ms("paused-at="), run.printed_ms("playing-at="));
    assert!(playing_at >= paused_at + 3000);
    let times: Vec<u64> = server
        .fragments("paused")
        .iter()
        .map(|f| f.producer_timestamp_ms)
        .collect();
    // A fragment may begin as the pause is asked for (its frame already captured): dated up
    // to 0.6 s after `paused-at`, it belongs before the pause.
    let before = times.iter().filter(|&&t| t <= paused_at + 600).count();
    let after: Vec<u64> = times[before..].to_vec();
    assert!(before >= 2 && after.len() >= 3, "{times:?}");
    // Nothing is dated within the pause: the first fragment after it happened once playing
    // again (a frame's capture, not before the PLAYING call; 0.1 s for the clocks' grain).
    // Dated from the running time instead, it would come 0.5 s after the last one before.
    assert!(
        after[0] + 100 >= playing_at && after[0] < playing_at + 2000,
        "first fragment after the pause dated {} ms after PLAYING: {times:?}",
        after[0] as i64 - playing_at as i64
    );
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let starts = run.named("kvs-stream-start");
    let sources: Vec<&str> = starts
        .iter()
        .map(|s| s.get::<&str>("source").unwrap())
        .collect();
    assert_eq!(sources, ["live", "resumed"]);
}

#[test]
fn live_fragments_are_dated_when_captured_through_encoder_latency_and_a_pause() {
    // A camera pipeline with x264enc's default settings (its look-ahead holds frames for
    // about a second) feeds matroskamux and kvssink's own muxing; the application pauses it
    // for 3 s. Every fragment, before and after the pause, is dated when its first frame was
    // captured: not when it reached kvssink (a second later), nor by the running time that
    // stood still while paused (3 s early). And no frame is lost to the pause.
    init();
    let server = server();
    let line = "videotestsrc name=src is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc key-int-max=15 ! tee name=t \
         t. ! queue ! matroskamux streamable=true ! kvssink stream-name=late-mkv \
         t. ! queue ! h264parse ! kvssink stream-name=late-es";
    let run = python_launch(
        &server,
        &[
            "--capture-times",
            "src",
            "--pause-after-persisted",
            "4",
            "3",
            "--eos-after-seconds",
            "9",
        ],
        line,
        TIMEOUT,
    );
    run.assert_success();
    let captured: std::collections::BTreeMap<u64, u64> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("captured="))
        .map(|v| {
            let (pts, at) = v.split_once(':').unwrap();
            (pts.parse().unwrap(), at.parse().unwrap())
        })
        .collect();
    let playing_at = run.printed_ms("playing-at=");
    for stream in ["late-mkv", "late-es"] {
        let fragments = server.fragments(stream);
        assert!(
            fragments.len() >= 4,
            "{stream}: {} fragments",
            fragments.len()
        );
        // Every frame is stored: those still in the encoder's look-ahead at the pause too
        // (the fragment they belong to was not ended as idle during the pause).
        let frames: usize = fragments
            .iter()
            .map(|f| block_times(&f.bytes).iter().filter(|b| b.0 == 1).count())
            .sum();
        assert_eq!(
            frames,
            captured.len(),
            "{stream}: frames stored of those captured"
        );
        let errors: Vec<(u64, i64)> = fragments
            .iter()
            .map(|f| {
                // The frame captured at the fragment's timecode (a running time, in ms).
                let (pts, at) = captured
                    .range(f.timecode.saturating_sub(20)..)
                    .next()
                    .unwrap_or_else(|| panic!("{stream}: no frame at {}", f.timecode));
                assert!(
                    pts.abs_diff(f.timecode) <= 20,
                    "{stream}: {pts} for {}",
                    f.timecode
                );
                (f.timecode, f.producer_timestamp_ms as i64 - *at as i64)
            })
            .collect();
        // The probe's time is taken in Python as the frame leaves the source, once its
        // capture is over: a little later than the capture began, by more on a loaded
        // machine. The frame whose capture the pause cut (begun before it, over after it)
        // is dated when it began: the pause's length before it left the source.
        let pause = (playing_at - run.printed_ms("paused-at=")) as i64;
        let cut = |e: i64| (-300..=100).contains(&(e + pause));
        let wrong: Vec<_> = errors
            .iter()
            .filter(|&&(_, e)| !(-300..=100).contains(&e))
            .collect();
        assert!(
            wrong.is_empty() || (wrong.len() == 1 && cut(wrong[0].1)),
            "{stream}: fragments (timecode, producer time minus capture in ms): {errors:?}"
        );
        assert!(
            fragments
                .iter()
                .any(|f| f.producer_timestamp_ms >= playing_at),
            "{stream}: nothing after the pause: {errors:?}"
        );
        let sources: Vec<&str> = run
            .named("kvs-stream-start")
            .iter()
            .filter(|s| s.get::<&str>("stream-name") == Ok(stream))
            .map(|s| s.get::<&str>("source").unwrap())
            .collect();
        assert_eq!(sources, ["live", "resumed"], "{stream}");
    }
}

#[test]
fn a_live_stream_whose_time_jumps_ahead_of_the_clock_is_told() {
    // The pipeline's running time jumps 30 s ahead (an application setting the base time,
    // a clock that jumps): the live source's frames are then dated up to 30 s in the future.
    // A warning says so, once.
    init();
    let server = server();
    let line = live_camera("stream-name=jumped");
    let run = python_launch(
        &server,
        &[
            "--shift-base-time-after-seconds",
            "2",
            "30000",
            "--eos-after-seconds",
            "6",
        ],
        &line,
        TIMEOUT,
    );
    let output = run.output();
    assert_eq!(
        output
            .matches("stream jumped: a live fragment is dated ")
            .count(),
        1,
        "{output}"
    );
    assert!(
        output.contains("s ahead of this machine's clock"),
        "{output}"
    );
}

/// An application that must stop at once while the endpoint is down (the user is quitting)
/// sets `stop-stream-timeout` to 0 while playing, then stops without EOS: the stop does not
/// wait (the default is 120 s), and the summary says what was abandoned.
#[test]
fn a_stop_with_stop_stream_timeout_set_to_0_while_playing_returns_at_once() {
    init();
    let server = server();
    let line = &live_camera("name=sink stream-name=quitting");
    let run = with_outage_after(&server, "quitting", 2, TIMEOUT, || {
        python_launch(
            &server,
            &[
                "--stop-after-seconds",
                "6",
                "--set-before-stop",
                "sink",
                "stop-stream-timeout",
                "0",
            ],
            line,
            TIMEOUT,
        )
    });
    let output = run.output();
    let took = run.stop_took_ms();
    assert!(took < 30_000, "stopping took {took} ms:\n{output}");
    let summary = run.summary();
    let lost = summary.get::<u64>("fragments-lost").unwrap();
    assert!(lost >= 1, "{summary:?}");
    assert_eq!(
        lost,
        summary.get::<u64>("fragments-produced").unwrap()
            - summary.get::<u64>("fragments-persisted").unwrap(),
        "{summary:?}"
    );
}

/// A fatal error (the service says the stream is not active, as for a deleted stream) ends
/// the run; its account (`failed`) comes before the error, as every summary does, and the
/// error says how much was lost. Before, gst-launch-1.0 showed no summary and no count.
#[test]
fn a_fatal_error_comes_after_its_account() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "five.mkv", 150, 30, "");
    let server = server();
    server.inject(Fault::ErrorAck {
        stream: None,
        fragment: Some(2),
        timecode: None,
        error_id: 4008,
    });
    let run = gst_launch(&server, &file_line(&file, "inactive", ""), TIMEOUT);
    assert!(!run.status.success());
    assert_eq!(run.status.signal(), None);
    let summary = run.summary();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "failed",
        "{summary:?}"
    );
    let stored = server.fragment_count("inactive") as u64;
    let produced = summary.get::<u64>("fragments-produced").unwrap();
    let lost = summary.get::<u64>("fragments-lost").unwrap();
    assert!(lost >= 1, "{summary:?}");
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), stored);
    assert_eq!(stored + lost, produced, "{summary:?}");
    let output = run.output();
    let (at_summary, at_error) = (
        output.find("kvs-summary").unwrap(),
        output.find("ERROR: from element").unwrap(),
    );
    assert!(at_summary < at_error, "{output}");
    assert!(
        output.contains(&format!(
            "{lost} of {produced} fragments were not persisted"
        )),
        "{output}"
    );
}

/// An application that sends EOS and, while kvssink waits for the last acks (the endpoint is
/// down), stops the pipeline: the stop waits on until `stop-stream-timeout` after EOS, as
/// AWS's element does, then gives one summary, `timed-out`, and says what was abandoned and
/// how. Before, the wait ended at once with a summary `cancelled` and no warning.
#[test]
fn stopping_during_the_wait_at_eos_waits_on_and_says_what_was_lost() {
    init();
    let server = server();
    let line = &live_camera("stream-name=cut-wait stop-stream-timeout=6");
    let run = with_outage_after(&server, "cut-wait", 2, TIMEOUT, || {
        python_launch(
            &server,
            &["--eos-after-seconds", "4", "--stop-after-seconds", "7"],
            line,
            TIMEOUT,
        )
    });
    let summaries = run.named("kvs-summary");
    assert_eq!(summaries.len(), 1, "{}", run.output());
    assert_eq!(
        summaries[0].get::<&str>("outcome").unwrap(),
        "timed-out",
        "{}",
        run.output()
    );
    assert!(summaries[0].get::<u64>("fragments-lost").unwrap() > 0);
    assert!(
        run.stderr
            .contains("(stopped while waiting for the last acks after EOS)"),
        "{}",
        run.output()
    );
}

/// The mistake a Python application makes: EOS, then `set_state(NULL)` at once, without
/// waiting for the EOS message. The acks still on their way (here 3 s late) are waited for,
/// as at a stop without EOS: everything is persisted and the account says so. Before, the
/// wait was abandoned: `cancelled`, the unacknowledged fragments lost without a warning.
#[test]
fn a_stop_right_after_eos_still_persists_everything() {
    init();
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 3000,
    });
    let line = &live_camera("stream-name=eos-then-stop");
    let run = python_launch(
        &server,
        &["--eos-after-seconds", "3", "--stop-after-seconds", "3.3"],
        line,
        TIMEOUT,
    );
    run.assert_all_persisted();
    let summary = run.summary();
    let produced = summary.get::<u64>("fragments-produced").unwrap();
    assert!(produced >= 4, "{}", run.output());
    assert_eq!(
        server.fragments("eos-then-stop").len() as u64,
        produced,
        "{}",
        run.output()
    );
}

/// Input that is not Matroska ends the stream with an error; the fragments before it are all
/// persisted, and the account says the run failed (it said all-persisted), with nothing lost.
#[test]
fn a_stream_ended_by_bad_input_is_accounted_failed() {
    init();
    let dir = tempdir();
    let mut bytes = std::fs::read(record(dir.path(), "five.mkv", 150, 30, "")).unwrap();
    bytes.extend(garbage());
    let file = write(dir.path(), "bad.mkv", &bytes);
    let server = server();
    let run = python_launch(&server, &[], &file_line(&file, "bad-end", ""), TIMEOUT);
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    let summary = run.summary();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "failed",
        "{summary:?}"
    );
    assert_eq!(
        summary.get::<u64>("fragments-lost").unwrap(),
        0,
        "{summary:?}"
    );
    assert_eq!(
        summary.get::<u64>("fragments-persisted").unwrap(),
        server.fragment_count("bad-end") as u64
    );
}

/// `gst_element_send_event(kvssink, eos)`, as applications written for AWS's element end a
/// stream: the stream ends as at any EOS (the last acks waited for, the summary). Before, the
/// call returned true and did nothing.
#[test]
fn eos_sent_to_the_element_ends_the_stream() {
    init();
    let server = server();
    // A key frame a second: the fragments counted below are seconds.
    let line = "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true ! kvssink name=sink stream-name=eos-to-sink";
    let run = python_launch(
        &server,
        &[
            "--eos-after-seconds",
            "3",
            "--eos-to",
            "sink",
            "--stop-after-seconds",
            "30",
        ],
        line,
        TIMEOUT,
    );
    run.assert_success();
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    // Ended by the EOS at 3 s, not by the stop at 30 s.
    let produced = summary.get::<u64>("fragments-produced").unwrap();
    assert!((2..=6).contains(&produced), "{summary:?}");
}

/// A stream whose first clusters do not start with a key frame (matroskamux on a branch added
/// to a running pipeline starts inside a group of pictures) is not an error: those clusters,
/// which nothing could decode, are skipped with a warning until one starts with a key frame,
/// and everything from there is sent. Before, the whole pipeline failed.
#[test]
fn a_stream_beginning_inside_a_group_of_pictures_starts_at_its_first_key_frame() {
    use kvs_format::build::{cluster, simple_block, simple_cluster, simple_header};
    init();
    let dir = tempdir();
    let delta = |tc: u64| {
        cluster(
            tc,
            &(0..30)
                .map(|i| simple_block(1, i * 33, false, &[0x5A; 200]))
                .collect::<Vec<_>>(),
        )
    };
    let mut bytes = simple_header();
    bytes.extend(delta(0));
    bytes.extend(delta(1000));
    bytes.extend(simple_cluster(2000, 30, 33, 200));
    bytes.extend(simple_cluster(3000, 30, 33, 200));
    let file = write(dir.path(), "mid-gop.mkv", &bytes);
    let server = server();
    let run = gst_launch(&server, &file_line(&file, "mid-gop", ""), TIMEOUT);
    run.assert_success();
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    assert_eq!(summary.get::<u64>("fragments-produced").unwrap(), 2);
    let stored: Vec<u64> = server
        .fragments("mid-gop")
        .iter()
        .map(|f| f.timecode)
        .collect();
    assert_eq!(stored, [2000, 3000]);
    assert!(
        run.output().contains(
            "stream mid-gop: the stream begins inside a group of pictures: its first \
                       60 frames (2000 ms) came before a video key frame and are not sent"
        ),
        "{}",
        run.output()
    );
}

/// The stop's wait for the last acks (120 s by default, the endpoint down) is cut short when
/// the application sets `stop-stream-timeout` to 0 from another thread while it waits.
#[test]
fn a_stop_already_waiting_ends_when_stop_stream_timeout_is_set_to_0() {
    init();
    let server = server();
    let line = &live_camera("name=sink stream-name=cut-short");
    let run = with_outage_after(&server, "cut-short", 2, TIMEOUT, || {
        python_launch(
            &server,
            &[
                "--stop-after-seconds",
                "5",
                "--set-during-stop",
                "sink",
                "stop-stream-timeout",
                "0",
                "2",
            ],
            line,
            TIMEOUT,
        )
    });
    let output = run.output();
    let took = run.stop_took_ms();
    // About the 2 s before it was set, not the 120 s of the default.
    assert!(took < 30_000, "stopping took {took} ms:\n{output}");
    assert!(run.summary().get::<u64>("fragments-lost").unwrap() >= 1);
}

/// Two kvssinks of one process given the same stream-name (a launch line copied twice) fight
/// for the stream's one PutMedia connection: the second is told so when it starts.
#[test]
fn two_kvssinks_streaming_to_one_stream_are_told() {
    init();
    let server = server();
    let branch = "queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
                  ! h264parse ! matroskamux streamable=true ! kvssink stream-name=twice";
    let line = format!(
        "videotestsrc is-live=true num-buffers=45 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! tee name=t \
         t. ! {branch} t. ! {branch}"
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    let told = run
        .output()
        .matches("stream twice: another kvssink in this process streams to this stream")
        .count();
    assert_eq!(told, 1, "{}", run.output());
    // Alone, no such warning.
    let run = gst_launch(
        &server,
        &format!(
            "videotestsrc is-live=true num-buffers=45 \
             ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! {branch}"
        ),
        TIMEOUT,
    );
    run.assert_success();
    assert!(
        !run.output().contains("another kvssink"),
        "{}",
        run.output()
    );
}

/// With `fragment-acks=false` fragments are released when RECEIVED; the account counts those
/// whose PERSISTED did not come apart, so that every fragment produced is in one count.
#[test]
fn with_fragment_acks_off_the_account_adds_up() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "five.mkv", 150, 30, "");
    let server = server();
    let run = gst_launch(
        &server,
        &file_line(&file, "received", "fragment-acks=false"),
        TIMEOUT,
    );
    run.assert_success();
    let summary = run.summary();
    let get = |f: &str| summary.get::<u64>(f).unwrap();
    assert_eq!(get("fragments-produced"), 5, "{summary:?}");
    assert_eq!(
        get("fragments-persisted") + get("fragments-received-only") + get("fragments-lost"),
        5,
        "{summary:?}"
    );
    assert_eq!(server.fragment_count("received"), 5);
}

/// A player that uploads what it plays (`matroskademux ! h264parse ! kvssink`, the elementary
/// stream muxed by kvssink) seeks back while playing. Running time starts again at the seek:
/// the upload goes on in a new session instead of failing on "timecodes went backwards".
/// Live (realtime), the new session is dated now; offline, at the recording's own time of the
/// seek's position.
fn seek_while_playing(streaming_type: &str) -> (HostRun, Vec<u64>) {
    init();
    let server = server();
    let dir = tempdir();
    let file = record(dir.path(), "seek.mkv", 300, 30, "");
    let stream = format!("seek-{streaming_type}");
    let line = format!(
        "filesrc location={} ! matroskademux ! h264parse ! identity sync=true \
         ! kvssink stream-name={stream} streaming-type={streaming_type}",
        file.display()
    );
    let run = python_launch(&server, &["--seek-after-seconds", "4", "1"], &line, TIMEOUT);
    run.assert_all_persisted();
    assert!(run.stdout.contains("seeked=True"), "{}", run.output());
    let starts: Vec<u64> = run
        .named("kvs-stream-start")
        .iter()
        .map(|s| s.get::<u64>("producer-start-time").unwrap())
        .collect();
    assert_eq!(
        starts.len(),
        2,
        "one session before the seek, one after: {}",
        run.output()
    );
    // Every fragment of both sessions is stored: 4 s of the 10 s recording before the seek
    // (the last one cut by it), the 9 s from 1 s to the end after.
    let stored = server.fragments(&stream).len();
    assert!(
        (12..=16).contains(&stored),
        "{stored} fragments: {}",
        run.output()
    );
    (run, starts)
}

#[test]
fn a_seek_back_while_uploading_live_starts_a_new_session_dated_now() {
    let (_, starts) = seek_while_playing("realtime");
    // Dated by the clock: the second session begins about 4 s after the first, not 1 s.
    assert!(
        starts[1] >= starts[0] + 3500,
        "sessions start at {starts:?}"
    );
}

#[test]
fn a_seek_back_while_uploading_a_recording_keeps_its_time() {
    let (_, starts) = seek_while_playing("offline");
    // The recording's time of the seek's position: 1 s after its start.
    assert_eq!(starts[1], starts[0] + 1000, "sessions start at {starts:?}");
}

/// A pause shorter than a fragment (1.5 s, with 2 s groups of pictures): the fragment open at
/// the pause ends there. Before, it took in the frames after the pause up to the next key
/// frame, dated the pause's length too early.
#[test]
fn a_short_pause_ends_the_open_fragment_at_the_pause() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! h264parse \
         ! matroskamux streamable=true ! kvssink stream-name=short-pause";
    let run = python_launch(
        &server,
        &[
            "--pause-after-persisted",
            "2",
            "1.5",
            "--stop-after-persisted",
            "5",
        ],
        line,
        TIMEOUT,
    );
    run.assert_success();
    let (paused_at, playing_at) = (run.printed_ms("paused-at="), run.printed_ms("playing-at="));
    let fragments = server.fragments("short-pause");
    let spans: Vec<(u64, u64)> = fragments
        .iter()
        .map(|f| (f.producer_timestamp_ms, f.duration_ms))
        .collect();
    // The fragment open at the pause ends by it (frames captured as the pause is asked
    // for may follow the call: 0.7 s for a loaded machine; it took in 1.9 s before).
    let open = spans
        .iter()
        .rfind(|(start, _)| *start <= paused_at)
        .unwrap_or_else(|| panic!("{spans:?}"));
    assert!(
        open.0 + open.1 <= paused_at + 700,
        "the fragment open at the pause ends {} ms after it (paused at {paused_at}): {spans:?}",
        (open.0 + open.1) as i64 - paused_at as i64
    );
    // Nothing is dated inside the pause: a fragment may begin with a key frame captured as
    // the pause is asked for; the next ones begin once playing again (0.3 s for the clocks'
    // grain and a loaded machine).
    assert!(
        spans
            .iter()
            .filter(|(start, _)| *start > paused_at + 700)
            .all(|(start, _)| start + 300 >= playing_at),
        "{spans:?}, paused at {paused_at}, playing at {playing_at}"
    );
    assert!(spans.iter().any(|(start, _)| *start >= playing_at));
}

/// A live camera through an encoder with a lookahead (x264enc's defaults hold about 1.2 s of
/// frames here) straight into kvssink: the stream is dated when its frames were captured, by the
/// pipeline's clock, not when the encoder let the first one go.
#[test]
fn a_live_elementary_stream_is_dated_at_capture_not_after_the_encoder() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true num-buffers=150 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc key-int-max=30 \
         ! video/x-h264,stream-format=avc,alignment=au ! kvssink stream-name=lookahead";
    let run = python_launch(&server, &[], line, TIMEOUT);
    run.assert_all_persisted();
    let started = run.printed_ms("started-at=");
    let start = run.named("kvs-stream-start")[0]
        .get::<u64>("producer-start-time")
        .unwrap();
    // Running time 0 is when the pipeline went to PLAYING (its base time): a few ms after
    // `started-at` (0.7 s for a loaded machine). Dated from the encoder's first output
    // instead, it would be over 1.2 s later.
    assert!(
        start >= started && start < started + 700,
        "stream dated {} ms after the pipeline started",
        start as i64 - started as i64
    );
    let first = server.fragments("lookahead")[0].producer_timestamp_ms;
    assert!(
        first < started + 700,
        "first fragment at {}",
        first - started
    );
}

/// Matroska input whose demuxer upstream is sent a flushing seek (matroskamux itself refuses
/// seeks): matroskamux goes on writing into the cluster the flush cut. The error says what
/// happened and what to do, instead of a parse error at some byte.
#[test]
fn a_flush_cutting_matroska_input_is_a_clear_error() {
    init();
    let server = server();
    let dir = tempdir();
    let file = record(dir.path(), "cut.mkv", 300, 30, "");
    let line = format!(
        "filesrc location={} ! matroskademux name=demux ! h264parse ! identity sync=true \
         ! matroskamux streamable=true ! kvssink stream-name=cut-by-flush",
        file.display()
    );
    let run = python_launch(
        &server,
        &["--seek-after-seconds", "3", "1", "--seek-element", "demux"],
        &line,
        TIMEOUT,
    );
    assert!(!run.status.success(), "{}", run.output());
    assert!(run.stdout.contains("seeked=True"), "{}", run.output());
    assert!(
        run.output().contains("cut matroskamux's output"),
        "{}",
        run.output()
    );
    // What came before the flush is kept.
    assert!(server.fragments("cut-by-flush").len() >= 2);
}

/// A Python application's live source stalls inside a group of pictures for longer than
/// `fragment-duration`, then goes on without a new key frame: the open fragment was ended so
/// the service persists it, and the frames after the stall cannot be sent in it. A warning
/// says so once, the run ends `incomplete` with the reason, and EOS brings an error. Before,
/// the run ended `all-persisted`.
#[test]
fn frames_after_a_stall_inside_a_group_of_pictures_are_counted_lost() {
    init();
    let server = server();
    let script = r#"
import time, gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
enc = Gst.parse_launch("videotestsrc num-buffers=60 ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! x264enc tune=zerolatency key-int-max=60 ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink name=s sync=false")
s = enc.get_by_name("s"); enc.set_state(Gst.State.PLAYING); frames = []
while (smp := s.emit("pull-sample")) is not None:
    caps = smp.get_caps(); frames.append(smp.get_buffer())
enc.set_state(Gst.State.NULL)
p = Gst.parse_launch("appsrc name=a is-live=true format=time ! h264parse ! matroskamux streamable=true ! kvssink stream-name=stalled fragment-duration=500")
a = p.get_by_name("a"); a.set_property("caps", caps); p.set_state(Gst.State.PLAYING)
start = time.monotonic()
for i, f in enumerate(frames):
    if i == 20:
        time.sleep(1.5)  # the source stalls, inside the group of pictures
    else:
        time.sleep(max(0, start + i / 30 - time.monotonic()))
    a.emit("push-buffer", f)
a.emit("end-of-stream")
bus = p.get_bus()
while (m := bus.timed_pop(60 * Gst.SECOND)) is not None:
    st = m.get_structure()
    if m.type == Gst.MessageType.WARNING: print("warning", m.parse_warning()[0].message)
    if m.type == Gst.MessageType.ERROR: print("error", m.parse_error()[0].message); break
    if st and st.get_name() == "kvs-idle": print("idle")
    if st and st.get_name() == "kvs-summary": print("summary", st.get_string("outcome"), st.get_string("loss-reasons"))
    if m.type == Gst.MessageType.EOS: print("eos"); break
p.set_state(Gst.State.NULL)
"#;
    let run = python_script(&server, script);
    let out = run.output();
    assert!(out.lines().any(|l| l == "idle"), "{out}");
    assert_eq!(
        out.matches("warning stream stalled: frames came for fragment ")
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains(
            "summary incomplete 1 fragment ended after no data came for fragment-duration"
        ),
        "{out}"
    );
    assert!(
        out.contains("error stream stalled: not all of the stream was persisted"),
        "{out}"
    );
    assert_eq!(server.fragments("stalled").len(), 1, "{out}");
}

/// Properties set in READY hold for the run (GstBaseSink took the settings going to READY),
/// and a `kvs-add-metadata` item sent before the start is still applied.
#[test]
fn properties_set_in_ready_hold_for_the_run() {
    init();
    let server = server();
    let script = r#"
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
p = Gst.parse_launch("videotestsrc is-live=true num-buffers=45 ! video/x-raw,format=I420,width=320,height=240 ! x264enc tune=zerolatency key-int-max=30 ! h264parse ! kvssink name=k stream-name=first-name")
k = p.get_by_name("k")
s = Gst.Structure.new_empty("kvs-add-metadata")
s.set_value("name", "site")
s.set_value("value", "lab-in-ready")
s.set_value("persist", True)
assert k.send_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, s))
p.set_state(Gst.State.READY)
k.set_property("stream-name", "set-in-ready")
p.set_state(Gst.State.PLAYING)
msg = p.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
print("ended", msg.type.first_value_nick)
p.set_state(Gst.State.NULL)
"#;
    let run = python_script(&server, script);
    assert!(run.stdout.contains("ended eos"), "{}", run.output());
    assert!(
        server.fragments("first-name").is_empty(),
        "{}",
        run.output()
    );
    let stored = server.fragments("set-in-ready");
    assert_eq!(stored.len(), 2, "{}", run.output());
    let tagged = |f: &kvs_local::StoredFragment| {
        f.metadata
            .iter()
            .any(|(n, v)| n == "site" && v == "lab-in-ready")
    };
    assert!(
        stored.iter().all(tagged),
        "the item kept for the start is applied: {:?}",
        stored.iter().map(|f| &f.metadata).collect::<Vec<_>>()
    );
}

/// A stream-name set while PLAYING is for the next start: the running stream keeps its name in
/// every message (a reconnect's warning named the new one), and names it once.
#[test]
fn messages_name_the_running_stream_after_stream_name_is_set_while_playing() {
    init();
    let server = server();
    server.inject(Fault::MaxConnectionDuration {
        stream: None,
        after_ms: 2000,
    });
    let script = r#"
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
p = Gst.parse_launch("videotestsrc is-live=true num-buffers=150 ! video/x-raw,format=I420,width=320,height=240 ! x264enc tune=zerolatency key-int-max=15 ! h264parse ! kvssink name=k stream-name=running-name")
k = p.get_by_name("k")
p.set_state(Gst.State.PLAYING)
bus = p.get_bus()
renamed = False
while True:
    msg = bus.timed_pop(60 * Gst.SECOND)
    if msg is None:
        print("timeout")
        break
    if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "kvs-ack" and not renamed:
        k.set_property("stream-name", "next-camera")
        renamed = True
    elif msg.type == Gst.MessageType.WARNING:
        print("warning", msg.parse_warning()[0].message)
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        print("ended", msg.type.first_value_nick)
        break
p.set_state(Gst.State.NULL)
"#;
    let run = python_script(&server, script);
    assert!(run.stdout.contains("ended eos"), "{}", run.output());
    let reconnects: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning") && l.contains("reconnecting in"))
        .collect();
    assert!(!reconnects.is_empty(), "{}", run.output());
    for line in &reconnects {
        assert!(
            line.starts_with("warning stream running-name: reconnecting in"),
            "{}",
            run.output()
        );
        assert_eq!(line.matches("stream running-name").count(), 1, "{line}");
    }
    assert!(!run.stdout.contains("next-camera"), "{}", run.output());
    assert!(server.fragments("next-camera").is_empty());
    assert!(
        server.fragments("running-name").len() >= 10,
        "{}",
        run.output()
    );
}

/// A raw .h264 file (what many cameras and encoders write): h264parse dates its frames by DTS
/// alone. kvssink refused it ("a frame without a timestamp"); it now uses the DTS, and says so.
#[test]
fn a_raw_h264_file_goes_up_through_h264parse() {
    init();
    let server = server();
    let dir = tempdir();
    let file = dir.path().join("camera.h264");
    let made = std::process::Command::new("gst-launch-1.0")
        .args(split_launch(&format!(
            "videotestsrc num-buffers=90 ! video/x-raw,format=I420,width=320,height=240,\
             framerate=30/1 ! x264enc bframes=0 key-int-max=30 speed-preset=ultrafast ! \
             video/x-h264,stream-format=byte-stream ! filesink location={}",
            file.display()
        )))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let run = gst_launch(
        &server,
        &format!(
            "filesrc location={} ! h264parse ! kvssink stream-name=raw-file",
            file.display()
        ),
        TIMEOUT,
    );
    run.assert_success();
    assert_eq!(
        run.summary().get::<String>("outcome").unwrap(),
        "all-persisted",
        "{}",
        run.output()
    );
    assert!(
        run.output().contains("their decoding times are used"),
        "{}",
        run.output()
    );
    let times: Vec<i64> = server
        .fragments("raw-file")
        .iter()
        .flat_map(|f| block_times(&f.bytes))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(times.len(), 90, "{}", run.output());
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
}

/// Matroska input whose audio starts before its video (a camera's audio encoder is quicker):
/// matroskamux's first cluster is audio alone, which cannot begin a fragment. It was dropped
/// with a warning about a group of pictures, and no word of how much; now the audio is told.
#[test]
fn audio_before_the_video_in_matroska_input_is_told_with_how_much() {
    init();
    let server = server();
    let run = gst_launch(
        &server,
        "videotestsrc num-buffers=60 timestamp-offset=1000000000 ! \
         video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! x264enc \
         speed-preset=ultrafast key-int-max=30 ! h264parse ! queue ! matroskamux name=m ! \
         kvssink stream-name=audio-first audiotestsrc num-buffers=150 samplesperbuffer=960 ! \
         audioconvert ! avenc_aac ! queue ! m.",
        TIMEOUT,
    );
    run.assert_success();
    let output = run.output();
    assert!(!output.contains("group of pictures"), "{output}");
    let told = output
        .lines()
        .find(|l| l.contains("audio frames (") && l.contains("came before the first video frame"))
        .unwrap_or_else(|| panic!("{output}"));
    // About a second of AAC frames (1024 samples at 48 kHz: 21.3 ms each).
    let frames: u64 = told
        .split("stream audio-first: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{told}"));
    assert!((40..=50).contains(&frames), "{told}");
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{output}"
    );
}

/// An application ends an upload with `send_event(EOS)` on kvssink while its live source goes
/// on (a branch it removes next). The EOS ended with a loss, so kvssink refused it with an
/// error, and GstBaseSink then let the next buffers through into the finished upload: a
/// second, wrong error ("not a Matroska stream"), and that flow error stopped the source.
#[test]
fn data_after_an_eos_that_ended_with_a_loss_is_refused_quietly() {
    init();
    let server = server();
    server.inject(Fault::ErrorAck {
        stream: None,
        fragment: Some(1),
        timecode: None,
        error_id: 4006,
    });
    let script = r#"
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib
Gst.init(None)
p = Gst.parse_launch("videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240 ! x264enc tune=zerolatency key-int-max=15 ! h264parse ! queue ! kvssink name=k stream-name=eos-then-more")
k = p.get_by_name("k")
loop = GLib.MainLoop()
def on_message(bus, msg):
    if msg.type == Gst.MessageType.ERROR:
        print("error", msg.src.get_name(), msg.parse_error()[0].message)
    elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "kvs-summary":
        print("summary", msg.get_structure().get_string("outcome"))
bus = p.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
def end():
    print("eos sent", k.send_event(Gst.Event.new_eos()))
    GLib.timeout_add(1500, loop.quit)
    return False
GLib.timeout_add(2500, end)
p.set_state(Gst.State.PLAYING)
loop.run()
p.set_state(Gst.State.NULL)
"#;
    let run = python_script(&server, script);
    assert!(
        run.stdout.contains("summary incomplete"),
        "{}",
        run.output()
    );
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.output());
    assert!(
        errors[0].starts_with("error k stream eos-then-more: 1 of"),
        "{}",
        run.output()
    );
}

/// A stream that ends before its first key frame (a motion branch removed at once): its frames
/// are told as not sent, and the hint for a stream that brought no frame at all is not given.
#[test]
fn a_stream_ending_before_its_first_key_frame_says_so_and_nothing_else() {
    use kvs_format::build::{cluster, simple_block, simple_header};
    init();
    let dir = tempdir();
    let mut bytes = simple_header();
    bytes.extend(cluster(
        0,
        &(0..10)
            .map(|i| simple_block(1, i * 33, false, &[0x5A; 200]))
            .collect::<Vec<_>>(),
    ));
    let file = write(dir.path(), "no-key.mkv", &bytes);
    let server = server();
    let run = gst_launch(&server, &file_line(&file, "no-key", ""), TIMEOUT);
    let output = run.output();
    assert!(
        output.contains("its first 10 frames (") && output.contains("no video key frame came"),
        "{output}"
    );
    assert!(
        !output.contains("before any frame reached kvssink"),
        "{output}"
    );
}

/// With a spool, EOS during an outage waits for what is in memory and on disk: the warning
/// that the wait begins counts both, and an application that cuts the wait
/// short (`stop-stream-timeout` set to 0 while it goes on) is heard at once, not after the
/// timeout it had at EOS. What is on disk is kept for the next run (`fragments-spooled`).
#[test]
fn eos_with_a_spool_during_an_outage_says_what_it_waits_for_and_can_be_cut_short() {
    init();
    let server = server();
    let spool = tempdir();
    let line = live_camera(&format!(
        "name=k stream-name=eos-spool storage-size=1 buffer-duration=2 stop-stream-timeout=120 \
         spool-dir={}",
        spool.path().display()
    ));
    let run = with_outage_after(&server, "eos-spool", 2, TIMEOUT, || {
        python_launch(
            &server,
            &[
                "--eos-after-seconds",
                "8",
                "--set-after-seconds",
                "k",
                "stop-stream-timeout",
                "0",
                "11",
            ],
            &line,
            TIMEOUT,
        )
    });
    let output = run.output();
    let ended = run.printed_ms("ended-at=") - run.printed_ms("started-at=");
    assert!(
        ended < 60_000,
        "EOS wait ended {ended} ms after the start: {output}"
    );
    let told = output
        .lines()
        .find(|l| l.contains("stream eos-spool: at EOS "))
        .unwrap_or_else(|| panic!("{output}"));
    let waited_for: u64 = told
        .split("at EOS ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{told}"));
    let summary = run.summary();
    let count = |field: &str| summary.get::<u64>(field).unwrap();
    assert!(count("fragments-spooled") > 0, "{summary:?}");
    // All that was waited for is either persisted since, kept in the spool, or lost.
    assert!(
        waited_for >= count("fragments-spooled"),
        "{told}\n{summary:?}"
    );
}

/// `gst-launch-1.0 -e` reaching EOS while the endpoint is down waits up to
/// `stop-stream-timeout` for the last acks, and printed nothing meanwhile: a user took it for
/// a hang. A warning now says what it waits for, and how long at most.
#[test]
fn eos_while_the_endpoint_is_down_says_what_it_waits_for() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true num-buffers=150 ! video/x-raw,format=I420,width=320,\
                height=240,framerate=30/1 ! x264enc tune=zerolatency speed-preset=ultrafast \
                key-int-max=15 ! h264parse ! matroskamux streamable=true ! kvssink \
                stream-name=eos-down stop-stream-timeout=3";
    let run = with_outage_after(&server, "eos-down", 2, TIMEOUT, || {
        gst_launch(&server, line, TIMEOUT)
    });
    let output = run.output();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "timed-out",
        "{output}"
    );
    let told = output
        .lines()
        .find(|l| l.contains("stream eos-down: at EOS "))
        .unwrap_or_else(|| panic!("{output}"));
    assert!(
        told.contains("are not acknowledged and the service cannot be reached now (")
            && told.contains("waiting up to 3 s (stop-stream-timeout)")
            && told.matches("stream eos-down").count() == 1,
        "{told}"
    );
}

/// A live camera at 30 fps with a key frame every half second, through a `tee` named `t`,
/// into `sinks` (the rest of the launch line).
fn camera_into(sinks: &str) -> String {
    format!(
        "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! tee name=t {sinks}"
    )
}

/// The one line of `run`'s standard error about `stream` cut short, which must say `how`
/// and what to do instead.
fn cut_short_line(run: &HostRun, stream: &str, how: &str) -> String {
    let prefix = format!("kvssink: stream {stream}: ");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(lines.len(), 1, "{stream}: {}", run.output());
    assert!(
        lines[0].contains(&format!(" ({how}"))
            && lines[0].ends_with(
                ", without EOS and without the pipeline set to NULL: send EOS and wait for it \
                 on the bus, or set the pipeline to NULL, first)"
            ),
        "{}",
        lines[0]
    );
    lines[0].to_owned()
}

/// Checks `N of M fragments were not persisted: N never acknowledged (abandoned)` in `line`:
/// at least two (the open one and one unacknowledged). (The last fragment the application
/// saw PERSISTED may be among them: the ack is told before it is counted.)
fn assert_abandoned(line: &str) {
    let counts: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        line.contains(&format!(
            "{} of {} fragments were not persisted: {} never acknowledged (abandoned)",
            counts[0], counts[1], counts[0]
        )) && counts[0] >= 2
            && counts[0] <= counts[1],
        "{line}"
    );
}

/// A Python script that ends (`sys.exit`) with its pipeline PLAYING, while the service's
/// acks lag 3 s behind, streaming to three streams, two of them with a spool (one of those
/// with too little memory to send fragments as they come: they go from the spool). The interpreter
/// drops the pipeline as it exits: what was not acknowledged is lost, or kept in the spool,
/// and standard error says which, per stream, with what to do instead; the next start sends
/// what the spool kept. Before, nothing was said.
#[test]
fn a_python_script_exiting_while_streaming_says_what_it_cut_short() {
    init();
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 3000,
    });
    // The third stream's memory holds 2 s of fragments: with acks 3 s late, its fragments
    // go to the uploader from the spool once whole, not as they come.
    let line = camera_into(&format!(
        "! queue ! kvssink stream-name=exits \
         t. ! queue ! kvssink stream-name=exits-spooled spool-dir={0} \
         t. ! queue ! kvssink stream-name=exits-from-spool spool-dir={0} buffer-duration=2",
        spool.display()
    ));
    // Exits at the first PERSISTED ack, about 3 s of fragments behind it.
    let script = format!(
        r#"
import sys, time, gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
pipeline = Gst.parse_launch("{line}")
pipeline.set_state(Gst.State.PLAYING)
bus = pipeline.get_bus()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    msg = bus.timed_pop(100 * Gst.MSECOND)
    if msg is None or msg.type != Gst.MessageType.ELEMENT:
        continue
    s = msg.get_structure()
    if s.get_name() == "kvs-ack" and s.get_string("event-type") == "PERSISTED":
        break
print("exiting", flush=True)
sys.exit(0)
"#
    );
    let run = python_script(&server, &script);
    run.assert_success();
    assert!(run.stdout.contains("exiting"), "{}", run.output());
    // Said as the interpreter destroys the pipeline, or else at the process's exit.
    let how = "";
    assert_abandoned(&cut_short_line(&run, "exits", how));
    // Kept on disk, but for the open fragment.
    let kept = cut_short_line(&run, "exits-spooled", how);
    let n: u64 = kept
        .split(" not sent yet, kept in the spool (spool-dir) and sent first at the next start")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{kept}"));
    assert!(
        n >= 2 && kept.contains(": 1 never acknowledged (abandoned); "),
        "{kept}"
    );
    // The open fragment, which went neither to memory nor to disk, is counted lost too.
    let from_spool = cut_short_line(&run, "exits-from-spool", how);
    assert!(
        from_spool.contains(": 1 never acknowledged (abandoned); "),
        "{from_spool}"
    );
    // The next start sends them first.
    let before = server.fragments("exits-spooled").len();
    let again = gst_launch(
        &server,
        &camera_into(&format!(
            "! kvssink stream-name=exits-spooled spool-dir={}",
            spool.display()
        ))
        .replace("is-live=true", "is-live=true num-buffers=15"),
        TIMEOUT,
    );
    again.assert_all_persisted();
    // As many as it said, or fewer: acks may still come in while the process ends.
    let held: u64 = again
        .output()
        .split("the spool holds ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{}", again.output()));
    assert!((1..=n).contains(&held), "{held} of {n}: {kept}");
    let after = server.fragments("exits-spooled").len();
    assert!(
        after > before + held as usize,
        "{before} then {after}: {}",
        again.output()
    );
}

/// A C application that calls `exit()` with its pipeline PLAYING (it never drops it), while
/// the service's acks lag 3 s behind: standard error says what was lost, as the process
/// exits.
#[test]
fn a_c_application_exiting_while_streaming_says_what_it_cut_short() {
    init();
    let dir = tempdir();
    let program = dir.path().join("exit_playing");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/exit_playing.c");
    let flags = std::process::Command::new("pkg-config")
        .args(["--cflags", "--libs", "gstreamer-1.0"])
        .output()
        .unwrap();
    assert!(flags.status.success(), "{flags:?}");
    let built = std::process::Command::new("cc")
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .args(String::from_utf8(flags.stdout).unwrap().split_whitespace())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 3000,
    });
    let registry = tempdir();
    let mut cmd = host_command(program.to_str().unwrap(), &server.url(), registry.path());
    cmd.arg(camera_into("! queue ! kvssink stream-name=exits-c"));
    let run = run_host(cmd, TIMEOUT);
    run.assert_success();
    assert!(run.stdout.contains("exiting"), "{}", run.output());
    assert_abandoned(&cut_short_line(
        &run,
        "exits-c",
        "the process exited while kvssink was streaming",
    ));
}

/// `gst-launch-1.0 LINE` with every fsync (and write) of the process made as long as `card`
/// says (`tests/host/slow_fsync.c`, built into `dir` and preloaded).
fn on_a_slow_card(server: &Server, dir: &Path, card: SlowCard, line: &str) -> HostRun {
    let shim = dir.join("libslow_fsync.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/slow_fsync.c");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.env("LD_PRELOAD", &shim)
        .env("SLOW_FSYNC_MS", card.fsync_ms.to_string());
    if let Some(ms) = card.pwrite_ms {
        cmd.env("SLOW_PWRITE_MS", ms.to_string());
    }
    if let Some(ms) = card.pread_ms {
        cmd.env("SLOW_PREAD_MS", ms.to_string());
    }
    cmd.args(["-m", "-e"]).args(split_launch(line));
    run_host(cmd, TIMEOUT)
}

/// How long a slow card takes for each fsync, and for each write and read if not at once.
#[derive(Default)]
struct SlowCard {
    fsync_ms: u32,
    pwrite_ms: Option<u32>,
    pread_ms: Option<u32>,
}

/// A camera: a live source whose driver keeps 3 frames (a leaky queue), `frames` of 640x480
/// at 30 fps, encoded and muxed, then `rest`.
fn camera_with_a_small_ring(frames: u32, rest: &str) -> String {
    format!(
        "videotestsrc is-live=true num-buffers={frames} \
         ! video/x-raw,format=I420,width=640,height=480,framerate=30/1 \
         ! queue leaky=downstream max-size-buffers=3 max-size-time=0 max-size-bytes=0 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true {rest}"
    )
}

/// What kvssink says when its streaming thread waited for the spool's disk.
const SLOW_SPOOL: &str = "the spool's disk (spool-dir) is slower than the stream";

/// The frames stored of `stream` on `server`.
fn stored_frames(server: &Server, stream: &str) -> usize {
    server
        .fragments(stream)
        .iter()
        .map(|f| kvs_format::matroska::cluster_block_timecodes(&f.bytes).len())
        .sum()
}

/// A camera streaming with a spool on a slow card (every write 150 ms, every fsync 300 ms):
/// kvssink writes the spool off its streaming thread, which is upstream's (each fragment, the
/// stream header with the first, and the done records of acknowledged fragments), so the
/// camera's thread never waits for the card and its driver drops nothing: every frame is
/// stored, and nothing is said. When the streaming thread wrote each fragment and its fsync
/// (writes at once, fsyncs 400 ms), 237 of 300 frames were stored; when it still wrote the
/// header and, now and then, done records, 290. A card slower than the stream (every fsync
/// 1.5 s, fragments of 1 s) makes the streaming thread wait: a warning says so, once, and
/// what to do.
#[test]
fn a_camera_spooling_to_a_slow_card_loses_no_frame() {
    init();
    let dir = tempdir();
    let server = server();
    let spool = dir.path().join("spool");
    let run = on_a_slow_card(
        &server,
        dir.path(),
        SlowCard {
            fsync_ms: 300,
            pwrite_ms: Some(150),
            ..SlowCard::default()
        },
        &camera_with_a_small_ring(
            300,
            &format!(
                "! kvssink stream-name=slow-card spool-dir={}",
                spool.display()
            ),
        ),
    );
    run.assert_all_persisted();
    assert!(!run.output().contains(SLOW_SPOOL), "{}", run.output());
    // The card was slow for every fragment (10, a second each), and for every write.
    for slow in ["slow card: fsync", "slow card: pwrite"] {
        assert!(run.stderr.matches(slow).count() >= 9, "{}", run.output());
    }
    assert_eq!(stored_frames(&server, "slow-card"), 300, "{}", run.output());

    let slower = on_a_slow_card(
        &server,
        dir.path(),
        SlowCard {
            fsync_ms: 1500,
            ..SlowCard::default()
        },
        &camera_with_a_small_ring(
            120,
            &format!(
                "! kvssink stream-name=slower-card spool-dir={}",
                spool.display()
            ),
        ),
    );
    slower.assert_all_persisted();
    let output = slower.output();
    let warned: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("WARNING") && l.contains(SLOW_SPOOL))
        .collect();
    assert!(
        warned.len() == 1 && warned[0].contains("put a queue before kvssink"),
        "{output}"
    );
}

/// After an outage, the fragments that waited in the spool are read back off the streaming
/// thread: a camera on a card slow to read (every read 200 ms) loses no frame while they are
/// sent. When the streaming thread read them itself, 420 of 450 frames were stored.
#[test]
fn a_camera_sending_its_backlog_from_a_slow_card_loses_no_frame() {
    init();
    let dir = tempdir();
    let server = server();
    let spool = dir.path().join("spool");
    // Memory for 2 s of fragments: most of a 5 s outage waits in the spool.
    let line = camera_with_a_small_ring(
        450,
        &format!(
            "! kvssink stream-name=slow-read buffer-duration=2 spool-dir={}",
            spool.display()
        ),
    );
    let run = with_outage_between(
        &server,
        "slow-read",
        2,
        Duration::from_secs(5),
        TIMEOUT,
        || {
            on_a_slow_card(
                &server,
                dir.path(),
                SlowCard {
                    pread_ms: Some(200),
                    ..SlowCard::default()
                },
                &line,
            )
        },
    );
    run.assert_all_persisted();
    assert!(
        run.stderr.matches("slow card: pread").count() >= 2,
        "nothing was read back from the spool: {}",
        run.output()
    );
    assert_eq!(stored_frames(&server, "slow-read"), 450, "{}", run.output());
}
