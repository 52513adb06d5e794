//! End-to-end benchmark of kvssink on loopback; results and how to read them are in
//! `benches/README.md`.
//!
//! 1. Throughput and CPU per MB of `appsrc ! kvssink` pushing matroskamux-shaped buffers into
//!    kvs-local (the `kvs-local` binary, a separate process), next to `curl` uploading the same
//!    bytes with the same writes through a pipe; the same two again into kvs-local in discard
//!    mode (`--discard-media`: a server that only reads the body, the ceiling without
//!    kvs-local's work on the other core). `uploads.rs`
//! 2. Buffer-to-socket latency: live-paced buffers into kvs-local in discard mode, which
//!    timestamps every read of the PutMedia body (`--record-body-reads`). `latency.rs`
//! 3. Peak RSS of a live `x264enc ! matroskamux ! kvssink` pipeline (gst-launch-1.0, the plugin
//!    from this build) next to the same pipeline ending in `fakesink`. `rss.rs`
//! 4. A file uploaded at full speed (`filesrc ! matroskademux ! h264parse ! matroskamux !
//!    kvssink`, gst-launch-1.0) next to the same pipeline into fakesink and curl uploading the
//!    same bytes: system calls per MB (`perf stat`), CPU per MB, peak RSS. `file.rs`
//!    The same file uploaded offline (the default for a file: at the service's pace) next to
//!    `streaming-type=realtime`: CPU per MB and wall time. `file.rs`
//!    The same file paced at 30 fps (`identity sync=true`): system calls per MB of a stream
//!    that arrives frame by frame, as from a camera. `file.rs`
//!    With `KVSSINK_OFFICIAL_PLUGIN_DIR` naming a directory holding AWS's own element
//!    (`libgstkvssink.so`, built from AWS's C++ producer SDK), both parts also run ours and
//!    AWS's on the same H.264 file, each in its own `gst-launch-1.0`: CPU, system calls and
//!    throughput per MB, and the ratios ours / AWS's. `official.rs`
//! 5. RSS after an outage: before, peak, and once the backlog was persisted. `outage.rs`
//! 6. Soak: RSS over hours of simulated stream. `soak.rs`
//! 7. Instructions per MB of the file upload (valgrind's cachegrind: user space, counted, so
//!    they do not move with the machine's load): what kvssink adds over fakesink next to curl,
//!    and what kvs-local executes to receive each. Skipped without valgrind.
//!    `instructions.rs`
//!
//! The stream is made in `stream.rs`, kvs-local runs from `server.rs`, CPU and children are
//! measured in `process.rs`, the table is printed by `report.rs`.
//!
//! `cargo build -p kvs-local --release` first (the bench runs that binary), then
//! `cargo bench --bench sink` runs everything (a few minutes); `cargo bench --bench sink --
//! --quick` or `KVSSINK_BENCH_QUICK=1` runs a small version as a smoke test.

#[path = "sink/file.rs"]
mod file;
#[path = "sink/instructions.rs"]
mod instructions;
#[path = "sink/latency.rs"]
mod latency;
#[path = "sink/official.rs"]
mod official;
#[path = "sink/outage.rs"]
mod outage;
#[path = "sink/process.rs"]
mod process;
#[path = "sink/report.rs"]
mod report;
#[path = "sink/rss.rs"]
mod rss;
#[path = "sink/server.rs"]
mod server;
#[path = "sink/soak.rs"]
mod soak;
#[path = "sink/stream.rs"]
mod stream;
#[path = "sink/uploads.rs"]
mod uploads;

use report::MB;
use server::Mode;

fn main() {
    if std::env::var(uploads::ROLE_ENV).as_deref() == Ok("kvssink") {
        uploads::kvssink_child();
    }
    if std::env::var(uploads::ROLE_ENV).as_deref() == Ok("outage") {
        outage::child();
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("KVSSINK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (tput_bytes, reps, latency_secs, rss_buffers, soak_hours) = if quick {
        (200_000_000u64, 1, 2, 90, 1)
    } else {
        (2_000_000_000u64, 5, 10, 600, 12)
    };
    // KVSSINK_BENCH_REPS=N: N rounds of the throughput and file parts.
    let reps = std::env::var("KVSSINK_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(reps);
    let (file_frames, paced_frames, outage_secs, outage_rounds) = if quick {
        (900, 300, 10, 1)
    } else {
        (3000, 600, 20, 3)
    };
    gst::init().expect("GStreamer");
    gstkvs::plugin_register_static().expect("register the kvs plugin");

    println!("machine: {}", report::machine());
    println!("load average at start: {}", report::loadavg());
    let tput = stream::Throughput::new(tput_bytes);
    println!(
        "mode: {}; throughput stream {:.0} MB in {} buffers ({} clusters of 30 frames, \
         frames 40-60 KB, {} ms apart)\n",
        if quick { "quick" } else { "full" },
        stream::total_len(&tput.pieces) as f64 / MB,
        tput.pieces.len(),
        tput.clusters,
        tput.frame_ms,
    );

    // KVSSINK_BENCH_ONLY=kvs-local,discard,push,es,file,instructions,offline,paced,latency,rss,
    // outage,soak runs only those parts.
    let only = std::env::var("KVSSINK_BENCH_ONLY").ok();
    let want = |part: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let mut report = report::Report::default();
    for mode in [Mode::Storing, Mode::Discarding] {
        if want(mode.name()) {
            uploads::throughput(mode, &tput, reps, &mut report);
        }
    }
    if want("push") {
        uploads::push(&tput.pieces, reps, &mut report);
    }
    if want("es") {
        file::measure_es(file_frames, reps, &mut report);
    }
    // AWS's own element, next to ours in the file and paced parts.
    let official = if want("file") || want("paced") {
        match official::from_env() {
            Ok(Some(o)) => {
                eprintln!("AWS's kvssink: {}", o.describe());
                Some(o)
            }
            Ok(None) => {
                let why = format!(
                    "comparison with AWS's own kvssink skipped: {} is not set (a directory \
                     holding AWS's libgstkvssink.so; see benches/README.md)",
                    official::DIR_ENV
                );
                report.note(why);
                None
            }
            Err(e) => {
                report.failed("AWS's kvssink", e);
                None
            }
        }
    } else {
        None
    };
    if official.is_some() && ["kvs-local", "discard", "push"].iter().any(|p| want(p)) {
        report.note(
            "AWS's kvssink is compared in the file and paced parts only: the kvs-local, \
             discard and push parts feed Matroska bytes through appsrc, which AWS's element \
             does not take (it takes H.264/H.265 or audio frames and makes the Matroska itself)"
                .into(),
        );
    }
    if want("file") {
        file::measure_all(file_frames, reps, &mut report);
        if let Some(o) = &official {
            official::compare(o, file_frames, reps, false, &mut report);
        }
    }
    if want("instructions") {
        instructions::measure(file_frames, &mut report);
    }
    if want("offline") {
        file::measure_offline(file_frames, reps.min(3), &mut report);
    }
    if want("paced") {
        file::measure_paced(paced_frames, reps.min(3), &mut report);
        if let Some(o) = &official {
            official::compare(o, paced_frames, reps.min(3), true, &mut report);
        }
    }
    if want("latency") {
        latency::measure(latency_secs, &mut report);
    }
    if want("rss") {
        rss::measure(rss_buffers, &mut report);
    }
    if want("outage") {
        outage::measure(outage_secs, outage_rounds, &mut report);
    }
    if want("soak") {
        soak::measure(soak_hours, &mut report);
    }
    if report.print() {
        std::process::exit(1);
    }
}
