//! Recorded video keeps its real time: `filesrc ! kvssink` uploads a recording with producer
//! timestamps from its own time (`file-start-time`, else the Matroska date its muxer wrote,
//! else the frames' own times, else the date upstream's demuxer tags it with),
//! at the service's pace, and every ack says each fragment's producer time. Run in
//! `gst-launch-1.0` as users run it; the fragments are then found by that time range with
//! boto3's ListFragments (a client we did not write).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gst::prelude::*;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);

/// `seconds` of H.264 at 5 frames a second with a key frame every 4 s, recorded through
/// matroskamux into a seekable file (so it has a Duration and a DateUTC); with `faketime`
/// (e.g. `-1h`) the recording is dated that far from now.
fn recording(dir: &Path, seconds: u32, faketime: Option<&str>) -> PathBuf {
    let path = dir.join(format!("{seconds}s.mkv"));
    record(
        &format!(
            "videotestsrc num-buffers={} \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=20 ! h264parse ! matroskamux \
             ! filesink location={}",
            seconds * 5,
            path.display()
        ),
        faketime,
    );
    path
}

/// Runs the recording pipeline `line` in gst-launch-1.0 (under `faketime` when given).
fn record(line: &str, faketime: Option<&str>) {
    let mut cmd = match faketime {
        Some(offset) => {
            let mut c = Command::new("faketime");
            c.args(["-f", offset, "gst-launch-1.0"]);
            c
        }
        None => Command::new("gst-launch-1.0"),
    };
    let status = cmd
        .arg("-q")
        .args(line.split_whitespace())
        .status()
        .expect("run gst-launch-1.0 (and faketime; see scripts/setup.sh)");
    assert!(status.success(), "recording failed: {line}");
}

/// `(timecode, producer timestamp ms)` of every stored fragment of `stream`.
fn stored_times(server: &Server, stream: &str) -> Vec<(u64, u64)> {
    server
        .fragments(stream)
        .iter()
        .map(|f| (f.timecode, f.producer_timestamp_ms))
        .collect()
}

/// `stream` holds `count` fragments, each at `start_ms` plus its timecode.
fn assert_stored_from(server: &Server, stream: &str, count: usize, start_ms: u64) {
    let stored = stored_times(server, stream);
    assert_eq!(stored.len(), count, "fragments of {stream}");
    for &(timecode, producer_ms) in &stored {
        assert_eq!(producer_ms, start_ms + timecode, "{stream}");
    }
}

/// ListFragments with a producer-timestamp range, through boto3: the fragment numbers.
fn list_fragments(server: &Server, stream: &str, from_ms: u64, to_ms: u64) -> Vec<String> {
    let script = format!(
        r#"
import boto3, datetime
utc = datetime.timezone.utc
c = boto3.client("kinesis-video-archived-media", endpoint_url="{url}", region_name="us-east-1",
                 aws_access_key_id="{key}", aws_secret_access_key="{secret}")
sel = {{"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {{
    "StartTimestamp": datetime.datetime.fromtimestamp({from_ms} / 1000, utc),
    "EndTimestamp": datetime.datetime.fromtimestamp({to_ms} / 1000, utc)}}}}
pages = c.get_paginator("list_fragments").paginate(StreamName="{stream}", FragmentSelector=sel)
for p in pages:
    for f in p["Fragments"]:
        print(f["FragmentNumber"])
"#,
        url = server.url(),
        key = DEMO_ACCESS_KEY,
        secret = DEMO_SECRET_KEY,
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("run /usr/bin/python3 with boto3 (python3-boto3; see scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `filesrc ! kvssink` in gst-launch-1.0, which must persist everything.
fn upload(server: &Server, file: &Path, stream: &str, extra: &str) -> HostRun {
    let run = gst_launch(
        server,
        &format!(
            "filesrc location={} ! kvssink stream-name={stream} {extra}",
            file.display()
        ),
        TIMEOUT,
    );
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    run
}

fn acks_with_producer_time(run: &HostRun) -> Vec<(u64, u64)> {
    run.named("kvs-ack")
        .iter()
        .filter(|a| a.get::<&str>("event-type").unwrap() == "PERSISTED")
        .map(|a| {
            (
                a.get::<u64>("fragment-timecode").unwrap(),
                a.get::<u64>("producer-timestamp").unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_recording_keeps_its_start_time_to_the_millisecond() {
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 12 * 60, None);
    let server = server();
    // 2026-06-01T08:00:00.250Z, given in milliseconds.
    let start_ms: u64 = 1_780_300_800_250;
    let run = upload(
        &server,
        &file,
        "rec",
        &format!("streaming-type=offline file-start-time={start_ms}"),
    );
    let summary = run.summary();
    let start = run.named("kvs-stream-start");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0].get::<&str>("source").unwrap(), "file-start-time");
    assert_eq!(
        start[0].get::<u64>("producer-start-time").unwrap(),
        start_ms
    );
    assert_eq!(
        start[0].get::<u64>("first-fragment-time").unwrap(),
        start_ms
    );
    let said = start[0].get::<&str>("message").unwrap();
    assert!(
        said.starts_with("the first fragment is dated 2026-06-01T08:00:00.250Z"),
        "{said}"
    );

    // Every fragment persisted, at the recording's time to the millisecond.
    let stored = stored_times(&server, "rec");
    assert_eq!(stored.len(), 180, "fragments");
    assert_eq!(
        summary.get::<u64>("fragments-persisted").unwrap(),
        stored.len() as u64
    );
    for (i, &(timecode, producer_ms)) in stored.iter().enumerate() {
        assert_eq!(timecode, i as u64 * 4000, "fragment {i}");
        assert_eq!(producer_ms, start_ms + timecode, "fragment {i}");
    }
    // Each PERSISTED ack says the same producer time.
    let acked = acks_with_producer_time(&run);
    assert_eq!(acked.len(), stored.len());
    for (timecode, producer_ms) in acked {
        assert_eq!(producer_ms, start_ms + timecode);
    }
    // And the recording is found where it happened: the first minute holds 15 fragments.
    let first_minute = list_fragments(&server, "rec", start_ms, start_ms + 59_999);
    assert_eq!(first_minute.len(), 15, "{first_minute:?}");
    let whole = list_fragments(&server, "rec", start_ms, start_ms + 12 * 60_000);
    assert_eq!(whole.len(), 180);
    let before = list_fragments(&server, "rec", start_ms - 3_600_000, start_ms - 1);
    assert!(before.is_empty(), "{before:?}");
}

#[test]
fn without_a_start_time_a_recording_keeps_the_date_its_muxer_wrote() {
    init();
    let dir = tempdir();
    // Recorded (as far as its muxer knew) an hour ago.
    let file = recording(dir.path(), 60, Some("-1h"));
    let server = server();
    // No streaming-type: a file is not live, so the upload is offline by default.
    let run = upload(&server, &file, "dated", "");
    let start = run.named("kvs-stream-start");
    assert_eq!(start[0].get::<&str>("source").unwrap(), "recording-date");
    let start_ms = start[0].get::<u64>("producer-start-time").unwrap();
    let an_hour_ago = now_ms() - 3_600_000;
    assert!(
        start_ms.abs_diff(an_hour_ago) < 120_000,
        "{start_ms} is not about an hour ago ({an_hour_ago})"
    );
    assert_stored_from(&server, "dated", 15, start_ms);
}

#[test]
fn a_recording_whose_timecodes_begin_late_is_dated_by_its_first_frame() {
    // A segment of `splitmuxsink muxer=matroskamux` after the first (or a muxer started in a
    // running pipeline) begins at a later timecode, here 2 h; its DateUTC is when it began,
    // the time of its first frame, not of timecode 0 (that put it 2 h in the future).
    init();
    let dir = tempdir();
    let file = dir.path().join("segment.mkv");
    record(
        &format!(
            "videotestsrc num-buffers=50 timestamp-offset=7200000000000 \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=20 ! h264parse ! matroskamux \
             ! filesink location={}",
            file.display()
        ),
        Some("-1h"),
    );
    let server = server();
    let run = upload(&server, &file, "segment", "");
    let start = run.named("kvs-stream-start");
    assert_eq!(start[0].get::<&str>("source").unwrap(), "recording-date");
    let first_ms = start[0].get::<u64>("first-fragment-time").unwrap();
    let an_hour_ago = now_ms() - 3_600_000;
    assert!(
        first_ms.abs_diff(an_hour_ago) < 120_000,
        "{first_ms} is not about an hour ago ({an_hour_ago})"
    );
    let stored = stored_times(&server, "segment");
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored[0].0, 7_200_000, "{stored:?}");
    assert_eq!(stored[0].1, first_ms, "{stored:?}");
}

#[test]
fn a_recording_made_just_now_is_not_sent_into_the_future() {
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 12, None);
    let server = server();
    upload(&server, &file, "fresh", "");
    // Its date is seconds ago and it lasts 12 s: uploading it at once would put its last
    // fragments in the future. Each is sent once its time has come.
    let fragments = server.fragments("fresh");
    assert_eq!(fragments.len(), 3);
    for f in fragments {
        assert!(
            f.producer_timestamp_ms <= f.server_timestamp_ms,
            "fragment at {} ms stored at {} ms",
            f.producer_timestamp_ms,
            f.server_timestamp_ms
        );
    }
}

#[test]
fn a_recording_muxed_again_in_the_pipeline_is_not_dated_by_that_muxer() {
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 12, None);
    let server = server();
    // The user's line for a recording in another container, or one cleaned up on the way:
    // the matroskamux here writes the time it started as DateUTC, which is not the
    // recording's time, and its streamable output has no Duration. Upstream knows the
    // duration: the recording ends now, and nothing waits for its time to come.
    let before = now_ms();
    let run = gst_launch(
        &server,
        &format!(
            "filesrc location={} ! matroskademux ! h264parse ! matroskamux streamable=true \
             ! kvssink stream-name=remuxed",
            file.display()
        ),
        TIMEOUT,
    );
    let after = now_ms();
    run.assert_success();
    let start = run.named("kvs-stream-start");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(
        start[0].get::<&str>("source").unwrap(),
        "now-minus-duration",
        "{start:?}"
    );
    let start_ms = start[0].get::<u64>("producer-start-time").unwrap();
    assert!(
        (before..=after).contains(&(start_ms + 12_000)),
        "the recording should end when it is uploaded: starts {start_ms}, upload {before}-{after}"
    );
    assert_stored_from(&server, "remuxed", 3, start_ms);
}

#[test]
fn a_recording_goes_no_faster_than_the_service_takes_it() {
    init();
    let dir = tempdir();
    // 20 s at 16 Mb/s in fragments of 2 s (about 4 MB): 40 MB that the service takes at
    // 12.5 MB a second, while five fragments a second would be 20 MB.
    let file = dir.path().join("dense.mkv");
    record(
        &format!(
            "videotestsrc num-buffers=600 pattern=snow \
             ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
             ! x264enc speed-preset=ultrafast bitrate=16000 key-int-max=60 ! h264parse \
             ! matroskamux ! filesink location={}",
            file.display()
        ),
        None,
    );
    let server = kvs_local::Server::spawn(kvs_local::Config {
        record_body_reads: true,
        ..kvs_local::Config::default()
    })
    .expect("start kvs-local");
    let an_hour_ago = now_ms() - 3_600_000;
    upload(
        &server,
        &file,
        "dense",
        &format!("file-start-time={an_hour_ago}"),
    );
    assert_eq!(server.fragments("dense").len(), 10);

    // What reached the service in any second: the body reads kvs-local recorded.
    let report = server.report();
    let session = report
        .sessions
        .iter()
        .find(|s| s.stream == "dense")
        .unwrap();
    let reads = &session.reads;
    let total = reads.last().unwrap().bytes;
    assert!(total > 35_000_000, "{total} bytes");
    let mut most = 0;
    let mut before = 0;
    let mut end = 0;
    for (i, read) in reads.iter().enumerate() {
        while end + 1 < reads.len()
            && reads[end + 1].monotonic_ns < read.monotonic_ns + 1_000_000_000
        {
            end += 1;
        }
        most = most.max(reads[end.max(i)].bytes - before);
        before = read.bytes;
    }
    // The service's limit, and what one frame more or a socket's buffering may add.
    eprintln!("at most {most} bytes of {total} in one second");
    assert!(
        most as f64 <= gstkvs::producer::MAX_BYTES_PER_SECOND + 1e6,
        "{most} bytes reached the service within one second"
    );
}

/// The creation time an MP4's `mvhd` box holds (seconds since 1904), in ms since the epoch:
/// read here from the file's bytes, apart from any GStreamer element.
fn mp4_creation_ms(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    let at = data
        .windows(4)
        .position(|w| w == b"mvhd")
        .expect("an mvhd box")
        + 4;
    let secs = match data[at] {
        1 => u64::from_be_bytes(data[at + 4..at + 12].try_into().unwrap()),
        _ => u64::from(u32::from_be_bytes(data[at + 4..at + 8].try_into().unwrap())),
    };
    (secs - 2_082_844_800) * 1000
}

#[test]
fn elementary_streams_from_a_recording_keep_its_date() {
    init();
    let dir = tempdir();
    let server = server();
    // AWS's own line for a file: the demuxer's H.264 goes to kvssink, which muxes it itself.
    // The recording's date then comes from the demuxer's datetime tag.
    let es_upload = |file: &Path, demux: &str, stream: &str| {
        let run = gst_launch(
            &server,
            &format!(
                "filesrc location={} ! {demux} ! h264parse ! kvssink stream-name={stream}",
                file.display()
            ),
            TIMEOUT,
        );
        run.assert_success();
        let start = run.named("kvs-stream-start");
        assert_eq!(start.len(), 1, "{start:?}");
        assert_eq!(
            start[0].get::<&str>("source").unwrap(),
            "datetime-tag",
            "{start:?}"
        );
        start[0].get::<u64>("producer-start-time").unwrap()
    };

    // An MP4 made an hour ago (as far as its muxer knew): its creation time, to the second.
    let mp4 = dir.path().join("20s.mp4");
    record(
        &format!(
            "videotestsrc num-buffers=100 \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=20 ! h264parse ! mp4mux \
             ! filesink location={}",
            mp4.display()
        ),
        Some("-1h"),
    );
    let created = mp4_creation_ms(&mp4);
    assert!(
        created.abs_diff(now_ms() - 3_600_000) < 120_000,
        "{created}"
    );
    let start_ms = es_upload(&mp4, "qtdemux", "mp4");
    assert_eq!(start_ms, created);
    assert_stored_from(&server, "mp4", 5, start_ms);

    // A Matroska recording demuxed the same way keeps the DateUTC that its direct upload
    // takes (matroskademux tags it to the second).
    let mkv = recording(dir.path(), 20, Some("-1h"));
    let direct = upload(&server, &mkv, "mkv-direct", "").named("kvs-stream-start")[0]
        .get::<u64>("producer-start-time")
        .unwrap();
    let start_ms = es_upload(&mkv, "matroskademux", "mkv-es");
    assert_eq!(
        start_ms / 1000,
        direct / 1000,
        "{start_ms} against {direct}"
    );
    assert_stored_from(&server, "mkv-es", 5, start_ms);
}

/// 2026-06-01T08:00:00.250Z.
const JUNE_MS: u64 = 1_780_300_800_250;

/// Calls `stamp` on every frame leaving the element named `parse`, with the time since the
/// first frame's PTS: an application stamping frames with when they were captured.
fn stamp_frames(
    pipeline: &gst::Pipeline,
    stamp: impl Fn(&mut gst::BufferRef, gst::ClockTime) + Send + Sync + 'static,
) {
    let first_pts = std::sync::Mutex::new(None);
    pipeline
        .by_name("parse")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
                let pts = buffer.pts().unwrap();
                let first = *first_pts.lock().unwrap().get_or_insert(pts);
                stamp(buffer.make_mut(), pts - first);
            }
            gst::PadProbeReturn::Ok
        });
}

#[test]
fn with_use_original_pts_the_buffers_timestamps_are_the_producer_times() {
    init();
    let server = server();
    // AWS's element's meaning: the frames' PTS are epoch nanoseconds (here set by the
    // source; an application pushing frames with their capture times does the same), taken
    // before file-start-time.
    let run = gst_launch(
        &server,
        &format!(
            "videotestsrc num-buffers=50 timestamp-offset={} \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=10 ! h264parse \
             ! kvssink stream-name=pts use-original-pts=true file-start-time=1700000000",
            JUNE_MS * 1_000_000
        ),
        TIMEOUT,
    );
    run.assert_success();
    let warned = run
        .output()
        .lines()
        .filter(|l| l.contains("WARNING") && l.contains("use-original-pts"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(warned.is_empty(), "{warned:?}");
    let start = run.named("kvs-stream-start");
    assert_eq!(
        start[0].get::<&str>("source").unwrap(),
        "original-pts",
        "{start:?}"
    );
    let stored = stored_times(&server, "pts");
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert_eq!(stored[0].1, JUNE_MS);
    for (i, &(timecode, producer_ms)) in stored.iter().enumerate() {
        // Key frames every 10 frames at 5 a second.
        assert_eq!(producer_ms, JUNE_MS + i as u64 * 2000, "{stored:?}");
        assert_eq!(
            producer_ms,
            timecode + start[0].get::<u64>("producer-start-time").unwrap()
        );
    }
    let found = list_fragments(&server, "pts", JUNE_MS, JUNE_MS + 9_999);
    assert_eq!(found.len(), 5, "{found:?}");

    // Live too, as AWS's element takes it: an application in Rust whose camera stamps each
    // frame with its capture time, in epoch nanoseconds (here the encoder's timestamps are
    // moved there; its segment stays as it was, so PTS and running time differ).
    let (pipeline, _) = pipeline(
        "videotestsrc is-live=true num-buffers=15 \
         ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
         ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=10 \
         ! h264parse name=parse ! kvssink name=sink use-original-pts=true",
        &server,
        "pts-live",
    );
    stamp_frames(&pipeline, |buffer, since_first| {
        let captured = gst::ClockTime::from_nseconds(JUNE_MS * 1_000_000) + since_first;
        buffer.set_pts(captured);
        buffer.set_dts(captured);
    });
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
    let start = run.named("kvs-stream-start");
    assert_eq!(
        start[0].get::<&str>("source").unwrap(),
        "original-pts",
        "{start:?}"
    );
    let stored = stored_times(&server, "pts-live");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].1, JUNE_MS, "{stored:?}");
    assert_eq!(stored[1].1, JUNE_MS + 2000, "{stored:?}");

    // Matroska input keeps its cluster times, and the user is told.
    let run = gst_launch(
        &server,
        "videotestsrc num-buffers=10 ! video/x-raw,format=I420,width=160,height=120 \
         ! x264enc speed-preset=ultrafast ! h264parse ! matroskamux \
         ! kvssink stream-name=pts-mkv use-original-pts=true",
        TIMEOUT,
    );
    run.assert_success();
    assert!(
        run.output()
            .contains("use-original-pts has no effect on Matroska input"),
        "{}",
        run.output()
    );
}

#[test]
fn a_recording_stamped_with_reference_timestamps_keeps_their_time() {
    init();
    let server = server();
    // NTP counts from 1900, the Unix epoch from 1970.
    let ntp_to_unix_ns = 2_208_988_800 * 1_000_000_000;
    for (kind, offset) in [("x-unix", 0), ("x-ntp", ntp_to_unix_ns)] {
        let stream = format!("reference-{kind}");
        // An application in Rust that knows when each frame was captured: a reference
        // timestamp meta on every encoded frame, the first captured at JUNE_MS.
        let (pipeline, _) = pipeline(
            "videotestsrc num-buffers=50 \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=10 ! h264parse name=parse \
             ! kvssink name=sink",
            &server,
            &stream,
        );
        let reference = gst::Caps::new_empty_simple(format!("timestamp/{kind}"));
        stamp_frames(&pipeline, move |buffer, since_first| {
            let captured = JUNE_MS * 1_000_000 + offset + since_first.nseconds();
            gst::ReferenceTimestampMeta::add(
                buffer,
                &reference,
                gst::ClockTime::from_nseconds(captured),
                None,
            );
        });
        let run = common::run(&pipeline, TIMEOUT);
        assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
        let start = run.named("kvs-stream-start");
        assert_eq!(
            start[0].get::<&str>("source").unwrap(),
            "reference-timestamp",
            "{start:?}"
        );
        let stored = stored_times(&server, &stream);
        assert_eq!(stored.len(), 5, "{stored:?}");
        for (i, &(_, producer_ms)) in stored.iter().enumerate() {
            assert_eq!(producer_ms, JUNE_MS + i as u64 * 2000, "{kind}: {stored:?}");
        }
    }
}

/// A recording dated ahead of now (a camera's clock ahead, a wrong `file-start-time`) is held
/// until its time; an application that stops the pipeline meanwhile is not held with it.
/// (Before, going from PLAYING to PAUSED waited for the render holding the stream's state,
/// so setting a PyGObject application's pipeline to NULL took as long as the hold: up to an
/// hour.)
#[test]
fn stopping_a_recording_held_for_its_time_returns_at_once() {
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 4, None);
    let server = server();
    // Ten minutes ahead: held (a recording an hour or more ahead is sent, and refused).
    let start_s = now_ms() / 1000 + 600;
    let run = python_launch(
        &server,
        &["--stop-after-seconds", "3"],
        &format!(
            "filesrc location={} ! kvssink stream-name=held file-start-time={start_s} \
             stop-stream-timeout=5",
            file.display()
        ),
        TIMEOUT,
    );
    let output = run.output();
    let took = run.stop_took_ms();
    // Bounded by stop-stream-timeout (5 s), not by the ten minutes of the hold.
    assert!(took < 60_000, "stopping took {took} ms:\n{output}");
    // Told as the hold began, not after it.
    assert!(
        output.contains("s ahead of this machine's clock: held until then"),
        "{output}"
    );
}

/// Times that cannot be right (`use-original-pts` on buffers timed from 0, a start time in
/// seconds where milliseconds were meant) date the stream in 1970: the service takes it, and
/// the application is warned.
#[test]
fn a_stream_dated_before_2000_is_warned_about() {
    init();
    let server = server();
    let run = gst_launch(
        &server,
        "videotestsrc num-buffers=30 ! video/x-raw,format=I420,width=160,height=120 \
         ! x264enc speed-preset=ultrafast ! h264parse \
         ! kvssink stream-name=in-1970 use-original-pts=true",
        TIMEOUT,
    );
    run.assert_success();
    let output = run.output();
    assert!(
        output.contains("ms since the epoch, before the year 2000, from the buffers' timestamps"),
        "{output}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn ctrl_c_during_a_matroska_upload_is_not_blamed_on_the_input() {
    // Ctrl-C without -e stops the upload wherever filesrc was, inside a Matroska element:
    // that is the stop's doing. Every fragment sent is persisted, the cut one at its whole
    // frames, and the run is no error.
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 240, None);
    let server = server();
    let registry = tempdir();
    let mut cmd = common::host::host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.arg("-m").args(common::host::split_launch(&format!(
        "filesrc location={} ! kvssink stream-name=stopped file-start-time=1700000000",
        file.display()
    )));
    let run = common::host::run_host_then(cmd, TIMEOUT, |pid| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while server.fragments("stopped").len() < 3 {
            assert!(std::time::Instant::now() < deadline, "no fragment stored");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: signals the host process this test started, still running.
        unsafe { libc::kill(pid, libc::SIGINT) };
    });
    // gst-launch-1.0 prints errors (its sync handler) but not the messages of a stop.
    let out = run.output();
    assert!(
        !out.contains("in the middle of a Matroska element"),
        "{out}"
    );
    assert!(!out.contains("ERROR"), "{out}");
    assert_eq!(run.status.code(), Some(0), "{out}");
    let stored = server.fragments("stopped").len();
    assert!((3..60).contains(&stored), "{stored} of 60 fragments stored");
}

/// `gst-launch-1.0 -m -e` uploads a 240 s recording to `stream`; once 3 fragments are
/// stored, the service goes away if `outage`, and a second later the user presses Ctrl-C
/// (SIGINT; as systemd's `KillSignal=SIGINT` does). Returns the run and how long the host
/// took to exit after the Ctrl-C.
fn ctrl_c_with_eos(server: &Server, stream: &str, outage: bool) -> (HostRun, Duration) {
    let dir = tempdir();
    let file = recording(dir.path(), 240, None);
    let registry = tempdir();
    let mut cmd = common::host::host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e"])
        .args(common::host::split_launch(&format!(
            "filesrc location={} ! kvssink stream-name={stream} file-start-time=1700000000 \
         stop-stream-timeout=5",
            file.display()
        )));
    let pressed = std::sync::Mutex::new(None);
    let run = common::host::run_host_then(cmd, TIMEOUT, |pid| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while server.fragments(stream).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "no fragment stored");
            std::thread::sleep(Duration::from_millis(20));
        }
        if outage {
            server.pause_listening();
        }
        std::thread::sleep(Duration::from_secs(1));
        *pressed.lock().unwrap() = Some(std::time::Instant::now());
        // SAFETY: signals the host process this test started, still running.
        unsafe { libc::kill(pid, libc::SIGINT) };
    });
    let took = pressed.lock().unwrap().expect("Ctrl-C pressed").elapsed();
    server.resume_listening();
    (run, took)
}

/// Every fragment counted as sent is one produced: a fragment that began to go out but held
/// no whole frame when the input was cut (not a fragment: the service refuses it) is neither.
fn sent_were_produced(run: &HostRun) {
    let summary = run.summary();
    let count = |field: &str| summary.get::<u64>(field).unwrap();
    assert!(
        count("fragments-sent") <= count("fragments-produced"),
        "{summary:?}"
    );
}

#[test]
fn ctrl_c_with_eos_during_an_outage_ends_after_stop_stream_timeout() {
    // A recording's upload is held for room while the service is away; Ctrl-C with -e
    // sends EOS to filesrc, which waits for its streaming thread: kvssink lets it go, the
    // EOS waits stop-stream-timeout (5 s) for the service, and the account names what was
    // abandoned. It used to wait until the service came back (here: never).
    init();
    let server = server();
    let (run, took) = ctrl_c_with_eos(&server, "interrupted", true);
    let out = run.output();
    sent_were_produced(&run);
    assert!(
        took < Duration::from_secs(30),
        "exited {took:?} after Ctrl-C: {out}"
    );
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(!out.contains("takes the output of matroskamux"), "{out}");
    let summary = run.summary();
    let count = |field: &str| summary.get::<u64>(field).unwrap();
    assert!(count("fragments-lost") >= 1, "{summary:?}");
    assert_eq!(
        count("fragments-produced"),
        count("fragments-persisted") + count("fragments-lost"),
        "{summary:?}"
    );
    assert_eq!(
        count("fragments-persisted") as usize,
        server.fragments("interrupted").len(),
        "{summary:?}"
    );
}

#[test]
fn ctrl_c_with_eos_during_an_upload_sends_what_came_before_it() {
    // The same Ctrl-C with the service up: filesrc stops wherever it was, inside a Matroska
    // element. That is the user's doing (as without -e): a warning says where the input was
    // cut, every fragment before it is persisted, and the run succeeds.
    init();
    let server = server();
    let (run, _) = ctrl_c_with_eos(&server, "ended", false);
    let out = run.output();
    sent_were_produced(&run);
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(
        out.contains("the application ended the stream inside a Matroska element"),
        "{out}"
    );
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    let persisted = summary.get::<u64>("fragments-persisted").unwrap() as usize;
    let stored = server.fragments("ended").len();
    assert_eq!(persisted, stored);
    assert!((3..60).contains(&stored), "{stored} of 60 fragments stored");
}

#[test]
fn ctrl_c_with_eos_while_a_recording_is_held_for_its_future_time_ends() {
    // A file-start-time 20 minutes ahead: kvssink holds the upload until then (the service
    // refuses fragments from the future), and says so. Ctrl-C with -e used to wait the 20
    // minutes (filesrc's EOS waits for its streaming thread); now the hold ends, the EOS
    // waits stop-stream-timeout, and what the service refused is named.
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 60, None);
    let server = server();
    let registry = tempdir();
    let mut cmd = common::host::host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e"])
        .args(common::host::split_launch(&format!(
            "filesrc location={} ! kvssink stream-name=ahead file-start-time={} \
         stop-stream-timeout=5",
            file.display(),
            now_ms() / 1000 + 1200
        )));
    let pressed = std::sync::Mutex::new(None);
    let run = common::host::run_host_then(cmd, Duration::from_secs(90), |pid| {
        std::thread::sleep(Duration::from_secs(3));
        *pressed.lock().unwrap() = Some(std::time::Instant::now());
        // SAFETY: signals the host process this test started, still running.
        unsafe { libc::kill(pid, libc::SIGINT) };
    });
    let took = pressed.lock().unwrap().expect("Ctrl-C pressed").elapsed();
    let out = run.output();
    assert!(
        took < Duration::from_secs(30),
        "exited {took:?} after Ctrl-C: {out}"
    );
    assert!(
        out.contains("ahead of this machine's clock: held until then"),
        "{out}"
    );
    assert!(!out.contains("matroskamux drops frames"), "{out}");
    let summary = run.summary();
    assert_eq!(
        summary.get::<u64>("fragments-persisted").unwrap() as usize,
        server.fragments("ahead").len(),
        "{summary:?}"
    );
}

/// 70 s of H.264 at 5 frames a second with key frames at 0 s and 60 s only (a camera's long
/// group of pictures): matroskamux starts a cluster every 32.767 s, so the second cluster
/// (32.8 s) does not start with a key frame.
fn long_gop_recording(dir: &Path) -> PathBuf {
    let path = dir.join("gop60.mkv");
    record(
        &format!(
            "videotestsrc num-buffers=350 \
             ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
             ! x264enc speed-preset=ultrafast key-int-max=300 ! h264parse ! matroskamux \
             ! filesink location={}",
            path.display()
        ),
        None,
    );
    path
}

/// A group of pictures longer than 32.7 s: the fragment is cut at the service's 10 s, and
/// what follows until the next key frame is skipped (said once, counted), not a fatal error
/// that loses every later group of pictures. The same with Matroska input (the cluster at
/// 32.8 s does not start with a key frame) and with H.264 (a frame further than a block
/// reaches from its key frame).
#[test]
fn a_group_of_pictures_longer_than_32_s_goes_on_at_the_next_key_frame() {
    init();
    let dir = tempdir();
    let file = long_gop_recording(dir.path());
    let server = server();
    for (stream, input) in [
        ("gop-mkv", ""),
        ("gop-h264", "! matroskademux ! h264parse "),
    ] {
        let run = gst_launch(
            &server,
            &format!(
                "filesrc location={} {input}! kvssink stream-name={stream} \
                 file-start-time=1700002000",
                file.display()
            ),
            TIMEOUT,
        );
        let output = run.output();
        let timecodes: Vec<u64> = stored_times(&server, stream).iter().map(|t| t.0).collect();
        assert_eq!(timecodes, [0, 60_000], "{stream}: {output}");
        assert_eq!(run.status.code(), Some(1), "{stream}: {output}");
        let summary = run.summary();
        assert_eq!(
            summary.get::<&str>("outcome").unwrap(),
            "incomplete",
            "{output}"
        );
        assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 2);
        assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
        let reasons = summary.get::<&str>("loss-reasons").unwrap();
        assert!(
            reasons.contains("1 cut at the service's limits"),
            "{reasons}"
        );
        assert!(
            reasons.contains("136 frames (27200 ms,")
                && reasons.contains("skipped until the next key frame"),
            "{reasons}"
        );
        // Said once, with how much, and where the stream goes on.
        let said: Vec<&str> = output
            .lines()
            .filter(|l| l.starts_with("WARNING") && l.contains("(27200 ms,"))
            .collect();
        assert_eq!(said.len(), 1, "{stream}: {output}");
        assert!(said[0].contains("key frame at 60000"), "{}", said[0]);
        assert!(!output.contains("max-cluster-duration"), "{output}");
        assert!(!output.contains("32800 ms away"), "{output}");
    }
}

/// H.264 that begins inside a group of pictures (a recording cut after its first key frame):
/// the frames before the first key frame cannot be sent, and a warning says how many, as for
/// Matroska input.
#[test]
fn elementary_video_that_begins_inside_a_group_of_pictures_is_told() {
    init();
    let dir = tempdir();
    let raw = dir.path().join("raw.h264");
    record(
        &format!(
            "videotestsrc num-buffers=100 \
             ! video/x-raw,format=I420,width=160,height=120,framerate=25/1 \
             ! x264enc speed-preset=ultrafast key-int-max=40 ! h264parse \
             ! video/x-h264,stream-format=byte-stream ! filesink location={}",
            raw.display()
        ),
        None,
    );
    // Without its first IDR picture: its parameter sets, then 39 frames that refer to it.
    let data = std::fs::read(&raw).unwrap();
    let starts: Vec<(usize, u8)> = (0..data.len() - 3)
        .filter(|&i| data[i..i + 3] == [0, 0, 1])
        .map(|i| (i, data[i + 3] & 0x1f))
        .collect();
    let idr = starts.iter().position(|s| s.1 == 5).unwrap();
    let back = |i: usize| if data[i - 1] == 0 { i - 1 } else { i };
    let (from, to) = (back(starts[idr].0), back(starts[idr + 1].0));
    let nokey = dir.path().join("nokey.h264");
    std::fs::write(&nokey, [&data[..from], &data[to..]].concat()).unwrap();
    let ts = dir.path().join("nokey.ts");
    record(
        &format!(
            "filesrc location={} ! h264parse ! mpegtsmux ! filesink location={}",
            nokey.display(),
            ts.display()
        ),
        None,
    );
    let server = server();
    let run = gst_launch(
        &server,
        &format!(
            "filesrc location={} ! tsdemux ! h264parse ! kvssink stream-name=nokey \
             file-start-time=1700002000",
            ts.display()
        ),
        TIMEOUT,
    );
    run.assert_all_persisted();
    let output = run.output();
    let said: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("WARNING") && l.contains("inside a group of pictures"))
        .collect();
    assert_eq!(said.len(), 1, "{output}");
    assert!(
        said[0].contains("its first 39 video frames (1560 ms)"),
        "{}",
        said[0]
    );
}

/// A recording held for its time (dated ahead) and stopped without EOS meanwhile: a fragment
/// begun at the stop that holds no frame yet is not sent (the service refuses a fragment
/// without frames: 4006 INVALID_MKV_DATA), nor counted. Several runs, as the stop can come
/// at any point of the fragment's first bytes.
#[test]
fn a_fragment_without_frames_is_never_sent_at_a_stop() {
    init();
    let dir = tempdir();
    let file = recording(dir.path(), 4, None);
    let server = server();
    for run_no in 0..4 {
        let stream = format!("held-empty-{run_no}");
        let start_s = now_ms() / 1000 + 30;
        let run = python_launch(
            &server,
            &["--stop-after-seconds", "2"],
            &format!(
                "filesrc location={} ! kvssink stream-name={stream} file-start-time={start_s} \
                 stop-stream-timeout=10",
                file.display()
            ),
            TIMEOUT,
        );
        let output = run.output();
        assert!(!output.contains("INVALID_MKV_DATA"), "{output}");
        let summary = run.summary();
        assert_eq!(
            summary.get::<u64>("fragments-rejected").unwrap(),
            0,
            "{output}"
        );
        assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0, "{output}");
        // What was stored is what was persisted: whole frames (a fragment the stop cut
        // after its first frame is sent up to there), never a fragment without one.
        let persisted = summary.get::<u64>("fragments-persisted").unwrap();
        assert_eq!(
            summary.get::<u64>("fragments-produced").unwrap(),
            persisted,
            "{output}"
        );
        assert_eq!(
            summary.get::<&str>("outcome").unwrap(),
            "all-persisted",
            "{output}"
        );
        assert_eq!(run.status.code(), Some(0), "{output}");
        assert_eq!(
            server.fragments(&stream).len() as u64,
            persisted,
            "{output}"
        );
    }
}
