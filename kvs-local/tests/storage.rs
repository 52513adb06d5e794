//! Durable storage, restart, export, GetMedia / ListFragments /
//! GetMediaForFragmentList, and the binary.

mod common;
use bytes::Bytes;
use common::*;
use kvs_format::build::*;
use kvs_local::mkv::{Event, Parser};
use kvs_local::{Config, Server};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

fn body(tcs: &[u64]) -> Vec<u8> {
    let mut d = simple_header();
    for &t in tcs {
        d.extend(simple_cluster(t, 3, 10, 2000));
    }
    d
}

async fn put_all(s: &Server, stream: &str, tcs: &[u64]) -> Put {
    let mut p = put_media(&s.url(), &PutOpts::new(stream)).await;
    p.send_chunked(&body(tcs), 1000).await;
    p.finish();
    p.drain(T).await;
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_persisted_data_and_numbers_increase() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let s = server(config.clone());
    let u = s.url();
    let r = call(
        &u,
        "/createStream",
        json!({"StreamName": "cam", "Tags": {"k": "v"}}),
    )
    .await;
    assert_eq!(r.status, 200);
    // wait until ACTIVE: creating_delay is 0
    let p = put_all(&s, "cam", &[0, 100, 200]).await;
    assert_eq!(
        p.acks
            .iter()
            .filter(|a| a["EventType"] == "PERSISTED")
            .count(),
        3
    );
    let before = s.fragments("cam");
    let headers = s.stream_headers("cam");
    s.shutdown();

    let s = server(config.clone());
    let snap = s.stream("cam").expect("stream reloaded");
    assert_eq!(snap.meta.tags.get("k").map(String::as_str), Some("v"));
    assert_eq!(snap.status, "ACTIVE");
    assert_eq!(
        s.fragments("cam"),
        before,
        "fragments, numbers and bytes survive"
    );
    assert_eq!(s.stream_headers("cam"), headers);
    let p = put_all(&s, "cam", &[0, 100]).await;
    assert_eq!(
        p.acks
            .iter()
            .filter(|a| a["EventType"] == "PERSISTED")
            .count(),
        2
    );
    let after = s.fragments("cam");
    assert_eq!(after.len(), 5);
    assert!(
        after.windows(2).all(|w| w[0].number < w[1].number),
        "numbers increase across restarts"
    );
    drop(s);

    // a torn record at the end of the log (crash mid-write) is dropped
    let log = dir.path().join("streams/cam/fragments.log");
    let mut data = std::fs::read(&log).unwrap();
    data.extend_from_slice(b"KVSF\x10\x00\x00\x00{\"number\":");
    std::fs::write(&log, &data).unwrap();
    let s = server(config);
    assert_eq!(s.fragments("cam").len(), 5);
    let p = put_all(&s, "cam", &[300]).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
    assert_eq!(s.fragments("cam").len(), 6);
    // deleting removes the data
    s.delete_stream("cam").unwrap();
    assert!(!dir.path().join("streams/cam").exists());
}

/// Splits a media response into (header events, cluster bytes, tags text).
fn parse_media(b: &[u8]) -> (usize, Vec<Bytes>) {
    let mut p = Parser::new(1 << 30);
    let mut ev = Vec::new();
    p.push(Bytes::copy_from_slice(b), &mut ev).unwrap();
    p.finish(&mut ev).unwrap();
    let headers = ev.iter().filter(|e| matches!(e, Event::Header(_))).count();
    let clusters = ev
        .into_iter()
        .filter_map(|e| match e {
            Event::ClusterEnd { bytes, .. } => bytes.map(|p| p.to_bytes()),
            _ => None,
        })
        .collect();
    (headers, clusters)
}

async fn post_raw(u: &str, path: &str, v: serde_json::Value) -> (u16, String, Vec<u8>) {
    let b = serde_json::to_vec(&v).unwrap();
    let url = format!("{u}{path}");
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(b.clone());
    for (k, v) in kvs_local::client::sign_json(&url, &b) {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), ct, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_back() {
    let s = server(Config {
        get_media_follow: Duration::from_millis(300),
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    let u = s.url();
    put_all(&s, "cam", &[0, 100, 200]).await;
    let stored = s.fragments("cam");

    // ListFragments
    let r = call(&u, "/listFragments", json!({"StreamName": "cam"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let list = r.json["Fragments"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["FragmentNumber"], stored[1].number.as_str());
    assert_eq!(list[1]["FragmentSizeInBytes"], stored[1].bytes.len());
    assert_eq!(list[1]["FragmentLengthInMilliseconds"], 20);
    let p1 = list[1]["ProducerTimestamp"].as_f64().unwrap();
    assert!((p1 * 1000.0 - stored[1].producer_timestamp_ms as f64).abs() < 1.0);
    assert!(list[1]["ServerTimestamp"].is_f64());
    let r = call(
        &u,
        "/listFragments",
        json!({"StreamName": "cam", "MaxResults": 2}),
    )
    .await;
    assert_eq!(r.json["Fragments"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["NextToken"], "2");
    let from = stored[1].producer_timestamp_ms as f64 / 1000.0;
    let r = call(
        &u,
        "/listFragments",
        json!({"StreamName": "cam", "FragmentSelector": {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {"StartTimestamp": from, "EndTimestamp": from + 3600.0}}}),
    )
    .await;
    assert_eq!(r.json["Fragments"].as_array().unwrap().len(), 2);

    // GetMediaForFragmentList
    let (st, ct, b) = post_raw(
        &u,
        "/getMediaForFragmentList",
        json!({"StreamName": "cam", "Fragments": [stored[2].number, stored[0].number]}),
    )
    .await;
    assert_eq!((st, ct.as_str()), (200, "video/webm"));
    let (h, clusters) = parse_media(&b);
    assert_eq!(h, 2, "every fragment is a self-contained chunk");
    assert_eq!(
        clusters,
        vec![stored[2].bytes.clone(), stored[0].bytes.clone()]
    );
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("AWS_KINESISVIDEO_FRAGMENT_NUMBER"));
    assert!(text.contains(&stored[2].number));
    let (st, _, _) = post_raw(
        &u,
        "/getMediaForFragmentList",
        json!({"StreamName": "cam", "Fragments": ["1"]}),
    )
    .await;
    assert_eq!(st, 404);

    // GetMedia EARLIEST / FRAGMENT_NUMBER / CONTINUATION_TOKEN / timestamps
    let sel = |s: serde_json::Value| json!({"StreamName": "cam", "StartSelector": s});
    let (st, ct, b) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "EARLIEST"})),
    )
    .await;
    assert_eq!((st, ct.as_str()), (200, "video/webm"));
    let (_, clusters) = parse_media(&b);
    assert_eq!(clusters.len(), 3);
    let text = String::from_utf8_lossy(&b);
    for tag in [
        "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
        "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
        "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW",
        "AWS_KINESISVIDEO_CONTINUATION_TOKEN",
    ] {
        assert!(text.contains(tag), "{tag}");
    }
    let (_, _, b) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": stored[0].number})),
    )
    .await;
    assert_eq!(
        parse_media(&b).1,
        vec![stored[1].bytes.clone(), stored[2].bytes.clone()]
    );
    let (_, _, b) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": stored[1].number})),
    )
    .await;
    assert_eq!(parse_media(&b).1, vec![stored[2].bytes.clone()]);
    let ts = stored[2].producer_timestamp_ms as f64 / 1000.0;
    let (_, _, b) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": ts})),
    )
    .await;
    assert_eq!(parse_media(&b).1.len(), 1);
    // A time inside a fragment starts with that fragment, as the service does.
    assert!(
        stored[1].duration_ms > 0,
        "the premise: fragments of more than one frame"
    );
    let inside = stored[1].producer_timestamp_ms + stored[1].duration_ms;
    assert!(inside < stored[2].producer_timestamp_ms);
    let (_, _, b) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": inside as f64 / 1000.0})),
    )
    .await;
    assert_eq!(
        parse_media(&b).1,
        vec![stored[1].bytes.clone(), stored[2].bytes.clone()]
    );
    let (st, _, _) = post_raw(
        &u,
        "/getMedia",
        sel(json!({"StartSelectorType": "SOMETIME"})),
    )
    .await;
    assert_eq!(st, 400);

    // NOW follows new fragments: once the response head is here, the
    // reader's start position is fixed
    let now_body = serde_json::to_vec(
        &json!({"StreamName": "cam", "StartSelector": {"StartSelectorType": "NOW"}}),
    )
    .unwrap();
    let url = format!("{u}/getMedia");
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(now_body.clone());
    for (k, v) in kvs_local::client::sign_json(&url, &now_body) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    put_all(&s, "cam", &[300]).await;
    let b = resp.bytes().await.unwrap();
    let (_, clusters) = parse_media(&b);
    assert_eq!(clusters, vec![s.fragments("cam")[3].bytes.clone()]);
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvs-local")
}

/// Starts the binary on a free port; returns the child and its URL.
fn start_binary(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(bin())
        .args(["--port", "0", "--creating-delay-ms", "0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = listening_url(&mut child);
    (child, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_kill_9_loses_nothing_persisted_and_export_works() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_binary(dir.path());
    assert_eq!(
        call(&url, "/createStream", json!({"StreamName": "cam"}))
            .await
            .status,
        200
    );
    let mut p = put_media(&url, &PutOpts::new("cam")).await;
    p.send(body(&[0, 100])).await;
    p.send(simple_cluster(200, 3, 10, 2000)).await;
    p.send(end_of_fragment_tags()).await;
    p.until(T, |a| is(a, "PERSISTED", Some(200)))
        .await
        .expect("3 persisted");
    // kill -9 right after the last PERSISTED, with the session still open
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, url) = start_binary(dir.path());
    let r = call(&url, "/listFragments", json!({"StreamName": "cam"})).await;
    assert_eq!(
        r.json["Fragments"].as_array().map(Vec::len),
        Some(3),
        "{:?}",
        r.json
    );
    // SIGTERM: clean stop with a report in the data dir
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["requests"][0]["operation"], "ListFragments");

    let out = dir.path().join("out.mkv");
    let st = Command::new(bin())
        .args(["export", "--data-dir"])
        .arg(dir.path())
        .args(["--stream", "cam"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&out).unwrap(), body(&[0, 100, 200]));
    let st = Command::new(bin())
        .args(["export", "--data-dir"])
        .arg(dir.path())
        .args(["--stream", "nope"])
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
}

/// A camera that came back with another codec: the second session's header has other tracks,
/// which one Matroska file cannot hold. Its fragments go to a second file instead of being
/// left out (most of a recording could be missing from the export).
#[tokio::test(flavor = "multi_thread")]
async fn export_writes_a_file_per_change_of_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    for (codec, start) in [
        (AVC, "1700000000.000"),
        ("V_MPEGH/ISO/HEVC", "1700000010.000"),
    ] {
        let mut opts = PutOpts::new("cam");
        opts.start_ts = Some(start.into());
        let mut p = put_media(&s.url(), &opts).await;
        let mut data = kvs_format::build::header_with_tracks(&[Track::video(1, codec)]);
        data.extend(simple_cluster(0, 3, 10, 2000));
        data.extend(simple_cluster(100, 3, 10, 2000));
        p.send_chunked(&data, 1000).await;
        p.finish();
        p.drain(T).await;
    }
    s.shutdown();
    let out = dir.path().join("out.mkv");
    let stats = kvs_local::export_stream(dir.path(), "cam", &out).unwrap();
    let second = dir.path().join("out-2.mkv");
    assert_eq!(stats.fragments, 4);
    assert_eq!(stats.files, [(out.clone(), 2), (second.clone(), 2)]);
    for (path, codec) in [(&out, AVC), (&second, "V_MPEGH/ISO/HEVC")] {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.windows(codec.len()).any(|w| w == codec.as_bytes()),
            "{}",
            path.display()
        );
        let mut p = Parser::new(1 << 30);
        let mut ev = Vec::new();
        p.push(Bytes::from(bytes), &mut ev).unwrap();
        p.finish(&mut ev).unwrap();
        let clusters = ev
            .iter()
            .filter(|e| matches!(e, Event::ClusterTimecode { .. }))
            .count();
        assert_eq!(clusters, 2, "{}", path.display());
    }
}

/// A producer that restarted: a second session 10 s after the first, its timecodes from 0
/// again and its header new only in its UIDs. The export holds both, on one timeline.
#[tokio::test(flavor = "multi_thread")]
async fn export_puts_a_later_session_at_its_producer_time() {
    use kvs_format::ebml::Writer;
    use kvs_format::ids::*;
    let dir = tempfile::tempdir().unwrap();
    let s = server(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    let header = |uid: u8| {
        let mut h = kvs_format::build::ebml_header("matroska");
        h.extend(kvs_format::build::segment_unknown_size());
        h.extend(
            Writer::new()
                .master(ID_INFO, |w| {
                    w.element(ID_SEGMENT_UID, &[uid; 16])
                        .uint(ID_TIMECODE_SCALE, 1_000_000);
                })
                .finish(),
        );
        h.extend(tracks(&[Track::video(1, AVC)]));
        h
    };
    for (uid, start) in [(1, "1700000000.000"), (2, "1700000010.000")] {
        let mut opts = PutOpts::new("cam");
        opts.start_ts = Some(start.into());
        let mut p = put_media(&s.url(), &opts).await;
        let mut data = header(uid);
        data.extend(simple_cluster(0, 3, 10, 2000));
        data.extend(simple_cluster(100, 3, 10, 2000));
        p.send_chunked(&data, 1000).await;
        p.finish();
        p.drain(T).await;
    }
    assert_eq!(s.fragments("cam").len(), 4);
    s.shutdown();
    let out = dir.path().join("out.mkv");
    let stats = kvs_local::export_stream(dir.path(), "cam", &out).unwrap();
    assert_eq!((stats.fragments, stats.files.len(), stats.moved), (4, 1, 1));
    let mut p = Parser::new(1 << 30);
    let mut ev = Vec::new();
    p.push(Bytes::from(std::fs::read(&out).unwrap()), &mut ev)
        .unwrap();
    p.finish(&mut ev).unwrap();
    let timecodes: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ClusterTimecode { timecode, .. } => Some(*timecode),
            _ => None,
        })
        .collect();
    assert_eq!(timecodes, [0, 100, 10_000, 10_100]);
}

#[tokio::test(flavor = "current_thread")]
async fn start_inside_a_runtime() {
    let s = Server::start(cfg()).await.unwrap();
    s.create_stream("cam").unwrap();
    let waiter = s.wait_for_fragments_async("cam", 2, T);
    let producer = put_all(&s, "cam", &[0, 100]);
    let (ok, p) = tokio::join!(waiter, producer);
    assert!(ok);
    assert_eq!(p.events().iter().filter(|e| *e == "PERSISTED").count(), 2);
    assert!(
        !s.wait_for_fragments_async("cam", 3, Duration::from_millis(20))
            .await
    );
    s.shutdown();
}

/// The (name, value) of every SimpleTag in a media response after each cluster, before the
/// next fragment's stream header, per fragment.
fn metadata_after_clusters(b: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut p = Parser::new(1 << 30);
    let mut ev = Vec::new();
    p.push(Bytes::copy_from_slice(b), &mut ev).unwrap();
    p.finish(&mut ev).unwrap();
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for e in ev {
        match e {
            Event::ClusterStart { .. } => out.push(Vec::new()),
            Event::Tags(items) => out.last_mut().unwrap().extend(items),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fragment_metadata_follows_its_cluster_and_comes_back_after_it() {
    use kvs_format::kvs::{end_of_fragment_tags, fragment_metadata_tags};
    let s = server(Config {
        get_media_follow: Duration::from_millis(200),
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    let c = |tc| simple_cluster(tc, 3, 10, 500);
    let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
    p.send(simple_header()).await;
    p.send(c(0)).await;
    p.send(fragment_metadata_tags(&[
        ("motion", "true"),
        ("lat", "47.6N"),
    ]))
    .await;
    // The fragment is complete once what follows its Tags is known.
    p.send(c(100)).await;
    p.until(T, |a| is(a, "PERSISTED", Some(0)))
        .await
        .expect("PERSISTED 0");
    p.send(fragment_metadata_tags(&[("lat", "47.7N")])).await;
    p.send(end_of_fragment_tags()).await;
    p.until(T, |a| is(a, "PERSISTED", Some(100)))
        .await
        .expect("the end-of-fragment tag completes the fragment and its metadata");
    // Eleven items: more than the service takes for one fragment.
    p.send(c(200)).await;
    let many: Vec<(String, String)> = (0..11).map(|i| pair(&format!("k{i}"), "v")).collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    p.send(fragment_metadata_tags(&many_refs)).await;
    // The service's own (AWS...) tags are not counted.
    p.send(c(300)).await;
    let mut ten = many_refs[..10].to_vec();
    ten.push(("AWS_KINESISVIDEO_EVENT", "x"));
    p.send(fragment_metadata_tags(&ten)).await;
    p.finish();
    p.drain(T).await;
    let e = p
        .acks
        .iter()
        .find(|a| a["EventType"] == "ERROR")
        .expect("an ERROR ack");
    assert_eq!(
        (e["ErrorId"].as_u64(), e["FragmentTimecode"].as_u64()),
        (Some(4009), Some(200))
    );
    assert_eq!(e["ErrorCode"], "FRAGMENT_METADATA_LIMIT_REACHED");

    let stored = s.fragments("cam");
    assert_eq!(
        stored.iter().map(|f| f.timecode).collect::<Vec<_>>(),
        [0, 100, 300],
        "the fragment with too many items is refused, the session goes on"
    );
    assert_eq!(
        stored[0].metadata,
        [pair("motion", "true"), pair("lat", "47.6N")]
    );
    assert_eq!(stored[1].metadata, [pair("lat", "47.7N")]);
    assert_eq!(stored[2].metadata.len(), 11);
    assert_eq!(
        &stored[0].bytes[..],
        &c(0)[..],
        "the cluster is stored as sent, without the Tags"
    );

    // Returned after the cluster, in GetMediaForFragmentList and GetMedia.
    let (_, _, b) = post_raw(
        &s.url(),
        "/getMediaForFragmentList",
        json!({"StreamName": "cam", "Fragments": [stored[1].number, stored[0].number]}),
    )
    .await;
    assert_eq!(
        metadata_after_clusters(&b),
        [
            vec![pair("lat", "47.7N")],
            vec![pair("motion", "true"), pair("lat", "47.6N")]
        ]
    );
    assert_eq!(
        parse_media(&b).1,
        [stored[1].bytes.clone(), stored[0].bytes.clone()]
    );
    let (_, _, b) = post_raw(
        &s.url(),
        "/getMedia",
        json!({"StreamName": "cam", "StartSelector": {"StartSelectorType": "EARLIEST"}}),
    )
    .await;
    let got = metadata_after_clusters(&b);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0][..2], [pair("motion", "true"), pair("lat", "47.6N")]);
    // GetMedia's own trailer follows the metadata.
    assert_eq!(got[0][2].0, "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW");
}
