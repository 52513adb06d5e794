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

fn lines<'a>(run: &'a HostRun, word: &str) -> Vec<Vec<&'a str>> {
    run.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&word))
        .collect()
}

#[test]
fn gst_launch_reads_a_recorded_stream() {
    init();
    let server = server();
    let record = gst_launch(
        &server,
        "videotestsrc num-buffers=60 ! video/x-raw,format=I420,width=320,height=240,\
         framerate=30/1 ! x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! \
         matroskamux streamable=true ! kvssink stream-name=cam1",
        TIMEOUT,
    );
    record.assert_success();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let read = gst_launch(
        &server,
        &format!(
            "kvssrc stream-name=cam1 start-selector=earliest end-timestamp={now} ! \
             matroskademux ! h264parse ! avdec_h264 ! fakesink"
        ),
        TIMEOUT,
    );
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
}
