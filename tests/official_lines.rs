//! The launch lines of AWS's kvssink, with elementary streams in: H.264 straight from the
//! encoder (length-prefixed, or in Annex B form as cameras give it), through h264parse,
//! RTSP-style through rtph264depay, and H.265; and the IoT-certificate line. Each runs in
//! `gst-launch-1.0` with only the plugin path changed, persists every fragment, and reads back
//! (kvssrc) as every frame, video on track 1.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const FRAMES: usize = 90;

/// Runs `source ! kvssink stream-name=STREAM` and checks what was stored.
fn streams_whole(source: &str, stream: &str) {
    init();
    let server = server();
    let run = gst_launch(
        &server,
        &format!("{source} ! kvssink stream-name={stream}"),
        TIMEOUT,
    );
    run.assert_all_persisted();
    let fragments = server.fragments(stream);
    assert!(!fragments.is_empty());
    assert!(fragments.iter().all(|f| f.key_frame));
    let headers = server.stream_headers(stream);
    let tracks = header_tracks(&headers[0]);
    // The header in the shape AWS's producer sends: Segment of unknown size, short form.
    assert!(
        headers[0]
            .windows(5)
            .any(|w| w == [0x18, 0x53, 0x80, 0x67, 0xFF])
    );
    assert_eq!(tracks, [(1, 1)], "video is track 1, the only one");

    // Read back: every frame decodes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let decoder = if source.contains("265") {
        "h265parse ! avdec_h265"
    } else {
        "h264parse ! avdec_h264"
    };
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.arg("-v").args(split_launch(&format!(
        "kvssrc stream-name={stream} start-selector=earliest end-timestamp={now} \
         ! matroskademux ! {decoder} ! fakesink name=out silent=false"
    )));
    let read = run_host(cmd, TIMEOUT);
    read.assert_success();
    let frames = read
        .stdout
        .lines()
        .filter(|l| l.contains("last-message = chain") && l.contains("(out:sink)"))
        .count();
    assert_eq!(frames, FRAMES, "{}", read.output());
}

fn test_video() -> String {
    format!(
        "videotestsrc num-buffers={FRAMES} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1"
    )
}

#[test]
fn h264_caps_from_the_encoder() {
    streams_whole(
        &format!(
            "{} ! x264enc ! video/x-h264,stream-format=avc,alignment=au",
            test_video()
        ),
        "avc",
    );
}

/// What a camera with a hardware encoder gives: H.264 in Annex B form (start codes, the SPS
/// and PPS in the stream), no parser in between.
#[test]
fn h264_byte_stream_as_from_a_camera_without_a_parser() {
    streams_whole(
        &format!(
            "{} ! x264enc ! video/x-h264,stream-format=byte-stream,alignment=au",
            test_video()
        ),
        "annexb",
    );
}

#[test]
fn h264_through_h264parse() {
    streams_whole(&format!("{} ! x264enc ! h264parse", test_video()), "parsed");
}

#[test]
fn h264_from_rtp_as_from_a_camera() {
    streams_whole(
        &format!(
            "{} ! x264enc tune=zerolatency ! rtph264pay ! rtph264depay ! h264parse",
            test_video()
        ),
        "rtsp",
    );
}

#[test]
fn h265_through_h265parse() {
    streams_whole(
        &format!(
            "{} ! x265enc tune=zerolatency speed-preset=ultrafast ! h265parse",
            test_video()
        ),
        "hevc",
    );
}

/// `AWS_KVS_LOG_LEVEL`, which users of AWS's element set, sets kvssink's log level (3: info).
#[test]
fn aws_kvs_log_level_sets_the_log_level() {
    init();
    let server = server();
    let line = format!(
        "{} ! x264enc ! h264parse ! kvssink stream-name=logs",
        test_video()
    );
    let run_with = |level: Option<&str>| {
        let registry = tempfile::tempdir().unwrap();
        let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
        if let Some(level) = level {
            cmd.env("AWS_KVS_LOG_LEVEL", level);
        }
        cmd.args(["-e"]).args(split_launch(&line));
        let run = run_host(cmd, TIMEOUT);
        run.assert_success();
        run.stderr
            .lines()
            .filter(|l| l.contains("INFO") && l.contains("kvssink"))
            .count()
    };
    assert_eq!(run_with(None), 0);
    assert!(run_with(Some("3")) > 0);
    assert_eq!(run_with(Some("4")), 0, "4 is warnings and worse");
}

/// H.265 in Annex B form, no parser in between: the hvcC is built from the stream's VPS, SPS
/// and PPS.
#[test]
fn h265_byte_stream_without_a_parser() {
    streams_whole(
        &format!(
            "{} ! x265enc tune=zerolatency speed-preset=ultrafast \
             ! video/x-h265,stream-format=byte-stream,alignment=au",
            test_video()
        ),
        "hevc-annexb",
    );
}

/// The official README's IoT line: no keys anywhere, credentials from the AWS IoT credentials
/// provider over mutual TLS, given as the `iot-certificate` structure string in the launch
/// line (here with the stand-in provider's address, its CA and the role alias it knows).
#[test]
fn iot_certificate_line_without_keys() {
    use common::standins::{self, Issued, Pki};
    init();
    let pki = Pki::new();
    let issued = Issued::new(
        "iotline",
        std::time::SystemTime::now() + Duration::from_secs(3600),
    );
    let key_pair = issued.key_pair();
    let iot = standins::iot(&pki, move || issued.clone());
    let server = kvs_local::Server::spawn(kvs_local::Config {
        keys: vec![key_pair.clone()],
        ..kvs_local::Config::default()
    })
    .unwrap();
    let stream = "iot-stream";
    let certificate = format!(
        "iot-certificate,endpoint={},cert-path={},key-path={},ca-path={},\
         role-aliases=kvs-role-alias,iot-thing-name={stream}",
        iot.addr(),
        pki.client_cert.display(),
        pki.client_key.display(),
        pki.ca.display(),
    );
    let line = format!(
        "{} ! x264enc tune=zerolatency ! rtph264pay ! rtph264depay ! h264parse \
         ! kvssink stream-name={stream} aws-region=us-east-1 iot-certificate=\"{certificate}\"",
        test_video()
    );
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", registry.path())
        .args(["-m", "-e"])
        .args(split_launch(&line));
    let run = run_host(cmd, TIMEOUT);
    run.assert_all_persisted();
    assert!(!server.fragments(stream).is_empty());
    let requests = iot.requests();
    assert!(!requests.is_empty());
    assert_eq!(
        requests[0].header("x-amzn-iot-thingname"),
        Some(stream),
        "the thing name from the line"
    );
    assert!(
        requests[0].path.contains("kvs-role-alias"),
        "{}",
        requests[0].path
    );
}

/// AWS's intermittent-streaming sample: the application stops streaming by sending EOS and
/// waiting for it, pauses its source and flushes, then flushes again and plays the source.
/// Each time it plays again, a new upload starts, with its header and its own account; before,
/// the bytes after the first EOS came without a header and the stream failed.
#[test]
fn streaming_again_after_eos_and_a_flush_as_aws_intermittent_sample() {
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/intermittent.py"))
        .args(["intermittent", "2", "2.5", "1"]);
    let run = run_host(cmd, TIMEOUT);
    run.assert_success();
    let outcomes: Vec<&str> = run
        .named("kvs-summary")
        .iter()
        .map(|s| s.get::<&str>("outcome").unwrap())
        .collect();
    assert_eq!(outcomes, ["all-persisted"; 3], "{}", run.output());
    let starts = run.named("kvs-stream-start");
    assert_eq!(starts.len(), 3, "{}", run.output());
    // Each part is dated when it was streamed, after the one before.
    let times: Vec<u64> = starts
        .iter()
        .map(|s| s.get::<u64>("producer-start-time").unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[1] >= w[0] + 2500), "{times:?}");
    let fragments = server.fragments("intermittent");
    let persisted: u64 = run
        .named("kvs-summary")
        .iter()
        .map(|s| s.get::<u64>("fragments-persisted").unwrap())
        .sum();
    assert_eq!(fragments.len() as u64, persisted);
    assert!(fragments.len() >= 6, "{} fragments", fragments.len());
    assert!(fragments.iter().all(|f| f.key_frame));
}

/// A live H.264 camera (3 s) into `kvssink name=sink` with `props`.
fn camera_into_sink(props: &str) -> String {
    format!(
        "videotestsrc is-live=true num-buffers=90 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc bframes=0 key-int-max=30 tune=zerolatency \
         ! video/x-h264,stream-format=avc,alignment=au ! kvssink name=sink {props}"
    )
}

/// Runs `tests/host/signals.py LINE`: AWS's signals connected as its samples do.
fn with_signals(server: &Server, line: &str) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/signals.py"))
        .arg(line);
    run_host(cmd, TIMEOUT)
}

/// An application written for AWS's element connects `fragment-ack`, `stream-error` and
/// `stream-client-metric` (its samples and canary do; PyGObject raises on an unknown signal).
/// Every ack comes as a pointer to the producer SDK's `FragmentAck`, read here with ctypes:
/// the same type and fragment number as the `kvs-ack` message, and as timestamp the
/// fragment's producer timestamp in ms since the epoch, as AWS's element gives it with its
/// default absolute fragment times.
#[test]
fn aws_signals_connect_and_every_ack_comes_as_a_fragment_ack() {
    init();
    let server = server();
    let run = with_signals(&server, &camera_into_sink("stream-name=signals"));
    run.assert_all_persisted();
    let from_signal: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("fragment-ack "))
        .map(str::to_owned)
        .collect();
    let from_messages: Vec<String> = run
        .named("kvs-ack")
        .iter()
        .map(|s| {
            let kind = match s.get::<&str>("event-type").unwrap() {
                "BUFFERING" => 1,
                "RECEIVED" => 2,
                "PERSISTED" => 3,
                "ERROR" => 4,
                _ => 5,
            };
            format!(
                "type={kind} timestamp={} sequence={} result=200",
                s.get::<u64>("producer-timestamp").unwrap_or(0),
                s.get::<&str>("fragment-number").unwrap_or("")
            )
        })
        .collect();
    assert_eq!(from_signal, from_messages, "{}", run.output());
    // Epoch milliseconds of this year or so, not a timecode from the stream's start.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for ack in &from_signal {
        let ms: u64 = ack
            .split_whitespace()
            .find_map(|w| w.strip_prefix("timestamp="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms.abs_diff(now_ms) < 600_000, "{ack}");
    }
    assert!(
        from_signal
            .iter()
            .filter(|a| a.starts_with("type=3"))
            .count()
            >= 3
    );
    assert!(!run.stdout.contains("stream-error"));
}

/// A C or Python application stops its pipeline from its `fragment-ack` handler, which runs on
/// the thread that reads the acks: the stop cannot wait there for the last acks (it used to,
/// for the whole stop-stream-timeout, holding every stream of the process); it ends at once
/// and a warning says why and what to do.
#[test]
fn a_stop_from_the_fragment_ack_handler_does_not_wait_for_itself() {
    init();
    let server = server();
    server.inject(kvs_local::Fault::DelayAcks {
        stream: None,
        delay_ms: 1500,
    });
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/signals.py"))
        .args(["--stop-in-ack", "2"])
        .arg(
            camera_into_sink("stream-name=stopinack stop-stream-timeout=600")
                .replace("num-buffers=90", "num-buffers=600"),
        );
    // Before, the stop waited 600 s: the host would be killed at the test's timeout.
    let run = run_host(cmd, TIMEOUT);
    let out = run.output();
    assert!(out.contains("stopped in ack"), "{out}");
    assert!(
        out.contains("stopped from a handler of kvssink's fragment-ack signal"),
        "{out}"
    );
    let summary = out
        .lines()
        .find_map(|l| l.strip_prefix("sync (element): "))
        .expect("a summary");
    assert!(
        summary.contains("stream-name=(string)stopinack"),
        "{summary}"
    );
}

/// A fatal error (here credentials the service refuses) emits `stream-error` once, with the
/// code of the error message that follows (GST_RESOURCE_ERROR_NOT_AUTHORIZED, 15).
#[test]
fn a_fatal_error_emits_stream_error_once() {
    init();
    let server = server();
    let run = with_signals(
        &server,
        &camera_into_sink(
            "stream-name=signals-refused access-key=KVSLOCALDEMOACCESSKEY \
             secret-key=not-the-secret",
        ),
    );
    assert!(!run.status.success());
    let statuses: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("stream-error"))
        .collect();
    assert_eq!(statuses, ["stream-error status=15"], "{}", run.output());
    // The account says the service refused the stream, not that it never answered.
    let reasons = run.summary().get::<&str>("loss-reasons").unwrap();
    assert!(
        reasons.contains("the stream did not start (stream signals-refused: InvalidSignature"),
        "{reasons}"
    );
    // The error, which gives the cause first, does not repeat it in its account.
    assert!(
        run.output().contains("never acknowledged (abandoned))"),
        "{}",
        run.output()
    );
}

/// AWS's element takes keys from the environment before its credentials file, and its
/// placeholder defaults (`access_key`, `secret_key`) as unset: a line written for it, run
/// with the keys in the environment (as gst-launch-1.0 here), streams the same with ours.
#[test]
fn environment_keys_come_before_credential_path_and_placeholders_are_unset() {
    init();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("credential");
    std::fs::write(&bad, "CREDENTIALS AKIDNOTKNOWNHERE not-the-secret\n").unwrap();
    for (stream, props) in [
        (
            "envmissingfile",
            "credential-path=/nonexistent/.kvs/credential".to_owned(),
        ),
        ("envbadfile", format!("credential-path={}", bad.display())),
        (
            "envplaceholders",
            "access-key=access_key secret-key=secret_key session-token=session_token".to_owned(),
        ),
    ] {
        let run = gst_launch(
            &server,
            &camera_into_sink(&format!("stream-name={stream} {props}")),
            TIMEOUT,
        );
        run.assert_all_persisted();
        let out = run.output();
        if props.starts_with("credential-path") {
            assert!(
                out.contains("credential-path")
                    && out.contains("is ignored, as AWS's kvssink does"),
                "{out}"
            );
        } else {
            assert!(!out.contains("WARNING"), "{out}");
        }
        assert_eq!(server.fragments(stream).len(), 3, "{stream}");
    }
    assert!(
        refused_keys(&server).is_empty(),
        "{:?}",
        refused_keys(&server)
    );
}

/// H.264 caps without codec_data pass ACCEPT_CAPS but cannot be muxed: the error says so on
/// the bus (upstream only sees not-negotiated), and the run does not end as a success.
#[test]
fn h264_caps_without_codec_data_are_a_clear_error() {
    init();
    let server = server();
    let run = gst_launch(
        &server,
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=320,height=240 ! x264enc \
         ! h264parse ! video/x-h264,stream-format=avc ! capssetter replace=true \
         caps=\"video/x-h264,stream-format=avc,alignment=au,width=320,height=240,framerate=30/1\" \
         ! kvssink stream-name=nocodecdata",
        TIMEOUT,
    );
    assert!(!run.status.success(), "{}", run.output());
    assert!(
        run.output()
            .contains("kvssink cannot take these caps: video/x-h264 caps without codec_data"),
        "{}",
        run.output()
    );
}

/// GstBaseSink's max-lateness would drop late buffers (with sync=true) before kvssink sees
/// them, a loss no summary counted: kvssink sets it to -1, says so, and every frame is sent.
#[test]
fn max_lateness_drops_nothing() {
    init();
    let server = server();
    let run = gst_launch(
        &server,
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,format=I420,width=320,height=240 \
         ! x264enc tune=zerolatency key-int-max=30 ! h264parse ! identity sleep-time=45000 \
         ! kvssink stream-name=notlate sync=true max-lateness=20000000 qos=true",
        TIMEOUT,
    );
    run.assert_all_persisted();
    assert!(
        run.output().contains("max-lateness is ignored"),
        "{}",
        run.output()
    );
    let frames: usize = server
        .fragments("notlate")
        .iter()
        .map(|f| block_times(&f.bytes).len())
        .sum();
    assert_eq!(frames, 60);
}
