//! Ingest throughput: one PutMedia request carrying a large synthetic MKV
//! body (many ~1 MB clusters) in 64 KiB HTTP chunks over loopback into an
//! in-memory server, acks read concurrently. Prints MB/s.
//!
//! `cargo bench -p kvs-local` (set `KVS_BENCH_MB` to change the volume,
//! default 2048).

use kvs_format::build::{cluster_start, end_of_fragment_tags, simple_block, simple_header};
use kvs_local::client::{SignOptions, SignPayload, sign_headers};
use kvs_local::{Config, KeyPair, Server};
use std::io::IoSlice;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 64 * 1024;
const FRAMES_PER_CLUSTER: usize = 30;
const FRAME: usize = 35_000; // 30 x 35 kB ≈ 1 MB clusters

fn main() {
    let total_mb: usize = std::env::var("KVS_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let server = Server::spawn(Config {
        creating_delay: Duration::ZERO,
        ..Config::default()
    })
    .expect("server");
    server.create_stream("bench").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bytes, clusters, elapsed, acks) = rt.block_on(run(&server, total_mb));
    let secs = elapsed.as_secs_f64();
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "ingest: {mb:.0} MiB in {clusters} clusters ({FRAMES_PER_CLUSTER} frames, {:.2} MiB each), {} KiB chunks: {secs:.2} s = {:.0} MiB/s ({:.2} GB/s), {acks} acks",
        (FRAMES_PER_CLUSTER * FRAME) as f64 / 1048576.0,
        CHUNK / 1024,
        mb / secs,
        bytes as f64 / secs / 1e9
    );
    let stored = server.fragment_count("bench");
    assert_eq!(stored, clusters, "every cluster stored");
}

async fn run(server: &Server, total_mb: usize) -> (u64, usize, Duration, usize) {
    let url = format!("{}/putMedia", server.url());
    let host = server.url().trim_start_matches("http://").to_string();
    let hs = [
        ("x-amzn-stream-name", "bench"),
        ("x-amzn-fragment-timecode-type", "RELATIVE"),
        ("x-amzn-producer-start-timestamp", "1700000000.000"),
    ];
    let opts = SignOptions {
        payload: SignPayload::Unsigned,
        ..Default::default()
    };
    let mut head =
        format!("POST /putMedia HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n");
    for (k, v) in hs {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in sign_headers(&KeyPair::demo(), "POST", &url, &hs, &opts) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let sock = tokio::net::TcpStream::connect(&host).await.unwrap();
    sock.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = sock.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();

    let clusters = total_mb * 1024 * 1024 / (FRAMES_PER_CLUSTER * FRAME);
    // reader: count PERSISTED acks until the last cluster's
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut persisted = 0;
        let mut acks = 0;
        let mut tail = Vec::new();
        while persisted < clusters {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            tail.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&tail);
            persisted += text.matches("\"PERSISTED\"").count();
            acks += text.matches("EventType").count();
            assert!(!text.contains("\"ERROR\""), "{text}");
            let keep = tail
                .iter()
                .rposition(|&c| c == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            tail.drain(..keep);
        }
        (Instant::now(), acks)
    });

    let mut frames = Vec::with_capacity(FRAMES_PER_CLUSTER * (FRAME + 16));
    let payload = vec![0x42u8; FRAME];
    for i in 0..FRAMES_PER_CLUSTER {
        frames.extend(simple_block(1, (i * 33) as i16, i == 0, &payload));
    }
    let mut sent = 0u64;
    let start = Instant::now();
    sent += send_chunk(&mut wr, &[&simple_header()]).await;
    for c in 0..clusters {
        // 64 KiB chunks; the first one of a cluster carries its header
        let head = cluster_start(c as u64 * 1000);
        let first = CHUNK - head.len();
        sent += send_chunk(&mut wr, &[&head, &frames[..first]]).await;
        for piece in frames[first..].chunks(CHUNK) {
            sent += send_chunk(&mut wr, &[piece]).await;
        }
    }
    // the END_OF_FRAGMENT tag closes the last cluster
    sent += send_chunk(&mut wr, &[&end_of_fragment_tags()]).await;
    let (done, acks) = reader.await.unwrap();
    wr.write_all(b"0\r\n\r\n").await.unwrap();
    (sent, clusters, done - start, acks)
}

/// Writes one HTTP chunk made of `parts` with vectored writes (no copy).
async fn send_chunk(wr: &mut tokio::net::tcp::OwnedWriteHalf, parts: &[&[u8]]) -> u64 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let size_line = format!("{len:x}\r\n");
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 2);
    slices.push(IoSlice::new(size_line.as_bytes()));
    slices.extend(parts.iter().map(|p| IoSlice::new(p)));
    slices.push(IoSlice::new(b"\r\n"));
    let mut bufs: &mut [IoSlice<'_>] = &mut slices;
    while !bufs.is_empty() {
        let n = wr.write_vectored(bufs).await.unwrap();
        assert!(n > 0, "write returned 0");
        IoSlice::advance_slices(&mut bufs, n);
    }
    len as u64
}
