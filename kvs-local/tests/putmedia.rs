//! PutMedia: acks, storage, and every data rule.

mod common;
use common::*;
use kvs_format::build::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn acks_stream_while_body_is_open_and_bytes_are_stored() {
    let s = server(cfg());
    s.create_stream("cam").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("cam")).await;
    assert_eq!(p.status, 200);
    let header = simple_header();
    let c1 = simple_cluster(0, 3, 33, 1000);
    let c2 = simple_cluster(100, 3, 33, 1000);
    p.send(header.clone()).await;
    p.send_chunked(&c1, 300).await;
    // the next cluster start closes c1: its acks must arrive before we send more
    p.send(c2[..20].to_vec()).await;
    let a = p
        .until(T, |a| is(a, "PERSISTED", Some(0)))
        .await
        .expect("PERSISTED 0");
    let n0 = a["FragmentNumber"].as_str().unwrap().to_string();
    assert_eq!(n0.len(), 47);
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
    assert_eq!(p.acks[0]["FragmentNumber"], n0.as_str());
    p.send(c2[20..].to_vec()).await;
    p.finish();
    let rest = p.drain(T).await;
    assert_eq!(
        p.events(),
        [
            "BUFFERING",
            "RECEIVED",
            "PERSISTED",
            "BUFFERING",
            "RECEIVED",
            "PERSISTED"
        ]
    );
    assert!(p.ended);
    let n1 = rest[2]["FragmentNumber"].as_str().unwrap();
    assert!(n1 > n0.as_str(), "fragment numbers increase");
    assert_eq!(rest[2]["FragmentTimecode"], 100);

    let frags = s.fragments("cam");
    assert_eq!(frags.len(), 2);
    assert_eq!(&frags[0].bytes[..], &c1[..], "cluster stored byte-for-byte");
    assert_eq!(&frags[1].bytes[..], &c2[..]);
    assert_eq!(frags[0].number, n0);
    assert_eq!(frags[1].timecode, 100);
    assert!(frags[0].key_frame);
    assert_eq!(frags[0].duration_ms, 66);
    assert_eq!(s.stream_headers("cam"), vec![bytes::Bytes::from(header)]);
    assert_eq!(frags[1].header_index, 0);
    let start_ms = frags[0].producer_timestamp_ms;
    assert_eq!(frags[1].producer_timestamp_ms, start_ms + 100);
    assert!(s.wait_for_fragments("cam", 2, Duration::ZERO));
    assert!(!s.wait_for_fragments("cam", 3, Duration::from_millis(10)));

    let rep = s.report();
    let sess = &rep.sessions[0];
    assert_eq!(sess.fragments.len(), 2);
    assert_eq!(sess.acks.len(), 6);
    assert_eq!(
        sess.bytes as usize,
        simple_header().len() + c1.len() + c2.len()
    );
    assert!(
        sess.fragments[0]
            .sha256
            .as_ref()
            .is_some_and(|h| h.len() == 64)
    );
}

/// Streams `body` and returns all acks once the response ended.
async fn run(s: &kvs_local::Server, o: &PutOpts, body: &[u8]) -> Put {
    let mut p = put_media(&s.url(), o).await;
    assert_eq!(p.status, 200, "{:?}", p.json);
    p.send_chunked(body, 777).await;
    p.finish();
    p.drain(T).await;
    assert!(p.ended, "response ended");
    p
}

fn with_header(clusters: &[Vec<u8>]) -> Vec<u8> {
    let mut d = simple_header();
    for c in clusters {
        d.extend_from_slice(c);
    }
    d
}

fn error_ack(p: &Put, id: u64) -> &serde_json::Value {
    p.acks
        .iter()
        .find(|a| a["EventType"] == "ERROR" && a["ErrorId"] == id)
        .unwrap_or_else(|| panic!("no ERROR {id} in {:?}", p.acks))
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_fragment_4001_session_continues() {
    let s = server(kvs_local::Config {
        max_fragment_size: 20_000,
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let body = with_header(&[
        simple_cluster(0, 10, 10, 5000),
        simple_cluster(200, 2, 10, 100),
    ]);
    let p = run(&s, &PutOpts::new("c"), &body).await;
    assert_eq!(
        p.events(),
        [
            "BUFFERING",
            "ERROR:4001",
            "BUFFERING",
            "RECEIVED",
            "PERSISTED"
        ]
    );
    let e = error_ack(&p, 4001);
    assert_eq!(e["ErrorCode"], "MAX_FRAGMENT_SIZE_REACHED");
    assert_eq!(e["FragmentTimecode"], 0);
    assert_eq!(s.fragments("c").len(), 1);
    assert_eq!(s.fragments("c")[0].timecode, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_fragment_4002() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut c = cluster_start(0);
    c.extend(simple_block(1, 0, true, b"k"));
    c.extend(simple_block(1, 10_001, false, b"d"));
    let body = with_header(&[c, simple_cluster(20_000, 1, 1, 1)]);
    let p = run(&s, &PutOpts::new("c"), &body).await;
    assert_eq!(
        error_ack(&p, 4002)["ErrorCode"],
        "MAX_FRAGMENT_DURATION_REACHED"
    );
    assert_eq!(p.events()[1], "ERROR:4002");
    assert_eq!(s.fragments("c").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn timecode_going_back_4004() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let body = with_header(&[
        simple_cluster(1000, 1, 1, 1),
        simple_cluster(500, 1, 1, 1),
        simple_cluster(2000, 1, 1, 1),
    ]);
    let p = run(&s, &PutOpts::new("c"), &body).await;
    let e = error_ack(&p, 4004);
    assert_eq!(e["FragmentTimecode"], 500);
    assert_eq!(e["ErrorCode"], "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS");
    let tcs: Vec<u64> = s.fragments("c").iter().map(|f| f.timecode).collect();
    assert_eq!(tcs, [1000, 2000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fragment_not_starting_with_key_frame_4006_per_fragment() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut bad = cluster_start(100);
    bad.extend(simple_block(1, 0, false, b"delta"));
    let mut bg = cluster_start(200);
    bg.extend(block_group(1, 0, false, b"delta-in-blockgroup"));
    let mut good_bg = cluster_start(300);
    good_bg.extend(block_group(1, 0, true, b"key-in-blockgroup"));
    let body = with_header(&[simple_cluster(0, 1, 1, 1), bad, bg, good_bg]);
    let p = run(&s, &PutOpts::new("c"), &body).await;
    let errs: Vec<_> = p
        .acks
        .iter()
        .filter(|a| a["EventType"] == "ERROR")
        .collect();
    assert_eq!(errs.len(), 2, "{:?}", p.acks);
    assert!(errs.iter().all(|e| e["ErrorId"] == 4006));
    assert_eq!(errs[0]["FragmentTimecode"], 100);
    assert_eq!(errs[1]["FragmentTimecode"], 200);
    let tcs: Vec<u64> = s.fragments("c").iter().map(|f| f.timecode).collect();
    assert_eq!(
        tcs,
        [0, 300],
        "session continued after the per-fragment error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_tracks_4012_ends_session() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let tracks: Vec<Track> = (1..=4)
        .map(|n| Track {
            number: n,
            track_type: if n == 1 { 1 } else { 2 },
            codec_id: "A_AAC",
        })
        .collect();
    let mut body = header_with_tracks(&tracks);
    body.extend(simple_cluster(0, 1, 1, 1));
    let p = run(&s, &PutOpts::new("c"), &body).await;
    assert_eq!(p.events(), ["ERROR:4012"]);
    assert_eq!(p.acks[0]["ErrorCode"], "MORE_THAN_ALLOWED_TRACKS_FOUND");
    assert!(s.fragments("c").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn track_number_mismatch_4010_and_missing_track_4011() {
    let s = server(kvs_local::Config {
        require_all_tracks: true,
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let tracks = [
        Track {
            number: 1,
            track_type: 1,
            codec_id: "V_MPEG4/ISO/AVC",
        },
        Track {
            number: 2,
            track_type: 2,
            codec_id: "A_AAC",
        },
    ];
    let mut body = header_with_tracks(&tracks);
    let mut c1 = cluster_start(0);
    c1.extend(simple_block(1, 0, true, b"v"));
    c1.extend(simple_block(5, 1, true, b"?"));
    let mut c2 = cluster_start(100);
    c2.extend(simple_block(1, 0, true, b"v"));
    let mut c3 = cluster_start(200);
    c3.extend(simple_block(1, 0, true, b"v"));
    c3.extend(simple_block(2, 5, true, b"a"));
    for c in [c1, c2, c3] {
        body.extend(c);
    }
    let p = run(&s, &PutOpts::new("c"), &body).await;
    assert_eq!(error_ack(&p, 4010)["FragmentTimecode"], 0);
    assert_eq!(error_ack(&p, 4010)["ErrorCode"], "TRACK_NUMBER_MISMATCH");
    assert_eq!(error_ack(&p, 4011)["FragmentTimecode"], 100);
    assert_eq!(error_ack(&p, 4011)["ErrorCode"], "FRAMES_MISSING_FOR_TRACK");
    assert_eq!(s.fragments("c").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_timestamp_errors_4007() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let body = with_header(&[simple_cluster(0, 1, 1, 1)]);
    for ts in [None, Some("abc".to_string()), Some("-5".to_string())] {
        let o = PutOpts {
            start_ts: ts.clone(),
            ..PutOpts::new("c")
        };
        let p = run(&s, &o, &body).await;
        assert_eq!(p.events(), ["BUFFERING", "ERROR:4007"], "start ts {ts:?}");
        assert_eq!(p.acks[1]["ErrorCode"], "INVALID_PRODUCER_TIMESTAMP");
    }
    // ABSOLUTE: a timecode a day in the future
    let future_ms = kvs_local::now_ms() + 86_400_000;
    let o = PutOpts {
        timecode_type: Some("ABSOLUTE"),
        start_ts: None,
        ..PutOpts::new("c")
    };
    let p = run(&s, &o, &with_header(&[simple_cluster(future_ms, 1, 1, 1)])).await;
    assert_eq!(p.events(), ["BUFFERING", "ERROR:4007"]);
    // ABSOLUTE now is fine and the producer timestamp is the timecode
    let now = kvs_local::now_ms();
    let p = run(&s, &o, &with_header(&[simple_cluster(now, 1, 1, 1)])).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
    assert_eq!(s.fragments("c")[0].producer_timestamp_ms, now);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_mkv_4006_ends_session() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    // image bytes instead of MKV
    let p = run(
        &s,
        &PutOpts::new("c"),
        &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F'],
    )
    .await;
    assert_eq!(p.events(), ["ERROR:4006"]);
    assert_eq!(p.acks[0]["ErrorCode"], "INVALID_MKV_DATA");
    // broken in the middle of a fragment: the fragment in flight is named
    let mut body = with_header(&[simple_cluster(0, 1, 1, 1)]);
    body.extend(cluster_start(40));
    body.extend([0x00, 0x00, 0x00]);
    body.extend(simple_cluster(80, 1, 1, 1));
    let p = run(&s, &PutOpts::new("c"), &body).await;
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
    // truncated body
    let body = with_header(&[simple_cluster(0, 2, 1, 100)]);
    let p = run(&s, &PutOpts::new("c"), &body[..body.len() - 10]).await;
    assert_eq!(p.events(), ["BUFFERING", "ERROR:4006"]);
    // invalid size vint in the EBML header
    let p = run(
        &s,
        &PutOpts::new("c"),
        &[0x1A, 0x45, 0xDF, 0xA3, 0x00, 1, 2, 3, 4, 5, 6, 7, 8],
    )
    .await;
    assert_eq!(p.events(), ["ERROR:4006"]);
    assert_eq!(s.fragments("c").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_declared_element_and_endless_body_stay_bounded() {
    let s = server(kvs_local::Config {
        max_fragment_size: 1 << 20,
        idle_ack_interval: Duration::from_millis(100),
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    let mut d = simple_header();
    d.extend(cluster_start(0));
    d.push(0xA3); // SimpleBlock declaring 100 GB
    kvs_format::ebml::write_vint(&mut d, 100 << 30);
    d.extend([0x81, 0, 0, 0x80]);
    let head_len = d.len() as u64;
    p.send(d).await;
    let e = p
        .until(T, |a| a["EventType"] == "ERROR")
        .await
        .expect("error ack");
    assert_eq!(e["ErrorId"], 4001);
    // keep sending: 32 MB more of the declared block, the server discards it
    let zeros = bytes::Bytes::from(vec![0u8; 64 * 1024]);
    for _ in 0..512 {
        p.send(zeros.clone()).await;
    }
    p.finish();
    p.drain(T).await;
    assert!(p.ended);
    assert_eq!(
        p.events().last().unwrap(),
        "ERROR:4006",
        "truncated at body end"
    );
    assert!(s.fragments("c").is_empty());
    assert_eq!(s.report().sessions[0].bytes, 32 * 1024 * 1024 + head_len);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_acks_then_idle_timeout_ends_response() {
    let s = server(kvs_local::Config {
        idle_ack_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(450),
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(with_header(&[simple_cluster(0, 1, 1, 1)])).await;
    p.send(end_of_fragment_tags()).await;
    // the END_OF_FRAGMENT tag closes the fragment without more data
    p.until(T, |a| is(a, "PERSISTED", Some(0)))
        .await
        .expect("persisted");
    // body stays open; IDLE acks follow, then the response ends
    let rest = p.drain(T).await;
    assert!(p.ended, "idle timeout ended the response");
    let idles = rest.iter().filter(|a| a["EventType"] == "IDLE").count();
    assert!((2..=5).contains(&idles), "{rest:?}");
    assert!(rest.iter().all(|a| a["EventType"] == "IDLE"));
    assert!(rest[0].get("FragmentTimecode").is_none());
    let end = s.report().sessions[0].end_reason.clone().unwrap();
    assert!(end.contains("idle timeout"), "{end}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_deleted_while_streaming_and_not_active_4008() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(with_header(&[simple_cluster(0, 1, 1, 1)])).await;
    p.send(cluster_start(100)).await;
    p.until(T, |a| is(a, "PERSISTED", Some(0))).await.unwrap();
    s.delete_stream("c").unwrap();
    p.send(simple_block(1, 0, true, b"x")).await;
    p.send(simple_cluster(200, 1, 1, 1)).await;
    p.drain(T).await;
    assert!(p.ended);
    assert_eq!(p.events().last().unwrap(), "ERROR:4008", "{:?}", p.acks);
    assert_eq!(p.acks.last().unwrap()["ErrorCode"], "STREAM_NOT_ACTIVE");

    // a stream that is still CREATING
    let s = server(kvs_local::Config {
        creating_delay: Duration::from_secs(60),
        ..cfg()
    });
    let body = serde_json::json!({"StreamName": "slow"});
    assert_eq!(call(&s.url(), "/createStream", body).await.status, 200);
    let p = run(
        &s,
        &PutOpts::new("slow"),
        &with_header(&[simple_cluster(0, 1, 1, 1)]),
    )
    .await;
    assert_eq!(p.events(), ["ERROR:4008"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_level_errors() {
    let s = server(cfg());
    let created = s.create_stream("c").unwrap();
    let u = s.url();
    assert_put_media_request_checks(&u, "c").await;
    // by ARN
    let o = PutOpts {
        by_arn: Some(created.meta.arn.clone()),
        ..PutOpts::new("c")
    };
    let p = run(&s, &o, &with_header(&[simple_cluster(0, 1, 1, 1)])).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn c_producer_signing_style() {
    let s = server(kvs_local::Config {
        keys: vec![kvs_local::KeyPair::new("CPRODUCERKEY", "c-secret").with_session_token("tok")],
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let o = PutOpts {
        key: kvs_local::KeyPair::new("CPRODUCERKEY", "c-secret").with_session_token("tok"),
        sign: kvs_local::client::SignOptions {
            payload: kvs_local::client::SignPayload::EmptyHashNoHeader,
            host_without_port: true,
            sign_token: false,
            ..Default::default()
        },
        ..PutOpts::new("c")
    };
    let p = run(&s, &o, &with_header(&[simple_cluster(0, 1, 1, 1)])).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
}

/// Raw HTTP/1.1: `Expect: 100-continue`, and 200 before any body byte.
#[tokio::test(flavor = "multi_thread")]
async fn answers_before_body_and_expect_continue() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let url = format!("{}/putMedia", s.url());
    let host = s.url().trim_start_matches("http://").to_string();
    let hs = [
        ("x-amzn-stream-name", "c"),
        ("x-amzn-fragment-timecode-type", "ABSOLUTE"),
    ];
    let opts = kvs_local::client::SignOptions {
        payload: kvs_local::client::SignPayload::EmptyHashNoHeader,
        ..Default::default()
    };
    let signed =
        kvs_local::client::sign_headers(&kvs_local::KeyPair::demo(), "POST", &url, &hs, &opts);
    let mut head = format!(
        "POST /putMedia HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n"
    );
    for (k, v) in hs {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in signed {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut sock = tokio::net::TcpStream::connect(&host).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // read until the 200 head arrived; no body byte has been sent
    while !String::from_utf8_lossy(&got).contains("HTTP/1.1 200") {
        let n = tokio::time::timeout(T, sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.contains("HTTP/1.1 100 Continue"), "{text}");
    let now = kvs_local::now_ms();
    let body = with_header(&[simple_cluster(now, 1, 1, 1)]);
    sock.write_all(format!("{:x}\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    sock.write_all(&body).await.unwrap();
    sock.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut all = got;
    loop {
        let n = tokio::time::timeout(T, sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("\"EventType\":\"PERSISTED\""), "{text}");
    assert!(
        text.contains(&format!("\"FragmentTimecode\":{now}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_corruption_never_breaks_the_server() {
    let s = server(kvs_local::Config {
        idle_timeout: Duration::from_secs(2),
        ..cfg()
    });
    s.create_stream("c").unwrap();
    let good = with_header(&[
        simple_cluster(0, 3, 10, 300),
        simple_cluster(100, 3, 10, 300),
        simple_cluster(u64::MAX / 2, 1, 1, 1), // absurd timecode: 4007, no overflow
    ]);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40 {
        let mut body = good.clone();
        for _ in 0..(rnd() % 6 + 1) {
            let i = (rnd() as usize) % body.len();
            body[i] = rnd() as u8;
        }
        body.truncate(body.len() - (rnd() as usize % 40));
        let p = run(&s, &PutOpts::new("c"), &body).await;
        for a in &p.acks {
            let ev = a["EventType"].as_str().unwrap();
            assert!(
                ["BUFFERING", "RECEIVED", "PERSISTED", "ERROR", "IDLE"].contains(&ev),
                "round {round}: {a}"
            );
            if ev == "ERROR" {
                let id = a["ErrorId"].as_u64().unwrap();
                assert_eq!(a["ErrorCode"], kvs_local::error_code_name(id as u32));
            }
        }
    }
    // still healthy
    let p = run(
        &s,
        &PutOpts::new("c"),
        &with_header(&[simple_cluster(0, 1, 1, 1)]),
    )
    .await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
}
