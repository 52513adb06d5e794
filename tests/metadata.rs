//! Fragment metadata, the `kvs-add-metadata` event of AWS's kvssink: sent by the application
//! while a real pipeline streams, it comes back from kvs-local's GetMediaForFragmentList with
//! the fragment that was open when it was sent (persistent items with every fragment from
//! then on, the others once), and what the service would refuse is a warning.

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::prelude::*;
use kvs_format::ids::*;

const TIMEOUT: Duration = Duration::from_secs(90);

fn event(fields: &str) -> gst::Event {
    gst::event::CustomDownstream::new(
        gst::Structure::from_str(&format!("kvs-add-metadata, {fields}")).unwrap(),
    )
}

fn item(name: &str, value: &str, persist: bool) -> gst::Event {
    event(&format!(
        "name=(string)\"{name}\", value=(string)\"{value}\", persist=(boolean){persist}"
    ))
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// GetMediaForFragmentList of every stored fragment, in order, read with the sink's own
/// splitter: the SimpleTags after each cluster, per fragment.
fn metadata_read_back(server: &Server, stream: &str) -> Vec<Vec<(String, String)>> {
    let numbers: Vec<String> = server
        .fragments(stream)
        .into_iter()
        .map(|f| f.number)
        .collect();
    let url = format!("{}/getMediaForFragmentList", server.url());
    let body = serde_json::to_vec(&serde_json::json!({
        "StreamName": stream,
        "Fragments": numbers,
    }))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let media = runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in kvs_local::client::sign_json(&url, &body) {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap()
    });
    let mut splitter = gstkvs::mkv::Splitter::new(Default::default());
    let mut events = Vec::new();
    splitter.push(media, &mut events).unwrap();
    splitter.finish(&mut events).unwrap();
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for e in events {
        match e {
            gstkvs::mkv::Event::FragmentStart(_) => out.push(Vec::new()),
            gstkvs::mkv::Event::Interstitial(tags) => {
                out.last_mut().unwrap().extend(simple_tags(&tags))
            }
            _ => {}
        }
    }
    assert_eq!(out.len(), numbers.len());
    out
}

/// Sends `events` from the application when kvssink is about to take buffer `at` (counted
/// from 0) of cluster `cluster` of matroskamux's output; buffer 0 starts the cluster, so
/// events sent then go with the fragment before it.
type Script = Vec<(usize, usize, Vec<gst::Event>)>;

/// Runs `videotestsrc ! x264enc ! matroskamux ! kvssink` (a fragment every 10 frames) with
/// `script`; returns the run, the number of clusters kvssink took, and how many of the
/// script's events `send_event` said were not taken.
fn stream_with(server: &Server, stream: &str, script: Script) -> (Run, usize, usize) {
    let line = "videotestsrc is-live=true num-buffers=80 \
         ! video/x-raw,format=I420,width=160,height=120,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
         ! h264parse ! matroskamux streamable=true min-cluster-duration=100000000 \
         ! kvssink name=sink";
    let (pipeline, sink) = pipeline(line, server, stream);
    let clusters = Arc::new(Mutex::new((0usize, 0usize)));
    let script = Arc::new(Mutex::new(script));
    let (seen, weak_sink) = (clusters.clone(), sink.downgrade());
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refusals = refused.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let map = buffer.map_readable().unwrap();
            let mut seen = seen.lock().unwrap();
            if map.starts_with(&ID_CLUSTER.to_be_bytes()) {
                *seen = (seen.0 + 1, 0);
            } else if seen.0 > 0 {
                seen.1 += 1;
            }
            let (cluster, at) = (seen.0.wrapping_sub(1), seen.1);
            drop(seen);
            let due: Vec<gst::Event> = {
                let mut script = script.lock().unwrap();
                let i = script
                    .iter()
                    .position(|(c, b, _)| (*c, *b) == (cluster, at));
                i.map(|i| script.remove(i).2).unwrap_or_default()
            };
            let sink = weak_sink.upgrade().unwrap();
            for (n, event) in due.into_iter().enumerate() {
                // As AWS's sample does (gst_element_send_event), and on the pad.
                let sent = if n % 2 == 0 {
                    sink.send_event(event)
                } else {
                    pad.send_event(event)
                };
                if !sent {
                    refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            gst::PadProbeReturn::Ok
        });
    let run = run(&pipeline, TIMEOUT);
    let clusters = clusters.lock().unwrap().0;
    (
        run,
        clusters,
        refused.load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[test]
fn metadata_goes_with_the_open_fragment_and_persistent_items_with_every_later_one() {
    init();
    let server = server();
    let long_name = "n".repeat(129);
    let long_value = "v".repeat(257);
    let script: Script = vec![
        // Before the first cluster: the first fragment.
        (
            0,
            0,
            vec![item("site", "north", true), item("first", "yes", false)],
        ),
        (1, 6, vec![item("motion", "true", false)]),
        // A persistent item of the same name replaces it.
        (2, 6, vec![item("site", "south", true)]),
        // Just before cluster 3 starts, fragment 2 is still the open one.
        (3, 0, vec![item("late", "2", false)]),
        // An empty persistent value removes it.
        (
            3,
            6,
            vec![item("site", "", true), item("lat", "47.6N", true)],
        ),
        (
            4,
            6,
            (0..10)
                .map(|i| item(&format!("k{i}"), "v", false))
                .chain([
                    item("AWS_KINESISVIDEO_NOPE", "v", false),
                    item(&long_name, "v", false),
                    item("long", &long_value, false),
                    event("name=(string)a, value=(string)b"),
                    event("name=(string)a, value=(string)b, persist=(string)yes"),
                ])
                .collect(),
        ),
    ];
    let (run, clusters, refused) = stream_with(&server, "meta", script);
    assert!(run.eos && run.errors.is_empty(), "{run:?}");
    let stored = server.fragments("meta");
    assert_eq!(stored.len(), clusters, "every fragment persisted");
    assert!(clusters >= 7, "{clusters} fragments");

    let mut expected = vec![
        vec![pair("site", "north"), pair("first", "yes")],
        vec![pair("site", "north"), pair("motion", "true")],
        vec![pair("site", "south"), pair("late", "2")],
        vec![pair("lat", "47.6N")],
    ];
    // One more item would be an 11th in fragment 4: refused.
    let mut fourth = vec![pair("lat", "47.6N")];
    fourth.extend((0..9).map(|i| pair(&format!("k{i}"), "v")));
    expected.push(fourth);
    // The persistent item goes with every later fragment, the last one included.
    expected.resize(clusters, vec![pair("lat", "47.6N")]);

    let kept: Vec<Vec<(String, String)>> = stored.iter().map(|f| f.metadata.clone()).collect();
    assert_eq!(kept, expected);
    assert_eq!(metadata_read_back(&server, "meta"), expected);

    // What the service would refuse, and malformed events, are warnings naming the reason.
    let warnings = run.warnings.join("\n");
    for reason in [
        "\"k9\" not added: the fragment already carries 10 items (1 of them persistent)",
        "FRAGMENT_METADATA_LIMIT_REACHED",
        "\"AWS_KINESISVIDEO_NOPE\" begins with \"AWS\", which is reserved",
        "is 129 bytes long; Kinesis Video Streams takes at most 128",
        "the value of fragment metadata \"long\" is 257 bytes long; Kinesis Video Streams takes \
         at most 256",
        "kvs-add-metadata event ignored: it has no field \"persist\"",
        "its field \"persist\" is not a boolean",
    ] {
        assert!(warnings.contains(reason), "no {reason:?} in:\n{warnings}");
    }
    assert_eq!(run.warnings.len(), 6, "{warnings}");
    // And send_event said so to the application: false for those six, true for the rest.
    assert_eq!(refused, 6);
    assert!(warnings.contains("stream meta:"), "{warnings}");
}

/// `examples/metadata.py`, as a Python application runs it: the persistent item goes with
/// every fragment, each detection with exactly one.
#[test]
fn python_application_tags_its_fragments() {
    use common::host::*;
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/metadata.py"))
        .args([
            "--endpoint",
            &server.url(),
            "--stream",
            "py",
            "--seconds",
            "6",
        ]);
    let run = run_host(cmd, TIMEOUT);
    run.assert_success();
    let sent: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("sent motion="))
        .map(|l| l.trim_end_matches(" once"))
        .collect();
    assert_eq!(sent, ["1", "2", "3"], "{}", run.output());
    let stored = server.fragments("py");
    assert!(stored.len() >= 5, "{} fragments", stored.len());
    let mut motion = Vec::new();
    for f in &stored {
        assert_eq!(
            f.metadata[0],
            pair("camera", "front-door"),
            "{:?}",
            f.metadata
        );
        motion.extend(f.metadata[1..].iter().map(|(n, v)| {
            assert_eq!(n, "motion");
            v.clone()
        }));
    }
    assert_eq!(motion, sent, "each detection with one fragment");
}

/// Matroska pushed into kvssink by a `gst_check::Harness` (in place of matroskamux), for
/// what a live pipeline cannot do on cue: a fragment cut at the service's limits.
fn harness(
    server: &Server,
    stream: &str,
    configure: impl FnOnce(&gst::Element),
) -> (gst_check::Harness, gst::Element) {
    let element = gst::ElementFactory::make("kvssink").build().unwrap();
    configure_sink(&element, server, stream);
    element.set_property("async", false);
    element.set_property("stop-stream-timeout", 30u32);
    element.set_property("fragment-duration", 10_000u32);
    element.set_property_from_str("streaming-type", "realtime");
    configure(&element);
    let mut h = gst_check::Harness::with_element(&element, Some("sink"), None);
    h.set_src_caps_str("video/x-matroska");
    (h, element)
}

fn persisted(element: &gst::Element) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>("fragments-persisted")
        .unwrap()
}

fn frame(rel_ms: i16, key: bool) -> gst::Buffer {
    gst::Buffer::from_slice(kvs_format::build::simple_block(1, rel_ms, key, &[0x5A; 64]))
}

fn push(h: &mut gst_check::Harness, b: gst::Buffer) {
    assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok))
}

/// The stream header, a cluster at 0 and its key frame, then two items for it: `door` (this
/// fragment's) and `site` (persistent).
fn first_fragment_with_two_items(h: &mut gst_check::Harness, element: &gst::Element) {
    use kvs_format::build::{cluster_start, simple_header};
    push(h, gst::Buffer::from_slice(simple_header()));
    push(h, gst::Buffer::from_slice(cluster_start(0)));
    push(h, frame(0, true));
    assert!(element.send_event(item("door", "open", false)));
    assert!(element.send_event(item("site", "x", true)));
}

/// A cluster at `timecode` with a key frame, then EOS; every stored fragment's timecode and
/// metadata.
fn last_cluster_then_eos(
    h: &mut gst_check::Harness,
    server: &Server,
    stream: &str,
    timecode: u64,
) -> Vec<(u64, Vec<(String, String)>)> {
    let mut next = kvs_format::build::cluster_start(timecode);
    next.extend(kvs_format::build::simple_block(1, 0, true, &[0x5A; 64]));
    push(h, gst::Buffer::from_slice(next));
    h.push_event(gst::event::Eos::new());
    server
        .fragments(stream)
        .iter()
        .map(|f| (f.timecode, f.metadata.clone()))
        .collect()
}

/// A fragment the splitter cuts at 10 s ends with its metadata, then the end-of-fragment tag
/// (kvs-local keeps them with it), with or without `spool-dir`.
fn cut_fragment_keeps_its_metadata(stream: &str, configure: impl FnOnce(&gst::Element)) {
    init();
    let server = server();
    let (mut h, element) = harness(&server, stream, configure);
    first_fragment_with_two_items(&mut h, &element);
    push(&mut h, frame(5000, false));
    push(&mut h, frame(10_000, false));
    // Past 10 s: the fragment is cut before this frame.
    push(&mut h, frame(10_001, false));
    assert!(element.send_event(item("after", "cut", false)));
    // (EOS after a cut is not a success: frames were not sent.)
    let kept = last_cluster_then_eos(&mut h, &server, stream, 10_600);
    assert_eq!(
        kept,
        [
            (0, vec![pair("door", "open"), pair("site", "x")]),
            // Added after the cut: the open fragment is the next one.
            (10_600, vec![pair("site", "x"), pair("after", "cut")]),
        ]
    );
}

#[test]
fn a_fragment_cut_at_the_service_limits_keeps_its_metadata() {
    cut_fragment_keeps_its_metadata("cut", |_| {});
}

#[test]
fn spooled_fragments_keep_their_metadata() {
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap().to_owned();
    cut_fragment_keeps_its_metadata("spooled", move |e| e.set_property("spool-dir", dir));
}

/// No data for `fragment-duration`: the connection ends the open fragment with an
/// END_OF_FRAGMENT tag, and the fragment's metadata goes before that tag, not after it where
/// the service would not take it. An item added after that goes with the next fragment,
/// whether the fragment's PERSISTED ack came before the next cluster (`ack_first`: the
/// common case in a live stream that pauses) or after it.
fn idle_ended_fragment_keeps_its_metadata(stream: &str, ack_first: bool) {
    init();
    let server = server();
    if !ack_first {
        server.inject(kvs_local::Fault::DelayAcks {
            stream: Some(stream.into()),
            delay_ms: 2000,
        });
    }
    let (mut h, element) = harness(&server, stream, |e| {
        e.set_property("fragment-duration", 300u32)
    });
    first_fragment_with_two_items(&mut h, &element);
    push(&mut h, frame(33, false));
    // Nothing more for longer than fragment-duration: kvs-local persists the fragment that
    // the connection ended.
    assert!(server.wait_for_fragments(stream, 1, TIMEOUT));
    if ack_first {
        // The element has the PERSISTED ack too, so the open fragment is already released
        // when the next cluster ends it.
        let deadline = std::time::Instant::now() + TIMEOUT;
        while persisted(&element) < 1 {
            assert!(std::time::Instant::now() < deadline, "no PERSISTED ack");
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        assert_eq!(persisted(&element), 0, "the ack is held back two seconds");
    }
    assert!(element.send_event(item("after", "idle", false)));
    let kept = last_cluster_then_eos(&mut h, &server, stream, 5000);
    assert_eq!(
        kept,
        [
            (0, vec![pair("door", "open"), pair("site", "x")]),
            (5000, vec![pair("site", "x"), pair("after", "idle")]),
        ]
    );
    assert_eq!(
        element
            .property::<gst::Structure>("stats")
            .get::<u64>("bytes-dropped")
            .ok(),
        Some(0),
        "nothing was left out as late bytes"
    );
}

#[test]
fn a_fragment_ended_after_an_idle_period_keeps_its_metadata() {
    idle_ended_fragment_keeps_its_metadata("idle-metadata", true);
}

#[test]
fn a_fragment_ended_after_an_idle_period_keeps_its_metadata_when_its_ack_comes_late() {
    idle_ended_fragment_keeps_its_metadata("idle-metadata-late-ack", false);
}

/// Items given while the application sets things up: one in NULL, before PLAYING; one right
/// after `set_state(PLAYING)` returns, while the state change is still under way. Both are
/// kept or taken, and go with every fragment (persistent). Before, the first was refused and,
/// once it was kept, the second was kept after the start and never applied.
#[test]
fn persistent_items_given_before_and_as_the_pipeline_starts_tag_every_fragment() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true num-buffers=60 \
         ! video/x-raw,format=I420,width=160,height=120,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
         ! h264parse ! matroskamux streamable=true ! kvssink name=sink";
    let (pipeline, sink) = pipeline(line, &server, "early");
    assert!(sink.send_event(item("camera", "front-door", true)));
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(sink.send_event(item("site", "north", true)));
    let run = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(run.eos, "{:?}", run.errors);
    let read = metadata_read_back(&server, "early");
    assert!(read.len() >= 3, "{read:?}");
    for items in &read {
        assert_eq!(
            items,
            &[pair("camera", "front-door"), pair("site", "north")],
            "{read:?}"
        );
    }
}
