//! kvssink end to end: real pipelines (x264enc ! matroskamux ! kvssink) streaming into
//! kvs-local over loopback.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Header + every stored fragment, in order, as kvs-local keeps them.
fn stored_bytes(server: &Server, stream: &str) -> Vec<u8> {
    let headers = server.stream_headers(stream);
    let mut out = headers.first().map(|h| h.to_vec()).unwrap_or_default();
    for fragment in server.fragments(stream) {
        out.extend_from_slice(&fragment.bytes);
    }
    out
}

#[test]
fn live_video_is_persisted_byte_for_byte_with_acks_on_the_bus() {
    init();
    let server = server();
    let line = launch_line("testsrc", &[("STREAM", "cam1")]);
    let (pipeline, sink) = pipeline(&line, &server, "cam1");
    let sent = capture(&sink);

    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos, "EOS must complete");

    // 90 frames with a key frame every 30: three fragments.
    let fragments = server.fragments("cam1");
    assert_eq!(fragments.len(), 3);
    assert!(fragments.iter().all(|f| f.key_frame));
    assert_eq!(
        stored_bytes(&server, "cam1"),
        as_sent(&sent.lock().unwrap())
    );

    // Every fragment was acknowledged on the bus, with kvs-local's fragment numbers.
    let persisted = run.acks("PERSISTED");
    assert_eq!(persisted.len(), 3);
    for (ack, fragment) in persisted.iter().zip(&fragments) {
        assert_eq!(
            ack.get::<u64>("fragment-timecode").unwrap(),
            fragment.timecode
        );
        assert_eq!(ack.get::<&str>("fragment-number").unwrap(), fragment.number);
    }
    assert_eq!(run.acks("BUFFERING").len(), 3);
    assert_eq!(run.acks("RECEIVED").len(), 3);

    // The stream was created (it did not exist) with the media type of its track.
    let stream = server.stream("cam1").expect("stream created");
    assert_eq!(stream.meta.media_type.as_deref(), Some("video/h264"));

    // Producer timestamps are wall-clock times (RELATIVE timecodes from a start timestamp).
    let now_ms = gstkvs::uploader::now_ms();
    for f in &fragments {
        assert!(f.producer_timestamp_ms <= now_ms + 5_000);
        assert!(f.producer_timestamp_ms + 60_000 > now_ms, "{f:?}");
    }

    let summary = run.named("kvs-summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].get::<&str>("outcome").unwrap(), "all-persisted");
    assert_eq!(summary[0].get::<u64>("fragments-persisted").unwrap(), 3);

    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("fragments-persisted").unwrap(), 3);
    assert_eq!(stats.get::<u64>("backlog-fragments").unwrap(), 0);
    server.shutdown();
}

#[test]
fn audio_and_video_tracks_are_persisted() {
    init();
    let server = server();
    let line = launch_line("audio-video", &[("STREAM", "av")]);
    let (pipeline, sink) = pipeline(&line, &server, "av");
    let sent = capture(&sink);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    let fragments = server.fragments("av");
    assert!(fragments.len() >= 3, "{} fragments", fragments.len());
    assert_eq!(stored_bytes(&server, "av"), as_sent(&sent.lock().unwrap()));
    assert_eq!(
        server.stream("av").unwrap().meta.media_type.as_deref(),
        Some("video/h264,audio/aac")
    );
    server.shutdown();
}

#[test]
fn a_recorded_file_streams_through_filesrc() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "rec.mkv", 60, 15, "");
    let server = server();
    let line = launch_line(
        "file",
        &[("STREAM", "file"), ("FILE", file.to_str().unwrap())],
    );
    let (pipeline, _sink) = pipeline(&line, &server, "file");
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_eq!(server.fragments("file").len(), 4);
    assert_eq!(
        stored_bytes(&server, "file"),
        as_sent(&std::fs::read(&file).unwrap())
    );
}

#[test]
fn the_camera_launch_line_is_valid() {
    init();
    let server = server();
    let device = std::env::var("KVSSINK_TEST_CAMERA").unwrap_or_else(|_| "/dev/video0".into());
    let line = launch_line("camera", &[("STREAM", "camera"), ("CAMERA", &device)]);
    // Parsing checks every element and property exists; it streams only with a camera.
    let (pipeline, _sink) = pipeline(&line, &server, "camera");
    if std::path::Path::new(&device).exists() {
        pipeline.set_state(gst::State::Playing).unwrap();
        let run = collect(&pipeline, TIMEOUT, |r| !r.acks("PERSISTED").is_empty());
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(run.errors.is_empty(), "{}", run.error_text());
        assert!(!server.fragments("camera").is_empty());
    }
}

#[test]
fn a_missing_stream_is_an_error_when_creation_is_not_allowed() {
    init();
    let server = server();
    let line = launch_line("testsrc", &[("STREAM", "absent")]);
    let (pipeline, sink) = pipeline(&line, &server, "absent");
    sink.set_property("allow-create-stream", false);
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(text.contains("absent"), "{text}");
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(
        text.contains("the stream does not exist, and allow-create-stream is false"),
        "{text}"
    );
    assert!(server.stream("absent").is_none());
}

#[test]
fn an_existing_stream_is_used_and_tagged() {
    init();
    let server = server();
    server.create_stream("tagged").unwrap();
    let line = launch_line("testsrc", &[("STREAM", "tagged")]);
    let (pipeline, sink) = pipeline(&line, &server, "tagged");
    sink.set_property("allow-create-stream", false);
    let tags = gst::Structure::builder("tags").field("site", "lab").build();
    sink.set_property("stream-tags", tags);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(server.fragments("tagged").len(), 3);
    let stream = server.stream("tagged").unwrap();
    assert_eq!(
        stream.meta.tags.get("site").map(String::as_str),
        Some("lab")
    );
}

#[test]
fn a_wrong_secret_is_a_clear_not_authorized_error() {
    init();
    let server = server();
    let line = launch_line("testsrc", &[("STREAM", "auth")]);
    let (pipeline, sink) = pipeline(&line, &server, "auth");
    sink.set_property("secret-key", "not-the-secret");
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(text.contains("InvalidSignatureException"), "{text}");
    assert!(text.contains("secret key"), "{text}");
    assert!(
        !text.contains("not-the-secret"),
        "the secret leaked: {text}"
    );
    assert!(server.fragments("auth").is_empty());
}

#[test]
fn an_unknown_access_key_is_named_in_the_error() {
    init();
    let server = server();
    let line = launch_line("testsrc", &[("STREAM", "auth2")]);
    let (pipeline, sink) = pipeline(&line, &server, "auth2");
    sink.set_property("access-key", "KVSUNKNOWNKEY");
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(text.contains("UnrecognizedClientException"), "{text}");
    assert!(text.contains("access key"), "{text}");
}

#[test]
fn secrets_read_back_redacted() {
    init();
    let sink = gst::ElementFactory::make("kvssink").build().unwrap();
    sink.set_property("secret-key", "s3cr3t");
    sink.set_property("session-token", "t0k3n");
    sink.set_property("access-key", "KVSACCESS");
    for name in ["secret-key", "session-token", "access-key"] {
        assert_eq!(
            sink.property::<Option<String>>(name).as_deref(),
            Some("<redacted>")
        );
    }
    let fresh = gst::ElementFactory::make("kvssink").build().unwrap();
    assert_eq!(fresh.property::<Option<String>>("secret-key"), None);
    assert_eq!(fresh.property::<String>("stream-name"), "DEFAULT_STREAM");
}

/// matroskamux clusters shorter than the encoder's key frame interval: those that do not
/// start with a key frame are never sent (the service would refuse them), each run of them is
/// said once with the advice, and the stream goes on at every key frame.
#[test]
fn clusters_without_a_key_frame_are_skipped_before_sending() {
    init();
    let dir = tempdir();
    // Clusters every 100 ms but a key frame only every 60 frames: clusters start on delta frames.
    let file = record(
        dir.path(),
        "nokey.mkv",
        90,
        60,
        "max-cluster-duration=100000000",
    );
    let server = server();
    let line = launch_line(
        "file",
        &[("STREAM", "nokey"), ("FILE", file.to_str().unwrap())],
    );
    let (pipeline, _sink) = pipeline(&line, &server, "nokey");
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(
        text.contains("not all of the stream was persisted"),
        "{text}"
    );
    assert!(text.contains("skipped until the next key frame"), "{text}");
    let said: Vec<&String> = run
        .warnings
        .iter()
        .filter(|w| w.contains("did not start with a key frame"))
        .collect();
    assert_eq!(said.len(), 2, "{:?}", run.warnings);
    assert!(said[0].contains("max-cluster-duration"), "{}", said[0]);
    // Only the clusters that start with a key frame were sent, whole.
    let (_, clusters) = split_file(&file);
    let stored = server.fragments("nokey");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].bytes, clusters[0]);
}

/// Pushes `data` through appsrc ! kvssink and returns the run.
fn push_bytes(server: &Server, stream: &str, chunks: Vec<Vec<u8>>) -> Run {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::builder("video/x-matroska").build())
        .format(gst::Format::Bytes)
        .build();
    let sink = gst::ElementFactory::make("kvssink")
        .name("sink")
        .build()
        .unwrap();
    configure_sink(&sink, server, stream);
    pipeline.add_many([src.upcast_ref(), &sink]).unwrap();
    src.link(&sink).unwrap();
    for chunk in chunks {
        src.push_buffer(gst::Buffer::from_slice(chunk)).unwrap();
    }
    src.end_of_stream().unwrap();
    run(&pipeline, TIMEOUT)
}

/// A recording's clusters out of order (the third goes back in time) are all sent, in
/// order of arrival: the one that went back, and what follows, later by as much as it went
/// back, right after the last frame sent; a warning says so. Before, the upload ended there
/// with an error.
#[test]
fn time_going_backwards_is_sent_after_the_last_frame() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "order.mkv", 60, 15, "");
    let (header, clusters) = split_file(&file);
    let server = server();
    // Header, clusters 0, 2, then 1: the third cluster goes back in time.
    let chunks = vec![
        header.to_vec(),
        clusters[0].to_vec(),
        clusters[2].to_vec(),
        clusters[1].to_vec(),
    ];
    let run = push_bytes(&server, "backwards", chunks);
    assert!(run.eos && run.errors.is_empty(), "{run:?}");
    let back: Vec<_> = run
        .warnings
        .iter()
        .filter(|w| w.contains("upstream timestamps went back"))
        .collect();
    assert_eq!(back.len(), 1, "{:?}", run.warnings);
    let stored: Vec<_> = server.fragments("backwards");
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].bytes, clusters[0]);
    assert_eq!(stored[1].bytes, clusters[2]);
    // The cluster that went back, as it came but for its timecode (in AWS's cluster head),
    // now after the last frame of the one before.
    let last = block_times(&stored[1].bytes).last().unwrap().1;
    assert!(
        stored[2].timecode as i64 > last,
        "{} <= {last}",
        stored[2].timecode
    );
    let mut moved = stored[2].bytes.to_vec();
    moved[7..15].copy_from_slice(&clusters[1][7..15]);
    assert_eq!(moved, clusters[1]);
}

#[test]
fn bytes_that_are_not_matroska_are_a_clear_error() {
    init();
    let server = server();
    let jpeg = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0,
    ];
    let run = push_bytes(&server, "jpeg", vec![jpeg]);
    let text = run.error_text();
    assert!(text.contains("JPEG"), "{text}");
    assert!(text.contains("matroskamux"), "{text}");
    assert!(server.fragments("jpeg").is_empty());
}

#[test]
fn an_absurd_element_size_is_an_error_not_an_allocation() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "big.mkv", 30, 15, "");
    let (header, _) = split_file(&file);
    let server = server();
    // A Tags element (a header child kvssink must hold) declaring 100 GB.
    let mut absurd = Vec::new();
    kvs_format::ebml::write_id(&mut absurd, kvs_format::ids::ID_TAGS);
    kvs_format::ebml::write_vint_len(&mut absurd, 100_000_000_000, 8);
    absurd.extend_from_slice(&[0u8; 64]);
    let run = push_bytes(
        &server,
        "absurd",
        vec![header[..header.len()].to_vec(), absurd],
    );
    assert!(!run.errors.is_empty(), "an error is expected");
}

#[test]
fn a_truncated_stream_is_an_error() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "trunc.mkv", 30, 15, "");
    let data = std::fs::read(&file).unwrap();
    let server = server();
    // Cut inside the EBML header.
    let run = push_bytes(&server, "trunc", vec![data[..20].to_vec()]);
    assert!(!run.errors.is_empty(), "an error is expected");
    assert!(server.fragments("trunc").is_empty());
}

#[test]
fn a_new_ebml_header_starts_a_new_session() {
    init();
    let dir = tempdir();
    let a = std::fs::read(record(dir.path(), "a.mkv", 30, 15, "")).unwrap();
    let b = std::fs::read(record(dir.path(), "b.mkv", 30, 15, "")).unwrap();
    let server = server();
    let run = push_bytes(&server, "restart", vec![a.clone(), b.clone()]);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_eq!(server.stream_headers("restart").len(), 2);
    let fragments = server.fragments("restart");
    assert_eq!(fragments.len(), 4);
    assert_eq!(fragments.iter().filter(|f| f.header_index == 1).count(), 2);
}

#[test]
fn an_endpoint_that_is_down_is_reported_and_the_pipeline_stops_at_once() {
    init();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let line = launch_line("testsrc", &[("STREAM", "down")]);
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    sink.set_property("control-plane-uri", format!("http://127.0.0.1:{port}"));
    sink.set_property("access-key", DEMO_ACCESS_KEY);
    sink.set_property("secret-key", DEMO_SECRET_KEY);
    sink.set_property("connection-timeout", 1u32);
    pipeline.set_state(gst::State::Playing).unwrap();
    let run = collect(&pipeline, TIMEOUT, |r| {
        !r.warnings.is_empty() || !r.errors.is_empty()
    });
    let text = format!("{}{}", run.warnings.join("\n"), run.error_text());
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    // Stopping does not wait for the network.
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Stopping during the wait at EOS waits on, as AWS's element does, until
/// `stop-stream-timeout` after EOS; an application that must stop at once (the endpoint does
/// not answer) sets `stop-stream-timeout` to 0, also while the stop waits: it then returns.
#[test]
fn stopping_during_the_eos_wait_returns_once_stop_stream_timeout_is_0() {
    init();
    let server = server();
    server.inject(kvs_local::Fault::StopAcks { stream: None });
    let line = launch_line("testsrc", &[("STREAM", "nullwait")]);
    let (pipeline, sink) = pipeline(&line, &server, "nullwait");
    sink.set_property("stop-stream-timeout", 600u32);
    pipeline.set_state(gst::State::Playing).unwrap();
    // All three fragments arrive, but no ack ever comes back: kvssink waits at EOS.
    assert!(server.wait_for_fragments("nullwait", 3, TIMEOUT));
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pipeline.clone();
    std::thread::spawn(move || {
        p.set_state(gst::State::Null).unwrap();
        let _ = tx.send(());
    });
    // The stop waits on for the acks...
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
    // ... until the application cuts it short. (A guard against a hang, far below 600 s.)
    sink.set_property("stop-stream-timeout", 0u32);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("stop-stream-timeout=0 must end the wait for acks");
}

#[test]
fn long_gops_get_a_key_frame_request_before_the_fragment_limit() {
    init();
    let server = server();
    // A key frame only every 20 s; kvssink asks for one after 2 s of fragment.
    let line = "videotestsrc num-buffers=300 ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
                ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=600 ! h264parse \
                ! matroskamux streamable=true ! kvssink name=sink";
    let (pipeline, sink) = pipeline(line, &server, "gop");
    sink.set_property("fragment-duration", 2000u32);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    let fragments = server.fragments("gop");
    assert!(fragments.len() >= 4, "{} fragments", fragments.len());
    for f in &fragments {
        assert!(f.key_frame);
        assert!(f.duration_ms <= 3000, "{f:?}");
    }
}

#[test]
fn harness_any_buffer_cut_gives_the_same_fragments() {
    init();
    let dir = tempdir();
    let file = record(dir.path(), "cuts.mkv", 60, 15, "");
    let data = std::fs::read(&file).unwrap();
    let server = server();
    // 1-byte buffers for the header, then cuts of 1..=4096 bytes chosen by a fixed LCG.
    let sink = gst::ElementFactory::make("kvssink").build().unwrap();
    configure_sink(&sink, &server, "cuts");
    // A sink prerolls asynchronously; the harness wants the state change done at once.
    sink.set_property("async", false);
    // The harness starts an element with a sink pad at once, so configure it first.
    let mut h = gst_check::Harness::with_element(&sink, Some("sink"), None);
    h.set_src_caps_str("video/x-matroska");
    let mut pos = 0;
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    while pos < data.len() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = if pos < 300 {
            1
        } else {
            1 + (seed >> 33) as usize % 4096
        };
        let end = (pos + len).min(data.len());
        h.push(gst::Buffer::from_slice(data[pos..end].to_vec()))
            .unwrap();
        pos = end;
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(server.fragments("cuts").len(), 4);
    assert_eq!(stored_bytes(&server, "cuts"), as_sent(&data));
}

#[test]
fn jpeg_frames_cannot_be_linked_to_kvssink() {
    init();
    // The classic first attempt: sending JPEG frames instead of Matroska.
    let err = gst::parse::launch("videotestsrc num-buffers=1 ! jpegenc ! kvssink")
        .expect_err("image/jpeg must not link to kvssink");
    assert!(err.to_string().contains("could not link"), "{err}");
    let caps = gst::ElementFactory::find("kvssink")
        .unwrap()
        .static_pad_templates()
        .into_iter()
        .next()
        .unwrap()
        .caps();
    assert!(caps.can_intersect(&gst::Caps::builder("video/x-matroska").build()));
    assert!(!caps.can_intersect(&gst::Caps::builder("image/jpeg").build()));
}
