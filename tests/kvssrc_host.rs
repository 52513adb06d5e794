//! kvssrc in real hosts: `gst-launch-1.0`, and the Python examples (frames pushed from Python
//! bytes, read back into BGR frames). Needs the cdylib: `cargo build -p gst-plugin-kvs --lib`.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `examples/NAME` with `args` in Debian's python3 against `server`.
fn python_example(server: &Server, name: &str, args: &[&str]) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    cmd.arg(script)
        .args(["--endpoint", &server.url()])
        .args(args);
    run_host(cmd, TIMEOUT)
}

/// Reads `stream` from its earliest fragment to now with gst-launch-1.0, decoding the video.
fn read_to_now(server: &Server, stream: &str) -> HostRun {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    gst_launch(
        server,
        &format!(
            "kvssrc stream-name={stream} start-selector=earliest end-timestamp={now} ! \
             matroskademux ! h264parse ! avdec_h264 ! fakesink"
        ),
        TIMEOUT,
    )
}

fn lines<'a>(run: &'a HostRun, word: &str) -> Vec<Vec<&'a str>> {
    run.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&word))
        .collect()
}

/// Uploads `frames` of 30 fps test video of `size` (a key frame a second) into `stream` with
/// gst-launch-1.0, kvssink given `sink_props`.
fn upload(
    server: &Server,
    stream: &str,
    frames: u32,
    (width, height): (u32, u32),
    sink_props: &str,
) {
    gst_launch(
        server,
        &format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,format=I420,width={width},\
             height={height},framerate=30/1 ! x264enc speed-preset=ultrafast key-int-max=30 ! \
             h264parse ! matroskamux streamable=true ! kvssink stream-name={stream} {sink_props}"
        ),
        TIMEOUT,
    )
    .assert_success();
}

#[test]
fn gst_launch_reads_a_recorded_stream() {
    init();
    let server = server();
    upload(&server, "cam1", 60, (320, 240), "");
    let read = read_to_now(&server, "cam1");
    read.assert_success();
    assert_eq!(
        read.named("kvs-fragment").len(),
        server.fragment_count("cam1"),
        "{}",
        read.output()
    );
}

#[test]
fn frames_pushed_from_python_come_back_with_their_timestamps() {
    init();
    let server = server();
    let push = python_example(
        &server,
        "push_frames.py",
        &["--stream", "py", "--frames", "60"],
    );
    push.assert_success();
    assert!(!lines(&push, "ack").is_empty(), "{}", push.output());
    assert!(
        push.stdout.contains("pushed 60 frames"),
        "{}",
        push.output()
    );

    let read = python_example(&server, "read_frames.py", &["--stream", "py"]);
    read.assert_success();
    let frames = lines(&read, "frame");
    let times: Vec<u64> = frames.iter().map(|w| w[1].parse().unwrap()).collect();
    let first = times.first().copied().unwrap_or_default();
    let relative: Vec<u64> = times.iter().map(|t| t - first).collect();
    // Matroska keeps milliseconds, rounded.
    let expected: Vec<u64> = (0..60).map(|i| (i * 1000 + 15) / 30).collect();
    assert_eq!(relative, expected, "{}", read.output());
    assert!(frames.iter().all(|w| w[2] == "320x240" && w[3] == "230400"));
    assert!(read.stdout.contains("frames: 60"), "{}", read.output());
    // Each frame's producer time: the first within a frame of its fragment's.
    let fragments = lines(&read, "fragment");
    let first_fragment: u64 = fragments[0][2].parse().unwrap();
    let produced: Vec<u64> = frames.iter().map(|w| w[4].parse().unwrap()).collect();
    assert!(
        (first_fragment..first_fragment + 34).contains(&produced[0]),
        "first frame produced at {}, its fragment at {first_fragment}\n{}",
        produced[0],
        read.output()
    );
    assert_eq!(
        produced.iter().map(|t| t - produced[0]).collect::<Vec<_>>(),
        relative
    );
}

#[test]
fn frames_pushed_from_python_with_their_capture_times_keep_them() {
    init();
    let server = server();
    // The first frame captured at 2026-06-01T08:00:00.250Z.
    let captured_at: u64 = 1_780_300_800_250;
    let push = python_example(
        &server,
        "push_frames.py",
        &[
            "--stream",
            "captured",
            "--frames",
            "60",
            "--captured-at",
            &captured_at.to_string(),
        ],
    );
    push.assert_success();
    assert!(
        push.stdout.contains("pushed 60 frames"),
        "{}",
        push.output()
    );
    // Frame i was stamped i * (1 s // 30) ns after the first; the stream keeps milliseconds.
    let stamped = |i: u64| captured_at + i * (1_000_000_000 / 30) / 1_000_000;
    let stored = server.fragments("captured");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].producer_timestamp_ms, stamped(0));
    assert_eq!(stored[1].producer_timestamp_ms, stamped(30));

    // Read back, each frame was produced when it was captured.
    let read = python_example(&server, "read_frames.py", &["--stream", "captured"]);
    read.assert_success();
    let produced: Vec<u64> = lines(&read, "frame")
        .iter()
        .map(|w| w[4].parse().unwrap())
        .collect();
    let expected: Vec<u64> = (0..60).map(stamped).collect();
    assert_eq!(produced, expected, "{}", read.output());
}

/// The case this project started from: a folder of JPEG images (`mkv-0.jpg`, `mkv-1.jpg`,
/// ...) goes up with one launch line (decoded and encoded to H.264 in Matroska, which is what
/// KVS takes, rather than sent as JPEG bytes) and comes back as the same number of frames
/// with the same timestamps.
#[test]
fn a_folder_of_jpeg_images_goes_up_with_one_line_and_comes_back_frame_for_frame() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("mkv-%d.jpg");
    let made = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=45", "!"])
        .args([
            "video/x-raw,width=320,height=240",
            "!",
            "jpegenc",
            "!",
            "multifilesink",
        ])
        .arg(format!("location={}", images.display()))
        .status()
        .unwrap();
    assert!(made.success());
    assert!(dir.path().join("mkv-44.jpg").exists());
    let server = server();
    let upload = gst_launch(
        &server,
        &format!(
            "multifilesrc location={} caps=image/jpeg,framerate=15/1 ! jpegdec ! videoconvert \
             ! video/x-raw,format=I420 ! x264enc speed-preset=ultrafast key-int-max=15 \
             ! h264parse ! matroskamux ! kvssink stream-name=images",
            images.display()
        ),
        TIMEOUT,
    );
    upload.assert_success();
    assert_eq!(
        upload.summary().get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    let read = python_example(&server, "read_frames.py", &["--stream", "images"]);
    read.assert_success();
    let times: Vec<u64> = lines(&read, "frame")
        .iter()
        .map(|w| w[1].parse().unwrap())
        .collect();
    let first = times.first().copied().unwrap_or_default();
    let relative: Vec<u64> = times.iter().map(|t| t - first).collect();
    let expected: Vec<u64> = (0..45).map(|i| (i * 1000 + 7) / 15).collect();
    assert_eq!(relative, expected, "{}", read.output());
}

/// Saving a clip from a stream: `kvssrc ! matroskademux ! h264parse ! mp4mux ! filesink`
/// writes an MP4 that GStreamer plays back with every frame.
#[test]
fn a_clip_is_saved_as_mp4() {
    init();
    let server = server();
    upload(&server, "clip", 60, (320, 240), "");
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    gst_launch(
        &server,
        &format!(
            "kvssrc stream-name=clip start-selector=earliest end-timestamp={now} \
             ! matroskademux ! h264parse ! mp4mux ! filesink location={}",
            mp4.display()
        ),
        TIMEOUT,
    )
    .assert_success();
    // Played back: 60 decoded frames.
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.arg("-v").args(split_launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! fakesink name=out silent=false",
        mp4.display()
    )));
    let play = run_host(cmd, TIMEOUT);
    play.assert_success();
    let frames = play
        .stdout
        .lines()
        .filter(|l| l.contains("last-message = chain") && l.contains("(out:sink)"))
        .count();
    assert_eq!(frames, 60, "{}", play.output());
}

/// A reader whose endpoint cannot be reached gives up with an error that says so, as kvssink
/// does at start (3 × `connection-timeout`); before, it retried for ever without a word but
/// `kvs-connection` messages, and the application hung. Its waits between attempts (the
/// `delay` of each `kvs-connection` message) end by that time: the last was a whole backoff
/// that could take it past it (it gave up after 6 s of 3, 14 s of 12).
#[test]
fn gst_launch_gives_up_on_an_endpoint_it_cannot_reach() {
    init();
    let server = server();
    let unused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = gst_launch(
        &server,
        &format!(
            "kvssrc stream-name=nowhere start-selector=earliest connection-timeout=1 \
             control-plane-uri=http://127.0.0.1:{unused} ! fakesink"
        ),
        TIMEOUT,
    );
    assert!(!run.status.success(), "{}", run.output());
    let output = run.output();
    assert!(
        output.contains(&format!(
            "stream nowhere: cannot reach http://127.0.0.1:{unused}"
        )) && output.contains("without reaching the service: check the network"),
        "{output}"
    );
    let delays: Vec<u64> = run
        .named("kvs-connection")
        .iter()
        .filter(|s| s.get::<&str>("state").unwrap() == "reconnecting")
        .map(|s| s.get::<u64>("delay").unwrap())
        .collect();
    assert!(delays.len() > 1, "{output}");
    assert!(
        delays.iter().sum::<u64>() <= 3000,
        "waits of {delays:?} ms in 3 s:\n{output}"
    );
}

/// kvssrc pointed at a web server that is not Kinesis Video Streams (an HTML 404): the error
/// says the answer is not the service's and names the control plane.
#[test]
fn gst_launch_names_an_endpoint_that_is_not_the_service() {
    init();
    let server = server();
    let web = common::standins::Standin::http(|_| {
        common::standins::Reply::status(404, "<html><body>404 Not Found</body></html>")
            .header("content-type", "text/html")
    });
    let run = gst_launch(
        &server,
        &format!(
            "kvssrc stream-name=web start-selector=earliest control-plane-uri={} ! fakesink",
            web.url()
        ),
        TIMEOUT,
    );
    assert!(!run.status.success(), "{}", run.output());
    let output = run.output();
    assert!(
        output.contains("not one of Kinesis Video Streams") && output.contains(&web.url()),
        "{output}"
    );
}

/// Fragments tagged with `kvs-add-metadata` (examples/metadata.py) read back with
/// `gst-launch-1.0 -m`: each `kvs-fragment` message says its fragment's metadata, and no Tags
/// reach matroskademux (they did, and its tag list grew with every fragment).
#[test]
fn fragment_metadata_is_in_the_fragment_message_and_no_tags_reach_the_demuxer() {
    init();
    let server = server();
    python_example(
        &server,
        "metadata.py",
        &["--stream", "tagged", "--seconds", "4"],
    )
    .assert_success();
    let stored = server.fragments("tagged");
    assert!(stored.iter().any(|f| f.metadata.len() == 2), "{stored:?}");
    let read = read_to_now(&server, "tagged");
    read.assert_success();
    let fragments = read.named("kvs-fragment");
    assert_eq!(fragments.len(), stored.len(), "{}", read.output());
    for (message, stored) in fragments.iter().zip(&stored) {
        let metadata: Vec<(String, String)> = message
            .get::<gst::Structure>("metadata")
            .map(|s| {
                s.iter()
                    .map(|(name, value)| (name.to_string(), value.get::<String>().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(metadata, stored.metadata, "{}", read.output());
    }
    let output = read.output();
    let tags: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("(tag):"))
        .filter(|l| l.contains("AWS_KINESISVIDEO") || l.contains("front-door"))
        .collect();
    assert!(tags.is_empty(), "tags reached matroskademux:\n{output}");
}

/// Streams two seconds of live test video to the stream named by its argument and, once it
/// plays (a fragment is open), sends kvssink a non-persistent `motion` item twice (as a
/// detector that fires twice within a fragment) and a persistent `camera` item between them.
const TWO_ITEMS_OF_ONE_NAME: &str = r#"
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
pipeline = Gst.parse_launch(
    "videotestsrc is-live=true num-buffers=60 ! video/x-raw,format=I420,width=320,height=240,"
    "framerate=30/1 ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=30 "
    f"! h264parse ! matroskamux streamable=true ! kvssink name=sink stream-name={sys.argv[1]}")
sink = pipeline.get_by_name("sink")
def add(name, value, persist):
    s = Gst.Structure.new_empty("kvs-add-metadata")
    s.set_value("name", name)
    s.set_value("value", value)
    s.set_value("persist", persist)
    assert sink.send_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, s))
pipeline.set_state(Gst.State.PLAYING)
pipeline.get_state(Gst.CLOCK_TIME_NONE)
add("motion", "1", False)
add("camera", "front-door", True)
add("motion", "2", False)
msg = pipeline.get_bus().timed_pop_filtered(
    Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
pipeline.set_state(Gst.State.NULL)
sys.exit(0 if msg.type == Gst.MessageType.EOS else 1)
"#;

/// A fragment with two items of one name reads back with both, in order: in `metadata-items`
/// of its `kvs-fragment` message (`gst-launch-1.0 -m`) and in examples/read_frames.py's
/// `metadata` lines. `metadata`, a structure, keeps the last value of each name; it was all
/// there was, and the first `motion` was lost.
#[test]
fn metadata_items_of_one_name_in_one_fragment_all_read_back() {
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut push = host_command("/usr/bin/python3", &server.url(), registry.path());
    push.args(["-c", TWO_ITEMS_OF_ONE_NAME, "twice"]);
    run_host(push, TIMEOUT).assert_success();
    let item = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    let stored = server.fragments("twice");
    let tagged: Vec<_> = stored.iter().map(|f| &f.metadata).collect();
    let Some(twice) = stored.iter().find(|f| f.metadata.len() == 3) else {
        panic!("no fragment with the three items: {tagged:?}");
    };
    assert_eq!(
        twice.metadata,
        [
            item("motion", "1"),
            item("camera", "front-door"),
            item("motion", "2")
        ]
    );

    let read = read_to_now(&server, "twice");
    read.assert_success();
    let fragments = read.named("kvs-fragment");
    assert_eq!(fragments.len(), stored.len(), "{}", read.output());
    for (message, stored) in fragments.iter().zip(&stored) {
        let items: Vec<(String, String)> = message
            .get::<gst::Array>("metadata-items")
            .unwrap()
            .iter()
            .map(|v| {
                let s = v.get::<gst::Structure>().unwrap();
                assert_eq!(s.name(), "metadata-item");
                (s.get("name").unwrap(), s.get("value").unwrap())
            })
            .collect();
        assert_eq!(items, stored.metadata, "{}", read.output());
    }
    let message = fragments
        .iter()
        .find(|m| m.get::<&str>("fragment-number").unwrap() == twice.number)
        .unwrap();
    let last = message.get::<gst::Structure>("metadata").unwrap();
    assert_eq!(last.get::<&str>("motion").unwrap(), "2");
    assert_eq!(last.get::<&str>("camera").unwrap(), "front-door");

    let read = python_example(&server, "read_frames.py", &["--stream", "twice"]);
    read.assert_success();
    let printed: Vec<&str> = lines(&read, "metadata")
        .iter()
        .filter(|w| w[1] == twice.number.as_str())
        .map(|w| w[2])
        .collect();
    assert_eq!(
        printed,
        ["motion=1", "camera=front-door", "motion=2"],
        "{}",
        read.output()
    );
}

/// A bounded read with no fragment in its range (here, a window before the only recording):
/// kvssrc's own error says so, the first that gst-launch-1.0 prints (not matroskademux's "got eos
/// and didn't receive a complete header object"), after `kvs-end` with `fragments=0`, by which
/// examples/read_frames.py reports 0 frames without failing.
#[test]
fn a_bounded_read_with_nothing_in_range_says_so() {
    init();
    let server = server();
    upload(&server, "window", 30, (320, 240), "");
    let before = (server.fragments("window")[0].producer_timestamp_ms - 60_000).to_string();
    let launch = gst_launch(
        &server,
        &format!(
            "kvssrc stream-name=window start-selector=earliest end-timestamp={before} ! \
             matroskademux ! fakesink"
        ),
        TIMEOUT,
    );
    let output = launch.output();
    assert!(!launch.status.success(), "{output}");
    let first_error = launch
        .stderr
        .lines()
        .find(|l| l.starts_with("ERROR: from element"));
    assert!(
        first_error.is_some_and(|l| l.contains(
            "kvssrc0: stream window: no fragment in the range read (start-selector=earliest"
        )),
        "{output}"
    );

    let read = python_example(
        &server,
        "read_frames.py",
        &["--stream", "window", "--end-timestamp", &before],
    );
    read.assert_success();
    assert!(read.stdout.contains("frames: 0"), "{}", read.output());
    assert!(
        read.stdout.contains("no fragment in the range read"),
        "{}",
        read.output()
    );
}

/// examples/read_frames.py gives each frame as width * height * 3 bytes of BGR, as it says (for a
/// numpy reshape), also where GStreamer pads the rows: 1366 pixels are 4098 bytes of BGR in a
/// 4100-byte row (the stride), and it gave the 3148800 bytes of the buffer, not 3147264.
#[test]
fn read_frames_gives_tightly_packed_bgr_where_rows_are_padded() {
    init();
    let server = server();
    upload(&server, "wide", 30, (1366, 768), "");
    let read = python_example(&server, "read_frames.py", &["--stream", "wide"]);
    read.assert_success();
    let frames = lines(&read, "frame");
    assert_eq!(frames.len(), 30, "{}", read.output());
    for frame in &frames {
        assert_eq!(
            (frame[2], frame[3], frame.get(5).copied()),
            ("1366x768", "3147264", Some("stride=4100")),
            "{}",
            read.output()
        );
    }
}

/// A live read with examples/read_frames.py (`--selector now`) stopped by Ctrl-C (SIGINT, sent
/// once it has printed a frame) stops cleanly: exit status 0 and the frame count. It ended
/// with a KeyboardInterrupt traceback and never printed `frames:`.
#[test]
fn read_frames_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, Read};
    init();
    let server = server();
    std::thread::scope(|s| {
        s.spawn(|| {
            gst_launch(
                &server,
                "videotestsrc is-live=true num-buffers=300 ! video/x-raw,format=I420,width=320,\
                 height=240,framerate=30/1 ! x264enc speed-preset=ultrafast tune=zerolatency \
                 key-int-max=30 ! h264parse ! matroskamux streamable=true ! \
                 kvssink stream-name=live",
                TIMEOUT,
            )
            .assert_success()
        });
        // The reader reads a stream that exists (kvssrc, as GetMedia, refuses one that does
        // not): on a loaded machine gst-launch-1.0 may take a while to create it.
        assert!(
            server.wait_for_fragments("live", 1, TIMEOUT),
            "no fragment stored"
        );
        let registry = tempfile::tempdir().unwrap();
        let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
        cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/read_frames.py"))
            .args(["--endpoint", &server.url(), "--stream", "live"])
            .args(["--selector", "now"]);
        let mut child = cmd.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut printed = Vec::new();
        // Until the first frame (or the reader's end, or TIMEOUT: then the reader is killed
        // and the test fails with what it printed).
        while !printed.iter().any(|l: &String| l.starts_with("frame ")) {
            match lines.recv_timeout(TIMEOUT) {
                Ok(line) => printed.push(line),
                Err(_) => break,
            }
        }
        if printed.iter().any(|l| l.starts_with("frame ")) {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        while let Ok(line) = lines.recv_timeout(TIMEOUT) {
            printed.push(line);
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let stderr = stderr.join().unwrap();
        let output = format!("{}\n{stderr}", printed.join("\n"));
        assert!(status.success(), "{status}\n{output}");
        assert!(!stderr.contains("Traceback"), "{output}");
        let frames = printed.iter().filter(|l| l.starts_with("frame ")).count();
        assert_eq!(
            printed.last().map(String::as_str),
            Some(format!("frames: {frames}").as_str()),
            "{output}"
        );
    });
}

/// examples/read_frames.py takes the values of the selectors its --help offers.
#[test]
fn read_frames_starts_where_its_options_say() {
    init();
    let server = server();
    upload(&server, "starts", 90, (320, 240), "");
    let stored = server.fragments("starts");
    assert_eq!(stored.len(), 3);
    let last = stored[2].producer_timestamp_ms.to_string();
    for (args, frames) in [
        (
            vec![
                "--selector",
                "fragment-number",
                "--start-fragment-number",
                &stored[0].number,
            ],
            60,
        ),
        (
            vec![
                "--selector",
                "continuation-token",
                "--continuation-token",
                &stored[1].number,
            ],
            30,
        ),
        (
            vec![
                "--selector",
                "producer-timestamp",
                "--start-timestamp",
                &last,
            ],
            30,
        ),
    ] {
        let read = python_example(
            &server,
            "read_frames.py",
            &[&["--stream", "starts"], &args[..]].concat(),
        );
        read.assert_success();
        assert_eq!(
            lines(&read, "frame").len(),
            frames,
            "{args:?}\n{}",
            read.output()
        );
    }
}

/// A range given in seconds since the epoch (`int(time.time())`, as applications often have
/// it) is read as kvssink's `file-start-time` takes it: values below 10^11 are seconds. Before,
/// a start in seconds read the whole stream and an end in seconds found nothing (1970).
#[test]
fn a_range_in_seconds_reads_what_it_says() {
    init();
    let server = server();
    upload(
        &server,
        "seconds",
        90,
        (320, 240),
        "file-start-time=1700000000",
    );
    let stored: Vec<u64> = server
        .fragments("seconds")
        .iter()
        .map(|f| f.producer_timestamp_ms)
        .collect();
    assert_eq!(
        stored,
        [1_700_000_000_000, 1_700_000_001_000, 1_700_000_002_000]
    );
    // From the second fragment (1700000001 s) to before the third (1700000001 s + 0.5 s
    // cannot be said in seconds: end at 1700000001, the second fragment's start).
    let read = gst_launch(
        &server,
        "kvssrc stream-name=seconds start-selector=producer-timestamp \
         start-timestamp=1700000001 end-timestamp=1700000001 ! matroskademux ! fakesink",
        TIMEOUT,
    );
    read.assert_success();
    let read_back: Vec<u64> = read
        .named("kvs-fragment")
        .iter()
        .map(|s| s.get::<u64>("producer-timestamp").unwrap())
        .collect();
    assert_eq!(read_back, [1_700_000_001_000], "{}", read.output());
}

/// The width and height of a baseline JPEG (its SOF0 segment).
fn jpeg_size(data: &[u8]) -> Option<(u16, u16)> {
    let mut at = 2;
    while at + 9 <= data.len() && data[at] == 0xFF {
        let length = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        if data[at + 1] == 0xC0 {
            let h = u16::from_be_bytes([data[at + 5], data[at + 6]]);
            let w = u16::from_be_bytes([data[at + 7], data[at + 8]]);
            return Some((w, h));
        }
        at += 2 + length;
    }
    None
}

/// Still pictures from Python with boto3's GetImages (`examples/read_images.py`): a recording
/// of 3 s dated by `file-start-time`, sampled every 2 s for 4 s, scaled to 160 pixels wide:
/// two JPEGs of 160x120, and the time after the recording said to have none.
#[test]
fn read_images_saves_a_picture_every_interval() {
    init();
    let server = server();
    let start_s = 1_764_005_000u64;
    upload(
        &server,
        "stills",
        90,
        (320, 240),
        &format!("file-start-time={start_s}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pictures");
    let start_ms = (start_s * 1000).to_string();
    let read = python_example(
        &server,
        "read_images.py",
        &[
            "--stream",
            "stills",
            "--start",
            &start_ms,
            "--seconds",
            "4",
            "--interval",
            "2000",
            "--width",
            "160",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    read.assert_success();
    let images = lines(&read, "image");
    let at: Vec<u64> = images.iter().map(|w| w[1].parse().unwrap()).collect();
    assert_eq!(
        at,
        vec![start_s * 1000, start_s * 1000 + 2000],
        "{}",
        read.output()
    );
    for w in &images {
        let data = std::fs::read(w[2]).unwrap();
        assert_eq!(data.len().to_string(), w[3]);
        assert_eq!(jpeg_size(&data), Some((160, 120)), "{}", w[2]);
    }
    let missing = lines(&read, "missing");
    assert_eq!(
        missing,
        vec![vec![
            "missing",
            &(start_s * 1000 + 4000).to_string(),
            "NO_MEDIA"
        ]],
        "{}",
        read.output()
    );
    assert!(
        read.stdout.contains("images 2 missing 1"),
        "{}",
        read.output()
    );
}

/// A live view in a Python application (`kvssrc start-selector=now` into a sink that renders
/// each frame at its time) through an outage of 4 s, the camera (gst-launch-1.0) and the
/// reader both cut off: the application recalculates the latency at each LATENCY message, as
/// the README says, so the frames of the outage, which come late, are rendered, not dropped;
/// the latency grows past the outage, then comes down once fragments are on time again.
/// What a live view in Python saw through a 4 s outage (see [`live_view_through_an_outage`]).
struct LiveView {
    read: HostRun,
    /// Frames demuxed and rendered.
    demuxed: u64,
    rendered: u64,
    /// (latency ms, frames demuxed, frames rendered) at each LATENCY message.
    latencies: Vec<(u64, u64, u64)>,
    /// `kvs-fragment` messages with `skipped=true`, QOS messages from kvssrc, and the
    /// `skipped` of its `kvs-end` message.
    skipped: u64,
    qos: u64,
    end_skipped: u64,
    /// The longest time (ms, wall clock) the view stood still after its first frame.
    still_ms: u64,
}

/// A camera streams live for about 45 s; 5 s in, a live view in Python (kvssrc `props`,
/// latency applied as GStreamer asks: `recalculate_latency()` on a LATENCY message, a sink
/// that syncs and a decoder's QoS) reads it for 42 s, through a 4 s outage of the endpoint.
fn live_view_through_an_outage(props: &str) -> LiveView {
    let server = std::sync::Arc::new(server());
    let camera = {
        let server = server.clone();
        std::thread::spawn(move || {
            gst_launch(
                &server,
                "videotestsrc is-live=true num-buffers=1400 ! video/x-raw,format=I420,width=320,\
                 height=240,framerate=30/1 ! x264enc tune=zerolatency speed-preset=ultrafast \
                 key-int-max=30 ! h264parse ! matroskamux streamable=true ! kvssink \
                 stream-name=view",
                TIMEOUT,
            )
        })
    };
    while server.try_fragments("view").map_or(true, |f| f.is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 42_000;
    let script = format!(
        r#"
import sys, time, gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib
Gst.init(None)
pipeline = Gst.parse_launch(
    "kvssrc name=src start-selector=now stream-name=view end-timestamp={end} {props} "
    "! matroskademux ! identity name=demuxed signal-handoffs=true ! h264parse ! avdec_h264 "
    "! videoconvert ! fakesink name=out sync=true max-lateness=20000000 qos=true "
    "signal-handoffs=true")
counts = {{"demuxed": 0, "out": 0, "skipped": 0, "qos": 0}}
shown = {{"last": None, "still": 0.0}}
def demuxed(*_):
    counts["demuxed"] += 1
def rendered(*_):
    counts["out"] += 1
    now = time.monotonic()
    if shown["last"] is not None:
        shown["still"] = max(shown["still"], now - shown["last"])
    shown["last"] = now
pipeline.get_by_name("demuxed").connect("handoff", demuxed)
pipeline.get_by_name("out").connect("handoff", rendered)
src = pipeline.get_by_name("src")
loop = GLib.MainLoop()
def on_message(_bus, msg):
    if msg.type == Gst.MessageType.LATENCY:
        pipeline.recalculate_latency()
        query = Gst.Query.new_latency()
        if pipeline.query(query):
            print("latency", query.parse_latency()[1] // Gst.MSECOND, counts["demuxed"],
                  counts["out"], flush=True)
    elif msg.type == Gst.MessageType.QOS and msg.src == src:
        counts["qos"] += 1
    elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "kvs-fragment":
        if msg.get_structure().get_value("skipped"):
            counts["skipped"] += 1
    elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "kvs-end":
        print("end", msg.get_structure().get_value("skipped"), flush=True)
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR:
            print("error", msg.parse_error()[0].message, flush=True)
        loop.quit()
bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
print("frames", counts["demuxed"], counts["out"], counts["skipped"], counts["qos"],
      int(shown["still"] * 1000), flush=True)
"#
    );
    let reader = {
        let server = server.clone();
        std::thread::spawn(move || {
            let registry = tempfile::tempdir().unwrap();
            let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
            cmd.args(["-c", &script]);
            run_host(cmd, TIMEOUT)
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    server.pause_listening();
    std::thread::sleep(Duration::from_secs(4));
    server.resume_listening();
    let read = reader.join().unwrap();
    camera.join().unwrap();
    read.assert_success();
    let number = |w: &str| w.parse::<u64>().unwrap();
    let frames: Vec<u64> = lines(&read, "frames")[0][1..]
        .iter()
        .map(|w| number(w))
        .collect();
    let latencies = lines(&read, "latency")
        .iter()
        .map(|w| (number(w[1]), number(w[2]), number(w[3])))
        .collect();
    LiveView {
        demuxed: frames[0],
        rendered: frames[1],
        skipped: frames[2],
        qos: frames[3],
        still_ms: frames[4],
        end_skipped: number(lines(&read, "end")[0][1]),
        latencies,
        read,
    }
}

#[test]
fn a_live_view_in_python_renders_through_an_outage() {
    init();
    let LiveView {
        read,
        demuxed,
        rendered,
        latencies,
        skipped,
        ..
    } = live_view_through_an_outage("");
    assert!(demuxed >= 800 && rendered >= 500, "{}", read.output());
    assert_eq!(skipped, 0, "{}", read.output());
    let peak = latencies.iter().map(|l| l.0).max().unwrap_or(0);
    assert!(peak >= 4000, "{latencies:?}\n{}", read.output());
    // It came down, at least 2 s, once fragments were on time again.
    let last = latencies.last().unwrap().0;
    assert!(last + 2000 <= peak, "{latencies:?}\n{}", read.output());
    // Until it first came down, through the outage, every frame but a fragment's at most was
    // rendered, late.
    let at_peak = latencies.iter().position(|l| l.0 == peak).unwrap();
    let (_, demuxed_then, rendered_then) =
        *latencies[at_peak..].iter().find(|l| l.0 < peak).unwrap();
    assert!(
        rendered_then + 30 >= demuxed_then,
        "{latencies:?}\n{}",
        read.output()
    );
    // Then the frames it would show too late are dropped (and a decoder's QoS skips as much
    // again: the view stands still for about twice what it was behind), and the view goes on,
    // live.
    assert!(
        rendered > rendered_then + 30,
        "{latencies:?}\n{}",
        read.output()
    );
}

#[test]
fn a_live_view_dropping_on_latency_goes_on_live_after_an_outage() {
    init();
    let view = live_view_through_an_outage("drop-on-latency=true");
    let LiveView { read, .. } = &view;
    let seen = format!(
        "demuxed {}, rendered {}, skipped {} (QOS {}, kvs-end {}), stood still {} ms, \
         latencies {:?}\n{}",
        view.demuxed,
        view.rendered,
        view.skipped,
        view.qos,
        view.end_skipped,
        view.still_ms,
        view.latencies,
        read.output()
    );
    assert!(view.demuxed >= 800 && view.rendered >= 500, "{seen}");
    // The outage's fragments, which came about 4 s late, were skipped and said so, each in a
    // QOS message and its kvs-fragment message, and counted at the end...
    assert!(view.skipped >= 2, "{seen}");
    assert_eq!(view.qos, view.skipped, "{seen}");
    assert_eq!(view.end_skipped, view.skipped, "{seen}");
    // ... instead of raising the latency to hold them (the view above: 4 s and more). The
    // first fragment after them, partly late, may raise it by up to its length.
    let peak = view.latencies.iter().map(|l| l.0).max().unwrap_or(0);
    assert!(peak < 4000, "{seen}");
    // What reached the sink came in time: the sink and a decoder's QoS dropped less than an
    // outage's worth of frames (the view above drops the outage's frames, then as many again).
    assert!(view.demuxed - view.rendered < 120, "{seen}");
}
