//! Buffer-to-socket latency: live-paced buffers through `appsrc ! kvssink` into kvs-local in
//! discard mode, which records when each piece of the PutMedia body reached it
//! (`--record-body-reads`, on `CLOCK_MONOTONIC`, the clock the pushes are timed with).

use std::time::Duration;

use crate::report::{Report, Row, us};
use crate::server::{KvsLocal, Mode};
use crate::stream::{FPS, payload, stream_pieces};
use crate::uploads::run_kvssink;

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    count: usize,
    /// Latency of the stream header (control plane + connection set-up), not in the others.
    first: Duration,
}

/// A buffer's latency is the time from just before `push_buffer` to the first body read after
/// which kvs-local holds all its bytes (the body starts with the same header bytes, so stream
/// offsets and body offsets are the same).
fn latency(seconds: u64) -> Result<Latency, String> {
    let server = KvsLocal::spawn(Mode::Discarding, true)?;
    let payload = payload();
    // ~20 KB frames (40% of 40-60 KB), 1 s clusters.
    let pieces = stream_pieces(seconds, 1000 / FPS, 40, &payload);
    let run = run_kvssink(&server.url, "latency", &pieces, true)?;
    let reads = server.body_reads("latency")?;
    server.stop();
    let last = reads.last().map_or(0, |r| r.1);
    if last != run.bytes {
        return Err(format!("kvs-local received {last} bytes of {}", run.bytes));
    }
    let received = |end: u64| {
        let i = reads.partition_point(|r| r.1 < end);
        reads.get(i).map(|r| r.0)
    };
    let since = |read: u64, push: u64| Duration::from_nanos(read.saturating_sub(push));
    let (t0, end0) = run.pushes[0];
    let first = since(received(end0).ok_or("header never received")?, t0);
    // The first second (first cluster) includes the control plane and connecting.
    let warm = run.start_ns + 1_000_000_000;
    let mut lat: Vec<Duration> = Vec::new();
    for &(t, end) in run.pushes.iter().filter(|p| p.0 >= warm) {
        let r = received(end).ok_or("a buffer never reached the server")?;
        lat.push(since(r, t));
    }
    lat.sort();
    let max = *lat.last().ok_or("no buffers measured")?;
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    Ok(Latency {
        p50: pct(50),
        p99: pct(99),
        max,
        count: lat.len(),
        first,
    })
}

/// `seconds` of 30 fps live buffers; p50, p99 and max latency.
pub fn measure(seconds: u64, report: &mut Report) {
    eprintln!("latency ({seconds} s live at 30 fps)...");
    match latency(seconds) {
        Ok(l) => {
            report.row(Row {
                metric: "p99 buffer-to-socket latency".into(),
                kvssink: us(l.p99),
                reference: format!("p50 {}, max {}", us(l.p50), us(l.max)),
                target: "< 1000 µs".into(),
                ok: Some(l.p99 < Duration::from_millis(1)),
            });
            report.note(format!(
                "latency: {} buffers after the first second; the stream header (control plane \
                 and connection set-up) took {:.1} ms",
                l.count,
                l.first.as_secs_f64() * 1e3
            ));
        }
        Err(e) => report.failed("latency", e),
    }
}
