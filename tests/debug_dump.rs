//! `KVS_DEBUG_DUMP_DATA_FILE_DIR`, as AWS's producer reads it: with the variable set, each
//! PutMedia body goes to a file as well, one per session, exactly the bytes kvs-local
//! received, and each file is Matroska that GStreamer reads. Needs the cdylib:
//! `cargo build -p gst-plugin-kvs --lib`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::host::*;
use common::*;
use gstkvs::mkv::{Event, Splitter};

const TIMEOUT: Duration = Duration::from_secs(120);
const ENV: &str = "KVS_DEBUG_DUMP_DATA_FILE_DIR";

/// Runs `gst-launch-1.0 -m -e LINE` with the variable naming `dir`.
fn launch_dumping(server: &Server, dir: &Path, line: &str) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.env(ENV, dir)
        .args(["-m", "-e"])
        .args(split_launch(line));
    run_host(cmd, TIMEOUT)
}

/// The files in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// What kvs-local received in each PutMedia session: its byte count and, rebuilt from what it
/// stored, the body (the stream header, then each fragment's cluster).
fn received(server: &Server, stream: &str) -> Vec<(u64, Vec<u8>)> {
    let stored = server.fragments(stream);
    let headers = server.stream_headers(stream);
    server
        .report()
        .sessions
        .iter()
        .filter(|s| s.stream == stream)
        .map(|s| {
            let mut body = Vec::new();
            for (i, record) in s.fragments.iter().enumerate() {
                let number = record.number.as_ref().expect("a numbered fragment");
                let f = stored.iter().find(|f| &f.number == number).unwrap();
                if i == 0 {
                    body.extend_from_slice(&headers[f.header_index]);
                }
                body.extend_from_slice(&f.bytes);
            }
            (s.bytes, body)
        })
        .collect()
}

/// `gst-discoverer-1.0 FILE`: H.264 video in Matroska.
fn assert_discoverable(file: &Path) {
    let out = Command::new("gst-discoverer-1.0")
        .arg(file)
        .env_remove("GST_PLUGIN_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("container #0: Matroska") && text.contains("video #1: H.264"),
        "{text}"
    );
}

#[test]
fn each_putmedia_session_goes_to_its_own_file_as_sent() {
    init();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    // A new session every second, at a fragment boundary.
    let run = launch_dumping(
        &server,
        dir.path(),
        "videotestsrc is-live=true num-buffers=120 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
         ! h264parse ! matroskamux streamable=true ! kvssink stream-name=dump rotation-period=1",
    );
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    let sessions = received(&server, "dump");
    assert!(sessions.len() >= 2, "{} sessions", sessions.len());
    let expected: Vec<String> = (0..sessions.len())
        .map(|n| format!("dump_{n}.mkv"))
        .collect();
    assert_eq!(files(dir.path()), expected, "one file per session");
    for (name, (count, body)) in expected.iter().zip(&sessions) {
        let file = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(
            file.len() as u64,
            *count,
            "{name}: the bytes kvs-local received"
        );
        assert!(
            file == *body,
            "{name}: the header and clusters kvs-local stored"
        );
    }
    assert_discoverable(&dir.path().join("dump_0.mkv"));
    // The file is what a pipeline reading Matroska takes: every frame of its fragments.
    let out = Command::new("gst-launch-1.0")
        .arg("filesrc")
        .arg(format!(
            "location={}",
            dir.path().join("dump_1.mkv").display()
        ))
        .args(split_launch(
            "! matroskademux ! h264parse ! avdec_h264 ! fakesink",
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fragment_metadata_follows_its_cluster_in_the_body() {
    init();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.env(ENV, dir.path())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/metadata.py"))
        .args([
            "--endpoint",
            &server.url(),
            "--stream",
            "tagged",
            "--seconds",
            "4",
        ]);
    run_host(cmd, TIMEOUT).assert_success();
    assert_eq!(files(dir.path()), ["tagged_0.mkv"]);
    let file = std::fs::read(dir.path().join("tagged_0.mkv")).unwrap();
    let sessions = received(&server, "tagged");
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        file.len() as u64,
        sessions[0].0,
        "the bytes kvs-local received"
    );

    // Header, then each cluster followed by its fragment's metadata (one Tags element per
    // item, as AWS's producer writes them): nothing before the first cluster, nothing inside.
    let mut splitter = Splitter::new(Default::default());
    let mut events = Vec::new();
    splitter
        .push(bytes::Bytes::from(file), &mut events)
        .unwrap();
    splitter.finish(&mut events).unwrap();
    let (mut clusters, mut tags): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for e in events {
        match e {
            Event::FragmentStart(_) => {
                clusters.push(Vec::new());
                tags.push(Vec::new());
            }
            Event::FragmentData(b) => clusters.last_mut().unwrap().extend_from_slice(&b),
            Event::Interstitial(b) => tags
                .last_mut()
                .expect("no Tags before the first cluster")
                .extend_from_slice(&b),
            _ => {}
        }
    }
    let stored = server.fragments("tagged");
    assert_eq!(clusters.len(), stored.len());
    for ((cluster, tags), f) in clusters.iter().zip(&tags).zip(&stored) {
        assert!(cluster[..] == f.bytes[..], "the cluster as stored");
        assert_eq!(simple_tags(tags), f.metadata);
        let items: Vec<(&str, &str)> = f
            .metadata
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            *tags,
            kvs_format::kvs::fragment_metadata_tags(&items),
            "one Tags element per item"
        );
        assert_eq!(f.metadata[0], ("camera".into(), "front-door".into()));
    }
}
