//! RSS after an outage: a live `videotestsrc pattern=snow ! x264enc bitrate=16000 !
//! matroskamux ! kvssink` pipeline (2 MB/s) runs in a copy of this binary and streams into an
//! in-process kvs-local; the endpoint stops listening for a while (connections refused, open
//! ones closed), then listens again. The copy reports its RSS before the outage, the peak, and
//! after the backlog was persisted (the store holds no more than before).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;

use crate::process::status_kib;
use crate::report::{Report, Row, mib};
use crate::server::{ACCESS_KEY, REGION, SECRET_KEY};
use crate::uploads::{ROLE_ENV, wait_streaming};

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        status_kib(&status, "VmRSS:").unwrap_or(0),
        status_kib(&status, "RssAnon:").unwrap_or(0),
    )
}

fn backlog(sink: &gst::Element) -> (u64, u64) {
    let stats = sink.property::<gst::Structure>("stats");
    (
        stats.get::<u64>("backlog-fragments").unwrap_or(0),
        stats.get::<u64>("backlog-bytes").unwrap_or(0),
    )
}

/// Body of the `outage` role: streams, tells the parent when to stop the endpoint (`pause`),
/// waits for `resumed` on stdin, then for the backlog to go; prints `before peak after
/// before-anon peak-anon after-anon peak-backlog-bytes` (KiB, bytes).
pub fn child() -> ! {
    let result = child_run();
    println!("{}", result.unwrap_or_else(|e| format!("ERROR {e}")));
    std::process::exit(0)
}

fn child_run() -> Result<String, String> {
    gst::init().map_err(|e| e.to_string())?;
    gstkvs::plugin_register_static().map_err(|e| e.to_string())?;
    let url = std::env::var("KVSSINK_BENCH_URL").unwrap_or_default();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true pattern=snow ! \
         video/x-raw,width=640,height=360,framerate=30/1 ! x264enc tune=zerolatency \
         speed-preset=ultrafast bitrate=16000 key-int-max=30 ! h264parse ! \
         matroskamux streamable=true ! kvssink name=sink",
    )
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    sink.set_property("stream-name", format!("outage-{}", std::process::id()));
    sink.set_property("aws-region", REGION);
    sink.set_property("control-plane-uri", &url);
    sink.set_property("access-key", ACCESS_KEY);
    sink.set_property("secret-key", SECRET_KEY);
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    wait_streaming(&bus)?;
    std::thread::sleep(Duration::from_secs(5));
    let before = rss_kib();
    let (mut peak, mut peak_backlog) = (before, 0u64);
    println!("pause");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    let mut resumed: Option<Instant> = None;
    let mut drained: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                return Err(format!("{} ({:?})", e.error(), e.debug()));
            }
        }
        let now = rss_kib();
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        let (fragments, bytes) = backlog(&sink);
        peak_backlog = peak_backlog.max(bytes);
        if resumed.is_none() && rx.try_recv().is_ok() {
            resumed = Some(Instant::now());
        }
        let Some(at) = resumed else { continue };
        if drained.is_none() && fragments <= 2 && at.elapsed() > Duration::from_secs(1) {
            drained = Some(Instant::now());
        }
        if drained.is_some_and(|d| d.elapsed() >= Duration::from_secs(3)) {
            break;
        }
        if at.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the backlog did not go: {fragments} fragments left"
            ));
        }
    }
    let after = rss_kib();
    let _ = pipeline.set_state(gst::State::Null);
    Ok(format!(
        "{} {} {} {} {} {} {peak_backlog}",
        before.0, peak.0, after.0, before.1, peak.1, after.1
    ))
}

struct Outcome {
    /// VmRSS before, peak, after; then RssAnon the same (KiB).
    kib: [u64; 6],
    peak_backlog: u64,
}

fn once(outage: Duration) -> Result<Outcome, String> {
    let server =
        kvs_local::Server::spawn(kvs_local::Config::default()).map_err(|e| e.to_string())?;
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(ROLE_ENV, "outage")
        .env("KVSSINK_BENCH_URL", server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if first != "pause" {
        let _ = child.wait();
        return Err(first);
    }
    server.pause_listening();
    std::thread::sleep(outage);
    server.resume_listening();
    let _ = writeln!(stdin, "resumed");
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = child.wait();
    let f: Vec<u64> = last
        .split_whitespace()
        .map_while(|x| x.parse().ok())
        .collect();
    match f[..] {
        [a, b, c, d, e, g, h] => Ok(Outcome {
            kib: [a, b, c, d, e, g],
            peak_backlog: h,
        }),
        _ => Err(last),
    }
}

/// `rounds` outages of `secs` seconds, each in a fresh process.
pub fn measure(secs: u64, rounds: usize, report: &mut Report) {
    eprintln!("RSS after a {secs} s outage (live 16 Mb/s, {rounds} rounds):");
    let mut outcomes = Vec::new();
    for _ in 0..rounds {
        match once(Duration::from_secs(secs)) {
            Ok(o) => {
                eprintln!(
                    "  VmRSS before {:.1}, peak {:.1}, after {:.1} MiB (RssAnon {:.1}, {:.1}, \
                     {:.1}); backlog peak {:.1} MB",
                    mib(o.kib[0]),
                    mib(o.kib[1]),
                    mib(o.kib[2]),
                    mib(o.kib[3]),
                    mib(o.kib[4]),
                    mib(o.kib[5]),
                    o.peak_backlog as f64 / 1e6
                );
                outcomes.push(o);
            }
            Err(e) => {
                report.failed("RSS after an outage", e);
                return;
            }
        }
    }
    let growth: Vec<f64> = outcomes
        .iter()
        .map(|o| mib(o.kib[2]) - mib(o.kib[0]))
        .collect();
    let mut sorted = growth.clone();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    let o = &outcomes[0];
    report.row(Row {
        metric: format!("RSS after a {secs} s outage, over before"),
        kvssink: format!(
            "{med:+.1} MiB ({:+.1} to {:+.1})",
            sorted[0],
            sorted[sorted.len() - 1]
        ),
        reference: format!(
            "before {:.1}, peak {:.1}, after {:.1} MiB",
            mib(o.kib[0]),
            mib(o.kib[1]),
            mib(o.kib[2])
        ),
        target: "<= 10 MiB".into(),
        ok: Some(med <= 10.0),
    });
}
