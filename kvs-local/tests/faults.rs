//! Fault injection, the admin API, pause/resume.

mod common;
use common::*;
use kvs_format::build::*;
use kvs_local::Fault;
use serde_json::json;
use std::time::{Duration, Instant};

fn body(tcs: &[u64]) -> Vec<u8> {
    let mut d = simple_header();
    for &t in tcs {
        d.extend(simple_cluster(t, 2, 10, 500));
    }
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn close_after_fragments_and_bytes() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    s.inject(Fault::CloseAfterFragments {
        stream: Some("c".into()),
        fragments: 2,
        sessions: 1,
    });
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(body(&[0, 100, 200, 300])).await;
    p.drain(T).await;
    assert!(p.ended);
    assert_eq!(s.fragments("c").len(), 2);
    let persisted = p
        .acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .count();
    assert_eq!(persisted, 2, "{:?}", p.acks);
    let rep = s.report();
    assert!(
        rep.sessions[0]
            .end_reason
            .as_deref()
            .unwrap()
            .contains("after 2 fragments")
    );

    // the fault was for one session only
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(body(&[400, 500])).await;
    p.finish();
    p.drain(T).await;
    assert_eq!(s.fragments("c").len(), 4);

    let b = body(&[600, 700, 800]);
    let header_and_one = simple_header().len() + simple_cluster(0, 2, 10, 500).len();
    s.inject(Fault::CloseAfterBytes {
        stream: None,
        bytes: header_and_one as u64 + 20,
        sessions: 1,
    });
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send_chunked(&b, 100).await;
    p.drain(T).await;
    assert!(p.ended);
    assert_eq!(s.report().sessions[2].bytes, header_and_one as u64 + 20);
    // the first cluster completed when the second began (its 12-byte header is inside the N bytes)
    assert!(s.wait_for_fragments("c", 5, T));
    assert_eq!(s.fragments("c").len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_failures_throttling_and_credentials() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let u = s.url();
    s.inject(Fault::FailRequests {
        stream: None,
        operation: "PutMedia".into(),
        count: 2,
        status: 500,
        error_type: None,
    });
    for _ in 0..2 {
        let p = put_media(&u, &PutOpts::new("c")).await;
        assert_eq!(
            (p.status, p.json["__type"].as_str()),
            (500, Some("InternalFailure"))
        );
    }
    let mut p = put_media(&u, &PutOpts::new("c")).await;
    assert_eq!(p.status, 200);
    p.finish();
    p.drain(T).await;

    s.inject(Fault::Throttle {
        stream: Some("c".into()),
        operation: "DescribeStream".into(),
        count: 1,
    });
    let r = call(&u, "/describeStream", json!({"StreamName": "c"})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "ClientLimitExceededException")
    );
    assert_eq!(
        r.headers["x-amzn-errortype"],
        "ClientLimitExceededException"
    );
    assert_eq!(
        call(&u, "/describeStream", json!({"StreamName": "c"}))
            .await
            .status,
        200
    );

    s.inject(Fault::Throttle {
        stream: None,
        operation: "PutMedia".into(),
        count: 1,
    });
    let p = put_media(&u, &PutOpts::new("c")).await;
    assert_eq!(
        (p.status, p.json["__type"].as_str()),
        (400, Some("ClientLimitExceededException"))
    );

    s.inject(Fault::RejectCredentials {
        stream: None,
        count: 1,
        error_type: Some("ExpiredTokenException".into()),
    });
    let r = call(&u, "/describeStream", json!({"StreamName": "c"})).await;
    assert_eq!((r.status, r.error_type()), (403, "ExpiredTokenException"));
    let r = call(&u, "/describeStream", json!({"StreamName": "c"})).await;
    assert_eq!(r.status, 200);
    s.inject(Fault::RejectCredentials {
        stream: None,
        count: 1,
        error_type: None,
    });
    let p = put_media(&u, &PutOpts::new("c")).await;
    assert_eq!(
        (p.status, p.json["__type"].as_str()),
        (403, Some("UnrecognizedClientException"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn error_ack_by_index_and_by_timecode() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    s.inject(Fault::ErrorAck {
        stream: None,
        fragment: Some(1),
        timecode: None,
        error_id: 5000,
    });
    s.inject(Fault::ErrorAck {
        stream: None,
        fragment: None,
        timecode: Some(300),
        error_id: 4009,
    });
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(body(&[0, 100, 200, 300, 400])).await;
    p.finish();
    p.drain(T).await;
    let errs: Vec<_> = p
        .acks
        .iter()
        .filter(|a| a["EventType"] == "ERROR")
        .collect();
    assert_eq!(errs.len(), 2, "{:?}", p.acks);
    assert_eq!(
        (
            errs[0]["FragmentTimecode"].as_u64(),
            errs[0]["ErrorCode"].as_str()
        ),
        (Some(100), Some("INTERNAL_ERROR"))
    );
    assert_eq!(errs[1]["ErrorId"], 4009);
    assert_eq!(errs[1]["ErrorCode"], "FRAGMENT_METADATA_LIMIT_REACHED");
    let tcs: Vec<u64> = s.fragments("c").iter().map(|f| f.timecode).collect();
    assert_eq!(tcs, [0, 200, 400]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_and_stopped_acks() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    s.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 300,
    });
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    let t0 = Instant::now();
    p.send(body(&[0])).await;
    p.send(end_of_fragment_tags()).await;
    p.until(T, |a| is(a, "BUFFERING", Some(0))).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    p.until(T, |a| is(a, "PERSISTED", Some(0))).await.unwrap();

    s.clear_faults();
    s.inject(Fault::StopAcks { stream: None });
    p.send(simple_cluster(100, 1, 1, 1)).await;
    p.send(end_of_fragment_tags()).await;
    assert!(s.wait_for_fragments("c", 2, T), "data is still stored");
    assert!(
        p.next_ack(Duration::from_millis(300)).await.is_none(),
        "no acks while stopped"
    );
    s.clear_faults();
    p.send(simple_cluster(200, 1, 1, 1)).await;
    p.send(end_of_fragment_tags()).await;
    let a = p.next_ack(T).await.unwrap();
    assert!(is(&a, "BUFFERING", Some(200)), "{a}");
    p.finish();
    p.drain(T).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connection_duration_4003() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(body(&[0])).await;
    p.send(end_of_fragment_tags()).await;
    p.until(T, |a| is(a, "PERSISTED", Some(0))).await.unwrap();
    // applies to the live session
    s.inject(Fault::MaxConnectionDuration {
        stream: Some("c".into()),
        after_ms: 200,
    });
    let a = p.until(T, |a| a["EventType"] == "ERROR").await.unwrap();
    assert_eq!(a["ErrorId"], 4003);
    assert_eq!(a["ErrorCode"], "MAX_CONNECTION_DURATION_REACHED");
    p.drain(T).await;
    assert!(p.ended);
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_listening() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    p.send(body(&[0])).await;
    p.send(end_of_fragment_tags()).await;
    p.until(T, |a| is(a, "PERSISTED", Some(0))).await.unwrap();
    s.pause_listening();
    // live connection closed
    p.drain(T).await;
    assert!(p.ended);
    // new connections refused
    let addr = s.local_addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    s.resume_listening();
    assert_eq!(s.local_addr(), addr);
    let mut p = put_media(&s.url(), &PutOpts::new("c")).await;
    assert_eq!(p.status, 200);
    p.send(body(&[100])).await;
    p.finish();
    p.drain(T).await;
    assert_eq!(s.fragments("c").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_connection_supersedes_older() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let mut p1 = put_media(&s.url(), &PutOpts::new("c")).await;
    p1.send(body(&[0])).await;
    p1.send(end_of_fragment_tags()).await;
    p1.until(T, |a| is(a, "PERSISTED", Some(0))).await.unwrap();
    let mut p2 = put_media(&s.url(), &PutOpts::new("c")).await;
    p1.send(simple_cluster(100, 1, 1, 1)).await;
    p1.drain(T).await;
    assert!(p1.ended, "older session ended at its next fragment");
    p2.send(body(&[200])).await;
    p2.finish();
    p2.drain(T).await;
    let tcs: Vec<u64> = s.fragments("c").iter().map(|f| f.timecode).collect();
    assert_eq!(tcs, [0, 200]);
    assert!(
        s.report().sessions[0]
            .end_reason
            .as_deref()
            .unwrap()
            .contains("superseded")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api() {
    let s = server(cfg());
    s.create_stream("c").unwrap();
    let u = s.url();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{u}/__kvs-local/faults"))
        .body(r#"{"type":"throttle","operation":"DescribeStream","count":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{u}/__kvs-local/faults"))
        .body(r#"{"type":"bogus"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let list: serde_json::Value = http
        .get(format!("{u}/__kvs-local/faults"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(list[0]["type"], "throttle");
    assert_eq!(
        call(&u, "/describeStream", json!({"StreamName": "c"}))
            .await
            .status,
        400
    );
    // list form + clear
    let r = http
        .post(format!("{u}/__kvs-local/faults"))
        .body(r#"[{"type":"stop_acks"},{"type":"delay_acks","delay_ms":5,"stream":"c"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.report().requests.len(),
        1,
        "admin calls are not in the report"
    );
    let r = http
        .delete(format!("{u}/__kvs-local/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = http
        .get(format!("{u}/__kvs-local/faults"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(list, json!([]));
    let rep: serde_json::Value = http
        .get(format!("{u}/__kvs-local/report"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(rep["requests"][0]["operation"], "DescribeStream");
    assert_eq!(
        rep["requests"][0]["error_type"],
        "ClientLimitExceededException"
    );
    assert_eq!(rep["requests"][0]["auth"], "accepted");
}
