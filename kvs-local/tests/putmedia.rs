//! PutMedia: acks, storage, and every data rule.

mod common;
use common::*;
use kvs_local::mkvbuild::*;
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
    let a = p.until(T, |a| is(a, "PERSISTED", Some(0))).await.expect("PERSISTED 0");
    let n0 = a["FragmentNumber"].as_str().unwrap().to_string();
    assert_eq!(n0.len(), 47);
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED"]);
    assert_eq!(p.acks[0]["FragmentNumber"], n0.as_str());
    p.send(c2[20..].to_vec()).await;
    p.finish();
    let rest = p.drain(T).await;
    assert_eq!(p.events(), ["BUFFERING", "RECEIVED", "PERSISTED", "BUFFERING", "RECEIVED", "PERSISTED"]);
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
    assert_eq!(sess.bytes as usize, simple_header().len() + c1.len() + c2.len());
    assert!(sess.fragments[0].sha256.as_ref().is_some_and(|h| h.len() == 64));
}
