//! Shared test tooling: GStreamer set-up, kvs-local on loopback, recorded matroskamux output,
//! and running pipelines to EOS or error while collecting bus messages.
#![allow(dead_code)]

pub mod host;
pub mod record;
pub mod sent;
pub mod standins;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

pub use kvs_local::{Config, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Server};

/// Initialises GStreamer and registers the plugin from this build, once per test binary.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstkvs::plugin_register_static().expect("register the kvs plugin");
    });
}

/// A kvs-local on a free loopback port, in memory.
pub fn server() -> Server {
    Server::spawn(Config::default()).expect("start kvs-local")
}

/// Points `sink` at `server` with the demo key pair.
pub fn configure_sink(sink: &gst::Element, server: &Server, stream: &str) {
    sink.set_property("stream-name", stream);
    sink.set_property("aws-region", "us-east-1");
    sink.set_property("control-plane-uri", server.url());
    sink.set_property("access-key", DEMO_ACCESS_KEY);
    sink.set_property("secret-key", DEMO_SECRET_KEY);
}

/// Reads `pipelines/<name>.launch` and substitutes `${KEY}` placeholders.
pub fn launch_line(name: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(format!("{name}.launch"));
    let mut line = std::fs::read_to_string(&path).expect("read launch line");
    for (key, value) in vars {
        line = line.replace(&format!("${{{key}}}"), value);
    }
    assert!(!line.contains("${"), "unsubstituted placeholder in {line}");
    line.trim().to_owned()
}

/// Parses a launch line into a pipeline and configures its `sink` element for `server`.
pub fn pipeline(line: &str, server: &Server, stream: &str) -> (gst::Pipeline, gst::Element) {
    let pipeline = gst::parse::launch(line)
        .expect("parse launch line")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline.by_name("sink").expect("an element named sink");
    configure_sink(&sink, server, stream);
    (pipeline, sink)
}

/// What a pipeline run produced.
#[derive(Debug, Default)]
pub struct Run {
    pub eos: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Element messages posted by kvssink.
    pub messages: Vec<gst::Structure>,
}

impl Run {
    /// `kvs-ack` messages of one event type.
    pub fn acks(&self, event_type: &str) -> Vec<&gst::Structure> {
        self.messages
            .iter()
            .filter(|s| s.name() == "kvs-ack")
            .filter(|s| s.get::<&str>("event-type").ok() == Some(event_type))
            .collect()
    }

    pub fn named(&self, name: &str) -> Vec<&gst::Structure> {
        self.messages.iter().filter(|s| s.name() == name).collect()
    }

    pub fn error_text(&self) -> String {
        self.errors.join("\n")
    }
}

/// Plays `pipeline` until EOS, an error, or `timeout`, then sets it to NULL.
pub fn run(pipeline: &gst::Pipeline, timeout: Duration) -> Run {
    pipeline
        .set_state(gst::State::Playing)
        .expect("set PLAYING");
    let run = collect(pipeline, timeout, |_| false);
    pipeline.set_state(gst::State::Null).expect("set NULL");
    run
}

/// Like [`run`], for pipelines that may fail to start (the error is then on the bus).
pub fn run_even_if_start_fails(pipeline: &gst::Pipeline, timeout: Duration) -> Run {
    let _ = pipeline.set_state(gst::State::Playing);
    let run = collect(pipeline, timeout, |_| false);
    pipeline.set_state(gst::State::Null).expect("set NULL");
    run
}

/// Collects bus messages until EOS, an error, `stop` says so, or `timeout`.
pub fn collect(
    pipeline: &gst::Pipeline,
    timeout: Duration,
    mut stop: impl FnMut(&Run) -> bool,
) -> Run {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + timeout;
    let mut run = Run::default();
    while Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            if stop(&run) {
                break;
            }
            continue;
        };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => {
                run.eos = true;
                break;
            }
            MessageView::Error(e) => {
                run.errors.push(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            MessageView::Warning(w) => {
                run.warnings
                    .push(format!("{} ({:?})", w.error(), w.debug()))
            }
            MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name().starts_with("kvs-")
                {
                    run.messages.push(s.to_owned());
                }
            }
            _ => {}
        }
        if stop(&run) {
            break;
        }
    }
    run
}

/// A temporary directory for a test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Records `frames` of H.264 test video through matroskamux (streamable) into `dir/name`,
/// with a key frame every `key_int` frames at 30 fps; extra matroskamux properties may be
/// given.
pub fn record(dir: &Path, name: &str, frames: u32, key_int: u32, mux_props: &str) -> PathBuf {
    let path = dir.join(name);
    record::record_pipeline(
        &format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={key_int} \
             ! h264parse ! matroskamux streamable=true {mux_props}"
        ),
        &path,
    );
    path
}

/// Splits a recorded Matroska file into its header and clusters as kvssink sends them
/// ([`split_bytes`]).
pub fn split_file(path: &Path) -> (bytes::Bytes, Vec<bytes::Bytes>) {
    split_bytes(std::fs::read(path).unwrap())
}

/// A Matroska stream as kvssink sends it: its (first) header, then every cluster, as
/// [`split_bytes`] gives them.
pub fn as_sent(stream: &[u8]) -> Vec<u8> {
    let (header, clusters) = split_bytes(stream.to_vec());
    let mut out = header.to_vec();
    for c in clusters {
        out.extend_from_slice(&c);
    }
    out
}

/// Splits a complete Matroska byte stream into its (first) header and its clusters, as
/// kvssink sends them (modelled in [`sent`]): the header with its tracks renumbered for
/// playback and in the shape AWS's producer sends (`normalize_header`); each cluster with
/// AWS's cluster head and the blocks' track numbers renumbered, its frames byte for byte.
pub fn split_bytes(data: Vec<u8>) -> (bytes::Bytes, Vec<bytes::Bytes>) {
    sent::split(data, true)
}

/// Records every byte that reaches `sink`'s sink pad.
pub fn capture(sink: &gst::Element) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                seen2
                    .lock()
                    .unwrap()
                    .extend_from_slice(&buffer.map_readable().unwrap());
            }
            gst::PadProbeReturn::Ok
        });
    seen
}

/// A live H.264 test source of `seconds` (a key frame, so a fragment, every second) into
/// kvssink named `sink`.
pub fn live_line(seconds: u32) -> String {
    format!(
        "videotestsrc is-live=true num-buffers={} ! video/x-raw,format=I420,width=320,height=240,\
         framerate=30/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
         ! h264parse ! matroskamux streamable=true ! kvssink name=sink",
        seconds * 30
    )
}

/// Points `sink` at `server` without giving it credentials.
pub fn configure_sink_without_keys(sink: &gst::Element, server: &Server, stream: &str) {
    sink.set_property("stream-name", stream);
    sink.set_property("aws-region", "us-east-1");
    sink.set_property("control-plane-uri", server.url());
}

/// Parses a launch line and points its `sink` at `server`, without credentials.
pub fn pipeline_without_keys(
    line: &str,
    server: &Server,
    stream: &str,
) -> (gst::Pipeline, gst::Element) {
    let pipeline = gst::parse::launch(line)
        .expect("parse launch line")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline.by_name("sink").expect("an element named sink");
    configure_sink_without_keys(&sink, server, stream);
    (pipeline, sink)
}

/// Asserts that `server` stored exactly the fragments in `sent`, each once, byte for byte.
pub fn assert_stored_exactly(server: &Server, stream: &str, sent: &[u8]) {
    let (_, produced) = split_bytes(sent.to_vec());
    let stored: Vec<bytes::Bytes> = server
        .fragments(stream)
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    assert_eq!(
        stored.len(),
        produced.len(),
        "stored {} fragments, produced {}",
        stored.len(),
        produced.len()
    );
    for (i, (a, b)) in stored.iter().zip(&produced).enumerate() {
        assert!(
            a == b,
            "fragment {i} differs from what matroskamux produced"
        );
    }
}

/// Access keys of the PutMedia requests kvs-local accepted, in order.
pub fn put_media_keys(server: &Server) -> Vec<String> {
    server
        .report()
        .requests
        .into_iter()
        .filter(|r| r.operation == "PutMedia" && r.status == 200)
        .filter_map(|r| r.access_key)
        .collect()
}

/// Access keys of every request whose signature or credentials kvs-local refused.
pub fn refused_keys(server: &Server) -> Vec<String> {
    server
        .report()
        .requests
        .into_iter()
        .filter(|r| r.auth == kvs_local::report::AuthVerdict::Rejected)
        .map(|r| r.access_key.unwrap_or_default())
        .collect()
}

/// Asserts that the stored fragments are the produced clusters, in order, each complete; a
/// fragment may repeat (it was in flight when the connection failed) but only if it was stored
/// before. Returns how many duplicates there were.
pub fn assert_nothing_lost(server: &Server, stream: &str, sent: &[u8]) -> usize {
    let (_, produced) = split_bytes(sent.to_vec());
    let stored: Vec<_> = server
        .fragments(stream)
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    if std::env::var("KVS_DEBUG").is_ok() {
        eprintln!(
            "produced sizes {:?}",
            produced.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        eprintln!(
            "stored sizes {:?}",
            stored.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&server.report()).unwrap()
        );
    }
    let mut unique = Vec::new();
    let mut duplicates = 0;
    for fragment in &stored {
        if unique.contains(fragment) {
            duplicates += 1;
        } else {
            unique.push(fragment.clone());
        }
    }
    assert_eq!(
        unique.len(),
        produced.len(),
        "fragments lost: {} of {}",
        produced.len() - unique.len().min(produced.len()),
        produced.len()
    );
    for (i, (a, b)) in unique.iter().zip(&produced).enumerate() {
        assert!(
            a == b,
            "fragment {i} differs from what matroskamux produced"
        );
    }
    assert!(duplicates <= 3, "{duplicates} duplicates");
    duplicates
}

/// How many `kvs-connection` messages among `messages` report `state` (connecting,
/// streaming, reconnecting, finished).
pub fn connection_states(messages: &[gst::Structure], state: &str) -> usize {
    messages
        .iter()
        .filter(|s| s.name() == "kvs-connection")
        .filter(|s| s.get::<&str>("state").ok() == Some(state))
        .count()
}

/// (track number, track type) of each TrackEntry in a stream header.
pub fn header_tracks(header: &[u8]) -> Vec<(u64, u64)> {
    let mut splitter = gstkvs::mkv::Splitter::new(Default::default());
    let mut events = Vec::new();
    let mut bytes = header.to_vec();
    // A cluster start makes the splitter emit the header.
    bytes.extend(kvs_format::build::cluster_start(0));
    splitter
        .push(bytes::Bytes::from(bytes), &mut events)
        .unwrap();
    events
        .iter()
        .find_map(|e| match e {
            gstkvs::mkv::Event::Header(h) => Some(
                h.tracks
                    .iter()
                    .map(|t| (t.number, t.track_type))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .expect("a stream header")
}

/// The (TagName, TagString) of every SimpleTag in a run of Tags elements.
pub fn simple_tags(mut data: &[u8]) -> Vec<(String, String)> {
    fn children(mut body: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        while !body.is_empty() {
            let h = kvs_format::ebml::read_header(body).unwrap().unwrap();
            let end = h.len + h.size.unwrap() as usize;
            out.push((h.id, &body[h.len..end]));
            body = &body[end..];
        }
        out
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let h = kvs_format::ebml::read_header(data).unwrap().unwrap();
        let end = h.len + h.size.unwrap() as usize;
        assert_eq!(h.id, kvs_format::ids::ID_TAGS);
        for (id, tag) in children(&data[h.len..end]) {
            assert_eq!(id, kvs_format::ids::ID_TAG);
            for (id, simple) in children(tag) {
                if id != kvs_format::ids::ID_SIMPLE_TAG {
                    continue;
                }
                let fields = children(simple);
                let get = |want| {
                    fields
                        .iter()
                        .find(|(id, _)| *id == want)
                        .map(|(_, b)| kvs_format::ebml::read_string(b))
                        .unwrap_or_default()
                };
                out.push((
                    get(kvs_format::ids::ID_TAG_NAME),
                    get(kvs_format::ids::ID_TAG_STRING),
                ));
            }
        }
        data = &data[end..];
    }
    out
}

/// Every SimpleBlock of a stored fragment, in order: its Cluster's timecode and its body.
pub fn simple_blocks(fragment: &[u8]) -> Vec<(i64, &[u8])> {
    use kvs_format::ebml::{read_header, read_uint};
    use kvs_format::ids::*;
    let mut out = Vec::new();
    let (mut at, mut cluster) = (0, 0i64);
    while at < fragment.len() {
        let Ok(Some(h)) = read_header(&fragment[at..]) else {
            break;
        };
        let body = at + h.len;
        match (h.id, h.size) {
            (ID_SEGMENT | ID_CLUSTER, _) => at = body,
            (_, None) => break,
            (ID_TIMECODE, Some(n)) => {
                cluster = read_uint(&fragment[body..body + n as usize]).unwrap() as i64;
                at = body + n as usize;
            }
            (ID_SIMPLE_BLOCK, Some(n)) => {
                out.push((cluster, &fragment[body..body + n as usize]));
                at = body + n as usize;
            }
            (_, Some(n)) => at = body + n as usize,
        }
    }
    out
}

/// (track, absolute timecode ms) of every SimpleBlock of a stored fragment, in order.
pub fn block_times(fragment: &[u8]) -> Vec<(u8, i64)> {
    simple_blocks(fragment)
        .into_iter()
        .map(|(cluster, b)| {
            (
                b[0] & 0x7F,
                cluster + i16::from_be_bytes([b[1], b[2]]) as i64,
            )
        })
        .collect()
}
