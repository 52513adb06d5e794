//! How fast a live stream comes back after an outage, and how hard kvssink tries meanwhile.
//!
//! A live `videotestsrc ! x264enc ! matroskamux ! kvssink` pipeline streams into an in-process
//! kvs-local; the endpoint stops listening for N seconds (connections refused), then listens
//! again. Printed per outage length, over several rounds:
//! - `back after`: from the endpoint listening again to kvssink's next `streaming` state (a
//!   PutMedia answered 200);
//! - `attempts/s`: connection attempts per second of outage (`reconnecting` states).
//!
//! `cargo bench --bench recovery` (outages of 5, 20 and 50 s, 3 rounds each: about 4 min);
//! `cargo bench --bench recovery -- --quick` or `KVSSINK_BENCH_QUICK=1`: one 5 s outage.

use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_local::{Config, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Server};

struct Round {
    back_after: Duration,
    attempts: u32,
}

fn connection_state(msg: &gst::Message) -> Option<String> {
    let gst::MessageView::Element(e) = msg.view() else {
        return None;
    };
    let s = e.structure()?;
    (s.name() == "kvs-connection")
        .then(|| s.get::<String>("state").ok())
        .flatten()
}

/// Waits for a `kvs-connection` message in `state`; counts `reconnecting` ones on the way.
fn wait_state(bus: &gst::Bus, state: &str, within: Duration, reconnects: &mut u32) -> bool {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            break;
        };
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("pipeline error: {} ({:?})", e.error(), e.debug());
        }
        match connection_state(&msg).as_deref() {
            Some("reconnecting") => *reconnects += 1,
            Some(s) if s == state => return true,
            _ => {}
        }
    }
    false
}

fn round(outage: Duration, n: u32) -> Round {
    let server = Server::spawn(Config::default()).expect("start kvs-local");
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true ! kvssink name=sink",
    )
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    sink.set_property("stream-name", format!("recovery-{n}"));
    sink.set_property("aws-region", "us-east-1");
    sink.set_property("control-plane-uri", server.url());
    sink.set_property("access-key", DEMO_ACCESS_KEY);
    sink.set_property("secret-key", DEMO_SECRET_KEY);
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut ignored = 0;
    assert!(
        wait_state(&bus, "streaming", Duration::from_secs(20), &mut ignored),
        "never streamed"
    );
    std::thread::sleep(Duration::from_secs(2));
    server.pause_listening();
    // Drain what came before the outage so the count below is the outage's.
    while bus.pop().is_some() {}
    let mut attempts = 0;
    std::thread::sleep(outage);
    server.resume_listening();
    let back = Instant::now();
    assert!(
        wait_state(&bus, "streaming", Duration::from_secs(120), &mut attempts),
        "did not come back"
    );
    let back_after = back.elapsed();
    pipeline.set_state(gst::State::Null).unwrap();
    Round {
        back_after,
        attempts,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("KVSSINK_BENCH_QUICK").is_some();
    gst::init().unwrap();
    gstkvs::plugin_register_static().expect("register the kvs plugin");
    let (outages, rounds): (&[u64], u32) = if quick { (&[5], 1) } else { (&[5, 20, 50], 3) };
    println!("outage | back after (median, max) | attempts/s of outage (median)");
    println!("-------|---------------------------|------------------------------");
    let mut n = 0;
    for &secs in outages {
        let outage = Duration::from_secs(secs);
        let mut back = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..rounds {
            n += 1;
            let r = round(outage, n);
            back.push(r.back_after.as_secs_f64() * 1000.0);
            rates.push(f64::from(r.attempts) / secs as f64);
        }
        let max = back.iter().copied().fold(0.0, f64::max);
        println!(
            "{secs:>4} s | {:>7.0} ms, {:>7.0} ms       | {:.2}",
            median(back),
            max,
            median(rates)
        );
    }
}
