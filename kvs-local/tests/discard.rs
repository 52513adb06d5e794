//! Discard mode (`Config::discard_media`, `--discard-media`): PutMedia authenticated and
//! acked as usual, bodies only scanned for fragment boundaries, nothing stored; and the
//! body-read timestamps of `Config::record_body_reads`.

mod common;
use common::*;
use kvs_local::mkvbuild::*;
use kvs_local::{Config, monotonic_ns};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn discarding() -> Config {
    Config {
        discard_media: true,
        ..cfg()
    }
}

fn with_header(clusters: &[Vec<u8>]) -> Vec<u8> {
    let mut d = simple_header();
    for c in clusters {
        d.extend_from_slice(c);
    }
    d
}

/// Streams `body` in 777-byte chunks and returns all acks once the response ended.
async fn run(url: &str, o: &PutOpts, body: &[u8]) -> Put {
    let mut p = put_media(url, o).await;
    assert_eq!(p.status, 200, "{:?}", p.json);
    p.send_chunked(body, 777).await;
    p.finish();
    p.drain(T).await;
    assert!(p.ended, "response ended");
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fragment_is_acked_while_streaming_and_nothing_is_stored() {
    let s = server(discarding());
    s.create_stream("cam").unwrap();
    let c1 = simple_cluster(0, 3, 33, 1000);
    let c2 = simple_cluster(100, 3, 33, 1000);
    let c3 = cluster_sized(
        200,
        &[
            block_group(1, 0, true, &[7; 500]),
            block_group(1, 33, false, &[8; 500]),
        ],
    );
    let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
    assert_eq!(p.status, 200);
    p.send(simple_header()).await;
    p.send_chunked(&c1, 300).await;
    // the next cluster start ends c1: its acks come while the body is still open
    p.send(c2[..20].to_vec()).await;
    let a = p
        .until(T, |a| is(a, "PERSISTED", Some(0)))
        .await
        .expect("PERSISTED 0 before the body ends");
    let n0 = a["FragmentNumber"].as_str().unwrap().to_string();
    assert_eq!(n0.len(), 47);
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
    p.send(c2[20..].to_vec()).await;
    p.send(c3.clone()).await;
    p.finish();
    p.drain(T).await;
    assert!(p.ended);
    assert_eq!(
        p.events(),
        ["BUFFERING", "RECEIVED", "PERSISTED"].repeat(3),
        "{:?}",
        p.acks
    );
    let persisted: Vec<_> = p
        .acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .collect();
    let tcs: Vec<_> = persisted
        .iter()
        .map(|a| a["FragmentTimecode"].clone())
        .collect();
    assert_eq!(tcs, [json!(0), json!(100), json!(200)]);
    let numbers: Vec<&str> = persisted
        .iter()
        .map(|a| a["FragmentNumber"].as_str().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    assert!(s.fragments("cam").is_empty(), "nothing stored");
    assert_eq!(s.fragment_count("cam"), 0);
    assert!(s.stream_headers("cam").is_empty());

    let rep = s.report();
    let sess = &rep.sessions[0];
    assert_eq!(
        sess.bytes as usize,
        simple_header().len() + c1.len() + c2.len() + c3.len()
    );
    assert_eq!(sess.acks.len(), 9);
    let frags: Vec<_> = sess
        .fragments
        .iter()
        .map(|f| (f.timecode, f.size, f.outcome.as_str(), f.sha256.is_none()))
        .collect();
    assert_eq!(
        frags,
        [
            (Some(0), c1.len() as u64, "discarded", true),
            (Some(100), c2.len() as u64, "discarded", true),
            (Some(200), c3.len() as u64, "discarded", true),
        ]
    );
    assert_eq!(sess.fragments[0].number.as_deref(), Some(n0.as_str()));
    assert!(sess.reads.is_empty(), "reads are recorded only when asked");
    let json = serde_json::to_value(&rep).unwrap();
    assert!(json["sessions"][0].get("reads").is_none());
    assert_eq!(
        sess.end_reason.as_deref(),
        Some("request body complete"),
        "{sess:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_still_authenticated_and_checked() {
    let s = server(Config {
        creating_delay: Duration::from_secs(60),
        ..discarding()
    });
    s.create_stream("c").unwrap();
    let u = s.url();
    assert_put_media_request_checks(&u, "c").await;
    // a stream created over HTTP stays CREATING for a minute: not ACTIVE
    let r = call(&u, "/createStream", json!({"StreamName": "new"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let p = run(
        &u,
        &PutOpts::new("new"),
        &with_header(&[simple_cluster(0, 1, 1, 1)]),
    )
    .await;
    assert_eq!(p.events(), ["ERROR:4008"]);
    assert!(s.report().sessions.iter().all(|x| x.fragments.is_empty()));
    // and an ACTIVE stream with good credentials streams
    let p = run(
        &u,
        &PutOpts::new("c"),
        &with_header(&[simple_cluster(0, 1, 1, 1)]),
    )
    .await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_fragment_rules_are_not_checked_but_broken_matroska_ends_the_session() {
    // every cluster here breaks a rule kvs-local enforces when it stores (see putmedia.rs):
    // over max_fragment_size (4001), longer than 10 s (4002), timecode going back (4004),
    // no key frame first (4006), an unknown track (4010)
    let body = {
        let mut not_key = cluster_start(300);
        not_key.extend(simple_block(1, 0, false, b"delta"));
        let mut unknown_track = cluster_start(400);
        unknown_track.extend(simple_block(1, 0, true, b"k"));
        unknown_track.extend(simple_block(9, 5, true, b"?"));
        with_header(&[
            simple_cluster(0, 10, 10, 5000),
            simple_cluster(100, 2, 12_000, 10),
            simple_cluster(50, 1, 1, 1),
            not_key,
            unknown_track,
        ])
    };
    let small = Config {
        max_fragment_size: 20_000,
        ..cfg()
    };
    let strict = server(small.clone());
    strict.create_stream("c").unwrap();
    let p = run(&strict.url(), &PutOpts::new("c"), &body).await;
    let errors: Vec<_> = p
        .events()
        .into_iter()
        .filter(|e| e.starts_with("ERROR"))
        .collect();
    assert_eq!(
        errors,
        [
            "ERROR:4001",
            "ERROR:4002",
            "ERROR:4004",
            "ERROR:4006",
            "ERROR:4010"
        ],
        "the same body is refused fragment by fragment when stored"
    );

    let s = server(Config {
        discard_media: true,
        ..small
    });
    s.create_stream("c").unwrap();
    let p = run(&s.url(), &PutOpts::new("c"), &body).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"].repeat(5));
    // no producer start timestamp (4007 when stored), or one far in the future
    for ts in [
        None,
        Some(format!("{}", kvs_local::now_ms() / 1000 + 86_400)),
    ] {
        let o = PutOpts {
            start_ts: ts.clone(),
            ..PutOpts::new("c")
        };
        let p = run(&s.url(), &o, &with_header(&[simple_cluster(0, 1, 1, 1)])).await;
        assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"], "{ts:?}");
    }

    // bytes that are not Matroska at all
    let p = run(
        &s.url(),
        &PutOpts::new("c"),
        &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16],
    )
    .await;
    assert_eq!(p.events(), ["ERROR:4006"]);
    // broken in the middle of a fragment: the fragment in flight is named, the session ends
    let mut broken = with_header(&[simple_cluster(0, 1, 1, 1)]);
    broken.extend(cluster_start(40));
    broken.extend([0x00, 0x00, 0x00]);
    broken.extend(simple_cluster(80, 1, 1, 1));
    let p = run(&s.url(), &PutOpts::new("c"), &broken).await;
    assert_eq!(
        p.events(),
        [
            "BUFFERING",
            "RECEIVED",
            "PERSISTED",
            "BUFFERING",
            "ERROR:4006"
        ]
    );
    assert_eq!(p.acks[4]["FragmentTimecode"], 40);
    // a body that ends inside a block
    let whole = with_header(&[simple_cluster(0, 2, 1, 100)]);
    let p = run(&s.url(), &PutOpts::new("c"), &whole[..whole.len() - 10]).await;
    assert_eq!(p.events(), ["BUFFERING", "ERROR:4006"]);
    assert!(s.fragments("c").is_empty());
}

/// Body reads of the first session in the report, once at least `bytes` have arrived.
async fn reads_up_to(s: &kvs_local::Server, bytes: u64) -> Vec<kvs_local::report::BodyRead> {
    let deadline = Instant::now() + T;
    loop {
        let reads = s.report().sessions[0].reads.clone();
        if reads.last().is_some_and(|r| r.bytes >= bytes) || Instant::now() > deadline {
            return reads;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn body_reads_are_timestamped_on_arrival() {
    for discard_media in [true, false] {
        let s = server(Config {
            record_body_reads: true,
            discard_media,
            ..cfg()
        });
        s.create_stream("cam").unwrap();
        let mut body = simple_header();
        for i in 0..4 {
            body.extend(simple_cluster(i * 100, 3, 33, 2000));
        }
        let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
        assert_eq!(p.status, 200);
        // (monotonic time before sending a chunk, body bytes at its end, time it was seen)
        let mut sent = Vec::new();
        let mut end = 0u64;
        for chunk in body.chunks(5000) {
            let before = monotonic_ns();
            p.send(chunk.to_vec()).await;
            end += chunk.len() as u64;
            let reads = reads_up_to(&s, end).await;
            sent.push((before, end, monotonic_ns()));
            assert_eq!(reads.last().map(|r| r.bytes), Some(end), "chunk to {end}");
        }
        p.finish();
        p.drain(T).await;
        assert!(p.ended);
        let reads = s.report().sessions[0].reads.clone();
        assert!(reads.len() >= sent.len(), "{} reads", reads.len());
        assert!(
            reads
                .windows(2)
                .all(|w| w[0].bytes < w[1].bytes && w[0].monotonic_ns <= w[1].monotonic_ns)
        );
        assert_eq!(reads.last().unwrap().bytes, body.len() as u64);
        for &(before, end, seen) in &sent {
            // the read that completed the chunk happened between sending it and seeing it
            let r = reads[reads.partition_point(|r| r.bytes < end)];
            assert_eq!(r.bytes, end);
            assert!(
                before <= r.monotonic_ns && r.monotonic_ns <= seen,
                "chunk to {end}: sent at {before}, read at {}, seen at {seen}",
                r.monotonic_ns
            );
        }
        let stored = s.fragment_count("cam");
        assert_eq!(stored, if discard_media { 0 } else { 4 });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_takes_the_flags() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-local"))
        .args(["--port", "0", "--discard-media", "--record-body-reads"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = listening_url(&mut child);
    let r = call(&url, "/createStream", json!({"StreamName": "cam"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let body = with_header(&[
        simple_cluster(0, 2, 33, 3000),
        simple_cluster(100, 2, 33, 3000),
    ]);
    let p = run(&url, &PutOpts::new("cam"), &body).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"].repeat(2));

    let get = |path: &'static str| {
        let url = url.clone();
        async move {
            let r = reqwest::get(format!("{url}/__kvs-local/{path}"))
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let streams = get("streams").await;
    assert_eq!(streams[0]["fragment_count"], 0, "{streams}");
    let report = get("report").await;
    let session = &report["sessions"][0];
    assert_eq!(session["bytes"], body.len());
    let outcomes: Vec<_> = session["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["discarded", "discarded"]);
    let reads = session["reads"].as_array().unwrap();
    assert!(!reads.is_empty());
    assert_eq!(reads.last().unwrap()["bytes"], body.len());
    assert!(reads[0]["monotonic_ns"].as_u64().unwrap() <= monotonic_ns());
    child.kill().unwrap();
    child.wait().unwrap();
}
