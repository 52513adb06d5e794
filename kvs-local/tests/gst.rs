//! Real `matroskamux streamable=true` output recorded with gst-launch-1.0.

mod common;
use common::*;
use kvs_local::Config;
use std::process::Command;

/// The workspace's one gst-launch recorder (std only), shared with the plugin's tests.
#[path = "../../tests/common/record.rs"]
mod record;
use record::record_pipeline as record;

const VIDEO: &str = "videotestsrc num-buffers=90 ! video/x-raw,width=160,height=120,framerate=30/1 ! x264enc key-int-max=30 ! h264parse";

#[tokio::test(flavor = "multi_thread")]
async fn matroskamux_video_is_accepted_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let file = record(
        &format!("{VIDEO} ! matroskamux streamable=true"),
        &dir.path().join("v.mkv"),
    );
    for chunk in [7usize, 4096, 65536] {
        let s = server(cfg());
        s.create_stream("cam").unwrap();
        let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
        p.send_chunked(&file, chunk).await;
        p.finish();
        p.drain(T).await;
        assert!(
            p.acks.iter().all(|a| a["EventType"] != "ERROR"),
            "{:?}",
            p.acks
        );
        let frags = s.fragments("cam");
        let tcs: Vec<u64> = frags.iter().map(|f| f.timecode).collect();
        assert_eq!(tcs, [0, 1000, 2000], "one cluster per GOP (chunk {chunk})");
        assert!(frags.iter().all(|f| f.key_frame));
        assert!(frags.iter().all(|f| (960..=1000).contains(&f.duration_ms)));
        let header = &s.stream_headers("cam")[0];
        let mut joined = header.to_vec();
        for f in &frags {
            joined.extend_from_slice(&f.bytes);
        }
        assert_eq!(joined, file, "header + clusters reproduce the file exactly");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn matroskamux_audio_and_video() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "{VIDEO} ! queue ! mux. audiotestsrc num-buffers=130 ! audio/x-raw,rate=44100 ! voaacenc ! aacparse ! queue ! mux. matroskamux name=mux streamable=true"
    );
    let file = record(&pipeline, &dir.path().join("av.mkv"));
    let s = server(cfg());
    s.create_stream("cam").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
    p.send_chunked(&file, 10_000).await;
    p.finish();
    p.drain(T).await;
    assert!(
        p.acks.iter().all(|a| a["EventType"] != "ERROR"),
        "{:?}",
        p.acks
    );
    assert!(s.fragments("cam").len() >= 3);
    assert!(s.fragments("cam").iter().all(|f| f.key_frame));
}

#[tokio::test(flavor = "multi_thread")]
async fn long_gop_gives_4002_and_export_plays() {
    let dir = tempfile::tempdir().unwrap();
    // 11 s GOP: matroskamux makes an 11 s cluster, which KVS refuses
    let long = record(
        "videotestsrc num-buffers=345 ! video/x-raw,width=64,height=48,framerate=30/1 ! x264enc key-int-max=330 ! h264parse ! matroskamux streamable=true",
        &dir.path().join("long.mkv"),
    );
    let s = server(cfg());
    s.create_stream("cam").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
    p.send_chunked(&long, 65536).await;
    p.finish();
    p.drain(T).await;
    assert_eq!(p.events()[..2], ["BUFFERING", "ERROR:4002"], "{:?}", p.acks);
    assert_eq!(
        s.fragments("cam").len(),
        1,
        "the short second GOP is stored"
    );

    // export a stored stream and let gst-discoverer look at it
    let data = dir.path().join("data");
    let file = record(
        &format!("{VIDEO} ! matroskamux streamable=true"),
        &dir.path().join("v.mkv"),
    );
    {
        let s = server(Config {
            data_dir: Some(data.clone()),
            ..cfg()
        });
        s.create_stream("cam").unwrap();
        let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
        p.send_chunked(&file, 65536).await;
        p.finish();
        p.drain(T).await;
        assert_eq!(s.fragments("cam").len(), 3);
    }
    let out = dir.path().join("out.mkv");
    let st = Command::new(env!("CARGO_BIN_EXE_kvs-local"))
        .args(["export", "--data-dir"])
        .arg(&data)
        .args(["--stream", "cam"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let disc = Command::new("gst-discoverer-1.0")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&disc.stdout);
    assert!(disc.status.success(), "{text}");
    assert!(text.contains("video #") && text.contains("H.264"), "{text}");
}
