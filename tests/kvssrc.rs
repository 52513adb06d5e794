//! kvssrc end to end: record with kvssink into kvs-local, read back with kvssrc !
//! matroskademux, and compare frames and timestamps.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Run, Server};
use gst::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Records `frames` frames of 30 fps H.264 (a key frame a second) into `stream`.
fn record(server: &Server, stream: &str, frames: u32) -> Run {
    let line = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,format=I420,width=320,height=240,\
         framerate=30/1 ! x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! \
         matroskamux streamable=true ! kvssink name=sink"
    );
    let (pipeline, _) = common::pipeline(&line, server, stream);
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "recording: {run:?}");
    run
}

/// What a read produced: the frames' timestamps and the run.
struct Read {
    pts: Vec<gst::ClockTime>,
    run: Run,
}

impl Read {
    /// Timestamps relative to the first frame's.
    fn relative(&self) -> Vec<u64> {
        let first = self.pts.first().copied().unwrap_or_default();
        self.pts.iter().map(|t| (*t - first).mseconds()).collect()
    }

    fn fragments(&self) -> Vec<&gst::Structure> {
        self.run.named("kvs-fragment")
    }

    /// Every fragment `server` stored of `stream` was read once, in order, and its `frames`
    /// frames came with their times.
    fn assert_every_fragment_once(&self, server: &Server, stream: &str, frames: u64) {
        let numbers: Vec<String> = self
            .fragments()
            .into_iter()
            .map(|s| s.get::<String>("fragment-number").unwrap())
            .collect();
        let stored: Vec<String> = server
            .fragments(stream)
            .into_iter()
            .map(|f| f.number)
            .collect();
        assert_eq!(numbers, stored);
        assert_eq!(self.relative(), expected(frames));
    }
}

/// Reads `stream` with kvssrc (extra properties in `props`) into matroskademux ! h264parse.
fn read(server: &Server, stream: &str, props: &str) -> Read {
    read_with(server, stream, props, |_| {})
}

fn read_with(
    server: &Server,
    stream: &str,
    props: &str,
    before: impl FnOnce(&gst::Pipeline),
) -> Read {
    let line = format!(
        "kvssrc name=src {props} ! matroskademux ! h264parse ! fakesink name=out \
         signal-handoffs=true sync=false"
    );
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    common::configure_sink(&pipeline.by_name("src").unwrap(), server, stream);
    let pts = Arc::new(Mutex::new(Vec::new()));
    let seen = pts.clone();
    pipeline
        .by_name("out")
        .unwrap()
        .connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            seen.lock()
                .unwrap()
                .push(buffer.pts().expect("a timestamp"));
            None
        });
    before(&pipeline);
    let run = common::run_even_if_start_fails(&pipeline, TIMEOUT);
    let pts = pts.lock().unwrap().clone();
    Read { pts, run }
}

/// Frame times of 30 fps from 0, in ms (as matroskamux rounds them).
fn expected(frames: u64) -> Vec<u64> {
    (0..frames).map(|i| (i * 1000 + 15) / 30).collect()
}

#[test]
fn earliest_reads_every_frame_back_with_its_time() {
    common::init();
    let server = common::server();
    record(&server, "cam1", 90);
    let read = read(
        &server,
        "cam1",
        &format!("start-selector=earliest end-timestamp={}", now_ms()),
    );
    assert!(read.run.eos, "{:?}", read.run);
    assert_eq!(read.relative(), expected(90));
    let fragments = read.fragments();
    assert_eq!(fragments.len(), server.fragment_count("cam1"));
    let stored = server.fragments("cam1");
    for (message, stored) in fragments.iter().zip(&stored) {
        assert_eq!(
            message.get::<&str>("fragment-number").unwrap(),
            stored.number
        );
        assert_eq!(
            message.get::<u64>("producer-timestamp").unwrap(),
            stored.producer_timestamp_ms
        );
        assert!(message.get::<&str>("continuation-token").is_ok());
    }
}

/// Records `frames` frames of a live 30 fps camera of `width` x `height` into `stream`: a
/// PutMedia session of its own, with timecodes from 0.
fn record_live(server: &Server, stream: &str, frames: u32, (width, height): (u32, u32)) {
    let line = format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,format=I420,\
         width={width},height={height},framerate=30/1 ! x264enc tune=zerolatency \
         speed-preset=ultrafast key-int-max=30 ! h264parse ! matroskamux streamable=true ! \
         kvssink name=sink"
    );
    let (pipeline, _) = common::pipeline(&line, server, stream);
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "recording: {run:?}");
}

/// A camera that restarted: two recordings in one stream, each with timecodes from 0. Read
/// back, the second goes on after the first, as far after it as it was recorded.
#[test]
fn a_later_recording_reads_back_after_the_first_at_its_real_time() {
    common::init();
    let server = common::server();
    record_live(&server, "restarted", 60, (320, 240));
    std::thread::sleep(Duration::from_secs(1));
    record_live(&server, "restarted", 60, (320, 240));
    let src = Arc::new(Mutex::new(None));
    let keep = src.clone();
    let read = read_with(
        &server,
        "restarted",
        &format!("start-selector=earliest end-timestamp={}", now_ms()),
        move |pipeline| *keep.lock().unwrap() = pipeline.by_name("src"),
    );
    assert!(read.run.eos, "{:?}", read.run);
    assert_eq!(read.pts.len(), 120);
    assert!(
        read.pts.windows(2).all(|w| w[0] < w[1]),
        "timestamps go back: {:?}",
        read.relative()
    );
    // The second recording's first frame is where its producer time puts it.
    let stored = server.fragments("restarted");
    let second = stored
        .iter()
        .position(|f| f.producer_timestamp_ms >= stored[0].producer_timestamp_ms + 2_500)
        .expect("a fragment of the second recording");
    let recorded = stored[second].producer_timestamp_ms - stored[0].producer_timestamp_ms;
    let read_back = read.relative()[60];
    assert!(
        read_back.abs_diff(recorded) <= 50,
        "the second recording starts {read_back} ms after the first when read, {recorded} ms \
         when recorded"
    );
    // timeline-origin + a frame's timestamp: when it was produced, in either recording.
    let origin: u64 = src
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .property("timeline-origin");
    for (frame, fragment) in [(0, 0), (60, second)] {
        let produced = origin + read.pts[frame].mseconds();
        let at = stored[fragment].producer_timestamp_ms;
        assert!(
            (at..at + 34).contains(&produced),
            "frame {frame} produced at {produced}, its fragment at {at}"
        );
    }
}

/// A recording uploaded after the live data it precedes: GetMedia returns fragments in the
/// order they arrived, so it comes after them, dated two minutes earlier. It starts a new
/// timeline (a `kvs-timeline` message: its origin, and the timestamp from which it holds):
/// timestamps never go back, and each frame's origin plus its timestamp is when it was
/// produced, in both recordings.
#[test]
fn a_recording_dated_before_what_was_read_starts_a_new_timeline() {
    common::init();
    let server = common::server();
    record_live(&server, "backfill", 60, (320, 240));
    let live_at = server.fragments("backfill")[0].producer_timestamp_ms;
    let recorded_at = live_at - 120_000;
    let line = format!(
        "videotestsrc num-buffers=90 ! video/x-raw,format=I420,width=320,height=240,\
         framerate=30/1 ! x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! \
         matroskamux streamable=true ! kvssink name=sink file-start-time={recorded_at}"
    );
    let (pipeline, _) = common::pipeline(&line, &server, "backfill");
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "recording: {run:?}");
    let stored = server.fragments("backfill");
    assert_eq!(
        stored.last().unwrap().producer_timestamp_ms / 1000,
        (recorded_at + 2_000) / 1000
    );

    let read = read(
        &server,
        "backfill",
        &format!("start-selector=earliest end-timestamp={}", now_ms()),
    );
    assert!(read.run.eos && read.run.errors.is_empty(), "{:?}", read.run);
    assert_eq!(read.pts.len(), 150);
    assert!(
        read.pts.windows(2).all(|w| w[0] < w[1]),
        "timestamps go back: {:?}",
        read.pts
    );
    let timelines = read.run.named("kvs-timeline");
    assert_eq!(timelines.len(), 1, "{:?}", read.run.messages);
    let first_origin: u64 = read.fragments()[0].get("timeline-origin").unwrap();
    let new_origin: u64 = timelines[0].get("timeline-origin").unwrap();
    let from: gst::ClockTime = timelines[0].get("start").unwrap();
    // The new timeline starts after the last frame of the live data, at the first of the
    // recording.
    assert!(
        read.pts[59] < from && from == read.pts[60],
        "{from} {:?}",
        read.pts
    );
    let produced: Vec<u64> = read
        .pts
        .iter()
        .map(|pts| {
            pts.mseconds()
                + if *pts >= from {
                    new_origin
                } else {
                    first_origin
                }
        })
        .collect();
    let mut wanted: Vec<u64> = expected(60).iter().map(|t| live_at + t).collect();
    wanted.extend(expected(90).iter().map(|t| recorded_at + t));
    // Within a ms: the live frames' producer times are the clock's, in whole ms.
    assert!(
        produced
            .iter()
            .zip(&wanted)
            .all(|(p, w)| p.abs_diff(*w) <= 1),
        "produced {produced:?}\nwanted {wanted:?}"
    );
}

/// A live read (start-selector=now) into a sink that renders each frame at its time: every
/// frame comes at least a fragment late (a whole fragment is one buffer), so kvssrc's latency
/// must say so, or the sink drops almost all of them as too late.
#[test]
fn a_live_read_renders_its_frames_at_a_synchronised_sink() {
    common::init();
    let server = Arc::new(common::server());
    let writer = {
        let server = server.clone();
        std::thread::spawn(move || record_live(&server, "live", 240, (320, 240)))
    };
    // The stream exists once the writer's first fragment is in.
    while server.try_fragments("live").map_or(true, |f| f.is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = now_ms() + 5_000;
    let line = format!(
        "kvssrc name=src start-selector=now end-timestamp={end} ! matroskademux ! identity \
         name=demuxed signal-handoffs=true ! h264parse ! avdec_h264 ! videoconvert ! fakesink \
         name=out sync=true max-lateness=20000000 qos=true signal-handoffs=true"
    );
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    common::configure_sink(&pipeline.by_name("src").unwrap(), &server, "live");
    let count = |name: &str| {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = n.clone();
        pipeline
            .by_name(name)
            .unwrap()
            .connect("handoff", false, move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            });
        n
    };
    let (demuxed, rendered) = (count("demuxed"), count("out"));
    let run = common::run(&pipeline, TIMEOUT);
    writer.join().unwrap();
    assert!(run.eos && run.errors.is_empty(), "{run:?}");
    let demuxed = demuxed.load(Ordering::Relaxed);
    let rendered = rendered.load(Ordering::Relaxed);
    assert!(demuxed >= 90, "{demuxed} frames read: {run:?}");
    // All but a few (the sink may drop one when the latency grows).
    assert!(
        rendered + 5 >= demuxed,
        "{rendered} of {demuxed} frames rendered: {run:?}"
    );
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
}

/// A live read through an outage (the service unreachable for 4 s, for the camera and the
/// reader): its latency grows while the fragments made during the outage come late, and comes
/// down again once they come on time, so that the view catches up with live instead of
/// staying behind by the outage for the rest of the read.
#[test]
fn a_live_reads_latency_comes_down_after_an_outage() {
    common::init();
    let server = Arc::new(common::server());
    let writer = {
        let server = server.clone();
        std::thread::spawn(move || record_live(&server, "outage", 30 * 30, (320, 240)))
    };
    while server
        .try_fragments("outage")
        .map_or(true, |f| f.is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = now_ms() + 27_000;
    let line = format!(
        "kvssrc name=src start-selector=now end-timestamp={end} ! matroskademux ! h264parse \
         ! avdec_h264 ! videoconvert ! fakesink sync=true max-lateness=20000000 qos=true"
    );
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline.by_name("src").unwrap();
    common::configure_sink(&src, &server, "outage");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The latency kvssrc answers, every 200 ms: (s since the start, latency).
    let watcher = {
        let (server, done, src) = (server.clone(), done.clone(), src.clone());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut seen = Vec::new();
            let mut outage = false;
            while !done.load(Ordering::Relaxed) {
                let at = started.elapsed();
                if !outage && at > Duration::from_secs(4) {
                    outage = true;
                    server.pause_listening();
                    std::thread::sleep(Duration::from_secs(4));
                    server.resume_listening();
                }
                let mut q = gst::query::Latency::new();
                if src.query(&mut q) {
                    seen.push((at.as_secs_f64(), q.result().1));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        })
    };
    let run = common::run(&pipeline, TIMEOUT);
    done.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    writer.join().unwrap();
    assert!(run.eos && run.errors.is_empty(), "{run:?}");
    let peak = seen.iter().map(|(_, l)| *l).max().unwrap();
    let (_, last) = *seen.last().unwrap();
    assert!(peak >= gst::ClockTime::from_seconds(4), "{seen:?}");
    assert!(
        last + gst::ClockTime::from_seconds(2) <= peak && last <= gst::ClockTime::from_seconds(3),
        "{seen:?}"
    );
}

/// A camera restarted with another resolution: its new stream header comes through, and
/// matroskademux follows it (new caps) with the timestamps going on.
#[test]
fn a_recording_of_another_resolution_reads_back_with_its_caps() {
    common::init();
    let server = common::server();
    record_live(&server, "resized", 60, (320, 240));
    record_live(&server, "resized", 60, (640, 480));
    let widths = Arc::new(Mutex::new(Vec::new()));
    let seen = widths.clone();
    let read = read_with(
        &server,
        "resized",
        &format!("start-selector=earliest end-timestamp={}", now_ms()),
        move |pipeline| {
            let pad = pipeline.by_name("out").unwrap().static_pad("sink").unwrap();
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(event)) = &info.data
                    && let gst::EventView::Caps(caps) = event.view()
                {
                    let s = caps.caps().structure(0).unwrap();
                    seen.lock().unwrap().push(s.get::<i32>("width").unwrap());
                }
                gst::PadProbeReturn::Ok
            });
        },
    );
    assert!(read.run.eos && read.run.errors.is_empty(), "{:?}", read.run);
    assert_eq!(read.pts.len(), 120);
    assert!(
        read.pts.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        read.relative()
    );
    let mut widths = widths.lock().unwrap().clone();
    widths.dedup();
    assert_eq!(widths, [320, 640]);
}

/// A camera restarted with another codec: matroskademux cannot follow that in one stream, so
/// kvssrc passes on the first recording, then stops with an error that says where the rest
/// starts; a read from there gets it.
#[test]
fn a_recording_in_another_codec_is_an_error_that_says_where_to_read_on() {
    common::init();
    let server = common::server();
    record_live(&server, "recoded", 60, (320, 240));
    let line = "videotestsrc is-live=true num-buffers=60 ! video/x-raw,format=I420,width=320,\
                height=240,framerate=30/1 ! x265enc tune=zerolatency speed-preset=ultrafast \
                key-int-max=30 ! h265parse ! matroskamux streamable=true ! kvssink name=sink";
    let (pipeline, _) = common::pipeline(line, &server, "recoded");
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "recording: {run:?}");

    let end = now_ms();
    let read = read(
        &server,
        "recoded",
        &format!("start-selector=earliest end-timestamp={end}"),
    );
    assert_eq!(read.pts.len(), 60, "the first recording is passed on");
    let error = read.run.errors.join("\n");
    assert!(
        error.contains("V_MPEG4/ISO/AVC before, V_MPEGH/ISO/HEVC now"),
        "{error}"
    );
    let token = read
        .fragments()
        .last()
        .unwrap()
        .get::<String>("continuation-token");
    let resume = format!(
        "start-selector=continuation-token continuation-token={}",
        token.unwrap()
    );
    assert!(error.contains(&resume), "{error}");

    let line = format!("kvssrc name=src {resume} end-timestamp={end} ! matroskademux ! fakesink");
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    common::configure_sink(&pipeline.by_name("src").unwrap(), &server, "recoded");
    let rest = common::run(&pipeline, TIMEOUT);
    assert!(rest.eos && rest.errors.is_empty(), "{rest:?}");
    assert_eq!(
        rest.named("kvs-fragment").len() + read.fragments().len(),
        server.fragment_count("recoded")
    );
}

#[test]
fn producer_timestamp_and_fragment_number_start_where_asked() {
    common::init();
    let server = common::server();
    record(&server, "cam1", 90);
    let stored = server.fragments("cam1");
    assert_eq!(stored.len(), 3);
    let end = now_ms();

    let read_pt = read(
        &server,
        "cam1",
        &format!(
            "start-selector=producer-timestamp start-timestamp={} end-timestamp={end}",
            stored[1].producer_timestamp_ms
        ),
    );
    assert!(read_pt.run.eos, "{:?}", read_pt.run);
    assert_eq!(read_pt.relative(), expected(60));
    assert_eq!(
        read_pt.fragments()[0]
            .get::<&str>("fragment-number")
            .unwrap(),
        stored[1].number
    );

    let read_fn = read(
        &server,
        "cam1",
        &format!(
            "start-selector=fragment-number start-fragment-number={} end-timestamp={end}",
            stored[0].number
        ),
    );
    assert!(read_fn.run.eos, "{:?}", read_fn.run);
    assert_eq!(read_fn.relative(), expected(60));

    // A bounded read stops before the first fragment that starts after end-timestamp.
    let read_end = read(
        &server,
        "cam1",
        &format!(
            "start-selector=earliest end-timestamp={}",
            stored[1].producer_timestamp_ms
        ),
    );
    assert!(read_end.run.eos, "{:?}", read_end.run);
    assert_eq!(read_end.relative(), expected(60));
}

#[test]
fn a_dropped_connection_loses_and_repeats_nothing() {
    common::init();
    let server = Arc::new(common::server());
    record(&server, "cam1", 90);
    let end = now_ms();
    let dropped = Arc::new(std::sync::Once::new());
    let read = read_with(
        &server,
        "cam1",
        &format!("start-selector=earliest end-timestamp={end}"),
        |pipeline| {
            // At the first frame, every live connection is closed: kvssrc has read ahead and
            // waits for more on its GetMedia connection, and must carry on after the last
            // whole fragment it read.
            let server = server.clone();
            pipeline
                .by_name("out")
                .unwrap()
                .connect("handoff", false, move |_| {
                    dropped.call_once(|| {
                        server.pause_listening();
                        server.resume_listening();
                    });
                    None
                });
        },
    );
    assert!(read.run.eos, "{:?}", read.run);
    let reconnects = read
        .run
        .named("kvs-connection")
        .into_iter()
        .filter(|s| s.get::<&str>("state").ok() == Some("reconnecting"))
        .count();
    assert!(reconnects >= 1, "{:?}", read.run);
    // The application is warned once for the outage, whatever the number of attempts.
    let warned = read
        .run
        .warnings
        .iter()
        .filter(|w| w.contains("stream cam1: ") && w.contains("reconnecting until it answers"))
        .count();
    assert_eq!(warned, 1, "{:?}", read.run.warnings);
    read.assert_every_fragment_once(&server, "cam1", 90);
}

#[test]
fn an_unknown_stream_is_an_error_naming_it() {
    common::init();
    let server = common::server();
    let read = read(&server, "no-such-camera", "start-selector=earliest");
    assert!(!read.run.eos);
    let text = read.run.error_text();
    assert!(
        text.contains("no-such-camera") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
}

#[test]
fn a_wrong_secret_is_a_clear_not_authorized_error() {
    common::init();
    let server = common::server();
    record(&server, "cam1", 30);
    let read = read_with(&server, "cam1", "start-selector=earliest", |p| {
        p.by_name("src")
            .unwrap()
            .set_property("secret-key", "wrong-secret");
    });
    let text = read.run.error_text();
    assert!(
        text.contains("stream cam1") && text.contains("InvalidSignatureException"),
        "{text}"
    );
}

#[test]
fn a_selector_without_its_value_is_a_settings_error() {
    common::init();
    let server = common::server();
    let read = read(&server, "cam1", "start-selector=fragment-number");
    let text = read.run.error_text();
    assert!(text.contains("start-fragment-number"), "{text}");
}

#[test]
fn a_ca_file_replaced_while_reading_is_trusted_by_the_next_connection() {
    // kvs-local behind an HTTPS terminator whose certificate comes from a new CA at the first
    // frame read; the ca-file is replaced by that CA (by rename) and the connection closed.
    // kvssrc must read the file again for its next connections (control plane and GetMedia)
    // and carry on after the last whole fragment it read.
    use common::standins::{Pki, RotatingTerminator};
    use std::sync::OnceLock;
    common::init();
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let backend = Arc::new(OnceLock::new());
    let terminator = RotatingTerminator::new(&old_ca, backend.clone());
    let https = format!("https://127.0.0.1:{}", terminator.addr.port());
    let server = Server::spawn(common::Config {
        public_url: Some(https.clone()),
        ..common::Config::default()
    })
    .expect("start kvs-local");
    backend.set(server.local_addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::copy(&old_ca.ca, &ca_file).unwrap();
    let with_tls = |element: &gst::Element| {
        element.set_property("control-plane-uri", &https);
        element.set_property("ca-file", ca_file.to_str().unwrap());
    };

    let line = "videotestsrc num-buffers=90 ! video/x-raw,format=I420,width=320,height=240,\
         framerate=30/1 ! x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! \
         matroskamux streamable=true ! kvssink name=sink";
    let (pipeline, sink) = common::pipeline(line, &server, "cam1");
    with_tls(&sink);
    let run = common::run(&pipeline, TIMEOUT);
    assert!(run.eos && run.errors.is_empty(), "recording: {run:?}");
    let end = now_ms();

    let (terminator, new_ca) = (Arc::new(terminator), Arc::new(new_ca));
    let read = read_with(
        &server,
        "cam1",
        &format!("start-selector=earliest end-timestamp={end}"),
        |pipeline| {
            with_tls(&pipeline.by_name("src").unwrap());
            let (terminator, new_ca, ca_file) =
                (terminator.clone(), new_ca.clone(), ca_file.clone());
            let rotated = std::sync::Once::new();
            pipeline
                .by_name("out")
                .unwrap()
                .connect("handoff", false, move |_| {
                    rotated.call_once(|| terminator.rotate_with_ca_file(&new_ca, &ca_file));
                    None
                });
        },
    );
    assert!(read.run.eos, "{:?}", read.run);
    assert!(read.run.errors.is_empty(), "{:?}", read.run);
    terminator.assert_used_after_rotation();
    read.assert_every_fragment_once(&server, "cam1", 90);
}

/// `start-selector` set while reading is for the next start: the running read stays live (a
/// synchronised sink downstream would otherwise drop frames as late), and the next start is
/// not live when the selector reads what is stored.
#[test]
fn start_selector_set_while_playing_does_not_change_the_running_read() {
    common::init();
    let server = common::server();
    record(&server, "liveness", 30);
    let pipeline = gst::parse::launch("kvssrc name=src start-selector=now ! fakesink async=false")
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline.by_name("src").unwrap();
    common::configure_sink(&src, &server, "liveness");
    let live = |src: &gst::Element| {
        let mut q = gst::query::Latency::new();
        assert!(src.query(&mut q));
        q.result().0
    };
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(
        pipeline.state(gst::ClockTime::from_seconds(10)).1,
        gst::State::Playing
    );
    assert!(live(&src));
    src.set_property_from_str("start-selector", "earliest");
    assert!(live(&src), "the running read turned into another");
    pipeline.set_state(gst::State::Null).unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    assert!(!live(&src), "the next start reads what is stored");
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A live read of an idle stream: the service (kvs-local after 2 s) ends GetMedia and kvssrc
/// opens the next one. That is no change of the connection's state to post every time.
#[test]
fn a_new_getmedia_after_the_service_ended_one_is_no_new_connection_state() {
    common::init();
    let server = common::server();
    record(&server, "idle", 30);
    let end = now_ms() + 5_000;
    let r = read(
        &server,
        "idle",
        &format!("start-selector=earliest end-timestamp={end}"),
    );
    assert!(r.run.errors.is_empty(), "{:?}", r.run);
    let states: Vec<String> = r
        .run
        .named("kvs-connection")
        .iter()
        .map(|s| s.get::<String>("state").unwrap())
        .collect();
    assert_eq!(states, ["streaming"], "{:?}", r.run);
}
