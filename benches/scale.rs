//! Many streams in one process: N kvssink elements, each fed 200 kbit/s of matroskamux-shaped
//! data (1 s clusters of 30 frames) from one application thread, into one kvs-local (its own
//! process, `--discard-media`, so the server's work stays out of these figures).
//!
//! Printed: time from PLAYING until every stream is `streaming`; threads and RSS added per
//! stream once all stream; CPU of this process per second of streaming; and at EOS whether
//! every fragment of every stream was persisted.
//!
//! `cargo build -p kvs-local --release && cargo bench --bench scale` (1,000 streams for 20 s);
//! `-- --quick` or `KVSSINK_BENCH_QUICK=1`: 100 streams for 6 s; `KVSSINK_SCALE_STREAMS=N`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_format::build;
use kvs_format::ebml::{write_id, write_vint_len};
use kvs_format::ids::ID_SIMPLE_BLOCK;
use kvs_local::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};

/// 200 kbit/s at 30 frames a second.
const FRAME: usize = 200_000 / 8 / 30;

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn threads() -> u64 {
    std::fs::read_dir("/proc/self/task").unwrap().count() as u64
}

fn cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn kvs_local() -> (std::process::Child, String) {
    let bin = std::env::var_os("KVS_LOCAL_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/kvs-local"),
        PathBuf::from,
    );
    let mut child = Command::new(&bin)
        .args(["--port", "0", "--discard-media", "--creating-delay-ms", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it first: cargo build -p kvs-local --release",
                bin.display()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("kvs-local listening on ")
        .expect("kvs-local's first line")
        .to_owned();
    (child, url)
}

/// A source pad of ours linked to a kvssink: buffers pushed on it run kvssink in this thread.
struct Feed {
    pad: gst::Pad,
}

impl Feed {
    fn push(&self, data: Vec<u8>) {
        self.pad.push(gst::Buffer::from_mut_slice(data)).unwrap();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("KVSSINK_BENCH_QUICK").is_some();
    let streams: usize = std::env::var("KVSSINK_SCALE_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100 } else { 1000 });
    let seconds: u64 = if quick { 6 } else { 20 };
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let (mut server, url) = kvs_local();

    let pipeline = gst::Pipeline::new();
    let mut sinks = Vec::with_capacity(streams);
    for i in 0..streams {
        let sink = gst::ElementFactory::make("kvssink")
            .property("stream-name", format!("scale-{i}"))
            .property("aws-region", "us-east-1")
            .property("control-plane-uri", &url)
            .property("access-key", DEMO_ACCESS_KEY)
            .property("secret-key", DEMO_SECRET_KEY)
            .property_from_str("streaming-type", "realtime")
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sinks.push(sink);
    }
    let (rss_before, threads_before) = (status_kib("VmRSS:"), threads());
    pipeline.set_state(gst::State::Playing).unwrap();
    let playing = Instant::now();
    let feeds: Vec<Feed> = sinks
        .iter()
        .enumerate()
        .map(|(i, sink)| {
            let pad = gst::Pad::builder(gst::PadDirection::Src)
                .name(format!("feed{i}"))
                .build();
            pad.set_active(true).unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
            pad.push_event(gst::event::StreamStart::new(&format!("s{i}")));
            pad.push_event(gst::event::Caps::new(
                &gst::Caps::builder("video/x-matroska").build(),
            ));
            pad.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::format::Bytes,
            >::new()));
            Feed { pad }
        })
        .collect();
    for f in &feeds {
        f.push(build::simple_header());
    }

    let bus = pipeline.bus().unwrap();
    let mut streaming = std::collections::HashSet::new();
    let mut all_streaming = None;
    let payload = vec![0x5Au8; FRAME];
    let start = Instant::now();
    let (mut rss_streaming, mut threads_streaming, mut cpu_from) = (0, 0, cpu());
    for second in 0..seconds {
        for f in &feeds {
            f.push(build::cluster_start(second * 1000));
        }
        for frame in 0..30u64 {
            for f in &feeds {
                let mut header = Vec::with_capacity(16);
                write_id(&mut header, ID_SIMPLE_BLOCK);
                write_vint_len(&mut header, FRAME as u64 + 4, 8);
                header.push(0x81);
                header.extend_from_slice(&((frame * 33) as i16).to_be_bytes());
                header.push(if frame == 0 { 0x80 } else { 0 });
                f.push(header);
                f.push(payload.clone());
            }
            while let Some(msg) = bus.pop() {
                if let gst::MessageView::Element(e) = msg.view()
                    && let Some(s) = e.structure()
                    && s.name() == "kvs-connection"
                    && s.get::<&str>("state") == Ok("streaming")
                {
                    streaming.insert(msg.src().map(|s| s.name().to_string()));
                    if streaming.len() == streams && all_streaming.is_none() {
                        all_streaming = Some(playing.elapsed());
                        rss_streaming = status_kib("VmRSS:");
                        threads_streaming = threads();
                        cpu_from = cpu();
                    }
                }
                if let gst::MessageView::Error(e) = msg.view() {
                    panic!("{} {:?}", e.error(), e.debug());
                }
            }
            let due = Duration::from_millis(second * 1000 + (frame + 1) * 1000 / 30);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let streaming_cpu = cpu().saturating_sub(cpu_from);
    let streamed_for = start
        .elapsed()
        .saturating_sub(all_streaming.unwrap_or_default());
    let rss_end = status_kib("VmRSS:");
    for f in &feeds {
        f.pad.push_event(gst::event::Eos::new());
    }
    let mut persisted = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while persisted < streams && Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(1)) else {
            continue;
        };
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && s.name() == "kvs-summary"
            && s.get::<&str>("outcome") == Ok("all-persisted")
        {
            persisted += 1;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = server.kill();
    let _ = server.wait();

    let n = streams as f64;
    println!("{streams} streams of 200 kbit/s for {seconds} s in one process");
    match all_streaming {
        Some(t) => println!("all streaming after {:.2} s from PLAYING", t.as_secs_f64()),
        None => println!("NOT all streaming: {} of {streams}", streaming.len()),
    }
    println!(
        "threads: {} before, {} streaming: {:.3} per stream",
        threads_before,
        threads_streaming,
        threads_streaming.saturating_sub(threads_before) as f64 / n
    );
    println!(
        "RSS: {:.1} MiB before, {:.1} MiB all streaming, {:.1} MiB at the end: {:.3} MiB per \
         stream (end - before)",
        rss_before as f64 / 1024.0,
        rss_streaming as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_end.saturating_sub(rss_before) as f64 / 1024.0 / n
    );
    println!(
        "CPU while all stream: {:.0}% of one core ({:.2} ms per stream-second)",
        100.0 * streaming_cpu.as_secs_f64() / streamed_for.as_secs_f64().max(1e-9),
        1000.0 * streaming_cpu.as_secs_f64() / streamed_for.as_secs_f64().max(1e-9) / n
    );
    println!("all fragments persisted at EOS: {persisted} of {streams} streams");
}
