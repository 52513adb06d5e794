//! Launch lines written for AWS's C++ kvssink keep working: every property of the official
//! element (producer SDK 3.6.0, `src/gstreamer/gstkvssink.cpp`) parses here with its official
//! type, and a real pipeline with official-only properties streams everything, warning once for
//! each property that has no effect.

mod common;

use std::time::Duration;

use common::*;
use gst::glib;
use gst::prelude::*;
use gstkvs::kvssink::official::{Here, OFFICIAL, Official};

/// The official properties as `g_object_class_install_property` registers them: name, GType
/// name, a typical value in a launch line, and what reading it back gives.
const OFFICIAL_PROPERTIES: &[(&str, &str, &str, &str)] = &[
    ("stream-name", "gchararray", "my-stream", "my-stream"),
    ("user-agent", "gchararray", "my-agent", "my-agent"),
    ("retention-period", "guint", "24", "24"),
    ("streaming-type", "GstKvsSinkStreamingType", "0", "realtime"),
    ("content-type", "gchararray", "video/h264", "video/h264"),
    ("max-latency", "guint", "30", "30"),
    ("fragment-duration", "guint", "4000", "4000"),
    ("timecode-scale", "guint", "1", "1"),
    ("key-frame-fragmentation", "gboolean", "false", "false"),
    ("frame-timecodes", "gboolean", "false", "false"),
    ("absolute-fragment-times", "gboolean", "false", "false"),
    ("fragment-acks", "gboolean", "false", "false"),
    ("restart-on-error", "gboolean", "false", "false"),
    ("recalculate-metrics", "gboolean", "false", "false"),
    ("framerate", "guint", "30", "30"),
    ("avg-bandwidth-bps", "guint", "2097152", "2097152"),
    ("buffer-duration", "guint", "180", "180"),
    ("replay-duration", "guint", "20", "20"),
    ("connection-staleness", "guint", "30", "30"),
    (
        "codec-id",
        "gchararray",
        "V_MPEGH/ISO/HEVC",
        "V_MPEGH/ISO/HEVC",
    ),
    ("track-name", "gchararray", "video", "video"),
    ("access-key", "gchararray", "AKIDEXAMPLE", "<redacted>"),
    ("secret-key", "gchararray", "not-a-secret", "<redacted>"),
    ("session-token", "gchararray", "not-a-token", "<redacted>"),
    ("aws-region", "gchararray", "eu-west-1", "eu-west-1"),
    ("rotation-period", "guint", "3600", "3600"),
    (
        "log-config",
        "gchararray",
        "/etc/kvs/kvs_log_configuration",
        "/etc/kvs/kvs_log_configuration",
    ),
    ("storage-size", "guint", "512", "512"),
    ("stop-stream-timeout", "guint", "60", "60"),
    ("connection-timeout", "guint", "5", "5"),
    ("completion-timeout", "guint", "15", "15"),
    (
        "credential-path",
        "gchararray",
        "/tmp/kvs-credential",
        "/tmp/kvs-credential",
    ),
    (
        "iot-certificate",
        "GstStructure",
        "\"iot-certificate,endpoint=abc.credentials.iot.us-west-2.amazonaws.com,\
         cert-path=/c.pem,key-path=/k.pem,ca-path=/ca.pem,role-aliases=alias\"",
        "iot-certificate, endpoint=(string)abc.credentials.iot.us-west-2.amazonaws.com, \
         cert-path=(string)/c.pem, key-path=(string)/k.pem, ca-path=(string)/ca.pem, \
         role-aliases=(string)alias;",
    ),
    (
        "stream-tags",
        "GstStructure",
        "\"tags,site=lab,camera=door\"",
        "tags, site=(string)lab, camera=(string)door;",
    ),
    ("file-start-time", "guint64", "1700000000", "1700000000"),
    ("disable-buffer-clipping", "gboolean", "true", "true"),
    ("use-original-pts", "gboolean", "true", "true"),
    ("get-kvs-metrics", "gboolean", "true", "true"),
    ("allow-create-stream", "gboolean", "false", "false"),
];

/// A value as text: numbers and booleans as written, strings as they are, enums by nick,
/// structures serialized.
fn show(value: &glib::Value) -> String {
    if let Ok(s) = value.get::<Option<String>>() {
        return s.unwrap_or_else(|| "NULL".into());
    }
    if let Ok(s) = value.get::<Option<gst::Structure>>() {
        return s.map(|s| s.to_string()).unwrap_or_else(|| "NULL".into());
    }
    if let Some((_, v)) = glib::EnumValue::from_value(value) {
        return v.nick().to_owned();
    }
    value.serialize().expect("a serializable value").to_string()
}

/// Parses `line`, which has a kvssink named `s`, and returns it.
fn parse(line: &str) -> gst::Element {
    let parsed = gst::parse::launch(line).unwrap_or_else(|e| panic!("`{line}` fails: {e}"));
    match parsed.downcast_ref::<gst::Bin>() {
        Some(bin) => bin.by_name("s").expect("kvssink named s"),
        None => parsed,
    }
}

#[test]
fn the_table_lists_exactly_the_official_properties() {
    let table: Vec<&str> = OFFICIAL.iter().map(|r| r.name).collect();
    let official: Vec<&str> = OFFICIAL_PROPERTIES.iter().map(|p| p.0).collect();
    assert_eq!(table, official);
}

#[test]
fn every_official_property_parses_from_a_launch_line_and_reads_back() {
    init();
    for (name, _, value, back) in OFFICIAL_PROPERTIES {
        let sink = parse(&format!("kvssink name=s {name}={value}"));
        assert_eq!(show(&sink.property_value(name)), *back, "{name}={value}");
    }
    // All of them at once, as a long official launch line would.
    let all: Vec<String> = OFFICIAL_PROPERTIES
        .iter()
        .map(|(name, _, value, _)| format!("{name}={value}"))
        .collect();
    let sink = parse(&format!("kvssink name=s {}", all.join(" ")));
    for (name, _, value, back) in OFFICIAL_PROPERTIES {
        assert_eq!(show(&sink.property_value(name)), *back, "{name}={value}");
    }
}

#[test]
fn every_official_property_has_the_official_type() {
    init();
    let sink = gst::ElementFactory::make("kvssink").build().unwrap();
    for (name, type_name, value, back) in OFFICIAL_PROPERTIES {
        let pspec = sink
            .find_property(name)
            .unwrap_or_else(|| panic!("no property {name}"));
        assert_eq!(pspec.value_type().name(), *type_name, "{name}");
        // As an application's g_object_set with the official type would set it.
        sink.set_property_from_str(name, value.trim_matches('"'));
        assert_eq!(show(&sink.property_value(name)), *back, "{name}");
        let typed = match *type_name {
            "gboolean" => true.to_value(),
            "guint" => 7u32.to_value(),
            "guint64" => 7u64.to_value(),
            "gchararray" => "x".to_value(),
            "GstStructure" => gst::Structure::new_empty("s").to_value(),
            "GstKvsSinkStreamingType" => glib::EnumClass::with_type(pspec.value_type())
                .unwrap()
                .to_value(2)
                .unwrap(),
            other => panic!("unexpected type {other}"),
        };
        sink.set_property_from_value(name, &typed);
    }
    // The official defaults, for the properties registered from the table (kvssink's own
    // properties document where their default differs).
    for row in OFFICIAL.iter().filter(|r| !matches!(r.here, Here::Same(_))) {
        let default = sink
            .find_property(row.name)
            .unwrap()
            .default_value()
            .clone();
        let official = match row.official {
            Official::Bool(b) => b.to_value(),
            Official::UInt(u) => u.to_value(),
            Official::Str(s) => s.to_value(),
            other => panic!("{}: {other:?} is not registered from the table", row.name),
        };
        assert_eq!(show(&default), show(&official), "{}", row.name);
    }
}

#[test]
fn the_readme_says_what_each_official_property_does_here() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let (_, section) = readme
        .split_once("## Properties of AWS's kvssink and what they do here")
        .expect("the README's section on the official properties");
    let section = section.split("\n## ").next().unwrap();
    for row in OFFICIAL {
        assert!(
            section.contains(&format!("| `{}` |", row.name)),
            "the README's table lacks {}",
            row.name
        );
    }
}

/// Official-only properties set to a value without effect here, and what they are set to.
const WITHOUT_EFFECT: &[(&str, &str)] = &[
    ("framerate", "30"),
    ("avg-bandwidth-bps", "2097152"),
    ("replay-duration", "20"),
    ("codec-id", "V_MPEGH/ISO/HEVC"),
    ("log-config", "/etc/kvs/kvs_log_configuration"),
    ("get-kvs-metrics", "true"),
];

/// Official properties set to what kvssink does anyway (or mapped): no warning.
const AS_KVSSINK_DOES: &[(&str, &str)] = &[
    ("streaming-type", "0"),
    ("max-latency", "30"),
    ("key-frame-fragmentation", "true"),
    ("frame-timecodes", "true"),
    ("absolute-fragment-times", "true"),
    ("restart-on-error", "true"),
    ("recalculate-metrics", "true"),
    ("timecode-scale", "1"),
    ("disable-buffer-clipping", "true"),
    ("fragment-acks", "true"),
    ("connection-timeout", "5"),
    ("completion-timeout", "10"),
    ("storage-size", "128"),
    ("buffer-duration", "120"),
    ("retention-period", "2"),
];

#[test]
fn a_pipeline_with_official_properties_persists_everything_and_warns_once_per_property() {
    init();
    let server = server();
    let props: Vec<String> = AS_KVSSINK_DOES
        .iter()
        .chain(WITHOUT_EFFECT)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let line = format!("{} {}", live_line(3), props.join(" "));
    let (pipeline, sink) = pipeline(&line, &server, "official");
    let sent = capture(&sink);
    let run = run(&pipeline, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos, "EOS must complete");
    assert_eq!(
        assert_nothing_lost(&server, "official", &sent.lock().unwrap()),
        0
    );
    assert_eq!(server.fragments("official").len(), 3);
    let summary = run.named("kvs-summary");
    assert_eq!(summary[0].get::<&str>("outcome").unwrap(), "all-persisted");

    for (name, value) in WITHOUT_EFFECT {
        let said: Vec<_> = run
            .warnings
            .iter()
            .filter(|w| w.contains(&format!("{name}=")))
            .collect();
        assert_eq!(said.len(), 1, "{name}: {:#?}", run.warnings);
        assert!(said[0].contains("has no effect"), "{}", said[0]);
        assert!(
            said[0].contains(value.trim_matches('"')),
            "the value is named: {}",
            said[0]
        );
    }
    for (name, _) in AS_KVSSINK_DOES {
        assert!(
            !run.warnings.iter().any(|w| w.contains(&format!("{name}="))),
            "{name}: {:#?}",
            run.warnings
        );
    }
    server.shutdown();
}

#[test]
fn official_values_outside_what_kvssink_can_use_are_brought_in_range_with_a_warning() {
    init();
    let server = server();
    // The official element takes any guint; the service takes fragments of at most 10 s.
    let line = format!("{} fragment-duration=20000 storage-size=0", live_line(2));
    let (pipeline, sink) = pipeline(&line, &server, "ranges");
    let sent = capture(&sink);
    let run = run(&pipeline, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_nothing_lost(&server, "ranges", &sent.lock().unwrap());
    for (set, used) in [
        ("fragment-duration=20000", "using 10000"),
        ("storage-size=0", "using 1"),
    ] {
        let said: Vec<_> = run.warnings.iter().filter(|w| w.contains(set)).collect();
        assert_eq!(said.len(), 1, "{set}: {:#?}", run.warnings);
        assert!(said[0].contains(used), "{}", said[0]);
    }
    // The property still reads back as set.
    assert_eq!(sink.property::<u32>("fragment-duration"), 20000);
    server.shutdown();
}

/// Below 200 ms, key frames asked of the encoder made matroskamux's clusters 100-133 ms
/// apart: 7.5 fragments a second, where the service takes 5.
#[test]
fn a_fragment_duration_under_200_ms_is_brought_to_it() {
    init();
    let server = server();
    let line = format!("{} fragment-duration=100", live_line(3));
    let (pipeline, sink) = pipeline(&line, &server, "short-fragments");
    let sent = capture(&sink);
    let run = run(&pipeline, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_nothing_lost(&server, "short-fragments", &sent.lock().unwrap());
    let said: Vec<_> = run
        .warnings
        .iter()
        .filter(|w| w.contains("fragment-duration=100"))
        .collect();
    assert_eq!(said.len(), 1, "{:#?}", run.warnings);
    assert!(said[0].contains("using 200"), "{}", said[0]);
    // 3 s of video: at most 5 fragments a second.
    let fragments = server.fragments("short-fragments").len();
    assert!((5..=16).contains(&fragments), "{fragments} fragments");
    server.shutdown();
}

/// Seconds until a pipeline whose control plane accepts connections but never answers fails.
fn seconds_to_fail_on_a_silent_endpoint(timeouts: &str) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let line = format!("{} {timeouts}", live_line(2));
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    sink.set_property("stream-name", "silent");
    sink.set_property("aws-region", "us-east-1");
    sink.set_property("control-plane-uri", url);
    sink.set_property("access-key", DEMO_ACCESS_KEY);
    sink.set_property("secret-key", DEMO_SECRET_KEY);
    let started = std::time::Instant::now();
    let run = run_even_if_start_fails(&pipeline, Duration::from_secs(60));
    assert!(!run.errors.is_empty(), "a silent endpoint is an error");
    started.elapsed().as_secs_f64()
}

#[test]
fn completion_timeout_when_set_lengthens_the_one_timeout() {
    init();
    // 3 x the timeout is the bound for an endpoint that never answers.
    let alone = seconds_to_fail_on_a_silent_endpoint("connection-timeout=1");
    let with_completion =
        seconds_to_fail_on_a_silent_endpoint("connection-timeout=1 completion-timeout=3");
    assert!(alone < 6.0, "connection-timeout=1 alone: {alone} s");
    assert!(
        (7.0..30.0).contains(&with_completion),
        "with completion-timeout=3: {with_completion} s"
    );
}
