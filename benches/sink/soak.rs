//! Soak: many hours of simulated stream through `appsrc ! kvssink` into kvs-local in discard
//! mode (a separate process), as fast as it goes, with the PutMedia session renewed every few
//! seconds, sampling this process's RSS. Memory must stay flat: nothing may grow with stream
//! time or sessions.

use bytes::Bytes;
use gst::prelude::*;

use crate::process::status_kib;
use crate::report::{Report, Row, mib};
use crate::server::{KvsLocal, Mode};
use crate::stream::{FPS, block_header, cluster_start, payload, stream_header};
use crate::uploads::{kvssink_pipeline, wait_streaming};

/// Frames of this size make a 2.4 Mb/s stream.
const SOAK_FRAME: usize = 10_000;

/// One RSS sample: simulated minutes streamed, VmRSS in KiB.
struct Sample {
    minutes: u64,
    rss_kib: u64,
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_kib(&status, "VmRSS:").unwrap_or(0)
}

/// The buffers of one one-second cluster at `second`, cut as matroskamux cuts them.
fn cluster(second: u64, payload: &Bytes, out: &mut Vec<Bytes>) {
    out.push(Bytes::from(cluster_start(second * 1000)));
    for f in 0..FPS {
        let block = block_header(SOAK_FRAME, (f * 1000 / FPS) as i16, f == 0);
        out.push(Bytes::from(block));
        out.push(payload.slice(..SOAK_FRAME));
    }
}

/// Streams `hours` of simulated video into `url`, sampling RSS every simulated half hour.
fn soak(url: &str, hours: u64) -> Result<Vec<Sample>, String> {
    let (pipeline, src, sink) = kvssink_pipeline(url, "soak", 1 << 20, |sink| {
        sink.set_property("rotation-period", 2u32)
    })?;
    let bus = pipeline.bus().unwrap();

    let payload = payload();
    let mut samples = vec![Sample {
        minutes: 0,
        rss_kib: vm_rss_kib(),
    }];
    let mut buffers = Vec::with_capacity(2 * FPS as usize + 1);
    src.push_buffer(gst::Buffer::from_slice(stream_header()))
        .map_err(|e| format!("{e:?}"))?;
    for second in 0..hours * 3600 {
        buffers.clear();
        cluster(second, &payload, &mut buffers);
        for b in buffers.drain(..) {
            src.push_buffer(gst::Buffer::from_slice(b))
                .map_err(|e| format!("push_buffer: {e:?}"))?;
        }
        if second == 0 {
            wait_streaming(&bus)?;
        }
        if (second + 1) % 1800 == 0 {
            samples.push(Sample {
                minutes: (second + 1) / 60,
                rss_kib: vm_rss_kib(),
            });
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            return Err(format!("{msg:?}"));
        }
    }
    let _ = src.end_of_stream();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let stats = sink.property::<gst::Structure>("stats");
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => return Err(format!("no EOS: {other:?}")),
    }
    let persisted = stats.get::<u64>("fragments-persisted").unwrap_or(0);
    let dropped = stats.get::<u64>("fragments-dropped").unwrap_or(0);
    if persisted < hours * 3600 || dropped > 0 {
        return Err(format!(
            "{persisted} fragments persisted, {dropped} dropped: {stats}"
        ));
    }
    eprintln!(
        "soak: {} fragments persisted over {} connections",
        persisted,
        stats.get::<u64>("connections").unwrap_or(0)
    );
    Ok(samples)
}

/// `hours` of simulated 2.4 Mb/s video; the RSS growth after the first hour.
pub fn measure(hours: u64, report: &mut Report) {
    eprintln!("soak: {hours} h of simulated 2.4 Mb/s video, session renewed every 2 s...");
    let run = KvsLocal::spawn(Mode::Discarding, false).and_then(|server| {
        let samples = soak(&server.url, hours);
        server.stop();
        samples
    });
    match run {
        Ok(samples) => {
            // Growth after the first simulated hour, once allocator pools are warm.
            let warm = samples.get(2).map_or(0, |s| s.rss_kib);
            let end = samples.last().map_or(0, |s| s.rss_kib);
            let growth = mib(end) - mib(warm);
            report.row(Row {
                metric: format!("RSS growth, 1 h to {hours} h simulated"),
                kvssink: format!("{growth:+.1} MiB"),
                reference: format!("{:.1} -> {:.1} MiB", mib(warm), mib(end)),
                target: "flat (< 2 MiB)".into(),
                ok: Some(growth < 2.0),
            });
            let trace: Vec<String> = samples
                .iter()
                .map(|s| format!("{}m {:.1}", s.minutes, mib(s.rss_kib)))
                .collect();
            report.note(format!(
                "soak VmRSS (MiB) by simulated time: {}",
                trace.join(", ")
            ));
        }
        Err(e) => report.failed("soak", e),
    }
}
